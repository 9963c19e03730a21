//! `client bench`: a load generator in the spirit of ghz and h2load. N calls in flight over C
//! HTTP/2 connections, unary or over long-lived streams, every reply verified, latency in an HDR
//! histogram, optionally at a fixed rate with coordinated-omission correction.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use http::HeaderValue;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use prost::Message;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::addr::HostPort;
use crate::client::ClientConfig;
use crate::client::{Client, ClientError, TraceHeaders, no_reply_within};
use crate::grpc::framing::{self, PREFIX_LEN, Prefix};
use crate::grpc::status::{code_name, reply_status};
use crate::grpc::{self, timeout};
use crate::otel::Tracing;
use crate::pb::Data;
use crate::service;
use crate::uppercase::uppercase;

/// How long to run when neither --duration nor --requests is given.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// Highest latency the histogram tracks exactly (longer ones are clamped to it): one minute.
const MAX_LATENCY_US: u64 = 60_000_000;

/// The error key for a reply that arrived but is not the uppercase of what was sent.
const WRONG_REPLY: &str = "WRONG_REPLY";

/// What a run measured.
#[derive(Debug)]
pub struct Report {
    /// Calls completed, successful or not.
    pub requests: u64,
    /// Attempts repeated after an UNAVAILABLE failure (a server down), failovers to another
    /// server included; a call that succeeded on a retry is not an error.
    pub retries: u64,
    /// Failed calls by gRPC code name (or WRONG_REPLY).
    pub errors: BTreeMap<&'static str, u64>,
    /// Wall time from the first call to the last reply.
    pub elapsed: Duration,
    /// Latency of successful calls, in microseconds.
    pub latency: Histogram<u64>,
    /// How busy this process kept the CPUs it may use, from 0 to 1, over the run.
    pub client_cpu: f64,
}

/// Above this share of its CPUs busy, the client, not the server, set the pace.
const CLIENT_BOUND: f64 = 0.9;

impl Report {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// Whether the client itself was the bottleneck: the rate is then the client's, and the
    /// server may be faster.
    pub fn client_bound(&self) -> bool {
        self.client_cpu >= CLIENT_BOUND
    }

    /// The report as `client bench --json` prints it.
    pub fn to_json(&self) -> serde_json::Value {
        let latency = &self.latency;
        serde_json::json!({
            "requests": self.requests,
            "retries": self.retries,
            "errors": self.errors,
            "rps": self.rps(),
            "client_cpu": self.client_cpu,
            "client_bound": self.client_bound(),
            "latency_us": {
                "min": latency.min(),
                "p50": latency.value_at_quantile(0.5),
                "p90": latency.value_at_quantile(0.9),
                "p99": latency.value_at_quantile(0.99),
                "p999": latency.value_at_quantile(0.999),
                "max": latency.max(),
            },
        })
    }

    /// The report as a few aligned lines for people.
    pub fn to_text(&self) -> String {
        let latency = &self.latency;
        let errors: u64 = self.errors.values().sum();
        let mut text = format!(
            "requests     {}\nelapsed      {:.2} s\nrps          {:.0}\nretries      {}\nerrors       {errors}\n",
            self.requests,
            self.elapsed.as_secs_f64(),
            self.rps(),
            self.retries,
        );
        for (code, count) in &self.errors {
            text.push_str(&format!("  {code:<18} {count}\n"));
        }
        if self.client_bound() {
            text.push_str(&format!(
                "client-bound: this client kept {:.0}% of its CPUs busy, so the rate is its own; \
                 the server may be faster (give the client more CPUs, or run several)\n",
                self.client_cpu * 100.0
            ));
        }
        text.push_str(&format!(
            "latency (us) min {}  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}\n",
            latency.min(),
            latency.value_at_quantile(0.5),
            latency.value_at_quantile(0.9),
            latency.value_at_quantile(0.99),
            latency.value_at_quantile(0.999),
            latency.max(),
        ));
        text
    }
}

