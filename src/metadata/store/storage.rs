//! What storage housekeeping (eviction, gc) needs from the metadata: which
//! digests repository versions reference, which of them must never be
//! evicted, and objects' last uses.

use std::collections::{HashMap, HashSet};

use crate::metadata::db::{args, Db};
use crate::metadata::{MetadataError, Millis, StorageReferences};
use crate::oci::Digest;

/// Digests of a set of content rows (`rows(content_type, content_id)`,
/// given as a query): their blobs and manifests, the manifests their tags
/// name, and everything those manifests point at, index children's
/// content included (a version holds what its manifests reference).
fn closure_of(db: &Db<'_>, rows: &str, extra_manifests: &str) -> Result<HashSet<String>, MetadataError> {
    let sql = format!(
        "WITH RECURSIVE
           content_rows(content_type, content_id) AS ({rows}),
           closure(id) AS (
             SELECT content_id FROM content_rows WHERE content_type = 'manifest'
             UNION SELECT t.manifest_id FROM content_rows r JOIN tags t ON r.content_type = 'tag' AND t.id = r.content_id
             {extra_manifests}
             UNION SELECT m.id FROM closure c
                   JOIN manifest_references mr ON mr.manifest_id = c.id AND mr.kind = 'manifest'
                   JOIN manifests m ON m.digest = mr.digest)
         SELECT m.digest FROM closure c JOIN manifests m ON m.id = c.id
         UNION SELECT mr.digest FROM closure c JOIN manifest_references mr ON mr.manifest_id = c.id
         UNION SELECT b.digest FROM content_rows r JOIN blobs b ON r.content_type = 'blob' AND b.id = r.content_id"
    );
    let mut digests = HashSet::new();
    db.for_each(&sql, args![], |r| {
        digests.insert(r.get(0)?);
        Ok(())
    })?;
    Ok(digests)
}

pub(super) fn storage_references(db: &Db<'_>) -> Result<StorageReferences, MetadataError> {
    // Any version's rows count, removed ones too: an older version still
    // holds them (rows of deleted versions are folded away).
    let mut referenced = closure_of(
        db,
        "SELECT content_type, content_id FROM repository_content
         UNION SELECT 'blob', blob_id FROM uploaded_blobs",
        "UNION SELECT m.id FROM upstream_tags u JOIN manifests m ON m.digest = u.digest",
    )?;
    db.for_each("SELECT digest FROM upstream_tags", args![], |r| {
        referenced.insert(r.get(0)?);
        Ok(())
    })?;
    let mut protected = closure_of(
        db,
        "SELECT rc.content_type, rc.content_id FROM repository_content rc
           JOIN repositories r ON r.id = rc.repository_id
          WHERE r.kind = 'push'
             OR (r.kind = 'sync' AND r.remote IN (SELECT name FROM remotes WHERE policy = 'immediate'))
         UNION SELECT rc.content_type, rc.content_id FROM repository_content rc
           JOIN distributions d ON d.repository_id = rc.repository_id AND d.version IS NOT NULL
          WHERE rc.version_added <= d.version AND (rc.version_removed IS NULL OR rc.version_removed > d.version)
         UNION SELECT 'blob', blob_id FROM uploaded_blobs",
        "",
    )?;
    // Other sync repositories' content can be fetched again only where a
    // sync recorded its source (an on-demand blob); content copied in by
    // curation has none, so it stays.
    let sync_content = closure_of(
        db,
        "SELECT rc.content_type, rc.content_id FROM repository_content rc
           JOIN repositories r ON r.id = rc.repository_id WHERE r.kind = 'sync'",
        "",
    )?;
    let sourced: HashSet<String> =
        db.query_vec("SELECT DISTINCT digest FROM blob_sources", args![], |r| r.get(0))?.into_iter().collect();
    protected.extend(sync_content.into_iter().filter(|d| !sourced.contains(d)));
    let manifests = db.query_vec("SELECT digest FROM manifests", args![], |r| r.get(0))?.into_iter().collect();
    let sync_running_since: Option<Millis> =
        db.query_one("SELECT MIN(started_at) FROM tasks WHERE kind = 'sync' AND state = 'running'", args![])?;
    Ok(StorageReferences { referenced, protected, manifests, sync_running_since })
}

pub(super) fn record_uses(db: &Db<'_>, uses: &[(Digest, Millis)]) -> Result<(), MetadataError> {
    for (digest, at) in uses {
        db.execute(
            "INSERT INTO object_uses (digest, last_used) VALUES (?1, ?2)
             ON CONFLICT (digest) DO UPDATE SET last_used = CASE WHEN excluded.last_used > object_uses.last_used
                 THEN excluded.last_used ELSE object_uses.last_used END",
            args![digest.to_string(), *at],
        )?;
    }
    Ok(())
}

pub(super) fn last_uses(db: &Db<'_>) -> Result<HashMap<String, Millis>, MetadataError> {
    let rows = db.query_vec("SELECT digest, last_used FROM object_uses", args![], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.into_iter().collect())
}

pub(super) fn forget_uses(db: &Db<'_>, digests: &[Digest]) -> Result<(), MetadataError> {
    for d in digests {
        db.execute("DELETE FROM object_uses WHERE digest = ?1", args![d.to_string()])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{blob, digest, image, open, pulled};
    use crate::metadata::{NewDistribution, Store};

    fn has(set: &std::collections::HashSet<String>, seed: &str) -> bool {
        set.contains(&digest(seed).to_string())
    }

    #[test]
    fn references_cover_every_version_and_protection_covers_push_content_and_pinned_versions() {
        let (_d, s) = open();
        s.record(&[pulled(image("m1", &["l1"]), Some("t"))]).unwrap();
        s.record(&[pulled(image("m2", &["l2"]), Some("t"))]).unwrap();
        // Version 1 is pinned; version 2 moved the tag to m2 (m1 stays).
        let pin = NewDistribution {
            name: "pinned".into(),
            base_path: "pinned".into(),
            repository: "up/app".into(),
            version: Some(1),
            private: false,
            description: None,
        };
        s.create_distribution(&pin).unwrap();
        s.create_push_repository("team/app", "team-app").unwrap();
        s.add_uploaded_blob("team/app", &blob("pushed")).unwrap();

        let refs = s.storage_references().unwrap();
        for seed in ["m1", "l1", "m1-config", "m2", "l2", "m2-config", "pushed"] {
            assert!(has(&refs.referenced, seed), "{seed} is referenced");
        }
        assert!(!has(&refs.referenced, "orphan"));
        for seed in ["m1", "l1", "m1-config", "pushed"] {
            assert!(has(&refs.protected, seed), "{seed} is protected");
        }
        for seed in ["m2", "l2", "m2-config"] {
            assert!(!has(&refs.protected, seed), "{seed} is only cached");
        }
        assert!(has(&refs.manifests, "m1") && !has(&refs.manifests, "l1"));
        assert_eq!(refs.sync_running_since, None);
    }

    #[test]
    fn last_uses_keep_the_later_and_are_forgotten_with_their_object() {
        let (_d, s) = open();
        s.record_uses(&[(digest("a"), 10), (digest("b"), 20)]).unwrap();
        s.record_uses(&[(digest("a"), 30), (digest("b"), 5)]).unwrap();
        let uses = s.last_uses().unwrap();
        assert_eq!((uses[&digest("a").to_string()], uses[&digest("b").to_string()]), (30, 20));
        s.forget_uses(&[digest("a")]).unwrap();
        assert!(!s.last_uses().unwrap().contains_key(&digest("a").to_string()));
    }
}
