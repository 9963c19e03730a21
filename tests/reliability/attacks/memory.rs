//! Item 5: the bytes of unfinished request messages are bounded, per connection and in all. 48
//! streams on one connection, each sending all but the last byte of a message that declares the
//! largest allowed size and then stalling, took server RSS from 13 to about 210 MiB and kept it
//! there (256 streams: about 1 GiB per connection).

use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use tokio::task::JoinSet;
use tonic::Code;

use super::{MAX_RSS_KIB, assert_serves_normally};
use crate::helpers::ServerProcess;
use crate::{peak_rss_kib, raw, rss_kib, serial};

/// Streams of the attack, all on one connection.
const STREAMS: usize = 48;

/// The length each message declares: the default --max-message-bytes, 4 MiB, less one.
const DECLARED: usize = 4 * 1024 * 1024 - 1;

/// `--stall-timeout`: long enough that every stream over the budget is refused before the ones
/// under it end for stalling.
const STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the attack's bytes may take to send (192 MiB through two debug-built h2 stacks).
const SEND_LIMIT: Duration = Duration::from_secs(40);

#[test]
fn stalled_near_limit_messages_leave_memory_bounded() {
    let _serial = serial();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = ServerProcess::start_with_env(
        &["--addr", "127.0.0.1:0"],
        &[(
            "FORMATDATA_STALL_TIMEOUT",
            &STALL_TIMEOUT.as_secs().to_string(),
        )],
    );
    let idle = rss_kib(&server);
    // The prefix, then every byte of the message but its last: the server can never finish it.
    let mut attack = BytesMut::with_capacity(5 + DECLARED - 1);
    attack.put_u8(0);
    attack.put_u32(DECLARED as u32);
    attack.put_bytes(b'a', DECLARED - 1);
    let attack = attack.freeze();

    runtime.block_on(async {
        let mut client = raw::connect(server.addrs[0]).await;
        let started = Instant::now();
        let mut streams = JoinSet::new();
        for _ in 0..STREAMS {
            client = client.ready().await.expect("the connection takes streams");
            let (response, mut send) = raw::start_call(&mut client, raw::DO_FORMAT, &[]);
            let attack = attack.clone();
            streams.spawn(async move {
                // A stream the server refuses stops taking bytes: that is the defence, not a
                // failure of the attack.
                let _ = raw::send_in_frames(&mut send, attack, 16 * 1024).await;
                (response, send)
            });
        }
        let Ok(streams) = tokio::time::timeout(SEND_LIMIT, streams.join_all()).await else {
            panic!(
                "the attack's bytes were not all sent or refused within {SEND_LIMIT:?}; server \
                 VmHWM {} KiB",
                peak_rss_kib(&server)
            );
        };
        let sent = started.elapsed();
        let peak = peak_rss_kib(&server);
        eprintln!(
            "{STREAMS} stalled messages of {DECLARED} bytes sent in {sent:?}: server RSS idle \
             {idle} KiB, peak {peak} KiB"
        );
        assert!(
            peak <= MAX_RSS_KIB,
            "server VmHWM {peak} KiB (idle {idle} KiB) under {STREAMS} stalled messages of \
             {DECLARED} bytes"
        );

        // Each stream either went over the connection's budget or stalls until --stall-timeout.
        let limit = STALL_TIMEOUT + Duration::from_secs(5);
        let mut replies = JoinSet::new();
        for (response, send) in streams {
            replies.spawn(async move {
                let reply = raw::read_reply(response).await;
                drop(send);
                reply
            });
        }
        let Ok(replies) = tokio::time::timeout(limit, replies.join_all()).await else {
            panic!("the stalled streams were not all ended within {limit:?} of the attack");
        };
        let codes: Vec<Code> = replies.iter().map(|reply| reply.code()).collect();
        assert!(
            codes
                .iter()
                .all(|code| matches!(code, Code::ResourceExhausted | Code::DeadlineExceeded)),
            "{codes:?}"
        );
        assert!(
            codes.contains(&Code::ResourceExhausted),
            "{} MiB held on one connection and no stream over its budget: {codes:?}",
            STREAMS * 4
        );
        assert_serves_normally(server.addrs[0]).await;
    });
}
