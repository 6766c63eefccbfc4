//! `authzd bench` against an in-process server: a correct server gives zero
//! errors and zero mismatches; a server holding a different tenant is caught
//! as mismatches (and a non-zero exit code), so a wrong or failing server can
//! never look fast. Also: the metrics port counts what the bench did, and the
//! probes answer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use authzd::app::Server;
use authzd::config::ServerConfig;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

struct Running {
    addr: SocketAddr,
    socket: PathBuf,
    metrics: Option<SocketAddr>,
    stops: Vec<oneshot::Sender<()>>,
    handles: Vec<JoinHandle<()>>,
    server: Arc<Server>,
}

async fn start(dir: &Path, with_metrics: bool) -> Running {
    let mut config = ServerConfig::new(format!("sqlite://{}", dir.join("authzd.db").display()));
    config.tail_interval = std::time::Duration::ZERO;
    if with_metrics {
        config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    }
    let server = Arc::new(Server::start(config).await.expect("server starts"));
    let mut stops = Vec::new();
    let mut handles = Vec::new();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let s = Arc::clone(&server);
    handles.push(tokio::spawn(async move {
        s.serve_with_incoming_shutdown(authzd::app::nodelay(listener), async {
            let _ = stopped.await;
        })
        .await
        .expect("server runs");
    }));
    stops.push(stop);

    let socket = dir.join("authzd.sock");
    let unix = tokio::net::UnixListener::bind(&socket).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let s = Arc::clone(&server);
    handles.push(tokio::spawn(async move {
        s.serve_with_incoming_shutdown(tokio_stream::wrappers::UnixListenerStream::new(unix), async {
            let _ = stopped.await;
        })
        .await
        .expect("server runs");
    }));
    stops.push(stop);

    let metrics = match server.metrics() {
        Some(m) => {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let (stop, stopped) = oneshot::channel::<()>();
            let m = Arc::clone(m);
            handles.push(tokio::spawn(async move {
                authzd::metrics::serve_http(l, m, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
            }));
            stops.push(stop);
            Some(addr)
        }
        None => None,
    };
    Running { addr, socket, metrics, stops, handles, server }
}

impl Running {
    async fn stop(self) {
        for s in self.stops {
            let _ = s.send(());
        }
        for h in self.handles {
            h.await.unwrap();
        }
        Arc::try_unwrap(self.server).expect("no other owner").close().await;
    }
}

/// The small benchmark tenant of these tests.
const TINY: [&str; 12] =
    ["--persons", "60", "--groups", "6", "--roles", "4", "--privileges", "24", "--metrics", "600", "--denies", "20"];

/// Runs `authzd bench --json` with `args`; (exit success, report).
async fn bench(args: Vec<String>) -> (bool, Value) {
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_authzd"))
            .arg("bench")
            .arg("--json")
            .arg("--quiet")
            .args(&args)
            .output()
            .expect("authzd bench runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("bench printed no JSON ({e}): {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr))
    });
    (out.status.success(), report)
}

fn args(extra: &[&str]) -> Vec<String> {
    TINY.iter().chain(extra).map(|s| (*s).to_owned()).collect()
}

fn workload<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["workloads"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["workload"] == name)
        .unwrap_or_else(|| panic!("no {name}"))
}

async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_get_with(addr, path, "").await
}

/// `GET path` with `headers` (`Name: value\r\n` lines): (status, body).
async fn http_get_with(addr: SocketAddr, path: &str, headers: &str) -> (u16, String) {
    let (path, headers) = (path.to_owned(), headers.to_owned());
    tokio::task::spawn_blocking(move || {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{headers}\r\n").as_bytes())
            .unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).unwrap();
        let status = buf.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        (status, body)
    })
    .await
    .unwrap()
}

