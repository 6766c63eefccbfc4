//! `authzd bench --decision-log-cost`: what the decision log costs `Check`.
//!
//! The log is set when the server starts, so the load generator starts the
//! servers itself: `authzd serve` (this binary; under `taskset -c
//! --serve-cpus` when given) three times, one after the other, on one fresh
//! SQLite store in `--cost-dir` — the log off, every decision written to a
//! file in that directory, and every decision written to `/dev/null` (the
//! formatting and hand-off without the disk) — and runs `check-privilege`
//! against each, verified as always. The tenant is imported before, by a
//! server of its own, so that each run's server starts the same way: from
//! the store. The report gives each run's calls/s
//! against the log-off run (the ceiling).
//!
//! Each logged run is checked too: from the server's metrics, every decision
//! it made was either written or dropped (the sum of
//! `authzd_decision_log_lines_total` and `authzd_decision_log_dropped_total`
//! is `authzd_decisions_total`), and, after its graceful stop, the file holds
//! one line per written decision. A
//! dropped line is reported (the writer did not keep up: the logged run did
//! less work than logging everything).

use super::report::Report;
use super::scrape::{MetricsUrl, metric, metric_sum, scrape};
use super::tally::WorkloadResult;
use super::{BenchArgs, Workload};
use crate::console::CliError;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest wait for a spawned server to be ready (it replays the store).
const READY_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest wait for a spawned server's graceful stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// The three runs: name, and the `--decision-log` of the server.
fn variants(dir: &Path) -> [(&'static str, Option<PathBuf>); 3] {
    [
        ("check-privilege/log-off", None),
        ("check-privilege/log-file", Some(dir.join("decisions.log"))),
        ("check-privilege/log-null", Some(PathBuf::from("/dev/null"))),
    ]
}

fn free_port() -> Result<u16, CliError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| CliError::Input(format!("--decision-log-cost: no free local port: {e}")))
}

/// A spawned `authzd serve`.
struct Spawned {
    child: Child,
    grpc: String,
    metrics: MetricsUrl,
    log: PathBuf,
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

async fn spawn(a: &BenchArgs, dir: &Path, name: &str, log: Option<&Path>) -> Result<Spawned, CliError> {
    let exe = std::env::current_exe().map_err(|e| CliError::Input(format!("cannot find this binary: {e}")))?;
    let (port, mport) = (free_port()?, free_port()?);
    let mut cmd = match &a.serve_cpus {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpus).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    cmd.arg("serve")
        .arg(format!("--store=sqlite://{}", dir.join("authzd.db").display()))
        .arg(format!("--listen=127.0.0.1:{port}"))
        .arg(format!("--metrics-listen=127.0.0.1:{mport}"));
    // The log is this run's alone: none of the environment's settings.
    for var in ["AUTHZD_DECISION_LOG", "AUTHZD_DECISION_LOG_SAMPLE", "AUTHZD_DECISION_LOG_FILTER", "AUTHZD_CONFIG"] {
        cmd.env_remove(var);
    }
    if let Some(token) = &a.token {
        cmd.env("AUTHZD_ADMIN_TOKEN", token);
    }
    if let Some(log) = log {
        cmd.arg(format!("--decision-log={}", log.display()));
    }
    cmd.args(&a.serve_arg);
    let shown = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
    );
    let log_path = dir.join(format!("serve-{}.log", name.rsplit('/').next().unwrap_or(name)));
    let stderr = std::fs::File::create(&log_path)
        .map_err(|source| CliError::Io { path: log_path.display().to_string(), source })?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| CliError::Input(format!("--decision-log-cost: cannot start `{}`: {e}", exe.display())))?;
    let mut s = Spawned {
        child,
        grpc: format!("http://127.0.0.1:{port}"),
        metrics: MetricsUrl { authority: format!("127.0.0.1:{mport}"), path: "/metrics".into() },
        log: log_path,
    };
    let ready = MetricsUrl { path: "/readyz".into(), ..s.metrics.clone() };
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = s.child.try_wait() {
            return Err(CliError::Input(format!(
                "--decision-log-cost: the spawned server exited ({status}); started as `{shown}` \
                 (--serve-cpus, --serve-arg); its log {}:\n{}",
                s.log.display(),
                tail(&s.log)
            )));
        }
        if scrape(&ready).await.is_ok() {
            return Ok(s);
        }
        if Instant::now() > deadline {
            let _ = s.child.kill();
            return Err(CliError::Input(format!(
                "--decision-log-cost: the spawned server was not ready within {READY_TIMEOUT:?}; its log {}:\n{}",
                s.log.display(),
                tail(&s.log)
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Spawned {
    /// SIGTERM (the graceful stop, which flushes the decision log), then waits.
    async fn stop(mut self) -> Result<(), String> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().is_ok_and(|s| s.success());
        let deadline = Instant::now() + if sent { STOP_TIMEOUT } else { Duration::ZERO };
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => return Err(format!("the spawned server exited with {status}")),
                Ok(None) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err("the spawned server did not stop gracefully: killed".into());
                }
            }
        }
    }
}

fn count_lines(path: &Path) -> std::io::Result<u64> {
    use std::io::Read as _;
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            return Ok(n);
        }
        n += buf[..k].iter().filter(|&&b| b == b'\n').count() as u64;
    }
}

