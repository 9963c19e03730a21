//! Floods of HTTP/2 control frames end in GOAWAY ENHANCE_YOUR_CALM. h2 answers each PING and
//! SETTINGS on its own and cheaply, but never cut a flood off: 300 MB of PINGs in 4 s went
//! through with the connection still open. A client's control frames now get a budget in
//! proportion to its calls, far above what real clients send.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::assert_serves_normally;
use formatdata_test_support::env;
use formatdata_test_support::process::ServerProcess;
use formatdata_test_support::raw;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const GOAWAY: u8 = 7;
const ENHANCE_YOUR_CALM: u32 = 0xb;

/// Frames each flood sends at the most: far past any budget, yet a few MB.
const FLOOD: usize = 200_000;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = (payload.len() as u32).to_be_bytes();
    let mut frame = vec![length[1], length[2], length[3], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// Sends `one` frame `FLOOD` times after the preface, reading what the server sends meanwhile;
/// returns the error code of its GOAWAY, if one came before the connection closed, and when.
async fn flood(addr: SocketAddr, one: &[u8]) -> (Option<u32>, Duration) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let started = Instant::now();
    let reader = tokio::spawn(async move {
        let mut received = Vec::new();
        let mut buffer = vec![0; 64 * 1024];
        while let Ok(Ok(read)) =
            tokio::time::timeout(Duration::from_secs(10), read.read(&mut buffer)).await
        {
            if read == 0 {
                break;
            }
            received.extend_from_slice(&buffer[..read]);
        }
        (goaway_code(&received), started.elapsed())
    });
    let mut opening = PREFACE.to_vec();
    opening.extend(frame(4, 0, 0, &[]));
    let _ = write.write_all(&opening).await;
    let batch: Vec<u8> = one.repeat(1_000);
    for _ in 0..FLOOD / 1_000 {
        if write.write_all(&batch).await.is_err() {
            break;
        }
    }
    reader.await.unwrap()
}

/// The error code of the first GOAWAY among `bytes`, the server's frames.
fn goaway_code(mut bytes: &[u8]) -> Option<u32> {
    while bytes.len() >= 9 {
        let length = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        let kind = bytes[3];
        let payload = bytes.get(9..9 + length)?;
        if kind == GOAWAY {
            return Some(u32::from_be_bytes(payload[4..8].try_into().ok()?));
        }
        bytes = &bytes[9 + length..];
    }
    None
}

#[tokio::test]
async fn ping_settings_and_window_update_floods_end_in_enhance_your_calm() {
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);
    let floods = [
        ("PING", frame(6, 0, 0, &[7; 8])),
        ("SETTINGS", frame(4, 0, 0, &[])),
        ("WINDOW_UPDATE", frame(8, 0, 0, &1u32.to_be_bytes())),
        ("PRIORITY", frame(2, 0, 1, &[0, 0, 0, 0, 16])),
    ];
    for (name, one) in floods {
        let (code, after) = flood(server.addrs[0], &one).await;
        eprintln!("{name} flood: GOAWAY {code:?} after {after:?}");
        assert_eq!(
            code,
            Some(ENHANCE_YOUR_CALM),
            "a {name} flood of {FLOOD} frames did not end in GOAWAY ENHANCE_YOUR_CALM"
        );
        assert!(
            after < Duration::from_secs(10),
            "{name}: cut off after {after:?}"
        );
    }
    assert_serves_normally(server.addrs[0]).await;
}

/// A client that pings a lot while it calls (every 10 ms, a hundred times grpc-js's shortest
/// sensible keepalive, and a ping with every call as BDP estimation does) keeps its connection.
#[tokio::test]
async fn pings_in_proportion_to_calls_are_left_alone() {
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);
    let tcp = TcpStream::connect(server.addrs[0]).await.unwrap();
    let (client, mut connection) = h2::client::handshake(tcp).await.unwrap();
    let mut ping_pong = connection.ping_pong().expect("taken once");
    let connection = tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let message = raw::frame(false, &raw::data_message(b"busy"));
    for _ in 0..300 {
        ping_pong.ping(h2::Ping::opaque()).await.expect("pong");
        let (response, mut send) = raw::start_call(&mut client, raw::DO_FORMAT, &[]);
        send.send_data(message.clone(), true).unwrap();
        let reply = raw::read_reply(response).await;
        assert_eq!(reply.code(), tonic::Code::Ok);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !connection.is_finished(),
        "the connection was closed: {connection:?}"
    );
}

/// grpc-js with its most eager keepalive (a ping a second, between calls too) is never cut off.
#[test]
fn grpc_js_with_a_one_second_keepalive_keeps_its_connection() {
    let Some(node) = env::node() else { return };
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);
    let output = std::process::Command::new(&node.program)
        .arg(node.dir.join("grpc_js_keepalive.mjs"))
        .args([&server.addr(), "5"])
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(report["errors"], serde_json::json!([]), "{report}");
    assert_eq!(report["ok"], 51, "{report}");
}
