//! One client connection, from accept to close: the TLS handshake (if any), the HTTP/2 settings
//! and limits it is served with, and the peers it drops.
//!
//! A server that faces the network must bound what each peer can hold on to. Here: a peer gets
//! `--handshake-timeout` to finish TLS and send the HTTP/2 preface (a connection that opens and
//! says nothing is dropped, not kept forever), keepalive pings drop peers that stop answering,
//! the stream limit and flow-control windows bound each peer's calls and buffers, and h2 sends
//! GOAWAY ENHANCE_YOUR_CALM to peers that reset streams in a flood (the "rapid reset" attack).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tonic::body::Body;
use tracing::{debug, warn};

/// HTTP/2 flow-control window of each stream: what a client may send ahead of what the service
/// has read. The protocol's default, as grpc-go uses; it bounds a stalled stream's buffer.
const STREAM_WINDOW: u32 = 64 * 1024;

/// HTTP/2 flow-control window of a whole connection.
///
/// Larger than the streams' sum would need, on purpose: h2 drops a connection (GOAWAY
/// ENHANCE_YOUR_CALM "too_many_data_frames") when it holds more small DATA frames than a budget
/// of half this window allows. A grpcio client streaming tiny messages to a service that reads
/// them at the pace of its replies (`DoFormatStream`, flow-controlled) fills a stream window with
/// thousands of frames: 64 KiB of 25-byte messages costs ~0.6 M of that budget, so 16 MiB
/// (8 M) leaves room for a dozen such stalled streams per connection.
const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

/// Longest a keepalive ping may go unanswered before the peer is considered dead (gRPC's
/// default); shorter ping intervals use their own length, so a dead peer goes within two.
const MAX_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Every HTTP/2 connection starts with these 24 bytes from the client.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long an HTTP/1.1 connection may wait for its next request head (slowly sent, or idle
/// between requests): hyper counts both. Longer than the handshake deadline, so a browser's idle
/// connection lives on between a person's clicks.
const HTTP1_HEAD_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the calls in progress on a connection drained for abuse get before it is closed: an
/// abuser must not keep it open by holding its streams.
const ABUSE_GRACE: Duration = Duration::from_secs(1);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How every accepted connection is served; shared by all of them.
#[derive(Clone)]
pub struct ConnectionSettings {
    /// TLS acceptor when `--tls-cert` is set; plaintext otherwise.
    pub tls: Option<TlsAcceptor>,
    /// How long a new peer gets for the TLS handshake and its first request together.
    pub handshake_timeout: Duration,
    /// HTTP/2 settings (windows, stream limit, keepalive), and HTTP/1.1 when gRPC-Web needs it.
    pub http: auto::Builder<TokioExecutor>,
}

impl ConnectionSettings {
    /// `http1`: also serve HTTP/1.1 (for gRPC-Web and the playground); otherwise HTTP/2 only,
    /// as gRPC needs.
    pub fn new(
        tls: Option<TlsAcceptor>,
        handshake_timeout: Duration,
        max_concurrent_streams: u32,
        keepalive: Option<Duration>,
        http1: bool,
    ) -> Self {
        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http2()
            .timer(TokioTimer::new())
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_concurrent_streams(max_concurrent_streams)
            .keep_alive_interval(keepalive)
            .keep_alive_timeout(keepalive.map_or(MAX_KEEPALIVE_TIMEOUT, |interval| {
                interval.min(MAX_KEEPALIVE_TIMEOUT)
            }));
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HTTP1_HEAD_TIMEOUT);
        if !http1 {
            http = http.http2_only();
        }
        Self {
            tls,
            handshake_timeout,
            http,
        }
    }

    /// Serves one connection until it closes or is dropped for misbehaving. When `drain`
    /// changes (or its sender goes), the connection is drained: GOAWAY, calls in progress
    /// finish, then it closes. `cancels` is where the service counts the calls its client
    /// cancels.
    pub async fn serve<S>(
        self,
        stream: TcpStream,
        service: S,
        cancels: Arc<CancelBudget>,
        mut drain: watch::Receiver<()>,
    ) where
        S: HttpService,
        S::Future: Send + 'static,
    {
        let peer = stream.peer_addr().ok();
        let deadline = Instant::now() + self.handshake_timeout;
        let result = match &self.tls {
            None => {
                let stream = PrefaceDeadline::new(stream, deadline);
                self.serve_http(stream, service, &cancels, &mut drain, peer)
                    .await
            }
            Some(acceptor) => {
                match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let stream = PrefaceDeadline::new(stream, deadline);
                        self.serve_http(stream, service, &cancels, &mut drain, peer)
                            .await
                    }
                    Ok(Err(error)) => {
                        warn!(?peer, "TLS handshake failed: {error}");
                        return;
                    }
                    Err(_) => {
                        warn!(
                            ?peer,
                            "dropped a connection: no TLS handshake within {:?}",
                            self.handshake_timeout
                        );
                        return;
                    }
                }
            }
        };
        if let Err(error) = result {
            log_end(peer, &*error, self.handshake_timeout);
        }
    }

    /// HTTP over `io` until the connection ends, draining it on `drain` or when its client has
    /// cancelled too many calls.
    async fn serve_http<I, S>(
        &self,
        io: I,
        service: S,
        cancels: &CancelBudget,
        drain: &mut watch::Receiver<()>,
        peer: Option<SocketAddr>,
    ) -> Result<(), BoxError>
    where
        I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
        S: HttpService,
        S::Future: Send + 'static,
    {
        let mut connection = pin!(self.http.serve_connection(TokioIo::new(io), service));
        let mut closing = false;
        let mut abuse_grace = pin!(None::<tokio::time::Sleep>);
        loop {
            tokio::select! {
                result = connection.as_mut() => return result,
                _ = drain.changed(), if !closing => {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
                () = cancels.exhausted(), if !closing => {
                    closing = true;
                    warn!(
                        ?peer,
                        "closing a connection whose client cancelled more than \
                         {MAX_CANCELLED_CALLS} calls in {CANCEL_WINDOW:?}, each within \
                         {RAPID_CANCEL:?} (a rapid-reset flood?)"
                    );
                    connection.as_mut().graceful_shutdown();
                    abuse_grace.set(Some(tokio::time::sleep(ABUSE_GRACE)));
                }
                () = async { abuse_grace.as_mut().as_pin_mut().expect("set").await },
                    if abuse_grace.is_some() =>
                {
                    warn!(?peer, "dropped the connection: its calls outlived {ABUSE_GRACE:?}");
                    return Ok(());
                }
            }
        }
    }
}

