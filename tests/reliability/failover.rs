//! A fleet of three servers with one killed and restarted under load: the client's balancing
//! and retries hide it completely.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::{bench_report, serial, start_bench};
use formatdata_test_support::metrics::{metric_sample, scrape_metrics};
use formatdata_test_support::process::{ServerProcess, closed_port};

const HANDLED_OK: &str = r#"grpc_server_handled_total{grpc_code="OK",grpc_method="DoFormat",grpc_service="example.FormatData",grpc_type="unary"}"#;

/// A server on `addr`, with its metrics on `metrics_addr`.
fn start(addr: &str, metrics_addr: SocketAddr) -> ServerProcess {
    ServerProcess::start(&["--addr", addr, "--metrics-addr", &metrics_addr.to_string()])
}

/// DoFormat calls a server answered OK, from its metrics.
fn handled(metrics_addr: SocketAddr) -> f64 {
    metric_sample(&scrape_metrics(metrics_addr), HANDLED_OK).unwrap_or(0.0)
}

#[test]
fn a_server_killed_and_restarted_under_load_costs_no_call() {
    let _serial = serial();
    let metrics: Vec<SocketAddr> = (0..3)
        .map(|_| SocketAddr::from(([127, 0, 0, 1], closed_port())))
        .collect();
    let mut servers: Vec<ServerProcess> = metrics
        .iter()
        .map(|metrics_addr| start("127.0.0.1:0", *metrics_addr))
        .collect();
    let addrs: Vec<String> = servers.iter().map(ServerProcess::addr).collect();

    let started = Instant::now();
    let bench = start_bench(&[
        "--addr",
        &addrs.join(","),
        "--duration",
        "10",
        "--connections",
        "2",
        "--concurrency",
        "24",
    ]);
    std::thread::sleep(Duration::from_secs(3).saturating_sub(started.elapsed()));
    let victim = &mut servers[1];
    let addr = victim.addr();
    victim.signal(Signal::SIGKILL);
    victim.wait_for_exit(Duration::from_secs(5));
    std::thread::sleep(Duration::from_secs(6).saturating_sub(started.elapsed()));
    servers[1] = start(&addr, metrics[1]);
    let report = bench_report(bench);

    let requests = report["requests"].as_f64().unwrap();
    let served: Vec<f64> = metrics.iter().copied().map(handled).collect();
    assert!(
        served[1] > 0.0,
        "the restarted server got no call: {served:?}, {report}"
    );
    for survivor in [served[0], served[2]] {
        // Round-robin: each survivor had a third of the calls, half of them while one was down.
        assert!(survivor > requests / 5.0, "{served:?} of {requests}");
    }
    eprintln!("failover: {report}; calls served per server {served:?}");
}