const CLOSED_LOOP: &str = "health,check-privilege,check-object,check-batch,list-visible";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correct_server_has_no_errors_and_no_mismatches() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path(), true).await;
    let server = format!("http://{}", r.addr);
    let (ok, report) = bench(args(&[
        "--server",
        &server,
        "--workloads",
        CLOSED_LOOP,
        "--duration",
        "1s",
        "--warmup",
        "0s",
        "--concurrency",
        "8",
        "--batch-size",
        "10",
        "--page-size",
        "100",
    ]))
    .await;
    assert!(ok, "bench failed: {report:#}");
    assert_eq!(report["ok"], true);
    for name in CLOSED_LOOP.split(',') {
        let w = workload(&report, name);
        assert_eq!(w["errors"], 0, "{name}: {w:#}");
        assert_eq!(w["mismatches"], 0, "{name}: {w:#}");
        assert!(w["calls"].as_u64().unwrap() > 0, "{name}: no calls");
    }
    // Listings span several pages of 100 and are verified whole.
    assert!(workload(&report, "list-visible")["extra"]["mean_objects"].as_f64().unwrap() > 100.0);
    assert!(report["health_calls_per_sec"].as_f64().unwrap() > 0.0);
    assert!(workload(&report, "check-object")["calls_vs_health"].as_f64().unwrap() > 0.0);

    // The same over the Unix socket, importing nothing (the tenant exists).
    let socket = r.socket.display().to_string();
    let (ok, report) = bench(args(&[
        "--unix-socket",
        &socket,
        "--workloads",
        "health,check-object",
        "--duration",
        "300ms",
        "--warmup",
        "0s",
        "--concurrency",
        "4",
    ]))
    .await;
    assert!(ok, "bench over the unix socket failed: {report:#}");

    // The metrics port saw the decisions and the calls; the probes answer.
    let addr = r.metrics.unwrap();
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    let allowed: f64 = body
        .lines()
        .filter(|l| l.starts_with("authzd_decisions_total{") && l.contains("result=\"allowed\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(allowed > 0.0, "no allowed decisions counted:\n{body}");
    assert!(
        body.contains(
            "authzd_grpc_request_duration_seconds_bucket{le=\"0.001\",method=\"/authzd.v1.DecisionService/Check\"}"
        ),
        "{body}"
    );
    assert!(
        body.contains("authzd_grpc_request_duration_seconds_count{method=\"/grpc.health.v1.Health/Check\"}"),
        "{body}"
    );
    assert!(body.contains("authzd_snapshot_revision "), "{body}");
    assert!(body.contains("authzd_replica_lag_revisions 0"), "{body}");
    // The retention job ran its first round at start-up (nothing old enough to compact).
    assert!(body.contains("authzd_retention_rounds_total 1"), "{body}");
    assert!(body.contains("authzd_changelog_compacted_records_total 0"), "{body}");
    assert!(body.contains("authzd_watch_reloads_total 0"), "{body}");
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    assert_eq!(http_get(addr, "/readyz").await, (200, "ready\n".to_owned()));
    assert_eq!(http_get(addr, "/nope").await.0, 404);
    r.server.set_not_serving().await;
    let (status, body) = http_get(addr, "/readyz").await;
    assert_eq!((status, body.as_str()), (503, "not ready: shutting down\n"));
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_answering_from_another_tenant_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path(), false).await;
    let server = format!("http://{}", r.addr);
    // Import the tenant of seed 1 (the health calls only have to get one
    // answer in: 64 calls in flight for 200 ms could all end after the
    // window on a loaded machine, and none counted).
    let (ok, report) = bench(args(&[
        "--server",
        &server,
        "--seed",
        "1",
        "--workloads",
        "health",
        "--duration",
        "1s",
        "--warmup",
        "0s",
        "--concurrency",
        "4",
    ]))
    .await;
    assert!(ok, "{report:#}");
    // Verify against the tenant of seed 2: same ids, different memberships and entries.
    let (ok, report) = bench(args(&[
        "--server",
        &server,
        "--seed",
        "2",
        "--no-import",
        "--workloads",
        "check-privilege,check-object,check-batch,list-visible",
        "--duration",
        "500ms",
        "--warmup",
        "0s",
        "--concurrency",
        "4",
        "--batch-size",
        "10",
    ]))
    .await;
    assert!(!ok, "a different tenant must fail the bench: {report:#}");
    assert_eq!(report["ok"], false);
    let mismatches: u64 =
        report["workloads"].as_array().unwrap().iter().map(|w| w["mismatches"].as_u64().unwrap()).sum();
    assert!(mismatches > 0, "{report:#}");
    assert!(workload(&report, "check-object")["mismatches"].as_u64().unwrap() > 0, "{report:#}");

    // A tenant the server does not have: decisions deny UNKNOWN_TENANT (mismatches),
    // listings fail NOT_FOUND (errors); never a fast success.
    let (ok, report) = bench(args(&[
        "--server",
        &server,
        "--tenant",
        "absent",
        "--no-import",
        "--workloads",
        "check-object,list-visible",
        "--duration",
        "300ms",
        "--warmup",
        "0s",
        "--concurrency",
        "4",
    ]))
    .await;
    assert!(!ok);
    assert!(workload(&report, "check-object")["mismatches"].as_u64().unwrap() > 0, "{report:#}");
    assert!(workload(&report, "list-visible")["errors"].as_u64().unwrap() > 0, "{report:#}");
    assert_eq!(workload(&report, "list-visible")["calls"], 0);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_fan_out_delivers_every_flip() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path(), false).await;
    let server = format!("http://{}", r.addr);
    let (ok, report) = bench(args(&[
        "--server",
        &server,
        "--workloads",
        "watch",
        "--duration",
        "500ms",
        "--warmup",
        "0s",
        "--watchers",
        "150",
    ]))
    .await;
    let w = workload(&report, "watch");
    assert!(ok, "{report:#}");
    assert_eq!(w["errors"], 0, "{w:#}");
    assert_eq!(w["mismatches"], 0, "{w:#}");
    assert!(w["extra"]["flips"].as_u64().unwrap() >= 2, "{w:#}");
    assert_eq!(w["extra"]["flips"].as_u64().unwrap() % 2, 0, "the role is restored: {w:#}");
    assert!(w["extra"]["affected_per_flip"].as_u64().unwrap() > 0);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_json_checks_and_sse_fan_out_are_verified_over_http1_and_http2() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path(), false).await;
    let server = format!("http://{}", r.addr);
    let socket = r.socket.display().to_string();
    for extra in [
        &["--server", server.as_str()][..],
        &["--server", server.as_str(), "--http2"],
        &["--unix-socket", socket.as_str()],
    ] {
        // 1 s, as the gRPC closed loops above: a shorter window can see no call complete on a loaded machine.
        let mut a = vec![
            "--workloads",
            "check-http,watch-sse",
            "--duration",
            "1s",
            "--warmup",
            "0s",
            "--concurrency",
            "4",
            "--watchers",
            "20",
        ];
        a.extend_from_slice(extra);
        let (ok, report) = bench(args(&a)).await;
        assert!(ok, "{extra:?}: {report:#}");
        for name in ["check-http", "watch-sse"] {
            let w = workload(&report, name);
            assert_eq!((w["errors"].as_u64(), w["mismatches"].as_u64()), (Some(0), Some(0)), "{extra:?} {name}: {w:#}");
            assert!(w["calls"].as_u64().unwrap() > 0, "{extra:?} {name}: no calls: {w:#}");
        }
        let w = workload(&report, "watch-sse");
        assert_eq!(w["extra"]["flips"].as_u64().unwrap() % 2, 0, "the role is restored: {w:#}");
        assert!(w["extra"]["transport"].as_str().unwrap().starts_with("SSE"), "{w:#}");
    }
    // A server answering from another tenant is caught over HTTP too.
    let (ok, report) = bench(args(&[
        "--server",
        &server,
        "--seed",
        "2",
        "--no-import",
        "--workloads",
        "check-http",
        "--duration",
        "300ms",
        "--warmup",
        "0s",
        "--concurrency",
        "4",
    ]))
    .await;
    assert!(!ok);
    assert!(workload(&report, "check-http")["mismatches"].as_u64().unwrap() > 0, "{report:#}");
    r.stop().await;
}

