//! The storage tasks of the admin API: gc, verify and migrate, each run as
//! a task, one at a time (they share one task resource).

use super::api::{task_accepted, Api, Reply};
use super::error::{AdminError, ErrorBody};
use super::model::Task;

#[utoipa::path(
    post,
    path = "/api/v1/storage/gc",
    tag = "storage",
    responses(
        (status = 202, description = "Storage gc runs as a task: follow it at the `Location` given. It removes \
            upload sessions untouched for `push.upload_timeout`, spool files no fill owns, and objects no \
            repository version, uploaded blob or remembered upstream tag references that were not used for an \
            hour (nor since the oldest running sync started). The task's progress counts objects examined \
            (`items_done`) and bytes removed (`bytes_done`). One gc or verify runs at a time.", body = Task,
            headers(("Location" = String, description = "`/api/v1/tasks/{id}`"))),
    ),
)]
pub(crate) async fn start_gc(api: &Api) -> Reply {
    start_storage_task(api, StorageWork::Gc).await
}

#[utoipa::path(
    post,
    path = "/api/v1/storage/verify",
    tag = "storage",
    responses(
        (status = 202, description = "Storage verify runs as a task: follow it at the `Location` given. It \
            re-hashes every stored object; an object whose bytes do not match its digest is moved to \
            `quarantine/` under the storage path (never served again: a pull-through or on-demand blob is \
            fetched again when asked, other content is unknown). The task fails, naming the digests, when \
            any object was quarantined. Progress counts objects checked and bytes read.", body = Task,
            headers(("Location" = String, description = "`/api/v1/tasks/{id}`"))),
    ),
)]
pub(crate) async fn start_verify(api: &Api) -> Reply {
    start_storage_task(api, StorageWork::Verify).await
}

#[utoipa::path(
    post,
    path = "/api/v1/storage/migrate",
    tag = "storage",
    responses(
        (status = 202, description = "Storage migrate runs as a task: follow it at the `Location` given. It \
            copies every object of the local store (`storage.backend = \"fs\"`) into the bucket of \
            `[storage.s3]`: each is re-hashed first (a corrupt one is quarantined, not copied, and named when \
            the task fails), uploaded unless the bucket holds it already, and checked by size after. Metadata \
            does not change. A run cut short resumes where it stopped. Once it has completed, set \
            `storage.backend = \"s3\"` and restart: the local objects become the hot tier. Progress counts \
            objects handled and bytes uploaded. Runs one at a time with gc and verify.", body = Task,
            headers(("Location" = String, description = "`/api/v1/tasks/{id}`"))),
        (status = 409, description = "Nothing to migrate to: the backend is already S3, or `[storage.s3]` is \
            not configured.", body = ErrorBody),
    ),
)]
pub(crate) async fn start_migrate(api: &Api) -> Reply {
    if !api.disk.can_migrate() {
        return Err(AdminError::Conflict(
            "nothing to migrate to: storage migrate copies a local store (storage.backend = \"fs\") into the \
             bucket of [storage.s3], which is not configured here"
                .into(),
        ));
    }
    start_storage_task(api, StorageWork::Migrate).await
}

/// The storage tasks, which run one at a time (one task resource).
#[derive(Clone, Copy)]
enum StorageWork {
    Gc,
    Verify,
    Migrate,
}

/// Submits a storage task: 202 with the task.
async fn start_storage_task(api: &Api, work: StorageWork) -> Reply {
    let disk = api.disk.clone();
    // The task kinds the API lists them by.
    let kind = match work {
        StorageWork::Gc => "gc",
        StorageWork::Verify => "verify",
        StorageWork::Migrate => "migrate",
    };
    let resource = Some(crate::gc::STORAGE_RESOURCE.to_owned());
    let task = api
        .tasks
        .submit(kind, resource, serde_json::json!({}), move |progress| async move {
            match work {
                StorageWork::Gc => disk.gc(&progress).await.map(|_| Vec::new()),
                StorageWork::Verify => disk.verify(&progress).await.map(|_| Vec::new()),
                StorageWork::Migrate => disk.migrate(&progress).await.map(|()| Vec::new()),
            }
        })
        .await?;
    task_accepted(task)
}
