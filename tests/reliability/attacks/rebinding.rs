//! A server listening on loopback only refuses every request that names another host,
//! whatever its protocol and content type. A page whose own name was pointed at 127.0.0.1 ("DNS
//! rebinding") is same-origin with itself, so CORS does not stop it; the Host check covered only
//! gRPC-Web and the page, and native gRPC over HTTP/1.1 with `Host: evil.example` got HTTP 200
//! and the reply, from FormatData and from health.

use std::net::SocketAddr;

use bytes::Bytes;
use tonic::Code;

use super::GRPC_WEB;
use formatdata_test_support::process::ServerProcess;
use formatdata_test_support::raw;

const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

const FOREIGN_HOST: &str = "evil.example";

/// The request messages for [`raw::DO_FORMAT`] and [`HEALTH_CHECK`] (the whole server's health).
fn calls() -> [(&'static str, Bytes); 2] {
    [
        (raw::DO_FORMAT, raw::frame(false, &raw::data_message(b"hi"))),
        (HEALTH_CHECK, raw::frame(false, b"")),
    ]
}

/// A native gRPC call (`content-type: application/grpc`, not gRPC-Web) over HTTP/1.1, as curl
/// sends it; the response as text.
async fn grpc_over_http1(addr: SocketAddr, host: &str, path: &str, message: &[u8]) -> String {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/grpc\r\nTE: trailers\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        message.len()
    );
    raw::http1(addr, &head, message).await
}

#[tokio::test]
async fn native_grpc_over_http1_is_refused_and_with_a_foreign_host_misdirected() {
    // Default flags on loopback: gRPC-Web is on, so HTTP/1.1 is served.
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);
    let addr = server.addrs[0];

    for (path, message) in calls() {
        let rebound = grpc_over_http1(addr, FOREIGN_HOST, path, &message).await;
        let local = grpc_over_http1(addr, "localhost", path, &message).await;

        assert!(
            rebound.starts_with("HTTP/1.1 421"),
            "{path} with Host {FOREIGN_HOST}: {rebound}"
        );
        // Not served at all: gRPC needs HTTP/2.
        assert!(
            local.starts_with("HTTP/1.1 505"),
            "{path} with Host localhost: {local}"
        );
        assert!(
            local.to_ascii_lowercase().contains("grpc-status: 3"),
            "{path} with Host localhost: {local}"
        );
    }
}

#[tokio::test]
async fn http2_calls_naming_a_foreign_authority_are_permission_denied() {
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);
    let addr = server.addrs[0];
    let port = addr.port();
    let mut client = raw::connect(addr).await;

    for (path, message) in calls() {
        for authority in [
            FOREIGN_HOST.to_string(),
            format!("{FOREIGN_HOST}:{port}"),
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
        ] {
            let (response, mut send) =
                raw::try_start_call_at(&mut client, &authority, path, &[]).expect("send request");
            send.send_data(message.clone(), true).unwrap();
            let reply = raw::read_reply(response).await;
            assert_eq!(reply.http_status, 200, "{path} at {authority}");
            if authority.starts_with(FOREIGN_HOST) {
                assert_eq!(
                    reply.code(),
                    Code::PermissionDenied,
                    "{path} at {authority}: {reply:?}"
                );
                assert!(
                    reply.message().contains(FOREIGN_HOST),
                    "the refusal names the host: {}",
                    reply.message()
                );
            } else {
                assert_eq!(reply.code(), Code::Ok, "{path} at {authority}: {reply:?}");
            }
            client = client.ready().await.unwrap();
        }
    }

    // gRPC-Web over HTTP/2 with a foreign authority: refused as a browser request, HTTP 421.
    let (message_path, message) = calls()[0].clone();
    let (response, mut send) =
        raw::try_start_call_at(&mut client, FOREIGN_HOST, message_path, GRPC_WEB).unwrap();
    send.send_data(message, true).unwrap();
    let response = response.await.expect("a response");
    assert_eq!(response.status(), 421, "{response:?}");
}
