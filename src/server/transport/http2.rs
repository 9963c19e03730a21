//! HTTP/2, served directly on the `h2` crate (the protocol engine hyper itself uses): the
//! connection's settings and its loop, which polls every stream's call itself, and the adapters
//! between h2's streams and the `http_body` bodies the services speak.
//!
//! Why not hyper's HTTP/2 server: it can only close a connection with GOAWAY NO_ERROR, so an
//! abuser is never told ENHANCE_YOUR_CALM; it hides whether a request body ended because the
//! client reset its stream; and its per-stream glue is work a gRPC server does not need. The
//! loop here is small: accept streams, answer keepalive pings, watch for drain, abuse and
//! idleness; run each stream's call and write its reply as the peer's window allows.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use h2::server::{Connection, SendResponse};
use h2::{Ping, PingPong, Reason, RecvStream, SendStream};
use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};
use tonic::body::Body;
use tower::Service;
use tracing::{debug, warn};

use crate::server::context::{CANCEL_BUDGET_DESCRIPTION, ConnectionState, Idle};
use crate::server::transport::control_frames::{CONTROL_FLOOD_DESCRIPTION, ControlFrames, Watched};

/// HTTP/2 flow-control window of each stream: what a client may send ahead of what the service
/// has read. The protocol's default, as grpc-go uses.
const STREAM_WINDOW: u32 = 64 * 1024;

/// HTTP/2 flow-control window of a whole connection: the most a peer can make the server buffer
/// in h2 itself, whatever it does with its streams (what the services read from there counts
/// against `--max-buffered-bytes-per-connection`). Eight streams' worth: calls of a few KiB
/// never notice it, and a server with thousands of connections cannot be made to hold more
/// than half a MiB of unread data for each.
const CONNECTION_WINDOW: u32 = 512 * 1024;

/// h2's budget for the framing overhead of small DATA frames it holds unread (each frame below
/// 256 bytes costs 256 minus its length, and about as many bytes of memory in h2's queues): a
/// peer sending one-byte frames must not make it keep a million of them. h2 derives it from
/// the window by default (half of it), which would drop a grpcio client streaming tiny messages
/// to a service reading them at the pace of its replies: 64 KiB of 25-byte messages costs about
/// 0.6 M. 2 M leaves room for three such streams on one connection, and caps what tiny frames
/// can cost a connection at about 2 MiB.
const DATA_FRAME_BUDGET: usize = 2 * 1024 * 1024;

/// Largest request head (HPACK-decoded headers) h2 takes in: twice the metadata a call may
/// have (`grpc::MAX_METADATA_BYTES`), so that a call a little over that limit gets
/// RESOURCE_EXHAUSTED with a message gRPC clients show, and only a head far over it h2's bare
/// 431 (which grpcio and grpc-js report as UNKNOWN). It also bounds what h2 holds of a head that
/// arrives in pieces.
const MAX_HEADER_LIST_SIZE: u32 = 2 * crate::grpc::MAX_METADATA_BYTES as u32;

/// Longest a keepalive ping may go unanswered before the peer is considered dead (gRPC's
/// default); shorter ping intervals use their own length, so a dead peer goes within two.
const MAX_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a connection closed for abuse may take to flush its GOAWAY before it is dropped.
const ABUSE_FLUSH: Duration = Duration::from_secs(1);

/// How the server's HTTP/2 connections are set up.
#[derive(Debug, Clone)]
pub(in crate::server) struct Http2Settings {
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub max_concurrent_streams: u32,
    /// Interval of keepalive pings; `None` turns them off.
    pub keepalive: Option<Duration>,
}

impl Http2Settings {
    fn builder(&self) -> h2::server::Builder {
        let mut builder = h2::server::Builder::new();
        builder
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .data_frame_budget(DATA_FRAME_BUDGET)
            .max_header_list_size(MAX_HEADER_LIST_SIZE)
            .max_concurrent_streams(self.max_concurrent_streams);
        builder
    }
}

