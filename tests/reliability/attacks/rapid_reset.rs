//! Calls a client resets or abandons are CANCELLED, and a flood of them ends the
//! connection. A reset that reached a handler waiting for the body looked like a body error or its
//! end, so the call counted as finished (tonic's path: INVALID_ARGUMENT "Missing request message",
//! a vanished client: UNKNOWN), and the budget of cancelled calls, which counts only cancelled
//! ones, never fired: 3,000 streams each reset 2 ms after its headers drew no GOAWAY.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::{BEARER, GRPC_WEB, Headers, TOKEN, assert_serves_normally};
use crate::serial;
use formatdata_test_support::metrics::scrape_metrics;
use formatdata_test_support::process::ServerProcess;
use formatdata_test_support::raw;

/// Streams the flood opens, one after another, at most.
const FLOOD_STREAMS: usize = 3000;

/// How long each stream of the flood lives before its reset: long enough for the server to have
/// accepted it and started the call (so h2's own check of streams reset before they are accepted
/// never sees it), well within the 10 ms that make a cancelled call count as rapid.
const RESET_AFTER: Duration = Duration::from_millis(2);

/// Calls the server lets one connection cancel within 10 s before it cuts it off, and the streams
/// the flooder may have opened by the time the server acts (some are in flight; on a loaded
/// machine a call may outlive the 10 ms that make its cancellation count).
const CANCEL_BUDGET: usize = 1000;
const FLOOD_CUT_OFF_BY: usize = 1500;

/// Opens DoFormat streams on one connection, each reset [`RESET_AFTER`] after its headers, until
/// the server refuses more or [`FLOOD_STREAMS`] are done. Returns the streams opened and every
/// error h2 reported: opening a stream, and the connection's own end.
async fn flood(addr: SocketAddr) -> (usize, Vec<h2::Error>) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut client, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(connection);
    let mut errors = Vec::new();
    let mut streams = 0;
    while streams < FLOOD_STREAMS {
        client = match client.clone().ready().await {
            Ok(client) => client,
            Err(error) => {
                errors.push(error);
                break;
            }
        };
        let (_response, mut send) = match raw::try_start_call(&mut client, raw::DO_FORMAT, &[]) {
            Ok(call) => call,
            Err(error) => {
                errors.push(error);
                break;
            }
        };
        streams += 1;
        tokio::time::sleep(RESET_AFTER).await;
        send.send_reset(h2::Reason::CANCEL);
    }
    drop(client);
    match tokio::time::timeout(Duration::from_secs(5), connection).await {
        Ok(Ok(Err(error))) => errors.push(error),
        Ok(Ok(Ok(()))) => {}
        Ok(Err(panicked)) => panic!("the connection task failed: {panicked}"),
        Err(_) => panic!("the connection was still open 5 s after {streams} streams"),
    }
    (streams, errors)
}

#[test]
fn a_flood_of_streams_reset_after_2_ms_ends_in_goaway_enhance_your_calm() {
    let _serial = serial();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);
    let addr = server.addrs[0];

    let started = Instant::now();
    let (streams, errors) = runtime.block_on(flood(addr));
    eprintln!(
        "flood: {streams} streams in {:?}, errors: {errors:?}",
        started.elapsed()
    );

    let calm = errors
        .iter()
        .any(|error| error.is_go_away() && error.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM));
    assert!(
        calm,
        "{streams} streams opened and reset without a GOAWAY ENHANCE_YOUR_CALM; h2 reported \
         {errors:?}"
    );
    assert!(
        (CANCEL_BUDGET..=FLOOD_CUT_OFF_BY).contains(&streams),
        "cut off after {streams} streams: the budget is {CANCEL_BUDGET} cancelled calls"
    );
    runtime.block_on(assert_serves_normally(addr));
    let log = server.log_lines().join("\n");
    assert!(log.contains("rapid-reset"), "no log line says why:\n{log}");
}

/// How a call is abandoned half-way through its request message.
#[derive(Debug, Clone, Copy)]
enum Abandon {
    /// RST_STREAM CANCEL on its stream; the connection stays.
    Reset,
    /// The client's socket closes, as when its process dies.
    Disconnect,
}

