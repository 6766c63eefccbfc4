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
use authzd::engine::TenantView;
use authzd::synth::{self, SynthParams};
use std::hint::black_box;

#[path = "common/requests.rs"]
mod requests;
use requests::{CYCLE, Requests, all_metrics};

#[inline(never)]
fn privilege(view: &TenantView, q: &Requests) -> usize {
    let mut n = 0;
    for i in 0..CYCLE {
        n += black_box(view.check(black_box(&q.privilege(i)))).allowed() as usize;
    }
    n
}
#[inline(never)]
fn object(view: &TenantView, q: &Requests) -> usize {
    let mut n = 0;
    for i in 0..CYCLE {
        n += black_box(view.check(black_box(&q.object(i)))).allowed() as usize;
    }
    n
}
#[inline(never)]
fn object_app(view: &TenantView, q: &Requests) -> usize {
    let mut n = 0;
    for i in 0..CYCLE {
        n += black_box(view.check(black_box(&q.object_with_app_and_privilege(i)))).allowed() as usize;
    }
    n
}
#[inline(never)]
fn list(view: &TenantView, q: &Requests) -> usize {
    let mut n = 0;
    for s in q.persons.iter().take(256) {
        n += black_box(view.list_visible_refs(&all_metrics(s)).map(|p| p.items.len()).unwrap_or(0));
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
    let q = Requests::new(&p);
    println!("privilege allowed {}", privilege(&view, &q));
    println!("object allowed {}", object(&view, &q));
    println!("object_app allowed {}", object_app(&view, &q));
    println!("listed {}", list(&view, &q));
}
