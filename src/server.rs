//! Server wiring: bind the listening sockets, then serve [`FormatDataService`] on them until a
//! shutdown future completes.
//!
//! Binding and serving are separate steps so that callers (the binary, the tests) learn the real
//! addresses, port 0 included, before the first connection arrives, and so that "address in use"
//! is reported before anything is served.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use futures_util::stream::select_all;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tracing::{info, warn};

use crate::config::HostPort;
use crate::service::FormatDataService;

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
    sockets: Vec<TcpListener>,
    /// The addresses actually bound (the real port when 0 was asked for), for logs and callers.
    addrs: Vec<SocketAddr>,
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

/// Serves `example.FormatData` on `listeners` until `shutdown` completes, then stops accepting,
/// lets the calls in progress finish, and returns.
pub async fn run(
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    info!("serving example.FormatData on {}", join(&listeners.addrs));
    let incoming = select_all(
        listeners
            .sockets
            .into_iter()
            // Replies are small and written whole: Nagle's algorithm would only delay them.
            .map(|socket| TcpIncoming::from(socket).with_nodelay(Some(true))),
    );
    Server::builder()
        .add_service(FormatDataService.into_server())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    info!("server stopped");
    Ok(())
}

fn join(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

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
