//! Listening: binding every address a name resolves to, then accepting connections, no more at
//! once than the open-file limit can back (`--max-connections`).
//!
//! Binding and serving are separate steps so that callers (the binary, the tests) learn the real
//! addresses, port 0 included, before the first connection arrives, and so that "address in use"
//! is reported before anything is served. At the connection cap the server stops accepting, so
//! further peers wait in the kernel's backlog rather than taking descriptors it does not have.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::{SelectAll, select_all};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::{debug, warn};

use crate::addr::HostPort;

/// Largest default for `--max-connections`, whatever the descriptor limit: beyond it a single
/// process is rarely the right answer, and each connection may hold its share of memory.
const MAX_DEFAULT_CONNECTIONS: u64 = 10_000;

/// Descriptors kept out of the connection count: listeners, the metrics endpoint and its
/// connections, the runtime's own (epoll, eventfd), stdio, files read at startup. A quarter of
/// a small limit, so a process held to 64 descriptors still serves 48 connections.
const RESERVED_DESCRIPTORS: u64 = 64;

/// The connections this process can serve at once given its open-file limit, after raising the
/// soft limit to the hard one (as Go's runtime does: the soft limit is a default for programs
/// that do not know better, the hard one is what the administrator allows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::server) struct DescriptorLimit {
    /// The open-file limit now in force.
    pub open_files: u64,
    /// The most connections that fit under it.
    pub max_connections: usize,
}

