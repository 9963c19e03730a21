//! What the server lets its peers take from it, counted: connections (file descriptors) and the
//! bytes held for calls in progress.
//!
//! Flow control and the stream limit bound what one well-behaved peer takes; these bound what
//! any number of peers take together, so a deliberate attacker meets a clear refusal (a
//! connection left in the backlog, RESOURCE_EXHAUSTED) instead of an out-of-memory kill or a
//! server that cannot open another file.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::{SelectAll, select_all};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::Status;
use tracing::{debug, warn};

/// Largest default for `--max-connections`, whatever the descriptor limit: beyond it a single
/// process is rarely the right answer, and each connection may hold its share of memory.
const MAX_DEFAULT_CONNECTIONS: u64 = 10_000;

/// Descriptors kept out of the connection count: listeners, the metrics endpoint and its
/// connections, the runtime's own (epoll, eventfd), stdio, files read at startup. A quarter of
/// a small limit, so a process held to 64 descriptors still serves 48 connections.
const RESERVED_DESCRIPTORS: u64 = 64;

/// Connections the metrics endpoint serves at once: scrapers are few.
pub const MAX_METRICS_CONNECTIONS: usize = 32;

/// The connections this process can serve at once given its open-file limit, after raising the
/// soft limit to the hard one (as Go's runtime does: the soft limit is a default for programs
/// that do not know better, the hard one is what the administrator allows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorLimit {
    /// The open-file limit now in force.
    pub open_files: u64,
    /// The most connections that fit under it.
    pub max_connections: usize,
}

impl DescriptorLimit {
    /// Raises the soft RLIMIT_NOFILE to the hard limit (where the platform allows) and reports
    /// what fits.
    pub fn raise() -> io::Result<Self> {
        let open_files = raise_open_file_limit()?;
        Ok(Self::for_open_files(open_files))
    }

    fn for_open_files(open_files: u64) -> Self {
        let reserved = RESERVED_DESCRIPTORS.min(open_files / 4);
        let usable = open_files.saturating_sub(reserved).max(1);
        Self {
            open_files,
            max_connections: usable as usize,
        }
    }

    /// `--max-connections` when not given.
    pub fn default_max_connections(&self) -> usize {
        self.max_connections.min(MAX_DEFAULT_CONNECTIONS as usize)
    }
}

#[cfg(unix)]
fn raise_open_file_limit() -> io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return Ok(hard);
    }
    Ok(soft)
}

#[cfg(not(unix))]
fn raise_open_file_limit() -> io::Result<u64> {
    Ok(MAX_DEFAULT_CONNECTIONS + RESERVED_DESCRIPTORS)
}

/// First pause after accept failed for want of resources (descriptors, memory); doubled on each
/// failure in a row, up to [`MAX_ACCEPT_PAUSE`].
const FIRST_ACCEPT_PAUSE: Duration = Duration::from_millis(50);

const MAX_ACCEPT_PAUSE: Duration = Duration::from_secs(1);

/// At most one warning per this long about failing accepts, however many there are.
const ACCEPT_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// Accepts connections from some listeners, at most `max` open at once: at the cap it stops
/// accepting, so further peers wait in the kernel's backlog instead of taking descriptors.
///
/// When accept fails because the process or the system is out of descriptors (or memory), it
/// pauses, longer each time in a row, and says so in one warning per 10 s: a loop that retried
/// at once would spin, and one warning per failure would flood the log.
pub struct Acceptor {
    incoming: SelectAll<TcpListenerStream>,
    slots: Arc<Semaphore>,
    pause: Duration,
    last_warning: Option<Instant>,
    /// Failures since the last warning.
    unreported: u32,
}

impl Acceptor {
    pub fn new(listeners: Vec<TcpListener>, max: usize) -> Self {
        Self {
            incoming: select_all(listeners.into_iter().map(TcpListenerStream::new)),
            slots: Arc::new(Semaphore::new(max)),
            pause: FIRST_ACCEPT_PAUSE,
            last_warning: None,
            unreported: 0,
        }
    }

