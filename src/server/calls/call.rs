//! What happens around every gRPC call, to every service, on every path: admission (gRPC only,
//! metadata within its limit, the call's cost within the connection's budget), its request body
//! followed ([`RequestBody`]), and its end accounted once ([`Call`]): the bytes it holds
//! (`CallBytes`), its metrics, its OpenTelemetry span (when tracing is on), the in-flight count,
//! one log line with its method, status and duration, and the connection's count of calls its
//! client cancelled.
//!
//! Outermost in the call stack (see `stack.rs`), so it sees each call exactly as it arrives and
//! leaves.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::Bytes;
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
use crate::grpc::framing::{Admission, Framing};
use crate::grpc::methods;
use crate::grpc::status::{standard_status, status_response, status_trailers};
use crate::grpc::{MAX_METADATA_BYTES, is_grpc, metadata_size};
use crate::otel::{CallSpan, Tracing};
use crate::server::budget::{self, StreamClaim, shed_status};
use crate::server::calls::compress::CompressedReplies;
use crate::server::calls::connect::{self, Shape};
use crate::server::calls::request_body::RequestBody;
use crate::server::context::{ClientGone, ConnectionState, client_went_away};
use crate::server::metrics::{CallMetrics, GrpcMetrics};
use crate::telemetry::untrusted;

/// Calls in progress, shared by every connection, so shutdown can say how many it cancels.
#[derive(Debug, Default)]
pub(in crate::server) struct InFlight(AtomicUsize);

