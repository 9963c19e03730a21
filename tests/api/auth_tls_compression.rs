//! Bearer-token authentication, TLS and mutual TLS, and compression, through the library client
//! with the settings the `client` binary's flags map to.

use std::path::PathBuf;

use formatdata::client::{Client, ClientConfig, ClientError, ClientTls};
use formatdata::server::{ConfigError, ReplyCompression, Server, ServerConfig, TlsFiles};
use formatdata_test_support::app::{TestApp, spawn_app, spawn_app_with};
use formatdata_test_support::certs::Certificates;
use formatdata_test_support::raw::{self, DO_FORMAT, data_message, frame};
use tonic::Code;
use tonic::codec::CompressionEncoding;

/// A client of `app` by the name `localhost`, changed by `settings`, with no retries.
async fn client(app: &TestApp, settings: impl FnOnce(&mut ClientConfig)) -> Client {
    let mut config = ClientConfig {
        targets: vec![format!("localhost:{}", app.addr.port()).parse().unwrap()],
        retries: 0,
        ..ClientConfig::default()
    };
    settings(&mut config);
    Client::connect(&config).await.unwrap()
}

fn code(error: ClientError) -> Option<Code> {
    match error {
        ClientError::Status(status) => Some(status.code()),
        _ => None,
    }
}

/// A server for `localhost` with the test CA's certificate, clients' certificates required when
/// `mutual`.
async fn tls_app(certs: &Certificates, mutual: bool) -> TestApp {
    spawn_app_with(ServerConfig {
        tls: Some(TlsFiles {
            cert: certs.path("server.pem").into(),
            key: certs.path("server.key").into(),
            client_ca: mutual.then(|| certs.path("ca.pem").into()),
        }),
        ..ServerConfig::default()
    })
    .await
}

/// Trusting the test CA, and presenting the client certificate when `identified`.
fn tls(certs: &Certificates, identified: bool) -> ClientTls {
    ClientTls {
        ca: Some(certs.path("ca.pem").into()),
        identity: identified.then(|| {
            (
                PathBuf::from(certs.path("client.pem")),
                PathBuf::from(certs.path("client.key")),
            )
        }),
        domain: None,
    }
}

#[tokio::test]
async fn with_a_token_formatdata_needs_it_and_health_does_not() {
    let app = spawn_app_with(ServerConfig {
        auth_token: Some("s3cret".into()),
        ..ServerConfig::default()
    })
    .await;
    let with_token = |token: Option<&str>| {
        let token = token.map(str::to_owned);
        move |config: &mut ClientConfig| config.auth_token = token
    };

    let without = client(&app, with_token(None)).await.format("x").await;
    assert_eq!(code(without.unwrap_err()), Some(Code::Unauthenticated));
    let wrong = client(&app, with_token(Some("guess")))
        .await
        .format("x")
        .await;
    assert_eq!(code(wrong.unwrap_err()), Some(Code::Unauthenticated));
    let right = client(&app, with_token(Some("s3cret")))
        .await
        .format("x")
        .await;
    assert_eq!(right.unwrap(), "X");
    let health = client(&app, with_token(None)).await.health("").await;
    assert_eq!(health.unwrap(), "SERVING");
}

#[tokio::test]
async fn tls_clients_with_the_ca_succeed_and_plaintext_clients_fail() {
    let certs = Certificates::generate();
    let app = tls_app(&certs, false).await;

    let reply = client(&app, |config| config.tls = Some(tls(&certs, false)))
        .await
        .format("tls")
        .await;
    assert_eq!(reply.unwrap(), "TLS");
    let plain = client(&app, |_| {})
        .await
        .format("plain")
        .await
        .unwrap_err();
    // A plaintext HTTP/2 client's preface is not a TLS handshake: the server hangs up.
    assert!(
        matches!(
            plain,
            ClientError::Connect { .. } | ClientError::ConnectionLost { .. }
        ),
        "{plain}"
    );
}

#[tokio::test]
async fn tls_domain_names_the_certificate_when_the_address_does_not() {
    let certs = Certificates::generate();
    let app = tls_app(&certs, false).await;
    let by_ip = async |domain: Option<&str>| {
        let config = ClientConfig {
            targets: vec![app.addr.to_string().parse().unwrap()],
            retries: 0,
            tls: Some(ClientTls {
                domain: domain.map(str::to_owned),
                ..tls(&certs, false)
            }),
            ..ClientConfig::default()
        };
        Client::connect(&config).await.unwrap()
    };

    // The certificate is for "localhost", not "127.0.0.1".
    let unnamed = by_ip(None).await.format("x").await.unwrap_err().to_string();
    assert!(
        unnamed.contains("not valid for name"),
        "the certificate's name is the cause: {unnamed}"
    );
    let named = by_ip(Some("localhost")).await.format("named").await;
    assert_eq!(named.unwrap(), "NAMED");
}

