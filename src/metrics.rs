//! Operations: Prometheus metrics, liveness and readiness probes on a small
//! HTTP port, and (with the `otel` cargo feature) OpenTelemetry traces over OTLP.
//!
//! Everything here is off unless configured: `authzd serve --metrics-listen
//! 127.0.0.1:9090` starts the HTTP port, `--otlp-endpoint` the trace export.
//! Nothing on the decision path changes when they are off.
//!
//! - **Metrics** (`GET /metrics`, OpenMetrics text): decisions by result and
//!   reason ([`MeteredDecisions`] wraps the decision service and counts every
//!   answer, batch items one by one); a latency histogram per gRPC method and
//!   errors per method and code ([`RpcMetricsLayer`], a tower layer on the
//!   whole server: health, admin and watch included); and, read at scrape
//!   time, the snapshot revision, the store's head revision and the replica's
//!   lag behind it, watch subscribers, open streams, coalesced views and deliveries,
//!   store errors.
//! - **Liveness** (`GET /healthz`): the process and its runtime answer. It
//!   never looks at the store: a replica with a store outage keeps serving
//!   decisions from memory and must not be restarted for it.
//! - **Readiness** (`GET /readyz`): the snapshot is loaded, the last store
//!   probe succeeded, and the replica has applied every batch the store held
//!   one probe earlier (caught up, allowing one tailing interval); 503 with
//!   the reason otherwise, and from the moment shutdown begins.
//!
//! The store is probed by [`Metrics::probe_loop`] (its head revision, every
//! probe interval): failures count as `authzd_store_errors_total` and make
//! the replica not ready.

use crate::decision_log::{self, DecisionLog, Question, Record, Rpc};
use crate::proto::authzd::v1 as pb;
use crate::proto::authzd::v1::decision_service_server::DecisionService;
use crate::replica::Replica;
use crate::service::Decisions;
use crate::store::Store as _;
use http_body_util::Full;
use hyper::body::Bytes;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use rustc_hash::FxHashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};

/// Latency buckets of the per-RPC histograms, in seconds: 25 µs to 2.5 s.
const LATENCY_BUCKETS: [f64; 16] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// The label of every gRPC path the server does not serve: calls to made-up
/// paths share one series, so no client can grow the exposition.
const UNKNOWN_METHOD: &str = "unknown";

/// The paths the server serves: every method of the API's descriptor set,
/// health and reflection.
fn served_methods() -> Vec<String> {
    use prost::Message as _;
    let mut paths: Vec<String> = [
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ]
    .map(str::to_owned)
    .to_vec();
    if let Ok(set) = prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET) {
        for file in set.file {
            for service in &file.service {
                for method in &service.method {
                    paths.push(format!("/{}.{}/{}", file.package(), service.name(), method.name()));
                }
            }
        }
    }
    paths
}

/// Counters of the watch hub, read at scrape time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchGauges {
    /// Current subscribers.
    pub subscribers: u64,
    /// Views computed subscribers skipped because a newer one came before
    /// they looked; their changes went out in the next difference (cumulative).
    pub coalesced: u64,
    /// Differences delivered (cumulative).
    pub delivered: u64,
    /// `Watch` streams open (computed and raw).
    pub open_streams: u64,
    /// Raw streams ended with `ResumeRequired` because they fell behind (cumulative).
    pub resume_required: u64,
    /// Reloads across a compaction that ended every raw stream (cumulative).
    pub reloads: u64,
}

