//! Distributed tracing with OpenTelemetry: one span per call on both sides, joined across them
//! by W3C trace context (`traceparent`, `tracestate`), exported over OTLP/gRPC with the
//! project's own tonic.
//!
//! Off unless an OTLP endpoint is configured (`--otlp-endpoint`, or the standard
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`); off, a call pays one
//! branch. The other standard variables apply as in every OpenTelemetry SDK:
//! `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` and `_ARG`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `_TIMEOUT`, `_COMPRESSION`, `OTEL_BSP_*`.
//!
//! Spans are made with the OpenTelemetry API directly, not as `tracing` spans bridged by
//! tracing-opentelemetry: a call the sampler leaves out then costs a header parse and a random
//! id, where a bridged span costs a span in the subscriber's registry and its fields for every
//! call, sampled or not (see CONTRIBUTING.md, "Performance").
//!
//! Export never makes a call wait: finished spans go to the SDK's batch processor, a bounded
//! queue (2,048 spans) emptied by a thread of its own; when the collector is down or slow, the
//! queue fills and spans are dropped, reported in one warning every ten seconds at most.

use std::borrow::Cow;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status as SpanStatus, TraceContextExt, TraceId, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, Key, KeyValue, Value};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::resource::{
    EnvResourceDetector, ResourceDetector, SdkProvidedResourceDetector, TelemetryResourceDetector,
};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, IdGenerator, RandomIdGenerator, SdkTracer,
    SdkTracerProvider, Span, SpanData, SpanExporter,
};
use tonic::Code;
use tracing::warn;

use crate::grpc::methods::Method;

/// How long an export may take before its spans count as lost.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long shutdown waits for the last spans to go out.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// At most one warning about lost spans per this long.
const WARNING_INTERVAL: Duration = Duration::from_secs(10);

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Tracing could not be set up: a one-line reason for the binaries to print.
#[derive(Debug, thiserror::Error)]
#[error("OpenTelemetry: {0}")]
pub struct TracingError(String);

/// The OTLP endpoint a tracing setting names, checked: `http://` or `https://`, a host.
pub fn parse_endpoint(endpoint: &str) -> Result<Uri, TracingError> {
    let uri: Uri = endpoint
        .parse()
        .map_err(|err| TracingError(format!("the OTLP endpoint {endpoint:?}: {err}")))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(_)) => Ok(uri),
        _ => Err(TracingError(format!(
            "the OTLP endpoint {endpoint:?} is not an http:// or https:// URL"
        ))),
    }
}

/// A process's tracer and where its spans go. Cheap to clone; [`Tracing::shutdown`] flushes.
#[derive(Clone, Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    /// Whether spans go anywhere: a client that exports nothing only needs ids for its calls'
    /// `traceparent`, not spans recorded and then dropped.
    exporting: bool,
}

