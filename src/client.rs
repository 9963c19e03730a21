//! The client side: call a FormatData server (DoFormat, health, reflection) with timeouts,
//! retries, TLS, a bearer token and compression, turning every failure into an error that names
//! the server or the gRPC status, ready for a one-line message.

use std::future::Future;
use std::time::Duration;

use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status, TimeoutExpired};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::config::{ClientArgs, Compression, HostPort};
use crate::pb::Data;
use crate::pb::format_data_client::FormatDataClient;
use crate::tls::{self, TlsError};

/// First pause before retrying an UNAVAILABLE call; doubled after each attempt.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// Longest pause between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Why a call did not produce a reply.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No HTTP/2 connection could be made: nothing listening, a name that does not resolve, a
    /// failed TLS handshake.
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: HostPort, reason: String },
    /// The server answered with a status other than OK.
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Status(#[from] Status),
    /// The TLS flags name files that cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The token cannot be sent as an HTTP header.
    #[error("FORMATDATA_AUTH_TOKEN contains characters not allowed in a header")]
    BadToken,
    /// The server's reflection service answered something other than what was asked.
    #[error("unexpected reflection reply: {0}")]
    Reflection(String),
}

/// A channel to one FormatData server, and how to call it.
#[derive(Debug, Clone)]
pub struct Client {
    /// HTTP/2 channel; connects on first use and reconnects after failures.
    channel: Channel,
    /// Where the channel goes, to name it in errors.
    addr: HostPort,
    /// Deadline of each attempt, sent as `grpc-timeout` so the server gives up too.
    timeout: Duration,
    /// Extra attempts after an UNAVAILABLE failure.
    retries: u32,
    /// `Bearer <token>` for the `authorization` header.
    authorization: Option<MetadataValue<tonic::metadata::Ascii>>,
    /// Compression of requests, also offered for replies.
    compression: Option<CompressionEncoding>,
}

impl Client {
    /// A client for the server the flags name. Nothing is sent until the first call.
    pub fn new(args: &ClientArgs) -> Result<Self, ClientError> {
        let scheme = if args.uses_tls() { "https" } else { "http" };
        let connect_error = |reason: String| ClientError::Connect {
            addr: args.addr.clone(),
            reason,
        };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", args.addr))
            .map_err(|err| connect_error(err.to_string()))?
            .connect_timeout(args.timeout);
        if args.uses_tls() {
            let identity = args.tls_cert.as_deref().zip(args.tls_key.as_deref());
            let config =
                tls::client_config(args.tls_ca.as_deref(), identity, args.tls_domain.as_deref())?;
            endpoint = endpoint
                .tls_config(config)
                .map_err(|err| connect_error(root_cause(&err)))?;
        }
        let authorization = args
            .auth_token
            .as_ref()
            .map(|token| format!("Bearer {token}").parse())
            .transpose()
            .map_err(|_| ClientError::BadToken)?;
        Ok(Self {
            channel: endpoint.connect_lazy(),
            addr: args.addr.clone(),
            timeout: args.timeout,
            retries: args.retries,
            authorization,
            compression: args.compress.map(|compression| match compression {
                Compression::Gzip => CompressionEncoding::Gzip,
                Compression::Zstd => CompressionEncoding::Zstd,
            }),
        })
    }

    /// Calls `DoFormat` and returns the formatted text.
    pub async fn format(&self, text: &str) -> Result<String, ClientError> {
        let mut stub = FormatDataClient::new(self.channel.clone());
        if let Some(encoding) = self.compression {
            stub = stub.send_compressed(encoding).accept_compressed(encoding);
        }
        self.with_retries(|| {
            let mut stub = stub.clone();
            let request = self.request(Data {
                text: text.to_owned(),
            });
            async move { stub.do_format(request).await }
        })
        .await
        .map(|reply| reply.text)
    }

    /// Asks the health service about `service` ("" for the whole server) and returns the
    /// status name: SERVING, NOT_SERVING, ...
    pub async fn health(&self, service: &str) -> Result<&'static str, ClientError> {
        let stub = HealthClient::new(self.channel.clone());
        let reply = self
            .with_retries(|| {
                let mut stub = stub.clone();
                let request = self.request(HealthCheckRequest {
                    service: service.to_owned(),
                });
                async move { stub.check(request).await }
            })
            .await?;
        Ok(reply.status().as_str_name())
    }

    /// The names of the services the server offers, through gRPC reflection (v1).
    pub async fn list_services(&self) -> Result<Vec<String>, ClientError> {
        let stub = ServerReflectionClient::new(self.channel.clone());
        let mut replies = self
            .with_retries(|| {
                let mut stub = stub.clone();
                let request = self.request(tokio_stream::once(ServerReflectionRequest {
                    host: String::new(),
                    message_request: Some(MessageRequest::ListServices(String::new())),
                }));
                async move { stub.server_reflection_info(request).await }
            })
            .await?;
        let reply = replies
            .message()
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

    /// A request carrying the deadline and the token.
    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request.set_timeout(self.timeout);
        if let Some(authorization) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", authorization.clone());
        }
        request
    }

    /// Runs `call`, again after an UNAVAILABLE failure (the server down or restarting) up to
    /// `retries` times, with exponential backoff and jitter so restarted servers are not hit by
    /// every client at once. Only for idempotent calls, which all of ours are.
    async fn with_retries<T, F, Fut>(&self, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut backoff = FIRST_BACKOFF;
        for attempt in 0.. {
            match call().await {
                Ok(reply) => return Ok(reply.into_inner()),
                Err(status) if status.code() == Code::Unavailable && attempt < self.retries => {
                    // Half fixed, half random: spread out, yet never back-to-back.
                    let pause = backoff / 2 + backoff.mul_f64(fastrand::f64() / 2.0);
                    tracing::debug!("{}; retrying in {pause:?}", status.message());
                    tokio::time::sleep(pause).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(status) => return Err(self.error(status)),
            }
        }
        unreachable!("the loop returns on its last attempt")
    }

    /// The error to report for a failed call.
    fn error(&self, status: Status) -> ClientError {
        if is_local_deadline(&status) {
            return Status::deadline_exceeded(format!("no reply within {:?}", self.timeout)).into();
        }
        // tonic reports a connection that could not be made as UNAVAILABLE, with the transport
        // error as its source: that is a connection failure, and says so with the address.
        if status.code() == Code::Unavailable
            && let Some(source) = std::error::Error::source(&status)
        {
            return ClientError::Connect {
                addr: self.addr.clone(),
                reason: root_cause(source),
            };
        }
        status.into()
    }
}

/// tonic's channel enforces `grpc-timeout` itself but reports it as CANCELLED "Timeout expired";
/// gRPC (and every grpcio user) calls that DEADLINE_EXCEEDED.
fn is_local_deadline(status: &Status) -> bool {
    status.code() == Code::Cancelled && status.message() == TimeoutExpired(()).to_string()
}

/// The innermost error, which is the one that says what went wrong ("Connection refused"); the
/// layers above it ("transport error", "tcp connect error") add nothing a user can act on.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// The canonical name of a gRPC status code, as grpcio and the gRPC docs print it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
