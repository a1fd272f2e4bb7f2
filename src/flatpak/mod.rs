//! Flatpak's registry index (issue 20, in progress; not served yet): the
//! query `/index/static` and `/index/dynamic` take (`query`), the answer
//! they give from a snapshot of what the node serves (`index`), and what
//! each image's config says, read once when its content is recorded
//! (`configs`).

pub(crate) mod configs;
pub(crate) mod index;
pub(crate) mod query;
