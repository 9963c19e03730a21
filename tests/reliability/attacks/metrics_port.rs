//! The metrics endpoint (`--metrics-addr`) under a slowloris: it gets the main port's head timeout
//! and keeps at most 32 connections, closing the oldest for a new one. Its HTTP/1.1 server had no
//! timer (a partial head stayed open 45 s and more); then, with a plain cap, 40 peers sending half
//! a head made every scrape time out for as long as they stayed.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::serial;
use formatdata_test_support::process::ServerProcess;
use formatdata_test_support::raw::closed_within;

const PARTIAL_HEAD: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n";

/// Connections the endpoint keeps at once; one more closes the oldest.
const MAX_CONNECTIONS: usize = 32;

/// Peers of the slowloris, each with half a request head: more than the cap.
const STALLED: usize = 40;

/// Scrapes made while they hold on, one after another.
const SCRAPES: usize = 10;

fn metrics_server() -> ServerProcess {
    ServerProcess::start(&["--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"])
}

#[tokio::test]
async fn a_partial_head_to_the_metrics_port_is_closed_within_the_default_stall_timeout() {
    // The default --stall-timeout, 20 s, is the point here.
    let mut server = metrics_server();
    let mut peer = TcpStream::connect(server.metrics_addr()).await.unwrap();
    peer.write_all(PARTIAL_HEAD).await.unwrap();

    let limit = Duration::from_secs(30);
    let closed = closed_within(&mut peer, limit).await;

    assert!(
        closed.is_some(),
        "a partial head to the metrics port was still open after {limit:?}"
    );
    eprintln!("metrics port: partial head closed after {closed:?}");
}

#[test]
fn scrapes_are_answered_while_peers_hold_the_metrics_port_with_half_heads() {
    // Alone: the point is how quickly a scrape is answered.
    let _serial = serial();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut server = metrics_server();
    let addr = server.metrics_addr();
    runtime.block_on(async {
        // More half-open heads than the port keeps: the slowloris that blinded every scrape.
        let mut stalled = Vec::new();
        for _ in 0..STALLED {
            let mut peer = TcpStream::connect(addr).await.unwrap();
            peer.write_all(PARTIAL_HEAD).await.unwrap();
            stalled.push(peer);
        }
        for scrape in 0..SCRAPES {
            let limit = Duration::from_secs(1);
            let answered = tokio::time::timeout(limit, async {
                let mut peer = TcpStream::connect(addr).await.unwrap();
                peer.write_all(
                    b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                )
                .await
                .unwrap();
                let mut response = Vec::new();
                let _ = peer.read_to_end(&mut response).await;
                String::from_utf8_lossy(&response).into_owned()
            })
            .await
            .unwrap_or_else(|_| panic!("scrape {scrape} not answered within {limit:?}"));
            assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
            assert!(answered.contains("process_resident_memory_bytes"));
        }
        // The port kept at most its cap: the oldest stalled peers were closed to make room.
        let mut closed = 0;
        for peer in &mut stalled {
            if closed_within(peer, Duration::from_millis(50))
                .await
                .is_some()
            {
                closed += 1;
            }
        }
        assert!(
            closed >= STALLED - MAX_CONNECTIONS,
            "{closed} of {STALLED} stalled peers closed: the port holds more than \
             {MAX_CONNECTIONS}"
        );
    });
}
