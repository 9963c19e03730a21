//! Client-side load balancing: each call goes to the next healthy server, round-robin, across
//! every server the client was given (`--addr a:1,b:2`) or that a DNS name resolves to
//! (`dns:///name:port`, re-resolved periodically, as a Kubernetes headless Service needs).
//!
//! Why per call, and why in the client: HTTP/2 multiplexes every call over one long-lived
//! connection, so a connection-level (L4) balancer sends all of a client's calls to one server.
//!
//! A server whose connection fails is taken out at once, and the call fails with UNAVAILABLE
//! naming it, so the caller's retry goes to the next server; a background task asks the servers
//! taken out for their health every half second and puts each back as soon as it answers. It
//! asks the servers in use too, less often, and takes out one that reports NOT_SERVING, as a
//! server does while it drains.
//!
//! Not tonic's `Channel::balance_channel`: its power-of-two-choices balancer sees every endpoint
//! as equally loaded (random choice, not round-robin), keeps a dead endpoint "ready" (a lazy
//! reconnect reports its failure only on the next call, so failing endpoints attract calls), and
//! does not tell which endpoint a failed call went to.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::join_all;
use tokio::time::MissedTickBehavior;
use tonic::body::Body;
use tonic::transport::Channel;
use tonic::{Code, Status, TimeoutExpired};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tower::{Service, ServiceExt};
use tracing::{debug, info, warn};

use crate::addr::{HostPort, Target};

/// How often a server taken out is asked for its health: how soon one that came back gets calls.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// How often a server in use is asked, to take it out when it reports NOT_SERVING (draining) before
/// a call finds its listener closed. Rarer: every client probes every server.
const PROBE_UP_EVERY: u32 = 10;

/// How long a health probe may take before the server counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How often `dns:///` names are resolved again, to follow servers being added and removed.
const RESOLVE_INTERVAL: Duration = Duration::from_secs(5);

/// One server to call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Address {
    /// Where to connect: the address as given, or one the DNS name resolved to.
    pub connect: HostPort,
    /// The name the server goes by: for `dns:///` targets the name itself, so TLS checks the
    /// certificate against it and `:authority` carries it; otherwise the same as `connect`.
    pub name: HostPort,
}

/// Builds the channel (lazy: it connects on first use, and again after failures) to one server;
/// fails only on settings that cannot apply to it (a host name TLS cannot check, say).
pub(super) type Connector = Arc<dyn Fn(&Address) -> Result<Channel, String> + Send + Sync>;

/// Errors a tower service may return; tonic's clients take any.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A failed connection to one server: the source of the UNAVAILABLE status the call fails with.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct Unreachable {
    /// The server: the address as given, or the one of a DNS name's addresses that failed.
    pub addr: HostPort,
    /// The innermost cause ("Connection refused (os error 111)").
    pub reason: String,
    /// Whether the connection could not be made at all, rather than broke during the call.
    pub connecting: bool,
}

/// The servers to call, and where the next call goes. Cheap to clone: clones share everything.
#[derive(Clone)]
pub(crate) struct Balancer {
    shared: Arc<Shared>,
}

struct Shared {
    /// Every server currently known, healthy or not; never empty.
    backends: RwLock<Arc<[Arc<Backend>]>>,
    /// Round-robin counter: call N goes to healthy server N modulo their number.
    next: AtomicUsize,
}

/// One server and the channel to it.
struct Backend {
    address: Address,
    channel: Channel,
    /// Whether calls may go here: false from a failed connection until a probe succeeds.
    up: AtomicBool,
}

impl Backend {
    fn new(address: Address, connector: &Connector) -> Result<Arc<Self>, Unreachable> {
        let channel = connector(&address).map_err(|reason| Unreachable {
            addr: address.name.clone(),
            reason,
            connecting: true,
        })?;
        Ok(Arc::new(Self {
            channel,
            address,
            up: AtomicBool::new(true),
        }))
    }

    fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Marks the server up or down, logging a change.
    fn set_up(&self, up: bool, why: &dyn fmt::Display) {
        if self.up.swap(up, Ordering::Relaxed) != up {
            let addr = &self.address.connect;
            if up {
                info!("{addr} is back; sending it calls again");
            } else {
                info!("{addr} taken out: {why}");
            }
        }
    }
}

impl Balancer {
    /// A balancer over `targets`: `dns:///` names are resolved now (an error if one resolves to
    /// nothing), then again every few seconds in the background, where failed servers are also
    /// probed until they are back. The background work ends with the last clone.
    pub(crate) async fn new(targets: &[Target], connector: Connector) -> Result<Self, Unreachable> {
        let mut addresses = Vec::new();
        for target in targets {
            addresses.extend(resolve(target).await?);
        }
        let backends = addresses
            .into_iter()
            .map(|address| Backend::new(address, &connector))
            .collect::<Result<Arc<[_]>, _>>()?;
        assert!(!backends.is_empty(), "clap requires at least one --addr");
        let shared = Arc::new(Shared {
            // Each client starts at a random server, so short-lived clients spread out too.
            next: AtomicUsize::new(fastrand::usize(..backends.len())),
            backends: RwLock::new(backends),
        });
        let has_dns = targets
            .iter()
            .any(|target| matches!(target, Target::Dns(_)));
        if has_dns || shared.backends().len() > 1 {
            tokio::spawn(maintain(
                Arc::downgrade(&shared),
                targets.to_vec(),
                has_dns,
                connector,
            ));
        }
        Ok(Self { shared })
    }

