//! `--max-message-bytes` bounds the uncompressed reply on every path. With a limit of
//! 100, a reply of 122 bytes was RESOURCE_EXHAUSTED on the fast path but OK on tonic's path when
//! the client accepted zstd: tonic checked the compressed size, so the limit depended on how well
//! the text compressed.

use formatdata::pb::Data;
use formatdata::uppercase::uppercase;
use prost::Message;
use tonic::Code;

use formatdata_test_support::process::ServerProcess;
use formatdata_test_support::raw;

const LIMIT: usize = 100;

#[tokio::test]
async fn a_reply_over_the_message_limit_is_resource_exhausted_on_every_path() {
    let server = ServerProcess::start(&[
        "--addr",
        "127.0.0.1:0",
        "--max-message-bytes",
        &LIMIT.to_string(),
    ]);
    // 'ŉ' (2 bytes) uppercases to "ʼN" (3): 40 of them make a request of 82 bytes encoded and a
    // reply of 122, one that compresses to far less than the limit.
    let request = Data {
        text: "ŉ".repeat(40),
    };
    let reply = Data {
        text: uppercase(request.text.clone()),
    };
    assert!(request.encoded_len() <= LIMIT, "{}", request.encoded_len());
    assert_eq!(reply.encoded_len(), 122);

    let mut outcomes = Vec::new();
    for (path, headers) in [
        ("fast path", &[][..]),
        (
            "tonic's path, zstd both ways",
            &[("grpc-encoding", "zstd"), ("grpc-accept-encoding", "zstd")][..],
        ),
        (
            "tonic's path, gzip both ways",
            &[("grpc-encoding", "gzip"), ("grpc-accept-encoding", "gzip")][..],
        ),
    ] {
        let answer = raw::call(
            server.addrs[0],
            raw::DO_FORMAT,
            headers,
            raw::frame(false, &request.encode_to_vec()),
        )
        .await;
        outcomes.push((path, answer.code(), answer.message()));
    }
    assert!(
        outcomes
            .iter()
            .all(|(_, code, _)| *code == Code::ResourceExhausted),
        "a {}-byte reply under --max-message-bytes {LIMIT}: {outcomes:#?}",
        reply.encoded_len()
    );
}
