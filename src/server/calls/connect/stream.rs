//! Connect's streaming calls (`application/connect+proto`, `application/connect+json`): each
//! message in an envelope, Connect's 5-byte prefix, which is gRPC's, so binary messages pass
//! through as they are; JSON ones are turned into protobuf and back, one whole message at a
//! time. The reply ends with an end-of-stream envelope carrying the status and trailers as
//! JSON, where gRPC has HTTP trailers; the HTTP status is 200 whatever the outcome.
//!
//! A bidirectional stream needs HTTP/2: over HTTP/1.1 a request body is sent whole before the
//! reply is read, so the client would wait on replies that wait on it.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Version};
use http_body::{Body as HttpBody, Frame};
use http_body_util::Full;
use prost_reflect::MessageDescriptor;
use tonic::body::Body;
use tonic::{Code, Status};
use tower::{Service, ServiceExt};

use super::messages::{self, json_to_proto, proto_to_json};
use super::{Codec, Settings, content_encoding, deadline, error_json, grpc_headers, refused};
use crate::grpc::compression::{Encoding, GRPC_ACCEPT_ENCODING, GRPC_ENCODING};
use crate::grpc::framing::{self, Admission};
use crate::grpc::status::reply_status;
use crate::server::calls::request_body::RequestBody;
use crate::server::context::ClientGone;

const CONNECT_CONTENT_ENCODING: HeaderName = HeaderName::from_static("connect-content-encoding");
const CONNECT_ACCEPT_ENCODING: HeaderName = HeaderName::from_static("connect-accept-encoding");
/// The flag of the envelope that ends a reply stream.
const END_STREAM: u8 = 0b10;

/// Answers one streaming call in `codec` through `calls`, the gRPC call stack.
pub(super) async fn serve<S, B>(
    calls: S,
    request: Request<B>,
    codec: Codec,
    settings: Settings,
) -> Response<Body>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    let path = request.uri().path().to_owned();
    let (replies, grpc_request) = match translate(request, codec, settings) {
        Ok(translated) => translated,
        Err((http_status, status)) => {
            refused(&path, &status);
            let mut response = ended(codec, end_of_stream(&status, &HeaderMap::new()));
            *response.status_mut() = http_status;
            return response;
        }
    };
    let response = calls
        .oneshot(grpc_request)
        .await
        .unwrap_or_else(|never| match never {});
    let (parts, body) = response.into_parts();
    // A trailers-only reply: the status came in the headers, and no message.
    if let Some(status) = reply_status(&parts.headers) {
        return ended(codec, end_of_stream(&status, &parts.headers));
    }
    let mut response = Response::new(Body::new(Replies {
        inner: body,
        json: replies,
        pending: BytesMut::new(),
        ended: false,
    }));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, content_type(codec));
    if let Some(encoding) = parts.headers.get(GRPC_ENCODING) {
        headers.insert(CONNECT_CONTENT_ENCODING, encoding.clone());
    }
    headers.extend(metadata(&parts.headers).map(|(name, value)| (name.clone(), value.clone())));
    response
}

