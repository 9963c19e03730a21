//! One client connection, from accept to close: the TLS handshake (if any), which protocol it
//! speaks, and what it may hold on to.
//!
//! A server that faces the network must bound what each peer can take. Here: a peer gets
//! `--handshake-timeout` to finish TLS and start speaking (a connection that opens and says
//! nothing is dropped, not kept forever); HTTP/2 peers are served by [`crate::server::transport::http2`], with
//! keepalive pings, a stream limit, flow-control windows, and GOAWAY ENHANCE_YOUR_CALM for a
//! client that cancels calls by the thousand (the "rapid reset" attack); HTTP/1.1 peers (for
//! gRPC-Web and the playground) by hyper, with a deadline on each request head. On either, a
//! connection on which no call made progress for `--idle-timeout` is closed, and what its calls
//! buffer is counted against `--max-buffered-bytes-per-connection`.

use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::telemetry::untrusted;
use bytes::{Buf, Bytes};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tonic::body::Body;
use tower::Service;
use tracing::{debug, warn};

use crate::server::budget::ByteBudget;
use crate::server::config::MAX_HTTP1_HEAD;
use crate::server::context::{ConnectionState, Idle};
use crate::server::peers::PeerSlot;
use crate::server::transport::http2::{self, H2Body, Http2Error, Http2Settings};

/// Every HTTP/2 connection starts with these 24 bytes from the client.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How every accepted connection is served; shared by all of them.
#[derive(Clone)]
pub(in crate::server) struct ConnectionSettings {
    /// TLS acceptor when `--tls-cert` is set; plaintext otherwise.
    pub tls: Option<TlsAcceptor>,
    /// How long a new peer gets for the TLS handshake and the start of its first request.
    pub handshake_timeout: Duration,
    /// Stream limit and keepalive of HTTP/2 connections.
    pub http2: Http2Settings,
    /// Whether HTTP/1.1 is served (for gRPC-Web and the playground); otherwise HTTP/2 only, as
    /// gRPC needs.
    pub http1: bool,
    /// `--stall-timeout`: also how long an HTTP/1.1 request head may take.
    pub stall_timeout: Duration,
    /// `--idle-timeout`: how long a connection may go without any call making progress.
    pub idle_timeout: Option<Duration>,
    /// `--max-buffered-bytes-per-connection`.
    pub max_buffered_bytes: usize,
}

impl ConnectionSettings {
    /// Serves one connection until it closes or is dropped for misbehaving, with the services
    /// `calls` makes for it. When `drain` changes (or its sender goes), the connection is
    /// drained: GOAWAY, calls in progress finish, then it closes.
    ///
    /// The settings and `calls` are the server's, shared by every connection: each connection's
    /// task holds a pointer to them, not a copy (an async function's arguments stay in its
    /// future for as long as it runs, beside what it moved them into).
    pub(in crate::server) async fn serve<C: CallService>(
        self: Arc<Self>,
        stream: TcpStream,
        slot: PeerSlot,
        calls: Arc<C>,
        drain: watch::Receiver<()>,
    ) {
        let peer = stream.peer_addr().ok();
        let buffered = ByteBudget::within(
            &slot.peer.budget,
            self.max_buffered_bytes,
            "--max-buffered-bytes-per-connection",
        );
        let mut connection = Connection {
            settings: &self,
            calls: &*calls,
            state: Arc::new(ConnectionState::new(peer, buffered, slot)),
            drain,
            deadline: Instant::now() + self.handshake_timeout,
        };
        // Each protocol's future is boxed where it starts: inline, this task's future would be
        // as large as the largest of them all (TLS and HTTP/1.1 included, 35 KB), on every
        // connection, whatever it speaks. Boxed, an HTTP/2 connection holds only HTTP/2's.
        let result = match &self.tls {
            None => Box::pin(connection.serve_plain(stream)).await,
            Some(acceptor) => Box::pin(connection.serve_tls(acceptor, stream)).await,
        };
        if let Err(ended) = result {
            ended.log(peer, self.handshake_timeout);
        }
    }
}

