//! The Connect protocol's unary calls (<https://connectrpc.com/docs/protocol>), translated into
//! gRPC calls through the same call stack, as tonic-web does for gRPC-Web: a POST of one message,
//! JSON (`application/json`) or binary protobuf (`application/proto`), answered with the reply
//! message or a JSON error whose HTTP status says the code. So `curl -d '{"text":"hi"}'` works,
//! on HTTP/1.1 and HTTP/2, with the auth, limits, deadline, metrics and log line of a gRPC call.
//!
//! JSON is protobuf's canonical mapping, from the descriptors compiled into the binary
//! (prost-reflect): a new RPC speaks it with no code of its own.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor};
use tonic::body::Body;
use tonic::{Code, Status};
use tower::{Service, ServiceExt};
use tracing::warn;

use crate::grpc::framing::{self, PREFIX_LEN, Prefix};
use crate::grpc::{self, methods, timeout};
use crate::pb;
use crate::server::context::ConnectionState;
use crate::telemetry::untrusted;

/// How a Connect call's messages are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::server) enum Codec {
    Json,
    Proto,
}

impl Codec {
    /// The codec of a Connect unary request: a POST of `application/json` or `application/proto`
    /// (parameters such as `charset` allowed). `None` for anything else.
    pub(in crate::server) fn of_unary<B>(request: &Request<B>) -> Option<Self> {
        if request.method() != Method::POST {
            return None;
        }
        let content_type = request.headers().get(CONTENT_TYPE)?.as_bytes();
        let essence = content_type
            .split(|byte| *byte == b';')
            .next()?
            .trim_ascii();
        match essence {
            b"application/json" => Some(Self::Json),
            b"application/proto" => Some(Self::Proto),
            _ => None,
        }
    }

    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Self::Json => "application/json",
            Self::Proto => "application/proto",
        })
    }
}

const CONNECT_TIMEOUT_MS: HeaderName = HeaderName::from_static("connect-timeout-ms");

/// Answers one Connect unary call through `calls`, the gRPC call stack.
pub(in crate::server) async fn unary<S, B>(
    calls: S,
    request: Request<B>,
    codec: Codec,
    limits: BodyLimits,
) -> Result<Response<Body>, Infallible>
where
    S: Service<Request<Full<Bytes>>, Response = Response<Body>, Error = Infallible>,
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<tonic::codegen::StdError>,
{
    let path = request.uri().path().to_owned();
    let (method, grpc_request) = match translate(request, codec, limits).await {
        Ok(translated) => translated,
        Err(status) => {
            // Refused before it became a call, so the call layer never logged it.
            warn!(
                method = %untrusted(&path),
                code = ?status.code(),
                status_message = %untrusted(status.message()),
                "Connect call refused"
            );
            return Ok(error_response(&status));
        }
    };
    let response = calls
        .oneshot(grpc_request)
        .await
        .unwrap_or_else(|never| match never {});
    Ok(match reply(&method, codec, response).await {
        Ok(response) => response,
        Err(status) => error_response(&status),
    })
}

/// The gRPC call a Connect request makes: its method, and the request for the call stack.
async fn translate<B>(
    request: Request<B>,
    codec: Codec,
    limits: BodyLimits,
) -> Result<(MethodDescriptor, Request<Full<Bytes>>), Status>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<tonic::codegen::StdError>,
{
    let method = descriptor(request.uri().path()).ok_or_else(|| {
        Status::unimplemented(format!("unknown unary method {}", request.uri().path()))
    })?;
    let (parts, body) = request.into_parts();
    let held = limits.read(body).await?;
    let body = held.bytes.clone();
    let message = match codec {
        Codec::Proto => body,
        Codec::Json => json_to_proto(&method, &body)?,
    };
    let mut headers = grpc_headers(&parts.headers)?;
    headers.insert(CONTENT_TYPE, grpc::GRPC_CONTENT_TYPE);
    headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
    let mut grpc_request = Request::new(Full::new(framing::frame_encoded(&message)));
    *grpc_request.method_mut() = Method::POST;
    *grpc_request.uri_mut() = parts.uri;
    *grpc_request.headers_mut() = headers;
    *grpc_request.extensions_mut() = parts.extensions;
    // The body's bytes are given back here: from now on the gRPC call holds its message.
    drop(held);
    Ok((method, grpc_request))
}

