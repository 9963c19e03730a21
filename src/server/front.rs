//! gRPC for browsers, on the same port as native gRPC: tonic-web translates gRPC-Web (HTTP/1.1
//! or HTTP/2) to gRPC and back, tower-http answers CORS for pages on the origins
//! `--cors-origin` names, and the playground page, built into the binary, is served at `/`.
//!
//! [`Front`] sends each request where it belongs, so native gRPC calls, the hot path, never pass
//! through the gRPC-Web or CORS layers; on a loopback-only server it first refuses any request
//! that names another host.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{Either, Ready, ready};
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use tonic::Status;
use tonic::body::Body;
use tonic_web::{GrpcWebLayer, GrpcWebService};
use tower::{Layer, Service, ServiceExt};
use tower_http::cors::{AllowOrigin, Cors, CorsLayer};

use crate::server::CallStack;
use crate::server::call::{ClientGone, is_grpc, status_response};
use crate::server::connection::ConnectionState;

/// How long a browser may cache a CORS preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);

/// The playground's files, embedded at build time: nothing to install, nothing fetched.
const PAGES: &[(&str, &str, &str)] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_str!("web/playground.html"),
    ),
    (
        "/playground.css",
        "text/css; charset=utf-8",
        include_str!("web/playground.css"),
    ),
    (
        "/playground.js",
        "text/javascript; charset=utf-8",
        include_str!("web/playground.js"),
    ),
];

/// The page may load only its own files and call only its own server.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
     img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// What the browser side serves, as the flags decided it.
#[derive(Debug, Clone)]
pub struct WebSettings {
    /// Whether gRPC-Web (and so HTTP/1.1) is served at all.
    pub grpc_web: bool,
    /// Whether `/` serves the playground (only with gRPC-Web: the page needs it).
    pub playground: bool,
    /// Origins whose pages may call the server; empty: same-origin pages only.
    pub cors_origins: Vec<HeaderValue>,
    /// Whether the server listens on loopback addresses only: browser requests must then name a
    /// loopback host, or a page of any site could reach it by pointing its own name at
    /// 127.0.0.1 ("DNS rebinding"), same-origin and so past CORS.
    pub loopback_only: bool,
}

/// What every connection is served with: the call stack (middleware, fast path, tonic's router)
/// for native gRPC and, when gRPC-Web is on, for gRPC-Web behind its translation and CORS.
/// Makes each connection's [`Front`], bound to that connection's state.
#[derive(Clone)]
pub struct Fronts {
    calls: CallStack,
    /// Set when gRPC-Web is served; the CORS layer, built once from `--cors-origin`.
    cors: Option<CorsLayer>,
    playground: bool,
    loopback_only: bool,
}

impl Fronts {
    pub fn new(calls: CallStack, settings: &WebSettings) -> Self {
        Self {
            calls,
            cors: settings.grpc_web.then(|| cors(&settings.cors_origins)),
            playground: settings.playground,
            loopback_only: settings.loopback_only,
        }
    }

    /// For an HTTP/2 connection: native gRPC, and gRPC-Web when it is on.
    pub fn http2(&self, state: &Arc<ConnectionState>) -> Front<CallStack> {
        let calls = self.calls.clone().for_connection(state.clone());
        self.front(calls.clone(), calls)
    }

    /// For an HTTP/1.1 connection (only made with gRPC-Web on): gRPC-Web and the page; native
    /// gRPC needs HTTP/2.
    pub fn http1(&self, state: &Arc<ConnectionState>) -> Front<NeedsHttp2> {
        let calls = self.calls.clone().for_connection(state.clone());
        self.front(NeedsHttp2, calls)
    }

    fn front<N>(&self, native: N, calls: CallStack) -> Front<N> {
        Front {
            native,
            web: self
                .cors
                .as_ref()
                .map(|cors| Arc::new(cors.layer(GrpcWebLayer::new().layer(calls)))),
            playground: self.playground,
            loopback_only: self.loopback_only,
        }
    }
}

/// One connection's service: picks, for each request, native gRPC (`N`), gRPC-Web, the page, or
/// a refusal.
#[derive(Clone)]
pub struct Front<N> {
    /// Native gRPC: the call stack on HTTP/2, a refusal on HTTP/1.1.
    native: N,
    /// gRPC-Web: CORS, then tonic-web's translation, then the same call stack. Shared, because
    /// hyper clones the whole service for every request, and a CORS layer is costly to clone
    /// (its header lists): native calls would pay for it (-4% of their rate).
    web: Option<Arc<Cors<GrpcWebService<CallStack>>>>,
    /// Whether GET requests for the playground's files are answered.
    playground: bool,
    /// Refuse requests whose host is not a loopback name (see [`WebSettings`]).
    loopback_only: bool,
}

