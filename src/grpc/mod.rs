//! The gRPC wire rules both sides follow.

pub mod framing;
