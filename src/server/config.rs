//! The server's settings as the library takes them: plain fields with their defaults in one
//! place, so the binary (from its flags, in `crate::cli`), the tests and the fuzz targets build
//! them alike.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::grpc::compression::ReplyCompression;
use crate::tls::TlsError;

/// What the server does and what it lets peers take. Every field has a default
/// ([`ServerConfig::DEFAULT`]), the one `--help` shows.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Serve TLS with these files; plaintext when `None`.
    pub tls: Option<TlsFiles>,
    /// Require `authorization: Bearer <token>` on FormatData calls.
    pub auth_token: Option<String>,
    /// How long calls in progress get to finish once shutdown begins.
    pub shutdown_grace: Duration,
    /// Largest request and reply, uncompressed, in bytes.
    pub max_message_bytes: usize,
    /// HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS per connection.
    pub max_concurrent_streams: u32,
    /// Interval of HTTP/2 keepalive pings; `None` turns them off.
    pub keepalive: Option<Duration>,
    /// How long a new connection gets for the TLS handshake and its first bytes.
    pub handshake_timeout: Duration,
    /// Connections served at once; `None`: what the open-file limit allows, at most 10,000.
    pub max_connections: Option<usize>,
    /// How long a request may stop mid-message, or an HTTP/1.1 head may take.
    pub stall_timeout: Duration,
    /// How long a connection may go without any call making progress; `None`: for ever.
    pub idle_timeout: Option<Duration>,
    /// Bytes all calls in progress may hold.
    pub max_buffered_bytes: usize,
    /// Bytes the calls of one connection may hold.
    pub max_buffered_bytes_per_connection: usize,
    /// Bytes the calls of one client address may hold, on all its connections; `None`: a
    /// quarter of `max_buffered_bytes`.
    pub max_buffered_bytes_per_peer: Option<usize>,
    /// Connections one client address may have open; `None`: a quarter of `max_connections`.
    pub max_connections_per_peer: Option<usize>,
    /// Where to serve Prometheus metrics; `None` keeps them off.
    pub metrics_addr: Option<SocketAddr>,
    /// Serve gRPC-Web; `None` leaves it to the addresses (on when all are loopback, or when
    /// `cors_origins` names pages that will call).
    pub grpc_web: Option<bool>,
    /// Serve the playground at `/` when gRPC-Web is on.
    pub playground: bool,
    /// Origins allowed to call from a browser page (CORS), as browsers send them.
    pub cors_origins: Vec<http::HeaderValue>,
    /// Export a span per call to this OTLP/gRPC collector; `None` keeps tracing off.
    pub otlp_endpoint: Option<http::Uri>,
    /// When replies are compressed.
    pub reply_compression: ReplyCompression,
}

impl ServerConfig {
    pub const DEFAULT: Self = Self {
        tls: None,
        auth_token: None,
        shutdown_grace: Duration::from_secs(10),
        // gRPC's customary limit.
        max_message_bytes: 4 * 1024 * 1024,
        max_concurrent_streams: 256,
        keepalive: Some(Duration::from_secs(60)),
        handshake_timeout: Duration::from_secs(10),
        max_connections: None,
        stall_timeout: Duration::from_secs(20),
        idle_timeout: Some(Duration::from_secs(300)),
        // 64 stalled messages of the largest size, a small share of a pod's memory (see
        // deploy/kubernetes), and eight of them on one connection.
        max_buffered_bytes: 256 * 1024 * 1024,
        max_buffered_bytes_per_connection: 32 * 1024 * 1024,
        max_buffered_bytes_per_peer: None,
        max_connections_per_peer: None,
        metrics_addr: None,
        grpc_web: None,
        playground: true,
        cors_origins: Vec::new(),
        otlp_endpoint: None,
        reply_compression: ReplyCompression::IfRequestCompressed,
    };
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// PEM files to serve TLS with.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// CA certificate(s) clients must present a certificate signed by (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// Why the settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(
        "--max-connections {asked} is more than the open-file limit allows ({open_files} \
         descriptors: at most {max} connections); raise the limit (ulimit -n) or lower the flag"
    )]
    TooManyConnections {
        asked: usize,
        open_files: u64,
        max: usize,
    },
    #[error("cannot read the open-file limit: {0}")]
    DescriptorLimit(io::Error),
}

impl ConfigError {
    /// Whether the settings themselves are wrong (exit status 2 for a command line), not the
    /// files they name.
    pub fn is_usage(&self) -> bool {
        matches!(self, Self::TooManyConnections { .. })
    }
}

/// Largest HTTP/1.1 request head, and so hyper's read buffer: what a peer that sends a head and
/// never finishes it makes the server hold (with hyper's own state, about 20 KiB a connection).
/// HTTP/2's header-list limit, the same for both protocols; longer heads get 431. hyper's
/// default, about 400 KiB, let 1,000 stalled heads take 412 MiB.
pub(super) const MAX_HTTP1_HEAD: usize = 16 * 1024;
