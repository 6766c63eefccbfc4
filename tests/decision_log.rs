//! The decision log through the real server: Check, CheckBatch and Explain
//! with the client's `x-request-id` are written, one JSON line per decision,
//! and flushed by the graceful stop; the filter and sampling apply; the
//! decision token never reaches the file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod support;

use authzd::config::ServerConfig;
use authzd::decision_log::{Filter, Settings, Target};
use authzd::proto::authzd::v1 as pb;
use authzd::proto::authzd::v1::decision_service_client::DecisionServiceClient;
use serde_json::Value;
use std::sync::Arc;
use tonic::transport::Channel;

const TENANT: &str = "acme";
const TOKEN: &str = "s3cret-decision-token";

fn config(dir: &tempfile::TempDir, log: &std::path::Path, filter: Filter, sample: f64) -> ServerConfig {
    let mut c = support::demo_config(&dir.path().join("authzd.db"));
    c.tail_interval = std::time::Duration::ZERO;
    c.decision_token = Some(TOKEN.into());
    // Metrics on (the port itself is only served by `authzd serve`): the counters are read below.
    c.metrics_listen = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    c.decision_log = Some(Settings { filter, sample, ..Settings::new(Target::File(log.to_owned())) });
    c
}

fn request<T>(message: T, request_id: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    if let Some(id) = request_id {
        r.metadata_mut().insert("x-request-id", id.parse().unwrap());
    }
    r
}

fn metric(id: &str) -> Option<pb::ObjectRef> {
    Some(pb::ObjectRef { r#type: "Metric".into(), id: id.into(), tenant: None })
}

/// The questions every test asks: an allowed and a denied Check (the denied
/// one without a request id), a CheckBatch of three, an Explain.
async fn ask(c: &mut DecisionServiceClient<Channel>) {
    let allowed = pb::CheckRequest {
        tenant: TENANT.into(),
        person: "cb-supervisor".into(),
        application: Some("Callback".into()),
        privilege: Some("Callback - Export Reports".into()),
        ..Default::default()
    };
    let r = c.check(request(allowed, Some("req-allowed"))).await.unwrap().into_inner();
    assert!(r.allowed);
    let denied = pb::CheckRequest {
        tenant: TENANT.into(),
        person: "adv-user-a".into(),
        permission: pb::Permission::Read as i32,
        object: metric("FrontlineAdvisor.Team.Voice.taht"),
        ..Default::default()
    };
    let r = c.check(request(denied, None)).await.unwrap().into_inner();
    assert_eq!(r.reason, pb::Reason::ExplicitDeny as i32);
    let batch = pb::CheckBatchRequest {
        tenant: TENANT.into(),
        person: "adv-user-a".into(),
        items: [
            "FrontlineAdvisor.Agent.Voice.nch",
            "FrontlineAdvisor.Team.Voice.taht",
            "FrontlineAdvisor.Agent.Email.handled",
        ]
        .into_iter()
        .map(|m| pb::CheckBatchItem {
            permission: pb::Permission::Read as i32,
            object: metric(m),
            ..Default::default()
        })
        .collect(),
        ..Default::default()
    };
    let r = c.check_batch(request(batch, Some("req-batch"))).await.unwrap().into_inner();
    assert_eq!(r.results.iter().map(|i| i.allowed).collect::<Vec<_>>(), [true, false, false]);
    let explain = pb::ExplainRequest {
        tenant: TENANT.into(),
        person: "adv-user-a".into(),
        permission: pb::Permission::Read as i32,
        object: metric("FrontlineAdvisor.Team.Voice.taht"),
        ..Default::default()
    };
    let r = c.explain(request(explain, Some("req-explain"))).await.unwrap().into_inner();
    assert!(!r.allowed);
}

/// Runs [`ask`] against a server logging to a fresh file; the file's lines
/// after the graceful stop, and the metrics exposition.
async fn run(filter: Filter, sample: f64) -> (Vec<Value>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("decisions.log");
    let s = support::serve(config(&dir, &path, filter, sample)).await;
    let mut c = s.decisions().await;
    ask(&mut c).await;
    drop(c);
    let _ = s.stop.send(());
    let server = s.handle.await.unwrap();
    let metrics = Arc::clone(server.metrics().unwrap());
    server.close().await;
    let text = std::fs::read_to_string(&path).unwrap();
    let lines = text.lines().map(|l| serde_json::from_str(l).expect("each line is one JSON object")).collect();
    (lines, text, metrics.encode())
}

fn sample_value(exposition: &str, name: &str) -> u64 {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{name} in\n{exposition}"))
}

#[tokio::test]
async fn every_decision_is_a_line_flushed_at_stop() {
    let (lines, text, exposition) = run(Filter::All, 1.0).await;
    assert_eq!(lines.len(), 6, "{text}");
    assert!(!text.contains(TOKEN) && !text.to_lowercase().contains("bearer"), "no token in the log");

    let summary: Vec<(&str, Option<u64>, &str, bool, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["rpc"].as_str().unwrap(),
                l.get("item").map(|i| i.as_u64().unwrap()),
                l["request_id"].as_str().unwrap(),
                l["allowed"].as_bool().unwrap(),
                l["reason"].as_str().unwrap(),
            )
        })
        .collect();
    let generated = summary[1].2;
    assert_eq!(generated.len(), 32, "a generated id when the client sent none");
    assert_eq!(
        summary,
        [
            ("Check", None, "req-allowed", true, "ALLOWED"),
            ("Check", None, generated, false, "EXPLICIT_DENY"),
            ("CheckBatch", Some(0), "req-batch", true, "ALLOWED"),
            ("CheckBatch", Some(1), "req-batch", false, "EXPLICIT_DENY"),
            ("CheckBatch", Some(2), "req-batch", false, "NO_GRANT"),
            ("Explain", None, "req-explain", false, "EXPLICIT_DENY"),
        ]
    );
    for l in &lines {
        assert_eq!(l["tenant"], TENANT);
        assert!(l["revision"].as_u64().unwrap() >= 1);
        let time = l["time"].as_str().unwrap();
        assert!(time.len() == 27 && time.ends_with('Z') && time.as_bytes()[10] == b'T', "{time}");
    }
    // The question, only the parts given.
    assert_eq!(lines[0]["person"], "cb-supervisor");
    assert_eq!(lines[0]["application"], "Callback");
    assert_eq!(lines[0]["privilege"], "Callback - Export Reports");
    assert!(lines[0].get("object").is_none() && lines[0].get("permission").is_none());
    assert_eq!(lines[3]["person"], "adv-user-a");
    assert_eq!(lines[3]["permission"], "PERMISSION_READ");
    assert_eq!(lines[3]["object"], serde_json::json!({"type": "Metric", "id": "FrontlineAdvisor.Team.Voice.taht"}));
    assert!(lines[3].get("application").is_none() && lines[3].get("privilege").is_none());

    assert_eq!(sample_value(&exposition, "authzd_decision_log_lines_total"), 6);
    assert_eq!(sample_value(&exposition, "authzd_decision_log_dropped_total"), 0);
    assert_eq!(sample_value(&exposition, "authzd_decision_log_errors_total"), 0);
}

