//! The command lines of the two binaries, each flag also readable from a `FORMATDATA_*`
//! variable, and their translation into the library's settings ([`ServerConfig`],
//! [`ClientConfig`], [`BenchConfig`]). The one place clap appears: the library takes plain
//! settings, whose defaults `--help` shows.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tonic::codec::CompressionEncoding;

use crate::addr::{DEFAULT_ADDR, HostPort, Target};
use crate::client::bench::{BenchConfig, ascii_payload};
use crate::client::{ClientConfig, ClientTls, DEFAULT_TEXT};
use crate::otel;
use crate::server::{ReplyCompression, ServerConfig, TlsFiles};
use crate::telemetry::LogFormat;

/// Where a bearer token comes from. Only the environment, never a flag: command lines are
/// visible to every user of the machine through `ps`.
pub const AUTH_TOKEN_ENV: &str = "FORMATDATA_AUTH_TOKEN";

/// The server's defaults, which `--help` shows.
const SERVER: ServerConfig = ServerConfig::DEFAULT;

/// Serves `example.FormatData` over gRPC: replies with the text it is sent, uppercased.
///
/// Also serves grpc.health.v1.Health and gRPC reflection. Set FORMATDATA_AUTH_TOKEN to require
/// `authorization: Bearer <token>` on FormatData calls.
#[derive(Debug, Parser)]
#[command(name = "server", version)]
pub struct ServerArgs {
    /// Address to listen on, as HOST:PORT. A host name is served on every address it resolves
    /// to (both 127.0.0.1 and ::1 for localhost); port 0 picks a free port.
    #[arg(long, env = "FORMATDATA_ADDR", default_value = DEFAULT_ADDR)]
    pub addr: HostPort,