/// Why a connection ended, when it was the server that ended it or the peer misbehaved.
#[derive(Debug, thiserror::Error)]
pub(in crate::server) enum Http2Error {
    #[error("no HTTP/2 preface before the handshake deadline")]
    NoPreface,
    #[error("keepalive ping unanswered")]
    KeepaliveTimedOut,
    #[error(transparent)]
    Protocol(#[from] h2::Error),
}

/// Serves one HTTP/2 connection until it closes: each stream is handed to `service`, and its
/// call polled here. On `drain`, GOAWAY and let the calls finish; when the connection's client
/// cancels calls by the thousand (the rapid-reset attack), GOAWAY ENHANCE_YOUR_CALM and close at
/// once; when no call has made progress for the idle timeout, GOAWAY and close.
///
/// A function returning an `async move` block rather than an `async fn`: an async fn moves its
/// arguments into locals, and its future keeps both copies for as long as the connection lives
/// (the service alone is over 200 bytes); the block uses what it captured where it lies.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would keep its arguments twice"
)]
pub(in crate::server) fn serve<'a, I, S>(
    io: I,
    mut service: S,
    settings: &'a Http2Settings,
    state: &'a ConnectionState,
    mut idle: Idle<'a>,
    drain: &'a mut watch::Receiver<()>,
    handshake_deadline: Instant,
) -> impl Future<Output = Result<(), Http2Error>> + 'a
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    S: Service<Request<H2Body>, Response = Response<Body>, Error = Infallible> + 'a,
{
    async move {
        let control_frames = Arc::new(ControlFrames::default());
        let io = Watched::new(io, control_frames.clone());
        // Boxed: the handshake (1.4 KB) would otherwise take room in this future beside the
        // connection it becomes, for the connection's whole life.
        let handshake = Box::pin(settings.builder().handshake::<_, Bytes>(io));
        let mut connection = tokio::time::timeout_at(handshake_deadline, handshake)
            .await
            .map_err(|_| Http2Error::NoPreface)??;
        let mut keepalive = settings.keepalive.map(|interval| {
            KeepAlive::new(connection.ping_pong().expect("taken once, here"), interval)
        });
        // The connection's streams, polled by this task rather than spawned each as a task of its
        // own: no task to allocate, schedule and wake per call, and on one core (the benchmark's
        // case) nothing lost. A connection's calls then share one core of a larger machine, as
        // its HTTP/2 framing does anyway; many connections still spread over all of them.
        let mut streams = FuturesUnordered::new();
        // Made once, not at every turn of the loop: each would register with (and leave) a Notify.
        let mut drained = pin!(drain.changed());
        let mut abused = pin!(state.cancels.exhausted());
        let mut flooded = pin!(control_frames.exhausted());
        let mut closing = false;
        loop {
            let event = poll_fn(|cx| {
                // New streams and finished calls, until neither comes: a call's reply is written
                // by polling the connection, so it goes out in this same turn.
                loop {
                    let mut moved = false;
                    loop {
                        match service.poll_ready(cx) {
                            Poll::Ready(Ok(())) => {}
                            Poll::Ready(Err(never)) => match never {},
                            // Not taking streams leaves them to flow control and the stream limit.
                            Poll::Pending => break,
                        }
                        match connection.poll_accept(cx) {
                            Poll::Ready(Some(Ok((request, respond)))) => {
                                let request = request.map(|recv| H2Body {
                                    recv,
                                    data_done: false,
                                });
                                streams
                                    .push(Box::pin(serve_stream(service.call(request), respond)));
                                moved = true;
                            }
                            Poll::Ready(Some(Err(error))) => {
                                return Poll::Ready(Event::Failed(error));
                            }
                            Poll::Ready(None) => return Poll::Ready(Event::Closed),
                            Poll::Pending => break,
                        }
                    }
                    while let Poll::Ready(Some(())) = streams.poll_next_unpin(cx) {
                        moved = true;
                    }
                    if !moved {
                        break;
                    }
                }
                if let Some(keepalive) = &mut keepalive
                    && keepalive.poll_dead(cx).is_ready()
                {
                    return Poll::Ready(Event::KeepaliveTimedOut);
                }
                if !closing {
                    if drained.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Event::Drain);
                    }
                    if abused.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Event::Abuse);
                    }
                    if flooded.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Event::ControlFlood);
                    }
                    if idle.poll_idle(cx).is_ready() {
                        return Poll::Ready(Event::Idle);
                    }
                }
                Poll::Pending
            })
            .await;
            match event {
                Event::Closed => return Ok(()),
                Event::Failed(error) => return Err(error.into()),
                Event::KeepaliveTimedOut => return Err(Http2Error::KeepaliveTimedOut),
                Event::Drain => {
                    closing = true;
                    connection.graceful_shutdown();
                }
                Event::Abuse | Event::ControlFlood => {
                    let (verb, abuse) = match event {
                        Event::Abuse => ("cancelled ", CANCEL_BUDGET_DESCRIPTION),
                        _ => ("", CONTROL_FLOOD_DESCRIPTION),
                    };
                    warn!(
                        peer = ?state.peer,
                        "closing a connection with GOAWAY ENHANCE_YOUR_CALM: its client {verb}{abuse}"
                    );
                    return close_now(&mut connection, Reason::ENHANCE_YOUR_CALM).await;
                }
                Event::Idle => {
                    debug!(
                        peer = ?state.peer,
                        "closing a connection on which no call made progress for {:?}",
                        idle.timeout()
                    );
                    return close_now(&mut connection, Reason::NO_ERROR).await;
                }
            }
        }
    }
}