impl Tracing {
    /// Spans exported to `endpoint` (OTLP/gRPC); with `None`, no spans, only the ids a
    /// client's calls carry in `traceparent`. `default_service_name` is `service.name` unless
    /// the environment names one. Must run inside a Tokio runtime: the exporter's channel is
    /// driven by it.
    pub fn start(
        endpoint: Option<&Uri>,
        default_service_name: &'static str,
    ) -> Result<Self, TracingError> {
        let exporting = endpoint.is_some();
        let mut provider =
            SdkTracerProvider::builder().with_resource(resource(default_service_name));
        if let Some(endpoint) = endpoint {
            let mut exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.to_string())
                .with_timeout(EXPORT_TIMEOUT)
                // A retry would hold the export thread while spans pile up behind it.
                .with_retry_policy(opentelemetry_otlp::RetryPolicy::disabled());
            if endpoint.scheme() == Some(&http::uri::Scheme::HTTPS) {
                exporter = exporter
                    .with_tls_config(tonic::transport::ClientTlsConfig::new().with_webpki_roots());
            }
            let exporter = exporter
                .build()
                .map_err(|err| TracingError(err.to_string()))?;
            let batches = BatchSpanProcessor::builder(Reported::new(exporter))
                .with_batch_config(
                    // OTEL_BSP_* first, then ours where they are silent.
                    BatchConfigBuilder::default()
                        .with_scheduled_delay(batch_delay())
                        .build(),
                )
                .build();
            provider = provider.with_span_processor(batches);
        }
        let provider = provider.build();
        let tracer = provider.tracer("formatdata");
        Ok(Self {
            provider,
            tracer,
            exporting,
        })
    }

    /// Sends the spans still queued, waiting at most a few seconds, and stops exporting.
    pub async fn shutdown(self) {
        let provider = self.provider;
        // The SDK blocks while it flushes; on a runtime's own thread that would stall the
        // very channel the flush goes through.
        let flushed =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_TIMEOUT))
                .await;
        if let Ok(Err(err)) = flushed {
            warn!(%err, "the last spans were not all exported");
        }
    }

    /// The server's span for a call to `method` (`None`: not a method served), the child of
    /// the caller's span when its headers carry one.
    pub(crate) fn server_span(
        &self,
        method: Option<&'static Method>,
        uri: &Uri,
        headers: &HeaderMap,
        peer: Option<std::net::SocketAddr>,
    ) -> CallSpan {
        // Looked up by a constant name first: the propagator's own lookups parse their names
        // each time, a cost a call without trace context need not pay.
        let parent = match headers.contains_key(TRACEPARENT) {
            true => TraceContextPropagator::new().extract(&HeaderExtractor(headers)),
            false => Context::new(),
        };
        let name = method.map_or("unknown method", span_name);
        let mut span = self
            .tracer
            .span_builder(Cow::Borrowed(name))
            .with_kind(SpanKind::Server)
            .start_with_context(&self.tracer, &parent);
        if span.is_recording() {
            span.set_attributes(rpc_attributes(method));
            // `:authority` in HTTP/2, `Host` in HTTP/1.1.
            if let Some(host) = uri
                .authority()
                .map(|authority| authority.as_str())
                .or_else(|| {
                    headers
                        .get(http::header::HOST)
                        .and_then(|host| host.to_str().ok())
                })
            {
                span.set_attributes(address_attributes("server", host));
            }
            if let Some(peer) = peer {
                span.set_attribute(KeyValue::new("network.peer.address", peer.ip().to_string()));
                span.set_attribute(KeyValue::new("network.peer.port", i64::from(peer.port())));
            }
        }
        CallSpan(Box::new(span))
    }

    /// The client's span for a call to `method` on `server` (`host:port`), the child of
    /// `parent` (see [`remote_parent`]), and the `traceparent`/`tracestate` headers that
    /// carry it to the server. No span when nothing is exported: the headers then name a span
    /// id of the client's in `parent`'s trace (sampled as it is), and there are none without a
    /// parent: a trace nobody records is not worth its header (decoding a fresh `traceparent`
    /// costs the server about 4,500 instructions a call, and `client bench` a fifth of its
    /// rate).
    pub(crate) fn client_span(
        &self,
        method: &'static Method,
        server: Option<&str>,
        parent: &Context,
    ) -> (Option<CallSpan>, HeaderMap) {
        let mut headers = HeaderMap::new();
        if !self.exporting {
            let parent = parent.span();
            let parent = parent.span_context();
            if !parent.is_valid() {
                return (None, headers);
            }
            let span = SpanContext::new(
                parent.trace_id(),
                RandomIdGenerator::default().new_span_id(),
                parent.trace_flags(),
                false,
                parent.trace_state().clone(),
            );
            inject(span, &mut headers);
            return (None, headers);
        }
        let mut span = self
            .tracer
            .span_builder(Cow::Borrowed(span_name(method)))
            .with_kind(SpanKind::Client)
            .start_with_context(&self.tracer, parent);
        if span.is_recording() {
            span.set_attributes(rpc_attributes(Some(method)));
            if let Some(server) = server {
                span.set_attributes(address_attributes("server", server));
            }
        }
        inject(span.span_context().clone(), &mut headers);
        (Some(CallSpan(Box::new(span))), headers)
    }
}

