//! The registry route table: parses `/v2/...` paths (and the signatures
//! extension's `/extensions/v2/...`, and Flatpak's `/index/...`) into
//! typed routes.
//! Pure: no I/O. Names are parsed from the right (`/manifests/`, `/blobs/`,
//! `/tags/list`, `/referrers/`), since a repository name may contain any
//! number of `/`. Nothing is percent-decoded: `%` is not valid in a name,
//! so an encoded `..` or `/` can never reach storage.

use crate::oci::{Digest, DigestError, NameError, Reference, ReferenceError, RepositoryName};

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// `/v2/`: API version check.
    Base,
    /// `/v2/_catalog`
    Catalog,
    Manifest { name: RepositoryName, reference: Reference },
    Blob { name: RepositoryName, digest: Digest },
    /// `/v2/<name>/blobs/uploads/` (no session: start one) or
    /// `/v2/<name>/blobs/uploads/<session>` (the id as sent; the upload
    /// layer parses it).
    Upload { name: RepositoryName, session: Option<String> },
    Tags { name: RepositoryName },
    Referrers { name: RepositoryName, digest: Digest },
    /// `/extensions/v2/<name>/signatures/<digest>`: the docker API
    /// extension for atomic signatures.
    Signatures { name: RepositoryName, digest: Digest },
    /// `/index/static` or (`dynamic`) `/index/dynamic`: Flatpak's
    /// registry index.
    FlatpakIndex { dynamic: bool },
}

