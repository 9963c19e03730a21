//! Slow and hostile peers: connections that say nothing, that stall after the HTTP/2 preface,
//! and that reset streams as fast as they open them (the "rapid reset" attack). The server must
//! drop them within its limits and keep serving everyone else at normal latency.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::{bench_report, serial, start_bench};
use formatdata_test_support::process::ServerProcess;
use formatdata_test_support::raw;

/// Peers of each slow kind.
const SLOW_PEERS: usize = 50;

/// Streams one connection opened and reset before the server dropped it, and why it ended.
struct Flood {
    streams: usize,
    error: String,
}

/// How long `stream` stays open, reading whatever the server sends and never answering.
async fn time_to_close(mut stream: TcpStream) -> Duration {
    let opened = Instant::now();
    let mut buffer = [0; 1024];
    while stream.read(&mut buffer).await.is_ok_and(|read| read > 0) {}
    opened.elapsed()
}

/// Opens streams and resets each at once, on one connection, until the server hangs up.
async fn rapid_reset(addr: SocketAddr) -> Flood {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(connection);
    let mut client = Some(client);
    let mut streams = 0;
    while let Some(ready) = client.take() {
        let mut ready = match ready.ready().await {
            Ok(ready) => ready,
            Err(_) => break,
        };
        let request = http::Request::post(format!("http://{}{}", raw::AUTHORITY, raw::DO_FORMAT))
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
        let Ok((_, mut send)) = ready.send_request(request, false) else {
            break;
        };
        send.send_reset(h2::Reason::CANCEL);
        streams += 1;
        client = Some(ready);
        if streams % 32 == 0 {
            // Let the connection task write the frames out.
            tokio::task::yield_now().await;
        }
    }
    let error = match tokio::time::timeout(Duration::from_secs(5), connection).await {
        Ok(Ok(Err(error))) => error.to_string(),
        other => format!("{other:?}"),
    };
    Flood { streams, error }
}

/// p50 latency in microseconds of a short bench of well-behaved calls.
fn p50_latency_us(addr: &str) -> u64 {
    let report = bench_report(start_bench(&[
        "--addr",
        addr,
        "--requests",
        "4000",
        "--concurrency",
        "4",
    ]));
    report["latency_us"]["p50"].as_u64().unwrap()
}

#[test]
fn slow_and_hostile_peers_are_dropped_while_others_are_served_normally() {
    let _serial = serial();
    let mut server = ServerProcess::start(&[
        "--addr",
        "127.0.0.1:0",
        "--keepalive-secs",
        "1",
        "--handshake-timeout",
        "1",
    ]);
    let addr = server.addrs[0];
    let quiet_p50 = p50_latency_us(&server.addr());

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let attacking = Arc::new(AtomicBool::new(true));
    let mut silent = JoinSet::new();
    let mut stalled = JoinSet::new();
    for _ in 0..SLOW_PEERS {
        silent.spawn_on(
            async move { time_to_close(TcpStream::connect(addr).await.unwrap()).await },
            runtime.handle(),
        );
        stalled.spawn_on(
            async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                stream
                    .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
                    .await
                    .unwrap();
                time_to_close(stream).await
            },
            runtime.handle(),
        );
    }
    let flooder = runtime.spawn({
        let attacking = attacking.clone();
        async move {
            let mut floods = Vec::new();
            while attacking.load(Ordering::Relaxed) {
                floods.push(rapid_reset(addr).await);
            }
            floods
        }
    });

    let attacked_p50 = p50_latency_us(&server.addr());
    attacking.store(false, Ordering::Relaxed);
    let floods = runtime.block_on(flooder).unwrap();
    let silent = runtime.block_on(silent.join_all());
    let stalled = runtime.block_on(stalled.join_all());

    eprintln!(
        "p50 quiet {quiet_p50} us, under attack {attacked_p50} us; {} flood connections, \
         streams each up to {:?}; silent peers closed after {:?}..{:?}, stalled after {:?}..{:?}",
        floods.len(),
        floods.iter().map(|flood| flood.streams).max(),
        silent.iter().min(),
        silent.iter().max(),
        stalled.iter().min(),
        stalled.iter().max(),
    );
    // Normal latency: a busy machine (the attackers share its two cores) may slow calls a
    // little, a server stalled by the attack would slow them by orders of magnitude.
    assert!(
        attacked_p50 <= quiet_p50 * 5 + 5_000,
        "p50 went from {quiet_p50} us to {attacked_p50} us under attack"
    );
    // Within its limits: --handshake-timeout 1 for silent peers, a 1 s ping unanswered for 1 s
    // for stalled ones, and for the flood h2's check of reset streams not yet accepted or our
    // budget of cancelled calls.
    for closed in &silent {
        assert!(
            (Duration::from_millis(900)..Duration::from_secs(3)).contains(closed),
            "a silent peer was closed after {closed:?}"
        );
    }
    for closed in &stalled {
        assert!(
            *closed < Duration::from_secs(5),
            "a stalled peer lasted {closed:?}"
        );
    }
    assert!(!floods.is_empty());
    for flood in &floods {
        // h2's GOAWAY ENHANCE_YOUR_CALM after a few hundred, or our budget of 1,000 cancelled
        // calls. The flooder counts what it sent, and it runs ahead of the server by what the
        // socket buffers hold, thousands of tiny frames when the server is descheduled: the
        // bound is loose, the point is that every flooding connection is cut off.
        assert!(
            flood.streams <= 20_000,
            "{} streams before the drop ({})",
            flood.streams,
            flood.error
        );
    }
    server.signal(nix::sys::signal::Signal::SIGTERM);
    server.wait_for_exit(Duration::from_secs(10));
    let log = server.log_lines().join("\n");
    for reason in ["sent no request", "keepalive ping unanswered"] {
        assert!(log.contains(reason), "no log line says {reason:?}:\n{log}");
    }
    assert!(
        log.contains("ENHANCE_YOUR_CALM") || log.contains("rapid-reset"),
        "no log line about the flood:\n{log}"
    );
}
