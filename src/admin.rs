//! The admin port: health and metrics (the admin API grows here). A plain
//! match over the path; nothing here serves registry traffic.

use http::{header, HeaderValue, Method, Request, Response, StatusCode};

use crate::api::body::{full, Body};
use crate::metrics::Metrics;

#[derive(Clone)]
pub(crate) struct Admin {
    metrics: Metrics,
}

impl Admin {
    pub(crate) fn new(metrics: Metrics) -> Admin {
        Admin { metrics }
    }

    pub(crate) async fn handle<B>(&self, req: Request<B>) -> Response<Body> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n".into(), "text/plain");
        }
        match req.uri().path() {
            "/healthz" | "/livez" => text(StatusCode::OK, "ok\n".into(), "text/plain"),
            "/readyz" => text(StatusCode::OK, "ready\n".into(), "text/plain"),
            "/metrics" => text(StatusCode::OK, self.metrics.render(), "text/plain; version=0.0.4"),
            _ => text(StatusCode::NOT_FOUND, "not found\n".into(), "text/plain"),
        }
    }
}

fn text(status: StatusCode, body: String, content_type: &'static str) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}
