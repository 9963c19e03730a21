//! What the protocols of one connection and the middleware of its calls share: the bottom of
//! the server, importing nothing above it.
//!
//! A connection's task (`connection.rs`, `http2.rs`) makes a [`ConnectionState`] and watches it:
//! for idleness ([`Idle`]) and for a rapid-reset flood ([`CancelBudget`]). Each call's middleware
//! (`call.rs`, `request_body.rs`, `front.rs`) reports to it: progress, cancelled calls, the
//! bytes it holds, and whether its client went away ([`ClientGone`]).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::Request;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};
use tonic::Status;

use crate::server::budget::ByteBudget;
use crate::server::peers::PeerSlot;

/// What one connection's calls share: set up when it is accepted, read by the middleware of
/// each call on it.
#[derive(Debug)]
pub struct ConnectionState {
    /// The client's address, for log lines.
    pub peer: Option<SocketAddr>,
    /// Calls its client cancelled: the rapid-reset defence.
    pub cancels: CancelBudget,
    /// Bytes its calls hold.
    pub buffered: Arc<ByteBudget>,
    /// Set whenever one of its calls makes progress; cleared by [`Idle`].
    active: AtomicBool,
    /// Its place in its client address's share, held while it is open.
    _slot: PeerSlot,
}

impl ConnectionState {
    pub(super) fn new(peer: Option<SocketAddr>, buffered: Arc<ByteBudget>, slot: PeerSlot) -> Self {
        Self {
            peer,
            cancels: CancelBudget::default(),
            buffered,
            active: AtomicBool::new(false),
            _slot: slot,
        }
    }

    /// A call on this connection moved: began, or had request or reply bytes go through.
    pub fn progressed(&self) {
        // Read first: a store to a line every core shares would bounce it at every call.
        if !self.active.load(Ordering::Relaxed) {
            self.active.store(true, Ordering::Relaxed);
        }
    }
}

/// Watches a connection for `timeout` without progress, in quarters: each quarter with no
/// progress counts, any progress starts over. Costs one relaxed load per quarter.
pub(super) struct Idle<'a> {
    active: &'a AtomicBool,
    timeout: Option<Duration>,
    timer: Pin<Box<Sleep>>,
    quiet_quarters: u32,
}

impl<'a> Idle<'a> {
    pub(super) fn new(connection: &'a ConnectionState, timeout: Option<Duration>) -> Self {
        Self::watching(&connection.active, timeout)
    }

    fn watching(active: &'a AtomicBool, timeout: Option<Duration>) -> Self {
        let quarter = timeout.map_or(Duration::MAX, |timeout| timeout / 4);
        Self {
            active,
            timeout,
            timer: Box::pin(tokio::time::sleep(quarter)),
            quiet_quarters: 0,
        }
    }

    pub(super) fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(Duration::MAX)
    }

    /// Ready once no call made progress for the whole timeout; never without one.
    pub(super) fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(timeout) = self.timeout else {
            return Poll::Pending;
        };
        loop {
            ready!(self.timer.as_mut().poll(cx));
            self.timer.as_mut().reset(Instant::now() + timeout / 4);
            if self.active.swap(false, Ordering::Relaxed) {
                self.quiet_quarters = 0;
                continue;
            }
            self.quiet_quarters += 1;
            if self.quiet_quarters >= 4 {
                return Poll::Ready(());
            }
        }
    }
}

/// Calls one connection's client may cancel, each within [`RAPID_CANCEL`] of its start, within
/// [`CANCEL_WINDOW`] before the connection is closed with GOAWAY ENHANCE_YOUR_CALM. Thousands a
/// second is the "rapid reset" attack, which h2's own check (reset streams still waiting to be
/// accepted) only catches when the server is slower than the flood.
const MAX_CANCELLED_CALLS: u32 = 1000;

/// Only calls cancelled this soon count: a client gives up on a call now and then (its deadline,
/// a person leaving), rarely within milliseconds of making it, while a flood resets each stream
/// at once. A peer that waits longer before each reset holds the stream meanwhile, so the stream
/// limit bounds it like any busy client.
const RAPID_CANCEL: Duration = Duration::from_millis(10);

