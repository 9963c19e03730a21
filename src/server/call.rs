//! What happens around every gRPC call, to every service, on every path: admission (gRPC only,
//! within the connection's budget), its request body followed ([`RequestBody`]), and its end
//! accounted once: one log line with its method, status and duration, the in-flight count, the
//! metrics, the call's OpenTelemetry span (when tracing is on), and the connection's count of
//! calls its client cancelled.
//!
//! Outermost in the call stack (see [`crate::server`]), so it sees each call exactly as it
//! arrives and leaves.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use http::header::CONTENT_TYPE;
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::body::Body;
use tonic::{Code, Status};
use tower::{Layer, Service};
use tracing::field::display;
use tracing::{debug, warn};

use crate::grpc::compression::{self, Encoding, GRPC_ENCODING, ReplyCompression};
use crate::grpc::framing::Framing;
use crate::grpc::methods;
use crate::grpc::status::{standard_status, status_response, status_trailers};
use crate::grpc::{MAX_METADATA_BYTES, is_grpc, metadata_size};
use crate::otel::{CallSpan, Tracing};
use crate::server::budget::{self, StreamClaim, shed_status};
use crate::server::compress::CompressedReplies;
use crate::server::connection::ConnectionState;
use crate::server::metrics::{CallMetrics, GrpcMetrics};
use crate::server::request_body::{ClientGone, RequestBody, client_went_away};
use crate::telemetry::untrusted;

/// Calls in progress, shared by every connection, so shutdown can say how many it cancels.
#[derive(Debug, Default)]
pub(super) struct InFlight(AtomicUsize);

impl InFlight {
    pub(super) fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Wraps the router in [`Calls`].
#[derive(Clone, Default)]
pub(super) struct CallsLayer {
    pub in_flight: Arc<InFlight>,
    /// Prometheus metrics, when `--metrics-addr` asks for them.
    pub metrics: Option<GrpcMetrics>,
    /// `--stall-timeout`: how long a request may stop in the middle of a message; `None` waits
    /// for ever (the fuzz targets, which have no clock to spare).
    pub stall_timeout: Option<Duration>,
    /// A span per call, when OpenTelemetry export is on.
    pub tracing: Option<Tracing>,
    /// When replies are compressed (`--compress-replies`).
    pub reply_compression: ReplyCompression,
    /// `--max-message-bytes`: as much as decompressing one request message may take.
    pub max_message_bytes: usize,
}

impl<S> Layer<S> for CallsLayer {
    type Service = Calls<S>;

