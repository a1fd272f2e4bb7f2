//! The key of every object, the same on the local disk and in a bucket:
//! defined here and nowhere else.
//!
//! ```text
//! blobs/<alg>/<hex[0..2]>/<hex>            verified content (blobs and manifests)
//! quarantine/<alg>-<hex>-<millis>          what `verify` found corrupt (never served)
//! uploads/<session>/<start>-<end>-<n>      with S3 and a cluster: a shared upload session's
//!                                          bytes from `start` to `end` (unverified, never served)
//! ```
//!
//! One key per digest whichever repository asked: de-duplication is the
//! layout itself.

use crate::oci::Digest;

/// Where every object key starts.
pub(crate) const OBJECTS: &str = "blobs/";

/// Where the shared upload sessions' chunks are kept.
pub(crate) const UPLOADS: &str = "uploads/";

/// The key of bytes `[start, end)` of upload session `session`, written by
/// `writer` (unique per write, so two nodes racing to append never write
/// one key).
pub(crate) fn upload_chunk_key(session: &str, start: u64, end: u64, writer: &str) -> String {
    format!("{UPLOADS}{session}/{start:020}-{end:020}-{writer}")
}

/// The session an upload chunk key belongs to.
pub(crate) fn upload_chunk_session(key: &str) -> Option<&str> {
    key.strip_prefix(UPLOADS)?.split('/').next().filter(|s| !s.is_empty())
}

/// The key of the object of `digest`.
pub(crate) fn object_key(digest: &Digest) -> String {
    let hex = digest.hex();
    format!("{OBJECTS}{}/{}/{}", digest.algorithm().as_str(), &hex[..2], hex)
}

/// The name a corrupt object is moved to, unique per quarantine.
pub(crate) fn quarantine_name(digest: &Digest, millis: u64) -> String {
    format!("{}-{}-{millis}", digest.algorithm().as_str(), digest.hex())
}

/// The digest an object key names, if it is one (temporary files and
/// anything else are not).
pub(crate) fn parse_object_key(key: &str) -> Option<Digest> {
    let rest = key.strip_prefix(OBJECTS)?;
    let mut parts = rest.split('/');
    let (alg, fan, hex) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !hex.starts_with(fan) || fan.len() != 2 {
        return None;
    }
    format!("{alg}:{hex}").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Algorithm;

    #[test]
    fn keys_round_trip_and_nothing_else_parses() {
        let d = Digest::of(Algorithm::Sha256, b"x");
        let key = object_key(&d);
        assert!(key.starts_with("blobs/sha256/"));
        assert_eq!(parse_object_key(&key), Some(d.clone()));
        let d512 = Digest::of(Algorithm::Sha512, b"x");
        assert_eq!(parse_object_key(&object_key(&d512)), Some(d512));
        for bad in [
            "blobs/sha256/aa",
            &format!("{key}/more"),
            &key.replacen("blobs/", "other/", 1),
            &format!("blobs/sha256/zz/{}", d.hex()),
            "blobs/sha256/ab/ab.tmp",
        ] {
            assert_eq!(parse_object_key(bad), None, "{bad}");
        }
        assert!(quarantine_name(&d, 7).ends_with("-7"));
        let chunk = upload_chunk_key("s1", 0, 5, "w");
        assert_eq!(parse_object_key(&chunk), None, "a chunk is never an object");
        assert_eq!(upload_chunk_session(&chunk), Some("s1"));
        assert_eq!(upload_chunk_session(&key), None);
    }
}