    /// Log line format on stderr.
    #[arg(long, env = "FORMATDATA_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Seconds that calls in progress get to finish after SIGINT or SIGTERM; the rest are then
    /// cancelled.
    #[arg(long, env = "FORMATDATA_SHUTDOWN_GRACE", default_value_t = Seconds(SERVER.shutdown_grace),
          value_parser = Seconds::parse)]
    pub shutdown_grace: Seconds,

    /// PEM certificate chain to serve TLS with (needs --tls-key).
    #[arg(long, env = "FORMATDATA_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "FORMATDATA_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificate(s): clients must present a certificate signed by one (mutual TLS).
    #[arg(long, env = "FORMATDATA_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Largest request and reply, in bytes, uncompressed; larger ones fail with
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "FORMATDATA_MAX_MESSAGE_BYTES", default_value_t = SERVER.max_message_bytes)]
    pub max_message_bytes: usize,

    /// Most calls in flight on one HTTP/2 connection.
    #[arg(long, env = "FORMATDATA_MAX_CONCURRENT_STREAMS",
          default_value_t = SERVER.max_concurrent_streams,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_streams: u32,

    /// Seconds between HTTP/2 keepalive pings; a peer that leaves one unanswered for as long
    /// (20 s at most) is dropped. 0 turns pings off.
    #[arg(long, env = "FORMATDATA_KEEPALIVE_SECS",
          default_value_t = Seconds(SERVER.keepalive.expect("on by default")),
          value_parser = Seconds::parse)]
    pub keepalive_secs: Seconds,

    /// Seconds a new connection gets to finish the TLS handshake and send the HTTP/2 preface;
    /// a peer that connects and stays silent is dropped after it.
    #[arg(long, env = "FORMATDATA_HANDSHAKE_TIMEOUT",
          default_value_t = Seconds(SERVER.handshake_timeout), value_parser = Seconds::parse_positive)]
    pub handshake_timeout: Seconds,

    /// Most connections served at once; more wait in the kernel's backlog until one closes
    /// [default: what the open-file limit allows, at most 10000].
    #[arg(long, env = "FORMATDATA_MAX_CONNECTIONS",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,

    /// Seconds a request may stop in the middle of a message (or an HTTP/1.1 request head may
    /// take) before the call ends with DEADLINE_EXCEEDED (the connection, for a head).
    #[arg(long, env = "FORMATDATA_STALL_TIMEOUT", default_value_t = Seconds(SERVER.stall_timeout),
          value_parser = Seconds::parse_positive)]
    pub stall_timeout: Seconds,

    /// Seconds a connection may go without any of its calls making progress before it is
    /// closed (pings do not count). 0 keeps idle connections open.
    #[arg(long, env = "FORMATDATA_IDLE_TIMEOUT",
          default_value_t = Seconds(SERVER.idle_timeout.expect("on by default")),
          value_parser = Seconds::parse)]
    pub idle_timeout: Seconds,

    /// Bytes the server holds for calls in progress (unfinished requests, replies not yet sent,
    /// each call's own cost), in all; a call that would go over fails with RESOURCE_EXHAUSTED.
    #[arg(long, env = "FORMATDATA_MAX_BUFFERED_BYTES", default_value_t = SERVER.max_buffered_bytes)]
    pub max_buffered_bytes: usize,

    /// The same, for the calls of one connection.
    #[arg(long, env = "FORMATDATA_MAX_BUFFERED_BYTES_PER_CONNECTION",
          default_value_t = SERVER.max_buffered_bytes_per_connection)]
    pub max_buffered_bytes_per_connection: usize,

    /// The same, for the calls of one client address on all its connections: one host gets a
    /// share, not the whole [default: a quarter of --max-buffered-bytes]. Behind a proxy that
    /// is every client's address, so raise it to --max-buffered-bytes there.
    #[arg(long, env = "FORMATDATA_MAX_BUFFERED_BYTES_PER_PEER")]
    pub max_buffered_bytes_per_peer: Option<usize>,

    /// Connections one client address may have open; more are closed as they come
    /// [default: a quarter of --max-connections]. Behind a proxy, raise it to
    /// --max-connections.
    #[arg(long, env = "FORMATDATA_MAX_CONNECTIONS_PER_PEER")]
    pub max_connections_per_peer: Option<u32>,

    /// When replies are compressed: `if-request-compressed` (in the request's encoding, when
    /// the client accepts it back), `always` (whenever the client accepts gzip or zstd), or
    /// `never`. Messages under 1 KiB, and those compression would not shrink, always go as
    /// they are.
    #[arg(long, env = "FORMATDATA_COMPRESS_REPLIES", value_name = "WHEN",
          default_value = "if-request-compressed", value_parser = parse_reply_compression)]
    pub compress_replies: ReplyCompression,

    /// Serve Prometheus metrics (go-grpc-prometheus names, plus process metrics) at
    /// http://ADDR/metrics, as IP:PORT; off by default.
    #[arg(long, env = "FORMATDATA_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Serve gRPC-Web (over HTTP/1.1 and HTTP/2) next to gRPC, for browsers: true or false
    /// [default: true when every address served is loopback or --cors-origin is given].
    #[arg(long, env = "FORMATDATA_GRPC_WEB", num_args = 0..=1, default_missing_value = "true",
          value_name = "BOOL", value_parser = clap::builder::BoolishValueParser::new())]
    pub grpc_web: Option<bool>,

    /// An origin (`scheme://host[:port]`) whose pages may call the server with gRPC-Web (CORS);
    /// repeat or separate with commas for several. None by default: same-origin pages only.
    #[arg(long = "cors-origin", env = "FORMATDATA_CORS_ORIGINS", value_delimiter = ',',
          value_name = "ORIGIN", value_parser = parse_origin)]
    pub cors_origins: Vec<http::HeaderValue>,

    /// Do not serve the playground page at / (it is served only with gRPC-Web on).
    #[arg(long, env = "FORMATDATA_NO_PLAYGROUND")]
    pub no_playground: bool,

    /// Export a span per call to this OpenTelemetry collector, over OTLP/gRPC (for example
    /// http://localhost:4317); OTEL_EXPORTER_OTLP_ENDPOINT too. Off by default. The other
    /// OTEL_* variables (service name, sampler, resource, headers) apply as in any SDK.
    #[arg(long, env = OTLP_TRACES_ENDPOINT_ENV, value_name = "URL", value_parser = parse_otlp_endpoint)]
    pub otlp_endpoint: Option<http::Uri>,

    /// Worker threads [default: one per CPU this process may run on].
    #[arg(long, env = "FORMATDATA_THREADS")]
    pub threads: Option<std::num::NonZeroUsize>,

    /// Bearer token required on FormatData calls; read from FORMATDATA_AUTH_TOKEN only.
    #[arg(skip)]
    pub auth_token: Option<String>,
}

