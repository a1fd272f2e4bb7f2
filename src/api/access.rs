//! The registry port's gate, run before any handler: which repository and
//! action a request needs, and whether anonymous clients may pull that
//! repository (its visibility). The decisions themselves are `auth`'s;
//! this file only turns routes into questions, so a new handler behind an
//! existing route is gated without being touched.
//!
//! | route | method | needs |
//! |---|---|---|
//! | `/v2/` | any | a signed-in client once users exist, else nothing |
//! | `_catalog` | GET, HEAD | nothing; lists only what the client may pull |
//! | `/index/static`, `/index/dynamic` | GET, HEAD | nothing; shows only what the client may pull |
//! | manifests, blobs, tags, referrers | GET, HEAD | `pull` |
//! | signatures (`/extensions/v2/`) | GET, HEAD | `pull` |
//! | manifests, blobs, signatures | PUT, POST, PATCH | `push` |
//! | manifests, blobs | DELETE | `delete` |
//! | uploads | any | `push` (and `pull` on `from` for a cross-repository mount) |

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};

use super::body::Body;
use super::router::Route;
use super::{json_response, ApiError, Query, Registry};
use crate::auth::{Action, Actions, Caller, Decision, Principal, Scope, Visibility};
use crate::oci::RepositoryName;

/// The path of the token endpoint on the registry port.
pub(super) const TOKEN_PATH: &str = "/token";

impl Registry {
    /// Whether anonymous clients may pull `name` (see
    /// [`crate::repository::visibility`]).
    pub(super) fn visibility(&self, name: &RepositoryName, ns: Option<&str>) -> Visibility {
        crate::repository::visibility(&self.distributions, &self.pull, name, ns)
    }

    /// Whether a blob HEAD is a pusher asking whether to upload: a name no
    /// distribution serves and no upstream prefix names (so it would reach
    /// the default upstream), asked by a client allowed to push it. Such a
    /// probe is answered from the push side, where nothing is yet, rather
    /// than by the pull-through cache: a push then works while the default
    /// upstream is unreachable, and a blob cached for another repository
    /// never makes the client skip an upload its manifest needs.
    pub(super) fn is_push_probe(&self, principal: &Principal, name: &RepositoryName, query: &Query) -> bool {
        if query.ns.is_some() || self.distributions.lookup(name.as_str()).is_some() {
            return false;
        }
        if let (first, Some(_)) = name.split_first() {
            if self.pull.is_upstream_name(first) {
                return false;
            }
        }
        let visibility = self.visibility(name, None);
        matches!(self.auth.authorize(principal, name.as_str(), Action::Push, visibility), Decision::Allow)
    }

    /// Authenticates the request and checks it may do what `route` and
    /// its method need; the principal is what the catalog filters by.
    pub(super) async fn admit<B>(&self, req: &Request<B>, route: &Route, query: &Query) -> Result<Principal, ApiError> {
        let caller = Caller::of(req);
        let method = req.method();
        let Some((name, actions)) = needs(route, method) else {
            let scope = if matches!(route, Route::Catalog) { Scope::Catalog } else { Scope::None };
            let principal = self.auth.authenticate(caller, &scope).await?;
            if matches!(route, Route::Base) {
                self.auth.refuse(caller, &scope, self.auth.authorize_base(&principal), "use this registry")?;
            }
            return Ok(principal);
        };
        let scope = Scope::Repository { name: name.to_string(), actions };
        let principal = self.auth.authenticate(caller, &scope).await?;
        let visibility = self.visibility(name, query.ns.as_deref());
        for action in actions.iter() {
            let decision = self.auth.authorize(&principal, name.as_str(), action, visibility);
            self.auth.refuse(caller, &scope, decision, &format!("{} {name}", action.as_str()))?;
        }
        // A cross-repository mount reads the source repository.
        if let (Route::Upload { .. }, Some(from)) = (route, &query.from) {
            let from: RepositoryName = from.parse().map_err(super::router::RouteError::from)?;
            let scope = Scope::Repository { name: from.to_string(), actions: Actions::of([Action::Pull]) };
            let decision = self.auth.authorize(&principal, from.as_str(), Action::Pull, self.visibility(&from, None));
            self.auth.refuse(caller, &scope, decision, &format!("pull {from}"))?;
        }
        Ok(principal)
    }

