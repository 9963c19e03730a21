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

use crate::server::listen::{Acceptor, MAX_METRICS_CONNECTIONS};

/// Whether the method at `path` takes exactly one request message (unary and server-streaming
/// methods); `false` for unknown paths, which the router refuses anyway.
pub fn takes_one_request(path: &str) -> bool {
    METHODS
        .iter()
        .any(|method| method.path == path && matches!(method.kind, "unary" | "server_stream"))
}

/// A method we serve, with its labels.
struct Method {
    path: &'static str,
    kind: &'static str,
    service: &'static str,
    name: &'static str,
}

const fn method(
    path: &'static str,
    kind: &'static str,
    service: &'static str,
    name: &'static str,
) -> Method {
    Method {
        path,
        kind,
        service,
        name,
    }
}

/// The methods served. Only these are counted, as go-grpc-prometheus counts only registered
/// methods: an unknown path must not mint new label values (and time series) at a caller's whim.
const METHODS: &[Method] = &[
    method(
        "/example.FormatData/DoFormat",
        "unary",
        "example.FormatData",
        "DoFormat",
    ),
    method(
        "/example.FormatData/DoFormatStream",
        "bidi_stream",
        "example.FormatData",
        "DoFormatStream",
    ),
    method(
        "/grpc.health.v1.Health/Check",
        "unary",
        "grpc.health.v1.Health",
        "Check",
    ),
    method(
        "/grpc.health.v1.Health/Watch",
        "server_stream",
        "grpc.health.v1.Health",
        "Watch",
    ),
    method(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "bidi_stream",
        "grpc.reflection.v1.ServerReflection",
        "ServerReflectionInfo",
    ),
    method(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "bidi_stream",
        "grpc.reflection.v1alpha.ServerReflection",
        "ServerReflectionInfo",
    ),
];

/// The gRPC server metrics, registered in their own registry.
#[derive(Clone)]
pub struct GrpcMetrics {
    registry: Registry,
    started: IntCounterVec,
    handled: IntCounterVec,
    received: IntCounterVec,
    sent: IntCounterVec,
    handling: HistogramVec,
}

