//! The two binaries, run as a user runs them.

use std::time::{Duration, Instant};

use clap::CommandFactory;
use formatdata::cli::{ClientArgs, ServerArgs};

use formatdata_test_support::app::spawn_tonic;
use formatdata_test_support::process::{ServerProcess, closed_port, run_client, stderr, stdout};

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
fn client_reports_a_non_ok_status_by_its_code_name() {
    // A gRPC server that serves nothing: every call is UNIMPLEMENTED.
    let (_runtime, addr) = spawn_tonic(tonic::service::Routes::default());

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

#[test]
fn bad_flag_values_are_one_line_and_exit_2() {
    for args in [
        &["--max-message-bytes", "lots"][..],
        &["--log-format", "xml"],
        &["--tls-cert", "only-a-cert.pem"],
        &["--shutdown-grace", "-1"],
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_server"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let message = stderr(&output);
        assert_eq!(message.lines().count(), 1, "{args:?}: {message}");
        assert!(message.starts_with("error: "), "{message}");
    }
}

#[test]
fn help_lists_every_flag_with_its_environment_variable() {
    for (binary, command) in [
        (env!("CARGO_BIN_EXE_server"), ServerArgs::command()),
        (env!("CARGO_BIN_EXE_client"), ClientArgs::command()),
    ] {
        let output = std::process::Command::new(binary)
            .arg("--help")
            .output()
            .unwrap();
        assert!(output.status.success());
        let help = stdout(&output);
        // Every flag clap knows of, so a new one cannot be left out of this test.
        let flags: Vec<_> = command
            .get_arguments()
            .filter_map(|arg| Some((arg.get_long()?, arg.get_env())))
            .filter(|(long, _)| !matches!(*long, "help" | "version"))
            .collect();
        assert!(flags.len() > 5, "{binary}: {flags:?}");
        for (long, env) in flags {
            assert!(
                help.contains(&format!("--{long}")),
                "--{long} missing from {binary} --help"
            );
            if let Some(env) = env {
                let env = env.to_string_lossy();
                assert!(help.contains(&*env), "{env} missing from {binary} --help");
            }
        }
        assert!(help.contains("[default: localhost:8080]"), "{help}");
    }
}

#[test]
fn a_missing_tls_file_stops_the_server_with_one_line_naming_it() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_server"))
        .args([
            "--addr",
            "127.0.0.1:0",
            "--tls-cert",
            "/nonexistent/c.pem",
            "--tls-key",
            "k",
        ])
        .output()
        .unwrap();

    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(message.contains("/nonexistent/c.pem"), "{message}");
}

#[test]
fn json_logs_are_one_object_per_line_with_the_startup_settings() {
    let mut server = ServerProcess::start(&["--addr", "127.0.0.1:0", "--log-format", "json"]);
    let startup: serde_json::Value = serde_json::from_str(&server.log_lines()[0]).unwrap();

    assert_eq!(startup["level"], "INFO");
    let fields = &startup["fields"];
    assert!(
        fields["message"]
            .as_str()
            .unwrap()
            .contains("serving example.FormatData on")
    );
    assert_eq!(fields["tls"], "off");
    assert_eq!(fields["auth"], "off");
    assert_eq!(fields["max_message_bytes"], 4 * 1024 * 1024);
}

#[test]
fn each_call_is_logged_at_debug_and_failures_at_warn() {
    let mut server = ServerProcess::start_with_env(
        &["--addr", "127.0.0.1:0", "--log-format", "json"],
        &[("RUST_LOG", "formatdata=debug")],
    );
    assert!(run_client(&["--addr", &server.addr()]).status.success());
    assert!(
        !run_client(&["--addr", &server.addr(), "health", "no.Such"])
            .status
            .success()
    );
    server.signal(nix::sys::signal::Signal::SIGTERM);
    server.wait_for_exit(Duration::from_secs(10));

    let calls: Vec<serde_json::Value> = server
        .log_lines()
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .filter(|entry: &serde_json::Value| entry["fields"]["method"].is_string())
        .collect();
    let ok = calls
        .iter()
        .find(|entry| entry["fields"]["method"] == "/example.FormatData/DoFormat")
        .expect("the DoFormat call is logged");
    assert_eq!(ok["level"], "DEBUG");
    assert_eq!(ok["fields"]["code"], "Ok");
    assert!(ok["fields"]["duration_us"].is_u64());
    let failed = calls
        .iter()
        .find(|entry| entry["fields"]["method"] == "/grpc.health.v1.Health/Check")
        .expect("the failed health call is logged");
    assert_eq!(failed["level"], "WARN");
    assert_eq!(failed["fields"]["code"], "NotFound");
}

#[test]
fn serving_a_non_loopback_address_without_tls_warns() {
    let mut server = ServerProcess::start(&["--addr", "0.0.0.0:0"]);
    server.signal(nix::sys::signal::Signal::SIGTERM);
    server.wait_for_exit(Duration::from_secs(10));
    let log = server.log_lines();
    assert!(
        log.iter()
            .any(|line| line.contains("WARN") && line.contains("without TLS")),
        "{log:#?}"
    );
}

#[test]
fn client_health_exits_zero_only_when_serving() {
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);

    let serving = run_client(&["--addr", &server.addr(), "health"]);
    assert!(serving.status.success());
    assert_eq!(stdout(&serving), "SERVING\n");
    let service = run_client(&["--addr", &server.addr(), "health", "example.FormatData"]);
    assert_eq!(stdout(&service), "SERVING\n");
    let unknown = run_client(&["--addr", &server.addr(), "health", "no.Such"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        stderr(&unknown).starts_with("client: NOT_FOUND: "),
        "{}",
        stderr(&unknown)
    );
}

#[test]
fn client_list_prints_the_services_one_per_line() {
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);

    let output = run_client(&["--addr", &server.addr(), "list"]);

    assert!(output.status.success(), "{}", stderr(&output));
    let services: Vec<_> = stdout(&output).lines().map(str::to_owned).collect();
    assert!(
        services.contains(&"example.FormatData".to_owned()),
        "{services:?}"
    );
    assert!(
        services.contains(&"grpc.health.v1.Health".to_owned()),
        "{services:?}"
    );
}

#[test]
fn client_retries_until_a_late_server_is_up() {
    let addr = format!("127.0.0.1:{}", closed_port());
    let client = std::process::Command::new(env!("CARGO_BIN_EXE_client"))
        .args(["--addr", &addr, "--retries", "5"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    std::thread::sleep(Duration::from_millis(300));
    let _server = ServerProcess::start(&["--addr", &addr]);
    let output = client.wait_with_output().unwrap();

    assert!(output.status.success());
    assert_eq!(stdout(&output), "received: HELLO,WORLD!\n");
}

#[test]
fn client_with_a_missing_tls_file_fails_with_one_line_naming_it() {
    let output = run_client(&["--tls-ca", "/nonexistent/ca.pem"]);

    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(message.contains("/nonexistent/ca.pem"), "{message}");
}
