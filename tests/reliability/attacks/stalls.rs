//! A peer that stops sending must not hold the server's sockets, tasks and buffers for
//! ever. An HTTP/1.1 request whose body never came was still open after 80 s, and 200 HTTP/2
//! streams with headers and no body, on a connection that answered pings, were never dropped.
//! Now a request that stalls in the middle of a message for `--stall-timeout` ends with
//! DEADLINE_EXCEEDED, a connection where no call makes progress for `--idle-timeout` is closed,
//! and an HTTP/1.1 head must be complete within `--stall-timeout`.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tonic::Code;

use super::{MAX_RSS_KIB, assert_serves_normally};
use formatdata_test_support::process::ServerProcess;
use formatdata_test_support::raw;
use formatdata_test_support::raw::closed_within;

/// `--stall-timeout` and `--idle-timeout` where their defaults are not the point: short, so the
/// tests are, and apart, so the two are told apart.
const STALL: (&str, &str) = ("FORMATDATA_STALL_TIMEOUT", "2");
const STALL_TIMEOUT: Duration = Duration::from_secs(2);
const IDLE: (&str, &str) = ("FORMATDATA_IDLE_TIMEOUT", "3");
const IDLE_TIMEOUT: Duration = Duration::from_secs(3);

/// What a busy machine may add to a timeout before the server acts on it (these tests run beside
/// the heavy ones, which keep both cores busy).
const SLACK: Duration = Duration::from_secs(5);

/// A DoFormat request head over HTTP/1.1, cut off before its end.
const PARTIAL_HEAD: &[u8] = b"POST /example.FormatData/DoFormat HTTP/1.1\r\nHost: localhost\r\n";

#[tokio::test]
async fn an_http1_head_that_never_completes_is_closed_within_the_default_stall_timeout() {
    // The default --stall-timeout, 20 s, is the point here.
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);
    let mut peer = TcpStream::connect(server.addrs[0]).await.unwrap();
    peer.write_all(PARTIAL_HEAD).await.unwrap();

    let limit = Duration::from_secs(30);
    let closed = closed_within(&mut peer, limit).await;

    assert!(
        closed.is_some(),
        "an HTTP/1.1 head left unfinished was still open after {limit:?}"
    );
    eprintln!("unfinished head closed after {closed:?}");
    assert_serves_normally(server.addrs[0]).await;
}

#[tokio::test]
async fn an_http1_body_that_never_comes_ends_the_call_and_the_connection() {
    let server = ServerProcess::start_with_env(&["--addr", "127.0.0.1:0"], &[STALL]);
    let mut peer = TcpStream::connect(server.addrs[0]).await.unwrap();
    // gRPC-Web (on by default on loopback) is what reaches a call over HTTP/1.1.
    peer.write_all(
        b"POST /example.FormatData/DoFormat HTTP/1.1\r\nHost: localhost\r\n\
          Content-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\nContent-Length: 100\r\n\r\n",
    )
    .await
    .unwrap();

    let limit = STALL_TIMEOUT + SLACK;
    let closed = closed_within(&mut peer, limit).await;

    let Some(closed) = closed else {
        panic!("a request whose 100-byte body never came was still open after {limit:?}");
    };
    assert!(
        closed >= STALL_TIMEOUT / 2,
        "closed after {closed:?}: a slow client gets --stall-timeout"
    );
    assert_serves_normally(server.addrs[0]).await;
}

/// Streams of the stalled-bodies attack, on one connection (the stream limit is 256).
const BODILESS_STREAMS: usize = 200;

