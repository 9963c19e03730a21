//! The request body of every call, followed as it arrives: its gRPC framing checked, its
//! messages counted, its bytes held in the connection's budget, a stall in the middle of a
//! message timed, and a client that goes away told apart from a body that is wrong.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::Request;
use http_body::{Body as HttpBody, Frame, SizeHint};
use prometheus::IntCounter;
use tonic::Status;

use crate::grpc::framing::Framing;
use crate::server::connection::ConnectionState;

pin_project_lite::pin_project! {
    /// A request body that follows its gRPC framing, as it arrives:
    /// - counts the messages read, for `grpc_server_msg_received_total`;
    /// - fails a body that ends inside a message, and one that carries a second message to a
    ///   method that takes one;
    /// - holds the bytes of the message in progress in the connection's budget (for streaming
    ///   calls, the largest message so far: tonic's decoder keeps that much buffer), failing
    ///   the call with RESOURCE_EXHAUSTED past it;
    /// - ends the call with DEADLINE_EXCEEDED when the client stops in the middle of a message,
    ///   or before a unary call's message is whole, for `--stall-timeout`;
    /// - turns a client that reset its stream or dropped its connection into CANCELLED, the
    ///   same on every path (tonic would say "Missing request message", or UNKNOWN).
    ///
    /// tonic's unary handling reads the first message and then drains and drops any others, for
    /// as long as the client sends them; gRPC allows exactly one (grpc-go and grpc-core refuse
    /// more). Refused here as they arrive, for every path.
    ///
    /// tonic's decoder misses a truncated message when the body stops right after a message's
    /// 5-byte prefix (it has consumed the prefix, finds its buffer empty, and takes the end of
    /// the body for a clean end of stream), so a stream's last, truncated message would vanish
    /// without an error. Found by `fuzz/`'s request target.
    pub struct RequestBody<B> {
        #[pin]
        inner: B,
        messages: Framing,
        counter: Option<IntCounter>,
        one_message: bool,
        ended: bool,
        connection: Option<Arc<ConnectionState>>,
        // Bytes held in the connection's budget.
        held: usize,
        // What a stream of compressed messages holds besides them, once one has come: tonic's
        // decoder keeps a buffer as large as the largest message decompressed, which may be
        // far larger than the bytes that came.
        decompression_cost: usize,
        // Raised when the client goes; already raised on the gRPC-Web path, where tonic-web
        // hides why the body failed.
        gone: ClientGone,
        stall: Option<Stall>,
    }

    impl<B> PinnedDrop for RequestBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(connection) = this.connection {
                connection.buffered.give_back(*this.held);
            }
        }
    }
}

/// The stall timer of a request body: armed when the body has nothing to give while a message
/// is incomplete, restarted by every byte.
struct Stall {
    timeout: Duration,
    /// Created the first time the body waits mid-message: most bodies never do.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Bytes came since the timer was last set.
    restart: bool,
}

impl Stall {
    /// Ready when the body has been waiting for `timeout` since its last bytes.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if std::mem::take(&mut self.restart) {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx)
    }

    fn status(&self) -> Status {
        Status::deadline_exceeded(format!(
            "request stalled: no bytes for {:?} in the middle of a message (--stall-timeout)",
            self.timeout
        ))
    }
}

impl<B> RequestBody<B> {
    /// `inner`, the body of a call that takes `one_request` message or a stream, followed.
    /// `received` counts its messages; `connection` holds its bytes; `gone` is raised if the
    /// client goes; `stall`, when set, is `--stall-timeout`; `decompression_cost`, what a stream
    /// of compressed messages holds besides them (0 when uncompressed).
    pub fn new(
        inner: B,
        one_request: bool,
        received: Option<IntCounter>,
        connection: Option<Arc<ConnectionState>>,
        gone: ClientGone,
        stall: Option<Duration>,
        decompression_cost: usize,
    ) -> Self {
        Self {
            inner,
            messages: Framing::default(),
            counter: received,
            one_message: one_request,
            ended: false,
            connection,
            held: 0,
            decompression_cost: if one_request { 0 } else { decompression_cost },
            gone,
            stall: stall.map(|timeout| Stall {
                timeout,
                timer: None,
                restart: true,
            }),
        }
    }