/// When calls may start and when the run is over; shared by all workers.
struct Plan {
    started: Instant,
    /// Run until then (duration mode).
    until: Option<Instant>,
    /// Calls not yet claimed (requests mode).
    remaining: Option<AtomicU64>,
    /// Time between two calls of one worker, at a fixed rate.
    interval: Option<Duration>,
    /// Calls completed so far, for the progress bar.
    completed: AtomicU64,
}

impl Plan {
    /// Claims the next call of a worker that has made `made` calls. `None`: the run is over.
    /// `Some(due)`: when the call is due (`None` when there is no fixed rate).
    fn next(&self, worker: u32, workers: u32, made: u64) -> Option<Option<Instant>> {
        let due = self.interval.map(|interval| {
            // Workers are staggered across one interval so the rate is smooth.
            self.started + interval.mul_f64(made as f64 + f64::from(worker) / f64::from(workers))
        });
        if self
            .until
            .is_some_and(|until| due.unwrap_or_else(Instant::now) >= until)
        {
            return None;
        }
        if let Some(remaining) = &self.remaining {
            remaining
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                    left.checked_sub(1)
                })
                .ok()?;
        }
        Some(due)
    }
}

/// One worker's part of the plan.
struct Share {
    plan: Arc<Plan>,
    worker: u32,
    workers: u32,
}

impl Share {
    /// Claims this worker's next call, after `made` calls (see [`Plan::next`]).
    fn next(&self, made: u64) -> Option<Option<Instant>> {
        self.plan.next(self.worker, self.workers, made)
    }

    fn completed(&self) {
        self.plan.completed.fetch_add(1, Ordering::Relaxed);
    }
}

/// What one worker saw.
struct Tally {
    requests: u64,
    errors: BTreeMap<&'static str, u64>,
    latency: Histogram<u64>,
}

impl Tally {
    fn new() -> Self {
        Self {
            requests: 0,
            errors: BTreeMap::new(),
            latency: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid bounds"),
        }
    }

    fn record(&mut self, since: Instant, outcome: Result<bool, &Status>) {
        self.requests += 1;
        match outcome {
            Ok(true) => {
                let micros = since
                    .elapsed()
                    .as_micros()
                    .clamp(1, u128::from(MAX_LATENCY_US));
                self.latency.saturating_record(micros as u64);
            }
            Ok(false) => *self.errors.entry(WRONG_REPLY).or_default() += 1,
            Err(status) => *self.errors.entry(code_name(status.code())).or_default() += 1,
        }
    }
}

/// A load: how many calls, how, and what they carry.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// HTTP/2 connections to spread the calls over.
    pub connections: u32,
    /// Calls in flight at any time (streams, with `stream`).
    pub concurrency: u32,
    /// How long to run; 10 s when neither this nor `requests` is given.
    pub duration: Option<Duration>,
    /// Calls to make in all.
    pub requests: Option<u64>,
    /// The text of every request.
    pub text: String,
    /// Messages over long-lived DoFormatStream streams instead of unary calls.
    pub stream: bool,
    /// Calls per second to aim for, in all (open loop).
    pub rate: Option<f64>,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            connections: 1,
            concurrency: 1,
            duration: None,
            requests: None,
            text: super::DEFAULT_TEXT.to_owned(),
            stream: false,
            rate: None,
        }
    }
}

/// `bytes` bytes of lowercase ASCII words, for loads of a given size.
pub fn ascii_payload(bytes: usize) -> String {
    "abcdefghijklmnopqrstuvwxyz "
        .chars()
        .cycle()
        .take(bytes)
        .collect()
}

