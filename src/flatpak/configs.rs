//! Reads each recorded image's config once, after the content is
//! recorded (a pull, push, sync, import or build), and keeps what the
//! registry index shows of it (platform, labels) in the metadata: the
//! index never reads a blob. A config not stored yet (a pull-through
//! image whose config no client fetched) is read on a later pass.
//!
//! Not started yet: it runs with the index, when `[flatpak] index` is
//! on (on S3 its reads fill the hot tier with configs, which a node that
//! serves no index should not pay for).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::metadata::{ImageConfig, Metadata, MetadataError};
use crate::oci::Digest;
use crate::storage::Storage;

/// Largest config read (image configs are a few KiB).
const MAX_CONFIG: usize = 1 << 20;
/// Manifests looked at per query.
const BATCH: u64 = 256;
/// How often new manifests are looked for.
const EVERY: Duration = Duration::from_secs(2);
/// How often every manifest with an unread config is looked at again
/// (configs stored since: a pull-through config a client fetched later).
const AGAIN: Duration = Duration::from_secs(600);

/// What an image config says of its platform and labels; all `None` when
/// it is not an image config.
pub(crate) fn facts(digest: &Digest, bytes: &[u8]) -> ImageConfig {
    let v: serde_json::Value = serde_json::from_slice(bytes).unwrap_or_default();
    let text = |k: &str| v[k].as_str().map(str::to_owned);
    let labels: Option<BTreeMap<&str, &str>> = v["config"]["Labels"]
        .as_object()
        .map(|o| o.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.as_str(), v))).collect())
        .filter(|l: &BTreeMap<&str, &str>| !l.is_empty());
    ImageConfig {
        digest: digest.clone(),
        os: text("os"),
        architecture: text("architecture"),
        variant: text("variant"),
        labels: labels.and_then(|l| serde_json::to_string(&l).ok()),
    }
}

#[derive(Clone)]
pub(crate) struct ConfigReader {
    metadata: Metadata,
    storage: Storage,
}

impl ConfigReader {
    pub(crate) fn new(metadata: Metadata, storage: Storage) -> ConfigReader {
        ConfigReader { metadata, storage }
    }

    /// Reads the configs of manifests recorded after id `after` that are
    /// stored and unread, moving `after` on: how many were read.
    pub(crate) async fn catch_up(&self, after: &mut u64) -> Result<u64, MetadataError> {
        let mut read = 0;
        loop {
            let from = *after;
            let batch = self.metadata.run(move |s| s.unread_configs(from, BATCH)).await?;
            let Some((last, _)) = batch.last() else { return Ok(read) };
            *after = *last;
            let mut found = Vec::new();
            for (_, digest) in &batch {
                match self.storage.read_small(digest, MAX_CONFIG).await {
                    Ok(Some(bytes)) => found.push(facts(digest, &bytes)),
                    // Not stored yet, or larger than a config is.
                    Ok(None) => {}
                    Err(e) => tracing::debug!(%digest, error = %e, "image config not read"),
                }
            }
            read += found.len() as u64;
            if !found.is_empty() {
                self.metadata.run(move |s| s.record_image_configs(&found)).await?;
            }
        }
    }

    /// Runs for as long as the process: new manifests every 2 s, those
    /// still unread again every 10 minutes.
    pub(crate) fn spawn(self) {
        tokio::spawn(async move {
            let mut after = 0;
            let mut last_full = tokio::time::Instant::now();
            loop {
                if last_full.elapsed() >= AGAIN {
                    after = 0;
                    last_full = tokio::time::Instant::now();
                }
                if let Err(e) = self.catch_up(&mut after).await {
                    tracing::warn!(error = %e, "reading image configs for the index");
                }
                tokio::time::sleep(EVERY).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_configs_platform_and_labels_are_its_facts() {
        let d = Digest::of(crate::oci::Algorithm::Sha256, b"x");
        let config = br#"{"architecture":"arm64","variant":"v8","os":"linux","config":{"Labels":{"org.flatpak.ref":"app/a/aarch64/stable","b":"2","n":3}}}"#;
        let f = facts(&d, config);
        assert_eq!((f.os.as_deref(), f.architecture.as_deref(), f.variant.as_deref()), (Some("linux"), Some("arm64"), Some("v8")));
        assert_eq!(f.labels.as_deref(), Some(r#"{"b":"2","org.flatpak.ref":"app/a/aarch64/stable"}"#), "sorted, strings only");
        let none = facts(&d, b"not json");
        assert_eq!((none.os, none.architecture, none.labels), (None, None, None));
        assert_eq!(facts(&d, br#"{"os":"linux","config":{"Labels":{}}}"#).labels, None);
    }
}
