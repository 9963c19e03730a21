//! The server: [`Server::new`] checks its [`ServerConfig`], [`Listeners::bind`] binds every
//! address (so callers learn the real ports before the first connection), and [`Server::run`]
//! serves FormatData, health and reflection until a shutdown future completes, then drains.
//!
//! # One call, in order
//!
//! Steps 1 to 3 are `transport/`, 4 to 7 `calls/`; both stand on `context.rs`, `peers.rs` and
//! `budget.rs`.
//!
//! 1. `listen.rs`: the accept loop takes the connection, if fewer than `--max-connections` are
//!    open (otherwise the peer waits in the kernel's backlog); `peers.rs` lets it in if its
//!    client address has not used up its share of connections, and gives it that address's
//!    byte budget to draw on.
//! 2. `connection.rs`: the TLS handshake, then the protocol (ALPN, or the first bytes): HTTP/2,
//!    or HTTP/1.1 (hyper) when gRPC-Web is on. What the connection and its calls share
//!    (cancelled calls, bytes held, progress for its idle timer, a client gone) is
//!    `context.rs`, at the bottom: every layer above reports to it, and it imports none of them.
//! 3. `http2.rs`: the connection loop runs each new stream's call in the connection's own task
//!    (no task per stream), drops the call if the client resets the stream, and writes the
//!    reply within the peer's window; `control_frames.rs` counts the frames going through and
//!    closes a connection that floods control frames.
//! 4. `front.rs`: refuses a request naming a foreign host on a loopback-only server; sends
//!    gRPC-Web to `web.rs` (tonic-web, CORS) and GET to the playground (unless it calls a
//!    method, as Connect may), native gRPC and the rest onward.
//! 5. `call.rs`: a Connect call is translated (`connect/`) and comes back through this same
//!    stack as a gRPC call. The call is admitted (gRPC content type, its cost in the budget of
//!    `budget.rs`), its request body wrapped by `request_body.rs` (framing checked as it
//!    arrives, bytes held, stalls timed, a client that went away made CANCELLED), and its end
//!    accounted once: log line, metrics (`metrics.rs`), in-flight count. A stream's stake in
//!    the budgets can be shed when they are full (`budget.rs`); replies are compressed on the
//!    way out when the call asked for it (`compress.rs`).
//! 6. `deadline.rs`: the caller's `grpc-timeout`, over the whole call.
//! 7. `fast_path.rs`: plain unary DoFormat is answered here; everything else goes to tonic's
//!    router: FormatData behind `auth.rs`'s bearer check, then `crate::service`; health;
//!    reflection.
//!
//! Steps 5 to 7 are assembled in `stack.rs`, outside in. `config.rs` holds the settings,
//! `shutdown.rs` the signals the binary stops on.

mod budget;
mod calls;
mod config;
mod context;
mod metrics;
mod peers;
mod stack;
mod transport;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic_health::ServingStatus;
use tracing::{error, info, warn};

use crate::otel::{Tracing, TracingError};
use crate::pb::format_data_server::FormatDataServer;
use crate::server::budget::{ByteBudget, SheddableStreams};
use crate::server::calls::call::{CallsLayer, InFlight};
use crate::server::calls::front::Fronts;
use crate::server::calls::web::WebSettings;
use crate::server::peers::Peers;
use crate::server::stack::{http_service, routes};
use crate::server::transport::connection::ConnectionSettings;
use crate::server::transport::http2::Http2Settings;
use crate::server::transport::listen::{Acceptor, DescriptorLimit};

pub use crate::grpc::compression::ReplyCompression;
use crate::server::metrics::GrpcMetrics;
use crate::service::FormatDataService;
use crate::tls;
pub use calls::CallStack;
pub use config::{ConfigError, ServerConfig, TlsFiles};
pub use stack::call_stack;
pub use transport::listen::{BindError, Listeners};
pub use transport::shutdown::signal as shutdown_signal;

/// A server ready to serve: its settings checked, its TLS files read, its connection cap
/// resolved against the open-file limit, before anything is bound.
pub struct Server {
    config: ServerConfig,
    /// TLS settings when `config.tls` names files; plaintext otherwise.
    tls: Option<tokio_rustls::rustls::ServerConfig>,
    /// Connections served at once.
    max_connections: usize,
    /// Run each time the last connection closes; see [`Server::when_idle`].
    when_idle: Option<fn()>,
}

impl Server {
    /// Checks `config` and loads what it names.
    pub fn new(config: ServerConfig) -> Result<Self, ConfigError> {
        let tls = match &config.tls {
            Some(files) => Some(tls::server_config(
                &files.cert,
                &files.key,
                files.client_ca.as_deref(),
            )?),
            None => None,
        };
        let descriptors = DescriptorLimit::raise().map_err(ConfigError::DescriptorLimit)?;
        let max_connections = match config.max_connections {
            None => descriptors.default_max_connections(),
            Some(asked) if asked <= descriptors.max_connections => asked,
            Some(asked) => {
                return Err(ConfigError::TooManyConnections {
                    asked,
                    open_files: descriptors.open_files,
                    max: descriptors.max_connections,
                });
            }
        };
        Ok(Self {
            config,
            tls,
            max_connections,
            when_idle: None,
        })
    }

