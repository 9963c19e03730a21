//! Log output for the binaries: lines on stderr, filtered by `RUST_LOG`, as text or JSON.
//!
//! Logs go to stderr so that stdout carries only what a program prints as its result (the
//! client's `received: ...`), which keeps both binaries usable in pipelines.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Installs the global subscriber. `default_filter` applies when `RUST_LOG` is unset.
pub fn init(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .finish()
            .with(without_repeated_export_failures())
            .init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .finish()
            .with(without_repeated_export_failures())
            .init(),
    }
}

/// Leaves out the OpenTelemetry SDK's line per failed export: with the collector down that is
/// a line per batch, and `crate::otel` reports the same failures, counted, once in a while.
fn without_repeated_export_failures<S: tracing::Subscriber>() -> impl Layer<S> {
    tracing_subscriber::filter::filter_fn(|metadata| {
        let name = metadata.name();
        !(metadata.target().starts_with("opentelemetry")
            && (name == "BatchSpanProcessor.ExportError" || name.starts_with("Export.Failed")))
    })
}