impl ServerArgs {
    /// Flags, `FORMATDATA_*` variables and the auth token, as the binary takes them.
    pub fn from_env() -> Self {
        let mut args = parse_or_exit::<Self>();
        args.auth_token = auth_token_or_exit();
        args.otlp_endpoint = otlp_endpoint_or_exit(args.otlp_endpoint.take());
        args
    }

    /// The server's settings these flags ask for.
    pub fn config(&self) -> ServerConfig {
        let tls = self
            .tls_cert
            .clone()
            .zip(self.tls_key.clone())
            .map(|(cert, key)| TlsFiles {
                cert,
                key,
                client_ca: self.tls_client_ca.clone(),
            });
        ServerConfig {
            tls,
            auth_token: self.auth_token.clone(),
            shutdown_grace: self.shutdown_grace.0,
            max_message_bytes: self.max_message_bytes,
            max_concurrent_streams: self.max_concurrent_streams,
            keepalive: self.keepalive_secs.or_off(),
            handshake_timeout: self.handshake_timeout.0,
            max_connections: self.max_connections.map(|max| max as usize),
            stall_timeout: self.stall_timeout.0,
            idle_timeout: self.idle_timeout.or_off(),
            max_buffered_bytes: self.max_buffered_bytes,
            max_buffered_bytes_per_connection: self.max_buffered_bytes_per_connection,
            max_buffered_bytes_per_peer: self.max_buffered_bytes_per_peer,
            max_connections_per_peer: self.max_connections_per_peer.map(|max| max as usize),
            metrics_addr: self.metrics_addr,
            grpc_web: self.grpc_web,
            playground: !self.no_playground,
            cors_origins: self.cors_origins.clone(),
            otlp_endpoint: self.otlp_endpoint.clone(),
            reply_compression: self.compress_replies,
        }
    }
}

fn parse_reply_compression(value: &str) -> Result<ReplyCompression, String> {
    match value {
        "never" => Ok(ReplyCompression::Never),
        "if-request-compressed" => Ok(ReplyCompression::IfRequestCompressed),
        "always" => Ok(ReplyCompression::Always),
        _ => Err("expected never, if-request-compressed or always".into()),
    }
}

/// Calls `example.FormatData/DoFormat` and prints the reply as `received: TEXT`.
///
/// Set FORMATDATA_AUTH_TOKEN to send it as `authorization: Bearer <token>`.
#[derive(Debug, Parser)]
#[command(name = "client", version)]
pub struct ClientArgs {
    #[command(subcommand)]
    pub command: Option<ClientCommand>,

