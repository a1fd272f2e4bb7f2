//! An export's archive on disk: one byte stream (a tar) written as
//! numbered files of at most a chunk's size, for media with a size limit,
//! and read back the same way. Each file, and the stream as a whole, is
//! hashed as it is written: the table of contents lists them.
//!
//! Blocking I/O throughout: for the blocking pool.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// One file of an archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Chunk {
    /// Its name in the export's directory.
    pub(crate) name: String,
    pub(crate) size: u64,
    /// Lowercase hex.
    pub(crate) sha256: String,
}

/// The archive's name in the export's directory: `<base>` whole, or
/// `<base>.000`, `<base>.001`, ... in chunks.
fn chunk_name(base: &str, index: Option<usize>) -> String {
    match index {
        None => base.to_owned(),
        Some(i) => format!("{base}.{i:03}"),
    }
}

struct Open {
    file: File,
    name: String,
    sha256: Sha256,
    size: u64,
}

/// What a finished [`ChunkedWriter`] wrote: its files in order, the
/// whole stream's sha256 (hex) and its size.
pub(crate) type Chunked = (Vec<Chunk>, String, u64);

/// Writes an archive into `dir`: a new file whenever the current one
/// reached `limit` bytes (one file when None). Files are created new
/// (never over an existing one) and synced when closed.
///
/// One file is its own hash; in chunks, the whole stream's hash runs on
/// a thread of its own, beside the chunks' (the writer is the export's
/// bottleneck: hashing the same bytes twice on it halves its speed).
pub(crate) struct ChunkedWriter {
    dir: PathBuf,
    base: String,
    limit: Option<u64>,
    open: Option<Open>,
    done: Vec<Chunk>,
    whole: Option<WholeHasher>,
    total: u64,
}

/// The whole stream's sha256, computed on its own thread.
struct WholeHasher {
    tx: std::sync::mpsc::SyncSender<Vec<u8>>,
    thread: std::thread::JoinHandle<String>,
}

impl WholeHasher {
    fn start() -> io::Result<WholeHasher> {
        // A few buffers in flight: the writer never waits on the hasher
        // unless it falls behind by that much.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(16);
        let thread = std::thread::Builder::new().name("export-hash".into()).spawn(move || {
            let mut sha256 = Sha256::new();
            for buf in rx {
                sha256.update(&buf);
            }
            hex::encode(sha256.finalize())
        })?;
        Ok(WholeHasher { tx, thread })
    }

    fn update(&self, bytes: &[u8]) -> io::Result<()> {
        self.tx.send(bytes.to_vec()).map_err(|_| io::Error::other("the archive's hasher stopped"))
    }

    fn finish(self) -> io::Result<String> {
        drop(self.tx);
        self.thread.join().map_err(|_| io::Error::other("the archive's hasher failed"))
    }
}

impl ChunkedWriter {
    pub(crate) fn new(dir: &Path, base: &str, limit: Option<u64>) -> ChunkedWriter {
        ChunkedWriter {
            dir: dir.to_owned(),
            base: base.to_owned(),
            limit: limit.filter(|&l| l > 0),
            open: None,
            done: Vec::new(),
            whole: None,
            total: 0,
        }
    }

    fn close(&mut self) -> io::Result<()> {
        if let Some(open) = self.open.take() {
            open.file.sync_all()?;
            self.done.push(Chunk { name: open.name, size: open.size, sha256: hex::encode(open.sha256.finalize()) });
        }
        Ok(())
    }

    fn current(&mut self) -> io::Result<&mut Open> {
        let full = match (&self.open, self.limit) {
            (Some(open), Some(limit)) => open.size >= limit,
            _ => false,
        };
        if full {
            self.close()?;
        }
        if self.open.is_none() {
            let index = self.limit.map(|_| self.done.len());
            if index.is_some_and(|i| i > 999) {
                return Err(io::Error::other("more than 1000 chunks: choose a larger chunk size"));
            }
            let name = chunk_name(&self.base, index);
            let file = std::fs::OpenOptions::new().write(true).create_new(true).open(self.dir.join(&name))?;
            self.open = Some(Open { file, name, sha256: Sha256::new(), size: 0 });
        }
        self.open.as_mut().ok_or_else(|| io::Error::other("no chunk open"))
    }

