//! Background tasks: work that outlives the request that asked for it (a
//! repository sync, storage gc and verify; later import), recorded in the metadata
//! store so the admin API can show its progress and outcome.
//!
//! Owns when a task runs: at most `[tasks] max_parallel` at once, and one
//! at a time per resource, in submission order. Owns its bookkeeping too:
//! progress counters (persisted every 500 ms, not per update), cancel, the
//! final state. Knows nothing of what the work does, nor of HTTP; the work
//! is a closure handed to [`Tasks::submit`].
//!
//! **A finished task never changes; a restart never leaves a task
//! running.** The store only updates unfinished rows; [`Tasks::start`]
//! fails whatever a previous process left waiting or running, and
//! [`Tasks::shutdown`] cancels what is running and waits for it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{oneshot, watch, Semaphore};
use tokio::task::JoinError;

pub(crate) use crate::metadata::CreatedResource;
use crate::metadata::{Metadata, MetadataError, Page, PageRequest, Task, TaskFilter, TaskProgress, TaskState};
use crate::metrics::Metrics;
use crate::telemetry::{self, RequestContext};

/// How often a running task's counters reach the store, at most.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);
/// The error of tasks a previous process left unfinished.
const INTERRUPTED: &str = "interrupted by a restart";
/// The error of tasks still running when the shutdown grace ran out.
const NOT_STOPPED: &str = "interrupted: wharf shut down before the task stopped";

/// Why work did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TaskFailure {
    /// The work saw [`Progress::is_canceled`] and stopped.
    Canceled,
    /// The work failed; the message is the task's error, for an operator.
    Failed(String),
}

/// Who asked a task to stop; its message becomes the task's error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CancelReason {
    Requested,
    Shutdown,
}

impl CancelReason {
    fn message(self) -> &'static str {
        match self {
            CancelReason::Requested => "canceled by request",
            CancelReason::Shutdown => "canceled: wharf shut down",
        }
    }
}

/// The task runner. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Tasks {
    inner: Arc<Inner>,
}

struct Inner {
    metadata: Metadata,
    metrics: Metrics,
    /// The global limit: a task holds a permit while its work runs. An
    /// async semaphore, as tasks wait for a turn for as long as it takes.
    permits: Arc<Semaphore>,
    // A std mutex: held only for a map operation, never across an await.
    state: Mutex<State>,
    /// How many tasks are live; replaced on every change, so a waiter
    /// wakes whenever one ends. Shutdown waits for zero.
    live_count: watch::Sender<usize>,
}

#[derive(Default)]
struct State {
    /// Tasks of this process that have not ended, and how to stop each.
    live: HashMap<u64, watch::Sender<Option<CancelReason>>>,
    /// Per resource, the last task submitted on it and the signal its
    /// runner gives by ending. The next task submitted on the resource
    /// takes that signal and waits for it: a chain that hands the turn
    /// from each task to the next one exactly in submission order. (An
    /// async mutex per resource would order its waiters by when their
    /// spawned runners first poll it, which is not the submission order.)
    /// The last task of a chain removes its entry when it ends.
    queues: HashMap<String, Turn>,
    /// Set by shutdown: a task submitted after it is canceled at once.
    closed: bool,
}

struct Turn {
    task: u64,
    ended: oneshot::Receiver<()>,
}

impl Tasks {
    /// Marks tasks left waiting or running by a previous process failed
    /// ("interrupted by a restart"): nothing of theirs runs any more.
    /// `metrics` counts the tasks that end, by kind and final state.
    pub(crate) async fn start(metadata: Metadata, max_parallel: usize, metrics: Metrics) -> Result<Tasks, MetadataError> {
        let interrupted = metadata.run(|s| s.interrupt_tasks(INTERRUPTED)).await?;
        if interrupted > 0 {
            tracing::warn!(tasks = interrupted, "tasks left unfinished by the previous run are marked failed");
        }
        let (live_count, _) = watch::channel(0);
        Ok(Tasks {
            inner: Arc::new(Inner {
                metadata,
                metrics,
                permits: Arc::new(Semaphore::new(max_parallel.max(1))),
                state: Mutex::new(State::default()),
                live_count,
            }),
        })
    }

