//! The raw HTTP/2 floor for bench/compare.sh: answers a unary gRPC call with the least work a
//! server can do on the `h2` crate, so formatdata can be measured against HTTP/2's own cost.
//! It is no gRPC server: it checks neither path nor headers nor framing, and it uppercases only
//! ASCII. Usage: floor-h2 [ADDR] (default 127.0.0.1:50051).
//!
//! With `FLOOR_PRINT_HEADERS=1` it also prints each request's headers as one JSON object per line
//! on stdout: `bench/capture-headers.sh` points real gRPC clients at it to learn what they send.

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http::{HeaderMap, HeaderValue, Request, Response};
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

// One thread: the benchmark pins the server to one CPU, as it does the others.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:50051".into());
    let listener = TcpListener::bind(&addr).await?;
    println!("h2 floor listening on {addr}");
    let print_headers = std::env::var_os("FLOOR_PRINT_HEADERS").is_some();
    loop {
        let (socket, _) = listener.accept().await?;
        // Replies are small single writes; Nagle would hold each back for the peer's ACK.
        socket.set_nodelay(true)?;
        tokio::spawn(async move {
            if let Err(error) = serve(socket, print_headers).await {
                eprintln!("connection: {error}");
            }
        });
    }
}

async fn serve(socket: TcpStream, print_headers: bool) -> Result<(), h2::Error> {
    // h2's default settings, but for the stream limit, which is formatdata's.
    let handshake = h2::server::Builder::new()
        .max_concurrent_streams(256)
        .handshake(socket)
        .await;
    // A peer that leaves before speaking HTTP/2 is no error here: compare.sh's port probe does.
    let Ok(mut connection) = handshake else {
        return Ok(());
    };
    while let Some(stream) = connection.accept().await {
        let (request, respond) = stream?;
        if print_headers {
            print_request_headers(&request);
        }
        // A task per stream, as hyper and formatdata do: the connection task keeps driving
        // frames while calls wait on their bodies.
        tokio::spawn(async move {
            if let Err(error) = answer(request, respond).await {
                eprintln!("stream: {error}");
            }
        });
    }
    Ok(())
}

/// One JSON object: the path and every header, in the order sent.
fn print_request_headers<B>(request: &Request<B>) {
    let quote = |text: &str| format!("{text:?}");
    let headers: Vec<String> = request
        .headers()
        .iter()
        .map(|(name, value)| {
            let value = String::from_utf8_lossy(value.as_bytes());
            format!("[{}, {}]", quote(name.as_str()), quote(&value))
        })
        .collect();
    println!(
        "{{\"path\": {}, \"headers\": [{}]}}",
        quote(request.uri().path()),
        headers.join(", ")
    );
}

async fn answer(
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) -> Result<(), h2::Error> {
    let mut body = request.into_body();
    let mut frame = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        // Without this the peer's window never reopens and larger bodies stall.
        body.flow_control().release_capacity(chunk.len())?;
        frame.extend_from_slice(&chunk);
    }
    // The body is one gRPC frame: a 5-byte prefix (flag 0, 4-byte length) and then Data{text}
    // (tag 0x0a, length, text). Every byte of the prefix, the tag and the lengths is below b'a'
    // (97) while the message is under 97 bytes, as the benchmark's is, so uppercasing the whole
    // frame changes only the text; with a longer message a length byte could be changed.
    frame.make_ascii_uppercase();

    let head = Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(())
        .expect("static response head");
    let mut send = respond.send_response(head, false)?;
    send.send_data(Bytes::from(frame), false)?;
    let mut trailers = HeaderMap::with_capacity(1);
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    send.send_trailers(trailers)
}