/// Writes `span` as `traceparent` (and `tracestate`) into `headers`, marked never to be indexed
/// by HPACK: a value new at every call would only push the headers that do repeat (the content
/// type, the deadline, the token) out of the connection's table, making every call's headers
/// longer to send and to decode.
fn inject(span: SpanContext, headers: &mut HeaderMap) {
    let context = Context::new().with_remote_span_context(span);
    TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
    for value in headers.values_mut() {
        value.set_sensitive(true);
    }
}

/// The context named by a `traceparent` (and `tracestate`) handed to the client, as scripts do
/// in `TRACEPARENT`, so that its calls join their trace; none (each call a new root) when
/// absent or not valid.
pub(crate) fn remote_parent(traceparent: Option<&str>, tracestate: Option<&str>) -> Context {
    let mut headers = HeaderMap::new();
    for (name, value) in [(TRACEPARENT, traceparent), (TRACESTATE, tracestate)] {
        if let Some(value) = value.and_then(|value| HeaderValue::try_from(value).ok()) {
            headers.insert(name, value);
        }
    }
    TraceContextPropagator::new().extract(&HeaderExtractor(&headers))
}

/// One call's span; ends when [`CallSpan::end`] is given its status, or when dropped (a call
/// that never finished: CANCELLED).
///
/// Boxed: the SDK's span is 288 bytes, which every call's log would otherwise carry and
/// move about, traced or not (about 1,000 instructions per call with tracing off).
#[derive(Debug)]
pub(crate) struct CallSpan(Box<Span>);

impl CallSpan {
    /// The trace this call belongs to, for its log line.
    pub(crate) fn trace_id(&self) -> TraceId {
        self.0.span_context().trace_id()
    }

    /// Ends the span with a call's outcome.
    pub(crate) fn end_with<T>(self, outcome: &Result<T, tonic::Status>) {
        match outcome {
            Ok(_) => self.end(Code::Ok, ""),
            Err(status) => self.end(status.code(), status.message()),
        }
    }

    /// Ends the span with the call's status: ERROR for every code but OK.
    pub(crate) fn end(mut self, code: Code, message: &str) {
        if self.0.is_recording() {
            self.0
                .set_attribute(KeyValue::new("rpc.grpc.status_code", code as i64));
            if code != Code::Ok {
                self.0.set_status(SpanStatus::error(match message {
                    "" => code.description().to_owned(),
                    message => message.to_owned(),
                }));
            }
        }
        self.0.end();
    }
}

impl Drop for CallSpan {
    fn drop(&mut self) {
        // Ended already, unless the call was dropped unfinished.
        if self.0.is_recording() {
            self.0.set_attribute(KeyValue::new(
                "rpc.grpc.status_code",
                Code::Cancelled as i64,
            ));
            self.0
                .set_status(SpanStatus::error("the call ended before its reply"));
        }
    }
}

