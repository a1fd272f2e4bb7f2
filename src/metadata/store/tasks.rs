//! Tasks: long-running work (syncs, gc, verification) with its state,
//! progress and what it created.

use super::{count, i64_of, limit_of, u64_of};
use crate::metadata::db::{args, named, Db, Row};
use crate::metadata::{now_millis, MetadataError, Millis, Page, PageRequest, Task, TaskFilter, TaskProgress, TaskState};

const COLUMNS: &str = "id, kind, resource, params, state, items_done, items_total, bytes_done, error,
    created_resources, created_at, started_at, finished_at, node, step";
/// Every change to a task row carries this condition: a finished task
/// never changes.
const UNFINISHED: &str = "state IN ('waiting', 'running')";

fn from_row(r: &Row<'_>) -> Result<Task, MetadataError> {
    let id = u64_of(r.get(0)?);
    let state: String = r.get(4)?;
    let Some(state) = TaskState::parse(&state) else {
        return Err(MetadataError::Database(format!("task {id} has an unknown state {state:?}")));
    };
    let params = serde_json::from_str(&r.get::<String>(3)?)
        .map_err(|e| MetadataError::Database(format!("task {id} has invalid params: {e}")))?;
    let created_resources = serde_json::from_str(&r.get::<String>(9)?)
        .map_err(|e| MetadataError::Database(format!("task {id} has invalid created_resources: {e}")))?;
    Ok(Task {
        id,
        kind: r.get(1)?,
        resource: r.get(2)?,
        params,
        state,
        progress: TaskProgress {
            items_done: u64_of(r.get(5)?),
            items_total: r.get::<Option<i64>>(6)?.map(u64_of),
            bytes_done: u64_of(r.get(7)?),
        },
        error: r.get(8)?,
        created_resources,
        created_at: r.get(10)?,
        started_at: r.get(11)?,
        finished_at: r.get(12)?,
        node: r.get(13)?,
        step: r.get(14)?,
    })
}

pub(super) fn get(db: &Db<'_>, id: u64) -> Result<Option<Task>, MetadataError> {
    db.query_opt(&format!("SELECT {COLUMNS} FROM tasks WHERE id = ?1"), args![i64_of(id)], from_row)
}

/// After an update that matched no unfinished row: why not.
fn unchanged(db: &Db<'_>, id: u64, doing: &str) -> MetadataError {
    match get(db, id) {
        Ok(Some(t)) => MetadataError::Conflict(format!("task {id} is {}; {doing}", t.state.as_str())),
        Ok(None) => MetadataError::NotFound(format!("task {id} does not exist")),
        Err(e) => e,
    }
}

fn require(db: &Db<'_>, id: u64) -> Result<Task, MetadataError> {
    get(db, id)?.ok_or_else(|| MetadataError::Database(format!("task {id} vanished during an update")))
}

pub(super) fn create(
    db: &Db<'_>,
    node: &str,
    kind: &str,
    resource: Option<&str>,
    params: &serde_json::Value,
) -> Result<Task, MetadataError> {
    let id: i64 = db.query_one(
        "INSERT INTO tasks (kind, resource, params, state, created_at, node) VALUES (?1, ?2, ?3, 'waiting', ?4, ?5)
         RETURNING id",
        args![kind, resource, params.to_string(), now_millis(), node],
    )?;
    require(db, u64_of(id))
}

pub(super) fn list(db: &Db<'_>, filter: &TaskFilter, page: PageRequest) -> Result<Page<Task>, MetadataError> {
    let state = filter.state.map(TaskState::as_str);
    let from = "FROM tasks WHERE (CAST(:state AS TEXT) IS NULL OR state = :state) AND (CAST(:kind AS TEXT) IS NULL OR kind = :kind)
        AND (CAST(:resource AS TEXT) IS NULL OR resource = :resource)";
    let total = count(db, from, named! {":state": state, ":kind": filter.kind, ":resource": filter.resource})?;
    let (limit, offset) = limit_of(page);
    // Ids grow with every insert: the newest task has the largest.
    let items = db.query_vec(
        &format!("SELECT {COLUMNS} {from} ORDER BY id DESC LIMIT :limit OFFSET :offset"),
        named! {":state": state, ":kind": filter.kind, ":resource": filter.resource, ":limit": limit, ":offset": offset},
        from_row,
    )?;
    Ok(Page { total, items })
}

