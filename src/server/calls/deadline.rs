//! The caller's deadline (`grpc-timeout`), enforced on the whole call: the reply must have
//! begun before it passes (else the handler is dropped, which cancels it), and a streaming reply
//! that goes on past it is ended there. Either way the call ends with DEADLINE_EXCEEDED, as
//! gRPC says, where tonic's own server would report CANCELLED.
//!
//! The timer is set only once the call has to wait. Setting one tells the runtime's timer
//! driver to wake (a write to an eventfd, when its wheel was empty): done for every call, it
//! cost each call a system call, and the connection a flush of its own per reply, where a call
//! answered at once needs no more than a look at the clock.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};
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
                deadline: Some(Deadline::after(duration)),
                reply: self.inner.call(request),
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
        Timed { #[pin] reply: F, deadline: Option<Deadline> },
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
            DeadlineProjection::Timed { reply, deadline } => {
                if let Poll::Ready(response) = reply.poll(cx) {
                    let response = response.unwrap_or_else(|never| match never {});
                    // A trailers-only reply is whole; any other goes on after its headers, and
                    // the deadline with it.
                    if response.headers().contains_key("grpc-status") {
                        return Poll::Ready(Ok(response));
                    }
                    let deadline = deadline.take().expect("polled after it was ready");
                    return Poll::Ready(Ok(response.map(|body| {
                        Body::new(DeadlineBody {
                            inner: body,
                            deadline,
                            expired: false,
                        })
                    })));
                }
                let deadline = deadline.as_mut().expect("polled after it was ready");
                ready!(deadline.poll_passed(cx));
                // Dropping the reply future cancels the handler: nobody waits for it.
                Poll::Ready(Ok(status_response(&deadline.exceeded())))
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
        deadline: Deadline,
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
        let passed = match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(_))) if this.deadline.has_passed() => true,
            Poll::Pending => this.deadline.poll_passed(cx).is_ready(),
            frame => return frame,
        };
        if !passed {
            return Poll::Pending;
        }
        *this.expired = true;
        let trailers = status_trailers(&this.deadline.exceeded());
        Poll::Ready(Some(Ok(Frame::trailers(trailers))))
    }

    fn is_end_stream(&self) -> bool {
        self.expired || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A call's deadline, with the timer that wakes its task when it passes, set once the call
/// waits.
struct Deadline {
    at: Instant,
    /// As the caller gave it, for the status.
    duration: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Deadline {
    fn after(duration: Duration) -> Self {
        Self {
            at: Instant::now() + duration,
            duration,
            timer: None,
        }
    }

    fn has_passed(&self) -> bool {
        Instant::now() >= self.at
    }

    /// Ready once the deadline has passed; until then, wakes the task when it does.
    fn poll_passed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let at = self.at;
        self.timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)))
            .as_mut()
            .poll(cx)
    }

    fn exceeded(&self) -> Status {
        Status::deadline_exceeded(format!(
            "deadline of {:?} (grpc-timeout) exceeded",
            self.duration
        ))
    }
}
