//! `server`: serves `example.FormatData` on localhost:8080 (or `--addr`) until Ctrl-C or SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use formatdata::config::ServerArgs;
use formatdata::server::{self, Listeners};
use formatdata::{shutdown, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let args = ServerArgs::parse();
    telemetry::init("info");

    let listeners = match Listeners::bind(&args.addr).await {
        Ok(listeners) => listeners,
        Err(err) => return fail(&err),
    };
    match server::run(listeners, shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}

fn fail(err: &dyn std::error::Error) -> ExitCode {
    eprintln!("server: {err}");
    ExitCode::FAILURE
}