#[tokio::test]
async fn mutual_tls_needs_a_client_certificate() {
    let certs = Certificates::generate();
    let app = tls_app(&certs, true).await;

    let anonymous = client(&app, |config| config.tls = Some(tls(&certs, false)))
        .await
        .format("x")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        anonymous.contains("CertificateRequired"),
        "the server's alert for the missing certificate is the cause: {anonymous}"
    );
    let identified = client(&app, |config| config.tls = Some(tls(&certs, true))).await;
    assert_eq!(identified.format("mtls").await.unwrap(), "MTLS");
}

#[test]
fn a_missing_tls_file_is_an_error_naming_it() {
    let config = ServerConfig {
        tls: Some(TlsFiles {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
            client_ca: None,
        }),
        ..ServerConfig::default()
    };

    let error = Server::new(config).err().expect("no such file");

    assert!(matches!(error, ConfigError::Tls(_)), "{error:?}");
    assert!(
        error.to_string().contains("/nonexistent/cert.pem"),
        "{error}"
    );
}

#[tokio::test]
async fn gzip_and_zstd_requests_get_replies() {
    let app = spawn_app().await;
    for compression in [CompressionEncoding::Gzip, CompressionEncoding::Zstd] {
        let reply = client(&app, |config| config.compression = Some(compression))
            .await
            .format(&"compress me ".repeat(100))
            .await
            .unwrap();
        assert_eq!(reply, "COMPRESS ME ".repeat(100), "{compression:?}");
    }
}

/// A DoFormat call whose request says `grpc-encoding: gzip` (its one message left uncompressed,
/// as gRPC allows), accepting `accept`, with 10 kB of one letter.
async fn call_with_encodings(app: &TestApp, request: &[(&'static str, &str)]) -> raw::RawReply {
    let text = "a".repeat(10_000);
    raw::call(
        app.addr,
        DO_FORMAT,
        request,
        frame(false, &data_message(text.as_bytes())),
    )
    .await
}

fn assert_gzipped(reply: &raw::RawReply) {
    reply.assert_status(Code::Ok, "");
    assert_eq!(reply.headers["grpc-encoding"], "gzip");
    assert_eq!(reply.body[0], 1, "the message is flagged compressed");
    assert!(
        reply.body.len() < 1_000,
        "10 kB of one letter compresses: {}",
        reply.body.len()
    );
}

#[tokio::test]
async fn a_client_that_compresses_its_request_gets_a_compressed_reply() {
    let app = spawn_app().await;
    let reply = call_with_encodings(
        &app,
        &[
            ("grpc-encoding", "gzip"),
            ("grpc-accept-encoding", "identity,deflate,gzip"),
        ],
    )
    .await;
    assert_gzipped(&reply);
}

#[tokio::test]
async fn listing_gzip_alone_as_grpcio_does_gets_no_unasked_compression() {
    let app = spawn_app().await;
    let reply =
        call_with_encodings(&app, &[("grpc-accept-encoding", "identity,deflate,gzip")]).await;

    assert_eq!(reply.code(), Code::Ok);
    assert!(
        !reply.headers.contains_key("grpc-encoding"),
        "{:?}",
        reply.headers
    );
    assert_eq!(reply.body[0], 0);
}

#[tokio::test]
async fn the_operator_can_compress_every_large_reply_a_client_accepts() {
    let app = spawn_app_with(ServerConfig {
        reply_compression: ReplyCompression::Always,
        ..ServerConfig::default()
    })
    .await;
    let reply =
        call_with_encodings(&app, &[("grpc-accept-encoding", "identity,deflate,gzip")]).await;
    assert_gzipped(&reply);

    // A short reply goes as it is: gzip would make it longer.
    let short = raw::call(
        app.addr,
        DO_FORMAT,
        &[("grpc-accept-encoding", "gzip")],
        frame(false, &data_message(b"abc")),
    )
    .await;
    assert_eq!(short.code(), Code::Ok);
    assert_eq!(short.body, frame(false, &data_message(b"ABC")));
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
