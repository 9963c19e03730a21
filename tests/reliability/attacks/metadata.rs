//! Request metadata over the limit gets a gRPC status a client can read. h2 answered heads over
//! 16 KiB with a bare HTTP 431, which grpcio and grpc-js report as UNKNOWN; grpc-core answers
//! RESOURCE_EXHAUSTED with a message. Now a head over 16 KiB is RESOURCE_EXHAUSTED, and only one
//! over 32 KiB meets h2's own 431.

use tonic::Code;

use super::assert_serves_normally;
use formatdata_test_support::process::ServerProcess;
use formatdata_test_support::raw;

#[tokio::test]
async fn metadata_over_16_kib_is_resource_exhausted_with_a_message() {
    let server = ServerProcess::start(&["--addr", "127.0.0.1:0"]);
    let message = raw::frame(false, &raw::data_message(b"abc"));
    for size in [17_000, 30_000] {
        let big = "a".repeat(size);
        let reply = raw::call(
            server.addrs[0],
            raw::DO_FORMAT,
            &[("x-big", &big)],
            message.clone(),
        )
        .await;

        assert_eq!(reply.http_status, 200, "{size} bytes of metadata");
        reply.assert_status(Code::ResourceExhausted, "");
        assert!(
            reply.message().contains("metadata") && reply.message().contains("16384"),
            "{}",
            reply.message()
        );
    }
    // Just under the limit, as much as a real client might send, is served.
    let fits = "a".repeat(15_000);
    let reply = raw::call(
        server.addrs[0],
        raw::DO_FORMAT,
        &[("x-fits", &fits)],
        message,
    )
    .await;
    reply.assert_status(Code::Ok, "");
    assert_serves_normally(server.addrs[0]).await;
}
