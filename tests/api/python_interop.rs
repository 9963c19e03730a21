//! Interop with the Python original: grpcio client and server written from the tutorial
//! (`tests/python/`), talking to our binaries in both directions.
//!
//! The Python stubs are generated at test time with grpcio-tools into a temporary folder, from the
//! same `proto/` the Rust build uses. Python and grpcio come from `formatdata_test_support::env`,
//! which sets them up on first use; without any Python the tests skip, saying so.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use formatdata_test_support::env;
use tempfile::TempDir;

use formatdata_test_support::certs::Certificates;
use formatdata_test_support::process::{ServerProcess, forward_lines, run_client, stderr, stdout};

const CRATE_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// A Python with grpcio, and the stubs for `proto/data.proto` generated for it.
struct Python {
    interpreter: PathBuf,
    stubs: TempDir,
}

impl Python {
    /// `None` (after saying why) when this machine has no Python at all.
    fn find() -> Option<Self> {
        let interpreter = env::python()?.interpreter.clone();

        let stubs = TempDir::new().unwrap();
        let generated = Command::new(&interpreter)
            .args(["-m", "grpc_tools.protoc", "-I"])
            .arg(Path::new(CRATE_DIR).join("proto"))
            .arg("--python_out")
            .arg(stubs.path())
            .arg("--grpc_python_out")
            .arg(stubs.path())
            .arg("data.proto")
            .output()
            .unwrap();
        assert!(
            generated.status.success(),
            "{} cannot generate the grpcio stubs (is grpcio-tools installed?):\n{}",
            interpreter.display(),
            stderr(&generated)
        );
        Some(Self { interpreter, stubs })
    }

    /// A command running `tests/python/<script>` with the generated stubs importable.
    fn script(&self, script: &str) -> Command {
        let mut command = Command::new(&self.interpreter);
        command
            .arg(Path::new(CRATE_DIR).join("tests/python").join(script))
            .env("PYTHONPATH", self.stubs.path())
            // grpcio must not wander off to a proxy for loopback addresses.
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("grpc_proxy");
        command
    }

    fn run(&self, script: &str, args: &[&str]) -> Output {
        self.script(script).args(args).output().unwrap()
    }
}

#[test]
fn python_tutorial_client_talks_to_our_server() {
    let Some(python) = Python::find() else { return };
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);

    let output = python.run("tutorial_client.py", &[&server.addr()]);

    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "received: HELLO,WORLD!\n");
}

#[test]
fn our_client_talks_to_the_python_tutorial_server() {
    let Some(python) = Python::find() else { return };
    let mut server = python
        .script("tutorial_server.py")
        .arg("127.0.0.1:0")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let ready = forward_lines(server.stdout.take().unwrap())
        .recv_timeout(Duration::from_secs(30))
        .expect("the Python server prints its port");
    let port = ready.strip_prefix("listening on port ").unwrap();

    let output = run_client(&["--addr", &format!("127.0.0.1:{port}")]);
    let unicode = run_client(&["--addr", &format!("127.0.0.1:{port}"), "straße", "ﬁ"]);
    server.kill().unwrap();
    server.wait().unwrap();

    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "received: HELLO,WORLD!\n");
    assert_eq!(stdout(&unicode), "received: STRASSE FI\n");
}

#[test]
fn every_unicode_scalar_value_uppercases_as_python_does() {
    let Some(python) = Python::find() else { return };
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);

    let output = python.run("unicode_sweep.py", &[&server.addr()]);

    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        report["checked"],
        0x110000 - 0x800,
        "every scalar value was sent"
    );
    let mismatches = report["mismatches"].as_array().unwrap();
    let unexplained: Vec<_> = mismatches
        .iter()
        .filter(|mismatch| mismatch["explained_by_newer_unicode"] != true)
        .collect();
    assert!(
        unexplained.is_empty(),
        "differ from Python {} beyond Unicode updates: {unexplained:#?}",
        report["python_unicode_version"]
    );
    assert!(
        mismatches.len() < 100,
        "only a few dozen code points changed after Python's Unicode version: {}",
        mismatches.len()
    );
}

impl Python {
    /// Runs one check of `operator_checks.py` and returns the JSON object it printed.
    fn check(&self, check: &str, args: &[&str]) -> serde_json::Value {
        let output = self.run("operator_checks.py", &[&[check][..], args].concat());
        assert!(output.status.success(), "{check}: {}", stderr(&output));
        serde_json::from_slice(&output.stdout).expect("one JSON object")
    }
}

#[test]
fn grpcio_health_checking_sees_serving() {
    let Some(python) = Python::find() else { return };
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);

    let report = python.check("health", &[&server.addr()]);

    assert_eq!(report["statuses"][""], "SERVING");
    assert_eq!(report["statuses"]["example.FormatData"], "SERVING");
}