impl DescriptorLimit {
    /// Raises the soft RLIMIT_NOFILE to the hard limit (where the platform allows) and reports
    /// what fits.
    pub(in crate::server) fn raise() -> io::Result<Self> {
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
    pub(in crate::server) fn default_max_connections(&self) -> usize {
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
pub(in crate::server) struct Acceptor {
    incoming: SelectAll<TcpListenerStream>,
    slots: Arc<Semaphore>,
    pause: Duration,
    last_warning: Option<Instant>,
    /// Failures since the last warning.
    unreported: u32,
}

impl Acceptor {
    pub(in crate::server) fn new(listeners: Vec<TcpListener>, max: usize) -> Self {
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
    pub(in crate::server) async fn accept(&mut self) -> (TcpStream, OwnedSemaphorePermit) {
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

/// How many times to retry when port 0 was asked for on a name with several addresses and the
/// free port picked on the first address is taken on another one.
const EPHEMERAL_PORT_ATTEMPTS: usize = 8;

/// Why the server could not start listening.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot resolve {addr}: {source}")]
    Resolve { addr: HostPort, source: io::Error },
    #[error("{addr} resolves to no address")]
    NoAddress { addr: HostPort },
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
}

/// Bound, not yet serving, sockets: one per address the host name resolved to.
#[derive(Debug)]
pub struct Listeners {
    /// Accepting ends, in resolution order.
    pub(crate) sockets: Vec<TcpListener>,
    /// The addresses actually bound (the real port when 0 was asked for), for logs and callers.
    pub(crate) addrs: Vec<SocketAddr>,
}

impl Listeners {
    /// Binds every address `addr` resolves to, on one port.
    ///
    /// Like grpcio, `localhost` means both 127.0.0.1 and ::1 where the machine has both. An
    /// address the machine cannot bind at all (::1 with IPv6 disabled) is skipped with a warning
    /// as long as another one is served; an address in use is an error.
    pub async fn bind(addr: &HostPort) -> Result<Self, BindError> {
        let mut resolved: Vec<SocketAddr> =
            tokio::net::lookup_host((addr.host.as_str(), addr.port))
                .await
                .map_err(|source| BindError::Resolve {
                    addr: addr.clone(),
                    source,
                })?
                .collect();
        // Resolvers list an address once per socket type; one listener each is enough.
        let mut seen = Vec::with_capacity(resolved.len());
        resolved.retain(|candidate| {
            let new = !seen.contains(candidate);
            seen.push(*candidate);
            new
        });
        if resolved.is_empty() {
            return Err(BindError::NoAddress { addr: addr.clone() });
        }

        let mut attempts_left = EPHEMERAL_PORT_ATTEMPTS;
        loop {
            match bind_all(&resolved).await {
                Err(BindError::Listen { source, .. })
                    if addr.port == 0
                        && source.kind() == io::ErrorKind::AddrInUse
                        && attempts_left > 1 =>
                {
                    attempts_left -= 1;
                }
                result => return result,
            }
        }
    }

    /// The addresses being listened on, with real port numbers.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }
}

/// Binds `resolved` on one shared port: the given one, or the one the OS picks for the first
/// address bound when it is 0.
async fn bind_all(resolved: &[SocketAddr]) -> Result<Listeners, BindError> {
    let mut listeners = Listeners {
        sockets: Vec::with_capacity(resolved.len()),
        addrs: Vec::with_capacity(resolved.len()),
    };
    let mut unavailable = Vec::new();
    let mut port = resolved[0].port();
    for candidate in resolved {
        let addr = SocketAddr::new(candidate.ip(), port);
        let bound = TcpListener::bind(addr)
            .await
            .and_then(|socket| Ok((socket.local_addr()?, socket)));
        match bound {
            Ok((local, socket)) => {
                port = local.port();
                listeners.sockets.push(socket);
                listeners.addrs.push(local);
            }
            Err(source) if machine_lacks_address(&source) => unavailable.push((addr, source)),
            Err(source) => return Err(BindError::Listen { addr, source }),
        }
    }
    if listeners.sockets.is_empty() {
        let (addr, source) = unavailable.swap_remove(0);
        return Err(BindError::Listen { addr, source });
    }
    for (addr, source) in unavailable {
        warn!("not listening on {addr}: {source}");
    }
    Ok(listeners)
}

/// Whether binding failed because this machine cannot have that address at all (::1 with IPv6
/// disabled, say), as opposed to it being taken or forbidden, which the user must hear about.
fn machine_lacks_address(error: &io::Error) -> bool {
    !matches!(
        error.kind(),
        io::ErrorKind::AddrInUse | io::ErrorKind::PermissionDenied
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_leave_room_for_the_process_itself() {
        assert_eq!(DescriptorLimit::for_open_files(64).max_connections, 48);
        assert_eq!(DescriptorLimit::for_open_files(1024).max_connections, 960);
        let large = DescriptorLimit::for_open_files(1 << 20);
        assert_eq!(large.default_max_connections(), 10_000);
        assert_eq!(large.max_connections, (1 << 20) - 64);
    }

    #[tokio::test]
    async fn several_addresses_share_the_port_picked_for_the_first() {
        let resolved: Vec<SocketAddr> =
            vec!["127.0.0.1:0".parse().unwrap(), "[::1]:0".parse().unwrap()];

        let listeners = bind_all(&resolved).await.unwrap();

        let addrs = listeners.local_addrs();
        assert_eq!(addrs[0].ip(), resolved[0].ip());
        assert_ne!(addrs[0].port(), 0);
        // ::1 is skipped, not an error, on machines without IPv6; where it exists it must be
        // served on the same port as 127.0.0.1.
        assert!(addrs.iter().all(|addr| addr.port() == addrs[0].port()));
        assert!(addrs.len() == 2 || !has_ipv6_loopback());
    }

    #[tokio::test]
    async fn an_address_in_use_is_not_skipped() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let resolved = vec![taken.local_addr().unwrap(), "[::1]:0".parse().unwrap()];

        let error = bind_all(&resolved).await.unwrap_err();

        assert!(matches!(error, BindError::Listen { addr, .. } if addr == resolved[0]));
    }

    fn has_ipv6_loopback() -> bool {
        std::net::TcpListener::bind("[::1]:0").is_ok()
    }
}
