//! Raw calls: HTTP/2 gRPC with the h2 crate, and HTTP/1.1 over a plain socket. Exact bytes and
//! headers, no generated stub, so tests can send what a well-behaved client never would.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use h2::SendStream;
use h2::client::{ResponseFuture, SendRequest};
use http::HeaderMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tonic::Code;

/// The `:authority` of raw calls: a loopback name, because a server listening on loopback only
/// refuses requests that name any other host (a page whose own name was pointed at 127.0.0.1,
/// "DNS rebinding", must not reach it).
pub const AUTHORITY: &str = "localhost";

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

    /// Asserts that the call ended with `code`, and a message that says `words` (in any case;
    /// "" for any message).
    #[track_caller]
    pub fn assert_status(&self, code: Code, words: &str) {
        let message = self.message();
        assert_eq!(self.code(), code, "status message: {message:?}");
        assert!(
            message.to_lowercase().contains(&words.to_lowercase()),
            "{code:?}'s message {message:?} does not say {words:?}"
        );
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
    connect_with_task(addr).await.0
}

/// [`connect`], with the task that drives the connection: it ends when the connection does (its
/// error says why: a GOAWAY's reason, say), and aborting it drops the socket mid-call, as a
/// client that vanishes would.
pub async fn connect_with_task(
    addr: SocketAddr,
) -> (SendRequest<Bytes>, JoinHandle<Result<(), h2::Error>>) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    // As real clients do: with Nagle's algorithm, a body that waits on flow control stalls
    // 40 ms (the peer's delayed ACK) at every window.
    tcp.set_nodelay(true).expect("TCP_NODELAY");
    let (client, connection) = h2::client::handshake(tcp).await.expect("HTTP/2 handshake");
    let task = tokio::spawn(connection);
    (client.ready().await.expect("connection ready"), task)
}

/// [`connect`] from the loopback address `source` (127.0.0.2, 127.0.0.3, ...): to the server, a
/// client on another host.
pub async fn connect_from(addr: SocketAddr, source: std::net::IpAddr) -> SendRequest<Bytes> {
    connect_from_with_task(addr, source).await.0
}

/// [`connect_from`], with the task that drives the connection.
pub async fn connect_from_with_task(
    addr: SocketAddr,
    source: std::net::IpAddr,
) -> (SendRequest<Bytes>, JoinHandle<Result<(), h2::Error>>) {
    let socket = match source {
        std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .expect("a socket");
    socket
        .bind((source, 0).into())
        .expect("bind the source address");
    let tcp = socket.connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("TCP_NODELAY");
    // Room for a short reply on each of hundreds of streams before they are read: h2's default
    // budget for small frames would drop the connection, as no gRPC client does.
    let (client, connection) = h2::client::Builder::new()
        .data_frame_budget(4 * 1024 * 1024)
        .handshake(tcp)
        .await
        .expect("HTTP/2 handshake");
    let task = tokio::spawn(connection);
    (client.ready().await.expect("connection ready"), task)
}

/// The `n`th of the loopback addresses tests use as other hosts: 127.0.0.2, 127.0.0.3, ...
pub fn other_host(n: usize) -> std::net::IpAddr {
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2 + (n % 250) as u8))
}

/// An HTTP/2 connection whose client never reads a reply's body: every stream's flow-control
/// window is 0, so the server must keep each reply it makes until the connection closes.
pub async fn connect_not_reading(addr: SocketAddr) -> SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("TCP_NODELAY");
    let (client, connection) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake(tcp)
        .await
        .expect("HTTP/2 handshake");
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
    try_start_call_at(client, AUTHORITY, path, headers)
}

/// [`try_start_call`] naming `authority` as the host called.
pub fn try_start_call_at(
    client: &mut SendRequest<Bytes>,
    authority: &str,
    path: &str,
    headers: &[(&'static str, &str)],
) -> Result<(ResponseFuture, SendStream<Bytes>), h2::Error> {
    let mut request = http::Request::post(format!("http://{authority}{path}"))
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
    read_rest(response.await.expect("reply headers")).await
}

/// The rest of a reply whose headers have come (and whose body may have been read in part).
pub async fn read_rest(response: http::Response<h2::RecvStream>) -> RawReply {
    let (parts, mut body) = response.into_parts();
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

/// Sends `body` in DATA frames of at most `frame_len` bytes, no faster than the server's flow
/// control allows (h2 would otherwise queue the whole body in memory and cut it into frames of its
/// own size); does not end the stream. Fails, saying why, once the stream can take no more (the
/// server answered or reset it).
pub async fn send_in_frames(
    send: &mut SendStream<Bytes>,
    mut body: Bytes,
    frame_len: usize,
) -> Result<(), String> {
    while !body.is_empty() {
        send.reserve_capacity(body.len());
        let mut granted = match std::future::poll_fn(|cx| send.poll_capacity(cx)).await {
            Some(Ok(granted)) => granted.min(body.len()),
            Some(Err(error)) => return Err(error.to_string()),
            None => return Err("the stream was closed".into()),
        };
        while granted > 0 {
            let piece = body.split_to(granted.min(frame_len));
            granted -= piece.len();
            send.send_data(piece, false)
                .map_err(|error| error.to_string())?;
        }
    }
    Ok(())
}

/// Writes `request` (head and body, as they go on the wire) on a new connection, then reads until
/// the server closes it or `limit` passes. Returns what came back, and whether it was closed.
pub async fn http1_exchange(addr: SocketAddr, request: &[u8], limit: Duration) -> (Vec<u8>, bool) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut response = Vec::new();
    let exchange = async {
        // A server that answers before reading everything may close its end first: what it
        // sent is still there to read.
        let _ = stream.write_all(request).await;
        // A reset connection ends the exchange as surely as a close.
        let _ = stream.read_to_end(&mut response).await;
    };
    let closed = tokio::time::timeout(limit, exchange).await.is_ok();
    (response, closed)
}

/// One HTTP/1.1 request on a new connection; everything the server sent back, as text.
pub async fn http1(addr: SocketAddr, request: &str, body: &[u8]) -> String {
    let wire = [request.as_bytes(), body].concat();
    let (response, _) = http1_exchange(addr, &wire, Duration::from_secs(5)).await;
    // An HTTP/2 server's frames, say: whatever came, the caller looks at it.
    String::from_utf8_lossy(&response).into_owned()
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

/// How long `stream` stays open, reading and dropping whatever the server sends; `None` if it is
/// still open after `limit`. A reset counts as closed.
pub async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let opened = Instant::now();
    let mut buffer = [0; 4096];
    let closed = async { while stream.read(&mut buffer).await.is_ok_and(|read| read > 0) {} };
    tokio::time::timeout(limit, closed)
        .await
        .ok()
        .map(|()| opened.elapsed())
}