/// The gRPC call a streaming Connect request makes: the reply type when replies are to be
/// turned into JSON, and the request for the call stack.
fn translate<B>(
    request: Request<B>,
    codec: Codec,
    settings: Settings,
) -> Result<(Option<MessageDescriptor>, Request<Body>), (StatusCode, Status)>
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError>,
{
    let path = request.uri().path();
    let ok = StatusCode::OK;
    let method = messages::method(path)
        .ok_or_else(|| (ok, Status::unimplemented(format!("unknown method {path}"))))?;
    if method.is_client_streaming()
        && method.is_server_streaming()
        && request.version() < Version::HTTP_2
    {
        return Err((
            StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            Status::unimplemented(format!(
                "{path} streams both ways, which needs HTTP/2; this request came over HTTP/1.1"
            )),
        ));
    }
    let (mut parts, body) = request.into_parts();
    let mut headers = deadline(&parts.headers)
        .and_then(|deadline| grpc_headers(&parts.headers, deadline))
        .map_err(|status| (ok, status))?;
    let sent_encoding = parts.headers.get(CONNECT_CONTENT_ENCODING);
    let body = match codec {
        Codec::Proto => {
            // Binary envelopes go as they came, their encodings named as gRPC names them.
            if let Some(encoding) = sent_encoding {
                headers.insert(GRPC_ENCODING, encoding.clone());
            }
            if let Some(accepted) = parts.headers.get(CONNECT_ACCEPT_ENCODING) {
                headers.insert(GRPC_ACCEPT_ENCODING, accepted.clone());
            }
            Envelopes::Proto { body }
        }
        Codec::Json => {
            let encoding = content_encoding(sent_encoding).map_err(|status| (ok, status))?;
            let limits = settings.limits;
            let gone = parts
                .extensions
                .get_or_insert_default::<ClientGone>()
                .clone();
            // Followed as a gRPC body is (framing, budget, stall), before its messages become
            // protobuf; the gRPC call then follows what they became.
            let body = RequestBody::new(
                body,
                !method.is_client_streaming(),
                None,
                limits.connection,
                gone,
                limits.stall_timeout,
                Admission {
                    limit: limits.max_message_bytes,
                    encoded: encoding.is_some(),
                },
            );
            Envelopes::Json {
                body,
                pending: BytesMut::new(),
                message: method.input(),
                encoding,
                limit: limits.max_message_bytes,
            }
        }
    };
    let mut grpc_request = Request::new(Body::new(body));
    *grpc_request.method_mut() = http::Method::POST;
    *grpc_request.uri_mut() = parts.uri;
    *grpc_request.headers_mut() = headers;
    *grpc_request.extensions_mut() = parts.extensions;
    let replies = (codec == Codec::Json).then(|| method.output());
    Ok((replies, grpc_request))
}

fn content_type(codec: Codec) -> HeaderValue {
    HeaderValue::from_static(match codec {
        Codec::Json => "application/connect+json",
        Codec::Proto => "application/connect+proto",
    })
}

/// A reply of nothing but its end-of-stream envelope.
fn ended(codec: Codec, end: Bytes) -> Response<Body> {
    let mut response = Response::new(Body::new(Full::new(end)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, content_type(codec));
    response
}

/// The end-of-stream envelope: the status, unless OK, as Connect's error object, and the
/// trailers as metadata.
fn end_of_stream(status: &Status, trailers: &HeaderMap) -> Bytes {
    let mut end = serde_json::Map::new();
    if status.code() != Code::Ok {
        end.insert("error".into(), error_json(status));
    }
    let mut metadata = serde_json::Map::new();
    for (name, value) in self::metadata(trailers) {
        let values = metadata
            .entry(name.as_str())
            .or_insert_with(|| serde_json::Value::Array(Vec::new()));
        if let serde_json::Value::Array(values) = values {
            values.push(String::from_utf8_lossy(value.as_bytes()).into());
        }
    }
    if !metadata.is_empty() {
        end.insert("metadata".into(), metadata.into());
    }
    framing::frame_flagged(
        END_STREAM,
        serde_json::Value::Object(end).to_string().as_bytes(),
    )
}

/// The application's own headers or trailers: those neither gRPC's nor HTTP's.
fn metadata(headers: &HeaderMap) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
    headers.iter().filter(|(name, _)| {
        !name.as_str().starts_with("grpc-") && *name != CONTENT_TYPE && *name != http::header::TE
    })
}

pin_project_lite::pin_project! {
    /// A streaming call's request body, as the gRPC call takes it: binary envelopes as they
    /// came, JSON ones each turned into a protobuf message once whole.
    #[project = EnvelopesProjection]
    enum Envelopes<B> {
        Proto { #[pin] body: B },
        Json {
            #[pin]
            body: RequestBody<B>,
            // The envelope in progress.
            pending: BytesMut,
            message: MessageDescriptor,
            encoding: Option<Encoding>,
            limit: usize,
        },
    }
}

impl<B> HttpBody for Envelopes<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<tonic::codegen::StdError>,
{
    type Data = Bytes;
    type Error = tonic::codegen::StdError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project() {
            EnvelopesProjection::Proto { body } => body.poll_frame(cx).map_err(Into::into),
            EnvelopesProjection::Json {
                mut body,
                pending,
                message,
                encoding,
                limit,
            } => loop {
                if let Some(next) = json_request(pending, message, *encoding, *limit) {
                    return Poll::Ready(Some(next.map(Frame::data).map_err(Into::into)));
                }
                match ready!(body.as_mut().poll_frame(cx)) {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            pending.extend_from_slice(&data);
                        }
                    }
                    Some(Err(status)) => return Poll::Ready(Some(Err(status.into()))),
                    // The followed body refuses one that ends inside a message.
                    None => return Poll::Ready(None),
                }
            },
        }
    }
}

