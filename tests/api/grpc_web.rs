//! gRPC-Web and the playground: a third-party gRPC-Web client (Connect's, from npm) and a real
//! browser (Chromium, driven by Playwright) against the server binary; CORS and the flags that
//! turn gRPC-Web and the page on and off, over raw HTTP/1.1.
//!
//! Node.js and the packages of `tests/web` come from `formatdata_test_support::env`, which
//! installs the packages on first use; without Node.js, or (for the browser test) without
//! Chromium, the tests skip, saying so.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use formatdata::server::ServerConfig;
use formatdata_test_support::env::{self, Node};
use nix::sys::signal::Signal;

use formatdata_test_support::app::{TestApp, spawn_app_with};
use formatdata_test_support::process::{ServerProcess, stderr, stdout};
use formatdata_test_support::raw::http1;

/// Runs `tests/web/<script>` with `args`.
pub(crate) fn run(node: &Node, script: &str, args: &[&str]) -> Output {
    script_command(node, script)
        .args(args)
        .output()
        .expect("run node")
}

fn script_command(node: &Node, script: &str) -> Command {
    let mut command = Command::new(&node.program);
    command.arg(node.dir.join(script));
    command
}

/// Node.js, the server binary on default flags (gRPC-Web on, on loopback), and the descriptor
/// set in a file: what a test of a Node client needs; `None` (the test skips) without Node.js.
pub(crate) fn node_and_server() -> Option<(&'static Node, ServerProcess, tempfile::NamedTempFile)> {
    let node = env::node()?;
    Some((
        node,
        ServerProcess::start(&["--addr", "127.0.0.1:0"]),
        descriptor_set_file(),
    ))
}

/// `formatdata::pb::FILE_DESCRIPTOR_SET` in a file, for clients that describe the service at run
/// time instead of generating code from the `.proto`.
fn descriptor_set_file() -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), formatdata::pb::FILE_DESCRIPTOR_SET).unwrap();
    file
}

#[test]
fn a_third_party_grpc_web_client_gets_hello_world_over_http1_and_http2() {
    let Some((node, server, descriptors)) = node_and_server() else {
        return;
    };
    let descriptors = descriptors.path().to_str().unwrap();

    let http1 = run(
        node,
        "grpc_web_client.mjs",
        &[&server.addr(), descriptors, "1.1"],
    );
    let http2 = run(
        node,
        "grpc_web_client.mjs",
        &[&server.addr(), descriptors, "2"],
    );

    assert_eq!(
        stdout(&http1),
        "received: HELLO,WORLD!\n",
        "{}",
        stderr(&http1)
    );
    assert_eq!(
        stdout(&http2),
        "received: HELLO,WORLD!\nstream: STREAMED SS|SECOND FI\n",
        "{}",
        stderr(&http2)
    );
}

#[test]
fn the_playground_uppercases_what_is_typed_in_a_real_browser() {
    let Some(node) = env::node() else { return };
    let Some(chromium) = env::chromium() else {
        return;
    };
    // A small message limit, so the page can be shown a refused call too.
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0", "--max-message-bytes", "64"]);
    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("playground.png");
    let _ = std::fs::remove_file(&screenshot);

    let url = format!("http://{}/", server.addr());
    let output = script_command(node, "playground.mjs")
        .args([url.as_str(), screenshot.to_str().unwrap()])
        .env("CHROMIUM", chromium)
        .output()
        .expect("run node");

    assert!(output.status.success(), "{}", stderr(&output));
    let seen: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(seen["title"], "formatdata playground", "{seen}");
    assert_eq!(seen["reply"], "HELLO, WÖRLD", "{seen}");
    assert!(
        seen["status"].as_str().unwrap().starts_with("OK · "),
        "{seen}"
    );
    assert_eq!(
        seen["focused"], "stream",
        "Tab from the lines reaches the button: {seen}"
    );
    assert_eq!(
        seen["lines"],
        serde_json::json!(["HELLO, WÖRLD", "FINE STRASSE", "ʼN AND Ǆ"]),
        "{seen}"
    );
    assert!(
        seen["streamStatus"]
            .as_str()
            .unwrap()
            .starts_with("OK · 3 of 3 lines"),
        "{seen}"
    );
    assert!(
        seen["errorStatus"]
            .as_str()
            .unwrap()
            .starts_with("RESOURCE_EXHAUSTED: "),
        "{seen}"
    );
    assert_eq!(
        seen["console"],
        serde_json::json!([]),
        "the page logged: {seen}"
    );
    let png = std::fs::read(&screenshot).expect("a screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    eprintln!("playground screenshot: {}", screenshot.display());
}

/// What a browser sends for the page at `/`.
const GET_PLAYGROUND: &str = "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

fn preflight(origin: &str) -> String {
    format!(
        "OPTIONS /example.FormatData/DoFormat HTTP/1.1\r\nHost: localhost\r\nOrigin: {origin}\r\n\
         Access-Control-Request-Method: POST\r\n\
         Access-Control-Request-Headers: content-type,x-grpc-web\r\nConnection: close\r\n\r\n"
    )
}

/// A gRPC-Web DoFormat("cors") from a page on `origin`.
fn grpc_web_post(origin: &str) -> (String, Vec<u8>) {
    let body = [b"\x00\x00\x00\x00\x06\x0a\x04".as_slice(), b"cors"].concat();
    let head = format!(
        "POST /example.FormatData/DoFormat HTTP/1.1\r\nHost: localhost\r\nOrigin: {origin}\r\n\
         Content-Type: application/grpc-web+proto\r\nX-Grpc-Web: 1\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    );
    (head, body)
}

pub(crate) fn allowed_origin(response: &str) -> Option<&str> {
    response.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("access-control-allow-origin")
            .then(|| value.trim())
    })
}