#[tokio::test]
async fn http2_streams_without_a_body_end_deadline_exceeded_and_then_the_idle_connection_closes() {
    let server = ServerProcess::start_with_env(
        // Pings every second, which h2 answers: an answered ping is no progress of any call.
        &["--addr", "127.0.0.1:0", "--keepalive-secs", "1"],
        &[STALL, IDLE],
    );
    let (mut client, connection) = raw::connect_with_task(server.addrs[0]).await;
    let started = Instant::now();
    let mut replies = JoinSet::new();
    let mut bodies = Vec::new();
    for _ in 0..BODILESS_STREAMS {
        client = client.ready().await.expect("the connection takes streams");
        let (response, send) = raw::start_call(&mut client, raw::DO_FORMAT, &[]);
        // Held open, never written: the request body neither comes nor ends.
        bodies.push(send);
        replies.spawn(async move { (raw::read_reply(response).await, started.elapsed()) });
    }

    let limit = STALL_TIMEOUT + SLACK;
    let replies = tokio::time::timeout(limit, replies.join_all()).await;
    let Ok(replies) = replies else {
        panic!("{BODILESS_STREAMS} streams without a body were not all answered within {limit:?}");
    };
    for (reply, at) in &replies {
        reply.assert_status(Code::DeadlineExceeded, "stalled");
        assert!(*at >= STALL_TIMEOUT / 2, "answered after {at:?}");
    }

    let limit = IDLE_TIMEOUT + SLACK;
    let closed = tokio::time::timeout(limit, connection).await;
    assert!(
        closed.is_ok(),
        "the connection was still open {limit:?} after its calls ended ({:?} in all)",
        started.elapsed()
    );
    // And not before: its calls were slow, and that alone must not cost a client its connection.
    assert!(
        started.elapsed() >= IDLE_TIMEOUT,
        "closed {:?} after the streams were opened: --idle-timeout is {IDLE_TIMEOUT:?}",
        started.elapsed()
    );
    let peak = server.peak_rss_kib();
    assert!(peak <= MAX_RSS_KIB, "server VmHWM {peak} KiB");
    drop(bodies);
    assert_serves_normally(server.addrs[0]).await;
}

#[tokio::test]
async fn a_stream_stalled_inside_a_message_ends_and_one_idle_between_messages_does_not() {
    let server = ServerProcess::start_with_env(&["--addr", "127.0.0.1:0"], &[STALL]);
    let addr = server.addrs[0];
    let message = raw::frame(false, &raw::data_message(b"next"));
    let reply_len = message.len();

    // Half a message after a whole one, then nothing: DEADLINE_EXCEEDED after --stall-timeout.
    let inside = async {
        let mut client = raw::connect(addr).await;
        let (response, mut send) = raw::start_call(&mut client, raw::DO_FORMAT_STREAM, &[]);
        send.send_data(message.clone(), false).unwrap();
        let mut response = response.await.expect("reply headers");
        read_bytes(response.body_mut(), reply_len).await;
        send.send_data(message.slice(..reply_len / 2), false)
            .unwrap();
        let stalled = Instant::now();
        let limit = STALL_TIMEOUT + SLACK;
        let Ok(reply) = tokio::time::timeout(limit, raw::read_rest(response)).await else {
            panic!("a stream stalled inside a message was still open after {limit:?}");
        };
        reply.assert_status(Code::DeadlineExceeded, "stalled");
        assert!(
            stalled.elapsed() >= STALL_TIMEOUT / 2,
            "ended {:?} after it stalled",
            stalled.elapsed()
        );
        drop(send);
    };

    // Quiet between whole messages for twice --stall-timeout: a stream waiting on its client,
    // not a stalled message; it goes on as if nothing happened.
    let between = async {
        let mut client = raw::connect(addr).await;
        let (response, mut send) = raw::start_call(&mut client, raw::DO_FORMAT_STREAM, &[]);
        send.send_data(message.clone(), false).unwrap();
        let mut response = response.await.expect("reply headers");
        read_bytes(response.body_mut(), reply_len).await;
        tokio::time::sleep(STALL_TIMEOUT * 2).await;
        send.send_data(message.clone(), true)
            .expect("the stream is still open");
        let rest = tokio::time::timeout(SLACK, raw::read_rest(response))
            .await
            .expect("the reply to the second message and the end of the call");
        rest.assert_status(Code::Ok, "");
        assert_eq!(
            rest.body.len(),
            reply_len,
            "the reply to the second message"
        );
    };

    tokio::join!(inside, between);
    assert_serves_normally(addr).await;
}

/// Reads `len` bytes of a reply body, releasing their flow-control window.
async fn read_bytes(body: &mut h2::RecvStream, len: usize) {
    let mut read = 0;
    while read < len {
        let data = tokio::time::timeout(SLACK, body.data())
            .await
            .expect("a reply")
            .expect("more of the reply")
            .expect("reply data");
        let _ = body.flow_control().release_capacity(data.len());
        read += data.len();
    }
}
