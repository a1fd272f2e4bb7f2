//! Tags, manifests and blobs: their rows (shared by every repository that
//! holds them), their membership in repository versions, and listing what
//! a version holds.

use super::repositories;
use super::{count, digest_of, i64_of, limit_of, u64_of, PRESENT};
use crate::metadata::db::{args, named, Args, Db, Row, ToValue};
use crate::metadata::{
    BlobItem, ContentFilter, ContentType, Descriptor, IndexChild, ManifestFacts, ManifestItem, MetadataError, Page,
    PageRequest, Platform, RepositoryKind, TagItem, VersionRef,
};
use crate::oci::Digest;

// -- rows ----------------------------------------------------------------------

pub(super) fn upsert_blob(db: &Db<'_>, d: &Descriptor) -> Result<i64, MetadataError> {
    db.execute(
        "INSERT INTO blobs (digest, media_type, size) VALUES (?1, ?2, ?3)
         ON CONFLICT (digest) DO UPDATE SET media_type = coalesce(blobs.media_type, excluded.media_type),
                                            size = coalesce(blobs.size, excluded.size)",
        args![d.digest.to_string(), d.media_type, d.size.map(i64_of)],
    )?;
    db.query_one("SELECT id FROM blobs WHERE digest = ?1", args![d.digest.to_string()])
}

pub(super) fn upsert_manifest(db: &Db<'_>, f: &ManifestFacts) -> Result<i64, MetadataError> {
    let digest = f.digest.to_string();
    if let Some(id) = db.query_opt("SELECT id FROM manifests WHERE digest = ?1", args![digest], |r| r.get(0))? {
        return Ok(id);
    }
    let id: i64 = db.query_one(
        "INSERT INTO manifests (digest, media_type, size, artifact_type, subject, annotations)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) RETURNING id",
        args![digest, f.media_type, i64_of(f.size), f.artifact_type, f.subject.as_ref().map(|s| s.to_string()), f.annotations],
    )?;
    let mut position = 0i64;
    let mut add = |kind: &str, d: &Descriptor, p: Option<&Platform>| -> Result<(), MetadataError> {
        db.execute(
            "INSERT INTO manifest_references (manifest_id, position, kind, digest, media_type, size, os, architecture, variant)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            args![
                id,
                position,
                kind,
                d.digest.to_string(),
                d.media_type,
                d.size.map(i64_of),
                p.map(|p| &p.os),
                p.map(|p| &p.architecture),
                p.and_then(|p| p.variant.as_ref()),
            ],
        )?;
        position += 1;
        Ok(())
    };
    if let Some(c) = &f.config {
        add("config", c, None)?;
    }
    for l in &f.layers {
        add("layer", l, None)?;
    }
    for c in &f.children {
        add("manifest", &c.descriptor, c.platform.as_ref())?;
    }
    Ok(id)
}

fn upsert_tag(db: &Db<'_>, name: &str, manifest_id: i64) -> Result<i64, MetadataError> {
    db.execute("INSERT INTO tags (name, manifest_id) VALUES (?1, ?2) ON CONFLICT DO NOTHING", args![name, manifest_id])?;
    db.query_one("SELECT id FROM tags WHERE name = ?1 AND manifest_id = ?2", args![name, manifest_id])
}

pub(super) fn id_by_digest(db: &Db<'_>, table: &str, digest: &Digest) -> Result<Option<i64>, MetadataError> {
    db.query_opt(&format!("SELECT id FROM {table} WHERE digest = ?1"), args![digest.to_string()], |r| r.get(0))
}

// -- membership ------------------------------------------------------------------

pub(super) fn is_present(db: &Db<'_>, repo: i64, kind: ContentType, id: i64, v: i64) -> Result<bool, MetadataError> {
    db.query_one(
        &format!(
            "SELECT EXISTS (SELECT 1 FROM repository_content rc WHERE rc.repository_id = :repo
             AND rc.content_type = :kind AND rc.content_id = :id AND {PRESENT})"
        ),
        named! {":repo": repo, ":kind": kind.as_str(), ":id": id, ":v": v},
    )
}

