//! The Connect protocol (<https://connectrpc.com/docs/protocol>), translated into gRPC calls
//! through the same call stack, as tonic-web does for gRPC-Web. So `curl -d '{"text":"hi"}'`
//! works, and every Connect client, on HTTP/1.1 and HTTP/2, with the auth, limits, deadline,
//! metrics and log line of a gRPC call:
//! - `unary.rs`: a POST of one message, JSON (`application/json`) or binary
//!   (`application/proto`), or a GET of a method free of side effects, its message in the query;
//!   answered with the reply message, or a JSON error whose HTTP status says the code;
//! - `stream.rs`: `application/connect+json` and `application/connect+proto`, messages in
//!   envelopes each way (the same 5-byte prefix as gRPC's), ending in an end-of-stream message
//!   that carries the status;
//! - `messages.rs`: the methods' descriptors and protobuf's canonical JSON mapping, derived from
//!   the descriptors compiled into the binary (prost-reflect), so a new RPC speaks JSON with no
//!   code of its own.

mod messages;
mod stream;
mod unary;

use std::convert::Infallible;
use std::time::Duration;

use tokio::time::Instant;

use http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use tonic::body::Body;
use tonic::{Code, Status};
use tower::Service;
use tracing::warn;

use crate::grpc::compression::{Encoding, ReplyCompression};
use crate::grpc::status::reply_status;
use crate::grpc::{methods, timeout};
use crate::telemetry::untrusted;

pub(in crate::server) use unary::BodyLimits;

/// How a Connect call's messages are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::server) enum Codec {
    Json,
    Proto,
}

/// The shape of a Connect request, told from its method and content type alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::server) enum Shape {
    /// A POST of one message, unenveloped.
    Unary(Codec),
    /// A GET, its message in the query string.
    Get,
    /// Enveloped messages, as many as the method takes.
    Stream(Codec),
}

impl Shape {
    /// The shape of `request` if it is a Connect call: a POST of `application/json`,
    /// `application/proto` or `application/connect+json`/`+proto` (parameters such as
    /// `charset` allowed), or a GET of a method the server serves. `None` for anything else.
    pub(in crate::server) fn of<B>(request: &Request<B>) -> Option<Self> {
        if request.method() == Method::GET {
            return methods::served()
                .find(request.uri().path())
                .map(|_| Self::Get);
        }
        if request.method() != Method::POST {
            return None;
        }
        let content_type = request.headers().get(CONTENT_TYPE)?.as_bytes();
        let essence = content_type
            .split(|byte| *byte == b';')
            .next()?
            .trim_ascii();
        match essence {
            b"application/json" => Some(Self::Unary(Codec::Json)),
            b"application/proto" => Some(Self::Unary(Codec::Proto)),
            b"application/connect+json" => Some(Self::Stream(Codec::Json)),
            b"application/connect+proto" => Some(Self::Stream(Codec::Proto)),
            _ => None,
        }
    }
}

/// What a Connect call may take besides what the gRPC call it becomes enforces.
pub(in crate::server) struct Settings {
    pub limits: BodyLimits,
    pub reply_compression: ReplyCompression,
}

/// Answers one Connect call of `shape` through `calls`, the gRPC call stack.
pub(in crate::server) async fn serve<S, B>(
    calls: S,
    request: Request<B>,
    shape: Shape,
    settings: Settings,
) -> Result<Response<Body>, Infallible>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    Ok(match shape {
        Shape::Unary(codec) => unary::serve(calls, request, Some(codec), settings).await,
        Shape::Get => unary::serve(calls, request, None, settings).await,
        Shape::Stream(codec) => stream::serve(calls, request, codec, settings).await,
    })
}

const CONNECT_TIMEOUT_MS: HeaderName = HeaderName::from_static("connect-timeout-ms");
const CONNECT_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("connect-protocol-version");

/// When the call must be over, if `Connect-Timeout-Ms` says: from when its request came, so a
/// unary body read whole counts against it.
fn deadline(headers: &HeaderMap) -> Result<Option<Instant>, Status> {
    let Some(value) = headers.get(CONNECT_TIMEOUT_MS) else {
        return Ok(None);
    };
    let millis: u64 = value
        .to_str()
        .ok()
        .filter(|text| (1..=10).contains(&text.len()))
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "connect-timeout-ms must be a positive number of at most 10 digits, not {}",
                String::from_utf8_lossy(value.as_bytes())
            ))
        })?;
    Ok(Some(Instant::now() + Duration::from_millis(millis)))
}

