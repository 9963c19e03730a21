//! Prometheus metrics: go-grpc-prometheus names and labels, scraped over HTTP like Prometheus.

use formatdata::pb::Data;
use formatdata::server::ServerConfig;

use formatdata_test_support::app::spawn_app_with;
use formatdata_test_support::metrics::{metric_sample as sample, scrape_metrics};
use formatdata_test_support::process::closed_port;

/// `GET /metrics` from the app on `port`, off the async runtime the app runs on.
async fn scrape(port: u16) -> String {
    tokio::task::spawn_blocking(move || scrape_metrics(([127, 0, 0, 1], port).into()))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_thousand_calls_show_in_the_go_grpc_prometheus_metrics() {
    let port = closed_port();
    let app = spawn_app_with(ServerConfig {
        metrics_addr: Some(format!("127.0.0.1:{port}").parse().unwrap()),
        ..ServerConfig::default()
    })
    .await;
    let mut client = app.client().await;
    for n in 0..1_000 {
        let text = format!("call {n}");
        client.do_format(Data { text }).await.unwrap();
    }
    let stream_replies = client
        .do_format_stream(tokio_stream::iter(
            ["a", "b", "c"].map(|text| Data { text: text.into() }),
        ))
        .await
        .unwrap()
        .into_inner();
    drop(stream_replies); // hang up before reading: a cancelled call
    let unknown = formatdata_test_support::raw::call(
        app.addr,
        "/example.FormatData/Nope",
        &[],
        formatdata_test_support::raw::frame(
            false,
            &formatdata_test_support::raw::data_message(b"x"),
        ),
    )
    .await;
    assert_eq!(unknown.code(), tonic::Code::Unimplemented);

    let text = scrape(port).await;

    let labels = r#"grpc_method="DoFormat",grpc_service="example.FormatData",grpc_type="unary""#;
    let ok = format!(r#"grpc_server_handled_total{{grpc_code="OK",{labels}}}"#);
    assert_eq!(sample(&text, &ok), Some(1000.0), "{text}");
    for name in [
        "grpc_server_started_total",
        "grpc_server_msg_received_total",
        "grpc_server_msg_sent_total",
        "grpc_server_handling_seconds_count",
    ] {
        assert_eq!(
            sample(&text, &format!("{name}{{{labels}}}")),
            Some(1000.0),
            "{name}: {text}"
        );
    }
    assert!(
        text.contains("grpc_server_handling_seconds_bucket{"),
        "{text}"
    );
    assert!(
        text.contains(r#"grpc_type="bidi_stream""#),
        "the stream is counted: {text}"
    );
    assert!(
        !text.contains("Nope"),
        "unknown methods make no series: {text}"
    );
    assert!(text.contains("process_resident_memory_bytes"), "{text}");
}

#[tokio::test]
async fn stream_messages_are_counted_one_by_one() {
    let port = closed_port();
    let app = spawn_app_with(ServerConfig {
        metrics_addr: Some(format!("127.0.0.1:{port}").parse().unwrap()),
        ..ServerConfig::default()
    })
    .await;
    let requests = (0..250).map(|n| Data {
        text: format!("message {n}"),
    });
    let mut replies = app.stream(requests).await;
    while replies.message().await.unwrap().is_some() {}

    let text = scrape(port).await;

    let labels =
        r#"grpc_method="DoFormatStream",grpc_service="example.FormatData",grpc_type="bidi_stream""#;
    for name in [
        "grpc_server_msg_received_total",
        "grpc_server_msg_sent_total",
    ] {
        assert_eq!(
            sample(&text, &format!("{name}{{{labels}}}")),
            Some(250.0),
            "{name}: {text}"
        );
    }
    let ok = format!(r#"grpc_server_handled_total{{grpc_code="OK",{labels}}}"#);
    assert_eq!(sample(&text, &ok), Some(1.0), "{text}");
}