    /// The next connection, and its slot: drop the slot when the connection is closed.
    /// Cancel-safe: dropped before a connection is returned, it loses none.
    pub async fn accept(&mut self) -> (TcpStream, OwnedSemaphorePermit) {
        loop {
            let slot = self
                .slots
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            match self.incoming.next().await {
                Some(Ok(stream)) => {
                    self.pause = FIRST_ACCEPT_PAUSE;
                    return (stream, slot);
                }
                Some(Err(error)) if is_out_of_resources(&error) => {
                    drop(slot);
                    self.warn_rate_limited(&error);
                    tokio::time::sleep(self.pause).await;
                    self.pause = (self.pause * 2).min(MAX_ACCEPT_PAUSE);
                }
                // The peer gave up before it was accepted, and the like: that connection only.
                Some(Err(error)) => debug!("accepting a connection failed: {error}"),
                None => std::future::pending().await,
            }
        }
    }

    fn warn_rate_limited(&mut self, error: &io::Error) {
        self.unreported += 1;
        if self
            .last_warning
            .is_some_and(|last| last.elapsed() < ACCEPT_WARNING_INTERVAL)
        {
            return;
        }
        warn!(
            failures = self.unreported,
            "accepting connections failed: {error}; pausing accepts until it passes (one warning per {ACCEPT_WARNING_INTERVAL:?})"
        );
        self.last_warning = Some(Instant::now());
        self.unreported = 0;
    }
}

/// Whether accept failed for want of descriptors or memory, which waiting can cure.
fn is_out_of_resources(error: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM on Linux.
    matches!(error.raw_os_error(), Some(24 | 23 | 105 | 12))
}

/// What a call in progress costs the server besides its messages, as measured with 256 calls on
/// each of 20 connections, each call waiting for its client (release build): about 4 KiB for a
/// unary call (its task, h2's stream, the middleware), about 13 KiB for a stream (tonic's
/// decode and encode buffers on top). Charged to the budgets while the call runs.
pub fn call_cost(one_request: bool) -> usize {
    match one_request {
        true => 4 * 1024,
        false => 16 * 1024,
    }
}

/// Bytes that calls in progress may hold: request messages not yet complete (for streaming
/// calls, the largest one seen, which tonic's decoder keeps as buffer capacity), replies not
/// yet handed to the connection, and each call's own cost ([`call_cost`]). One per connection, each drawing on one for the whole server.
///
/// A call that would go over fails at once with RESOURCE_EXHAUSTED and drops what it held:
/// waiting instead could deadlock a connection whose flow-control window the waiting streams
/// hold, and the peer that pushed the budget to its limit is usually the one to refuse.
#[derive(Debug)]
pub struct ByteBudget {
    limit: usize,
    used: AtomicUsize,
    /// What this budget draws on as well; `None` for the server-wide one.
    parent: Option<Arc<ByteBudget>>,
    /// The flag that sets `limit`, for the error message.
    flag: &'static str,
}

impl ByteBudget {
    /// The budget of the whole server.
    pub fn server(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
            parent: None,
            flag: "--max-buffered-bytes",
        })
    }

    /// A connection's budget, drawing on the server's too.
    pub fn connection(server: &Arc<Self>, limit: usize) -> Self {
        Self {
            limit,
            used: AtomicUsize::new(0),
            parent: Some(server.clone()),
            flag: "--max-buffered-bytes-per-connection",
        }
    }

    /// Takes `bytes` from this budget and its parent, or neither.
    pub fn take(&self, bytes: usize) -> Result<(), Status> {
        if bytes == 0 {
            return Ok(());
        }
        let before = self.used.fetch_add(bytes, Ordering::Relaxed);
        if before.saturating_add(bytes) > self.limit {
            self.used.fetch_sub(bytes, Ordering::Relaxed);
            return Err(Status::resource_exhausted(format!(
                "server busy: calls in progress already hold the {} buffered bytes {} allows; \
                 try again later",
                self.limit, self.flag
            )));
        }
        if let Some(parent) = &self.parent
            && let Err(status) = parent.take(bytes)
        {
            self.used.fetch_sub(bytes, Ordering::Relaxed);
            return Err(status);
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_budget_draws_on_the_server_budget() {
        let server = ByteBudget::server(100);
        let first = ByteBudget::connection(&server, 60);
        let second = ByteBudget::connection(&server, 60);

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
    fn descriptors_leave_room_for_the_process_itself() {
        assert_eq!(DescriptorLimit::for_open_files(64).max_connections, 48);
        assert_eq!(DescriptorLimit::for_open_files(1024).max_connections, 960);
        let large = DescriptorLimit::for_open_files(1 << 20);
        assert_eq!(large.default_max_connections(), 10_000);
        assert_eq!(large.max_connections, (1 << 20) - 64);
    }
}