type WatchSource = Box<dyn Fn() -> WatchGauges + Send + Sync>;
type MethodLabels = [(&'static str, String); 1];
type ErrorLabels = [(&'static str, String); 2];

/// What the store probe last saw.
#[derive(Debug, Default)]
struct ProbeState {
    /// Probes made.
    probes: AtomicU64,
    /// The last probe succeeded.
    ok: AtomicBool,
    /// The store's head revision at the last successful probe.
    head: AtomicU64,
    /// The replica had applied the head of the probe before the last one.
    caught_up: AtomicBool,
    /// Failed probes (store errors).
    errors: AtomicU64,
    /// Shutdown has begun.
    stopping: AtomicBool,
}

/// The values read at scrape time.
struct Live {
    replica: Arc<Replica>,
    probe: Arc<ProbeState>,
    watch: Arc<RwLock<Option<WatchSource>>>,
    decision_log: Arc<RwLock<Option<Arc<decision_log::Stats>>>>,
    /// The runtime the registry was made on (the server's), for its task count.
    runtime: Option<tokio::runtime::Handle>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").finish_non_exhaustive()
    }
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    let m = e.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(m)
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    let m = e.encode_descriptor(name, help, None, c.metric_type())?;
    c.encode(m)
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Collector for Live {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.replica.snapshot();
        let revision = snapshot.revision();
        let head = self.probe.head.load(Ordering::Acquire);
        gauge(&mut e, "snapshot_revision", "Highest revision applied to this replica's snapshot.", clamp(revision))?;
        gauge(
            &mut e,
            "snapshot_loaded",
            "1 once the snapshot is loaded from the store.",
            i64::from(snapshot.is_loaded()),
        )?;
        gauge(&mut e, "snapshot_tenants", "Tenants in the snapshot.", clamp(snapshot.tenant_ids().len() as u64))?;
        gauge(
            &mut e,
            "snapshot_page_states_kept",
            "Replaced tenant states kept for the continuations of paged listings.",
            clamp(snapshot.kept_states() as u64),
        )?;
        gauge(&mut e, "store_head_revision", "The store's head revision at the last probe.", clamp(head))?;
        gauge(
            &mut e,
            "replica_lag_revisions",
            "Revisions the store holds that this replica has not applied (at the last probe).",
            clamp(head.saturating_sub(revision)),
        )?;
        if let crate::store::AnyStore::Upstream(u) = self.replica.store() {
            let lag = u.lag();
            gauge(
                &mut e,
                "follower_lag_revisions",
                "Revisions the upstream has that this follower has not received (as the upstream's checkpoints say).",
                clamp(lag.revisions),
            )?;
            gauge(
                &mut e,
                "follower_lag_ms",
                "While behind, how long ago the last batch this follower received was committed upstream (0 when caught up).",
                clamp(lag.millis),
            )?;
        }
        counter(
            &mut e,
            "store_errors",
            "Store operations of the metrics probe that failed.",
            self.probe.errors.load(Ordering::Relaxed),
        )?;
        gauge(
            &mut e,
            "ready",
            "1 when /readyz answers 200.",
            i64::from(readiness(&self.replica, &self.probe).is_ok()),
        )?;
        let watch = self.watch.read().unwrap_or_else(|p| p.into_inner());
        if let Some(source) = watch.as_ref() {
            let w = source();
            gauge(&mut e, "watch_subscribers", "Current watch subscribers.", clamp(w.subscribers))?;
            counter(
                &mut e,
                "watch_coalesced",
                "Views computed subscribers skipped for a newer one; their changes went out in the next difference.",
                w.coalesced,
            )?;
            counter(&mut e, "watch_delivered", "Differences delivered to watch subscribers.", w.delivered)?;
            gauge(&mut e, "watch_open_streams", "Watch streams open (computed and raw).", clamp(w.open_streams))?;
            counter(
                &mut e,
                "watch_resume_required",
                "Raw watch streams ended because they fell behind (the client resumes from the changelog).",
                w.resume_required,
            )?;
            counter(
                &mut e,
                "watch_reloads",
                "Reloads across a changelog compaction (every raw stream was told to resume).",
                w.reloads,
            )?;
        }
        let log = self.decision_log.read().unwrap_or_else(|p| p.into_inner());
        if let Some(stats) = log.as_ref() {
            let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
            counter(&mut e, "decision_log_lines", "Lines written to the decision log.", load(&stats.lines))?;
            counter(
                &mut e,
                "decision_log_dropped",
                "Decision log lines dropped because its buffer was full (decisions never wait for the log).",
                load(&stats.dropped),
            )?;
            counter(
                &mut e,
                "decision_log_errors",
                "Failed writes and flushes of the decision log.",
                load(&stats.errors),
            )?;
        }
        if let Some(rt) = &self.runtime {
            gauge(
                &mut e,
                "runtime_alive_tasks",
                "Tasks alive on the server's async runtime (spawned and not yet finished).",
                clamp(rt.metrics().num_alive_tasks() as u64),
            )?;
        }
        let r = self.replica.retention_stats();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut e,
            "retention_rounds",
            "Rounds of the changelog retention job run by this replica.",
            load(&r.rounds),
        )?;
        counter(&mut e, "retention_failures", "Rounds of the retention job that failed.", load(&r.failures))?;
        counter(
            &mut e,
            "retention_checkpoints",
            "Tenant checkpoints written by the retention job.",
            load(&r.checkpoints),
        )?;
        counter(
            &mut e,
            "changelog_compacted_records",
            "Changelog records deleted by the retention job.",
            load(&r.records),
        )?;
        counter(&mut e, "lock_events_pruned", "Edit-lock events deleted by the retention job.", load(&r.lock_events))?;
        gauge(
            &mut e,
            "changelog_oldest_retained_revision",
            "Oldest revision a raw subscription can resume from after the last retention round (0: none yet).",
            clamp(load(&r.oldest_retained)),
        )?;
        Ok(())
    }
}

/// The process metrics of the Prometheus conventions, read from `/proc` at
/// every scrape (Linux; elsewhere none are exported): CPU time, resident and
/// virtual memory, open and maximum file descriptors, threads, start time.
#[derive(Debug)]
struct Process;

/// Clock ticks per second of `/proc/<pid>/stat` times (`USER_HZ`, 100 on
/// every Linux architecture authzd builds for).
const USER_HZ: f64 = 100.0;

/// What `/proc` says of this process.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct ProcStat {
    cpu_seconds: f64,
    threads: i64,
    start_time_seconds: i64,
    virtual_bytes: i64,
    resident_bytes: i64,
    open_fds: i64,
    max_fds: i64,
}

impl ProcStat {
    /// Reads `/proc/self`; `None` where there is no `/proc` (not Linux).
    fn read() -> Option<ProcStat> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as i64);
        ProcStat::parse(&stat, &status, &boot, &limits, open_fds)
    }

    fn parse(stat: &str, status: &str, boot: &str, limits: &str, open_fds: i64) -> Option<ProcStat> {
        // Fields after the command name (which is in parentheses and may hold spaces).
        let rest = stat.get(stat.rfind(')')? + 1..)?;
        let f: Vec<&str> = rest.split_whitespace().collect();
        // `rest` starts at field 3 (state): field n is f[n - 3].
        let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
        let ticks = field(14)? + field(15)?;
        let btime = boot.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse::<u64>().ok())?;
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        };
        let max_fds = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0);
        Some(ProcStat {
            cpu_seconds: ticks as f64 / USER_HZ,
            threads: field(20)? as i64,
            start_time_seconds: (btime + field(22)? / USER_HZ as u64) as i64,
            virtual_bytes: kib("VmSize:").unwrap_or(0) * 1024,
            resident_bytes: kib("VmRSS:").unwrap_or(0) * 1024,
            open_fds,
            max_fds,
        })
    }
}

