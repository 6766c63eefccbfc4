//! The decision log: one JSON line per decision of `Check`, `CheckBatch`
//! (one line per item) and `Explain`, for operators and auditors. Off unless
//! `authzd serve --decision-log <PATH|->` is given.
//!
//! The decision path never waits for it and never fails because of it: it
//! decides whether the decision is sampled (a hash of the request id, so
//! every replica samples the same requests) and wanted (the filter), then
//! hands a small owned [`Record`] to a bounded channel with `try_send`. When
//! the buffer is full the line is dropped and counted
//! (`authzd_decision_log_dropped_total`). A dedicated thread formats the
//! lines and writes them through a `BufWriter`, flushing at least every
//! [`FLUSH_EVERY`] while lines arrive, whenever it is idle, and when the log
//! is closed (the server's graceful stop, [`DecisionLog::close`]). A write
//! error is logged once (tracing `warn`) and counted; the writer goes on
//! trying with the next lines.
//!
//! A line holds the time, the request id (the client's `x-request-id`, or a
//! generated one), the RPC (and the batch item), the question as asked
//! (tenant, person and only the parts given), and the answer (allowed, its
//! reason code, the revision). Never tokens or any other metadata.

use crate::proto::authzd::v1 as pb;
use std::hash::{BuildHasher, Hash as _, Hasher as _};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Default buffer of `--decision-log-buffer`, in lines.
pub const DEFAULT_BUFFER: usize = 65_536;
/// Longest a written line waits in the writer's buffer while lines keep coming.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// How long the writer lets lines gather after waking for one (the buffer
/// holds far more than a round's lines: 65,536 against ~100 at 50,000/s).
const GATHER: Duration = Duration::from_millis(2);
/// Longest client `x-request-id` kept (longer ones are cut).
pub const MAX_REQUEST_ID: usize = 128;
/// The metadata key of the client's request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Which decisions are written (`--decision-log-filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Filter {
    /// Every decision.
    #[default]
    All,
    /// Only denials.
    Denied,
    /// Only allowed decisions.
    Allowed,
}

/// Where the lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Standard output (`-`).
    Stdout,
    /// A file, created if absent and appended to.
    File(PathBuf),
}

/// The decision log's settings, validated (see `crate::config`).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Where the lines go.
    pub target: Target,
    /// Fraction of decisions written, 0 to 1.
    pub sample: f64,
    /// Which decisions are written.
    pub filter: Filter,
    /// Lines the buffer between the decisions and the writer holds (at least 1).
    pub buffer: usize,
}

impl Settings {
    /// Every decision to `target`, with the default buffer.
    pub fn new(target: Target) -> Self {
        Settings { target, sample: 1.0, filter: Filter::All, buffer: DEFAULT_BUFFER }
    }
}

/// The log's counters (`authzd_decision_log_*_total`).
#[derive(Debug, Default)]
pub struct Stats {
    /// Lines handed to the file (its buffer).
    pub lines: AtomicU64,
    /// Lines dropped because the buffer was full (or the log closed).
    pub dropped: AtomicU64,
    /// Failed writes and flushes.
    pub errors: AtomicU64,
}

/// The RPC a decision answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rpc {
    /// `Check`.
    Check,
    /// `CheckBatch`, with the item's index.
    CheckBatch(usize),
    /// `Explain`.
    Explain,
}

/// The object of a question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// Its type.
    pub kind: String,
    /// Its id.
    pub id: String,
    /// Its tenant, when the request named one (cross-tenant questions).
    pub tenant: Option<String>,
}

/// The question as asked: only the parts given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Question {
    /// The application.
    pub application: Option<String>,
    /// The permission (proto value; 0 = not given).
    pub permission: i32,
    /// The object.
    pub object: Option<Object>,
    /// The privilege.
    pub privilege: Option<String>,
    /// The property.
    pub property: Option<String>,
}

