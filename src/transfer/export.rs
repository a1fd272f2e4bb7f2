//! Writing an export: the chosen repository versions' content gathered
//! from metadata, then an OCI image layout streamed into the archive
//! (each object read from storage, never held whole in memory), then the
//! table of contents beside it.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::chunks::ChunkedWriter;
use super::toc::{self, Toc};
use crate::metadata::{all_pages, AtomicSignature, ContentFilter, MetadataError, Repository, Store};
use crate::oci::{media, Digest};
use crate::storage::{Storage, StorageError};

/// The archive's name in an export's directory.
pub(crate) const ARCHIVE: &str = "export.tar";
/// The metadata document's path in the archive.
pub(crate) const DOCUMENT: &str = "wharf-export.json";
/// Where each tag's name goes in `index.json`.
pub(crate) const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, thiserror::Error)]
pub(crate) enum ExportError {
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Content a version holds whose bytes are not stored.
    #[error("{0} is not stored (evicted, or never fetched): pull or sync it first")]
    Missing(Digest),
    /// An evicted blob that could not be fetched again.
    #[error("{0}")]
    Refetch(String),
    #[error("{path}: {error}")]
    Io { path: String, error: String },
    #[error("canceled")]
    Canceled,
}

fn io_at(path: &Path) -> impl Fn(io::Error) -> ExportError + '_ {
    move |e| ExportError::Io { path: path.display().to_string(), error: e.to_string() }
}

/// What one exported repository version holds.
#[derive(Debug, Clone)]
pub(crate) struct VersionContent {
    pub(crate) repository: Repository,
    pub(crate) version: u64,
    pub(crate) tags: Vec<crate::metadata::TagItem>,
    pub(crate) manifests: Vec<crate::metadata::ManifestItem>,
    pub(crate) blobs: Vec<crate::metadata::BlobItem>,
    pub(crate) signatures: Vec<AtomicSignature>,
}

/// Reads what version `version` (the latest if None) of `repository`
/// holds. Blocking: the store's calls.
pub(crate) fn gather(store: &dyn Store, repository: &str, version: Option<u64>) -> Result<VersionContent, MetadataError> {
    let repo = store.repository(repository)?.ok_or_else(|| MetadataError::NotFound(format!("no repository {repository:?}")))?;
    let n = version.unwrap_or(repo.latest_version);
    store.version(repository, Some(n))?;
    let v = Some(n);
    let all = ContentFilter::default();
    let tags = all_pages(|p| store.tags(repository, v, &all, p))?;
    let manifests = all_pages(|p| store.manifests(repository, v, &all, p))?;
    let blobs = all_pages(|p| store.blobs(repository, v, &all, p))?;
    let mut signatures = Vec::new();
    let mut signed: Vec<Digest> = all_pages(|p| store.signature_items(repository, v, None, p))?.into_iter().map(|s| s.manifest).collect();
    signed.dedup();
    for manifest in signed {
        signatures.extend(store.signatures(repository, v, &manifest)?);
    }
    Ok(VersionContent { repository: repo, version: n, tags, manifests, blobs, signatures })
}

/// `wharf-export.json`: what the export carries, for an import (and a
/// person) to read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Document {
    pub(crate) format: String,
    pub(crate) export: u64,
    pub(crate) uuid: String,
    pub(crate) base: Option<u64>,
    pub(crate) base_uuid: Option<String>,
    pub(crate) wharf_version: String,
    pub(crate) created_at: crate::metadata::Millis,
    pub(crate) repositories: Vec<RepositoryDoc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RepositoryDoc {
    pub(crate) name: String,
    /// `pull-through`, `push` or `sync`.
    pub(crate) kind: String,
    pub(crate) version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) upstream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) remote_name: Option<String>,
    pub(crate) tags: Vec<TagDoc>,
    pub(crate) manifests: Vec<ObjectDoc>,
    pub(crate) blobs: Vec<ObjectDoc>,
    pub(crate) signatures: Vec<SignatureDoc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TagDoc {
    pub(crate) name: String,
    pub(crate) digest: Digest,
    pub(crate) media_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ObjectDoc {
    pub(crate) digest: Digest,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) media_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) size: Option<u64>,
}

/// An atomic signature; its bytes are the blob of `digest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SignatureDoc {
    pub(crate) manifest: Digest,
    pub(crate) name: String,
    pub(crate) kind: String,
    pub(crate) digest: Digest,
}

