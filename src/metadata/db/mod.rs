//! The SQL engines under the metadata store: SQLite (embedded, one node)
//! and PostgreSQL (shared by a cluster). The store's SQL is written once,
//! in the subset both engines run; everything that differs between them
//! (placeholders, column types in migrations, how a value is bound and read,
//! how writers are serialised) is in this module and its two engines.
//!
//! The portable subset the store keeps to: `?N` or `:name` placeholders,
//! `INSERT ... ON CONFLICT ... DO NOTHING / DO UPDATE`, `RETURNING`,
//! `COALESCE`, `CASE`, `CAST(... AS BIGINT)`, no boolean arithmetic
//! (`SUM(CASE WHEN ... THEN 1 ELSE 0 END)`), no `::` casts, and a
//! parameter tested for NULL is cast (`CAST(:tag AS TEXT) IS NULL`):
//! PostgreSQL cannot infer its type from `IS NULL` alone.

use std::cell::RefCell;

use super::MetadataError;

pub(crate) mod dialect;
pub(crate) mod postgres;
pub(crate) mod sqlite;
mod tls;

/// A value bound to a statement's parameter.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value<'a> {
    Null,
    Int(i64),
    Text(&'a str),
    Bytes(&'a [u8]),
}

/// What can be bound to a parameter.
pub(crate) trait ToValue {
    fn to_value(&self) -> Value<'_>;
}

impl ToValue for i64 {
    fn to_value(&self) -> Value<'_> {
        Value::Int(*self)
    }
}

impl ToValue for u32 {
    fn to_value(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}

/// Booleans are stored as 0 and 1 on both engines.
impl ToValue for bool {
    fn to_value(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}

impl ToValue for str {
    fn to_value(&self) -> Value<'_> {
        Value::Text(self)
    }
}

impl ToValue for String {
    fn to_value(&self) -> Value<'_> {
        Value::Text(self)
    }
}

impl ToValue for [u8] {
    fn to_value(&self) -> Value<'_> {
        Value::Bytes(self)
    }
}

impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value<'_> {
        Value::Bytes(self)
    }
}

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value<'_> {
        (**self).to_value()
    }
}

impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value<'_> {
        match self {
            Some(v) => v.to_value(),
            None => Value::Null,
        }
    }
}

/// A statement's arguments: by position (`?1`, `?2`, ...) or by name
/// (`:repo`), never both in one statement.
#[derive(Clone, Copy)]
pub(crate) enum Args<'a> {
    Positional(&'a [&'a dyn ToValue]),
    Named(&'a [(&'a str, &'a dyn ToValue)]),
}

/// Positional arguments: `args![a, b]` binds `?1` and `?2`.
macro_rules! args {
    () => { $crate::metadata::db::Args::Positional(&[]) };
    ($($v:expr),+ $(,)?) => {
        $crate::metadata::db::Args::Positional(&[$(&$v as &dyn $crate::metadata::db::ToValue),+])
    };
}

/// Named arguments: `named! {":repo": id}` binds `:repo`.
macro_rules! named {
    ($($k:literal : $v:expr),+ $(,)?) => {
        $crate::metadata::db::Args::Named(&[$(($k, &$v as &dyn $crate::metadata::db::ToValue)),+])
    };
}

pub(crate) use {args, named};

/// A value read from a row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Owned {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Bytes(Vec<u8>),
}

impl ToValue for Owned {
    fn to_value(&self) -> Value<'_> {
        match self {
            Owned::Null => Value::Null,
            Owned::Int(i) => Value::Int(*i),
            // No column of wharf's is REAL: nothing binds one (the
            // metadata migration refuses a row holding one).
            Owned::Real(_) => Value::Null,
            Owned::Text(s) => Value::Text(s),
            Owned::Bytes(b) => Value::Bytes(b),
        }
    }
}

/// What a column can be read as.
pub(crate) trait FromValue: Sized {
    fn from_value(v: Owned) -> Result<Self, String>;
}

