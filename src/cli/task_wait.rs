//! Waiting for a background task to finish, as `wharf task show --wait`
//! does and a command that starts a task (a sync) will: poll
//! `GET /api/v1/tasks/{id}` until the task has finished, optionally drawing
//! a one-line progress bar on stderr, and say how it ended. Speaks only
//! the admin API, through `admin_client`.

use std::fmt;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use http::Method;
use serde_json::Value;

use super::admin_client::{api_path, one_line, AdminClient, AdminError, Reply};

/// How often the task is asked for: often enough that a bar moves
/// smoothly, rarely enough to cost the server nothing.
const POLL_INTERVAL: Duration = Duration::from_millis(300);
/// The bar's width in characters, between its brackets.
const BAR_WIDTH: usize = 24;

/// A task that finished without completing.
#[derive(Debug)]
pub(crate) struct TaskEnded {
    pub(crate) id: u64,
    pub(crate) how: Ending,
    /// The task's `error`, on one line.
    pub(crate) message: Option<String>,
    /// The last answer: the finished task.
    pub(crate) task: Reply,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    Failed,
    Canceled,
}

impl fmt::Display for TaskEnded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = match self.how {
            Ending::Failed => "failed",
            Ending::Canceled => "was canceled",
        };
        match &self.message {
            Some(message) => write!(f, "task {} {how}: {message}", self.id),
            None => write!(f, "task {} {how}", self.id),
        }
    }
}

impl std::error::Error for TaskEnded {}

/// Why waiting did not end in a completed task.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WaitError {
    /// The admin API could not be asked, or refused (an unknown task: 404).
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The task finished failed or canceled.
    #[error(transparent)]
    Ended(#[from] TaskEnded),
}

/// Polls task `id` (every 10 ms for a second, then twice as long each
/// time up to every 300 ms) until it has finished: its last answer if
/// it completed, [`WaitError::Ended`] (with that answer) if it failed or
/// was canceled. With `progress`, and only when stderr is a terminal, a
/// one-line bar (state, items done of the total, MiB moved) is redrawn on
/// stderr after each poll and ended with a newline; otherwise nothing is
/// printed while waiting.
pub(crate) async fn wait_for_task(client: &AdminClient, id: u64, progress: bool) -> Result<Reply, WaitError> {
    let mut stderr = std::io::stderr();
    let bar: Option<&mut dyn Write> = if progress && stderr.is_terminal() { Some(&mut stderr) } else { None };
    poll(client, id, POLL_INTERVAL, bar).await
}

async fn poll(client: &AdminClient, id: u64, every: Duration, mut bar: Option<&mut dyn Write>) -> Result<Reply, WaitError> {
    let path = api_path(&["tasks", &id.to_string()], &[]);
    let mut drawn = 0;
    // Every 10 ms for the first second (a short task, a build from
    // scratch say, is seen done when it is), then twice as long each time
    // up to `every`.
    let started = std::time::Instant::now();
    let mut wait = Duration::from_millis(10).min(every);
    loop {
        let reply = client.send(Method::GET, &path, None).await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                end_bar(&mut bar, drawn);
                return Err(e.into());
            }
        };
        if let Some(out) = bar.as_mut() {
            drawn = draw(&mut **out, &progress_line(id, &reply.value), drawn);
        }
        let how = match reply.value["state"].as_str() {
            Some("waiting" | "running") => {
                tokio::time::sleep(wait).await;
                if started.elapsed() > Duration::from_secs(1) {
                    wait = (wait * 2).min(every);
                }
                continue;
            }
            Some("completed") => None,
            Some("failed") => Some(Ending::Failed),
            Some("canceled") => Some(Ending::Canceled),
            other => {
                end_bar(&mut bar, drawn);
                let state = other.map_or_else(|| "no state".to_owned(), |s| format!("state {s:?}"));
                return Err(AdminError::Unexpected(format!("task {id} has {state}, which this wharf command does not know")).into());
            }
        };
        end_bar(&mut bar, drawn);
        return match how {
            None => Ok(reply),
            Some(how) => {
                let message = reply.value["error"].as_str().map(one_line);
                Err(TaskEnded { id, how, message, task: reply }.into())
            }
        };
    }
}