    /// Server(s) to call: HOST:PORT, or dns:///HOST:PORT for every address the name resolves to
    /// (re-resolved every few seconds). Repeat the flag or separate with commas to give several;
    /// calls are then spread round-robin over those that are up.
    #[arg(long, global = true, env = "FORMATDATA_ADDR", default_value = DEFAULT_ADDR,
          value_delimiter = ',')]
    pub addr: Vec<Target>,

    /// Seconds each attempt may take, from connecting to the last byte of the reply (not for
    /// --stream, which may rightly run for hours).
    #[arg(long, global = true, env = "FORMATDATA_TIMEOUT",
          default_value_t = Seconds(ClientConfig::DEFAULT_TIMEOUT),
          value_parser = Seconds::parse_positive)]
    pub timeout: Seconds,

    /// Times to retry a call that failed with UNAVAILABLE (server down or restarting), with
    /// exponential backoff and jitter.
    #[arg(long, global = true, env = "FORMATDATA_RETRIES",
          default_value_t = ClientConfig::DEFAULT_RETRIES)]
    pub retries: u32,

    /// PEM CA certificate to verify the server with; turns TLS on.
    #[arg(long, global = true, env = "FORMATDATA_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// PEM client certificate for mutual TLS (needs --tls-key); turns TLS on.
    #[arg(long, global = true, env = "FORMATDATA_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, global = true, env = "FORMATDATA_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Name to expect in the server's certificate, when it is not the host of --addr.
    #[arg(long, global = true, env = "FORMATDATA_TLS_DOMAIN")]
    pub tls_domain: Option<String>,

    /// Compress requests, and ask for compressed replies.
    #[arg(long, global = true, env = "FORMATDATA_COMPRESS", value_enum)]
    pub compress: Option<Compression>,

    /// Largest request and reply, in bytes, as the server's flag of the same name: a larger one
    /// fails with RESOURCE_EXHAUSTED, and --stream refuses an input line too long to send as it
    /// reads it.
    #[arg(long, global = true, env = "FORMATDATA_MAX_MESSAGE_BYTES",
          default_value_t = SERVER.max_message_bytes)]
    pub max_message_bytes: usize,

    /// Export a span per call to this OpenTelemetry collector, over OTLP/gRPC;
    /// OTEL_EXPORTER_OTLP_ENDPOINT too. Every call carries `traceparent` either way, in the
    /// trace TRACEPARENT names when set, so the server's spans join the caller's.
    #[arg(long, global = true, env = OTLP_TRACES_ENDPOINT_ENV, value_name = "URL",
          value_parser = parse_otlp_endpoint)]
    pub otlp_endpoint: Option<http::Uri>,

    /// Stream stdin through DoFormatStream instead: each line is sent as it is read, and each
    /// reply written to stdout as it arrives, in order (`cat in.txt | client --stream > out.txt`).
    #[arg(long, conflicts_with = "text")]
    pub stream: bool,

    /// Text to send; several words are joined by single spaces.
    #[arg(default_value = DEFAULT_TEXT)]
    pub text: Vec<String>,

    /// Bearer token to send; read from FORMATDATA_AUTH_TOKEN only.
    #[arg(skip)]
    pub auth_token: Option<String>,
}

impl ClientArgs {
    /// Flags, `FORMATDATA_*` variables and the auth token, as the binary takes them.
    pub fn from_env() -> Self {
        let mut args = parse_or_exit::<Self>();
        args.auth_token = auth_token_or_exit();
        args.otlp_endpoint = otlp_endpoint_or_exit(args.otlp_endpoint.take());
        args
    }

    /// The text to send, as one string.
    pub fn text(&self) -> String {
        self.text.join(" ")
    }

    /// The client's settings these flags ask for.
    pub fn config(&self) -> ClientConfig {
        // Any TLS flag turns TLS on.
        let tls = (self.tls_ca.is_some() || self.tls_cert.is_some() || self.tls_domain.is_some())
            .then(|| ClientTls {
                ca: self.tls_ca.clone(),
                identity: self.tls_cert.clone().zip(self.tls_key.clone()),
                domain: self.tls_domain.clone(),
            });
        ClientConfig {
            targets: self.addr.clone(),
            timeout: self.timeout.0,
            retries: self.retries,
            tls,
            compression: self.compress.map(|compression| match compression {
                Compression::Gzip => CompressionEncoding::Gzip,
                Compression::Zstd => CompressionEncoding::Zstd,
            }),
            auth_token: self.auth_token.clone(),
            max_message_bytes: self.max_message_bytes,
            otlp_endpoint: self.otlp_endpoint.clone(),
            traceparent: std::env::var("TRACEPARENT").ok(),
            tracestate: std::env::var("TRACESTATE").ok(),
        }
    }
}

