//! wharf: a pull-through caching registry for OCI and Docker images.
//!
//! # Layout
//!
//! Data flows one way; an arrow means "may call":
//!
//! ```text
//! cli -> app -> server -> api (router, handlers, error) -> pullthrough -> { storage, metadata }
//!                                                          \-> upstream
//!             -> admin (health, metrics)
//! ```
//!
//! - [`config`]: raw TOML/env config validated into typed values.
//! - `oci`: spec vocabulary (names, tags, digests, media types, error codes).
//! - `server`: accept loop, hyper connections, graceful drain.
//! - `api`: the registry route table, thin handlers, the one error mapping.
//! - `pullthrough`: upstream selection, tag freshness, coalesced fills, the tee.
//! - `upstream`: the remote registry client (auth, redirects, retries).
//! - `storage`: content-addressed objects, verified ingest.
//! - `metadata`: tag records and the repository index.
//! - `metrics`: every Prometheus metric.

pub(crate) mod admin;
pub(crate) mod api;
pub(crate) mod app;
pub mod cli;
pub mod config;
pub(crate) mod metadata;
pub(crate) mod metrics;
pub mod oci;
pub(crate) mod pullthrough;
pub(crate) mod server;
pub(crate) mod storage;
pub(crate) mod upstream;
