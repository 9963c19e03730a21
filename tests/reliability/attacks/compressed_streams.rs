//! Streams of compressed requests are charged what decompressing them holds. A 4 KB gzip message
//! that inflates to 4 MB leaves tonic's decoder a 4 MB buffer for as long as the stream lives,
//! while the bytes that came were 4 KB: 16 such streams on one connection each held megabytes the
//! budget never saw.

use std::io::Write;
use std::time::Duration;

use tonic::Code;

use super::assert_serves_normally;
use crate::serial;
use formatdata::server::ServerConfig;
use formatdata_test_support::process::ServerProcess;
use formatdata_test_support::raw;

/// Streams on one connection, each with one message that inflates to [`INFLATED`] bytes.
const STREAMS: usize = 16;
const INFLATED: usize = 3_000_000;

/// What the server may hold beyond the connection's budget.
const FIXED_KIB: u64 = 32 * 1024;

#[test]
fn a_stream_of_compressed_messages_is_charged_what_inflating_them_holds() {
    let _serial = serial();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);
    let idle = server.rss_kib();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(&raw::data_message(&vec![b'a'; INFLATED]))
        .unwrap();
    let message = raw::frame(true, &encoder.finish().unwrap());

    let codes = runtime.block_on(async {
        let mut client = raw::connect(server.addrs[0]).await;
        let mut streams = Vec::new();
        for _ in 0..STREAMS {
            let (response, mut send) = raw::start_call(
                &mut client,
                raw::DO_FORMAT_STREAM,
                &[("grpc-encoding", "gzip")],
            );
            send.send_data(message.clone(), false).unwrap();
            streams.push((response, send));
        }
        let mut codes = Vec::new();
        for (response, send) in streams {
            // A stream the budget refused ends with its status; a served one replies and waits.
            let response = response.await.expect("reply headers");
            let mut body = response.into_body();
            while let Ok(Some(Ok(data))) =
                tokio::time::timeout(Duration::from_millis(500), body.data()).await
            {
                let _ = body.flow_control().release_capacity(data.len());
            }
            let trailers = tokio::time::timeout(Duration::from_millis(500), body.trailers()).await;
            let code = trailers
                .ok()
                .and_then(Result::ok)
                .flatten()
                .and_then(|trailers| trailers.get("grpc-status").cloned())
                .map(|value| Code::from_bytes(value.as_bytes()));
            codes.push((code, send, body));
        }
        codes
    });
    let peak = server.peak_rss_kib();
    let budget = (ServerConfig::DEFAULT.max_buffered_bytes_per_connection / 1024) as u64;
    let refused = codes
        .iter()
        .filter(|(code, ..)| *code == Some(Code::ResourceExhausted))
        .count();
    eprintln!(
        "{STREAMS} streams of one gzip message inflating to {INFLATED} bytes: {refused} refused; \
         server RSS idle {idle} KiB, peak {peak} KiB"
    );
    assert!(
        refused > 0,
        "{STREAMS} streams each holding megabytes, none refused"
    );
    assert!(
        peak <= idle + budget + FIXED_KIB,
        "server VmHWM {peak} KiB, idle {idle} KiB: over the connection's {budget} KiB budget"
    );
    drop(codes);
    runtime.block_on(assert_serves_normally(server.addrs[0]));
}
