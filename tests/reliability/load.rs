//! Sustained and extreme load: no failed call, and memory that comes back down and stays flat.

use std::time::{Duration, Instant};

use crate::{bench_report, serial, start_bench};
use formatdata_test_support::process::ServerProcess;
use formatdata_test_support::raw::{self, DO_FORMAT, data_message, frame};
use tonic::Code;

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

/// A call with a deadline that is answered at once costs the server no more system calls than
/// one without: its timer is set only if the call has to wait. Set for every call, it woke the
/// runtime's timer driver each time (a write to an eventfd), one more system call per call for
/// every client that sends `grpc-timeout` (grpc-go with a context deadline, grpcio with
/// `timeout=`, client bench), and a third of the server's rate under their load.
#[tokio::test]
async fn a_deadline_adds_no_system_call_to_a_call_answered_at_once() {
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);
    let mut client = raw::connect(server.addr().parse().unwrap()).await;
    const CALLS: u64 = 300;
    let mut writes_per_call = async |headers: &[(&'static str, &str)]| {
        let before = server.write_syscalls();
        for _ in 0..CALLS {
            let (response, mut send) = raw::start_call(&mut client, DO_FORMAT, headers);
            send.send_data(frame(false, &data_message(b"hello")), true)
                .unwrap();
            raw::read_reply(response).await.assert_status(Code::Ok, "");
        }
        (server.write_syscalls() - before) as f64 / CALLS as f64
    };

    let without = writes_per_call(&[]).await;
    let with = writes_per_call(&[("grpc-timeout", "20S")]).await;
    eprintln!("writing system calls per call: {without:.2} without a deadline, {with:.2} with");
    assert!(
        with < without * 1.3,
        "{with:.2} writing system calls per call with a deadline, {without:.2} without"
    );
}
