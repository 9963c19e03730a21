//! End-to-end tests: the real server on a free loopback port, driven through public interfaces
//! only (the generated client, the built binaries, and Python grpcio).
//!
//! One test binary with a module per concern; what it shares with `tests/reliability` is the
//! `formatdata-test-support` crate (`tests/support/`).

mod auth_tls_compression;
mod bad_input;
mod balancing;
mod bench;
mod binaries;
mod connect;
mod connections;
mod contract;
mod do_format;
mod grpc_web;
mod health_reflection;
mod metrics;
mod python_interop;
#[allow(dead_code)] // shared with tests/reliability, which uses more of it
mod server_lifecycle;
mod shutdown;
mod streaming;
mod tracing;
