//! Readiness (`GET /readyz`): whether this wharf can take traffic. Storage
//! must take a real write (a probe file in the spool, synced) and the
//! metadata database must answer a query; either failing is 503 with the
//! reason. Upstreams are reported, never fatal: a cache whose upstream is
//! down still serves what it holds.
//!
//! Upstream answers are remembered for [`UPSTREAM_RECHECK`], so a probe
//! every few seconds does not become a request to every upstream every few
//! seconds. Liveness (`/healthz`) needs none of this: answering is enough.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::metadata::Metadata;
use crate::storage::Storage;
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
}

/// A readiness answer: whether ready, and the report, one line per check.
pub(crate) struct Report {
    pub(crate) ready: bool,
    pub(crate) text: String,
}

impl Readiness {
    pub(crate) fn new(storage: Storage, metadata: Metadata, upstreams: Vec<Upstream>) -> Readiness {
        Readiness { storage, metadata, upstreams: upstreams.into_iter().map(|u| (u, Mutex::new(None))).collect() }
    }

    pub(crate) async fn check(&self) -> Report {
        let storage = self.storage.probe_writable().await.map_err(|e| e.to_string());
        let metadata = self.metadata.run(|s| s.ping()).await.map_err(|e| e.to_string());
        let ready = storage.is_ok() && metadata.is_ok();
        let mut text = String::new();
        match (&storage, &metadata) {
            (Ok(()), Ok(())) => text.push_str("ready\n"),
            (Err(e), _) => {
                let _ = writeln!(text, "not ready: storage: {e}");
            }
            (_, Err(e)) => {
                let _ = writeln!(text, "not ready: metadata: {e}");
            }
        }
        let _ = writeln!(text, "storage: {}", storage.err().unwrap_or_else(|| "ok (writable)".into()));
        let _ = writeln!(text, "metadata: {}", metadata.err().unwrap_or_else(|| "ok".into()));
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

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    #[tokio::test]
    async fn storage_that_cannot_take_a_write_is_not_ready_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(dir.path()).await.unwrap();
        let metadata = Metadata::open(dir.path()).await.unwrap();
        let readiness = Readiness::new(storage, metadata, Vec::new());
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
}