    /// Has `hook` run each time the last connection closes: the moment for a process to give
    /// memory back, as the server binary has its allocator do (`runtime::sweep_workers`).
    pub fn when_idle(self, hook: fn()) -> Self {
        Self {
            when_idle: Some(hook),
            ..self
        }
    }
}

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics { addr: SocketAddr, source: io::Error },
    #[error(transparent)]
    Tracing(#[from] TracingError),
}

/// Serves FormatData, health and reflection on `listeners` until `shutdown` completes.
///
/// Shutdown then goes: health reports NOT_SERVING, the listeners close, every connection gets
/// an HTTP/2 GOAWAY, and calls in progress get `shutdown_grace` to finish; those still running
/// after it are cancelled. Returns once all connections are closed.
impl Server {
    pub async fn run(
        self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServeError> {
        let Self {
            config,
            tls,
            max_connections,
            when_idle,
        } = self;
        let (health, routes) = routes(&config).await?;
        let in_flight = Arc::new(InFlight::default());
        let metrics = match config.metrics_addr {
            Some(addr) => Some(serve_metrics(addr, config.stall_timeout).await?),
            None => None,
        };
        let tracing = match &config.otlp_endpoint {
            Some(endpoint) => Some(Tracing::start(Some(endpoint), "formatdata")?),
            None => None,
        };
        let shed_total = metrics.as_ref().map(|(m, _)| m.streams_shed.clone());
        let peers = Peers::new(
            config
                .max_connections_per_peer
                .unwrap_or(max_connections.div_ceil(4)),
            config
                .max_buffered_bytes_per_peer
                .unwrap_or(config.max_buffered_bytes.div_ceil(4)),
            ByteBudget::server(
                config.max_buffered_bytes,
                SheddableStreams::new("--max-buffered-bytes", shed_total.clone()),
            ),
            metrics.as_ref().map(|(m, _)| m.connections_refused.clone()),
            shed_total,
        );
        let calls = CallsLayer {
            in_flight: in_flight.clone(),
            metrics: metrics.as_ref().map(|(metrics, _)| metrics.clone()),
            stall_timeout: Some(config.stall_timeout),
            tracing: tracing.clone(),
            reply_compression: config.reply_compression,
            max_message_bytes: config.max_message_bytes,
        };
        let web = web_settings(&config, listeners.local_addrs());
        let fronts = Arc::new(Fronts::new(http_service(routes, calls, &config), &web));
        let connection = Arc::new(ConnectionSettings {
            tls: tls.as_ref().map(|tls| tls::acceptor(tls, web.grpc_web)),
            handshake_timeout: config.handshake_timeout,
            http2: Http2Settings {
                max_concurrent_streams: config.max_concurrent_streams,
                keepalive: config.keepalive,
            },
            http1: web.grpc_web,
            stall_timeout: config.stall_timeout,
            idle_timeout: config.idle_timeout,
            max_buffered_bytes: config.max_buffered_bytes_per_connection,
        });
        log_startup(&listeners, &config, max_connections, &web);

        // Every connection watches this; a value sent means "drain": GOAWAY, finish, close.
        let (drain, draining) = watch::channel(());
        let mut connections = JoinSet::new();
        let mut acceptor = Acceptor::new(listeners.sockets, max_connections);
        let mut shutdown = pin!(shutdown);
        loop {
            let (stream, slot) = tokio::select! {
                () = &mut shutdown => break,
                // A finished task keeps its memory until it is joined: reap each as it ends.
                Some(finished) = connections.join_next(), if !connections.is_empty() => {
                    if let Err(error) = finished {
                        error!("a connection task failed: {error}");
                    }
                    if let Some(when_idle) = when_idle.filter(|_| connections.is_empty()) {
                        when_idle();
                    }
                    continue;
                }
                accepted = acceptor.accept() => accepted,
            };
            let Ok(peer) = stream.peer_addr() else {
                continue;
            };
            let peer_slot = match peers.admit(peer.ip()) {
                Ok(peer_slot) => peer_slot,
                Err(over) => {
                    warn!("{over}");
                    continue;
                }
            };
            // Replies are small and written whole: Nagle's algorithm would only delay them.
            let _ = stream.set_nodelay(true);
            let serving =
                connection
                    .clone()
                    .serve(stream, peer_slot, fronts.clone(), draining.clone());
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
        if let Some(tracing) = tracing {
            tracing.shutdown().await;
        }
        Ok(())
    }
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

fn log_startup(
    listeners: &Listeners,
    config: &ServerConfig,
    max_connections: usize,
    web: &WebSettings,
) {
    let tls = match &config.tls {
        None => "off",
        Some(files) if files.client_ca.is_none() => "on",
        Some(_) => "mutual",
    };
    info!(
        tls,
        auth = if config.auth_token.is_some() {
            "bearer"
        } else {
            "off"
        },
        max_message_bytes = config.max_message_bytes,
        max_concurrent_streams = config.max_concurrent_streams,
        max_connections,
        keepalive_secs = config.keepalive.map_or(0, |interval| interval.as_secs()),
        grpc_web = web.grpc_web,
        tracing = config
            .otlp_endpoint
            .as_ref()
            .map_or("off".into(), |endpoint| endpoint.to_string()),
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
            .local_addrs()
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
