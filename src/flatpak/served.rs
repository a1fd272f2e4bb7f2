//! The registry index as the registry port serves it: built in memory
//! from the metadata's snapshot, built again when the metadata says a
//! version was made, a distribution changed or a config's facts were
//! recorded (on any node: `Metadata::changes`), and each answer kept per
//! query and viewer until then. A request reads no metadata unless
//! something changed since the last one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tokio::sync::broadcast::error::TryRecvError;

use super::index::{self, Repository};
use super::query::Query;
use crate::metadata::{changes, Metadata, MetadataError, Millis};

/// Bytes of answers kept per build, over every (query, viewer): a full
/// answer over 10,000 Flatpak images is some 30 MB (their labels carry
/// each app's metadata).
const ANSWERS_KEPT: u64 = 64 << 20;

/// One answer, with what its HTTP validators are made of.
#[derive(Clone)]
pub(crate) struct Answer {
    pub(crate) body: Bytes,
    /// A strong validator: the answer's own hash, so equal answers (on any
    /// node) have equal tags.
    pub(crate) etag: String,
    /// When what the index reflects last changed.
    pub(crate) last_modified: Millis,
}

/// Why the index cannot answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IndexError {
    #[error("{0}")]
    Query(String),
    #[error("the index cannot be loaded: {0}")]
    Metadata(#[from] MetadataError),
}

/// One build of the index, and the answers made from it.
struct Built {
    repositories: Vec<Repository>,
    last_modified: Millis,
    answers: moka::sync::Cache<(String, String), Answer>,
}

/// The index a node serves; cheap to clone.
#[derive(Clone)]
pub(crate) struct ServedIndex {
    inner: Arc<Inner>,
}

struct Inner {
    metadata: Metadata,
    /// The metadata's changes, read by requests (never awaited): one
    /// that matters marks the build stale.
    changes: Mutex<tokio::sync::broadcast::Receiver<String>>,
    stale: AtomicBool,
    /// None until the first build.
    current: RwLock<Option<Arc<Built>>>,
    /// One build at a time; requests meanwhile wait for it.
    building: tokio::sync::Mutex<()>,
}

