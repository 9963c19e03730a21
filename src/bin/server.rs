//! `server`: serves `example.FormatData` (plus health and reflection) on localhost:8080, or
//! `--addr`, until Ctrl-C or SIGTERM. `--help` lists every flag.

use std::process::ExitCode;

use formatdata::config::ServerArgs;
use formatdata::server::{self, Listeners, ServerConfig};
use formatdata::{shutdown, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let args = ServerArgs::from_env();
    telemetry::init(args.log_format, "info");

    let config = match ServerConfig::from_args(&args) {
        Ok(config) => config,
        Err(err) => return fail(&err),
    };
    let listeners = match Listeners::bind(&args.addr).await {
        Ok(listeners) => listeners,
        Err(err) => return fail(&err),
    };
    match server::run(listeners, config, shutdown::signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(&err),
    }
}

fn fail(err: &dyn std::error::Error) -> ExitCode {
    eprintln!("server: {err}");
    ExitCode::FAILURE
}
