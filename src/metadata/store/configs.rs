//! Image configs' facts (platform, labels): which recorded manifests'
//! configs are not read yet, and what was read of them.

use super::{digest_of, i64_of, u64_of};
use crate::metadata::db::{args, Db};
use crate::metadata::{ImageConfig, MetadataError};
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
    use crate::metadata::{ImageConfig, Store};

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
}
