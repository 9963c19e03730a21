//! Hostile or broken requests, sent as raw bytes: each gets the right gRPC status with a message
//! saying what was wrong, and the server goes on serving normal calls.

use std::time::{Duration, Instant};

use formatdata::pb::Data;
use formatdata::server::ServerConfig;
use tonic::Code;

use formatdata_test_support::app::{TestApp, spawn_app, spawn_app_with};
use formatdata_test_support::raw::{self, DO_FORMAT, data_message, frame};

/// The server still answers a normal call.
async fn assert_still_serving(app: &TestApp) {
    let reply = app
        .client()
        .await
        .do_format(Data {
            text: "still here".into(),
        })
        .await
        .expect("a normal call succeeds after the bad one");
    assert_eq!(reply.into_inner().text, "STILL HERE");
}

#[tokio::test]
async fn bytes_that_are_not_a_protobuf_are_invalid_argument() {
    let app = spawn_app().await;

    let reply = raw::call(app.addr, DO_FORMAT, &[], frame(false, &[0xff; 7])).await;

    reply.assert_status(Code::InvalidArgument, "decode");
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn text_that_is_not_utf8_is_invalid_argument() {
    let app = spawn_app().await;

    let body = frame(false, &data_message(&[b'a', 0xff, 0xfe]));
    let reply = raw::call(app.addr, DO_FORMAT, &[], body).await;

    reply.assert_status(Code::InvalidArgument, "UTF-8");
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn a_truncated_frame_is_invalid_argument() {
    let app = spawn_app().await;

    // The prefix promises 100 bytes; the stream ends after 3.
    let mut truncated = frame(false, &[0u8; 100]).to_vec();
    truncated.truncate(5 + 3);
    let reply = raw::call(app.addr, DO_FORMAT, &[], truncated.into()).await;

    reply.assert_status(Code::InvalidArgument, "eof");
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn an_unsupported_compression_is_unimplemented() {
    let app = spawn_app().await;

    let body = frame(true, &data_message(b"hello"));
    let reply = raw::call(app.addr, DO_FORMAT, &[("grpc-encoding", "snappy")], body).await;

    reply.assert_status(Code::Unimplemented, "snappy");
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn an_unknown_method_is_unimplemented_and_named() {
    let app = spawn_app().await;

    let body = frame(false, &data_message(b"hello"));
    let reply = raw::call(app.addr, "/example.FormatData/DoNothing", &[], body).await;

    reply.assert_status(Code::Unimplemented, "/example.FormatData/DoNothing");
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn a_content_type_not_served_is_refused_with_415_naming_what_is() {
    let app = spawn_app().await;

    // grpc+json would be a gRPC body in another codec: refused, never decoded as protobuf.
    for content_type in ["text/plain", "application/grpc+json"] {
        let body = frame(false, &data_message(b"hello"));
        let reply = raw::call(app.addr, DO_FORMAT, &[("content-type", content_type)], body).await;

        assert_eq!(reply.http_status, 415, "{content_type}");
        reply.assert_status(Code::InvalidArgument, content_type);
        let message = reply.message();
        assert!(message.contains("send application/grpc"), "{message}");
        assert!(!message.contains("Some("), "no debug formatting: {message}");
    }
    // The same over HTTP/1.1.
    let head = format!(
        "POST {DO_FORMAT} HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\n\
         Content-Length: 5\r\nConnection: close\r\n\r\n"
    );
    let reply = raw::http1(app.addr, &head, b"hello").await;
    assert!(reply.starts_with("HTTP/1.1 415"), "{reply}");
    assert!(
        reply.contains("application/json"),
        "names what is served: {reply}"
    );
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn a_request_over_the_size_limit_is_resource_exhausted() {
    let app = spawn_app().await;

    let text = vec![b'a'; 5 * 1024 * 1024];
    let reply = raw::call(app.addr, DO_FORMAT, &[], frame(false, &data_message(&text))).await;

    reply.assert_status(Code::ResourceExhausted, "");
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn a_reply_over_the_size_limit_is_resource_exhausted() {
    // 300 x "ΐ" is 600 bytes; uppercased it is 1,800, over the 1,000-byte limit.
    let app = spawn_app_with(ServerConfig {
        max_message_bytes: 1000,
        ..ServerConfig::default()
    })
    .await;

    let status = app
        .client()
        .await
        .do_format(Data {
            text: "ΐ".repeat(300),
        })
        .await
        .expect_err("reply too large");

    assert_eq!(
        status.code(),
        Code::ResourceExhausted,
        "{}",
        status.message()
    );
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn the_callers_deadline_is_enforced_as_deadline_exceeded() {
    let app = spawn_app().await;
    let mut client = raw::connect(app.addr).await;

    // A request whose message never arrives: only the deadline can end it.
    let started = Instant::now();
    let (response, mut send) = raw::start_call(&mut client, DO_FORMAT, &[("grpc-timeout", "200m")]);
    send.send_data(
        frame(false, &data_message(b"hel"))[..4].to_vec().into(),
        false,
    )
    .unwrap();
    let reply = raw::read_reply(response).await;

    reply.assert_status(Code::DeadlineExceeded, "");
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(200), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn a_malformed_deadline_is_invalid_argument() {
    let app = spawn_app().await;

    let body = frame(false, &data_message(b"hello"));
    let reply = raw::call(app.addr, DO_FORMAT, &[("grpc-timeout", "soon")], body).await;

    reply.assert_status(Code::InvalidArgument, "grpc-timeout");
}

#[tokio::test]
async fn a_unary_call_that_keeps_sending_after_its_message_is_stopped_early() {
    let app = spawn_app().await;
    let mut client = raw::connect(app.addr).await;

    // One small message, then more bytes and no end of stream: the server must answer as soon
    // as it sees the extra bytes, not buffer the body for as long as the client sends.
    let (response, mut send) = raw::start_call(&mut client, DO_FORMAT, &[]);
    send.send_data(frame(false, &data_message(b"one")), false)
        .unwrap();
    send.send_data(vec![0u8; 1024].into(), false).unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), raw::read_reply(response))
        .await
        .expect("answered before the body ended");

    reply.assert_status(Code::InvalidArgument, "more than one message");
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn a_stream_ending_inside_a_message_prefix_is_invalid_argument() {
    let app = spawn_app().await;

    // One whole message, then the 5-byte prefix of a 69-byte one and the end of the stream:
    // the first is answered, the stump is an error, not a quiet end of stream.
    let mut body = frame(false, &data_message(b"whole")).to_vec();
    body.extend_from_slice(&[0, 0, 0, 0, 69]);
    let reply = raw::call(app.addr, raw::DO_FORMAT_STREAM, &[], body.into()).await;

    reply.assert_status(Code::InvalidArgument, "EOF");
    assert_eq!(reply.body, frame(false, &data_message(b"WHOLE")));
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn a_unary_call_with_two_messages_is_invalid_argument_on_every_path() {
    let app = spawn_app().await;
    let mut two = frame(false, &data_message(b"one")).to_vec();
    two.extend_from_slice(&frame(false, &data_message(b"two")));

    // The fast path, tonic's path (a client that compresses its request), and another service.
    for (path, headers) in [
        (DO_FORMAT, &[][..]),
        (DO_FORMAT, &[("grpc-encoding", "gzip")][..]),
        ("/grpc.health.v1.Health/Check", &[][..]),
    ] {
        let reply = raw::call(app.addr, path, headers, two.clone().into()).await;

        assert_eq!(reply.code(), Code::InvalidArgument, "{path} {headers:?}");
        assert!(
            reply.message().contains("more than one message"),
            "{path} {headers:?}: {}",
            reply.message()
        );
    }
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn a_bad_compression_flag_is_invalid_argument_whatever_length_follows() {
    let app = spawn_app().await;
    // Flag 91 (only 0 and 1 exist), then a length far over the limit: the flag is the fault,
    // on the fast path as on tonic's (found by fuzzing: the two used to disagree).
    let body = bytes::Bytes::from_static(&[91, 0x4a, 0x01, 0x2a, 0x2a]);

    for headers in [&[][..], &[("grpc-encoding", "gzip")][..]] {
        let reply = raw::call(app.addr, DO_FORMAT, headers, body.clone()).await;

        assert_eq!(
            reply.code(),
            Code::InvalidArgument,
            "{headers:?}: {}",
            reply.message()
        );
    }
    assert_still_serving(&app).await;
}
