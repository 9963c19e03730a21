//! The front door of every connection: [`Front`] sends each request where it belongs. On a
//! loopback-only server it first refuses any request that names another host; then native gRPC
//! goes straight to the call stack (the hot path never passes through the gRPC-Web or CORS
//! layers), gRPC-Web and CORS preflights to [`super::web`]'s translation, and GET requests to
//! the playground's pages. Native gRPC over HTTP/1.1 is refused: gRPC needs HTTP/2.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::{Either, Ready, ready};
use http::header::ORIGIN;
use http::uri::Authority;
use http::{Method, Request, Response, StatusCode};
use tonic::Status;
use tonic::body::Body;
use tonic_web::{GrpcWebLayer, GrpcWebService};
use tower::{Layer, Service, ServiceExt};
use tower_http::cors::{Cors, CorsLayer};

use crate::grpc::status::status_response;
use crate::grpc::{Family, is_grpc};
use crate::server::calls::CallStack;
use crate::server::calls::connect::Shape;
use crate::server::calls::web::{WebSettings, cors, page, status};
use crate::server::context::{ClientGone, ConnectionState};
use crate::server::transport::connection::CallService;

/// What every connection is served with: the call stack (middleware, fast path, tonic's router)
/// for native gRPC and, when gRPC-Web is on, for gRPC-Web behind its translation and CORS.
/// Makes each connection's [`Front`], bound to that connection's state.
#[derive(Clone)]
pub(in crate::server) struct Fronts {
    calls: CallStack,
    /// Set when gRPC-Web is served; the CORS layer, built once from `--cors-origin`.
    cors: Option<Arc<CorsLayer>>,
    playground: bool,
    loopback_only: bool,
}

impl Fronts {
    pub(in crate::server) fn new(calls: CallStack, settings: &WebSettings) -> Self {
        Self {
            calls,
            cors: settings
                .grpc_web
                .then(|| Arc::new(cors(&settings.cors_origins))),
            playground: settings.playground,
            loopback_only: settings.loopback_only,
        }
    }

    fn front<N>(&self, native: N) -> Front<N> {
        Front {
            native,
            web: self.cors.as_ref().map(|cors| WebStacks {
                cors: cors.clone(),
                built: None,
            }),
            playground: self.playground,
            loopback_only: self.loopback_only,
            loopback_authority: None,
        }
    }
}

impl CallService for Fronts {
    type Http2 = Front<CallStack>;
    type Http1 = Front<Http1Calls>;

    /// For an HTTP/2 connection: native gRPC, and gRPC-Web when it is on.
    fn http2(&self, state: &Arc<ConnectionState>) -> Front<CallStack> {
        self.front(self.calls.clone().for_connection(state.clone()))
    }

    /// For an HTTP/1.1 connection (only made with gRPC-Web on): gRPC-Web, the page and Connect;
    /// native gRPC needs HTTP/2.
    fn http1(&self, state: &Arc<ConnectionState>) -> Front<Http1Calls> {
        let calls = self.calls.clone().for_connection(state.clone());
        let mut front = self.front(Http1Calls(calls));
        // Built now, so that the copy hyper makes of this service for each request shares them.
        if let Some(web) = &mut front.web {
            web.built(front.native.call_stack());
        }
        front
    }
}

/// One connection's service: picks, for each request, native gRPC (`N`), gRPC-Web, the page, or
/// a refusal.
#[derive(Clone)]
pub(in crate::server) struct Front<N> {
    /// Native gRPC: the call stack on HTTP/2, a refusal on HTTP/1.1.
    native: N,
    /// What calls from web pages go through, when gRPC-Web is served.
    web: Option<WebStacks>,
    /// Whether GET requests for the playground's files are answered.
    playground: bool,
    /// Refuse requests whose host is not a loopback name (see [`WebSettings`]).
    loopback_only: bool,
    /// The last `:authority` found to name loopback: a connection's calls nearly always name
    /// the same, and comparing is cheaper than parsing it again.
    loopback_authority: Option<Authority>,
}

