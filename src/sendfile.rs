//! Zero-copy sends of stored files on plain HTTP/1.1 connections: the
//! kernel moves a warm blob's bytes from the page cache to the socket
//! (`sendfile`), with no copy into user space and no buffer to fill.
//!
//! Owns two halves that meet only through a per-connection queue:
//!
//! - [`FileSender`], the opaque capability the server puts into the
//!   extensions of each HTTP/1.x request. A handler asks it for a
//!   [`FileSender::frame`]: a body frame of the right length whose bytes are
//!   a *stand-in* (a slice of a private static buffer), while the file
//!   region it stands for joins the connection's queue.
//! - [`SendFileStream`], the connection's socket. hyper's HTTP/1.1 writer,
//!   in its vectored mode, queues body frames without copying them and
//!   hands them to `poll_write_vectored`; there the stream recognises a
//!   stand-in by its address (a pointer range check) and, instead of
//!   writing those bytes, `sendfile`s the same number of bytes of the region
//!   at the head of the queue. Every other byte (heads, manifests, fills'
//!   frames) is written as it is.
//!
//! Why this is exact: on an HTTP/1.1 connection hyper polls one response
//! body at a time, frame after frame, and writes every frame's bytes in the
//! order it polled them; a frame joins the queue when it is polled. So the
//! n-th stand-in byte written is the n-th queued file byte. This holds only
//! while every stand-in frame a body yields is written whole, which a body
//! guarantees by yielding exactly its `Content-Length` (hyper would cut a
//! frame that overran it). A stand-in reaching the socket without a queued
//! region is an error that closes the connection, never zeros on the wire.
//!
//! Must not touch: HTTP semantics (which requests or ranges: the handler
//! decides), storage's layout, or any connection but plain TCP. HTTP/2
//! multiplexes many bodies on one socket and TLS encrypts in user space, so
//! neither ever gets a [`FileSender`].
//!
//! The page cache: `sendfile` from a file that is not in memory would wait
//! for the disk on a runtime thread. The handler therefore hands a region to
//! [`FileSender::frame`] only after probing that it is cached
//! (`storage::probably_cached`), and reads it on the blocking pool
//! otherwise. Pages evicted between the probe and the send are read inside
//! `sendfile`; that window is short and needs memory pressure.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// The longest stand-in frame. 1 MiB frames measured no cheaper per GiB
/// than 256 KiB ones (each `sendfile` call moves what the socket's buffer
/// takes either way), and shorter frames let the connections sharing a
/// runtime thread take turns sooner.
pub(crate) const MAX_FRAME: usize = 256 * 1024;

/// The stand-in bytes. Never read and never written anywhere: only the
/// address of a slice says "this is a queued file region". Immutable and
/// never touched, so its pages (in the binary's read-only data) are never
/// resident.
static STAND_IN: [u8; MAX_FRAME] = [0; MAX_FRAME];

/// Whether `buf` is (part of) a stand-in frame.
fn is_stand_in(buf: &[u8]) -> bool {
    let start = STAND_IN.as_ptr() as usize;
    let at = buf.as_ptr() as usize;
    !buf.is_empty() && at >= start && at + buf.len() <= start + MAX_FRAME
}

/// A file region waiting to be sent: the bytes `[offset, offset + len)`.
struct Region {
    file: Arc<File>,
    offset: u64,
    len: u64,
}

type Queue = Arc<Mutex<VecDeque<Region>>>;

/// The capability to send file regions zero-copy on this request's
/// connection. Present in a request's extensions only on plain HTTP/1.x.
#[derive(Clone)]
pub(crate) struct FileSender {
    // A std mutex: held for a push or a pop, never across an await; the
    // body and the socket are polled by the same connection task, so it is
    // never contended.
    queue: Queue,
}

impl FileSender {
    /// A body frame standing for `len` bytes of `file` at `offset`
    /// (`len` is capped at [`MAX_FRAME`]: the frame's length says how much
    /// was taken). The frame must be yielded by the response body at once
    /// and written whole (see the module's comment).
    pub(crate) fn frame(&self, file: &Arc<File>, offset: u64, len: usize) -> Bytes {
        let len = len.min(MAX_FRAME);
        if len > 0 {
            let region = Region { file: file.clone(), offset, len: len as u64 };
            lock(&self.queue).push_back(region);
        }
        Bytes::from_static(&STAND_IN[..len])
    }
}

fn lock(queue: &Queue) -> std::sync::MutexGuard<'_, VecDeque<Region>> {
    // A panic while holding this lock would leave a queue no one can trust;
    // the connection's next stand-in write then fails instead of guessing.
    queue.lock().unwrap_or_else(|poisoned| {
        let mut q = poisoned.into_inner();
        q.clear();
        q
    })
}

/// A TCP connection whose writes send stand-in frames from their files.
pub(crate) struct SendFileStream {
    tcp: TcpStream,
    queue: Queue,
}

impl SendFileStream {
    pub(crate) fn new(tcp: TcpStream) -> SendFileStream {
        SendFileStream { tcp, queue: Queue::default() }
    }

    /// The capability for requests read from this connection.
    pub(crate) fn sender(&self) -> FileSender {
        FileSender { queue: self.queue.clone() }
    }

