//! The `soak` workload: mixed load for a long time (default 30 minutes), the
//! server's resident memory, open file descriptors and live tasks sampled
//! from its metrics endpoint, and a verdict on whether they stayed flat.
//!
//! The load, all at once for `--duration`:
//!
//! - `--concurrency` tasks of `Check`s in a closed loop, privilege and object
//!   questions alternately (the pools of `check-privilege` and `check-object`);
//! - one write batch every `--write-interval`: the role holding most persons
//!   loses its privileges of the followed application, the next batch gives
//!   them back (as the `watch` workload flips it); the run ends with the role
//!   restored;
//! - `--soak-subscribers` privilege subscriptions of persons the flip
//!   affects, each on a connection of its own: connect, subscribe, read the
//!   initial state and `--soak-changes` differences, disconnect, and again;
//! - `--soak-listers` tasks of `ListVisible`, every page, in a loop.
//!
//! Every answer is verified against the local view of the state at the
//! answer's revision: the first flip is written before the load starts, and
//! every write must get the next revision (the soak must be the only writer),
//! so the state at any revision is known. A revision the soak has not
//! written yet is a mismatch.
//!
//! Samples: at the start, every `--sample-interval`, and at the end (the load
//! still running). The start figures are the medians of the first three
//! samples at or after `--warmup` (default 10 minutes); the end figures, of the
//! last three (one sample at a peak neither makes nor hides a trend).
//! Flat: resident memory grew by at most `--flat-rss-percent` of its start and
//! at most `--flat-rss-mib`; descriptors and tasks by at most `--flat-fds` and
//! `--flat-tasks`. Not flat is a failure (exit code 1), as errors and
//! mismatches are.

use super::pools::{Expect, IdHash, ListExpect, Pools};
use super::scrape::{MetricsUrl, metric, parse_metrics_url, scrape};
use super::tally::{Tally, WorkloadResult};
use super::{BenchArgs, Import, MAX_MESSAGE_BYTES, Target, Token};
use crate::engine::TenantView;
use crate::model::Mutation;
use crate::proto::authzd::v1 as pb;
use crate::proto::authzd::v1::decision_service_client::DecisionServiceClient;
use crate::proto::authzd::v1::watch_service_client::WatchServiceClient;
use pb::watch_event::Event;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// `--duration` of `soak` when not given.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(30 * 60);
/// `--warmup` of `soak` when not given.
/// Ten minutes: on the benchmark tenant the server's resident memory rose for
/// about 6 minutes (258 → 329 MiB) before holding between 295 and 346 MiB
/// for the rest of a 30-minute run; a 2-minute warm-up called that not flat.
pub const DEFAULT_WARMUP: Duration = Duration::from_secs(10 * 60);
/// Longest wait for a subscriber's next event (writes come every `--write-interval`).
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Error and mismatch messages kept.
const KEPT: usize = 10;

/// One sample of the server.
#[derive(Debug, Clone, Copy, Default)]
struct Point {
    /// Seconds since the load started.
    t: f64,
    rss: f64,
    fds: f64,
    tasks: f64,
    threads: f64,
    streams: f64,
    /// Load applied so far.
    checks: u64,
    writes: u64,
    opened: u64,
    listings: u64,
}

impl Point {
    fn json(&self) -> Value {
        json!({
            "t_s": self.t,
            "rss_bytes": self.rss,
            "open_fds": self.fds,
            "tasks": self.tasks,
            "threads": self.threads,
            "watch_open_streams": self.streams,
            "checks": self.checks,
            "writes": self.writes,
            "subscriptions_opened": self.opened,
            "listings": self.listings,
        })
    }
}

