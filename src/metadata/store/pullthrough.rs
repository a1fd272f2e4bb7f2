//! What the pull-through cache records: pulls, one version per repository
//! per batch (repositories created on first use), and the digest each
//! upstream tag last named.

use std::collections::BTreeMap;

use super::repositories::{self, RepoRow};
use super::{content, digest_of, i64_of, versions};
use crate::metadata::db::{args, Db};
use crate::metadata::{now_millis, Change, ContentType, Created, MetadataError, Origin, Recording};
use crate::oci::Digest;

/// A batch grouped per repository, in first-seen order: one version each.
pub(super) type Groups<'a> = Vec<(&'a str, &'a Origin, Vec<&'a Change>)>;

pub(super) fn group(batch: &[Recording]) -> Groups<'_> {
    let mut groups: BTreeMap<&str, (usize, &Origin, Vec<&Change>)> = BTreeMap::new();
    for (i, r) in batch.iter().enumerate() {
        groups.entry(r.repository.as_str()).or_insert_with(|| (i, &r.origin, Vec::new())).2.push(&r.change);
    }
    let mut ordered: Vec<_> = groups.into_iter().collect();
    ordered.sort_by_key(|(_, (i, _, _))| *i);
    ordered.into_iter().map(|(name, (_, origin, changes))| (name, origin, changes)).collect()
}

pub(super) fn record(db: &Db<'_>, groups: &Groups<'_>) -> Result<Vec<Created>, MetadataError> {
    let mut created = Vec::new();
    for (name, origin, changes) in groups {
        if let Some(c) = record_repository(db, name, origin, changes)? {
            created.push(c);
        }
    }
    Ok(created)
}

fn record_repository(db: &Db<'_>, name: &str, origin: &Origin, changes: &[&Change]) -> Result<Option<Created>, MetadataError> {
    let mut repo = get_or_create_repository(db, name, origin)?;
    let v = i64_of(repo.repo.latest_version) + 1;
    for change in changes {
        apply_change(db, repo.id, change, v)?;
    }
    Ok(versions::close(db, &mut repo, v)?.map(|number| Created { repository: name.to_owned(), number }))
}

fn get_or_create_repository(db: &Db<'_>, name: &str, origin: &Origin) -> Result<RepoRow, MetadataError> {
    if let Some(mut row) = repositories::row(db, name)? {
        // The upstream's config is the source of truth for retention.
        if row.repo.retain_versions != origin.retain_versions {
            db.execute(
                "UPDATE repositories SET retain_versions = ?2 WHERE id = ?1",
                args![row.id, origin.retain_versions.map(i64::from)],
            )?;
            row.repo.retain_versions = origin.retain_versions;
        }
        return Ok(row);
    }
    let now = now_millis();
    let id: i64 = db.query_one(
        "INSERT INTO repositories (name, kind, upstream, remote_name, retain_versions, latest_version, created_at)
         VALUES (?1, 'pull-through', ?2, ?3, ?4, 0, ?5) RETURNING id",
        args![name, origin.upstream, origin.remote_name, origin.retain_versions.map(i64::from), now],
    )?;
    // Every repository starts with the empty version 0.
    db.execute("INSERT INTO repository_versions (repository_id, number, created_at) VALUES (?1, 0, ?2)", args![id, now])?;
    repositories::require(db, name)
}

fn apply_change(db: &Db<'_>, repo: i64, change: &Change, v: i64) -> Result<(), MetadataError> {
    match change {
        Change::Manifest { facts, tag } => content::add_manifest(db, repo, facts, tag.as_deref(), v)?,
        Change::TagRemoved { tag } => {
            if let Some((old, _)) = content::tag_in_version(db, repo, tag, v)? {
                content::remove(db, repo, ContentType::Tag, old, v)?;
            }
        }
    }
    Ok(())
}

pub(super) fn upstream_tag(db: &Db<'_>, upstream: &str, remote_name: &str, tag: &str) -> Result<Option<Digest>, MetadataError> {
    db.query_opt(
        "SELECT digest FROM upstream_tags WHERE upstream = ?1 AND remote_name = ?2 AND tag = ?3",
        args![upstream, remote_name, tag],
        |r| r.get::<String>(0),
    )?
    .map(digest_of)
    .transpose()
}

/// One statement either way: atomic without a transaction.
pub(super) fn set_upstream_tag(db: &Db<'_>, upstream: &str, remote_name: &str, tag: &str, digest: Option<&Digest>) -> Result<(), MetadataError> {
    match digest {
        Some(d) => db.execute(
            "INSERT INTO upstream_tags (upstream, remote_name, tag, digest) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (upstream, remote_name, tag) DO UPDATE SET digest = excluded.digest",
            args![upstream, remote_name, tag, d.to_string()],
        )?,
        None => db.execute(
            "DELETE FROM upstream_tags WHERE upstream = ?1 AND remote_name = ?2 AND tag = ?3",
            args![upstream, remote_name, tag],
        )?,
    };
    Ok(())
}
