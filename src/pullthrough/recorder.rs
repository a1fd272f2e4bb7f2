//! Records what pulls bring into each pull-through repository as new
//! repository versions, off the request path.
//!
//! Requests hand a [`Recording`] to a channel and move on; one task batches
//! them and writes each batch in one transaction. A batch closes after
//! [`QUIET`] without new recordings or [`MAX_DELAY`] after it opened, so the
//! manifests of one pull (an index, then the child a client picks) land in
//! one version, and a crash loses at most the last moments of recordings,
//! never consistency. A clean shutdown flushes everything. While the
//! database cannot be reached (a cluster's PostgreSQL restarting), batches
//! are kept and written again every few seconds.
//!
//! The same manifest served again under the same tag is not sent at all: a
//! bounded memory of what was recorded keeps the hot path to one lookup.

use std::time::Duration;

use moka::sync::Cache;
use tokio::sync::{mpsc, oneshot};

use crate::metadata::{
    Change, Descriptor, IndexChild, ManifestFacts, Metadata, MetadataError, Origin, Platform, Recording,
};
use crate::oci::media::{self, References};
use crate::oci::Digest;

/// A batch closes this long after its last recording...
const QUIET: Duration = Duration::from_millis(250);
/// ...or this long after its first, whichever comes first.
const MAX_DELAY: Duration = Duration::from_secs(2);
/// Recordings waiting for the writer before senders wait too.
const QUEUE: usize = 16_384;
/// (repository, tag, digest) triples remembered as recorded.
const SEEN: u64 = 200_000;
/// While the database cannot be reached, recordings wait this long
/// between attempts...
const RETRY: Duration = Duration::from_secs(5);
/// ...and at most this many wait.
const KEPT: usize = 100_000;

// Almost every message is a recording; a flush is rare, so its small size
// is no reason to box the common case.
#[allow(clippy::large_enum_variant)]
enum Message {
    Record(Recording),
    /// Write everything queued so far, then answer.
    Flush(oneshot::Sender<()>),
}

/// A 64-bit hash of (repository, tag, digest): the hot path checks it
/// without allocating; a collision would at worst skip one recording.
type SeenKey = u64;

fn seen_key(upstream: &str, remote_name: &str, tag: Option<&str>, digest: &Digest) -> SeenKey {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (upstream, remote_name, tag, digest).hash(&mut h);
    h.finish()
}

/// The sending side; cheap to clone.
#[derive(Clone)]
pub(crate) struct Recorder {
    tx: mpsc::Sender<Message>,
    seen: Cache<SeenKey, ()>,
}

impl Recorder {
    /// Starts the writer task.
    pub(crate) fn start(metadata: Metadata) -> Recorder {
        let (tx, rx) = mpsc::channel(QUEUE);
        let seen = Cache::new(SEEN);
        tokio::spawn(run(metadata, rx, seen.clone()));
        Recorder { tx, seen }
    }

    /// Records that the pull-through repository of `origin` served the
    /// manifest `bytes` (by `tag`, if asked for by tag).
    /// `origin` is only called when the manifest is new to the repository,
    /// so the hot path (the same manifest again) allocates nothing.
    pub(crate) async fn manifest(
        &self,
        (upstream, remote_name): (&str, &str),
        origin: impl FnOnce() -> Origin,
        tag: Option<&str>,
        digest: &Digest,
        media_type: &str,
        bytes: &[u8],
    ) {
        let key = seen_key(upstream, remote_name, tag, digest);
        if self.seen.contains_key(&key) {
            return;
        }
        let origin = origin();
        let repository = repository_name(&origin);
        let facts = match media::references(bytes) {
            Ok(refs) => manifest_facts(digest, media_type, bytes.len() as u64, refs),
            Err(e) => {
                tracing::warn!(%repository, %digest, error = %e, "manifest not recorded: unreadable references");
                return;
            }
        };
        self.seen.insert(key, ());
        let change = Change::Manifest { facts, tag: tag.map(str::to_owned) };
        self.send(Recording { repository, origin, change }).await;
    }

    /// Records that the upstream no longer has `tag`.
    pub(crate) async fn tag_removed(&self, origin: &Origin, tag: &str) {
        // Whatever digest the tag was seen with must be recorded again if
        // the tag comes back; the memory is keyed by hash, so forget it all
        // (rare: a tag deleted upstream).
        self.seen.invalidate_all();
        let change = Change::TagRemoved { tag: tag.to_owned() };
        self.send(Recording { repository: repository_name(origin), origin: origin.clone(), change }).await;
    }

    async fn send(&self, r: Recording) {
        // A full queue means the database is far behind: wait rather than
        // lose the recording.
        if let Err(mpsc::error::TrySendError::Full(m)) = self.tx.try_send(Message::Record(r)) {
            if self.tx.send(m).await.is_err() {
                tracing::error!("recorder has stopped; a pull was not recorded");
            }
        }
    }

