//! Flatpak's registry index (`/index/static`, `/index/dynamic`): the
//! query they take (`query`), the answer they give from a snapshot of
//! what the node serves (`index`), that answer kept in memory until the
//! metadata changes (`served`), and what each image's config says, read
//! once when its content is recorded (`configs`).

pub(crate) mod configs;
pub(crate) mod index;
pub(crate) mod query;
pub(crate) mod served;