    /// Whether some server is taking calls: if so, a call that failed on another one can be
    /// retried at once, without backing off.
    pub(crate) fn any_up(&self) -> bool {
        self.shared.backends().iter().any(|backend| backend.is_up())
    }

    /// How many servers are known, up or not.
    pub(crate) fn server_count(&self) -> usize {
        self.shared.backends().len()
    }

    /// The servers currently known, with whether each is taking calls.
    pub(crate) fn servers(&self) -> Vec<(HostPort, bool)> {
        self.shared
            .backends()
            .iter()
            .map(|backend| (backend.address.connect.clone(), backend.is_up()))
            .collect()
    }

    /// The next healthy server, round-robin; when none is healthy, the next one anyway, so the
    /// call fails (or succeeds, if it has just come back) with the real connection error.
    fn pick(&self) -> Arc<Backend> {
        let backends = self.shared.backends();
        let turn = self.shared.next.fetch_add(1, Ordering::Relaxed);
        let healthy = backends.iter().filter(|backend| backend.is_up()).count();
        let next_healthy = (healthy > 0)
            .then(|| {
                backends
                    .iter()
                    .filter(|backend| backend.is_up())
                    .nth(turn % healthy)
            })
            .flatten();
        // No healthy one, or one was taken out between the two passes (other calls and the
        // prober run on other threads): any next one will do.
        next_healthy
            .unwrap_or(&backends[turn % backends.len()])
            .clone()
    }
}

impl Shared {
    fn backends(&self) -> Arc<[Arc<Backend>]> {
        self.backends
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

impl fmt::Debug for Balancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balancer")
            .field("servers", &self.servers())
            .finish()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl Service<http::Request<Body>> for Balancer {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each call picks its server and waits for that server's channel to be ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let backend = self.pick();
        Box::pin(async move {
            let channel = backend.channel.clone();
            match channel.oneshot(request).await {
                Ok(response) => {
                    if !backend.is_up() {
                        backend.set_up(true, &"a call got through");
                    }
                    Ok(response.map(|inner| Body::new(ReplyBody { inner, backend })))
                }
                Err(error) => Err(backend.failed(error.into())),
            }
        })
    }
}

impl Backend {
    /// What a call that failed with `error` reports. A broken connection takes the server out
    /// and becomes UNAVAILABLE naming it (the gRPC status for "the server could not be
    /// reached; retry"); a deadline or a stream reset by the server says nothing about the
    /// server being gone and passes through as it is.
    fn failed(&self, error: BoxError) -> BoxError {
        if is_deadline(&*error) || is_stream_reset(&*error) {
            return error;
        }
        let unreachable = Unreachable {
            addr: self.address.connect.clone(),
            reason: root_cause(&*error),
            connecting: causes(&*error).any(|cause| cause.is::<tonic::ConnectError>()),
        };
        self.set_up(false, &unreachable);
        let mut status =
            Status::unavailable(format!("{}: {}", unreachable.addr, unreachable.reason));
        status.set_source(Arc::new(unreachable));
        Box::new(status)
    }
}

pin_project_lite::pin_project! {
    /// A reply body whose connection may break after the reply began (a server killed in the
    /// middle of a stream): reported as the call's connection failure, like one before it.
    struct ReplyBody {
        #[pin]
        inner: Body,
        backend: Arc<Backend>,
    }
}

impl http_body::Body for ReplyBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        this.inner
            .poll_frame(cx)
            .map_err(|error| this.backend.failed(error.into()))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The addresses of one target: itself, or every address its name resolves to.
async fn resolve(target: &Target) -> Result<Vec<Address>, Unreachable> {
    let name = match target {
        Target::Server(addr) => {
            return Ok(vec![Address {
                connect: addr.clone(),
                name: addr.clone(),
            }]);
        }
        Target::Dns(name) => name,
    };
    let unreachable = |reason: String| Unreachable {
        addr: name.clone(),
        reason,
        connecting: true,
    };
    let mut addresses: Vec<Address> = Vec::new();
    for resolved in tokio::net::lookup_host((name.host.as_str(), name.port))
        .await
        .map_err(|error| unreachable(format!("cannot resolve: {error}")))?
    {
        let address = Address {
            connect: HostPort {
                host: resolved.ip().to_string(),
                port: resolved.port(),
            },
            name: name.clone(),
        };
        // Resolvers list an address once per socket type.
        if !addresses.contains(&address) {
            addresses.push(address);
        }
    }
    if addresses.is_empty() {
        return Err(unreachable("resolves to no address".into()));
    }
    Ok(addresses)
}

/// The background work of a balancer: probe every server's health, and follow DNS changes.
/// Holds only a weak reference, so it ends when the balancer is dropped.
async fn maintain(shared: Weak<Shared>, targets: Vec<Target>, has_dns: bool, connector: Connector) {
    let mut probes =
        tokio::time::interval_at(tokio::time::Instant::now() + PROBE_INTERVAL, PROBE_INTERVAL);
    let mut resolves = tokio::time::interval_at(
        tokio::time::Instant::now() + RESOLVE_INTERVAL,
        RESOLVE_INTERVAL,
    );
    // A slow probe (a server that does not answer) delays the next ones rather than bunching them.
    probes.set_missed_tick_behavior(MissedTickBehavior::Delay);
    resolves.set_missed_tick_behavior(MissedTickBehavior::Delay);
    for tick in 1u32.. {
        tokio::select! {
            _ = probes.tick() => {
                let Some(shared) = shared.upgrade() else { return };
                let backends = shared.backends();
                drop(shared);
                let due = |backend: &&Arc<Backend>| !backend.is_up() || tick % PROBE_UP_EVERY == 0;
                join_all(backends.iter().filter(due).map(|backend| probe(backend))).await;
            }
            _ = resolves.tick(), if has_dns => {
                let Some(shared) = shared.upgrade() else { return };
                reresolve(&shared, &targets, &connector).await;
            }
        }
    }
}

/// Asks one server for its health and marks it up or down accordingly. A server without the
/// health service, or one that wants a token for it, is up: it answered.
async fn probe(backend: &Backend) {
    let mut health = HealthClient::new(backend.channel.clone());
    let mut request = tonic::Request::new(HealthCheckRequest::default());
    request.set_timeout(PROBE_TIMEOUT);
    let answer = tokio::time::timeout(PROBE_TIMEOUT, health.check(request)).await;
    match answer {
        Err(_) => backend.set_up(false, &"health check timed out"),
        Ok(Ok(reply)) if reply.get_ref().status() == ServingStatus::NotServing => {
            backend.set_up(false, &"health check says NOT_SERVING")
        }
        Ok(Ok(_)) => backend.set_up(true, &"healthy"),
        Ok(Err(status))
            if matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded)
                || is_deadline(&status) =>
        {
            let reason = std::error::Error::source(&status)
                .map_or_else(|| status.message().to_owned(), root_cause);
            backend.set_up(false, &reason);
        }
        Ok(Err(_)) => backend.set_up(true, &"it answers"),
    }
}

