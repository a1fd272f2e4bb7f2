//! wharf: a pull-through caching registry for OCI and Docker images.

pub mod config;
pub mod oci;