impl RepositoryDoc {
    fn of(c: &VersionContent) -> RepositoryDoc {
        RepositoryDoc {
            name: c.repository.name.clone(),
            kind: c.repository.kind.as_str().to_owned(),
            version: c.version,
            upstream: c.repository.upstream.clone(),
            remote_name: c.repository.remote_name.clone(),
            tags: c.tags.iter().map(|t| TagDoc { name: t.name.clone(), digest: t.digest.clone(), media_type: t.media_type.clone() }).collect(),
            manifests: c
                .manifests
                .iter()
                .map(|m| ObjectDoc { digest: m.facts.digest.clone(), media_type: Some(m.facts.media_type.clone()), size: Some(m.facts.size) })
                .collect(),
            blobs: c.blobs.iter().map(|b| ObjectDoc { digest: b.digest.clone(), media_type: b.media_type.clone(), size: b.size }).collect(),
            signatures: c
                .signatures
                .iter()
                .map(|s| SignatureDoc { manifest: s.manifest.clone(), name: s.name.clone(), kind: s.kind.clone(), digest: s.digest() })
                .collect(),
        }
    }
}

/// `index.json`: one entry per tag, named `<repository>:<tag>` so a
/// client of OCI layouts (skopeo) finds each image by that name.
pub(crate) fn index_json(contents: &[VersionContent]) -> Vec<u8> {
    let manifests: Vec<serde_json::Value> = contents
        .iter()
        .flat_map(|c| {
            let sizes: BTreeMap<&Digest, u64> = c.manifests.iter().map(|m| (&m.facts.digest, m.facts.size)).collect();
            c.tags.iter().map(move |t| {
                serde_json::json!({
                    "mediaType": t.media_type,
                    "digest": t.digest,
                    "size": sizes.get(&t.digest).copied().unwrap_or(0),
                    "annotations": { REF_NAME: format!("{}:{}", c.repository.name, t.name) },
                })
            })
        })
        .collect();
    let index = serde_json::json!({ "schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": manifests });
    serde_json::to_vec_pretty(&index).unwrap_or_default()
}

/// The path of an object in the layout.
pub(crate) fn blob_path(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm().as_str(), digest.hex())
}

/// One file of the archive, for its writer.
enum Item {
    Dir(String),
    Bytes(String, Vec<u8>),
    /// A stored object; its sha256 when its digest is one (the bytes
    /// were verified against it: not hashed again).
    File(String, Arc<File>, u64, Option<String>),
}

/// A reader that hashes what it reads.
struct Hashing<R> {
    inner: R,
    sha256: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha256.update(&buf[..n]);
        Ok(n)
    }
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    // Fixed owner and time: the same content makes the same archive.
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

/// The blocking side: appends each item to the tar in the chunked
/// writer; every file's entry for the table of contents, and the
/// writer's result.
fn write_items(dir: &Path, limit: Option<u64>, mut items: tokio::sync::mpsc::Receiver<Item>) -> io::Result<(Vec<toc::Entry>, super::chunks::Chunked)> {
    // Writes reach the chunks (and their hashers) 1 MiB at a time, and
    // objects are read into that buffer directly (io::copy into a BufWriter).
    let mut tar = tar::Builder::new(io::BufWriter::with_capacity(1 << 20, ChunkedWriter::new(dir, ARCHIVE, limit)));
    let mut files = Vec::new();
    while let Some(item) = items.blocking_recv() {
        match item {
            Item::Dir(path) => {
                let mut h = header(tar::EntryType::Directory, 0, 0o755);
                tar.append_data(&mut h, &path, io::empty())?;
            }
            Item::Bytes(path, bytes) => {
                let mut h = header(tar::EntryType::Regular, bytes.len() as u64, 0o644);
                tar.append_data(&mut h, &path, bytes.as_slice())?;
                files.push(toc::Entry { path, size: bytes.len() as u64, sha256: hex::encode(Sha256::digest(&bytes)) });
            }
            Item::File(path, file, size, Some(sha256)) => {
                let mut h = header(tar::EntryType::Regular, size, 0o644);
                tar.append_data(&mut h, &path, (&*file).take(size))?;
                files.push(toc::Entry { path, size, sha256 });
            }
            Item::File(path, file, size, None) => {
                let mut h = header(tar::EntryType::Regular, size, 0o644);
                let mut reader = Hashing { inner: (&*file).take(size), sha256: Sha256::new() };
                tar.append_data(&mut h, &path, &mut reader)?;
                files.push(toc::Entry { path, size, sha256: hex::encode(reader.sha256.finalize()) });
            }
        }
    }
    let chunked = tar.into_inner()?.into_inner().map_err(io::IntoInnerError::into_error)?.finish()?;
    Ok((files, chunked))
}