/// What the client does instead of sending text.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Asks grpc.health.v1.Health for a service's status; exits 0 only when SERVING.
    Health {
        /// Service to ask about; empty means the server as a whole.
        #[arg(default_value = "")]
        service: String,
    },
    /// Lists the services the server offers, through gRPC reflection.
    List,
    /// Load-tests the server: N calls in flight over C connections, then a latency report.
    Bench(BenchArgs),
}

/// How `client bench` loads the server.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// HTTP/2 connections to spread the calls over.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub connections: u32,

    /// Calls in flight at any time (with --stream: open streams, one message in flight each).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,

    /// Seconds to run [default: 10 unless --requests is given].
    #[arg(long, value_parser = Seconds::parse_positive, conflicts_with = "requests")]
    pub duration: Option<Seconds>,

    /// Calls to make in all, instead of running for a duration.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,

    /// Text of every request [default: hello,world!].
    #[arg(long, conflicts_with = "payload_bytes")]
    pub text: Option<String>,

    /// Send this many bytes of lowercase ASCII text instead of --text.
    #[arg(long)]
    pub payload_bytes: Option<usize>,

    /// Send messages over long-lived DoFormatStream streams instead of unary calls.
    #[arg(long)]
    pub stream: bool,

    /// Calls per second to aim for, in all; latency is then measured from when each call was
    /// due, so a stalled server cannot hide its stalls (coordinated omission).
    #[arg(long)]
    pub rate: Option<f64>,

    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

