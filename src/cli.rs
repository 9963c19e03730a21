//! Command-line flags of the two binaries, each also readable from a `FORMATDATA_*` variable.
//!
//! Both binaries share [`HostPort`] and [`DEFAULT_ADDR`], so the server and its client agree on
//! where to meet without either spelling it out.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

/// Where the server listens and the client calls unless told otherwise: the tutorial's address.
pub const DEFAULT_ADDR: &str = "localhost:8080";

/// What the client sends when given no text: the tutorial's greeting.
pub const DEFAULT_TEXT: &str = "hello,world!";

/// Largest request or reply the server accepts by default: gRPC's customary 4 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Bytes all calls in progress may hold by default: 64 connections' worth of stalled
/// near-limit messages, a small share of a pod's memory (see deploy/kubernetes).
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 256 * 1024 * 1024;

/// Bytes the calls of one connection may hold by default: eight messages at the default limit.
pub const DEFAULT_MAX_BUFFERED_BYTES_PER_CONNECTION: usize = 32 * 1024 * 1024;

/// Where a bearer token comes from. Only the environment, never a flag: command lines are
/// visible to every user of the machine through `ps`.
pub const AUTH_TOKEN_ENV: &str = "FORMATDATA_AUTH_TOKEN";

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
    #[arg(long, env = "FORMATDATA_SHUTDOWN_GRACE", default_value = "10", value_parser = parse_seconds)]
    pub shutdown_grace: Duration,

    /// PEM certificate chain to serve TLS with (needs --tls-key).
    #[arg(long, env = "FORMATDATA_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "FORMATDATA_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA certificate(s): clients must present a certificate signed by one (mutual TLS).
    #[arg(long, env = "FORMATDATA_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Largest request and reply, in bytes; larger ones fail with RESOURCE_EXHAUSTED.
    #[arg(long, env = "FORMATDATA_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,

    /// Most calls in flight on one HTTP/2 connection.
    #[arg(long, env = "FORMATDATA_MAX_CONCURRENT_STREAMS", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_streams: u32,

    /// Seconds between HTTP/2 keepalive pings; a peer that leaves one unanswered for as long
    /// (20 s at most) is dropped. 0 turns pings off.
    #[arg(long, env = "FORMATDATA_KEEPALIVE_SECS", default_value_t = 60)]
    pub keepalive_secs: u64,

    /// Seconds a new connection gets to finish the TLS handshake and send the HTTP/2 preface;
    /// a peer that connects and stays silent is dropped after it.
    #[arg(long, env = "FORMATDATA_HANDSHAKE_TIMEOUT", default_value = "10",
          value_parser = parse_positive_seconds)]
    pub handshake_timeout: Duration,

    /// Most connections served at once; more wait in the kernel's backlog until one closes
    /// [default: what the open-file limit allows, at most 10000].
    #[arg(long, env = "FORMATDATA_MAX_CONNECTIONS",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: Option<u32>,

    /// Seconds a request may stop in the middle of a message (or an HTTP/1.1 request head may
    /// take) before the call ends with DEADLINE_EXCEEDED (the connection, for a head).
    #[arg(long, env = "FORMATDATA_STALL_TIMEOUT", default_value = "20",
          value_parser = parse_positive_seconds)]
    pub stall_timeout: Duration,

    /// Seconds a connection may go without any of its calls making progress before it is
    /// closed (pings do not count). 0 keeps idle connections open.
    #[arg(long, env = "FORMATDATA_IDLE_TIMEOUT", default_value = "300", value_parser = parse_seconds)]
    pub idle_timeout: Duration,

    /// Bytes the server holds for calls in progress (unfinished requests, replies not yet sent),
    /// in all; a call that would go over fails with RESOURCE_EXHAUSTED.
    #[arg(long, env = "FORMATDATA_MAX_BUFFERED_BYTES", default_value_t = DEFAULT_MAX_BUFFERED_BYTES)]
    pub max_buffered_bytes: usize,

    /// The same, for the calls of one connection.
    #[arg(long, env = "FORMATDATA_MAX_BUFFERED_BYTES_PER_CONNECTION",
          default_value_t = DEFAULT_MAX_BUFFERED_BYTES_PER_CONNECTION)]
    pub max_buffered_bytes_per_connection: usize,

    /// Serve Prometheus metrics (go-grpc-prometheus names, plus process metrics) at
    /// http://ADDR/metrics, as IP:PORT; off by default.
    #[arg(long, env = "FORMATDATA_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// Serve gRPC-Web (over HTTP/1.1 and HTTP/2) next to gRPC, for browsers: true or false
    /// [default: true when every address served is loopback or --cors-origin is given].
    #[arg(long, env = "FORMATDATA_GRPC_WEB", num_args = 0..=1, default_missing_value = "true",
          value_name = "BOOL", value_parser = clap::builder::BoolishValueParser::new())]
    pub grpc_web: Option<bool>,

    /// An origin (scheme://host[:port]) whose pages may call the server with gRPC-Web (CORS);
    /// repeat or separate with commas for several. None by default: same-origin pages only.
    #[arg(long = "cors-origin", env = "FORMATDATA_CORS_ORIGINS", value_delimiter = ',',
          value_name = "ORIGIN", value_parser = parse_origin)]
    pub cors_origins: Vec<http::HeaderValue>,

    /// Do not serve the playground page at / (it is served only with gRPC-Web on).
    #[arg(long, env = "FORMATDATA_NO_PLAYGROUND")]
    pub no_playground: bool,

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
        args
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
    #[arg(long, global = true, env = "FORMATDATA_TIMEOUT", default_value = "10",
          value_parser = parse_positive_seconds)]
    pub timeout: Duration,

    /// Times to retry a call that failed with UNAVAILABLE (server down or restarting), with
    /// exponential backoff and jitter.
    #[arg(long, global = true, env = "FORMATDATA_RETRIES", default_value_t = 3)]
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
          default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,

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
        args
    }

    /// The text to send, as one string.
    pub fn text(&self) -> String {
        self.text.join(" ")
    }

    /// The one server to call, when `--addr` names exactly one and no DNS name to expand.
    pub fn single_server(&self) -> Option<&HostPort> {
        match self.addr.as_slice() {
            [Target::Server(addr)] => Some(addr),
            _ => None,
        }
    }

    /// Whether to speak TLS: any TLS flag turns it on.
    pub fn uses_tls(&self) -> bool {
        self.tls_ca.is_some() || self.tls_cert.is_some() || self.tls_domain.is_some()
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
    #[arg(long, value_parser = parse_positive_seconds, conflicts_with = "requests")]
    pub duration: Option<Duration>,

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compression {
    Gzip,
    Zstd,
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

/// Where the client sends its calls: one server, or all the addresses of a DNS name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `HOST:PORT`: one server (a name is resolved when connecting, and the first address that
    /// accepts is used).
    Server(HostPort),
    /// `dns:///HOST:PORT`: a server at every address the name resolves to, as gRPC's `dns`
    /// resolver does; a Kubernetes headless Service resolves to one per ready pod.
    Dns(HostPort),
}

/// gRPC's name-resolution scheme for DNS; `dns://AUTHORITY/` (a chosen DNS server) is not
/// supported, the system resolver is used.
const DNS_SCHEME: &str = "dns:///";

impl FromStr for Target {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.strip_prefix(DNS_SCHEME) {
            Some(name) => Ok(Self::Dns(name.parse()?)),
            None if value.starts_with("dns:") => Err(format!(
                "expected dns:///HOST:PORT (the system resolver; no DNS server authority), got '{value}'"
            )),
            None => Ok(Self::Server(value.parse()?)),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Server(addr) => addr.fmt(f),
            Self::Dns(name) => write!(f, "{DNS_SCHEME}{name}"),
        }
    }
}

