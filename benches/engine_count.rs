//! The engine bench's requests, one full cycle of each, for counting
//! instructions rather than timing them: callgrind's count does not depend
//! on the machine's load, so two builds can be compared to the percent on a
//! busy VM (README "Checks and listings by instruction count").
//!
//! Run: `cargo build --release --bench engine_count`, then
//! `valgrind --tool=callgrind target/release/deps/engine_count-<hash>` and
//! `callgrind_annotate --inclusive=yes callgrind.out.<pid> | grep engine_count::`.
//! Each kind of request runs in a function of its own (`privilege`,
//! `object`, `object_app`: 4,096 checks each; `list`: every metric of the
//! first 256 persons), so a function's inclusive count divided by its calls
//! is the cost of one. It prints what it decided, so two builds can be seen
//! to answer alike.
#![allow(missing_docs)]
/// The allocator the server binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use authzd::engine::{CheckRequest, ListRequest, ObjectRef, TenantView};
use authzd::model::{Perm, types};
use authzd::synth::{self, Rng, SynthParams};
use std::hint::black_box;

#[inline(never)]
fn privilege(view: &TenantView, persons: &[String], privs: &[String]) -> usize {
    let mut n = 0;
    for i in 0..4096 {
        let r = CheckRequest {
            subject: &persons[i],
            application: Some(synth::APP),
            privilege: Some(&privs[i]),
            ..Default::default()
        };
        n += black_box(view.check(black_box(&r))).allowed() as usize;
    }
    n
}
#[inline(never)]
fn object(view: &TenantView, persons: &[String], metrics: &[String]) -> usize {
    let mut n = 0;
    for i in 0..4096 {
        let r = CheckRequest {
            subject: &persons[i],
            permission: Some(Perm::Read),
            object: Some(ObjectRef { kind: types::METRIC, id: &metrics[(i * 7) & 4095], tenant: None }),
            ..Default::default()
        };
        n += black_box(view.check(black_box(&r))).allowed() as usize;
    }
    n
}
#[inline(never)]
fn object_app(view: &TenantView, persons: &[String], metrics: &[String], privs: &[String]) -> usize {
    let mut n = 0;
    for i in 0..4096 {
        let r = CheckRequest {
            subject: &persons[i],
            application: Some(synth::APP),
            permission: Some(Perm::Read),
            object: Some(ObjectRef { kind: types::METRIC, id: &metrics[(i * 7) & 4095], tenant: None }),
            privilege: Some(&privs[i]),
            property: None,
        };
        n += black_box(view.check(black_box(&r))).allowed() as usize;
    }
    n
}
#[inline(never)]
fn list(view: &TenantView, persons: &[String]) -> usize {
    let mut n = 0;
    for s in persons.iter().take(256) {
        let r = ListRequest {
            subject: s,
            kind: types::METRIC,
            folder: None,
            permission: Perm::Read,
            application: None,
            after: None,
            limit: usize::MAX,
        };
        n += black_box(view.list_visible_refs(&r).map(|p| p.items.len()).unwrap_or(0));
    }
    n
}
fn main() {
    let p = SynthParams::default();
    let config = match synth::tenant("bench", &p) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot build the benchmark tenant: {e}");
            std::process::exit(1);
        }
    };
    let view = TenantView::build(&config, 1);
    let mut rng = Rng::new(7);
    let persons: Vec<String> = (0..4096).map(|_| synth::person_id(rng.below(p.persons))).collect();
    let privs: Vec<String> = (0..4096).map(|_| synth::privilege_name(rng.below(p.privileges))).collect();
    let metrics: Vec<String> = (0..4096).map(|_| synth::metric_id(rng.below(p.metrics))).collect();
    println!("privilege allowed {}", privilege(&view, &persons, &privs));
    println!("object allowed {}", object(&view, &persons, &metrics));
    println!("object_app allowed {}", object_app(&view, &persons, &metrics, &privs));
    println!("listed {}", list(&view, &persons));
}