/// What serves the requests of one connection, made for it when it opens and bound to its
/// state: the call layers implement it (`calls/front.rs`), so the transport needs nothing else
/// of them.
pub(in crate::server) trait CallService: Send + 'static {
    /// For the streams of an HTTP/2 connection.
    type Http2: Service<Request<H2Body>, Response = Response<Body>, Error = Infallible, Future: Send>
        + Send;
    /// For the requests of an HTTP/1.1 connection (gRPC-Web and the playground).
    type Http1: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible, Future: Send>
        + Clone
        + Send
        + 'static;

    fn http2(&self, connection: &Arc<ConnectionState>) -> Self::Http2;
    fn http1(&self, connection: &Arc<ConnectionState>) -> Self::Http1;
}

/// One connection being served: what each of its protocols needs.
struct Connection<'a, C> {
    settings: &'a ConnectionSettings,
    calls: &'a C,
    state: Arc<ConnectionState>,
    drain: watch::Receiver<()>,
    /// When the TLS handshake and the first request bytes must have come.
    deadline: Instant,
}

impl<C: CallService> Connection<'_, C> {
    /// A TLS connection: the handshake, then the protocol ALPN named (or, without one, its
    /// first bytes).
    async fn serve_tls(&mut self, acceptor: &TlsAcceptor, stream: TcpStream) -> Result<(), Ended> {
        let stream = match tokio::time::timeout_at(self.deadline, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                // rustls's reasons can quote what the peer sent (a server name, say).
                let error = error.to_string();
                warn!(peer = ?self.state.peer, "TLS handshake failed: {}", untrusted(&error));
                return Ok(());
            }
            Err(_) => return Err(Ended::NoHandshake),
        };
        match stream.get_ref().1.alpn_protocol() {
            Some(b"h2") => Box::pin(self.serve_http2(stream)).await,
            Some(b"http/1.1") if self.settings.http1 => Box::pin(self.serve_http1(stream)).await,
            _ => Box::pin(self.serve_plain(stream)).await,
        }
    }

    /// A connection whose protocol its first bytes tell: the HTTP/2 preface, or (with gRPC-Web
    /// on) anything else for HTTP/1.1.
    async fn serve_plain<I>(&mut self, mut io: I) -> Result<(), Ended>
    where
        I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        if !self.settings.http1 {
            // HTTP/2 only: h2 answers anything else with its SETTINGS and a GOAWAY.
            return Box::pin(self.serve_http2(io)).await;
        }
        let (head, is_http2) = tokio::time::timeout_at(self.deadline, sniff(&mut io))
            .await
            .map_err(|_| Ended::NoHandshake)?
            .map_err(Ended::Io)?;
        let io = Rewind::new(head, io);
        if is_http2 {
            Box::pin(self.serve_http2(io)).await
        } else {
            Box::pin(self.serve_http1(io)).await
        }
    }

    async fn serve_http2<I>(&mut self, io: I) -> Result<(), Ended>
    where
        I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let service = self.calls.http2(&self.state);
        let idle = Idle::new(&self.state, self.settings.idle_timeout);
        let (http2, deadline) = (&self.settings.http2, self.deadline);
        http2::serve(
            io,
            service,
            http2,
            &self.state,
            idle,
            &mut self.drain,
            deadline,
        )
        .await
        .map_err(Ended::Http2)
    }

    /// HTTP/1.1 with hyper: a deadline on each request head (slowly sent, or awaited between
    /// requests), the idle timeout over the calls, and a graceful close on drain.
    async fn serve_http1<I>(&mut self, io: I) -> Result<(), Ended>
    where
        I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let head_timeout = self.settings.stall_timeout;
        let service = TowerToHyperService::new(self.calls.http1(&self.state));
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(head_timeout)
            .max_buf_size(MAX_HTTP1_HEAD);
        let mut connection = pin!(builder.serve_connection(TokioIo::new(io), service));
        let mut idle = Idle::new(&self.state, self.settings.idle_timeout);
        let mut closing = false;
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    return result.map_err(|error| Ended::Http1(error, head_timeout));
                }
                _ = self.drain.changed(), if !closing => {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
                () = std::future::poll_fn(|cx| idle.poll_idle(cx)) => {
                    debug!(peer = ?self.state.peer, "closed an HTTP/1.1 connection on which no call made progress for {:?}", idle.timeout());
                    return Ok(());
                }
            }
        }
    }
}

