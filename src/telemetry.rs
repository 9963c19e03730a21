//! Log output for the binaries: human-readable lines on stderr, filtered by `RUST_LOG`.
//!
//! Logs go to stderr so that stdout carries only what a program prints as its result (the
//! client's `received: ...`), which keeps both binaries usable in pipelines.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `default_filter` applies when `RUST_LOG` is unset.
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
