//! Connections are capped below what the descriptor limit allows, and running out of
//! descriptors does not make the accept loop spin. With the limit lowered to 64, 70 stalled
//! HTTP/1.1 peers made accept() fail with EMFILE and the server logged `Too many open files` ten
//! times a second for as long as they stayed.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::assert_serves_normally;
use formatdata_test_support::process::{ServerProcess, forward_lines, server_command};
use formatdata_test_support::raw::closed_within;

/// Open files allowed to the server in the descriptor-starved test: its own (runtime, listener,
/// stdio) leave room for a few dozen connections.
const FILE_LIMIT: u64 = 64;

/// Stalled peers: more than the server has descriptors for.
const PEERS: usize = 70;

/// How long the peers are held; a spinning accept loop logs every 100 ms meanwhile.
const HOLD: Duration = Duration::from_secs(3);

/// Log lines about failed accepts allowed while the peers are held: the warning is rate-limited
/// to one per 10 s, and a server that stops accepting at its cap has none to give.
const MAX_ACCEPT_WARNINGS: usize = 2;

/// The server binary with `args`, run by a shell that first lowers its open-file limit, soft and
/// hard, to `limit`, so the server cannot raise it again.
fn with_file_limit(limit: u64, args: &[&str]) -> Command {
    let server = server_command(args);
    let mut shell = Command::new("sh");
    shell
        .arg("-c")
        .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
        .arg(server.get_program())
        .args(server.get_args());
    for (name, value) in server.get_envs() {
        match value {
            Some(value) => shell.env(name, value),
            None => shell.env_remove(name),
        };
    }
    shell
}

#[tokio::test]
async fn out_of_descriptors_the_server_neither_spins_nor_stops_serving() {
    let mut server =
        ServerProcess::start_command(with_file_limit(FILE_LIMIT, &["--addr", "127.0.0.1:0"]));
    let addr = server.addrs[0];
    let startup = server.log_lines();

    let mut peers = Vec::new();
    for _ in 0..PEERS {
        // Connecting succeeds whether or not the server accepts: the kernel queues it.
        let mut peer = TcpStream::connect(addr).await.expect("connect");
        peer.write_all(b"POST /example.FormatData/DoFormat HTTP/1.1\r\nHost: localhost\r\n")
            .await
            .unwrap();
        peers.push(peer);
    }
    tokio::time::sleep(HOLD).await;
    let logged = server.log_lines();
    let accept_warnings: Vec<_> = logged[startup.len()..]
        .iter()
        .filter(|line| {
            line.contains("accepting connections failed") || line.contains("Too many open files")
        })
        .collect();
    drop(peers);

    assert!(
        accept_warnings.len() <= MAX_ACCEPT_WARNINGS,
        "{} lines about failed accepts in {HOLD:?}, the first: {:?}",
        accept_warnings.len(),
        accept_warnings.first()
    );
    // Once the peers are gone, the server serves again by itself.
    assert_serves_normally(addr).await;
    let max_connections = startup
        .iter()
        .find(|line| line.contains("serving example.FormatData on"))
        .and_then(|line| line.split_once("max_connections=")?.1.split(' ').next())
        .and_then(|value| value.parse::<u64>().ok());
    assert!(
        max_connections.is_some_and(|max| max <= FILE_LIMIT),
        "the startup line says max_connections={max_connections:?} under a limit of \
         {FILE_LIMIT} open files: {startup:?}"
    );
}

#[test]
fn more_connections_than_the_descriptor_limit_allows_is_refused_at_startup() {
    // As `--max-connections 100000`, through its variable: a server that does not know the
    // flag yet starts and serves (the defect), rather than refusing an unknown flag.
    let mut command = with_file_limit(1024, &["--addr", "127.0.0.1:0"]);
    command
        .env("FORMATDATA_MAX_CONNECTIONS", "100000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("start the server");
    let stderr = forward_lines(child.stderr.take().unwrap());

    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Until the pipe closes (the thread reading it then ends), or what came within 2 s.
    let lines: Vec<String> =
        std::iter::from_fn(|| stderr.recv_timeout(Duration::from_secs(2)).ok()).collect();

    let Some(status) = status else {
        panic!("still running 10 s after --max-connections 100000 under ulimit -n 1024: {lines:?}");
    };
    assert_eq!(status.code(), Some(2), "{lines:?}");
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    assert!(lines[0].contains("connections"), "{lines:?}");
}

/// One client address gets a quarter of the connections (`--max-connections-per-peer`): a host
/// that opens more has them closed as they come, and the rest stay for everyone else.
#[tokio::test]
async fn one_address_gets_a_share_of_the_connections_not_all() {
    const MAX_CONNECTIONS: usize = 40;
    const SHARE: usize = MAX_CONNECTIONS / 4;
    let server = ServerProcess::start_with_env(
        &["--addr", "127.0.0.1:0"],
        &[("FORMATDATA_MAX_CONNECTIONS", &MAX_CONNECTIONS.to_string())],
    );
    let addr = server.addrs[0];
    let attacker: std::net::IpAddr = "127.0.0.2".parse().unwrap();

    let mut held = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((attacker, 0).into()).unwrap();
        held.push(socket.connect(addr).await.expect("connect"));
    }
    let mut closed = 0;
    for peer in &mut held {
        if closed_within(peer, Duration::from_millis(200))
            .await
            .is_some()
        {
            closed += 1;
        }
    }
    assert_eq!(
        closed,
        MAX_CONNECTIONS - SHARE,
        "of {MAX_CONNECTIONS} connections from one address, {closed} were closed; its share is \
         {SHARE}"
    );
    // Everyone else still gets in.
    assert_serves_normally(addr).await;
}
