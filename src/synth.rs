//! Synthetic tenants of a chosen size, for benchmarks and load tests.
//!
//! The default shape is the one the project's performance targets are stated
//! for: 10,000 persons, 200 access groups (1–3 per person), 40 roles over 300
//! privileges, 100,000 Advisors metrics in the 15 leaf folders of
//! `Advisors Metrics`, folder grants per group and a few hundred object-level
//! denies. Generation is deterministic for a seed, and goes through the same
//! write path (`apply_batch`, full validation) as any tenant.

use crate::model::*;
use std::collections::{BTreeMap, BTreeSet};

/// The size of a synthetic tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynthParams {
    /// Persons.
    pub persons: usize,
    /// Access groups.
    pub groups: usize,
    /// Roles.
    pub roles: usize,
    /// Privileges of the synthetic application.
    pub privileges: usize,
    /// Metrics (spread over the 15 metric leaf folders).
    pub metrics: usize,
    /// Object-level deny entries on metrics.
    pub denies: usize,
    /// Random seed.
    pub seed: u64,
}

impl Default for SynthParams {
    fn default() -> Self {
        SynthParams {
            persons: 10_000,
            groups: 200,
            roles: 40,
            privileges: 300,
            metrics: 100_000,
            denies: 300,
            seed: 42,
        }
    }
}

/// Name of the synthetic application catalog.
pub const APP: &str = "Bench";

/// A small deterministic generator (SplitMix64): reproducible tenants without
/// a dependency.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A number in `0..n` (0 when n is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next_u64() % n as u64) as usize }
    }
}

/// Id of synthetic person `i`.
pub fn person_id(i: usize) -> String {
    format!("p{i:06}")
}
/// Id of synthetic metric `i`.
pub fn metric_id(i: usize) -> String {
    format!("m{i:07}")
}
/// Name of synthetic privilege `i`.
pub fn privilege_name(i: usize) -> String {
    format!("Bench.Module{}.canDo{i}", i / 10)
}

/// The 15 metric leaf folders, as (application, object type, folder id).
pub fn metric_folders() -> Vec<(&'static str, &'static str, String)> {
    let mut v = Vec::new();
    for app in validate::METRIC_APPLICATIONS {
        for t in validate::METRIC_OBJECT_TYPES {
            v.push((app, t, format!("{}/{app}/{t}", validate::METRICS_FOLDER)));
        }
    }
    v
}

/// The write batch that creates a synthetic tenant `id`.
pub fn mutations(p: &SynthParams) -> Vec<Mutation> {
    let mut rng = Rng::new(p.seed);
    let mut out = vec![Mutation::CreateTenant { name: "Bench".into(), presets: vec![], defaults: true }];
    // Catalog: privileges in chains of up to 3 (every 3rd requires the previous).
    let privileges = (0..p.privileges)
        .map(|i| PrivilegeDef {
            name: privilege_name(i),
            description: String::new(),
            requires: if i % 3 != 0 { vec![privilege_name(i - 1)] } else { vec![] },
            aliases: vec![],
            permission: None,
        })
        .collect();
    out.push(Mutation::PutCatalog(Catalog {
        name: APP.into(),
        description: "Synthetic application of the benchmark tenant".into(),
        name_pattern: None,
        privileges,
        type_guards: vec![],
        property_guards: vec![],
        open_when_unconfigured: false,
        legacy_annex_sections: vec![],
        restricted_types: vec![],
        role_rank: vec![],
        roles: vec![],
    }));
    for i in 0..p.persons {
        out.push(Mutation::PutPerson(Person {
            id: PersonId(person_id(i)),
            username: format!("user{i}"),
            enabled: true,
            folder: FolderId(folders::PERSONS.into()),
            annex: BTreeMap::new(),
            properties: BTreeMap::new(),
        }));
    }
    let mut members: Vec<BTreeSet<PersonId>> = vec![BTreeSet::new(); p.groups];
    for i in 0..p.persons {
        for _ in 0..1 + rng.below(3) {
            members[rng.below(p.groups)].insert(PersonId(person_id(i)));
        }
    }
    for (g, m) in members.into_iter().enumerate() {
        out.push(Mutation::PutGroup(AccessGroup {
            id: GroupId(format!("g{g:04}")),
            name: format!("Group {g}"),
            folder: FolderId(folders::ACCESS_GROUPS.into()),
            members: m,
        }));
    }
    for r in 0..p.roles {
        let mut privs = BTreeSet::new();
        let start = rng.below(p.privileges.max(1));
        for k in 0..30.min(p.privileges) {
            privs.insert(privilege_name((start + k) % p.privileges));
        }
        let mut groups = BTreeSet::new();
        for _ in 0..(p.groups / p.roles.max(1)).max(1) {
            groups.insert(GroupId(format!("g{:04}", rng.below(p.groups))));
        }
        let mut persons = BTreeSet::new();
        for _ in 0..5 {
            persons.insert(PersonId(person_id(rng.below(p.persons))));
        }
        out.push(Mutation::PutRole(Role {
            id: RoleId(format!("r{r:03}")),
            name: format!("Role {r}"),
            folder: FolderId(folders::ROLES.into()),
            privileges: BTreeMap::from([(APP.to_owned(), privs)]),
            members: RoleMembers { persons, groups },
        }));
    }
    let leaves = metric_folders();
    for i in 0..p.metrics {
        let (app, t, folder) = &leaves[i % leaves.len()];
        out.push(Mutation::PutObject(Object {
            kind: types::METRIC.into(),
            id: ObjectId(metric_id(i)),
            name: format!("{app}.{t}.Voice.metric{i}"),
            folder: FolderId(folder.clone()),
            partitions: BTreeSet::new(),
            properties: BTreeMap::new(),
        }));
    }
    // Folder grants: each group reads 1–5 leaf folders.
    for g in 0..p.groups {
        for _ in 0..1 + rng.below(5) {
            let (_, _, folder) = &leaves[rng.below(leaves.len())];
            out.push(Mutation::PutAce(Ace {
                target: Target::Folder(FolderId(folder.clone())),
                subject: Subject::Group(GroupId(format!("g{g:04}"))),
                allow: PermSet::EMPTY.with(Perm::Read),
                deny: PermSet::EMPTY,
                propagate: true,
            }));
        }
    }
    // Object-level denies (and as many object-level grants).
    for k in 0..p.denies {
        let m = ObjectKey { kind: types::METRIC.into(), id: ObjectId(metric_id(rng.below(p.metrics.max(1)))) };
        let subject = Subject::Group(GroupId(format!("g{:04}", rng.below(p.groups))));
        let (allow, deny) = if k % 2 == 0 {
            (PermSet::EMPTY, PermSet::EMPTY.with(Perm::Read))
        } else {
            (PermSet::EMPTY.with(Perm::Read), PermSet::EMPTY)
        };
        if p.metrics > 0 {
            out.push(Mutation::PutAce(Ace { target: Target::Object(m), subject, allow, deny, propagate: false }));
        }
    }
    out
}

/// A synthetic tenant `id` of the given size, validated.
pub fn tenant(id: &str, p: &SynthParams) -> ModelResult<TenantConfig> {
    TenantConfig::empty(TenantId(id.into())).apply_batch(&mutations(p))
}