/// The soak for a few seconds: every kind of load happened, every answer was
/// right, and the report has its samples and a verdict with start and end
/// figures. Flatness is not asserted (the tolerances are opened wide): five
/// seconds say nothing about it, and the process metrics are those of this
/// test process, which runs other tests' servers too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_applies_every_kind_of_load_and_samples_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path(), true).await;
    let server = format!("http://{}", r.addr);
    let metrics = format!("http://{}", r.metrics.unwrap());
    let (ok, report) = bench(args(&[
        "--server",
        &server,
        "--workloads",
        "soak",
        "--duration",
        "5s",
        "--warmup",
        "1s",
        "--sample-interval",
        "1s",
        "--write-interval",
        "300ms",
        "--metrics-url",
        &metrics,
        "--concurrency",
        "4",
        "--soak-subscribers",
        "3",
        "--soak-listers",
        "1",
        "--page-size",
        "100",
        "--flat-rss-percent",
        "100000",
        "--flat-rss-mib",
        "100000",
        "--flat-fds",
        "100000",
        "--flat-tasks",
        "100000",
    ]))
    .await;
    assert!(ok, "{report:#}");
    let w = workload(&report, "soak");
    assert_eq!((w["errors"].as_u64(), w["mismatches"].as_u64()), (Some(0), Some(0)), "{w:#}");
    let x = &w["extra"];
    let load = &x["load"];
    for key in ["checks", "writes", "subscriptions_opened", "subscriptions_closed", "differences_verified", "listings"]
    {
        assert!(load[key].as_u64().unwrap() > 0, "no {key}: {load:#}");
    }
    assert!(load["writes"].as_u64().unwrap() >= 3, "{load:#}");
    assert_eq!(load["failed_samples"], 0);
    assert!(load["pooled_checks_changed_by_the_flip"].as_u64().unwrap() > 0, "the flip changes no answer: {load:#}");
    // A sample at the start, one a second, one at the end.
    let samples = x["samples"].as_array().unwrap();
    assert!(samples.len() >= 4, "{samples:#?}");
    for s in samples {
        assert!(s["rss_bytes"].as_f64().unwrap() > 1_000_000.0, "{s}");
        assert!(s["open_fds"].as_f64().unwrap() >= 3.0, "{s}");
        assert!(s["tasks"].as_f64().unwrap() >= 1.0, "{s}");
    }
    let v = &x["verdict"];
    let times = |k: &str| -> Vec<f64> { v[k].as_array().unwrap().iter().map(|t| t.as_f64().unwrap()).collect() };
    let (first, last) = (times("start_samples_t_s"), times("end_samples_t_s"));
    assert_eq!((first.len(), last.len()), (3, 3), "{v:#}");
    assert!(first[0] >= 1.0, "the start figures come after the warm-up: {v:#}");
    assert!(last[2] >= 4.5 && last[2] > first[0], "the end figures come from the end: {v:#}");
    for key in ["rss_bytes", "open_fds", "tasks"] {
        for field in ["start", "end", "growth"] {
            assert!(v[key][field].as_f64().is_some(), "{key}.{field}: {v:#}");
        }
        assert_eq!(v[key]["flat"], true, "{key}: {v:#}");
    }
    assert_eq!(v["flat"], true);
    assert_eq!(v["tolerance"]["tasks"], 100000);
    // The role is restored: the flip's writes are even, plus the first one.
    assert_eq!(load["writes"].as_u64().unwrap() % 2, 0, "the role is left as it was: {load:#}");

    // Bad input names the flag.
    for (extra, flag) in [
        (&["--workloads", "soak"][..], "--metrics-url"),
        (&["--workloads", "soak", "--metrics-url", "https://x:1"], "--metrics-url"),
        (&["--workloads", "soak", "--metrics-url", &metrics, "--duration", "1s", "--warmup", "2s"], "--warmup"),
        (&["--workloads", "soak", "--metrics-url", &metrics, "--sample-interval", "0s"], "--sample-interval"),
    ] {
        let mut a = args(extra);
        a.extend(["--server".to_owned(), server.clone()]);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_authzd")).arg("bench").args(&a).output().unwrap();
        assert!(!out.status.success(), "{extra:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag), "{extra:?}: {err}");
    }
    r.stop().await;
}

