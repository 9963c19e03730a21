//! Prometheus metrics with the names and labels of go-grpc-prometheus, the convention gRPC
//! dashboards expect, plus the process's own (CPU, memory, file descriptors). Off unless
//! `--metrics-addr` is given; then served as text at `http://ADDR/metrics`.
//!
//! [`crate::server::calls::call`] records each call; this module owns the registry and the endpoint.

use std::collections::VecDeque;
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
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::AbortHandle;
use tonic::Code;
use tracing::{debug, warn};

use crate::grpc::methods::{self, Method};
use crate::grpc::status::go_code_name;
use crate::server::config::MAX_HTTP1_HEAD;
use crate::server::transport::listen::Acceptor;

/// Connections the endpoint serves at once: scrapers are few.
pub(super) const MAX_METRICS_CONNECTIONS: usize = 32;

/// The gRPC server metrics, registered in their own registry, with every series of every
/// method the server serves made at startup, as go-grpc-prometheus makes them (so dashboards
/// see zeros rather than nothing), and kept at hand: a call touches a few counters it already
/// holds, never a label lookup.
#[derive(Clone)]
pub(super) struct GrpcMetrics {
    registry: Registry,
    /// Each method's series, in the order of the method table.
    methods: Arc<[Arc<MethodMetrics>]>,
    /// `formatdata_streams_shed_total`: streams ended to make room when the server's byte
    /// budget was full.
    pub streams_shed: IntCounter,
    /// `formatdata_connections_refused_total`: connections refused because their address
    /// already had its share.
    pub connections_refused: IntCounter,
}

/// One method's series.
struct MethodMetrics {
    started: IntCounter,
    /// By code, in code order.
    handled: Vec<IntCounter>,
    received: IntCounter,
    sent: IntCounter,
    handling: Histogram,
}

impl GrpcMetrics {
    pub(super) fn new() -> Self {
        let labels = ["grpc_type", "grpc_service", "grpc_method"];
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let started = counter(
            "grpc_server_started_total",
            "Total number of RPCs started on the server.",
            &labels,
        );
        let handled = counter(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            &["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
        );
        let received = counter(
            "grpc_server_msg_received_total",
            "Total number of RPC stream messages received on the server.",
            &labels,
        );
        let sent = counter(
            "grpc_server_msg_sent_total",
            "Total number of gRPC stream messages sent by the server.",
            &labels,
        );
        let handling = HistogramVec::new(
            HistogramOpts::new(
                "grpc_server_handling_seconds",
                "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
            ),
            &labels,
        )
        .expect("valid metric");
        let methods = methods::served()
            .iter()
            .map(|method| {
                let labels = [
                    method.kind.label(),
                    method.service.as_str(),
                    method.name.as_str(),
                ];
                Arc::new(MethodMetrics {
                    started: started.with_label_values(&labels),
                    handled: (0..=Code::Unauthenticated as i32)
                        .map(|code| {
                            let [kind, service, name] = labels;
                            let code = go_code_name(Code::from_i32(code));
                            handled.with_label_values(&[kind, service, name, code])
                        })
                        .collect(),
                    received: received.with_label_values(&labels),
                    sent: sent.with_label_values(&labels),
                    handling: handling.with_label_values(&labels),
                })
            })
            .collect();
        let streams_shed = IntCounter::new(
            "formatdata_streams_shed_total",
            "Streams ended with RESOURCE_EXHAUSTED to make room when the server's byte budget was full (those idle the longest first).",
        )
        .expect("valid metric");
        let connections_refused = IntCounter::new(
            "formatdata_connections_refused_total",
            "Connections refused because their client address already had its share (--max-connections-per-peer).",
        )
        .expect("valid metric");
        let registry = Registry::new();
        for collector in [
            Box::new(streams_shed.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(connections_refused.clone()),
            Box::new(started),
            Box::new(handled),
            Box::new(received),
            Box::new(sent),
            Box::new(handling),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ] {
            registry.register(collector).expect("distinct metric names");
        }
        Self {
            registry,
            methods,
            streams_shed,
            connections_refused,
        }
    }

    /// Counts a call to `method` as started. Only methods the server has are counted, as
    /// go-grpc-prometheus counts only registered ones: an unknown path must not mint new label
    /// values (and time series) at a caller's whim.
    pub(super) fn start(&self, method: &'static Method) -> CallMetrics {
        let series = self.methods[method.index].clone();
        series.started.inc();
        CallMetrics { series }
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

/// One call's metrics.
pub(super) struct CallMetrics {
    series: Arc<MethodMetrics>,
}

impl CallMetrics {
    /// The count of request messages, for the request body to add to as they come.
    pub(super) fn received(&self) -> MessagesReceived {
        MessagesReceived(self.series.received.clone())
    }

    /// Counts `messages` more reply messages.
    pub(super) fn sent(&self, messages: u64) {
        self.series.sent.inc_by(messages);
    }

    /// Counts the call as handled with `code`, after `seconds`.
    pub(super) fn finish(&self, code: Code, seconds: f64) {
        self.series.handled[code as usize].inc();
        self.series.handling.observe(seconds);
    }
}

/// One method's count of request messages (`grpc_server_msg_received_total`).
pub(super) struct MessagesReceived(IntCounter);

impl MessagesReceived {
    pub(super) fn add(&self, messages: u64) {
        self.0.inc_by(messages);
    }
}

/// Serves `GET /metrics` on `listener` (HTTP/1.1, as Prometheus scrapes) until dropped, with
/// `head_timeout` for each request head and at most [`MAX_METRICS_CONNECTIONS`] connections:
/// when one more comes, the oldest is closed. Peers that open connections and send half a head
/// then only push each other out, and a scrape (the newest connection, done in milliseconds) is
/// answered whatever they do.
pub(super) async fn serve(listener: TcpListener, metrics: GrpcMetrics, head_timeout: Duration) {
    // Twice the cap, so accept never waits for an evicted connection's task to end.
    let mut acceptor = Acceptor::new(vec![listener], 2 * MAX_METRICS_CONNECTIONS);
    let mut open: VecDeque<AbortHandle> = VecDeque::new();
    loop {
        let (stream, slot) = acceptor.accept().await;
        open.retain(|connection| !connection.is_finished());
        if open.len() >= MAX_METRICS_CONNECTIONS
            && let Some(oldest) = open.pop_front()
        {
            oldest.abort();
            warn!(
                "metrics port: {MAX_METRICS_CONNECTIONS} connections open; closed the oldest to \
                 serve a new one"
            );
        }
        let peer = stream.peer_addr().ok();
        let metrics = metrics.clone();
        let connection = tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let metrics = metrics.clone();
                    async move { Ok::<_, Infallible>(respond(&request, &metrics)) }
                });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(head_timeout)
                .max_buf_size(MAX_HTTP1_HEAD)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(error) = served {
                debug!(?peer, "metrics connection ended: {error}");
            }
            drop(slot);
        });
        open.push_back(connection.abort_handle());
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
