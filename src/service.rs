//! The `FormatData` service: what the server does with each call, independent of how it is
//! served (sockets, TLS, shutdown live in [`crate::server`]).

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::pb::Data;
use crate::pb::format_data_server::FormatData;
use crate::uppercase::uppercase;

/// Implements `example.FormatData`. Stateless, so one instance serves every connection.
#[derive(Debug, Default, Clone, Copy)]
pub struct FormatDataService;

/// The replies of `DoFormatStream`, produced lazily from the requests.
pub type FormattedStream = Pin<Box<dyn Stream<Item = Result<Data, Status>> + Send>>;

#[tonic::async_trait]
impl FormatData for FormatDataService {
    async fn do_format(&self, request: Request<Data>) -> Result<Response<Data>, Status> {
        Ok(Response::new(format(request.into_inner())))
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
        let replies = request.into_inner().map(|message| message.map(format));
        Ok(Response::new(Box::pin(replies)))
    }
}

/// What `DoFormat` does to one message; shared with [`crate::fast_path`].
pub(crate) fn format(Data { text }: Data) -> Data {
    Data {
        text: uppercase(text),
    }
}
