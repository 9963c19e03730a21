//! A direct route for the hot call: unary `DoFormat` without compression or authentication,
//! handled in one small future instead of tonic's generic unary machinery (router, codec
//! streams, boxed encoders). Everything else goes to tonic's router unchanged.
//!
//! It does what tonic would, byte for byte on the wire: the same size limits and status codes,
//! the same `service::format`. On the benchmark (h2load, 16 connections x 64 streams, one core)
//! it is worth about a third more calls per second; see CONTRIBUTING.md, "Performance".

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;
use prost::Message;
use tonic::Status;
use tonic::body::Body;
use tower::Service;

use crate::grpc::framing;
use crate::pb::Data;
use crate::server::call::{more_than_one_message, set_status_headers};
use crate::service;

/// The one method this route serves.
const DO_FORMAT: &str = "/example.FormatData/DoFormat";

/// Bytes before each gRPC message: compression flag and big-endian length.
const PREFIX: usize = 5;

/// Routes plain unary `DoFormat` calls to [`do_format`], everything else to `inner`.
#[derive(Debug, Clone)]
pub struct FastPath<S> {
    inner: S,
    /// Off when calls need a token: authentication stays in one place, tonic's interceptor.
    enabled: bool,
    /// Largest request and reply message, as `--max-message-bytes`.
    max_message_bytes: usize,
}

impl<S> FastPath<S> {
    pub fn new(inner: S, enabled: bool, max_message_bytes: usize) -> Self {
        Self {
            inner,
            enabled,
            max_message_bytes,
        }
    }

    /// Unary DoFormat with neither compressed requests nor a wish for compressed replies (both
    /// are tonic's job): what h2load, tonic clients and most grpc-go clients send.
    fn takes<B>(&self, request: &Request<B>) -> bool {
        let plain = |name| {
            request
                .headers()
                .get(name)
                .is_none_or(|value| value.as_bytes() == b"identity")
        };
        self.enabled
            && request.uri().path() == DO_FORMAT
            && plain("grpc-encoding")
            && plain("grpc-accept-encoding")
    }
}

impl<S, B> Service<Request<B>> for FastPath<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
    B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Status> + Into<tonic::codegen::StdError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if self.takes(&request) {
            Box::pin(do_format(request.into_body(), self.max_message_bytes))
        } else {
            Box::pin(self.inner.call(request.map(Body::new)))
        }
    }
}

async fn do_format<B>(body: B, limit: usize) -> Result<Response<Body>, Infallible>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<Status>,
{
    let reply = read_message(body, limit)
        .await
        .and_then(|message| service::format(message, limit))
        .map(|reply| framing::frame(&reply));
    let mut response = Response::new(Body::default());
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    let body = match reply {
        Ok(framed) => OneMessage {
            message: Some(framed),
            trailers: Some(ok_trailers()),
        },
        // An error before any reply: "trailers-only", the status in the headers.
        Err(status) => {
            response.headers_mut().extend(status_headers(&status));
            return Ok(response);
        }
    };
    *response.body_mut() = Body::new(body);
    Ok(response)
}

/// Reads the request's single message, enforcing the size limit from its length prefix before
/// buffering it, as tonic does.
async fn read_message<B>(mut body: B, limit: usize) -> Result<Data, Status>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<Status>,
{
    // Usually the whole message comes in one DATA frame: keep those bytes as they are, and only
    // copy into a buffer when a second frame follows. That buffer is made as large as the
    // message declares (checked against the limit first), as tonic's decoder does: each byte is
    // copied once, whatever the number of frames, and pages are only touched as bytes arrive.
    let mut first = Bytes::new();
    let mut joined: Option<BytesMut> = None;
    while let Some(frame) = body.frame().await {
        // The body's own errors are statuses already (`middleware::Counted`).
        let frame = frame.map_err(Into::into)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        match &mut joined {
            Some(buffer) => buffer.extend_from_slice(&data),
            None if first.is_empty() => first = data,
            None => {
                let declared = (first.len() >= PREFIX).then(|| declared_length(&first));
                let whole = declared.map_or(0, |length| PREFIX + length.min(limit + 1));
                let mut buffer = BytesMut::with_capacity(whole.max(first.len() + data.len()));
                buffer.extend_from_slice(&first);
                buffer.extend_from_slice(&data);
                joined = Some(buffer);
            }
        }
        let received = joined.as_deref().unwrap_or(&first);
        if received.len() >= PREFIX {
            // The flag before the length, in tonic's order, so both paths blame the same fault.
            if received[0] != 0 {
                return Err(bad_flag(received[0]));
            }
            let declared = declared_length(received);
            if declared > limit {
                return Err(Status::resource_exhausted(format!(
                    "request message of {declared} bytes is over the {limit}-byte limit"
                )));
            }
            // Checked as the bytes come, not at the end: a client must not be able to make the
            // server buffer an endless body behind one small message. (`middleware::Counted`
            // refuses a second message as well; this keeps the fast path safe on its own.)
            if received.len() > PREFIX + declared {
                return Err(more_than_one_message());
            }
        }
    }
    let mut received = match joined {
        Some(buffer) => buffer.freeze(),
        None => first,
    };
    if received.is_empty() {
        return Err(Status::invalid_argument("missing request message"));
    }
    if received.len() < PREFIX {
        return Err(Status::invalid_argument(
            "truncated gRPC frame: unexpected EOF",
        ));
    }
    received.advance(1); // the flag, checked above
    let length = received.get_u32() as usize;
    match received.len().cmp(&length) {
        std::cmp::Ordering::Less => Err(Status::invalid_argument(format!(
            "truncated gRPC frame: unexpected EOF after {} of {length} bytes",
            received.len()
        ))),
        std::cmp::Ordering::Greater => Err(more_than_one_message()),
        // prost's message names the problem, as our codec reports it on tonic's path.
        std::cmp::Ordering::Equal => {
            Data::decode(received).map_err(|error| Status::invalid_argument(error.to_string()))
        }
    }
}

/// The message length a gRPC prefix (at least [`PREFIX`] bytes) declares.
fn declared_length(prefix: &[u8]) -> usize {
    u32::from_be_bytes(prefix[1..PREFIX].try_into().expect("4 bytes")) as usize
}

/// A flag other than 0 on the fast path, which takes no `grpc-encoding`: compressed (1) without
/// saying how, or not a flag at all.
fn bad_flag(flag: u8) -> Status {
    match flag {
        1 => Status::invalid_argument("message flagged compressed, but no grpc-encoding was given"),
        _ => Status::invalid_argument(format!(
            "invalid compression flag {flag} (0 and 1 are valid)"
        )),
    }
}

/// `grpc-status` and `grpc-message` of an error.
fn status_headers(status: &Status) -> HeaderMap {
    let mut headers = HeaderMap::new();
    set_status_headers(&mut headers, status);
    headers
}

/// The trailers of a successful call.
fn ok_trailers() -> HeaderMap {
    let mut trailers = HeaderMap::with_capacity(1);
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    trailers
}

/// A reply body of one message and the trailers.
struct OneMessage {
    message: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl HttpBody for OneMessage {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let frame = match self.message.take() {
            Some(message) => Some(Frame::data(message)),
            None => self.trailers.take().map(Frame::trailers),
        };
        Poll::Ready(frame.map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.message.is_none() && self.trailers.is_none()
    }
}