impl<N> Front<N> {
    /// Whether `request` names a loopback host, as [`names_loopback`] says.
    fn names_loopback<B>(&mut self, request: &Request<B>) -> bool {
        let Some(authority) = request.uri().authority() else {
            return names_loopback(request);
        };
        // Byte for byte: `Authority`'s own comparison ignores case, a byte at a time.
        if self
            .loopback_authority
            .as_ref()
            .is_some_and(|known| known.as_str() == authority.as_str())
        {
            return true;
        }
        let loopback = is_loopback_host(authority.host());
        if loopback {
            self.loopback_authority = Some(authority.clone());
        }
        loopback
    }
}

type Answer = Result<Response<Body>, Infallible>;

/// A native call's own future (no boxing on the hot path), a boxed gRPC-Web one, or an answer.
type FrontFuture<N> =
    Either<N, Either<Pin<Box<dyn Future<Output = Answer> + Send>>, Ready<Answer>>>;

impl<N, B> Service<Request<B>> for Front<N>
where
    N: Service<Request<B>, Response = Response<Body>, Error = Infallible> + OnCallStack,
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<tonic::codegen::StdError> + std::fmt::Display,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = FrontFuture<N::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The native stack, the hot path; a gRPC-Web call readies its own copy of the web stack.
        self.native.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let answer = |response| Either::Right(Either::Right(ready(Ok(response))));
        if self.loopback_only && !self.names_loopback(&request) {
            return answer(foreign_host(&request));
        }
        let Some(web) = &mut self.web else {
            return Either::Left(self.native.call(request));
        };
        let family = Family::of(request.headers());
        let to_web = family == Family::GrpcWeb || request.method() == Method::OPTIONS;
        if to_web {
            let grpc_web = web.built(self.native.call_stack()).grpc_web.clone();
            let request = ClientGone::track(request);
            return Either::Right(Either::Left(Box::pin(grpc_web.oneshot(request))));
        }
        if family == Family::Grpc {
            return Either::Left(self.native.call(request));
        }
        // A Connect call from a web page gets CORS as gRPC-Web's do.
        if request.headers().contains_key(ORIGIN) && Shape::of(&request).is_some() {
            let connect = web.built(self.native.call_stack()).connect.clone();
            let request = ClientGone::track(request);
            return Either::Right(Either::Left(Box::pin(connect.oneshot(request))));
        }
        let to_page = (request.method() == Method::GET || request.method() == Method::HEAD)
            && Shape::of(&request) != Some(Shape::Get);
        if to_page {
            return answer(page(&request, self.playground));
        }
        Either::Left(self.native.call(request))
    }
}

/// The stacks of a connection's calls from web pages, CORS in front of each: gRPC-Web's
/// translation then the call stack, and for Connect the call stack alone.
///
/// Built when the connection first needs them, as most never do (a gRPC client's), on the call
/// stack its native service holds (kept once, not twice, in every connection's memory). Shared
/// between copies once built, because hyper clones an HTTP/1.1 connection's whole service for
/// every request, and a CORS layer is costly to clone (its header lists): native calls would pay
/// for it (-4% of their rate).
#[derive(Clone)]
struct WebStacks {
    cors: Arc<CorsLayer>,
    built: Option<Arc<BuiltWebStacks>>,
}

struct BuiltWebStacks {
    grpc_web: Cors<GrpcWebService<CallStack>>,
    connect: Cors<CallStack>,
}

impl WebStacks {
    fn built(&mut self, calls: &CallStack) -> &BuiltWebStacks {
        let cors = &self.cors;
        self.built.get_or_insert_with(|| {
            Arc::new(BuiltWebStacks {
                grpc_web: cors.layer(GrpcWebLayer::new().layer(calls.clone())),
                connect: cors.layer(calls.clone()),
            })
        })
    }
}