pub(super) fn start(db: &Db<'_>, id: u64) -> Result<Option<Task>, MetadataError> {
    // Busy: another task on the same resource runs, or an earlier one
    // waits for its turn (ids grow with submission), on any node.
    let started = db.execute(
        "UPDATE tasks SET state = 'running', started_at = ?2 WHERE id = ?1 AND state = 'waiting'
         AND NOT EXISTS (SELECT 1 FROM tasks o WHERE o.resource = tasks.resource AND o.id != tasks.id
             AND (o.state = 'running' OR (o.state = 'waiting' AND o.id < tasks.id)))",
        args![i64_of(id), now_millis()],
    )?;
    if started == 0 {
        return match get(db, id)? {
            Some(t) if t.state == TaskState::Waiting => Ok(None),
            _ => Err(unchanged(db, id, "only a waiting task can start")),
        };
    }
    require(db, id).map(Some)
}

/// One statement: atomic without a transaction.
pub(super) fn progress(db: &Db<'_>, id: u64, progress: TaskProgress, step: Option<&str>, log: &str) -> Result<bool, MetadataError> {
    let canceled = db.query_opt(
        "UPDATE tasks SET items_done = ?2, items_total = ?3, bytes_done = ?4, step = COALESCE(?5, step),
             log = CASE WHEN ?6 = '' THEN log ELSE COALESCE(log, '') || ?6 END
         WHERE id = ?1 AND state = 'running'
         RETURNING cancel_requested",
        args![i64_of(id), i64_of(progress.items_done), progress.items_total.map(i64_of), i64_of(progress.bytes_done), step, log],
        |r| r.get::<bool>(0),
    )?;
    Ok(canceled.unwrap_or(false))
}

pub(super) fn log(db: &Db<'_>, id: u64) -> Result<Option<String>, MetadataError> {
    db.query_opt("SELECT log FROM tasks WHERE id = ?1", args![i64_of(id)], |r| r.get::<Option<String>>(0))
        .map(|found| found.map(Option::unwrap_or_default))
}

pub(super) fn cancel_requested(db: &Db<'_>, id: u64) -> Result<bool, MetadataError> {
    Ok(db.query_opt("SELECT cancel_requested FROM tasks WHERE id = ?1", args![i64_of(id)], |r| r.get(0))?.unwrap_or(false))
}

pub(super) fn finish(db: &Db<'_>, id: u64, state: TaskState, error: Option<&str>, created: &str) -> Result<Task, MetadataError> {
    let finished = db.execute(
        &format!(
            "UPDATE tasks SET state = ?2, error = ?3, created_resources = ?4, finished_at = ?5
             WHERE id = ?1 AND {UNFINISHED}"
        ),
        args![i64_of(id), state.as_str(), error, created, now_millis()],
    )?;
    if finished == 0 {
        return Err(unchanged(db, id, "a finished task never changes"));
    }
    require(db, id)
}

pub(super) fn cancel(db: &Db<'_>, id: u64, message: &str) -> Result<Task, MetadataError> {
    let canceled = db.execute(
        "UPDATE tasks SET state = 'canceled', error = ?2, finished_at = ?3 WHERE id = ?1 AND state = 'waiting'",
        args![i64_of(id), message, now_millis()],
    )?;
    // Running: whichever node runs it sees the request.
    db.execute("UPDATE tasks SET cancel_requested = 1 WHERE id = ?1 AND state = 'running'", args![i64_of(id)])?;
    match get(db, id)? {
        None => Err(MetadataError::NotFound(format!("task {id} does not exist"))),
        // Canceled just now, or running: its runner stops it.
        Some(t) if canceled > 0 || t.state == TaskState::Running => Ok(t),
        Some(t) => Err(MetadataError::Conflict(format!("task {id} has already finished: it is {}", t.state.as_str()))),
    }
}

pub(super) fn interrupt(db: &Db<'_>, node: &str, message: &str) -> Result<u64, MetadataError> {
    db.execute(
        &format!(
            "UPDATE tasks SET state = 'failed', error = ?1, finished_at = ?2
             WHERE {UNFINISHED} AND (node = ?3 OR node IS NULL)"
        ),
        args![message, now_millis(), node],
    )
}

pub(super) fn heartbeat(db: &Db<'_>, node: &str, started_at: Millis) -> Result<(), MetadataError> {
    db.execute(
        "INSERT INTO nodes (name, started_at, heartbeat_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO UPDATE SET started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at",
        args![node, started_at, now_millis()],
    )?;
    Ok(())
}

pub(super) fn fail_orphaned(db: &Db<'_>, before: Millis) -> Result<u64, MetadataError> {
    db.execute(
        &format!(
            "UPDATE tasks SET state = 'failed', finished_at = ?2,
                 error = 'interrupted: its node, ' || node || ', stopped answering'
             WHERE {UNFINISHED} AND node IN (SELECT name FROM nodes WHERE heartbeat_at < ?1)"
        ),
        args![before, now_millis()],
    )
}
