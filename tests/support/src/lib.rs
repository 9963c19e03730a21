//! What formatdata's test binaries (`tests/api`, `tests/reliability`) share, as a crate of its
//! own so each binary uses what it needs without `#[path]` tricks or dead-code warnings.
//!
//! - [`env`]: the third-party programs of the interop tests (Python with grpcio, Node.js with
//!   the gRPC-Web client and Playwright, Chromium), set up on first use so that a plain
//!   `cargo test` on a fresh machine runs every test.

pub mod env;