    /// Stores a waiting task and spawns it. Tasks with the same `resource`
    /// run one at a time in submission order; at most `max_parallel` run
    /// at once overall. The work gets a [`Progress`] to report through and
    /// to watch for a cancel; what it returns decides the final state.
    pub(crate) async fn submit<F, Fut>(
        &self,
        kind: &str,
        resource: Option<String>,
        params: serde_json::Value,
        work: F,
    ) -> Result<Task, MetadataError>
    where
        F: FnOnce(Progress) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<CreatedResource>, TaskFailure>> + Send + 'static,
    {
        let task = {
            let (kind, resource) = (kind.to_owned(), resource.clone());
            self.inner.metadata.run(move |s| s.create_task(&kind, resource.as_deref(), &params)).await?
        };
        let id = task.id;
        let (cancel, cancel_seen) = watch::channel(None);
        let (turn, ended) = oneshot::channel();
        let previous = {
            let mut state = self.inner.lock();
            if state.closed {
                None
            } else {
                state.live.insert(id, cancel);
                self.inner.live_count.send_replace(state.live.len());
                let previous = resource
                    .as_ref()
                    .and_then(|r| state.queues.insert(r.clone(), Turn { task: id, ended }))
                    .map(|t| t.ended);
                Some(previous)
            }
        };
        let Some(previous) = previous else {
            let message = CancelReason::Shutdown.message();
            self.inner.count(&task.kind, TaskState::Canceled);
            return self.inner.metadata.run(move |s| s.cancel_task(id, message)).await;
        };
        let progress = Progress { id, counters: Arc::new(Counters::default()), cancel: cancel_seen };
        tracing::info!(task = id, kind = %task.kind, resource = ?task.resource, "task submitted");
        let inner = self.inner.clone();
        let kind = task.kind.clone();
        tokio::spawn(async move {
            if let Some(previous) = previous {
                // Resolves when the previous task's runner ends, however
                // it ends (an error is its sender dropped: the same).
                let _ = previous.await;
            }
            // Waiting for the global turn gives up on a cancel; waiting
            // for the resource's turn above cannot, or the next task on
            // the resource would start while an earlier one still runs.
            let permit = tokio::select! {
                permit = inner.permits.clone().acquire_owned() => permit.ok(),
                () = progress.canceled() => None,
            };
            if let Some(permit) = permit {
                inner.execute(progress, &kind, work).await;
                drop(permit);
            } else {
                // Canceled while it waited for a turn.
                inner.count(&kind, TaskState::Canceled);
            }
            drop(turn);
            inner.forget(id, resource.as_deref());
        });
        Ok(task)
    }

    pub(crate) async fn get(&self, id: u64) -> Result<Option<Task>, MetadataError> {
        self.inner.metadata.run(move |s| s.task(id)).await
    }

    /// Tasks matching `filter`, newest first.
    pub(crate) async fn list(&self, filter: TaskFilter, page: PageRequest) -> Result<Page<Task>, MetadataError> {
        self.inner.metadata.run(move |s| s.tasks(&filter, page)).await
    }

    /// Waiting: canceled at once. Running: its [`Progress`] sees the cancel
    /// and the work stops at its next check; the state becomes `canceled`
    /// when it returns (the task returned here is still `running`).
    /// Finished: `Conflict`. Unknown: `NotFound`.
    pub(crate) async fn cancel(&self, id: u64) -> Result<Task, MetadataError> {
        self.inner.cancel(id, CancelReason::Requested).await
    }

