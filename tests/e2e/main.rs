//! End-to-end tests: the real `wharf` binary against real upstreams
//! (`docker-registry`) and real clients (`skopeo`, `podman`), plus an
//! in-process fake upstream for faults a real registry cannot produce.
//!
//! One test binary made of modules, so shared harness code compiles once.

mod http;
mod wharf;
mod clients;
mod images;
mod registry;
mod fake_upstream;
mod streaming;
mod pull;
mod upstream_auth;
mod concurrency;
mod faults;
mod crash;
mod protocol;
mod digests;
mod admin;
mod repositories;
mod cli;
mod admin_api;
mod limits;
mod auth;
mod push;
mod remotes;
mod curate;
mod tasks;
mod sync;
mod service;
mod signatures;
mod observability;
mod disk;
mod warm_serving;
mod access;
mod hostile;
mod s3;
mod s3_storage;
mod postgres;
mod metadata;
mod cluster;
mod transfer;
mod air_gap;
mod builds;
mod buildah;
mod flatpak;
