//! Streams parked by the thousand must not lock other clients out. 70 connections of 256
//! `DoFormatStream` calls, each having sent one short message and then waiting (a stream's right,
//! so never "stalled"), charged 16 KiB each and spent the whole `--max-buffered-bytes`: every other
//! client's call then got RESOURCE_EXHAUSTED until the attacker left. Now a full budget sheds the
//! streams idle the longest, and a new client is served.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::SendStream;
use tokio::task::{JoinHandle, JoinSet};

use crate::serial;
use formatdata_test_support::metrics::scrape_metrics;
use formatdata_test_support::process::ServerProcess;
use formatdata_test_support::raw;

/// The attack: connections, each with the server's stream limit of parked streams, from this
/// many client addresses (each within its own share, so that only the server's budget binds).
const CONNECTIONS: usize = 70;
const STREAMS: usize = 256;
const ADDRESSES: usize = 10;

/// A new client's unary calls made while the attack holds.
const CALLS: usize = 100;

#[test]
fn a_new_client_is_served_while_parked_streams_fill_the_budget() {
    parked_streams_lock_nobody_out(ADDRESSES);
}

/// From one address, the attack fills that address's share (`--max-buffered-bytes-per-peer`):
/// the same shedding keeps even a client on that address served.
#[test]
fn a_new_client_on_the_attackers_address_is_served_too() {
    parked_streams_lock_nobody_out(1);
}

fn parked_streams_lock_nobody_out(addresses: usize) {
    let _serial = serial();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut server =
        ServerProcess::start(&["--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"]);
    let addr = server.addrs[0];
    let metrics = server.metrics_addr();
    runtime.block_on(async {
        let started = Instant::now();
        let parked = park_streams(addr, addresses).await;
        // Until the server has taken in every stream it will: each started, or refused.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut begun = 0.0;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let text = tokio::task::spawn_blocking(move || scrape_metrics(metrics))
                .await
                .unwrap();
            let now = started_streams(&text);
            if now >= (CONNECTIONS * STREAMS) as f64 || now == begun || Instant::now() > deadline {
                begun = now;
                break;
            }
            begun = now;
        }
        eprintln!(
            "{} streams parked on {CONNECTIONS} connections from {addresses} address(es), \
             {begun} begun, in {:?}",
            parked.len(),
            started.elapsed()
        );

        let mut served = 0;
        let mut failures = Vec::new();
        for call in 0..CALLS {
            // Half from an address of the attack's own, half from another.
            let source = match call % 2 {
                0 => raw::other_host(0),
                _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
            };
            match call_from(addr, source).await {
                Ok(()) => served += 1,
                Err(error) => failures.push(error),
            }
        }
        assert!(
            served >= CALLS - 1,
            "{served} of {CALLS} calls of a new client served while {} streams were parked; \
             failures: {failures:?}",
            parked.len()
        );
        drop(parked);
    });
    let text = scrape_metrics(metrics);
    let shed = text
        .lines()
        .find_map(|line| line.strip_prefix("formatdata_streams_shed_total "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no formatdata_streams_shed_total in:\n{text}"));
    assert!(shed > 0.0, "the budget was full and no stream was shed");
    let log = server.log_lines().join("\n");
    assert!(
        log.contains("ended the streams idle the longest"),
        "no log line says streams were shed"
    );
}

/// A DoFormat call on a new connection from `source`, as a new client makes it.
async fn call_from(addr: SocketAddr, source: IpAddr) -> Result<(), String> {
    let call = async {
        let mut client = raw::connect_from(addr, source).await;
        let (response, mut send) = raw::start_call(&mut client, raw::DO_FORMAT, &[]);
        send.send_data(raw::frame(false, &raw::data_message(b"still here")), true)
            .map_err(|error| error.to_string())?;
        let reply = raw::read_reply(response).await;
        match reply.code() {
            tonic::Code::Ok => Ok(()),
            code => Err(format!("{code:?}: {}", reply.message())),
        }
    };
    tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .unwrap_or_else(|_| Err("no reply within 5 s".into()))
}

/// `grpc_server_started_total` of DoFormatStream.
fn started_streams(text: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.starts_with("grpc_server_started_total") && line.contains("DoFormatStream")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Opens the attack's streams: each sends one 6-byte message and stays open. Returns what must
/// stay alive for them to stay parked.
async fn park_streams(
    addr: SocketAddr,
    addresses: usize,
) -> Vec<(JoinHandle<()>, SendStream<Bytes>)> {
    let message = raw::frame(false, &raw::data_message(b"parked"));
    let mut connections = JoinSet::new();
    for connection in 0..CONNECTIONS {
        let source = raw::other_host(connection % addresses);
        let message = message.clone();
        connections.spawn(async move {
            let mut client = raw::connect_from(addr, source).await;
            let mut streams = Vec::with_capacity(STREAMS);
            for _ in 0..STREAMS {
                let Ok(ready) = client.clone().ready().await else {
                    break;
                };
                client = ready;
                let Ok((response, mut send)) =
                    raw::try_start_call(&mut client, raw::DO_FORMAT_STREAM, &[])
                else {
                    break;
                };
                if send.send_data(message.clone(), false).is_err() {
                    break;
                }
                // Its replies are read, as a client's are: a peer with replies unread piles up
                // in its own h2, which drops the connection.
                let reading = tokio::spawn(async move {
                    let Ok(response) = response.await else {
                        return;
                    };
                    let mut body = response.into_body();
                    while let Some(Ok(data)) = body.data().await {
                        let _ = body.flow_control().release_capacity(data.len());
                    }
                });
                streams.push((reading, send));
            }
            streams
        });
    }
    let parked: Vec<_> = connections.join_all().await.into_iter().flatten().collect();
    // Let the server take in the last of them.
    tokio::time::sleep(Duration::from_secs(1)).await;
    parked
}