/// Reads the first bytes of a connection, as many as it takes to tell the HTTP/2 preface from
/// anything else; returns them and whether they are the preface.
async fn sniff<I: AsyncRead + Unpin>(io: &mut I) -> io::Result<(Bytes, bool)> {
    let mut head = Vec::with_capacity(H2_PREFACE.len());
    while head.len() < H2_PREFACE.len() {
        let mut byte_buffer = [0; 24];
        let wanted = H2_PREFACE.len() - head.len();
        let read = io.read(&mut byte_buffer[..wanted]).await?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&byte_buffer[..read]);
        if !H2_PREFACE.starts_with(&head) {
            return Ok((head.into(), false));
        }
    }
    let is_http2 = head == H2_PREFACE;
    Ok((head.into(), is_http2))
}

/// A connection whose first bytes were already read: they are read again first.
struct Rewind<I> {
    head: Bytes,
    inner: I,
}

impl<I> Rewind<I> {
    fn new(head: Bytes, inner: I) -> Self {
        Self { head, inner }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.head.is_empty() {
            let take = self.head.len().min(buf.remaining());
            buf.put_slice(&self.head[..take]);
            self.head.advance(take);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// How a connection ended, when that deserves a word in the log.
enum Ended {
    /// No TLS handshake or first request bytes before the handshake deadline.
    NoHandshake,
    Io(io::Error),
    Http2(Http2Error),
    /// hyper's error, and the head deadline it may have hit.
    Http1(hyper::Error, Duration),
}

impl Ended {
    /// A peer the server dropped for misbehaving gets a warning that says why; a peer that
    /// merely went away is routine.
    fn log(&self, peer: Option<SocketAddr>, handshake_timeout: Duration) {
        match self {
            Self::NoHandshake | Self::Http2(Http2Error::NoPreface) => warn!(
                ?peer,
                "dropped a connection: it sent no request (TLS handshake, HTTP/2 preface or \
                 HTTP/1.1 request line) within {handshake_timeout:?}"
            ),
            Self::Http2(Http2Error::KeepaliveTimedOut) => {
                warn!(?peer, "dropped a connection: keepalive ping unanswered")
            }
            Self::Http2(Http2Error::Protocol(error))
                if error.is_go_away() && error.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) =>
            {
                warn!(
                    ?peer,
                    "dropped a connection for abuse (GOAWAY ENHANCE_YOUR_CALM): {error}"
                )
            }
            Self::Http1(error, head_timeout) if error.is_timeout() => debug!(
                ?peer,
                "closed an HTTP/1.1 connection: no complete request head within {head_timeout:?}"
            ),
            Self::Io(error) => debug!(?peer, "connection ended: {error}"),
            Self::Http2(error) => debug!(?peer, "connection ended: {error}"),
            Self::Http1(error, _) => debug!(?peer, "connection ended: {error}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_sniffed_bytes_are_read_again() {
        let (mut client, server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"GET / HTTP/1.1\r\n")
            .await
            .unwrap();
        let mut server = server;
        let (head, is_http2) = sniff(&mut server).await.unwrap();
        assert!(!is_http2);
        assert!(b"GET / HTTP/1.1\r\n".starts_with(&head), "{head:?}");
        let mut rewound = Rewind::new(head, server);
        let mut line = [0; 16];
        rewound.read_exact(&mut line).await.unwrap();
        assert_eq!(&line, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn the_http2_preface_is_recognised_across_reads() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let write = async {
            for piece in H2_PREFACE.chunks(5) {
                tokio::io::AsyncWriteExt::write_all(&mut client, piece)
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
            }
        };
        let ((head, is_http2), ()) =
            tokio::join!(async { sniff(&mut server).await.unwrap() }, write);
        assert!(is_http2);
        assert_eq!(&head[..], H2_PREFACE);
    }
}
