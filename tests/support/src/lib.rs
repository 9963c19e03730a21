//! What formatdata's test binaries (`tests/api`, `tests/reliability`) share, as a crate of its
//! own so each binary uses what it needs, with no `#[path]` tricks or dead-code warnings.
//!
//! - [`app`]: the server inside the test process, through the library, on a free port.
//! - [`process`]: the built binaries as processes, and what `/proc` says about them.
//! - [`raw`]: raw HTTP/2 gRPC calls and HTTP/1.1 exchanges: the bytes no stub would send.
//! - [`metrics`]: reading the Prometheus endpoint.
//! - [`certs`]: a CA and certificates for TLS tests.
//! - [`otlp`]: an OpenTelemetry collector (OTLP/gRPC) that keeps the spans it is sent.
//! - [`env`]: the third-party programs of the interop tests (Python with grpcio, Node.js with
//!   the gRPC-Web client and Playwright, Chromium), set up on first use so that a plain
//!   `cargo test` on a fresh machine runs every test.

pub mod app;
pub mod certs;
pub mod env;
pub mod metrics;
pub mod otlp;
pub mod process;
pub mod raw;
