//! Stock tonic FormatData server, written like tonic's `examples/src/helloworld/server.rs`.
//! Usage: baseline-tonic [ADDR] (default 127.0.0.1:50051).

use tonic::{Request, Response, Status, Streaming, transport::Server};

pub mod example {
    tonic::include_proto!("example");
}

use example::Data;
use example::format_data_server::{FormatData, FormatDataServer};

#[derive(Debug, Default)]
pub struct MyFormatData {}

#[tonic::async_trait]
impl FormatData for MyFormatData {
    async fn do_format(&self, request: Request<Data>) -> Result<Response<Data>, Status> {
        let reply = Data {
            text: request.into_inner().text.to_uppercase(),
        };
        Ok(Response::new(reply))
    }

    type DoFormatStreamStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<Data, Status>> + Send>>;

    async fn do_format_stream(
        &self,
        _request: Request<Streaming<Data>>,
    ) -> Result<Response<Self::DoFormatStreamStream>, Status> {
        Err(Status::unimplemented("the baseline serves unary calls only"))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:50051".into())
        .parse()?;
    let formatter = MyFormatData::default();

    println!("baseline tonic server listening on {addr}");

    Server::builder()
        .add_service(FormatDataServer::new(formatter))
        .serve(addr)
        .await?;

    Ok(())
}
