//! The bytes of unfinished request messages are bounded, per connection and in all. 48
//! streams on one connection, each sending all but the last byte of a message that declares the
//! largest allowed size and then stalling, took server RSS from 13 to about 210 MiB and kept it
//! there (256 streams: about 1 GiB per connection).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use h2::SendStream;
use h2::client::{ResponseFuture, SendRequest};
use tokio::task::JoinSet;
use tonic::Code;

use super::{MAX_RSS_KIB, assert_serves_normally};
use crate::serial;
use formatdata_test_support::process::ServerProcess;
use formatdata_test_support::raw;

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
    let idle = server.rss_kib();

    runtime.block_on(async {
        let client = raw::connect(server.addrs[0]).await;
        let started = Instant::now();
        let Some(streams) = stalled_messages(client, STREAMS).await else {
            panic!(
                "the attack's bytes were not all sent or refused within {SEND_LIMIT:?}; server \
                 VmHWM {} KiB",
                server.peak_rss_kib()
            );
        };
        let sent = started.elapsed();
        let peak = server.peak_rss_kib();
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

/// One-byte DATA frames each crowding connection sends after its streams are open: what h2's
/// own budget for small frames lets a connection make the server queue, and then some (h2
/// answers more with GOAWAY).
const TINY_FRAMES: usize = 9_000;

/// Hosts the crowding connections come from: an attack at full scale comes from several, since
/// each client address gets only a share of the connections and the bytes.
const HOSTS: usize = 10;

/// `deploy/kubernetes/deployment.yaml`: the server's `FORMATDATA_*` variables, and the pod's
/// memory limit in KiB.
struct Deployment {
    env: Vec<(String, String)>,
    memory_limit_kib: u64,
}

impl Deployment {
    fn read() -> Self {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/kubernetes/deployment.yaml"
        );
        let yaml = std::fs::read_to_string(path).expect("the deployment manifest");
        let mut env = Vec::new();
        let mut lines = yaml.lines().map(str::trim);
        let mut memory_limit_kib = None;
        let mut in_limits = false;
        while let Some(line) = lines.next() {
            if let Some(name) = line.strip_prefix("- name: FORMATDATA_") {
                let value = lines.next().and_then(|next| next.strip_prefix("value: "));
                let value = value
                    .expect("a value line after each name")
                    .trim_matches('"');
                env.push((format!("FORMATDATA_{name}"), value.to_owned()));
            }
            in_limits = match line {
                "limits:" => true,
                "requests:" => false,
                _ => in_limits,
            };
            if in_limits && let Some(memory) = line.strip_prefix("memory: ") {
                let mebibytes: u64 = memory
                    .strip_suffix("Mi")
                    .expect("memory in Mi")
                    .parse()
                    .unwrap();
                memory_limit_kib = Some(mebibytes * 1024);
            }
        }
        Self {
            env,
            memory_limit_kib: memory_limit_kib.expect("a memory limit"),
        }
    }

    fn value(&self, name: &str) -> usize {
        let (_, value) = self
            .env
            .iter()
            .find(|(key, _)| key == name)
            .unwrap_or_else(|| panic!("the deployment sets {name}"));
        value.parse().expect("a number")
    }
}

/// A connection that costs the server all it can without sending a large message: as many
/// streams as it may open, each with a message answered (so tonic's stream buffers exist), and
/// then a queue of tiny frames the server stops reading once its replies fill this client's
/// window. Returns what must stay alive for the cost to stay.
async fn crowd(addr: SocketAddr, host: usize) -> impl Sized {
    let (mut client, task) = raw::connect_from_with_task(addr, raw::other_host(host)).await;
    let mut streams = Vec::new();
    while streams.len() < client.current_max_send_streams().max(1) {
        let Ok(ready) = client.clone().ready().await else {
            break;
        };
        client = ready;
        let Ok((response, mut send)) = raw::try_start_call(&mut client, raw::DO_FORMAT_STREAM, &[])
        else {
            break;
        };
        // Refused once the budgets are spent: that is the defence, and it frees the stream.
        let _ = send.send_data(raw::frame(false, &raw::data_message(&[b'x'; 1000])), false);
        streams.push((response, send));
    }
    let count = streams.len();
    for frame in 0..TINY_FRAMES {
        let (_, send) = &mut streams[frame % count];
        let _ = send.send_data(bytes::Bytes::from_static(b"\0"), false);
        if frame % 500 == 0 {
            tokio::task::yield_now().await;
        }
    }
    (client, task, streams)
}

/// Stalled messages of the largest size on new connections, as many as the budgets take and one
/// connection more. Returns what must stay alive.
async fn fill_budgets(addr: SocketAddr, per_connection: usize, total: usize) -> impl Sized {
    let mut held = Vec::new();
    for connection in 0..total / per_connection + 1 {
        // From as many hosts as there are connections: each address gets only a share.
        let host = HOSTS + connection;
        let (client, task) = raw::connect_from_with_task(addr, raw::other_host(host)).await;
        let streams = stalled_messages(client, per_connection / DECLARED + 1)
            .await
            .expect("the budget attack's bytes sent or refused in time");
        held.push((task, streams));
    }
    held
}

/// `count` streams on `client`'s connection, each sending the prefix of a message [`DECLARED`]
/// long and every byte of it but the last, so the server can never finish it; `None` if the
/// bytes were not all sent or refused within [`SEND_LIMIT`]. Returns what must stay alive.
async fn stalled_messages(
    mut client: SendRequest<Bytes>,
    count: usize,
) -> Option<Vec<(ResponseFuture, SendStream<Bytes>)>> {
    let mut attack = BytesMut::with_capacity(5 + DECLARED - 1);
    attack.put_u8(0);
    attack.put_u32(DECLARED as u32);
    attack.put_bytes(b'a', DECLARED - 1);
    let attack = attack.freeze();
    let mut streams = JoinSet::new();
    for _ in 0..count {
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
    tokio::time::timeout(SEND_LIMIT, streams.join_all())
        .await
        .ok()
}

/// An attack at the budgets `deploy/kubernetes` configures must not take the pod past its
/// memory limit. Tried at full scale, both ways round: every connection the deployment allows
/// crowded with calls and tiny frames, then the budgets filled with stalled messages; and the
/// budgets filled first, then every other connection crowded.
#[test]
fn the_deployments_memory_limit_holds_under_an_attack_at_its_budgets() {
    let _serial = serial();
    let deployment = Deployment::read();
    let max_connections = deployment.value("FORMATDATA_MAX_CONNECTIONS");
    let total = deployment.value("FORMATDATA_MAX_BUFFERED_BYTES");
    let per_connection = deployment.value("FORMATDATA_MAX_BUFFERED_BYTES_PER_CONNECTION");
    let budget_connections = total / per_connection + 1;
    let mut env: Vec<(&str, &str)> = deployment
        .env
        .iter()
        .filter(|(name, _)| name != "FORMATDATA_ADDR" && name != "FORMATDATA_METRICS_ADDR")
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    // Long enough that nothing the attack holds is let go while it is measured.
    env.push(("FORMATDATA_STALL_TIMEOUT", "60"));
    let runtime = tokio::runtime::Runtime::new().unwrap();

    for crowd_first in [true, false] {
        let server = ServerProcess::start_with_env(&["--addr", "127.0.0.1:0"], &env);
        let addr = server.addrs[0];
        let idle = server.rss_kib();
        runtime.block_on(async {
            let crowd_all = async {
                let mut crowds = Vec::new();
                for connection in 0..max_connections - budget_connections {
                    crowds.push(crowd(addr, connection % HOSTS).await);
                }
                crowds
            };
            let (crowds, budgets) = match crowd_first {
                true => {
                    let crowds = crowd_all.await;
                    (crowds, fill_budgets(addr, per_connection, total).await)
                }
                false => {
                    let budgets = fill_budgets(addr, per_connection, total).await;
                    (crowd_all.await, budgets)
                }
            };
            tokio::time::sleep(Duration::from_millis(500)).await;
            let peak = server.peak_rss_kib();
            eprintln!(
                "{} first: {max_connections} connections at the deployment's budgets: idle \
                 {idle} KiB, peak {peak} KiB, limit {} KiB",
                if crowd_first {
                    "calls"
                } else {
                    "stalled messages"
                },
                deployment.memory_limit_kib
            );
            assert!(
                peak <= deployment.memory_limit_kib,
                "an attack at the deployment's budgets reached {peak} KiB, over its {} KiB \
                 limit",
                deployment.memory_limit_kib
            );
            drop((crowds, budgets));
        });
    }
}
