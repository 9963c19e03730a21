//! Server wiring: bind the listening sockets, then serve [`FormatDataService`] on them until a
//! shutdown future completes.
//!
//! Binding and serving are separate steps so that callers (the binary, the tests) learn the real
//! addresses, port 0 included, before the first connection arrives, and so that "address in use"
//! is reported before anything is served.

pub mod auth;
pub mod call;
pub mod connection;
pub mod fast_path;
pub mod front;
pub mod http2;
pub mod listen;
pub mod metrics;
pub mod shutdown;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic::codec::CompressionEncoding;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::Layer;
use tracing::{error, info, warn};

use crate::cli::{HostPort, ServerArgs};
use crate::pb;
use crate::pb::format_data_server::FormatDataServer;
use crate::runtime;
use crate::server::auth::RequireBearer;
use crate::server::call::{Calls, CallsLayer, InFlight};
use crate::server::connection::ConnectionSettings;
use crate::server::fast_path::FastPath;
use crate::server::front::{Fronts, WebSettings};
use crate::server::http2::Http2Settings;
use crate::server::listen::{Acceptor, ByteBudget, DescriptorLimit};
use crate::server::metrics::GrpcMetrics;
use crate::service::FormatDataService;
use crate::tls::{self, TlsError};

/// How many times to retry when port 0 was asked for on a name with several addresses and the
/// free port picked on the first address is taken on another one.
const EPHEMERAL_PORT_ATTEMPTS: usize = 8;

/// Why the server could not start listening.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot resolve {addr}: {source}")]
    Resolve { addr: HostPort, source: io::Error },
    #[error("{addr} resolves to no address")]
    NoAddress { addr: HostPort },
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
}

/// Bound, not yet serving, sockets: one per address the host name resolved to.
#[derive(Debug)]
pub struct Listeners {
    /// Accepting ends, in resolution order.
    sockets: Vec<TcpListener>,
    /// The addresses actually bound (the real port when 0 was asked for), for logs and callers.
    addrs: Vec<SocketAddr>,
}

impl Listeners {
    /// Binds every address `addr` resolves to, on one port.
    ///
    /// Like grpcio, `localhost` means both 127.0.0.1 and ::1 where the machine has both. An
    /// address the machine cannot bind at all (::1 with IPv6 disabled) is skipped with a warning
    /// as long as another one is served; an address in use is an error.
    pub async fn bind(addr: &HostPort) -> Result<Self, BindError> {
        let mut resolved: Vec<SocketAddr> =
            tokio::net::lookup_host((addr.host.as_str(), addr.port))
                .await
                .map_err(|source| BindError::Resolve {
                    addr: addr.clone(),
                    source,
                })?
                .collect();
        // Resolvers list an address once per socket type; one listener each is enough.
        let mut seen = Vec::with_capacity(resolved.len());
        resolved.retain(|candidate| {
            let new = !seen.contains(candidate);
            seen.push(*candidate);
            new
        });
        if resolved.is_empty() {
            return Err(BindError::NoAddress { addr: addr.clone() });
        }

        let mut attempts_left = EPHEMERAL_PORT_ATTEMPTS;
        loop {
            match bind_all(&resolved).await {
                Err(BindError::Listen { source, .. })
                    if addr.port == 0
                        && source.kind() == io::ErrorKind::AddrInUse
                        && attempts_left > 1 =>
                {
                    attempts_left -= 1;
                }
                result => return result,
            }
        }
    }

    /// The addresses being listened on, with real port numbers.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }
}

/// Binds `resolved` on one shared port: the given one, or the one the OS picks for the first
/// address bound when it is 0.
async fn bind_all(resolved: &[SocketAddr]) -> Result<Listeners, BindError> {
    let mut listeners = Listeners {
        sockets: Vec::with_capacity(resolved.len()),
        addrs: Vec::with_capacity(resolved.len()),
    };
    let mut unavailable = Vec::new();
    let mut port = resolved[0].port();
    for candidate in resolved {
        let addr = SocketAddr::new(candidate.ip(), port);
        let bound = TcpListener::bind(addr)
            .await
            .and_then(|socket| Ok((socket.local_addr()?, socket)));
        match bound {
            Ok((local, socket)) => {
                port = local.port();
                listeners.sockets.push(socket);
                listeners.addrs.push(local);
            }
            Err(source) if machine_lacks_address(&source) => unavailable.push((addr, source)),
            Err(source) => return Err(BindError::Listen { addr, source }),
        }
    }
    if listeners.sockets.is_empty() {
        let (addr, source) = unavailable.swap_remove(0);
        return Err(BindError::Listen { addr, source });
    }
    for (addr, source) in unavailable {
        warn!("not listening on {addr}: {source}");
    }
    Ok(listeners)
}