    /// Whether the call is waiting for bytes it cannot do without: the rest of a message, or a
    /// unary call's one message. Between the messages of a stream, waiting is the client's right.
    fn awaits_message(&self) -> bool {
        self.messages.mid_message() || (self.one_message && self.messages.complete() == 0)
    }
}

impl<B> HttpBody for RequestBody<B>
where
    B: HttpBody<Data = bytes::Bytes>,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let awaits_message = self.awaits_message();
        let this = self.as_mut().project();
        let frame = match this.inner.poll_frame(cx) {
            Poll::Pending => {
                if let Some(stall) = this.stall
                    && awaits_message
                    && stall.poll_expired(cx).is_ready()
                {
                    *this.ended = true;
                    return Poll::Ready(Some(Err(stall.status())));
                }
                return Poll::Pending;
            }
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(Some(Err(error))) => {
                *this.ended = true;
                let error = error.into();
                if this.gone.is_set() || is_transport_error(&*error) {
                    this.gone.set();
                    return Poll::Ready(Some(Err(client_went_away())));
                }
                return Poll::Ready(Some(Err(Status::from_error(error))));
            }
            Poll::Ready(None) => {
                *this.ended = true;
                if this.messages.mid_message() {
                    return Poll::Ready(Some(Err(Status::invalid_argument(
                        "truncated gRPC frame: unexpected EOF inside a message",
                    ))));
                }
                return Poll::Ready(None);
            }
        };
        if let Some(data) = frame.data_ref() {
            let began = this.messages.feed(data);
            if let Some(counter) = this.counter {
                counter.inc_by(began);
            }
            if let Some(stall) = this.stall {
                stall.restart = true;
            }
            if *this.one_message && this.messages.begun() > 1 {
                *this.ended = true;
                return Poll::Ready(Some(Err(more_than_one_message())));
            }
            if let Some(connection) = this.connection {
                connection.progressed();
                let wanted = match *this.one_message {
                    true => this.messages.partial(),
                    false if this.messages.begun() > 0 => {
                        this.messages.partial().max(this.messages.largest())
                            + *this.decompression_cost
                    }
                    false => 0,
                };
                if wanted > *this.held {
                    if let Err(status) = connection.buffered.take(wanted - *this.held) {
                        *this.ended = true;
                        return Poll::Ready(Some(Err(status)));
                    }
                } else {
                    connection.buffered.give_back(*this.held - wanted);
                }
                *this.held = wanted;
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        // Not done until the framing check has run at the end of the body.
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The status of a call whose client reset its stream or dropped its connection.
pub(super) fn client_went_away() -> Status {
    Status::cancelled("the client cancelled the call (stream reset or connection closed)")
}

/// Whether a request body failed because of its transport (a reset stream, a closed connection)
/// rather than its content.
fn is_transport_error(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |error| error.source()).any(|cause| {
        cause.is::<h2::Error>() || cause.is::<hyper::Error>() || cause.is::<std::io::Error>()
    })
}

/// Whether a gRPC-Web request's body failed because the client went away. tonic-web turns its
/// body's errors into a status carrying only their text, so the fact travels beside it, in the
/// request's extensions, from [`ClientGone::track`] to [`RequestBody`].
#[derive(Debug, Clone, Default)]
pub struct ClientGone(Arc<AtomicBool>);

impl ClientGone {
    /// Watches `request`'s body for transport errors, and leaves the flag in its extensions.
    pub fn track<B>(request: Request<B>) -> Request<Watched<B>> {
        let gone = Self::default();
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(gone.clone());
        Request::from_parts(parts, Watched { inner: body, gone })
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A request body that raises its [`ClientGone`] flag when it fails for transport reasons.
    pub struct Watched<B> {
        #[pin]
        inner: B,
        gone: ClientGone,
    }
}

impl<B> HttpBody for Watched<B>
where
    B: HttpBody,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Data = B::Data;
    type Error = tonic::codegen::StdError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        match ready!(this.inner.poll_frame(cx)) {
            Some(Err(error)) => {
                let error = error.into();
                if is_transport_error(&*error) {
                    this.gone.set();
                }
                Poll::Ready(Some(Err(error)))
            }
            other => Poll::Ready(other.map(|frame| frame.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The status of a unary call that carries a second message.
fn more_than_one_message() -> Status {
    Status::invalid_argument("more than one message in a unary call")
}
