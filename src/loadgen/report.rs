//! The results of `authzd bench`: a table on standard output, or JSON.

use super::tally::WorkloadResult;
use super::{BenchArgs, Target};
use crate::console::outln;
use serde_json::{Value, json};

/// Everything `authzd bench` measured.
#[derive(Debug)]
pub struct Report {
    header: Value,
    results: Vec<WorkloadResult>,
    health_rps: Option<f64>,
}

fn ratio(v: f64, base: Option<f64>) -> Option<f64> {
    base.filter(|b| *b > 0.0).map(|b| v / b)
}

fn thousands(v: f64) -> String {
    let s = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn latency(v: f64) -> String {
    if v >= 10_000.0 { format!("{:.1} ms", v / 1_000.0) } else { format!("{v:.0} µs") }
}

impl Report {
    /// The report of a run.
    pub fn new(a: &BenchArgs, t: &Target, results: Vec<WorkloadResult>, health_rps: Option<f64>) -> Self {
        let header = json!({
            "server": a.unix_socket.as_ref().map_or_else(|| a.server.clone(), |p| format!("unix:{}", p.display())),
            "tenant": t.tenant,
            "persons": t.config.persons.len(),
            "groups": t.config.groups.len(),
            "roles": t.config.roles.len(),
            "objects": t.config.objects.len(),
            "concurrency": a.concurrency,
            "connections": a.connections,
            "duration_s": if a.workloads == [super::Workload::Soak] { super::soak::durations(a).0 } else { a.duration() }.as_secs_f64(),
            "warmup_s": if a.workloads == [super::Workload::Soak] { super::soak::durations(a).1 } else { a.warmup() }.as_secs_f64(),
            "batch_size": a.batch_size,
            "cores": std::thread::available_parallelism().map(usize::from).unwrap_or(1),
        });
        Report { header, results, health_rps }
    }

    /// Whether every workload ran without an error or a mismatch.
    pub fn ok(&self) -> bool {
        !self.results.is_empty() && self.results.iter().all(WorkloadResult::ok)
    }

    fn check_dps(&self) -> Option<f64> {
        self.results
            .iter()
            .find(|r| r.name == "check-privilege" || r.name == "check-object")
            .map(|r| r.decisions_per_sec)
    }

    /// The report as JSON.
    pub fn json(&self) -> Value {
        let check = self.check_dps();
        json!({
            "run": self.header,
            "health_calls_per_sec": self.health_rps,
            "ok": self.ok(),
            "workloads": self.results.iter().map(|r| json!({
                "workload": r.name,
                "calls": r.calls,
                "decisions": r.decisions,
                "errors": r.errors,
                "mismatches": r.mismatches,
                "seconds": r.seconds,
                "calls_per_sec": r.calls_per_sec,
                "decisions_per_sec": r.decisions_per_sec,
                "latency_us": {"p50": r.p50_us, "p99": r.p99_us, "p999": r.p999_us, "max": r.max_us},
                "calls_vs_health": ratio(r.calls_per_sec, self.health_rps),
                "decisions_vs_check": if r.name == "check-batch" { ratio(r.decisions_per_sec, check) } else { None },
                "messages": r.messages,
                "failed": r.failed,
                "extra": r.extra,
            })).collect::<Vec<_>>(),
        })
    }

    /// Prints the JSON report.
    pub fn print_json(&self) {
        let v = self.json();
        outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string()));
    }

    /// Prints the table.
    pub fn print_text(&self) {
        let h = &self.header;
        outln!(
            "tenant `{}` ({} persons, {} groups, {} roles, {} objects) on {}; {} in flight over {} connection(s), {} s per workload",
            h["tenant"].as_str().unwrap_or(""),
            h["persons"],
            h["groups"],
            h["roles"],
            h["objects"],
            h["server"].as_str().unwrap_or(""),
            h["concurrency"],
            h["connections"],
            h["duration_s"]
        );
        let width = self.results.iter().map(|r| r.name.chars().count()).max().unwrap_or(0).max(16);
        outln!(
            "{:<w$} {:>10} {:>12} {:>9} {:>9} {:>9} {:>7} {:>10} {:>9}",
            "workload",
            "calls/s",
            "decisions/s",
            "p50",
            "p99",
            "p99.9",
            "errors",
            "mismatches",
            "× health",
            w = width
        );
        let check = self.check_dps();
        for r in &self.results {
            let x = ratio(r.calls_per_sec, self.health_rps).map_or_else(|| "-".to_owned(), |x| format!("{x:.2}"));
            let d = if r.name == "health" { "-".to_owned() } else { thousands(r.decisions_per_sec) };
            outln!(
                "{:<w$} {:>10} {:>12} {:>9} {:>9} {:>9} {:>7} {:>10} {:>9}",
                r.name,
                thousands(r.calls_per_sec),
                d,
                latency(r.p50_us),
                latency(r.p99_us),
                latency(r.p999_us),
                r.errors,
                r.mismatches,
                x,
                w = width
            );
        }
        for r in &self.results {
            if r.name == "check-batch" {
                if let Some(x) = ratio(r.decisions_per_sec, check) {
                    outln!("check-batch: {x:.1}× the decisions/s of single checks");
                }
            }
            if r.name == "list-visible" {
                if let Some(n) = r.extra.get("mean_objects").and_then(Value::as_f64) {
                    outln!("list-visible: {n:.0} objects per listing on average (decisions/s counts objects listed)");
                }
            }
            if matches!(r.name, "list-subjects" | "list-holders") {
                if let Some(n) = r.extra.get("mean_persons").and_then(Value::as_f64) {
                    outln!("{}: {n:.0} persons per lookup on average (decisions/s counts persons listed)", r.name);
                }
            }
            if r.name == "soak" && !r.extra.is_null() {
                outln!("soak: samples of {}:", r.extra["metrics_url"].as_str().unwrap_or("the server"));
                for line in super::soak::table(&r.extra) {
                    outln!("  {line}");
                }
                for line in super::soak::verdict_lines(&r.extra) {
                    outln!("{line}");
                }
            }
            if let Some(x) = r.extra.get("vs_off").and_then(Value::as_f64).filter(|_| r.extra["log"] != "off") {
                outln!(
                    "{}: {x:.3} × the calls/s with the decision log off (log {}; {} lines written, {} dropped)",
                    r.name,
                    r.extra["log"].as_str().unwrap_or(""),
                    thousands(r.extra["lines"].as_f64().unwrap_or(0.0)),
                    thousands(r.extra["dropped"].as_f64().unwrap_or(0.0))
                );
            }
            if matches!(r.name, "watch" | "watch-sse" | "watch-storm" | "check-http") && !r.extra.is_null() {
                outln!("{}: {}", r.name, r.extra);
            }
            for m in &r.messages {
                outln!("{}: {m}", r.name);
            }
            if r.calls == 0 && r.errors == 0 && r.mismatches == 0 {
                outln!("{}: no call completed in the measured time", r.name);
            }
        }
        for r in &self.results {
            if let Some(why) = &r.failed {
                outln!("{}: FAILED: {why}", r.name);
            }
        }
        outln!(
            "{}",
            if self.ok() {
                "OK: every answer verified"
            } else {
                "FAILED: errors, mismatches or a failed verdict (see above)"
            }
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(12.0), "12");
        assert_eq!(latency(1_500.0), "1500 µs");
        assert_eq!(latency(25_000.0), "25.0 ms");
    }
}