/// Whether binding failed because this machine cannot have that address at all (::1 with IPv6
/// disabled, say), as opposed to it being taken or forbidden, which the user must hear about.
fn machine_lacks_address(error: &io::Error) -> bool {
    !matches!(
        error.kind(),
        io::ErrorKind::AddrInUse | io::ErrorKind::PermissionDenied
    )
}

/// The server's settings, checked and loaded (TLS files read) before anything is bound.
pub struct ServerConfig {
    /// TLS settings when `--tls-cert` is set; plaintext otherwise.
    tls: Option<tokio_rustls::rustls::ServerConfig>,
    /// For the startup log: whether clients must present certificates.
    mutual_tls: bool,
    /// Bearer-token check on FormatData calls (a no-op without a token).
    auth: RequireBearer,
    /// How long calls in progress get to finish once shutdown begins.
    shutdown_grace: Duration,
    /// Largest request and reply, in bytes.
    max_message_bytes: usize,
    /// HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS per connection.
    max_concurrent_streams: u32,
    /// Interval of HTTP/2 keepalive pings; `None` turns them off.
    keepalive: Option<Duration>,
    /// How long a new connection gets for the TLS handshake and the HTTP/2 preface.
    handshake_timeout: Duration,
    /// Connections served at once.
    max_connections: usize,
    /// How long a request may stop mid-message, or an HTTP/1.1 head may take.
    stall_timeout: Duration,
    /// How long a connection may go without any call making progress; `None`: for ever.
    idle_timeout: Option<Duration>,
    /// Bytes all calls in progress may hold.
    max_buffered_bytes: usize,
    /// Bytes the calls of one connection may hold.
    max_buffered_bytes_per_connection: usize,
    /// Where to serve Prometheus metrics; `None` keeps them off.
    metrics_addr: Option<SocketAddr>,
    /// `--grpc-web`: `None` leaves it to the addresses (on when all are loopback).
    grpc_web: Option<bool>,
    /// Serve the playground at `/` when gRPC-Web is on.
    playground: bool,
    /// Origins allowed to call from a browser page (CORS).
    cors_origins: Vec<http::HeaderValue>,
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
        asked: u32,
        open_files: u64,
        max: usize,
    },
    #[error("cannot read the open-file limit: {0}")]
    DescriptorLimit(io::Error),
}

impl ConfigError {
    /// Whether the command line itself is wrong (exit status 2), not the files it names.
    pub fn is_usage(&self) -> bool {
        matches!(self, Self::TooManyConnections { .. })
    }
}

impl ServerConfig {
    pub fn from_args(args: &ServerArgs) -> Result<Self, ConfigError> {
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(tls::server_config(
                cert,
                key,
                args.tls_client_ca.as_deref(),
            )?),
            _ => None,
        };
        let descriptors = DescriptorLimit::raise().map_err(ConfigError::DescriptorLimit)?;
        let max_connections = match args.max_connections {
            None => descriptors.default_max_connections(),
            Some(asked) if asked as usize <= descriptors.max_connections => asked as usize,
            Some(asked) => {
                return Err(ConfigError::TooManyConnections {
                    asked,
                    open_files: descriptors.open_files,
                    max: descriptors.max_connections,
                });
            }
        };
        Ok(Self {
            tls,
            mutual_tls: args.tls_client_ca.is_some(),
            auth: RequireBearer::new(args.auth_token.as_deref()),
            shutdown_grace: args.shutdown_grace,
            max_message_bytes: args.max_message_bytes,
            max_concurrent_streams: args.max_concurrent_streams,
            keepalive: (args.keepalive_secs > 0).then(|| Duration::from_secs(args.keepalive_secs)),
            handshake_timeout: args.handshake_timeout,
            max_connections,
            stall_timeout: args.stall_timeout,
            idle_timeout: (!args.idle_timeout.is_zero()).then_some(args.idle_timeout),
            max_buffered_bytes: args.max_buffered_bytes,
            max_buffered_bytes_per_connection: args.max_buffered_bytes_per_connection,
            metrics_addr: args.metrics_addr,
            grpc_web: args.grpc_web,
            playground: !args.no_playground,
            cors_origins: args.cors_origins.clone(),
        })
    }
}

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics { addr: SocketAddr, source: io::Error },
}

