//! The caller's deadline (`grpc-timeout`), enforced on the whole call: the reply must have
//! begun before it passes (else the handler is dropped, which cancels it), and a streaming reply
//! that goes on past it is ended there. Either way the call ends with DEADLINE_EXCEEDED, as
//! gRPC says, where tonic's own server would report CANCELLED.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Sleep;
use tonic::Status;
use tonic::body::Body;
use tower::Service;

use crate::grpc::status::{status_response, status_trailers};
use crate::grpc::timeout;

/// Holds each call to the deadline its caller set, if any.
#[derive(Debug, Clone)]
pub struct Deadlines<S> {
    inner: S,
}

impl<S> Deadlines<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, B> Service<Request<B>> for Deadlines<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        match timeout::read(request.headers()) {
            Ok(None) => DeadlineFuture::Open {
                reply: self.inner.call(request),
            },
            Ok(Some(duration)) => DeadlineFuture::Timed {
                reply: self.inner.call(request),
                duration,
                timer: Box::pin(tokio::time::sleep(duration)),
            },
            Err(status) => DeadlineFuture::Refused {
                status: Some(status),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The reply of a call, with its deadline if it has one.
    #[project = DeadlineProjection]
    pub enum DeadlineFuture<F> {
        Open { #[pin] reply: F },
        Timed { #[pin] reply: F, duration: Duration, timer: Pin<Box<Sleep>> },
        Refused { status: Option<Status> },
    }
}

impl<F> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            DeadlineProjection::Open { reply } => reply.poll(cx),
            DeadlineProjection::Timed {
                reply,
                duration,
                timer,
            } => {
                if let Poll::Ready(response) = reply.poll(cx) {
                    let response = response.unwrap_or_else(|never| match never {});
                    // A trailers-only reply is whole; any other goes on after its headers, and
                    // the deadline with it.
                    if response.headers().contains_key("grpc-status") {
                        return Poll::Ready(Ok(response));
                    }
                    let deadline = timer.deadline();
                    let duration = *duration;
                    return Poll::Ready(Ok(response.map(|body| {
                        Body::new(DeadlineBody {
                            inner: body,
                            duration,
                            timer: Box::pin(tokio::time::sleep_until(deadline)),
                            expired: false,
                        })
                    })));
                }
                ready!(timer.as_mut().poll(cx));
                // Dropping the reply future cancels the handler: nobody waits for it.
                Poll::Ready(Ok(status_response(&exceeded(*duration))))
            }
            DeadlineProjection::Refused { status } => {
                Poll::Ready(Ok(status_response(&status.take().expect("polled once"))))
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A reply body that ends with DEADLINE_EXCEEDED trailers if the deadline passes first.
    struct DeadlineBody {
        #[pin]
        inner: Body,
        duration: Duration,
        timer: Pin<Box<Sleep>>,
        expired: bool,
    }
}

impl HttpBody for DeadlineBody {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if *this.expired {
            return Poll::Ready(None);
        }
        if this.timer.as_mut().poll(cx).is_ready() {
            *this.expired = true;
            let trailers = status_trailers(&exceeded(*this.duration));
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        this.inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.expired || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn exceeded(deadline: Duration) -> Status {
    Status::deadline_exceeded(format!("deadline of {deadline:?} (grpc-timeout) exceeded"))
}
