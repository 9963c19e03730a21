//! The transport: sockets, TLS and the HTTP protocols, up to the point where a request is
//! handed to the call layers. It knows them only as [`CallService`]s made for each connection,
//! and imports nothing from `calls/`.
//!
//! `listen.rs` accepts, `connection.rs` serves one connection (TLS, protocol, HTTP/1.1 with
//! hyper), `http2.rs` runs an HTTP/2 connection on the h2 crate, `control_frames.rs` counts its
//! control frames, `shutdown.rs` turns signals into the drain.

pub(super) mod connection;
pub(super) mod control_frames;
pub(super) mod http2;
pub(super) mod listen;
pub(super) mod shutdown;
