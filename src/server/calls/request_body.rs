//! The request body of every call, followed as it arrives: its gRPC framing checked, its
//! messages counted, its bytes held in the connection's budget, a stall in the middle of a
//! message timed, and a client that goes away told apart from a body that is wrong.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::Status;

use crate::grpc::framing::{self, Admission, Framing, Refused};
use crate::server::context::{ClientGone, ConnectionState, client_went_away, is_transport_error};
use crate::server::metrics::MessagesReceived;

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
        received: Option<MessagesReceived>,
        one_message: bool,
        ended: bool,
        held: HeldMessages,
        // A message prefix refused after the messages before it were handed on.
        refused: Option<Status>,
        // Raised when the client goes; already raised on the gRPC-Web path, where tonic-web
        // hides why the body failed.
        gone: ClientGone,
        stall: Option<Stall>,
    }
}

/// What a request body holds in its connection's budget: the bytes of the message in progress,
/// and for a stream the largest message so far (tonic's decoder keeps that much buffer), with
/// the decompression buffer once its messages come compressed. Given back when dropped.
struct HeldMessages {
    connection: Option<Arc<ConnectionState>>,
    held: usize,
    /// What a stream of compressed messages holds besides them, once one has come: tonic's
    /// decoder keeps a buffer as large as the largest message decompressed, which may be far
    /// larger than the bytes that came.
    decompression_cost: usize,
}

impl HeldMessages {
    /// Holds what `messages` now need, RESOURCE_EXHAUSTED past the budget.
    fn follow(&mut self, messages: &Framing, one_message: bool) -> Result<(), Status> {
        let Some(connection) = &self.connection else {
            return Ok(());
        };
        connection.progressed();
        let wanted = match one_message {
            true => messages.partial(),
            false if messages.begun() > 0 => {
                messages.partial().max(messages.largest()) + self.decompression_cost
            }
            false => 0,
        };
        if wanted > self.held {
            connection.buffered.take(wanted - self.held)?;
        } else {
            connection.buffered.give_back(self.held - wanted);
        }
        self.held = wanted;
        Ok(())
    }
}

impl Drop for HeldMessages {
    fn drop(&mut self) {
        if let Some(connection) = &self.connection {
            connection.buffered.give_back(self.held);
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
        stalled(self.timeout)
    }
}

/// The status of a request body that stopped for `timeout` in the middle of a message.
pub(in crate::server) fn stalled(timeout: Duration) -> Status {
    Status::deadline_exceeded(format!(
        "request stalled: no bytes for {timeout:?} in the middle of a message (--stall-timeout)"
    ))
}

impl<B> RequestBody<B> {
    /// `inner`, the body of a call that takes `one_request` message or a stream, followed.
    /// `received` counts its messages; `connection` holds its bytes; `gone` is raised if the
    /// client goes; `stall`, when set, is `--stall-timeout`; `admission`, what its message
    /// prefixes may say (a stream whose messages may be compressed also holds the limit for
    /// tonic's decompression buffer).
    pub(in crate::server) fn new(
        inner: B,
        one_request: bool,
        received: Option<MessagesReceived>,
        connection: Option<Arc<ConnectionState>>,
        gone: ClientGone,
        stall: Option<Duration>,
        admission: Admission,
    ) -> Self {
        let decompression_cost = match admission.encoded {
            true if !one_request => admission.limit,
            _ => 0,
        };
        Self {
            inner,
            messages: Framing::admitting(admission),
            received,
            one_message: one_request,
            ended: false,
            held: HeldMessages {
                connection,
                held: 0,
                decompression_cost,
            },
            refused: None,
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
        if let Some(status) = self.as_mut().project().refused.take() {
            *self.as_mut().project().ended = true;
            return Poll::Ready(Some(Err(status)));
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
                if *this.one_message && this.messages.complete() == 0 {
                    return Poll::Ready(Some(Err(framing::missing_message())));
                }
                return Poll::Ready(None);
            }
        };
        if let Some(data) = frame.data_ref() {
            let began = match this.messages.feed(data) {
                Ok(began) => began,
                // The messages before the refused one go on first, as they would have had
                // they come in a DATA frame of their own; the refusal follows.
                Err(Refused { whole, status }) if whole > 0 => {
                    *this.refused = Some(status);
                    return Poll::Ready(Some(Ok(Frame::data(data.slice(..whole)))));
                }
                Err(Refused { status, .. }) => {
                    *this.ended = true;
                    return Poll::Ready(Some(Err(status)));
                }
            };
            if let Some(received) = this.received {
                received.add(began);
            }
            if let Some(stall) = this.stall {
                stall.restart = true;
            }
            if *this.one_message && this.messages.begun() > 1 {
                *this.ended = true;
                return Poll::Ready(Some(Err(more_than_one_message())));
            }
            if let Err(status) = this.held.follow(this.messages, *this.one_message) {
                *this.ended = true;
                return Poll::Ready(Some(Err(status)));
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

/// The status of a unary call that carries a second message.
fn more_than_one_message() -> Status {
    Status::invalid_argument("more than one message in a unary call")
}