/// Redraws the bar's line: back to its start, the new text, and spaces
/// over whatever of a longer previous line is left. The new line's width.
fn draw(out: &mut dyn Write, line: &str, previous: usize) -> usize {
    let width = line.chars().count();
    let blank = previous.saturating_sub(width);
    // A terminal that went away only loses the bar; waiting goes on.
    let _ = write!(out, "\r{line}{:blank$}", "").and_then(|()| out.flush());
    width
}

fn end_bar(bar: &mut Option<&mut dyn Write>, drawn: usize) {
    if let (Some(out), true) = (bar.as_mut(), drawn > 0) {
        let _ = writeln!(out).and_then(|()| out.flush());
    }
}

/// `task 7 running [#########---------------] 3/10 items, 11.8 MiB`; the
/// bar only once the total is known.
pub(crate) fn progress_line(id: u64, task: &Value) -> String {
    let state = task["state"].as_str().unwrap_or("?");
    let progress = &task["progress"];
    let done = progress["items_done"].as_u64().unwrap_or(0);
    let mib = progress["bytes_done"].as_u64().unwrap_or(0) as f64 / (1u64 << 20) as f64;
    let line = match progress["items_total"].as_u64() {
        Some(total) => {
            let filled = if total == 0 { BAR_WIDTH } else { (done.min(total) as f64 / total as f64 * BAR_WIDTH as f64) as usize };
            let bar = format!("{}{}", "#".repeat(filled), "-".repeat(BAR_WIDTH - filled));
            format!("task {id} {state} [{bar}] {done}/{total} items, {mib:.1} MiB")
        }
        None => format!("task {id} {state} {done} items, {mib:.1} MiB"),
    };
    // The step the work is at, cut to keep the bar on one line.
    match task["step"].as_str().filter(|_| matches!(state, "waiting" | "running")) {
        Some(step) => {
            let step: String = step.chars().take(STEP_WIDTH).collect();
            format!("{line}: {step}")
        }
        None => line,
    }
}

