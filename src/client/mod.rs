//! The client side: call a FormatData server (DoFormat, health, reflection) with timeouts,
//! retries, TLS, a bearer token and compression, turning every failure into an error that names
//! the server or the gRPC status, ready for a one-line message.

mod balance;
#[cfg(feature = "cli")]
pub mod bench;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::FutureExt;
use prost::Message;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataValue;
use tonic::transport::Endpoint;
use tonic::{Code, Request, Response, Status, TimeoutExpired};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::addr::{DEFAULT_ADDR, HostPort, Target};
use crate::client::balance::{Address, Balancer, Connector, Unreachable, root_cause};
use crate::grpc::methods;
use crate::grpc::status::code_name;
use crate::otel::{self, CallSpan, Tracing, TracingError};
use crate::pb::Data;
use crate::pb::format_data_client::FormatDataClient;
use crate::service;
use crate::tls::{self, TlsError};

/// First pause before retrying an UNAVAILABLE call; doubled after each attempt.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// Longest pause between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How long a connection may hear nothing from its server before the client pings it, and how
/// long that ping may then go unanswered before the connection counts as dead. A `--stream` has
/// no deadline, and a server that vanished without closing (its host gone, a network partition,
/// a frozen process) would otherwise hold it until TCP gives up, hours later; with these it
/// fails within about 30 s. Idle connections are pinged too, so a call is not the first to find
/// one dead. Not more often: gRPC Core and grpc-go servers may close a connection pinged much
/// more often than every 5 minutes while it carries no call, as abusive (a grpcio 1.85 server
/// kept a `--stream` open through 100 s of these pings without a message); ours does not
/// police pings.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(20);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a call did not produce a reply.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No HTTP/2 connection could be made: nothing listening, a name that does not resolve, a
    /// failed TLS handshake.
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: HostPort, reason: String },
    /// The connection broke during the call: the server went away.
    #[error("lost the connection to {addr}: {reason}")]
    ConnectionLost { addr: HostPort, reason: String },
    /// A stream failed after some of its replies were written.
    #[error("{error}; {received} lines were answered before")]
    StreamBroken {
        error: Box<ClientError>,
        received: u64,
    },
    /// The server answered with a status other than OK.
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Status(#[from] Status),
    /// The TLS flags name files that cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The token cannot be sent as an HTTP header.
    #[error("FORMATDATA_AUTH_TOKEN contains characters not allowed in a header")]
    BadToken,
    /// Tracing is asked for but cannot be set up.
    #[error(transparent)]
    Tracing(#[from] TracingError),
    /// The server's reflection service answered something other than what was asked.
    #[error("unexpected reflection reply: {0}")]
    Reflection(String),
    /// A line of the input to stream cannot be sent: it is not UTF-8 (protobuf strings must be).
    #[error("input line {line} is not UTF-8")]
    NotUtf8 { line: u64 },
    /// A line of the input to stream is too long to send as one message; found while reading it,
    /// without reading the rest.
    #[error("input line {line} is longer than the {limit}-byte message limit")]
    LineTooLong { line: u64, limit: usize },
    /// Reading the input or writing the replies failed.
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        source: std::io::Error,
    },
    /// A stream ended cleanly but without a reply for every request.
    #[error("the server replied to {received} of {sent} lines")]
    Incomplete { received: u64, sent: u64 },
}

/// What the client sends when given no text: the tutorial's greeting.
pub const DEFAULT_TEXT: &str = "hello,world!";

/// How the client calls its servers, as the library takes it: plain fields with defaults, so
/// the binary (from its flags, in `crate::cli`) and the tests build it alike.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The servers: addresses, or DNS names for every address they resolve to.
    pub targets: Vec<Target>,
    /// How long each attempt may take, from connecting to the last byte of the reply.
    pub timeout: Duration,
    /// Retries of a call that failed with UNAVAILABLE.
    pub retries: u32,
    /// Speak TLS, with these files; plaintext when `None`.
    pub tls: Option<ClientTls>,
    /// Compress requests with this, and accept it for replies.
    pub compression: Option<CompressionEncoding>,
    /// Sent as `authorization: Bearer <token>`.
    pub auth_token: Option<String>,
    /// Largest request and reply, in bytes.
    pub max_message_bytes: usize,
    /// Export a span per call to this OTLP/gRPC collector; `None`: spans are only made, for the
    /// `traceparent` each call carries.
    pub otlp_endpoint: Option<http::Uri>,
    /// The caller's trace context (`TRACEPARENT`, `TRACESTATE` for scripts): calls join that
    /// trace rather than each starting one.
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

