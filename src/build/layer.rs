//! Writing a built layer: its entries as a tar, gzip-compressed, streamed
//! into an upload file of storage and committed under the digest it turned
//! out to have. Both digests come from one pass: `diff_id` over the tar,
//! the layer's digest over the gzip.
//!
//! Reproducible: entries are written in path order with fixed times and
//! owners (as the build gives them), the gzip header carries no time or
//! name, and the compression (level 6, in fixed blocks on every core:
//! `pgzip`) gives the same bytes on any machine. Blocking: for the
//! blocking pool.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use super::pgzip::ParallelGzip;
use crate::oci::{Algorithm, Digest, Hasher};
use crate::storage::{Partial, Storage};

/// What goes at an entry's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Body {
    Dir,
    /// A regular file whose bytes are in `path` on this node (a build
    /// context's file, an extracted stage's), `size` of them.
    File { path: PathBuf, size: u64 },
    /// A regular file given whole (a heredoc).
    Bytes(Vec<u8>),
    Symlink(String),
    /// The entry hides the lower layers' `path` (`.wh.<name>`).
    /// Only read from base layers so far: a build without `RUN` removes
    /// no path, so the builder writes none.
    #[allow(dead_code)]
    Whiteout,
}

/// One entry of a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// Relative to the image's root, `/`-separated, no trailing `/`.
    pub(crate) path: String,
    pub(crate) body: Body,
    pub(crate) mode: u32,
    pub(crate) uid: u64,
    pub(crate) gid: u64,
}

/// A layer written and stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layer {
    /// Of the gzip bytes: the manifest's descriptor.
    pub(crate) digest: Digest,
    pub(crate) size: u64,
    /// Of the uncompressed tar: the config's `rootfs.diff_ids`.
    pub(crate) diff_id: Digest,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum LayerError {
    #[error("{path}: {error}")]
    Io { path: String, error: String },
    #[error("{0}: changed while the layer was written")]
    Changed(String),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
}

fn io_err(path: &str) -> impl Fn(io::Error) -> LayerError + '_ {
    move |e| LayerError::Io { path: path.to_owned(), error: e.to_string() }
}

/// A writer into an upload file of storage.
struct IntoPartial(Partial);

impl Write for IntoPartial {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_blocking(buf).map_err(|e| io::Error::other(e.to_string()))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Hashes what passes through to `inner`.
struct Hashing<W> {
    inner: W,
    sha256: Hasher,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.sha256.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The tar path of an entry: a whiteout is `.wh.<name>` beside what it hides.
fn tar_path(entry: &Entry) -> String {
    match entry.body {
        Body::Whiteout => match entry.path.rsplit_once('/') {
            Some((dir, name)) => format!("{dir}/.wh.{name}"),
            None => format!(".wh.{}", entry.path),
        },
        _ => entry.path.clone(),
    }
}

/// Writes `entries` (any order: they are sorted here) as a layer with
/// every time `mtime`, into a new upload file `spool` and then storage.
pub(crate) fn write(storage: &Storage, spool: &Path, mut entries: Vec<Entry>, mtime: u64) -> Result<Layer, LayerError> {
    entries.sort_by_cached_key(tar_path);
    entries.dedup_by(|later, earlier| tar_path(later) == tar_path(earlier));
    let spool_name = spool.display().to_string();
    let partial = Partial::create(spool)?;
    let gzip = ParallelGzip::new(IntoPartial(partial), 6).map_err(io_err(&spool_name))?;
    let mut tar = tar::Builder::new(Hashing { inner: gzip, sha256: Hasher::new(Algorithm::Sha256) });
    tar.mode(tar::HeaderMode::Deterministic);
    for entry in &entries {
        let path = tar_path(entry);
        let mut h = tar::Header::new_gnu();
        h.set_mtime(mtime);
        h.set_uid(entry.uid);
        h.set_gid(entry.gid);
        h.set_mode(entry.mode);
        match &entry.body {
            Body::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                tar.append_data(&mut h, format!("{path}/"), io::empty()).map_err(io_err(&path))?;
            }
            Body::File { path: source, size } => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(*size);
                let shown = source.display().to_string();
                let file = File::open(source).map_err(io_err(&shown))?;
                let mut counted = Counted { inner: file.take(*size), read: 0 };
                tar.append_data(&mut h, &path, &mut counted).map_err(io_err(&shown))?;
                if counted.read != *size {
                    return Err(LayerError::Changed(shown));
                }
            }
            Body::Bytes(bytes) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(bytes.len() as u64);
                tar.append_data(&mut h, &path, bytes.as_slice()).map_err(io_err(&path))?;
            }
            Body::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                tar.append_link(&mut h, &path, target).map_err(io_err(&path))?;
            }
            Body::Whiteout => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(0);
                tar.append_data(&mut h, &path, io::empty()).map_err(io_err(&path))?;
            }
        }
    }
    let hashing = tar.into_inner().map_err(io_err(&spool_name))?;
    let Hashing { inner: gzip, sha256 } = hashing;
    let diff_id = sha256.finish();
    let IntoPartial(partial) = gzip.finish().map_err(io_err(&spool_name))?;
    let digest = partial.digest();
    let size = partial.commit_blocking(storage, &digest, None).map_err(|e| LayerError::Io { path: spool_name.clone(), error: e.to_string() })?;
    // The upload file was renamed into storage, or is left: either way
    // nothing of it stays in the spool.
    let _ = std::fs::remove_file(spool);
    Ok(Layer { digest, size, diff_id })
}

