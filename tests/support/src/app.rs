//! The server inside the test process, through the library, on a free loopback port: quick to
//! start, and its settings set field by field.

use std::net::SocketAddr;
use std::time::Duration;

use formatdata::pb::Data;
use formatdata::pb::format_data_client::FormatDataClient;
use formatdata::server::{Listeners, ServeError, Server, ServerConfig};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Streaming;
use tonic::transport::Channel;

/// A server running inside the test process, on 127.0.0.1 and a port the OS picked.
pub struct TestApp {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    serving: JoinHandle<Result<(), ServeError>>,
}

/// A server with default settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(ServerConfig::default()).await
}

/// A server with `config`.
pub async fn spawn_app_with(config: ServerConfig) -> TestApp {
    let server = Server::new(config).expect("valid server configuration");
    let listeners = Listeners::bind(&"127.0.0.1:0".parse().expect("an address"))
        .await
        .expect("bind a free loopback port");
    let addr = listeners.local_addrs()[0];
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(listeners, async {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        stop,
        serving,
    }
}

impl TestApp {
    /// A new connection through the generated client, as any tonic user would make it.
    pub async fn client(&self) -> FormatDataClient<Channel> {
        FormatDataClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect to the test server")
    }

    /// `DoFormatStream` over a new connection, sending `requests`: the stream of replies.
    pub async fn stream(&self, requests: impl IntoIterator<Item = Data>) -> Streaming<Data> {
        let requests: Vec<Data> = requests.into_iter().collect();
        self.client()
            .await
            .do_format_stream(tokio_stream::iter(requests))
            .await
            .expect("the stream starts")
            .into_inner()
    }

    /// A plain HTTP/2 channel to the server, for stubs other than FormatData.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .expect("connect to the test server")
    }

    /// Triggers graceful shutdown and waits for the server to finish, returning its result.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        self.stop.send(()).expect("server still running");
        tokio::time::timeout(Duration::from_secs(10), self.serving)
            .await
            .expect("server stops within 10 s")
            .expect("server task did not panic")
    }
}

/// `routes` served by a stock tonic server on a free loopback port, for tests that need a
/// server other than ours. Returns the runtime it runs on (keep it alive) and its address.
pub fn spawn_tonic(routes: tonic::service::Routes) -> (tokio::runtime::Runtime, String) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    runtime.spawn(
        tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (runtime, addr)
}