impl ClientConfig {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    pub const DEFAULT_RETRIES: u32 = 3;

    /// The one server to call, when the targets name exactly one and no DNS name to expand.
    pub fn single_server(&self) -> Option<&HostPort> {
        match self.targets.as_slice() {
            [Target::Server(addr)] => Some(addr),
            _ => None,
        }
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            targets: vec![Target::Server(
                DEFAULT_ADDR.parse().expect("the default address parses"),
            )],
            timeout: Self::DEFAULT_TIMEOUT,
            retries: Self::DEFAULT_RETRIES,
            tls: None,
            compression: None,
            auth_token: None,
            max_message_bytes: crate::server::ServerConfig::DEFAULT.max_message_bytes,
            otlp_endpoint: None,
            traceparent: None,
            tracestate: None,
        }
    }
}

/// The client's TLS files and the name to expect.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// CA certificate to verify the server with; the system's roots otherwise.
    pub ca: Option<PathBuf>,
    /// Client certificate and key, for mutual TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// Name expected in the server's certificate, when not the host called.
    pub domain: Option<String>,
}

/// Channels to the FormatData servers, and how to call them.
#[derive(Debug, Clone)]
pub struct Client {
    /// Spreads calls over the servers; each channel connects on first use and reconnects after
    /// failures.
    channel: Balancer,
    /// Deadline of each attempt, sent as `grpc-timeout` so the server gives up too.
    timeout: Duration,
    /// Extra attempts after an UNAVAILABLE failure.
    retries: u32,
    /// `Bearer <token>` for the `authorization` header.
    authorization: Option<MetadataValue<tonic::metadata::Ascii>>,
    /// Compression of requests, also offered for replies.
    compression: Option<CompressionEncoding>,
    /// Largest request and reply, in bytes (`--max-message-bytes`).
    max_message_bytes: usize,
    /// Attempts repeated after UNAVAILABLE (failovers included) by this client and its clones,
    /// for `client bench`'s report.
    retried: Arc<AtomicU64>,
    /// Makes each call's span, whose `traceparent` the call carries.
    tracing: Tracing,
    /// The trace calls join, or none (each call its own).
    trace_parent: opentelemetry::Context,
    /// `host:port` of the one server called, for the spans.
    server: Option<String>,
}

impl From<Unreachable> for ClientError {
    fn from(unreachable: Unreachable) -> Self {
        let Unreachable {
            addr,
            reason,
            connecting,
        } = unreachable;
        match connecting {
            true => Self::Connect { addr, reason },
            false => Self::ConnectionLost { addr, reason },
        }
    }
}

impl Client {
    /// A client for the servers `config` names: `dns:///` names are resolved now, but nothing
    /// is sent until the first call.
    pub async fn connect(config: &ClientConfig) -> Result<Self, ClientError> {
        let tracing = Tracing::start(config.otlp_endpoint.as_ref(), "formatdata-client")?;
        Self::connect_traced(config, tracing).await
    }

    /// [`Client::connect`], its spans made by `tracing` (shared by the clients of a bench).
    pub(crate) async fn connect_traced(
        config: &ClientConfig,
        tracing: Tracing,
    ) -> Result<Self, ClientError> {
        let tls = match &config.tls {
            Some(files) => Some(tls::client_config(
                files.ca.as_deref(),
                files
                    .identity
                    .as_ref()
                    .map(|(cert, key)| (cert.as_path(), key.as_path())),
                files.domain.as_deref(),
            )?),
            None => None,
        };
        let timeout = config.timeout;
        let explicit_domain = config.tls.as_ref().is_some_and(|tls| tls.domain.is_some());
        let connector: Connector = Arc::new(move |address: &Address| {
            let scheme = if tls.is_some() { "https" } else { "http" };
            let uri = |addr: &HostPort| format!("{scheme}://{addr}");
            let mut endpoint = Endpoint::from_shared(uri(&address.connect))
                .map_err(|err| err.to_string())?
                .connect_timeout(timeout)
                .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
                .keep_alive_timeout(KEEPALIVE_TIMEOUT)
                .keep_alive_while_idle(true);
            if address.name != address.connect {
                // Reached by a resolved IP, known by its name: `:authority` carries the name.
                let origin = uri(&address.name).parse().map_err(|err| format!("{err}"))?;
                endpoint = endpoint.origin(origin);
            }
            if let Some(tls) = &tls {
                let tls = match explicit_domain {
                    true => tls.clone(),
                    false => tls.clone().domain_name(address.name.host.clone()),
                };
                endpoint = endpoint.tls_config(tls).map_err(|err| root_cause(&err))?;
            }
            Ok(endpoint.connect_lazy())
        });
        let authorization = config
            .auth_token
            .as_ref()
            .map(|token| format!("Bearer {token}").parse())
            .transpose()
            .map_err(|_| ClientError::BadToken)?;
        Ok(Self {
            channel: Balancer::new(&config.targets, connector).await?,
            timeout: config.timeout,
            retries: config.retries,
            authorization,
            compression: config.compression,
            max_message_bytes: config.max_message_bytes,
            retried: Arc::default(),
            tracing,
            trace_parent: otel::remote_parent(
                config.traceparent.as_deref(),
                config.tracestate.as_deref(),
            ),
            server: config.single_server().map(ToString::to_string),
        })
    }

