//! The OCI spec vocabulary: names, tags, digests, references, media types and
//! error codes. Pure parsing and data; no I/O, no async, no HTTP handling.

mod digest;
pub(crate) mod error;
pub(crate) mod media;
mod name;
mod reference;

pub(crate) use digest::{Algorithm, Digest, DigestError, Hasher};
pub(crate) use error::ErrorCode;
pub(crate) use name::{is_valid_component, NameError, RepositoryName, Tag};
pub(crate) use reference::{Reference, ReferenceError};
