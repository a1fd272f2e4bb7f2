//! Sync: filling `sync` repositories from remotes. Owns remotes (their
//! checks and tag filters) and, later, the sync runs themselves. Reaches
//! remote registries only through `upstream`, writes content only through
//! `storage` and `metadata`; knows nothing of HTTP requests to wharf.
//!
//! - `remote.rs`: checking remotes and applying the admin API's changes.
//! - `filter.rs`: `include_tags` / `exclude_tags` globs.

pub(crate) mod filter;
pub(crate) mod remote;

pub(crate) use remote::{NewRemote, RemotePatch, Remotes};
