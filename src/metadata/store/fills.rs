//! Blob fills in flight across a cluster (which node fetches a digest
//! from its upstream, so the others stream it from that node rather than
//! fetch it again), and leases on work one node does at a time.

use crate::metadata::db::{args, Db};
use crate::metadata::{now_millis, FillClaim, MetadataError};

/// Claims the fill of `digest` for `node` (reached at `address`) unless a
/// node other than `taking_over` fills it already; the claim's holder.
pub(super) fn claim(
    db: &Db<'_>,
    digest: &str,
    node: &str,
    address: &str,
    taking_over: Option<&str>,
) -> Result<FillClaim, MetadataError> {
    let now = now_millis();
    let inserted = db.execute(
        "INSERT INTO fills (digest, node, address, started_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
        args![digest, node, address, now],
    )?;
    if inserted == 1 {
        return Ok(FillClaim::Claimed);
    }
    if let Some(gone) = taking_over {
        let taken = db.execute(
            "UPDATE fills SET node = ?2, address = ?3, started_at = ?4 WHERE digest = ?1 AND node = ?5",
            args![digest, node, address, now, gone],
        )?;
        if taken == 1 {
            return Ok(FillClaim::Claimed);
        }
    }
    let holder = db.query_opt("SELECT node, address FROM fills WHERE digest = ?1", args![digest], |r| {
        Ok((r.get::<String>(0)?, r.get::<String>(1)?))
    })?;
    Ok(match holder {
        Some((holder, _)) if holder == node => FillClaim::Claimed,
        Some((node, address)) => FillClaim::Filling { node, address },
        // Ended between the insert and the look: try again.
        None => FillClaim::Ended,
    })
}

/// Ends `node`'s claim on `digest`.
pub(super) fn release(db: &Db<'_>, digest: &str, node: &str) -> Result<(), MetadataError> {
    db.execute("DELETE FROM fills WHERE digest = ?1 AND node = ?2", args![digest, node])?;
    Ok(())
}

/// Ends every claim of `node` (at its start: its last process's fills
/// are over).
pub(super) fn release_all(db: &Db<'_>, node: &str) -> Result<u64, MetadataError> {
    db.execute("DELETE FROM fills WHERE node = ?1", args![node])
}

/// Every digest some node is filling.
pub(super) fn in_flight(db: &Db<'_>) -> Result<Vec<String>, MetadataError> {
    db.query_vec("SELECT digest FROM fills", args![], |r| r.get(0))
}

/// Takes (or renews) lease `name` for `node` until `until`, unless another
/// node holds it past `now`; whether `node` holds it.
pub(super) fn take_lease(db: &Db<'_>, name: &str, node: &str, now: i64, until: i64) -> Result<bool, MetadataError> {
    let taken = db.execute(
        "INSERT INTO leases (name, node, expires_at) VALUES (?1, ?2, ?4)
         ON CONFLICT (name) DO UPDATE SET node = excluded.node, expires_at = excluded.expires_at
         WHERE leases.node = excluded.node OR leases.expires_at < ?3",
        args![name, node, now, until],
    )?;
    Ok(taken == 1)
}
