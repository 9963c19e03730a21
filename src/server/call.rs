//! What happens to every gRPC call around the services, at the HTTP level: reject what is not
//! gRPC, enforce the caller's deadline, give tonic's own errors their standard status codes, and
//! log each call once with its method, status and duration.
//!
//! It sits between hyper and tonic's router, so it sees every call, to every service, exactly as
//! it arrives and leaves.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use http::header::CONTENT_TYPE;
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use percent_encoding::percent_decode;
use prometheus::IntCounter;
use tonic::body::Body;
use tonic::{Code, Status};
use tower::{Layer, Service};

use crate::server::connection::ConnectionState;
use crate::server::listen;
use crate::server::metrics::{CallMetrics, GrpcMetrics, MessageCounter, takes_one_request};
use tracing::{debug, warn};

/// Calls in progress, shared by every connection, so shutdown can say how many it cancels.
#[derive(Debug, Default)]
pub struct InFlight(AtomicUsize);

impl InFlight {
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Wraps the router in [`Calls`].
#[derive(Clone, Default)]
pub struct CallsLayer {
    pub in_flight: Arc<InFlight>,
    /// Prometheus metrics, when `--metrics-addr` asks for them.
    pub metrics: Option<GrpcMetrics>,
    /// `--stall-timeout`: how long a request may stop in the middle of a message; `None` waits
    /// for ever (the fuzz targets, which have no clock to spare).
    pub stall_timeout: Option<Duration>,
}

impl<S> Layer<S> for CallsLayer {
    type Service = Calls<S>;

    fn layer(&self, inner: S) -> Calls<S> {
        Calls {
            inner,
            in_flight: self.in_flight.clone(),
            metrics: self.metrics.clone(),
            stall_timeout: self.stall_timeout,
            connection: None,
        }
    }
}

/// The middleware itself; see the module documentation.
#[derive(Clone)]
pub struct Calls<S> {
    inner: S,
    in_flight: Arc<InFlight>,
    metrics: Option<GrpcMetrics>,
    stall_timeout: Option<Duration>,
    /// The connection the calls come on: where cancelled calls, buffered bytes and progress are
    /// counted. `None` outside a server (the fuzz targets).
    connection: Option<Arc<ConnectionState>>,
}

impl<S> Calls<S> {
    /// This middleware for the calls of one connection.
    pub fn for_connection(mut self, connection: Arc<ConnectionState>) -> Self {
        self.connection = Some(connection);
        self
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> Service<Request<B>> for Calls<S>
where
    S: Service<Request<Counted<B>>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let metrics = self
            .metrics
            .as_ref()
            .and_then(|metrics| metrics.start(request.uri().path()));
        if let Some(connection) = &self.connection {
            connection.progressed();
        }
        let one_message = takes_one_request(request.uri().path());
        // Shared by the request body, which sees the client go, and the call's log, which must
        // say so whatever status the handler made of it (tonic takes a cancelled request body
        // for a missing message).
        let gone = request
            .extensions()
            .get::<ClientGone>()
            .cloned()
            .unwrap_or_default();
        let request = request.map(|body| Counted {
            inner: body,
            messages: MessageCounter::default(),
            counter: metrics.as_ref().map(|metrics| metrics.received.clone()),
            one_message,
            ended: false,
            connection: self.connection.clone(),
            held: 0,
            gone: gone.clone(),
            stall: self.stall_timeout.map(|timeout| Stall {
                timeout,
                timer: None,
                restart: true,
            }),
        });
        let mut call = CallLog::start(
            request.uri(),
            self.in_flight.clone(),
            metrics,
            self.connection.clone(),
            gone,
        );
        if let Err(status) = call.charge(one_message) {
            call.finish(&status);
            return Box::pin(async move { Ok(status_response(&status)) });
        }

        if !is_grpc(request.headers()) {
            let status = Status::invalid_argument(format!(
                "content-type {:?} is not application/grpc",
                request.headers().get(CONTENT_TYPE)
            ));
            // HTTP 415 as the gRPC spec asks, so plain HTTP clients understand too; grpc-status
            // as grpc-go sends it, so gRPC clients get a real status rather than UNKNOWN.
            let mut response = status_response(&status);
            *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
            call.finish(&status);
            return Box::pin(async { Ok(response) });
        }
        let deadline = match grpc_timeout(request.headers()) {
            Ok(deadline) => deadline,
            Err(status) => {
                call.finish(&status);
                return Box::pin(async move { Ok(status_response(&status)) });
            }
        };

        // The clone that was made ready is the one to call (tower's rule); leave a fresh one.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        Box::pin(async move {
            let expires = deadline.map(|deadline| (deadline, Instant::now() + deadline));
            let reply = inner.call(request);
            let mut response = match expires {
                None => reply.await?,
                Some((deadline, at)) => match tokio::time::timeout_at(at.into(), reply).await {
                    Ok(response) => response?,
                    // Dropping the reply future cancels the handler: nobody waits for it.
                    Err(_) => status_response(&deadline_exceeded(deadline)),
                },
            };
            // A "trailers-only" response carries its status in the headers: the call ended
            // before a reply was produced. Otherwise the status comes in the body's trailers.
            if let Some(status) = standard_status(response.headers_mut(), call.method()) {
                call.finish(&status);
                return Ok(response);
            }
            // A streaming reply goes on after its headers: the deadline applies to it too.
            let deadline = expires.map(|(deadline, at)| Deadline {
                duration: deadline,
                timer: Box::pin(tokio::time::sleep_until(at.into())),
            });
            Ok(response.map(|body| {
                Body::new(LoggedBody {
                    inner: body,
                    call: Some(call),
                    deadline,
                })
            }))
        })
    }
}

