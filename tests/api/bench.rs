//! `client bench`: the report it prints, and that it checks every reply.

use std::pin::Pin;

use formatdata::pb::Data;
use formatdata::pb::format_data_server::{FormatData, FormatDataServer};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use formatdata_test_support::app::spawn_tonic;
use formatdata_test_support::process::{ServerProcess, run_client, stderr, stdout};

fn bench_json(args: &[&str]) -> serde_json::Value {
    let output = run_client(&[&["bench", "--json"][..], args].concat());
    assert!(output.status.success(), "{}", stderr(&output));
    serde_json::from_str(&stdout(&output)).expect("one JSON object")
}

fn assert_report_shape(report: &serde_json::Value) {
    for key in ["requests", "errors", "rps", "latency_us"] {
        assert!(report.get(key).is_some(), "{key} missing: {report}");
    }
    let latency = &report["latency_us"];
    let quantiles: Vec<u64> = ["min", "p50", "p90", "p99", "p999", "max"]
        .iter()
        .map(|key| {
            latency[key]
                .as_u64()
                .unwrap_or_else(|| panic!("{key}: {latency}"))
        })
        .collect();
    assert!(
        quantiles.windows(2).all(|pair| pair[0] <= pair[1]),
        "{latency}"
    );
    assert!(report["rps"].as_f64().unwrap() > 0.0);
}

#[test]
fn unary_bench_reports_every_call_without_errors() {
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);

    let report = bench_json(&[
        "--addr",
        &server.addr(),
        "--connections",
        "2",
        "--concurrency",
        "8",
        "--requests",
        "500",
    ]);

    assert_report_shape(&report);
    assert_eq!(report["requests"], 500);
    assert_eq!(report["errors"], serde_json::json!({}));
}

#[test]
fn stream_bench_with_a_payload_size_and_a_duration() {
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);

    let report = bench_json(&[
        "--addr",
        &server.addr(),
        "--stream",
        "--concurrency",
        "4",
        "--duration",
        "0.5",
        "--payload-bytes",
        "1000",
    ]);

    assert_report_shape(&report);
    assert!(report["requests"].as_u64().unwrap() > 0);
    assert_eq!(report["errors"], serde_json::json!({}));
}

#[test]
fn fixed_rate_bench_keeps_to_the_rate() {
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);

    let report = bench_json(&[
        "--addr",
        &server.addr(),
        "--concurrency",
        "4",
        "--duration",
        "1",
        "--rate",
        "400",
    ]);

    let requests = report["requests"].as_u64().unwrap();
    assert!(
        (360..=400).contains(&requests),
        "{requests} calls at 400/s for 1 s"
    );
}

#[test]
fn text_report_for_people() {
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);

    let output = run_client(&["bench", "--addr", &server.addr(), "--requests", "50"]);

    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("requests     50"), "{text}");
    assert!(text.contains("p99.9"), "{text}");
}

/// A FormatData server that answers in lowercase: every reply is wrong.
struct Wrong;

#[tonic::async_trait]
impl FormatData for Wrong {
    async fn do_format(&self, request: Request<Data>) -> Result<Response<Data>, Status> {
        let text = request.into_inner().text.to_lowercase();
        Ok(Response::new(Data { text }))
    }

    type DoFormatStreamStream = Pin<Box<dyn Stream<Item = Result<Data, Status>> + Send>>;

    async fn do_format_stream(
        &self,
        _: Request<Streaming<Data>>,
    ) -> Result<Response<Self::DoFormatStreamStream>, Status> {
        Err(Status::unimplemented("not for this test"))
    }
}

#[test]
fn wrong_replies_count_as_errors() {
    let (_runtime, addr) = spawn_tonic(tonic::service::Routes::new(FormatDataServer::new(Wrong)));

    let report = bench_json(&["--addr", &addr, "--requests", "20"]);

    assert_eq!(report["requests"], 20);
    assert_eq!(report["errors"]["WRONG_REPLY"], 20);
}
