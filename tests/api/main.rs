//! End-to-end tests: the real server on a free loopback port, driven through public interfaces
//! only (the generated client, the built binaries, and Python grpcio).
//!
//! One test binary with a module per concern, so the helpers are compiled once.

mod binaries;
mod contract;
mod do_format;
mod helpers;
mod python_interop;
mod server_lifecycle;