    /// Closes the last file: the files in order, the whole stream's
    /// sha256 (hex) and its size.
    pub(crate) fn finish(mut self) -> io::Result<Chunked> {
        if self.open.is_none() && self.done.is_empty() {
            // An empty archive is still one (empty) file.
            self.current()?;
        }
        self.close()?;
        let done = std::mem::take(&mut self.done);
        let whole = match (self.whole.take(), done.as_slice()) {
            (Some(hasher), _) => hasher.finish()?,
            (None, [one]) => one.sha256.clone(),
            (None, _) => return Err(io::Error::other("chunks written without the archive's hash")),
        };
        Ok((done, whole, self.total))
    }
}

impl Write for ChunkedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let limit = self.limit;
        if limit.is_some() && self.whole.is_none() {
            self.whole = Some(WholeHasher::start()?);
        }
        let open = self.current()?;
        let room = limit.map_or(buf.len(), |l| (l - open.size).min(buf.len() as u64) as usize);
        let n = open.file.write(&buf[..room])?;
        open.sha256.update(&buf[..n]);
        open.size += n as u64;
        if let Some(whole) = &self.whole {
            whole.update(&buf[..n])?;
        }
        self.total += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.open {
            Some(open) => open.file.flush(),
            None => Ok(()),
        }
    }
}

/// Why an archive's files are not what its table of contents says.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ChunkError {
    #[error("{name}: missing ({error})")]
    Missing { name: String, error: String },
    #[error("{name}: {actual} bytes, the table of contents says {expected}")]
    Size { name: String, expected: u64, actual: u64 },
    #[error("{name}: sha256 {actual}, the table of contents says {expected}")]
    Hash { name: String, expected: String, actual: String },
    #[error("{name}: {error}")]
    Io { name: String, error: String },
    #[error("the archive's files joined: sha256 {actual}, the table of contents says {expected}")]
    Whole { expected: String, actual: String },
}

/// Checks every file of an archive against `chunks`, reading each whole:
/// the first one that differs (missing, another size, another hash); then
/// the files joined against `whole` (the archive's sha256).
pub(crate) fn verify(dir: &Path, chunks: &[Chunk], whole: &str) -> Result<(), ChunkError> {
    let mut buf = vec![0u8; 256 << 10];
    // One file is the archive: its own hash is the whole one. Several:
    // the joined hash on a thread of its own, beside each file's.
    let joined = if chunks.len() > 1 {
        Some(WholeHasher::start().map_err(|e| ChunkError::Io { name: "the archive".into(), error: e.to_string() })?)
    } else {
        None
    };
    for chunk in chunks {
        let io = |e: io::Error| ChunkError::Io { name: chunk.name.clone(), error: e.to_string() };
        let mut file = File::open(dir.join(&chunk.name))
            .map_err(|e| ChunkError::Missing { name: chunk.name.clone(), error: e.to_string() })?;
        let actual = file.metadata().map_err(io)?.len();
        if actual != chunk.size {
            return Err(ChunkError::Size { name: chunk.name.clone(), expected: chunk.size, actual });
        }
        let mut sha256 = Sha256::new();
        loop {
            let n = file.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            sha256.update(&buf[..n]);
            if let Some(joined) = &joined {
                joined.update(&buf[..n]).map_err(io)?;
            }
        }
        let actual = hex::encode(sha256.finalize());
        if actual != chunk.sha256 {
            return Err(ChunkError::Hash { name: chunk.name.clone(), expected: chunk.sha256.clone(), actual });
        }
    }
    let actual = match (joined, chunks) {
        (Some(joined), _) => joined.finish().map_err(|e| ChunkError::Io { name: "the archive".into(), error: e.to_string() })?,
        (None, [one]) => one.sha256.clone(),
        (None, _) => hex::encode(Sha256::digest(b"")),
    };
    if actual != whole {
        return Err(ChunkError::Whole { expected: whole.to_owned(), actual });
    }
    Ok(())
}

/// Reads an archive's files in order as one stream (verify them first).
pub(crate) struct ChunkedReader {
    dir: PathBuf,
    names: std::vec::IntoIter<String>,
    current: Option<File>,
}

