//! An export's table of contents (`toc.json`, beside the archive): every
//! file in the archive with its size and sha256, the archive's files
//! (chunks) with theirs, and one sha256 over the archive as a whole. An
//! import checks it all before it stores anything.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::chunks::Chunk;

/// What `format` says: this layout of an export, version 1.
pub(crate) const FORMAT: &str = "wharf-export/1";
/// The table of contents' file name, beside the archive.
pub(crate) const TOC_FILE: &str = "toc.json";

/// One file inside the archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// Its path in the archive (`blobs/sha256/<hex>`, `index.json`, ...).
    pub(crate) path: String,
    pub(crate) size: u64,
    /// Lowercase hex.
    pub(crate) sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Toc {
    pub(crate) format: String,
    /// The export's number on the node that made it.
    pub(crate) export: u64,
    /// Its own random id: what an import records it by.
    pub(crate) uuid: String,
    /// The export this one builds on (an incremental export), if any: its
    /// number and id.
    pub(crate) base: Option<u64>,
    pub(crate) base_uuid: Option<String>,
    pub(crate) files: Vec<Entry>,
    pub(crate) chunks: Vec<Chunk>,
    /// Over the archive as one stream (the chunks in order).
    pub(crate) archive_sha256: String,
    pub(crate) archive_size: u64,
    /// Over everything above, as `canonical` writes it: a table of
    /// contents edited by hand no longer matches.
    pub(crate) sha256: String,
}

/// Why a table of contents cannot be trusted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum TocError {
    #[error("not a wharf export table of contents: {0}")]
    Unreadable(String),
    #[error("format {0:?} is not {FORMAT:?}: made by a newer wharf?")]
    Format(String),
    #[error("its own sha256 is {actual}, it says {expected}: the table of contents was changed")]
    Tampered { expected: String, actual: String },
}

impl Toc {
    /// A table of contents with its own hash set.
    pub(crate) fn new(
        (export, uuid): (u64, String),
        (base, base_uuid): (Option<u64>, Option<String>),
        files: Vec<Entry>,
        chunks: Vec<Chunk>,
        archive_sha256: String,
        archive_size: u64,
    ) -> Toc {
        let mut toc = Toc {
            format: FORMAT.into(),
            export,
            uuid,
            base,
            base_uuid,
            files,
            chunks,
            archive_sha256,
            archive_size,
            sha256: String::new(),
        };
        toc.sha256 = toc.own_hash();
        toc
    }

    /// The hash over every field but `sha256`, in a fixed order.
    fn own_hash(&self) -> String {
        let mut h = Sha256::new();
        let line = |h: &mut Sha256, s: String| {
            h.update(s.as_bytes());
            h.update(b"\n");
        };
        line(&mut h, format!("{} {} {} {:?} {:?}", self.format, self.export, self.uuid, self.base, self.base_uuid));
        for f in &self.files {
            line(&mut h, format!("file {} {} {}", f.sha256, f.size, f.path));
        }
        for c in &self.chunks {
            line(&mut h, format!("chunk {} {} {}", c.sha256, c.size, c.name));
        }
        line(&mut h, format!("archive {} {}", self.archive_sha256, self.archive_size));
        hex::encode(h.finalize())
    }

    pub(crate) fn to_json(&self) -> Vec<u8> {
        // Plain data: serialising cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// Reads and checks a table of contents: its format and its own hash.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Toc, TocError> {
        let toc: Toc = serde_json::from_slice(bytes).map_err(|e| TocError::Unreadable(e.to_string()))?;
        if toc.format != FORMAT {
            return Err(TocError::Format(toc.format));
        }
        let actual = toc.own_hash();
        if actual != toc.sha256 {
            return Err(TocError::Tampered { expected: toc.sha256, actual });
        }
        Ok(toc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toc() -> Toc {
        let files = vec![
            Entry { path: "oci-layout".into(), size: 30, sha256: "aa".into() },
            Entry { path: "blobs/sha256/bb".into(), size: 5, sha256: "bb".into() },
        ];
        let chunks = vec![Chunk { name: "export.tar".into(), size: 3072, sha256: "cc".into() }];
        Toc::new((4, "u4".into()), (Some(2), Some("u2".into())), files, chunks, "cc".into(), 3072)
    }

    #[test]
    fn a_table_of_contents_round_trips_and_any_change_is_caught() {
        let t = toc();
        assert_eq!(Toc::parse(&t.to_json()).unwrap(), t);
        let edits: [fn(&mut Toc); 6] = [
            |t| t.base_uuid = Some("u3".into()),
            |t| t.files[1].size += 1,
            |t| t.files[0].sha256 = "ab".into(),
            |t| t.chunks[0].name = "other.tar".into(),
            |t| t.base = None,
            |t| t.files.swap(0, 1),
        ];
        for edit in edits {
            let mut changed = toc();
            edit(&mut changed);
            let err = Toc::parse(&changed.to_json()).unwrap_err();
            assert!(matches!(err, TocError::Tampered { .. }), "{err}");
        }
        let mut newer = toc();
        newer.format = "wharf-export/2".into();
        assert!(matches!(Toc::parse(&newer.to_json()), Err(TocError::Format(_))));
        assert!(matches!(Toc::parse(b"{}"), Err(TocError::Unreadable(_))));
    }
}
