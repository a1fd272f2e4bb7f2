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
//! fails whatever this node's previous process left waiting or running,
//! and [`Tasks::shutdown`] cancels what is running and waits for it.
//!
//! **Several nodes, one database.** A task runs on the node that accepted
//! it, and is recorded with that node's name. Tasks on one resource run
//! one at a time across every node (the store starts a task only when no
//! other on its resource runs or waits ahead of it; a task whose resource
//! is busy elsewhere asks again every second). A cancel asked on any node
//! is seen by the running node within a second. Every node says it is
//! alive every few seconds ([`HEARTBEAT`]), and fails the tasks of any
//! node silent for longer than `[cluster] lease`: a node killed mid-task
//! has its tasks failed, never left running.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{oneshot, watch, Semaphore};
use tokio::task::JoinError;

pub(crate) use crate::metadata::CreatedResource;
use crate::metadata::{
    now_millis, Metadata, MetadataError, Millis, Page, PageRequest, Task, TaskFilter, TaskProgress, TaskState,
};
use crate::metrics::Metrics;
use crate::telemetry::{self, RequestContext};

/// How often a running task's counters reach the store, at most.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);
/// How often a running task whose counters did not move asks the store
/// whether another node asked to cancel it.
const CANCEL_POLL: Duration = Duration::from_secs(1);
/// How often a waiting task whose resource is busy on another node asks
/// again.
const TURN_POLL: Duration = Duration::from_secs(1);
/// How often this node says it is alive, and looks for silent nodes
/// (those silent past `[cluster] lease`).
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(5);
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
    /// This node's name, recorded with every task it runs.
    node: String,
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
    /// Marks tasks left waiting or running by this node's previous
    /// process failed ("interrupted by a restart"): nothing of theirs runs
    /// any more. Then says, every [`HEARTBEAT`], that `node` is alive, and
    /// fails the tasks of nodes silent past `lease`. `metrics` counts the
    /// tasks that end, by kind and final state.
    pub(crate) async fn start(
        metadata: Metadata,
        (node, lease): (String, Duration),
        max_parallel: usize,
        metrics: Metrics,
    ) -> Result<Tasks, MetadataError> {
        let started_at = now_millis();
        {
            let node = node.clone();
            metadata.run(move |s| s.node_heartbeat(&node, started_at)).await?;
        }
        let interrupted = {
            let node = node.clone();
            metadata.run(move |s| s.interrupt_tasks(&node, INTERRUPTED)).await?
        };
        if interrupted > 0 {
            tracing::warn!(tasks = interrupted, "tasks left unfinished by the previous run are marked failed");
        }
        let (live_count, _) = watch::channel(0);
        let tasks = Tasks {
            inner: Arc::new(Inner {
                metadata,
                node,
                metrics,
                permits: Arc::new(Semaphore::new(max_parallel.max(1))),
                state: Mutex::new(State::default()),
                live_count,
            }),
        };
        tokio::spawn(heartbeats(Arc::downgrade(&tasks.inner), started_at, lease));
        Ok(tasks)
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
            let node = self.inner.node.clone();
            self.inner.metadata.run(move |s| s.create_task(&node, &kind, resource.as_deref(), &params)).await?
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
        let node = self.inner.node.clone();
        if let Err(e) = self.inner.metadata.run(move |s| s.interrupt_tasks(&node, NOT_STOPPED)).await {
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
        self.signal(id, reason);
        Ok(task)
    }

    /// Tells this node's runner of task `id`, if it has one, to stop.
    fn signal(&self, id: u64, reason: CancelReason) {
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
    }

    /// Runs one task's work to its end: started in the store, progress
    /// written as it goes, the outcome recorded.
    async fn execute<F, Fut>(&self, progress: Progress, kind: &str, work: F)
    where
        F: FnOnce(Progress) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<CreatedResource>, TaskFailure>> + Send + 'static,
    {
        let id = progress.id;
        loop {
            match self.metadata.run(move |s| s.start_task(id)).await {
                Ok(Some(_)) => break tracing::info!(task = id, "task started"),
                // Its resource is busy on another node: its turn comes
                // when that task ends, or a cancel ends the wait.
                Ok(None) => {
                    let canceled = tokio::select! {
                        () = tokio::time::sleep(TURN_POLL) => false,
                        () = progress.canceled() => true,
                    };
                    if canceled {
                        let message = progress.reason().map_or("canceled", CancelReason::message);
                        let _ = self.metadata.run(move |s| s.cancel_task(id, message)).await;
                        self.count(kind, TaskState::Canceled);
                        return;
                    }
                }
                // Canceled while it waited (here or on another node).
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
        let mut last_asked = tokio::time::Instant::now();
        let joined = loop {
            tokio::select! {
                joined = &mut handle => break joined,
                _ = ticks.tick() => {
                    let (now_written, asked) = self.write_progress(&progress, written).await;
                    written = now_written;
                    // Counters that do not move still ask, now and then,
                    // whether another node canceled the task.
                    let canceled = match asked {
                        Some(canceled) => {
                            last_asked = tokio::time::Instant::now();
                            canceled
                        }
                        None if last_asked.elapsed() >= CANCEL_POLL => {
                            last_asked = tokio::time::Instant::now();
                            self.metadata.run(move |s| s.cancel_requested(id)).await.unwrap_or(false)
                        }
                        None => false,
                    };
                    if canceled {
                        self.signal(id, CancelReason::Requested);
                    }
                }
            }
        };
        self.write_progress(&progress, written).await;
        let (state, error, created) = outcome(joined, progress.reason());
        self.finish(id, kind, state, error, created).await;
    }

    /// Writes the counters if they changed since change number `written`:
    /// the change number now written, and, if the store was asked, whether
    /// a cancel was requested for the task.
    async fn write_progress(&self, progress: &Progress, written: u64) -> (u64, Option<bool>) {
        let (changes, snapshot) = progress.counters.snapshot();
        if changes == written {
            return (written, None);
        }
        let id = progress.id;
        let (step, log) = progress.counters.take_said();
        match self.metadata.run(move |s| s.task_progress(id, snapshot, step.as_deref(), &log)).await {
            Ok(canceled) => (changes, Some(canceled)),
            Err(e) => {
                tracing::warn!(task = id, error = %e, "cannot record a task's progress");
                (written, None)
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

/// This node's heartbeat, and the sweep of silent nodes' tasks, for as long
/// as the runner exists.
async fn heartbeats(inner: std::sync::Weak<Inner>, started_at: Millis, lease: Duration) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let node = inner.node.clone();
        if let Err(e) = inner.metadata.run(move |s| s.node_heartbeat(&node, started_at)).await {
            tracing::warn!(error = %e, "cannot record this node's heartbeat");
            continue;
        }
        let before = now_millis().saturating_sub(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
        match inner.metadata.run(move |s| s.fail_orphaned_tasks(before)).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(tasks = n, "tasks of a node that stopped answering are marked failed"),
            Err(e) => tracing::warn!(error = %e, "cannot look for tasks of silent nodes"),
        }
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
    /// The step the work is at, and log lines not written yet.
    said: std::sync::Mutex<Said>,
}

#[derive(Default)]
struct Said {
    step: Option<String>,
    /// Since the last write.
    pending: String,
    /// Bytes of log kept in all: past [`MAX_LOG`] the rest is dropped.
    logged: usize,
}

/// A task's log is kept to this many bytes.
const MAX_LOG: usize = 1 << 20;

const NO_TOTAL: u64 = 0;

impl Counters {
    /// The step and the log lines said since the last call.
    fn take_said(&self) -> (Option<String>, String) {
        let mut said = self.said.lock().unwrap_or_else(|p| p.into_inner());
        (said.step.clone(), std::mem::take(&mut said.pending))
    }

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
    /// A handle for work that runs outside any task (a dry run answered
    /// at once): its counts go nowhere and it is never canceled.
    pub(crate) fn untracked() -> Progress {
        // The sender goes at once: the value stays None, never a cancel.
        let (_, cancel) = watch::channel(None);
        Progress { id: 0, counters: Arc::default(), cancel }
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// How many items the work will do, once it knows.
    pub(crate) fn set_total(&self, items: u64) {
        self.counters.items_total.store(items.saturating_add(1), Ordering::Relaxed);
        self.counters.changed();
    }

    /// The work is at `step` now (a build's `STEP 3/7: COPY ...`); it
    /// goes into the log too.
    pub(crate) fn step(&self, step: &str) {
        {
            let mut said = self.counters.said.lock().unwrap_or_else(|p| p.into_inner());
            said.step = Some(step.to_owned());
        }
        self.log(step);
    }

    /// A line for the task's log (kept to 1 MiB; a line saying so ends it).
    pub(crate) fn log(&self, line: &str) {
        {
            let mut said = self.counters.said.lock().unwrap_or_else(|p| p.into_inner());
            if said.logged > MAX_LOG {
                return;
            }
            let line = if said.logged + line.len() > MAX_LOG { "... the log is cut here (1 MiB)" } else { line };
            said.logged += line.len() + 1;
            said.pending.push_str(line);
            said.pending.push('\n');
            if said.logged > MAX_LOG - 64 {
                said.logged = MAX_LOG + 1;
            }
        }
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
