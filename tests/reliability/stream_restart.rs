//! A server restarted under a running `client --stream`: the client says so and fails, and
//! everything it printed is a reply it really got.

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use formatdata::uppercase::uppercase;
use nix::sys::signal::Signal;

use crate::serial;
use formatdata_test_support::process::{ServerProcess, forward_lines, run_client, stdout};

/// Lines answered one by one before the server goes away, so the stream is known to be live.
const ANSWERED: usize = 100;

fn line(n: usize) -> String {
    format!("line {n} of a long stream, straße\n")
}

/// `client --stream` against `addr`, with ANSWERED lines sent and their replies read.
fn stream_client(addr: &str) -> (Child, std::process::ChildStdin, Receiver<String>) {
    let mut client = Command::new(env!("CARGO_BIN_EXE_client"))
        .args(["--addr", addr, "--stream"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = client.stdin.take().unwrap();
    let replies = forward_lines(client.stdout.take().unwrap());
    for n in 0..ANSWERED {
        stdin.write_all(line(n).as_bytes()).unwrap();
        stdin.flush().unwrap();
        let reply = replies.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(format!("{reply}\n"), uppercase(line(n)));
    }
    (client, stdin, replies)
}

/// Feeds more lines (the client may be gone already), closes stdin and checks how the client
/// ended: non-zero, one line naming the server, and no reply printed after the break.
fn assert_fails_clearly(
    mut client: Child,
    mut stdin: std::process::ChildStdin,
    replies: Receiver<String>,
    addr: &str,
) {
    for n in ANSWERED..2 * ANSWERED {
        if stdin.write_all(line(n).as_bytes()).is_err() {
            break;
        }
    }
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = client.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "client still running");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut message = String::new();
    std::io::Read::read_to_string(&mut client.stderr.take().unwrap(), &mut message).unwrap();

    assert!(!status.success(), "exit status {status}, stderr {message}");
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(message.contains(addr), "{message}");
    assert!(
        message.contains(&format!("{ANSWERED} lines were answered")),
        "{message}"
    );
    let late: Vec<String> = replies.iter().collect();
    assert!(late.is_empty(), "printed after the break: {late:?}");
}

#[test]
fn a_server_killed_under_a_stream_fails_the_client_without_inventing_replies() {
    let _serial = serial();
    let mut server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);
    let addr = server.addr();
    let (client, stdin, replies) = stream_client(&addr);

    server.signal(Signal::SIGKILL);
    server.wait_for_exit(Duration::from_secs(5));
    let _restarted = ServerProcess::start(&["--addr", &addr]);

    assert_fails_clearly(client, stdin, replies, &addr);
    assert_eq!(
        stdout(&run_client(&["--addr", &addr])),
        "received: HELLO,WORLD!\n"
    );
}

#[test]
fn a_stream_outliving_the_shutdown_grace_fails_the_client_clearly() {
    let _serial = serial();
    let mut server = ServerProcess::start(&["--addr", "127.0.0.1:0", "--shutdown-grace", "0.5"]);
    let addr = server.addr();
    let (client, stdin, replies) = stream_client(&addr);

    server.signal(Signal::SIGTERM);
    assert!(server.wait_for_exit(Duration::from_secs(5)).success());

    assert_fails_clearly(client, stdin, replies, &addr);
}
