//! HTTP/2 connection limits: concurrent streams per connection, and keepalive pings that drop
//! peers which stopped answering.

use std::time::{Duration, Instant};

use formatdata::server::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use formatdata_test_support::app::{spawn_app, spawn_app_with};
use formatdata_test_support::raw;

#[tokio::test]
async fn the_stream_limit_is_announced_to_clients() {
    let app = spawn_app_with(ServerConfig {
        max_concurrent_streams: 7,
        ..ServerConfig::default()
    })
    .await;

    let mut client = raw::connect(app.addr).await;
    // A whole call guarantees the server's SETTINGS frame has been read.
    let (response, mut send) = raw::start_call(&mut client, raw::DO_FORMAT, &[]);
    send.send_data(raw::frame(false, &raw::data_message(b"x")), true)
        .unwrap();
    assert_eq!(raw::read_reply(response).await.code(), tonic::Code::Ok);

    assert_eq!(client.current_max_send_streams(), 7);
}

#[tokio::test]
async fn a_peer_that_stops_answering_pings_is_dropped() {
    let app = spawn_app_with(ServerConfig {
        keepalive: Some(Duration::from_secs(1)),
        ..ServerConfig::default()
    })
    .await;
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    // The HTTP/2 preface and an empty SETTINGS frame; after that this peer reads but never
    // answers, as a peer behind a dead network path would.
    silent
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();

    let started = Instant::now();
    let mut buffer = [0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while silent.read(&mut buffer).await.is_ok_and(|read| read > 0) {}
    })
    .await;

    assert!(closed.is_ok(), "the server kept a silent peer for 10 s");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_client_cancelling_calls_by_the_thousand_is_cut_off() {
    let app = spawn_app().await;
    let mut client = raw::connect(app.addr).await;
    // A stream held open throughout, as an abuser would to keep its connection once drained.
    let (held, _keep_open) = raw::start_call(&mut client, raw::DO_FORMAT_STREAM, &[]);
    let mut held = held.await.expect("reply headers").into_body();

    // Each call is accepted (its reply headers arrive), then cancelled: a pace h2's own
    // rapid-reset check, which counts resets of streams not yet accepted, never sees.
    let mut cancelled = 0;
    while let Ok(ready) = client.clone().ready().await {
        client = ready;
        let Ok((response, mut send)) = raw::try_start_call(&mut client, raw::DO_FORMAT_STREAM, &[])
        else {
            break;
        };
        if response.await.is_err() {
            break;
        }
        send.send_reset(h2::Reason::CANCEL);
        cancelled += 1;
        // 1,000 counted, and then some: on a busy machine a call may outlive the 10 ms that
        // make its cancellation count.
        assert!(
            cancelled <= 10_000,
            "still served after {cancelled} cancelled calls"
        );
    }

    assert!(
        cancelled > 1_000,
        "cut off after only {cancelled} cancelled calls"
    );
    // Drained, then closed a second later: holding a stream does not keep the connection.
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = held.data().await {}
    })
    .await;
    assert!(closed.is_ok(), "the held stream outlived the drain by 5 s");
    // Everyone else is served as before.
    let mut fresh = app.client().await;
    let reply = fresh
        .do_format(formatdata::pb::Data { text: "ok".into() })
        .await;
    assert_eq!(reply.unwrap().into_inner().text, "OK");
}
