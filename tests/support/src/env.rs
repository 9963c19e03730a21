//! The environments of the interop tests, set up by the tests themselves on first use, so a plain
//! `cargo test` on a fresh machine runs every test:
//!
//! - Python: a virtual environment under `target/test-env/python` with
//!   `tests/python/requirements.txt` (grpcio and its tools), made once and reused until the
//!   requirements change. `FORMATDATA_PYTHON` names an interpreter to use as it is instead.
//! - Node.js: the packages of `tests/web`, from its lockfile, installed with `npm ci` once and
//!   again when the lockfile changes. `FORMATDATA_NODE` names the `node` to use.
//! - Chromium, which needs root to install: found (`CHROMIUM`, else the usual names), or the
//!   browser test is skipped with one line saying how to enable it.
//!
//! A machine without Python or Node.js skips their tests, saying so in one line; one with them
//! never skips. `FORMATDATA_REQUIRE_PYTHON`, `FORMATDATA_REQUIRE_NODE` and
//! `FORMATDATA_REQUIRE_BROWSER` (CI sets all three) turn a skip into a failure. A set-up that
//! fails (no network to PyPI or npm, no `venv` module) fails the tests that need it with one line
//! naming what failed.
//!
//! Test binaries run their tests on parallel threads, and cargo may run several binaries: the
//! first set-up holds a file lock, the others wait for it and reuse its work.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The crate under test: `tests/support/../..`.
fn crate_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where set-ups go: `target/test-env`, next to the test binary being run
/// (`target/<profile>/deps/<test>`), so `cargo clean` removes them.
fn env_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let target = exe
        .ancestors()
        .nth(3)
        .map_or_else(|| crate_dir().join("target"), Path::to_path_buf);
    target.join("test-env")
}

/// A Python with grpcio.
#[derive(Debug)]
pub struct Python {
    pub interpreter: PathBuf,
}

/// Python with the interop tests' packages, set up on first use. `None` (after one line on
/// stderr saying so) when the machine has no Python.
pub fn python() -> Option<&'static Python> {
    static PYTHON: OnceLock<SetUp<Python>> = OnceLock::new();
    once(&PYTHON, set_up_python)
}

/// Node.js with the packages of `tests/web`.
#[derive(Debug)]
pub struct Node {
    pub program: PathBuf,
    /// `tests/web`, where the scripts and their packages are.
    pub dir: PathBuf,
}

/// Node.js with the gRPC-Web tests' packages, set up on first use. `None` (after one line on
/// stderr saying so) when the machine has no Node.js.
pub fn node() -> Option<&'static Node> {
    static NODE: OnceLock<SetUp<Node>> = OnceLock::new();
    once(&NODE, set_up_node)
}

/// buf's CLI, for `buf curl`: npm's `@bufbuild/buf` carries it for each platform, so it comes
/// with the packages of `tests/web`. `None` (after one line on stderr) without Node.js, or where
/// npm has no build of buf for this platform.
pub fn buf() -> Option<&'static Path> {
    static BUF: OnceLock<SetUp<PathBuf>> = OnceLock::new();
    once(&BUF, find_buf).map(PathBuf::as_path)
}

fn find_buf() -> Result<Option<PathBuf>, String> {
    let Some(node) = node() else {
        return Ok(None);
    };
    // `@bufbuild/buf-linux-x64`, `-darwin-arm64`, ...: the one npm installed for this machine.
    let found = fs::read_dir(node.dir.join("node_modules/@bufbuild"))
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("buf-"))
        .map(|entry| entry.path().join("bin/buf"))
        .find(|program| runs(program));
    match found {
        Some(program) => Ok(Some(program)),
        None => skip(
            "NODE",
            "npm installed no build of buf that runs here; the buf curl tests did not run",
        ),
    }
}

/// Chromium, for the browser test. `None` (after one line on stderr saying how to get it) when
/// there is none.
pub fn chromium() -> Option<&'static Path> {
    static CHROMIUM: OnceLock<SetUp<PathBuf>> = OnceLock::new();
    once(&CHROMIUM, find_chromium).map(PathBuf::as_path)
}

/// What setting a tool up came to: the tool, `None` when the machine lacks what it needs (the
/// tests skip), or the one line saying why it failed.
type SetUp<T> = Result<Option<T>, String>;

/// What `set_up` came to, run once per test binary; a failure fails each test that asks.
fn once<T: Send + Sync>(
    cell: &'static OnceLock<SetUp<T>>,
    set_up: fn() -> SetUp<T>,
) -> Option<&'static T> {
    cell.get_or_init(set_up)
        .as_ref()
        .unwrap_or_else(|line| fail(line))
        .as_ref()
}

