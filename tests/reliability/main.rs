//! Reliability: the real binaries under faults, sustained load and hostile peers, on loopback.
//!
//! Apart from `tests/api` because these are heavy (whole cores for seconds, a one-minute soak)
//! and timing-sensitive: each heavy one holds [`serial`] so they run one at a time, and the quick
//! tests in `tests/api` never share the machine with them (cargo runs test binaries one after
//! another). Light ones, which mostly wait on the server's timers, run beside them.

mod attacks;
mod client_defences;
mod failover;
mod hostile;
mod load;
mod stream_restart;

use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};

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