/// The app, allowing pages on `https://allowed.example` to call it.
pub(crate) async fn app_allowing_one_origin() -> TestApp {
    spawn_app_with(ServerConfig {
        cors_origins: vec![http::HeaderValue::from_static("https://allowed.example")],
        ..ServerConfig::default()
    })
    .await
}

#[tokio::test]
async fn cors_lets_only_the_allowed_origins_call() {
    let app = app_allowing_one_origin().await;

    let allowed = http1(app.addr, &preflight("https://allowed.example"), b"").await;
    let other = http1(app.addr, &preflight("https://other.example"), b"").await;

    assert!(allowed.starts_with("HTTP/1.1 200"), "{allowed}");
    assert_eq!(
        allowed_origin(&allowed),
        Some("https://allowed.example"),
        "{allowed}"
    );
    assert!(
        allowed
            .to_lowercase()
            .contains("access-control-allow-headers"),
        "{allowed}"
    );
    assert_eq!(allowed_origin(&other), None, "{other}");

    let (head, body) = grpc_web_post("https://allowed.example");
    let call = http1(app.addr, &head, &body).await;
    assert_eq!(
        allowed_origin(&call),
        Some("https://allowed.example"),
        "{call}"
    );
    assert!(
        call.contains("CORS") && call.contains("grpc-status:0"),
        "{call}"
    );
    assert!(
        call.to_lowercase()
            .contains("access-control-expose-headers"),
        "the page can read grpc-status: {call}"
    );
}

#[tokio::test]
async fn without_cors_origins_no_other_origin_is_allowed() {
    let app = spawn_app_with(ServerConfig::default()).await;

    let response = http1(app.addr, &preflight("https://allowed.example"), b"").await;

    assert_eq!(allowed_origin(&response), None, "{response}");
}

#[tokio::test]
async fn no_playground_keeps_grpc_web_but_not_the_page() {
    let app = spawn_app_with(ServerConfig {
        playground: false,
        ..ServerConfig::default()
    })
    .await;

    let page = http1(app.addr, GET_PLAYGROUND, b"").await;
    let (head, body) = grpc_web_post("http://t");
    let call = http1(app.addr, &head, &body).await;

    assert!(page.starts_with("HTTP/1.1 404"), "{page}");
    assert!(
        call.contains("CORS") && call.contains("grpc-status:0"),
        "{call}"
    );
}

#[tokio::test]
async fn grpc_web_off_means_http2_only() {
    let app = spawn_app_with(ServerConfig {
        grpc_web: Some(false),
        ..ServerConfig::default()
    })
    .await;

    let page = http1(app.addr, GET_PLAYGROUND, b"").await;

    // An HTTP/2 server's first frame, SETTINGS (type 4 after a 3-byte length), and no HTTP/1.1.
    assert_eq!(
        page.as_bytes().get(3),
        Some(&4),
        "not an HTTP/2 answer: {page:?}"
    );
    // Native gRPC is untouched.
    let mut client = app.client().await;
    let reply = client
        .do_format(formatdata::pb::Data { text: "h2".into() })
        .await
        .unwrap();
    assert_eq!(reply.into_inner().text, "H2");
}

#[test]
fn grpc_web_is_off_by_default_beyond_loopback() {
    let mut server = ServerProcess::start(&["--addr", "0.0.0.0:0"]);
    server.signal(Signal::SIGTERM);
    server.wait_for_exit(Duration::from_secs(10));

    let log = server.log_lines();
    assert!(
        log.iter().any(|line| line.contains("grpc_web=false")),
        "{log:#?}"
    );
    assert!(
        !log.iter().any(|line| line.contains("playground at")),
        "{log:#?}"
    );
}

#[test]
fn the_startup_log_points_to_the_playground_on_loopback() {
    let mut server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);
    let url = format!("playground at http://{}/", server.addr());
    server.signal(Signal::SIGTERM);
    server.wait_for_exit(Duration::from_secs(10));

    let log = server.log_lines();
    assert!(log.iter().any(|line| line.contains(&url)), "{log:#?}");
}

#[tokio::test]
async fn a_loopback_server_refuses_browser_requests_for_other_host_names() {
    // A page whose own name was pointed at 127.0.0.1 ("DNS rebinding") is same-origin with
    // itself: CORS cannot stop it, the Host header does.
    let app = spawn_app_with(ServerConfig::default()).await;
    let rebound = "GET / HTTP/1.1\r\nHost: rebound.example\r\nConnection: close\r\n\r\n";

    let page = http1(app.addr, rebound, b"").await;
    let (head, body) = grpc_web_post("http://rebound.example");
    let call = http1(
        app.addr,
        &head.replace("Host: localhost", "Host: rebound.example"),
        &body,
    )
    .await;
    let local = http1(app.addr, GET_PLAYGROUND, b"").await;

    assert!(page.starts_with("HTTP/1.1 421"), "{page}");
    assert!(call.starts_with("HTTP/1.1 421"), "{call}");
    assert!(local.starts_with("HTTP/1.1 200"), "{local}");
}