fn set_up_python() -> Result<Option<Python>, String> {
    if let Some(interpreter) = std::env::var_os("FORMATDATA_PYTHON") {
        return Ok(Some(Python {
            interpreter: interpreter.into(),
        }));
    }
    let Some(base) = ["python3", "python"].into_iter().find(|name| runs(name)) else {
        return skip(
            "PYTHON",
            "no python3 found; the grpcio interop tests did not run (install Python 3 to run them)",
        );
    };
    let dir = env_dir();
    let venv = dir.join("python");
    let interpreter = venv.join("bin/python");
    let requirements = crate_dir().join("tests/python/requirements.txt");
    let wanted = fs::read(&requirements)
        .map_err(|error| format!("cannot read {}: {error}", requirements.display()))?;
    let marker = venv.join("formatdata-requirements.txt");
    let _lock = lock(&dir, "python")?;
    if fs::read(&marker).is_ok_and(|installed| installed == wanted) && interpreter.exists() {
        return Ok(Some(Python { interpreter }));
    }
    announce(&format!(
        "setting up Python for the interop tests in {} (once; it takes about a minute)",
        venv.display()
    ));
    if !interpreter.exists() {
        let made = Command::new(base).args(["-m", "venv"]).arg(&venv).output();
        check(
            made,
            &format!(
                "{base} cannot create a virtual environment in {} \
             (Debian: apt-get install python3-venv)",
                venv.display()
            ),
        )?;
    }
    let installed = Command::new(&interpreter)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements)
        .output();
    check(
        installed,
        &format!(
            "pip could not install tests/python/requirements.txt into {} (is PyPI reachable?)",
            venv.display()
        ),
    )?;
    fs::write(&marker, &wanted)
        .map_err(|error| format!("cannot write {}: {error}", marker.display()))?;
    Ok(Some(Python { interpreter }))
}

fn set_up_node() -> Result<Option<Node>, String> {
    let program = PathBuf::from(std::env::var_os("FORMATDATA_NODE").unwrap_or("node".into()));
    if !runs(&program) {
        return skip(
            "NODE",
            &format!(
                "no Node.js found ({} does not run; set FORMATDATA_NODE); the gRPC-Web client \
                 and browser tests did not run",
                program.display()
            ),
        );
    }
    let dir = crate_dir().join("tests/web");
    let lockfile = dir.join("package-lock.json");
    let wanted = fs::read(&lockfile)
        .map_err(|error| format!("cannot read {}: {error}", lockfile.display()))?;
    let marker = dir.join("node_modules/.formatdata-package-lock.json");
    let _lock = lock(&env_dir(), "node")?;
    if fs::read(&marker).is_ok_and(|installed| installed == wanted) {
        return Ok(Some(Node { program, dir }));
    }
    announce("installing the Node packages of tests/web (npm ci, once)");
    // npm next to the node in use, so FORMATDATA_NODE picks both.
    let npm = program
        .parent()
        .map(|bin| bin.join("npm"))
        .filter(|npm| npm.exists())
        .unwrap_or_else(|| "npm".into());
    let installed = Command::new(&npm)
        .args([
            "ci",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            "--prefix",
        ])
        .arg(&dir)
        .output();
    check(
        installed,
        "npm ci could not install the packages of tests/web (is the npm registry reachable?)",
    )?;
    fs::write(&marker, &wanted)
        .map_err(|error| format!("cannot write {}: {error}", marker.display()))?;
    Ok(Some(Node { program, dir }))
}

fn find_chromium() -> Result<Option<PathBuf>, String> {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        return Ok(Some(path.into()));
    }
    let found = [
        "chromium",
        "chromium-browser",
        "google-chrome-stable",
        "google-chrome",
    ]
    .into_iter()
    .find_map(on_path);
    match found {
        Some(path) => Ok(Some(path)),
        None => skip(
            "BROWSER",
            "no Chromium found; the playground browser test did not run (Debian: apt-get \
             install chromium, or set CHROMIUM=/path/to/chrome)",
        ),
    }
}

/// Where `name` is on `PATH`: Playwright wants a path, not a name.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// Whether `program --version` runs and succeeds.
fn runs(program: impl AsRef<std::ffi::OsStr>) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success())
}

/// Skips, saying why in one line, unless `FORMATDATA_REQUIRE_<what>` makes the absence an error.
fn skip<T>(what: &str, why: &str) -> Result<Option<T>, String> {
    let switch = format!("FORMATDATA_REQUIRE_{what}");
    if std::env::var_os(&switch).is_some() {
        return Err(format!("{switch} is set, but {why}"));
    }
    announce(&format!("SKIPPED: {why}"));
    Ok(None)
}

/// A command's outcome as a one-line error: `what`, and the last line it printed.
fn check(output: std::io::Result<Output>, what: &str) -> Result<(), String> {
    let output = output.map_err(|error| format!("{what}: {error}"))?;
    if output.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&output.stderr);
    let last = said
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("no output");
    Err(format!("{what}: {}", last.trim()))
}

/// Holds `<dir>/<name>.lock` until dropped, so one set-up runs at a time across test binaries.
fn lock(dir: &Path, name: &str) -> Result<File, String> {
    fs::create_dir_all(dir).map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
    let path = dir.join(format!("{name}.lock"));
    let file = File::create(&path)
        .map_err(|error| format!("cannot create {}: {error}", path.display()))?;
    file.lock()
        .map_err(|error| format!("cannot lock {}: {error}", path.display()))?;
    Ok(file)
}

/// One line on the real stderr, past the test harness's capture, so it shows in `cargo test`'s
/// output even for a test that passes.
fn announce(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Fails the calling test with `line` alone: no panic message with a source location, no
/// backtrace, however `RUST_BACKTRACE` is set.
fn fail(line: &str) -> ! {
    announce(line);
    std::panic::resume_unwind(Box::new(line.to_owned()))
}