impl Collector for Process {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(p) = ProcStat::read() else { return Ok(()) };
        let cpu = ConstCounter::new(p.cpu_seconds);
        let m = e.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            None,
            cpu.metric_type(),
        )?;
        cpu.encode(m)?;
        gauge(&mut e, "process_resident_memory_bytes", "Resident memory size in bytes.", p.resident_bytes)?;
        gauge(&mut e, "process_virtual_memory_bytes", "Virtual memory size in bytes.", p.virtual_bytes)?;
        gauge(&mut e, "process_open_fds", "Number of open file descriptors.", p.open_fds)?;
        gauge(&mut e, "process_max_fds", "Maximum number of open file descriptors.", p.max_fds)?;
        gauge(&mut e, "process_threads", "Number of OS threads of the process.", p.threads)?;
        gauge(
            &mut e,
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds.",
            p.start_time_seconds,
        )
    }
}

/// Whether the replica is ready, or why not.
fn readiness(replica: &Replica, probe: &ProbeState) -> Result<(), &'static str> {
    if probe.stopping.load(Ordering::Acquire) {
        return Err("shutting down");
    }
    if !replica.snapshot().is_loaded() {
        return Err("snapshot not loaded");
    }
    if probe.probes.load(Ordering::Acquire) == 0 {
        return Err("store not probed yet");
    }
    if !probe.ok.load(Ordering::Acquire) {
        return Err("store unreachable at the last probe");
    }
    if !probe.caught_up.load(Ordering::Acquire) {
        return Err("replica behind the store");
    }
    Ok(())
}

