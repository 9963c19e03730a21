//! The `FormatData` service: what the server does with each call, independent of how it is
//! served (sockets, TLS, shutdown live in [`crate::server`]).

use tonic::{Request, Response, Status};

use crate::pb::Data;
use crate::pb::format_data_server::FormatData;
use crate::uppercase::uppercase;

/// Implements `example.FormatData`. Stateless, so one instance serves every connection.
#[derive(Debug, Default, Clone, Copy)]
pub struct FormatDataService;

#[tonic::async_trait]
impl FormatData for FormatDataService {
    async fn do_format(&self, request: Request<Data>) -> Result<Response<Data>, Status> {
        let Data { text } = request.into_inner();
        Ok(Response::new(Data {
            text: uppercase(text),
        }))
    }
}