    /// Waits until everything recorded before this call is written.
    pub(crate) async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

/// A pull-through repository is named `<upstream-name>/<remote name>`.
pub(crate) fn repository_name(origin: &Origin) -> String {
    format!("{}/{}", origin.upstream, origin.remote_name)
}

fn descriptor(d: media::Descriptor) -> Descriptor {
    Descriptor { digest: d.digest, media_type: d.media_type, size: d.size }
}

/// What metadata records of a manifest, from what its bytes reference.
pub(crate) fn manifest_facts(digest: &Digest, media_type: &str, size: u64, refs: References) -> ManifestFacts {
    let artifact_type = refs.effective_artifact_type();
    let children = refs
        .manifests
        .into_iter()
        .map(|d| IndexChild {
            platform: d.platform.clone().map(|p| Platform { os: p.os, architecture: p.architecture, variant: p.variant }),
            descriptor: descriptor(d),
        })
        .collect();
    ManifestFacts {
        digest: digest.clone(),
        media_type: media_type.to_owned(),
        size,
        artifact_type,
        subject: refs.subject.map(|s| s.digest),
        annotations: refs.annotations.filter(|a| !a.is_empty()).and_then(|a| serde_json::to_string(&a).ok()),
        config: refs.config.map(descriptor),
        layers: refs.layers.into_iter().chain(refs.blobs).map(descriptor).collect(),
        children,
    }
}

async fn run(metadata: Metadata, mut rx: mpsc::Receiver<Message>, seen: Cache<SeenKey, ()>) {
    let mut batch: Vec<Recording> = Vec::new();
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    loop {
        // Recordings kept while the database was unreachable are written
        // again after a pause, new recordings or not.
        let first = if batch.is_empty() {
            rx.recv().await
        } else {
            match tokio::time::timeout(RETRY, rx.recv()).await {
                Ok(m) => m,
                Err(_) => {
                    write(&metadata, &mut batch, &seen).await;
                    continue;
                }
            }
        };
        let Some(first) = first else { break };
        let deadline = tokio::time::Instant::now() + MAX_DELAY;
        let mut next = Some(first);
        while let Some(m) = next.take() {
            match m {
                Message::Record(r) => batch.push(r),
                Message::Flush(done) => {
                    waiting.push(done);
                    break;
                }
            }
            let quiet = tokio::time::Instant::now() + QUIET;
            tokio::select! {
                m = rx.recv() => next = m,
                _ = tokio::time::sleep_until(quiet.min(deadline)) => {}
            }
        }
        write(&metadata, &mut batch, &seen).await;
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
    write(&metadata, &mut batch, &seen).await;
}

async fn write(metadata: &Metadata, batch: &mut Vec<Recording>, seen: &Cache<SeenKey, ()>) {
    if batch.is_empty() {
        return;
    }
    let recordings = std::mem::take(batch);
    let n = recordings.len();
    let forget: Vec<SeenKey> = recordings
        .iter()
        .filter_map(|r| match &r.change {
            Change::Manifest { facts, tag } => {
                Some(seen_key(&r.origin.upstream, &r.origin.remote_name, tag.as_deref(), &facts.digest))
            }
            Change::TagRemoved { .. } => None,
        })
        .collect();
    // The recordings come back when the database could not be reached.
    let written = metadata.run(move |s| Ok(s.record(&recordings).map_err(|e| (e, recordings)))).await;
    let written = match written {
        Ok(written) => written,
        Err(e) => Err((e, Vec::new())),
    };
    match written {
        Ok(created) => {
            for c in created {
                tracing::info!(repository = %c.repository, version = c.number, "repository version created");
            }
        }
        Err((MetadataError::Unavailable(e), mut kept)) => {
            // Kept (the oldest dropped past a bound) and written again
            // once the database is back: pulls served meanwhile still
            // become versions.
            let over = kept.len().saturating_sub(KEPT);
            if over > 0 {
                kept.drain(..over);
                tracing::error!(dropped = over, "too many pulls waiting for the metadata database; the oldest are not recorded");
            }
            tracing::warn!(recordings = kept.len(), error = %e, "recording pulls deferred: the metadata database cannot be reached; retrying");
            *batch = kept;
        }
        Err((e, _)) => {
            // Forget them so the next pull records them again.
            for k in forget {
                seen.invalidate(&k);
            }
            tracing::error!(recordings = n, error = %e, "recording pulls failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_take_config_layers_children_and_subject() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let image = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":7}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":9}}],
            "subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":3}}}}"#,
            d('a'),
            d('b'),
            d('c')
        );
        let digest = Digest::of(crate::oci::Algorithm::Sha256, image.as_bytes());
        let f = manifest_facts(&digest, media::OCI_MANIFEST, image.len() as u64, media::references(image.as_bytes()).unwrap());
        assert_eq!(f.config.unwrap().size, Some(7));
        assert_eq!(f.layers.len(), 1);
        assert_eq!(f.subject.unwrap().to_string(), d('c'));
        assert_eq!(f.artifact_type, None, "an image config makes no artifact");

        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
            {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":5,
              "platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#,
            d('e')
        );
        let f = manifest_facts(&digest, media::OCI_INDEX, 1, media::references(index.as_bytes()).unwrap());
        assert_eq!(f.children.len(), 1);
        assert_eq!(f.children[0].platform.as_ref().unwrap().variant.as_deref(), Some("v8"));
        assert!(f.config.is_none() && f.layers.is_empty());
    }
}
