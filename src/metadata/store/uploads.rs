//! Blob upload sessions a cluster's nodes share: a session row, and the
//! chunks (objects in the bucket) that hold its bytes in order. Every
//! change is a compare-and-set on the session's size, so two nodes
//! appending to one session at once never both succeed.

use super::{i64_of, u64_of};
use crate::metadata::db::{args, named, Db};
use crate::metadata::{now_millis, MetadataError, SharedUpload, UploadChunk};

pub(super) fn create(db: &Db<'_>, id: &str, repository: &str) -> Result<(), MetadataError> {
    let now = now_millis();
    db.execute(
        "INSERT INTO upload_sessions (id, repository, size, started_at, updated_at) VALUES (?1, ?2, 0, ?3, ?3)",
        args![id, repository, now],
    )?;
    Ok(())
}

pub(super) fn get(db: &Db<'_>, id: &str) -> Result<Option<SharedUpload>, MetadataError> {
    let Some((repository, size, updated_at)) = db.query_opt(
        "SELECT repository, size, updated_at FROM upload_sessions WHERE id = ?1",
        args![id],
        |r| Ok((r.get::<String>(0)?, r.get::<i64>(1)?, r.get::<i64>(2)?)),
    )?
    else {
        return Ok(None);
    };
    let chunks = chunks(db, id)?;
    Ok(Some(SharedUpload { repository, size: u64_of(size), updated_at, chunks }))
}

fn chunks(db: &Db<'_>, id: &str) -> Result<Vec<UploadChunk>, MetadataError> {
    db.query_vec(
        "SELECT start_offset, end_offset, object_key FROM upload_chunks WHERE upload = ?1 ORDER BY start_offset",
        args![id],
        |r| Ok(UploadChunk { start: u64_of(r.get(0)?), end: u64_of(r.get(1)?), key: r.get(2)? }),
    )
}

/// Appends `chunk` if the session still holds exactly `chunk.start`
/// bytes; whether it did.
pub(super) fn append(db: &Db<'_>, id: &str, chunk: &UploadChunk) -> Result<bool, MetadataError> {
    let moved = db.execute(
        "UPDATE upload_sessions SET size = :end, updated_at = :now WHERE id = :id AND size = :start",
        named! { ":id": id, ":start": i64_of(chunk.start), ":end": i64_of(chunk.end), ":now": now_millis() },
    )?;
    if moved != 1 {
        return Ok(false);
    }
    db.execute(
        "INSERT INTO upload_chunks (upload, start_offset, end_offset, object_key) VALUES (?1, ?2, ?3, ?4)",
        args![id, i64_of(chunk.start), i64_of(chunk.end), &chunk.key],
    )?;
    Ok(true)
}

/// Ends the session if it holds `size` bytes (any size if None): its
/// chunks, whose objects the caller deletes; None if it is gone or
/// another request changed it first.
pub(super) fn end(db: &Db<'_>, id: &str, size: Option<u64>) -> Result<Option<Vec<UploadChunk>>, MetadataError> {
    let ended = db.execute(
        "DELETE FROM upload_sessions WHERE id = :id AND (CAST(:size AS BIGINT) IS NULL OR size = :size)",
        named! { ":id": id, ":size": size.map(i64_of) },
    )?;
    if ended != 1 {
        return Ok(None);
    }
    // Read after the session is gone: an append that got in first is
    // listed, and none can follow.
    let chunks = chunks(db, id)?;
    db.execute("DELETE FROM upload_chunks WHERE upload = ?1", args![id])?;
    Ok(Some(chunks))
}

/// Ends every session untouched since `before`: their ids and chunks.
pub(super) fn expire(db: &Db<'_>, before: i64) -> Result<Vec<(String, Vec<UploadChunk>)>, MetadataError> {
    let ids: Vec<String> =
        db.query_vec("SELECT id FROM upload_sessions WHERE updated_at < ?1", args![before], |r| r.get(0))?;
    let mut out = Vec::new();
    for id in ids {
        if let Some(chunks) = end(db, &id, None)? {
            out.push((id, chunks));
        }
    }
    Ok(out)
}