#[test]
fn grpcio_watch_sees_not_serving_after_sigterm_and_the_server_exits_zero_within_grace() {
    let Some(python) = Python::find() else { return };
    let mut server = ServerProcess::start(&["--addr", "127.0.0.1:0", "--shutdown-grace", "3"]);
    let mut watcher = python
        .script("operator_checks.py")
        .args(["watch", &server.addr()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let updates = forward_lines(watcher.stdout.take().unwrap());
    let next = || {
        let line = updates
            .recv_timeout(Duration::from_secs(30))
            .expect("a Watch update");
        serde_json::from_str::<serde_json::Value>(&line).unwrap()
    };
    assert_eq!(next()["status"], "SERVING");

    let signalled = std::time::Instant::now();
    server.signal(nix::sys::signal::Signal::SIGTERM);

    assert_eq!(next()["status"], "NOT_SERVING");
    let status = server.wait_for_exit(Duration::from_secs(3 + 5));
    assert_eq!(status.code(), Some(0));
    assert!(
        signalled.elapsed() < Duration::from_secs(3 + 2),
        "{:?}",
        signalled.elapsed()
    );
    let _ = watcher.kill();
    let _ = watcher.wait();
}

#[test]
fn grpcio_reflection_finds_the_service_and_the_data_message() {
    let Some(python) = Python::find() else { return };
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);

    let report = python.check("reflection", &[&server.addr()]);

    let services = report["services"].as_array().unwrap();
    assert!(
        services.iter().any(|name| name == "example.FormatData"),
        "{services:?}"
    );
    assert_eq!(report["data_file"], "data.proto");
    assert!(
        report["data_messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|name| name == "Data")
    );
}

#[test]
fn grpcio_raw_bytes_get_standard_statuses_and_the_next_call_succeeds() {
    let Some(python) = Python::find() else { return };
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);

    let report = python.check("raw", &[&server.addr()]);

    for (case, code) in [
        ("garbage", "INVALID_ARGUMENT"),
        ("non_utf8", "INVALID_ARGUMENT"),
        ("five_mib", "RESOURCE_EXHAUSTED"),
    ] {
        assert_eq!(report[case]["code"], code, "{case}: {}", report[case]);
        assert_eq!(report[case]["next_call"], "OK", "{case}");
        assert_eq!(report[case]["next_reply"], "NEXT", "{case}");
    }
}

/// The server binary with the generated certificate, requiring client certificates if `mutual`.
fn tls_server(certs: &Certificates, mutual: bool) -> ServerProcess {
    let (cert, key, ca) = (
        certs.path("server.pem"),
        certs.path("server.key"),
        certs.path("ca.pem"),
    );
    let mut args = vec![
        "--addr",
        "127.0.0.1:0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ];
    if mutual {
        args.extend(["--tls-client-ca", &ca]);
    }
    ServerProcess::start(&args)
}

#[test]
fn grpcio_over_tls_succeeds_and_plaintext_fails() {
    let Some(python) = Python::find() else { return };
    let certs = Certificates::generate();
    let server = tls_server(&certs, false);

    let secure = python.check("tls", &[&server.addr(), &certs.path("ca.pem")]);
    assert_eq!(secure["code"], "OK", "{secure}");
    assert_eq!(secure["received"], "HELLO,WORLD!");
    let plain = python.check("plaintext", &[&server.addr()]);
    assert_ne!(plain["code"], "OK", "{plain}");
}

#[test]
fn grpcio_needs_a_client_certificate_under_mutual_tls() {
    let Some(python) = Python::find() else { return };
    let certs = Certificates::generate();
    let server = tls_server(&certs, true);

    let anonymous = python.check("tls", &[&server.addr(), &certs.path("ca.pem")]);
    assert_ne!(anonymous["code"], "OK", "{anonymous}");
    let identified = python.check(
        "tls",
        &[
            &server.addr(),
            &certs.path("ca.pem"),
            &certs.path("client.pem"),
            &certs.path("client.key"),
        ],
    );
    assert_eq!(identified["code"], "OK", "{identified}");
}

#[test]
fn grpcio_with_the_auth_token_set() {
    let Some(python) = Python::find() else { return };
    let server = ServerProcess::start_with_env(
        &["--addr", "127.0.0.1:0"],
        &[("FORMATDATA_AUTH_TOKEN", "s3cret")],
    );

    let without = python.check("auth", &[&server.addr()]);
    assert_eq!(without["code"], "UNAUTHENTICATED");
    assert_eq!(without["health"], "SERVING", "health needs no token");
    let with = python.check("auth", &[&server.addr(), "s3cret"]);
    assert_eq!(with["code"], "OK");
    assert_eq!(with["received"], "HELLO,WORLD!");
}

#[test]
fn grpcio_with_gzip_gets_the_right_reply() {
    let Some(python) = Python::find() else { return };
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);

    let report = python.check("gzip", &[&server.addr()]);

    assert_eq!(report["code"], "OK");
    assert_eq!(report["received"], "HELLO,WORLD!");
}

#[test]
fn grpcio_streams_100k_messages_and_gets_every_reply_in_order() {
    let Some(python) = Python::find() else { return };
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);

    let report = python.check("stream", &[&server.addr(), "100000"]);

    assert_eq!(report["received"], 100_000);
    assert_eq!(report["in_order"], true);
}

#[test]
fn grpcio_stream_opened_before_sigterm_gets_every_later_reply_and_the_server_exits_zero() {
    let Some(python) = Python::find() else { return };
    let mut server = ServerProcess::start(&["--addr", "127.0.0.1:0", "--shutdown-grace", "20"]);
    let mut streamer = python
        .script("operator_checks.py")
        .args(["stream_across_shutdown", &server.addr()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = forward_lines(streamer.stdout.take().unwrap());
    let next = || {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("a report line");
        serde_json::from_str::<serde_json::Value>(&line).unwrap()
    };
    assert_eq!(next()["open"], "BEFORE");

    server.signal(nix::sys::signal::Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(200));
    use std::io::Write;
    streamer.stdin.take().unwrap().write_all(b"go\n").unwrap();

    let report = next();
    assert_eq!(report["code"], "OK", "{report}");
    assert_eq!(report["replies_after"], 100);
    assert_eq!(report["all_right"], true);
    assert_eq!(
        server.wait_for_exit(Duration::from_secs(20)).code(),
        Some(0)
    );
    let _ = streamer.wait();
}
