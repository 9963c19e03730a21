//! The signals that stop the server: Ctrl-C (SIGINT) from a terminal, SIGTERM from a process
//! manager such as systemd or Kubernetes.

use tracing::info;

/// Completes when the process is asked to stop.
///
/// Pass it to [`crate::server::run`]: the server then stops accepting connections, lets calls
/// already accepted finish, and returns.
pub async fn signal() {
    let name = wait_for_signal().await;
    info!("received {name}, shutting down");
}

#[cfg(unix)]
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};

    // Registering can only fail if the signal is forbidden (SIGKILL and the like); SIGINT and
    // SIGTERM never are, so a failure here is a broken platform, not a user error.
    let mut interrupt = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut terminate = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> &'static str {
    // Same reasoning as on Unix: Ctrl-C can always be listened for.
    tokio::signal::ctrl_c().await.expect("Ctrl-C handler");
    "Ctrl-C"
}
