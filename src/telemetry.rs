//! Log output for the binaries: lines on stderr, filtered by `RUST_LOG`, as text or JSON.
//!
//! Logs go to stderr so that stdout carries only what a program prints as its result (the
//! client's `received: ...`), which keeps both binaries usable in pipelines.
//!
//! What a client controls never reaches a line as it is: text it sent goes through
//! [`untrusted`] (escaped, cut short), and warnings are rate-limited per kind ([`RateLimit`]),
//! so that no client can forge a line, write a megabyte into one, or fill a disk.

use std::collections::HashMap;
use std::fmt;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
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
    let rate_limit = RateLimit::default();
    rate_limit.report_every(RATE_WINDOW);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .finish()
            .with(without_repeated_export_failures())
            .with(rate_limit)
            .init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .finish()
            .with(without_repeated_export_failures())
            .with(rate_limit)
            .init(),
    }
}

/// Longest piece of client text a log line carries, in characters.
const MAX_UNTRUSTED_CHARS: usize = 200;

/// Text a client sent (a method, a status message echoing its input, a host name), fit for a
/// log line of any format: control characters escaped (`\n`, `\u{1b}`), so it cannot end the
/// line or forge the next one, and cut after [`MAX_UNTRUSTED_CHARS`] characters with a count of
/// the rest.
pub fn untrusted(text: &str) -> Untrusted<'_> {
    Untrusted(text)
}

/// See [`untrusted`].
pub struct Untrusted<'a>(&'a str);

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut chars = self.0.char_indices();
        for (_, c) in chars.by_ref().take(MAX_UNTRUSTED_CHARS) {
            if c.is_control() || c == '\\' {
                write!(f, "{}", c.escape_default())?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        if let Some((at, _)) = chars.next() {
            write!(f, "... ({} bytes cut)", self.0.len() - at)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// The window over which warnings of one kind are counted.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Warnings (and errors) of one kind written per [`RATE_WINDOW`]; the rest are counted and
/// reported in one line when the window ends.
const LINES_PER_WINDOW: u32 = 20;

/// Rate-limits warnings and errors per kind (the place in the code that writes them): bad
/// calls by the thousand write [`LINES_PER_WINDOW`] lines per 10 s, then one line saying how many
/// like them were left out. Lines below WARN are not limited: they are off unless asked for.
#[derive(Clone, Default)]
pub struct RateLimit {
    kinds: Arc<Mutex<HashMap<Identifier, Kind>>>,
}

/// One kind of line's count in the current window.
struct Kind {
    metadata: &'static Metadata<'static>,
    window_start: Instant,
    written: u32,
    suppressed: u64,
}

impl RateLimit {
    /// Whether a line of `metadata`'s kind may be written now.
    fn admit(&self, metadata: &'static Metadata<'static>) -> bool {
        let now = Instant::now();
        let mut kinds = self
            .kinds
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let kind = kinds.entry(metadata.callsite()).or_insert(Kind {
            metadata,
            window_start: now,
            written: 0,
            suppressed: 0,
        });
        if now.duration_since(kind.window_start) >= RATE_WINDOW && kind.suppressed == 0 {
            kind.window_start = now;
            kind.written = 0;
        }
        if kind.written < LINES_PER_WINDOW {
            kind.written += 1;
            true
        } else {
            kind.suppressed += 1;
            false
        }
    }

    /// Writes, every `interval`, a line for each kind whose lines were left out in the window
    /// that ended, and opens a new window for it. A thread of its own, so the report comes even
    /// when the flood has stopped and nothing else is logged.
    fn report_every(&self, interval: Duration) {
        let this = self.clone();
        let spawned = std::thread::Builder::new()
            .name("log-rate-limit".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(interval);
                    this.report();
                }
            });
        if let Err(error) = spawned {
            eprintln!("cannot start the log rate limiter's thread: {error}");
        }
    }

    fn report(&self) {
        let now = Instant::now();
        let mut reports = Vec::new();
        {
            let mut kinds = self
                .kinds
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for kind in kinds.values_mut() {
                if now.duration_since(kind.window_start) < RATE_WINDOW {
                    continue;
                }
                if kind.suppressed > 0 {
                    reports.push((kind.metadata, kind.suppressed));
                }
                kind.window_start = now;
                kind.written = 0;
                kind.suppressed = 0;
            }
        }
        for (metadata, suppressed) in reports {
            tracing::warn!(
                target: "formatdata::log",
                kind = metadata.name(),
                target_of_kind = metadata.target(),
                "{suppressed} similar lines suppressed in the last {}s",
                RATE_WINDOW.as_secs()
            );
        }
    }
}

impl<S: Subscriber> Layer<S> for RateLimit {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        let metadata = event.metadata();
        *metadata.level() > Level::WARN || self.admit(metadata)
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