/// The request's headers as the gRPC call's metadata: the caller's own (a token, a trace
/// context) kept, Connect's turned into gRPC's (`deadline` as `grpc-timeout`), HTTP's about the
/// body dropped.
fn grpc_headers(headers: &HeaderMap, deadline: Option<Instant>) -> Result<HeaderMap, Status> {
    // Optional (curl sends none), but a client speaking another version is told so.
    if let Some(version) = headers.get(CONNECT_PROTOCOL_VERSION)
        && version != "1"
    {
        return Err(Status::invalid_argument(format!(
            "connect-protocol-version {} is not spoken here: send 1",
            String::from_utf8_lossy(version.as_bytes())
        )));
    }
    let mut metadata = HeaderMap::with_capacity(headers.len() + 2);
    for (name, value) in headers {
        let own = name.as_str().starts_with("connect-")
            || name.as_str().starts_with("grpc-")
            || [
                CONTENT_TYPE,
                CONTENT_LENGTH,
                ACCEPT_ENCODING,
                CONTENT_ENCODING,
            ]
            .contains(name)
            || name == http::header::CONNECTION
            || name == http::header::HOST
            || name == http::header::TE;
        if !own {
            metadata.append(name.clone(), value.clone());
        }
    }
    if let Some(deadline) = deadline {
        // What is left of it once the request is read; a deadline already passed still goes
        // as one, so the call fails as late calls do.
        let left = deadline.saturating_duration_since(Instant::now());
        metadata.insert(
            timeout::GRPC_TIMEOUT,
            timeout::write(left.max(Duration::from_millis(1))),
        );
    }
    metadata.insert(CONTENT_TYPE, crate::grpc::GRPC_CONTENT_TYPE);
    metadata.insert(http::header::TE, HeaderValue::from_static("trailers"));
    Ok(metadata)
}

/// The encoding `Content-Encoding` names; `None` for none or `identity`.
fn content_encoding(value: Option<&HeaderValue>) -> Result<Option<Encoding>, Status> {
    let Some(value) = value else { return Ok(None) };
    let name = value.to_str().unwrap_or_default().trim();
    if name.is_empty() || name == "identity" {
        return Ok(None);
    }
    Encoding::from_name(name).map(Some).ok_or_else(|| {
        Status::unimplemented(format!(
            "content encoding {} is not spoken here: send gzip, zstd or identity",
            String::from_utf8_lossy(value.as_bytes())
        ))
    })
}

/// The status in `headers` (a trailers-only reply's, or trailers), unless it is OK or absent.
fn error_status(headers: &HeaderMap) -> Option<Status> {
    reply_status(headers).filter(|status| status.code() != Code::Ok)
}

/// Logs a call refused before it became a gRPC call, which the call layer therefore never saw.
fn refused(path: &str, status: &Status) {
    warn!(
        method = %untrusted(path),
        code = ?status.code(),
        status_message = %untrusted(status.message()),
        "Connect call refused"
    );
}

/// Connect's error object for `status`: the code's name and the message.
fn error_json(status: &Status) -> serde_json::Value {
    serde_json::json!({ "code": connect_code(status.code()).1, "message": status.message() })
}

/// Connect's name and HTTP status for a gRPC code.
fn connect_code(code: Code) -> (StatusCode, &'static str) {
    match code {
        Code::Ok => (StatusCode::OK, "ok"),
        Code::Cancelled => (StatusCode::from_u16(499).expect("valid"), "canceled"),
        Code::Unknown => (StatusCode::INTERNAL_SERVER_ERROR, "unknown"),
        Code::InvalidArgument => (StatusCode::BAD_REQUEST, "invalid_argument"),
        Code::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded"),
        Code::NotFound => (StatusCode::NOT_FOUND, "not_found"),
        Code::AlreadyExists => (StatusCode::CONFLICT, "already_exists"),
        Code::PermissionDenied => (StatusCode::FORBIDDEN, "permission_denied"),
        Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, "resource_exhausted"),
        Code::FailedPrecondition => (StatusCode::BAD_REQUEST, "failed_precondition"),
        Code::Aborted => (StatusCode::CONFLICT, "aborted"),
        Code::OutOfRange => (StatusCode::BAD_REQUEST, "out_of_range"),
        Code::Unimplemented => (StatusCode::NOT_IMPLEMENTED, "unimplemented"),
        Code::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        Code::DataLoss => (StatusCode::INTERNAL_SERVER_ERROR, "data_loss"),
        Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_connects_names_and_http_statuses() {
        assert_eq!(
            connect_code(Code::Unauthenticated),
            (StatusCode::UNAUTHORIZED, "unauthenticated")
        );
        assert_eq!(
            connect_code(Code::ResourceExhausted).0,
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(connect_code(Code::Cancelled).0.as_u16(), 499);
    }

    #[test]
    fn shapes_come_from_the_method_and_content_type() {
        let request = |method: Method, path: &str, content_type: &str| {
            Request::builder()
                .method(method)
                .uri(path)
                .header(CONTENT_TYPE, content_type)
                .body(())
                .unwrap()
        };
        let path = "/example.FormatData/DoFormat";
        let shape = |method, content_type| Shape::of(&request(method, path, content_type));
        assert_eq!(
            shape(Method::POST, "application/json; charset=utf-8"),
            Some(Shape::Unary(Codec::Json))
        );
        assert_eq!(
            shape(Method::POST, "application/connect+proto"),
            Some(Shape::Stream(Codec::Proto))
        );
        assert_eq!(shape(Method::POST, "application/grpc+json"), None);
        assert_eq!(shape(Method::GET, ""), Some(Shape::Get));
        assert_eq!(Shape::of(&request(Method::GET, "/index.html", "")), None);
        assert_eq!(shape(Method::PUT, "application/json"), None);
    }
}
