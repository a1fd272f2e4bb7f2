//! Flatpak's registry index (issue 20, in progress; not served yet): the
//! query `/index/static` and `/index/dynamic` take (`query`) and the
//! answer they give from a snapshot of what the node serves (`index`).

pub(crate) mod index;
pub(crate) mod query;