/// The server's metrics registry and probe state.
pub struct Metrics {
    registry: Registry,
    replica: Arc<Replica>,
    probe: Arc<ProbeState>,
    watch: Arc<RwLock<Option<WatchSource>>>,
    decision_log: Arc<RwLock<Option<Arc<decision_log::Stats>>>>,
    /// Decision counters indexed by the proto reason value.
    decisions: Vec<Counter>,
    /// Per-method histograms by path, so the hot path does not allocate.
    /// Latency of every served method (fixed at start: the label set is bounded).
    methods: FxHashMap<String, Histogram>,
    unknown: Histogram,
    errors: Family<ErrorLabels, Counter>,
    prev_head: Mutex<u64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// Every proto reason value with its stable code, in value order.
fn reason_codes() -> Vec<(i32, &'static str)> {
    (0..64).map_while(|v| pb::Reason::try_from(v).ok().map(|_| (v, crate::service::convert::reason_code(v)))).collect()
}

impl Metrics {
    /// A registry (prefix `authzd_`) for `replica`.
    pub fn new(replica: Arc<Replica>) -> Arc<Metrics> {
        // The process metrics keep their conventional names (`process_*`);
        // everything of authzd's own is `authzd_*`.
        let mut root = Registry::default();
        root.register_collector(Box::new(Process));
        let registry = root.sub_registry_with_prefix("authzd");
        let decision_family = Family::<[(&'static str, &'static str); 2], Counter>::default();
        let decisions = reason_codes()
            .into_iter()
            .map(|(v, code)| {
                let result =
                    if matches!(pb::Reason::try_from(v), Ok(pb::Reason::Allowed | pb::Reason::OpenWhenUnconfigured)) {
                        "allowed"
                    } else {
                        "denied"
                    };
                decision_family.get_or_create_owned(&[("result", result), ("reason", code)])
            })
            .collect();
        registry.register(
            "decisions",
            "Decisions made, by result and reason (CheckBatch items one by one).",
            decision_family,
        );
        let latency = Family::<MethodLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register_with_unit(
            "grpc_request_duration",
            "Time from a gRPC request's arrival to its response headers, per method.",
            prometheus_client::registry::Unit::Seconds,
            latency.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "build",
            "The running build: its version (always 1).",
            prometheus_client::metrics::info::Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register(
            "grpc_errors",
            "gRPC calls answered with a status other than OK, per method and code.",
            errors.clone(),
        );
        let probe = Arc::new(ProbeState::default());
        let watch: Arc<RwLock<Option<WatchSource>>> = Arc::new(RwLock::new(None));
        let decision_log = Arc::new(RwLock::new(None));
        registry.register_collector(Box::new(Live {
            replica: Arc::clone(&replica),
            probe: Arc::clone(&probe),
            watch: Arc::clone(&watch),
            decision_log: Arc::clone(&decision_log),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }));
        Arc::new(Metrics {
            registry: root,
            replica,
            probe,
            watch,
            decision_log,
            decisions,
            methods: served_methods()
                .into_iter()
                .map(|m| {
                    let h = latency.get_or_create_owned(&[("method", m.clone())]);
                    (m, h)
                })
                .collect(),
            unknown: latency.get_or_create_owned(&[("method", UNKNOWN_METHOD.to_owned())]),
            errors,
            prev_head: Mutex::new(0),
        })
    }

    /// Reads the watch hub's counters at every scrape (`authzd_watch_*`).
    pub fn observe_watch(&self, f: impl Fn() -> WatchGauges + Send + Sync + 'static) {
        *self.watch.write().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(f));
    }

    /// Reads the decision log's counters at every scrape (`authzd_decision_log_*`).
    pub fn observe_decision_log(&self, stats: Arc<decision_log::Stats>) {
        *self.decision_log.write().unwrap_or_else(|p| p.into_inner()) = Some(stats);
    }

    /// Counts one decision (a proto reason value).
    pub fn decision(&self, reason: i32) {
        if let Some(c) = usize::try_from(reason).ok().and_then(|i| self.decisions.get(i)) {
            c.inc();
        }
    }

    fn method(&self, path: &str) -> Histogram {
        self.methods.get(path).unwrap_or(&self.unknown).clone()
    }

    fn error(&self, path: &str, code: i32) {
        let method = if self.methods.contains_key(path) { path } else { UNKNOWN_METHOD };
        self.errors.get_or_create(&[("method", method.to_owned()), ("code", code_name(code).to_owned())]).inc();
    }

    /// The exposition (OpenMetrics text).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        // The encoder ends every HELP text with a period: ours have one already.
        if out.contains("..\n") {
            out = out
                .lines()
                .map(|l| {
                    if l.starts_with("# HELP ") {
                        l.strip_suffix('.').filter(|t| t.ends_with('.')).unwrap_or(l)
                    } else {
                        l
                    }
                })
                .fold(String::with_capacity(out.len()), |mut acc, l| {
                    acc.push_str(l);
                    acc.push('\n');
                    acc
                });
        }
        out
    }