/// Runs the load `bench` describes, against the servers and with the connection settings of
/// `client`.
pub async fn run(client: &ClientConfig, bench: &BenchConfig) -> Result<Report, ClientError> {
    let text = bench.text.clone();
    let expected: Arc<str> = uppercase(text.clone()).into();
    // One tracer for the run, whatever the number of connections.
    let tracing = Tracing::start(client.otlp_endpoint.as_ref(), "formatdata-client")?;
    let mut connections = Vec::new();
    for _ in 0..bench.connections {
        connections.push(Client::connect_traced(client, tracing.clone()).await?);
    }

    let duration = bench
        .duration
        .or(bench.requests.is_none().then_some(DEFAULT_DURATION));
    let cpu_before = process_cpu_time();
    let started = Instant::now();
    let plan = Arc::new(Plan {
        started,
        until: duration.map(|duration| started + duration),
        remaining: bench.requests.map(AtomicU64::new),
        interval: bench
            .rate
            .map(|rate| Duration::from_secs_f64(f64::from(bench.concurrency) / rate)),
        completed: AtomicU64::new(0),
    });
    let progress = progress_bar(bench, duration, plan.clone());

    // Plain unary calls to one server take the lean path (see `RawUnary`); TLS, compression,
    // streams and balancing over several servers need tonic's client and `Client`'s retries.
    let raw_server = client
        .single_server()
        .filter(|_| !bench.stream && client.tls.is_none() && client.compression.is_none());
    let mut raw_connections = Vec::new();
    if let Some(server) = raw_server {
        for spans in &connections {
            raw_connections
                .push(RawUnary::connect(client, server, &text, &expected, spans.clone()).await?);
        }
    }
    let workers: Vec<_> = (0..bench.concurrency)
        .map(|worker| {
            let connection = (worker % bench.connections) as usize;
            let client = connections[connection].clone();
            let (text, expected) = (text.clone(), expected.clone());
            let share = Share {
                plan: plan.clone(),
                worker,
                workers: bench.concurrency,
            };
            if raw_server.is_some() {
                tokio::spawn(raw_unary_worker(raw_connections[connection].clone(), share))
            } else if bench.stream {
                tokio::spawn(stream_worker(client, share, text, expected))
            } else {
                tokio::spawn(unary_worker(client, share, text, expected))
            }
        })
        .collect();

    let mut report = Report {
        requests: 0,
        retries: 0,
        errors: BTreeMap::new(),
        elapsed: Duration::ZERO,
        latency: Tally::new().latency,
        client_cpu: 0.0,
    };
    for worker in workers {
        let tally = worker.await.expect("bench workers do not panic");
        report.requests += tally.requests;
        for (code, count) in tally.errors {
            *report.errors.entry(code).or_default() += count;
        }
        report.latency.add(&tally.latency).expect("same bounds");
    }
    report.elapsed = started.elapsed();
    let cpus = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    report.client_cpu = (process_cpu_time() - cpu_before).as_secs_f64()
        / (report.elapsed.as_secs_f64() * cpus).max(f64::EPSILON);
    // Clones share one count: the first of each connection's clients has them all.
    report.retries = connections.iter().map(Client::retried).sum();
    progress.abort();
    tracing.shutdown().await;
    Ok(report)
}

/// CPU time this process has used, user and system.
fn process_cpu_time() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(Duration::ZERO, |usage| {
        let time = |t: nix::sys::time::TimeVal| {
            Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000)
        };
        time(usage.user_time()) + time(usage.system_time())
    })
}

async fn unary_worker(client: Client, share: Share, text: String, expected: Arc<str>) -> Tally {
    let stub = client.format_data();
    let mut tally = Tally::new();
    while let Some(due) = share.next(tally.requests) {
        let since = wait_until(due).await;
        let outcome = client.do_format(&stub, &text).await;
        tally.record(
            since,
            outcome.as_ref().map(|reply| *reply.text == *expected),
        );
        share.completed();
    }
    tally
}

/// Unary DoFormat straight over an h2 connection: the request framed once and reused, the reply
/// compared byte for byte with the one expected. A load generator must cost less than the
/// server it loads; tonic's channel (a buffer task, codec streams, boxed bodies per call) and
/// even hyper's client (a channel hop to the connection task per call) cost about as much per
/// call as our server does; h2's own client API costs a fraction (see CONTRIBUTING.md).
#[derive(Clone)]
struct RawUnary {
    sender: h2::client::SendRequest<Bytes>,
    uri: http::Uri,
    /// The framed request: compression flag, length, `Data { text }`.
    request: Bytes,
    /// The framed reply a correct server sends.
    expected: Bytes,
    /// The uppercase text, for replies encoded differently but equal.
    expected_text: Arc<str>,
    headers: http::HeaderMap,
    /// `--timeout`: how long one call may take, from asking for a stream to the trailers.
    timeout: Duration,
    /// Makes each call's span, as for the calls through tonic.
    spans: Client,
}