/// Resolves the targets again: new addresses join (up), vanished ones leave, the others keep
/// their connections and state. A failed or empty resolution keeps the servers known so far.
async fn reresolve(shared: &Shared, targets: &[Target], connector: &Connector) {
    let mut addresses = Vec::new();
    for target in targets {
        match resolve(target).await {
            Ok(resolved) => addresses.extend(resolved),
            Err(error) => {
                warn!("{}: {error}; keeping the servers known so far", error.addr);
                return;
            }
        }
    }
    let current = shared.backends();
    let same = addresses.len() == current.len()
        && addresses
            .iter()
            .all(|address| current.iter().any(|backend| backend.address == *address));
    if same {
        return;
    }
    let updated: Arc<[_]> = addresses
        .into_iter()
        .filter_map(|address| {
            let known = current.iter().find(|backend| backend.address == address);
            match known {
                Some(backend) => Some(backend.clone()),
                None => Backend::new(address, connector)
                    .inspect_err(|error| warn!("{}: {error}", error.addr))
                    .ok(),
            }
        })
        .collect();
    if updated.is_empty() {
        return;
    }
    debug!(
        "servers now: {}",
        updated
            .iter()
            .map(|backend| backend.address.connect.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    *shared
        .backends
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner()) = updated;
}

/// Whether `error` is tonic's own deadline (`grpc-timeout` enforced by the channel).
fn is_deadline(error: &(dyn std::error::Error + 'static)) -> bool {
    causes(error).any(|cause| cause.is::<TimeoutExpired>())
}

/// Whether `error` is the server resetting this one stream (RST_STREAM), the connection intact.
fn is_stream_reset(error: &(dyn std::error::Error + 'static)) -> bool {
    causes(error).any(|cause| {
        cause
            .downcast_ref::<h2::Error>()
            .is_some_and(h2::Error::is_reset)
    })
}

/// `error` and its sources, outermost first.
fn causes<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |error| error.source())
}

/// The innermost error, which is the one that says what went wrong ("Connection refused"); the
/// layers above it ("transport error", "tcp connect error") add nothing a user can act on.
pub(super) fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    causes(error)
        .last()
        .map_or_else(String::new, ToString::to_string)
}