impl BenchArgs {
    /// The run these flags ask for.
    pub fn config(&self) -> BenchConfig {
        let text = match (&self.text, self.payload_bytes) {
            (Some(text), _) => text.clone(),
            (None, Some(bytes)) => ascii_payload(bytes),
            (None, None) => DEFAULT_TEXT.to_owned(),
        };
        BenchConfig {
            connections: self.connections,
            concurrency: self.concurrency,
            duration: self.duration.map(|seconds| seconds.0),
            requests: self.requests,
            text,
            stream: self.stream,
            rate: self.rate.filter(|rate| *rate > 0.0),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compression {
    Gzip,
    Zstd,
}

/// A number of seconds as the flags take and show it: `20`, `0.25`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Seconds(pub Duration);

impl Seconds {
    fn parse(value: &str) -> Result<Self, String> {
        value
            .parse::<f64>()
            .ok()
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
            .map(Self)
            .ok_or_else(|| format!("'{value}' is not a number of seconds"))
    }

    fn parse_positive(value: &str) -> Result<Self, String> {
        Self::parse(value)
            .ok()
            .filter(|seconds| !seconds.0.is_zero())
            .ok_or_else(|| format!("'{value}' is not a positive number of seconds"))
    }

    /// `None` for 0, which turns the timer it sets off.
    fn or_off(self) -> Option<Duration> {
        (!self.0.is_zero()).then_some(self.0)
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.as_secs_f64())
    }
}

/// Parses the command line; on a mistake prints clap's message on one line and exits with
/// status 2 (`--help` and `--version` print in full and exit 0).
fn parse_or_exit<T: Parser>() -> T {
    T::try_parse().unwrap_or_else(|error| exit_with(&error))
}

/// Ends the process as clap would for `error`, but with its message on one line.
fn exit_with(error: &clap::Error) -> ! {
    if !error.use_stderr() {
        error.exit();
    }
    eprintln!("{}", one_line(&error.to_string()));
    std::process::exit(error.exit_code());
}

/// clap's error up to its usage hint, folded onto one line.
fn one_line(message: &str) -> String {
    let essential = message.split("\n\n").next().unwrap_or(message);
    essential.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The token from [`AUTH_TOKEN_ENV`], or a usage error (exit status 2) for a value that cannot
/// be one, as for a bad flag: an empty value used to turn authentication off without a word,
/// and a value no header can carry made a server that refused every call. Failing at startup,
/// before anything is bound or sent, is the only safe reading of either.
/// The OpenTelemetry variable that names where spans go, which `--otlp-endpoint` stands for.
const OTLP_TRACES_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";

fn parse_otlp_endpoint(endpoint: &str) -> Result<http::Uri, String> {
    otel::parse_endpoint(endpoint).map_err(|err| err.to_string())
}

/// Where spans go, by OpenTelemetry's rules: `OTEL_SDK_DISABLED=true` turns tracing off;
/// otherwise the flag (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), then
/// `OTEL_EXPORTER_OTLP_ENDPOINT`. A value that is not an endpoint ends the process, as a bad
/// flag does.
fn otlp_endpoint_or_exit(flag: Option<http::Uri>) -> Option<http::Uri> {
    if std::env::var("OTEL_SDK_DISABLED")
        .is_ok_and(|value| value.trim().eq_ignore_ascii_case("true"))
    {
        return None;
    }
    flag.or_else(|| {
        let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok()?;
        if endpoint.is_empty() {
            return None;
        }
        Some(parse_otlp_endpoint(&endpoint).unwrap_or_else(|error| {
            exit_with(&clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("OTEL_EXPORTER_OTLP_ENDPOINT: {error}"),
            ))
        }))
    })
}

fn auth_token_or_exit() -> Option<String> {
    auth_token_from_env().unwrap_or_else(|error| {
        exit_with(&clap::Error::raw(
            clap::error::ErrorKind::ValueValidation,
            error,
        ))
    })
}

/// The token from [`AUTH_TOKEN_ENV`]: `None` when it is unset, an error when it is set to
/// something that is not a token. The one place either binary reads it.
fn auth_token_from_env() -> Result<Option<String>, TokenError> {
    std::env::var_os(AUTH_TOKEN_ENV)
        .map(|value| bearer_token(&value))
        .transpose()
}

/// Why a value of [`AUTH_TOKEN_ENV`] is not a token. Never shows the value: it is a secret, and
/// the message goes to logs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum TokenError {
    #[error("{AUTH_TOKEN_ENV} is set but empty; unset it for no token")]
    Empty,
    #[error("{AUTH_TOKEN_ENV} is not UTF-8; a bearer token is visible ASCII (RFC 6750)")]
    NotUtf8,
    #[error(
        "{AUTH_TOKEN_ENV} has {what} at byte {position}; a bearer token is visible ASCII (RFC 6750)"
    )]
    NotVisibleAscii {
        what: &'static str,
        /// 1-based, so a stray newline at the end shows as the last byte.
        position: usize,
    },
}

/// `value` as a bearer token: visible ASCII (`!` to `~`), at least one character. That is the
/// set every HTTP header value and gRPC ASCII metadata value can carry as it is, and a superset
/// of RFC 6750's `b64token` (letters, digits and `-._~+/=`), so tokens issued in any common
/// form pass; a space, a line break (the usual `$(cat token-file)` slip), any other control
/// character or non-ASCII character does not.
fn bearer_token(value: &std::ffi::OsStr) -> Result<String, TokenError> {
    let token = value.to_str().ok_or(TokenError::NotUtf8)?;
    if token.is_empty() {
        return Err(TokenError::Empty);
    }
    if let Some((index, byte)) = token
        .bytes()
        .enumerate()
        .find(|(_, byte)| !byte.is_ascii_graphic())
    {
        let what = match byte {
            b' ' => "a space",
            b'\n' | b'\r' => "a line break",
            byte if byte.is_ascii_control() => "a control character",
            _ => "a non-ASCII character",
        };
        return Err(TokenError::NotVisibleAscii {
            what,
            position: index + 1,
        });
    }
    Ok(token.to_owned())
}

