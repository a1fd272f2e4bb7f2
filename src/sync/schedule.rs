//! Starting syncs as tasks: on request (the admin API) and on schedule
//! (each sync repository's `sync_interval`, jitter included). A sync runs
//! as a task of kind `sync` whose resource is the repository, so two syncs
//! of one repository never overlap and different repositories sync in
//! parallel within `[tasks] max_parallel`.

use std::time::Duration;

use super::repositories::SyncRepositories;
use super::run::{Report, SyncError, SyncRequest, Syncer};
use crate::metadata::{now_millis, MetadataError, PageRequest, Task, TaskFilter, TaskState};
use crate::tasks::{CreatedResource, Progress, TaskFailure, Tasks};

/// The task kind of a sync.
pub(crate) const SYNC_TASK: &str = "sync";
/// How often due schedules are looked for.
const TICK: Duration = Duration::from_secs(15);

impl Report for Progress {
    fn set_total(&self, items: u64) {
        Progress::set_total(self, items);
    }
    fn add(&self, items: u64, bytes: u64) {
        Progress::add(self, items, bytes);
    }
    fn is_canceled(&self) -> bool {
        Progress::is_canceled(self)
    }
}

/// Checks the request (a sync repository, an existing remote), then runs
/// the sync as a task; the task as stored, still waiting.
pub(crate) async fn start(tasks: &Tasks, syncer: &Syncer, req: SyncRequest) -> Result<Task, MetadataError> {
    syncer.check(&req).await?;
    let params = serde_json::json!({ "remote": req.remote, "mirror": req.mirror });
    let syncer = syncer.clone();
    let resource = Some(req.repository.clone());
    tasks
        .submit(SYNC_TASK, resource, params, move |progress: Progress| async move {
            tracing::info!(task = progress.id(), repository = %req.repository, remote = %req.remote, mirror = req.mirror, "sync started");
            match syncer.run(&req, &progress).await {
                Ok(Some(number)) => {
                    tracing::info!(repository = %req.repository, remote = %req.remote, version = number, "sync made a new version");
                    syncer.count("new_version");
                    Ok(vec![CreatedResource::RepositoryVersion { repository: req.repository.clone(), number }])
                }
                Ok(None) => {
                    tracing::info!(repository = %req.repository, remote = %req.remote, "sync found nothing new");
                    syncer.count("unchanged");
                    Ok(Vec::new())
                }
                Err(SyncError::Canceled) => {
                    syncer.count("canceled");
                    Err(TaskFailure::Canceled)
                }
                Err(e) => {
                    tracing::warn!(repository = %req.repository, remote = %req.remote, error = %e, "sync failed");
                    syncer.count("failed");
                    Err(TaskFailure::Failed(e.to_string()))
                }
            }
        })
        .await
}

/// Starts the scheduled syncs that are due, forever. A repository whose
/// previous sync is still waiting or running is skipped this round.
pub(crate) async fn run_schedules(tasks: Tasks, syncer: Syncer, repositories: SyncRepositories) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let due = match syncer.metadata().run(|s| s.due_syncs(now_millis())).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read sync schedules");
                continue;
            }
        };
        for repo in due {
            // Every node sees the same due run; the one that moves it on
            // starts it.
            match repositories.claim_schedule(&repo).await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) => {
                    tracing::warn!(repository = %repo.name, error = %e, "cannot move a sync schedule on");
                    continue;
                }
            }
            if busy(&tasks, &repo.name).await {
                tracing::info!(repository = %repo.name, "scheduled sync skipped: the previous one has not finished");
                continue;
            }
            let Some(remote) = repo.remote.clone() else { continue };
            let req = SyncRequest { repository: repo.name.clone(), remote, mirror: repo.sync_mirror };
            match start(&tasks, &syncer, req).await {
                Ok(task) => tracing::info!(repository = %repo.name, task = task.id, "scheduled sync started"),
                Err(e) => tracing::warn!(repository = %repo.name, error = %e, "scheduled sync not started"),
            }
        }
    }
}