/// One line per call when it ends: debug when OK, warn otherwise; in-flight accounting and
/// metrics.
struct CallLog {
    /// The request's `:path`, shared with it rather than copied.
    method: PathAndQuery,
    started: Instant,
    in_flight: Arc<InFlight>,
    finished: bool,
    /// This call's metrics; `None` without `--metrics-addr` or for an unknown method.
    metrics: Option<CallMetrics>,
    /// Reply messages seen so far, for `grpc_server_msg_sent_total`.
    sent: MessageCounter,
    /// Where a call its client cancels is counted, and its reply bytes.
    connection: Option<Arc<ConnectionState>>,
    /// Reply bytes handed to the connection and not yet taken by it, held in its budget.
    reply_held: usize,
    /// Raised if the client reset the call or dropped its connection.
    gone: ClientGone,
    /// What the call itself costs, held in the connection's budget while it runs.
    charged: usize,
}

impl CallLog {
    fn start(
        uri: &http::Uri,
        in_flight: Arc<InFlight>,
        metrics: Option<CallMetrics>,
        connection: Option<Arc<ConnectionState>>,
        gone: ClientGone,
    ) -> Self {
        in_flight.0.fetch_add(1, Ordering::Relaxed);
        Self {
            method: uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
            started: Instant::now(),
            in_flight,
            finished: false,
            metrics,
            sent: MessageCounter::default(),
            connection,
            reply_held: 0,
            gone,
            charged: 0,
        }
    }

    /// Holds what the call costs besides its messages in the connection's budget (see
    /// [`limits::call_cost`]), so the budgets bound thousands of quiet calls as they bound a few
    /// large ones.
    fn charge(&mut self, one_message: bool) -> Result<(), Status> {
        if let Some(connection) = &self.connection {
            let cost = listen::call_cost(one_message);
            connection.buffered.take(cost)?;
            self.charged = cost;
        }
        Ok(())
    }

    /// Holds `bytes` of reply in the connection's budget until [`Self::release_reply`]: a client
    /// that does not read its replies must not make the server keep them without limit.
    fn hold_reply(&mut self, bytes: usize) -> Result<(), Status> {
        self.release_reply();
        if let Some(connection) = &self.connection {
            connection.progressed();
            connection.buffered.take(bytes)?;
            self.reply_held = bytes;
        }
        Ok(())
    }

