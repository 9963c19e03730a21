//! Arbitrary bytes as the body of a gRPC call, through the server's whole HTTP stack: the
//! per-call middleware, the fast path, tonic's router and codec, and the service; no socket.
//!
//! The first byte shapes the call: the method, how the body is split into chunks, and whether it
//! claims to be gzip or zstd (so the decompressors meet arbitrary bytes too). For every input:
//! - the reply is a gRPC reply, with only a status bad input deserves (OK, INVALID_ARGUMENT,
//!   RESOURCE_EXHAUSTED; INTERNAL only for compressed bytes that do not inflate, as grpc-go
//!   and grpc-core answer them), never UNKNOWN, and never a panic;
//! - an uncompressed body is answered OK exactly when its bytes are well-formed messages (one
//!   for DoFormat) within the size limit, and the replies are then their uppercase;
//! - DoFormat answers alike on the fast path and on tonic's path.
#![no_main]

use std::convert::Infallible;

use bytes::{Buf, Bytes};
use formatdata::pb::Data;
use formatdata::server::{self, ServerConfig};
use formatdata::uppercase::uppercase;
use futures_util::stream;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use tonic::Code;
use tower::ServiceExt;
use tower::util::BoxCloneService;

/// `--max-message-bytes`: small, so inputs reach it.
const LIMIT: usize = 1024;

/// A request body arriving in chunks, as HTTP/2 DATA frames would.
type Chunks = StreamBody<stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;

type HttpService =
    BoxCloneService<http::Request<Chunks>, http::Response<tonic::body::Body>, Infallible>;

/// The server's stack, built once per fuzzing process.
struct Harness {
    runtime: tokio::runtime::Runtime,
    service: HttpService,
}

/// What came back: the status, and the reply messages (still encoded).
#[derive(Debug, PartialEq)]
struct Reply {
    code: Code,
    messages: Vec<Bytes>,
}

impl Harness {
    fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let config = ServerConfig {
            max_message_bytes: LIMIT,
            ..ServerConfig::default()
        };
        let service = runtime.block_on(async {
            let stack = server::call_stack(&config).await.expect("the call stack");
            BoxCloneService::new(stack)
        });
        Self { runtime, service }
    }

    fn call(&self, path: &str, headers: &[(&str, &str)], body: &[u8], chunk: usize) -> Reply {
        let chunks: Vec<_> = body
            .chunks(chunk)
            .map(|bytes| Ok(Frame::data(Bytes::copy_from_slice(bytes))))
            .collect();
        let mut request = http::Request::post(format!("http://fuzz{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(StreamBody::new(stream::iter(chunks)))
            .expect("a valid request");
        self.runtime.block_on(async {
            let response = self
                .service
                .clone()
                .oneshot(request)
                .await
                .expect("infallible");
            assert_eq!(response.status(), http::StatusCode::OK);
            let (parts, body) = response.into_parts();
            let collected = body.collect().await.expect("the reply body ends cleanly");
            let trailers = collected.trailers().cloned();
            let status = tonic::Status::from_header_map(&parts.headers)
                .or_else(|| trailers.as_ref().and_then(tonic::Status::from_header_map))
                .expect("a grpc-status");
            let messages = frames(collected.to_bytes()).expect("the reply is whole gRPC frames");
            let code = status.code();
            // Compressed bytes that do not inflate are INTERNAL, as grpc-go and grpc-core say.
            let compressed = headers.iter().any(|(name, _)| *name == "grpc-encoding");
            let undecompressable = compressed
                && code == Code::Internal
                && status.message().starts_with("Error decompressing");
            assert!(
                undecompressable
                    || matches!(
                        code,
                        Code::Ok | Code::InvalidArgument | Code::ResourceExhausted
                    ),
                "{path} answered {code:?}: {}",
                status.message()
            );
            Reply { code, messages }
        })
    }
}

/// Splits `body` into gRPC messages; `None` unless it is whole, uncompressed frames.
fn frames(mut body: Bytes) -> Option<Vec<Bytes>> {
    let mut messages = Vec::new();
    while !body.is_empty() {
        if body.len() < 5 || body[0] != 0 {
            return None;
        }
        body.advance(1);
        let length = body.get_u32() as usize;
        if body.len() < length {
            return None;
        }
        messages.push(body.split_to(length));
    }
    Some(messages)
}

/// The replies a correct server sends for `body`: `None` where it must refuse the call.
fn expected_replies(body: &[u8], unary: bool) -> Option<Vec<Bytes>> {
    let mut replies = Vec::new();
    for message in frames(Bytes::copy_from_slice(body))? {
        if message.len() > LIMIT {
            return None;
        }
        let request = Data::decode(message).ok()?;
        let reply = Data {
            text: uppercase(request.text),
        };
        if reply.encoded_len() > LIMIT {
            return None;
        }
        replies.push(Bytes::from(reply.encode_to_vec()));
    }
    (!unary || replies.len() == 1).then_some(replies)
}

thread_local! {
    static HARNESS: Harness = Harness::new();
}

fuzz_target!(|input: &[u8]| {
    let Some((&shape, body)) = input.split_first() else {
        return;
    };
    let stream = shape & 1 != 0;
    let chunk = 1 << ((shape >> 1) & 7);
    let encoding: &[(&str, &str)] = match (shape >> 4) & 3 {
        1 => &[("grpc-encoding", "gzip")],
        2 => &[("grpc-encoding", "zstd")],
        _ => &[],
    };
    let path = if stream {
        "/example.FormatData/DoFormatStream"
    } else {
        "/example.FormatData/DoFormat"
    };

    HARNESS.with(|harness| {
        let reply = harness.call(path, encoding, body, chunk);
        if !encoding.is_empty() {
            // Whatever the bytes decompress to, the checks in `call` hold; content is not
            // modelled here.
            return;
        }
        match expected_replies(body, !stream) {
            Some(expected) => {
                assert_eq!(reply.code, Code::Ok, "refused a well-formed call");
                assert_eq!(reply.messages, expected);
            }
            None => assert_ne!(reply.code, Code::Ok, "accepted a malformed call: {reply:?}"),
        }
        if !stream {
            // Asking for identity or deflate replies leaves the fast path for tonic's.
            let tonic_path = [("grpc-accept-encoding", "identity, deflate")];
            let on_tonic = harness.call(path, &tonic_path, body, chunk);
            assert_eq!(reply, on_tonic, "the fast path and tonic's path disagree");
        }
    });
});
