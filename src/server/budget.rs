//! The bytes calls in progress may hold, counted: per connection and for the whole server.
//!
//! Flow control bounds what one well-behaved peer sends ahead; this bounds what any number of
//! peers make the server keep, so a deliberate attacker meets RESOURCE_EXHAUSTED instead of an
//! out-of-memory kill.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::task::Context;
use std::time::Instant;

use futures_util::task::AtomicWaker;
use prometheus::IntCounter;
use tonic::Status;
use tracing::warn;

/// What a call in progress costs the server besides its messages, as measured with 256 calls on
/// each of 20 connections, each call waiting for its client (release build): about 4 KiB for a
/// unary call (its task, h2's stream, the middleware), about 13 KiB for a stream (tonic's
/// decode and encode buffers on top). Charged to the budgets while the call runs.
pub(super) fn call_cost(one_request: bool) -> usize {
    match one_request {
        true => 4 * 1024,
        false => 16 * 1024,
    }
}

/// A unary reply this small is covered by the call's own cost ([`call_cost`]), which counts
/// what h2 holds of a small reply for a peer that does not read: it is not held again.
pub(super) const SMALL_UNARY_REPLY: usize = 1024;

/// Bytes that calls in progress may hold: request messages not yet complete (for streaming
/// calls, the largest one seen, which tonic's decoder keeps as buffer capacity), replies not
/// yet handed to the connection, and each call's own cost ([`call_cost`]). One per connection,
/// drawing on one per client address, drawing on one for the whole server.
///
/// A call that would go over fails at once with RESOURCE_EXHAUSTED and drops what it held:
/// waiting instead could deadlock a connection whose flow-control window the waiting streams
/// hold, and the peer that pushed the budget to its limit is usually the one to refuse. When
/// the server's budget or an address's is full, it first sheds the streams drawing on it that
/// have been idle the longest ([`SheddableStreams`]), so that streams parked by the thousand
/// cannot lock everyone out.
#[derive(Debug)]
pub struct ByteBudget {
    limit: usize,
    used: AtomicUsize,
    /// What this budget draws on as well; `None` for the server-wide one.
    parent: Option<Arc<ByteBudget>>,
    /// The flag that sets `limit`, for the error message.
    flag: &'static str,
    /// The streams drawing on this budget, to shed when it is full (the server's and each
    /// address's; a connection's own streams are its own business).
    streams: Option<SheddableStreams>,
}