/// DoFormat calls that reached an end, by `grpc_code`, from the `/metrics` endpoint at `metrics`.
fn handled_do_format(metrics: SocketAddr) -> BTreeMap<String, f64> {
    let text = scrape_metrics(metrics);
    let labels =
        r#"",grpc_method="DoFormat",grpc_service="example.FormatData",grpc_type="unary"} "#;
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(r#"grpc_server_handled_total{grpc_code=""#)?;
            let (code, count) = rest.split_once(labels)?;
            Some((code.to_owned(), count.parse().ok()?))
        })
        .collect()
}

/// What each code gained from `before` to `after`.
fn gained(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> Vec<(String, f64)> {
    after
        .iter()
        .map(|(code, count)| (code.clone(), count - before.get(code).unwrap_or(&0.0)))
        .filter(|(_, gain)| *gain > 0.0)
        .collect()
}

/// Starts a DoFormat with `headers`, sends half its message, then abandons it as `how` says.
async fn abandon_mid_body(addr: SocketAddr, headers: &[(&'static str, &str)], how: Abandon) {
    let message = raw::frame(false, &raw::data_message(&[b'x'; 1000]));
    let (mut client, connection) = raw::connect_with_task(addr).await;
    let (_response, mut send) = raw::start_call(&mut client, raw::DO_FORMAT, headers);
    send.send_data(message.slice(..message.len() / 2), false)
        .expect("send half the message");
    // The server has started the call and waits for the rest of its message.
    tokio::time::sleep(Duration::from_millis(200)).await;
    match how {
        Abandon::Reset => {
            send.send_reset(h2::Reason::CANCEL);
            // Let the connection write the reset out before it goes.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Dropping the connection's task drops its socket.
        Abandon::Disconnect => connection.abort(),
    }
}

#[test]
fn calls_reset_or_abandoned_mid_body_are_cancelled_on_every_path() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let flags = ["--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0"];
    // The fast path (and gRPC-Web, on by default on loopback), and tonic's path.
    let mut servers = [
        ServerProcess::start(&flags),
        ServerProcess::start_with_env(&flags, &[("FORMATDATA_AUTH_TOKEN", TOKEN)]),
    ];
    let cases: [(&str, usize, Headers, Abandon); 5] = [
        ("reset, fast path", 0, &[], Abandon::Reset),
        ("reset, gRPC-Web over HTTP/2", 0, GRPC_WEB, Abandon::Reset),
        ("disconnect, fast path", 0, &[], Abandon::Disconnect),
        ("reset, tonic's path", 1, &[BEARER], Abandon::Reset),
        (
            "disconnect, tonic's path",
            1,
            &[BEARER],
            Abandon::Disconnect,
        ),
    ];

    let mut outcomes = Vec::new();
    let mut wrong = Vec::new();
    for (case, server, headers, how) in cases {
        let server = &mut servers[server];
        let metrics = server.metrics_addr();
        let logged_before = cancelled_log_lines(server);
        let before = handled_do_format(metrics);
        runtime.block_on(abandon_mid_body(server.addrs[0], headers, how));
        // The server ends the call by itself: wait until it is counted, whatever its code,
        // and its log line has come through the pipe (it may trail the counter).
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut counted = gained(&before, &handled_do_format(metrics));
        let mut logged = cancelled_log_lines(server) - logged_before;
        while (counted.is_empty() || logged == 0) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            counted = gained(&before, &handled_do_format(metrics));
            logged = cancelled_log_lines(server) - logged_before;
        }
        outcomes.push(format!(
            "{case}: counted {counted:?}, {logged} log line(s) with code=Cancelled"
        ));
        if counted != [("Canceled".to_string(), 1.0)] || logged == 0 {
            wrong.push(case);
        }
    }
    assert!(
        wrong.is_empty(),
        "not CANCELLED, in grpc_server_handled_total and the log: {wrong:?}\n{}",
        outcomes.join("\n")
    );
    for server in &servers {
        runtime.block_on(assert_serves_normally(server.addrs[0]));
    }
}

/// Log lines about a DoFormat call that ended CANCELLED.
fn cancelled_log_lines(server: &mut ServerProcess) -> usize {
    server
        .log_lines()
        .iter()
        .filter(|line| {
            line.contains("code=Cancelled")
                && line.contains("/example.FormatData/DoFormat")
                && !line.contains("DoFormatStream")
        })
        .count()
}