    /// Sends the spans not yet exported, waiting a few seconds at most; calls after this are
    /// not traced.
    pub async fn flush_traces(&self) {
        self.tracing.clone().shutdown().await;
    }

    /// Runs `call` in a client span for `path`, handing it the headers that carry the span to
    /// the server; the span ends with the call's status.
    pub(crate) async fn traced<T, F, Fut>(&self, path: &str, call: F) -> Result<T, Status>
    where
        F: FnOnce(TraceHeaders) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let (span, trace) = self.start_span(path);
        let outcome = call(trace).await;
        if let Some(span) = span {
            span.end_with(&outcome);
        }
        outcome
    }

    /// A client span for a call to `path`, and the headers that carry it.
    pub(crate) fn start_span(&self, path: &str) -> (Option<CallSpan>, TraceHeaders) {
        match methods::served().find(path) {
            Some(method) => {
                let (span, headers) =
                    self.tracing
                        .client_span(method, self.server.as_deref(), &self.trace_parent);
                (span, TraceHeaders(headers))
            }
            None => (None, TraceHeaders::default()),
        }
    }

    /// The generated stub on this channel, with the message limit and compression settings.
    pub(crate) fn format_data(&self) -> FormatDataClient<Balancer> {
        let stub = FormatDataClient::new(self.channel.clone())
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes);
        match self.compression {
            Some(encoding) => stub.send_compressed(encoding).accept_compressed(encoding),
            None => stub,
        }
    }

    /// Calls `DoFormat` and returns the formatted text.
    pub async fn format(&self, text: &str) -> Result<String, ClientError> {
        self.do_format(&self.format_data(), text)
            .await
            .map(|reply| reply.text)
            .map_err(|status| self.error(status))
    }

    /// `DoFormat` through `stub`, with retries; the gRPC status of the last attempt on failure.
    pub(crate) async fn do_format(
        &self,
        stub: &FormatDataClient<Balancer>,
        text: &str,
    ) -> Result<Data, Status> {
        let message = Data {
            text: text.to_owned(),
        };
        // Checked here because the stub's own check (`max_encoding_message_size`) fails the call
        // as a reset stream, "INTERNAL: h2 protocol error".
        let len = message.encoded_len();
        if len > self.max_message_bytes {
            return Err(Status::resource_exhausted(format!(
                "the request is {len} bytes, over the {}-byte message limit",
                self.max_message_bytes
            )));
        }
        self.traced(service::do_format_path(), |trace| {
            self.with_retries(move || {
                let mut stub = stub.clone();
                let request = self.request(message.clone(), &trace);
                async move { stub.do_format(request).await.map(Response::into_inner) }
            })
        })
        .await
    }

    /// The servers calls are spread over (after DNS resolution), with whether each is up.
    pub fn servers(&self) -> Vec<(HostPort, bool)> {
        self.channel.servers()
    }

    /// Retries made so far, by this client and its clones.
    pub fn retried(&self) -> u64 {
        self.retried.load(Ordering::Relaxed)
    }

    /// Streams `input` line by line through `DoFormatStream` and writes each reply to `output`
    /// as it arrives; returns the number of lines.
    ///
    /// Each line is sent with its line ending, so the output is exactly the uppercase of the
    /// input, a last line without newline included. Memory stays bounded whatever the input's
    /// length: at most [`LINES_IN_FLIGHT`] lines wait to be sent, HTTP/2 flow control holds the
    /// rest, and a line too long to send is an error as soon as it has been read that far. Every
    /// reply written was received; if the stream breaks, the error says so after the replies
    /// that did arrive. No deadline and no retry: a stream is not repeatable; keepalive pings
    /// notice a server that stopped answering.
    pub async fn format_lines<R, W>(&self, input: R, output: W) -> Result<u64, ClientError>
    where
        R: AsyncBufRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin,
    {
        let (span, trace) = self.start_span(service::format_data_path("DoFormatStream"));
        let outcome = self.stream_lines(input, output, &trace).await;
        if let Some(span) = span {
            match &outcome {
                Ok(_) => span.end(Code::Ok, ""),
                Err(ClientError::Status(status)) => span.end(status.code(), status.message()),
                Err(ClientError::StreamBroken { error, .. }) => match error.as_ref() {
                    ClientError::Status(status) => span.end(status.code(), status.message()),
                    other => span.end(Code::Unavailable, &other.to_string()),
                },
                Err(other) => span.end(Code::Unknown, &other.to_string()),
            }
        }
        outcome
    }

    async fn stream_lines<R, W>(
        &self,
        input: R,
        mut output: W,
        trace: &TraceHeaders,
    ) -> Result<u64, ClientError>
    where
        R: AsyncBufRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin,
    {
        let write_error = |source| ClientError::Io {
            context: "cannot write the replies",
            source,
        };
        let (lines, requests) = mpsc::channel(LINES_IN_FLIGHT);
        let reader = tokio::spawn(read_lines(input, lines, self.max_message_bytes));
        let request = self.stream_request(ReceiverStream::new(requests), trace);
        let mut replies = self
            .format_data()
            .do_format_stream(request)
            .await
            .map_err(|status| self.error(status))?
            .into_inner();

        let mut received = 0;
        loop {
            // Flush only when no reply is waiting: one write per burst, not per line, yet each
            // reply reaches the pipe as soon as the stream pauses.
            let next = match replies.message().now_or_never() {
                Some(next) => next,
                None => {
                    output.flush().await.map_err(write_error)?;
                    replies.message().await
                }
            };
            match next {
                Ok(Some(reply)) => {
                    output
                        .write_all(reply.text.as_bytes())
                        .await
                        .map_err(write_error)?;
                    received += 1;
                }
                Ok(None) => break,
                Err(status) => {
                    output.flush().await.map_err(write_error)?;
                    return Err(ClientError::StreamBroken {
                        error: Box::new(self.error(status)),
                        received,
                    });
                }
            }
        }
        output.flush().await.map_err(write_error)?;
        let sent = reader.await.expect("the line reader does not panic")?;
        if received != sent {
            return Err(ClientError::Incomplete { received, sent });
        }
        Ok(received)
    }

    /// Asks the health service about `service` ("" for the whole server) and returns the
    /// status name: SERVING, NOT_SERVING, ...
    pub async fn health(&self, service: &str) -> Result<&'static str, ClientError> {
        let stub = HealthClient::new(self.channel.clone());
        let reply = self
            .traced("/grpc.health.v1.Health/Check", |trace| {
                self.with_retries(move || {
                    let mut stub = stub.clone();
                    let request = self.request(
                        HealthCheckRequest {
                            service: service.to_owned(),
                        },
                        &trace,
                    );
                    async move { stub.check(request).await.map(Response::into_inner) }
                })
            })
            .await
            .map_err(|status| self.error(status))?;
        Ok(reply.status().as_str_name())
    }

    /// The names of the services the server offers, through gRPC reflection (v1).
    pub async fn list_services(&self) -> Result<Vec<String>, ClientError> {
        let stub = ServerReflectionClient::new(self.channel.clone());
        let reply = self
            .traced(
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                |trace| {
                    self.with_retries(move || {
                        let mut stub = stub.clone();
                        let request = self.request(
                            tokio_stream::once(ServerReflectionRequest {
                                host: String::new(),
                                message_request: Some(MessageRequest::ListServices(String::new())),
                            }),
                            &trace,
                        );
                        async move {
                            let mut replies =
                                stub.server_reflection_info(request).await?.into_inner();
                            replies.message().await
                        }
                    })
                },
            )
            .await
            .map_err(|status| self.error(status))?
            .ok_or_else(|| ClientError::Reflection("no reply".into()))?;
        match reply.message_response {
            Some(MessageResponse::ListServicesResponse(list)) => Ok(list
                .service
                .into_iter()
                .map(|service| service.name)
                .collect()),
            Some(MessageResponse::ErrorResponse(error)) => {
                Err(Status::new(Code::from_i32(error.error_code), error.error_message).into())
            }
            other => Err(ClientError::Reflection(format!("{other:?}"))),
        }
    }

    /// A streaming request: the token and the trace, but no deadline, as a stream may rightly
    /// run for hours.
    pub(crate) fn stream_request<S>(&self, messages: S, trace: &TraceHeaders) -> Request<S> {
        let mut request = Request::new(messages);
        if let Some(authorization) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", authorization.clone());
        }
        trace.add_to(request.metadata_mut());
        request
    }

    /// A request carrying the deadline, the token and the trace.
    pub(crate) fn request<T>(&self, message: T, trace: &TraceHeaders) -> Request<T> {
        let mut request = self.stream_request(message, trace);
        request.set_timeout(self.timeout);
        request
    }

    /// Runs `call`, again after an UNAVAILABLE failure (a server down or restarting), up to
    /// `retries` times, only for idempotent calls, which all of ours are. Each attempt has
    /// `--timeout` from connecting to the last byte of its reply.
    ///
    /// A call whose connection could not even be made sent nothing: it goes to the next server
    /// at once, once per server, without counting as a retry (gRPC's "transparent retry"), so
    /// one dead server among several costs no call even with `--retries 0`. A retry goes to
    /// another server at once when one is up; otherwise it waits, with exponential backoff and
    /// jitter, so restarted servers are not hit by every client at once.
    async fn with_retries<T, F, Fut>(&self, mut call: F) -> Result<T, Status>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let mut backoff = FIRST_BACKOFF;
        let (mut retries, mut failovers) = (0, 0);
        loop {
            // The whole attempt, not only its start: tonic's channel enforces the deadline it
            // sends (`grpc-timeout`) only until the reply's headers, so a server that sends them
            // and then stalls held the call, and a `client health` exec probe, forever.
            let status = match tokio::time::timeout(self.timeout, call()).await {
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(status)) if status.code() == Code::Unavailable => status,
                Ok(Err(status)) if is_local_deadline(&status) => {
                    return Err(no_reply_within(self.timeout));
                }
                Ok(Err(status)) => return Err(standard_code(status)),
                Err(_elapsed) => return Err(no_reply_within(self.timeout)),
            };
            let unreachable = unreachable(&status);
            let elsewhere = unreachable.is_some() && self.channel.any_up();
            if elsewhere
                && unreachable.is_some_and(|server| server.connecting)
                && failovers < self.channel.server_count()
            {
                failovers += 1;
                self.retried.fetch_add(1, Ordering::Relaxed);
                tracing::debug!("{}; trying the next server", status.message());
                continue;
            }
            if retries == self.retries {
                return Err(status);
            }
            retries += 1;
            self.retried.fetch_add(1, Ordering::Relaxed);
            if elsewhere {
                tracing::debug!("{}; retrying on another server", status.message());
                continue;
            }
            // Half fixed, half random: spread out, yet never back-to-back.
            let pause = backoff / 2 + backoff.mul_f64(fastrand::f64() / 2.0);
            tracing::debug!("{}; retrying in {pause:?}", status.message());
            tokio::time::sleep(pause).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// The error to report for a failed call.
    pub(crate) fn error(&self, status: Status) -> ClientError {
        let status = standard_code(status);
        // The balancer reports a connection that failed as UNAVAILABLE, naming the server: say
        // so in those words rather than as a status.
        if let Some(unreachable) = unreachable(&status) {
            return unreachable.clone().into();
        }
        status.into()
    }
}