/// Where an export reads its objects: storage and, for a blob whose bytes
/// were evicted, the syncer that fetches it again from where its
/// repository got it.
#[derive(Clone, Copy)]
pub(crate) struct Objects<'a> {
    pub(crate) storage: &'a Storage,
    pub(crate) refetch: Option<&'a crate::sync::Syncer>,
}

impl Objects<'_> {
    /// The stored object, fetched again first if `holder` may.
    async fn open(&self, holder: &Repository, digest: &Digest) -> Result<crate::storage::StoredObject, ExportError> {
        if let Some(object) = self.storage.open_object(digest).await? {
            return Ok(object);
        }
        let Some(syncer) = self.refetch else { return Err(ExportError::Missing(digest.clone())) };
        tracing::info!(%digest, repository = %holder.name, "exported blob not stored: fetching it again");
        syncer.refetch(holder, digest).await.map_err(ExportError::Refetch)?;
        self.storage.open_object(digest).await?.ok_or_else(|| ExportError::Missing(digest.clone()))
    }
}

/// What [`write`] made.
#[derive(Debug)]
pub(crate) struct Written {
    /// The export's directory.
    pub(crate) dir: PathBuf,
    pub(crate) toc: Toc,
    /// Every digest the archive carries (objects and signatures).
    pub(crate) digests: Vec<String>,
}

/// Writes export `id` of `contents` into a new directory
/// `wharf-export-<id>` under `path`: objects in `skip` (carried by the
/// base chain) are left out. `progress` hears each object's size, and
/// says whether to go on.
pub(crate) async fn write(
    objects: Objects<'_>,
    path: &Path,
    (id, uuid): (u64, &str),
    (base, base_uuid): (Option<u64>, Option<&str>),
    contents: &[VersionContent],
    skip: &HashSet<String>,
    chunk_size: Option<u64>,
    progress: &(dyn Fn(u64) -> bool + Sync),
) -> Result<Written, ExportError> {
    let dir = super::directory(path, id);
    std::fs::create_dir(&dir).map_err(io_at(&dir))?;
    // Two items queued at most: an object is a file handle, never bytes.
    let (tx, rx) = tokio::sync::mpsc::channel::<Item>(2);
    let writer = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || write_items(&dir, chunk_size, rx)
    });
    let fed = feed(objects, (id, uuid), (base, base_uuid), contents, skip, &tx, progress).await;
    drop(tx);
    let written = writer.await.map_err(|e| ExportError::Io { path: dir.display().to_string(), error: e.to_string() })?;
    let digests = fed?;
    let (files, (chunks, archive_sha256, archive_size)) = written.map_err(io_at(&dir))?;
    let toc = Toc::new((id, uuid.to_owned()), (base, base_uuid.map(str::to_owned)), files, chunks, archive_sha256, archive_size);
    let toc_path = dir.join(toc::TOC_FILE);
    let tmp = dir.join(format!("{}.tmp", toc::TOC_FILE));
    let json = toc.to_json();
    tokio::task::spawn_blocking(move || -> io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &toc_path)
    })
    .await
    .map_err(|e| ExportError::Io { path: dir.display().to_string(), error: e.to_string() })?
    .map_err(io_at(&dir))?;
    Ok(Written { dir, toc, digests })
}