/// CORS for gRPC-Web: POST from the allowed origins, with the headers gRPC-Web clients send, and
/// the gRPC status headers readable by the page.
fn cors(origins: &[HeaderValue]) -> CorsLayer {
    const REQUEST_HEADERS: [HeaderName; 7] = [
        CONTENT_TYPE,
        http::header::AUTHORIZATION,
        HeaderName::from_static("x-grpc-web"),
        HeaderName::from_static("x-user-agent"),
        HeaderName::from_static("grpc-timeout"),
        HeaderName::from_static("grpc-accept-encoding"),
        HeaderName::from_static("connect-protocol-version"),
    ];
    const STATUS_HEADERS: [HeaderName; 3] = [
        HeaderName::from_static("grpc-status"),
        HeaderName::from_static("grpc-message"),
        HeaderName::from_static("grpc-status-details-bin"),
    ];
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins.iter().cloned()))
        .allow_methods([Method::POST])
        .allow_headers(REQUEST_HEADERS)
        .expose_headers(STATUS_HEADERS)
        .max_age(PREFLIGHT_MAX_AGE)
}

type Answer = Result<Response<Body>, Infallible>;

/// A native call's own future (no boxing on the hot path), a boxed gRPC-Web one, or an answer.
type FrontFuture<N> =
    Either<N, Either<Pin<Box<dyn Future<Output = Answer> + Send>>, Ready<Answer>>>;

impl<N, B> Service<Request<B>> for Front<N>
where
    N: Service<Request<B>, Response = Response<Body>, Error = Infallible>,
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
        if self.loopback_only && !names_loopback(&request) {
            return answer(foreign_host(&request));
        }
        let Some(web) = &self.web else {
            return Either::Left(self.native.call(request));
        };
        let to_web = is_grpc_web(&request) || request.method() == Method::OPTIONS;
        let to_page = request.method() == Method::GET || request.method() == Method::HEAD;
        if to_web {
            let web = Cors::clone(web);
            let request = ClientGone::track(request);
            return Either::Right(Either::Left(Box::pin(web.oneshot(request))));
        }
        if to_page {
            return answer(page(&request, self.playground));
        }
        Either::Left(self.native.call(request))
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

/// Native gRPC on an HTTP/1.1 connection: refused, as gRPC needs HTTP/2 (its trailers, its
/// streams). Browsers use gRPC-Web, served on the same connection.
#[derive(Debug, Clone, Copy)]
pub struct NeedsHttp2;

impl<B> Service<Request<B>> for NeedsHttp2 {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Ready<Answer>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<B>) -> Self::Future {
        let mut response = status_response(&Status::invalid_argument(
            "gRPC needs HTTP/2; over HTTP/1.1 this server speaks gRPC-Web only",
        ));
        *response.status_mut() = StatusCode::HTTP_VERSION_NOT_SUPPORTED;
        ready(Ok(response))
    }
}

/// gRPC-Web's content types: `application/grpc-web`, `-web+proto`, `-web-text`, ...
fn is_grpc_web<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc-web"))
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

/// An empty response with `code`.
fn status(code: StatusCode) -> Response<Body> {
    let mut response = Response::new(Body::default());
    *response.status_mut() = code;
    response
}

/// A playground file, or 404 (also for everything when the playground is off).
fn page<B>(request: &Request<B>, playground: bool) -> Response<Body> {
    let found = PAGES
        .iter()
        .find(|(path, _, _)| playground && *path == request.uri().path());
    let Some((_, content_type, text)) = found else {
        return status(StatusCode::NOT_FOUND);
    };
    let body = if request.method() == Method::HEAD {
        Body::default()
    } else {
        Body::new(http_body_util::Full::new(bytes::Bytes::from_static(
            text.as_bytes(),
        )))
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Request<()> {
        Request::get(path).body(()).unwrap()
    }

    #[test]
    fn the_playground_files_are_served_with_their_types() {
        for (path, content_type) in [
            ("/", "text/html"),
            ("/playground.css", "text/css"),
            ("/playground.js", "text/javascript"),
        ] {
            let response = page(&get(path), true);
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            let served = response.headers()[CONTENT_TYPE].to_str().unwrap();
            assert!(served.starts_with(content_type), "{path}: {served}");
        }
    }

    #[test]
    fn other_paths_and_a_disabled_playground_are_not_found() {
        assert_eq!(page(&get("/nope"), true).status(), StatusCode::NOT_FOUND);
        assert_eq!(page(&get("/"), false).status(), StatusCode::NOT_FOUND);
    }

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
        assert!(names_loopback(&get("http://127.0.0.1:1/")));
        assert!(!names_loopback(&get("http://rebound.example/")));
        assert!(!names_loopback(&get("/")));
    }

    #[test]
    fn the_page_references_only_files_that_are_served() {
        let html = PAGES[0].2;
        for (path, _, _) in &PAGES[1..] {
            assert!(html.contains(&format!("\"{path}\"")), "{path} not used");
        }
    }
}