    /// `Ok` when ready, else why not.
    pub fn readiness(&self) -> Result<(), &'static str> {
        readiness(&self.replica, &self.probe)
    }

    /// Marks the replica as shutting down: `/readyz` answers 503 from now on.
    pub fn set_stopping(&self) {
        self.probe.stopping.store(true, Ordering::Release);
    }

    /// Probes the store once: its head revision, the replica's lag, readiness.
    pub async fn probe_once(&self) {
        let result = self.replica.store().head().await;
        let revision = self.replica.snapshot().revision();
        match result {
            Ok(head) => {
                let mut prev = self.prev_head.lock().unwrap_or_else(|p| p.into_inner());
                self.probe.caught_up.store(revision >= *prev, Ordering::Release);
                *prev = head;
                self.probe.head.store(head, Ordering::Release);
                self.probe.ok.store(true, Ordering::Release);
            }
            Err(e) => {
                self.probe.errors.fetch_add(1, Ordering::Relaxed);
                self.probe.ok.store(false, Ordering::Release);
                tracing::warn!(error = %e, "store probe failed");
            }
        }
        self.probe.probes.fetch_add(1, Ordering::AcqRel);
    }

    /// Probes the store every `interval` until `stop` turns true.
    pub async fn probe_loop(self: Arc<Self>, interval: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            self.probe_once().await;
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// A tower layer timing every gRPC call of the server.
    pub fn layer(self: &Arc<Self>) -> RpcMetricsLayer {
        RpcMetricsLayer { metrics: Some(Arc::clone(self)) }
    }
}

/// The name of a gRPC status code (`NOT_FOUND`).
fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

// ------------------------------------------------------------------ tower layer

/// Times every call (arrival to response headers) per gRPC method and counts
/// non-OK statuses sent in the headers (tonic sends errors trailers-only).
/// With no metrics it passes calls through untouched.
#[derive(Debug, Clone, Default)]
pub struct RpcMetricsLayer {
    metrics: Option<Arc<Metrics>>,
}

impl RpcMetricsLayer {
    /// A layer that records nothing.
    pub fn off() -> Self {
        RpcMetricsLayer { metrics: None }
    }
}

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcMetrics { inner, metrics: self.metrics.clone() }
    }
}

/// The service of [`RpcMetricsLayer`].
#[derive(Debug, Clone)]
pub struct RpcMetrics<S> {
    inner: S,
    metrics: Option<Arc<Metrics>>,
}

impl<S, B, RB> tower::Service<http::Request<B>> for RpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Timed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let timing = self.metrics.as_ref().map(|m| {
            let path = req.uri().path();
            (Arc::clone(m), m.method(path), path.to_owned(), Instant::now())
        });
        Timed { inner: self.inner.call(req), timing }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`RpcMetrics`].
    pub struct Timed<F> {
        #[pin]
        inner: F,
        timing: Option<(Arc<Metrics>, Histogram, String, Instant)>,
    }
}

impl<F, RB, E> Future for Timed<F>
where
    F: Future<Output = Result<http::Response<RB>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        if let Some((metrics, histogram, path, start)) = this.timing.take() {
            histogram.observe(start.elapsed().as_secs_f64());
            let code = match &out {
                Ok(resp) => resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .unwrap_or(0),
                Err(_) => 2,
            };
            if code != 0 {
                metrics.error(&path, code);
            }
        }
        Poll::Ready(out)
    }
}

// ------------------------------------------------------------------ decision counting

/// The decision service, counting every decision by result and reason, and
/// writing the decision log (when configured): the one place that sees each
/// request (its question and `x-request-id`) and its answer.
#[derive(Debug, Clone)]
pub struct MeteredDecisions {
    inner: Decisions,
    metrics: Option<Arc<Metrics>>,
    log: Option<Arc<DecisionLog>>,
}

impl MeteredDecisions {
    /// Wraps `inner`; with `None` it only delegates.
    pub fn new(inner: Decisions, metrics: Option<Arc<Metrics>>) -> Self {
        MeteredDecisions { inner, metrics, log: None }
    }

    /// Writes every decision to `log` as well (`None`: no decision log).
    pub fn with_log(mut self, log: Option<Arc<DecisionLog>>) -> Self {
        self.log = log;
        self
    }
}

