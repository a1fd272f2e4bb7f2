//! Readiness (`GET /readyz`): whether this wharf can take traffic. Storage
//! must take a real write (a probe file in the spool, synced) and the
//! metadata database must answer a query; either failing is 503 with the
//! reason. A write refused for want of space is the exception: wharf
//! still serves what it holds (and passes what it cannot store through),
//! so a full disk is reported as degraded and stays ready, unless
//! `server.ready_when_disk_full` is false. Upstreams are reported, never
//! fatal: a cache whose upstream is down still serves what it holds.
//!
//! Upstream answers are remembered for [`UPSTREAM_RECHECK`], so a probe
//! every few seconds does not become a request to every upstream every few
//! seconds. Liveness (`/healthz`) needs none of this: answering is enough.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::metadata::Metadata;
use crate::storage::{Storage, StorageError};
use crate::upstream::Upstream;

/// How long an upstream's reachability is reused before it is asked again.
const UPSTREAM_RECHECK: Duration = Duration::from_secs(30);
/// How long a readiness check waits for an upstream's answer: longer, and
/// the probe itself would time out before it reports.
const UPSTREAM_WAIT: Duration = Duration::from_secs(2);

/// An upstream's last reachability line, and when it was found.
type LastAnswer = Mutex<Option<(Instant, String)>>;

/// What readiness checks.
pub(crate) struct Readiness {
    storage: Storage,
    metadata: Metadata,
    upstreams: Vec<(Upstream, LastAnswer)>,
    /// A full disk is degraded, not unready.
    ready_when_disk_full: bool,
}

/// A readiness answer: whether ready, and the report, one line per check.
pub(crate) struct Report {
    pub(crate) ready: bool,
    pub(crate) text: String,
}

impl Readiness {
    pub(crate) fn new(
        storage: Storage,
        metadata: Metadata,
        upstreams: Vec<Upstream>,
        ready_when_disk_full: bool,
    ) -> Readiness {
        Readiness {
            storage,
            metadata,
            upstreams: upstreams.into_iter().map(|u| (u, Mutex::new(None))).collect(),
            ready_when_disk_full,
        }
    }

    pub(crate) async fn check(&self) -> Report {
        let storage = self.storage.probe_writable().await;
        let metadata = self.metadata.run(|s| s.ping()).await.map_err(|e| e.to_string());
        let (ready, mut text) = verdict(storage, metadata, self.ready_when_disk_full);
        for (upstream, last) in &self.upstreams {
            let _ = writeln!(text, "upstream {}: {}", upstream.config().name, self.reachability(upstream, last).await);
        }
        Report { ready, text }
    }

    async fn reachability(&self, upstream: &Upstream, last: &LastAnswer) -> String {
        // A poisoned lock only holds a cached line; still usable.
        let cached = last.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some((at, line)) = cached.filter(|(at, _)| at.elapsed() < UPSTREAM_RECHECK) {
            return format!("{line} ({}s ago; not required for readiness)", at.elapsed().as_secs());
        }
        let line = match tokio::time::timeout(UPSTREAM_WAIT, upstream.ping()).await {
            Ok(Ok(status)) => format!("reachable (HTTP {})", status.as_u16()),
            Ok(Err(e)) => format!("unreachable: {e}"),
            Err(_) => format!("unreachable: no answer within {}s", UPSTREAM_WAIT.as_secs()),
        };
        *last.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), line.clone()));
        format!("{line} (now; not required for readiness)")
    }
}

/// Whether ready, and the report's first lines: the verdict (`ready`, or
/// `not ready:` and the first failure), a `degraded:` line for a full disk
/// that leaves wharf ready, then one line per check.
fn verdict(
    storage: Result<(), StorageError>,
    metadata: Result<(), String>,
    ready_when_disk_full: bool,
) -> (bool, String) {
    let full = matches!(storage, Err(StorageError::Full(_)));
    let storage = storage.map_err(|e| e.to_string());
    let storage_fails = storage.is_err() && !(full && ready_when_disk_full);
    let ready = !storage_fails && metadata.is_ok();
    let mut text = String::new();
    match (&storage, &metadata) {
        (Err(e), _) if storage_fails => {
            let _ = writeln!(text, "not ready: storage: {e}");
        }
        (_, Err(e)) => {
            let _ = writeln!(text, "not ready: metadata: {e}");
        }
        _ => text.push_str("ready\n"),
    }
    if full && ready_when_disk_full {
        text.push_str("degraded: disk full: stored content is served, new content passes through uncached\n");
    }
    let _ = writeln!(text, "storage: {}", storage.err().unwrap_or_else(|| "ok (writable)".into()));
    let _ = writeln!(text, "metadata: {}", metadata.err().unwrap_or_else(|| "ok".into()));
    (ready, text)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    #[tokio::test]
    async fn storage_that_cannot_take_a_write_is_not_ready_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).await.unwrap();
        let metadata = Metadata::open(dir.path()).await.unwrap();
        let readiness = Readiness::new(storage, metadata, Vec::new(), true);
        let report = readiness.check().await;
        assert!(report.ready, "{}", report.text);
        assert!(report.text.starts_with("ready\n"), "{}", report.text);
        assert_eq!(std::fs::read_dir(dir.path().join("spool")).unwrap().count(), 0, "the probe file is removed");

        // A file where the spool directory was: no write can succeed, even
        // for root (which a read-only mode would not stop).
        std::fs::remove_dir(dir.path().join("spool")).unwrap();
        std::fs::write(dir.path().join("spool"), b"in the way").unwrap();
        let report = readiness.check().await;
        assert!(!report.ready, "{}", report.text);
        assert!(report.text.starts_with("not ready: storage: "), "{}", report.text);
        assert!(report.text.contains("metadata: ok"), "{}", report.text);
    }

    #[test]
    fn a_full_disk_is_degraded_unless_the_operator_wants_it_unready() {
        let full = || Err(StorageError::Full("cannot write in /s/spool: No space left on device".into()));
        let (ready, text) = verdict(full(), Ok(()), true);
        assert!(ready);
        assert!(text.starts_with("ready\ndegraded: disk full: "), "{text}");
        assert!(text.contains("storage: disk full: cannot write in /s/spool: No space left on device\n"), "{text}");
        assert!(text.contains("metadata: ok\n"), "{text}");

        let (ready, text) = verdict(full(), Ok(()), false);
        assert!(!ready);
        assert!(text.starts_with("not ready: storage: disk full: "), "{text}");
        assert!(!text.contains("degraded"), "{text}");

        // Other failures stay fatal whatever the setting.
        let (ready, text) =
            verdict(Err(StorageError::Io("cannot write in /s/spool: Permission denied".into())), Ok(()), true);
        assert!(!ready);
        assert!(text.starts_with("not ready: storage: "), "{text}");
        let (ready, text) = verdict(full(), Err("database is locked".into()), true);
        assert!(!ready);
        assert!(text.starts_with("not ready: metadata: database is locked\ndegraded: disk full"), "{text}");
        assert_eq!(verdict(Ok(()), Ok(()), false), (true, "ready\nstorage: ok (writable)\nmetadata: ok\n".into()));
    }
}
