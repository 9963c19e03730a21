//! The Connect protocol's unary calls, from clients no one here wrote: curl, and Connect-ES's
//! Connect transport in Node; JSON and binary protobuf, over HTTP/1.1 and HTTP/2, with Connect's
//! errors and HTTP statuses.

use std::process::Command;

use formatdata::pb::Data;
use formatdata_test_support::process::{ServerProcess, stderr, stdout};
use prost::Message;

use crate::grpc_web::{node_and_server, run};

const DO_FORMAT: &str = "/example.FormatData/DoFormat";

/// What curl got: the HTTP status, the content type and the body.
struct Reply {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// `curl` POSTing `body` as `content_type` to `path` on `server`, with `extra` arguments.
fn curl(
    server: &ServerProcess,
    path: &str,
    content_type: &str,
    body: &[u8],
    extra: &[&str],
) -> Reply {
    let dir = tempfile::tempdir().unwrap();
    let (request, reply) = (dir.path().join("request"), dir.path().join("reply"));
    std::fs::write(&request, body).unwrap();
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "10"])
        .args(["-H", &format!("content-type: {content_type}")])
        .arg("--data-binary")
        .arg(format!("@{}", request.display()))
        .arg("--output")
        .arg(&reply)
        .args(["--write-out", "%{http_code} %{content_type}"])
        .args(extra)
        .arg(format!("http://{}{path}", server.addr()))
        .output()
        .expect("curl runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let written = String::from_utf8(output.stdout).unwrap();
    let (status, content_type) = written.split_once(' ').unwrap();
    Reply {
        status: status.parse().unwrap(),
        content_type: content_type.to_owned(),
        body: std::fs::read(&reply).unwrap_or_default(),
    }
}

#[test]
fn json_is_answered_with_json_over_http1_and_http2() {
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);
    for version in ["--http1.1", "--http2-prior-knowledge"] {
        let reply = curl(
            &server,
            DO_FORMAT,
            "application/json",
            br#"{"text":"hello, stra\u00dfe"}"#,
            &[version],
        );
        assert_eq!(reply.status, 200, "{version}: {}", reply.text());
        assert_eq!(reply.content_type, "application/json");
        assert_eq!(reply.text(), r#"{"text":"HELLO, STRASSE"}"#, "{version}");
    }
    let health = curl(
        &server,
        "/grpc.health.v1.Health/Check",
        "application/json",
        b"{}",
        &[],
    );
    assert_eq!(
        (health.status, health.text()),
        (200, r#"{"status":"SERVING"}"#.into())
    );
}

#[test]
fn binary_protobuf_is_answered_with_protobuf() {
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);
    let request = Data {
        text: "ﬁne".into()
    }
    .encode_to_vec();
    let reply = curl(
        &server,
        DO_FORMAT,
        "application/proto",
        &request,
        &["--http2-prior-knowledge"],
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.content_type, "application/proto");
    assert_eq!(Data::decode(&reply.body[..]).unwrap().text, "FINE");
}

/// Connect's error: the HTTP status, and the code's name in the JSON body with a message.
fn assert_error(reply: &Reply, status: u16, code: &str, words: &str) {
    assert_eq!(reply.status, status, "{}", reply.text());
    assert_eq!(reply.content_type, "application/json");
    let error: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(error["code"], code, "{error}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(words),
        "{message:?} does not say {words:?}"
    );
}

/// A bad call: its path, body and headers, then the HTTP status, Connect code and words its
/// error must have.
type ErrorCase<'a> = (&'a str, &'a [u8], &'a [&'a str], u16, &'a str, &'a str);

#[test]
fn errors_are_connects_with_the_http_status_of_their_code() {
    let server = ServerProcess::start_with_env(
        &["--addr", "127.0.0.1:0", "--max-message-bytes", "64"],
        &[("FORMATDATA_AUTH_TOKEN", "s3cret")],
    );
    let big = format!(r#"{{"text":"{}"}}"#, "a".repeat(100));
    let token = "authorization: Bearer s3cret";
    let cases: [ErrorCase; 6] = [
        (
            DO_FORMAT,
            br#"{"text":"#,
            &[token],
            400,
            "invalid_argument",
            "JSON example.Data",
        ),
        (
            DO_FORMAT,
            br#"{"text":7}"#,
            &[token],
            400,
            "invalid_argument",
            "example.Data",
        ),
        (
            "/example.FormatData/DoNothing",
            b"{}",
            &[token],
            501,
            "unimplemented",
            "DoNothing",
        ),
        (
            DO_FORMAT,
            br#"{"text":"hi"}"#,
            &[],
            401,
            "unauthenticated",
            "",
        ),
        (
            DO_FORMAT,
            big.as_bytes(),
            &[token],
            429,
            "resource_exhausted",
            "64",
        ),
        (
            DO_FORMAT,
            br#"{"text":"hi"}"#,
            &[token, "connect-timeout-ms: soon"],
            400,
            "invalid_argument",
            "connect-timeout-ms",
        ),
    ];
    for (path, body, headers, status, code, words) in cases {
        let extra: Vec<&str> = headers.iter().flat_map(|header| ["-H", *header]).collect();
        let reply = curl(&server, path, "application/json", body, &extra);
        assert_error(&reply, status, code, words);
    }
    let within = ["-H", token, "-H", "connect-timeout-ms: 5000"];
    let reply = curl(
        &server,
        DO_FORMAT,
        "application/json",
        br#"{"text":"hi"}"#,
        &within,
    );
    assert_eq!(
        (reply.status, reply.text()),
        (200, r#"{"text":"HI"}"#.into())
    );
}

#[test]
fn connect_es_calls_in_json_and_binary_over_http1_and_http2() {
    let Some((node, server, descriptors)) = node_and_server() else {
        return;
    };
    let descriptors = descriptors.path().to_str().unwrap();
    for version in ["1.1", "2"] {
        for format in ["json", "binary"] {
            let output = run(
                node,
                "connect_client.mjs",
                &[&server.addr(), descriptors, version, format, "straße"],
            );
            assert_eq!(
                stdout(&output),
                "received: STRASSE\n",
                "HTTP/{version} {format}: {}",
                stderr(&output)
            );
        }
    }
}

#[test]
fn a_connect_body_is_held_in_the_connections_budget() {
    let server = ServerProcess::start(&[
        "--addr",
        "127.0.0.1:0",
        "--max-buffered-bytes-per-connection",
        "64000",
    ]);
    let big = format!(r#"{{"text":"{}"}}"#, "a".repeat(100_000));
    let reply = curl(&server, DO_FORMAT, "application/json", big.as_bytes(), &[]);
    assert_error(&reply, 429, "resource_exhausted", "");
    let small = curl(
        &server,
        DO_FORMAT,
        "application/json",
        br#"{"text":"ok"}"#,
        &[],
    );
    assert_eq!(small.status, 200, "{}", small.text());
}

#[test]
fn a_connect_body_that_stalls_ends_at_the_stall_timeout() {
    use std::io::{Read, Write};
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0", "--stall-timeout", "1"]);
    let mut socket = std::net::TcpStream::connect(server.addr()).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let started = std::time::Instant::now();
    write!(
        socket,
        "POST {DO_FORMAT} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
         content-length: 100\r\n\r\n{{\"text\":"
    )
    .unwrap();
    let mut reply = Vec::new();
    let mut buffer = [0; 4096];
    while !String::from_utf8_lossy(&reply).contains("deadline_exceeded") {
        match socket.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(read) => reply.extend_from_slice(&buffer[..read]),
        }
    }
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 504"), "{reply}");
    assert!(reply.contains("--stall-timeout"), "{reply}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}