/// Whether a sync of `repository` is waiting or running.
async fn busy(tasks: &Tasks, repository: &str) -> bool {
    for state in [TaskState::Waiting, TaskState::Running] {
        let filter = TaskFilter { state: Some(state), kind: Some(SYNC_TASK.into()), resource: Some(repository.into()) };
        match tasks.list(filter, PageRequest { limit: 1, offset: 0 }).await {
            Ok(page) if page.total > 0 => return true,
            Ok(_) => {}
            // Unknown is treated as busy: a skipped round is harmless.
            Err(_) => return true,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::metadata::{Metadata, NewRepository, Remote, SyncPolicy};
    use crate::metrics::Metrics;
    use crate::pullthrough::{PullThrough, Recorder, Upstreams};
    use crate::storage::Storage;
    use crate::sync::Clients;

    /// Long enough for anything that should happen to happen; in paused
    /// time, only reached when the test is failing.
    const PATIENCE: Duration = Duration::from_secs(600);

    fn remote() -> Remote {
        Remote {
            name: "r".into(),
            // Nothing listens there: the sync the schedule starts fails,
            // which is all the same to the schedule.
            url: "http://127.0.0.1:9".into(),
            upstream_name: "team/app".into(),
            include_tags: vec![],
            exclude_tags: vec![],
            policy: SyncPolicy::Immediate,
            credentials: None,
            credentials_from: None,
            tls_verify: true,
            ca_cert: None,
            sigstore: None,
            download_concurrency: None,
            rate_limit: None,
            created_at: 0,
            updated_at: 0,
        }
    }

    fn repository(name: &str, next_sync_at: i64) -> NewRepository {
        NewRepository {
            name: name.into(),
            description: None,
            retain_versions: None,
            remote: Some("r".into()),
            sync_mirror: true,
            sync_interval: Some(3600),
            next_sync_at: Some(next_sync_at),
        }
    }

    async fn syncs_of(tasks: &Tasks, repository: &str) -> Vec<Task> {
        let filter = TaskFilter { state: None, kind: Some(SYNC_TASK.into()), resource: Some(repository.into()) };
        tasks.list(filter, PageRequest { limit: 100, offset: 0 }).await.unwrap().items
    }

    async fn next_sync_at(metadata: &Metadata, name: &str) -> Option<i64> {
        let name = name.to_owned();
        metadata.run(move |s| s.repository(&name)).await.unwrap().unwrap().next_sync_at
    }

    #[tokio::test(start_paused = true)]
    async fn the_schedule_starts_a_due_sync_and_skips_a_repository_whose_sync_is_running() {
        let dir = tempfile::tempdir().unwrap();
        let metadata = Metadata::open(dir.path()).await.unwrap();
        let storage = Storage::open(dir.path()).await.unwrap();
        let metrics = Metrics::new().unwrap();
        let recorder = Recorder::start(metadata.clone());
        let pull = PullThrough::new(Upstreams::new(vec![]), storage, metadata.clone(), recorder, metrics.clone(), 4 << 20);
        let syncer = Syncer::new(metadata.clone(), pull, Clients::new(metadata.clone(), metrics.clone(), vec![]), metrics.clone());
        let tasks = Tasks::start(metadata.clone(), ("test-node".into(), Duration::from_secs(30)), 4, metrics).await.unwrap();
        let repositories = SyncRepositories::new(metadata.clone(), vec![]);

        metadata.run(|s| s.create_remote(&remote())).await.unwrap();
        // Schedules are looked at in order of when they are due: `busy`
        // first, so once `due` has its task, `busy` has had its turn.
        let later = now_millis() + 3_600_000;
        for new in [repository("busy", 1), repository("due", 2), repository("later", later)] {
            metadata.run(move |s| s.create_repository(&new)).await.unwrap();
        }
        // `busy`'s previous sync is still running.
        let running = tasks
            .submit(SYNC_TASK, Some("busy".into()), json!({}), |progress: Progress| async move {
                progress.canceled().await;
                Err(TaskFailure::Canceled)
            })
            .await
            .unwrap();

        let schedule = tokio::spawn(run_schedules(tasks.clone(), syncer.clone(), repositories));
        let started = tokio::time::timeout(PATIENCE, async {
            loop {
                if let Some(task) = syncs_of(&tasks, "due").await.into_iter().next() {
                    return task;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
        .expect("the due repository never got a sync task");
        assert_eq!(started.params, json!({"remote": "r", "mirror": true}), "the repository's remote and mode");

        let busy: Vec<u64> = syncs_of(&tasks, "busy").await.iter().map(|t| t.id).collect();
        assert_eq!(busy, [running.id], "no second sync while the first runs");
        assert!(syncs_of(&tasks, "later").await.is_empty(), "not due yet");
        let now = now_millis();
        for name in ["busy", "due"] {
            let next = next_sync_at(&metadata, name).await.unwrap();
            assert!(next > now, "{name}: a skipped or started round moves the schedule on ({next} <= {now})");
        }
        assert_eq!(next_sync_at(&metadata, "later").await, Some(later));

        // Later rounds start nothing more: nothing is due again.
        tokio::time::sleep(TICK * 4).await;
        assert_eq!(syncs_of(&tasks, "due").await.len(), 1);
        assert_eq!(syncs_of(&tasks, "busy").await.len(), 1);

        schedule.abort();
        tasks.shutdown(Duration::from_secs(1)).await;
    }
}
