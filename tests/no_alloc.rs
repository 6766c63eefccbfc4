//! A check allocates nothing: counted with a wrapping global allocator on the
//! benchmark tenant's privilege and object checks (allowed and denied alike).
#![allow(unsafe_code)] // the counting allocator below is the only unsafe code, in this test only
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests state their expectations by panicking

use authzd::engine::{CheckRequest, ObjectRef, TenantView};
use authzd::model::{Perm, types};
use authzd::synth::{self, SynthParams};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: delegates every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        COUNT.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        COUNT.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn checks_do_not_allocate() {
    let p = SynthParams { persons: 500, groups: 40, roles: 10, privileges: 60, metrics: 3_000, denies: 100, seed: 3 };
    let view = TenantView::build(&synth::tenant("t", &p).expect("synthetic tenant is valid"), 1);
    let persons: Vec<String> = (0..p.persons).map(synth::person_id).collect();
    let privs: Vec<String> = (0..p.privileges).map(synth::privilege_name).collect();
    let metrics: Vec<String> = (0..p.metrics).map(synth::metric_id).collect();
    let (mut allowed, mut denied) = (0, 0);
    let before = COUNT.with(Cell::get);
    for i in 0..20_000usize {
        let by_privilege = CheckRequest {
            subject: &persons[i % persons.len()],
            application: Some(synth::APP),
            privilege: Some(&privs[i % privs.len()]),
            ..Default::default()
        };
        let by_object = CheckRequest {
            subject: &persons[(i * 7) % persons.len()],
            application: Some(synth::APP),
            permission: Some(Perm::Read),
            object: Some(ObjectRef { kind: types::METRIC, id: &metrics[(i * 13) % metrics.len()], tenant: None }),
            ..Default::default()
        };
        for r in [&by_privilege, &by_object] {
            if view.check(r).allowed() {
                allowed += 1;
            } else {
                denied += 1;
            }
        }
    }
    let after = COUNT.with(Cell::get);
    assert_eq!(after - before, 0, "checks allocated {} times", after - before);
    assert!(allowed > 0 && denied > 0, "both outcomes exercised: {allowed} allowed, {denied} denied");
}
