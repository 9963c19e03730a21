//! Client-side balancing: several `--addr`, `dns:///` names, failover, and a server coming back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use formatdata::client::{Client, ClientConfig, ClientError};
use formatdata::pb::Data;
use formatdata::pb::format_data_server::{FormatData, FormatDataServer};
use tokio::runtime::Runtime;
use tonic::{Request, Response, Status, Streaming};

use formatdata_test_support::app::spawn_app;
use formatdata_test_support::process::closed_port;

/// A FormatData server that replies with its own name, so a test sees where each call went.
struct Named(&'static str);

#[tonic::async_trait]
impl FormatData for Named {
    async fn do_format(&self, _: Request<Data>) -> Result<Response<Data>, Status> {
        Ok(Response::new(Data {
            text: self.0.to_owned(),
        }))
    }

    type DoFormatStreamStream = tokio_stream::Empty<Result<Data, Status>>;

    async fn do_format_stream(
        &self,
        _: Request<Streaming<Data>>,
    ) -> Result<Response<Self::DoFormatStreamStream>, Status> {
        Err(Status::unimplemented("not needed here"))
    }
}

/// A stock tonic server answering as `name` on `addr` (port 0: any), on its own runtime; shut
/// the runtime down to kill the server and every connection to it.
fn named_server(name: &'static str, addr: &str) -> (Runtime, SocketAddr) {
    let listener = std::net::TcpListener::bind(addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let runtime = Runtime::new().unwrap();
    runtime.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        tonic::transport::Server::builder()
            .add_service(FormatDataServer::new(Named(name)))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
    });
    (runtime, addr)
}

async fn client(addrs: &[String], retries: u32) -> Client {
    let config = ClientConfig {
        targets: addrs.iter().map(|addr| addr.parse().unwrap()).collect(),
        retries,
        timeout: Duration::from_secs(5),
        ..ClientConfig::default()
    };
    Client::connect(&config).await.unwrap()
}

async fn replies(client: &Client, calls: usize) -> Vec<String> {
    let mut replies = Vec::new();
    for _ in 0..calls {
        replies.push(client.format("x").await.expect("every call succeeds"));
    }
    replies
}

#[tokio::test]
async fn calls_go_round_robin_over_every_address() {
    let servers = [
        named_server("a", "127.0.0.1:0"),
        named_server("b", "127.0.0.1:0"),
        named_server("c", "127.0.0.1:0"),
    ];
    let addrs: Vec<String> = servers.iter().map(|(_, addr)| addr.to_string()).collect();
    let client = client(&addrs, 0).await;

    let replies = replies(&client, 30).await;

    for name in ["a", "b", "c"] {
        let count = replies.iter().filter(|reply| *reply == name).count();
        assert_eq!(count, 10, "{name} got {count} of 30: {replies:?}");
    }
    // Round-robin, not merely balanced on average: three calls in a row reach three servers.
    for turn in replies.chunks(3) {
        assert!(
            turn[0] != turn[1] && turn[1] != turn[2] && turn[0] != turn[2],
            "{replies:?}"
        );
    }
    for (runtime, _) in servers {
        runtime.shutdown_background();
    }
}

#[tokio::test]
async fn a_call_to_a_dead_server_goes_to_another_at_once_even_without_retries() {
    let (runtime, live) = named_server("live", "127.0.0.1:0");
    let dead = format!("127.0.0.1:{}", closed_port());
    // --retries 0: a connection that cannot be made sent nothing; moving on is not a retry.
    let client = client(&[dead.clone(), live.to_string()], 0).await;

    let started = Instant::now();
    let replies = replies(&client, 10).await;

    assert!(replies.iter().all(|reply| reply == "live"), "{replies:?}");
    // Failover does not wait out a backoff (the first is 125-250 ms).
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    let servers = client.servers();
    let down: Vec<_> = servers.iter().filter(|(_, up)| !up).collect();
    assert_eq!(down.len(), 1, "{servers:?}");
    assert_eq!(down[0].0.to_string(), dead);
    runtime.shutdown_background();
}

#[tokio::test]
async fn a_server_that_dies_is_taken_out_and_used_again_when_it_is_back() {
    let (keeps_running, a) = named_server("a", "127.0.0.1:0");
    let (dies, b) = named_server("b", "127.0.0.1:0");
    let client = client(&[a.to_string(), b.to_string()], 1).await;
    assert_eq!(replies(&client, 2).await.len(), 2);

    dies.shutdown_background();
    let while_down = replies(&client, 20).await;
    assert!(
        while_down.iter().all(|reply| reply == "a"),
        "{while_down:?}"
    );

    let (restarted, _) = named_server("b", &b.to_string());
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    while !seen.iter().any(|reply| reply == "b") {
        assert!(
            Instant::now() < deadline,
            "b never got a call again: {seen:?}"
        );
        seen.extend(replies(&client, 1).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    keeps_running.shutdown_background();
    restarted.shutdown_background();
}

#[tokio::test]
async fn a_dns_name_means_every_address_it_resolves_to() {
    // The app listens on 127.0.0.1 only; localhost also resolves to ::1 where IPv6 exists.
    let app = spawn_app().await;
    let client = client(&[format!("dns:///localhost:{}", app.addr.port())], 1).await;

    let servers: Vec<String> = client
        .servers()
        .iter()
        .map(|(addr, _)| addr.to_string())
        .collect();
    // Every address the system resolver gives, each once: 127.0.0.1, and ::1 where the hosts
    // file says so.
    let mut resolved: Vec<String> =
        std::net::ToSocketAddrs::to_socket_addrs(&("localhost", app.addr.port()))
            .unwrap()
            .map(|addr| addr.to_string())
            .collect();
    let mut listed = servers.clone();
    listed.sort();
    resolved.sort();
    resolved.dedup();
    assert_eq!(listed, resolved);
    assert!(servers.contains(&app.addr.to_string()), "{servers:?}");

    for _ in 0..5 {
        assert_eq!(client.format("dns").await.unwrap(), "DNS");
    }
}

#[tokio::test]
async fn a_dns_name_that_resolves_to_nothing_is_a_connect_error() {
    let config = ClientConfig {
        targets: vec!["dns:///nothing.invalid:80".parse().unwrap()],
        ..ClientConfig::default()
    };

    let error = Client::connect(&config).await.unwrap_err();

    assert!(matches!(error, ClientError::Connect { .. }), "{error}");
    assert!(error.to_string().contains("nothing.invalid:80"), "{error}");
}