/// What the decision log needs of a request before it is handed on: its key,
/// who asked, and the sampled questions with their item index.
struct Pending {
    key: decision_log::RequestKey,
    tenant: String,
    person: String,
    questions: Vec<(usize, Question)>,
}

impl Pending {
    /// Hands each sampled question's answer the filter wants to `log`.
    fn submit(
        self,
        log: &DecisionLog,
        rpc: impl Fn(usize) -> Rpc,
        answers: impl Fn(usize) -> Option<(bool, i32)>,
        revision: u64,
    ) {
        let time = std::time::SystemTime::now();
        let mut asker = None;
        for (i, question) in self.questions {
            let Some((allowed, reason)) = answers(i) else { continue };
            if !log.wants(allowed) {
                continue;
            }
            let asker = asker.get_or_insert_with(|| log.asker(&self.key, &self.tenant, &self.person)).clone();
            log.submit(Record { time, asker, rpc: rpc(i), question, allowed, reason, revision });
        }
    }
}

/// The pending log entry of a single-question request, when it is sampled.
fn pending_one<T>(
    log: Option<&Arc<DecisionLog>>,
    request: &Request<T>,
    ask: impl FnOnce(&T) -> (&str, &str, Question),
) -> Option<Pending> {
    let log = log?;
    let key = log.key(request.metadata());
    if !log.sampled(&key, 0) {
        return None;
    }
    let (tenant, person, question) = ask(request.get_ref());
    Some(Pending { key, tenant: tenant.to_owned(), person: person.to_owned(), questions: vec![(0, question)] })
}

#[tonic::async_trait]
impl DecisionService for MeteredDecisions {
    async fn check(&self, request: Request<pb::CheckRequest>) -> Result<Response<pb::CheckResponse>, Status> {
        let pending =
            pending_one(self.log.as_ref(), &request, |r| (r.tenant.as_str(), r.person.as_str(), Question::of_check(r)));
        let r = self.inner.check(request).await?;
        let answer = r.get_ref();
        if let Some(m) = &self.metrics {
            m.decision(answer.reason);
        }
        if let (Some(log), Some(p)) = (&self.log, pending) {
            p.submit(log, |_| Rpc::Check, |_| Some((answer.allowed, answer.reason)), answer.revision);
        }
        Ok(r)
    }

    async fn check_batch(
        &self,
        request: Request<pb::CheckBatchRequest>,
    ) -> Result<Response<pb::CheckBatchResponse>, Status> {
        let pending = self.log.as_ref().and_then(|log| {
            let key = log.key(request.metadata());
            let req = request.get_ref();
            let questions: Vec<(usize, Question)> = req
                .items
                .iter()
                .enumerate()
                .filter(|(i, _)| log.sampled(&key, *i))
                .map(|(i, item)| (i, Question::of_item(item)))
                .collect();
            (!questions.is_empty()).then(|| Pending {
                key,
                tenant: req.tenant.clone(),
                person: req.person.clone(),
                questions,
            })
        });
        let r = self.inner.check_batch(request).await?;
        let answer = r.get_ref();
        if let Some(m) = &self.metrics {
            for item in &answer.results {
                m.decision(item.reason);
            }
        }
        if let (Some(log), Some(p)) = (&self.log, pending) {
            p.submit(log, Rpc::CheckBatch, |i| answer.results.get(i).map(|a| (a.allowed, a.reason)), answer.revision);
        }
        Ok(r)
    }

    async fn list_visible(
        &self,
        request: Request<pb::ListVisibleRequest>,
    ) -> Result<Response<pb::ListVisibleResponse>, Status> {
        self.inner.list_visible(request).await
    }

    async fn effective_privileges(
        &self,
        request: Request<pb::EffectivePrivilegesRequest>,
    ) -> Result<Response<pb::EffectivePrivilegesResponse>, Status> {
        self.inner.effective_privileges(request).await
    }

    async fn explain(&self, request: Request<pb::ExplainRequest>) -> Result<Response<pb::ExplainResponse>, Status> {
        let pending = pending_one(self.log.as_ref(), &request, |r| {
            (r.tenant.as_str(), r.person.as_str(), Question::of_explain(r))
        });
        let r = self.inner.explain(request).await?;
        let answer = r.get_ref();
        if let Some(m) = &self.metrics {
            m.decision(answer.reason);
        }
        if let (Some(log), Some(p)) = (&self.log, pending) {
            p.submit(log, |_| Rpc::Explain, |_| Some((answer.allowed, answer.reason)), answer.revision);
        }
        Ok(r)
    }
}