impl RawUnary {
    async fn connect(
        args: &ClientConfig,
        server: &HostPort,
        text: &str,
        expected: &Arc<str>,
        spans: Client,
    ) -> Result<Self, ClientError> {
        let connect_error = |reason: String| ClientError::Connect {
            addr: server.clone(),
            reason,
        };
        let tcp = tokio::time::timeout(
            args.timeout,
            tokio::net::TcpStream::connect((server.host.as_str(), server.port)),
        )
        .await
        .map_err(|_| connect_error(format!("no connection within {:?}", args.timeout)))?
        .map_err(|error| connect_error(error.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let (sender, connection) = h2::client::handshake(tcp)
            .await
            .map_err(|error| connect_error(error.to_string()))?;
        tokio::spawn(connection);

        let mut headers = http::HeaderMap::new();
        headers.insert(CONTENT_TYPE, grpc::GRPC_CONTENT_TYPE);
        headers.insert("te", HeaderValue::from_static("trailers"));
        headers.insert(timeout::GRPC_TIMEOUT, timeout::write(args.timeout));
        if let Some(token) = &args.auth_token {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| ClientError::BadToken)?;
            headers.insert(AUTHORIZATION, value);
        }
        Ok(Self {
            sender,
            uri: format!("http://{server}{}", service::do_format_path())
                .parse()
                .map_err(|error: http::uri::InvalidUri| connect_error(error.to_string()))?,
            request: framed(text),
            expected: framed(expected),
            expected_text: expected.clone(),
            headers,
            timeout: args.timeout,
            spans,
        })
    }

    /// One call: `Ok(true)` for the right reply, `Ok(false)` for a wrong one. A call that takes
    /// longer than `--timeout` is DEADLINE_EXCEEDED, as through `Client`: the server sees
    /// `grpc-timeout`, but one that stalls must not stall the run.
    async fn call(&self) -> Result<bool, Status> {
        self.spans
            .traced(self.uri.path(), |trace| async move {
                tokio::time::timeout(self.timeout, self.attempt(trace))
                    .await
                    .unwrap_or_else(|_| Err(no_reply_within(self.timeout)))
            })
            .await
    }

    async fn attempt(&self, trace: TraceHeaders) -> Result<bool, Status> {
        let unavailable = |error: h2::Error| Status::unavailable(error.to_string());
        let mut request = http::Request::new(());
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = self.uri.clone();
        let mut headers = self.headers.clone();
        headers.extend(trace.0);
        *request.headers_mut() = headers;
        // Waits while the connection is at its concurrent-stream limit.
        let mut sender = self.sender.clone().ready().await.map_err(unavailable)?;
        let (response, mut body) = sender.send_request(request, false).map_err(unavailable)?;
        body.send_data(self.request.clone(), true)
            .map_err(unavailable)?;
        let (head, mut reply) = response.await.map_err(unavailable)?.into_parts();
        if let Some(status) = reply_status(&head.headers) {
            // Trailers-only: the call failed before any reply.
            return Err(status);
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = reply.data().await {
            let chunk = chunk.map_err(unavailable)?;
            let _ = reply.flow_control().release_capacity(chunk.len());
            body.extend_from_slice(&chunk);
        }
        let status = reply
            .trailers()
            .await
            .map_err(unavailable)?
            .as_ref()
            .and_then(reply_status)
            .unwrap_or_else(|| Status::unknown("reply without grpc-status"));
        if status.code() != tonic::Code::Ok {
            return Err(status);
        }
        Ok(body == self.expected
            || Prefix::read(&body).is_some()
                && Data::decode(&body[PREFIX_LEN..])
                    .is_ok_and(|data| *data.text == *self.expected_text))
    }
}

/// A gRPC frame holding `Data { text }`.
fn framed(text: &str) -> Bytes {
    framing::frame(&Data {
        text: text.to_owned(),
    })
}

async fn raw_unary_worker(raw: RawUnary, share: Share) -> Tally {
    let mut tally = Tally::new();
    while let Some(due) = share.next(tally.requests) {
        let since = wait_until(due).await;
        let outcome = raw.call().await;
        tally.record(since, outcome.as_ref().copied());
        share.completed();
    }
    tally
}

/// Ping-pong over one long-lived stream: send a message, wait for its reply, repeat. A broken
/// stream is counted as an error and replaced. Each stream is one span: it ends with the
/// stream's error, or OK when the run is over.
async fn stream_worker(client: Client, share: Share, text: String, expected: Arc<str>) -> Tally {
    let mut stub = client.format_data();
    let mut tally = Tally::new();
    let mut stream = None;
    while let Some(due) = share.next(tally.requests) {
        let since = wait_until(due).await;
        let outcome = async {
            if stream.is_none() {
                let (span, trace) = client.start_span(service::format_data_path("DoFormatStream"));
                let (sender, receiver) = mpsc::channel(1);
                let replies = stub
                    .do_format_stream(client.stream_request(ReceiverStream::new(receiver), &trace))
                    .await?
                    .into_inner();
                stream = Some((sender, replies, span));
            }
            let (sender, replies, _) = stream.as_mut().expect("just opened");
            let sent = sender.send(Data { text: text.clone() }).await;
            if sent.is_err() {
                return Err(Status::unavailable("stream closed"));
            }
            match replies.message().await? {
                Some(reply) => Ok(*reply.text == *expected),
                None => Err(Status::unavailable("stream ended early")),
            }
        }
        .await;
        if let Err(status) = &outcome
            && let Some((_, _, Some(span))) = stream.take()
        {
            span.end(status.code(), status.message());
        }
        tally.record(since, outcome.as_ref().copied());
        share.completed();
    }
    if let Some((_, _, Some(span))) = stream {
        span.end(tonic::Code::Ok, "");
    }
    tally
}

/// Waits until `due` (if any); returns when the call counts as started.
///
/// A worker already late when its call falls due was held up by slow replies: the call counts
/// from when it was due, so the server's stall shows in the latency (coordinated omission). A
/// worker that had to sleep counts from when it woke, so the timer's own millisecond
/// granularity is not blamed on the server.
async fn wait_until(due: Option<Instant>) -> Instant {
    match due {
        Some(due) if due > Instant::now() => {
            tokio::time::sleep_until(due).await;
            Instant::now()
        }
        Some(due) => due,
        None => Instant::now(),
    }
}

/// A progress bar on stderr, updated ten times a second; indicatif hides it when stderr is not
/// a terminal. Abort the returned task to stop it.
fn progress_bar(
    bench: &BenchConfig,
    duration: Option<Duration>,
    plan: Arc<Plan>,
) -> tokio::task::JoinHandle<()> {
    let (length, style) = match (duration, bench.requests) {
        (Some(duration), _) => (
            duration.as_millis() as u64,
            "{bar:40} {elapsed}/{duration} {msg}",
        ),
        (None, requests) => (requests.unwrap_or(0), "{bar:40} {pos}/{len} calls {msg}"),
    };
    let bar = ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr());
    bar.set_style(ProgressStyle::with_template(style).expect("valid template"));
    let by_time = duration.is_some();
    tokio::spawn(async move {
        let _clear = ClearOnDrop(bar.clone());
        let mut ticks = tokio::time::interval(Duration::from_millis(100));
        loop {
            ticks.tick().await;
            let completed = plan.completed.load(Ordering::Relaxed);
            let elapsed = plan.started.elapsed();
            bar.set_position(if by_time {
                elapsed.as_millis() as u64
            } else {
                completed
            });
            bar.set_message(format!(
                "{completed} calls, {:.0}/s",
                completed as f64 / elapsed.as_secs_f64().max(0.001)
            ));
        }
    })
}

/// Clears the progress bar when its task is aborted.
struct ClearOnDrop(ProgressBar);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
