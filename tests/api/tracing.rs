//! OpenTelemetry tracing, end to end: the real binaries export to a real OTLP/gRPC collector
//! (tonic serving opentelemetry-proto's `TraceService`), joined by W3C trace context.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use formatdata_test_support::otlp::{
    Collector, KIND_CLIENT, KIND_SERVER, ReceivedSpan, STATUS_ERROR, STATUS_UNSET,
};
use formatdata_test_support::process::{
    ServerProcess, closed_port, run_client_with_env, stderr, stdout,
};
use formatdata_test_support::raw::{data_message, frame};

/// Batches go out every 100 ms, so spans show up at once.
const QUICK_EXPORT: (&str, &str) = ("OTEL_BSP_SCHEDULE_DELAY", "100");
const WAIT: Duration = Duration::from_secs(10);

fn traced_server(collector: &str, env: &[(&str, &str)]) -> ServerProcess {
    let env: Vec<_> = [QUICK_EXPORT].iter().chain(env).copied().collect();
    ServerProcess::start_with_env(
        &["--addr", "127.0.0.1:0", "--otlp-endpoint", collector],
        &env,
    )
}

fn server_spans(spans: &[ReceivedSpan]) -> Vec<&ReceivedSpan> {
    spans
        .iter()
        .filter(|span| span.kind == KIND_SERVER)
        .collect()
}

#[test]
fn a_client_call_is_one_trace_with_the_servers_span_as_a_child_of_the_clients() {
    let collector = Collector::start();
    let server = traced_server(&collector.endpoint(), &[]);
    let output = run_client_with_env(
        &[
            "--addr",
            &server.addr(),
            "--otlp-endpoint",
            &collector.endpoint(),
        ],
        &[QUICK_EXPORT],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output).trim(), "received: HELLO,WORLD!");

    let spans = collector.wait_for(WAIT, |spans| {
        spans.iter().any(|span| span.kind == KIND_CLIENT)
            && spans.iter().any(|span| span.kind == KIND_SERVER)
    });
    let client = spans
        .iter()
        .find(|span| span.kind == KIND_CLIENT)
        .unwrap_or_else(|| panic!("no client span: {spans:#?}"));
    let server_span = spans
        .iter()
        .find(|span| span.kind == KIND_SERVER)
        .unwrap_or_else(|| panic!("no server span: {spans:#?}"));

    assert_eq!(server_span.trace_id, client.trace_id, "one trace");
    assert_eq!(
        server_span.parent_span_id, client.span_id,
        "the server's span is a child"
    );
    assert!(
        client.parent_span_id.is_empty(),
        "the client's call is a root: {client:?}"
    );
    assert_ne!(client.trace_id, "0".repeat(32));

    assert_eq!(server_span.name, "example.FormatData/DoFormat");
    assert_eq!(server_span.service, "formatdata");
    assert_eq!(client.service, "formatdata-client");
    for span in [client, server_span] {
        let attribute = |key: &str| span.attributes.get(key).map(String::as_str);
        assert_eq!(attribute("rpc.system"), Some("grpc"), "{span:?}");
        assert_eq!(
            attribute("rpc.service"),
            Some("example.FormatData"),
            "{span:?}"
        );
        assert_eq!(attribute("rpc.method"), Some("DoFormat"), "{span:?}");
        assert_eq!(attribute("rpc.grpc.status_code"), Some("0"), "{span:?}");
        assert_eq!(attribute("server.address"), Some("127.0.0.1"), "{span:?}");
        assert_eq!(span.status_code, STATUS_UNSET, "an OK call: {span:?}");
    }
    let server_attribute = |key: &str| server_span.attributes.get(key).map(String::as_str);
    assert_eq!(server_attribute("network.peer.address"), Some("127.0.0.1"));
    assert!(server_attribute("network.peer.port").is_some());
}

#[test]
fn the_service_name_comes_from_the_environment_by_the_specifications_precedence() {
    let collector = Collector::start();
    let named_twice = [
        ("OTEL_SERVICE_NAME", "from-name"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "service.name=from-attributes,team=text",
        ),
    ];
    let attributes_only = [("OTEL_RESOURCE_ATTRIBUTES", "service.name=from%20attributes")];
    for (env, expected) in [
        (&named_twice[..], "from-name"),
        (&attributes_only[..], "from attributes"),
    ] {
        let server = traced_server(&collector.endpoint(), env);
        let output = run_client_with_env(&["--addr", &server.addr()], &[]);
        assert!(output.status.success(), "{}", stderr(&output));
        let spans = collector.wait_for(WAIT, |spans| {
            spans.iter().any(|span| span.service == expected)
        });
        assert!(
            spans.iter().any(|span| span.service == expected),
            "{expected}: {spans:#?}"
        );
    }
}