#[tokio::test]
async fn the_denied_filter_writes_only_denials() {
    let (lines, text, _) = run(Filter::Denied, 1.0).await;
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines.iter().all(|l| l["allowed"] == false), "{text}");
    let items: Vec<u64> = lines.iter().filter_map(|l| l.get("item").and_then(Value::as_u64)).collect();
    assert_eq!(items, [1, 2]);
}

#[tokio::test]
async fn sample_zero_writes_nothing() {
    let (lines, text, exposition) = run(Filter::All, 0.0).await;
    assert!(lines.is_empty(), "{text}");
    assert_eq!(sample_value(&exposition, "authzd_decision_log_lines_total"), 0);
}

#[test]
fn the_flags_the_file_and_their_errors() {
    use clap::Parser as _;
    let dir = tempfile::tempdir().unwrap();
    let parse = |args: &[&str]| {
        let mut argv = vec!["authzd", "serve"];
        argv.extend_from_slice(args);
        match authzd::cli::Cli::try_parse_from(argv) {
            Ok(cli) => match cli.command {
                authzd::cli::Command::Serve(a) => ServerConfig::from_args(&a).map_err(|e| e.to_string()),
                _ => unreachable!(),
            },
            Err(e) => Err(e.to_string()),
        }
    };
    assert_eq!(parse(&[]).unwrap().decision_log, None, "off by default");
    let c = parse(&["--decision-log", "-"]).unwrap().decision_log.unwrap();
    assert_eq!(c, Settings::new(Target::Stdout));
    let c = parse(&[
        "--decision-log",
        "/tmp/d.log",
        "--decision-log-sample",
        "0.5",
        "--decision-log-filter",
        "denied",
        "--decision-log-buffer",
        "8",
    ])
    .unwrap()
    .decision_log
    .unwrap();
    assert_eq!(
        c,
        Settings { target: Target::File("/tmp/d.log".into()), sample: 0.5, filter: Filter::Denied, buffer: 8 }
    );
    // The file's keys are the flags'.
    let file = dir.path().join("authzd.yaml");
    std::fs::write(&file, "decision-log: /tmp/f.log\ndecision-log-filter: allowed\n").unwrap();
    let c = parse(&["--config", file.to_str().unwrap()]).unwrap().decision_log.unwrap();
    assert_eq!((c.target, c.filter), (Target::File("/tmp/f.log".into()), Filter::Allowed));
    std::fs::write(&file, "decision-log: '-'\ndecision-log-sample: 2\n").unwrap();
    let e = parse(&["--config", file.to_str().unwrap()]).unwrap_err();
    assert!(e.contains("authzd.yaml") && e.contains("key `decision-log-sample`"), "{e}");

    for (args, flag) in [
        (&["--decision-log", "-", "--decision-log-sample", "1.5"][..], "--decision-log-sample"),
        (&["--decision-log", "-", "--decision-log-sample=-0.1"], "--decision-log-sample"),
        (&["--decision-log", "-", "--decision-log-sample", "NaN"], "--decision-log-sample"),
        (&["--decision-log", "-", "--decision-log-buffer", "0"], "--decision-log-buffer"),
        (&["--decision-log", "-", "--decision-log-filter", "some"], "--decision-log-filter"),
        (&["--decision-log", ""], "--decision-log"),
        (&["--decision-log", dir.path().to_str().unwrap()], "--decision-log"),
        (&["--decision-log-filter", "denied"], "--decision-log-filter"),
    ] {
        let e = parse(args).unwrap_err();
        assert!(e.contains(flag), "{args:?}: {e}");
    }
}

#[tokio::test]
async fn a_log_that_cannot_be_opened_stops_the_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(&dir, &dir.path().join("missing-dir").join("d.log"), Filter::All, 1.0);
    let e = authzd::app::Server::start(c).await.unwrap_err();
    assert!(format!("{e:#}").contains("--decision-log"), "{e:#}");
}
