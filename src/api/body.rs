//! The response body type every handler returns.

use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};

/// An error inside a body stream makes hyper abort the response, so the
/// client sees an incomplete body rather than a clean end.
pub(crate) type BodyError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BodyError>;

pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

pub(crate) fn stream<S, E>(s: S) -> Body
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Into<BodyError> + 'static,
{
    StreamBody::new(s.map_ok(Frame::data).map_err(Into::into)).boxed_unsync()
}