/// `example.FormatData/DoFormat`, as the semantic conventions name RPC spans.
fn span_name(method: &'static Method) -> &'static str {
    &method.path[1..]
}

/// `rpc.*` attributes of the OpenTelemetry semantic conventions for gRPC.
fn rpc_attributes(method: Option<&'static Method>) -> Vec<KeyValue> {
    let mut attributes = vec![KeyValue::new("rpc.system", "grpc")];
    if let Some(method) = method {
        attributes.push(KeyValue::new("rpc.service", method.service.as_str()));
        attributes.push(KeyValue::new("rpc.method", method.name.as_str()));
    }
    attributes
}

/// `{side}.address` and `{side}.port` from `host[:port]`.
fn address_attributes(side: &str, host_port: &str) -> Vec<KeyValue> {
    let Ok(authority) = host_port.parse::<http::uri::Authority>() else {
        return Vec::new();
    };
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let mut attributes = vec![KeyValue::new(format!("{side}.address"), host.to_owned())];
    if let Some(port) = authority.port_u16() {
        attributes.push(KeyValue::new(format!("{side}.port"), i64::from(port)));
    }
    attributes
}

/// The delay between batches: `OTEL_BSP_SCHEDULE_DELAY` when set, else one second (the
/// SDK's five make a trace wait long to show up, for no saving at our rates).
fn batch_delay() -> Duration {
    std::env::var("OTEL_BSP_SCHEDULE_DELAY")
        .ok()
        .and_then(|millis| millis.parse().ok())
        .map_or(Duration::from_secs(1), Duration::from_millis)
}

/// What the spans describe, detected by the SDK's own detectors: the SDK's attributes,
/// `OTEL_RESOURCE_ATTRIBUTES`, then `service.name` by the specification's precedence
/// (`OTEL_SERVICE_NAME`, else a `service.name` in `OTEL_RESOURCE_ATTRIBUTES`).
/// `default_service_name` stands in for the SDK's `unknown_service` when neither names one.
/// Values are percent-decoded, as the specification writes them and the SDK does not.
fn resource(default_service_name: &'static str) -> Resource {
    const SERVICE_NAME: &str = "service.name";
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|name| !name.trim().is_empty())
        || EnvResourceDetector::new()
            .detect()
            .get(&Key::from_static_str(SERVICE_NAME))
            .is_some();
    let detected = Resource::builder_empty()
        .with_detectors(&[
            Box::new(TelemetryResourceDetector),
            Box::new(EnvResourceDetector::new()),
            // Last, so OTEL_SERVICE_NAME wins over OTEL_RESOURCE_ATTRIBUTES.
            Box::new(SdkProvidedResourceDetector),
        ])
        .build();
    let decoded = detected.iter().map(|(key, value)| {
        let value = match value {
            Value::String(text) => Value::from(
                percent_encoding::percent_decode_str(text.as_str())
                    .decode_utf8_lossy()
                    .into_owned(),
            ),
            other => other.clone(),
        };
        KeyValue::new(key.clone(), value)
    });
    let resource = Resource::builder_empty().with_attributes(decoded);
    match named {
        true => resource.build(),
        false => resource.with_service_name(default_service_name).build(),
    }
}

/// An exporter that says when spans are lost: failed exports are counted, and reported in one
/// warning every [`WARNING_INTERVAL`] at most, however many fail (the SDK would log each).
#[derive(Debug)]
struct Reported<E> {
    inner: E,
    lost: AtomicU64,
    last_warning: Mutex<Option<Instant>>,
}

impl<E> Reported<E> {
    fn new(inner: E) -> Self {
        Self {
            inner,
            lost: AtomicU64::new(0),
            last_warning: Mutex::new(None),
        }
    }

    fn count_lost(&self, spans: u64, error: &dyn std::fmt::Display) {
        let lost = self.lost.fetch_add(spans, Ordering::Relaxed) + spans;
        let mut last = self
            .last_warning
            .lock()
            .unwrap_or_else(|err| err.into_inner());
        if last.is_none_or(|at| at.elapsed() >= WARNING_INTERVAL) {
            *last = Some(Instant::now());
            self.lost.fetch_sub(lost, Ordering::Relaxed);
            warn!(
                spans = lost,
                %error,
                "spans not exported (the OTLP collector is down or slow); calls go on"
            );
        }
    }
}

impl<E: SpanExporter> SpanExporter for Reported<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len() as u64;
        let result = self.inner.export(batch).await;
        if let Err(err) = &result {
            self.count_lost(spans, err);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_must_be_http_urls() {
        assert!(parse_endpoint("http://localhost:4317").is_ok());
        assert!(parse_endpoint("https://collector.example:4317").is_ok());
        for bad in ["localhost:4317", "ftp://x", "http://", "not a url"] {
            assert!(parse_endpoint(bad).is_err(), "{bad} accepted");
        }
    }
}
