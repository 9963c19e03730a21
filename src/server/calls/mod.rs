//! The call layers: what happens to a request once the transport hands it over, in the order a
//! call meets them. `front.rs` dispatches (foreign hosts refused, gRPC-Web through `web.rs`, the
//! playground, native gRPC and the rest); `call.rs` admits and accounts each call, sends a
//! Connect call through `connect/` to come back as a gRPC call, has its request body followed by
//! `request_body.rs` and its replies compressed by `compress.rs`; `deadline.rs` holds the
//! caller's deadline; `fast_path.rs` answers plain unary DoFormat; `auth.rs` checks the bearer
//! token in front of FormatData. `../stack.rs` assembles them.

pub(super) mod auth;
pub(super) mod call;
pub(super) mod compress;
pub(super) mod connect;
pub(super) mod deadline;
pub(super) mod fast_path;
pub(super) mod front;
pub(super) mod request_body;
pub(super) mod web;

/// What every call goes through: the per-call middleware, the caller's deadline, the fast path,
/// then tonic's router.
pub type CallStack = call::Calls<deadline::Deadlines<fast_path::FastPath<tonic::service::Routes>>>;
