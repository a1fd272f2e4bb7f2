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
            if let Err(e) = repositories.reschedule(&repo).await {
                tracing::warn!(repository = %repo.name, error = %e, "cannot move a sync schedule on");
                continue;
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