/// What ended a turn of a connection's loop.
enum Event {
    /// The connection closed (after a drain, or the peer's GOAWAY).
    Closed,
    Failed(h2::Error),
    KeepaliveTimedOut,
    /// Shutdown began: GOAWAY, let the calls finish.
    Drain,
    /// The client cancelled calls by the thousand.
    Abuse,
    /// The client sent control frames far beyond its calls' share.
    ControlFlood,
    /// No call made progress for the idle timeout.
    Idle,
}

/// Sends GOAWAY with `reason` and closes the connection once it is flushed (whatever its open
/// streams), or after [`ABUSE_FLUSH`] if the peer does not read.
async fn close_now<I>(
    connection: &mut Connection<I, Bytes>,
    reason: Reason,
) -> Result<(), Http2Error>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    connection.abrupt_shutdown(reason);
    let flushed = async {
        // h2 closes the connection after the GOAWAY is written; polling accept drives that.
        while let Some(Ok(_)) = connection.accept().await {}
    };
    let _ = tokio::time::timeout(ABUSE_FLUSH, flushed).await;
    Ok(())
}

/// Keepalive pings: one every `interval`, each answered within the timeout, or the peer is
/// dead (a half-open TCP connection, a client behind a network that vanished).
struct KeepAlive {
    ping_pong: PingPong,
    interval: Duration,
    timeout: Duration,
    /// Until the next ping, or until the pong is due.
    timer: Pin<Box<Sleep>>,
    awaiting_pong: bool,
}

impl KeepAlive {
    fn new(ping_pong: PingPong, interval: Duration) -> Self {
        Self {
            ping_pong,
            interval,
            timeout: interval.min(MAX_KEEPALIVE_TIMEOUT),
            timer: Box::pin(tokio::time::sleep(interval)),
            awaiting_pong: false,
        }
    }

    /// Ready once a ping went unanswered for too long.
    fn poll_dead(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.awaiting_pong {
                match self.ping_pong.poll_pong(cx) {
                    Poll::Ready(Ok(_)) => {
                        self.awaiting_pong = false;
                        self.timer.as_mut().reset(Instant::now() + self.interval);
                        continue;
                    }
                    // The connection failed: accept reports why.
                    Poll::Ready(Err(_)) => return Poll::Pending,
                    Poll::Pending => {}
                }
                ready!(self.timer.as_mut().poll(cx));
                return Poll::Ready(());
            }
            ready!(self.timer.as_mut().poll(cx));
            if self.ping_pong.send_ping(Ping::opaque()).is_err() {
                return Poll::Pending;
            }
            self.awaiting_pong = true;
            self.timer.as_mut().reset(Instant::now() + self.timeout);
        }
    }
}