/// The Connect reply to the gRPC call's `response`: its message, or its status as an error.
async fn reply(
    method: &MethodDescriptor,
    codec: Codec,
    response: Response<Body>,
) -> Result<Response<Body>, Status> {
    let (parts, body) = response.into_parts();
    if let Some(status) = error_status(&parts.headers) {
        return Err(status);
    }
    let reply = body
        .collect()
        .await
        .map_err(|status| Status::new(status.code(), status.message()))?;
    if let Some(status) = reply.trailers().and_then(error_status) {
        return Err(status);
    }
    let mut bytes = reply.to_bytes();
    Prefix::read(&bytes)
        .filter(|prefix| prefix.flag == 0 && bytes.len() == PREFIX_LEN + prefix.length)
        .ok_or_else(|| Status::internal("the reply was not one uncompressed message"))?;
    bytes.advance(PREFIX_LEN);
    let body = match codec {
        Codec::Proto => bytes,
        Codec::Json => proto_to_json(method, bytes)?,
    };
    let mut response = Response::new(Body::new(Full::new(body)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, codec.content_type());
    Ok(response)
}

/// What a Connect request body may take while it is read whole: `--max-message-bytes`, the
/// connection's byte budget, and `--stall-timeout` between its pieces, as a gRPC request body.
pub(in crate::server) struct BodyLimits {
    pub max_message_bytes: usize,
    pub connection: Option<Arc<ConnectionState>>,
    pub stall_timeout: Option<Duration>,
}

/// A body read whole, its bytes held in the connection's budget until dropped.
struct HeldBody {
    bytes: Bytes,
    connection: Option<Arc<ConnectionState>>,
    held: usize,
}

impl Drop for HeldBody {
    fn drop(&mut self) {
        if let Some(connection) = &self.connection {
            connection.buffered.give_back(self.held);
        }
    }
}

impl BodyLimits {
    async fn read<B>(self, body: B) -> Result<HeldBody, Status>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<tonic::codegen::StdError>,
    {
        let mut held = HeldBody {
            bytes: Bytes::new(),
            connection: self.connection,
            held: 0,
        };
        let mut read = BytesMut::new();
        let mut body = std::pin::pin!(body);
        loop {
            let next = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx));
            let frame = match self.stall_timeout {
                Some(stall) => tokio::time::timeout(stall, next).await.map_err(|_| {
                    Status::deadline_exceeded(format!(
                        "request stalled: no bytes for {stall:?} in the middle of a message \
                         (--stall-timeout)"
                    ))
                })?,
                None => next.await,
            };
            let Some(frame) = frame else { break };
            let frame = frame.map_err(|error| {
                Status::cancelled(format!("the request body broke off: {}", error.into()))
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if read.len() + data.len() > self.max_message_bytes {
                return Err(Status::resource_exhausted(format!(
                    "request message over the {}-byte limit (--max-message-bytes)",
                    self.max_message_bytes
                )));
            }
            if let Some(connection) = &held.connection {
                connection.progressed();
                connection.buffered.take(data.len())?;
                held.held += data.len();
            }
            read.extend_from_slice(&data);
        }
        held.bytes = read.freeze();
        Ok(held)
    }
}

/// The request's headers as the gRPC call's metadata: the caller's own (a token, a trace
/// context) kept, Connect's turned into gRPC's, HTTP's about the body dropped.
fn grpc_headers(headers: &HeaderMap) -> Result<HeaderMap, Status> {
    let mut metadata = HeaderMap::with_capacity(headers.len() + 2);
    for (name, value) in headers {
        let own = name.as_str().starts_with("connect-")
            || name.as_str().starts_with("grpc-")
            || [CONTENT_TYPE, CONTENT_LENGTH, http::header::ACCEPT_ENCODING].contains(name)
            || name == http::header::CONTENT_ENCODING
            || name == http::header::CONNECTION
            || name == http::header::HOST;
        if !own {
            metadata.append(name.clone(), value.clone());
        }
    }
    if let Some(value) = headers.get(CONNECT_TIMEOUT_MS) {
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
        metadata.insert(
            timeout::GRPC_TIMEOUT,
            timeout::write(Duration::from_millis(millis)),
        );
    }
    Ok(metadata)
}

/// The status in `headers` (a trailers-only reply's, or trailers), unless it is OK or absent.
fn error_status(headers: &HeaderMap) -> Option<Status> {
    Status::from_header_map(headers).filter(|status| status.code() != Code::Ok)
}

fn json_to_proto(method: &MethodDescriptor, json: &[u8]) -> Result<Bytes, Status> {
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let message = DynamicMessage::deserialize(method.input(), &mut deserializer)
        .and_then(|message| deserializer.end().map(|()| message))
        .map_err(|error| {
            Status::invalid_argument(format!(
                "the request is not a JSON {}: {error}",
                method.input().full_name()
            ))
        })?;
    Ok(message.encode_to_vec().into())
}

fn proto_to_json(method: &MethodDescriptor, bytes: Bytes) -> Result<Bytes, Status> {
    let message = DynamicMessage::decode(method.output(), bytes)
        .map_err(|error| Status::internal(format!("the reply does not decode: {error}")))?;
    serde_json::to_vec(&message)
        .map(Bytes::from)
        .map_err(|error| Status::internal(format!("the reply has no JSON form: {error}")))
}

/// The descriptor of the unary method at `path`, from the descriptors compiled into the binary.
fn descriptor(path: &str) -> Option<MethodDescriptor> {
    let method = methods::served().find(path)?;
    if !(method.kind.one_request() && method.kind.one_reply()) {
        return None;
    }
    pool()
        .get_service_by_name(&method.service)?
        .methods()
        .find(|candidate| candidate.name() == method.name)
}

/// Every message and service the server speaks JSON for: ours, and health.
fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let mut pool = DescriptorPool::new();
        for set in [
            pb::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ] {
            pool.decode_file_descriptor_set(set)
                .expect("the descriptors built into the binary decode");
        }
        pool
    })
}

