//! `authzd bench --memory-only`: how much memory a tenant takes and how long
//! it takes to load, without a server.
//!
//! It generates the tenant's write batch, applies and validates it (what a
//! server does on import or start-up replay), compiles the view, and reports
//! the resident memory of the process holding both the configuration and the
//! view (what a replica keeps per tenant), the peak during the load, and a
//! few in-process decision timings on the loaded view as a sanity check.

use super::BenchArgs;
use crate::console::CliError;
use crate::console::outln;
use crate::engine::{CheckRequest, ListRequest, ObjectRef, TenantView};
use crate::model::{Perm, TenantConfig, TenantId};
use crate::synth::{self, Rng};
use serde_json::json;
use std::process::ExitCode;
use std::time::Instant;

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`); `None` off Linux.
pub fn proc_status_kib(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn mib(kib: Option<u64>) -> Option<f64> {
    kib.map(|k| k as f64 / 1024.0)
}

/// Runs the memory measurement.
pub fn run(a: &BenchArgs) -> Result<ExitCode, CliError> {
    let p = a.synth_params();
    let rss_start = proc_status_kib("VmRSS");
    let t0 = Instant::now();
    let mutations = synth::mutations(&p);
    let generate = t0.elapsed();
    let t1 = Instant::now();
    let config = TenantConfig::empty(TenantId(a.tenant.clone()))
        .apply_batch(&mutations)
        .map_err(|e| CliError::Input(e.to_string()))?;
    let apply = t1.elapsed();
    let n_mutations = mutations.len();
    drop(mutations);
    let t2 = Instant::now();
    let view = TenantView::build(&config, 1);
    let build = t2.elapsed();
    let rss_loaded = proc_status_kib("VmRSS");
    let peak = proc_status_kib("VmHWM");

    // Sanity timings on the loaded view.
    let mut rng = Rng::new(p.seed);
    let persons = p.persons.max(1);
    let metrics = p.metrics.max(1);
    let ids: Vec<(String, String)> =
        (0..4_096).map(|_| (synth::person_id(rng.below(persons)), synth::metric_id(rng.below(metrics)))).collect();
    let checks = 200_000;
    let t3 = Instant::now();
    let mut allowed = 0u64;
    for i in 0..checks {
        let (person, metric) = &ids[i % ids.len()];
        let d = view.check(&CheckRequest {
            subject: person,
            permission: Some(Perm::Read),
            object: Some(ObjectRef { kind: crate::model::types::METRIC, id: metric, tenant: None }),
            ..Default::default()
        });
        allowed += u64::from(d.allowed());
    }
    let check_ns = t3.elapsed().as_nanos() as f64 / checks as f64;
    let lists = 20;
    let t4 = Instant::now();
    let mut listed = 0usize;
    for (person, _) in ids.iter().take(lists) {
        let r = ListRequest {
            subject: person,
            kind: crate::model::types::METRIC,
            folder: None,
            permission: Perm::Read,
            application: None,
            after: None,
            limit: usize::MAX,
        };
        listed += view.visible_ids(&r).map(|v| v.len()).unwrap_or(0);
    }
    let list_ms = t4.elapsed().as_secs_f64() * 1e3 / lists as f64;

    let v = json!({
        "tenant": a.tenant,
        "persons": config.persons.len(),
        "groups": config.groups.len(),
        "roles": config.roles.len(),
        "objects": config.objects.len(),
        "entries": config.aces.len(),
        "mutations": n_mutations,
        "generate_s": generate.as_secs_f64(),
        "apply_and_validate_s": apply.as_secs_f64(),
        "build_view_s": build.as_secs_f64(),
        "load_s": apply.as_secs_f64() + build.as_secs_f64(),
        "rss_start_mib": mib(rss_start),
        "rss_loaded_mib": mib(rss_loaded),
        "rss_peak_mib": mib(peak),
        "check_object_ns": check_ns,
        "checks_allowed": allowed,
        "list_visible_all_ms": list_ms,
        "mean_listed": listed as f64 / lists as f64,
    });
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string()));
    } else {
        let m = |x: Option<f64>| x.map_or_else(|| "n/a".to_owned(), |x| format!("{x:.0} MiB"));
        outln!(
            "tenant `{}`: {} persons, {} groups, {} roles, {} objects, {} entries ({} mutations)",
            a.tenant,
            config.persons.len(),
            config.groups.len(),
            config.roles.len(),
            config.objects.len(),
            config.aces.len(),
            n_mutations
        );
        outln!(
            "load: apply and validate {:.2} s + build view {:.2} s = {:.2} s (generating the batch: {:.2} s)",
            apply.as_secs_f64(),
            build.as_secs_f64(),
            apply.as_secs_f64() + build.as_secs_f64(),
            generate.as_secs_f64()
        );
        outln!(
            "resident memory: {} at start, {} with configuration and view loaded, peak {}",
            m(mib(rss_start)),
            m(mib(rss_loaded)),
            m(mib(peak))
        );
        outln!(
            "on the loaded view: object check {check_ns:.0} ns; listing all visible metrics {list_ms:.2} ms ({:.0} objects on average)",
            listed as f64 / lists as f64
        );
    }
    drop(view);
    Ok(ExitCode::SUCCESS)
}