/// Characters of a task's step shown after its bar.
const STEP_WIDTH: usize = 60;

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::service::service_fn;
    use serde_json::json;

    use super::*;
    use crate::cli::admin_client::resolve;

    fn task(state: &str, done: u64, total: Option<u64>, error: Option<&str>) -> Value {
        json!({"id": 7, "kind": "sync", "resource": "a", "params": {}, "state": state,
               "progress": {"items_done": done, "items_total": total, "bytes_done": done << 20},
               "error": error, "created_resources": [], "created_at": "2026-11-25T10:00:00.000Z",
               "started_at": null, "finished_at": null})
    }

    /// An admin port that answers each GET of task 7 with the next of
    /// `answers` (the last one for ever), and 404 for any other task.
    async fn serve(answers: Vec<Value>) -> (AdminClient, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let asked = Arc::new(AtomicUsize::new(0));
        let answers = Arc::new(answers);
        let counter = asked.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (answers, counter) = (answers.clone(), counter.clone());
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (answers, counter) = (answers.clone(), counter.clone());
                    async move {
                        let (status, body) = if req.uri().path() == "/api/v1/tasks/7" {
                            let n = counter.fetch_add(1, Ordering::SeqCst);
                            (200, answers[n.min(answers.len() - 1)].to_string())
                        } else {
                            (404, json!({"error": {"code": "not_found", "message": "task 8 does not exist"}}).to_string())
                        };
                        let resp = http::Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(body)))
                            .unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        let url = resolve(Some(&format!("http://{addr}")), None, || unreachable!()).unwrap();
        (AdminClient::new(url), asked)
    }

    const QUICK: Duration = Duration::from_millis(5);

    #[tokio::test]
    async fn waiting_polls_until_the_task_completes_and_draws_a_bar_when_asked() {
        let (client, asked) = serve(vec![
            task("waiting", 0, None, None),
            task("running", 3, Some(10), None),
            task("completed", 10, Some(10), None),
        ])
        .await;
        let mut bar = Vec::new();
        let reply = poll(&client, 7, QUICK, Some(&mut bar)).await.unwrap();
        assert_eq!(reply.value["state"], "completed");
        assert_eq!(asked.load(Ordering::SeqCst), 3, "asked until it finished, then no more");
        let drawn = String::from_utf8(bar).unwrap();
        let lines: Vec<&str> = drawn.strip_suffix('\n').unwrap().split('\r').skip(1).collect();
        assert_eq!(lines.len(), 3, "{drawn:?}");
        assert_eq!(lines[0].trim_end(), "task 7 waiting 0 items, 0.0 MiB");
        assert_eq!(lines[1], "task 7 running [#######-----------------] 3/10 items, 3.0 MiB");
        assert!(lines[2].starts_with("task 7 completed [########################] 10/10 items, 10.0 MiB"));
        assert_eq!(drawn.matches('\n').count(), 1, "one newline, ending the bar: {drawn:?}");
    }

    #[tokio::test]
    async fn without_a_bar_nothing_is_drawn_and_a_failure_carries_the_tasks_error() {
        let (client, _) = serve(vec![
            task("running", 1, None, None),
            task("failed", 1, None, Some("the remote\nsaid 401")),
        ])
        .await;
        let err = poll(&client, 7, QUICK, None).await.unwrap_err();
        let WaitError::Ended(ended) = err else { panic!("{err:?}") };
        assert_eq!((ended.id, ended.how), (7, Ending::Failed));
        assert_eq!(ended.to_string(), "task 7 failed: the remote said 401");
        assert_eq!(ended.task.value["state"], "failed", "the final answer comes along");
    }

    #[tokio::test]
    async fn a_canceled_task_says_so_and_an_unknown_one_is_the_apis_refusal() {
        let (client, _) = serve(vec![task("canceled", 0, None, Some("canceled by request"))]).await;
        let err = poll(&client, 7, QUICK, None).await.unwrap_err();
        assert_eq!(err.to_string(), "task 7 was canceled: canceled by request");
        assert!(matches!(err, WaitError::Ended(TaskEnded { how: Ending::Canceled, .. })));
        let err = poll(&client, 8, QUICK, None).await.unwrap_err();
        assert!(matches!(&err, WaitError::Admin(AdminError::Api { .. })), "{err:?}");
        assert_eq!(err.to_string(), "task 8 does not exist");
    }

    #[tokio::test]
    async fn a_state_outside_the_contract_ends_the_wait_instead_of_polling_for_ever() {
        let (client, _) = serve(vec![task("paused", 0, None, None)]).await;
        let err = poll(&client, 7, QUICK, None).await.unwrap_err();
        assert!(matches!(&err, WaitError::Admin(AdminError::Unexpected(_))), "{err:?}");
        assert!(err.to_string().contains("\"paused\""), "{err}");
    }

    #[test]
    fn a_shorter_line_blanks_what_is_left_of_the_longer_one() {
        let mut out = Vec::new();
        let w = draw(&mut out, "task 1 running 100 items, 5.0 MiB", 0);
        draw(&mut out, "task 1 failed", w);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, format!("\rtask 1 running 100 items, 5.0 MiB\rtask 1 failed{}", " ".repeat(w - 13)));
    }

    #[test]
    fn the_bar_is_full_for_an_empty_total_and_never_overflows() {
        assert!(progress_line(1, &task("completed", 0, Some(0), None)).contains(&format!("[{}] 0/0", "#".repeat(24))));
        assert!(progress_line(1, &task("running", 12, Some(10), None)).contains(&format!("[{}] 12/10", "#".repeat(24))));
        let mut stepping = task("running", 1, Some(3), None);
        stepping["step"] = json!(format!("STEP 2/3: COPY {}", "x".repeat(100)));
        let line = progress_line(1, &stepping);
        assert!(line.ends_with(&format!(": STEP 2/3: COPY {}", "x".repeat(45))), "{line}");
        stepping["state"] = json!("completed");
        assert!(!progress_line(1, &stepping).contains("STEP"), "a finished task's bar says no step");
    }
}
