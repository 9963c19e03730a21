//! `server`: serves `example.FormatData` (plus health and reflection) on localhost:8080, or
//! `--addr`, until Ctrl-C or SIGTERM. `--help` lists every flag.

use std::process::ExitCode;

// mimalloc: a call allocates a few dozen small objects (tasks, header maps, buffers) and frees
// them on another poll; mimalloc's thread-local free lists make that much cheaper than glibc's
// malloc (see CONTRIBUTING.md, "Performance").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use formatdata::cli::ServerArgs;
use formatdata::server::{self, Listeners, Server};
use formatdata::{runtime, telemetry};

fn main() -> ExitCode {
    let args = ServerArgs::from_env();
    telemetry::init(args.log_format, "info");
    match runtime::server(args.threads) {
        Ok(runtime) => runtime.block_on(serve(args)),
        Err(err) => fail(&err),
    }
}

async fn serve(args: ServerArgs) -> ExitCode {
    // First, so that a SIGTERM while the files are read or the name resolved drains (nothing,
    // yet) and exits 0 rather than killing the process.
    let shutdown = server::shutdown_signal();
    let server = match Server::new(args.config()) {
        Ok(server) => server.when_idle(runtime::sweep_workers),
        Err(err) if err.is_usage() => {
            eprintln!("server: {err}");
            return ExitCode::from(2);
        }
        Err(err) => return fail(&err),
    };
    let listeners = match Listeners::bind(&args.addr).await {
        Ok(listeners) => listeners,
        Err(err) => return fail(&err),
    };
    match server.run(listeners, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}

fn fail(err: &dyn std::error::Error) -> ExitCode {
    eprintln!("server: {err}");
    ExitCode::FAILURE
}
