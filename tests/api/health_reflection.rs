//! grpc.health.v1.Health and gRPC reflection, through tonic's generated clients.

use std::time::{Duration, Instant};

use formatdata::client::{Client, ClientConfig};
use formatdata::server::ServerConfig;
use prost::Message;
use tokio_stream::StreamExt;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use formatdata_test_support::app::{spawn_app, spawn_app_with};

fn check(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_owned(),
    }
}

#[tokio::test]
async fn server_and_formatdata_report_serving() {
    let app = spawn_app().await;
    let mut health = HealthClient::new(app.channel().await);

    for service in ["", "example.FormatData"] {
        let reply = health.check(check(service)).await.unwrap().into_inner();
        assert_eq!(reply.status(), ServingStatus::Serving, "{service:?}");
    }
    let unknown = health.check(check("no.Such")).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn watchers_see_not_serving_when_shutdown_begins_and_shutdown_ends_within_grace() {
    let app = spawn_app_with(ServerConfig {
        shutdown_grace: Duration::from_secs(1),
        ..ServerConfig::default()
    })
    .await;
    let mut health = HealthClient::new(app.channel().await);
    let mut server_watch = health.watch(check("")).await.unwrap().into_inner();
    let mut service_watch = health
        .watch(check("example.FormatData"))
        .await
        .unwrap()
        .into_inner();
    for watch in [&mut server_watch, &mut service_watch] {
        assert_eq!(
            watch.next().await.unwrap().unwrap().status(),
            ServingStatus::Serving
        );
    }

    let started = Instant::now();
    let stopping = tokio::spawn(app.shutdown());

    for watch in [&mut server_watch, &mut service_watch] {
        let update = tokio::time::timeout(Duration::from_secs(5), watch.next())
            .await
            .expect("an update within 5 s")
            .unwrap()
            .unwrap();
        assert_eq!(update.status(), ServingStatus::NotServing);
    }
    // The open Watch streams are calls in progress: they hold shutdown until the grace ends.
    stopping.await.unwrap().expect("clean shutdown");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn reflection_lists_services_and_serves_the_file_defining_data() {
    let app = spawn_app().await;
    let config = ClientConfig {
        targets: vec![app.addr.to_string().parse().unwrap()],
        ..ClientConfig::default()
    };
    let services = Client::connect(&config)
        .await
        .unwrap()
        .list_services()
        .await
        .unwrap();
    for expected in ["example.FormatData", "grpc.health.v1.Health"] {
        assert!(services.iter().any(|name| name == expected), "{services:?}");
    }

    let mut reflection = ServerReflectionClient::new(app.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol("example.Data".into())),
    };
    let reply = reflection
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner()
        .next()
        .await
        .unwrap()
        .unwrap();
    let Some(MessageResponse::FileDescriptorResponse(files)) = reply.message_response else {
        panic!("not a file descriptor response: {reply:?}");
    };
    let file = prost_types::FileDescriptorProto::decode(files.file_descriptor_proto[0].as_slice())
        .unwrap();
    assert_eq!(file.name(), "data.proto");
    assert!(
        file.message_type
            .iter()
            .any(|message| message.name() == "Data")
    );
}
