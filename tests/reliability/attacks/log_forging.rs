//! What a client sends reaches the server's log only escaped and cut short, and a flood of bad
//! calls writes a bounded number of lines. A reflection symbol with a newline and a forged log
//! line used to show up as a line of its own; a 1 MB symbol made a 1 MB log line and a 1 MB
//! `grpc-message`; and every bad call wrote a warning, a lever to fill the disk.

use std::time::{Duration, Instant};

use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;

use formatdata_test_support::process::ServerProcess;
use formatdata_test_support::raw;

const FORGED: &str = "2026-01-01T00:00:00.000000Z  INFO formatdata::server: FORGED-LINE";

/// Longest log line any of this may produce: a line's own fields plus the bounded client text.
const MAX_LINE: usize = 2_048;

/// Asks reflection for `symbol`; the status it fails with.
async fn ask_for_symbol(channel: Channel, symbol: String) -> tonic::Status {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(symbol)),
    };
    let mut replies = ServerReflectionClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .server_reflection_info(tokio_stream::once(request))
        .await
        .expect("the call starts")
        .into_inner();
    match replies.next().await {
        Some(Err(status)) => status,
        other => panic!("no such symbol, yet: {other:?}"),
    }
}

#[test]
fn client_text_cannot_forge_log_lines_or_make_them_long() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for format in ["text", "json"] {
        let mut server = ServerProcess::start(&["--addr", "127.0.0.1:0", "--log-format", format]);
        let addr = server.addrs[0];
        let (forged, long) = runtime.block_on(async {
            let channel = Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            let forged = ask_for_symbol(channel.clone(), format!("x\n{FORGED}\r\n")).await;
            let long = ask_for_symbol(channel, "y".repeat(1_000_000)).await;
            (forged, long)
        });
        assert_eq!(forged.code(), Code::NotFound);
        assert_eq!(long.code(), Code::NotFound);
        assert!(
            long.message().len() <= 512,
            "{format}: a grpc-message of {} bytes echoes the symbol whole",
            long.message().len()
        );

        // Both failures logged, neither with the client's newline nor its megabyte.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut lines = server.log_lines();
        while lines.iter().filter(|l| l.contains("call failed")).count() < 2 {
            assert!(
                Instant::now() < deadline,
                "{format}: no call failed lines: {lines:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
            lines = server.log_lines();
        }
        for line in &lines {
            assert!(
                !line.starts_with("2026-01-01") && !line.contains("\r"),
                "{format}: a client wrote a line of the log: {line:?}"
            );
            assert!(
                line.len() <= MAX_LINE,
                "{format}: a log line of {} bytes",
                line.len()
            );
        }
        assert!(
            lines.iter().any(|line| line.contains("FORGED-LINE")),
            "{format}: the forged text is still logged, escaped, on the call's own line"
        );
    }
}

#[test]
fn a_flood_of_bad_calls_writes_a_bounded_number_of_lines_and_says_so() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);
    let addr = server.addrs[0];
    const BAD_CALLS: usize = 1_000;
    runtime.block_on(async {
        let mut client = raw::connect(addr).await;
        for _ in 0..BAD_CALLS {
            let (response, mut send) =
                raw::start_call(&mut client, "/example.FormatData/Nope", &[]);
            let _ = send.send_data(raw::frame(false, b""), true);
            let reply = raw::read_reply(response).await;
            assert_eq!(reply.code(), Code::Unimplemented);
        }
    });
    let flooded = server.log_lines();
    let failed = flooded.iter().filter(|l| l.contains("call failed")).count();
    assert!(
        (1..=40).contains(&failed),
        "{BAD_CALLS} bad calls wrote {failed} 'call failed' lines"
    );

    // The window ends: one line counts the rest.
    let deadline = Instant::now() + Duration::from_secs(25);
    let summary = loop {
        if let Some(line) = server
            .log_lines()
            .into_iter()
            .find(|line| line.contains("similar lines suppressed"))
        {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "no line counts the suppressed ones"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let counted: usize = summary
        .split_whitespace()
        .find_map(|word| word.parse().ok())
        .unwrap_or_else(|| panic!("no count in {summary:?}"));
    assert_eq!(counted + failed, BAD_CALLS, "{summary}");
}