fn object(o: Option<&pb::ObjectRef>) -> Option<Object> {
    o.map(|o| Object { kind: o.r#type.clone(), id: o.id.clone(), tenant: o.tenant.clone() })
}

impl Question {
    /// The question of a `Check`.
    pub fn of_check(r: &pb::CheckRequest) -> Self {
        Question {
            application: r.application.clone(),
            permission: r.permission,
            object: object(r.object.as_ref()),
            privilege: r.privilege.clone(),
            property: r.property.clone(),
        }
    }

    /// The question of one `CheckBatch` item.
    pub fn of_item(r: &pb::CheckBatchItem) -> Self {
        Question {
            application: r.application.clone(),
            permission: r.permission,
            object: object(r.object.as_ref()),
            privilege: r.privilege.clone(),
            property: r.property.clone(),
        }
    }

    /// The question of an `Explain`.
    pub fn of_explain(r: &pb::ExplainRequest) -> Self {
        Question {
            application: r.application.clone(),
            permission: r.permission,
            object: object(r.object.as_ref()),
            privilege: r.privilege.clone(),
            property: r.property.clone(),
        }
    }
}

/// Who asked: the request id, tenant and person, shared by a batch's lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asker {
    /// The request id.
    pub request_id: Arc<str>,
    /// The tenant.
    pub tenant: Arc<str>,
    /// The person.
    pub person: Arc<str>,
}

/// One decision, owned, as the decision path hands it to the writer.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// When it was answered.
    pub time: SystemTime,
    /// Who asked.
    pub asker: Asker,
    /// The RPC (and batch item).
    pub rpc: Rpc,
    /// The question.
    pub question: Question,
    /// The answer.
    pub allowed: bool,
    /// The answer's reason (proto value).
    pub reason: i32,
    /// The revision it was made at.
    pub revision: u64,
}

#[derive(serde::Serialize)]
struct ObjectLine<'a> {
    r#type: &'a str,
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct Line<'a> {
    time: &'a str,
    request_id: &'a str,
    rpc: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    item: Option<usize>,
    tenant: &'a str,
    person: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    application: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    permission: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    object: Option<ObjectLine<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    privilege: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    property: Option<&'a str>,
    allowed: bool,
    reason: &'static str,
    revision: u64,
}

impl Record {
    /// The JSON line (without its newline) appended to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        let time = rfc3339(self.time);
        let q = &self.question;
        let (rpc, item) = match self.rpc {
            Rpc::Check => ("Check", None),
            Rpc::CheckBatch(i) => ("CheckBatch", Some(i)),
            Rpc::Explain => ("Explain", None),
        };
        let line = Line {
            time: &time,
            request_id: &self.asker.request_id,
            rpc,
            item,
            tenant: &self.asker.tenant,
            person: &self.asker.person,
            application: q.application.as_deref(),
            permission: pb::Permission::try_from(q.permission)
                .ok()
                .filter(|p| *p != pb::Permission::Unspecified)
                .map(|p| p.as_str_name()),
            object: q.object.as_ref().map(|o| ObjectLine { r#type: &o.kind, id: &o.id, tenant: o.tenant.as_deref() }),
            privilege: q.privilege.as_deref(),
            property: q.property.as_deref(),
            allowed: self.allowed,
            reason: crate::service::convert::reason_code(self.reason),
            revision: self.revision,
        };
        serde_json::to_writer(out, &line)
    }
}

/// `time` in RFC 3339, UTC, to the microsecond: `2026-12-01T23:12:11.123456Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rest / 3_600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_micros()
    )
}

/// A request's id and the hash sampling is decided by.
#[derive(Debug, Clone)]
pub struct RequestKey {
    id: KeyId,
    hash: u64,
}

#[derive(Debug, Clone)]
enum KeyId {
    Given(String),
    Generated(u64),
}

enum Msg {
    Line(Box<Record>),
    Stop,
}

/// The decision log: the decision path's end of the bounded channel, and
/// the writer thread.
pub struct DecisionLog {
    tx: SyncSender<Msg>,
    /// Decisions whose sampling hash is below this are written; `None`: all.
    threshold: Option<u64>,
    filter: Filter,
    stats: Arc<Stats>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The generated request ids: this process's random prefix, a counter.
    seed: u64,
    next_id: AtomicU64,
}

