//! `client`: sends text (by default `hello,world!`) to a FormatData server and prints
//! `received: <reply>`.

use std::process::ExitCode;

use clap::Parser;
use formatdata::client::Client;
use formatdata::config::ClientArgs;
use formatdata::telemetry;

#[tokio::main]
async fn main() -> ExitCode {
    let args = ClientArgs::parse();
    telemetry::init("warn");

    let reply = match Client::connect(&args.addr, args.timeout).await {
        Ok(mut client) => client.format(args.text()).await,
        Err(err) => Err(err),
    };
    match reply {
        Ok(text) => {
            println!("received: {text}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("client: {err}");
            ExitCode::FAILURE
        }
    }
}
