//! Defences on the client's side of the wire, and of the token both binaries share: an auth
//! token that would fail open, the Bearer scheme in any case, a server that sends reply headers
//! and then nothing, one that stops answering pings, one whose reply does not decode, and an
//! input line too long to ever send.
//!
//! Each test runs the real binaries over loopback; the misbehaving servers are written here with
//! the `h2` crate's server API, as no well-behaved server would misbehave on cue.

use std::ffi::OsStr;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::HeaderMap;
use tokio::net::{TcpListener, TcpStream};
use tonic::Code;

use formatdata_test_support::process::{ServerProcess, forward_lines};
use formatdata_test_support::raw;

/// The token the tests' servers require.
const TOKEN: &str = "s3cret";

/// A process that ran to its end (or was killed at a deadline), with what it wrote.
#[derive(Debug)]
struct Ran {
    /// `None` when it was still running at the deadline and had to be killed.
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
    /// The most resident memory it had, from `VmHWM` sampled while it ran, in KiB.
    peak_rss_kib: u64,
}

impl Ran {
    /// Asserts the way every run-time or usage failure must end: exit status `code`, exactly
    /// one line on stderr, no panic or backtrace.
    fn assert_fails_with_one_line(&self, code: i32) {
        let Self { status, stderr, .. } = self;
        assert_eq!(
            status.and_then(|status| status.code()),
            Some(code),
            "{status:?} after {:?}, stderr: {stderr}",
            self.elapsed
        );
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        for noise in ["panicked", "backtrace", "RUST_BACKTRACE"] {
            assert!(!stderr.contains(noise), "{stderr}");
        }
    }
}

/// Runs `command` with stdin from `input` (fed on a thread), killing it after `limit`. Samples
/// its peak memory as it runs.
fn run_bounded(mut command: Command, input: Option<Input>, limit: Duration) -> Ran {
    let started = Instant::now();
    let mut child = command
        .env_remove("FORMATDATA_ADDR")
        .env_remove("RUST_LOG")
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the binary");
    let exited = Arc::new(AtomicBool::new(false));
    let feeding = input.map(|input| {
        let stdin = child.stdin.take().unwrap();
        let exited = exited.clone();
        std::thread::spawn(move || input.feed(stdin, &exited))
    });
    let stdout = forward_lines(child.stdout.take().unwrap());
    let stderr = forward_lines(child.stderr.take().unwrap());
    let mut peak_rss_kib = 0;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if let Some(kib) = vm_hwm_kib(child.id()) {
            peak_rss_kib = peak_rss_kib.max(kib);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = started.elapsed();
    exited.store(true, Ordering::Relaxed);
    if let Some(feeding) = feeding {
        feeding.join().unwrap();
    }
    let lines = |receiver: std::sync::mpsc::Receiver<String>| {
        receiver
            .iter()
            .map(|line| format!("{line}\n"))
            .collect::<String>()
    };
    Ran {
        status,
        stdout: lines(stdout),
        stderr: lines(stderr),
        elapsed,
        peak_rss_kib,
    }
}

/// `VmHWM` of a running process, in KiB; `None` once it has exited.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        line.strip_prefix("VmHWM:")?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    })
}

