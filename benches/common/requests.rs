//! The engine benchmarks' requests, shared by `engine.rs` (timed by
//! criterion) and `engine_count.rs` (counted by callgrind), so that both ask
//! the very same questions in the same order.

use authzd::engine::{CheckRequest, ListRequest, ObjectRef};
use authzd::model::{Perm, types};
use authzd::synth::{self, Rng, SynthParams};

/// How many different requests of each kind are cycled, so that a benchmark
/// is not one cached answer (a power of two: `i & (CYCLE - 1)` wraps).
pub const CYCLE: usize = 4096;

/// What the requests cycle over: persons, privileges and metrics of the
/// benchmark tenant, drawn in that order from seed 7.
pub struct Requests {
    /// Person ids.
    pub persons: Vec<String>,
    /// Privilege names of `synth::APP`.
    pub privs: Vec<String>,
    /// Metric ids.
    pub metrics: Vec<String>,
}

impl Requests {
    /// The requests over the tenant `p` generates.
    pub fn new(p: &SynthParams) -> Self {
        let mut rng = Rng::new(7);
        let persons = (0..CYCLE).map(|_| synth::person_id(rng.below(p.persons))).collect();
        let privs = (0..CYCLE).map(|_| synth::privilege_name(rng.below(p.privileges))).collect();
        let metrics = (0..CYCLE).map(|_| synth::metric_id(rng.below(p.metrics))).collect();
        Requests { persons, privs, metrics }
    }

    /// Check `i` (below [`CYCLE`]) of a privilege: does person `i` hold privilege `i` of `synth::APP`.
    #[inline]
    pub fn privilege(&self, i: usize) -> CheckRequest<'_> {
        CheckRequest {
            subject: &self.persons[i],
            application: Some(synth::APP),
            privilege: Some(&self.privs[i]),
            ..Default::default()
        }
    }

    /// Check `i` of an object: may person `i` read metric `7 i` (wrapped).
    #[inline]
    pub fn object(&self, i: usize) -> CheckRequest<'_> {
        CheckRequest {
            subject: &self.persons[i],
            permission: Some(Perm::Read),
            object: Some(self.metric(i)),
            ..Default::default()
        }
    }

    /// [`Self::object`] in `synth::APP` (its guards apply), with privilege `i` asked as well.
    #[inline]
    pub fn object_with_app_and_privilege(&self, i: usize) -> CheckRequest<'_> {
        CheckRequest {
            subject: &self.persons[i],
            application: Some(synth::APP),
            permission: Some(Perm::Read),
            object: Some(self.metric(i)),
            privilege: Some(&self.privs[i]),
            property: None,
        }
    }

    #[inline]
    fn metric(&self, i: usize) -> ObjectRef<'_> {
        ObjectRef { kind: types::METRIC, id: &self.metrics[(i * 7) & (CYCLE - 1)], tenant: None }
    }
}

/// Every metric `subject` may read, in one page.
pub fn all_metrics(subject: &str) -> ListRequest<'_> {
    ListRequest {
        subject,
        kind: types::METRIC,
        folder: None,
        permission: Perm::Read,
        application: None,
        after: None,
        limit: usize::MAX,
    }
}
