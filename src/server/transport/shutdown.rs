//! The signals that stop the server: Ctrl-C (SIGINT) from a terminal, SIGTERM from a process
//! manager such as systemd or Kubernetes.
//!
//! The first one starts a graceful shutdown; a second one, for an operator who will not wait for
//! the grace period, ends the process at once.

use tracing::{error, info};

/// Completes when the process is first asked to stop, and from then on watches for a second
/// request, which exits immediately with status 128 + signal number, as a shell reports a
/// process killed by that signal.
///
/// Pass it to [`crate::server::Server::run`]. The handlers are installed when this is called, not when
/// the future is first polled: a SIGTERM that arrives while the server is still starting up
/// must start a graceful shutdown, not kill the process with the default action.
pub fn signal() -> impl Future<Output = ()> {
    let mut signals = Signals::register();
    async move {
        let first = signals.next().await;
        info!("received {}, shutting down gracefully", first.name);
        tokio::spawn(async move {
            let second = signals.next().await;
            error!("received {} during shutdown, exiting now", second.name);
            std::process::exit(128 + second.number);
        });
    }
}

struct Received {
    name: &'static str,
    number: i32,
}

#[cfg(unix)]
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn register() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        // Registering fails only for signals that cannot be caught (SIGKILL and the like);
        // SIGINT and SIGTERM always can, so a failure here is a broken platform, not a user error.
        Self {
            interrupt: signal(SignalKind::interrupt()).expect("SIGINT handler"),
            terminate: signal(SignalKind::terminate()).expect("SIGTERM handler"),
        }
    }

    async fn next(&mut self) -> Received {
        tokio::select! {
            _ = self.interrupt.recv() => Received { name: "SIGINT", number: 2 },
            _ = self.terminate.recv() => Received { name: "SIGTERM", number: 15 },
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn register() -> Self {
        Self
    }

    async fn next(&mut self) -> Received {
        // Same reasoning as on Unix: Ctrl-C can always be listened for.
        tokio::signal::ctrl_c().await.expect("Ctrl-C handler");
        Received {
            name: "Ctrl-C",
            number: 2,
        }
    }
}
