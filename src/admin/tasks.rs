//! The tasks' handlers: listing, one task, its log, cancel. The work
//! itself is submitted by the handlers that start it (syncs, storage,
//! exports, imports).

use http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::api::{json, Api, Reply};
use super::error::{AdminError, ErrorBody};
use super::model::{self, Pagination, Task, TaskPage, TaskPath};
use super::route::Query;
use crate::metadata::{TaskFilter, TaskState};

#[utoipa::path(
    get,
    path = "/api/v1/tasks",
    tag = "tasks",
    params(
        ("state" = Option<model::TaskState>, Query, description = "Only tasks in this state."),
        ("kind" = Option<String>, Query, description = "Only tasks of this kind (`sync`)."),
        ("resource" = Option<String>, Query, description = "Only tasks working on this resource (a repository name)."),
        Pagination,
    ),
    responses(
        (status = 200, description = "Tasks, newest first.", body = TaskPage),
        (status = 400, description = "A bad or unknown query parameter.", body = ErrorBody),
    ),
)]
pub(crate) async fn list_tasks(api: &Api, query: &Query) -> Reply {
    let page = query.page()?;
    let state = query
        .get("state")
        .map(|s| {
            TaskState::parse(s).ok_or_else(|| {
                let states: Vec<&str> = TaskState::ALL.iter().map(|s| s.as_str()).collect();
                AdminError::Invalid(format!("state {s:?} is not one of {}", states.join(", ")))
            })
        })
        .transpose()?;
    let filter = TaskFilter {
        state,
        kind: query.get("kind").map(str::to_owned),
        resource: query.get("resource").map(str::to_owned),
    };
    let listed = api.tasks.list(filter, page.into()).await?;
    let results = listed.items.into_iter().map(Task::from).collect();
    json(StatusCode::OK, &TaskPage::new(listed.total, page, results))
}

#[utoipa::path(
    get,
    path = "/api/v1/tasks/{id}",
    tag = "tasks",
    params(TaskPath),
    responses(
        (status = 200, description = "The task; a running task's progress is at most a second old.", body = Task),
        (status = 400, description = "The id is not a number.", body = ErrorBody),
        (status = 404, description = "No such task.", body = ErrorBody),
    ),
)]
pub(crate) async fn get_task(api: &Api, path: TaskPath) -> Reply {
    let id = path.id;
    let task = api.tasks.get(id).await?.ok_or_else(|| AdminError::NotFound(format!("task {id} does not exist")))?;
    json(StatusCode::OK, &Task::from(task))
}

#[utoipa::path(
    post,
    path = "/api/v1/tasks/{id}/cancel",
    tag = "tasks",
    params(TaskPath),
    responses(
        (status = 200, description = "The task was waiting and is now canceled.", body = Task),
        (status = 202, description = "The task is running and was asked to stop; it ends `canceled` at its \
            next check. The body is the task, still `running`.", body = Task),
        (status = 400, description = "The id is not a number.", body = ErrorBody),
        (status = 404, description = "No such task.", body = ErrorBody),
        (status = 409, description = "The task has already finished.", body = ErrorBody),
    ),
)]
pub(crate) async fn cancel_task(api: &Api, path: TaskPath) -> Reply {
    let task = Task::from(api.tasks.cancel(path.id).await?);
    let status = match task.state() {
        model::TaskState::Running => StatusCode::ACCEPTED,
        _ => StatusCode::OK,
    };
    json(status, &task)
}


/// Part of a task's log.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TaskLog {
    /// The log from `offset` on (characters), as the task wrote it, one
    /// line per step or message.
    log: String,
    /// Where the next read goes on: ask again with `?offset=` this.
    next_offset: u64,
    /// Whether the task has finished (no more will come).
    finished: bool,
}

#[utoipa::path(
    get,
    path = "/api/v1/tasks/{id}/log",
    tag = "tasks",
    params(TaskPath, ("offset" = Option<u64>, Query, description = "Characters of the log already read (from `next_offset`).")),
    responses(
        (status = 200, description = "The task's log from `offset`; a running task's is at most a second old.", body = TaskLog),
        (status = 400, description = "The id or the offset is not a number.", body = ErrorBody),
        (status = 404, description = "No such task.", body = ErrorBody),
    ),
)]
pub(crate) async fn get_task_log(api: &Api, path: TaskPath, query: &Query) -> Reply {
    let id = path.id;
    let offset = match query.get("offset") {
        None => 0,
        Some(o) => o.parse::<u64>().map_err(|_| AdminError::Invalid(format!("offset {o:?} is not a number")))?,
    };
    let task = api.tasks.get(id).await?.ok_or_else(|| AdminError::NotFound(format!("task {id} does not exist")))?;
    let log = api.metadata.run(move |s| s.task_log(id)).await?.unwrap_or_default();
    let total = log.chars().count() as u64;
    let rest: String = log.chars().skip(usize::try_from(offset).unwrap_or(usize::MAX)).collect();
    let finished = !matches!(task.state, TaskState::Waiting | TaskState::Running);
    json(StatusCode::OK, &TaskLog { log: rest, next_offset: total.max(offset), finished })
}
