//! Replies a client asks for and never reads: with its HTTP/2 window at 0, every reply waits in
//! the server for as long as the connection lives. Each must be held in the budgets at what it
//! really costs, compressed or not, and whatever the service's encoder keeps with it. When the
//! budget saw only the compressed bytes, one connection of 176 gzip calls with 4 MB replies took
//! the server from 7 MiB to 1.4 GiB.

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinSet;
use tonic::Code;

use super::assert_serves_normally;
use crate::serial;
use formatdata::server::ServerConfig;
use formatdata_test_support::process::ServerProcess;
use formatdata_test_support::raw;

/// Connections of the attack, each with [`CALLS`] calls.
const CONNECTIONS: usize = 2;
const CALLS: usize = 48;

/// Letters of each request's text: random, so that the reply (the same length, uppercased)
/// compresses to about half and the compressed reply is large too.
const TEXT_LEN: usize = 1_000_000;

/// What the server may hold beyond the budgets: its HTTP/2 buffers, allocator slack, and the
/// call being worked on.
const FIXED_KIB: u64 = 32 * 1024;

#[test]
fn compressed_replies_nobody_reads_are_held_within_the_budgets() {
    let _serial = serial();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for encoding in ["gzip", "zstd"] {
        let server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);
        let idle = server.rss_kib();
        let body = compressed_request(encoding);
        let headers: Vec<(&'static str, &str)> = vec![
            ("grpc-encoding", encoding),
            ("grpc-accept-encoding", encoding),
        ];

        let refused = runtime.block_on(async {
            let mut answered = JoinSet::new();
            let mut connections = Vec::new();
            for _ in 0..CONNECTIONS {
                let mut client = raw::connect_not_reading(server.addrs[0]).await;
                for _ in 0..CALLS {
                    let (response, mut send) =
                        raw::start_call(&mut client, raw::DO_FORMAT, &headers);
                    send.send_data(body.clone(), true)
                        .expect("send the request");
                    answered.spawn(async move {
                        let response = response.await.expect("reply headers");
                        // A refused call's status comes as trailers (no window needed); a held
                        // reply's never does.
                        let mut body = response.into_body();
                        let trailers =
                            tokio::time::timeout(Duration::from_secs(2), body.trailers()).await;
                        let status = trailers.ok().and_then(Result::ok).flatten().and_then(|t| {
                            t.get("grpc-status").map(|v| Code::from_bytes(v.as_bytes()))
                        });
                        (status, body)
                    });
                }
                connections.push(client);
            }
            let Ok(outcomes) =
                tokio::time::timeout(Duration::from_secs(120), answered.join_all()).await
            else {
                panic!("the server did not answer every call's headers within 120 s");
            };
            let refused = outcomes
                .iter()
                .filter(|(status, _)| *status == Some(Code::ResourceExhausted))
                .count();
            let others: Vec<_> = outcomes
                .iter()
                .filter_map(|(status, _)| *status)
                .filter(|code| *code != Code::ResourceExhausted)
                .collect();
            assert!(
                others.is_empty(),
                "{encoding}: unexpected statuses {others:?}"
            );
            drop(outcomes);
            drop(connections);
            refused
        });
        let peak = server.peak_rss_kib();
        let budgets =
            (CONNECTIONS * ServerConfig::DEFAULT.max_buffered_bytes_per_connection / 1024) as u64;
        eprintln!(
            "{encoding}: {CONNECTIONS} x {CALLS} unread replies of {TEXT_LEN} bytes: {refused} \
             refused; server RSS idle {idle} KiB, peak {peak} KiB (budgets {budgets} KiB)"
        );
        assert!(
            peak <= idle + budgets + FIXED_KIB,
            "{encoding}: server VmHWM {peak} KiB, idle {idle} KiB: more than the {budgets} KiB \
             the budgets allow, plus {FIXED_KIB} KiB"
        );
        assert!(
            refused > 0,
            "{encoding}: {} MB of replies waiting and none refused",
            CONNECTIONS * CALLS
        );
        runtime.block_on(assert_serves_normally(server.addrs[0]));
    }
}

/// One DoFormat request of [`TEXT_LEN`] random lowercase letters, compressed with `encoding` and
/// framed.
fn compressed_request(encoding: &str) -> Bytes {
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let text: Vec<u8> = (0..TEXT_LEN)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            b'a' + (seed % 16) as u8
        })
        .collect();
    let message = raw::data_message(&text);
    let compressed = match encoding {
        "gzip" => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(&message).unwrap();
            encoder.finish().unwrap()
        }
        _ => zstd::encode_all(&message[..], 0).unwrap(),
    };
    raw::frame(true, &compressed)
}
