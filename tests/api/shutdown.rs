//! Graceful shutdown: calls already accepted finish, the grace period bounds the wait, and a
//! second signal ends the process at once.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use formatdata::server::ServerConfig;
use h2::SendStream;
use h2::client::ResponseFuture;

use nix::sys::signal::Signal;
use tonic::Code;

use formatdata_test_support::app::{spawn_app, spawn_app_with};
use formatdata_test_support::process::ServerProcess;
use formatdata_test_support::raw::{self, DO_FORMAT, data_message, frame};

#[tokio::test]
async fn a_call_in_progress_when_shutdown_begins_still_gets_its_reply() {
    let app = spawn_app().await;
    let addr = app.addr;
    let mut client = raw::connect(addr).await;
    let body = frame(false, &data_message(b"in flight"));
    let (response, mut send) = raw::start_call(&mut client, DO_FORMAT, &[]);
    send.send_data(body.slice(..6), false).unwrap();

    let stopping = tokio::spawn(app.shutdown());
    // Shutdown has begun once the listener is closed.
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still accepting connections");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    send.send_data(body.slice(6..), true).unwrap();
    let reply = raw::read_reply(response).await;

    reply.assert_status(Code::Ok, "");
    assert_eq!(&reply.body[5..], data_message(b"IN FLIGHT").as_slice());
    stopping.await.unwrap().expect("clean shutdown");
}

#[tokio::test]
async fn calls_still_running_after_the_grace_period_are_cancelled() {
    let app = spawn_app_with(ServerConfig {
        shutdown_grace: Duration::from_millis(300),
        ..ServerConfig::default()
    })
    .await;
    let (response, _send) = unfinished_call(app.addr).await;

    let started = Instant::now();
    app.shutdown().await.expect("shutdown still succeeds");

    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    let outcome = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .unwrap();
    assert!(
        outcome.is_err(),
        "the unfinished call was not cut off: {outcome:?}"
    );
}

// Multi-threaded: waiting for the process blocks a thread, and the HTTP/2 client must keep
// answering the server (its GOAWAY ping) meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn the_binary_exits_zero_after_the_grace_period_and_logs_the_cancellation() {
    let mut server = ServerProcess::start(&["--addr", "127.0.0.1:0", "--shutdown-grace", "0.5"]);
    let _call = unfinished_call(server.addrs[0]).await;

    let started = Instant::now();
    server.signal(Signal::SIGTERM);
    let status = server.wait_for_exit(Duration::from_secs(10));

    assert_eq!(status.code(), Some(0));
    assert!(started.elapsed() >= Duration::from_millis(500));
    let log = server.log_lines();
    assert!(
        log.iter().any(|line| line.contains("grace period over")),
        "{log:#?}"
    );
}

// Multi-threaded: waiting for the process blocks a thread, and the HTTP/2 client must keep
// answering the server (its GOAWAY ping) meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_signal_exits_at_once() {
    let mut server = ServerProcess::start(&["--addr", "127.0.0.1:0", "--shutdown-grace", "60"]);
    let _call = unfinished_call(server.addrs[0]).await;

    server.signal(Signal::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    server.signal(Signal::SIGINT);
    let status = server.wait_for_exit(Duration::from_secs(10));

    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        status.code(),
        Some(128 + 2),
        "exit status after the second signal (SIGINT)"
    );
}

// Multi-threaded: waiting for the process blocks a thread, and the HTTP/2 client must keep
// answering the server (its GOAWAY ping) meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn the_binary_exits_zero_on_ctrl_c_and_sigterm_when_idle() {
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        let mut server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);
        let app_check = raw::call(
            server.addrs[0],
            DO_FORMAT,
            &[],
            frame(false, &data_message(b"x")),
        )
        .await;
        assert_eq!(app_check.code(), Code::Ok);

        server.signal(signal);

        assert_eq!(
            server.wait_for_exit(Duration::from_secs(10)).code(),
            Some(0),
            "{signal}"
        );
    }
}

#[tokio::test]
async fn shutdown_of_an_idle_server_is_immediate() {
    let app = spawn_app().await;
    let started = Instant::now();
    app.shutdown().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
}

/// A call whose request message never completes, so only shutdown can end it. Returns once the
/// server has received its first bytes; keep both halves alive for as long as it should run.
async fn unfinished_call(addr: SocketAddr) -> (ResponseFuture, SendStream<Bytes>) {
    let mut client = raw::connect(addr).await;
    let (response, mut send) = raw::start_call(&mut client, DO_FORMAT, &[]);
    send.send_data(frame(false, b"never finished").slice(..3), false)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    (response, send)
}

#[tokio::test]
async fn connected_clients_get_a_goaway() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = spawn_app().await;
    let mut peer = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    // HTTP/2 preface and an empty SETTINGS frame, then frame by frame, by hand.
    peer.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let stopping = tokio::spawn(app.shutdown());

    let mut goaway = false;
    let mut header = [0u8; 9];
    // Until the server closes the connection, which it does once its GOAWAY is answered.
    while peer.read_exact(&mut header).await.is_ok() {
        let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
        let mut payload = vec![0u8; length];
        if peer.read_exact(&mut payload).await.is_err() {
            break;
        }
        match (header[3], header[4]) {
            (0x7, _) => goaway = true,
            // Answer the server's PING, as any client would.
            (0x6, 0) => {
                let mut ack = vec![0, 0, 8, 0x6, 0x1, 0, 0, 0, 0];
                ack.extend_from_slice(&payload);
                let _ = peer.write_all(&ack).await;
            }
            _ => {}
        }
    }

    assert!(goaway, "the connection ended without a GOAWAY frame");
    stopping.await.unwrap().unwrap();
}
