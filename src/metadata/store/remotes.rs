//! Remotes: where sync repositories sync from, with their credentials,
//! tag filters and limits.

use super::{count, limit_of};
use crate::metadata::db::{args, Args, Db, Row, ToValue};
use crate::metadata::{now_millis, MetadataError, Page, PageRequest, Remote, RemoteCredentials, SyncPolicy};

const SELECT: &str = "SELECT name, url, upstream_name, include_tags, exclude_tags, policy, username, password,
    credentials_from, tls_verify, ca_cert, sigstore, download_concurrency, rate_limit, created_at, updated_at FROM remotes";

fn json_list(text: &str) -> Result<Vec<String>, MetadataError> {
    serde_json::from_str(text).map_err(|e| MetadataError::Database(format!("stored tag filter {text:?} is invalid: {e}")))
}

fn list_json(list: &[String]) -> String {
    // A list of strings always serialises.
    serde_json::to_string(list).unwrap_or_else(|_| "[]".into())
}

fn from_row(r: &Row<'_>) -> Result<Remote, MetadataError> {
    let policy: String = r.get(5)?;
    let Some(policy) = SyncPolicy::parse(&policy) else {
        return Err(MetadataError::Database(format!("unknown sync policy {policy:?}")));
    };
    let username: Option<String> = r.get(6)?;
    let password: Option<String> = r.get(7)?;
    let u32_col = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
    Ok(Remote {
        name: r.get(0)?,
        url: r.get(1)?,
        upstream_name: r.get(2)?,
        include_tags: json_list(&r.get::<String>(3)?)?,
        exclude_tags: json_list(&r.get::<String>(4)?)?,
        policy,
        credentials: username.zip(password).map(|(username, password)| RemoteCredentials { username, password }),
        credentials_from: r.get(8)?,
        tls_verify: r.get(9)?,
        ca_cert: r.get(10)?,
        sigstore: r.get(11)?,
        download_concurrency: u32_col(r.get(12)?),
        rate_limit: u32_col(r.get(13)?),
        created_at: r.get(14)?,
        updated_at: r.get(15)?,
    })
}

pub(super) fn get(db: &Db<'_>, name: &str) -> Result<Option<Remote>, MetadataError> {
    db.query_opt(&format!("{SELECT} WHERE name = ?1"), args![name], from_row)
}

pub(super) fn list(db: &Db<'_>, page: PageRequest) -> Result<Page<Remote>, MetadataError> {
    let total = count(db, "FROM remotes", args![])?;
    let (limit, offset) = limit_of(page);
    let items = db.query_vec(&format!("{SELECT} ORDER BY name LIMIT ?1 OFFSET ?2"), args![limit, offset], from_row)?;
    Ok(Page { total, items })
}

/// Writes every field of `r` to the remote now named `name` (a new row if
/// `insert`; then `name` is `r.name`).
fn write(db: &Db<'_>, name: &str, r: &Remote, insert: bool) -> Result<(), MetadataError> {
    let (username, password) = match &r.credentials {
        Some(c) => (Some(c.username.as_str()), Some(c.password.as_str())),
        None => (None, None),
    };
    let sql = if insert {
        "INSERT INTO remotes (url, upstream_name, include_tags, exclude_tags, policy, username, password,
           credentials_from, tls_verify, ca_cert, sigstore, download_concurrency, rate_limit, updated_at, name, created_at)
         VALUES (:url, :upstream_name, :include, :exclude, :policy, :username, :password, :credentials_from,
           :tls_verify, :ca_cert, :sigstore, :concurrency, :rate_limit, :updated_at, :new_name, :created_at)"
    } else {
        "UPDATE remotes SET name = :new_name, url = :url, upstream_name = :upstream_name, include_tags = :include,
           exclude_tags = :exclude, policy = :policy, username = :username, password = :password,
           credentials_from = :credentials_from, tls_verify = :tls_verify, ca_cert = :ca_cert, sigstore = :sigstore,
           download_concurrency = :concurrency, rate_limit = :rate_limit, updated_at = :updated_at
         WHERE name = :name"
    };
    let include = list_json(&r.include_tags);
    let exclude = list_json(&r.exclude_tags);
    let policy = r.policy.as_str();
    let concurrency = r.download_concurrency.map(i64::from);
    let rate_limit = r.rate_limit.map(i64::from);
    let mut p: Vec<(&str, &dyn ToValue)> = vec![
        (":new_name", &r.name),
        (":url", &r.url),
        (":upstream_name", &r.upstream_name),
        (":include", &include),
        (":exclude", &exclude),
        (":policy", &policy),
        (":username", &username),
        (":password", &password),
        (":credentials_from", &r.credentials_from),
        (":tls_verify", &r.tls_verify),
        (":ca_cert", &r.ca_cert),
        (":sigstore", &r.sigstore),
        (":concurrency", &concurrency),
        (":rate_limit", &rate_limit),
        (":updated_at", &r.updated_at),
    ];
    // Each statement takes exactly its own parameters.
    if insert {
        p.push((":created_at", &r.created_at));
    } else {
        p.push((":name", &name));
    }
    db.execute(sql, Args::Named(&p))?;
    Ok(())
}

pub(super) fn create(db: &Db<'_>, remote: &Remote) -> Result<Remote, MetadataError> {
    if get(db, &remote.name)?.is_some() {
        return Err(MetadataError::Conflict(format!("remote {:?} already exists", remote.name)));
    }
    let now = now_millis();
    let stored = Remote { created_at: now, updated_at: now, ..remote.clone() };
    write(db, &remote.name, &stored, true)?;
    Ok(stored)
}

pub(super) fn update(
    db: &Db<'_>,
    name: &str,
    change: &mut dyn FnMut(&mut Remote) -> Result<(), MetadataError>,
) -> Result<Remote, MetadataError> {
    let Some(mut remote) = get(db, name)? else {
        return Err(MetadataError::NotFound(format!("remote {name:?} does not exist")));
    };
    change(&mut remote)?;
    if remote.name != name && get(db, &remote.name)?.is_some() {
        return Err(MetadataError::Conflict(format!("remote {:?} already exists", remote.name)));
    }
    remote.updated_at = now_millis();
    write(db, name, &remote, false)?;
    Ok(remote)
}

pub(super) fn delete(db: &Db<'_>, name: &str) -> Result<(), MetadataError> {
    match db.execute("DELETE FROM remotes WHERE name = ?1", args![name])? {
        0 => Err(MetadataError::NotFound(format!("remote {name:?} does not exist"))),
        _ => Ok(()),
    }
}
