//! Compiles `proto/` into Rust with protox (a protobuf compiler written in Rust), so building
//! formatdata never looks for or runs `protoc`.
//!
//! Outputs in `OUT_DIR`: the prost messages and tonic client for each package (pulled in by
//! `tonic::include_proto!`), its tonic server in `server/`, and `formatdata_descriptor.bin`, the
//! encoded `FileDescriptorSet` that gRPC reflection serves.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::{env, fs, io};

const PROTO_DIR: &str = "proto";

fn main() -> ExitCode {
    // A directory makes cargo rerun us when any file below it changes, including new files.
    println!("cargo:rerun-if-changed={PROTO_DIR}");
    match compile() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // One readable line ("proto/data.proto:3:9: expected ...") instead of a panic backtrace.
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn compile() -> Result<(), String> {
    let protos = proto_files(Path::new(PROTO_DIR))
        .map_err(|err| format!("cannot list {PROTO_DIR}/: {err}"))?;

    let mut compiler = protox::Compiler::new([PROTO_DIR]).map_err(describe)?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(&protos).map_err(describe)?;

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR is not set")?);
    // Encoded by protox itself: re-encoding prost_types' copy would drop custom options.
    let descriptor_path = out_dir.join("formatdata_descriptor.bin");
    fs::write(&descriptor_path, compiler.encode_file_descriptor_set())
        .map_err(|err| format!("cannot write {}: {err}", descriptor_path.display()))?;

    // Two passes over the same descriptors. The messages and the client keep tonic's stock prost
    // codec, which reports bytes that do not decode as INTERNAL: right for a reply (the server
    // is broken; grpcio and grpc-go say so too). The servers, generated apart into `server/`,
    // use `grpc::codec::RequestCodec`, which says INVALID_ARGUMENT: for a request the caller is
    // at fault. One codec for both could not tell a reply from a request.
    let files = compiler.file_descriptor_set();
    tonic_prost_build::configure()
        .build_server(false)
        .compile_fds(files.clone())
        .map_err(|err| format!("code generation failed: {err}"))?;
    let server_dir = out_dir.join("server");
    fs::create_dir_all(&server_dir)
        .map_err(|err| format!("cannot create {}: {err}", server_dir.display()))?;
    tonic_prost_build::configure()
        .build_client(false)
        .codec_path("crate::grpc::codec::RequestCodec")
        .extern_path(".example", "crate::pb")
        .out_dir(&server_dir)
        .compile_fds(files)
        .map_err(|err| format!("code generation failed: {err}"))
}

/// protox's message with the path as the user knows it: "proto/data.proto:17:17: expected ...".
fn describe(err: protox::Error) -> String {
    // The Debug form is the one that carries line and column; names are relative to `proto/`.
    let message = format!("{err:?}");
    match err.file() {
        Some(file) if message.starts_with(file) => format!("{PROTO_DIR}/{message}"),
        _ => message,
    }
}

/// Every `.proto` below `dir`, relative to it (the form protox resolves against its include path),
/// sorted so the generated code does not depend on directory order.
fn proto_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in fs::read_dir(&current)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "proto") {
                found.push(
                    path.strip_prefix(dir)
                        .expect("walked from dir")
                        .to_path_buf(),
                );
            }
        }
    }
    found.sort();
    Ok(found)
}
