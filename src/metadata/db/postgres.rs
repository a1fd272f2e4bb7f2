//! PostgreSQL: the engine several nodes share.
//!
//! A pool of connections (at most `[metadata] max_connections`), each with
//! its prepared statements. Reads run on a connection outside any
//! transaction, as SQLite's readers do. Writes run in a transaction that
//! first takes one cluster-wide advisory lock: the store was written for
//! SQLite's one writer at a time (a version number is the last one plus
//! one), and the lock keeps exactly that guarantee across nodes.
//! Migrations run under a second advisory lock, so nodes starting at once
//! apply each migration once; `wharf_schema` records how many ran.

use std::collections::HashMap;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{FromSql, IsNull, ToSql, Type};
use postgres::{Client, NoTls, Statement};

use super::dialect;
use super::{Args, Owned, Row, Value};
use crate::metadata::MetadataError;

/// Serialises writers cluster-wide (`pg_advisory_xact_lock`): "wharf" in
/// ASCII, so no other application's lock is likely to collide.
const WRITE_LOCK: i64 = 0x0077_6861_7266;
/// Serialises migrations (`pg_advisory_lock`).
const MIGRATE_LOCK: i64 = WRITE_LOCK + 1;

type BoxError = Box<dyn std::error::Error + Sync + Send>;

impl From<postgres::Error> for MetadataError {
    fn from(e: postgres::Error) -> Self {
        if is_unavailable(&e) {
            MetadataError::Unavailable(message(&e))
        } else {
            MetadataError::Database(message(&e))
        }
    }
}

/// Whether `e` says the server cannot be reached now (no connection, a
/// lost one, a server shutting down or starting) rather than that a
/// statement failed.
fn is_unavailable(e: &postgres::Error) -> bool {
    match e.as_db_error() {
        // SQLSTATE class 08 (connection exception), 57P0x (shutdown,
        // crash, cannot connect now).
        Some(db) => {
            let code = db.code().code();
            code.starts_with("08") || code.starts_with("57P")
        }
        // No server error: a lost or refused connection (an I/O error
        // underneath), not a value that failed to convert.
        None => {
            use std::error::Error as _;
            e.is_closed() || e.source().is_some_and(|s| s.is::<std::io::Error>()) || e.to_string().starts_with("error connecting")
        }
    }
}

/// The server's message and SQLSTATE, not just "db error".
fn message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

