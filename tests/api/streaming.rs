//! DoFormatStream: order, errors, deadlines, shutdown, and `client --stream` as a pipeline.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use formatdata::pb::Data;
use formatdata::server::ServerConfig;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Streaming};

use formatdata_test_support::app::{TestApp, spawn_app, spawn_app_with};
use formatdata_test_support::process::{ServerProcess, stderr};

fn data(text: impl Into<String>) -> Data {
    Data { text: text.into() }
}

/// A DoFormatStream call fed through a channel, so the test decides when each message goes.
async fn open_stream(app: &TestApp) -> (mpsc::Sender<Data>, Streaming<Data>) {
    let (sender, receiver) = mpsc::channel(1);
    let replies = app
        .client()
        .await
        .do_format_stream(ReceiverStream::new(receiver))
        .await
        .unwrap()
        .into_inner();
    (sender, replies)
}

#[tokio::test]
async fn every_message_gets_its_reply_in_order() {
    let app = spawn_app().await;
    let requests = (0..10_000).map(|n| data(format!("message {n} ß")));

    let mut replies = app.stream(requests).await;

    let mut count = 0;
    while let Some(reply) = replies.message().await.unwrap() {
        assert_eq!(reply.text, format!("MESSAGE {count} SS"));
        count += 1;
    }
    assert_eq!(count, 10_000);
}

#[tokio::test]
async fn replies_arrive_while_the_stream_is_still_open() {
    let app = spawn_app().await;
    let (sender, mut replies) = open_stream(&app).await;

    for word in ["one", "two", "three"] {
        sender.send(data(word)).await.unwrap();
        let reply = replies
            .message()
            .await
            .unwrap()
            .expect("a reply before half-close");
        assert_eq!(reply.text, word.to_uppercase());
    }
    drop(sender);
    assert!(replies.message().await.unwrap().is_none());
}

#[tokio::test]
async fn a_stream_open_when_shutdown_begins_keeps_working_until_half_close() {
    let app = spawn_app().await;
    let (sender, mut replies) = open_stream(&app).await;
    sender.send(data("before")).await.unwrap();
    assert_eq!(replies.message().await.unwrap().unwrap().text, "BEFORE");

    let stopping = tokio::spawn(app.shutdown());
    tokio::time::sleep(Duration::from_millis(100)).await;
    for n in 0..100 {
        sender.send(data(format!("after {n}"))).await.unwrap();
        assert_eq!(
            replies.message().await.unwrap().unwrap().text,
            format!("AFTER {n}")
        );
    }
    drop(sender);

    assert!(replies.message().await.unwrap().is_none());
    stopping
        .await
        .unwrap()
        .expect("clean shutdown once the stream is done");
}

#[tokio::test]
async fn a_message_over_the_limit_ends_the_stream_after_the_replies_before_it() {
    let app = spawn_app_with(ServerConfig {
        max_message_bytes: 100,
        ..ServerConfig::default()
    })
    .await;
    let requests = vec![data("fine"), data("x".repeat(1_000)), data("never read")];

    let mut replies = app.stream(requests).await;

    assert_eq!(replies.message().await.unwrap().unwrap().text, "FINE");
    let error = replies.message().await.unwrap_err();
    assert_eq!(error.code(), Code::ResourceExhausted, "{}", error.message());
}

#[tokio::test]
async fn the_deadline_covers_the_whole_stream() {
    let app = spawn_app().await;
    let (sender, receiver) = mpsc::channel(1);
    let mut request = Request::new(ReceiverStream::new(receiver));
    request.set_timeout(Duration::from_millis(300));
    let mut replies = app
        .client()
        .await
        .do_format_stream(request)
        .await
        .unwrap()
        .into_inner();
    sender.send(data("quick")).await.unwrap();
    assert_eq!(replies.message().await.unwrap().unwrap().text, "QUICK");

    // The stream stays open past its deadline.
    let error = tokio::time::timeout(Duration::from_secs(5), replies.message())
        .await
        .expect("the server ends the stream")
        .unwrap_err();
    assert_eq!(error.code(), Code::DeadlineExceeded, "{}", error.message());
    drop(sender);
}

/// Peak resident memory of a running process (VmHWM), or 0 once it has exited.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches(" kB").parse().ok())
        .unwrap_or(0)
}

/// Samples a process's peak RSS until it exits; the thread returns the last value seen.
fn watch_peak_rss(pid: u32) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        loop {
            match peak_rss_kib(pid) {
                0 => return peak,
                now => peak = now,
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    })
}

/// `client --stream` against `server`, its stdin, stdout and stderr piped.
fn stream_client(server: &ServerProcess) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_client"))
        .args(["--addr", &server.addr(), "--stream"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn client_stream_is_a_pipeline_with_bounded_memory() {
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);
    let line = "the quick brown fox jumps over the lazy dog, straße, ﬁne, αβγ\n";
    let mut input = line.repeat(300_000); // ~20 MB
    input.push_str("last line without newline ß");

    let mut client = stream_client(&server);
    let client_rss = watch_peak_rss(client.id());
    let mut stdin = client.stdin.take().unwrap();
    let writer = {
        let input = input.clone();
        std::thread::spawn(move || stdin.write_all(input.as_bytes()))
    };
    let mut output = String::new();
    client
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut output)
        .unwrap();
    let server_peak = peak_rss_kib(server.child.id());
    writer.join().unwrap().unwrap();
    let status = client.wait_with_output().unwrap();
    let client_peak = client_rss.join().unwrap();

    assert!(status.status.success(), "{}", stderr(&status));
    assert!(
        output == input.to_uppercase(),
        "output differs from the uppercased input"
    );
    assert!(output.ends_with("LAST LINE WITHOUT NEWLINE SS"));
    assert!(
        client_peak > 0 && client_peak < 50 * 1024,
        "client peak RSS {client_peak} KiB"
    );
    assert!(
        server_peak > 0 && server_peak < 50 * 1024,
        "server peak RSS {server_peak} KiB"
    );
}

#[test]
fn client_stream_rejects_input_that_is_not_utf8() {
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);
    let mut client = stream_client(&server);
    client
        .stdin
        .take()
        .unwrap()
        .write_all(b"fine\nnot \xff utf-8\n")
        .unwrap();

    let output = client.wait_with_output().unwrap();

    assert_eq!(output.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "FINE\n");
    assert!(
        stderr(&output).contains("line 2 is not UTF-8"),
        "{}",
        stderr(&output)
    );
}
