//! What the Flatpak registry index reads: image configs' facts (platform,
//! labels), which recorded manifests' configs are not read yet, and each
//! distribution's tagged manifests with those facts.

use std::collections::HashMap;

use super::{digest_of, i64_of, u64_of};
use crate::metadata::db::{args, Db};
use crate::metadata::{changes, now_millis, ImageConfig, IndexSnapshot, IndexedManifest, IndexedRepository, MetadataError, Millis};
use crate::oci::Digest;

/// Up to `limit` manifests after id `after` whose config has no row yet:
/// (manifest id, config digest), in id order.
pub(super) fn unread_configs(db: &Db<'_>, after: u64, limit: u64) -> Result<Vec<(u64, Digest)>, MetadataError> {
    let rows: Vec<(i64, String)> = db.query_vec(
        "SELECT m.id, r.digest FROM manifests m
         JOIN manifest_references r ON r.manifest_id = m.id AND r.kind = 'config'
         WHERE m.id > ?1 AND NOT EXISTS (SELECT 1 FROM image_configs c WHERE c.digest = r.digest)
         ORDER BY m.id LIMIT ?2",
        args![i64_of(after), i64_of(limit)],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    rows.into_iter().map(|(id, d)| Ok((u64_of(id), digest_of(d)?))).collect()
}

pub(super) fn record_image_configs(db: &Db<'_>, configs: &[ImageConfig]) -> Result<(), MetadataError> {
    let now = now_millis();
    let mut added = 0;
    for c in configs {
        added += db.execute(
            "INSERT INTO image_configs (digest, os, architecture, variant, labels, recorded_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (digest) DO NOTHING",
            args![c.digest.to_string(), c.os, c.architecture, c.variant, c.labels, now],
        )?;
    }
    if added > 0 {
        db.notify(changes::IMAGE_CONFIGS)?;
    }
    Ok(())
}

/// The tags each distribution serves, at its pinned version or else its
/// repository's latest: `served_tags (base_path, name, manifest_id)`.
const SERVED_TAGS: &str = "WITH served AS (
        SELECT d.base_path, d.repository_id, coalesce(d.version, r.latest_version) AS version
        FROM distributions d JOIN repositories r ON r.id = d.repository_id
    ), served_tags AS (
        SELECT s.base_path, t.name, t.manifest_id FROM served s
        JOIN repository_content rc ON rc.repository_id = s.repository_id AND rc.content_type = 'tag'
         AND rc.version_added <= s.version AND (rc.version_removed IS NULL OR rc.version_removed > s.version)
        JOIN tags t ON t.id = rc.content_id
    )";

/// Every distribution's tagged manifests at the version it serves (its
/// pinned one, else its repository's latest), by base path, and when any
/// of it last changed. A few set-wise queries, whatever the number of
/// images: a PostgreSQL round trip per manifest would make a large index
/// slow to load.
pub(super) fn index_snapshot(db: &Db<'_>) -> Result<IndexSnapshot, MetadataError> {
    let tagged: Vec<(String, String, i64)> = db.query_vec(
        &format!("{SERVED_TAGS} SELECT base_path, name, manifest_id FROM served_tags ORDER BY base_path, name"),
        args![],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    // Every manifest tagged, and every child of those that are indexes,
    // with their config's facts where read. Each query is driven from
    // the served tags through indexed lookups (a join on a UNION of them
    // made SQLite compare every manifest with every tag: 80 s for 10,000).
    let facts = "m.id, m.digest, m.media_type, m.annotations, c.digest, c.os, c.architecture, c.variant, c.labels
        FROM manifests m
        LEFT JOIN manifest_references cr ON cr.manifest_id = m.id AND cr.kind = 'config'
        LEFT JOIN image_configs c ON c.digest = cr.digest";
    type ManifestRow = (i64, String, String, Option<String>, Option<String>, Option<String>, Option<String>, Option<String>, Option<String>);
    let row = |r: &crate::metadata::db::Row<'_>, at: usize| -> Result<ManifestRow, MetadataError> {
        Ok((
            r.get(at)?,
            r.get(at + 1)?,
            r.get(at + 2)?,
            r.get(at + 3)?,
            r.get(at + 4)?,
            r.get(at + 5)?,
            r.get(at + 6)?,
            r.get(at + 7)?,
            r.get(at + 8)?,
        ))
    };
    let mut rows: Vec<ManifestRow> = db.query_vec(
        &format!("{SERVED_TAGS} SELECT DISTINCT {facts} JOIN served_tags st ON st.manifest_id = m.id"),
        args![],
        |r| row(r, 0),
    )?;
    let child_rows: Vec<(i64, i64, ManifestRow)> = db.query_vec(
        &format!(
            "{SERVED_TAGS}, lists AS (
                SELECT DISTINCT r.manifest_id AS list, r.position, r.digest FROM served_tags st
                JOIN manifest_references r ON r.manifest_id = st.manifest_id AND r.kind = 'manifest'
            )
            SELECT l.list, l.position, {facts} JOIN lists l ON l.digest = m.digest ORDER BY l.list, l.position"
        ),
        args![],
        |r| Ok((r.get(0)?, r.get(1)?, row(r, 2)?)),
    )?;
    let mut children: Vec<(i64, i64)> = Vec::with_capacity(child_rows.len());
    for (list, _, child) in child_rows {
        children.push((list, child.0));
        rows.push(child);
    }
    let last_modified: Millis = db.query_one(
        "SELECT max(t) FROM (
            SELECT coalesce(max(v.created_at), 0) AS t FROM distributions d JOIN repositories r ON r.id = d.repository_id
            JOIN repository_versions v ON v.repository_id = d.repository_id AND v.number = coalesce(d.version, r.latest_version)
            UNION ALL SELECT coalesce(max(updated_at), 0) FROM distributions
            UNION ALL SELECT coalesce(max(recorded_at), 0) FROM image_configs
        ) AS changed",
        args![],
    )?;

    let mut manifests: HashMap<i64, IndexedManifest> = HashMap::with_capacity(rows.len());
    for (id, digest, media_type, annotations, config, os, architecture, variant, labels) in rows {
        // The config's row exists once its facts were read.
        let config = config.map(|c| Ok::<_, MetadataError>(ImageConfig { digest: digest_of(c)?, os, architecture, variant, labels })).transpose()?;
        manifests.insert(id, IndexedManifest { digest: digest_of(digest)?, media_type, annotations, config, children: Vec::new() });
    }
    let mut lists: HashMap<i64, Vec<IndexedManifest>> = HashMap::new();
    for (parent, child) in children {
        if let Some(m) = manifests.get(&child) {
            lists.entry(parent).or_default().push(m.clone());
        }
    }
    let mut repositories: Vec<IndexedRepository> = Vec::new();
    for (base_path, tag, id) in tagged {
        let Some(m) = manifests.get(&id) else { continue };
        let m = IndexedManifest { children: lists.get(&id).cloned().unwrap_or_default(), ..m.clone() };
        match repositories.last_mut() {
            Some(r) if r.base_path == base_path => r.tags.push((tag, m)),
            _ => repositories.push(IndexedRepository { base_path, tags: vec![(tag, m)] }),
        }
    }
    Ok(IndexSnapshot { repositories, last_modified })
}