/// The content of `kind` named by `digest` if version `v` holds it.
pub(super) fn present_by_digest(db: &Db<'_>, repo: i64, kind: ContentType, digest: &Digest, v: i64) -> Result<Option<i64>, MetadataError> {
    let table = if kind == ContentType::Manifest { "manifests" } else { "blobs" };
    match id_by_digest(db, table, digest)? {
        Some(id) if is_present(db, repo, kind, id, v)? => Ok(Some(id)),
        _ => Ok(None),
    }
}

/// Makes content a member of version `v` (the version being built).
pub(super) fn add(db: &Db<'_>, repo: i64, kind: ContentType, id: i64, v: i64) -> Result<(), MetadataError> {
    if is_present(db, repo, kind, id, v)? {
        return Ok(());
    }
    // Removed earlier in this same version: undo the removal.
    let undone = db.execute(
        "UPDATE repository_content SET version_removed = NULL
         WHERE repository_id = ?1 AND content_type = ?2 AND content_id = ?3 AND version_removed = ?4",
        args![repo, kind.as_str(), id, v],
    )?;
    if undone == 0 {
        db.execute(
            "INSERT INTO repository_content (repository_id, content_type, content_id, version_added) VALUES (?1, ?2, ?3, ?4)",
            args![repo, kind.as_str(), id, v],
        )?;
    }
    Ok(())
}

/// Ends content's membership at version `v` (the version being built).
pub(super) fn remove(db: &Db<'_>, repo: i64, kind: ContentType, id: i64, v: i64) -> Result<(), MetadataError> {
    // Added in this same version: it never existed in any other.
    db.execute(
        "DELETE FROM repository_content WHERE repository_id = ?1 AND content_type = ?2 AND content_id = ?3
         AND version_added = ?4",
        args![repo, kind.as_str(), id, v],
    )?;
    db.execute(
        "UPDATE repository_content SET version_removed = ?4 WHERE repository_id = ?1 AND content_type = ?2
         AND content_id = ?3 AND version_removed IS NULL",
        args![repo, kind.as_str(), id, v],
    )?;
    Ok(())
}