#[test]
fn a_traceparent_from_the_environment_is_joined_and_the_trace_id_is_in_the_log_line() {
    let collector = Collector::start();
    // The call fails (no token), so its log line is a warning, printed at the default level.
    let mut server = traced_server(
        &collector.endpoint(),
        &[("FORMATDATA_AUTH_TOKEN", "s3cret")],
    );
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    // The client exports nothing here: its call still carries the trace.
    let output = run_client_with_env(
        &["--addr", &server.addr(), "--retries", "0"],
        &[("TRACEPARENT", &traceparent)],
    );
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("UNAUTHENTICATED"),
        "{}",
        stderr(&output)
    );

    let spans = collector.wait_for(WAIT, |spans| !server_spans(spans).is_empty());
    let span = server_spans(&spans)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no server span: {spans:#?}"));
    assert_eq!(span.trace_id, trace_id, "the script's trace");
    assert_ne!(
        span.parent_span_id, "00f067aa0ba902b7",
        "the client's own span is between"
    );
    assert_eq!(span.status_code, STATUS_ERROR, "{span:?}");
    assert_eq!(
        span.attributes
            .get("rpc.grpc.status_code")
            .map(String::as_str),
        Some("16"),
        "{span:?}"
    );

    let logged = server
        .log_lines()
        .into_iter()
        .find(|line| line.contains("call failed"))
        .expect("the failed call's log line");
    assert!(logged.contains(&format!("trace_id={trace_id}")), "{logged}");
}

#[test]
fn a_grpc_web_call_gets_a_span_child_of_its_traceparent() {
    let collector = Collector::start();
    let server = traced_server(&collector.endpoint(), &[]);
    let body = frame(false, &data_message(b"web"));
    let parent = "0af7651916cd43dd8448eb211c80319c";
    let head = format!(
        "POST /example.FormatData/DoFormat HTTP/1.1\r\nhost: {}\r\n\
         content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\n\
         traceparent: 00-{parent}-b7ad6b7169203331-01\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n",
        server.addr(),
        body.len()
    );
    let mut stream = TcpStream::connect(server.addrs[0]).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body).unwrap();
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("WEB"), "{reply}");

    let spans = collector.wait_for(WAIT, |spans| !server_spans(spans).is_empty());
    let span = server_spans(&spans)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no server span: {spans:#?}"));
    assert_eq!(span.trace_id, parent);
    assert_eq!(span.parent_span_id, "b7ad6b7169203331");
    assert_eq!(span.name, "example.FormatData/DoFormat");
}

#[test]
fn spans_still_queued_are_exported_on_graceful_shutdown() {
    let collector = Collector::start();
    // A batch would otherwise wait a minute.
    let mut server = ServerProcess::start_with_env(
        &[
            "--addr",
            "127.0.0.1:0",
            "--otlp-endpoint",
            &collector.endpoint(),
        ],
        &[("OTEL_BSP_SCHEDULE_DELAY", "60000")],
    );
    let output = run_client_with_env(&["--addr", &server.addr()], &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        server_spans(&collector.spans()).is_empty(),
        "exported before the batch was due"
    );

    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(server.wait_for_exit(WAIT).success());
    let spans = collector.wait_for(Duration::from_secs(2), |spans| {
        !server_spans(spans).is_empty()
    });
    assert_eq!(server_spans(&spans).len(), 1, "{spans:#?}");
}

/// A collector that accepts connections and never answers: every export waits for its timeout.
fn black_hole() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    (listener, endpoint)
}

#[test]
fn a_collector_down_or_silent_costs_calls_nothing_and_is_reported_in_few_lines() {
    let (_silent, silent) = black_hole();
    let refused = format!("http://127.0.0.1:{}", closed_port());
    for collector in [refused, silent] {
        // Every call sampled, batches due at once: the most the exporter can be asked to do.
        let mut server = traced_server(&collector, &[]);
        let output = run_client_with_env(
            &[
                "bench",
                "--json",
                "--addr",
                &server.addr(),
                "--duration",
                "4",
                "--concurrency",
                "64",
                "--timeout",
                "2",
            ],
            &[],
        );
        assert!(output.status.success(), "{}", stderr(&output));
        let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
        let requests = report["requests"].as_u64().unwrap();
        let p99 = report["latency_us"]["p99"].as_u64().unwrap();
        assert!(requests > 1000, "{collector}: {report}");
        assert_eq!(
            report["errors"],
            serde_json::json!({}),
            "{collector}: {report}"
        );
        // An export that held a call would hold it for its 3 s timeout.
        assert!(p99 < 1_000_000, "{collector}: p99 {p99} us: {report}");

        // Still answering, and the trouble said in a few lines, not one per batch or span.
        let output = run_client_with_env(&["--addr", &server.addr()], &[]);
        assert!(output.status.success(), "{}", stderr(&output));
        server.signal(nix::sys::signal::Signal::SIGTERM);
        server.wait_for_exit(WAIT);
        let warnings = server
            .log_lines()
            .into_iter()
            .filter(|line| line.contains("WARN") || line.contains("ERROR"))
            .collect::<Vec<_>>();
        assert!(
            warnings.iter().any(|line| line.contains("span")),
            "{collector}: the lost spans are not reported: {warnings:#?}"
        );
        assert!(warnings.len() <= 6, "{collector}: {warnings:#?}");
    }
}
