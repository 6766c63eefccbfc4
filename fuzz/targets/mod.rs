//! The bodies of the fuzz targets, shared by the cargo-fuzz binaries
//! (`fuzz/fuzz_targets/*.rs`, through this crate's library) and by the suite
//! test that runs them over the committed corpus (`tests/fuzz_corpus.rs`,
//! through `#[path]`): one `run(&[u8]) -> Outcome` per target. A body returns normally
//! for every input, refused or accepted; it panics only when the code under
//! test does, or when one of the invariants it asserts breaks.

#![allow(clippy::panic)]

pub mod config_file;
pub mod page_token;
pub mod proto_mutations;
pub mod tenant_yaml;

use authzd::engine::{CheckRequest, ListRequest, ObjectRef, TenantView, reference};
use authzd::model::{Perm, TenantConfig, TenantFile};
use authzd::snapshot::TenantState;
use std::sync::{Arc, LazyLock};

/// How far an input got: refused (with a proper error), or accepted and
/// taken through every check of the target. The suite test counts both, so a
/// corpus that never reaches the deep checks fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Refused: not UTF-8, malformed, or invalid, with an error naming the field.
    Refused,
    /// Accepted, and every invariant of the target held.
    Accepted,
}

/// The tenant file of [`base`].
pub const BASE_TENANT_YAML: &str = include_str!("base.yaml");

/// The small valid tenant (`fuzz/targets/base.yaml`, id `fuzz`) that fuzzed
/// writes apply to and fuzzed page tokens list, compiled once.
pub fn base() -> &'static TenantState {
    static BASE: LazyLock<TenantState> = LazyLock::new(|| {
        let config = TenantFile::from_yaml(BASE_TENANT_YAML)
            .and_then(|f| f.to_config())
            .unwrap_or_else(|e| panic!("fuzz/targets/base.yaml does not load: {e}"));
        let view = Arc::new(TenantView::build(&config, 1));
        TenantState::new(Arc::new(config), view)
    });
    &BASE
}

/// A few decisions and listings on `view`, compiled from `c`, each compared
/// with the reference evaluator (`engine::reference`, the specification's
/// rules written plainly): the first persons (and one unknown), the first
/// objects of each kind (and one unknown), with and without an application
/// and a privilege, two permissions, an explanation of each.
pub fn probe(c: &TenantConfig, view: &TenantView) {
    let mut persons: Vec<&str> = c.persons.keys().take(3).map(|p| p.as_str()).collect();
    persons.push("nobody");
    let mut objects: Vec<(&str, &str)> = Vec::new();
    let mut kinds: Vec<&str> = Vec::new();
    for o in c.objects.values() {
        if kinds.last() != Some(&o.kind.as_str()) {
            kinds.push(&o.kind);
            objects.push((&o.kind, o.id.as_str()));
        }
        if kinds.len() == 3 {
            break;
        }
    }
    objects.extend(c.folders.keys().next().map(|f| ("Folder", f.as_str())));
    objects.push(("Report", "nothing"));
    let app = c.catalogs.values().next();
    let apps = [None, app.map(|a| (a.name.as_str(), a.privileges.first().map(|p| p.name.as_str())))];
    for &subject in &persons {
        for &(kind, id) in &objects {
            for &permission in &[Some(Perm::Read), Some(Perm::Change)] {
                for a in &apps {
                    let req = CheckRequest {
                        subject,
                        application: a.map(|(name, _)| name),
                        permission,
                        object: Some(ObjectRef { kind, id, tenant: None }),
                        privilege: a.and_then(|(_, p)| p).filter(|_| permission == Some(Perm::Change)),
                        property: None,
                    };
                    let fast = view.check(&req);
                    let slow = reference::check(c, &req);
                    assert_eq!(fast.reason, slow, "engine and reference disagree on {req:?}");
                    let ex = view.explain(&req);
                    assert_eq!(ex.decision.reason, fast.reason, "explain and check disagree on {req:?}");
                }
            }
        }
        for &kind in &kinds {
            let list = ListRequest {
                subject,
                kind,
                folder: None,
                permission: Perm::Read,
                application: None,
                after: None,
                limit: usize::MAX,
            };
            let fast = view.visible_ids(&list).map(|v| v.into_iter().map(str::to_owned).collect::<Vec<_>>());
            assert_eq!(fast, reference::list_visible(c, &list), "engine and reference list differently: {list:?}");
        }
    }
}