/// A Connect error: the HTTP status the protocol gives its code, and a JSON body with the code's
/// name and the message.
fn error_response(status: &Status) -> Response<Body> {
    let (http_status, code) = connect_code(status.code());
    let body = serde_json::json!({ "code": code, "message": status.message() });
    let mut response = Response::new(Body::new(Full::new(Bytes::from(body.to_string()))));
    *response.status_mut() = http_status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
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
    fn every_unary_method_has_a_descriptor_for_json() {
        for method in methods::served()
            .iter()
            .filter(|method| method.kind.one_request() && method.kind.one_reply())
            .filter(|method| !method.service.starts_with("grpc.reflection"))
        {
            assert!(descriptor(&method.path).is_some(), "{}", method.path);
        }
    }

    #[test]
    fn json_goes_to_protobuf_and_back() {
        let method = descriptor("/example.FormatData/DoFormat").unwrap();
        let bytes = json_to_proto(&method, br#"{"text":"hi \u00df"}"#).unwrap();
        assert_eq!(pb::Data::decode(bytes.clone()).unwrap().text, "hi ß");
        let json = proto_to_json(&method, bytes).unwrap();
        assert_eq!(std::str::from_utf8(&json).unwrap(), r#"{"text":"hi ß"}"#);
        let bad = json_to_proto(&method, br#"{"text":1}"#).unwrap_err();
        assert_eq!(bad.code(), Code::InvalidArgument);
        assert!(json_to_proto(&method, br#"{"text":"a"} trailing"#).is_err());
    }

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
}