/// `--decision-log-cost` starts its own servers (this binary) with the log
/// off, to a file and to /dev/null, and verifies the checks and the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_log_cost_runs_the_checks_with_the_log_off_and_on() {
    let dir = tempfile::tempdir().unwrap();
    let cost_dir = dir.path().display().to_string();
    let (ok, report) = bench(args(&[
        "--decision-log-cost",
        "--cost-dir",
        &cost_dir,
        "--duration",
        "1s",
        "--warmup",
        "0s",
        "--concurrency",
        "4",
    ]))
    .await;
    assert!(ok, "{report:#}");
    let names: Vec<&str> =
        report["workloads"].as_array().unwrap().iter().map(|w| w["workload"].as_str().unwrap()).collect();
    assert_eq!(names, ["check-privilege/log-off", "check-privilege/log-file", "check-privilege/log-null"]);
    for name in &names {
        let w = workload(&report, name);
        assert_eq!((w["errors"].as_u64(), w["mismatches"].as_u64()), (Some(0), Some(0)), "{w:#}");
        assert!(w["calls"].as_u64().unwrap() > 0, "{w:#}");
        assert!(w["extra"]["vs_off"].as_f64().unwrap() > 0.0, "{w:#}");
    }
    assert_eq!(workload(&report, "check-privilege/log-off")["extra"]["log"], "off");
    for name in ["check-privilege/log-file", "check-privilege/log-null"] {
        let x = &workload(&report, name)["extra"];
        assert!(x["decisions"].as_f64().unwrap() > 0.0, "{x:#}");
        assert_eq!(x["lines"].as_f64().unwrap() + x["dropped"].as_f64().unwrap(), x["decisions"].as_f64().unwrap());
    }
    let file = &workload(&report, "check-privilege/log-file")["extra"];
    assert_eq!(file["file_lines"].as_f64().unwrap(), file["lines"].as_f64().unwrap(), "{file:#}");
    assert_eq!(workload(&report, "check-privilege/log-null")["extra"]["log"], "/dev/null");
}