impl Route {
    /// The route's kind, the `route` label of the HTTP metrics (one of
    /// `metrics::ROUTES`): never the path, which names a repository.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Route::Base => "base",
            Route::Catalog => "catalog",
            Route::Manifest { .. } => "manifest",
            Route::Blob { .. } => "blob",
            Route::Upload { .. } => "blob_upload",
            Route::Tags { .. } => "tags",
            Route::Referrers { .. } => "referrers",
            Route::Signatures { .. } => "signatures",
            Route::FlatpakIndex { .. } => "flatpak_index",
        }
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RouteError {
    #[error("no such endpoint")]
    NotFound,
    #[error("invalid repository name: {0}")]
    Name(#[from] NameError),
    #[error("invalid digest: {0}")]
    Digest(#[from] DigestError),
    #[error("invalid tag: {0}")]
    Tag(NameError),
}

impl From<ReferenceError> for RouteError {
    fn from(e: ReferenceError) -> Self {
        match e {
            ReferenceError::Digest(d) => RouteError::Digest(d),
            ReferenceError::Tag(t) => RouteError::Tag(t),
        }
    }
}

pub(crate) fn route(path: &str) -> Result<Route, RouteError> {
    match path {
        "/index/static" => return Ok(Route::FlatpakIndex { dynamic: false }),
        "/index/dynamic" => return Ok(Route::FlatpakIndex { dynamic: true }),
        _ => {}
    }
    if let Some(rest) = path.strip_prefix("/extensions/v2/") {
        let (name, digest) = rest.rsplit_once("/signatures/").ok_or(RouteError::NotFound)?;
        return Ok(Route::Signatures { name: name.parse()?, digest: digest.parse()? });
    }
    let rest = match path.strip_prefix("/v2") {
        Some("") | Some("/") => return Ok(Route::Base),
        Some(rest) => rest.strip_prefix('/').ok_or(RouteError::NotFound)?,
        None => return Err(RouteError::NotFound),
    };
    // The routes of a pull first, by their last two components (neither a
    // reference nor a digest holds a `/`): no substring searches.
    if let Some((name, kind, last)) = rest.rsplit_once('/').and_then(|(head, last)| {
        let (name, kind) = head.rsplit_once('/')?;
        Some((name, kind, last))
    }) {
        match kind {
            "manifests" => return Ok(Route::Manifest { name: name.parse()?, reference: last.parse()? }),
            "blobs" if last != "uploads" => return Ok(Route::Blob { name: name.parse()?, digest: last.parse()? }),
            _ => {}
        }
    }
    if rest == "_catalog" {
        return Ok(Route::Catalog);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Ok(Route::Tags { name: name.parse()? });
    }
    if let Some((name, tail)) = rest.rsplit_once("/blobs/uploads") {
        let session = match tail {
            "" | "/" => Some(None),
            _ => tail.strip_prefix('/').filter(|id| !id.contains('/')).map(|id| Some(id.to_owned())),
        };
        if let Some(session) = session {
            return Ok(Route::Upload { name: name.parse()?, session });
        }
    }
    if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        return Ok(Route::Manifest { name: name.parse()?, reference: reference.parse()? });
    }
    if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
        return Ok(Route::Blob { name: name.parse()?, digest: digest.parse()? });
    }
    if let Some((name, digest)) = rest.rsplit_once("/referrers/") {
        return Ok(Route::Referrers { name: name.parse()?, digest: digest.parse()? });
    }
    Err(RouteError::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_every_read_route() {
        assert_eq!(route("/v2/"), Ok(Route::Base));
        assert_eq!(route("/v2"), Ok(Route::Base));
        assert_eq!(route("/v2/_catalog"), Ok(Route::Catalog));
        match route("/v2/docker.io/library/alpine/manifests/3.20").unwrap() {
            Route::Manifest { name, reference } => {
                assert_eq!(name.as_str(), "docker.io/library/alpine");
                assert_eq!(reference.to_string(), "3.20");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(route(&format!("/v2/a/b/blobs/{D}")), Ok(Route::Blob { .. })));
        assert!(matches!(route(&format!("/v2/a/referrers/{D}")), Ok(Route::Referrers { .. })));
        assert!(matches!(route("/v2/a/b/tags/list"), Ok(Route::Tags { .. })));
        match route(&format!("/extensions/v2/a/b/signatures/{D}")).unwrap() {
            Route::Signatures { name, digest } => assert_eq!((name.as_str(), digest.to_string().as_str()), ("a/b", D)),
            other => panic!("{other:?}"),
        }
        assert_eq!(route("/extensions/v2/a/b/other"), Err(RouteError::NotFound));
        assert!(matches!(route("/extensions/v2/a/signatures/sha256:zz"), Err(RouteError::Digest(_))));
        assert!(matches!(route("/v2/a/blobs/uploads/"), Ok(Route::Upload { session: None, .. })));
        assert!(matches!(route("/v2/a/blobs/uploads"), Ok(Route::Upload { session: None, .. })));
        match route("/v2/a/b/blobs/uploads/some-id").unwrap() {
            Route::Upload { name, session } => assert_eq!((name.as_str(), session.as_deref()), ("a/b", Some("some-id"))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_route_kind_is_a_metric_label_value() {
        let d = D;
        for path in ["/v2/", "/v2/_catalog", "/v2/a/manifests/t", &format!("/v2/a/blobs/{d}"), "/v2/a/blobs/uploads/",
            "/v2/a/tags/list", &format!("/v2/a/referrers/{d}"), "/index/static", "/index/dynamic"]
        {
            let kind = route(path).unwrap().kind();
            assert!(crate::metrics::ROUTES.contains(&kind), "{kind} for {path}");
        }
    }

    #[test]
    fn names_containing_route_words_parse_from_the_right() {
        match route("/v2/manifests/blobs/manifests/latest").unwrap() {
            Route::Manifest { name, .. } => assert_eq!(name.as_str(), "manifests/blobs"),
            other => panic!("{other:?}"),
        }
        // The last two components decide, as distribution's routes do.
        match route(&format!("/v2/a/manifests/b/blobs/{D}")).unwrap() {
            Route::Blob { name, .. } => assert_eq!(name.as_str(), "a/manifests/b"),
            other => panic!("{other:?}"),
        }
        match route("/v2/a/blobs/uploads/manifests/v1").unwrap() {
            Route::Manifest { name, .. } => assert_eq!(name.as_str(), "a/blobs/uploads"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn refuses_traversal_and_garbage() {
        assert!(matches!(route("/v2/..%2f..%2fetc/manifests/x"), Err(RouteError::Name(_))));
        assert!(matches!(route("/v2/../etc/manifests/x"), Err(RouteError::Name(_))));
        assert!(matches!(route("/v2/a/blobs/sha256:..%2f"), Err(RouteError::Digest(_))));
        assert!(matches!(route("/v2/a/manifests/bad$tag"), Err(RouteError::Tag(_))));
        assert_eq!(route("/v3/"), Err(RouteError::NotFound));
        assert_eq!(route("/v2x"), Err(RouteError::NotFound));
        assert_eq!(route("/v2/a/unknown"), Err(RouteError::NotFound));
        assert!(route("/").is_err());
    }
}
