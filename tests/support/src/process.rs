//! The built binaries, started as a user starts them: the server as a child process whose log
//! the tests read, the client run to completion; and what `/proc` says about a process.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long a started process gets to say it is ready before the test gives up on it.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The path of one of the crate's binaries, built by cargo before any test binary runs, next to
/// the directory the test binary is in (`target/<profile>/deps/`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile = exe
        .ancestors()
        .nth(2)
        .expect("target/<profile>/deps/<test>");
    profile.join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
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

    /// The address of its `/metrics` endpoint (`--metrics-addr 127.0.0.1:0`), from the line it
    /// logs before it starts serving.
    pub fn metrics_addr(&mut self) -> SocketAddr {
        let lines = self.log_lines();
        lines
            .iter()
            .find_map(|line| {
                let (_, rest) = line.split_once("serving Prometheus metrics on http://")?;
                rest.split_once("/metrics")?.0.parse().ok()
            })
            .unwrap_or_else(|| panic!("no metrics address in the log:\n{}", lines.join("\n")))
    }

    /// Its resident memory now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.child.id())
    }

    /// The most resident memory it has had, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        peak_rss_kib(self.child.id())
    }

    /// CPU time it has used so far.
    pub fn cpu_time(&self) -> Duration {
        cpu_time(self.child.id())
    }

    /// How many writing system calls (`write`, `writev`, ...) it has made so far, all its
    /// threads: replies to sockets, and wake-ups of its runtime through an eventfd (Linux).
    pub fn write_syscalls(&self) -> u64 {
        let io =
            std::fs::read_to_string(format!("/proc/{}/io", self.child.id())).expect("/proc/PID/io");
        io.lines()
            .find_map(|line| line.strip_prefix("syscw:")?.trim().parse().ok())
            .expect("syscw in /proc/PID/io")
    }
}

/// The resident memory of process `pid` now, in KiB (Linux).
pub fn rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmRSS:")
}

/// The most resident memory process `pid` has had, in KiB (Linux).
pub fn peak_rss_kib(pid: u32) -> u64 {
    proc_status_kib(pid, "VmHWM:")
}

/// A size field of `/proc/PID/status`, in KiB.
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|line| {
            line.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// CPU time process `pid` has used so far, user and system, all its threads (Linux).
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // The command name (field 2) is in parentheses and may hold spaces: count from its end.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("(comm)") + 2..]
        .split(' ')
        .collect();
    // utime and stime, fields 14 and 15 of proc(5); `fields[0]` is field 3.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // In USER_HZ, which Linux fixes at 100 for /proc on the architectures we run on.
    Duration::from_millis(ticks * 10)
}

/// The `server` binary with `args`, without the test's own `FORMATDATA_*` and `RUST_LOG`, which
/// would change what is tested.
pub fn server_command(args: &[&str]) -> Command {
    let mut command = Command::new(binary("server"));
    command.args(args);
    clear_settings(&mut command);
    command
}

/// Leaves out of `command` the settings a developer's shell may hold (`FORMATDATA_*`, logging,
/// OpenTelemetry's variables), so each test says what it runs with.
fn clear_settings(command: &mut Command) {
    command.env_remove("RUST_LOG");
    for (name, _) in std::env::vars_os() {
        let name_text = name.to_string_lossy();
        if ["FORMATDATA_", "OTEL_", "TRACEPARENT", "TRACESTATE"]
            .iter()
            .any(|prefix| name_text.starts_with(prefix))
        {
            command.env_remove(name);
        }
    }
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
    run_client_with_env(args, &[])
}

/// Runs the `client` binary to completion, with `env` set.
pub fn run_client_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(binary("client"));
    clear_settings(&mut command);
    command
        .args(args)
        .envs(env.iter().copied())
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
