//! Item 6: the metrics endpoint (`--metrics-addr`) gets the main port's head timeout and a cap on
//! connections. Its HTTP/1.1 server had no timer: a partial request head stayed open 45 s and
//! more, and nothing bounded how many such peers it held.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::serial;
use formatdata_test_support::metrics::scrape_metrics;
use formatdata_test_support::process::ServerProcess;
use formatdata_test_support::raw::closed_within;

const PARTIAL_HEAD: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n";

/// Connections the endpoint serves at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 32;

/// Peers beyond the cap, each with a whole scrape request.
const EXTRA: usize = 8;

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
fn the_metrics_port_holds_at_most_32_connections_at_once() {
    // Alone: that nobody is answered for a while means something only on a machine that would
    // answer at once.
    let _serial = serial();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut server = metrics_server();
    let addr = server.metrics_addr();
    runtime.block_on(async {
        let mut stalled = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            let mut peer = TcpStream::connect(addr).await.unwrap();
            peer.write_all(PARTIAL_HEAD).await.unwrap();
            stalled.push(peer);
        }
        // The kernel hands connections to accept() in the order they came: the stalled first.
        let mut extra = JoinSet::new();
        for _ in 0..EXTRA {
            extra.spawn(async move {
                let mut peer = TcpStream::connect(addr).await.unwrap();
                peer.write_all(
                    b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
                )
                .await
                .unwrap();
                let mut response = Vec::new();
                let _ = peer.read_to_end(&mut response).await;
                String::from_utf8_lossy(&response).into_owned()
            });
        }

        // While the stalled peers hold every slot, nobody else is served.
        let held = Duration::from_secs(2);
        let early = tokio::time::timeout(held, extra.join_next()).await;
        assert!(
            early.is_err(),
            "a scrape was answered while {MAX_CONNECTIONS} stalled peers held the metrics port: \
             {early:?}"
        );
        // Once they go, the waiting scrapes are answered.
        drop(stalled);
        let limit = Duration::from_secs(5);
        let answered = tokio::time::timeout(limit, extra.join_all())
            .await
            .unwrap_or_else(|_| panic!("the waiting scrapes were not answered within {limit:?}"));
        for response in &answered {
            assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        }
        let text = tokio::task::spawn_blocking(move || scrape_metrics(addr))
            .await
            .unwrap();
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
    });
}
