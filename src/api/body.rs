//! The response body type every handler returns, and the body of a stored
//! blob (zero-copy where the connection allows it).

use std::fs::File;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use prometheus::IntCounter;

use crate::sendfile::FileSender;
use crate::storage::{self, Arriving, StorageError};

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

/// `[start, end)` of a stored blob. With a [`FileSender`] (a plain HTTP/1.1
/// connection) each piece that is in the page cache goes out as a zero-copy
/// frame, up to [`crate::sendfile::MAX_FRAME`] at a time; a piece that is
/// not is read on the blocking pool and sent as bytes (which also brings it
/// into the cache), so no runtime thread waits on the disk. Without one,
/// every piece is read. Yields exactly `end - start` bytes, as the
/// zero-copy frames require. `zero_copied` counts the bytes sent zero-copy.
pub(crate) fn stored_range(
    file: Arc<File>,
    start: u64,
    end: u64,
    sender: Option<FileSender>,
    zero_copied: IntCounter,
) -> impl Stream<Item = Result<Bytes, StorageError>> + Send + 'static {
    futures_util::stream::unfold((file, start), move |(file, pos)| {
        let sender = sender.clone();
        let zero_copied = zero_copied.clone();
        async move {
            if pos >= end {
                return None;
            }
            let left = end - pos;
            if let Some(sender) = sender {
                let len = left.min(crate::sendfile::MAX_FRAME as u64) as usize;
                if storage::probably_cached(&file, pos, len) {
                    let frame = sender.frame(&file, pos, len);
                    zero_copied.inc_by(frame.len() as u64);
                    let next = pos + frame.len() as u64;
                    return Some((Ok(frame), (file, next)));
                }
            }
            let len = left.min(storage::READ_CHUNK as u64) as usize;
            match storage::read_at(file.clone(), pos, len).await {
                Ok(bytes) => {
                    let next = pos + bytes.len() as u64;
                    Some((Ok(bytes), (file, next)))
                }
                // End the stream after an error: the item carries it.
                Err(e) => Some((Err(e), (file, end))),
            }
        }
    })
}

/// `[start, end)` of an object arriving from the bucket: each piece as soon
/// as it is on disk (sent as [`stored_range`] sends it), the last byte once
/// the object was verified.
pub(crate) fn arriving_range(
    arriving: Arriving,
    start: u64,
    end: u64,
    sender: Option<FileSender>,
    zero_copied: IntCounter,
) -> impl Stream<Item = Result<Bytes, StorageError>> + Send + 'static {
    let file = arriving.file.clone();
    let ready = futures_util::stream::unfold((arriving, start), move |(arriving, pos)| async move {
        if pos >= end {
            return None;
        }
        match arriving.releasable(pos).await {
            Ok(upto) => {
                let upto = upto.min(end);
                Some((Ok((pos, upto)), (arriving, upto)))
            }
            Err(e) => Some((Err(e), (arriving, end))),
        }
    });
    ready.flat_map(move |piece| match piece {
        Ok((from, to)) => stored_range(file.clone(), from, to, sender.clone(), zero_copied.clone()).left_stream(),
        Err(e) => futures_util::stream::iter([Err(e)]).right_stream(),
    })
}
