//! The client side: connect to a FormatData server and call `DoFormat`, turning every failure
//! into an error that names the server or the gRPC status, ready for a one-line message.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status, TimeoutExpired};

use crate::config::HostPort;
use crate::pb::Data;
use crate::pb::format_data_client::FormatDataClient;

/// Why a call did not produce a reply.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No HTTP/2 connection could be made: nothing listening, a name that does not resolve, a
    /// timeout.
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: HostPort, reason: String },
    /// The server answered with a status other than OK.
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Status(#[from] Status),
}

/// A connection to one FormatData server.
#[derive(Debug, Clone)]
pub struct Client {
    /// Generated stub over one HTTP/2 connection, which tonic re-establishes if it drops.
    stub: FormatDataClient<Channel>,
    /// Sent as `grpc-timeout` with each call, so the server gives up when the caller has.
    timeout: Duration,
}

impl Client {
    /// Connects to `addr`, waiting at most `timeout` for the connection.
    pub async fn connect(addr: &HostPort, timeout: Duration) -> Result<Self, ClientError> {
        let connect_error = |reason: String| ClientError::Connect {
            addr: addr.clone(),
            reason,
        };
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|err| connect_error(err.to_string()))?
            .connect_timeout(timeout)
            .connect()
            .await
            .map_err(|err| connect_error(root_cause(&err)))?;
        Ok(Self {
            stub: FormatDataClient::new(channel),
            timeout,
        })
    }

    /// Calls `DoFormat` and returns the formatted text.
    pub async fn format(&mut self, text: String) -> Result<String, ClientError> {
        let mut request = Request::new(Data { text });
        request.set_timeout(self.timeout);
        match self.stub.do_format(request).await {
            Ok(reply) => Ok(reply.into_inner().text),
            Err(status) if is_local_deadline(&status) => {
                Err(Status::deadline_exceeded(format!("no reply within {:?}", self.timeout)).into())
            }
            Err(status) => Err(status.into()),
        }
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
