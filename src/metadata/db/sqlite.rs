//! SQLite: the embedded engine of a single node.
//!
//! WAL mode with one writer connection (behind a mutex: SQLite allows one
//! writer at a time anyway, and a mutex queues writers without busy-retry
//! loops) and a small pool of reader connections, which WAL lets run beside
//! the writer. `synchronous = NORMAL`: a power loss may drop the last
//! commits, never leave the database inconsistent. `PRAGMA user_version`
//! records how many migrations ran.

use std::path::Path;
use std::sync::{Condvar, Mutex};

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::Connection;

use super::{Args, Db, Owned, Row, Value};
use crate::metadata::MetadataError;

/// Reader connections, opened once and shared; a read waits for a free
/// one rather than opening another (opening costs far more than a read).
const READERS: usize = 8;

/// Prepared statements kept per connection: more than the store has.
const STATEMENT_CACHE: usize = 256;

impl From<rusqlite::Error> for MetadataError {
    fn from(e: rusqlite::Error) -> Self {
        MetadataError::Database(e.to_string())
    }
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(i),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Bytes(b) => ValueRef::Blob(b),
        }))
    }
}

pub(super) fn column(r: &rusqlite::Row<'_>, i: usize) -> Result<Owned, MetadataError> {
    Ok(match r.get_ref(i)? {
        ValueRef::Null => Owned::Null,
        ValueRef::Integer(i) => Owned::Int(i),
        ValueRef::Real(f) => Owned::Real(f),
        ValueRef::Text(t) => Owned::Text(
            String::from_utf8(t.to_vec()).map_err(|_| MetadataError::Database(format!("column {i} is not UTF-8")))?,
        ),
        ValueRef::Blob(b) => Owned::Bytes(b.to_vec()),
    })
}

fn bind(stmt: &mut rusqlite::CachedStatement<'_>, args: Args<'_>) -> Result<(), MetadataError> {
    let given = match args {
        Args::Positional(values) => values.len(),
        Args::Named(values) => values.len(),
    };
    if given != stmt.parameter_count() {
        return Err(MetadataError::Database(format!(
            "the statement takes {} arguments, {given} given",
            stmt.parameter_count()
        )));
    }
    match args {
        Args::Positional(values) => {
            for (i, v) in values.iter().enumerate() {
                stmt.raw_bind_parameter(i + 1, v.to_value())?;
            }
        }
        Args::Named(values) => {
            for (name, v) in values {
                let i = stmt
                    .parameter_index(name)?
                    .ok_or_else(|| MetadataError::Database(format!("the statement has no parameter {name}")))?;
                stmt.raw_bind_parameter(i, v.to_value())?;
            }
        }
    }
    Ok(())
}

pub(super) fn execute(c: &Connection, sql: &str, args: Args<'_>) -> Result<u64, MetadataError> {
    let mut stmt = c.prepare_cached(sql)?;
    bind(&mut stmt, args)?;
    Ok(stmt.raw_execute()? as u64)
}

pub(super) fn rows(
    c: &Connection,
    sql: &str,
    args: Args<'_>,
    f: &mut dyn FnMut(&Row<'_>) -> Result<bool, MetadataError>,
) -> Result<(), MetadataError> {
    let mut stmt = c.prepare_cached(sql)?;
    bind(&mut stmt, args)?;
    let mut rows = stmt.raw_query();
    while let Some(r) = rows.next()? {
        if !f(&Row::Sqlite(r))? {
            break;
        }
    }
    Ok(())
}

/// The columns of `table`, in order.
pub(crate) fn columns(db: &Db<'_>, table: &str) -> Result<Vec<String>, MetadataError> {
    db.query_vec("SELECT name FROM pragma_table_info(?1) ORDER BY cid", super::args![table], |r| r.get(0))
}

fn lock_error<T>(_: std::sync::PoisonError<T>) -> MetadataError {
    MetadataError::Database("a metadata connection was poisoned by an earlier panic".into())
}

fn connect(path: &Path) -> Result<Connection, MetadataError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")?;
    Ok(conn)
}

fn migrate(conn: &mut Connection, migrations: &[&str]) -> Result<(), MetadataError> {
    let applied: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let applied = usize::try_from(applied).unwrap_or(0);
    super::check_schema(applied, migrations.len())?;
    for (i, sql) in migrations.iter().enumerate().skip(applied) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!(migration = i + 1, "metadata schema migrated");
    }
    Ok(())
}

pub(crate) struct Sqlite {
    // One writer: SQLite serialises writers anyway; the mutex makes them
    // queue here instead of failing with SQLITE_BUSY.
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    reader_free: Condvar,
    /// Where committed transactions' topics go ([`Db::notify`]): this
    /// process is the only one writing the file.
    changes: Option<tokio::sync::broadcast::Sender<String>>,
}

impl Sqlite {
    /// Opens (creating as needed) the database at `path` and applies the
    /// migrations it has not run yet.
    pub(crate) fn open(path: &Path, migrations: &[&str]) -> Result<Sqlite, MetadataError> {
        let mut writer = connect(path)?;
        migrate(&mut writer, migrations)?;
        let readers = (0..READERS).map(|_| connect(path)).collect::<Result<Vec<_>, _>>()?;
        Ok(Sqlite { writer: Mutex::new(writer), readers: Mutex::new(readers), reader_free: Condvar::new(), changes: None })
    }

    /// Announces each committed transaction's topics on `changes`.
    pub(crate) fn announce_to(&mut self, changes: tokio::sync::broadcast::Sender<String>) {
        self.changes = Some(changes);
    }

    pub(crate) fn read<T>(&self, f: impl FnOnce(&Db<'_>) -> Result<T, MetadataError>) -> Result<T, MetadataError> {
        let conn = {
            let mut readers = self.readers.lock().map_err(lock_error)?;
            loop {
                if let Some(c) = readers.pop() {
                    break c;
                }
                readers = self.reader_free.wait(readers).map_err(lock_error)?;
            }
        };
        // Returned to the pool however `f` ends, even by a panic.
        let lease = Lease { store: self, conn: Some(conn) };
        match &lease.conn {
            Some(conn) => f(&Db::sqlite(conn)),
            None => Err(MetadataError::Database("reader lease lost its connection".into())),
        }
    }

    pub(crate) fn write<T>(&self, f: impl FnOnce(&Db<'_>) -> Result<T, MetadataError>) -> Result<T, MetadataError> {
        let mut conn = self.writer.lock().map_err(lock_error)?;
        let tx = conn.transaction()?;
        let db = Db::sqlite(&tx);
        let out = f(&db)?;
        let notified = db.notified();
        drop(db);
        tx.commit()?;
        if let Some(changes) = &self.changes {
            for topic in notified {
                // Nobody listening is fine.
                let _ = changes.send(topic);
            }
        }
        Ok(out)
    }

    /// `f` on the writer connection outside any transaction: for a single
    /// statement, which holds SQLite's write lock only while it runs.
    pub(crate) fn statement<T>(&self, f: impl FnOnce(&Db<'_>) -> Result<T, MetadataError>) -> Result<T, MetadataError> {
        let conn = self.writer.lock().map_err(lock_error)?;
        f(&Db::sqlite(&conn))
    }
}

/// A reader connection out of the pool, put back when dropped.
struct Lease<'a> {
    store: &'a Sqlite,
    conn: Option<Connection>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            match self.store.readers.lock() {
                Ok(mut readers) => readers.push(conn),
                Err(poisoned) => poisoned.into_inner().push(conn),
            }
            self.store.reader_free.notify_one();
        }
    }
}