impl ChunkedReader {
    pub(crate) fn new(dir: &Path, chunks: &[Chunk]) -> ChunkedReader {
        let names: Vec<String> = chunks.iter().map(|c| c.name.clone()).collect();
        ChunkedReader { dir: dir.to_owned(), names: names.into_iter(), current: None }
    }
}

impl Read for ChunkedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.current.is_none() {
                match self.names.next() {
                    Some(name) => self.current = Some(File::open(self.dir.join(name))?),
                    None => return Ok(0),
                }
            }
            let Some(file) = self.current.as_mut() else { return Ok(0) };
            let n = file.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            self.current = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    #[test]
    fn a_stream_splits_into_numbered_files_and_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut w = ChunkedWriter::new(dir.path(), "export.tar", Some(4096));
        // Writes of odd sizes across the chunk boundaries.
        for part in data.chunks(1000) {
            w.write_all(part).unwrap();
        }
        let (chunks, whole, total) = w.finish().unwrap();
        assert_eq!(total, 10_000);
        assert_eq!(whole, sha(&data));
        let names: Vec<&str> = chunks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["export.tar.000", "export.tar.001", "export.tar.002"]);
        assert_eq!(chunks.iter().map(|c| c.size).collect::<Vec<_>>(), [4096, 4096, 1808]);
        assert_eq!(chunks[1].sha256, sha(&data[4096..8192]));
        assert_eq!(verify(dir.path(), &chunks, &whole), Ok(()));
        let mut back = Vec::new();
        ChunkedReader::new(dir.path(), &chunks).read_to_end(&mut back).unwrap();
        assert!(back == data);
    }

    #[test]
    fn without_a_limit_one_file_and_an_empty_stream_is_one_empty_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ChunkedWriter::new(dir.path(), "a.tar", None);
        w.write_all(&[1; 9000]).unwrap();
        let (chunks, _, _) = w.finish().unwrap();
        assert_eq!((chunks.len(), chunks[0].name.as_str(), chunks[0].size), (1, "a.tar", 9000));
        let (chunks, whole, total) = ChunkedWriter::new(dir.path(), "empty.tar", Some(10)).finish().unwrap();
        assert_eq!((chunks.len(), total, whole), (1, 0, sha(b"")));
        // Never over an existing file.
        assert!(ChunkedWriter::new(dir.path(), "a.tar", None).write_all(b"x").is_err());
    }

    #[test]
    fn a_tampered_truncated_or_missing_chunk_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = ChunkedWriter::new(dir.path(), "e.tar", Some(100));
        w.write_all(&[7; 250]).unwrap();
        let (chunks, whole, _) = w.finish().unwrap();
        std::fs::write(dir.path().join("e.tar.001"), [8; 100]).unwrap();
        let err = verify(dir.path(), &chunks, &whole).unwrap_err();
        assert!(matches!(&err, ChunkError::Hash { name, .. } if name == "e.tar.001"), "{err}");
        assert!(err.to_string().contains(&chunks[1].sha256), "names the expected hash: {err}");
        std::fs::write(dir.path().join("e.tar.001"), [7; 99]).unwrap();
        assert!(matches!(verify(dir.path(), &chunks, &whole), Err(ChunkError::Size { expected: 100, actual: 99, .. })));
        std::fs::remove_file(dir.path().join("e.tar.002")).unwrap();
        std::fs::write(dir.path().join("e.tar.001"), [7; 100]).unwrap();
        assert!(matches!(verify(dir.path(), &chunks, &whole), Err(ChunkError::Missing { name, .. }) if name == "e.tar.002"));
        std::fs::write(dir.path().join("e.tar.002"), [7; 50]).unwrap();
        assert_eq!(verify(dir.path(), &chunks, &whole), Ok(()));
        // Each file right, the table's hash over them wrong.
        let other = sha(&[7; 251]);
        assert!(matches!(verify(dir.path(), &chunks, &other), Err(ChunkError::Whole { expected, .. }) if expected == other));
        // One file: its hash is the whole one.
        assert!(matches!(verify(dir.path(), &chunks[..1], &chunks[0].sha256), Ok(())));
        assert!(verify(dir.path(), &chunks[..1], &whole).is_err());
    }
}