/// A `HOST:PORT` pair where HOST is a name or an IP address (IPv6 in brackets: `[::1]:8080`).
///
/// Kept unresolved: the server binds every address the name resolves to, and the client lets its
/// connector pick one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// Name or IP address, without IPv6 brackets.
    pub host: String,
    /// TCP port; 0 asks the server for any free one.
    pub port: u16,
}

impl FromStr for HostPort {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let (host, port) = value
            .rsplit_once(':')
            .ok_or_else(|| format!("expected HOST:PORT, got '{value}'"))?;
        let host = match host.strip_prefix('[') {
            Some(bracketed) => bracketed
                .strip_suffix(']')
                .ok_or_else(|| format!("unclosed '[' in '{value}'"))?,
            None if host.contains(':') => {
                return Err(format!(
                    "put an IPv6 address in brackets: '[{host}]:{port}'"
                ));
            }
            None => host,
        };
        if host.is_empty() {
            return Err(format!("missing host in '{value}'"));
        }
        let port = port
            .parse()
            .map_err(|_| format!("'{port}' is not a port number (0-65535)"))?;
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
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

fn parse_seconds(value: &str) -> Result<Duration, String> {
    value
        .parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| format!("'{value}' is not a number of seconds"))
}

fn parse_positive_seconds(value: &str) -> Result<Duration, String> {
    parse_seconds(value)
        .ok()
        .filter(|duration| !duration.is_zero())
        .ok_or_else(|| format!("'{value}' is not a positive number of seconds"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_port(value: &str) -> Result<HostPort, String> {
        value.parse()
    }

    #[test]
    fn parses_names_and_addresses() {
        let localhost = host_port("localhost:8080").unwrap();
        assert_eq!(
            (localhost.host.as_str(), localhost.port),
            ("localhost", 8080)
        );
        assert_eq!(host_port("127.0.0.1:0").unwrap().port, 0);
        let v6 = host_port("[::1]:50051").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 50051));
    }

    #[test]
    fn displays_as_it_parses() {
        for value in ["localhost:8080", "127.0.0.1:0", "[::1]:50051"] {
            assert_eq!(host_port(value).unwrap().to_string(), value);
        }
    }

    #[test]
    fn rejects_malformed_addresses() {
        for value in [
            "localhost",
            ":8080",
            "host:http",
            "host:70000",
            "::1:8080",
            "[::1:80",
        ] {
            assert!(host_port(value).is_err(), "{value} should be rejected");
        }
    }

    #[test]
    fn targets_are_servers_or_dns_names() {
        let target = |value: &str| value.parse::<Target>();
        assert_eq!(
            target("localhost:8080").unwrap(),
            Target::Server(host_port("localhost:8080").unwrap())
        );
        assert_eq!(
            target("dns:///formatdata-headless:8080").unwrap(),
            Target::Dns(host_port("formatdata-headless:8080").unwrap())
        );
        for value in ["dns:///[::1]:1", "dns:///a:1", "b:2"] {
            assert_eq!(target(value).unwrap().to_string(), value);
        }
        for bad in ["dns://8.8.8.8/a:1", "dns:a:1", "dns:///a", "dns:///"] {
            assert!(target(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn client_takes_several_addresses() {
        let args =
            ClientArgs::try_parse_from(["client", "--addr", "a:1,b:2", "--addr", "dns:///c:3"])
                .unwrap();
        let addrs: Vec<String> = args.addr.iter().map(Target::to_string).collect();
        assert_eq!(addrs, ["a:1", "b:2", "dns:///c:3"]);
        assert!(args.single_server().is_none());
        let one = ClientArgs::try_parse_from(["client", "--addr", "a:1"]).unwrap();
        assert_eq!(one.single_server().unwrap().to_string(), "a:1");
    }

    #[test]
    fn client_defaults_to_the_tutorial() {
        let args = ClientArgs::try_parse_from(["client"]).unwrap();
        assert_eq!(args.single_server().unwrap().to_string(), DEFAULT_ADDR);
        assert_eq!(args.text(), DEFAULT_TEXT);
        assert_eq!(args.timeout, Duration::from_secs(10));
        assert_eq!(args.max_message_bytes, DEFAULT_MAX_MESSAGE_BYTES);
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
        assert_eq!(health.single_server().unwrap().port, 1);
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
        assert_eq!(args.shutdown_grace, Duration::from_secs(10));
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