/// What a connection is served with: the middleware stack, as hyper calls it.
pub trait HttpService:
    hyper::service::Service<
        http::Request<Incoming>,
        Response = http::Response<Body>,
        Error = Infallible,
    > + Clone
    + Send
    + 'static
{
}

impl<S> HttpService for S where
    S: hyper::service::Service<
            http::Request<Incoming>,
            Response = http::Response<Body>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static
{
}

/// Calls one connection's client may cancel, each within [`RAPID_CANCEL`] of its start, within
/// [`CANCEL_WINDOW`] before the connection is drained. Thousands a second is the "rapid reset"
/// attack, which h2's own check (reset streams still waiting to be accepted) only catches when
/// the server is slower than the flood.
const MAX_CANCELLED_CALLS: u32 = 1000;

/// Only calls cancelled this soon count: a client gives up on a call now and then (its deadline,
/// a person leaving), rarely within milliseconds of making it, while a flood resets each stream
/// at once. A peer that waits longer before each reset holds the stream meanwhile, so the stream
/// limit bounds it like any busy client.
const RAPID_CANCEL: Duration = Duration::from_millis(10);

/// The window [`MAX_CANCELLED_CALLS`] is counted over.
const CANCEL_WINDOW: Duration = Duration::from_secs(10);

/// Calls cancelled by one connection's client: the middleware records them, the connection
/// drains itself when the budget is spent.
#[derive(Debug, Default)]
pub struct CancelBudget {
    /// Start of the current window, and calls cancelled in it.
    window: Mutex<Option<(Instant, u32)>>,
    /// Woken when the budget is spent.
    spent: Notify,
}

