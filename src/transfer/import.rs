//! Importing an export: the table of contents and every chunk checked
//! before anything is stored, then every object stored through verified
//! ingest, then one transaction making one new version per repository.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::chunks::{self, ChunkedReader};
use super::export::{Document, DOCUMENT};
use super::toc::{Toc, TOC_FILE};
use crate::metadata::{AtomicSignature, ImportedRepository, Metadata, RepositoryKind, SyncContent};
use crate::oci::{media, Digest};
use crate::storage::Storage;

/// Bytes of `index.json` or `wharf-export.json` read into memory at most.
const MAX_DOCUMENT: u64 = 256 << 20;

/// An import as asked for.
#[derive(Debug, Clone)]
pub(crate) struct ImportRequest {
    /// The export's directory (`wharf-export-<id>`).
    pub(crate) path: PathBuf,
    /// Repository names to import under another name.
    pub(crate) repository_map: BTreeMap<String, String>,
    /// Check and report only.
    pub(crate) dry_run: bool,
}

/// What an import did, or would do.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct ImportReport {
    pub(crate) export: u64,
    pub(crate) uuid: String,
    /// Imported before: nothing changed.
    pub(crate) already_imported: bool,
    /// (repository, the version made: None when it held that content).
    pub(crate) versions: Vec<(String, Option<u64>)>,
    /// Bytes of objects not stored here before.
    pub(crate) new_bytes: u64,
}

fn kind_of(s: &str) -> Result<RepositoryKind, String> {
    match s {
        "push" => Ok(RepositoryKind::Push),
        "sync" => Ok(RepositoryKind::Sync),
        "pull-through" => Ok(RepositoryKind::PullThrough),
        other => Err(format!("unknown repository kind {other:?}")),
    }
}

/// Reads and checks the table of contents and every chunk (blocking).
pub(crate) fn check(dir: &Path) -> Result<Toc, String> {
    let toc_path = dir.join(TOC_FILE);
    let bytes = std::fs::read(&toc_path).map_err(|e| format!("{}: {e}", toc_path.display()))?;
    let toc = Toc::parse(&bytes).map_err(|e| format!("{}: {e}", toc_path.display()))?;
    chunks::verify(dir, &toc.chunks, &toc.archive_sha256).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(toc)
}

/// The files of the archive, read in order (blocking): each checked
/// against its entry in `toc`, `blobs/` handed to `object` as they are
/// read (which must consume the reader), the rest returned whole.
pub(crate) fn read_archive(
    dir: &Path,
    toc: &Toc,
    object: &mut dyn FnMut(Digest, u64, &mut dyn Read) -> Result<(), String>,
) -> Result<HashMap<String, Vec<u8>>, String> {
    let expected: HashMap<&str, (&str, u64)> = toc.files.iter().map(|f| (f.path.as_str(), (f.sha256.as_str(), f.size))).collect();
    let mut archive = tar::Archive::new(ChunkedReader::new(dir, &toc.chunks));
    let mut small = HashMap::new();
    for entry in archive.entries().map_err(|e| format!("the archive: {e}"))? {
        let entry = entry.map_err(|e| format!("the archive: {e}"))?;
        if entry.header().entry_type().is_dir() {
            continue;
        }
        let path = entry.path().map_err(|e| format!("the archive: {e}"))?.display().to_string();
        let Some(&(sha256, size)) = expected.get(path.as_str()) else {
            return Err(format!("{path}: in the archive but not in the table of contents"));
        };
        let mut hashing = HashingReader { inner: entry, sha256: Some(Sha256::new()), read: 0 };
        if let Some(rest) = path.strip_prefix("blobs/") {
            let digest: Digest = rest.replacen('/', ":", 1).parse().map_err(|e| format!("{path}: not a digest: {e}"))?;
            if digest.algorithm() == crate::oci::Algorithm::Sha256 {
                // Its digest is its sha256: verified where it is stored
                // (ingest), not hashed twice.
                if digest.hex() != sha256 {
                    return Err(format!("{path}: the table of contents gives it sha256 {sha256}"));
                }
                hashing.sha256 = None;
            }
            object(digest, size, &mut hashing)?;
        } else if size <= MAX_DOCUMENT {
            let mut bytes = Vec::new();
            hashing.read_to_end(&mut bytes).map_err(|e| format!("{path}: {e}"))?;
            small.insert(path.clone(), bytes);
        } else {
            return Err(format!("{path}: {size} bytes, more than a document may have"));
        }
        let actual = hashing.sha256.map_or_else(|| sha256.to_owned(), |h| hex::encode(h.finalize()));
        if actual != sha256 || hashing.read != size {
            return Err(format!("{path}: sha256 {actual} ({} bytes), the table of contents says {sha256} ({size})", hashing.read));
        }
    }
    Ok(small)
}