    /// Gives back the reply bytes held, once the connection has taken them.
    fn release_reply(&mut self) {
        if let Some(connection) = &self.connection {
            connection
                .buffered
                .give_back(std::mem::take(&mut self.reply_held));
        }
    }

    /// Counts the reply messages that begin in `data`.
    fn sending(&mut self, data: &[u8]) {
        if let Some(metrics) = &self.metrics {
            metrics.sent.inc_by(self.sent.feed(data));
        }
    }

    fn method(&self) -> &str {
        self.method.path()
    }

    fn finish(mut self, status: &Status) {
        self.finished = true;
        // Whatever the handler made of a body that broke off, the client cancelled the call.
        let gone;
        let status = match self.gone.is_set() {
            true => {
                gone = client_went_away();
                &gone
            }
            false => status,
        };
        if let Some(metrics) = &self.metrics {
            metrics.finish(status.code(), self.started.elapsed().as_secs_f64());
        }
        if status.code() == Code::Cancelled {
            self.count_cancelled();
        }
        let (method, code) = (self.method(), status.code());
        let duration_us = self.started.elapsed().as_micros() as u64;
        if code == Code::Ok {
            debug!(method, code = ?code, duration_us, "call finished");
        } else {
            warn!(method, code = ?code, message = status.message(), duration_us, "call failed");
        }
    }
}

impl CallLog {
    /// Counts this call against its connection's budget of cancelled calls.
    fn count_cancelled(&self) {
        if let Some(connection) = &self.connection {
            connection.cancels.record(self.started.elapsed());
        }
    }
}

impl Drop for CallLog {
    fn drop(&mut self) {
        self.release_reply();
        if let Some(connection) = &self.connection {
            connection.buffered.give_back(self.charged);
        }
        self.in_flight.0.fetch_sub(1, Ordering::Relaxed);
        if !self.finished {
            if let Some(metrics) = &self.metrics {
                metrics.finish(Code::Cancelled, self.started.elapsed().as_secs_f64());
            }
            self.count_cancelled();
            // The reply never completed: the client went away, or shutdown's grace ran out.
            let duration_us = self.started.elapsed().as_micros() as u64;
            warn!(
                method = self.method(),
                duration_us, "call cancelled before it finished"
            );
        }
    }
}

fn deadline_exceeded(deadline: Duration) -> Status {
    Status::deadline_exceeded(format!("deadline of {deadline:?} (grpc-timeout) exceeded"))
}