impl std::fmt::Debug for DecisionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionLog").field("filter", &self.filter).finish_non_exhaustive()
    }
}

/// A 64-bit finalizer (SplitMix64): spreads a hash over the whole range.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl DecisionLog {
    /// Opens the log's target (a file is created if absent and appended to)
    /// and starts its writer thread.
    pub fn open(settings: &Settings) -> std::io::Result<Arc<DecisionLog>> {
        let out: Box<dyn Write + Send> = match &settings.target {
            Target::Stdout => Box::new(std::io::stdout()),
            Target::File(path) => Box::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?),
        };
        Self::with_writer(settings, out)
    }

    /// The log writing to `out` (tests give their own writer).
    pub fn with_writer(settings: &Settings, out: Box<dyn Write + Send>) -> std::io::Result<Arc<DecisionLog>> {
        let (tx, rx) = std::sync::mpsc::sync_channel(settings.buffer.max(1));
        let stats = Arc::new(Stats::default());
        let writer = {
            let stats = Arc::clone(&stats);
            std::thread::Builder::new().name("decision-log".into()).spawn(move || write_loop(&rx, out, &stats))?
        };
        let sample = settings.sample.clamp(0.0, 1.0);
        let threshold = (sample < 1.0).then_some((sample * u64::MAX as f64) as u64);
        let seed = std::hash::RandomState::new().hash_one(SystemTime::now());
        Ok(Arc::new(DecisionLog {
            tx,
            threshold,
            filter: settings.filter,
            stats,
            writer: Mutex::new(Some(writer)),
            seed,
            next_id: AtomicU64::new(0),
        }))
    }

    /// The log's counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// The request's key: the client's `x-request-id` (cut to
    /// [`MAX_REQUEST_ID`] bytes) when it sent a printable one, else a
    /// generated one. Formats nothing for generated ids.
    pub fn key(&self, metadata: &tonic::metadata::MetadataMap) -> RequestKey {
        let given = metadata.get(REQUEST_ID_HEADER).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty());
        match given {
            Some(id) => {
                // Printable ASCII: cutting at any byte keeps it valid UTF-8.
                let id = &id[..id.len().min(MAX_REQUEST_ID)];
                let mut h = rustc_hash::FxHasher::default();
                id.hash(&mut h);
                RequestKey { id: KeyId::Given(id.to_owned()), hash: h.finish() }
            }
            None => {
                let n = self.next_id.fetch_add(1, Ordering::Relaxed);
                RequestKey { id: KeyId::Generated(n), hash: self.seed ^ n }
            }
        }
    }

    /// Whether item `item` (0 for `Check` and `Explain`) of the request is
    /// sampled: the same for a request id every time (and on every replica).
    pub fn sampled(&self, key: &RequestKey, item: usize) -> bool {
        match self.threshold {
            None => true,
            Some(t) => mix(key.hash.wrapping_add((item as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))) < t,
        }
    }

    /// Whether the filter keeps a decision with this answer.
    pub fn wants(&self, allowed: bool) -> bool {
        match self.filter {
            Filter::All => true,
            Filter::Denied => !allowed,
            Filter::Allowed => allowed,
        }
    }

    /// Who asked, for the records of one request.
    pub fn asker(&self, key: &RequestKey, tenant: &str, person: &str) -> Asker {
        let request_id: Arc<str> = match &key.id {
            KeyId::Given(id) => Arc::from(id.as_str()),
            KeyId::Generated(n) => Arc::from(format!("{:016x}{n:016x}", self.seed).as_str()),
        };
        Asker { request_id, tenant: Arc::from(tenant), person: Arc::from(person) }
    }

    /// Hands `record` to the writer; when the buffer is full (or the log
    /// closed) drops it and counts it. Never blocks.
    pub fn submit(&self, record: Record) {
        match self.tx.try_send(Msg::Line(Box::new(record))) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Writes every line handed so far, flushes, and stops the writer
    /// (waiting for it). Lines submitted afterwards are dropped. Blocks:
    /// call it off the async runtime's threads (`spawn_blocking`).
    pub fn close(&self) {
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(writer) = writer {
            // Waits for room when the buffer is full: the writer is draining it.
            let _ = self.tx.send(Msg::Stop);
            let _ = writer.join();
        }
    }
}