/// Counts what it reads, and hashes it unless the reader's consumer
/// verifies it.
struct HashingReader<R> {
    inner: R,
    sha256: Option<Sha256>,
    read: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.sha256 {
            h.update(&buf[..n]);
        }
        self.read += n as u64;
        Ok(n)
    }
}

/// The repositories `doc` carries, as the store imports them, with
/// `map`'s names: manifests' facts from their stored bytes, signatures
/// from their blobs.
pub(crate) async fn repositories(
    storage: &Storage,
    doc: &Document,
    map: &BTreeMap<String, String>,
) -> Result<Vec<ImportedRepository>, String> {
    let mut out = Vec::new();
    for r in &doc.repositories {
        let mut manifests = Vec::new();
        for m in &r.manifests {
            let bytes = storage
                .read_small(&m.digest, 64 << 20)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("manifest {} is neither in the export nor stored here", m.digest))?;
            let media_type = m.media_type.clone().unwrap_or_else(|| media::OCI_MANIFEST.to_owned());
            let refs = media::references(&bytes).map_err(|e| format!("manifest {}: {e}", m.digest))?;
            manifests.push(crate::pullthrough::manifest_facts(&m.digest, &media_type, bytes.len() as u64, refs));
        }
        let mut signatures = Vec::new();
        for s in &r.signatures {
            let content = storage
                .read_small(&s.digest, 1 << 20)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("signature {} is neither in the export nor stored here", s.digest))?;
            signatures.push(AtomicSignature { manifest: s.manifest.clone(), name: s.name.clone(), kind: s.kind.clone(), content: content.to_vec() });
        }
        out.push(ImportedRepository {
            name: map.get(&r.name).cloned().unwrap_or_else(|| r.name.clone()),
            kind: kind_of(&r.kind)?,
            upstream: r.upstream.clone(),
            remote_name: r.remote_name.clone(),
            content: SyncContent {
                manifests,
                tags: r.tags.iter().map(|t| (t.name.clone(), t.digest.clone())).collect(),
                signatures,
                signatures_listed: true,
            },
        });
    }
    Ok(out)
}

/// Parses `wharf-export.json` from the archive's small files.
pub(crate) fn document(small: &HashMap<String, Vec<u8>>) -> Result<Document, String> {
    let bytes = small.get(DOCUMENT).ok_or_else(|| format!("the archive has no {DOCUMENT}"))?;
    serde_json::from_slice(bytes).map_err(|e| format!("{DOCUMENT}: {e}"))
}

/// Whether export `uuid` was imported here.
pub(crate) async fn imported(metadata: &Metadata, uuid: &str) -> Result<bool, String> {
    let uuid = uuid.to_owned();
    metadata.run(move |s| s.imported(&uuid)).await.map_err(|e| e.to_string())
}