/// Counters of the whole run.
#[derive(Default)]
struct Counts {
    checks: AtomicU64,
    writes: AtomicU64,
    opened: AtomicU64,
    closed: AtomicU64,
    differences: AtomicU64,
    listings: AtomicU64,
    listed: AtomicU64,
    errors: AtomicU64,
    mismatches: AtomicU64,
    samples_failed: AtomicU64,
    messages: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Counts {
    fn note(&self, m: String) {
        let mut v = self.messages.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() < KEPT {
            v.push(m);
        }
    }
    fn error(&self, m: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.note(format!("error: {m}"));
    }
    fn mismatch(&self, m: String) {
        self.mismatches.fetch_add(1, Ordering::Relaxed);
        self.note(format!("mismatch: {m}"));
    }
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// Which state each revision is in: the role on (as in the tenant) or off.
/// `first` is the revision of the first flip (off), written before the load
/// starts; write k of the run has revision `first + k - 1`; `last` is the
/// highest revision written or being written.
struct Revisions {
    first: u64,
    last: AtomicU64,
}

impl Revisions {
    /// `Some(true)` when the role is on at `rev`, `None` for a revision not written by the soak yet.
    fn on_at(&self, rev: u64) -> Option<bool> {
        if rev < self.first {
            Some(true)
        } else if rev > self.last.load(Ordering::Acquire) {
            None
        } else {
            Some((rev - self.first) % 2 == 1)
        }
    }
}

/// What the load tasks share.
struct Shared {
    tenant: String,
    app: String,
    on: Arc<Pools>,
    off: Pools,
    /// Subscribed persons with their privileges when the role is on and off.
    persons: Vec<(String, BTreeSet<String>, BTreeSet<String>)>,
    revisions: Revisions,
    counts: Counts,
}

fn status(s: &tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// The flip: the role holding most persons, with and without its privileges of `app`.
fn flip(t: &Target, app: &str) -> Result<(Mutation, Mutation, TenantView), String> {
    let role = t
        .config
        .roles
        .values()
        .filter(|r| r.privileges.get(app).is_some_and(|p| !p.is_empty()))
        .max_by_key(|r| super::fanout::holders(t, r).len())
        .ok_or_else(|| format!("no role grants privileges of `{app}`: nothing for the soak to flip"))?
        .clone();
    let mut off_role = role.clone();
    off_role.privileges.remove(app);
    let off = Mutation::PutRole(off_role);
    let config_off = t.config.apply_batch(std::slice::from_ref(&off)).map_err(|e| e.to_string())?;
    Ok((Mutation::PutRole(role), off, TenantView::build(&config_off, 0)))
}

fn privileges(v: &TenantView, person: &str, app: &str) -> BTreeSet<String> {
    v.effective_privileges(person, app).map(|e| e.privileges.into_iter().collect()).unwrap_or_default()
}

/// Runs the soak.
pub async fn run(a: &BenchArgs, t: &Target, token: &Token, channels: &[Channel], pools: Arc<Pools>) -> WorkloadResult {
    let name = super::Workload::Soak.name();
    match run_inner(a, t, token, channels, pools).await {
        Ok(r) => r,
        Err(msg) => {
            let mut tally = Tally::new();
            tally.errors = 1;
            tally.messages.push(format!("error: {msg}"));
            WorkloadResult::from_tally(name, tally, Duration::ZERO)
        }
    }
}

/// The settings of a soak, validated (before the tenant is built or imported).
pub fn check_args(a: &BenchArgs) -> Result<MetricsUrl, String> {
    let url = a.metrics_url.as_deref().ok_or(
        "--metrics-url: the soak workload samples the server's memory, file descriptors and tasks from its \
         metrics endpoint; start the server with `--metrics-listen ADDR` and pass `--metrics-url http://ADDR`",
    )?;
    let url = parse_metrics_url(url)?;
    let (duration, warmup) = durations(a);
    if warmup >= duration {
        return Err(format!(
            "--warmup ({warmup:?}) must be shorter than --duration ({duration:?}): the soak's start figures are \
             taken at the end of the warm-up"
        ));
    }
    if a.sample_interval.is_zero() {
        return Err("--sample-interval must be more than 0".into());
    }
    if a.write_interval.is_zero() {
        return Err("--write-interval must be more than 0".into());
    }
    if a.soak_changes == 0 {
        return Err("--soak-changes must be at least 1".into());
    }
    if !(a.flat_rss_percent >= 0.0 && a.flat_rss_mib >= 0.0) {
        return Err("--flat-rss-percent and --flat-rss-mib must be 0 or more".into());
    }
    if a.flat_fds.is_some_and(|v| v < 0) || a.flat_tasks.is_some_and(|v| v < 0) {
        return Err("--flat-fds and --flat-tasks must be 0 or more".into());
    }
    Ok(url)
}

/// `--duration` and `--warmup` of the soak, with its defaults.
pub fn durations(a: &BenchArgs) -> (Duration, Duration) {
    (a.duration.unwrap_or(DEFAULT_DURATION), a.warmup.unwrap_or(DEFAULT_WARMUP))
}

async fn run_inner(
    a: &BenchArgs,
    t: &Target,
    token: &Token,
    channels: &[Channel],
    pools: Arc<Pools>,
) -> Result<WorkloadResult, String> {
    let url = check_args(a)?;
    let (duration, warmup) = durations(a);
    let app = match &a.watch_app {
        Some(app) => app.clone(),
        None => t
            .config
            .catalogs
            .values()
            .max_by_key(|c| c.privileges.len())
            .map(|c| c.name.clone())
            .ok_or("the tenant has no application catalogs: nothing for the soak to flip")?,
    };
    if pools.privilege.is_empty() || pools.object.is_empty() || pools.list.is_empty() {
        return Err("the tenant needs privileges, objects and persons for the soak's checks and listings".into());
    }
    let (on, off, view_off) = flip(t, &app)?;
    let view_off = Arc::new(view_off);
    // The same questions (the draw does not depend on the answers), answered by the view with the role off.
    let t_off = Target {
        tenant: t.tenant.clone(),
        config: t.config.clone(),
        view: Arc::clone(&view_off),
        import: Import::None,
    };
    let pools_off = Pools::build(a, &t_off);
    let same = pools_off.privilege.len() == pools.privilege.len()
        && pools_off.object.len() == pools.object.len()
        && pools_off.list.len() == pools.list.len()
        && pools_off.privilege.iter().zip(&pools.privilege).all(|(x, y)| x.0 == y.0)
        && pools_off.object.iter().zip(&pools.object).all(|(x, y)| x.0 == y.0);
    if !same {
        return Err("internal: the questions drawn for the flipped state differ".into());
    }
    let persons: Vec<(String, BTreeSet<String>, BTreeSet<String>)> = t
        .config
        .persons
        .keys()
        .map(|p| (p.0.clone(), privileges(&t.view, p.as_str(), &app), privileges(&view_off, p.as_str(), &app)))
        .filter(|(_, on, off)| on != off)
        .take(a.soak_subscribers.max(1) * 4)
        .collect();
    if persons.is_empty() && a.soak_subscribers > 0 {
        return Err(format!("flipping the role changes nobody's privileges in `{app}`"));
    }
    let changed_checks = pools.privilege.iter().zip(&pools_off.privilege).filter(|(x, y)| x.1 != y.1).count()
        + pools.object.iter().zip(&pools_off.object).filter(|(x, y)| x.1 != y.1).count();

    let mut admin = super::admin(&channels[0], token);
    // The first flip, before any load: from its revision on, the state of every revision is known.
    let first = super::fanout::write(&mut admin, &t.tenant, &off).await.map_err(|e| format!("the first write: {e}"))?;
    let shared = Arc::new(Shared {
        tenant: t.tenant.clone(),
        app: app.clone(),
        on: Arc::clone(&pools),
        off: pools_off,
        persons,
        revisions: Revisions { first, last: AtomicU64::new(first) },
        counts: Counts::default(),
    });
    let c = &shared.counts;
    c.writes.fetch_add(1, Ordering::Relaxed);
    if !a.quiet {
        eprintln!(
            "bench: soak: {duration:?} ({warmup:?} warm-up), {} checks in flight, a write every {:?} (role flip in `{app}`, \
             {changed_checks} of the pooled checks change with it), {} subscribers, {} listers; sampling {} every {:?}",
            a.concurrency,
            a.write_interval,
            a.soak_subscribers,
            a.soak_listers,
            format_args!("http://{}{}", url.authority, url.path),
            a.sample_interval
        );
    }

    let started = Instant::now();
    let end = started + duration;
    let mut tasks = Vec::new();
    let mut checkers = Vec::new();
    for i in 0..a.concurrency {
        let client = DecisionServiceClient::new(channels[i % channels.len()].clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        checkers.push(tokio::spawn(checker(Arc::clone(&shared), client, i)));
    }
    for i in 0..a.soak_listers {
        let client = DecisionServiceClient::new(channels[i % channels.len()].clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        tasks.push(tokio::spawn(lister(Arc::clone(&shared), client, i)));
    }
    for i in 0..a.soak_subscribers {
        tasks.push(tokio::spawn(subscriber(Arc::clone(&shared), a.clone(), i, a.soak_changes)));
    }
    let writer = tokio::spawn(writer(Arc::clone(&shared), admin.clone(), on.clone(), off.clone(), a.write_interval));

    // Samples until the end.
    let mut points: Vec<Point> = Vec::new();
    let mut next = tokio::time::Instant::now();
    loop {
        let now = Instant::now();
        let last = now >= end;
        match scrape(&url).await {
            Ok(body) => {
                let p = Point {
                    t: started.elapsed().as_secs_f64(),
                    rss: metric(&body, "process_resident_memory_bytes").unwrap_or(f64::NAN),
                    fds: metric(&body, "process_open_fds").unwrap_or(f64::NAN),
                    tasks: metric(&body, "authzd_runtime_alive_tasks").unwrap_or(f64::NAN),
                    threads: metric(&body, "process_threads").unwrap_or(f64::NAN),
                    streams: metric(&body, "authzd_watch_open_streams").unwrap_or(f64::NAN),
                    checks: c.checks.load(Ordering::Relaxed),
                    writes: c.writes.load(Ordering::Relaxed),
                    opened: c.opened.load(Ordering::Relaxed),
                    listings: c.listings.load(Ordering::Relaxed),
                };
                if !a.quiet {
                    eprintln!("bench: soak: {}", row(&p, points.last(), p.t < warmup.as_secs_f64()));
                }
                points.push(p);
            }
            Err(e) => {
                c.samples_failed.fetch_add(1, Ordering::Relaxed);
                c.error(e);
            }
        }
        if last {
            break;
        }
        next += a.sample_interval;
        let wake = next.min(tokio::time::Instant::from_std(end));
        tokio::time::sleep_until(wake).await;
    }
    let measured = started.elapsed();
    c.stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.abort();
    }
    let mut tally = Tally::new();
    for task in checkers {
        match task.await {
            Ok(t) => tally.merge(t),
            Err(e) => c.error(format!("a check task failed: {e}")),
        }
    }
    // The writer leaves the role as it found it.
    if let Err(e) = writer.await {
        c.error(format!("the writer failed: {e}"));
    }
    tally.errors = c.errors.load(Ordering::Relaxed);
    tally.mismatches = c.mismatches.load(Ordering::Relaxed);
    tally.messages = c.messages.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut r = WorkloadResult::from_tally(super::Workload::Soak.name(), tally, measured);

    let verdict = verdict(a, &points, warmup);
    if let Some(why) = verdict.get("failed").and_then(Value::as_str) {
        r.failed = Some(why.to_owned());
    }
    let secs = measured.as_secs_f64().max(1e-9);
    r.extra = json!({
        "duration_s": measured.as_secs_f64(),
        "warmup_s": warmup.as_secs_f64(),
        "sample_interval_s": a.sample_interval.as_secs_f64(),
        "metrics_url": format!("http://{}{}", url.authority, url.path),
        "application": app,
        "load": {
            "checks": c.checks.load(Ordering::Relaxed),
            "checks_per_sec": c.checks.load(Ordering::Relaxed) as f64 / secs,
            "pooled_checks_changed_by_the_flip": changed_checks,
            "writes": c.writes.load(Ordering::Relaxed),
            "subscriptions_opened": c.opened.load(Ordering::Relaxed),
            "subscriptions_closed": c.closed.load(Ordering::Relaxed),
            "differences_verified": c.differences.load(Ordering::Relaxed),
            "listings": c.listings.load(Ordering::Relaxed),
            "objects_listed": c.listed.load(Ordering::Relaxed),
            "errors": c.errors.load(Ordering::Relaxed),
            "mismatches": c.mismatches.load(Ordering::Relaxed),
            "failed_samples": c.samples_failed.load(Ordering::Relaxed),
        },
        "samples": points.iter().map(Point::json).collect::<Vec<_>>(),
        "verdict": verdict,
    });
    Ok(r)
}

/// A line of the sample table (`prev`: the sample before, for the load between them).
fn row(p: &Point, prev: Option<&Point>, warm: bool) -> String {
    let dt = prev.map_or(p.t, |q| p.t - q.t).max(1e-9);
    let checks = p.checks - prev.map_or(0, |q| q.checks);
    format!(
        "{:>7.0} s {:>9.1} MiB {:>6} fds {:>6} tasks {:>4} threads {:>5} streams {:>9.0} checks/s {:>6} writes {:>7} subs {:>6} lists{}",
        p.t,
        p.rss / 1_048_576.0,
        p.fds,
        p.tasks,
        p.threads,
        p.streams,
        checks as f64 / dt,
        p.writes,
        p.opened,
        p.listings,
        if warm { "  (warm-up)" } else { "" }
    )
}

/// The sample table, for the text report.
pub fn table(extra: &Value) -> Vec<String> {
    let warm = extra["warmup_s"].as_f64().unwrap_or(0.0);
    let points: Vec<Point> = extra["samples"]
        .as_array()
        .map(|v| {
            v.iter()
                .map(|s| Point {
                    t: s["t_s"].as_f64().unwrap_or(0.0),
                    rss: s["rss_bytes"].as_f64().unwrap_or(f64::NAN),
                    fds: s["open_fds"].as_f64().unwrap_or(f64::NAN),
                    tasks: s["tasks"].as_f64().unwrap_or(f64::NAN),
                    threads: s["threads"].as_f64().unwrap_or(f64::NAN),
                    streams: s["watch_open_streams"].as_f64().unwrap_or(f64::NAN),
                    checks: s["checks"].as_u64().unwrap_or(0),
                    writes: s["writes"].as_u64().unwrap_or(0),
                    opened: s["subscriptions_opened"].as_u64().unwrap_or(0),
                    listings: s["listings"].as_u64().unwrap_or(0),
                })
                .collect()
        })
        .unwrap_or_default();
    points.iter().enumerate().map(|(i, p)| row(p, i.checked_sub(1).map(|j| &points[j]), p.t < warm)).collect()
}

/// Samples whose median is a start or end figure.
const WINDOW: usize = 3;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The medians of a window of samples (its time too).
fn window(w: &[&Point]) -> Point {
    let m = |f: fn(&Point) -> f64| median(w.iter().map(|p| f(p)).collect());
    Point {
        t: m(|p| p.t),
        rss: m(|p| p.rss),
        fds: m(|p| p.fds),
        tasks: m(|p| p.tasks),
        threads: m(|p| p.threads),
        streams: m(|p| p.streams),
        ..Point::default()
    }
}

/// Start against end, and whether each stayed within its tolerance: the
/// start figures are the medians of the first [`WINDOW`] samples at or after
/// the warm-up, the end figures those of the last [`WINDOW`].
fn verdict(a: &BenchArgs, points: &[Point], warmup: Duration) -> Value {
    let fd_slack = a.flat_fds.unwrap_or(a.soak_subscribers as i64 + 16);
    let task_slack = a.flat_tasks.unwrap_or((a.concurrency + a.soak_listers + 4 * a.soak_subscribers) as i64 + 32);
    let tolerance = json!({
        "rss_percent": a.flat_rss_percent,
        "rss_mib": a.flat_rss_mib,
        "open_fds": fd_slack,
        "tasks": task_slack,
    });
    let after: Vec<&Point> = points.iter().filter(|p| p.t >= warmup.as_secs_f64()).collect();
    if after.is_empty() {
        return json!({
            "tolerance": tolerance,
            "flat": false,
            "failed": "no sample after the warm-up: nothing to compare",
        });
    }
    // The median of the first and of the last samples: one sample taken at a
    // peak (a listing's pages in memory) neither makes nor hides a trend.
    let first = &after[..after.len().min(WINDOW)];
    let last = &after[after.len().saturating_sub(WINDOW)..];
    let (start, end) = (window(first), window(last));
    let rss_growth = end.rss - start.rss;
    let rss_limit = (start.rss * a.flat_rss_percent / 100.0).min(a.flat_rss_mib * 1_048_576.0);
    let figure = |s: f64, e: f64, ok: bool| json!({ "start": s, "end": e, "growth": e - s, "flat": ok });
    let rss_ok = rss_growth.is_finite() && rss_growth <= rss_limit;
    let fds_ok = (end.fds - start.fds).is_finite() && end.fds - start.fds <= fd_slack as f64;
    let tasks_ok = (end.tasks - start.tasks).is_finite() && end.tasks - start.tasks <= task_slack as f64;
    let max = |f: fn(&Point) -> f64| after.iter().map(|p| f(p)).fold(f64::NAN, f64::max);
    let mut bad = Vec::new();
    if !rss_ok {
        bad.push(format!(
            "resident memory grew {:.1} MiB ({:.1} %), more than {:.1} MiB",
            rss_growth / 1_048_576.0,
            100.0 * rss_growth / start.rss,
            rss_limit / 1_048_576.0
        ));
    }
    if !fds_ok {
        bad.push(format!("open file descriptors grew by {}, more than {fd_slack}", end.fds - start.fds));
    }
    if !tasks_ok {
        bad.push(format!("live tasks grew by {}, more than {task_slack}", end.tasks - start.tasks));
    }
    let mut v = json!({
        "tolerance": tolerance,
        "start_t_s": start.t,
        "end_t_s": end.t,
        "start_samples_t_s": first.iter().map(|p| p.t).collect::<Vec<_>>(),
        "end_samples_t_s": last.iter().map(|p| p.t).collect::<Vec<_>>(),
        "rss_bytes": figure(start.rss, end.rss, rss_ok),
        "rss_limit_bytes": rss_limit,
        "open_fds": figure(start.fds, end.fds, fds_ok),
        "tasks": figure(start.tasks, end.tasks, tasks_ok),
        "threads": { "start": start.threads, "end": end.threads },
        "max_after_warmup": { "rss_bytes": max(|p| p.rss), "open_fds": max(|p| p.fds), "tasks": max(|p| p.tasks) },
        "flat": bad.is_empty(),
    });
    if !bad.is_empty() {
        v["failed"] = json!(format!("not flat: {}", bad.join("; ")));
    }
    v
}

/// The verdict's lines, for the text report.
pub fn verdict_lines(extra: &Value) -> Vec<String> {
    let v = &extra["verdict"];
    let mut out = Vec::new();
    let l = &extra["load"];
    out.push(format!(
        "soak load: {:.0} checks/s ({} checks), {} writes, {} subscriptions opened and {} closed ({} differences verified), {} listings ({} objects), {} errors, {} mismatches",
        l["checks_per_sec"].as_f64().unwrap_or(0.0),
        l["checks"],
        l["writes"],
        l["subscriptions_opened"],
        l["subscriptions_closed"],
        l["differences_verified"],
        l["listings"],
        l["objects_listed"],
        l["errors"],
        l["mismatches"]
    ));
    let tol = &v["tolerance"];
    if v.get("rss_bytes").is_some() {
        let mib = |x: &Value| x.as_f64().unwrap_or(f64::NAN) / 1_048_576.0;
        let mark = |x: &Value| if x["flat"] == true { "flat" } else { "NOT FLAT" };
        let at = |k: &str| {
            v[k].as_array()
                .map(|t| t.iter().map(|x| format!("{:.0}", x.as_f64().unwrap_or(0.0))).collect::<Vec<_>>().join(", "))
                .unwrap_or_default()
        };
        out.push(format!(
            "soak start (median of the samples at {} s, after the warm-up) → end (median of the samples at {} s):",
            at("start_samples_t_s"),
            at("end_samples_t_s")
        ));
        let r = &v["rss_bytes"];
        out.push(format!(
            "  resident memory {:.1} MiB → {:.1} MiB ({:+.1} MiB, {:+.1} %; tolerance {} % and {} MiB): {}",
            mib(&r["start"]),
            mib(&r["end"]),
            mib(&r["growth"]),
            100.0 * r["growth"].as_f64().unwrap_or(0.0) / r["start"].as_f64().unwrap_or(1.0),
            tol["rss_percent"],
            tol["rss_mib"],
            mark(r)
        ));
        for (key, what) in [("open_fds", "open file descriptors"), ("tasks", "live tasks")] {
            let x = &v[key];
            let n = |k: &str| x[k].as_f64().unwrap_or(f64::NAN);
            out.push(format!(
                "  {what} {:.0} → {:.0} ({:+.0}; tolerance +{}): {}",
                n("start"),
                n("end"),
                n("growth"),
                tol[key],
                mark(x)
            ));
        }
    }
    out.push(match v.get("failed").and_then(Value::as_str) {
        Some(why) => format!("soak verdict: FAIL: {why}"),
        None => "soak verdict: flat".to_owned(),
    });
    out
}

/// Checks in a closed loop, privilege and object questions alternately.
async fn checker(s: Arc<Shared>, mut client: DecisionServiceClient<Channel>, task: usize) -> Tally {
    let mut tally = Tally::new();
    let c = &s.counts;
    let mut seq = task.wrapping_mul(7_919);
    while !c.stopped() {
        seq = seq.wrapping_add(1);
        let (on, off) = if seq % 2 == 0 { (&s.on.privilege, &s.off.privilege) } else { (&s.on.object, &s.off.object) };
        let i = (seq / 2) % on.len();
        let req = &on[i].0;
        let t0 = Instant::now();
        match client.check(req.clone()).await {
            Ok(r) => {
                let r = r.into_inner();
                let want: Option<Expect> =
                    s.revisions.on_at(r.revision).map(|is_on| if is_on { on[i].1 } else { off[i].1 });
                match want {
                    Some(w) if w.matches(r.allowed, r.reason) => {
                        c.checks.fetch_add(1, Ordering::Relaxed);
                        tally.calls += 1;
                        tally.decisions += 1;
                        let _ = tally.latency.record(u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1));
                    }
                    Some(w) => c.mismatch(format!(
                        "person `{}` privilege {:?} object {:?} at revision {}: got {} {}, want {} {}",
                        req.person,
                        req.privilege,
                        req.object.as_ref().map(|o| format!("{}/{}", o.r#type, o.id)),
                        r.revision,
                        r.allowed,
                        crate::service::convert::reason_code(r.reason),
                        w.allowed,
                        crate::service::convert::reason_code(w.reason)
                    )),
                    None => c.mismatch(format!("a check answered at revision {}, not written by the soak", r.revision)),
                }
            }
            Err(e) if !c.stopped() => c.error(format!("check: {}", status(&e))),
            Err(_) => {}
        }
    }
    tally
}

/// One write batch per interval: the role off, then on again, ...; at the
/// end, the role as the tenant had it.
async fn writer(s: Arc<Shared>, mut admin: super::Admin, on: Mutation, off: Mutation, every: Duration) {
    let c = &s.counts;
    // The first write (off) is done; the next puts the role back.
    let mut is_on = false;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if c.stopped() {
            if is_on {
                return;
            }
        } else {
            tick.tick().await;
            if c.stopped() && is_on {
                return;
            }
        }
        let want = s.revisions.last.load(Ordering::Acquire) + 1;
        s.revisions.last.store(want, Ordering::Release);
        let m = if is_on { &off } else { &on };
        match super::fanout::write(&mut admin, &s.tenant, m).await {
            Ok(rev) if rev == want => {
                is_on = !is_on;
                c.writes.fetch_add(1, Ordering::Relaxed);
            }
            Ok(rev) => {
                c.error(format!(
                    "a write got revision {rev}, not {want}: another writer changed the store (the soak must be the only one)"
                ));
                return;
            }
            Err(e) => {
                c.error(format!("write: {e}"));
                if c.stopped() {
                    return;
                }
            }
        }
    }
}

/// Listings of every page, in a loop.
async fn lister(s: Arc<Shared>, mut client: DecisionServiceClient<Channel>, task: usize) {
    let c = &s.counts;
    let mut seq = task.wrapping_mul(104_729);
    loop {
        seq = seq.wrapping_add(1);
        let i = seq % s.on.list.len();
        let mut req = s.on.list[i].0.clone();
        let mut h = IdHash::default();
        let mut states = BTreeSet::new();
        let mut failed = false;
        loop {
            match client.list_visible(req.clone()).await {
                Ok(r) => {
                    let r = r.into_inner();
                    states.insert(s.revisions.on_at(r.revision));
                    r.objects.iter().for_each(|o| h.add(&o.id));
                    if r.next_page_token.is_empty() {
                        break;
                    }
                    req.page_token = r.next_page_token;
                }
                Err(e) => {
                    c.error(format!("list: {}", status(&e)));
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let got = h.finish();
        let (on, off): (ListExpect, ListExpect) = (s.on.list[i].1, s.off.list[i].1);
        // Pages of different states (a flip between two pages) may match either.
        let ok = if states.contains(&None) {
            false
        } else if states.len() == 1 {
            got == if states.contains(&Some(true)) { on } else { off }
        } else {
            got == on || got == off
        };
        if ok {
            c.listings.fetch_add(1, Ordering::Relaxed);
            c.listed.fetch_add(got.count as u64, Ordering::Relaxed);
        } else {
            c.mismatch(format!(
                "listing of `{}`: {} objects, want {} (role on) or {} (off), or different ids",
                req.person, got.count, on.count, off.count
            ));
        }
    }
}

/// Connects, subscribes, reads the initial state and `changes` differences, disconnects; again.
async fn subscriber(s: Arc<Shared>, a: BenchArgs, task: usize, changes: usize) {
    let c = &s.counts;
    let mut round = 0usize;
    loop {
        round += 1;
        let (person, on, off) = &s.persons[(task + round * 7) % s.persons.len()];
        match subscription(&s, &a, person, on, off, changes).await {
            Ok(()) => {
                c.closed.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if !c.stopped() => {
                c.error(format!("subscription of `{person}`: {e}"));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(_) => return,
        }
    }
}

async fn subscription(
    s: &Shared,
    a: &BenchArgs,
    person: &str,
    on: &BTreeSet<String>,
    off: &BTreeSet<String>,
    changes: usize,
) -> Result<(), String> {
    let c = &s.counts;
    // A connection of its own, closed with the subscription.
    let channel = super::connect(&a.server, a.unix_socket.as_deref()).await.map_err(|e| e.to_string())?;
    let mut client = WatchServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let req = pb::WatchRequest {
        subscription: Some(pb::watch_request::Subscription::Privileges(pb::PrivilegesSubscription {
            tenant: s.tenant.clone(),
            person: person.to_owned(),
            application: s.app.clone(),
        })),
        at_least_revision: 0,
    };
    let mut stream = client.watch(req).await.map_err(|e| status(&e))?.into_inner();
    c.opened.fetch_add(1, Ordering::Relaxed);
    let want = |rev: u64| -> Result<&BTreeSet<String>, String> {
        match s.revisions.on_at(rev) {
            Some(true) => Ok(on),
            Some(false) => Ok(off),
            None => Err(format!("an event at revision {rev}, not written by the soak")),
        }
    };
    let mut current: Option<BTreeSet<String>> = None;
    let mut seen = 0;
    while seen < changes {
        let ev = match tokio::time::timeout(EVENT_TIMEOUT, stream.message()).await {
            Ok(Ok(Some(ev))) => ev,
            Ok(Ok(None)) => return Err("the server ended the stream".into()),
            Ok(Err(e)) => return Err(status(&e)),
            Err(_) => {
                return Err(format!("no event within {EVENT_TIMEOUT:?} (a write comes every {:?})", a.write_interval));
            }
        };
        match ev.event {
            Some(Event::Snapshot(snap)) => {
                let got: BTreeSet<String> = match snap.state {
                    Some(pb::snapshot::State::Privileges(p)) => p.privileges.into_iter().collect(),
                    _ => BTreeSet::new(),
                };
                let w = want(snap.revision)?;
                if &got != w {
                    c.mismatch(format!("state of `{person}` at revision {}: {got:?}, want {w:?}", snap.revision));
                }
                current = Some(got);
            }
            Some(Event::PrivilegesChanged(d)) => {
                let Some(cur) = current.as_mut() else {
                    return Err("a difference before the initial state".into());
                };
                for g in &d.gained {
                    cur.insert(g.clone());
                }
                for l in &d.lost {
                    cur.remove(l);
                }
                let w = want(d.revision)?;
                if cur != w {
                    c.mismatch(format!(
                        "`{person}` after the difference at revision {} (gained {:?}, lost {:?}): {cur:?}, want {w:?}",
                        d.revision, d.gained, d.lost
                    ));
                } else {
                    c.differences.fetch_add(1, Ordering::Relaxed);
                }
                seen += 1;
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> BenchArgs {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        Cli::parse_from(std::iter::once("bench").chain(extra.iter().copied())).bench
    }

    fn point(t: f64, rss_mib: f64, fds: f64, tasks: f64) -> Point {
        Point { t, rss: rss_mib * 1_048_576.0, fds, tasks, ..Point::default() }
    }

    #[test]
    fn the_verdict_compares_the_last_samples_with_the_first_after_the_warm_up() {
        let a = args(&["--concurrency", "4", "--soak-subscribers", "2", "--soak-listers", "1"]);
        let warmup = Duration::from_secs(60);
        let run = |after: &[(f64, f64, f64)]| {
            let mut v = vec![point(0.0, 10.0, 5.0, 1.0), point(30.0, 20.0, 6.0, 2.0)];
            v.extend(after.iter().enumerate().map(|(i, &(m, f, t))| point(60.0 + 10.0 * i as f64, m, f, t)));
            v
        };
        // The warm-up's growth does not count; 5 % and 5 MiB after it are flat.
        let flat = run(&[
            (100.0, 30.0, 50.0),
            (99.0, 31.0, 52.0),
            (101.0, 30.0, 51.0),
            (104.0, 45.0, 90.0),
            (105.0, 44.0, 89.0),
            (106.0, 45.0, 92.0),
        ]);
        let v = verdict(&a, &flat, warmup);
        assert_eq!(v["flat"], true, "{v:#}");
        assert_eq!(v["start_samples_t_s"], json!([60.0, 70.0, 80.0]));
        assert_eq!(v["end_samples_t_s"], json!([90.0, 100.0, 110.0]));
        assert_eq!(v["open_fds"]["start"], 30.0);
        assert_eq!(v["open_fds"]["growth"], 15.0);
        assert_eq!(v["tasks"]["growth"], 39.0);
        assert_eq!(v["rss_bytes"]["growth"], 5.0 * 1_048_576.0);
        // Default slack: fds 2 + 16, tasks 4 + 1 + 4 × 2 + 32.
        assert_eq!(v["tolerance"]["open_fds"], 18);
        assert_eq!(v["tolerance"]["tasks"], 45);
        assert!(v.get("failed").is_none());
        // One peak at the end is not a trend.
        let peak = run(&[
            (100.0, 30.0, 50.0),
            (100.0, 30.0, 50.0),
            (100.0, 30.0, 50.0),
            (100.0, 30.0, 50.0),
            (180.0, 80.0, 200.0),
        ]);
        assert_eq!(verdict(&a, &peak, warmup)["flat"], true);
        // 11 % is not flat, nor 19 more descriptors, nor 46 more tasks.
        let grown = run(&[(100.0, 30.0, 50.0); 3].into_iter().chain([(111.0, 49.0, 96.0); 3]).collect::<Vec<_>>());
        let v = verdict(&a, &grown, warmup);
        assert_eq!(v["flat"], false, "{v:#}");
        let why = v["failed"].as_str().unwrap();
        assert!(why.contains("resident memory") && why.contains("descriptors") && why.contains("tasks"), "{why}");
        // 10 % of 1 GiB is more than 32 MiB: the MiB bound holds.
        let big =
            run(&[(1024.0, 30.0, 50.0); 3].into_iter().chain([(1024.0 + 40.0, 30.0, 50.0); 3]).collect::<Vec<_>>());
        let v = verdict(&a, &big, warmup);
        assert_eq!(v["rss_bytes"]["flat"], false, "{v:#}");
        // No sample after the warm-up: no verdict, a failure.
        let v = verdict(&a, &flat[..2], warmup);
        assert!(v["failed"].as_str().unwrap().contains("no sample after the warm-up"));
    }

    #[test]
    fn revisions_alternate_from_the_first_flip() {
        let r = Revisions { first: 10, last: AtomicU64::new(12) };
        assert_eq!(r.on_at(9), Some(true));
        assert_eq!(r.on_at(10), Some(false));
        assert_eq!(r.on_at(11), Some(true));
        assert_eq!(r.on_at(12), Some(false));
        assert_eq!(r.on_at(13), None);
    }
}
