//! Real third-party gRPC clients against the real binary, over its Unix
//! socket and over TCP: Python grpcio (`tests/clients/grpcio_check.py`, a
//! generic unary call) and grpcurl (server reflection). Both send an
//! `:authority` the HTTP/2 server refuses when they dial a socket (grpcio the
//! percent-encoded path, grpcurl the path), which `src/authority.rs` fixes; a
//! second server with the fix off shows that it is the fix that serves them.
//! Also the CLI's `unix://` targets and a closed standard output.
//!
//! The clients are not optional: `scripts/test.sh` installs them (a venv
//! under `target/`) and passes `AUTHZD_TEST_PYTHON` (a Python with grpcio)
//! and `AUTHZD_TEST_GRPCURL`; without those, `python3` and `grpcurl` on the
//! PATH are used, and the tests fail (never skip) when they cannot run.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_authzd");

/// A Check of the demo tenant and what the server must answer.
struct Case {
    person: &'static str,
    allowed: bool,
    reason: &'static str,
}

const APP: &str = "Callback";
const PRIVILEGE: &str = "Callback - Export Reports";
const CASES: [Case; 2] = [
    Case { person: "cb-supervisor", allowed: true, reason: "REASON_ALLOWED" },
    Case { person: "cb-monitor", allowed: false, reason: "REASON_MISSING_PRIVILEGE" },
];

fn python() -> String {
    std::env::var("AUTHZD_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn grpcurl() -> String {
    std::env::var("AUTHZD_TEST_GRPCURL").unwrap_or_else(|_| "grpcurl".into())
}

const MISSING: &str = "run scripts/test.sh (it installs grpcio and grpcurl into a venv under target/), \
     or set AUTHZD_TEST_PYTHON to a Python with grpcio and AUTHZD_TEST_GRPCURL to grpcurl";

fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {shown}: {e}; {MISSING}"))
}

/// A running `authzd serve --demo` with a TCP port and a Unix socket.
struct Daemon {
    child: Child,
    port: u16,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start(fix: bool) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("authzd.sock");
        // A free port: bound, read, released (the server binds it at once).
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = Command::new(BIN)
            .args(["serve", "--demo", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--store")
            .arg(format!("sqlite://{}", dir.path().join("authzd.db").display()))
            .arg("--unix-socket")
            .arg(&socket)
            .env("AUTHZD_UNIX_AUTHORITY_FIX", if fix { "on" } else { "off" })
            .env_remove("AUTHZD_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut d = Daemon { child, port, socket, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !(d.socket.exists() && TcpStream::connect(("127.0.0.1", d.port)).is_ok()) {
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("the server exited ({status}): {}", d.log());
            }
            assert!(Instant::now() < deadline, "the server did not listen within 60 s: {}", d.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("server.log")).unwrap_or_default()
    }

    fn tcp(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// grpcio's answer: `ALLOWED <reason> <revision>` or `DENIED ...`, or its error.
fn grpcio_check(target: &str, person: &str) -> Result<String, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/grpcio_check.py");
    let out = run(Command::new(python()).arg(script).args([target, "acme", person, APP, PRIVILEGE]));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("No module named 'grpc'"), "Python has no grpcio: {MISSING}");
    if out.status.success() { Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned()) } else { Err(stderr) }
}

/// grpcurl's answer (JSON), or its error. `address` is `-unix PATH` or `-plaintext HOST:PORT`.
fn grpcurl_check(address: &[&str], person: &str) -> Result<String, String> {
    let body = format!(r#"{{"tenant":"acme","person":"{person}","application":"{APP}","privilege":"{PRIVILEGE}"}}"#);
    let mut cmd = Command::new(grpcurl());
    cmd.arg("-plaintext").arg("-max-time").arg("20").arg("-d").arg(body);
    cmd.args(address).arg("authzd.v1.DecisionService/Check");
    let out = run(&mut cmd);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    }
}