impl ByteBudget {
    /// The budget of the whole server, shedding `streams` when full.
    pub fn server(limit: usize, streams: SheddableStreams) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
            parent: None,
            flag: "--max-buffered-bytes",
            streams: Some(streams),
        })
    }

    /// A budget of `limit` bytes (set by `flag`) drawing on `parent`'s too.
    pub fn within(parent: &Arc<Self>, limit: usize, flag: &'static str) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
            parent: Some(parent.clone()),
            flag,
            streams: None,
        })
    }

    /// [`Self::within`], shedding `streams` when full.
    pub fn within_shedding(
        parent: &Arc<Self>,
        limit: usize,
        flag: &'static str,
        streams: SheddableStreams,
    ) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
            parent: Some(parent.clone()),
            flag,
            streams: Some(streams),
        })
    }

    /// A new streaming call drawing on this budget: sheddable by every budget above that sheds.
    pub fn claim_stream(self: &Arc<Self>) -> Arc<StreamClaim> {
        let claim = Arc::new(StreamClaim {
            held: AtomicUsize::new(0),
            last_active: AtomicU64::new(now_millis()),
            shed: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            budget: self.clone(),
        });
        let mut budget = Some(self);
        while let Some(this) = budget {
            if let Some(streams) = &this.streams {
                streams.register(&claim);
            }
            budget = this.parent.as_ref();
        }
        claim
    }

    /// Takes `bytes` from this budget and its parents, or none of them.
    pub fn take(&self, bytes: usize) -> Result<(), Status> {
        if bytes == 0 {
            return Ok(());
        }
        if !self.try_take(bytes) {
            let shed = match &self.streams {
                Some(streams) => streams.shed(bytes.max(self.limit / SHED_FRACTION)),
                None => 0,
            };
            if shed == 0 || !self.try_take(bytes) {
                return Err(Status::resource_exhausted(format!(
                    "server busy: calls in progress already hold the {} buffered bytes {} \
                     allows; try again later",
                    self.limit, self.flag
                )));
            }
        }
        if let Some(parent) = &self.parent
            && let Err(status) = parent.take(bytes)
        {
            self.used.fetch_sub(bytes, Ordering::Relaxed);
            return Err(status);
        }
        Ok(())
    }

    fn try_take(&self, bytes: usize) -> bool {
        let before = self.used.fetch_add(bytes, Ordering::Relaxed);
        if before.saturating_add(bytes) > self.limit {
            self.used.fetch_sub(bytes, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Returns `bytes` taken earlier.
    pub fn give_back(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        self.used.fetch_sub(bytes, Ordering::Relaxed);
        if let Some(parent) = &self.parent {
            parent.give_back(bytes);
        }
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// When the server's budget is full, streams are shed until this fraction of it is free: a
/// batch, so that a crowd of new calls does not sort the streams once each.
const SHED_FRACTION: usize = 64;

/// The streaming calls in progress, which the server may end (RESOURCE_EXHAUSTED) to make room
/// when its budget is full: those idle the longest first. A stream parked for minutes is the
/// cheapest call to end and the likeliest to be an attacker's; a unary call is over within its
/// deadline anyway, so unary calls are never shed. As Envoy's overload manager resets the
/// streams that have waited longest, and grpc-go bounds what one connection may park.
#[derive(Debug, Clone)]
pub struct SheddableStreams {
    inner: Arc<Mutex<StreamList>>,
    /// `formatdata_streams_shed_total`, when metrics are on.
    shed_total: Option<IntCounter>,
    /// The flag of the budget these streams draw on, for the log line.
    flag: &'static str,
}

#[derive(Debug, Default)]
struct StreamList {
    claims: Vec<Weak<StreamClaim>>,
    /// Length at which the dead entries are next swept out.
    sweep_at: usize,
}

impl SheddableStreams {
    pub fn new(flag: &'static str, shed_total: Option<IntCounter>) -> Self {
        Self {
            inner: Arc::default(),
            shed_total,
            flag,
        }
    }

    fn register(&self, claim: &Arc<StreamClaim>) {
        let mut list = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if list.claims.len() >= list.sweep_at {
            list.claims.retain(|claim| claim.strong_count() > 0);
            list.sweep_at = (2 * list.claims.len()).max(1024);
        }
        list.claims.push(Arc::downgrade(claim));
    }

    /// Ends the streams idle the longest until `wanted` bytes are given back; returns how many
    /// bytes were.
    fn shed(&self, wanted: usize) -> usize {
        let mut victims: Vec<Arc<StreamClaim>> = {
            let list = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            list.claims
                .iter()
                .filter_map(Weak::upgrade)
                // Already shed, or not yet holding anything: nothing to give back.
                .filter(|claim| {
                    !claim.shed.load(Ordering::Relaxed) && claim.held.load(Ordering::Relaxed) > 0
                })
                .collect()
        };
        victims.sort_unstable_by_key(|claim| claim.last_active.load(Ordering::Relaxed));
        let (mut freed, mut count) = (0, 0);
        for victim in victims {
            if freed >= wanted {
                break;
            }
            freed += victim.shed();
            count += 1;
        }
        if count > 0 {
            if let Some(counter) = &self.shed_total {
                counter.inc_by(count);
            }
            warn!(
                streams = count,
                bytes = freed,
                "budget full ({}): ended the streams idle the longest with RESOURCE_EXHAUSTED",
                self.flag
            );
        }
        freed
    }
}

/// One streaming call's stake in the budgets, which shedding can take back at once.
#[derive(Debug)]
pub struct StreamClaim {
    /// Bytes the call holds in `budget` that shedding gives back: its cost and its encoder's.
    held: AtomicUsize,
    /// When a message last went through, in milliseconds on [`now_millis`]'s clock.
    last_active: AtomicU64,
    /// Set when the stream is shed; the call then ends at its next poll.
    shed: AtomicBool,
    /// Wakes the call when it is shed.
    waker: AtomicWaker,
    /// Its connection's budget.
    budget: Arc<ByteBudget>,
}

impl StreamClaim {
    /// Takes `bytes` more for the call, given back by [`Self::release`] or by shedding.
    pub fn take(&self, bytes: usize) -> Result<(), Status> {
        self.budget.take(bytes)?;
        self.held.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// A message went through: the stream is not idle.
    pub fn touch(&self) {
        self.last_active.store(now_millis(), Ordering::Relaxed);
    }

    /// Whether the stream has been shed; if not, `cx` is woken when it is.
    pub fn poll_shed(&self, cx: &mut Context<'_>) -> bool {
        if self.shed.load(Ordering::Acquire) {
            return true;
        }
        self.waker.register(cx.waker());
        self.shed.load(Ordering::Acquire)
    }

    /// Gives back what the call holds; done when the call ends.
    pub fn release(&self) {
        self.budget.give_back(self.held.swap(0, Ordering::Relaxed));
    }

    fn shed(&self) -> usize {
        self.shed.store(true, Ordering::Release);
        let bytes = self.held.swap(0, Ordering::Relaxed);
        self.budget.give_back(bytes);
        self.waker.wake();
        bytes
    }
}

/// The status a shed stream ends with.
pub(super) fn shed_status() -> Status {
    Status::resource_exhausted(
        "server short of memory: this stream was among those idle the longest and was ended \
         to make room; reconnect and try again",
    )
}

/// Milliseconds since the first call, on a monotonic clock.
fn now_millis() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_budget_draws_on_the_server_budget() {
        let server = ByteBudget::server(100, SheddableStreams::new("--max-buffered-bytes", None));
        let first = ByteBudget::within(&server, 60, "--max-buffered-bytes-per-connection");
        let second = ByteBudget::within(&server, 60, "--max-buffered-bytes-per-connection");

        first.take(60).unwrap();
        assert!(first.take(1).is_err(), "over the connection's own limit");
        let refused = second.take(50).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.message().contains("--max-buffered-bytes "),
            "{refused:?}"
        );
        assert_eq!(second.used(), 0, "a refused take leaves nothing behind");
        second.take(40).unwrap();
        assert_eq!(server.used(), 100);

        first.give_back(60);
        second.give_back(40);
        assert_eq!(server.used(), 0);
    }

    #[test]
    fn a_full_server_budget_sheds_the_streams_idle_the_longest() {
        let streams = SheddableStreams::new("--max-buffered-bytes", None);
        let server = ByteBudget::server(100, streams.clone());
        let connection = ByteBudget::within(&server, 200, "--max-buffered-bytes-per-connection");
        let claims: Vec<_> = (0..5)
            .map(|_| {
                let claim = connection.claim_stream();
                claim.take(20).unwrap();
                claim
            })
            .collect();
        // The first two idle the longest.
        for (claim, last_active) in claims.iter().zip([1, 2, 50, 60, 1_000]) {
            claim.last_active.store(last_active, Ordering::Relaxed);
        }
        assert_eq!(server.used(), 100);

        connection.take(30).unwrap();
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let shed: Vec<bool> = claims.iter().map(|c| c.poll_shed(&mut cx)).collect();
        assert_eq!(shed, [true, true, false, false, false]);
        assert_eq!(server.used(), 90);

        for claim in &claims {
            claim.release();
        }
        connection.give_back(30);
        assert_eq!(server.used(), 0, "a shed claim gives back nothing twice");
    }
}
