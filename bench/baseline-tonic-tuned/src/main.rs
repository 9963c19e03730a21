//! bench/baseline-tonic's stock tonic FormatData server, tuned as a user would in ten minutes:
//! the same code, plus mimalloc, a current-thread runtime, and the release profile in Cargo.toml.
//! Usage: baseline-tonic-tuned [ADDR] (default 127.0.0.1:50051).

use tonic::{Request, Response, Status, Streaming, transport::Server};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        Err(Status::unimplemented(
            "the baseline serves unary calls only",
        ))
    }
}

// One thread: the benchmark pins the server to one CPU, where a work-stealing pool only adds
// cross-thread wake-ups.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:50051".into())
        .parse()?;
    let formatter = MyFormatData::default();

    println!("tuned tonic server listening on {addr}");

    Server::builder()
        .add_service(FormatDataServer::new(formatter))
        .serve(addr)
        .await?;

    Ok(())
}
