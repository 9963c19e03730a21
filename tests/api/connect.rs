//! The Connect protocol, from clients no one here wrote: curl, `buf curl` and Connect-ES's
//! Connect transport in Node; unary calls by POST and GET, streams in envelopes, JSON and binary
//! protobuf, compressed or not, over HTTP/1.1 and HTTP/2, with Connect's errors and HTTP
//! statuses.

use std::process::{Command, Output, Stdio};

use formatdata::pb::Data;
use formatdata_test_support::env;
use formatdata_test_support::process::{ServerProcess, stderr, stdout};
use prost::Message;

use formatdata_test_support::raw::http1;

use crate::grpc_web::{allowed_origin, app_allowing_one_origin, node_and_server, run};

const DO_FORMAT: &str = "/example.FormatData/DoFormat";
const DO_FORMAT_STREAM: &str = "/example.FormatData/DoFormatStream";

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
    let request = dir.path().join("request");
    std::fs::write(&request, body).unwrap();
    let content_type = format!("content-type: {content_type}");
    let data = format!("@{}", request.display());
    let mut args = vec!["-H", &content_type, "--data-binary", &data];
    args.extend_from_slice(extra);
    curl_with(server, path, &args)
}

/// `curl` asking `server` for `path` (a GET unless `args` say otherwise).
fn curl_with(server: &ServerProcess, path: &str, args: &[&str]) -> Reply {
    let dir = tempfile::tempdir().unwrap();
    let reply = dir.path().join("reply");
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "10"])
        .arg("--output")
        .arg(&reply)
        .args(["--write-out", "%{http_code} %{content_type}"])
        .args(args)
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
    let cases: [ErrorCase; 7] = [
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
        (
            DO_FORMAT,
            br#"{"text":"hi"}"#,
            &[token, "connect-protocol-version: 2"],
            400,
            "invalid_argument",
            "send 1",
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

/// Runs `test` with Connect-ES's client (`tests/web/connect_client.mjs`) against a new server:
/// `client(args)` runs it with `args` after the server's address and the descriptors. Without
/// Node.js the test skips.
fn with_connect_es(test: impl FnOnce(&dyn Fn(&[&str]) -> Output)) {
    let Some((node, server, descriptors)) = node_and_server() else {
        return;
    };
    let (addr, descriptors) = (server.addr(), descriptors.path().to_str().unwrap());
    test(&|args: &[&str]| {
        let args = [&[addr.as_str(), descriptors], args].concat();
        run(node, "connect_client.mjs", &args)
    });
}

#[test]
fn connect_es_calls_by_post_and_get_in_json_and_binary_over_http1_and_http2() {
    with_connect_es(|client| {
        for version in ["1.1", "2"] {
            for format in ["json", "binary"] {
                for (call, sent) in [("post", "POST"), ("get", "GET")] {
                    let output = client(&[version, format, call, "straße"]);
                    assert_eq!(
                        stdout(&output),
                        format!("sent: {sent}\nreceived: STRASSE\n"),
                        "HTTP/{version} {format} {call}: {}",
                        stderr(&output)
                    );
                }
            }
        }
    });
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
fn a_connect_body_that_stalls_ends_at_the_stall_timeout_or_the_calls_deadline() {
    use std::io::{Read, Write};
    let cases = [
        (["--stall-timeout", "1"], "", "--stall-timeout"),
        // The deadline runs from the request's head: a body read whole counts against it.
        (
            ["--stall-timeout", "20"],
            "connect-timeout-ms: 500\r\n",
            "connect-timeout-ms",
        ),
    ];
    for (flags, header, words) in cases {
        let server = ServerProcess::start(&[&["--addr", "127.0.0.1:0"][..], &flags].concat());
        let mut socket = std::net::TcpStream::connect(server.addr()).unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let started = std::time::Instant::now();
        write!(
            socket,
            "POST {DO_FORMAT} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
             {header}content-length: 100\r\n\r\n{{\"text\":"
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
        assert!(reply.contains(words), "{reply}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}

#[test]
fn connect_es_streams_both_ways_over_http2_and_is_told_why_not_over_http1() {
    with_connect_es(|client| {
        for format in ["json", "binary"] {
            let output = client(&["2", format, "stream", "a", "straße"]);
            assert_eq!(
                stdout(&output),
                "received: A\nreceived: STRASSE\n",
                "{format}: {}",
                stderr(&output)
            );
            // 505, and the connection closed, as connect-go does: the client is not left
            // waiting for replies to a request it has not finished sending.
            let output = client(&["1.1", format, "stream", "a", "straße"]);
            assert!(!output.status.success(), "{format}: {}", stdout(&output));
        }
    });
}

#[test]
fn get_carries_the_message_in_the_query_for_methods_free_of_side_effects() {
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);
    let json = curl_with(
        &server,
        "/example.FormatData/DoFormat?connect=v1&encoding=json&message=%7B%22text%22%3A%22stra%C3%9Fe%22%7D",
        &[],
    );
    assert_eq!(
        (json.status, json.text()),
        (200, r#"{"text":"STRASSE"}"#.into())
    );
    // Data { text: "hi" } as protobuf, in URL-safe base64.
    let proto = curl_with(
        &server,
        "/example.FormatData/DoFormat?encoding=proto&base64=1&message=CgJoaQ",
        &["--http2-prior-knowledge"],
    );
    assert_eq!(proto.status, 200, "{}", proto.text());
    assert_eq!(proto.content_type, "application/proto");
    assert_eq!(Data::decode(&proto.body[..]).unwrap().text, "HI");
    let stream = curl_with(
        &server,
        &format!("{DO_FORMAT_STREAM}?encoding=json&message=%7B%7D"),
        &[],
    );
    assert_error(&stream, 405, "invalid_argument", "POST");
    let no_encoding = curl_with(&server, &format!("{DO_FORMAT}?message=%7B%7D"), &[]);
    assert_error(&no_encoding, 400, "invalid_argument", "encoding=");
}

#[test]
fn compressed_bodies_are_read_and_replies_compressed_where_the_server_is_told_to() {
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0", "--compress-replies", "always"]);
    let text = "straße ".repeat(1_000);
    let json = serde_json::json!({ "text": text }).to_string();
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gzip, json.as_bytes()).unwrap();
    let gzipped = gzip.finish().unwrap();
    // What the server sent, as it came: gzip, which is then inflated here.
    let reply = curl(
        &server,
        DO_FORMAT,
        "application/json",
        &gzipped,
        &[
            "-H",
            "content-encoding: gzip",
            "-H",
            "accept-encoding: gzip",
        ],
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        reply.body.len() < json.len() / 10,
        "{} bytes",
        reply.body.len()
    );
    let mut inflated = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(&reply.body[..]),
        &mut inflated,
    )
    .unwrap();
    let expected = serde_json::json!({ "text": "STRASSE ".repeat(1_000) }).to_string();
    assert_eq!(inflated, expected);
    let unknown = curl(
        &server,
        DO_FORMAT,
        "application/json",
        &gzipped,
        &["-H", "content-encoding: br"],
    );
    assert_error(&unknown, 501, "unimplemented", "gzip");
}

/// Connect's envelope: flags, big-endian length, payload.
fn envelope(flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut envelope = vec![flags];
    envelope.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    envelope.extend_from_slice(payload);
    envelope
}

/// The envelopes of a reply body, as (flags, payload).
fn envelopes(mut body: &[u8]) -> Vec<(u8, String)> {
    let mut found = Vec::new();
    while body.len() >= 5 {
        let length = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
        found.push((
            body[0],
            String::from_utf8_lossy(&body[5..5 + length]).into_owned(),
        ));
        body = &body[5 + length..];
    }
    assert!(body.is_empty(), "a partial envelope: {body:?}");
    found
}

#[test]
fn streams_go_in_envelopes_and_end_with_the_status() {
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0", "--max-message-bytes", "64"]);
    let body = [
        envelope(0, br#"{"text":"a"}"#),
        envelope(0, br#"{"text":"stra\u00dfe"}"#),
    ]
    .concat();
    let h2 = ["--http2-prior-knowledge"];
    let json = curl(
        &server,
        DO_FORMAT_STREAM,
        "application/connect+json",
        &body,
        &h2,
    );
    assert_eq!(json.status, 200);
    assert_eq!(json.content_type, "application/connect+json");
    assert_eq!(
        envelopes(&json.body),
        [
            (0, r#"{"text":"A"}"#.into()),
            (0, r#"{"text":"STRASSE"}"#.into()),
            (2, "{}".into())
        ]
    );
    let request = envelope(0, &Data { text: "ﬁ".into() }.encode_to_vec());
    let proto = curl(
        &server,
        DO_FORMAT_STREAM,
        "application/connect+proto",
        &request,
        &h2,
    );
    let replies = envelopes(&proto.body);
    assert_eq!(proto.content_type, "application/connect+proto");
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert_eq!(Data::decode(replies[0].1.as_bytes()).unwrap().text, "FI");
    // An error comes in the end-of-stream message, after the replies before it.
    let over = [
        envelope(0, br#"{"text":"ok"}"#),
        envelope(0, format!(r#"{{"text":"{}"}}"#, "a".repeat(100)).as_bytes()),
    ]
    .concat();
    let refused = curl(
        &server,
        DO_FORMAT_STREAM,
        "application/connect+json",
        &over,
        &h2,
    );
    let replies = envelopes(&refused.body);
    assert_eq!(replies[0], (0, r#"{"text":"OK"}"#.into()));
    let end: serde_json::Value = serde_json::from_str(&replies[1].1).unwrap();
    assert_eq!(
        (replies[1].0, &end["error"]["code"]),
        (2, &"resource_exhausted".into())
    );
    // Reflection, in JSON too.
    let list = envelope(0, br#"{"listServices":""}"#);
    let reflection = curl(
        &server,
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "application/connect+json",
        &list,
        &h2,
    );
    let replies = envelopes(&reflection.body);
    assert!(
        replies[0].1.contains(r#"{"name":"example.FormatData"}"#),
        "{replies:?}"
    );
    // Over HTTP/1.1 a stream both ways cannot be carried: 505, saying so.
    let http1 = curl(
        &server,
        DO_FORMAT_STREAM,
        "application/connect+json",
        &body,
        &[],
    );
    assert_eq!(http1.status, 505);
    let end = &envelopes(&http1.body)[0];
    assert!(end.1.contains("HTTP/2"), "{end:?}");
}

/// `buf curl` (buf's CLI, from npm) with `args`; its output, or `None` without it.
fn buf_curl(args: &[&str], stdin: &str) -> Option<Output> {
    use std::io::Write;
    let buf = env::buf()?;
    let mut child = Command::new(buf)
        .arg("curl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("buf runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    Some(child.wait_with_output().unwrap())
}

#[test]
fn buf_curl_calls_over_connect_with_the_schema_and_through_reflection() {
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);
    let url = |path| format!("http://{}{path}", server.addr());
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/proto/data.proto");
    let connect = ["--protocol", "connect"];
    let unary = url(DO_FORMAT);
    let stream = url(DO_FORMAT_STREAM);
    let cases: [(&str, Vec<&str>, &str, &str); 3] = [
        (
            "unary over HTTP/1.1 with --schema",
            [
                &connect[..],
                &["--schema", schema, "-d", r#"{"text":"straße"}"#, &unary],
            ]
            .concat(),
            "",
            "STRASSE",
        ),
        (
            "unary over HTTP/2 through reflection",
            [
                &connect[..],
                &["--http2-prior-knowledge", "-d", r#"{"text":"hi"}"#, &unary],
            ]
            .concat(),
            "",
            "HI",
        ),
        (
            "the bidi stream over HTTP/2 through reflection",
            [
                &connect[..],
                &["--http2-prior-knowledge", "-d", "@-", &stream],
            ]
            .concat(),
            "{\"text\":\"a\"}\n{\"text\":\"ß\"}\n",
            "SS",
        ),
    ];
    for (what, args, stdin, expected) in cases {
        let Some(output) = buf_curl(&args, stdin) else {
            return;
        };
        assert!(output.status.success(), "{what}: {}", stderr(&output));
        let replies: Vec<serde_json::Value> = serde_json::Deserializer::from_slice(&output.stdout)
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap();
        let last = replies.last().unwrap_or_else(|| panic!("{what}: no reply"));
        assert_eq!(last["text"], expected, "{what}: {replies:?}");
    }
}

#[tokio::test]
async fn pages_on_allowed_origins_may_call_by_post_and_get() {
    let app = app_allowing_one_origin().await;
    let body = br#"{"text":"cors"}"#;
    let post = |origin: &str| {
        format!(
            "POST {DO_FORMAT} HTTP/1.1\r\nHost: localhost\r\nOrigin: {origin}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
    };
    let get = "GET /example.FormatData/DoFormat?encoding=json&message=%7B%22text%22%3A%22cors%22%7D \
         HTTP/1.1\r\nHost: localhost\r\nOrigin: https://allowed.example\r\nConnection: close\r\n\r\n";
    for (what, reply) in [
        (
            "POST",
            http1(app.addr, &post("https://allowed.example"), body).await,
        ),
        ("GET", http1(app.addr, get, b"").await),
    ] {
        assert_eq!(
            allowed_origin(&reply),
            Some("https://allowed.example"),
            "{what}: {reply}"
        );
        assert!(reply.ends_with(r#"{"text":"CORS"}"#), "{what}: {reply}");
    }
    let other = http1(app.addr, &post("https://other.example"), body).await;
    assert_eq!(allowed_origin(&other), None, "{other}");
}
