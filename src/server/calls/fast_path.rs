//! A direct route for the hot call: unary `DoFormat` without a compressed request or authentication,
//! handled in one small future instead of tonic's generic unary machinery (router, codec
//! streams, boxed encoders). Everything else goes to tonic's router unchanged.
//!
//! It does what tonic would, byte for byte on the wire: the same size limits and status codes,
//! the same `service::format`. On the benchmark (h2load, 16 connections x 64 streams, one core)
//! it is worth about a third more calls per second; see CONTRIBUTING.md, "Performance".

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use futures_util::future::Either;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, Request, Response};
use http_body::{Body as HttpBody, Frame};
use tonic::Status;
use tonic::body::Body;
use tower::Service;

use crate::grpc::framing::{self, PREFIX_LEN, Prefix};
use crate::grpc::status::{ok_trailers, status_response};
use crate::grpc::{self, compression::GRPC_ENCODING};
use crate::pb::Data;
use crate::service;

/// Routes plain unary `DoFormat` calls to [`do_format`], everything else to `inner`.
#[derive(Debug, Clone)]
pub struct FastPath<S> {
    inner: S,
    /// Off when calls need a token: authentication stays in one place, tonic's interceptor.
    enabled: bool,
    /// DoFormat's `:path`, the one this route serves.
    path: &'static str,
    /// Largest request and reply message, as `--max-message-bytes`.
    max_message_bytes: usize,
}

impl<S> FastPath<S> {
    pub fn new(inner: S, enabled: bool, max_message_bytes: usize) -> Self {
        Self {
            inner,
            enabled,
            path: service::do_format_path(),
            max_message_bytes,
        }
    }

    /// Unary DoFormat whose request is not compressed (decompressing is tonic's job): what
    /// every client sends unless told to compress. Replies are compressed after this, for
    /// every path alike, so what a client accepts does not matter here.
    fn takes<B>(&self, request: &Request<B>) -> bool {
        self.enabled
            && request.uri().path() == self.path
            && request
                .headers()
                .get(GRPC_ENCODING)
                .is_none_or(|value| value.as_bytes() == b"identity")
    }
}

impl<S, B> Service<Request<B>> for FastPath<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    B: HttpBody<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Status> + Into<tonic::codegen::StdError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    /// Named, not boxed: the hot path allocates no future of its own.
    type Future = Either<DoFormat<B>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if self.takes(&request) {
            Either::Left(DoFormat {
                body: request.into_body(),
                message: Message::default(),
                limit: self.max_message_bytes,
            })
        } else {
            Either::Right(self.inner.call(request.map(Body::new)))
        }
    }
}

/// A DoFormat call on the fast path: its one message read, then its reply.
pub struct DoFormat<B> {
    body: B,
    message: Message,
    limit: usize,
}

impl<B> Future for DoFormat<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<Status>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let reply = loop {
            match ready!(Pin::new(&mut this.body).poll_frame(cx)) {
                // The body's own errors are statuses already.
                Some(Err(error)) => break Err(error.into()),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        this.message.push(data, this.limit);
                    }
                }
                None => {
                    break std::mem::take(&mut this.message)
                        .finish()
                        .and_then(|message| service::format(message, this.limit));
                }
            }
        };
        Poll::Ready(Ok(match reply {
            Ok(reply) => {
                let mut response = Response::new(Body::new(OneMessage {
                    message: Some(framing::frame(&reply)),
                    trailers: Some(ok_trailers()),
                }));
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, grpc::GRPC_CONTENT_TYPE);
                response
            }
            // An error before any reply: "trailers-only", the status in the headers.
            Err(status) => status_response(&status),
        }))
    }
}

/// The request's one message as it arrives. The body it comes from is the call's
/// [`RequestBody`], which has failed by then if the message's prefix is not admitted (a bad
/// flag, over the size limit), a second message began, or the body ended inside this one.
///
/// Usually the whole message comes in one DATA frame: those bytes are kept as they are, and
/// only copied into a buffer when a second frame follows. That buffer is made as large as the
/// message declares (checked against the limit first), as tonic's decoder does: each byte is
/// copied once, whatever the number of frames, and pages are only touched as bytes arrive.
///
/// [`RequestBody`]: crate::server::calls::request_body::RequestBody
#[derive(Default)]
struct Message {
    first: Bytes,
    joined: Option<BytesMut>,
}

impl Message {
    fn push(&mut self, data: Bytes, limit: usize) {
        match &mut self.joined {
            Some(buffer) => buffer.extend_from_slice(&data),
            None if self.first.is_empty() => self.first = data,
            None => {
                let declared = Prefix::read(&self.first).map(|prefix| prefix.length.min(limit + 1));
                let whole = declared.map_or(0, |length| PREFIX_LEN + length);
                let mut buffer = BytesMut::with_capacity(whole.max(self.first.len() + data.len()));
                buffer.extend_from_slice(&self.first);
                buffer.extend_from_slice(&data);
                self.joined = Some(buffer);
            }
        }
    }

    /// The message, once the body has ended.
    fn finish(self) -> Result<Data, Status> {
        let received = self.joined.map_or(self.first, BytesMut::freeze);
        if received.is_empty() {
            return Err(framing::missing_message());
        }
        framing::decode_request(received.slice(PREFIX_LEN..))
    }
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
