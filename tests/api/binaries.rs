//! The two binaries, run as a user runs them.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::helpers::{ServerProcess, closed_port, run_client, stderr, stdout};

#[test]
fn client_prints_the_uppercased_greeting() {
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);

    let output = run_client(&["--addr", &server.addr()]);

    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "received: HELLO,WORLD!\n");
}

#[test]
fn client_sends_its_arguments_joined_by_spaces() {
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);

    let output = run_client(&["--addr", &server.addr(), "straße", "ﬁne", "ŉ"]);

    assert_eq!(stdout(&output), "received: STRASSE FINE ʼN\n");
}

#[test]
fn both_binaries_take_the_address_from_the_environment() {
    let port = closed_port();
    let addr = format!("127.0.0.1:{port}");
    let server = ServerProcess::start_with_env(&[], &[("FORMATDATA_ADDR", &addr)]);
    assert_eq!(server.addr(), addr);

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_client"))
        .env("FORMATDATA_ADDR", &addr)
        .output()
        .unwrap();

    assert_eq!(stdout(&output), "received: HELLO,WORLD!\n");
}

#[test]
fn client_without_a_server_fails_with_one_line_naming_the_address() {
    let addr = format!("127.0.0.1:{}", closed_port());

    let output = run_client(&["--addr", &addr]);

    assert!(!output.status.success());
    assert_eq!(stdout(&output), "", "nothing printed as if it were a reply");
    let message = stderr(&output);
    assert_eq!(message.lines().count(), 1, "one line: {message}");
    assert!(message.contains(&addr), "names the address: {message}");
    assert!(!message.contains("panicked"), "{message}");
}

#[test]
fn client_rejects_a_malformed_address_with_usage_exit_status() {
    let output = run_client(&["--addr", "localhost"]);

    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("HOST:PORT"), "{}", stderr(&output));
}

#[test]
fn server_on_a_port_in_use_fails_with_one_line_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_server"))
        .args(["--addr", &addr])
        .output()
        .unwrap();

    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert_eq!(message.lines().count(), 1, "one line: {message}");
    assert!(message.contains(&addr), "names the address: {message}");
    assert!(message.to_lowercase().contains("in use"), "{message}");
}

#[test]
fn server_exits_zero_on_ctrl_c_and_sigterm() {
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        let mut server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);
        assert!(run_client(&["--addr", &server.addr()]).status.success());

        kill(Pid::from_raw(server.child.id() as i32), signal).unwrap();

        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "server still running after {signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(0), "exit status after {signal}");
    }
}

#[test]
fn client_reports_a_non_ok_status_by_its_code_name() {
    // A gRPC server that serves nothing: every call is UNIMPLEMENTED.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    runtime.spawn(
        tonic::transport::Server::builder()
            .add_routes(tonic::service::Routes::default())
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );

    let output = run_client(&["--addr", &addr]);

    assert_eq!(output.status.code(), Some(1));
    assert_eq!(stdout(&output), "");
    let message = stderr(&output);
    assert_eq!(message.lines().count(), 1, "one line: {message}");
    assert!(message.starts_with("client: UNIMPLEMENTED: "), "{message}");
}

#[test]
fn client_gives_up_on_a_silent_server_after_its_timeout() {
    // Accepted by the kernel's backlog, never answered.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();

    let started = Instant::now();
    let output = run_client(&["--addr", &addr, "--timeout", "0.5"]);

    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the timeout was not honoured"
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).starts_with("client: DEADLINE_EXCEEDED: "),
        "{}",
        stderr(&output)
    );
}
