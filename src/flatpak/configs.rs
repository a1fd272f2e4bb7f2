//! Reads each recorded image's config once, after the content is
//! recorded (a pull, push, sync, import or build), and keeps what the
//! registry index shows of it (platform, labels) in the metadata: the
//! index never reads a blob. A config not stored yet (a pull-through
//! image whose config no client fetched) is read on a later pass.
//!
//! It runs only where the index is served (`[flatpak] index = true`): on
//! S3 its reads bring configs into the hot tier, which a node that serves
//! no index should not pay for.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::metadata::{changes, ImageConfig, Metadata, MetadataError};
use crate::oci::Digest;
use crate::storage::Storage;

/// Largest config read (image configs are a few KiB).
const MAX_CONFIG: usize = 1 << 20;
/// Manifests looked at per query.
const BATCH: u64 = 256;
/// How often new manifests are looked for when no version was made.
const EVERY: Duration = Duration::from_secs(10);
/// How often configs not stored yet are looked for.
const RETRY: Duration = Duration::from_secs(2);
/// Configs not stored yet looked for between full passes.
const MISSING_KEPT: usize = 4096;
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
    /// stored and unread, moving `after` on: how many were read. Those not
    /// stored yet are put in `missing`.
    pub(crate) async fn catch_up(&self, after: &mut u64, missing: &mut Missing) -> Result<u64, MetadataError> {
        let mut read = 0;
        loop {
            let from = *after;
            let batch = self.metadata.run(move |s| s.unread_configs(from, BATCH)).await?;
            let Some((last, _)) = batch.last() else { return Ok(read) };
            *after = *last;
            read += self.read(batch.into_iter().map(|(_, d)| d), missing).await?;
        }
    }

    /// Reads `digests` and records their facts; those not stored go to
    /// `missing`. How many were read.
    async fn read(&self, digests: impl Iterator<Item = Digest>, missing: &mut Missing) -> Result<u64, MetadataError> {
        let mut found = Vec::new();
        for digest in digests {
            match self.storage.read_small(&digest, MAX_CONFIG).await {
                Ok(Some(bytes)) => {
                    found.push(facts(&digest, &bytes));
                    missing.remove(&digest);
                }
                // Not stored yet (a pull-through image's config, fetched
                // when a client asks), or larger than a config is.
                Ok(None) => {
                    if missing.len() < MISSING_KEPT {
                        missing.entry(digest).or_insert_with(tokio::time::Instant::now);
                    }
                }
                Err(e) => tracing::debug!(%digest, error = %e, "image config not read"),
            }
        }
        let read = found.len() as u64;
        if !found.is_empty() {
            self.metadata.run(move |s| s.record_image_configs(&found)).await?;
        }
        Ok(read)
    }

    /// Runs for as long as the process: new manifests as soon as a
    /// version is made (on any node; at the latest every 10 s), configs
    /// not stored yet every 2 s for 10 minutes, and every manifest whose
    /// config is unread again every 10 minutes.
    pub(crate) fn spawn(self) {
        tokio::spawn(async move {
            let mut changes = self.metadata.changes();
            let mut after = 0;
            let mut missing = Missing::new();
            let mut last_full = tokio::time::Instant::now();
            let mut last_retry = last_full;
            loop {
                if last_full.elapsed() >= AGAIN {
                    after = 0;
                    last_full = tokio::time::Instant::now();
                }
                missing.retain(|_, since| since.elapsed() < AGAIN);
                // However often versions are made (each a wake), a config
                // not stored is looked for at most every RETRY.
                let again: Vec<Digest> = if last_retry.elapsed() >= RETRY {
                    last_retry = tokio::time::Instant::now();
                    missing.keys().cloned().collect()
                } else {
                    Vec::new()
                };
                let read = match self.catch_up(&mut after, &mut missing).await {
                    Ok(_) => self.read(again.into_iter(), &mut missing).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = read {
                    tracing::warn!(error = %e, "reading image configs for the index");
                }
                let heard = async {
                    loop {
                        match changes.recv().await {
                            Ok(topic) if topic == changes::VERSIONS || topic == changes::RESYNC => return,
                            Ok(_) => {}
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                            // No more changes: only the clock wakes it.
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                        }
                    }
                };
                let wait = if missing.is_empty() { EVERY } else { RETRY };
                let _ = tokio::time::timeout(wait, heard).await;
            }
        });
    }
}

/// Configs of recorded manifests not stored yet, since when.
pub(crate) type Missing = std::collections::HashMap<Digest, tokio::time::Instant>;

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
