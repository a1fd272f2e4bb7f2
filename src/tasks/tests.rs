//! The runner with fake work: ordering per resource, the global limit,
//! cancel in each state, panics, progress, restarts and shutdown.

use std::sync::atomic::AtomicUsize;
use std::sync::Mutex as StdMutex;

use serde_json::json;
use tokio::sync::{mpsc, Notify};

use super::*;

/// Long enough for anything that should happen to happen on a slow
/// machine; only reached when a test is failing.
const PATIENCE: Duration = Duration::from_secs(10);

async fn runner(max_parallel: usize) -> (tempfile::TempDir, Metadata, Tasks) {
    let dir = tempfile::tempdir().unwrap();
    let metadata = Metadata::open(dir.path()).await.unwrap();
    let tasks = Tasks::start(metadata.clone(), ("test-node".into(), Duration::from_secs(30)), max_parallel, crate::metrics::Metrics::new().unwrap()).await.unwrap();
    (dir, metadata, tasks)
}

impl Tasks {
    fn is_live(&self, id: u64) -> bool {
        self.inner.lock().live.contains_key(&id)
    }

    /// The task once its runner has ended.
    async fn settled(&self, id: u64) -> Task {
        let mut changes = self.inner.live_count.subscribe();
        let wait = async {
            while self.is_live(id) {
                changes.changed().await.unwrap();
            }
        };
        tokio::time::timeout(PATIENCE, wait).await.unwrap_or_else(|_| panic!("task {id} never ended"));
        self.get(id).await.unwrap().unwrap()
    }

    async fn states(&self) -> Vec<(u64, TaskState)> {
        let listed = self.list(TaskFilter::default(), PageRequest::default()).await.unwrap();
        let mut states: Vec<_> = listed.items.iter().map(|t| (t.id, t.state)).collect();
        states.sort_by_key(|(id, _)| *id);
        states
    }
}

/// Work that says it started, then waits to be released by a permit of
/// `release` (or canceled).
fn held(started: mpsc::UnboundedSender<u64>, release: Arc<Semaphore>) -> impl FnOnce(Progress) -> BoxedWork {
    move |progress: Progress| -> BoxedWork {
        Box::pin(async move {
            started.send(progress.id()).unwrap();
            tokio::select! {
                permit = release.acquire() => {
                    permit.unwrap().forget();
                    Ok(Vec::new())
                }
                () = progress.canceled() => Err(TaskFailure::Canceled),
            }
        })
    }
}

fn released() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(0))
}

type BoxedWork = std::pin::Pin<Box<dyn Future<Output = Result<Vec<CreatedResource>, TaskFailure>> + Send>>;

