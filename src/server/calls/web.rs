//! gRPC for browsers, on the same port as native gRPC: tonic-web translates gRPC-Web (HTTP/1.1
//! or HTTP/2) to gRPC and back, tower-http answers CORS for pages on the origins
//! `--cors-origin` names, and the playground page, built into the binary, is served at `/`.

use std::time::Duration;

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use tonic::body::Body;
use tower_http::cors::{AllowOrigin, CorsLayer};

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
pub(in crate::server) struct WebSettings {
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

/// CORS for gRPC-Web and Connect: POST (and Connect's GET) from the allowed origins, with the
/// headers their browser clients send, and the gRPC status headers readable by the page.
pub(in crate::server) fn cors(origins: &[HeaderValue]) -> CorsLayer {
    const REQUEST_HEADERS: [HeaderName; 8] = [
        CONTENT_TYPE,
        http::header::AUTHORIZATION,
        HeaderName::from_static("x-grpc-web"),
        HeaderName::from_static("x-user-agent"),
        HeaderName::from_static("grpc-timeout"),
        HeaderName::from_static("grpc-accept-encoding"),
        HeaderName::from_static("connect-protocol-version"),
        HeaderName::from_static("connect-timeout-ms"),
    ];
    const STATUS_HEADERS: [HeaderName; 3] = [
        HeaderName::from_static("grpc-status"),
        HeaderName::from_static("grpc-message"),
        HeaderName::from_static("grpc-status-details-bin"),
    ];
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins.iter().cloned()))
        // GET: Connect's calls of methods free of side effects.
        .allow_methods([Method::POST, Method::GET])
        .allow_headers(REQUEST_HEADERS)
        .expose_headers(STATUS_HEADERS)
        .max_age(PREFLIGHT_MAX_AGE)
}

/// A playground file, or 404 (also for everything when the playground is off).
pub(in crate::server) fn page<B>(request: &Request<B>, playground: bool) -> Response<Body> {
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

/// An empty response with `code`.
pub(in crate::server) fn status(code: StatusCode) -> Response<Body> {
    let mut response = Response::new(Body::default());
    *response.status_mut() = code;
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
    fn the_page_references_only_files_that_are_served() {
        let html = PAGES[0].2;
        for (path, _, _) in &PAGES[1..] {
            assert!(html.contains(&format!("\"{path}\"")), "{path} not used");
        }
    }
}
