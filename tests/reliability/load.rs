//! Sustained and extreme load: no failed call, and memory that comes back down and stays flat.

use std::time::{Duration, Instant};

use crate::{bench_report, serial, start_bench};
use formatdata_test_support::process::ServerProcess;

#[test]
fn ten_thousand_calls_in_flight_fail_none_and_memory_returns_to_idle() {
    let _serial = serial();
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);
    std::thread::sleep(Duration::from_millis(200));
    let idle = server.rss_kib();

    let report = bench_report(start_bench(&[
        "--addr",
        &server.addr(),
        "--connections",
        "100",
        "--concurrency",
        "10000",
        "--requests",
        "100000",
        // Each call waits behind 10k others: on a loaded 2-CPU machine a debug build's calls
        // took up to 11 s, past the default 10 s deadline the bench now enforces on each.
        "--timeout",
        "60",
    ]));
    assert_eq!(report["requests"], 100_000);
    let peak = server.peak_rss_kib();

    // The clients are gone; what their calls and connections held must be given back.
    let settled = Instant::now() + Duration::from_secs(10);
    let near_idle = idle + (idle / 2).max(4 * 1024);
    let mut after = server.rss_kib();
    while after > near_idle && Instant::now() < settled {
        std::thread::sleep(Duration::from_millis(200));
        after = server.rss_kib();
    }
    eprintln!("10k in flight: RSS idle {idle} KiB, peak {peak} KiB, after {after} KiB; {report}");
    assert!(
        after <= near_idle,
        "RSS {after} KiB after the load, idle was {idle} KiB (peak {peak} KiB)"
    );
}

#[test]
fn a_minute_at_full_load_keeps_memory_flat() {
    let _serial = serial();
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);

    let started = Instant::now();
    let bench = start_bench(&[
        "--addr",
        &server.addr(),
        "--duration",
        "60",
        "--connections",
        "8",
        "--concurrency",
        "256",
    ]);
    std::thread::sleep(Duration::from_secs(10).saturating_sub(started.elapsed()));
    let at_10s = server.rss_kib();
    std::thread::sleep(Duration::from_secs(59).saturating_sub(started.elapsed()));
    let at_end = server.rss_kib();
    let report = bench_report(bench);

    eprintln!("soak: RSS at 10 s {at_10s} KiB, at 59 s {at_end} KiB; {report}");
    assert!(
        at_end.abs_diff(at_10s) * 10 <= at_10s,
        "RSS went from {at_10s} KiB at 10 s to {at_end} KiB at the end"
    );
}
