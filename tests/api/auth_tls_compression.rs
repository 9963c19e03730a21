//! Bearer-token authentication, TLS and mutual TLS, and compression, through the library client
//! configured exactly as the `client` binary configures it from flags.

use clap::Parser;
use formatdata::cli::{ClientArgs, ServerArgs};
use formatdata::client::{Client, ClientError};
use formatdata::server::ServerConfig;
use tonic::Code;

use crate::helpers::{Certificates, TestApp, spawn_app, spawn_app_with};
use crate::raw::{self, DO_FORMAT, data_message, frame};

/// A client for `app` with these flags (and token), as `client FLAGS` would be.
async fn client(app: &TestApp, flags: &[&str], token: Option<&str>) -> Client {
    let addr = format!("localhost:{}", app.addr.port());
    let mut args = ClientArgs::try_parse_from(
        ["client", "--addr", &addr, "--retries", "0"]
            .iter()
            .chain(flags),
    )
    .unwrap();
    args.auth_token = token.map(str::to_owned);
    Client::connect(&args).await.unwrap()
}

fn code(error: ClientError) -> Option<Code> {
    match error {
        ClientError::Status(status) => Some(status.code()),
        _ => None,
    }
}

#[tokio::test]
async fn with_a_token_formatdata_needs_it_and_health_does_not() {
    let app = spawn_app_with(&[], Some("s3cret")).await;

    let without = client(&app, &[], None).await.format("x").await.unwrap_err();
    assert_eq!(code(without), Some(Code::Unauthenticated));
    let wrong = client(&app, &[], Some("guess"))
        .await
        .format("x")
        .await
        .unwrap_err();
    assert_eq!(code(wrong), Some(Code::Unauthenticated));
    let right = client(&app, &[], Some("s3cret"))
        .await
        .format("x")
        .await
        .unwrap();
    assert_eq!(right, "X");
    assert_eq!(
        client(&app, &[], None).await.health("").await.unwrap(),
        "SERVING"
    );
}

#[tokio::test]
async fn tls_clients_with_the_ca_succeed_and_plaintext_clients_fail() {
    let certs = Certificates::generate();
    let (cert, key, ca) = (
        certs.path("server.pem"),
        certs.path("server.key"),
        certs.path("ca.pem"),
    );
    let app = spawn_app_with(&["--tls-cert", &cert, "--tls-key", &key], None).await;

    let reply = client(&app, &["--tls-ca", &ca], None)
        .await
        .format("tls")
        .await
        .unwrap();
    assert_eq!(reply, "TLS");
    assert!(client(&app, &[], None).await.format("plain").await.is_err());
}

#[tokio::test]
async fn tls_domain_names_the_certificate_when_the_address_does_not() {
    let certs = Certificates::generate();
    let (cert, key, ca) = (
        certs.path("server.pem"),
        certs.path("server.key"),
        certs.path("ca.pem"),
    );
    let app = spawn_app_with(&["--tls-cert", &cert, "--tls-key", &key], None).await;
    let by_ip = async |flags: &[&str]| {
        let addr = app.addr.to_string();
        let base = ["client", "--addr", &addr, "--retries", "0", "--tls-ca", &ca];
        let args = ClientArgs::try_parse_from(base.iter().chain(flags)).unwrap();
        Client::connect(&args).await.unwrap()
    };

    // The certificate is for "localhost", not "127.0.0.1".
    assert!(by_ip(&[]).await.format("x").await.is_err());
    let named = by_ip(&["--tls-domain", "localhost"])
        .await
        .format("named")
        .await
        .unwrap();
    assert_eq!(named, "NAMED");
}

#[tokio::test]
async fn mutual_tls_needs_a_client_certificate() {
    let certs = Certificates::generate();
    let (cert, key, ca) = (
        certs.path("server.pem"),
        certs.path("server.key"),
        certs.path("ca.pem"),
    );
    let app = spawn_app_with(
        &[
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &ca,
        ],
        None,
    )
    .await;

    let anonymous = client(&app, &["--tls-ca", &ca], None)
        .await
        .format("x")
        .await;
    assert!(
        anonymous.is_err(),
        "a client without a certificate got through"
    );
    let (client_cert, client_key) = (certs.path("client.pem"), certs.path("client.key"));
    let identified = client(
        &app,
        &[
            "--tls-ca",
            &ca,
            "--tls-cert",
            &client_cert,
            "--tls-key",
            &client_key,
        ],
        None,
    )
    .await;
    assert_eq!(identified.format("mtls").await.unwrap(), "MTLS");
}

#[test]
fn a_missing_tls_file_is_an_error_naming_it() {
    let args = ServerArgs::try_parse_from([
        "server",
        "--tls-cert",
        "/nonexistent/cert.pem",
        "--tls-key",
        "/nonexistent/key.pem",
    ])
    .unwrap();

    let error = ServerConfig::from_args(&args)
        .err()
        .expect("no such file")
        .to_string();

    assert!(error.contains("/nonexistent/"), "{error}");
}

#[tokio::test]
async fn gzip_and_zstd_requests_get_replies() {
    let app = spawn_app().await;
    for compression in ["gzip", "zstd"] {
        let reply = client(&app, &["--compress", compression], None)
            .await
            .format(&"compress me ".repeat(100))
            .await
            .unwrap();
        assert_eq!(reply, "COMPRESS ME ".repeat(100), "{compression}");
    }
}

#[tokio::test]
async fn replies_are_compressed_when_the_caller_accepts_it() {
    let app = spawn_app().await;
    let text = "a".repeat(10_000);

    let reply = raw::call(
        app.addr,
        DO_FORMAT,
        &[("grpc-accept-encoding", "gzip")],
        frame(false, &data_message(text.as_bytes())),
    )
    .await;

    assert_eq!(reply.code(), Code::Ok);
    assert_eq!(reply.headers["grpc-encoding"], "gzip");
    assert_eq!(reply.body[0], 1, "the message is flagged compressed");
    assert!(
        reply.body.len() < 1_000,
        "10 kB of one letter compresses: {}",
        reply.body.len()
    );
}

#[tokio::test]
async fn plaintext_replies_stay_uncompressed_by_default() {
    let app = spawn_app().await;
    let reply = raw::call(
        app.addr,
        DO_FORMAT,
        &[],
        frame(false, &data_message(b"abc")),
    )
    .await;
    assert_eq!(reply.body[0], 0);
}
