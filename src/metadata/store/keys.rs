//! The token signing keys the nodes of a cluster share: one document per
//! name, replaced only by compare-and-set, each change announced to the
//! other nodes (see `auth::keys`).

use crate::metadata::db::{args, Db};
use crate::metadata::{changes, now_millis, MetadataError};

pub(super) fn get(db: &Db<'_>, name: &str) -> Result<Option<String>, MetadataError> {
    db.query_opt("SELECT document FROM signing_keys WHERE name = ?1", args![name], |r| r.get(0))
}

/// Stores `document` if the stored one is still `expected` (None: none
/// yet); whether it did.
pub(super) fn swap(db: &Db<'_>, name: &str, expected: Option<&str>, document: &str) -> Result<bool, MetadataError> {
    let now = now_millis();
    let changed = match expected {
        None => db.execute(
            "INSERT INTO signing_keys (name, document, updated_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
            args![name, document, now],
        )?,
        Some(old) => db.execute(
            "UPDATE signing_keys SET document = ?3, updated_at = ?4 WHERE name = ?1 AND document = ?2",
            args![name, old, document, now],
        )?,
    };
    if changed == 1 {
        db.notify(changes::KEYS)?;
    }
    Ok(changed == 1)
}
