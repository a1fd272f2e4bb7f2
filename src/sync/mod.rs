//! Sync: filling `sync` repositories from remotes. Owns remotes (their
//! checks and tag filters), the clients that reach them, and the sync runs
//! themselves. Reaches remote registries only through `upstream` (by way
//! of the pull-through layer's verified fetches), writes content only
//! through `storage` and `metadata`; knows nothing of HTTP requests to
//! wharf.
//!
//! - `remote.rs`: checking remotes and applying the admin API's changes.
//! - `filter.rs`: `include_tags` / `exclude_tags` globs.
//! - `clients.rs`: one registry client per remote.
//! - `repositories.rs`: creating and changing sync repositories, schedules.
//! - `run.rs`: one sync, from tag list to repository version.
//! - `schedule.rs`: syncs as tasks, on request and on schedule.

mod clients;
pub(crate) mod filter;
pub(crate) mod remote;
mod repositories;
mod run;
mod schedule;

pub(crate) use clients::Clients;
pub(crate) use remote::{NewRemote, RemotePatch, Remotes};
pub(crate) use repositories::SyncRepositories;
pub(crate) use run::{SyncRequest, Syncer};
pub(crate) use schedule::{run_schedules, start};

/// What starts syncs: the task runner and the syncer, handed together to
/// the admin API.
#[derive(Clone)]
pub(crate) struct SyncParts {
    pub(crate) tasks: crate::tasks::Tasks,
    pub(crate) syncer: Syncer,
}
