//! The delaying TCP proxy (`delay-proxy`): puts a server on loopback a
//! round trip away. Each direction of a connection is a queue of chunks
//! stamped with the time they were read; a chunk goes out half a round trip
//! after that, so bytes keep flowing while earlier ones wait: latency is
//! added, throughput is not taken away. A new connection waits one whole
//! round trip before its first byte moves, as TCP's handshake would make it.
//!
//! It relays bytes and knows nothing of HTTP; `run.sh` puts it in front of
//! the plain upstream.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::Result;

/// The most one read takes in.
const CHUNK: usize = 64 * 1024;
/// Chunks waiting per direction of a connection. With CHUNK this bounds a
/// direction at 16 MiB, so memory cannot grow without limit; that is 1.6 GB/s
/// in flight at a 20 ms round trip, more than the small images it is used
/// for ever need. A full queue stops the reading (TCP's own backpressure).
const QUEUE: usize = 256;

/// Accepts connections on `listener` and relays each to `to` with `rtt`
/// added; runs until the process is killed.
pub(crate) async fn serve(listener: TcpListener, to: SocketAddr, rtt: Duration) -> Result<()> {
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                tokio::spawn(async move {
                    // A relay's error (a reset, a refused connect) ends that
                    // connection only; the client sees it closed.
                    let _ = relay(client, to, rtt).await;
                });
            }
            Err(e) => {
                // Out of descriptors, say: the listener itself is fine, so
                // wait a little rather than spin, and go on.
                eprintln!("delay-proxy: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn relay(client: TcpStream, to: SocketAddr, rtt: Duration) -> io::Result<()> {
    client.set_nodelay(true)?;
    tokio::time::sleep(rtt).await;
    let upstream = TcpStream::connect(to).await?;
    upstream.set_nodelay(true)?;
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    tokio::try_join!(one_way(client_read, upstream_write, rtt / 2), one_way(upstream_read, client_write, rtt / 2))?;
    Ok(())
}

/// Copies `from` to `to`, each chunk `delay` after it was read. An end of
/// stream is passed on (a half-close) once the queue has drained.
async fn one_way(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) -> io::Result<()> {
    let (queue, mut due) = mpsc::channel::<(Instant, Bytes)>(QUEUE);
    let read = async move {
        loop {
            let mut chunk = BytesMut::with_capacity(CHUNK);
            if from.read_buf(&mut chunk).await? == 0 {
                return Ok(());
            }
            if queue.send((Instant::now() + delay, chunk.freeze())).await.is_err() {
                // The writing side failed; its error ends the relay.
                return Ok(());
            }
        }
    };
    let write = async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            to.write_all(&chunk).await?;
        }
        to.shutdown().await
    };
    tokio::try_join!(read, write)?;
    Ok(())
}