/// The window [`MAX_CANCELLED_CALLS`] is counted over.
const CANCEL_WINDOW: Duration = Duration::from_secs(10);

/// The budget, in words, for log lines.
pub(super) const CANCEL_BUDGET_DESCRIPTION: &str =
    "more than 1000 calls in 10 s, each within 10 ms of making it (a rapid-reset flood?)";

/// Calls cancelled by one connection's client: the middleware records them, the connection
/// closes itself when the budget is spent.
#[derive(Debug, Default)]
pub struct CancelBudget {
    cancelled: WindowedCount,
    /// Woken when the budget is spent.
    spent: Notify,
}

impl CancelBudget {
    /// Counts one call the client cancelled before it finished, `lived` after it started.
    pub fn record(&self, lived: Duration) {
        if lived >= RAPID_CANCEL {
            return;
        }
        let (cancelled, _) = self.cancelled.add(1, CANCEL_WINDOW);
        if cancelled == MAX_CANCELLED_CALLS + 1 {
            self.spent.notify_one();
        }
    }

    /// Completes once more calls than the budget allows were cancelled in one window.
    pub async fn exhausted(&self) {
        self.spent.notified().await;
    }
}

/// Events counted over fixed windows of time: a new window starts with the first event after
/// the last one ended. For the budgets a connection must not overspend in a window.
#[derive(Debug, Default)]
pub(super) struct WindowedCount(Mutex<Option<(Instant, u32)>>);

impl WindowedCount {
    /// Adds `events`: returns the count in the current window, and whether an earlier window
    /// ended for it (so what was counted beside it starts over too).
    pub(super) fn add(&self, events: u32, window: Duration) -> (u32, bool) {
        let now = Instant::now();
        let mut current = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let (start, count, restarted) = match *current {
            Some((start, count)) if now - start < window => {
                (start, count.saturating_add(events), false)
            }
            Some(_) => (now, events, true),
            None => (now, events, false),
        };
        *current = Some((start, count));
        (count, restarted)
    }
}

/// The status of a call whose client reset its stream or dropped its connection.
pub(super) fn client_went_away() -> Status {
    Status::cancelled("the client cancelled the call (stream reset or connection closed)")
}

/// Whether a request body failed because of its transport (a reset stream, a closed connection)
/// rather than its content.
pub(super) fn is_transport_error(error: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(error), |error| error.source()).any(|cause| {
        cause.is::<h2::Error>() || cause.is::<hyper::Error>() || cause.is::<std::io::Error>()
    })
}

/// Whether a gRPC-Web request's body failed because the client went away. tonic-web turns its
/// body's errors into a status carrying only their text, so the fact travels beside it, in the
/// request's extensions, from [`ClientGone::track`] to [`RequestBody`].
#[derive(Debug, Clone, Default)]
pub(super) struct ClientGone(Arc<AtomicBool>);

impl ClientGone {
    /// Watches `request`'s body for transport errors, and leaves the flag in its extensions.
    pub(super) fn track<B>(request: Request<B>) -> Request<TrackedBody<B>> {
        let gone = Self::default();
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(gone.clone());
        Request::from_parts(parts, TrackedBody { inner: body, gone })
    }

    pub(super) fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    pub(super) fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A request body that raises its [`ClientGone`] flag when it fails for transport reasons.
    pub struct TrackedBody<B> {
        #[pin]
        inner: B,
        gone: ClientGone,
    }
}

impl<B> HttpBody for TrackedBody<B>
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_after_four_quiet_quarters() {
        let active = AtomicBool::new(false);
        let mut idle = Idle::watching(&active, Some(Duration::from_secs(4)));
        let started = Instant::now();
        // Progress in the first quarter starts the count over.
        active.store(true, Ordering::Relaxed);
        std::future::poll_fn(|cx| idle.poll_idle(cx)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_windowed_count_starts_over_after_its_window() {
        let count = WindowedCount::default();
        let window = Duration::from_secs(10);
        assert_eq!(count.add(3, window), (3, false));
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(count.add(2, window), (5, false));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(count.add(1, window), (1, true));
    }
}