fn assert_grpcio(target: &str) {
    for c in &CASES {
        let got = grpcio_check(target, c.person).unwrap_or_else(|e| panic!("grpcio over {target}: {e}"));
        let want = format!("{} {} ", if c.allowed { "ALLOWED" } else { "DENIED" }, c.reason);
        assert!(got.starts_with(&want), "grpcio over {target}, {}: `{got}`, want `{want}<revision>`", c.person);
    }
}

fn assert_grpcurl(address: &[&str]) {
    for c in &CASES {
        let got = grpcurl_check(address, c.person).unwrap_or_else(|e| panic!("grpcurl {address:?}: {e}"));
        let v: serde_json::Value =
            serde_json::from_str(&got).unwrap_or_else(|e| panic!("grpcurl printed `{got}`: {e}"));
        // proto3 JSON leaves `allowed: false` out.
        assert_eq!(v["allowed"].as_bool().unwrap_or(false), c.allowed, "grpcurl {address:?}, {}: {got}", c.person);
        assert_eq!(v["reason"], c.reason, "grpcurl {address:?}, {}: {got}", c.person);
        assert!(v["revision"].as_str().is_some_and(|r| r != "0"), "a revision: {got}");
    }
}

#[test]
fn grpcio_and_grpcurl_over_the_unix_socket_and_tcp() {
    let d = Daemon::start(true);
    let socket = d.socket.display().to_string();
    assert_grpcio(&format!("unix:{socket}"));
    assert_grpcio(&format!("unix://{socket}"));
    assert_grpcio(&d.tcp());
    assert_grpcurl(&["-unix", &socket]);
    assert_grpcurl(&[&d.tcp()]);
    // Reflection over the socket (several calls on one connection, the listing streamed).
    let out = run(Command::new(grpcurl()).args(["-plaintext", "-unix", &socket, "list"]));
    let services = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && services.contains("authzd.v1.DecisionService"), "grpcurl list: {services}");
}

#[test]
fn without_the_fix_the_same_clients_are_refused_on_the_socket() {
    let d = Daemon::start(false);
    let socket = d.socket.display().to_string();
    let grpcio = grpcio_check(&format!("unix:{socket}"), "cb-supervisor");
    assert!(grpcio.as_ref().is_err_and(|e| e.contains("RST_STREAM")), "grpcio without the fix: {grpcio:?}");
    let grpcurl = grpcurl_check(&["-unix", &socket], "cb-supervisor");
    assert!(grpcurl.as_ref().is_err_and(|e| e.contains("PROTOCOL_ERROR")), "grpcurl without the fix: {grpcurl:?}");
    // TCP is not concerned.
    assert_grpcio(&d.tcp());
}

fn cli(args: &[&str]) -> Output {
    run(Command::new(BIN).args(args).env_remove("AUTHZD_SERVER"))
}

#[test]
fn the_cli_reaches_the_unix_socket_and_ends_quietly_on_a_closed_pipe() {
    let d = Daemon::start(true);
    let socket = d.socket.display().to_string();
    for (server, c) in [(format!("unix://{socket}"), &CASES[0]), (format!("unix:{socket}"), &CASES[1])] {
        let out = cli(&[
            "check",
            "--server",
            &server,
            "--tenant",
            "acme",
            "--person",
            c.person,
            "--app",
            APP,
            "--privilege",
            PRIVILEGE,
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(if c.allowed { 0 } else { 3 }),
            "{server}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.starts_with(if c.allowed { "ALLOWED" } else { "DENIED" }), "{server}: {text}");
    }
    let out = cli(&["tenants", "--server", &format!("unix://{socket}"), "--json"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("acme"), "tenants over the socket");
    let bad = cli(&["tenants", "--server", "unix:///nonexistent/authzd.sock"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cannot connect to `unix:///nonexistent/authzd.sock`"));

    // `authzd tenants --json | true`: the reader is gone before anything is written.
    for args in [vec!["tenants", "--json"], vec!["tenants"], vec!["export", "acme"]] {
        let mut child = Command::new(BIN)
            .args(&args)
            .args(["--server", &format!("unix:{socket}")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(141), "{args:?} into a closed pipe: {stderr}");
        assert!(stderr.is_empty(), "{args:?} into a closed pipe is quiet: {stderr}");
    }
}
