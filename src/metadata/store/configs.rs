//! What the Flatpak registry index reads: image configs' facts (platform,
//! labels), which recorded manifests' configs are not read yet, and each
//! distribution's tagged manifests with those facts.

use super::{digest_of, i64_of, u64_of};
use crate::metadata::db::{args, Db};
use crate::metadata::{ImageConfig, IndexedManifest, IndexedRepository, MetadataError};
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
    for c in configs {
        db.execute(
            "INSERT INTO image_configs (digest, os, architecture, variant, labels) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (digest) DO NOTHING",
            args![c.digest.to_string(), c.os, c.architecture, c.variant, c.labels],
        )?;
    }
    Ok(())
}

/// A manifest row by id, with its config's facts (images) or its
/// children (indexes, each with theirs).
fn indexed_manifest(db: &Db<'_>, id: i64, depth: u8) -> Result<Option<IndexedManifest>, MetadataError> {
    let Some((digest, media_type, annotations)) = db.query_opt(
        "SELECT digest, media_type, annotations FROM manifests WHERE id = ?1",
        args![id],
        |r| Ok((r.get::<String>(0)?, r.get::<String>(1)?, r.get::<Option<String>>(2)?)),
    )?
    else {
        return Ok(None);
    };
    let config = db.query_opt(
        "SELECT c.digest, c.os, c.architecture, c.variant, c.labels FROM manifest_references r
         JOIN image_configs c ON c.digest = r.digest WHERE r.manifest_id = ?1 AND r.kind = 'config'",
        args![id],
        |r| Ok(ImageConfig { digest: digest_of(r.get(0)?)?, os: r.get(1)?, architecture: r.get(2)?, variant: r.get(3)?, labels: r.get(4)? }),
    )?;
    let mut children = Vec::new();
    if depth == 0 {
        let ids: Vec<i64> = db.query_vec(
            "SELECT m.id FROM manifest_references r JOIN manifests m ON m.digest = r.digest
             WHERE r.manifest_id = ?1 AND r.kind = 'manifest' ORDER BY r.position",
            args![id],
            |r| r.get(0),
        )?;
        for child in ids {
            children.extend(indexed_manifest(db, child, depth + 1)?);
        }
    }
    Ok(Some(IndexedManifest { digest: digest_of(digest)?, media_type, annotations, config, children }))
}

/// Every distribution's tagged manifests at the version it serves (its
/// pinned one, else its repository's latest), by base path.
pub(super) fn index_snapshot(db: &Db<'_>) -> Result<Vec<IndexedRepository>, MetadataError> {
    let served: Vec<(String, i64, i64)> = db.query_vec(
        "SELECT d.base_path, d.repository_id, coalesce(d.version, r.latest_version)
         FROM distributions d JOIN repositories r ON r.id = d.repository_id ORDER BY d.base_path",
        args![],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let mut out = Vec::new();
    for (base_path, repository, version) in served {
        let tags: Vec<(String, i64)> = db.query_vec(
            "SELECT t.name, t.manifest_id FROM repository_content rc JOIN tags t ON t.id = rc.content_id
             WHERE rc.repository_id = ?1 AND rc.content_type = 'tag'
               AND rc.version_added <= ?2 AND (rc.version_removed IS NULL OR rc.version_removed > ?2)
             ORDER BY t.name",
            args![repository, version],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let mut indexed = Vec::new();
        for (tag, id) in tags {
            if let Some(m) = indexed_manifest(db, id, 0)? {
                indexed.push((tag, m));
            }
        }
        out.push(IndexedRepository { base_path, tags: indexed });
    }
    Ok(out)
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
        let snapshot = s.index_snapshot().unwrap();
        let paths: Vec<&str> = snapshot.iter().map(|r| r.base_path.as_str()).collect();
        assert_eq!(paths, ["apps/latest", "apps/pinned"]);
        let tags = |i: usize| snapshot[i].tags.iter().map(|(t, m)| (t.clone(), m.digest.clone())).collect::<Vec<_>>();
        assert_eq!(tags(0), [("1".to_owned(), digest("a")), ("2".to_owned(), digest("b"))]);
        assert_eq!(tags(1), [("1".to_owned(), digest("a"))], "the pinned version's tags only");
        assert_eq!(snapshot[0].tags[0].1.config, Some(facts), "a's config facts");
        assert_eq!(snapshot[0].tags[1].1.config, None, "b's config is not read yet");
    }
}