/// The writer thread: formats and writes lines until stopped or every
/// sender is gone, flushing while lines come at least every [`FLUSH_EVERY`],
/// when idle, and at the end.
fn write_loop(rx: &Receiver<Msg>, out: Box<dyn Write + Send>, stats: &Stats) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let warned = AtomicBool::new(false);
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        stats.errors.fetch_add(1, Ordering::Relaxed);
        if !warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %e, "decision log: cannot {what}; counting failures in authzd_decision_log_errors_total and trying on (logged once)");
        }
    };
    let mut line = Vec::with_capacity(512);
    let mut dirty = false;
    let mut last_flush = Instant::now();
    // Writes one line; whether the log is to stop.
    let mut handle = |out: &mut std::io::BufWriter<Box<dyn Write + Send>>, msg: Msg, dirty: &mut bool| match msg {
        Msg::Line(record) => {
            line.clear();
            match record.write_json(&mut line) {
                Ok(()) => {
                    line.push(b'\n');
                    match out.write_all(&line) {
                        Ok(()) => {
                            stats.lines.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => failed("write", &e),
                    }
                    *dirty = true;
                }
                Err(e) => failed("format a line", &e),
            }
            false
        }
        Msg::Stop => true,
    };
    loop {
        let first = if dirty {
            rx.recv_timeout(FLUSH_EVERY.saturating_sub(last_flush.elapsed()))
        } else {
            rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
        };
        let idle = matches!(first, Err(RecvTimeoutError::Timeout));
        let mut stop = match first {
            Ok(msg) => handle(&mut out, msg, &mut dirty),
            Err(RecvTimeoutError::Disconnected) => true,
            Err(RecvTimeoutError::Timeout) => false,
        };
        if !stop && !idle {
            // Let the lines of the next moment gather, then take them all:
            // under load the writer wakes once per round, not once per line
            // (each wake-up is a context switch the deciding threads pay for
            // on a one- or two-core sidecar).
            // A sender gone meanwhile is seen by the next `recv`, at once.
            std::thread::sleep(GATHER);
            for msg in rx.try_iter() {
                if handle(&mut out, msg, &mut dirty) {
                    stop = true;
                    break;
                }
            }
        }
        if dirty && (stop || last_flush.elapsed() >= FLUSH_EVERY || idle) {
            if let Err(e) = out.flush() {
                failed("flush", &e);
            }
            dirty = false;
            last_flush = Instant::now();
        }
        if stop {
            return;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// A writer tests can read back (and make fail).
    #[derive(Clone, Default)]
    struct Shared {
        bytes: Arc<Mutex<Vec<u8>>>,
        fail: Arc<AtomicBool>,
        /// While locked, writes wait (a slow disk).
        hold: Arc<Mutex<()>>,
        /// Writes begun.
        attempts: Arc<AtomicU64>,
    }

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            let _held = self.hold.lock().unwrap();
            if self.fail.load(Ordering::SeqCst) {
                return Err(std::io::Error::other("disk full"));
            }
            self.bytes.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn lines(&self) -> Vec<serde_json::Value> {
            let bytes = self.bytes.lock().unwrap();
            std::str::from_utf8(&bytes).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
        }
    }

    fn settings() -> Settings {
        Settings::new(Target::Stdout)
    }

    fn record(log: &DecisionLog, key: &RequestKey, rpc: Rpc, allowed: bool) -> Record {
        Record {
            time: SystemTime::UNIX_EPOCH + Duration::from_micros(1_764_630_731_123_456),
            asker: log.asker(key, "acme", "alice"),
            rpc,
            question: Question {
                application: Some("Desk".into()),
                permission: pb::Permission::Read as i32,
                object: Some(Object { kind: "Folder".into(), id: "sales".into(), tenant: None }),
                privilege: None,
                property: Some("Name \"quoted\"".into()),
            },
            allowed,
            reason: if allowed { pb::Reason::Allowed as i32 } else { pb::Reason::ExplicitDeny as i32 },
            revision: 42,
        }
    }

    fn metadata(id: &str) -> tonic::metadata::MetadataMap {
        let mut m = tonic::metadata::MetadataMap::new();
        m.insert(REQUEST_ID_HEADER, id.parse().unwrap());
        m.insert("authorization", "Bearer s3cret".parse().unwrap());
        m
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_micros(1_764_630_731_123_456);
        assert_eq!(rfc3339(t), "2025-12-01T23:12:11.123456Z");
        // A leap day and the end of a year.
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00.000000Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(1_735_689_599)), "2024-12-31T23:59:59.000000Z");
    }

    #[test]
    fn a_line_has_the_documented_shape_and_no_secret() {
        let out = Shared::default();
        let log = DecisionLog::with_writer(&settings(), Box::new(out.clone())).unwrap();
        let key = log.key(&metadata("req-1"));
        log.submit(record(&log, &key, Rpc::CheckBatch(3), false));
        let mut q = record(&log, &key, Rpc::Check, true);
        q.question = Question::default();
        log.submit(q);
        log.close();
        let lines = out.lines();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            serde_json::json!({
                "time": "2025-12-01T23:12:11.123456Z",
                "request_id": "req-1",
                "rpc": "CheckBatch",
                "item": 3,
                "tenant": "acme",
                "person": "alice",
                "application": "Desk",
                "permission": "PERMISSION_READ",
                "object": {"type": "Folder", "id": "sales"},
                "property": "Name \"quoted\"",
                "allowed": false,
                "reason": "EXPLICIT_DENY",
                "revision": 42,
            })
        );
        // Only the parts given; no item outside a batch.
        let keys: Vec<&str> = lines[1].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 8, "{keys:?}");
        for k in ["time", "request_id", "rpc", "tenant", "person", "allowed", "reason", "revision"] {
            assert!(keys.contains(&k), "{k} in {keys:?}");
        }
        assert_eq!(lines[1]["rpc"], "Check");
        assert_eq!(lines[1]["reason"], "ALLOWED");
        let text = String::from_utf8(out.bytes.lock().unwrap().clone()).unwrap();
        assert!(!text.contains("s3cret") && !text.contains("Bearer"));
        assert_eq!(log.stats().lines.load(Ordering::Relaxed), 2);
        assert_eq!(log.stats().dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn request_ids_are_the_clients_or_unique() {
        let log = DecisionLog::with_writer(&settings(), Box::new(std::io::sink())).unwrap();
        let given = log.asker(&log.key(&metadata("abc")), "t", "p");
        assert_eq!(&*given.request_id, "abc");
        let long = "x".repeat(500);
        assert_eq!(log.asker(&log.key(&metadata(&long)), "t", "p").request_id.len(), MAX_REQUEST_ID);
        let none = tonic::metadata::MetadataMap::new();
        let a = log.asker(&log.key(&none), "t", "p").request_id;
        let b = log.asker(&log.key(&none), "t", "p").request_id;
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn sampling_is_deterministic_per_request_id_and_near_the_fraction() {
        let mut s = settings();
        s.sample = 0.25;
        let log = DecisionLog::with_writer(&s, Box::new(std::io::sink())).unwrap();
        let other = DecisionLog::with_writer(&s, Box::new(std::io::sink())).unwrap();
        let mut kept = 0;
        for i in 0..20_000 {
            let m = metadata(&format!("req-{i}"));
            let (a, b) = (log.key(&m), other.key(&m));
            assert_eq!(log.sampled(&a, 0), other.sampled(&b, 0), "the same on every replica");
            assert_eq!(log.sampled(&a, 0), log.sampled(&a, 0));
            kept += usize::from(log.sampled(&a, 0));
        }
        assert!((4_400..5_600).contains(&kept), "{kept} of 20000 at 0.25");
        // Generated ids are sampled too.
        let none = tonic::metadata::MetadataMap::new();
        let kept = (0..20_000).filter(|_| log.sampled(&log.key(&none), 0)).count();
        assert!((4_400..5_600).contains(&kept), "{kept} of 20000 at 0.25 (generated ids)");
        // Batch items are sampled one by one.
        let key = log.key(&metadata("batch"));
        let items = (0..1_000).filter(|i| log.sampled(&key, *i)).count();
        assert!((150..350).contains(&items), "{items} of 1000 items");

        for (sample, expect) in [(0.0, false), (1.0, true)] {
            s.sample = sample;
            let log = DecisionLog::with_writer(&s, Box::new(std::io::sink())).unwrap();
            for i in 0..1_000 {
                assert_eq!(log.sampled(&log.key(&metadata(&format!("r{i}"))), i), expect, "sample {sample}");
            }
        }
    }

    #[test]
    fn the_filter_keeps_what_it_names() {
        for (filter, allowed, denied) in
            [(Filter::All, true, true), (Filter::Denied, false, true), (Filter::Allowed, true, false)]
        {
            let mut s = settings();
            s.filter = filter;
            let log = DecisionLog::with_writer(&s, Box::new(std::io::sink())).unwrap();
            assert_eq!((log.wants(true), log.wants(false)), (allowed, denied), "{filter:?}");
        }
    }

    #[test]
    fn a_full_buffer_drops_and_counts_without_blocking() {
        let out = Shared::default();
        let mut s = settings();
        s.buffer = 2;
        let log = DecisionLog::with_writer(&s, Box::new(out.clone())).unwrap();
        let key = log.key(&metadata("r"));
        // Hold the writer in its first write (a slow disk), then fill the buffer.
        let held = out.hold.lock().unwrap();
        log.submit(record(&log, &key, Rpc::Check, true));
        let deadline = Instant::now() + Duration::from_secs(5);
        while out.attempts.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "the writer flushes when idle");
            std::thread::sleep(Duration::from_millis(5));
        }
        let started = Instant::now();
        for _ in 0..100 {
            log.submit(record(&log, &key, Rpc::Check, true));
        }
        assert!(started.elapsed() < Duration::from_secs(1), "submit never waits");
        // The buffer holds 2: the other 98 are dropped.
        assert_eq!(log.stats().dropped.load(Ordering::Relaxed), 98);
        drop(held);
        log.close();
        assert_eq!(out.lines().len(), 3);
        assert_eq!(log.stats().lines.load(Ordering::Relaxed), 3);
        // After close, lines are dropped (and counted), never written.
        log.submit(record(&log, &key, Rpc::Check, true));
        assert_eq!(log.stats().dropped.load(Ordering::Relaxed), 99);
        assert_eq!(out.lines().len(), 3);
    }

    #[test]
    fn write_errors_are_counted_and_the_log_goes_on() {
        let out = Shared::default();
        let log = DecisionLog::with_writer(&settings(), Box::new(out.clone())).unwrap();
        let key = log.key(&metadata("r"));
        out.fail.store(true, Ordering::SeqCst);
        log.submit(record(&log, &key, Rpc::Explain, true));
        // Wait for the failed flush.
        let deadline = Instant::now() + Duration::from_secs(5);
        while log.stats().errors.load(Ordering::Relaxed) == 0 {
            assert!(Instant::now() < deadline, "the failed write is counted");
            std::thread::sleep(Duration::from_millis(10));
        }
        out.fail.store(false, Ordering::SeqCst);
        log.submit(record(&log, &key, Rpc::Explain, false));
        log.close();
        let lines = out.lines();
        assert!(!lines.is_empty());
        assert_eq!(lines.last().unwrap()["allowed"], false);
        assert_eq!(lines.last().unwrap()["rpc"], "Explain");
    }

    #[test]
    fn lines_are_flushed_while_the_log_is_open() {
        let out = Shared::default();
        let log = DecisionLog::with_writer(&settings(), Box::new(out.clone())).unwrap();
        log.submit(record(&log, &log.key(&metadata("r")), Rpc::Check, true));
        let deadline = Instant::now() + Duration::from_secs(5);
        while out.lines().is_empty() {
            assert!(Instant::now() < deadline, "flushed within FLUSH_EVERY");
            std::thread::sleep(Duration::from_millis(10));
        }
        log.close();
    }
}