impl ServedIndex {
    /// An index over `metadata`, built on first use (or by [`Self::warm`]).
    pub(crate) fn new(metadata: Metadata) -> ServedIndex {
        let changes = Mutex::new(metadata.changes());
        ServedIndex {
            inner: Arc::new(Inner {
                metadata,
                changes,
                stale: AtomicBool::new(true),
                current: RwLock::new(None),
                building: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Builds the index now, so the first client does not wait for it.
    pub(crate) fn warm(&self) {
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.current().await {
                tracing::warn!(error = %e, "the Flatpak index could not be built; the first request will try again");
            }
        });
    }

    /// The answer to `raw_query` for a viewer (see `Auth::viewer`) who may
    /// see the repositories `visible` allows.
    pub(crate) async fn answer(&self, raw_query: &str, viewer: &str, visible: &(dyn Fn(&str) -> bool + Sync)) -> Result<Answer, IndexError> {
        let query = Query::parse(raw_query).map_err(IndexError::Query)?;
        let built = self.current().await?;
        let key = (query.canonical(), viewer.to_owned());
        if let Some(answer) = built.answers.get(&key) {
            return Ok(answer);
        }
        let body = Bytes::from(index::answer(&built.repositories, &query, visible));
        let etag = format!("\"{}\"", hex::encode(&Sha256::digest(&body)[..16]));
        let answer = Answer { body, etag, last_modified: built.last_modified };
        built.answers.insert(key, answer.clone());
        Ok(answer)
    }

    /// Whether a change that matters arrived since the last look.
    fn heard_changes(&self) -> bool {
        let mut changes = match self.inner.changes.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut heard = false;
        loop {
            match changes.try_recv() {
                Ok(topic) => {
                    heard |= [changes::VERSIONS, changes::DISTRIBUTIONS, changes::IMAGE_CONFIGS, changes::RESYNC].contains(&topic.as_str());
                }
                // Some were missed: any could have mattered.
                Err(TryRecvError::Lagged(_)) => heard = true,
                Err(TryRecvError::Empty) | Err(TryRecvError::Closed) => return heard,
            }
        }
    }

    /// The current build, made again first if something changed.
    async fn current(&self) -> Result<Arc<Built>, IndexError> {
        if self.heard_changes() {
            self.inner.stale.store(true, Ordering::SeqCst);
        }
        if !self.inner.stale.load(Ordering::SeqCst) {
            if let Some(built) = self.built() {
                return Ok(built);
            }
        }
        let _one = self.inner.building.lock().await;
        // Another request may have built it while this one waited.
        if !self.inner.stale.load(Ordering::SeqCst) {
            if let Some(built) = self.built() {
                return Ok(built);
            }
        }
        // Cleared before reading: a change committed during the read
        // marks it stale again.
        self.inner.stale.store(false, Ordering::SeqCst);
        match self.inner.metadata.run(|s| s.index_snapshot()).await {
            Ok(snapshot) => {
                let built = Arc::new(Built {
                    repositories: index::from_snapshot(&snapshot.repositories),
                    last_modified: snapshot.last_modified,
                    answers: moka::sync::Cache::builder()
                        .weigher(|(query, viewer): &(String, String), a: &Answer| {
                            u32::try_from(a.body.len() + query.len() + viewer.len()).unwrap_or(u32::MAX)
                        })
                        .max_capacity(ANSWERS_KEPT)
                        .build(),
                });
                *self.inner.current.write().unwrap_or_else(|p| p.into_inner()) = Some(built.clone());
                Ok(built)
            }
            Err(e) => {
                self.inner.stale.store(true, Ordering::SeqCst);
                // What was served before is better than nothing while the
                // metadata cannot be read.
                match self.built() {
                    Some(built) => {
                        tracing::warn!(error = %e, "the Flatpak index could not be built again; serving the previous one");
                        Ok(built)
                    }
                    None => Err(e.into()),
                }
            }
        }
    }

    fn built(&self) -> Option<Arc<Built>> {
        self.inner.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::testing::{digest, image, pulled};
    use crate::metadata::{ImageConfig, NewDistribution};

    async fn answer(index: &ServedIndex, query: &str, viewer: &str, visible: bool) -> (serde_json::Value, String) {
        let a = index.answer(query, viewer, &move |_: &str| visible).await.expect("answer");
        (serde_json::from_slice(&a.body).expect("JSON"), a.etag)
    }

    #[tokio::test]
    async fn a_version_made_or_a_config_read_shows_in_the_next_answer() {
        let dir = tempfile::tempdir().unwrap();
        let metadata = Metadata::open(dir.path()).await.unwrap();
        let index = ServedIndex::new(metadata.clone());
        let (empty, empty_tag) = answer(&index, "", "anonymous", true).await;
        assert_eq!(empty, serde_json::json!({"Registry": "/", "Results": []}));

        metadata.run(|s| s.record(&[pulled(image("a", &["l1"]), Some("1"))])).await.unwrap();
        let served = NewDistribution {
            name: "a".into(),
            base_path: "apps/a".into(),
            repository: "up/app".into(),
            version: None,
            private: false,
            description: None,
        };
        metadata.run(move |s| s.create_distribution(&served)).await.unwrap();
        let (one, one_tag) = answer(&index, "", "anonymous", true).await;
        assert_eq!(one["Results"][0]["Name"], "apps/a", "{one}");
        assert_eq!(one["Results"][0]["Images"][0]["Tags"], serde_json::json!(["1"]));
        assert_ne!(one_tag, empty_tag);
        // Kept: asked again, the same answer; another viewer gets its own.
        assert_eq!(answer(&index, "", "anonymous", true).await.1, one_tag);
        assert_eq!(answer(&index, "", "nobody", false).await.0["Results"], serde_json::json!([]));
        let flatpaks = "label%3Aorg.flatpak.ref%3Aexists=1";
        assert_eq!(answer(&index, flatpaks, "anonymous", true).await.0["Results"], serde_json::json!([]), "no labels read yet");

        // The config's facts recorded (by the reader, on any node): shown.
        let facts = ImageConfig {
            digest: digest("a-config"),
            os: Some("linux".into()),
            architecture: Some("amd64".into()),
            variant: None,
            labels: Some(r#"{"org.flatpak.ref":"app/a/x86_64/stable"}"#.into()),
        };
        metadata.run(move |s| s.record_image_configs(&[facts])).await.unwrap();
        let (labelled, _) = answer(&index, flatpaks, "anonymous", true).await;
        assert_eq!(labelled["Results"][0]["Images"][0]["Labels"]["org.flatpak.ref"], "app/a/x86_64/stable", "{labelled}");

        // A second tag is a new version: shown at once.
        metadata.run(|s| s.record(&[pulled(image("a", &["l1"]), Some("2"))])).await.unwrap();
        assert_eq!(answer(&index, flatpaks, "anonymous", true).await.0["Results"][0]["Images"][0]["Tags"], serde_json::json!(["1", "2"]));

        assert!(matches!(index.answer("colour=blue", "anonymous", &|_: &str| true).await, Err(IndexError::Query(_))));
    }
}