/// Runs the three servers and the check workload against each.
pub async fn run(mut a: BenchArgs) -> Result<ExitCode, CliError> {
    let created = a.cost_dir.is_none();
    let dir = match &a.cost_dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!(
            "authzd-bench-dlog-{}-{}",
            std::process::id(),
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis())
        )),
    };
    std::fs::create_dir_all(&dir).map_err(|source| CliError::Io { path: dir.display().to_string(), source })?;
    let dir = std::fs::canonicalize(&dir).map_err(|source| CliError::Io { path: dir.display().to_string(), source })?;
    let mut t = super::target(&a)?;
    let token = super::token(&a)?;
    let pools = Arc::new(super::pools::Pools::build(&a, &t));
    a.progress(format_args!("decision log cost: servers in {}", dir.display()));
    // The import (unless the store has the tenant) on a server of its own,
    // stopped before the runs: each run's server starts the same way, from the
    // store, with no import's aftermath (checkpoints, freed batches) in it.
    {
        let server = spawn(&a, &dir, "check-privilege/import", None).await?;
        let mut args = a.clone();
        args.server = server.grpc.clone();
        args.unix_socket = None;
        let imported = async {
            let channels = super::connect_many(&args, 1).await?;
            let mut admin = super::admin(&channels[0], &token);
            super::import(&args, &mut t, &mut admin).await
        }
        .await;
        let stopped = server.stop().await;
        imported?;
        stopped.map_err(|e| CliError::Input(format!("--decision-log-cost: after the import, {e}")))?;
    }
    let mut results: Vec<WorkloadResult> = Vec::new();
    let mut off_rps = None;
    for (name, log) in variants(&dir) {
        let server = spawn(&a, &dir, name, log.as_deref()).await?;
        a.progress(format_args!(
            "{name}: server {} ready (decision log {})",
            server.grpc,
            log.as_ref().map_or_else(|| "off".to_owned(), |p| p.display().to_string())
        ));
        let mut args = a.clone();
        args.server = server.grpc.clone();
        args.unix_socket = None;
        let run = async {
            let channels = super::connect_many(&args, args.connections).await?;
            a.progress(format_args!("{name}: running for {:?} (+{:?} warm-up)", args.duration(), args.warmup()));
            Ok::<_, CliError>(super::runner::run(&args, Workload::CheckPrivilege, &channels, &pools).await)
        };
        let mut r = match run.await {
            Ok(r) => r,
            Err(e) => {
                let _ = server.stop().await;
                return Err(e);
            }
        };
        r.name = name;
        let mut problems = Vec::new();
        let mut extra = json!({
            "log": log.as_ref().map_or_else(|| "off".to_owned(), |p| p.display().to_string()),
            "server": server.grpc,
        });
        if let Some(log) = &log {
            // Every decision written or dropped, once the writer has caught up.
            let deadline = Instant::now() + Duration::from_secs(10);
            let (mut decisions, mut lines, mut dropped) = (0.0, 0.0, 0.0);
            loop {
                match scrape(&server.metrics).await {
                    Ok(body) => {
                        decisions = metric_sum(&body, "authzd_decisions_total");
                        lines = metric(&body, "authzd_decision_log_lines_total").unwrap_or(0.0);
                        dropped = metric(&body, "authzd_decision_log_dropped_total").unwrap_or(0.0);
                        if lines + dropped >= decisions || Instant::now() > deadline {
                            break;
                        }
                    }
                    Err(e) => {
                        problems.push(e);
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if lines + dropped != decisions {
                problems.push(format!(
                    "the decision log accounts for {} of {decisions} decisions ({lines} written, {dropped} dropped)",
                    lines + dropped
                ));
            }
            extra["decisions"] = json!(decisions);
            extra["lines"] = json!(lines);
            extra["dropped"] = json!(dropped);
            if let Err(e) = server.stop().await {
                problems.push(e);
            }
            if log.as_path() != Path::new("/dev/null") {
                match count_lines(log) {
                    Ok(n) => {
                        extra["file_lines"] = json!(n);
                        extra["file_bytes"] = json!(std::fs::metadata(log).map_or(0, |m| m.len()));
                        if n as f64 != lines {
                            problems.push(format!("the file holds {n} lines, the server wrote {lines}"));
                        }
                    }
                    Err(e) => problems.push(format!("cannot read {}: {e}", log.display())),
                }
                let _ = std::fs::remove_file(log);
            }
        } else if let Err(e) = server.stop().await {
            problems.push(e);
        }
        if name.ends_with("log-off") && r.ok() {
            off_rps = Some(r.calls_per_sec);
        }
        if let Some(off) = off_rps.filter(|v| *v > 0.0) {
            extra["vs_off"] = json!(r.calls_per_sec / off);
        }
        for p in problems {
            r.mismatches += 1;
            r.messages.push(format!("mismatch: {p}"));
        }
        if extra["dropped"].as_f64().is_some_and(|d| d > 0.0) {
            r.messages.push(format!(
                "note: {} lines dropped (the writer did not keep up; raise --serve-arg=--decision-log-buffer=N)",
                extra["dropped"]
            ));
        }
        r.extra = extra;
        results.push(r);
    }
    a.server = format!("authzd serve spawned in {} (log off, to a file, to /dev/null)", dir.display());
    let report = Report::new(&a, &t, results, None);
    if a.json {
        report.print_json();
    } else {
        report.print_text();
    }
    if created && report.ok() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