#[test]
fn memory_only_reports_load_time_and_memory() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_authzd"))
        .args(["bench", "--memory-only", "--json"])
        .args(TINY)
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["persons"], 60);
    assert_eq!(v["objects"], 600);
    assert!(v["load_s"].as_f64().unwrap() > 0.0);
    if cfg!(target_os = "linux") {
        assert!(v["rss_loaded_mib"].as_f64().unwrap() > 0.0);
    }
}

/// Made-up gRPC paths cannot grow the metrics: 1,000 random paths add no
/// series (they share the `unknown` method label).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_methods_share_one_series() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path(), true).await;
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", r.addr)).unwrap().connect().await.unwrap();
    let series = |body: &str| body.lines().filter(|l| !l.starts_with('#')).count();
    let call = |path: String| {
        let channel = channel.clone();
        async move {
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready().await.unwrap();
            let path = http::uri::PathAndQuery::try_from(path).unwrap();
            let codec = tonic_prost::ProstCodec::<(), ()>::default();
            let s = grpc.unary(tonic::Request::new(()), path, codec).await.unwrap_err();
            assert_eq!(s.code(), tonic::Code::Unimplemented);
        }
    };
    // One unknown call first: its series exist from then on.
    call("/warm.Up/Call".into()).await;
    let before = series(&http_get(r.metrics.unwrap(), "/metrics").await.1);
    for i in 0..1_000u32 {
        call(format!("/random{}.Svc{i}/M{}", i.wrapping_mul(2_654_435_761) % 97, i % 13)).await;
    }
    let body = http_get(r.metrics.unwrap(), "/metrics").await.1;
    assert_eq!(series(&body), before, "1,000 made-up paths changed the number of series");
    assert!(body.contains("authzd_grpc_errors_total{method=\"unknown\",code=\"UNIMPLEMENTED\"} 1001"), "{body}");
    assert!(!body.contains("random"), "a made-up path became a label");
    r.stop().await;
}

/// `/metrics` speaks the format the scraper asks for: OpenMetrics when the
/// `Accept` header names it (as Prometheus does), else the classic text
/// format 0.0.4 (counters named by their `_total` samples, no `# EOF`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_format_is_negotiated() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path(), true).await;
    let addr = r.metrics.unwrap();
    let (status, open) =
        http_get_with(addr, "/metrics", "Accept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n")
            .await;
    assert_eq!(status, 200);
    assert!(open.trim_end().ends_with("# EOF"), "{open}");
    assert!(open.contains("# TYPE authzd_decisions counter"), "{open}");
    assert!(open.contains("# TYPE authzd_build info"), "{open}");
    for accept in ["", "Accept: text/plain;version=0.0.4\r\n", "Accept: */*\r\n"] {
        let (status, classic) = http_get_with(addr, "/metrics", accept).await;
        assert_eq!(status, 200);
        assert!(!classic.contains("# EOF") && !classic.contains("# UNIT"), "{accept}: {classic}");
        assert!(classic.contains("# TYPE authzd_decisions_total counter"), "{accept}: {classic}");
        assert!(classic.contains("# HELP authzd_decisions_total "), "{accept}: {classic}");
        assert!(classic.contains("# TYPE authzd_build_info gauge"), "{accept}: {classic}");
        // The process metrics, under their conventional names, with live values.
        let value = |name: &str| -> f64 {
            let line =
                classic.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("no {name}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        assert!(value("process_resident_memory_bytes") > 1_000_000.0, "{classic}");
        assert!(value("process_open_fds") >= 3.0 && value("process_max_fds") >= value("process_open_fds"));
        assert!(value("process_threads") >= 2.0);
        assert!(value("authzd_runtime_alive_tasks") >= 1.0, "{classic}");
        assert!(value("process_cpu_seconds_total") > 0.0);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let started = value("process_start_time_seconds");
        assert!(started <= now + 1.0 && started > now - 24.0 * 3600.0, "start {started}, now {now}");
        assert!(
            classic.contains(&format!("authzd_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))),
            "{classic}"
        );
        // Every sample line's family is declared under the sample's own name or its histogram base.
        let types: Vec<&str> =
            classic.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split(' ').next()).collect();
        for sample in classic.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            let name = sample.split(['{', ' ']).next().unwrap();
            let base = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name);
            assert!(types.contains(&name) || types.contains(&base), "`{name}` has no TYPE line:\n{classic}");
        }
    }
    r.stop().await;
}