/// Sends the layout's items to the writer; the digests carried.
async fn feed(
    source: Objects<'_>,
    (id, uuid): (u64, &str),
    (base, base_uuid): (Option<u64>, Option<&str>),
    contents: &[VersionContent],
    skip: &HashSet<String>,
    tx: &tokio::sync::mpsc::Sender<Item>,
    progress: &(dyn Fn(u64) -> bool + Sync),
) -> Result<Vec<String>, ExportError> {
    let gone = || ExportError::Io { path: ARCHIVE.into(), error: "the archive writer stopped".into() };
    let send = |item: Item| async move { tx.send(item).await.map_err(|_| ()) };
    send(Item::Bytes("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec())).await.map_err(|()| gone())?;
    let mut carried = Vec::new();
    let mut seen = HashSet::new();
    let mut dirs = HashSet::new();
    let mut objects: Vec<(&Digest, &Repository)> = Vec::new();
    for c in contents {
        objects.extend(c.manifests.iter().map(|m| (&m.facts.digest, &c.repository)));
        objects.extend(c.blobs.iter().map(|b| (&b.digest, &c.repository)));
    }
    for (digest, holder) in objects {
        if !seen.insert(digest.to_string()) || skip.contains(&digest.to_string()) {
            continue;
        }
        let alg_dir = format!("blobs/{}", digest.algorithm().as_str());
        if dirs.is_empty() {
            send(Item::Dir("blobs".into())).await.map_err(|()| gone())?;
        }
        if dirs.insert(alg_dir.clone()) {
            send(Item::Dir(alg_dir)).await.map_err(|()| gone())?;
        }
        let object = source.open(holder, digest).await?;
        let size = object.size;
        let sha256 = (digest.algorithm() == crate::oci::Algorithm::Sha256).then(|| digest.hex().to_owned());
        send(Item::File(blob_path(digest), object.file, size, sha256)).await.map_err(|()| gone())?;
        if !progress(size) {
            return Err(ExportError::Canceled);
        }
        carried.push(digest.to_string());
    }
    let signatures: Vec<&AtomicSignature> = contents.iter().flat_map(|c| c.signatures.iter()).collect();
    for signature in signatures {
        let digest = signature.digest();
        if !seen.insert(digest.to_string()) || skip.contains(&digest.to_string()) {
            continue;
        }
        if dirs.is_empty() {
            send(Item::Dir("blobs".into())).await.map_err(|()| gone())?;
        }
        let alg_dir = format!("blobs/{}", digest.algorithm().as_str());
        if dirs.insert(alg_dir.clone()) {
            send(Item::Dir(alg_dir)).await.map_err(|()| gone())?;
        }
        send(Item::Bytes(blob_path(&digest), signature.content.clone())).await.map_err(|()| gone())?;
        carried.push(digest.to_string());
    }
    send(Item::Bytes("index.json".into(), index_json(contents))).await.map_err(|()| gone())?;
    let document = Document {
        format: toc::FORMAT.into(),
        export: id,
        uuid: uuid.to_owned(),
        base,
        base_uuid: base_uuid.map(str::to_owned),
        wharf_version: env!("CARGO_PKG_VERSION").into(),
        created_at: crate::metadata::now_millis(),
        repositories: contents.iter().map(RepositoryDoc::of).collect(),
    };
    let json = serde_json::to_vec_pretty(&document).unwrap_or_default();
    send(Item::Bytes(DOCUMENT.into(), json)).await.map_err(|()| gone())?;
    Ok(carried)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::metadata::{BlobItem, ManifestFacts, ManifestItem, RepositoryKind, TagItem};
    use crate::oci::Algorithm;

    /// A push repository's record, for tests.
    pub(in crate::transfer) fn repository(name: &str) -> Repository {
        Repository {
            name: name.into(),
            kind: RepositoryKind::Push,
            upstream: None,
            remote_name: None,
            retain_versions: None,
            latest_version: 1,
            created_at: 0,
            description: None,
            remote: None,
            sync_mirror: false,
            sync_interval: None,
            next_sync_at: None,
            mirrored: false,
        }
    }

    /// A version holding one image (manifest, config, layer), tagged.
    fn version(name: &str, tag: &str, manifest: &Digest, layer: &Digest, config: &Digest) -> VersionContent {
        let facts = ManifestFacts {
            digest: manifest.clone(),
            media_type: media::OCI_MANIFEST.into(),
            size: 7,
            artifact_type: None,
            subject: None,
            config: None,
            layers: Vec::new(),
            children: Vec::new(),
            annotations: None,
        };
        VersionContent {
            repository: repository(name),
            version: 1,
            tags: vec![TagItem { name: tag.into(), digest: manifest.clone(), media_type: media::OCI_MANIFEST.into() }],
            manifests: vec![ManifestItem { facts, platform: None }],
            blobs: [layer, config].iter().map(|d| BlobItem { digest: (*d).clone(), media_type: None, size: None }).collect(),
            signatures: vec![AtomicSignature {
                manifest: manifest.clone(),
                name: format!("{manifest}@1"),
                kind: "atomic".into(),
                content: format!("signature of {name}").into_bytes(),
            }],
        }
    }

    async fn stored(storage: &Storage, bytes: &[u8]) -> Digest {
        let d = Digest::of(Algorithm::Sha256, bytes);
        storage.put_verified(&d, bytes::Bytes::copy_from_slice(bytes)).await.unwrap();
        d
    }

    fn entries(dir: &Path, chunks: &[super::super::chunks::Chunk]) -> BTreeMap<String, Vec<u8>> {
        let mut archive = tar::Archive::new(super::super::chunks::ChunkedReader::new(dir, chunks));
        let mut out = BTreeMap::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            out.insert(path, bytes);
        }
        out
    }

    #[tokio::test]
    async fn an_export_is_an_oci_layout_holding_each_object_once_and_an_incremental_one_leaves_out_its_base() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(&dir.path().join("storage")).await.unwrap();
        let manifest = stored(&storage, b"a manifest").await;
        let config = stored(&storage, b"a config").await;
        let layer: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let layer = stored(&storage, &layer).await;
        // Two repositories sharing every object.
        let contents = vec![version("team/app", "1.0", &manifest, &layer, &config), version("team/copy", "latest", &manifest, &layer, &config)];
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let sizes = std::sync::Mutex::new(Vec::new());
        let written = write(Objects { storage: &storage, refetch: None }, &out, (7, "u7"), (None, None), &contents, &HashSet::new(), Some(100_000), &|n| {
            sizes.lock().unwrap().push(n);
            true
        })
        .await
        .unwrap();
        assert_eq!(written.dir, out.join("wharf-export-7"));
        assert_eq!(sizes.lock().unwrap().len(), 3, "each object once");
        assert!(written.toc.chunks.len() >= 4, "300 KB in chunks of 100 KB: {:?}", written.toc.chunks);
        assert_eq!(Toc::parse(&std::fs::read(written.dir.join(toc::TOC_FILE)).unwrap()).unwrap(), written.toc);
        super::super::chunks::verify(&written.dir, &written.toc.chunks, &written.toc.archive_sha256).unwrap();

        let files = entries(&written.dir, &written.toc.chunks);
        assert_eq!(files["oci-layout"], br#"{"imageLayoutVersion":"1.0.0"}"#);
        assert!(files[&blob_path(&layer)].len() == 300_000);
        assert_eq!(files[&blob_path(&manifest)], b"a manifest");
        let signature = Digest::of(Algorithm::Sha256, b"signature of team/app");
        assert_eq!(files[&blob_path(&signature)], b"signature of team/app");
        let index: serde_json::Value = serde_json::from_slice(&files["index.json"]).unwrap();
        let names: Vec<&str> = index["manifests"].as_array().unwrap().iter().map(|m| m["annotations"][REF_NAME].as_str().unwrap()).collect();
        assert_eq!(names, ["team/app:1.0", "team/copy:latest"]);
        let doc: Document = serde_json::from_slice(&files[DOCUMENT]).unwrap();
        assert_eq!((doc.export, doc.repositories.len(), doc.repositories[0].signatures[0].digest.clone()), (7, 2, signature));
        // Every file of the archive is in the table of contents, as it is.
        for entry in &written.toc.files {
            assert_eq!(entry.sha256, hex::encode(Sha256::digest(&files[&entry.path])), "{}", entry.path);
        }
        let mut carried = written.digests.clone();
        carried.sort();
        assert_eq!(carried.len(), 5, "3 objects and 2 signatures: {carried:?}");

        // Built on it: a new tag's manifest only.
        let retag = stored(&storage, b"another manifest").await;
        let next = vec![version("team/app", "2.0", &retag, &layer, &config)];
        let skip: HashSet<String> = written.digests.iter().cloned().collect();
        let again = write(Objects { storage: &storage, refetch: None }, &out, (8, "u8"), (Some(7), Some("u7")), &next, &skip, None, &|_| true).await.unwrap();
        let files = entries(&again.dir, &again.toc.chunks);
        let blobs: Vec<&String> = files.keys().filter(|p| p.starts_with("blobs/") && p.len() > 13).collect();
        assert_eq!(blobs, [&blob_path(&retag)], "only what the base lacks");
        assert_eq!((again.toc.base, again.toc.base_uuid.as_deref()), (Some(7), Some("u7")));

        // An object a version holds but storage lacks fails the export.
        let missing = Digest::of(Algorithm::Sha256, b"never stored");
        let broken = vec![version("team/app", "3.0", &missing, &layer, &config)];
        let err = write(Objects { storage: &storage, refetch: None }, &out, (9, "u9"), (None, None), &broken, &HashSet::new(), None, &|_| true).await.unwrap_err();
        assert!(matches!(&err, ExportError::Missing(d) if *d == missing), "{err}");
    }
}
