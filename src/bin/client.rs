//! `client`: sends text (by default `hello,world!`) to a FormatData server and prints
//! `received: <reply>`; `client health` and `client list` ask the server about itself.

use std::process::ExitCode;

// mimalloc: a call allocates a few dozen small objects (tasks, header maps, buffers) and frees
// them on another poll; mimalloc's thread-local free lists make that much cheaper than glibc's
// malloc (see CONTRIBUTING.md, "Performance").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use formatdata::cli::{ClientArgs, ClientCommand};
use formatdata::client::bench;
use formatdata::client::{Client, ClientConfig, ClientError};
use formatdata::telemetry::LogFormat;
use formatdata::{runtime, telemetry};
use tokio::io::{BufReader, BufWriter};

fn main() -> ExitCode {
    let args = ClientArgs::from_env();
    telemetry::init(LogFormat::Text, "warn");
    let runtime = match runtime::client() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("client: {err}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(&args));
    // Not a plain drop, which waits for every blocking task: a read of stdin (`--stream`) blocks
    // a thread nothing can interrupt until input comes or ends, which after a failed stream
    // may be never.
    runtime.shutdown_background();
    outcome.unwrap_or_else(|err| {
        eprintln!("client: {err}");
        ExitCode::FAILURE
    })
}

async fn run(args: &ClientArgs) -> Result<ExitCode, ClientError> {
    let config = args.config();
    let client = Client::connect(&config).await?;
    let outcome = command(args, &config, &client).await;
    // The calls' spans, when exported, are sent before the process goes (failed calls too).
    client.flush_traces().await;
    outcome
}

async fn command(
    args: &ClientArgs,
    config: &ClientConfig,
    client: &Client,
) -> Result<ExitCode, ClientError> {
    match &args.command {
        None if args.stream => {
            let stdin = BufReader::with_capacity(64 * 1024, tokio::io::stdin());
            let stdout = BufWriter::with_capacity(64 * 1024, tokio::io::stdout());
            client.format_lines(stdin, stdout).await?;
        }
        None => println!("received: {}", client.format(&args.text()).await?),
        Some(ClientCommand::Health { service }) => {
            let status = client.health(service).await?;
            println!("{status}");
            if status != "SERVING" {
                return Ok(ExitCode::FAILURE);
            }
        }
        Some(ClientCommand::List) => {
            for service in client.list_services().await? {
                println!("{service}");
            }
        }
        Some(ClientCommand::Bench(bench_args)) => {
            let report = bench::run(config, &bench_args.config()).await?;
            if bench_args.json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_text());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