/// How many lines may be read ahead of what the server has taken.
pub const LINES_IN_FLIGHT: usize = 64;

/// Sends each line of `input`, line ending included, as one request; returns how many. Fails
/// at the first line whose request would be over `max_message_bytes`, having read one byte of
/// it more than fits, not the whole line: a line may be any length, all of memory included.
async fn read_lines<R>(
    mut input: R,
    lines: mpsc::Sender<Data>,
    max_message_bytes: usize,
) -> Result<u64, ClientError>
where
    R: AsyncBufRead + Unpin,
{
    let longest = longest_line(max_message_bytes);
    let mut count = 0;
    loop {
        let mut line = Vec::new();
        let read = (&mut input)
            .take(longest as u64 + 1)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|source| ClientError::Io {
                context: "cannot read the input",
                source,
            })?;
        if read == 0 {
            return Ok(count);
        }
        count += 1;
        if line.len() > longest {
            return Err(ClientError::LineTooLong {
                line: count,
                limit: max_message_bytes,
            });
        }
        let text = String::from_utf8(line).map_err(|_| ClientError::NotUtf8 { line: count })?;
        if lines.send(Data { text }).await.is_err() {
            // The call ended early; its error is what gets reported.
            return Ok(count);
        }
    }
}

/// The longest line, in bytes, whose request fits in `max_message_bytes`: a line goes as
/// `Data { text: line }`, which adds a byte of field tag and the length to the text.
fn longest_line(max_message_bytes: usize) -> usize {
    (0..=max_message_bytes)
        .rev()
        .find(|&len| {
            len.checked_add(1 + prost::length_delimiter_len(len))
                .is_some_and(|request| request <= max_message_bytes)
        })
        .unwrap_or(0)
}

