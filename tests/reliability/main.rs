//! Reliability: the real binaries under faults, sustained load and hostile peers, on loopback.
//!
//! Apart from `tests/api` because these are heavy (whole cores for seconds, a one-minute soak)
//! and timing-sensitive: each heavy one holds [`serial`] so they run one at a time, and the quick
//! tests in `tests/api` never share the machine with them (cargo runs test binaries one after
//! another). Light ones, which mostly wait on the server's timers, run beside them.

#[path = "../api/helpers.rs"]
#[allow(dead_code)] // shared with tests/api, which uses more of it
mod helpers;
#[path = "../api/raw.rs"]
#[allow(dead_code)]
mod raw;

mod attacks;
mod client_defences;
mod failover;
mod hostile;
mod load;
mod stream_restart;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Held by each test for its whole run: one heavy test at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    // A failed test poisons the lock; the next one may still run.
    HEAVY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `client bench --json ARGS` started in the background, its report on stdout.
pub fn start_bench(args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_client"))
        .args(["bench", "--json"])
        .args(args)
        .env_remove("FORMATDATA_ADDR")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start client bench")
}

/// Waits for a bench started by [`start_bench`] and returns its report, which must say that no
/// call failed.
pub fn bench_report(bench: std::process::Child) -> serde_json::Value {
    let output = bench.wait_with_output().expect("client bench ran");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "client bench failed: {stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON report");
    assert_eq!(
        report["errors"],
        serde_json::json!({}),
        "failed calls: {report}"
    );
    assert!(report["requests"].as_u64().unwrap() > 0, "{report}");
    report
}

/// The server's resident memory now, in KiB (Linux).
pub fn rss_kib(server: &helpers::ServerProcess) -> u64 {
    proc_status_kib(server.child.id(), "VmRSS:")
}

/// The most resident memory the server has had, in KiB (Linux).
pub fn peak_rss_kib(server: &helpers::ServerProcess) -> u64 {
    proc_status_kib(server.child.id(), "VmHWM:")
}

/// A size field of `/proc/PID/status`, in KiB.
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|line| {
            line.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// CPU time the server has used so far, user and system, all its threads (Linux).
pub fn cpu_time(server: &helpers::ServerProcess) -> Duration {
    let pid = server.child.id();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // The command name (field 2) is in parentheses and may hold spaces: count from its end.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("(comm)") + 2..]
        .split(' ')
        .collect();
    // utime and stime, fields 14 and 15 of proc(5); `fields[0]` is field 3.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // In USER_HZ, which Linux fixes at 100 for /proc on the architectures we run on.
    Duration::from_millis(ticks * 10)
}

/// The address of the server's `/metrics` endpoint (`--metrics-addr 127.0.0.1:0`), from the line
/// it logs before it starts serving.
pub fn metrics_addr(server: &mut helpers::ServerProcess) -> SocketAddr {
    let lines = server.log_lines();
    lines
        .iter()
        .find_map(|line| {
            let (_, rest) = line.split_once("serving Prometheus metrics on http://")?;
            rest.split_once("/metrics")?.0.parse().ok()
        })
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{}", lines.join("\n")))
}

/// How long `stream` stays open, reading and dropping whatever the server sends; `None` if it is
/// still open after `limit`. A reset counts as closed.
pub async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let opened = Instant::now();
    let mut buffer = [0; 4096];
    let closed = async { while stream.read(&mut buffer).await.is_ok_and(|read| read > 0) {} };
    tokio::time::timeout(limit, closed)
        .await
        .ok()
        .map(|()| opened.elapsed())
}