/// Runs an import as a task's work (see the module's notes).
pub(crate) async fn run_import(
    metadata: &Metadata,
    storage: &Storage,
    request: ImportRequest,
    progress: &crate::tasks::Progress,
) -> Result<ImportReport, crate::tasks::TaskFailure> {
    use crate::tasks::TaskFailure;
    let failed = TaskFailure::Failed;
    let dir = request.path.clone();
    progress.step(&format!("checking {}", dir.display()));
    let toc = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || check(&dir)
    })
    .await
    .map_err(|e| failed(e.to_string()))?
    .map_err(failed)?;
    let mut report = ImportReport { export: toc.export, uuid: toc.uuid.clone(), already_imported: false, versions: Vec::new(), new_bytes: 0 };
    if imported(metadata, &toc.uuid).await.map_err(failed)? {
        report.already_imported = true;
        return Ok(report);
    }
    if let (Some(base), Some(base_uuid)) = (toc.base, toc.base_uuid.as_deref()) {
        if !imported(metadata, base_uuid).await.map_err(failed)? {
            return Err(failed(format!(
                "export {} builds on export {base} ({base_uuid}), which was not imported here: import that first",
                toc.export
            )));
        }
    }
    progress.set_total(toc.files.iter().filter(|f| f.path.starts_with("blobs/")).count() as u64);
    progress.step(&format!("export {} ({} files, {} bytes): storing its objects", toc.export, toc.chunks.len(), toc.archive_size));
    // Every object, verified as it is stored (or, for a dry run, only
    // counted when it is not stored yet).
    let (small, new_bytes) = tokio::task::spawn_blocking({
        let (dir, toc, storage, progress, dry_run) = (dir.clone(), toc.clone(), storage.clone(), progress.clone(), request.dry_run);
        move || -> Result<(HashMap<String, Vec<u8>>, u64), String> {
            let runtime = tokio::runtime::Handle::current();
            let mut new_bytes = 0u64;
            let small = read_archive(&dir, &toc, &mut |digest, size, reader| {
                if progress.is_canceled() {
                    return Err("canceled".into());
                }
                let stored = runtime.block_on(storage.stat(&digest)).map_err(|e| e.to_string())?.is_some();
                if stored || dry_run {
                    std::io::copy(reader, &mut std::io::sink()).map_err(|e| format!("{digest}: {e}"))?;
                } else {
                    let mut ingest = storage.begin(digest.clone()).map_err(|e| e.to_string())?;
                    let mut buf = vec![0u8; 256 << 10];
                    loop {
                        let n = reader.read(&mut buf).map_err(|e| format!("{digest}: {e}"))?;
                        if n == 0 {
                            break;
                        }
                        ingest.write_blocking(&buf[..n]).map_err(|e| e.to_string())?;
                    }
                    ingest.verify().map_err(|e| format!("{digest}: {e}"))?;
                    runtime.block_on(ingest.commit()).map_err(|e| e.to_string())?;
                }
                if !stored {
                    new_bytes += size;
                }
                progress.add(1, size);
                Ok(())
            })?;
            Ok((small, new_bytes))
        }
    })
    .await
    .map_err(|e| failed(e.to_string()))?
    .map_err(|e| if e == "canceled" { TaskFailure::Canceled } else { failed(e) })?;
    report.new_bytes = new_bytes;
    let doc = document(&small).map_err(failed)?;
    if doc.uuid != toc.uuid {
        return Err(failed(format!("{DOCUMENT} names export {}, the table of contents {}", doc.uuid, toc.uuid)));
    }
    if request.dry_run {
        report.versions = doc.repositories.iter().map(|r| (request.repository_map.get(&r.name).cloned().unwrap_or_else(|| r.name.clone()), None)).collect();
        return Ok(report);
    }
    progress.step(&format!("making a version of {} repositories", doc.repositories.len()));
    let repositories = repositories(storage, &doc, &request.repository_map).await.map_err(failed)?;
    let (uuid, number, base_uuid) = (toc.uuid.clone(), toc.export, toc.base_uuid.clone());
    report.versions = metadata
        .run(move |s| s.import_export(&uuid, number, base_uuid.as_deref(), &repositories))
        .await
        .map_err(|e| failed(e.to_string()))?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Algorithm;
    use std::collections::HashSet;

    /// An export of one version holding a 300 KB layer, in 100 KB chunks.
    async fn exported(dir: &Path) -> (Storage, Toc, PathBuf, Digest) {
        let storage = Storage::open(&dir.join("a")).await.unwrap();
        let layer: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
        let digest = Digest::of(Algorithm::Sha256, &layer);
        storage.put_verified(&digest, bytes::Bytes::from(layer)).await.unwrap();
        let content = super::super::export::VersionContent {
            repository: super::super::export::tests::repository("team/app"),
            version: 1,
            tags: Vec::new(),
            manifests: Vec::new(),
            blobs: vec![crate::metadata::BlobItem { digest: digest.clone(), media_type: None, size: None }],
            signatures: Vec::new(),
        };
        let out = dir.join("out");
        std::fs::create_dir(&out).unwrap();
        let w = super::super::export::write(super::super::export::Objects { storage: &storage, refetch: None }, &out, (1, "u1"), (None, None), &[content], &HashSet::new(), Some(100_000), &|_| true)
            .await
            .unwrap();
        (storage, w.toc, w.dir, digest)
    }

    #[tokio::test]
    async fn an_archive_is_read_back_file_by_file_and_a_tampered_chunk_is_refused_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        let (_storage, toc, dir, digest) = exported(tmp.path()).await;
        assert_eq!(check(&dir).unwrap(), toc);
        let mut objects = Vec::new();
        let small = read_archive(&dir, &toc, &mut |d, size, r| {
            let mut bytes = Vec::new();
            r.read_to_end(&mut bytes).unwrap();
            assert_eq!(bytes.len() as u64, size);
            objects.push(d);
            Ok(())
        })
        .unwrap();
        assert_eq!(objects, vec![digest]);
        assert_eq!(document(&small).unwrap().uuid, "u1");

        // One byte changed in the second chunk.
        let name = &toc.chunks[1].name;
        let mut bytes = std::fs::read(dir.join(name)).unwrap();
        bytes[10] ^= 1;
        std::fs::write(dir.join(name), bytes).unwrap();
        let err = check(&dir).unwrap_err();
        assert!(err.contains(name.as_str()) && err.contains(&toc.chunks[1].sha256), "{err}");
        // A table of contents edited to match is refused too.
        let mut edited: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(TOC_FILE)).unwrap()).unwrap();
        edited["chunks"][1]["sha256"] = "00".into();
        std::fs::write(dir.join(TOC_FILE), edited.to_string()).unwrap();
        assert!(check(&dir).unwrap_err().contains("changed"));
    }
}
