//! Connect's unary calls: a POST whose body is the message, or a GET (for methods free of side
//! effects) whose query carries it, answered with the reply message or a JSON error whose HTTP
//! status says the code. Bodies may come compressed (`Content-Encoding`) and replies go
//! compressed where the client accepts it (`Accept-Encoding`) and the server's reply policy
//! (`--compress-replies`) says so, as for gRPC.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::{Bytes, BytesMut};
use http::header::{ACCEPT_ENCODING, ALLOW, CONTENT_ENCODING, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use prost_reflect::MethodDescriptor;
use tonic::Status;
use tonic::body::Body;
use tower::{Service, ServiceExt};

use super::messages::{self, json_to_proto, proto_to_json};
use super::{
    Codec, Settings, content_encoding, deadline, error_json, error_status, grpc_headers, refused,
};
use crate::grpc::compression::{Encoding, choose_encoding};
use crate::grpc::framing;
use crate::server::calls::request_body::stalled;
use crate::server::context::ConnectionState;

/// Answers one unary call: a POST in `codec`, or (`None`) a GET.
pub(super) async fn serve<S, B>(
    calls: S,
    request: Request<B>,
    codec: Option<Codec>,
    settings: Settings,
) -> Response<Body>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<tonic::codegen::StdError>,
{
    let path = request.uri().path().to_owned();
    let (call, grpc_request) = match translate(request, codec, settings).await {
        Ok(translated) => translated,
        Err(refusal) => {
            refused(&path, &refusal.status);
            return refusal.response();
        }
    };
    let response = calls
        .oneshot(grpc_request)
        .await
        .unwrap_or_else(|never| match never {});
    match reply(&call, response).await {
        Ok(response) => response,
        Err(status) => Refusal::from(status).response(),
    }
}

/// What the reply needs to know of its call.
struct Call {
    method: MethodDescriptor,
    codec: Codec,
    /// How the reply is compressed, if at all.
    reply_encoding: Option<Encoding>,
}

/// A call refused before it reached the call stack, with what the HTTP reply must add.
struct Refusal {
    status: Status,
    /// GET of a method that has side effects: 405, naming POST.
    post_only: bool,
}

impl From<Status> for Refusal {
    fn from(status: Status) -> Self {
        Self {
            status,
            post_only: false,
        }
    }
}

impl Refusal {
    /// A Connect error: the HTTP status the protocol gives its code, and a JSON body with the
    /// code's name and the message.
    fn response(&self) -> Response<Body> {
        let body = error_json(&self.status).to_string();
        let mut response = Response::new(Body::new(Full::new(Bytes::from(body))));
        *response.status_mut() = super::connect_code(self.status.code()).0;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if self.post_only {
            *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("POST"));
        }
        response
    }
}

/// The gRPC call a Connect request makes: what its reply needs, and the request for the stack.
async fn translate<B>(
    request: Request<B>,
    codec: Option<Codec>,
    settings: Settings,
) -> Result<(Call, Request<Body>), Refusal>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<tonic::codegen::StdError>,
{
    let path = request.uri().path().to_owned();
    let method = messages::method(&path)
        .ok_or_else(|| Status::unimplemented(format!("unknown method {path}")))?;
    let unary = !method.is_client_streaming() && !method.is_server_streaming();
    let (parts, body) = request.into_parts();
    let deadline = deadline(&parts.headers)?;
    let limit = settings.limits.max_message_bytes;
    let held;
    let (codec, encoding, sent) = match codec {
        Some(_) if !unary => {
            return Err(Status::unimplemented(format!(
                "{path} streams: call it with application/connect+json or +proto"
            ))
            .into());
        }
        Some(codec) => {
            let read = settings.limits.read(body);
            held = match deadline {
                Some(deadline) => {
                    tokio::time::timeout_at(deadline, read)
                        .await
                        .map_err(|_| {
                            Status::deadline_exceeded(
                                "the request did not arrive within its connect-timeout-ms",
                            )
                        })??
                }
                None => read.await?,
            };
            let encoding = content_encoding(parts.headers.get(CONTENT_ENCODING))?;
            (codec, encoding, held.bytes.clone())
        }
        None if !(unary && messages::free_of_side_effects(&method)) => {
            return Err(Refusal {
                status: Status::invalid_argument(format!(
                    "{path} is not marked free of side effects, so it is called with POST, \
                     not GET"
                )),
                post_only: true,
            });
        }
        None => {
            held = HeldBody::default();
            let query = GetQuery::parse(parts.uri.query().unwrap_or_default(), limit)?;
            (query.codec, query.encoding, query.message)
        }
    };
    let plain = match encoding {
        Some(encoding) => encoding.decompress(&sent, limit)?.into(),
        None => sent,
    };
    let message = match codec {
        Codec::Proto => plain,
        Codec::Json => json_to_proto(&method.input(), &plain)?,
    };
    let reply_encoding = choose_encoding(
        || parts.headers.get(ACCEPT_ENCODING),
        parts.headers.get(CONTENT_ENCODING),
        settings.reply_compression,
    );
    let mut grpc_request = Request::new(Body::new(Full::new(framing::frame_encoded(&message))));
    *grpc_request.method_mut() = Method::POST;
    *grpc_request.uri_mut() = parts.uri;
    *grpc_request.headers_mut() = grpc_headers(&parts.headers, deadline)?;
    *grpc_request.extensions_mut() = parts.extensions;
    // The body's bytes are given back here: from now on the gRPC call holds its message.
    drop(held);
    let call = Call {
        method,
        codec,
        reply_encoding,
    };
    Ok((call, grpc_request))
}

