//! Prometheus metrics with the names and labels of go-grpc-prometheus, the convention gRPC
//! dashboards expect, plus the process's own (CPU, memory, file descriptors). Off unless
//! `--metrics-addr` is given; then served as text at `http://ADDR/metrics`.
//!
//! [`crate::server::call`] records each call; this module owns the registry and the endpoint.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
    TextEncoder,
};
use tokio::net::TcpListener;
use tonic::Code;
use tracing::debug;

use crate::grpc::methods::Method;
use crate::grpc::status::go_code_name;
use crate::server::listen::Acceptor;

/// Connections the endpoint serves at once: scrapers are few.
pub(super) const MAX_METRICS_CONNECTIONS: usize = 32;

/// The gRPC server metrics, registered in their own registry.
#[derive(Clone)]
pub(super) struct GrpcMetrics {
    registry: Registry,
    started: IntCounterVec,
    handled: IntCounterVec,
    received: IntCounterVec,
    sent: IntCounterVec,
    handling: HistogramVec,
}

impl GrpcMetrics {
    pub(super) fn new() -> Self {
        let labels = ["grpc_type", "grpc_service", "grpc_method"];
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let metrics = Self {
            registry: Registry::new(),
            started: counter(
                "grpc_server_started_total",
                "Total number of RPCs started on the server.",
                &labels,
            ),
            handled: counter(
                "grpc_server_handled_total",
                "Total number of RPCs completed on the server, regardless of success or failure.",
                &["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
            ),
            received: counter(
                "grpc_server_msg_received_total",
                "Total number of RPC stream messages received on the server.",
                &labels,
            ),
            sent: counter(
                "grpc_server_msg_sent_total",
                "Total number of gRPC stream messages sent by the server.",
                &labels,
            ),
            handling: HistogramVec::new(
                HistogramOpts::new(
                    "grpc_server_handling_seconds",
                    "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
                ),
                &labels,
            )
            .expect("valid metric"),
        };
        for collector in [
            Box::new(metrics.started.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(metrics.handled.clone()),
            Box::new(metrics.received.clone()),
            Box::new(metrics.sent.clone()),
            Box::new(metrics.handling.clone()),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ] {
            metrics
                .registry
                .register(collector)
                .expect("distinct metric names");
        }
        metrics
    }

    /// Counts a call to `method` as started. Only methods the server has are counted, as
    /// go-grpc-prometheus counts only registered ones: an unknown path must not mint new label
    /// values (and time series) at a caller's whim.
    pub(super) fn start(&self, method: &'static Method) -> CallMetrics {
        let labels = [
            method.kind.label(),
            method.service.as_str(),
            method.name.as_str(),
        ];
        self.started.with_label_values(&labels).inc();
        CallMetrics {
            handled: self.handled.clone(),
            labels,
            received: self.received.with_label_values(&labels),
            sent: self.sent.with_label_values(&labels),
            handling: self.handling.with_label_values(&labels),
        }
    }

    /// The text exposition of every metric.
    pub(super) fn render(&self) -> String {
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut text)
            .expect("text encoding into memory does not fail");
        String::from_utf8(text).expect("the text format is UTF-8")
    }
}

impl Default for GrpcMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// One call's metrics, resolved once when it starts.
pub(super) struct CallMetrics {
    handled: IntCounterVec,
    labels: [&'static str; 3],
    /// Incremented per request message, by the request body as it is read.
    pub received: IntCounter,
    /// Incremented per reply message, by the reply body as it is sent.
    pub sent: IntCounter,
    handling: Histogram,
}

impl CallMetrics {
    /// Counts the call as handled with `code`, after `seconds`.
    pub(super) fn finish(&self, code: Code, seconds: f64) {
        let [kind, service, method] = self.labels;
        self.handled
            .with_label_values(&[kind, service, method, go_code_name(code)])
            .inc();
        self.handling.observe(seconds);
    }
}

/// Serves `GET /metrics` on `listener` (HTTP/1.1, as Prometheus scrapes) until dropped, at
/// most [`MAX_METRICS_CONNECTIONS`] connections at once, each with `head_timeout` for its
/// request heads: the endpoint must not be easier to exhaust than the main port.
pub(super) async fn serve(listener: TcpListener, metrics: GrpcMetrics, head_timeout: Duration) {
    let mut acceptor = Acceptor::new(vec![listener], MAX_METRICS_CONNECTIONS);
    loop {
        let (stream, slot) = acceptor.accept().await;
        let peer = stream.peer_addr().ok();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let metrics = metrics.clone();
                    async move { Ok::<_, Infallible>(respond(&request, &metrics)) }
                });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(head_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(error) = served {
                debug!(?peer, "metrics connection ended: {error}");
            }
            drop(slot);
        });
    }
}

fn respond<B>(request: &Request<B>, metrics: &GrpcMetrics) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    if request.uri().path() == "/metrics" && request.method() == http::Method::GET {
        *response.body_mut() = Full::new(metrics.render().into());
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
    } else {
        *response.status_mut() = StatusCode::NOT_FOUND;
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::methods;

    #[test]
    fn calls_are_counted_with_go_grpc_prometheus_labels() {
        let metrics = GrpcMetrics::new();
        let do_format = methods::served()
            .find("/example.FormatData/DoFormat")
            .unwrap();
        metrics.start(do_format).finish(Code::Cancelled, 0.001);
        let text = metrics.render();
        assert!(text.contains(
            r#"grpc_server_started_total{grpc_method="DoFormat",grpc_service="example.FormatData",grpc_type="unary"} 1"#
        ), "{text}");
        assert!(text.contains(
            r#"grpc_server_handled_total{grpc_code="Canceled",grpc_method="DoFormat",grpc_service="example.FormatData",grpc_type="unary"} 1"#
        ), "{text}");
    }
}
