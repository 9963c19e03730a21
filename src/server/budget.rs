//! The bytes calls in progress may hold, counted: per connection and for the whole server.
//!
//! Flow control bounds what one well-behaved peer sends ahead; this bounds what any number of
//! peers make the server keep, so a deliberate attacker meets RESOURCE_EXHAUSTED instead of an
//! out-of-memory kill.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tonic::Status;

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
}
