//! The `FormatData` service: what the server does with each call, independent of how it is
//! served (sockets, TLS, shutdown live in [`crate::server`]).

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use prost::Message;
use tonic::server::NamedService;
use tonic::{Request, Response, Status, Streaming};

use crate::grpc::methods;
use crate::pb::Data;
use crate::pb::format_data_server::{FormatData, FormatDataServer};
use crate::uppercase::uppercase;

/// Implements `example.FormatData`. Holds only its limit, so one instance serves every
/// connection.
#[derive(Debug, Clone, Copy)]
pub struct FormatDataService {
    /// `--max-message-bytes`: the largest reply, uncompressed.
    pub max_message_bytes: usize,
}

/// The replies of `DoFormatStream`, produced lazily from the requests.
pub type FormattedStream = Pin<Box<dyn Stream<Item = Result<Data, Status>> + Send>>;

#[tonic::async_trait]
impl FormatData for FormatDataService {
    async fn do_format(&self, request: Request<Data>) -> Result<Response<Data>, Status> {
        format(request.into_inner(), self.max_message_bytes).map(Response::new)
    }

    type DoFormatStreamStream = FormattedStream;

    async fn do_format_stream(
        &self,
        request: Request<Streaming<Data>>,
    ) -> Result<Response<FormattedStream>, Status> {
        // A lazy map, not a task with a queue: the next request is read only when the reply
        // before it has been taken by the HTTP/2 layer, so a slow reader slows the writer
        // (HTTP/2 flow control end to end) and a stream of any length uses bounded memory.
        // A request that fails to decode ends the stream with its status.
        let limit = self.max_message_bytes;
        let replies = request
            .into_inner()
            .map(move |message| format(message?, limit));
        Ok(Response::new(Box::pin(replies)))
    }
}

/// The `:path` of DoFormat, which the fast path and the bench's raw client speak directly.
pub fn do_format_path() -> &'static str {
    format_data_path("DoFormat")
}

/// The `:path` of FormatData's method `name`.
pub(crate) fn format_data_path(name: &str) -> &'static str {
    let service = <FormatDataServer<FormatDataService> as NamedService>::NAME;
    &methods::served()
        .named(service, name)
        .unwrap_or_else(|| panic!("{name} is in proto/data.proto"))
        .path
}

/// What `DoFormat` does to one message; shared with the fast path.
///
/// The reply is held to the size limit uncompressed, as the request is, on every path: tonic
/// would check the reply after compressing it, so a reply over the limit would pass or fail
/// depending on whether the client accepts compression.
pub(crate) fn format(Data { text }: Data, limit: usize) -> Result<Data, Status> {
    let reply = Data {
        text: uppercase(text),
    };
    let length = reply.encoded_len();
    if length > limit {
        return Err(Status::resource_exhausted(format!(
            "reply message of {length} bytes is over the {limit}-byte limit"
        )));
    }
    Ok(reply)
}