    /// Whether the catalog shows `name` to `principal`.
    pub(super) fn listed(&self, principal: &Principal, name: &str) -> bool {
        let visibility = match name.parse::<RepositoryName>() {
            Ok(n) => self.visibility(&n, None),
            Err(_) => Visibility::Unknown,
        };
        self.auth.may_list(principal, name, visibility)
    }

    /// `GET /token`: issues a bearer token (see `auth`).
    pub(super) async fn token<B>(&self, req: &Request<B>) -> Result<Response<Body>, ApiError> {
        let method = req.method();
        if *method != Method::GET && *method != Method::HEAD {
            return Err(ApiError::Unsupported("the token endpoint takes GET"));
        }
        let body: Bytes = self
            .auth
            .issue_token(Caller::of(req), req.uri().query(), |name| self.visibility(name, None))
            .await?;
        Ok(json_response(StatusCode::OK, body, method))
    }
}

/// The repository a route names and the actions its method needs; None
/// for the base, the catalog and the Flatpak index, which name no
/// repository.
fn needs<'r>(route: &'r Route, method: &Method) -> Option<(&'r RepositoryName, Actions)> {
    let read = *method == Method::GET || *method == Method::HEAD;
    let action = |read_action: Action| {
        if read {
            read_action
        } else if *method == Method::DELETE {
            Action::Delete
        } else {
            Action::Push
        }
    };
    let one = |a: Action| Actions::of([a]);
    match route {
        Route::Base | Route::Catalog | Route::FlatpakIndex { .. } => None,
        // Uploads are part of a push, reads of their status included.
        Route::Upload { name, .. } => Some((name, one(Action::Push))),
        Route::Manifest { name, .. } | Route::Blob { name, .. } => Some((name, one(action(Action::Pull)))),
        Route::Tags { name } | Route::Referrers { name, .. } => Some((name, one(action(Action::Pull)))),
        Route::Signatures { name, .. } => Some((name, one(action(Action::Pull)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::router::route;

    fn need(method: &str, path: &str) -> Option<(String, Vec<&'static str>)> {
        let r = route(path).unwrap();
        needs(&r, &method.parse().unwrap()).map(|(n, a)| (n.to_string(), a.names()))
    }

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn each_route_and_method_needs_one_action() {
        assert_eq!(need("GET", "/v2/"), None);
        assert_eq!(need("GET", "/v2/_catalog"), None);
        assert_eq!(need("GET", "/v2/a/b/manifests/1"), Some(("a/b".into(), vec!["pull"])));
        assert_eq!(need("HEAD", &format!("/v2/a/blobs/{D}")), Some(("a".into(), vec!["pull"])));
        assert_eq!(need("GET", "/v2/a/tags/list"), Some(("a".into(), vec!["pull"])));
        assert_eq!(need("GET", &format!("/v2/a/referrers/{D}")), Some(("a".into(), vec!["pull"])));
        assert_eq!(need("PUT", "/v2/a/manifests/1"), Some(("a".into(), vec!["push"])));
        assert_eq!(need("GET", &format!("/extensions/v2/a/signatures/{D}")), Some(("a".into(), vec!["pull"])));
        assert_eq!(need("PUT", &format!("/extensions/v2/a/signatures/{D}")), Some(("a".into(), vec!["push"])));
        assert_eq!(need("DELETE", "/v2/a/manifests/1"), Some(("a".into(), vec!["delete"])));
        assert_eq!(need("DELETE", &format!("/v2/a/blobs/{D}")), Some(("a".into(), vec!["delete"])));
        for m in ["POST", "PATCH", "PUT", "GET", "DELETE"] {
            assert_eq!(need(m, "/v2/a/blobs/uploads/x"), Some(("a".into(), vec!["push"])), "{m}");
        }
    }
}
