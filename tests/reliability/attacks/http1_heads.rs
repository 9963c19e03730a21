//! HTTP/1.1 request heads are held to 16 KiB, as HTTP/2's are: a longer one gets 431, and a peer
//! that sends most of one and stops costs the server about that much until the stall timeout.
//! hyper's default buffer accepted heads of 400 KB: 1,000 connections each holding an unfinished
//! 390 KB head took the server to 412 MiB.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

use super::assert_serves_normally;
use crate::serial;
use formatdata_test_support::process::ServerProcess;
use formatdata_test_support::raw;

/// A request head with `filler` bytes of one header, unfinished (no blank line after it).
fn unfinished_head(filler: usize) -> Vec<u8> {
    let mut head = b"POST /example.FormatData/DoFormat HTTP/1.1\r\nHost: localhost\r\n\
        Content-Type: application/grpc-web+proto\r\nX-Filler: "
        .to_vec();
    head.resize(head.len() + filler, b'a');
    head
}

#[tokio::test]
async fn a_request_head_over_16_kib_is_refused_with_431() {
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);
    for filler in [20_000, 100_000, 300_000] {
        let mut head = unfinished_head(filler);
        head.extend_from_slice(b"\r\n\r\n");
        let (response, closed) =
            raw::http1_exchange(server.addrs[0], &head, Duration::from_secs(5)).await;
        let response = String::from_utf8_lossy(&response);
        assert!(
            response.starts_with("HTTP/1.1 431"),
            "a head of {filler} bytes: {response:?}"
        );
        assert!(closed, "the connection stays open after a 431");
    }
    assert_serves_normally(server.addrs[0]).await;
}

/// Connections of the memory test: the server's default cap on this machine's descriptor limit
/// (10,000 where the hard limit allows), or fewer where this test process has fewer descriptors.
fn connections() -> usize {
    let (soft, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("the open-file limit");
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard);
    let available = hard.max(soft).saturating_sub(1_000) as usize;
    available.min(10_000)
}

/// Bytes of each unfinished head: just under the limit.
const HELD_HEAD: usize = 15 * 1024;

/// What one held connection may cost the server, head included.
const MAX_KIB_PER_CONNECTION: u64 = 40;

#[test]
fn unfinished_heads_at_the_default_connection_cap_cost_a_bounded_amount_each() {
    let _serial = serial();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let connections = connections();
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);
    let addr = server.addrs[0];
    let idle = server.rss_kib();
    let head = unfinished_head(HELD_HEAD);
    runtime.block_on(async {
        let mut held = Vec::with_capacity(connections);
        for i in 0..connections {
            // Spread over source addresses, as an attacker with a few hosts would.
            let source = raw::other_host(i % 200);
            let socket = TcpSocket::new_v4().unwrap();
            socket.bind((source, 0).into()).unwrap();
            let Ok(mut stream): Result<TcpStream, _> = socket.connect(addr).await else {
                break;
            };
            if stream.write_all(&head).await.is_err() {
                break;
            }
            held.push(stream);
        }
        // Let the server read what was sent.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let peak = server.peak_rss_kib();
        let per_connection = peak.saturating_sub(idle) / held.len().max(1) as u64;
        eprintln!(
            "{} connections holding {HELD_HEAD}-byte unfinished heads: server RSS idle {idle} \
             KiB, peak {peak} KiB, {per_connection} KiB a connection",
            held.len()
        );
        assert!(
            held.len() >= connections / 2,
            "only {} of {connections} connections could be made",
            held.len()
        );
        assert!(
            per_connection <= MAX_KIB_PER_CONNECTION,
            "{per_connection} KiB a connection holding an unfinished head"
        );
        drop(held);
    });
    runtime.block_on(assert_serves_normally(addr));
}