/// Serves FormatData, health and reflection on `listeners` until `shutdown` completes.
///
/// Shutdown then goes: health reports NOT_SERVING, the listeners close, every connection gets
/// an HTTP/2 GOAWAY, and calls in progress get `shutdown_grace` to finish; those still running
/// after it are cancelled. Returns once all connections are closed.
pub async fn run(
    listeners: Listeners,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let (health, routes) = routes(&config).await?;
    let in_flight = Arc::new(InFlight::default());
    let metrics = match config.metrics_addr {
        Some(addr) => Some(serve_metrics(addr, config.stall_timeout).await?),
        None => None,
    };
    let calls = CallsLayer {
        in_flight: in_flight.clone(),
        metrics: metrics.as_ref().map(|(metrics, _)| metrics.clone()),
        stall_timeout: Some(config.stall_timeout),
    };
    let web = web_settings(&config, listeners.local_addrs());
    let fronts = Fronts::new(http_service(routes, calls, &config), &web);
    let connection = ConnectionSettings {
        tls: config
            .tls
            .as_ref()
            .map(|tls| tls::acceptor(tls, web.grpc_web)),
        handshake_timeout: config.handshake_timeout,
        http2: Http2Settings {
            max_concurrent_streams: config.max_concurrent_streams,
            keepalive: config.keepalive,
        },
        http1: web.grpc_web,
        stall_timeout: config.stall_timeout,
        idle_timeout: config.idle_timeout,
        max_buffered_bytes: config.max_buffered_bytes_per_connection,
        server_buffered: ByteBudget::server(config.max_buffered_bytes),
    };
    log_startup(&listeners, &config, &web);

    // Every connection watches this; a value sent means "drain": GOAWAY, finish, close.
    let (drain, draining) = watch::channel(());
    let mut connections = JoinSet::new();
    let mut acceptor = Acceptor::new(listeners.sockets, config.max_connections);
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, slot) = tokio::select! {
            () = &mut shutdown => break,
            // A finished task keeps its memory until it is joined: reap each as it ends.
            Some(finished) = connections.join_next(), if !connections.is_empty() => {
                if let Err(error) = finished {
                    error!("a connection task failed: {error}");
                }
                if connections.is_empty() {
                    runtime::sweep_workers();
                }
                continue;
            }
            accepted = acceptor.accept() => accepted,
        };
        // Replies are small and written whole: Nagle's algorithm would only delay them.
        let _ = stream.set_nodelay(true);
        let serving = connection
            .clone()
            .serve(stream, fronts.clone(), draining.clone());
        connections.spawn(async move {
            serving.await;
            drop(slot);
        });
    }

    health
        .set_not_serving::<FormatDataServer<FormatDataService>>()
        .await;
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    drop(acceptor);
    info!(
        calls = in_flight.count(),
        "shutting down: stopped listening, waiting up to {:?} for calls in progress",
        config.shutdown_grace
    );
    drain.send_replace(());
    let drained = async { while connections.join_next().await.is_some() {} };
    match tokio::time::timeout(config.shutdown_grace, drained).await {
        Ok(()) => info!("all calls finished; server stopped"),
        Err(_) => {
            warn!(
                calls = in_flight.count(),
                "grace period over; cancelling the calls still running"
            );
            connections.shutdown().await;
        }
    }
    if let Some((_, endpoint)) = metrics {
        endpoint.abort();
    }
    Ok(())
}

/// tonic's router over FormatData, health (reporting SERVING) and reflection, and the reporter
/// that sets what health says.
pub async fn routes(config: &ServerConfig) -> Result<(HealthReporter, Routes), ServeError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<FormatDataServer<FormatDataService>>()
        .await;
    let routes = Routes::new(health_service)
        .add_service(format_data(config))
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .prepare();
    Ok((health, routes))
}

/// What every call goes through: the per-call middleware, the fast path, then tonic's router.
pub type CallStack = Calls<FastPath<Routes>>;

/// The call stack over `routes`. It takes requests with any body, so it can be driven without
/// a socket, as the fuzz targets do.
pub fn http_service(routes: Routes, calls: CallsLayer, config: &ServerConfig) -> CallStack {
    calls.layer(FastPath::new(
        routes,
        !config.auth.is_enabled(),
        config.max_message_bytes,
    ))
}