    fn layer(&self, inner: S) -> Calls<S> {
        Calls {
            inner,
            in_flight: self.in_flight.clone(),
            metrics: self.metrics.clone(),
            stall_timeout: self.stall_timeout,
            tracing: self.tracing.clone(),
            reply_compression: self.reply_compression,
            max_message_bytes: self.max_message_bytes,
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
    tracing: Option<Tracing>,
    reply_compression: ReplyCompression,
    max_message_bytes: usize,
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

impl<S, B> Service<Request<B>> for Calls<S>
where
    S: Service<Request<RequestBody<B>>, Response = Response<Body>, Error = Infallible>,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = CallFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let method = methods::served().find(request.uri().path());
        let metrics = self
            .metrics
            .as_ref()
            .zip(method)
            .map(|(metrics, method)| metrics.start(method));
        if let Some(connection) = &self.connection {
            connection.progressed();
        }
        // Unknown methods are refused by the router, with one request or many.
        let one_request = method.is_some_and(|method| method.kind.one_request());
        let one_reply = method.is_some_and(|method| method.kind.one_reply());
        let request_encoding = request.headers().get(GRPC_ENCODING);
        let compressed = request_encoding.is_some_and(|encoding| encoding != "identity");
        let encoding = compression::reply_encoding(
            request.headers(),
            request_encoding,
            self.reply_compression,
        );
        // Shared by the request body, which sees the client go, and the call's log, which must
        // say so whatever status the handler made of it (tonic takes a cancelled request body
        // for a missing message).
        let gone = request
            .extensions()
            .get::<ClientGone>()
            .cloned()
            .unwrap_or_default();
        let decompression_cost = if compressed {
            self.max_message_bytes
        } else {
            0
        };
        let request = request.map(|body| {
            RequestBody::new(
                body,
                one_request,
                metrics.as_ref().map(CallMetrics::received),
                self.connection.clone(),
                gone.clone(),
                self.stall_timeout,
                decompression_cost,
            )
        });
        // Streams may be shed when the server runs short; a unary call is over soon anyway.
        let claim = match &self.connection {
            Some(connection) if !(one_request && one_reply) => {
                Some(connection.buffered.claim_stream())
            }
            _ => None,
        };
        let span = self.tracing.as_ref().map(|tracing| {
            tracing.server_span(
                method,
                request.uri(),
                request.headers(),
                self.connection
                    .as_ref()
                    .and_then(|connection| connection.peer),
            )
        });
        let mut call = CallLog::start(
            request.uri(),
            self.in_flight.clone(),
            metrics,
            self.connection.clone(),
            gone,
            span,
            claim,
        );
        if let Err(status) = call.charge(one_request) {
            call.finish(&status);
            return CallFuture::Answered {
                response: Some(status_response(&status)),
            };
        }
        let metadata = metadata_size(&request);
        if metadata > MAX_METADATA_BYTES {
            let status = Status::resource_exhausted(format!(
                "request metadata of {metadata} bytes is over the {MAX_METADATA_BYTES}-byte limit"
            ));
            call.finish(&status);
            return CallFuture::Answered {
                response: Some(status_response(&status)),
            };
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
            return CallFuture::Answered {
                response: Some(response),
            };
        }
        CallFuture::Running {
            reply: self.inner.call(request),
            call: Some(call),
            encoding,
        }
    }
}

pin_project_lite::pin_project! {
    /// A call's reply: answered at once (refused), or coming from the services, its log kept
    /// for when its status is known. Dropped unfinished (the client reset the stream), the log
    /// counts the call as cancelled.
    #[project = CallProjection]
    pub enum CallFuture<F> {
        Answered { response: Option<Response<Body>> },
        Running { #[pin] reply: F, call: Option<CallLog>, encoding: Option<Encoding> },
    }
}

impl<F> Future for CallFuture<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            CallProjection::Answered { response } => {
                Poll::Ready(Ok(response.take().expect("polled once")))
            }
            CallProjection::Running {
                reply,
                call,
                encoding,
            } => {
                if call.as_ref().is_some_and(|call| call.poll_shed(cx)) {
                    let status = shed_status();
                    call.take().expect("polled once").finish(&status);
                    return Poll::Ready(Ok(status_response(&status)));
                }
                let mut response = ready!(reply.poll(cx))?;
                let call = call.take().expect("polled once");
                // A "trailers-only" response carries its status in the headers: the call ended
                // before a reply was produced. Otherwise the status comes in the body's
                // trailers.
                if let Some(status) = standard_status(response.headers_mut(), call.method()) {
                    call.finish(&status);
                    return Poll::Ready(Ok(response));
                }
                let logged = response.map(|body| {
                    Body::new(LoggedBody {
                        inner: body,
                        call: Some(call),
                        lookahead: None,
                    })
                });
                // Compressed after the log has counted (and held) each message uncompressed:
                // the uncompressed size is what the service's encoder keeps.
                Poll::Ready(Ok(match *encoding {
                    None => logged,
                    Some(encoding) => {
                        let (mut parts, body) = logged.into_parts();
                        parts.headers.insert(
                            GRPC_ENCODING,
                            http::HeaderValue::from_static(encoding.name()),
                        );
                        Response::from_parts(
                            parts,
                            Body::new(CompressedReplies::new(body, encoding)),
                        )
                    }
                }))
            }
        }
    }
}

/// One line per call when it ends: debug when OK, warn otherwise; in-flight accounting and
/// metrics.
pub struct CallLog {
    /// The request's `:path`, shared with it rather than copied.
    method: PathAndQuery,
    started: Instant,
    in_flight: Arc<InFlight>,
    finished: bool,
    /// This call's metrics; `None` without `--metrics-addr` or for an unknown method.
    metrics: Option<CallMetrics>,
    /// Reply messages seen so far, for `grpc_server_msg_sent_total`.
    sent: Framing,
    /// Where a call its client cancels is counted, and its reply bytes.
    connection: Option<Arc<ConnectionState>>,
    /// Reply bytes handed to the connection and not yet taken by it, held in its budget.
    reply_held: usize,
    /// Raised if the client reset the call or dropped its connection.
    gone: ClientGone,
    /// What the call itself costs, held in the connection's budget while it runs.
    charged: usize,
    /// Its OpenTelemetry span, when tracing is on.
    span: Option<CallSpan>,
    /// A streaming call's stake in the budgets, which the server may shed; `None` for unary
    /// calls (and outside a server).
    claim: Option<Arc<StreamClaim>>,
    /// For a stream of replies, the largest so far, held in the budget for as long as the call
    /// runs: tonic's encoder keeps a buffer that large between messages.
    encoder_held: usize,
}