/// The refusal of a request naming a host other than this loopback-only server's: a web page
/// that pointed its own name at 127.0.0.1 ("DNS rebinding") must not reach the server, by any
/// protocol. A native gRPC client gets a gRPC status it can show; everyone else HTTP 421.
fn foreign_host<B>(request: &Request<B>) -> Response<Body> {
    let host = request
        .uri()
        .host()
        .or_else(|| request.headers().get(http::header::HOST)?.to_str().ok())
        .unwrap_or("");
    if request.version() == http::Version::HTTP_2 && is_grpc(request.headers()) {
        return status_response(&Status::permission_denied(format!(
            "this server listens on loopback only; calls must name localhost or a loopback \
             address, not {host:?}"
        )));
    }
    status(StatusCode::MISDIRECTED_REQUEST)
}

/// What HTTP/1.1 serves besides gRPC-Web and the page: Connect's calls, through the call stack,
/// which also answers other content types with 415; native gRPC is refused, as it needs HTTP/2
/// (its trailers, its streams).
#[derive(Clone)]
pub(in crate::server) struct Http1Calls(CallStack);

/// A front's native service, made of the connection's call stack: the web stacks are built on
/// the same one.
pub(in crate::server) trait OnCallStack {
    fn call_stack(&self) -> &CallStack;
}

impl OnCallStack for CallStack {
    fn call_stack(&self) -> &CallStack {
        self
    }
}

impl OnCallStack for Http1Calls {
    fn call_stack(&self) -> &CallStack {
        &self.0
    }
}

impl<B> Service<Request<B>> for Http1Calls
where
    CallStack: Service<Request<B>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<<CallStack as Service<Request<B>>>::Future, Ready<Answer>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if Family::of(request.headers()) != Family::Grpc {
            return Either::Left(self.0.call(request));
        }
        let mut response = status_response(&Status::invalid_argument(
            "gRPC needs HTTP/2; over HTTP/1.1 this server speaks gRPC-Web and Connect",
        ));
        *response.status_mut() = StatusCode::HTTP_VERSION_NOT_SUPPORTED;
        Either::Right(ready(Ok(response)))
    }
}

/// Whether the request's host (`:authority`, else `Host`) is `localhost`, a `.localhost` name or
/// a loopback address: how a browser on this machine names a loopback-only server.
fn names_loopback<B>(request: &Request<B>) -> bool {
    if let Some(host) = request.uri().host() {
        return is_loopback_host(host);
    }
    request
        .headers()
        .get(http::header::HOST)
        .and_then(|host| host.to_str().ok()?.parse::<http::uri::Authority>().ok())
        .is_some_and(|authority| is_loopback_host(authority.host()))
}

fn is_loopback_host(host: &str) -> bool {
    const SUBDOMAIN: &str = ".localhost";
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let subdomain = host.len() > SUBDOMAIN.len()
        && host.is_char_boundary(host.len() - SUBDOMAIN.len())
        && host[host.len() - SUBDOMAIN.len()..].eq_ignore_ascii_case(SUBDOMAIN);
    host.eq_ignore_ascii_case("localhost")
        || subdomain
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_are_localhost_and_loopback_addresses() {
        let with_host = |host: &str| Request::get("/").header("host", host).body(()).unwrap();
        for host in [
            "localhost:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
            "app.localhost",
            "LOCALHOST",
        ] {
            assert!(names_loopback(&with_host(host)), "{host}");
        }
        for host in [
            "evil.example:8080",
            "10.0.0.1",
            "localhost.evil.example",
            "",
        ] {
            assert!(!names_loopback(&with_host(host)), "{host}");
        }
        let get = |uri| Request::get(uri).body(()).unwrap();
        assert!(names_loopback(&get("http://127.0.0.1:1/")));
        assert!(!names_loopback(&get("http://rebound.example/")));
        assert!(!names_loopback(&get("/")));
    }
}
