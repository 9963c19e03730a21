//! The server's defences, each tried as an attacker would, against the real binary over
//! loopback with a raw HTTP/2 client or plain sockets, bounded in count and time. Each test
//! asserts that the defence fires, that the server's time, CPU and memory stay bounded, and that
//! it still serves a normal call afterwards. One module per kind of attack.
//!
//! The flags these defences bring (`--stall-timeout`, `--idle-timeout`, `--max-connections`, ...)
//! are given through their `FORMATDATA_*` variables, which the server reads as it reads the flags:
//! a server that does not know one yet ignores it and faces the attack as it is, so the test fails
//! on what the server does, not on an unknown flag.

mod compressed_streams;
mod connect;
mod connections;
mod control_floods;
mod cpu;
mod http1_heads;
mod idle_streams;
mod log_forging;
mod memory;
mod metadata;
mod metrics_port;
mod rapid_reset;
mod rebinding;
mod reply_limit;
mod stalls;
mod unread_replies;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use formatdata::pb::Data;
use formatdata::pb::format_data_client::FormatDataClient;

/// The resident memory a server under these attacks may reach, in KiB: an idle one holds about 15
/// MiB, and no attack here may cost it more than a few times that.
const MAX_RSS_KIB: u64 = 64 * 1024;

/// The token of servers started with `FORMATDATA_AUTH_TOKEN`, which puts every DoFormat call on
/// tonic's path (the fast path leaves authentication to tonic's interceptor).
const TOKEN: &str = "attack-test-token";

/// The header that goes with [`TOKEN`].
const BEARER: (&str, &str) = ("authorization", "Bearer attack-test-token");

/// Headers a raw call adds to (or puts in place of) the defaults.
type Headers = &'static [(&'static str, &'static str)];

/// What makes an HTTP/2 call gRPC-Web rather than native gRPC.
const GRPC_WEB: Headers = &[
    ("content-type", "application/grpc-web+proto"),
    ("x-grpc-web", "1"),
];

/// A normal DoFormat call through the generated client, as any tonic user makes it, on a new
/// connection, bounded by `limit`.
async fn normal_call(addr: SocketAddr, limit: Duration) -> Result<(), String> {
    let call = async {
        let mut client = FormatDataClient::connect(format!("http://{addr}"))
            .await
            .map_err(|error| format!("connect: {error}"))?;
        let mut request = tonic::Request::new(Data {
            text: "still here".into(),
        });
        request.metadata_mut().insert(
            "authorization",
            BEARER.1.parse().expect("a valid header value"),
        );
        let reply = client
            .do_format(request)
            .await
            .map_err(|status| format!("{status:?}"))?;
        match reply.into_inner().text.as_str() {
            "STILL HERE" => Ok(()),
            other => Err(format!("reply {other:?}")),
        }
    };
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or_else(|_| Err(format!("no reply within {limit:?}")))
}

/// Fails the test unless a normal call succeeds within a few seconds: the attack is over, and the
/// server must serve as before. (A server without a token ignores the one sent.)
async fn assert_serves_normally(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match normal_call(addr, Duration::from_secs(2)).await {
            Ok(()) => return,
            Err(error) if Instant::now() >= deadline => {
                panic!("after the attack, a normal call still fails: {error}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