/// The tag named `name` in version `v`: (tag id, manifest id).
pub(super) fn tag_in_version(db: &Db<'_>, repo: i64, name: &str, v: i64) -> Result<Option<(i64, i64)>, MetadataError> {
    db.query_opt(
        &format!(
            "SELECT t.id, t.manifest_id FROM repository_content rc JOIN tags t ON t.id = rc.content_id
             WHERE rc.repository_id = :repo AND rc.content_type = 'tag' AND t.name = :name AND {PRESENT}"
        ),
        named! {":repo": repo, ":name": name, ":v": v},
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
}

/// Adds a manifest, its config and layers, and (if given) the tag naming
/// it (moving the tag if it named another manifest) to version `v`.
pub(super) fn add_manifest(db: &Db<'_>, repo: i64, facts: &ManifestFacts, tag: Option<&str>, v: i64) -> Result<(), MetadataError> {
    let manifest = upsert_manifest(db, facts)?;
    add(db, repo, ContentType::Manifest, manifest, v)?;
    for d in facts.config.iter().chain(&facts.layers) {
        let blob = upsert_blob(db, d)?;
        add(db, repo, ContentType::Blob, blob, v)?;
    }
    if let Some(name) = tag {
        set_tag(db, repo, name, manifest, v)?;
    }
    Ok(())
}

/// Makes tag `name` name `manifest` in version `v`, moving it if it named
/// another manifest (which stays).
pub(super) fn set_tag(db: &Db<'_>, repo: i64, name: &str, manifest: i64, v: i64) -> Result<(), MetadataError> {
    match tag_in_version(db, repo, name, v)? {
        Some((_, m)) if m == manifest => {}
        existing => {
            if let Some((old, _)) = existing {
                remove(db, repo, ContentType::Tag, old, v)?;
            }
            let tag = upsert_tag(db, name, manifest)?;
            add(db, repo, ContentType::Tag, tag, v)?;
        }
    }
    Ok(())
}

// -- listings ----------------------------------------------------------------------

/// A manifest's config, layers and (for an index) children.
type References = (Option<Descriptor>, Vec<Descriptor>, Vec<IndexChild>);

fn references(db: &Db<'_>, manifest_id: i64) -> Result<References, MetadataError> {
    let (mut config, mut layers, mut children) = (None, Vec::new(), Vec::new());
    db.for_each(
        "SELECT kind, digest, media_type, size, os, architecture, variant FROM manifest_references
         WHERE manifest_id = ?1 ORDER BY position",
        args![manifest_id],
        |r| {
            let kind: String = r.get(0)?;
            let d = Descriptor {
                digest: digest_of(r.get(1)?)?,
                media_type: r.get(2)?,
                size: r.get::<Option<i64>>(3)?.map(u64_of),
            };
            match kind.as_str() {
                "config" => config = Some(d),
                "layer" => layers.push(d),
                _ => {
                    let os: Option<String> = r.get(4)?;
                    let architecture: Option<String> = r.get(5)?;
                    let platform = match (os, architecture) {
                        (Some(os), Some(architecture)) => Some(Platform { os, architecture, variant: r.get(6)? }),
                        _ => None,
                    };
                    children.push(IndexChild { descriptor: d, platform });
                }
            }
            Ok(())
        },
    )?;
    Ok((config, layers, children))
}

/// The platform an index gives a manifest, if any index wharf knows lists it.
fn platform_of(db: &Db<'_>, digest: &str) -> Result<Option<Platform>, MetadataError> {
    db.query_opt(
        "SELECT os, architecture, variant FROM manifest_references
         WHERE kind = 'manifest' AND digest = ?1 AND os IS NOT NULL AND architecture IS NOT NULL LIMIT 1",
        args![digest],
        |r| Ok(Platform { os: r.get(0)?, architecture: r.get(1)?, variant: r.get(2)? }),
    )
}

/// The columns [`manifest_item`] reads, from `manifests m`.
pub(super) const MANIFEST_COLUMNS: &str = "m.id, m.digest, m.media_type, m.size, m.artifact_type, m.subject, m.annotations";

/// A manifest's own row (of [`MANIFEST_COLUMNS`]): its facts, without
/// what it references.
struct ManifestRow {
    id: i64,
    digest: String,
    media_type: String,
    size: i64,
    artifact_type: Option<String>,
    subject: Option<String>,
    annotations: Option<String>,
}

fn manifest_row(r: &Row<'_>) -> Result<ManifestRow, MetadataError> {
    Ok(ManifestRow {
        id: r.get(0)?,
        digest: r.get(1)?,
        media_type: r.get(2)?,
        size: r.get(3)?,
        artifact_type: r.get(4)?,
        subject: r.get(5)?,
        annotations: r.get(6)?,
    })
}

/// The whole item: its references and platform are further queries, run
/// after the row's own (one statement at a time on a connection).
fn manifest_item(db: &Db<'_>, m: ManifestRow) -> Result<ManifestItem, MetadataError> {
    let (config, layers, children) = references(db, m.id)?;
    let platform = platform_of(db, &m.digest)?;
    let facts = ManifestFacts {
        digest: digest_of(m.digest)?,
        media_type: m.media_type,
        size: u64_of(m.size),
        artifact_type: m.artifact_type,
        subject: m.subject.map(digest_of).transpose()?,
        config,
        layers,
        children,
        annotations: m.annotations,
    };
    Ok(ManifestItem { facts, platform })
}

/// Manifests from a query selecting [`MANIFEST_COLUMNS`].
pub(super) fn manifest_items(db: &Db<'_>, sql: &str, args: Args<'_>) -> Result<Vec<ManifestItem>, MetadataError> {
    let rows = db.query_vec(sql, args, manifest_row)?;
    rows.into_iter().map(|m| manifest_item(db, m)).collect()
}

/// One page of the content of type `kind` in a version: `join` names the
/// content table joined to `rc`, `filter` narrows it with `params`, and
/// `(columns, order)` say what to select and how to sort.
pub(super) fn page<T>(
    db: &Db<'_>,
    (repository, version, page): (&str, VersionRef, PageRequest),
    (join, kind): (&str, &str),
    (filter, params): (&str, &[(&str, &dyn ToValue)]),
    (columns, order): (&str, &str),
    item: impl FnMut(&Row<'_>) -> Result<T, MetadataError>,
) -> Result<Page<T>, MetadataError> {
    let (repo, v) = repositories::resolve(db, repository, version)?;
    let from = format!(
        "FROM repository_content rc JOIN {join}
         WHERE rc.repository_id = :repo AND rc.content_type = '{kind}' AND {PRESENT} AND {filter}"
    );
    let (limit, offset) = limit_of(page);
    let mut all: Vec<(&str, &dyn ToValue)> = vec![(":repo", &repo.id), (":v", &v)];
    all.extend_from_slice(params);
    let total = count(db, &from, Args::Named(&all))?;
    all.extend_from_slice(&[(":limit", &limit), (":offset", &offset)]);
    let items =
        db.query_vec(&format!("SELECT {columns} {from} ORDER BY {order} LIMIT :limit OFFSET :offset"), Args::Named(&all), item)?;
    Ok(Page { total, items })
}

pub(super) fn tags(db: &Db<'_>, at: (&str, VersionRef, PageRequest), filter: &ContentFilter) -> Result<Page<TagItem>, MetadataError> {
    let digest = filter.digest.as_ref().map(|d| d.to_string());
    page(
        db,
        at,
        ("tags t ON t.id = rc.content_id JOIN manifests m ON m.id = t.manifest_id", "tag"),
        (
            "(CAST(:tag AS TEXT) IS NULL OR t.name = :tag) AND (CAST(:digest AS TEXT) IS NULL OR m.digest = :digest)",
            &[(":tag", &filter.tag), (":digest", &digest)],
        ),
        ("t.name, m.digest, m.media_type", "t.name"),
        |r| Ok(TagItem { name: r.get(0)?, digest: digest_of(r.get(1)?)?, media_type: r.get(2)? }),
    )
}

pub(super) fn manifests(db: &Db<'_>, at: (&str, VersionRef, PageRequest), filter: &ContentFilter) -> Result<Page<ManifestItem>, MetadataError> {
    let digest = filter.digest.as_ref().map(|d| d.to_string());
    let rows = page(
        db,
        at,
        ("manifests m ON m.id = rc.content_id", "manifest"),
        ("(CAST(:digest AS TEXT) IS NULL OR m.digest = :digest)", &[(":digest", &digest)]),
        (MANIFEST_COLUMNS, "m.digest"),
        manifest_row,
    )?;
    let items = rows.items.into_iter().map(|m| manifest_item(db, m)).collect::<Result<_, _>>()?;
    Ok(Page { total: rows.total, items })
}

pub(super) fn blobs(db: &Db<'_>, at: (&str, VersionRef, PageRequest), filter: &ContentFilter) -> Result<Page<BlobItem>, MetadataError> {
    let digest = filter.digest.as_ref().map(|d| d.to_string());
    page(
        db,
        at,
        ("blobs b ON b.id = rc.content_id", "blob"),
        ("(CAST(:digest AS TEXT) IS NULL OR b.digest = :digest)", &[(":digest", &digest)]),
        ("b.digest, b.media_type, b.size", "b.digest"),
        |r| {
            Ok(BlobItem {
                digest: digest_of(r.get(0)?)?,
                media_type: r.get(1)?,
                size: r.get::<Option<i64>>(2)?.map(u64_of),
            })
        },
    )
}

pub(super) fn contains(db: &Db<'_>, repository: &str, version: VersionRef, kind: ContentType, digest: &Digest) -> Result<bool, MetadataError> {
    let (repo, v) = repositories::resolve(db, repository, version)?;
    if repo.repo.kind == RepositoryKind::Push {
        return super::push::contains(db, &repo, (v, version.is_none()), kind, digest);
    }
    // Besides content recorded in the version: what its manifests point at
    // (an index's other platforms, and their layers), which belongs to the
    // same images and can be fetched on demand.
    let sql = match kind {
        ContentType::Manifest => format!(
            "SELECT EXISTS (SELECT 1 FROM repository_content rc JOIN manifests c ON c.id = rc.content_id
               WHERE rc.repository_id = :repo AND rc.content_type = 'manifest' AND c.digest = :digest AND {PRESENT})
             OR EXISTS (SELECT 1 FROM repository_content rc JOIN manifest_references mr ON mr.manifest_id = rc.content_id
               WHERE rc.repository_id = :repo AND rc.content_type = 'manifest' AND mr.kind = 'manifest'
               AND mr.digest = :digest AND {PRESENT})"
        ),
        ContentType::Blob => format!(
            "SELECT EXISTS (SELECT 1 FROM repository_content rc JOIN blobs c ON c.id = rc.content_id
               WHERE rc.repository_id = :repo AND rc.content_type = 'blob' AND c.digest = :digest AND {PRESENT})
             OR EXISTS (SELECT 1 FROM repository_content rc JOIN manifest_references mr ON mr.manifest_id = rc.content_id
               WHERE rc.repository_id = :repo AND rc.content_type = 'manifest' AND mr.kind IN ('config', 'layer')
               AND mr.digest = :digest AND {PRESENT})
             OR EXISTS (SELECT 1 FROM repository_content rc
               JOIN manifest_references child ON child.manifest_id = rc.content_id AND child.kind = 'manifest'
               JOIN manifests m ON m.digest = child.digest
               JOIN manifest_references mr ON mr.manifest_id = m.id AND mr.kind IN ('config', 'layer')
               WHERE rc.repository_id = :repo AND rc.content_type = 'manifest' AND mr.digest = :digest AND {PRESENT})"
        ),
        ContentType::Tag | ContentType::Signature => {
            return Err(MetadataError::Invalid(format!("{}s are not looked up by digest", kind.as_str())))
        }
    };
    db.query_one(&sql, named! {":repo": repo.id, ":digest": digest.to_string(), ":v": v})
}

pub(super) fn tag_names(db: &Db<'_>, repository: &str, version: VersionRef) -> Result<Vec<String>, MetadataError> {
    let (repo, v) = repositories::resolve(db, repository, version)?;
    db.query_vec(
        &format!(
            "SELECT t.name FROM repository_content rc JOIN tags t ON t.id = rc.content_id
             WHERE rc.repository_id = :repo AND rc.content_type = 'tag' AND {PRESENT} ORDER BY t.name"
        ),
        named! {":repo": repo.id, ":v": v},
        |r| r.get(0),
    )
}

pub(super) fn referrers(db: &Db<'_>, repository: &str, version: VersionRef, digest: &Digest) -> Result<Vec<ManifestItem>, MetadataError> {
    let (repo, v) = repositories::resolve(db, repository, version)?;
    manifest_items(
        db,
        &format!(
            "SELECT {MANIFEST_COLUMNS}
             FROM repository_content rc JOIN manifests m ON m.id = rc.content_id
             WHERE rc.repository_id = :repo AND rc.content_type = 'manifest' AND m.subject = :subject AND {PRESENT}
             ORDER BY m.digest"
        ),
        named! {":repo": repo.id, ":v": v, ":subject": digest.to_string()},
    )
}