/// Counts what it reads: a file that shrank is caught, not padded.
struct Counted<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, body: Body) -> Entry {
        Entry { path: path.into(), body, mode: 0o644, uid: 0, gid: 0 }
    }

    async fn storage(dir: &Path) -> Storage {
        Storage::open(&dir.join("storage")).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_same_entries_in_any_order_make_the_same_layer() {
        let dir = tempfile::tempdir().unwrap();
        let s = storage(dir.path()).await;
        let src = dir.path().join("tool");
        std::fs::write(&src, b"#!/bin/sh\necho hi\n").unwrap();
        let entries = vec![
            Entry { path: "usr".into(), body: Body::Dir, mode: 0o755, uid: 0, gid: 0 },
            Entry { path: "usr/bin".into(), body: Body::Dir, mode: 0o755, uid: 0, gid: 0 },
            Entry { path: "usr/bin/tool".into(), body: Body::File { path: src.clone(), size: 18 }, mode: 0o755, uid: 1000, gid: 1000 },
            file("etc/motd", Body::Bytes(b"hello\n".to_vec())),
            file("bin", Body::Symlink("usr/bin".into())),
            file("old/gone", Body::Whiteout),
        ];
        let uploads = s.uploads_dir().to_owned();
        let one = tokio::task::block_in_place(|| write(&s, &uploads.join("a"), entries.clone(), 1_700_000_000)).unwrap();
        let mut reversed = entries.clone();
        reversed.reverse();
        let two = tokio::task::block_in_place(|| write(&s, &uploads.join("b"), reversed, 1_700_000_000)).unwrap();
        assert_eq!(one, two);
        let other_time = tokio::task::block_in_place(|| write(&s, &uploads.join("c"), entries, 1)).unwrap();
        assert_ne!(one.digest, other_time.digest);
        assert!(!uploads.join("a").exists(), "the upload file went into storage");

        // Stored under its digest; gunzipped, the tar of diff_id, in order.
        let stored = s.read_small(&one.digest, 1 << 20).await.unwrap().unwrap();
        assert_eq!(stored.len() as u64, one.size);
        let mut tar_bytes = Vec::new();
        flate2::read::GzDecoder::new(&stored[..]).read_to_end(&mut tar_bytes).unwrap();
        assert_eq!(Digest::of(Algorithm::Sha256, &tar_bytes), one.diff_id);
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let listed: Vec<(String, u64, u64, u32)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (e.path().unwrap().display().to_string(), h.mtime().unwrap(), h.uid().unwrap(), h.mode().unwrap())
            })
            .collect();
        let paths: Vec<&str> = listed.iter().map(|l| l.0.as_str()).collect();
        assert_eq!(paths, ["bin", "etc/motd", "old/.wh.gone", "usr/", "usr/bin/", "usr/bin/tool"]);
        assert!(listed.iter().all(|l| l.1 == 1_700_000_000));
        assert_eq!((listed[5].2, listed[5].3), (1000, 0o755));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_file_that_shrinks_while_written_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let s = storage(dir.path()).await;
        let src = dir.path().join("f");
        std::fs::write(&src, b"short").unwrap();
        let uploads = s.uploads_dir().to_owned();
        let e = tokio::task::block_in_place(|| write(&s, &uploads.join("x"), vec![file("f", Body::File { path: src, size: 100 })], 0));
        assert!(e.is_err());
    }
}
