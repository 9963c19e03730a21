//! Starting servers for tests: in this process through the library, or as the built binary.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use std::path::Path;

use clap::Parser;
use formatdata::cli::ServerArgs;
use formatdata::pb::format_data_client::FormatDataClient;
use formatdata::server::{self, Listeners, ServeError, ServerConfig};
use rcgen::{CertificateParams, CertifiedIssuer, DnType, KeyPair};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// How long a started process gets to say it is ready before the test gives up on it.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// A server running inside the test process, on 127.0.0.1 and a port the OS picked.
pub struct TestApp {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    serving: JoinHandle<Result<(), ServeError>>,
}

/// A server with default settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[], None).await
}

/// A server started with these command-line flags and, optionally, an auth token (which the
/// binary would read from FORMATDATA_AUTH_TOKEN).
pub async fn spawn_app_with(flags: &[&str], auth_token: Option<&str>) -> TestApp {
    let mut args =
        ServerArgs::try_parse_from(["server", "--addr", "127.0.0.1:0"].iter().chain(flags))
            .expect("valid server flags");
    args.auth_token = auth_token.map(str::to_owned);
    let config = ServerConfig::from_args(&args).expect("valid server configuration");
    let listeners = Listeners::bind(&args.addr)
        .await
        .expect("bind a free loopback port");
    let addr = listeners.local_addrs()[0];
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(server::run(listeners, config, async {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        stop,
        serving,
    }
}

impl TestApp {
    /// A new connection through the generated client, as any tonic user would make it.
    pub async fn client(&self) -> FormatDataClient<Channel> {
        FormatDataClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect to the test server")
    }

    /// A plain HTTP/2 channel to the server, for stubs other than FormatData.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .expect("connect to the test server")
    }

    /// Triggers graceful shutdown and waits for the server to finish, returning its result.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        self.stop.send(()).expect("server still running");
        tokio::time::timeout(Duration::from_secs(10), self.serving)
            .await
            .expect("server stops within 10 s")
            .expect("server task did not panic")
    }
}

/// `routes` served by a stock tonic server on a free loopback port, for tests that need a
/// server other than ours. Returns the runtime it runs on (keep it alive) and its address.
pub fn spawn_tonic(routes: tonic::service::Routes) -> (tokio::runtime::Runtime, String) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    runtime.spawn(
        tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (runtime, addr)
}

/// The `server` binary, started as a user would, killed when dropped.
pub struct ServerProcess {
    pub child: Child,
    /// Every address from its "serving ... on" log line.
    pub addrs: Vec<SocketAddr>,
    /// Its stderr, line by line, for tests that look at what it logged.
    log: Option<mpsc::Receiver<String>>,
    /// Lines already taken from `log`.
    seen: Vec<String>,
}

impl ServerProcess {
    /// Starts `server` with `args` and waits for the log line that names its addresses.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// Like [`Self::start`], with extra environment variables (none inherited: `FORMATDATA_*`
    /// and `RUST_LOG` from the test's own environment would change what is tested).
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = server_command(args);
        command.envs(env.iter().copied());
        Self::start_command(command)
    }

    /// Like [`Self::start`], for a server started as `command` says: from [`server_command`], or
    /// through a program that sets something up and then runs it (so it keeps the same process).
    pub fn start_command(mut command: Command) -> Self {
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the server binary");
        // Owned by `Self` from here on, so a failed start still kills it.
        let mut server = Self {
            child,
            addrs: Vec::new(),
            log: None,
            seen: Vec::new(),
        };
        let log = forward_lines(server.child.stderr.take().unwrap());
        while server.addrs.is_empty() {
            let line = log
                .recv_timeout(STARTUP_TIMEOUT)
                .expect("server logs its addresses at startup");
            server.seen.push(line.clone());
            // Text: `... serving example.FormatData on 127.0.0.1:8080, [::1]:8080 tls="off" ...`;
            // JSON: `..."message":"serving example.FormatData on 127.0.0.1:8080","tls":...`.
            if let Some((_, rest)) = line.split_once("serving example.FormatData on ") {
                let is_address_char = |c: char| c.is_ascii_hexdigit() || ".:[]".contains(c);
                server.addrs = rest
                    .split(", ")
                    .map_while(|part| {
                        let end = part.find(|c| !is_address_char(c)).unwrap_or(part.len());
                        part[..end].parse().ok()
                    })
                    .collect();
            }
        }
        server.log = Some(log);
        server
    }

    /// Sends a signal to the process.
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("send signal");
    }

    /// Waits for the process to exit, failing the test after `limit`.
    pub fn wait_for_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "server still running after {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything it has logged so far (after it exited: everything).
    pub fn log_lines(&mut self) -> Vec<String> {
        if let Some(log) = &self.log {
            // The forwarding thread may still be reading the last lines of an exited process. A
            // server that logs without pause (a failing accept loop, say) must not keep the test
            // here: what came within a second is what it has logged.
            let deadline = Instant::now() + Duration::from_secs(1);
            let mut wait = Duration::from_millis(200);
            while let Ok(line) = log.recv_timeout(wait) {
                self.seen.push(line);
                wait = deadline
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(200));
            }
        }
        self.seen.clone()
    }

    /// `host:port` of the first address served, in the form the binaries take.
    pub fn addr(&self) -> String {
        self.addrs[0].to_string()
    }
}

/// The `server` binary with `args`, without the test's own `FORMATDATA_*` and `RUST_LOG`, which
/// would change what is tested.
pub fn server_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_server"));
    command.args(args).env_remove("RUST_LOG");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("FORMATDATA_") {
            command.env_remove(name);
        }
    }
    command
}

/// `GET /metrics` over a plain HTTP/1.1 connection, as Prometheus scrapes; returns the body.
pub fn scrape_metrics(addr: SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to /metrics");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain"), "{head}");
    body.to_owned()
}

/// The value of the sample whose name and labels are exactly `series`.
pub fn metric_sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `stream` on a thread and hands over each line. It keeps reading after the receiver is
/// gone, so the pipe never fills up and blocks the process writing to it.
pub fn forward_lines(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    receiver
}

/// Runs the `client` binary to completion.
pub fn run_client(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_client"))
        .args(args)
        .env_remove("FORMATDATA_ADDR")
        .env_remove("RUST_LOG")
        .output()
        .expect("run the client binary")
}

/// A port on 127.0.0.1 with nothing listening: bound once by the OS, then released.
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A CA, a server certificate for localhost and a client certificate, as PEM files.
pub struct Certificates {
    pub dir: TempDir,
}

impl Certificates {
    pub fn generate() -> Self {
        let dir = TempDir::new().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        // Distinct names matter: OpenSSL (grpcio) takes a leaf named like its issuer for a
        // self-signed certificate.
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "formatdata test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        write(dir.path(), "ca.pem", &ca.pem());
        for (name, subject) in [
            ("server", "localhost"),
            ("client", "formatdata-test-client"),
        ] {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(vec![subject.to_owned()]).unwrap();
            params.distinguished_name.push(DnType::CommonName, subject);
            let certificate = params.signed_by(&key, &ca).unwrap();
            write(dir.path(), &format!("{name}.pem"), &certificate.pem());
            write(dir.path(), &format!("{name}.key"), &key.serialize_pem());
        }
        Self { dir }
    }

    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

fn write(dir: &Path, name: &str, contents: &str) {
    std::fs::write(dir.join(name), contents).unwrap();
}