impl FromValue for i64 {
    fn from_value(v: Owned) -> Result<Self, String> {
        match v {
            Owned::Int(i) => Ok(i),
            other => Err(format!("expected an integer, found {other:?}")),
        }
    }
}

impl FromValue for bool {
    fn from_value(v: Owned) -> Result<Self, String> {
        match v {
            Owned::Int(i) => Ok(i != 0),
            other => Err(format!("expected a boolean, found {other:?}")),
        }
    }
}

impl FromValue for String {
    fn from_value(v: Owned) -> Result<Self, String> {
        match v {
            Owned::Text(s) => Ok(s),
            other => Err(format!("expected text, found {other:?}")),
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(v: Owned) -> Result<Self, String> {
        match v {
            Owned::Bytes(b) => Ok(b),
            // SQLite keeps what was bound; text bound to a blob column
            // reads back as text.
            Owned::Text(s) => Ok(s.into_bytes()),
            other => Err(format!("expected bytes, found {other:?}")),
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: Owned) -> Result<Self, String> {
        match v {
            Owned::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// One row of a result, from either engine.
pub(crate) enum Row<'a> {
    Sqlite(&'a rusqlite::Row<'a>),
    Postgres(&'a ::postgres::Row),
}

impl Row<'_> {
    /// Column `i` (from 0) as `T`.
    pub(crate) fn get<T: FromValue>(&self, i: usize) -> Result<T, MetadataError> {
        T::from_value(self.value(i)?).map_err(|e| MetadataError::Database(format!("column {i}: {e}")))
    }

    /// Column `i` (from 0) as it is stored.
    pub(crate) fn value(&self, i: usize) -> Result<Owned, MetadataError> {
        match self {
            Row::Sqlite(r) => sqlite::column(r, i),
            Row::Postgres(r) => postgres::column(r, i),
        }
    }
}

/// A connection the store's SQL runs on: a transaction when writing, a
/// plain connection when reading.
pub(crate) struct Db<'a> {
    conn: Conn<'a>,
    /// Rows of a query are being read: PostgreSQL streams them over the
    /// connection, so no other statement may run until they are done (the
    /// store collects rows first). Checked on both engines, so SQLite's
    /// tests catch what PostgreSQL would refuse.
    reading: std::cell::Cell<bool>,
    /// Topics notified in this transaction, on SQLite: its store tells
    /// this process's listeners once the transaction commits.
    notified: RefCell<Vec<String>>,
}

enum Conn<'a> {
    Sqlite(&'a rusqlite::Connection),
    Postgres(RefCell<postgres::Session<'a>>),
}

impl<'a> Db<'a> {
    pub(crate) fn sqlite(conn: &'a rusqlite::Connection) -> Db<'a> {
        Db { conn: Conn::Sqlite(conn), reading: std::cell::Cell::new(false), notified: RefCell::default() }
    }

    pub(crate) fn postgres(session: postgres::Session<'a>) -> Db<'a> {
        Db { conn: Conn::Postgres(RefCell::new(session)), reading: std::cell::Cell::new(false), notified: RefCell::default() }
    }

    /// Runs a statement; the number of rows it changed.
    pub(crate) fn execute(&self, sql: &str, args: Args<'_>) -> Result<u64, MetadataError> {
        self.idle()?;
        match &self.conn {
            Conn::Sqlite(c) => sqlite::execute(c, sql, args),
            Conn::Postgres(s) => session(s)?.execute(sql, args),
        }
    }

    /// Runs several statements with no arguments (a migration).
    pub(crate) fn execute_batch(&self, sql: &str) -> Result<(), MetadataError> {
        self.idle()?;
        match &self.conn {
            Conn::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Conn::Postgres(s) => session(s)?.execute_batch(sql),
        }
    }

    /// Tells every node listening for changes (PostgreSQL's LISTEN, which
    /// hears its own node too) that `topic` changed, when the transaction
    /// commits. On SQLite, this process's listeners hear it (see
    /// [`Db::notified`]).
    pub(crate) fn notify(&self, topic: &str) -> Result<(), MetadataError> {
        match &self.conn {
            Conn::Sqlite(_) => {
                let mut notified = self.notified.borrow_mut();
                if !notified.iter().any(|t| t == topic) {
                    notified.push(topic.to_owned());
                }
                Ok(())
            }
            Conn::Postgres(_) => self.execute("SELECT pg_notify(?1, ?2)", args![postgres::CHANNEL, topic]).map(|_| ()),
        }
    }

    /// The topics notified so far on SQLite, for its store to announce
    /// after the commit.
    pub(crate) fn notified(&self) -> Vec<String> {
        self.notified.take()
    }

    /// Calls `f` on each row of a query, in order, while it returns true.
    fn rows(
        &self,
        sql: &str,
        args: Args<'_>,
        f: &mut dyn FnMut(&Row<'_>) -> Result<bool, MetadataError>,
    ) -> Result<(), MetadataError> {
        self.idle()?;
        self.reading.set(true);
        let out = match &self.conn {
            Conn::Sqlite(c) => sqlite::rows(c, sql, args, f),
            Conn::Postgres(s) => session(s).and_then(|mut s| s.rows(sql, args, f)),
        };
        self.reading.set(false);
        out
    }

    fn idle(&self) -> Result<(), MetadataError> {
        if self.reading.get() {
            return Err(MetadataError::Database("a statement ran while another's rows were being read".into()));
        }
        Ok(())
    }

    /// Calls `f` on each row of a query, in order.
    pub(crate) fn for_each(
        &self,
        sql: &str,
        args: Args<'_>,
        mut f: impl FnMut(&Row<'_>) -> Result<(), MetadataError>,
    ) -> Result<(), MetadataError> {
        self.rows(sql, args, &mut |r| f(r).map(|()| true))
    }

    /// Every row of a query, mapped by `f`.
    pub(crate) fn query_vec<T>(
        &self,
        sql: &str,
        args: Args<'_>,
        mut f: impl FnMut(&Row<'_>) -> Result<T, MetadataError>,
    ) -> Result<Vec<T>, MetadataError> {
        let mut out = Vec::new();
        self.for_each(sql, args, |r| {
            out.push(f(r)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// The first row of a query, if there is one.
    pub(crate) fn query_opt<T>(
        &self,
        sql: &str,
        args: Args<'_>,
        f: impl FnOnce(&Row<'_>) -> Result<T, MetadataError>,
    ) -> Result<Option<T>, MetadataError> {
        let mut f = Some(f);
        let mut out = None;
        self.rows(sql, args, &mut |r| {
            if let Some(f) = f.take() {
                out = Some(f(r)?);
            }
            Ok(false)
        })?;
        Ok(out)
    }

    /// The first row of a query, which must exist.
    pub(crate) fn query_row<T>(
        &self,
        sql: &str,
        args: Args<'_>,
        f: impl FnOnce(&Row<'_>) -> Result<T, MetadataError>,
    ) -> Result<T, MetadataError> {
        self.query_opt(sql, args, f)?
            .ok_or_else(|| MetadataError::Database(format!("expected a row from: {}", first_line(sql))))
    }

    /// The first column of the first row, which must exist.
    pub(crate) fn query_one<T: FromValue>(&self, sql: &str, args: Args<'_>) -> Result<T, MetadataError> {
        self.query_row(sql, args, |r| r.get(0))
    }
}

/// The session (never in use twice: see `Db::reading`).
fn session<'s, 'a>(s: &'s RefCell<postgres::Session<'a>>) -> Result<std::cell::RefMut<'s, postgres::Session<'a>>, MetadataError> {
    s.try_borrow_mut()
        .map_err(|_| MetadataError::Database("a statement ran while another's rows were being read".into()))
}

fn first_line(sql: &str) -> &str {
    sql.trim().lines().next().unwrap_or("")
}

/// Refuses a database whose schema is newer than this wharf's.
fn check_schema(applied: usize, known: usize) -> Result<(), MetadataError> {
    if applied > known {
        return Err(MetadataError::Database(format!(
            "the database has schema version {applied}, newer than this wharf knows ({known}); run a newer wharf"
        )));
    }
    Ok(())
}