// ------------------------------------------------------------------ HTTP port

fn text(status: u16, body: impl Into<Bytes>, content_type: &'static str) -> http::Response<Full<Bytes>> {
    let mut r = http::Response::new(Full::new(body.into()));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    r
}

/// The OpenMetrics exposition in the classic Prometheus text format 0.0.4:
/// no `# UNIT` or `# EOF` lines, and a counter's `# HELP` and `# TYPE` name
/// its `_total` samples (as classic parsers expect), the rest unchanged.
pub fn classic_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut pending: Vec<&str> = Vec::new();
    // A family's HELP and TYPE lines, named as its samples are: counters by
    // their `_total` samples, infos (a gauge of 1 here) by their `_info` one.
    let flush = |pending: &mut Vec<&str>, out: &mut String| {
        let kind = pending.iter().find_map(|l| l.strip_prefix("# TYPE ")).and_then(|l| l.rsplit(' ').next());
        let suffix = match kind {
            Some("counter") => "_total",
            Some("info") => "_info",
            _ => "",
        };
        for l in pending.drain(..) {
            let mut parts = l.splitn(4, ' ');
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some("#"), Some("TYPE"), Some(name), Some(t)) => {
                    let t = if t == "info" { "gauge" } else { t };
                    out.push_str(&format!("# TYPE {name}{suffix} {t}"));
                }
                (Some("#"), Some("HELP"), Some(name), rest) => {
                    out.push_str(&format!("# HELP {name}{suffix}"));
                    if let Some(r) = rest {
                        out.push(' ');
                        out.push_str(r);
                    }
                }
                _ => out.push_str(l),
            }
            out.push('\n');
        }
    };
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if line.starts_with("# HELP ") {
            // A new family (the one before may have had no sample).
            flush(&mut pending, &mut out);
        }
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            pending.push(line);
            continue;
        }
        flush(&mut pending, &mut out);
        out.push_str(line);
        out.push('\n');
    }
    flush(&mut pending, &mut out);
    out
}

