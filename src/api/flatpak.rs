//! Flatpak's registry index on the registry port: `/index/static`, made to
//! be cached (a strong `ETag` from the answer itself, `Last-Modified` from
//! the state it reflects, `304` on `If-None-Match`, `Cache-Control` with
//! `[flatpak] max_age`), and `/index/dynamic`, the same answer never
//! stored. Each asker sees only the repositories it may pull: the catalog's
//! rule (`Registry::listed`).

use std::time::{Duration, UNIX_EPOCH};

use http::{header, HeaderValue, Method, Request, Response, StatusCode};

use super::body::{full, Body};
use super::{ApiError, Registry};
use crate::auth::Principal;
use crate::flatpak::served::ServedIndex;

/// The index a registry serves, and how long clients may keep its static
/// answers.
#[derive(Clone)]
pub(crate) struct FlatpakIndex {
    pub(crate) index: ServedIndex,
    pub(crate) max_age: Duration,
}

impl Registry {
    pub(super) async fn flatpak_index<B>(&self, req: &Request<B>, principal: &Principal, dynamic: bool) -> Result<Response<Body>, ApiError> {
        // Off (the default): the paths are no endpoint at all.
        let Some(FlatpakIndex { index, max_age }) = &self.flatpak else {
            return Err(super::router::RouteError::NotFound.into());
        };
        let method = req.method();
        if *method != Method::GET && *method != Method::HEAD {
            return Err(ApiError::Unsupported("the Flatpak index takes GET"));
        }
        let viewer = self.auth.viewer(principal);
        let answer = index.answer(req.uri().query().unwrap_or_default(), &viewer, &|name| self.listed(principal, name)).await?;

        let not_modified = req
            .headers()
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| matches!(t.trim(), "*") || t.trim() == answer.etag);
        let status = if not_modified { StatusCode::NOT_MODIFIED } else { StatusCode::OK };
        let body = if not_modified || *method == Method::HEAD { Body::default() } else { full(answer.body.clone()) };
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if !not_modified {
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(answer.body.len()));
        }
        if let Ok(etag) = HeaderValue::from_str(&answer.etag) {
            h.insert(header::ETAG, etag);
        }
        let modified = UNIX_EPOCH + Duration::from_millis(u64::try_from(answer.last_modified).unwrap_or(0));
        if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(modified)) {
            h.insert(header::LAST_MODIFIED, v);
        }
        let cache = if dynamic {
            "no-store".to_owned()
        } else {
            // What an authenticated client sees is its own: no shared
            // cache may hand it to another.
            let scope = if matches!(principal, Principal::Anonymous) { "public" } else { "private" };
            format!("{scope}, max-age={}", max_age.as_secs())
        };
        if let Ok(v) = HeaderValue::from_str(&cache) {
            h.insert(header::CACHE_CONTROL, v);
        }
        h.insert(header::VARY, HeaderValue::from_static("Authorization"));
        Ok(resp)
    }
}
