//! Raw HTTP/2 gRPC calls with the h2 crate: exact bytes and headers, no generated stub, so tests
//! can send what a well-behaved client never would.

use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};
use h2::SendStream;
use h2::client::{ResponseFuture, SendRequest};
use http::HeaderMap;
use tokio::net::TcpStream;
use tonic::Code;

/// What came back: HTTP status, headers, body bytes and trailers.
#[derive(Debug)]
pub struct RawReply {
    pub http_status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl RawReply {
    /// grpc-status, from the trailers or (trailers-only reply) the headers.
    pub fn code(&self) -> Code {
        let value = self
            .trailers
            .as_ref()
            .and_then(|trailers| trailers.get("grpc-status"))
            .or_else(|| self.headers.get("grpc-status"))
            .expect("reply has a grpc-status");
        Code::from_bytes(value.as_bytes())
    }

    /// grpc-message, percent-decoded.
    pub fn message(&self) -> String {
        let value = self
            .trailers
            .as_ref()
            .and_then(|trailers| trailers.get("grpc-message"))
            .or_else(|| self.headers.get("grpc-message"));
        value
            .map(|value| {
                percent_encoding::percent_decode(value.as_bytes())
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .unwrap_or_default()
    }
}

/// An HTTP/2 connection (prior knowledge, no TLS) to `addr`.
pub async fn connect(addr: SocketAddr) -> SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    tokio::spawn(connection);
    client.ready().await.expect("connection ready")
}

/// Sends the request headers of a gRPC call to `path`; `headers` override the defaults
/// (`content-type: application/grpc`, `te: trailers`). The body is for the caller to send.
pub fn start_call(
    client: &mut SendRequest<Bytes>,
    path: &str,
    headers: &[(&'static str, &str)],
) -> (ResponseFuture, SendStream<Bytes>) {
    try_start_call(client, path, headers).expect("send request")
}

/// [`start_call`], failing when the connection takes no new streams (after a GOAWAY, say).
pub fn try_start_call(
    client: &mut SendRequest<Bytes>,
    path: &str,
    headers: &[(&'static str, &str)],
) -> Result<(ResponseFuture, SendStream<Bytes>), h2::Error> {
    let mut request = http::Request::post(format!("http://localhost{path}"))
        .body(())
        .unwrap();
    let defaults = [("content-type", "application/grpc"), ("te", "trailers")];
    for (name, value) in defaults.iter().chain(headers) {
        request
            .headers_mut()
            .insert(*name, value.parse().expect("header value"));
    }
    client.send_request(request, false)
}

/// Waits for the whole reply: headers, body and trailers.
pub async fn read_reply(response: ResponseFuture) -> RawReply {
    let (parts, mut body) = response.await.expect("reply headers").into_parts();
    let mut data = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("reply body");
        let _ = body.flow_control().release_capacity(chunk.len());
        data.put(chunk);
    }
    let trailers = body.trailers().await.expect("reply trailers");
    RawReply {
        http_status: parts.status.as_u16(),
        headers: parts.headers,
        body: data.freeze(),
        trailers,
    }
}

/// One whole call on a new connection: headers, then `body` with end of stream.
pub async fn call(
    addr: SocketAddr,
    path: &str,
    headers: &[(&'static str, &str)],
    body: Bytes,
) -> RawReply {
    let mut client = connect(addr).await;
    let (response, mut send) = start_call(&mut client, path, headers);
    send.send_data(body, true).expect("send body");
    read_reply(response).await
}

/// A gRPC length-prefixed message: compression flag, big-endian length, bytes.
pub fn frame(compressed: bool, message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(u8::from(compressed));
    framed.put_u32(message.len() as u32);
    framed.put_slice(message);
    framed.freeze()
}

/// `example.Data { text }` encoded by hand (field 1, length-delimited), any bytes allowed.
pub fn data_message(text: &[u8]) -> Vec<u8> {
    let mut message = vec![0x0a];
    let mut length = text.len();
    while length >= 0x80 {
        message.push((length as u8 & 0x7f) | 0x80);
        length >>= 7;
    }
    message.push(length as u8);
    message.extend_from_slice(text);
    message
}

pub const DO_FORMAT: &str = "/example.FormatData/DoFormat";

pub const DO_FORMAT_STREAM: &str = "/example.FormatData/DoFormatStream";