impl CancelBudget {
    /// Counts one call the client cancelled before it finished, `lived` after it started.
    pub fn record(&self, lived: Duration) {
        if lived >= RAPID_CANCEL {
            return;
        }
        let now = Instant::now();
        let mut window = self
            .window
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (started, cancelled) = match *window {
            Some((started, cancelled)) if now - started < CANCEL_WINDOW => (started, cancelled + 1),
            _ => (now, 1),
        };
        *window = Some((started, cancelled));
        if cancelled == MAX_CANCELLED_CALLS + 1 {
            self.spent.notify_one();
        }
    }

    /// Completes once more calls than the budget allows were cancelled in one window.
    async fn exhausted(&self) {
        self.spent.notified().await;
    }
}

/// Logs why a connection ended with an error: a peer the server dropped for misbehaving gets a
/// warning that says why; a peer that merely went away is routine.
fn log_end(
    peer: Option<SocketAddr>,
    error: &(dyn std::error::Error + 'static),
    handshake_timeout: Duration,
) {
    let causes = std::iter::successors(Some(error), |error| error.source());
    for cause in causes {
        if let Some(io) = cause.downcast_ref::<io::Error>()
            && io.kind() == io::ErrorKind::TimedOut
            && io.get_ref().is_some_and(|inner| inner.is::<NoPreface>())
        {
            warn!(
                ?peer,
                "dropped a connection: it sent no request (HTTP/2 preface or HTTP/1.1 request \
                 line) within {handshake_timeout:?}"
            );
            return;
        }
        if let Some(hyper) = cause.downcast_ref::<hyper::Error>()
            && hyper.is_timeout()
        {
            // hyper tells the two timeouts apart only by their text.
            if hyper.to_string().contains("read header") {
                debug!(
                    ?peer,
                    "closed an HTTP/1.1 connection: no request head within {HTTP1_HEAD_TIMEOUT:?}"
                );
            } else {
                warn!(?peer, "dropped a connection: keepalive ping unanswered");
            }
            return;
        }
        if let Some(h2) = cause.downcast_ref::<h2::Error>()
            && h2.is_go_away()
            && h2.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM)
        {
            warn!(
                ?peer,
                "dropped a connection for abuse (GOAWAY ENHANCE_YOUR_CALM): {h2}"
            );
            return;
        }
    }
    debug!(?peer, "connection ended with an error: {error}");
}

/// The error a connection fails with when its preface is late.
#[derive(Debug, thiserror::Error)]
#[error("no HTTP/2 preface before the handshake deadline")]
struct NoPreface;

/// A connection that must deliver the HTTP/2 preface by a deadline; after that, a plain
/// pass-through.
///
/// hyper's HTTP/2 server waits for the preface forever, and keepalive pings start only after
/// it, so without this a peer that connects and sends nothing holds its socket (and a file
/// descriptor) for as long as it likes. Bytes that are not the preface are HTTP/1.1 (or junk
/// hyper refuses at once), whose request heads hyper times out itself: the deadline ends there.
struct PrefaceDeadline<S> {
    inner: S,
    /// Cleared once the preface is in, or the bytes turn out to be something else.
    deadline: Option<Pin<Box<Sleep>>>,
    /// Preface bytes matched so far.
    matched: usize,
}

impl<S> PrefaceDeadline<S> {
    fn new(inner: S, deadline: Instant) -> Self {
        Self {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep_until(deadline))),
            matched: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for PrefaceDeadline<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        let Some(deadline) = this.deadline.as_mut() else {
            return read;
        };
        match read {
            Poll::Ready(Ok(())) => {
                let received = &buf.filled()[before..];
                let expected = &H2_PREFACE[this.matched..];
                let compared = received.len().min(expected.len());
                this.matched += compared;
                if received.is_empty()
                    || received[..compared] != expected[..compared]
                    || this.matched == H2_PREFACE.len()
                {
                    // End of stream, not HTTP/2, or the whole preface: nothing left to wait for.
                    this.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if deadline.as_mut().poll(cx).is_ready() => {
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, NoPreface)))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for PrefaceDeadline<S> {
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