/// A web origin: `http://` or `https://`, a host, an optional port, and nothing after. Returned
/// as browsers send it in `Origin`, which CORS compares byte for byte: lowercase, and without
/// the scheme's default port.
fn parse_origin(value: &str) -> Result<http::HeaderValue, String> {
    let invalid =
        || format!("'{value}' is not an origin like https://example.com or http://localhost:3000");
    let lowercase = value.to_ascii_lowercase();
    let (scheme, authority) = lowercase.split_once("://").ok_or_else(invalid)?;
    let default_port = match scheme {
        "https" => 443,
        "http" => 80,
        _ => return Err(invalid()),
    };
    // HOST or HOST:PORT, read as the addresses are (IPv6 in brackets).
    let host_port = authority
        .parse::<HostPort>()
        .or_else(|_| format!("{authority}:{default_port}").parse::<HostPort>())
        .map_err(|_| invalid())?;
    if host_port.host.contains(['/', '?', '#', '@', ' ']) || host_port.port == 0 {
        return Err(invalid());
    }
    let origin = if host_port.port == default_port {
        let host = &host_port.host;
        match host.contains(':') {
            true => format!("{scheme}://[{host}]"),
            false => format!("{scheme}://{host}"),
        }
    } else {
        format!("{scheme}://{host_port}")
    };
    http::HeaderValue::from_str(&origin).map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_takes_several_addresses() {
        let args =
            ClientArgs::try_parse_from(["client", "--addr", "a:1,b:2", "--addr", "dns:///c:3"])
                .unwrap();
        let addrs: Vec<String> = args.addr.iter().map(Target::to_string).collect();
        assert_eq!(addrs, ["a:1", "b:2", "dns:///c:3"]);
        assert!(args.config().single_server().is_none());
        let one = ClientArgs::try_parse_from(["client", "--addr", "a:1"]).unwrap();
        assert_eq!(one.config().single_server().unwrap().to_string(), "a:1");
    }

    #[test]
    fn client_defaults_to_the_tutorial() {
        let args = ClientArgs::try_parse_from(["client"]).unwrap();
        assert_eq!(
            args.config().single_server().unwrap().to_string(),
            DEFAULT_ADDR
        );
        assert_eq!(args.text(), DEFAULT_TEXT);
        assert_eq!(args.config().timeout, Duration::from_secs(10));
        assert_eq!(args.max_message_bytes, SERVER.max_message_bytes);
    }

    #[test]
    fn client_joins_words_with_spaces() {
        let args = ClientArgs::try_parse_from(["client", "ß", "--", "-x", "straße"]).unwrap();
        assert_eq!(args.text(), "ß -x straße");
    }

    #[test]
    fn rejects_bad_timeouts() {
        for value in ["0", "-1", "soon", "NaN"] {
            assert!(ClientArgs::try_parse_from(["client", "--timeout", value]).is_err());
        }
    }

    #[test]
    fn client_subcommands_take_precedence_over_text() {
        let health = ClientArgs::try_parse_from(["client", "health", "--addr", "h:1"]).unwrap();
        assert!(
            matches!(health.command, Some(ClientCommand::Health { ref service }) if service.is_empty())
        );
        assert_eq!(health.config().single_server().unwrap().port, 1);
        let text = ClientArgs::try_parse_from(["client", "--", "health"]).unwrap();
        assert!(text.command.is_none());
        assert_eq!(text.text(), "health");
    }

    #[test]
    fn grpc_web_is_decided_by_the_flag_or_left_to_the_addresses() {
        let web = |flags: &[&str]| {
            ServerArgs::try_parse_from(["server"].iter().chain(flags))
                .unwrap()
                .grpc_web
        };
        assert_eq!(web(&[]), None);
        assert_eq!(web(&["--grpc-web"]), Some(true));
        assert_eq!(web(&["--grpc-web=false"]), Some(false));
        assert_eq!(web(&["--grpc-web", "off"]), Some(false));
    }

    #[test]
    fn cors_origins_must_be_origins() {
        let args = ServerArgs::try_parse_from([
            "server",
            "--cors-origin",
            "https://example.com,http://localhost:3000",
            "--cors-origin",
            "http://[::1]:8000",
        ])
        .unwrap();
        assert_eq!(
            args.cors_origins,
            [
                "https://example.com",
                "http://localhost:3000",
                "http://[::1]:8000"
            ]
        );
        // As a browser sends it: lowercase, no default port.
        let normalised = ServerArgs::try_parse_from([
            "server",
            "--cors-origin",
            "HTTPS://Example.COM:443,http://localhost:80,https://x.test:8443",
        ])
        .unwrap()
        .cors_origins;
        assert_eq!(
            normalised,
            [
                "https://example.com",
                "http://localhost",
                "https://x.test:8443"
            ]
        );
        for bad in [
            "example.com",
            "https://example.com/",
            "https://example.com/path",
            "ftp://example.com",
            "https://",
            "https://host:port",
            "*",
        ] {
            assert!(
                ServerArgs::try_parse_from(["server", "--cors-origin", bad]).is_err(),
                "{bad} should be rejected"
            );
        }
    }

    #[test]
    fn server_tls_key_and_cert_go_together() {
        assert!(ServerArgs::try_parse_from(["server", "--tls-cert", "c.pem"]).is_err());
        assert!(ServerArgs::try_parse_from(["server", "--tls-client-ca", "ca.pem"]).is_err());
        let tls = ServerArgs::try_parse_from(["server", "--tls-cert", "c", "--tls-key", "k"]);
        assert!(tls.is_ok());
    }

    #[test]
    fn server_defaults() {
        let args = ServerArgs::try_parse_from(["server"]).unwrap();
        assert_eq!(args.addr.to_string(), DEFAULT_ADDR);
        assert_eq!(args.config().shutdown_grace, Duration::from_secs(10));
        assert_eq!(args.max_message_bytes, 4 * 1024 * 1024);
        assert!(
            args.auth_token.is_none(),
            "the token never comes from flags"
        );
    }

    #[test]
    fn errors_fold_onto_one_line() {
        let error = ServerArgs::try_parse_from(["server", "--tls-cert", "c"]).unwrap_err();
        let line = one_line(&error.to_string());
        assert!(!line.contains('\n'));
        assert!(line.starts_with("error: "), "{line}");
        assert!(line.contains("--tls-key"), "{line}");
    }

    #[test]
    fn bearer_tokens_are_visible_ascii() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;

        let token = |value: &[u8]| bearer_token(OsStr::from_bytes(value));
        for good in [
            &b"s3cret"[..],
            b"a.b-c_d~e+f/g==",
            b"!#$%&'()*,:;<>?@[]^`{|}\\",
        ] {
            assert_eq!(token(good).unwrap().as_bytes(), good);
        }
        assert_eq!(token(b""), Err(TokenError::Empty));
        assert_eq!(token(b"s3cr\xffet"), Err(TokenError::NotUtf8));
        for (bad, what, position) in [
            (&b"s3cret\n"[..], "a line break", 7),
            (b"s3\r\ncret", "a line break", 3),
            (b" s3cret", "a space", 1),
            (b"s3\tcret", "a control character", 3),
            (b"s3cret\x7f", "a control character", 7),
            ("s3crét".as_bytes(), "a non-ASCII character", 5),
        ] {
            assert_eq!(
                token(bad),
                Err(TokenError::NotVisibleAscii { what, position }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn token_errors_do_not_show_the_token() {
        let error = bearer_token(std::ffi::OsStr::new("s3cret\n")).unwrap_err();
        let message = error.to_string();
        assert!(message.contains(AUTH_TOKEN_ENV), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
    }

    #[test]
    fn clap_definitions_are_consistent() {
        use clap::CommandFactory;
        ServerArgs::command().debug_assert();
        ClientArgs::command().debug_assert();
    }
}