impl GrpcMetrics {
    pub fn new() -> Self {
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

    /// Counts a call to `path` as started; `None` for a path that is not a method we serve.
    pub fn start(&self, path: &str) -> Option<CallMetrics> {
        let method = METHODS.iter().find(|method| method.path == path)?;
        let labels = [method.kind, method.service, method.name];
        self.started.with_label_values(&labels).inc();
        Some(CallMetrics {
            handled: self.handled.clone(),
            labels,
            received: self.received.with_label_values(&labels),
            sent: self.sent.with_label_values(&labels),
            handling: self.handling.with_label_values(&labels),
        })
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
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
pub struct CallMetrics {
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
    pub fn finish(&self, code: Code, seconds: f64) {
        let [kind, service, method] = self.labels;
        self.handled
            .with_label_values(&[kind, service, method, go_code_name(code)])
            .inc();
        self.handling.observe(seconds);
    }
}

/// Status code names as grpc-go prints them (`codes.Code.String()`), which is what
/// go-grpc-prometheus puts in `grpc_code`.
fn go_code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// Follows the gRPC framing of a byte stream: each message starts with a 5-byte prefix (flag,
/// length), and prefixes may straddle HTTP/2 DATA frames. Counts the messages, and knows how
/// much of the one in progress has arrived.
#[derive(Debug, Default)]
pub struct MessageCounter {
    prefix: [u8; 5],
    prefix_read: usize,
    /// Declared length of the message whose body is arriving.
    length: usize,
    remaining: usize,
    /// Messages whose first byte has been seen.
    begun: u64,
    /// Messages seen whole.
    complete: u64,
    /// The largest whole message so far, prefix included.
    largest: usize,
}

impl MessageCounter {
    /// Whether the bytes fed so far stop inside a message (its prefix or its body).
    pub fn mid_message(&self) -> bool {
        self.prefix_read > 0 || self.remaining > 0
    }

    /// Messages begun so far: whole ones, and one whose prefix has started.
    pub fn begun(&self) -> u64 {
        self.begun
    }

    /// Messages seen whole.
    pub fn complete(&self) -> u64 {
        self.complete
    }

    /// Bytes of the message in progress seen so far, prefix included; 0 between messages.
    pub fn partial(&self) -> usize {
        match self.remaining {
            0 => self.prefix_read,
            remaining => 5 + self.length - remaining,
        }
    }

    /// The largest whole message seen, prefix included.
    pub fn largest(&self) -> usize {
        self.largest
    }

    /// Feeds the next bytes; returns how many messages began in them.
    pub fn feed(&mut self, mut bytes: &[u8]) -> u64 {
        let mut messages = 0;
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let skipped = self.remaining.min(bytes.len());
                self.remaining -= skipped;
                bytes = &bytes[skipped..];
                if self.remaining == 0 {
                    self.completed();
                }
                continue;
            }
            if self.prefix_read == 0 {
                self.begun += 1;
            }
            let taken = (5 - self.prefix_read).min(bytes.len());
            self.prefix[self.prefix_read..self.prefix_read + taken]
                .copy_from_slice(&bytes[..taken]);
            self.prefix_read += taken;
            bytes = &bytes[taken..];
            if self.prefix_read == 5 {
                messages += 1;
                self.length =
                    u32::from_be_bytes(self.prefix[1..].try_into().expect("4 bytes")) as usize;
                self.remaining = self.length;
                self.prefix_read = 0;
                if self.remaining == 0 {
                    self.completed();
                }
            }
        }
        messages
    }

    fn completed(&mut self) {
        self.complete += 1;
        self.largest = self.largest.max(5 + self.length);
    }
}

/// Serves `GET /metrics` on `listener` (HTTP/1.1, as Prometheus scrapes) until dropped, at
/// most [`MAX_METRICS_CONNECTIONS`] connections at once, each with `head_timeout` for its
/// request heads: the endpoint must not be easier to exhaust than the main port.
pub async fn serve(listener: TcpListener, metrics: GrpcMetrics, head_timeout: Duration) {
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

    #[test]
    fn counts_messages_across_chunk_boundaries() {
        let mut stream = Vec::new();
        for message in [&b"hello"[..], b"", b"a longer message"] {
            stream.push(0);
            stream.extend_from_slice(&(message.len() as u32).to_be_bytes());
            stream.extend_from_slice(message);
        }
        for chunk_size in 1..stream.len() {
            let mut counter = MessageCounter::default();
            let total: u64 = stream
                .chunks(chunk_size)
                .map(|chunk| counter.feed(chunk))
                .sum();
            assert_eq!(total, 3, "chunks of {chunk_size}");
            assert_eq!(counter.complete(), 3);
            assert_eq!(counter.largest(), 5 + 16);
            assert_eq!(counter.partial(), 0);
        }
    }

    #[test]
    fn knows_how_much_of_the_message_in_progress_arrived() {
        let mut counter = MessageCounter::default();
        counter.feed(&[0, 0, 0]);
        assert_eq!((counter.partial(), counter.complete()), (3, 0));
        counter.feed(&[0, 10, b'a', b'b']);
        assert_eq!((counter.partial(), counter.complete()), (7, 0));
        counter.feed(&[b'c'; 8]);
        assert_eq!((counter.partial(), counter.complete()), (0, 1));
        assert_eq!(counter.largest(), 15);
    }

    #[test]
    fn only_served_methods_are_counted() {
        let metrics = GrpcMetrics::new();
        assert!(metrics.start("/example.FormatData/DoFormat").is_some());
        assert!(metrics.start("/no.Such/Method").is_none());
        let text = metrics.render();
        assert!(text.contains(
            r#"grpc_server_started_total{grpc_method="DoFormat",grpc_service="example.FormatData",grpc_type="unary"} 1"#
        ), "{text}");
        assert!(!text.contains("no.Such"));
    }
}