/// The Connect reply to the gRPC call's `response`: its message, or its status as an error.
async fn reply(call: &Call, response: Response<Body>) -> Result<Response<Body>, Status> {
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
    let mut replies = BytesMut::from(reply.to_bytes());
    let bytes = framing::take_message(&mut replies)
        .filter(|(prefix, _)| prefix.flag == 0 && replies.is_empty())
        .map(|(_, message)| message)
        .ok_or_else(|| Status::internal("the reply was not one uncompressed message"))?;
    let body = match call.codec {
        Codec::Proto => bytes,
        Codec::Json => proto_to_json(&call.method.output(), bytes)?,
    };
    let compressed = call
        .reply_encoding
        .and_then(|encoding| Some((encoding, encoding.compress(&body)?)));
    let mut response = match compressed {
        Some((encoding, compressed)) => {
            let mut response = Response::new(Body::new(Full::new(Bytes::from(compressed))));
            response
                .headers_mut()
                .insert(CONTENT_ENCODING, HeaderValue::from_static(encoding.name()));
            response
        }
        None => Response::new(Body::new(Full::new(body))),
    };
    let content_type = match call.codec {
        Codec::Json => "application/json",
        Codec::Proto => "application/proto",
    };
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(response)
}

/// A GET's query: `encoding=json|proto`, `message=` (percent-encoded, or URL-safe base64 with
/// `base64=1`), `compression=` and `connect=v1`, as Connect's spec has them.
struct GetQuery {
    codec: Codec,
    encoding: Option<Encoding>,
    message: Bytes,
}

impl GetQuery {
    fn parse(query: &str, limit: usize) -> Result<Self, Status> {
        let (mut codec, mut encoding, mut message, mut base64) = (None, None, None, false);
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            // A query may be as long as the request head allows (`--max-message-bytes` is
            // usually larger); the message may not, once decoded.
            let value = query_value(value);
            match key {
                "encoding" => {
                    codec = Some(match &value[..] {
                        b"json" => Codec::Json,
                        b"proto" => Codec::Proto,
                        _ => return Err(bad_query("encoding must be json or proto")),
                    })
                }
                "message" => message = Some(value),
                "base64" => base64 = value == b"1",
                "compression" => {
                    let name = HeaderValue::from_bytes(&value)
                        .map_err(|_| bad_query("compression is not a name"))?;
                    encoding = content_encoding(Some(&name))?;
                }
                "connect" if value != b"v1" => {
                    return Err(bad_query("connect must be v1, the protocol version spoken"));
                }
                _ => {}
            }
        }
        let codec =
            codec.ok_or_else(|| bad_query("a GET needs encoding=json or encoding=proto"))?;
        let message = message.ok_or_else(|| bad_query("a GET needs its message= in the query"))?;
        let message = match base64 {
            true => URL_SAFE_ANY_PADDING
                .decode(&message)
                .map_err(|error| bad_query(&format!("message is not URL-safe base64: {error}")))?,
            false => message,
        };
        if message.len() > limit {
            return Err(Status::resource_exhausted(format!(
                "request message over the {limit}-byte limit (--max-message-bytes)"
            )));
        }
        Ok(Self {
            codec,
            encoding,
            message: message.into(),
        })
    }
}

/// Base64 of the URL-safe alphabet, padded or not: Connect allows either.
const URL_SAFE_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A query value decoded: `+` is a space, `%XX` a byte.
fn query_value(value: &str) -> Vec<u8> {
    let spaced = value.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced).collect()
}

fn bad_query(why: &str) -> Status {
    Status::invalid_argument(format!("bad Connect GET query: {why}"))
}

/// What a Connect request body may take while it is read whole: `--max-message-bytes`, the
/// connection's byte budget, and `--stall-timeout` between its pieces, as a gRPC request body.
pub(in crate::server) struct BodyLimits {
    pub max_message_bytes: usize,
    pub connection: Option<Arc<ConnectionState>>,
    pub stall_timeout: Option<Duration>,
}

/// A body read whole, its bytes held in the connection's budget until dropped.
#[derive(Default)]
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
                Some(stall) => tokio::time::timeout(stall, next)
                    .await
                    .map_err(|_| stalled(stall))?,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_queries_carry_the_message_as_connect_writes_it() {
        let query = GetQuery::parse(
            "connect=v1&encoding=json&message=%7B%22text%22%3A%22a+b%22%7D",
            100,
        )
        .unwrap();
        assert_eq!(query.codec, Codec::Json);
        assert_eq!(&query.message[..], br#"{"text":"a b"}"#);
        // {"text":"hi"} in URL-safe base64, unpadded.
        let base64 =
            GetQuery::parse("encoding=json&base64=1&message=eyJ0ZXh0IjoiaGkifQ", 100).unwrap();
        assert_eq!(&base64.message[..], br#"{"text":"hi"}"#);
        for (query, words) in [
            ("message=x", "encoding"),
            ("encoding=json", "message="),
            ("encoding=xml&message=x", "json or proto"),
            ("connect=v2&encoding=json&message=x", "v1"),
            ("encoding=json&message=x&compression=br", "not spoken"),
        ] {
            let status = GetQuery::parse(query, 100).err().unwrap();
            assert!(status.message().contains(words), "{query}: {status:?}");
        }
        let over = GetQuery::parse("encoding=proto&message=0123456789", 9)
            .err()
            .unwrap();
        assert_eq!(over.code(), tonic::Code::ResourceExhausted);
    }
}