#[cfg(test)]
pub(super) fn image_config(db: &Db<'_>, digest: &Digest) -> Result<Option<ImageConfig>, MetadataError> {
    db.query_opt(
        "SELECT digest, os, architecture, variant, labels FROM image_configs WHERE digest = ?1",
        args![digest.to_string()],
        |r| Ok(ImageConfig { digest: digest_of(r.get(0)?)?, os: r.get(1)?, architecture: r.get(2)?, variant: r.get(3)?, labels: r.get(4)? }),
    )
}

#[cfg(test)]
mod tests {
    use super::super::tests::{digest, image, open, pulled};
    use crate::metadata::{ImageConfig, NewDistribution, Store};

    #[test]
    fn each_config_is_unread_until_recorded_once() {
        let (_d, s) = open();
        s.record(&[pulled(image("a", &["l1"]), Some("1")), pulled(image("b", &["l2"]), Some("2"))]).unwrap();
        let unread = s.unread_configs(0, 10).unwrap();
        assert_eq!(unread.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(), [digest("a-config"), digest("b-config")]);
        let (first_id, _) = unread[0];
        assert_eq!(s.unread_configs(first_id, 10).unwrap().len(), 1, "after an id, only later manifests");
        assert_eq!(s.unread_configs(0, 1).unwrap().len(), 1, "at most the limit");

        let read = ImageConfig {
            digest: digest("a-config"),
            os: Some("linux".into()),
            architecture: Some("amd64".into()),
            variant: None,
            labels: Some(r#"{"org.flatpak.ref":"app/a/x86_64/stable"}"#.into()),
        };
        s.record_image_configs(std::slice::from_ref(&read)).unwrap();
        // Recorded again with other facts: the first stays.
        s.record_image_configs(&[ImageConfig { labels: None, ..read.clone() }]).unwrap();
        assert_eq!(s.image_config(&digest("a-config")).unwrap(), Some(read));
        assert_eq!(s.unread_configs(0, 10).unwrap().iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(), [digest("b-config")]);
        assert_eq!(s.image_config(&digest("b-config")).unwrap(), None);
    }

    #[test]
    fn the_snapshot_is_each_distributions_tags_with_their_config_facts() {
        let (_d, s) = open();
        // Version 1: tag 1 → a; version 2: tag 2 → b as well.
        s.record(&[pulled(image("a", &["l1"]), Some("1"))]).unwrap();
        s.record(&[pulled(image("b", &["l2"]), Some("2"))]).unwrap();
        let facts = ImageConfig {
            digest: digest("a-config"),
            os: Some("linux".into()),
            architecture: Some("amd64".into()),
            variant: None,
            labels: Some(r#"{"org.flatpak.ref":"app/a/x86_64/stable"}"#.into()),
        };
        s.record_image_configs(std::slice::from_ref(&facts)).unwrap();
        let latest = s.repository("up/app").unwrap().expect("recorded").latest_version;
        assert!(latest >= 2, "{latest}");
        for (name, base_path, version) in [("latest", "apps/latest", None), ("pinned", "apps/pinned", Some(1))] {
            s.create_distribution(&NewDistribution {
                name: name.into(),
                base_path: base_path.into(),
                repository: "up/app".into(),
                version,
                private: false,
                description: None,
            })
            .unwrap();
        }
        let snapshot = s.index_snapshot().unwrap().repositories;
        let paths: Vec<&str> = snapshot.iter().map(|r| r.base_path.as_str()).collect();
        assert_eq!(paths, ["apps/latest", "apps/pinned"]);
        let tags = |i: usize| snapshot[i].tags.iter().map(|(t, m)| (t.clone(), m.digest.clone())).collect::<Vec<_>>();
        assert_eq!(tags(0), [("1".to_owned(), digest("a")), ("2".to_owned(), digest("b"))]);
        assert_eq!(tags(1), [("1".to_owned(), digest("a"))], "the pinned version's tags only");
        assert_eq!(snapshot[0].tags[0].1.config, Some(facts), "a's config facts");
        assert_eq!(snapshot[0].tags[1].1.config, None, "b's config is not read yet");
    }
}
