//! One workload's measurements, shared by every workload and the report:
//! the outcome of a call ([`Sample`]), the counters and latency histogram of
//! a task or a whole workload ([`Tally`]), the live counters of the progress
//! line ([`Live`], [`progress`]), and a workload's figures
//! ([`WorkloadResult`]). It imports no other module of the load generator.

use hdrhistogram::Histogram;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Error messages kept per workload (the first ones).
const KEPT_ERRORS: usize = 5;

/// The outcome of one call.
pub enum Sample {
    /// Answered correctly; how many decisions (or listed objects) it carried.
    Ok(u64),
    /// Answered, but not as the local view says.
    Mismatch(u64, String),
    /// Failed.
    Error(String),
}

/// A latency histogram in nanoseconds (1 ns to 10 min, 3 significant digits).
#[allow(clippy::expect_used)] // constant bounds that `new_with_bounds` accepts: it cannot fail
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("valid histogram bounds")
}

/// Counters of one task (or of a whole workload once merged).
pub struct Tally {
    /// Latencies of measured calls.
    pub latency: Histogram<u64>,
    /// Measured calls.
    pub calls: u64,
    /// Decisions (or objects) in measured correct answers.
    pub decisions: u64,
    /// Failed calls (measured or not: a failure is never hidden by the warm-up).
    pub errors: u64,
    /// Wrong answers (measured or not).
    pub mismatches: u64,
    /// The first error and mismatch messages.
    pub messages: Vec<String>,
}

impl Tally {
    /// An empty tally.
    pub fn new() -> Self {
        Tally { latency: histogram(), calls: 0, decisions: 0, errors: 0, mismatches: 0, messages: Vec::new() }
    }

    pub(super) fn note(&mut self, m: String) {
        if self.messages.len() < KEPT_ERRORS {
            self.messages.push(m);
        }
    }

    /// Adds another tally.
    pub fn merge(&mut self, o: Tally) {
        let _ = self.latency.add(&o.latency);
        self.calls += o.calls;
        self.decisions += o.decisions;
        self.errors += o.errors;
        self.mismatches += o.mismatches;
        for m in o.messages {
            self.note(m);
        }
    }

    /// Records one sample; `measured` calls count towards throughput and latency.
    pub fn record(&mut self, s: Sample, latency: Duration, measured: bool, live: &Live) {
        match s {
            Sample::Ok(n) => {
                live.done.fetch_add(1, Ordering::Relaxed);
                if measured {
                    self.calls += 1;
                    self.decisions += n;
                    let _ = self.latency.record(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1));
                }
            }
            Sample::Mismatch(_, m) => {
                live.done.fetch_add(1, Ordering::Relaxed);
                live.mismatches.fetch_add(1, Ordering::Relaxed);
                self.mismatches += 1;
                self.note(format!("mismatch: {m}"));
            }
            Sample::Error(m) => {
                live.errors.fetch_add(1, Ordering::Relaxed);
                self.errors += 1;
                self.note(format!("error: {m}"));
            }
        }
    }
}

impl Default for Tally {
    fn default() -> Self {
        Self::new()
    }
}

/// Counters shared with the progress printer.
#[derive(Debug, Default)]
pub struct Live {
    /// Answered calls.
    pub done: AtomicU64,
    /// Failed calls.
    pub errors: AtomicU64,
    /// Wrong answers.
    pub mismatches: AtomicU64,
}

/// Prints a progress line every second until `until`.
pub fn progress(
    name: &'static str,
    live: Arc<Live>,
    start: Instant,
    until: Instant,
    quiet: bool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if quiet {
            return;
        }
        let mut last = 0;
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(1), Duration::from_secs(1));
        while Instant::now() < until {
            tick.tick().await;
            let done = live.done.load(Ordering::Relaxed);
            eprintln!(
                "bench: {name}: {:>4.0} s  {:>9} calls/s  errors {}  mismatches {}",
                start.elapsed().as_secs_f64(),
                done - last,
                live.errors.load(Ordering::Relaxed),
                live.mismatches.load(Ordering::Relaxed)
            );
            last = done;
        }
    })
}

/// The figures of one workload.
#[derive(Debug, Clone)]
pub struct WorkloadResult {
    /// Workload name.
    pub name: &'static str,
    /// Measured calls answered correctly.
    pub calls: u64,
    /// Decisions (objects for listings, deliveries for watch) in them.
    pub decisions: u64,
    /// Failed calls.
    pub errors: u64,
    /// Wrong answers.
    pub mismatches: u64,
    /// Measured seconds.
    pub seconds: f64,
    /// Calls per second.
    pub calls_per_sec: f64,
    /// Decisions per second.
    pub decisions_per_sec: f64,
    /// Latency percentiles and maximum, in microseconds.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Maximum.
    pub max_us: f64,
    /// The first error and mismatch messages.
    pub messages: Vec<String>,
    /// Workload-specific figures.
    pub extra: Value,
    /// Why the workload failed although every answer was right (a soak that was not flat).
    pub failed: Option<String>,
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1_000.0
}

impl WorkloadResult {
    /// The figures of a merged tally over `measured` time.
    pub fn from_tally(name: &'static str, t: Tally, measured: Duration) -> Self {
        let seconds = measured.as_secs_f64();
        let per_sec = |n: u64| if seconds > 0.0 { n as f64 / seconds } else { 0.0 };
        let q = |x: f64| if t.latency.is_empty() { 0.0 } else { us(t.latency.value_at_quantile(x)) };
        WorkloadResult {
            name,
            calls: t.calls,
            decisions: t.decisions,
            errors: t.errors,
            mismatches: t.mismatches,
            seconds,
            calls_per_sec: per_sec(t.calls),
            decisions_per_sec: per_sec(t.decisions),
            p50_us: q(0.5),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: if t.latency.is_empty() { 0.0 } else { us(t.latency.max()) },
            messages: t.messages,
            extra: Value::Null,
            failed: None,
        }
    }

    /// Whether it ran and every answer was right.
    pub fn ok(&self) -> bool {
        self.errors == 0 && self.mismatches == 0 && self.calls > 0 && self.failed.is_none()
    }
}