impl InFlight {
    pub(in crate::server) fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Wraps the router in [`Calls`].
#[derive(Clone, Default)]
pub(in crate::server) struct CallsLayer {
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
    /// `--max-message-bytes`: the longest request message, and as much as decompressing one
    /// may take.
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
    // A Connect call comes back through a clone of this stack, as a gRPC call.
    // Its body boxed, so that this stack serves one more body type, not one per protocol.
    S: Service<
            Request<RequestBody<Body>>,
            Response = Response<Body>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = CallFuture<<S as Service<Request<RequestBody<B>>>>::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Service::<Request<RequestBody<B>>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let grpc = is_grpc(request.headers());
        if !grpc && let Some(shape) = Shape::of(&request) {
            let settings = connect::Settings {
                limits: connect::BodyLimits {
                    max_message_bytes: self.max_message_bytes,
                    connection: self.connection.clone(),
                    stall_timeout: self.stall_timeout,
                },
                reply_compression: self.reply_compression,
            };
            let call = connect::serve(self.clone(), request, shape, settings);
            return CallFuture::Translated {
                reply: Box::pin(call),
            };
        }
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
        let admission = Admission {
            limit: self.max_message_bytes,
            encoded: compressed,
        };
        let request = request.map(|body| {
            RequestBody::new(
                body,
                one_request,
                metrics.as_ref().map(CallMetrics::received),
                self.connection.clone(),
                gone.clone(),
                self.stall_timeout,
                admission,
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
        let mut call = Call::start(
            request.uri(),
            self.in_flight.clone(),
            metrics,
            gone,
            span,
            CallBytes::new(self.connection.clone(), claim),
        );
        if let Err(status) = call.bytes.charge(one_request) {
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
        if !grpc {
            let given = request
                .headers()
                .get(CONTENT_TYPE)
                .map_or("none".into(), |value| {
                    String::from_utf8_lossy(value.as_bytes()).into_owned()
                });
            let status = Status::invalid_argument(format!(
                "content type {given} is not served here: send application/grpc (gRPC), \
                 application/json or application/proto (Connect; application/connect+json or \
                 +proto to stream), or application/grpc-web where the server enables gRPC-Web"
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
        // A Connect call, answered by the gRPC call it was translated into.
        Translated { reply: Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>> },
        Running { #[pin] reply: F, call: Option<Call>, encoding: Option<Encoding> },
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
            CallProjection::Translated { reply } => reply.as_mut().poll(cx),
            CallProjection::Running {
                reply,
                call,
                encoding,
            } => {
                if call.as_ref().is_some_and(|call| call.bytes.poll_shed(cx)) {
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

/// One call, from its admission to its end, its concerns composed: what it holds in the budgets
/// ([`CallBytes`]), its metrics ([`CallMetrics`], with the reply messages counted), its span,
/// the in-flight count, and its end accounted once ([`Call::finish`], or its drop for a call
/// that never finished: the client reset it, or shutdown's grace ran out).
pub struct Call {
    /// The request's `:path`, shared with it rather than copied.
    method: PathAndQuery,
    started: Instant,
    finished: bool,
    /// Raised if the client reset the call or dropped its connection.
    gone: ClientGone,
    _in_flight: InFlightCall,
    /// This call's metrics; `None` without `--metrics-addr` or for an unknown method.
    metrics: Option<CallMetrics>,
    /// Reply messages seen so far, for `grpc_server_msg_sent_total`.
    sent: Framing,
    /// Its OpenTelemetry span, when tracing is on.
    span: Option<CallSpan>,
    bytes: CallBytes,
}

impl Call {
    fn start(
        uri: &http::Uri,
        in_flight: Arc<InFlight>,
        metrics: Option<CallMetrics>,
        gone: ClientGone,
        span: Option<CallSpan>,
        bytes: CallBytes,
    ) -> Self {
        Self {
            method: uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
            started: Instant::now(),
            finished: false,
            gone,
            _in_flight: InFlightCall::new(in_flight),
            metrics,
            sent: Framing::default(),
            span,
            bytes,
        }
    }

    fn method(&self) -> &str {
        self.method.path()
    }

    /// Counts the reply messages that begin in `data`.
    fn sending(&mut self, data: &[u8]) {
        if let Some(metrics) = &self.metrics
            && let Ok(began) = self.sent.feed(data)
        {
            metrics.sent(began);
        }
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
        self.ended(status.code(), status.message());
        if let Some(span) = self.span.take() {
            span.end(status.code(), status.message());
        }
    }

    /// The metrics, the connection's count of cancelled calls and the log line of a call that
    /// ended with `code`.
    fn ended(&self, code: Code, message: &str) {
        let lived = self.started.elapsed();
        if let Some(metrics) = &self.metrics {
            metrics.finish(code, lived.as_secs_f64());
        }
        if code == Code::Cancelled {
            self.bytes.count_cancelled(lived);
        }
        let method = untrusted(self.method());
        let duration_us = lived.as_micros() as u64;
        let trace_id = self.span.as_ref().map(|span| display(span.trace_id()));
        if code == Code::Ok {
            debug!(method = %method, code = ?code, duration_us, trace_id, "call finished");
        } else {
            let message = untrusted(message);
            warn!(method = %method, code = ?code, status_message = %message, duration_us, trace_id, "call failed");
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if !self.finished {
            // The reply never completed: the client went away, or shutdown's grace ran out.
            // Its span, dropped with it, says CANCELLED too.
            self.ended(Code::Cancelled, "the call ended before its reply");
        }
    }
}

/// One call counted in [`InFlight`] for as long as it lives.
struct InFlightCall(Arc<InFlight>);

impl InFlightCall {
    fn new(in_flight: Arc<InFlight>) -> Self {
        in_flight.0.fetch_add(1, Ordering::Relaxed);
        Self(in_flight)
    }
}

impl Drop for InFlightCall {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What one call holds in its connection's budget (and so its address's and the server's):
/// its own cost while it runs, each reply until the connection takes it, and for a stream its
/// claim, which the server may shed, with the largest reply so far (tonic's encoder keeps a
/// buffer that large between messages). All given back when it is dropped. Outside a server
/// (the fuzz targets) there is no connection, and it holds nothing.
struct CallBytes {
    connection: Option<Arc<ConnectionState>>,
    /// What the call itself costs, held while it runs.
    charged: usize,
    /// Reply bytes handed to the connection and not yet taken by it.
    reply_held: usize,
    /// A streaming call's stake in the budgets; `None` for unary calls.
    claim: Option<Arc<StreamClaim>>,
    encoder_held: usize,
}

impl CallBytes {
    fn new(connection: Option<Arc<ConnectionState>>, claim: Option<Arc<StreamClaim>>) -> Self {
        Self {
            connection,
            charged: 0,
            reply_held: 0,
            claim,
            encoder_held: 0,
        }
    }

    /// Holds what the call costs besides its messages (see [`budget::call_cost`]), so the
    /// budgets bound thousands of quiet calls as they bound a few large ones. A stream's cost is
    /// held through its claim, which shedding can take back.
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

    /// Holds `bytes` of reply until [`Self::release_reply`]: a client that does not read its
    /// replies must not make the server keep them without limit.
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

    /// Counts a call cancelled `lived` after it started against its connection's budget of
    /// cancelled calls (the rapid-reset defence).
    fn count_cancelled(&self, lived: Duration) {
        if let Some(connection) = &self.connection {
            connection.cancels.record(lived);
        }
    }
}

impl Drop for CallBytes {
    fn drop(&mut self) {
        self.release_reply();
        if let Some(connection) = &self.connection {
            connection.buffered.give_back(self.charged);
        }
        if let Some(claim) = &self.claim {
            claim.release();
        }
    }
}

pin_project_lite::pin_project! {
    /// A reply body that logs the call when its trailers (and so its status) go out, counting
    /// its messages and holding each in the connection's budget until the connection takes it.
    struct LoggedBody {
        #[pin]
        inner: Body,
        call: Option<Call>,
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
            call.bytes.release_reply();
            if call.bytes.poll_shed(cx) {
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
                        if let Err(status) = call.bytes.hold_reply(bytes.len()) {
                            // Over the budget: the reply is dropped, the call ends here.
                            let trailers = status_trailers(&status);
                            if let Some(call) = this.call.take() {
                                call.finish(&status);
                            }
                            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                        }
                        call.sending(bytes);
                        if call.bytes.one_reply()
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