/// tonic's decoder reports a reply over the client's size limit as OUT_OF_RANGE, with this
/// message; gRPC calls that RESOURCE_EXHAUSTED (grpcio and grpc-go say so). Only that status is
/// changed: an OUT_OF_RANGE a server sends reaches the caller as it is.
const TONIC_REPLY_TOO_LARGE: &str = "Error, decoded message length too large";

fn standard_code(status: Status) -> Status {
    match status.code() {
        Code::OutOfRange if status.message().starts_with(TONIC_REPLY_TOO_LARGE) => {
            Status::resource_exhausted(status.message())
        }
        _ => status,
    }
}

/// The status of an attempt that ran out of time.
pub(crate) fn no_reply_within(timeout: Duration) -> Status {
    Status::deadline_exceeded(format!("no reply within {timeout:?}"))
}

/// tonic's channel enforces `grpc-timeout` itself but reports it as CANCELLED "Timeout expired";
/// gRPC (and every grpcio user) calls that DEADLINE_EXCEEDED.
fn is_local_deadline(status: &Status) -> bool {
    status.code() == Code::Cancelled && status.message() == TimeoutExpired(()).to_string()
}

/// The server a call could not reach, when that is why it failed.
fn unreachable(status: &Status) -> Option<&Unreachable> {
    std::error::Error::source(status)?.downcast_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tonics_own_size_limit_becomes_resource_exhausted() {
        let tonic = Status::out_of_range(format!("{TONIC_REPLY_TOO_LARGE}: found 9 bytes"));
        assert_eq!(standard_code(tonic).code(), Code::ResourceExhausted);
        let servers = Status::out_of_range("past the end");
        assert_eq!(standard_code(servers).code(), Code::OutOfRange);
    }

    #[test]
    fn the_longest_line_is_the_longest_whose_request_fits() {
        let request_len = |len: usize| {
            Data {
                text: "a".repeat(len),
            }
            .encoded_len()
        };
        for limit in (2..300).chain([16_385, 2_097_155, 4 * 1024 * 1024]) {
            let longest = longest_line(limit);
            assert!(request_len(longest) <= limit, "{limit}");
            assert!(request_len(longest + 1) > limit, "{limit}");
        }
        assert_eq!(longest_line(4 * 1024 * 1024), 4 * 1024 * 1024 - 5);
        assert_eq!(longest_line(1), 0);
        assert_eq!(longest_line(usize::MAX), usize::MAX - 11);
    }
}

/// The `traceparent` and `tracestate` of a call's span, for each of its attempts.
#[derive(Debug, Default)]
pub(crate) struct TraceHeaders(http::HeaderMap);

impl TraceHeaders {
    fn add_to(&self, metadata: &mut tonic::metadata::MetadataMap) {
        for (name, value) in &self.0 {
            if let (Ok(key), Ok(value)) = (
                tonic::metadata::AsciiMetadataKey::from_bytes(name.as_str().as_bytes()),
                MetadataValue::try_from(value.as_bytes()),
            ) {
                metadata.insert(key, value);
            }
        }
    }
}