    /// Sends up to `want` bytes of the queued regions.
    fn poll_send_file(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            let mut queue = lock(&self.queue);
            let Some(region) = queue.front_mut() else {
                return Poll::Ready(Err(io::Error::other("a zero-copy frame without its file region")));
            };
            let count = region.len.min(want as u64) as usize;
            let mut offset = region.offset;
            let file = &*region.file;
            let tcp = &self.tcp;
            let sent = tcp.try_io(Interest::WRITABLE, || {
                rustix::fs::sendfile(tcp, file, Some(&mut offset), count).map_err(io::Error::from)
            });
            match sent {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "stored file ended before its region",
                    )))
                }
                Ok(n) => {
                    region.offset += n as u64;
                    region.len -= n as u64;
                    if region.len == 0 {
                        queue.pop_front();
                    }
                    return Poll::Ready(Ok(n));
                }
                // try_io cleared the readiness: wait for the next one.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncRead for SendFileStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendFileStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if is_stand_in(buf) {
            return self.poll_send_file(cx, buf.len());
        }
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    /// Writes the plain slices before the first stand-in in one `writev`,
    /// or, when a stand-in comes first, sends its file region.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let Some(first) = bufs.iter().position(|b| !b.is_empty()) else {
            return Poll::Ready(Ok(0));
        };
        if is_stand_in(&bufs[first]) {
            return self.poll_send_file(cx, bufs[first].len());
        }
        let plain = bufs[first..].iter().position(|b| is_stand_in(b)).map_or(bufs.len(), |i| first + i);
        Pin::new(&mut self.tcp).poll_write_vectored(cx, &bufs[first..plain])
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn file_with(bytes: &[u8]) -> (tempfile::NamedTempFile, Arc<File>) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f.flush().unwrap();
        let file = Arc::new(File::open(f.path()).unwrap());
        (f, file)
    }

    async fn pair() -> (SendFileStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (SendFileStream::new(server.unwrap().0), client.unwrap())
    }

    /// Writes `bufs` the way hyper's vectored writer does: call after call,
    /// advancing past whatever each call took, partial writes included.
    async fn write_all_vectored(stream: &mut SendFileStream, bufs: &[Bytes]) {
        let mut bufs: Vec<Bytes> = bufs.to_vec();
        while bufs.iter().any(|b| !b.is_empty()) {
            let iovs: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
            let mut n = stream.write_vectored(&iovs).await.unwrap();
            assert!(n > 0);
            for b in bufs.iter_mut() {
                let take = n.min(b.len());
                bytes::Buf::advance(b, take);
                n -= take;
            }
        }
    }

    #[test]
    fn only_slices_of_the_stand_in_are_recognised() {
        assert!(is_stand_in(&STAND_IN[..1]));
        assert!(is_stand_in(&STAND_IN[MAX_FRAME - 10..]));
        assert!(!is_stand_in(&STAND_IN[..0]), "an empty slice stands for nothing");
        let zeros = vec![0u8; 64];
        assert!(!is_stand_in(&zeros), "equal bytes elsewhere are plain bytes");
    }

    #[tokio::test]
    async fn stand_ins_interleaved_with_plain_bytes_arrive_as_the_files_bytes() {
        let data: Vec<u8> = (0..3 * MAX_FRAME as u32 + 1234).map(|i| (i % 251) as u8).collect();
        let (_tmp, file) = file_with(&data);
        let (mut server, mut client) = pair().await;
        let sender = server.sender();
        // A head, then the file from offset 7 in frames, as a body would
        // yield them, with a plain frame between (a second response's head).
        let mut frames = vec![Bytes::from_static(b"HEAD\r\n")];
        let mut pos = 7u64;
        while pos < data.len() as u64 {
            let frame = sender.frame(&file, pos, data.len() - pos as usize);
            pos += frame.len() as u64;
            frames.push(frame);
        }
        frames.push(Bytes::from_static(b"NEXT"));
        frames.push(sender.frame(&file, 0, 5));
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        });
        write_all_vectored(&mut server, &frames).await;
        server.shutdown().await.unwrap();
        drop(server);
        let got = reader.await.unwrap();
        let mut want = b"HEAD\r\n".to_vec();
        want.extend_from_slice(&data[7..]);
        want.extend_from_slice(b"NEXT");
        want.extend_from_slice(&data[..5]);
        assert_eq!(got.len(), want.len());
        assert!(got == want, "bytes differ");
        assert!(lock(&sender.queue).is_empty(), "every region was sent");
    }

    #[tokio::test]
    async fn a_stand_in_without_a_region_fails_instead_of_sending_zeros() {
        let (mut server, _client) = pair().await;
        let err = server.write(&STAND_IN[..16]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Other);
    }

    #[tokio::test]
    async fn a_file_shorter_than_its_region_fails() {
        let (_tmp, file) = file_with(b"short");
        let (mut server, _client) = pair().await;
        let frame = server.sender().frame(&file, 0, 100);
        assert_eq!(server.write(&frame).await.unwrap(), 5);
        let err = server.write(&frame[5..]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn a_closed_peer_ends_the_send_with_an_error() {
        let data = vec![1u8; 8 * MAX_FRAME];
        let (_tmp, file) = file_with(&data);
        let (mut server, client) = pair().await;
        drop(client);
        let sender = server.sender();
        let mut failed = false;
        for i in 0..8 {
            let frame = sender.frame(&file, (i * MAX_FRAME) as u64, MAX_FRAME);
            let mut rest = &frame[..];
            while !rest.is_empty() {
                match server.write(rest).await {
                    Ok(n) => rest = &rest[n..],
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            if failed {
                break;
            }
        }
        assert!(failed, "writing 8 MiB to a closed peer must fail");
    }
}
