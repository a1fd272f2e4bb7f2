//! Repositories as clients see them through distributions: which repository
//! version a base_path serves, and serving it from local content. Sits
//! between the API and the pull-through layer; never sees HTTP or SQL.
//!
//! Content of a repository that came from an upstream may have been
//! recorded before its bytes were fetched (a client pulled the manifest
//! only); such bytes are fetched on demand through the pull-through layer.
//! Nothing else reaches an upstream from here.
//!
//! Push repositories (`push.rs`) are written here too: which names accept
//! pushes, what a pushed manifest must satisfy, one version per change.
//! Curation (`curate.rs`) copies content between repositories, removes it
//! and reverts to older versions, for the admin API.

mod curate;
mod distributions;
mod hosted;
mod push;

pub(crate) use curate::{CopySelection, Curation};
pub(crate) use distributions::{Distributions, Served};
pub(crate) use hosted::Hosted;
pub(crate) use push::{PushError, Pushes, Writable};

use crate::auth::Visibility;
use crate::oci::RepositoryName;
use crate::pullthrough::PullThrough;

/// Whether anonymous clients may pull `name`: a distribution says so with
/// `private`, an upstream with `anonymous_pull`; a name neither knows is
/// unknown.
pub(crate) fn visibility(distributions: &Distributions, pull: &PullThrough, name: &RepositoryName, ns: Option<&str>) -> Visibility {
    if let Some(d) = distributions.lookup(name.as_str()) {
        return if d.private { Visibility::Private } else { Visibility::Public };
    }
    match pull.upstream_for(name, ns) {
        Ok(upstream) if upstream.config().anonymous_pull => Visibility::Public,
        Ok(_) => Visibility::Private,
        Err(_) => Visibility::Unknown,
    }
}