impl CallLog {
    fn start(
        uri: &http::Uri,
        in_flight: Arc<InFlight>,
        metrics: Option<CallMetrics>,
        connection: Option<Arc<ConnectionState>>,
        gone: ClientGone,
        span: Option<CallSpan>,
        claim: Option<Arc<StreamClaim>>,
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
            sent: Framing::default(),
            connection,
            reply_held: 0,
            gone,
            charged: 0,
            span,
            claim,
            encoder_held: 0,
        }
    }

    /// Holds what the call costs besides its messages in the connection's budget (see
    /// [`budget::call_cost`]), so the budgets bound thousands of quiet calls as they bound a few
    /// large ones. A stream's cost is held through its claim, which shedding can take back.
    fn charge(&mut self, one_message: bool) -> Result<(), Status> {
        let cost = budget::call_cost(one_message);
        match (&self.claim, &self.connection) {
            (Some(claim), _) => claim.take(cost),
            (None, Some(connection)) => {
                connection.buffered.take(cost)?;
                self.charged = cost;
                Ok(())
            }
            (None, None) => Ok(()),
        }
    }

    /// Whether the server shed this call to make room; if not, `cx` is woken when it does.
    fn poll_shed(&self, cx: &mut Context<'_>) -> bool {
        self.claim.as_ref().is_some_and(|claim| claim.poll_shed(cx))
    }

    /// A unary reply: its body is done with once its one message is out.
    fn one_reply(&self) -> bool {
        self.claim.is_none()
    }

    /// Holds `bytes` of reply in the connection's budget until [`Self::release_reply`]: a client
    /// that does not read its replies must not make the server keep them without limit.
    fn hold_reply(&mut self, bytes: usize) -> Result<(), Status> {
        self.release_reply();
        if self.claim.is_none() && bytes <= budget::SMALL_UNARY_REPLY {
            // Within the unary call's own cost, already held.
            return Ok(());
        }
        if let Some(connection) = &self.connection {
            connection.progressed();
            connection.buffered.take(bytes)?;
            self.reply_held = bytes;
        }
        if let Some(claim) = &self.claim {
            claim.touch();
            if bytes > self.encoder_held {
                claim.take(bytes - self.encoder_held)?;
                self.encoder_held = bytes;
            }
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
            metrics.sent(self.sent.feed(data));
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
        let (method, code) = (untrusted(self.method()), status.code());
        let duration_us = self.started.elapsed().as_micros() as u64;
        let trace_id = self.span.as_ref().map(|span| display(span.trace_id()));
        if code == Code::Ok {
            debug!(method = %method, code = ?code, duration_us, trace_id, "call finished");
        } else {
            let message = untrusted(status.message());
            warn!(method = %method, code = ?code, status_message = %message, duration_us, trace_id, "call failed");
        }
        if let Some(span) = self.span.take() {
            span.end(code, status.message());
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
        if let Some(claim) = &self.claim {
            claim.release();
        }
        self.in_flight.0.fetch_sub(1, Ordering::Relaxed);
        if !self.finished {
            if let Some(metrics) = &self.metrics {
                metrics.finish(Code::Cancelled, self.started.elapsed().as_secs_f64());
            }
            self.count_cancelled();
            // The reply never completed: the client went away, or shutdown's grace ran out.
            let duration_us = self.started.elapsed().as_micros() as u64;
            // Its span, dropped with it, says CANCELLED too.
            let trace_id = self.span.as_ref().map(|span| display(span.trace_id()));
            warn!(
                method = %untrusted(self.method()),
                code = ?Code::Cancelled,
                status_message = "the call ended before its reply",
                duration_us,
                trace_id,
                "call failed"
            );
        }
    }
}

pin_project_lite::pin_project! {
    /// A reply body that logs the call when its trailers (and so its status) go out, counting
    /// its messages and holding each in the connection's budget until the connection takes it.
    struct LoggedBody {
        #[pin]
        inner: Body,
        call: Option<CallLog>,
        // A unary reply's frame after its message (its trailers), read at once so that the
        // service's body, and the encoder buffers it keeps, go while the message waits for the
        // client's window.
        lookahead: Option<Option<Result<Frame<bytes::Bytes>, Status>>>,
    }
}

impl HttpBody for LoggedBody {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        if this.call.is_none() {
            // Finished: by its own trailers, an error, or the budget.
            return Poll::Ready(None);
        }
        if let Some(call) = this.call.as_mut() {
            // The connection polls again once it has taken the last frame.
            call.release_reply();
            if call.poll_shed(cx) {
                let status = shed_status();
                let trailers = status_trailers(&status);
                this.call.take().expect("checked").finish(&status);
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
        }
        let frame = match this.lookahead.take() {
            Some(frame) => frame,
            None => ready!(this.inner.as_mut().poll_frame(cx)),
        };
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
                            let trailers = status_trailers(&status);
                            if let Some(call) = this.call.take() {
                                call.finish(&status);
                            }
                            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                        }
                        call.sending(bytes);
                        if call.one_reply()
                            && let Poll::Ready(next) = this.inner.as_mut().poll_frame(cx)
                        {
                            *this.lookahead = Some(next);
                            this.inner.set(Body::empty());
                        }
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
        self.call.is_none() || (self.lookahead.is_none() && self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