/// The next whole JSON message in `pending` as a gRPC message of protobuf, if one is whole.
/// Its prefix was admitted by the followed body (flag, length within the limit).
fn json_request(
    pending: &mut BytesMut,
    message: &MessageDescriptor,
    encoding: Option<Encoding>,
    limit: usize,
) -> Option<Result<Bytes, Status>> {
    let (prefix, payload) = framing::take_message(pending)?;
    let json = match (prefix.flag, encoding) {
        (0, _) => Ok(payload),
        (_, Some(encoding)) => encoding.decompress(&payload, limit).map(Bytes::from),
        (_, None) => Err(Status::internal("a compressed message with no encoding")),
    };
    Some(
        json.and_then(|json| {
            json_to_proto(message, &json).map(|proto| framing::frame_encoded(&proto))
        }),
    )
}

pin_project_lite::pin_project! {
    /// The gRPC call's reply body as Connect's: messages in envelopes (turned into JSON for a
    /// JSON call), then the end-of-stream envelope made of its trailers.
    struct Replies {
        #[pin]
        inner: Body,
        // The reply type, when replies are turned into JSON.
        json: Option<MessageDescriptor>,
        // The reply message in progress, for JSON.
        pending: BytesMut,
        ended: bool,
    }
}

impl HttpBody for Replies {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let mut this = self.project();
        if *this.ended {
            return Poll::Ready(None);
        }
        let end = |status: &Status, trailers: &HeaderMap| {
            Poll::Ready(Some(Ok(Frame::data(end_of_stream(status, trailers)))))
        };
        loop {
            if let Some(json) = this.json.as_ref()
                && let Some(reply) = json_reply(this.pending, json)
            {
                match reply {
                    Ok(reply) => return Poll::Ready(Some(Ok(Frame::data(reply)))),
                    Err(status) => {
                        *this.ended = true;
                        return end(&status, &HeaderMap::new());
                    }
                }
            }
            let frame = match ready!(this.inner.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(status)) => {
                    *this.ended = true;
                    return end(&status, &HeaderMap::new());
                }
                None => {
                    *this.ended = true;
                    let status = Status::internal("the reply ended without a status");
                    return end(&status, &HeaderMap::new());
                }
            };
            match frame.into_data() {
                Ok(data) if this.json.is_none() => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(data) => this.pending.extend_from_slice(&data),
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        *this.ended = true;
                        let status = reply_status(&trailers).unwrap_or_else(|| {
                            Status::internal("the reply ended without a status")
                        });
                        return end(&status, &trailers);
                    }
                }
            }
        }
    }
}

/// The next whole reply message in `pending`, in a JSON envelope, if one is whole.
fn json_reply(
    pending: &mut BytesMut,
    message: &MessageDescriptor,
) -> Option<Result<Bytes, Status>> {
    let (prefix, reply) = framing::take_message(pending)?;
    if prefix.flag != 0 {
        return Some(Err(Status::internal("a JSON call's reply came compressed")));
    }
    Some(proto_to_json(message, reply).map(|json| framing::frame_encoded(&json)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::framing::{PREFIX_LEN, Prefix};

    #[test]
    fn the_end_of_stream_carries_the_error_and_the_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("8"));
        trailers.append("x-seen", HeaderValue::from_static("a"));
        trailers.append("x-seen", HeaderValue::from_static("b"));
        let end = end_of_stream(&Status::resource_exhausted("too much"), &trailers);
        assert_eq!(end[0], END_STREAM);
        assert_eq!(end.len(), PREFIX_LEN + Prefix::read(&end).unwrap().length);
        let json: serde_json::Value = serde_json::from_slice(&end[PREFIX_LEN..]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "error": { "code": "resource_exhausted", "message": "too much" },
                "metadata": { "x-seen": ["a", "b"] },
            })
        );
        let ok = end_of_stream(&Status::ok(""), &HeaderMap::new());
        assert_eq!(&ok[PREFIX_LEN..], b"{}");
    }
}