/// What a process gets on stdin.
enum Input {
    /// These bytes, then end of input.
    Bytes(Vec<u8>),
    /// These bytes, then stdin stays open for as long as the process runs.
    BytesThenOpen(&'static [u8]),
    /// `len` bytes of `a` and no newline, written 1 MiB at a time, then end of input.
    OneLongLine { len: usize },
}

impl Input {
    /// Writes the input; `exited` is set once the process is gone.
    fn feed(self, mut stdin: std::process::ChildStdin, exited: &AtomicBool) {
        match self {
            Self::Bytes(bytes) => {
                let _ = stdin.write_all(&bytes);
            }
            Self::BytesThenOpen(bytes) => {
                let _ = stdin.write_all(bytes);
                let _ = stdin.flush();
                while !exited.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            Self::OneLongLine { len } => {
                let chunk = vec![b'a'; 1 << 20];
                for _ in 0..len / chunk.len() {
                    // An error is the process having stopped reading: what the test waits for.
                    if stdin.write_all(&chunk).is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// The `client` binary with `args`.
fn client(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_client"));
    command.args(args);
    command
}

// ---------------------------------------------------------------------------------------------
// The auth token.

/// Values of FORMATDATA_AUTH_TOKEN that must stop either binary at startup, each with what it
/// is. The ones that contain the token must not have it echoed.
fn bad_tokens() -> Vec<(&'static str, &'static OsStr)> {
    vec![
        ("empty", OsStr::new("")),
        ("not UTF-8", OsStr::from_bytes(b"s3cr\xffet")),
        ("a trailing newline", OsStr::new("s3cret\n")),
        ("a newline inside", OsStr::new("s3c\nret")),
        ("a control character", OsStr::new("s3c\x01ret")),
        ("a space", OsStr::new("s3c ret")),
        ("a tab", OsStr::new("s3c\tret")),
        ("non-ASCII", OsStr::new("s3crét")),
        ("DEL", OsStr::new("s3cret\x7f")),
    ]
}

fn assert_refuses_bad_tokens(binary: &str, args: &[&str]) {
    for (what, token) in bad_tokens() {
        let mut command = Command::new(binary);
        command.args(args).env("FORMATDATA_AUTH_TOKEN", token);
        let ran = run_bounded(command, None, Duration::from_secs(10));

        let context = format!("{binary} with a token that is {what}");
        assert_eq!(
            ran.status.and_then(|status| status.code()),
            Some(2),
            "{context}: {:?}, stderr: {}",
            ran.status,
            ran.stderr
        );
        ran.assert_fails_with_one_line(2);
        assert!(
            ran.stderr.starts_with("error: ") && ran.stderr.contains("FORMATDATA_AUTH_TOKEN"),
            "{context}: {}",
            ran.stderr
        );
        for piece in ["s3c", "ret"] {
            assert!(!ran.stderr.contains(piece), "{context}: {}", ran.stderr);
        }
    }
}

#[test]
fn a_bad_auth_token_stops_the_server_at_startup() {
    assert_refuses_bad_tokens(env!("CARGO_BIN_EXE_server"), &["--addr", "127.0.0.1:0"]);
}

#[test]
fn a_bad_auth_token_stops_the_client_before_it_sends_anything() {
    // Something listening, to see that nothing connects: a client that took an empty token
    // for "no token" would call it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();

    assert_refuses_bad_tokens(
        env!("CARGO_BIN_EXE_client"),
        &["--addr", &addr, "--timeout", "1", "--retries", "0"],
    );
    let accepted = listener.accept();
    assert!(
        accepted
            .as_ref()
            .is_err_and(|error| error.kind() == std::io::ErrorKind::WouldBlock),
        "the client connected: {accepted:?}"
    );
}

#[test]
fn the_bearer_scheme_is_accepted_in_any_case() {
    let server = ServerProcess::start_with_env(
        &["--addr", "127.0.0.1:0"],
        &[("FORMATDATA_AUTH_TOKEN", TOKEN)],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let call = |authorization: &str| {
        let authorization = authorization.to_owned();
        runtime.block_on(call_with_authorization(server.addrs[0], authorization))
    };

    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let reply = call(&format!("{scheme} {TOKEN}"));
        assert_eq!(reply.code(), Code::Ok, "{scheme}: {}", reply.message());
        assert_eq!(reply.body, raw::frame(false, &raw::data_message(b"HI")));
    }
    for wrong in [
        "bearer s3cre",
        "bearer S3CRET",
        "Basic s3cret",
        "bearers3cret",
        "s3cret",
    ] {
        let reply = call(wrong);
        assert_eq!(reply.code(), Code::Unauthenticated, "{wrong}");
    }
}

/// A unary DoFormat of "hi" with this `authorization` header, named for `localhost` (the host a
/// loopback-only server accepts).
async fn call_with_authorization(addr: SocketAddr, authorization: String) -> raw::RawReply {
    let mut client = raw::connect(addr).await;
    let request = http::Request::post(format!(
        "http://localhost:{}{}",
        addr.port(),
        raw::DO_FORMAT
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .header("authorization", authorization)
    .body(())
    .unwrap();
    let (response, mut body) = client.send_request(request, false).expect("send request");
    body.send_data(raw::frame(false, &raw::data_message(b"hi")), true)
        .expect("send body");
    tokio::time::timeout(Duration::from_secs(10), raw::read_reply(response))
        .await
        .expect("a reply within 10 s")
}

// ---------------------------------------------------------------------------------------------
// The client against servers that misbehave.

/// How [`misbehaving_server`] answers every call.
#[derive(Debug, Clone, Copy)]
enum Misbehaviour {
    /// Reply headers, then nothing; the connection still answers pings.
    Stall,
    /// Reply headers, then the connection is never polled again: the socket stays open but
    /// pings go unanswered, as with a peer that froze or a path that silently broke.
    Freeze,
    /// A framed reply whose bytes are not an `example.Data`, then `grpc-status: 0`.
    Undecodable,
}

/// A gRPC server on 127.0.0.1 that misbehaves as told. Keep the runtime: the server runs on it.
fn misbehaving_server(misbehaviour: Misbehaviour) -> (tokio::runtime::Runtime, String) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    runtime.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(misbehave(tcp, misbehaviour));
        }
    });
    (runtime, addr)
}

async fn misbehave(tcp: TcpStream, misbehaviour: Misbehaviour) {
    let Ok(mut connection) = h2::server::handshake(tcp).await else {
        return;
    };
    // Calls left hanging stay here: dropping their halves would reset them.
    let mut hanging = Vec::new();
    while let Some(Ok((request, mut respond))) = connection.accept().await {
        let headers = http::Response::builder()
            .header("content-type", "application/grpc")
            .body(())
            .unwrap();
        let Ok(reply) = respond.send_response(headers, false) else {
            continue;
        };
        match misbehaviour {
            Misbehaviour::Stall => hanging.push((request, reply)),
            Misbehaviour::Undecodable => {
                let mut reply = reply;
                // Field 1, length 5, then one byte: a truncated string.
                let _ = reply.send_data(raw::frame(false, &[0x0a, 0x05, b'a']), false);
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", "0".parse().unwrap());
                let _ = reply.send_trailers(trailers);
            }
            Misbehaviour::Freeze => {
                // Polled a moment more, so the reply headers go out; then never again.
                let _ = tokio::time::timeout(Duration::from_millis(300), connection.accept()).await;
                let _frozen = (connection, request, reply, hanging);
                return std::future::pending().await;
            }
        }
    }
}

#[test]
fn the_timeout_bounds_a_reply_that_never_comes() {
    let (_runtime, addr) = misbehaving_server(Misbehaviour::Stall);

    for (args, timeout) in [
        (&["--timeout", "2", "--retries", "0", "hi"][..], "2s"),
        (&["health", "--timeout", "1"], "1s"),
        (&["list", "--timeout", "1"], "1s"),
    ] {
        let ran = run_bounded(
            client(&[&["--addr", addr.as_str()][..], args].concat()),
            None,
            Duration::from_secs(15),
        );
        ran.assert_fails_with_one_line(1);
        assert_eq!(
            ran.stderr,
            format!("client: DEADLINE_EXCEEDED: no reply within {timeout}\n"),
            "{args:?}"
        );
        assert!(ran.elapsed < Duration::from_secs(5), "{args:?}: {ran:?}");
        assert_eq!(ran.stdout, "", "{args:?}");
    }
}

#[test]
fn bench_counts_a_reply_that_never_comes_as_deadline_exceeded() {
    let (_runtime, addr) = misbehaving_server(Misbehaviour::Stall);

    let ran = run_bounded(
        client(&[
            "bench",
            "--json",
            "--addr",
            &addr,
            "--requests",
            "4",
            "--concurrency",
            "2",
            "--timeout",
            "1",
        ]),
        None,
        Duration::from_secs(15),
    );

    assert!(ran.status.is_some_and(|status| status.success()), "{ran:?}");
    let report: serde_json::Value = serde_json::from_str(&ran.stdout).expect("one JSON report");
    assert_eq!(
        report["errors"],
        serde_json::json!({"DEADLINE_EXCEEDED": 4}),
        "{report}"
    );
}

#[test]
fn a_stream_notices_a_server_that_stops_answering_pings() {
    let (_runtime, addr) = misbehaving_server(Misbehaviour::Freeze);

    let ran = run_bounded(
        client(&["--addr", &addr, "--stream"]),
        Some(Input::BytesThenOpen(b"hi\n")),
        Duration::from_secs(50),
    );

    ran.assert_fails_with_one_line(1);
    // Noticed by the keepalive ping going unanswered, at about 30 s.
    assert!(
        ran.stderr
            .starts_with(&format!("client: lost the connection to {addr}: ")),
        "{}",
        ran.stderr
    );
    assert!(ran.elapsed > Duration::from_secs(25), "{ran:?}");
    assert_eq!(ran.stdout, "");
}

#[test]
fn a_reply_that_does_not_decode_is_internal() {
    let (_runtime, addr) = misbehaving_server(Misbehaviour::Undecodable);

    let unary = run_bounded(
        client(&["--addr", &addr, "--retries", "0", "hi"]),
        None,
        Duration::from_secs(15),
    );
    unary.assert_fails_with_one_line(1);
    assert!(
        unary
            .stderr
            .starts_with("client: INTERNAL: failed to decode Protobuf message"),
        "{}",
        unary.stderr
    );

    let stream = run_bounded(
        client(&["--addr", &addr, "--stream"]),
        Some(Input::Bytes(b"hi\n".to_vec())),
        Duration::from_secs(15),
    );
    stream.assert_fails_with_one_line(1);
    assert!(
        stream.stderr.starts_with("client: INTERNAL: "),
        "{}",
        stream.stderr
    );
}

#[test]
fn a_stream_refuses_a_line_over_the_message_limit_while_reading_it() {
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);

    let ran = run_bounded(
        client(&["--addr", &server.addr(), "--stream"]),
        Some(Input::OneLongLine { len: 64 << 20 }),
        Duration::from_secs(30),
    );

    ran.assert_fails_with_one_line(1);
    assert_eq!(
        ran.stderr,
        "client: input line 1 is longer than the 4194304-byte message limit\n"
    );
    // The line is 64 MiB; reading it whole is what must not happen (it took 145 MiB). About
    // 14 MiB is the client's own, 4 MiB the part of the line it reads.
    assert!(ran.peak_rss_kib < 32 * 1024, "{ran:?}");
}

#[test]
fn the_stream_line_limit_is_max_message_bytes_and_earlier_lines_are_answered() {
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);
    // "short\n" is a 9-byte request; 200 bytes of text are over the limit, the line after is
    // never read.
    let input = [&b"short\n"[..], &[b'a'; 200], b"\nafter\n"].concat();

    let ran = run_bounded(
        client(&[
            "--addr",
            &server.addr(),
            "--stream",
            "--max-message-bytes",
            "100",
        ]),
        Some(Input::Bytes(input)),
        Duration::from_secs(15),
    );

    ran.assert_fails_with_one_line(1);
    assert_eq!(
        ran.stderr,
        "client: input line 2 is longer than the 100-byte message limit\n"
    );
    assert_eq!(ran.stdout, "SHORT\n");
}