/// One stream: the reply of its `call`, written as the peer's flow-control window allows. A
/// reset from the client at any point drops the call, which cancels it.
async fn serve_stream<F>(call: F, mut respond: SendResponse<Bytes>)
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    let mut call = pin!(call);
    // The call first: usually it finishes on its first poll (the request came in one read).
    let replied = poll_fn(|cx| match call.as_mut().poll(cx) {
        Poll::Ready(Ok(response)) => Poll::Ready(Some(response)),
        Poll::Ready(Err(never)) => match never {},
        Poll::Pending => respond.poll_reset(cx).map(|_| None),
    })
    .await;
    let Some(response) = replied else {
        return;
    };
    let (parts, body) = response.into_parts();
    let end_of_stream = body.is_end_stream();
    match respond.send_response(Response::from_parts(parts, ()), end_of_stream) {
        Ok(send) if !end_of_stream => write_body(body, send).await,
        Ok(_) => {}
        Err(error) => debug!("cannot send a reply's headers: {error}"),
    }
}

/// Replies of at most this many bytes are handed to h2 whole, without waiting for window: a
/// unary call's cost covers what h2 then holds for a peer that does not read, and the hot path
/// saves a round of capacity bookkeeping.
const SMALL_DATA: usize = crate::server::budget::SMALL_UNARY_REPLY;

/// Writes `body` to the stream, each data frame in pieces the peer's window has room for, so h2
/// buffers no more than the peer asked for; ends with the trailers, or with an empty frame
/// closing the stream.
async fn write_body(body: Body, mut send: SendStream<Bytes>) {
    let mut body = pin!(body);
    loop {
        // The body first; the client's reset matters only while there is nothing to send.
        let frame = poll_fn(|cx| match body.as_mut().poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(Some(frame)),
            Poll::Pending => send.poll_reset(cx).map(|_| None),
        })
        .await;
        let frame = match frame {
            // The client reset the stream: dropping the body ends the call.
            None => return,
            Some(None) => {
                let _ = send.send_data(Bytes::new(), true);
                return;
            }
            Some(Some(Err(status))) => {
                debug!("a reply body failed: {status}");
                send.send_reset(Reason::INTERNAL_ERROR);
                return;
            }
            Some(Some(Ok(frame))) => frame,
        };
        let mut data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    let _ = send.send_trailers(trailers);
                }
                return;
            }
        };
        if data.len() <= SMALL_DATA {
            let last = body.is_end_stream();
            if send.send_data(data, last).is_err() || last {
                return;
            }
            continue;
        }
        while !data.is_empty() {
            send.reserve_capacity(data.len());
            let granted = poll_fn(|cx| {
                if send.poll_reset(cx).is_ready() {
                    return Poll::Ready(None);
                }
                match send.capacity() {
                    0 => send.poll_capacity(cx).map(|capacity| capacity?.ok()),
                    capacity => Poll::Ready(Some(capacity)),
                }
            })
            .await;
            let Some(granted) = granted.filter(|granted| *granted > 0) else {
                return;
            };
            let piece = data.split_to(granted.min(data.len()));
            let last = data.is_empty() && body.is_end_stream();
            if send.send_data(piece, last).is_err() || last {
                return;
            }
        }
    }
}

/// A request body read from an h2 stream. Each chunk's flow-control window is given back as the
/// chunk is handed over: what the service holds from there is its own to count.
pub(in crate::server) struct H2Body {
    recv: RecvStream,
    data_done: bool,
}

impl HttpBody for H2Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        if !self.data_done {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                // Any reset, NO_ERROR included: a client that resets its request stream has
                // abandoned the call.
                Some(Err(error)) => return Poll::Ready(Some(Err(error))),
                None => self.data_done = true,
            }
        }
        match ready!(self.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(error) => Poll::Ready(Some(Err(error))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl std::fmt::Debug for H2Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Body")
            .field("stream", &self.recv.stream_id())
            .finish()
    }
}