/// The caller's deadline, while a reply body is still being sent.
struct Deadline {
    duration: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

pin_project_lite::pin_project! {
    /// A reply body that logs the call when its trailers (and so its status) go out, and ends
    /// it with DEADLINE_EXCEEDED if the caller's deadline passes first.
    struct LoggedBody {
        #[pin]
        inner: Body,
        call: Option<CallLog>,
        deadline: Option<Deadline>,
    }
}

impl HttpBody for LoggedBody {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if this.call.is_none() {
            // Finished: by its own trailers, an error, or the deadline.
            return Poll::Ready(None);
        }
        if let Some(deadline) = this.deadline
            && deadline.timer.as_mut().poll(cx).is_ready()
        {
            let status = deadline_exceeded(deadline.duration);
            let mut trailers = HeaderMap::new();
            set_status_headers(&mut trailers, &status);
            if let Some(call) = this.call.take() {
                call.finish(&status);
            }
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        if let Some(call) = this.call.as_mut() {
            // The connection polls again once it has taken the last frame.
            call.release_reply();
        }
        let frame = ready!(this.inner.poll_frame(cx));
        let frame = match frame {
            Some(Ok(frame)) => match frame.into_trailers() {
                Ok(mut trailers) => {
                    if let Some(call) = this.call.take() {
                        let status = standard_status(&mut trailers, call.method())
                            .unwrap_or_else(|| Status::unknown("reply ended without grpc-status"));
                        call.finish(&status);
                    }
                    Frame::trailers(trailers)
                }
                Err(data) => {
                    if let (Some(call), Some(bytes)) = (this.call.as_mut(), data.data_ref()) {
                        if let Err(status) = call.hold_reply(bytes.len()) {
                            // Over the budget: the reply is dropped, the call ends here.
                            let mut trailers = HeaderMap::new();
                            set_status_headers(&mut trailers, &status);
                            if let Some(call) = this.call.take() {
                                call.finish(&status);
                            }
                            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                        }
                        call.sending(bytes);
                    }
                    data
                }
            },
            Some(Err(status)) => {
                if let Some(call) = this.call.take() {
                    call.finish(&status);
                }
                return Poll::Ready(Some(Err(status)));
            }
            None => {
                // Ended without trailers: not a valid gRPC reply, but nothing more to log.
                if let Some(call) = this.call.take() {
                    call.finish(&Status::unknown("reply ended without grpc-status"));
                }
                return Poll::Ready(None);
            }
        };
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.call.is_none() || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

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
    /// more), and the fast path refuses them as they arrive.
    ///
    /// tonic's decoder misses a truncated message when the body stops right after a message's
    /// 5-byte prefix (it has consumed the prefix, finds its buffer empty, and takes the end of
    /// the body for a clean end of stream), so a stream's last, truncated message would vanish
    /// without an error. Found by `fuzz/`'s request target.
    pub struct Counted<B> {
        #[pin]
        inner: B,
        messages: MessageCounter,
        counter: Option<IntCounter>,
        one_message: bool,
        ended: bool,
        connection: Option<Arc<ConnectionState>>,
        // Bytes held in the connection's budget.
        held: usize,
        // Raised when the client goes; already raised on the gRPC-Web path, where tonic-web
        // hides why the body failed.
        gone: ClientGone,
        stall: Option<Stall>,
    }

    impl<B> PinnedDrop for Counted<B> {
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

impl<B> Counted<B> {
    /// Whether the call is waiting for bytes it cannot do without: the rest of a message, or a
    /// unary call's one message. Between the messages of a stream, waiting is the client's right.
    fn awaits_message(&self) -> bool {
        self.messages.mid_message() || (self.one_message && self.messages.complete() == 0)
    }
}

impl<B> HttpBody for Counted<B>
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
                    false => this.messages.partial().max(this.messages.largest()),
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
fn client_went_away() -> Status {
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
/// request's extensions, from [`ClientGone::track`] to [`Counted`].
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

    fn is_set(&self) -> bool {
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

/// The status of a unary call that carries a second message, on either path.
pub(crate) fn more_than_one_message() -> Status {
    Status::invalid_argument("more than one message in a unary call")
}

/// Reads the call's status from `headers` (response headers or trailers), first rewriting the
/// codes tonic gives its own errors to the ones the gRPC spec and grpcio/grpc-go use:
///
/// - OUT_OF_RANGE -> RESOURCE_EXHAUSTED: tonic's message-size limits (our services never
///   return OUT_OF_RANGE themselves).
/// - INTERNAL -> INVALID_ARGUMENT: tonic's request decoding failures (a truncated frame, a bad
///   compression flag, no message at all, bytes that are not the message); our handlers never
///   return INTERNAL, so this is always bytes the caller sent.
/// - UNIMPLEMENTED with no message -> the same with the method named: tonic's router has no
///   such method.
fn standard_status(headers: &mut HeaderMap, method: &str) -> Option<Status> {
    let code = Code::from_bytes(headers.get(&GRPC_STATUS)?.as_bytes());
    if code == Code::Ok {
        // The common case, and nothing to rewrite.
        return Some(Status::ok(""));
    }
    let message = headers
        .get(&GRPC_MESSAGE)
        .map(|value| {
            percent_decode(value.as_bytes())
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    let status = match code {
        Code::OutOfRange => Status::resource_exhausted(message),
        Code::Internal => Status::invalid_argument(message),
        Code::Unimplemented if message.is_empty() => {
            Status::unimplemented(format!("unknown method {method}"))
        }
        _ => return Some(Status::new(code, message)),
    };
    set_status_headers(headers, &status);
    Some(status)
}

// Header names as constants: looking up a `&str` parses and validates it on every call, which
// showed in profiles of the per-call path.
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// A trailers-only gRPC response carrying `status`.
pub(crate) fn status_response(status: &Status) -> Response<Body> {
    let mut response = Response::new(Body::default());
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    set_status_headers(response.headers_mut(), status);
    response
}

/// Sets `grpc-status` and `grpc-message` (percent-encoded) for `status`.
pub(crate) fn set_status_headers(headers: &mut HeaderMap, status: &Status) {
    // tonic's own encoder (percent-encoding the message) keeps the two in agreement.
    let encoded = Status::new(status.code(), status.message())
        .into_http::<()>()
        .into_parts()
        .0
        .headers;
    headers.remove(&GRPC_MESSAGE);
    for name in [GRPC_STATUS, GRPC_MESSAGE] {
        if let Some(value) = encoded.get(&name) {
            headers.insert(name, value.clone());
        }
    }
}

/// gRPC is `application/grpc`, optionally with a `+proto`-style suffix or parameters.
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .strip_prefix("application/grpc")
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['+', ';']))
        })
}

/// The caller's deadline from `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n).
fn grpc_timeout(headers: &HeaderMap) -> Result<Option<Duration>, Status> {
    let Some(value) = headers.get("grpc-timeout") else {
        return Ok(None);
    };
    let invalid = || Status::invalid_argument(format!("malformed grpc-timeout {value:?}"));
    let text = value.to_str().map_err(|_| invalid())?;
    if text.len() < 2 || text.len() > 9 {
        return Err(invalid());
    }
    let (amount, unit) = text.split_at(text.len() - 1);
    let amount: u64 = amount.parse().map_err(|_| invalid())?;
    let duration = match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return Err(invalid()),
    };
    Ok(Some(duration))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    http::HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                )
            })
            .collect()
    }

    #[test]
    fn grpc_timeout_units() {
        let timeout = |value| grpc_timeout(&headers(&[("grpc-timeout", value)]));
        assert_eq!(timeout("1H").unwrap(), Some(Duration::from_secs(3600)));
        assert_eq!(timeout("2M").unwrap(), Some(Duration::from_secs(120)));
        assert_eq!(timeout("3S").unwrap(), Some(Duration::from_secs(3)));
        assert_eq!(timeout("250m").unwrap(), Some(Duration::from_millis(250)));
        assert_eq!(
            timeout("99999999u").unwrap(),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(timeout("5n").unwrap(), Some(Duration::from_nanos(5)));
        for bad in ["", "S", "10", "1x", "-1S", "123456789S"] {
            assert_eq!(
                timeout(bad).unwrap_err().code(),
                Code::InvalidArgument,
                "{bad:?}"
            );
        }
        assert_eq!(grpc_timeout(&HeaderMap::new()).unwrap(), None);
    }

    #[test]
    fn grpc_content_types() {
        let is = |value| is_grpc(&headers(&[("content-type", value)]));
        assert!(is("application/grpc"));
        assert!(is("application/grpc+proto"));
        assert!(is("application/grpc;charset=utf-8"));
        assert!(!is("application/grpcx"));
        assert!(!is("application/json"));
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn tonic_errors_get_standard_codes() {
        let mut too_big = headers(&[("grpc-status", "11"), ("grpc-message", "too%20large")]);
        let status = standard_status(&mut too_big, "/m").unwrap();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.message(), "too large");
        assert_eq!(too_big["grpc-status"], "8");

        let mut unknown = headers(&[("grpc-status", "12")]);
        let status = standard_status(&mut unknown, "/x.Y/Z").unwrap();
        assert_eq!(status.message(), "unknown method /x.Y/Z");

        let mut ok = headers(&[("grpc-status", "0")]);
        assert_eq!(standard_status(&mut ok, "/m").unwrap().code(), Code::Ok);
        assert!(standard_status(&mut HeaderMap::new(), "/m").is_none());
    }
}