/// Answers one request of the metrics port; `/metrics` in OpenMetrics when
/// the `accept` header asks for it (as Prometheus does), else in the classic
/// text format 0.0.4.
pub fn respond(
    metrics: &Metrics,
    method: &http::Method,
    path: &str,
    accept: Option<&str>,
) -> http::Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if method != http::Method::GET && method != http::Method::HEAD {
        return text(405, "only GET\n", PLAIN);
    }
    match path {
        "/metrics" if accept.is_some_and(|a| a.contains("application/openmetrics-text")) => {
            text(200, metrics.encode(), "application/openmetrics-text; version=1.0.0; charset=utf-8")
        }
        "/metrics" => text(200, classic_text(&metrics.encode()), "text/plain; version=0.0.4; charset=utf-8"),
        "/healthz" | "/livez" => text(200, "ok\n", PLAIN),
        "/readyz" => match metrics.readiness() {
            Ok(()) => text(200, "ready\n", PLAIN),
            Err(why) => text(503, format!("not ready: {why}\n"), PLAIN),
        },
        _ => text(404, "not found: try /metrics, /healthz or /readyz\n", PLAIN),
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` (HTTP/1.1)
/// until `shutdown` completes.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics port: cannot accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let accept = req.headers().get(http::header::ACCEPT).and_then(|v| v.to_str().ok());
                let resp = respond(&metrics, req.method(), req.uri().path(), accept);
                async move { Ok::<_, std::convert::Infallible>(resp) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
            if let Err(e) = tokio::time::timeout(Duration::from_secs(30), conn).await.unwrap_or(Ok(())) {
                tracing::debug!(error = %e, "metrics port: connection error");
            }
        });
    }
}

/// Binds the metrics port.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

// ------------------------------------------------------------------ traces

/// OpenTelemetry trace export over OTLP/gRPC (cargo feature `otel`).
#[cfg(feature = "otel")]
pub mod otel {
    use opentelemetry::propagation::{Extractor, TextMapPropagator as _};
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig as _;
    use opentelemetry_sdk::propagation::TraceContextPropagator;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    /// The tracer provider; call [`Tracing::shutdown`] before exit to flush.
    #[derive(Debug)]
    pub struct Tracing {
        provider: SdkTracerProvider,
    }

    impl Tracing {
        /// Flushes and stops the exporter.
        pub fn shutdown(self) {
            if let Err(e) = self.provider.shutdown() {
                eprintln!("warning: cannot flush traces: {e}");
            }
        }
    }

    /// A tracing layer exporting spans to the OTLP collector at `endpoint`
    /// (`http://collector:4317`), batched. Service name: `OTEL_SERVICE_NAME`,
    /// default `authzd`; sampling: `OTEL_TRACES_SAMPLER` as the SDK reads it.
    pub fn layer<S>(endpoint: &str) -> anyhow::Result<(impl tracing_subscriber::Layer<S>, Tracing)>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint).build()?;
        let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "authzd".to_owned());
        let resource = opentelemetry_sdk::Resource::builder().with_service_name(service).build();
        let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
        let tracer = provider.tracer("authzd");
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        Ok((tracing_opentelemetry::layer().with_tracer(tracer), Tracing { provider }))
    }

    struct Headers<'a>(&'a http::HeaderMap);

    impl Extractor for Headers<'_> {
        fn get(&self, key: &str) -> Option<&str> {
            self.0.get(key).and_then(|v| v.to_str().ok())
        }
        fn keys(&self) -> Vec<&str> {
            self.0.keys().map(http::HeaderName::as_str).collect()
        }
    }

    /// The span of one gRPC call, a child of the caller's W3C `traceparent`.
    pub fn request_span(req: &http::Request<()>) -> tracing::Span {
        let span = tracing::info_span!(
            "grpc",
            otel.name = %req.uri().path(),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.method = %req.uri().path(),
        );
        let parent = TraceContextPropagator::new().extract(&Headers(req.headers()));
        let _ = span.set_parent(parent);
        span
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_a_counter_in_value_order() {
        let codes = reason_codes();
        assert!(codes.len() >= 19);
        for (i, (v, _)) in codes.iter().enumerate() {
            assert_eq!(*v as usize, i);
        }
        assert_eq!(codes[pb::Reason::ExplicitDeny as usize].1, "EXPLICIT_DENY");
    }

    #[test]
    fn proc_stat_is_parsed() {
        let stat = "4242 (authzd (x) y) S 1 4242 4242 0 -1 4194560 123 0 0 0 250 50 0 0 20 0 7 0 500 104857600 2560 18446744073709551615";
        let status = "Name:\tauthzd\nVmSize:\t  102400 kB\nVmRSS:\t   10240 kB\nThreads:\t7\n";
        let boot = "cpu  1 2 3\nbtime 1764600000\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        let p = ProcStat::parse(stat, status, boot, limits, 12).unwrap();
        assert_eq!(p.cpu_seconds, 3.0);
        assert_eq!(p.threads, 7);
        assert_eq!(p.start_time_seconds, 1_764_600_005);
        assert_eq!(p.virtual_bytes, 102_400 * 1024);
        assert_eq!(p.resident_bytes, 10_240 * 1024);
        assert_eq!((p.open_fds, p.max_fds), (12, 1024));
        assert!(ProcStat::parse("garbage", status, boot, limits, 1).is_none());
        assert!(ProcStat::read().is_some_and(|p| p.resident_bytes > 0), "this process's /proc is read");
    }

    #[test]
    fn code_names() {
        assert_eq!(code_name(5), "NOT_FOUND");
        assert_eq!(code_name(99), "UNKNOWN");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod classic_tests {
    #[test]
    fn families_without_samples_keep_their_own_names() {
        let open = "# HELP a_errors Errors.\n# TYPE a_errors counter\n# HELP a_up Up.\n# TYPE a_up gauge\na_up 1\n\
                    # HELP a_b Build.\n# TYPE a_b info\na_b_info{v=\"1\"} 1\n# HELP a_t T.\n# TYPE a_t counter\n# UNIT a_t seconds\na_t_total 3\n# EOF\n";
        let classic = super::classic_text(open);
        assert_eq!(
            classic,
            "# HELP a_errors_total Errors.\n# TYPE a_errors_total counter\n# HELP a_up Up.\n# TYPE a_up gauge\na_up 1\n\
             # HELP a_b_info Build.\n# TYPE a_b_info gauge\na_b_info{v=\"1\"} 1\n# HELP a_t_total T.\n# TYPE a_t_total counter\na_t_total 3\n"
        );
    }
}