impl ToSql for Value<'_> {
    fn to_sql(&self, ty: &Type, out: &mut postgres::types::private::BytesMut) -> Result<IsNull, BoxError> {
        // Bound as the type the server inferred for the parameter: the
        // store's SQL never says, and SQLite never asks.
        match *self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
                Type::BOOL => (i != 0).to_sql(ty, out),
                Type::FLOAT8 => (i as f64).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    i.to_string().as_str().to_sql(ty, out)
                }
                _ => Err(format!("an integer cannot be bound as {ty}").into()),
            },
            Value::Text(s) => match *ty {
                Type::BYTEA => s.as_bytes().to_sql(ty, out),
                _ => s.to_sql(ty, out),
            },
            Value::Bytes(b) => match *ty {
                Type::BYTEA => b.to_sql(ty, out),
                _ => Err(format!("bytes cannot be bound as {ty}").into()),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

impl<'a> FromSql<'a> for Owned {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, BoxError> {
        Ok(match *ty {
            Type::INT8 => Owned::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => Owned::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => Owned::Int(i16::from_sql(ty, raw)?.into()),
            Type::BOOL => Owned::Int(bool::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => Owned::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => Owned::Real(f32::from_sql(ty, raw)?.into()),
            Type::BYTEA => Owned::Bytes(<Vec<u8>>::from_sql(ty, raw)?),
            Type::NUMERIC => Owned::Int(numeric_to_i64(raw)?),
            _ => Owned::Text(String::from_sql(ty, raw)?),
        })
    }

    fn from_sql_null(_: &Type) -> Result<Self, BoxError> {
        Ok(Owned::Null)
    }

    fn accepts(ty: &Type) -> bool {
        *ty != Type::VOID
    }
}

/// A whole `NUMERIC` (what `SUM` of integers gives on PostgreSQL) as i64.
/// The binary form: digit count, weight, sign, scale, then base-10000
/// digits, the first worth 10000^weight.
fn numeric_to_i64(raw: &[u8]) -> Result<i64, BoxError> {
    let word = |i: usize| -> Result<i16, BoxError> {
        raw.get(i..i + 2).map(|b| i16::from_be_bytes([b[0], b[1]])).ok_or_else(|| "a short NUMERIC".into())
    };
    let (ndigits, weight, sign) = (word(0)?, word(2)?, word(4)? as u16);
    if sign == 0xC000 {
        return Err("NUMERIC NaN".into());
    }
    let mut v: i128 = 0;
    for d in 0..usize::try_from(ndigits)? {
        let exp = i32::from(weight) - d as i32;
        if exp < 0 {
            if word(8 + 2 * d)? != 0 {
                return Err("a NUMERIC with a fraction where an integer was expected".into());
            }
            continue;
        }
        v += i128::from(word(8 + 2 * d)?) * 10000i128.checked_pow(exp as u32).ok_or("a NUMERIC out of range")?;
    }
    let v = if sign == 0x4000 { -v } else { v };
    Ok(i64::try_from(v)?)
}

pub(super) fn column(r: &postgres::Row, i: usize) -> Result<Owned, MetadataError> {
    r.try_get::<_, Owned>(i).map_err(MetadataError::from)
}

/// One pooled connection and the statements prepared on it.
pub(crate) struct Connection {
    client: Client,
    statements: HashMap<String, (Statement, Vec<String>)>,
}

/// A connection lent to the store's SQL for one read or one transaction.
pub(crate) struct Session<'a> {
    conn: &'a mut Connection,
}

impl Session<'_> {
    fn prepare(&mut self, sql: &str) -> Result<(Statement, Vec<String>), MetadataError> {
        if let Some(s) = self.conn.statements.get(sql) {
            return Ok(s.clone());
        }
        let rewritten = dialect::placeholders(sql).map_err(|e| MetadataError::Database(format!("{e}: {sql}")))?;
        let stmt = self
            .conn
            .client
            .prepare(&rewritten.sql)
            .map_err(|e| match MetadataError::from(e) {
                MetadataError::Database(m) => MetadataError::Database(format!("{m}, in: {}", super::first_line(sql))),
                other => other,
            })?;
        self.conn.statements.insert(sql.to_owned(), (stmt.clone(), rewritten.names.clone()));
        Ok((stmt, rewritten.names))
    }

    fn bind<'v>(stmt: &Statement, names: &[String], args: Args<'v>) -> Result<Vec<Value<'v>>, MetadataError> {
        let values: Vec<Value<'v>> = match args {
            Args::Positional(values) => values.iter().map(|v| v.to_value()).collect(),
            Args::Named(given) => names
                .iter()
                .map(|name| {
                    given.iter().find(|(n, _)| n == name).map(|(_, v)| v.to_value()).ok_or_else(|| {
                        MetadataError::Database(format!("no argument for the statement's parameter {name}"))
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        if values.len() != stmt.params().len() {
            return Err(MetadataError::Database(format!(
                "the statement takes {} arguments, {} given",
                stmt.params().len(),
                values.len()
            )));
        }
        Ok(values)
    }

    pub(super) fn execute(&mut self, sql: &str, args: Args<'_>) -> Result<u64, MetadataError> {
        let (stmt, names) = self.prepare(sql)?;
        let values = Self::bind(&stmt, &names, args)?;
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        Ok(self.conn.client.execute(&stmt, &refs)?)
    }

    pub(super) fn execute_batch(&mut self, sql: &str) -> Result<(), MetadataError> {
        Ok(self.conn.client.batch_execute(sql)?)
    }

    pub(super) fn rows(
        &mut self,
        sql: &str,
        args: Args<'_>,
        f: &mut dyn FnMut(&Row<'_>) -> Result<bool, MetadataError>,
    ) -> Result<(), MetadataError> {
        let (stmt, names) = self.prepare(sql)?;
        let values = Self::bind(&stmt, &names, args)?;
        let mut it = self.conn.client.query_raw(&stmt, values.iter())?;
        while let Some(row) = it.next()? {
            if !f(&Row::Postgres(&row))? {
                break;
            }
        }
        Ok(())
    }
}

/// Where and how to connect.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) config: postgres::Config,
    pub(crate) max_connections: usize,
    /// Set when the URL says `sslmode=require`: TLS, verified.
    tls: Option<super::tls::RustlsConnect>,
}

impl Target {
    /// Parses a `postgres://` URL (or libpq key=value string); `password`,
    /// when given (read from a file), replaces any in the URL. With
    /// `sslmode=require`, connections use TLS and verify the server's
    /// certificate against the system's roots and `ca_file`.
    pub(crate) fn parse(
        url: &str,
        password: Option<&str>,
        max_connections: usize,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Target, MetadataError> {
        let mut config: postgres::Config =
            url.parse().map_err(|e| MetadataError::Invalid(format!("metadata url: {e}")))?;
        if let Some(p) = password {
            config.password(p);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        config.application_name("wharf");
        let tls = match config.get_ssl_mode() {
            postgres::config::SslMode::Require => Some(super::tls::RustlsConnect::new(ca_file)?),
            // Anything else never negotiates TLS (`prefer`, the default,
            // falls back to a plain connection, as it would with a server
            // without TLS): name `require` to have it, verified.
            _ => None,
        };
        Ok(Target { config, max_connections: max_connections.max(1), tls })
    }

    /// A new client connection, over TLS if the URL requires it.
    pub(crate) fn connect(&self) -> Result<Client, postgres::Error> {
        match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(NoTls),
        }
    }
}

pub(crate) struct Postgres {
    target: Target,
    idle: Mutex<Pool>,
    freed: Condvar,
}

struct Pool {
    idle: Vec<Connection>,
    open: usize,
}

fn lock_error<T>(_: std::sync::PoisonError<T>) -> MetadataError {
    MetadataError::Database("the metadata pool was poisoned by an earlier panic".into())
}

impl Postgres {
    /// Connects and applies the migrations the database has not run yet.
    pub(crate) fn open(target: Target, migrations: &[&str]) -> Result<Postgres, MetadataError> {
        let pg = Postgres { target, idle: Mutex::new(Pool { idle: Vec::new(), open: 0 }), freed: Condvar::new() };
        pg.with(false, |session| migrate(session.conn, migrations))?;
        Ok(pg)
    }

    fn connect(&self) -> Result<Connection, MetadataError> {
        let client = self.target.connect()?;
        Ok(Connection { client, statements: HashMap::new() })
    }

    /// Lends a connection to `f`: an idle one, a new one while fewer than
    /// `max_connections` are open, or the next one freed.
    /// `transaction`: whether `f` may leave a transaction open when it
    /// fails (then rolled back before the connection is reused).
    fn with<T>(&self, transaction: bool, f: impl FnOnce(&mut Session<'_>) -> Result<T, MetadataError>) -> Result<T, MetadataError> {
        let conn = {
            let mut pool = self.idle.lock().map_err(lock_error)?;
            loop {
                if let Some(c) = pool.idle.pop() {
                    break Some(c);
                }
                if pool.open < self.target.max_connections {
                    pool.open += 1;
                    break None;
                }
                pool = self.freed.wait(pool).map_err(lock_error)?;
            }
        };
        let conn = match conn {
            Some(c) => c,
            None => self.connect().inspect_err(|_| self.forget())?,
        };
        let mut lease = Lease { pg: self, conn: Some(conn), clean: false };
        let conn = lease.conn.as_mut().ok_or_else(|| MetadataError::Database("lease lost its connection".into()))?;
        let out = f(&mut Session { conn });
        // A connection goes back only if it is usable and outside any
        // transaction; an error may have left it in one.
        lease.clean = out.is_ok()
            || lease.conn.as_mut().is_some_and(|c| {
                if transaction {
                    c.client.batch_execute("ROLLBACK").is_ok()
                } else {
                    !c.client.is_closed()
                }
            });
        out
    }

    fn forget(&self) {
        if let Ok(mut pool) = self.idle.lock() {
            pool.open -= 1;
        }
        self.freed.notify_one();
    }

    pub(crate) fn read<T>(&self, f: impl FnOnce(&super::Db<'_>) -> Result<T, MetadataError>) -> Result<T, MetadataError> {
        self.with(false, |session| f(&super::Db::postgres(Session { conn: session.conn })))
    }

    /// `f` in one transaction, beside other writers: for changes whose
    /// rows only compare-and-set keeps consistent.
    pub(crate) fn transaction<T>(&self, f: impl FnOnce(&super::Db<'_>) -> Result<T, MetadataError>) -> Result<T, MetadataError> {
        self.with(true, |session| {
            session.conn.client.batch_execute("BEGIN")?;
            let out = f(&super::Db::postgres(Session { conn: session.conn }))?;
            session.conn.client.batch_execute("COMMIT")?;
            Ok(out)
        })
    }

    pub(crate) fn write<T>(&self, f: impl FnOnce(&super::Db<'_>) -> Result<T, MetadataError>) -> Result<T, MetadataError> {
        self.with(true, |session| {
            session.conn.client.batch_execute("BEGIN")?;
            session.conn.client.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])?;
            let out = f(&super::Db::postgres(Session { conn: session.conn }))?;
            session.conn.client.batch_execute("COMMIT")?;
            Ok(out)
        })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let idle = match self.idle.get_mut() {
            Ok(pool) => std::mem::take(&mut pool.idle),
            Err(poisoned) => std::mem::take(&mut poisoned.into_inner().idle),
        };
        if idle.is_empty() {
            return;
        }
        // A client closes its connection by blocking on a runtime of its
        // own, which a tokio worker (where the last handle on the store may
        // go) must not do: they close on a thread of their own.
        let handed = std::sync::Arc::new(Mutex::new(Some(idle)));
        let theirs = handed.clone();
        let closing = std::thread::Builder::new().name("wharf-pg-close".into()).spawn(move || {
            let idle = theirs.lock().ok().and_then(|mut idle| idle.take());
            drop(idle);
        });
        if let Err(e) = closing {
            // Left open rather than closed here: the server closes them
            // when this process ends.
            tracing::warn!("cannot start a thread to close the metadata database's connections: {e}");
            if let Some(idle) = handed.lock().ok().and_then(|mut idle| idle.take()) {
                std::mem::forget(idle);
            }
        }
    }
}

/// A connection out of the pool: back in when dropped clean, closed (and
/// its place freed) otherwise.
struct Lease<'a> {
    pg: &'a Postgres,
    conn: Option<Connection>,
    clean: bool,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if self.clean && !conn.client.is_closed() {
            match self.pg.idle.lock() {
                Ok(mut pool) => pool.idle.push(conn),
                Err(poisoned) => poisoned.into_inner().idle.push(conn),
            }
            self.pg.freed.notify_one();
        } else {
            drop(conn);
            self.pg.forget();
        }
    }
}

/// The channel nodes LISTEN on; each notification's payload is the topic
/// that changed (`distributions`).
pub(crate) const CHANNEL: &str = "wharf";
/// Listens on [`CHANNEL`] on a connection of its own, on a thread of its
/// own, forwarding each notification's topic to `changes`, for as long as
/// the process lives. A lost connection is made again (after 1 s, then
/// up to 30 s apart), followed by `changes::RESYNC`.
pub(crate) fn listen(target: Target, changes: tokio::sync::broadcast::Sender<String>) -> std::io::Result<()> {
    std::thread::Builder::new().name("wharf-pg-listen".into()).spawn(move || {
        let mut backoff = Duration::from_secs(1);
        loop {
            match target.connect() {
                Ok(mut client) => {
                    if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")) {
                        tracing::warn!(error = %message(&e), "cannot listen for metadata changes");
                    } else {
                        backoff = Duration::from_secs(1);
                        let _ = changes.send(crate::metadata::changes::RESYNC.to_owned());
                        let mut notifications = client.notifications();
                        let mut it = notifications.blocking_iter();
                        loop {
                            match it.next() {
                                Ok(Some(n)) => {
                                    let _ = changes.send(n.payload().to_owned());
                                }
                                Ok(None) => break,
                                Err(e) => {
                                    tracing::warn!(error = %message(&e), "lost the metadata change listener's connection");
                                    break;
                                }
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %message(&e), "cannot connect to listen for metadata changes"),
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    })?;
    Ok(())
}

/// After rows were inserted with their ids (a migration), makes each
/// table's next generated `id` follow the largest one.
pub(crate) fn restart_identities(db: &super::Db<'_>, tables: &[&str]) -> Result<(), MetadataError> {
    for table in tables {
        db.execute(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
            ),
            super::args![],
        )?;
    }
    Ok(())
}

fn migrate(conn: &mut Connection, migrations: &[&str]) -> Result<(), MetadataError> {
    let client = &mut conn.client;
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATE_LOCK])?;
    let result = (|| {
        client.batch_execute("CREATE TABLE IF NOT EXISTS wharf_schema (version BIGINT NOT NULL)")?;
        let applied: Option<i64> = client.query_opt("SELECT version FROM wharf_schema", &[])?.map(|r| r.get(0));
        let applied = usize::try_from(applied.unwrap_or(0)).unwrap_or(0);
        super::check_schema(applied, migrations.len())?;
        for (i, sql) in migrations.iter().enumerate().skip(applied) {
            let mut tx = client.transaction()?;
            tx.batch_execute(&dialect::postgres_ddl(sql))?;
            tx.execute("DELETE FROM wharf_schema", &[])?;
            tx.execute("INSERT INTO wharf_schema (version) VALUES ($1)", &[&((i + 1) as i64)])?;
            tx.commit()?;
            tracing::info!(migration = i + 1, "metadata schema migrated");
        }
        Ok(())
    })();
    client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATE_LOCK])?;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric(ndigits: i16, weight: i16, sign: u16, digits: &[i16]) -> Vec<u8> {
        let mut b = Vec::new();
        for w in [ndigits, weight, sign as i16, 0] {
            b.extend_from_slice(&w.to_be_bytes());
        }
        for d in digits {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b
    }

    #[test]
    fn whole_numerics_read_as_integers() {
        assert_eq!(numeric_to_i64(&numeric(0, 0, 0, &[])).unwrap(), 0);
        assert_eq!(numeric_to_i64(&numeric(1, 0, 0, &[42])).unwrap(), 42);
        // 1,0000,0005 = 100000005
        assert_eq!(numeric_to_i64(&numeric(3, 2, 0, &[1, 0, 5])).unwrap(), 100_000_005);
        // 3 × 10000² with trailing zero digits left out.
        assert_eq!(numeric_to_i64(&numeric(1, 2, 0, &[3])).unwrap(), 300_000_000);
        assert_eq!(numeric_to_i64(&numeric(1, 0, 0x4000, &[7])).unwrap(), -7);
        assert!(numeric_to_i64(&numeric(2, 0, 0, &[1, 5])).is_err(), "1.0005 is not whole");
        assert!(numeric_to_i64(&numeric(0, 0, 0xC000, &[])).is_err());
    }
}
