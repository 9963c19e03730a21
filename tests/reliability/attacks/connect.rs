//! The Connect protocol where it differs from gRPC: a unary body comes unenveloped (its length
//! known only at its end), a GET carries its message in the query string, JSON nests, and a
//! stream's JSON envelopes are held whole before they become protobuf. Each is bounded: by the
//! request head's limit, `--max-message-bytes`, serde_json's nesting limit, the connection's
//! budget and `--stall-timeout`.

use std::time::{Duration, Instant};

use super::assert_serves_normally;
use formatdata_test_support::process::ServerProcess;
use formatdata_test_support::raw;

/// A Connect envelope: flags, big-endian length, payload.
fn envelope(payload: &[u8]) -> Vec<u8> {
    let mut envelope = vec![0];
    envelope.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    envelope.extend_from_slice(payload);
    envelope
}

/// An HTTP/1.1 POST of `body` as `content_type` to `path`, `length` announced; the server
/// closes the connection once it has answered.
fn post(path: &str, content_type: &str, length: usize, body: &[u8]) -> Vec<u8> {
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\
         content-type: {content_type}\r\ncontent-length: {length}\r\n\r\n"
    );
    [head.as_bytes(), body].concat()
}

#[tokio::test]
async fn a_get_query_of_any_size_is_bounded_by_the_head_limit_then_the_message_limit() {
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0", "--max-message-bytes", "1000"]);
    let addr = server.addrs[0];
    let get = |query_bytes: usize| {
        let message = "a".repeat(query_bytes);
        format!(
            "GET /example.FormatData/DoFormat?encoding=json&message={message} HTTP/1.1\r\n\
             host: localhost\r\n\r\n"
        )
    };
    for size in [100_000, 4_000_000] {
        let started = Instant::now();
        let (reply, closed) =
            raw::http1_exchange(addr, get(size).as_bytes(), Duration::from_secs(5)).await;
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("HTTP/1.1 431"), "{size}: {reply:.200}");
        assert!(closed && started.elapsed() < Duration::from_secs(2));
    }
    // Within the head's limit but over the message's: refused once decoded.
    let reply = raw::http1(addr, &get(10_000), b"").await;
    assert!(reply.starts_with("HTTP/1.1 429"), "{reply:.300}");
    assert!(reply.contains("1000-byte limit"), "{reply:.300}");
    assert_serves_normally(addr).await;
}

#[tokio::test]
async fn json_nested_without_end_is_refused_at_once() {
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);
    let addr = server.addrs[0];
    let cpu_before = server.cpu_time();
    let deep = |open: &str| format!(r#"{{"text":"a","x":{}"#, open.repeat(500_000));
    for open in ["[", "{\"a\":"] {
        let body = deep(open);
        let started = Instant::now();
        let reply = raw::http1(
            addr,
            &String::from_utf8_lossy(&post(raw::DO_FORMAT, "application/json", body.len(), b"")),
            body.as_bytes(),
        )
        .await;
        assert!(reply.starts_with("HTTP/1.1 400"), "{open}: {reply:.300}");
        assert!(started.elapsed() < Duration::from_secs(2), "{open}");
        // The same inside a stream's envelope.
        let stream = envelope(body.as_bytes());
        let reply = raw::http1(
            addr,
            &String::from_utf8_lossy(&post(
                "/grpc.health.v1.Health/Watch",
                "application/connect+json",
                stream.len(),
                b"",
            )),
            &stream,
        )
        .await;
        assert!(reply.contains("invalid_argument"), "{open}: {reply:.300}");
    }
    let cpu = server.cpu_time() - cpu_before;
    assert!(
        cpu < Duration::from_secs(2),
        "{cpu:?} of CPU for four bad bodies"
    );
    assert_serves_normally(addr).await;
}

#[tokio::test]
async fn a_stream_envelope_that_stalls_or_lies_about_its_length_is_ended() {
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0", "--stall-timeout", "1"]);
    let addr = server.addrs[0];
    let watch = "/grpc.health.v1.Health/Watch";
    // Half an envelope, then nothing: DEADLINE_EXCEEDED at the stall timeout.
    let half = &envelope(b"{\"service\":\"\"}")[..8];
    let started = Instant::now();
    let (reply, _) = raw::http1_exchange(
        addr,
        &post(watch, "application/connect+json", 100, half),
        Duration::from_secs(5),
    )
    .await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(
        reply.contains("deadline_exceeded") && reply.contains("--stall-timeout"),
        "{reply}"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    // An envelope claiming 100 MB: refused on its prefix, with nothing more read.
    let mut liar = vec![0];
    liar.extend_from_slice(&100_000_000u32.to_be_bytes());
    for content_type in ["application/connect+json", "application/connect+proto"] {
        let started = Instant::now();
        let (reply, _) = raw::http1_exchange(
            addr,
            &post(watch, content_type, 100_000_005, &liar),
            Duration::from_secs(5),
        )
        .await;
        let reply = String::from_utf8_lossy(&reply);
        assert!(
            reply.contains("resource_exhausted"),
            "{content_type}: {reply}"
        );
        assert!(started.elapsed() < Duration::from_secs(1), "{content_type}");
    }
    assert_serves_normally(addr).await;
}