    /// On shutdown: cancels every task of this process (running work stops
    /// at its next check) and waits up to `grace` for them to end. Tasks
    /// still running after that are marked failed, so the record never
    /// shows them running once wharf is gone. A task submitted afterwards
    /// is recorded canceled and never runs.
    pub(crate) async fn shutdown(&self, grace: Duration) {
        let ids: Vec<u64> = {
            let mut state = self.inner.lock();
            state.closed = true;
            state.live.keys().copied().collect()
        };
        for id in ids {
            match self.inner.cancel(id, CancelReason::Shutdown).await {
                // Conflict: it ended meanwhile.
                Ok(_) | Err(MetadataError::Conflict(_) | MetadataError::NotFound(_)) => {}
                Err(e) => tracing::warn!(task = id, error = %e, "cannot cancel a task at shutdown"),
            }
        }
        let mut live = self.inner.live_count.subscribe();
        if tokio::time::timeout(grace, live.wait_for(|n| *n == 0)).await.is_ok() {
            return;
        }
        tracing::warn!(grace = ?grace, "tasks did not stop in time; marking them failed");
        if let Err(e) = self.inner.metadata.run(|s| s.interrupt_tasks(NOT_STOPPED)).await {
            tracing::warn!(error = %e, "cannot mark unfinished tasks failed; the next start will");
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section is a map operation that cannot panic
        // half-way, so a poisoned lock still guards consistent maps.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn cancel(&self, id: u64, reason: CancelReason) -> Result<Task, MetadataError> {
        // The store decides first, atomically against the task starting:
        // a waiting task is canceled there and can no longer start; a
        // running one is left to its runner, told below.
        let message = reason.message();
        let task = self.metadata.run(move |s| s.cancel_task(id, message)).await?;
        if let Some(cancel) = self.lock().live.get(&id) {
            // The first reason given is the one recorded.
            cancel.send_if_modified(|c| {
                if c.is_some() {
                    return false;
                }
                *c = Some(reason);
                true
            });
        }
        Ok(task)
    }

    /// Runs one task's work to its end: started in the store, progress
    /// written as it goes, the outcome recorded.
    async fn execute<F, Fut>(&self, progress: Progress, kind: &str, work: F)
    where
        F: FnOnce(Progress) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<CreatedResource>, TaskFailure>> + Send + 'static,
    {
        let id = progress.id;
        match self.metadata.run(move |s| s.start_task(id)).await {
            Ok(_) => tracing::info!(task = id, "task started"),
            // Canceled while it waited: nothing to run.
            Err(MetadataError::Conflict(_)) => {
                self.count(kind, TaskState::Canceled);
                return;
            }
            Err(e) => {
                tracing::warn!(task = id, error = %e, "cannot start a task");
                let error = Some(format!("internal error: cannot start: {e}"));
                self.finish(id, kind, TaskState::Failed, error, Vec::new()).await;
                return;
            }
        }
        // The work runs as its own tokio task, so a panic in it ends up
        // here as a JoinError rather than taking the runner down with it.
        // Its upstream requests carry `task-<id>` as their X-Request-Id.
        let worker = progress.clone();
        let context = Some(RequestContext::for_task(id));
        let mut handle = tokio::spawn(telemetry::scope(context, async move { work(worker).await }));
        let mut ticks = tokio::time::interval(PROGRESS_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await; // The first tick is immediate.
        let mut written = 0;
        let joined = loop {
            tokio::select! {
                joined = &mut handle => break joined,
                _ = ticks.tick() => written = self.write_progress(&progress, written).await,
            }
        };
        self.write_progress(&progress, written).await;
        let (state, error, created) = outcome(joined, progress.reason());
        self.finish(id, kind, state, error, created).await;
    }

    /// Writes the counters if they changed since change number `written`;
    /// the change number now written.
    async fn write_progress(&self, progress: &Progress, written: u64) -> u64 {
        let (changes, snapshot) = progress.counters.snapshot();
        if changes == written {
            return written;
        }
        let id = progress.id;
        match self.metadata.run(move |s| s.task_progress(id, snapshot)).await {
            Ok(_) => changes,
            Err(e) => {
                tracing::warn!(task = id, error = %e, "cannot record a task's progress");
                written
            }
        }
    }

    async fn finish(&self, id: u64, kind: &str, state: TaskState, error: Option<String>, created: Vec<CreatedResource>) {
        let result = {
            let error = error.clone();
            self.metadata.run(move |s| s.finish_task(id, state, error.as_deref(), &created)).await
        };
        match result {
            Ok(_) => tracing::info!(task = id, state = state.as_str(), error = error.as_deref(), "task finished"),
            // Ended already: the shutdown grace ran out and marked it failed.
            Err(MetadataError::Conflict(_)) => {
                self.count(kind, TaskState::Failed);
                return;
            }
            Err(e) => tracing::warn!(task = id, state = state.as_str(), error = %e, "cannot record how a task ended"),
        }
        self.count(kind, state);
    }

    /// Counts a task that ended, in `wharf_tasks_total`.
    fn count(&self, kind: &str, state: TaskState) {
        self.metrics.tasks.with_label_values(&[kind, state.as_str()]).inc();
    }

    /// The task's runner has ended: it is no longer live, and the last
    /// task of its resource's chain takes the chain's entry with it.
    fn forget(&self, id: u64, resource: Option<&str>) {
        let mut state = self.lock();
        state.live.remove(&id);
        if let Some(r) = resource {
            if state.queues.get(r).is_some_and(|turn| turn.task == id) {
                state.queues.remove(r);
            }
        }
        self.live_count.send_replace(state.live.len());
    }
}

/// The final state, error and created resources of work that ended as
/// `joined`, given whether it was asked to stop.
fn outcome(
    joined: Result<Result<Vec<CreatedResource>, TaskFailure>, JoinError>,
    canceled: Option<CancelReason>,
) -> (TaskState, Option<String>, Vec<CreatedResource>) {
    match joined {
        // Work that returns after a cancel ends canceled, whatever it
        // says; what it made is still recorded.
        Ok(Ok(created)) => match canceled {
            Some(reason) => (TaskState::Canceled, Some(reason.message().to_owned()), created),
            None => (TaskState::Completed, None, created),
        },
        Ok(Err(TaskFailure::Canceled)) => {
            (TaskState::Canceled, Some(canceled.map_or("canceled", CancelReason::message).to_owned()), Vec::new())
        }
        Ok(Err(TaskFailure::Failed(message))) => match canceled {
            Some(reason) => (TaskState::Canceled, Some(format!("{}: {message}", reason.message())), Vec::new()),
            None => (TaskState::Failed, Some(message), Vec::new()),
        },
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "the task panicked".to_owned());
            (TaskState::Failed, Some(format!("internal error: {what}")), Vec::new())
        }
        Err(e) => (TaskState::Failed, Some(format!("internal error: the task was stopped: {e}")), Vec::new()),
    }
}

