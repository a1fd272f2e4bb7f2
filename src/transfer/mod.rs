//! Exports for air-gapped sites, and their import: repository versions
//! written as an OCI image layout in a tar (so skopeo reads an export
//! without wharf), split into chunks for media with a size limit, with a
//! table of contents an import checks before it stores anything.
//!
//! An export's directory:
//!
//! ```text
//! <path>/wharf-export-<id>/
//!   toc.json              every file in the archive (size, sha256), the
//!                         archive's chunks (size, sha256), one sha256 over it
//!   export.tar            the archive (export.tar.000, .001, ... in chunks):
//!     oci-layout
//!     index.json          every tag as org.opencontainers.image.ref.name
//!                         = "<repository>:<tag>"
//!     wharf-export.json   repositories, kinds, versions, tags, signatures
//!     blobs/<alg>/<hex>   each manifest and blob once, however many
//!                         repositories hold it
//! ```
//!
//! An import ([`import`]) checks the table of contents and every chunk
//! before it stores anything, stores every object through verified
//! ingest, then makes one new version per repository in one transaction.

use std::collections::HashSet;
use std::path::PathBuf;

use crate::metadata::{ExportRecord, ExportedVersion, Metadata};
use crate::tasks::{Progress, TaskFailure};

pub(crate) mod chunks;
pub(crate) mod export;
pub(crate) mod import;
pub(crate) mod toc;

/// Export `id`'s directory under the `path` it was asked for.
pub(crate) fn directory(path: &std::path::Path, id: u64) -> PathBuf {
    path.join(format!("wharf-export-{id}"))
}


/// An export as asked for.
#[derive(Debug, Clone)]
pub(crate) struct ExportRequest {
    /// Repositories, each at a version (the latest when None).
    pub(crate) repositories: Vec<(String, Option<u64>)>,
    /// An existing directory on this node: the export goes into a new
    /// directory `wharf-export-<id>` in it.
    pub(crate) path: PathBuf,
    /// The export this one builds on: what its chain carried is left out.
    pub(crate) since: Option<u64>,
    /// The archive in files of at most this many bytes.
    pub(crate) chunk_size: Option<u64>,
}

/// Runs an export as a task's work: the export, recorded complete; or
/// recorded failed, its directory removed.
pub(crate) async fn run_export(
    metadata: &Metadata,
    objects: export::Objects<'_>,
    request: ExportRequest,
    progress: &Progress,
) -> Result<ExportRecord, TaskFailure> {
    let failed = |e: String| TaskFailure::Failed(e);
    if !request.path.is_dir() {
        return Err(failed(format!("{} is not a directory on this node", request.path.display())));
    }
    progress.step("reading what the repositories hold");
    let wanted = request.repositories.clone();
    let contents = metadata
        .run(move |s| wanted.iter().map(|(name, version)| export::gather(s, name, *version)).collect::<Result<Vec<_>, _>>())
        .await
        .map_err(|e| failed(e.to_string()))?;
    let skip: HashSet<String> = match request.since {
        Some(base) => metadata.run(move |s| s.export_chain_digests(base)).await.map_err(|e| failed(e.to_string()))?,
        None => HashSet::new(),
    };
    let versions: Vec<ExportedVersion> =
        contents.iter().map(|c| ExportedVersion { repository: c.repository.name.clone(), version: c.version }).collect();
    let (base, root) = (request.since, request.path.clone());
    let base_uuid = match base {
        None => None,
        Some(b) => {
            let found = metadata.run(move |s| s.export(b)).await.map_err(|e| failed(e.to_string()))?;
            match found.map(|e| e.uuid) {
                Some(Some(uuid)) => Some(uuid),
                Some(None) => return Err(failed(format!("export {b} was made before exports had ids: export everything again"))),
                None => return Err(failed(format!("no export {b}"))),
            }
        }
    };
    let uuid = crate::random::hex_id().map_err(failed)?;
    let record = {
        let (root, uuid) = (root.display().to_string(), uuid.clone());
        metadata.run(move |s| s.create_export(&uuid, &root, base, &versions)).await.map_err(|e| failed(e.to_string()))?
    };
    let id = record.id;
    let count: usize = contents.iter().map(|c| c.manifests.len() + c.blobs.len()).sum();
    progress.set_total(count as u64);
    let step = |size: u64| {
        progress.add(1, size);
        !progress.is_canceled()
    };
    progress.step(&format!("writing export {id} into {}", directory(&root, id).display()));
    let written =
        export::write(objects, &root, (id, &uuid), (base, base_uuid.as_deref()), &contents, &skip, request.chunk_size, &step)
            .await;
    let written = match written {
        Ok(w) => w,
        Err(e) => {
            let message = e.to_string();
            let dir = directory(&root, id);
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
            let m = message.clone();
            let _ = metadata.run(move |s| s.fail_export(id, &m)).await;
            return Err(match e {
                export::ExportError::Canceled => TaskFailure::Canceled,
                _ => failed(message),
            });
        }
    };
    tracing::info!(export = id, directory = %written.dir.display(), bytes = written.toc.archive_size, "export written");
    let (size, files, digests) = (written.toc.archive_size, written.toc.files.len() as u64, written.digests);
    metadata.run(move |s| s.complete_export(id, size, files, &digests)).await.map_err(|e| failed(e.to_string()))?;
    metadata.run(move |s| s.export(id)).await.map_err(|e| failed(e.to_string()))?.ok_or_else(|| failed("the export's record is gone".into()))
}