/// Binds the metrics endpoint and serves it in the background.
async fn serve_metrics(
    addr: SocketAddr,
    head_timeout: Duration,
) -> Result<(GrpcMetrics, tokio::task::JoinHandle<()>), ServeError> {
    let error = |source| ServeError::Metrics { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(error)?;
    let local = listener.local_addr().map_err(error)?;
    let metrics = GrpcMetrics::new();
    info!("serving Prometheus metrics on http://{local}/metrics");
    let endpoint = tokio::spawn(crate::server::metrics::serve(
        listener,
        metrics.clone(),
        head_timeout,
    ));
    Ok((metrics, endpoint))
}

/// The FormatData service with its limits, compression and authentication.
fn format_data(
    config: &ServerConfig,
) -> InterceptedService<FormatDataServer<FormatDataService>, RequireBearer> {
    // No encoding limit here: the service holds replies to the limit before compression
    // (`service::format`), as the fast path does.
    let server = FormatDataServer::new(FormatDataService {
        max_message_bytes: config.max_message_bytes,
    })
    .max_decoding_message_size(config.max_message_bytes)
    .accept_compressed(CompressionEncoding::Gzip)
    .accept_compressed(CompressionEncoding::Zstd)
    .send_compressed(CompressionEncoding::Gzip)
    .send_compressed(CompressionEncoding::Zstd);
    InterceptedService::new(server, config.auth.clone())
}

/// gRPC reflection over everything served: our `proto/` and the health service.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// What browsers get: gRPC-Web when asked for, when `--cors-origin` names pages that will call,
/// or by default when every address is loopback (a local playground; a public one is a choice);
/// the playground with it.
fn web_settings(config: &ServerConfig, addrs: &[SocketAddr]) -> WebSettings {
    let loopback_only = addrs.iter().all(|addr| addr.ip().is_loopback());
    let grpc_web = config
        .grpc_web
        .unwrap_or(loopback_only || !config.cors_origins.is_empty());
    if !grpc_web && !config.cors_origins.is_empty() {
        warn!("--cors-origin has no effect with --grpc-web=false");
    }
    WebSettings {
        grpc_web,
        playground: grpc_web && config.playground,
        cors_origins: config.cors_origins.clone(),
        loopback_only,
    }
}

fn log_startup(listeners: &Listeners, config: &ServerConfig, web: &WebSettings) {
    let tls = match (&config.tls, config.mutual_tls) {
        (None, _) => "off",
        (Some(_), false) => "on",
        (Some(_), true) => "mutual",
    };
    info!(
        tls,
        auth = if config.auth.is_enabled() {
            "bearer"
        } else {
            "off"
        },
        max_message_bytes = config.max_message_bytes,
        max_concurrent_streams = config.max_concurrent_streams,
        max_connections = config.max_connections,
        keepalive_secs = config.keepalive.map_or(0, |interval| interval.as_secs()),
        grpc_web = web.grpc_web,
        "serving example.FormatData on {}",
        join(&listeners.addrs)
    );
    if web.playground {
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        info!("playground at {scheme}://{}/", listeners.addrs[0]);
    }
    if config.tls.is_none() {
        for addr in listeners
            .addrs
            .iter()
            .filter(|addr| !addr.ip().is_loopback())
        {
            warn!("serving {addr} without TLS: calls and tokens cross the network in clear text");
        }
    }
}

fn join(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn several_addresses_share_the_port_picked_for_the_first() {
        let resolved: Vec<SocketAddr> =
            vec!["127.0.0.1:0".parse().unwrap(), "[::1]:0".parse().unwrap()];

        let listeners = bind_all(&resolved).await.unwrap();

        let addrs = listeners.local_addrs();
        assert_eq!(addrs[0].ip(), resolved[0].ip());
        assert_ne!(addrs[0].port(), 0);
        // ::1 is skipped, not an error, on machines without IPv6; where it exists it must be
        // served on the same port as 127.0.0.1.
        assert!(addrs.iter().all(|addr| addr.port() == addrs[0].port()));
        assert!(addrs.len() == 2 || !has_ipv6_loopback());
    }

    #[tokio::test]
    async fn an_address_in_use_is_not_skipped() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let resolved = vec![taken.local_addr().unwrap(), "[::1]:0".parse().unwrap()];

        let error = bind_all(&resolved).await.unwrap_err();

        assert!(matches!(error, BindError::Listen { addr, .. } if addr == resolved[0]));
    }

    fn has_ipv6_loopback() -> bool {
        std::net::TcpListener::bind("[::1]:0").is_ok()
    }
}