/// A running task's handle on its own progress and cancel. Cheap to clone;
/// updates are atomic counters, written to the store by the runner.
#[derive(Clone)]
pub(crate) struct Progress {
    id: u64,
    counters: Arc<Counters>,
    cancel: watch::Receiver<Option<CancelReason>>,
}

/// `changes` counts updates, so the runner writes only when something
/// moved.
#[derive(Default)]
struct Counters {
    items_done: AtomicU64,
    /// The total plus one; [`NO_TOTAL`] until the work sets it.
    items_total: AtomicU64,
    bytes_done: AtomicU64,
    changes: AtomicU64,
}

const NO_TOTAL: u64 = 0;

impl Counters {
    fn snapshot(&self) -> (u64, TaskProgress) {
        // Read the change count first: a change racing the snapshot bumps
        // it again, so it is written next time.
        let changes = self.changes.load(Ordering::Acquire);
        let total = self.items_total.load(Ordering::Relaxed);
        let progress = TaskProgress {
            items_done: self.items_done.load(Ordering::Relaxed),
            items_total: (total != NO_TOTAL).then(|| total - 1),
            bytes_done: self.bytes_done.load(Ordering::Relaxed),
        };
        (changes, progress)
    }

    fn changed(&self) {
        self.changes.fetch_add(1, Ordering::Release);
    }
}

impl Progress {
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// How many items the work will do, once it knows.
    pub(crate) fn set_total(&self, items: u64) {
        self.counters.items_total.store(items.saturating_add(1), Ordering::Relaxed);
        self.counters.changed();
    }

    /// `items` more items done, `bytes` more bytes moved.
    pub(crate) fn add(&self, items: u64, bytes: u64) {
        self.counters.items_done.fetch_add(items, Ordering::Relaxed);
        self.counters.bytes_done.fetch_add(bytes, Ordering::Relaxed);
        self.counters.changed();
    }

    pub(crate) fn is_canceled(&self) -> bool {
        self.cancel.borrow().is_some()
    }

    /// Resolves once the task is asked to stop; for `tokio::select!`
    /// around the work's awaits.
    pub(crate) async fn canceled(&self) {
        let mut cancel = self.cancel.clone();
        if cancel.wait_for(Option::is_some).await.is_err() {
            // The runner is gone without a cancel: none will come.
            std::future::pending::<()>().await;
        }
    }

    fn reason(&self) -> Option<CancelReason> {
        *self.cancel.borrow()
    }
}

#[cfg(test)]
mod tests;