async fn next(started: &mut mpsc::UnboundedReceiver<u64>) -> u64 {
    tokio::time::timeout(PATIENCE, started.recv()).await.expect("a task should start").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_on_one_resource_run_one_at_a_time_in_submission_order() {
    let (_d, _m, tasks) = runner(4).await;
    let log = Arc::new(StdMutex::new(Vec::new()));
    let mut ids = Vec::new();
    for i in 0..5 {
        let log = log.clone();
        let t = tasks
            .submit("sync", Some("team/app".into()), json!({"n": i}), move |_| async move {
                log.lock().unwrap().push(format!("start {i}"));
                // Long enough for a wrongly started next task to show.
                tokio::time::sleep(Duration::from_millis(20)).await;
                log.lock().unwrap().push(format!("end {i}"));
                Ok(Vec::new())
            })
            .await
            .unwrap();
        assert_eq!(t.state, TaskState::Waiting);
        ids.push(t.id);
    }
    for id in &ids {
        assert_eq!(tasks.settled(*id).await.state, TaskState::Completed);
    }
    let want: Vec<String> = (0..5).flat_map(|i| [format!("start {i}"), format!("end {i}")]).collect();
    assert_eq!(*log.lock().unwrap(), want);
    assert!(tasks.inner.lock().queues.is_empty(), "the resource's entry goes with its last task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tasks_on_different_resources_run_at_once_up_to_the_limit() {
    let (_d, _m, tasks) = runner(2).await;
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let release = released();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut ids = Vec::new();
    for r in ["a", "b", "c", "d"] {
        let (started_tx, release, running, peak) = (started_tx.clone(), release.clone(), running.clone(), peak.clone());
        let t = tasks
            .submit("sync", Some(r.into()), json!({}), move |progress| async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                let out = held(started_tx, release)(progress).await;
                running.fetch_sub(1, Ordering::SeqCst);
                out
            })
            .await
            .unwrap();
        ids.push(t.id);
    }
    let first = [next(&mut started).await, next(&mut started).await];
    // Two hold the two permits: the other two cannot have started.
    let states = tasks.states().await;
    let count = |s: TaskState| states.iter().filter(|(_, st)| *st == s).count();
    assert_eq!((count(TaskState::Running), count(TaskState::Waiting)), (2, 2), "{states:?}");
    for id in first {
        assert!(states.contains(&(id, TaskState::Running)), "{states:?}");
    }
    release.add_permits(4);
    for id in ids {
        assert_eq!(tasks.settled(id).await.state, TaskState::Completed);
    }
    assert_eq!(peak.load(Ordering::SeqCst), 2, "never more than max_parallel at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiting_task_is_canceled_at_once_and_its_work_never_runs() {
    let (_d, _m, tasks) = runner(1).await;
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let release = released();
    let first = tasks.submit("sync", Some("a".into()), json!({}), held(started_tx, release.clone())).await.unwrap();
    next(&mut started).await;
    // Waiting for the permit (another resource) and for its resource's turn.
    let ran = Arc::new(AtomicUsize::new(0));
    let mut waiting = Vec::new();
    for r in ["b", "a"] {
        let ran = ran.clone();
        let t = tasks
            .submit("sync", Some(r.into()), json!({}), move |_| async move {
                ran.fetch_add(1, Ordering::SeqCst);
                Ok(Vec::new())
            })
            .await
            .unwrap();
        waiting.push(t.id);
    }
    for id in &waiting {
        let canceled = tasks.cancel(*id).await.unwrap();
        assert_eq!((canceled.state, canceled.error.as_deref()), (TaskState::Canceled, Some("canceled by request")));
        assert!(canceled.finished_at.is_some());
    }
    // A task after the canceled one on the same resource still gets its turn.
    let after = tasks.submit("sync", Some("a".into()), json!({}), |_| async { Ok(Vec::new()) }).await.unwrap();
    release.add_permits(1);
    assert_eq!(tasks.settled(first.id).await.state, TaskState::Completed);
    for id in &waiting {
        assert_eq!(tasks.settled(*id).await.state, TaskState::Canceled, "stays canceled");
    }
    assert_eq!(tasks.settled(after.id).await.state, TaskState::Completed);
    assert_eq!(ran.load(Ordering::SeqCst), 0, "canceled work never runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_running_task_stops_at_its_next_check_and_ends_canceled() {
    let (_d, _m, tasks) = runner(2).await;
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let t = tasks.submit("sync", None, json!({}), held(started_tx, released())).await.unwrap();
    next(&mut started).await;
    let asked = tasks.cancel(t.id).await.unwrap();
    assert_eq!(asked.state, TaskState::Running, "still running until the work returns");
    let done = tasks.settled(t.id).await;
    assert_eq!((done.state, done.error.as_deref()), (TaskState::Canceled, Some("canceled by request")));

    // Finished: a conflict. Unknown: not found.
    assert!(matches!(tasks.cancel(t.id).await, Err(MetadataError::Conflict(_))));
    assert!(matches!(tasks.cancel(t.id + 100).await, Err(MetadataError::NotFound(_))));
    let completed = tasks.submit("gc", None, json!({}), |_| async { Ok(Vec::new()) }).await.unwrap();
    assert_eq!(tasks.settled(completed.id).await.state, TaskState::Completed);
    assert!(matches!(tasks.cancel(completed.id).await, Err(MetadataError::Conflict(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn work_that_returns_after_a_cancel_ends_canceled_and_keeps_what_it_made() {
    let (_d, _m, tasks) = runner(2).await;
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let made = CreatedResource::RepositoryVersion { repository: "team/app".into(), number: 4 };
    let t = {
        let (release, made) = (release.clone(), made.clone());
        tasks
            .submit("sync", None, json!({}), move |p| async move {
                started_tx.send(p.id()).unwrap();
                // Ignores the cancel: finishes what it does.
                release.notified().await;
                Ok(vec![made])
            })
            .await
            .unwrap()
    };
    next(&mut started).await;
    tasks.cancel(t.id).await.unwrap();
    release.notify_one();
    let done = tasks.settled(t.id).await;
    assert_eq!((done.state, done.created_resources), (TaskState::Canceled, vec![made]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn completed_and_failed_work_is_recorded_with_what_it_made_or_why_it_failed() {
    let (_d, _m, tasks) = runner(2).await;
    let made = vec![CreatedResource::RepositoryVersion { repository: "team/app".into(), number: 2 }];
    let ok = {
        let made = made.clone();
        tasks.submit("sync", Some("team/app".into()), json!({"remote": "quay"}), move |_| async move { Ok(made) })
    }
    .await
    .unwrap();
    let done = tasks.settled(ok.id).await;
    assert_eq!((done.state, done.error, done.created_resources), (TaskState::Completed, None, made));
    assert_eq!(done.params, json!({"remote": "quay"}));
    assert!(done.started_at.is_some() && done.finished_at >= done.started_at);

    let bad = tasks
        .submit("sync", None, json!({}), |_| async { Err(TaskFailure::Failed("remote said 401".into())) })
        .await
        .unwrap();
    let done = tasks.settled(bad.id).await;
    assert_eq!((done.state, done.error.as_deref()), (TaskState::Failed, Some("remote said 401")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn work_that_panics_ends_failed_and_frees_its_turn() {
    let (_d, _m, tasks) = runner(1).await;
    let boom = tasks
        .submit("sync", Some("a".into()), json!({}), |_| async {
            if true {
                panic!("the remote sent nonsense");
            }
            Ok(Vec::new())
        })
        .await
        .unwrap();
    // Panicking before it even returns a future is the same.
    let early = tasks
        .submit("sync", Some("a".into()), json!({}), |_| -> BoxedWork { panic!("bad parameters") })
        .await
        .unwrap();
    let after = tasks.submit("sync", Some("a".into()), json!({}), |_| async { Ok(Vec::new()) }).await.unwrap();
    let done = tasks.settled(boom.id).await;
    assert_eq!((done.state, done.error.as_deref()), (TaskState::Failed, Some("internal error: the remote sent nonsense")));
    let done = tasks.settled(early.id).await;
    assert_eq!((done.state, done.error.as_deref()), (TaskState::Failed, Some("internal error: bad parameters")));
    assert_eq!(tasks.settled(after.id).await.state, TaskState::Completed, "the resource and the permit are free again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn progress_reaches_the_store_within_a_second_and_once_more_at_the_end() {
    let (_d, _m, tasks) = runner(1).await;
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let t = {
        let release = release.clone();
        tasks
            .submit("sync", None, json!({}), move |p| async move {
                p.set_total(10);
                for _ in 0..3 {
                    p.add(1, 4115);
                }
                started_tx.send(p.id()).unwrap();
                release.notified().await;
                p.add(7, 1);
                Ok(Vec::new())
            })
            .await
            .unwrap()
    };
    assert_eq!(t.progress, TaskProgress::default());
    next(&mut started).await;
    let want = TaskProgress { items_done: 3, items_total: Some(10), bytes_done: 12345 };
    let seen = async {
        loop {
            if tasks.get(t.id).await.unwrap().unwrap().progress == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(1), seen).await.expect("progress shown within a second");
    release.notify_one();
    let done = tasks.settled(t.id).await;
    assert_eq!(done.progress, TaskProgress { items_done: 10, items_total: Some(10), bytes_done: 12346 });
}

#[test]
fn counters_know_an_unset_total_from_a_zero_total() {
    let c = Counters::default();
    assert_eq!(c.snapshot(), (0, TaskProgress::default()));
    let (tx, rx) = watch::channel(None);
    let p = Progress { id: 1, counters: Arc::new(c), cancel: rx };
    p.set_total(0);
    p.add(2, 3);
    assert_eq!(p.counters.snapshot(), (2, TaskProgress { items_done: 2, items_total: Some(0), bytes_done: 3 }));
    assert!(!p.is_canceled());
    tx.send_replace(Some(CancelReason::Requested));
    assert!(p.is_canceled());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_marks_what_the_last_process_left_unfinished_failed() {
    let dir = tempfile::tempdir().unwrap();
    let metadata = Metadata::open(dir.path()).await.unwrap();
    let (waiting, running, done) = metadata
        .run(|s| {
            let waiting = s.create_task("test-node", "sync", Some("a"), &json!({}))?;
            let running = s.create_task("test-node", "sync", Some("b"), &json!({}))?;
            s.start_task(running.id)?;
            let elsewhere = s.create_task("other-node", "sync", Some("c"), &json!({}))?;
            s.start_task(elsewhere.id)?;
            let done = s.create_task("test-node", "gc", None, &json!({}))?;
            s.start_task(done.id)?;
            let done = s.finish_task(done.id, TaskState::Completed, None, &[])?;
            Ok((waiting, running, done))
        })
        .await
        .unwrap();
    let tasks = Tasks::start(metadata, ("test-node".into(), Duration::from_secs(30)), 4, crate::metrics::Metrics::new().unwrap()).await.unwrap();
    for id in [waiting.id, running.id] {
        let t = tasks.get(id).await.unwrap().unwrap();
        assert_eq!((t.state, t.error.as_deref()), (TaskState::Failed, Some("interrupted by a restart")));
    }
    assert_eq!(tasks.get(done.id).await.unwrap().unwrap(), done, "finished tasks stay as they were");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_cancels_running_and_waiting_tasks_and_refuses_new_work() {
    let (_d, _m, tasks) = runner(1).await;
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let running = tasks.submit("sync", None, json!({}), held(started_tx, released())).await.unwrap();
    next(&mut started).await;
    let waiting = tasks.submit("sync", None, json!({}), |_| async { Ok(Vec::new()) }).await.unwrap();
    tasks.shutdown(PATIENCE).await;
    for id in [running.id, waiting.id] {
        let t = tasks.get(id).await.unwrap().unwrap();
        assert_eq!((t.state, t.error.as_deref()), (TaskState::Canceled, Some("canceled: wharf shut down")), "{id}");
        assert!(!tasks.is_live(id));
    }
    let late = tasks.submit("sync", None, json!({}), |_| async { Ok(Vec::new()) }).await.unwrap();
    assert_eq!((late.state, late.error.as_deref()), (TaskState::Canceled, Some("canceled: wharf shut down")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn work_that_ignores_a_shutdown_is_marked_failed_when_the_grace_runs_out() {
    let (_d, _m, tasks) = runner(1).await;
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let stuck = tasks
        .submit("sync", None, json!({}), move |p| async move {
            started_tx.send(p.id()).unwrap();
            std::future::pending::<()>().await;
            Ok(Vec::new())
        })
        .await
        .unwrap();
    next(&mut started).await;
    tasks.shutdown(Duration::from_millis(100)).await;
    let t = tasks.get(stuck.id).await.unwrap().unwrap();
    assert_eq!((t.state, t.error.as_deref()), (TaskState::Failed, Some(NOT_STOPPED)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ended_tasks_are_counted_by_kind_and_final_state() {
    let (_d, _m, tasks) = runner(1).await;
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let release = released();
    let first = tasks.submit("sync", Some("a".into()), json!({}), held(started_tx, release.clone())).await.unwrap();
    next(&mut started).await;
    // Both wait behind the first (one at a time); one is canceled there.
    let waiting = tasks.submit("other", None, json!({}), |_| async { Ok(Vec::new()) }).await.unwrap();
    let failing =
        tasks.submit("sync", None, json!({}), |_| async { Err(TaskFailure::Failed("broken".into())) }).await.unwrap();
    tasks.cancel(waiting.id).await.unwrap();
    release.add_permits(1);
    for id in [first.id, waiting.id, failing.id] {
        tasks.settled(id).await;
    }
    let text = tasks.inner.metrics.render();
    for (kind, state) in [("sync", "completed"), ("other", "canceled"), ("sync", "failed")] {
        let line = format!("wharf_tasks_total{{kind=\"{kind}\",state=\"{state}\"}} 1");
        assert!(text.contains(&line), "{line} in\n{text}");
    }
}

#[tokio::test]
async fn a_tasks_work_runs_with_the_task_as_its_request_id() {
    let (_d, _m, tasks) = runner(1).await;
    let seen = Arc::new(StdMutex::new(String::new()));
    let kept = seen.clone();
    let task = tasks
        .submit("sync", None, json!({}), move |_| async move {
            *kept.lock().unwrap() = crate::telemetry::log_id();
            Ok(Vec::new())
        })
        .await
        .unwrap();
    tasks.settled(task.id).await;
    assert_eq!(*seen.lock().unwrap(), format!("task-{}", task.id));
}

#[test]
fn steps_and_log_lines_are_taken_once_and_the_log_is_kept_to_its_bound() {
    let (_tx, rx) = watch::channel(None);
    let p = Progress { id: 1, counters: Arc::default(), cancel: rx };
    p.step("STEP 1/2: FROM scratch");
    p.log("a note");
    assert_eq!(p.counters.take_said(), (Some("STEP 1/2: FROM scratch".into()), "STEP 1/2: FROM scratch\na note\n".into()));
    assert_eq!(p.counters.take_said(), (Some("STEP 1/2: FROM scratch".into()), String::new()), "the step stays, the lines went");
    assert_eq!(p.counters.snapshot().0, 2, "each is a change to write");
    let line = "x".repeat(1000);
    for _ in 0..2000 {
        p.log(&line);
    }
    let (_, log) = p.counters.take_said();
    assert!(log.len() <= MAX_LOG, "{}", log.len());
    assert!(log.ends_with("... the log is cut here (1 MiB)\n"), "{}", &log[log.len() - 80..]);
    p.log("after the cut");
    assert_eq!(p.counters.take_said().1, "");
}
