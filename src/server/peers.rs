//! Client addresses, each held to a share of the server: of its connections
//! (`--max-connections-per-peer`) and of the bytes calls may hold (`--max-buffered-bytes-per-peer`).
//! Without them one host, opening connections by the hundred, could take every slot and every
//! byte, and everyone else would be refused; with them it takes its share, and the rest stays for
//! others, as nginx's `limit_conn` and Envoy's per-downstream limits do.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::IntCounter;

use crate::server::budget::{ByteBudget, SheddableStreams};

/// Every address with a connection open, and the shares each may take.
#[derive(Debug)]
pub(super) struct Peers {
    open: Mutex<HashMap<IpAddr, Arc<Peer>>>,
    max_connections: usize,
    max_bytes: usize,
    server_budget: Arc<ByteBudget>,
    /// `formatdata_connections_refused_total`, when metrics are on.
    refused_total: Option<IntCounter>,
    /// `formatdata_streams_shed_total`, when metrics are on.
    shed_total: Option<IntCounter>,
}

const PEER_FLAG: &str = "--max-buffered-bytes-per-peer";

/// One client address.
#[derive(Debug)]
pub(super) struct Peer {
    connections: AtomicUsize,
    /// What its calls hold, on all its connections.
    pub budget: Arc<ByteBudget>,
}

/// A connection's place in its address's share; gives it back when dropped.
#[derive(Debug)]
pub(super) struct PeerSlot {
    peers: Arc<Peers>,
    addr: IpAddr,
    pub peer: Arc<Peer>,
}

/// Why a connection was not let in.
#[derive(Debug, thiserror::Error)]
#[error(
    "refused a connection from {addr}: it already has {open} open (--max-connections-per-peer)"
)]
pub(super) struct OverShare {
    addr: IpAddr,
    open: usize,
}

impl Peers {
    pub(super) fn new(
        max_connections: usize,
        max_bytes: usize,
        server_budget: Arc<ByteBudget>,
        refused_total: Option<IntCounter>,
        shed_total: Option<IntCounter>,
    ) -> Arc<Self> {
        Arc::new(Self {
            open: Mutex::default(),
            max_connections,
            max_bytes,
            server_budget,
            refused_total,
            shed_total,
        })
    }

    /// A slot for one more connection from `addr`, if its share has room.
    pub(super) fn admit(self: &Arc<Self>, addr: IpAddr) -> Result<PeerSlot, OverShare> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let peer = open.entry(addr).or_insert_with(|| {
            Arc::new(Peer {
                connections: AtomicUsize::new(0),
                budget: ByteBudget::within_shedding(
                    &self.server_budget,
                    self.max_bytes,
                    PEER_FLAG,
                    SheddableStreams::new(PEER_FLAG, self.shed_total.clone()),
                ),
            })
        });
        let connections = peer.connections.load(Ordering::Relaxed);
        if connections >= self.max_connections {
            if let Some(counter) = &self.refused_total {
                counter.inc();
            }
            return Err(OverShare {
                addr,
                open: connections,
            });
        }
        peer.connections.store(connections + 1, Ordering::Relaxed);
        Ok(PeerSlot {
            peers: self.clone(),
            addr,
            peer: peer.clone(),
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self
            .peers
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.peer.connections.fetch_sub(1, Ordering::Relaxed) == 1 {
            open.remove(&self.addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_its_share_of_connections_and_bytes() {
        let server = ByteBudget::server(100, SheddableStreams::new("--max-buffered-bytes", None));
        let peers = Peers::new(2, 40, server.clone(), None, None);
        let here: IpAddr = "127.0.0.2".parse().unwrap();
        let there: IpAddr = "127.0.0.3".parse().unwrap();

        let first = peers.admit(here).unwrap();
        let second = peers.admit(here).unwrap();
        let refused = peers.admit(here).unwrap_err();
        assert!(refused.to_string().contains("127.0.0.2"), "{refused}");
        let elsewhere = peers.admit(there).unwrap();

        first.peer.budget.take(40).unwrap();
        assert!(
            second.peer.budget.take(1).is_err(),
            "the address's bytes are shared"
        );
        elsewhere.peer.budget.take(40).unwrap();
        assert_eq!(server.used(), 80);

        first.peer.budget.give_back(40);
        drop((first, second));
        let _again = peers.admit(here).expect("slots come back");
        assert_eq!(peers.open.lock().unwrap().len(), 2);
        drop(elsewhere);
        assert_eq!(
            peers.open.lock().unwrap().len(),
            1,
            "an address with none open is forgotten"
        );
    }
}
