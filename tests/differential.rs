//! Differential test: the fast engine (`authzd::engine::TenantView`) against
//! the naive reference evaluator (`authzd::engine::reference`) on random
//! tenants and random queries.
//!
//! Each case builds one random, valid tenant (folders, persons, access groups,
//! catalogs with dependencies, aliases, guards, legacy roles and rank, roles,
//! partitions, objects and ACEs) and asks ~30 questions about it, over existing
//! and non-existing ids and with every combination of optional fields:
//! `check` reasons must be equal, effective privileges equal as sets, primary
//! roles equal, and listings (followed page by page) equal to the reference's.
//! The reverse lookups are checked against the reference asked person by
//! person: `allowed_subjects` of every check question must be exactly the
//! persons the reference allows (with the same reasons), and
//! `privilege_holders` exactly those whose check of the privilege alone is
//! allowed.
//!
//! The number of cases comes from `AUTHZD_DIFF_CASES` (default 10 000, a few
//! tens of seconds in the dev profile). To run millions:
//!
//! ```text
//! AUTHZD_DIFF_CASES=1000000 cargo test --release --test differential
//! ```
//!
//! A failure prints the shrunk tenant as a tenant file (YAML) and the query.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use authzd::engine::reference;
use authzd::engine::{CheckRequest, ListPageRef, ListRequest, ObjectRef, Reason, TenantView};
use authzd::model::*;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

mod support;

/// How often each outcome was seen (printed at the end: `-- --nocapture`),
/// to show the generator reaches every part of a decision.
static SEEN: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

fn seen(what: String) {
    if let Ok(mut m) = SEEN.lock() {
        *m.entry(what).or_default() += 1;
    }
}

// ---------------------------------------------------------------------------
// Raw random material. Indices are reduced modulo the actual counts when the
// tenant is built, so every raw value yields a valid tenant and shrinks well.

const TENANT: &str = "t";
/// Generic object types (never `Metric`: its names and folders are validated).
const OBJECT_KINDS: [&str; 3] = ["Script", "Skill", "App"];
/// Every type a guard, a restricted list or a query may name.
const ALL_KINDS: [&str; 7] = ["Script", "Skill", "App", "Folder", "Person", "AccessGroup", "Role"];
const SECTIONS: [&str; 3] = ["ges", "gms", "other"];
const LEGACY: [&str; 4] = ["Administrator", "Supervisor", "Monitor", "Nobody"];
const PROPERTIES: [&str; 3] = ["Name", "Phone", "Other"];
/// Object ids: some equal to ids of other types' objects, folders, persons, groups, roles.
const OBJECT_IDS: [&str; 10] = ["o0", "o1", "o2", "o3", "o4", "o5", "f1", "p0", "g0", "r0"];

#[derive(Debug, Clone)]
struct RawPerson {
    enabled: bool,
    folder: usize,
    /// (section, `role` value, or another option when `None`).
    annex: Vec<(usize, Option<usize>)>,
}

#[derive(Debug, Clone)]
struct RawPrivilege {
    /// Bit i: requires privilege i (only earlier ones are kept).
    requires: u8,
    alias: bool,
    permission: Option<usize>,
}

#[derive(Debug, Clone)]
struct RawCatalog {
    privileges: Vec<RawPrivilege>,
    /// (type, permission, privilege, by alias).
    type_guards: Vec<(usize, usize, usize, bool)>,
    /// (type, property, Change (else Read), privilege, by alias).
    property_guards: Vec<(usize, usize, bool, usize, bool)>,
    open: bool,
    /// 0: [ges, gms], 1: [gms], 2: none.
    legacy: usize,
    /// Bit i: ALL_KINDS[i] is restricted.
    restricted: u8,
    /// Role indices (one past the roles names a role that does not exist).
    rank: Vec<usize>,
    /// (legacy name, privilege mask, alias mask).
    templates: Vec<(usize, u8, u8)>,
}

#[derive(Debug, Clone)]
struct RawRole {
    folder: usize,
    /// Per catalog: (privilege mask by canonical name, mask by alias).
    privileges: Vec<(u8, u8)>,
    persons: u8,
    groups: u8,
}

#[derive(Debug, Clone)]
struct RawObject {
    kind: usize,
    /// Index into OBJECT_IDS: ids repeat across types and other entities.
    id: usize,
    folder: usize,
    partitions: u8,
    properties: u8,
}

#[derive(Debug, Clone)]
struct RawAce {
    /// (0 folder, 1 person, 2 group, 3 role, 4 object; index).
    target: (usize, usize),
    /// (0 everyone, 1 person, 2 group; index).
    subject: (usize, usize),
    allow: u8,
    deny: u8,
    propagate: bool,
}

#[derive(Debug, Clone)]
struct RawTenant {
    /// Parent choice of folders 1.. (folder 0 is `root`).
    folders: Vec<usize>,
    persons: Vec<RawPerson>,
    /// (members, folder).
    groups: Vec<(u8, usize)>,
    catalogs: Vec<RawCatalog>,
    roles: Vec<RawRole>,
    /// Member masks.
    partitions: Vec<u8>,
    object_kinds: usize,
    objects: Vec<RawObject>,
    /// An `everyone` entry on the root (propagating) with these bits, first.
    base: Option<u8>,
    aces: Vec<RawAce>,
    restricted_mode: bool,
}

#[derive(Debug, Clone)]
enum RawObj {
    /// The i-th node of the tenant (any type).
    Node(usize),
    /// Any type (or an unknown one) with any id (or an unknown one).
    Any(usize, usize),
}

#[derive(Debug, Clone)]
struct RawCheck {
    subject: usize,
    application: Option<usize>,
    permission: Option<usize>,
    /// (object, tenant: 0 none, 1 this tenant, 2 another).
    object: Option<(RawObj, usize)>,
    /// (privilege index, by alias).
    privilege: Option<(usize, bool)>,
    property: Option<usize>,
}

#[derive(Debug, Clone)]
struct RawList {
    limit: usize,
    subject: usize,
    kind: usize,
    folder: Option<usize>,
    permission: usize,
    application: Option<usize>,
    /// One page asked from a cursor: (node index, 0 its id, 1 just after it,
    /// 2 half of it, 3 empty), and that page's limit (0 lists one).
    page: (Option<(usize, usize)>, usize),
}

#[derive(Debug, Clone)]
struct RawCase {
    tenant: RawTenant,
    checks: Vec<RawCheck>,
    privileges: Vec<(usize, usize)>,
    lists: Vec<RawList>,
}

fn idx() -> impl Strategy<Value = usize> {
    0usize..16
}

fn raw_person() -> impl Strategy<Value = RawPerson> {
    (
        prop::bool::weighted(0.9),
        idx(),
        prop::collection::vec((0usize..3, prop::option::weighted(0.8, 0usize..4)), 0..=2),
    )
        .prop_map(|(enabled, folder, annex)| RawPerson { enabled, folder, annex })
}

fn raw_privilege() -> impl Strategy<Value = RawPrivilege> {
    (any::<u8>(), prop::bool::weighted(0.3), prop::option::weighted(0.3, 0usize..7))
        .prop_map(|(requires, alias, permission)| RawPrivilege { requires, alias, permission })
}

fn raw_catalog() -> impl Strategy<Value = RawCatalog> {
    (
        prop::collection::vec(raw_privilege(), 1..=8),
        prop::collection::vec((0usize..7, 0usize..7, idx(), any::<bool>()), 0..=3),
        prop::collection::vec((0usize..7, 0usize..3, any::<bool>(), idx(), any::<bool>()), 0..=3),
        any::<bool>(),
        prop_oneof![3 => Just(0usize), 1 => Just(1usize), 1 => Just(2usize)],
        any::<u8>(),
        prop::collection::vec(0usize..7, 0..=4),
        prop::collection::vec((0usize..4, any::<u8>(), any::<u8>()), 0..=3),
    )
        .prop_map(|(privileges, type_guards, property_guards, open, legacy, restricted, rank, templates)| {
            RawCatalog { privileges, type_guards, property_guards, open, legacy, restricted, rank, templates }
        })
}

fn raw_role() -> impl Strategy<Value = RawRole> {
    (
        idx(),
        prop::collection::vec((any::<u8>(), prop_oneof![3 => Just(0u8), 1 => any::<u8>()]), 0..=3),
        any::<u8>(),
        any::<u8>(),
    )
        .prop_map(|(folder, privileges, persons, groups)| RawRole { folder, privileges, persons, groups })
}

fn raw_object() -> impl Strategy<Value = RawObject> {
    (0usize..3, 0usize..OBJECT_IDS.len(), idx(), prop_oneof![2 => Just(0u8), 1 => any::<u8>()], any::<u8>())
        .prop_map(|(kind, id, folder, partitions, properties)| RawObject { kind, id, folder, partitions, properties })
}

fn raw_ace() -> impl Strategy<Value = RawAce> {
    (
        (
            prop_oneof![4 => Just(0usize), 1 => Just(1usize), 1 => Just(2usize), 2 => Just(3usize), 3 => Just(4usize)],
            idx(),
        ),
        (0usize..3, idx()),
        any::<u8>(),
        prop_oneof![3 => Just(0u8), 1 => any::<u8>()],
        prop::bool::weighted(0.6),
    )
        .prop_map(|(target, subject, allow, deny, propagate)| RawAce { target, subject, allow, deny, propagate })
}

fn raw_tenant() -> impl Strategy<Value = RawTenant> {
    (
        prop::collection::vec(idx(), 0..=7),
        prop::collection::vec(raw_person(), 1..=8),
        prop::collection::vec((any::<u8>(), idx()), 0..=5),
        prop::collection::vec(raw_catalog(), 1..=3),
        prop::collection::vec(raw_role(), 0..=5),
        prop::collection::vec(any::<u8>(), 0..=3),
        2usize..=3,
        prop::collection::vec(raw_object(), 0..=8),
        prop::option::weighted(0.6, any::<u8>()),
        prop::collection::vec(raw_ace(), 0..=16),
        any::<bool>(),
    )
        .prop_map(
            |(
                folders,
                persons,
                groups,
                catalogs,
                roles,
                partitions,
                object_kinds,
                objects,
                base,
                aces,
                restricted_mode,
            )| {
                RawTenant {
                    folders,
                    persons,
                    groups,
                    catalogs,
                    roles,
                    partitions,
                    object_kinds,
                    objects,
                    base,
                    aces,
                    restricted_mode,
                }
            },
        )
}

fn raw_obj() -> impl Strategy<Value = RawObj> {
    prop_oneof![
        6 => (0usize..64).prop_map(RawObj::Node),
        1 => (0usize..8, 0usize..64).prop_map(|(k, i)| RawObj::Any(k, i)),
    ]
}

fn raw_check() -> impl Strategy<Value = RawCheck> {
    (
        ref_idx(),
        prop::option::weighted(0.8, ref_idx()),
        prop::option::weighted(0.6, 0usize..7),
        prop::option::weighted(
            0.85,
            (raw_obj(), prop_oneof![10 => Just(0usize), 1 => Just(1usize), 1 => Just(2usize)]),
        ),
        prop::option::weighted(0.4, (0usize..18, prop::bool::weighted(0.3))),
        prop::option::weighted(0.3, 0usize..3),
    )
        .prop_map(|(subject, application, permission, object, privilege, property)| RawCheck {
            subject,
            application,
            permission,
            object,
            privilege,
            property,
        })
}

fn raw_list() -> impl Strategy<Value = RawList> {
    (
        1usize..=7,
        ref_idx(),
        0usize..8,
        prop::option::weighted(0.5, ref_idx()),
        prop_oneof![3 => Just(0usize), 2 => 0usize..7],
        prop::option::weighted(0.6, ref_idx()),
        (prop::option::weighted(0.7, (0usize..64, 0usize..4)), prop_oneof![0usize..10, Just(usize::MAX)]),
    )
        .prop_map(|(limit, subject, kind, folder, permission, application, page)| RawList {
            limit,
            subject,
            kind,
            folder,
            permission,
            application,
            page,
        })
}

fn raw_case() -> impl Strategy<Value = RawCase> {
    (
        raw_tenant(),
        prop::collection::vec(raw_check(), 24),
        prop::collection::vec((ref_idx(), ref_idx()), 4),
        prop::collection::vec(raw_list(), 4),
    )
        .prop_map(|(tenant, checks, privileges, lists)| RawCase { tenant, checks, privileges, lists })
}

// ---------------------------------------------------------------------------
// From raw material to a valid tenant.

fn bits(mask: u8, n: usize) -> impl Iterator<Item = usize> {
    (0..n.min(8)).filter(move |i| mask & (1 << i) != 0)
}

fn perm(i: usize) -> Perm {
    Perm::ALL[i % Perm::ALL.len()]
}

fn perms(mask: u8) -> PermSet {
    PermSet(mask & 0x7f)
}

fn folder_id(i: usize) -> FolderId {
    FolderId(if i == 0 { "root".to_owned() } else { format!("f{i}") })
}
fn person_id(i: usize) -> PersonId {
    PersonId(format!("p{i}"))
}
fn group_id(i: usize) -> GroupId {
    GroupId(format!("g{i}"))
}
fn role_id(i: usize) -> RoleId {
    RoleId(format!("r{i}"))
}
fn role_name(i: usize) -> String {
    format!("R{i}")
}
fn app_name(i: usize) -> String {
    format!("A{i}")
}
fn privilege_name(k: usize) -> String {
    format!("p{k}")
}
fn alias_name(k: usize) -> String {
    format!("alias{k}")
}

/// Privilege `k` of a catalog by canonical name, or by alias when asked and it has one.
fn privilege_ref(cat: &RawCatalog, k: usize, by_alias: bool) -> String {
    let k = k % cat.privileges.len();
    if by_alias && cat.privileges[k].alias { alias_name(k) } else { privilege_name(k) }
}

fn build_catalog(i: usize, rc: &RawCatalog, n_roles: usize) -> Catalog {
    let n = rc.privileges.len();
    let privileges = rc
        .privileges
        .iter()
        .enumerate()
        .map(|(k, p)| PrivilegeDef {
            name: privilege_name(k),
            description: String::new(),
            // Only earlier privileges: acyclic. Some by alias.
            requires: bits(p.requires, k).map(|j| privilege_ref(rc, j, p.requires & 0x80 != 0)).collect(),
            aliases: if p.alias { vec![alias_name(k)] } else { vec![] },
            permission: p.permission.map(perm),
        })
        .collect();
    let mut seen = BTreeSet::new();
    let type_guards = rc
        .type_guards
        .iter()
        .filter(|(kind, b, _, _)| seen.insert((*kind, *b)))
        .map(|&(kind, b, p, alias)| TypeGuard {
            kind: ALL_KINDS[kind].to_owned(),
            permission: perm(b),
            privilege: privilege_ref(rc, p, alias),
        })
        .collect();
    let mut seen = BTreeSet::new();
    let property_guards = rc
        .property_guards
        .iter()
        .filter(|(kind, prop, change, _, _)| seen.insert((*kind, *prop, *change)))
        .map(|&(kind, prop, change, p, alias)| PropertyGuard {
            kind: ALL_KINDS[kind].to_owned(),
            property: PROPERTIES[prop].to_owned(),
            access: if change { Perm::Change } else { Perm::Read },
            privilege: privilege_ref(rc, p, alias),
        })
        .collect();
    let legacy_annex_sections = match rc.legacy {
        0 => vec!["ges".to_owned(), "gms".to_owned()],
        1 => vec!["gms".to_owned()],
        _ => vec![],
    };
    let mut seen = BTreeSet::new();
    let roles = rc
        .templates
        .iter()
        .enumerate()
        .filter(|(_, (legacy, _, _))| seen.insert(*legacy % 3))
        .map(|(t, &(legacy, mask, alias_mask))| RoleTemplate {
            name: format!("T{t}"),
            legacy_name: Some(LEGACY[legacy % 3].to_owned()),
            description: String::new(),
            privileges: bits(mask, n).map(|k| privilege_ref(rc, k, alias_mask & (1 << k) != 0)).collect(),
        })
        .collect();
    let mut seen = BTreeSet::new();
    let role_rank = rc.rank.iter().map(|&r| role_name(r % (n_roles + 1))).filter(|r| seen.insert(r.clone())).collect();
    Catalog {
        name: app_name(i),
        description: String::new(),
        name_pattern: None,
        privileges,
        type_guards,
        property_guards,
        open_when_unconfigured: rc.open,
        legacy_annex_sections,
        restricted_types: bits(rc.restricted, ALL_KINDS.len()).map(|k| ALL_KINDS[k].to_owned()).collect(),
        role_rank,
        roles,
    }
}

/// The write batch that creates the raw tenant.
fn mutations(t: &RawTenant) -> Vec<Mutation> {
    let nf = t.folders.len() + 1;
    let np = t.persons.len();
    let ng = t.groups.len();
    let nr = t.roles.len();
    let mut out = vec![
        Mutation::CreateTenant { name: "T".into(), presets: vec![], defaults: false },
        Mutation::PutFolder(Folder { id: folder_id(0), name: "root".into(), parent: None }),
    ];
    if t.restricted_mode {
        out.push(Mutation::SetRestrictedMode { on: true });
    }
    for (i, &parent) in t.folders.iter().enumerate() {
        let i = i + 1;
        out.push(Mutation::PutFolder(Folder {
            id: folder_id(i),
            name: format!("f{i}"),
            parent: Some(folder_id(parent % i)),
        }));
    }
    for (i, p) in t.persons.iter().enumerate() {
        let mut annex: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for &(section, value) in &p.annex {
            let opts = annex.entry(SECTIONS[section].to_owned()).or_default();
            match value {
                Some(v) => opts.insert("role".into(), LEGACY[v].to_owned()),
                None => opts.insert("queue".into(), "x".to_owned()),
            };
        }
        out.push(Mutation::PutPerson(Person {
            id: person_id(i),
            username: format!("user{i}"),
            enabled: p.enabled,
            folder: folder_id(p.folder % nf),
            annex,
            properties: [("Name".to_owned(), format!("n{i}"))].into_iter().collect(),
        }));
    }
    for (i, &(members, folder)) in t.groups.iter().enumerate() {
        out.push(Mutation::PutGroup(AccessGroup {
            id: group_id(i),
            name: format!("G{i}"),
            folder: folder_id(folder % nf),
            members: bits(members, np).map(person_id).collect(),
        }));
    }
    for (i, c) in t.catalogs.iter().enumerate() {
        out.push(Mutation::PutCatalog(build_catalog(i, c, nr)));
    }
    for (i, r) in t.roles.iter().enumerate() {
        let privileges = r
            .privileges
            .iter()
            .zip(&t.catalogs)
            .enumerate()
            .map(|(a, (&(canon, alias), rc))| {
                let n = rc.privileges.len();
                let mut names: BTreeSet<String> = bits(canon, n).map(privilege_name).collect();
                names.extend(bits(alias, n).map(|k| privilege_ref(rc, k, true)));
                (app_name(a), names)
            })
            .collect();
        out.push(Mutation::PutRole(Role {
            id: role_id(i),
            name: role_name(i),
            folder: folder_id(r.folder % nf),
            privileges,
            members: RoleMembers {
                persons: bits(r.persons, np).map(person_id).collect(),
                groups: bits(r.groups, ng).map(group_id).collect(),
            },
        }));
    }
    for (i, &members) in t.partitions.iter().enumerate() {
        out.push(Mutation::PutPartition(Partition {
            id: PartitionId(format!("part{i}")),
            name: format!("Part{i}"),
            members: bits(members, np).map(person_id).collect(),
        }));
    }
    let objects: Vec<ObjectKey> = t
        .objects
        .iter()
        .map(|o| ObjectKey {
            kind: OBJECT_KINDS[o.kind % t.object_kinds].to_owned(),
            id: ObjectId(OBJECT_IDS[o.id].to_owned()),
        })
        .collect();
    for (o, key) in t.objects.iter().zip(&objects) {
        out.push(Mutation::PutObject(Object {
            kind: key.kind.clone(),
            id: key.id.clone(),
            // Unique per type: a repeated (type, id) replaces the earlier object.
            name: format!("N{}", key.id),
            folder: folder_id(o.folder % nf),
            partitions: bits(o.partitions, t.partitions.len()).map(|p| PartitionId(format!("part{p}"))).collect(),
            properties: bits(o.properties, PROPERTIES.len())
                .map(|p| (PROPERTIES[p].to_owned(), format!("v{p}")))
                .collect(),
        }));
    }
    if let Some(allow) = t.base {
        out.push(Mutation::PutAce(Ace {
            target: Target::Folder(folder_id(0)),
            subject: Subject::Everyone,
            allow: perms(allow | 1),
            deny: PermSet::EMPTY,
            propagate: true,
        }));
    }
    for a in &t.aces {
        let (kind, i) = a.target;
        let target = match kind {
            1 if np > 0 => Target::Person(person_id(i % np)),
            2 if ng > 0 => Target::Group(group_id(i % ng)),
            3 if nr > 0 => Target::Role(role_id(i % nr)),
            4 if !objects.is_empty() => Target::Object(objects[i % objects.len()].clone()),
            _ => Target::Folder(folder_id(i % nf)),
        };
        let subject = match a.subject {
            (1, i) => Subject::Person(person_id(i % np)),
            (2, i) if ng > 0 => Subject::Group(group_id(i % ng)),
            _ => Subject::Everyone,
        };
        let propagate = a.propagate && matches!(target, Target::Folder(_));
        out.push(Mutation::PutAce(Ace { target, subject, allow: perms(a.allow), deny: perms(a.deny), propagate }));
    }
    out
}

/// Applies the batch; the generator only produces valid tenants.
fn build(t: &RawTenant) -> TenantConfig {
    let muts = mutations(t);
    match TenantConfig::empty(TenantId(TENANT.into())).apply_batch(&muts) {
        Ok(c) => c,
        Err(e) => panic!("generated an invalid tenant: {e}\n{muts:#?}"),
    }
}

// ---------------------------------------------------------------------------
// Queries.

/// Every node of the tenant as (type, id).
fn nodes(c: &TenantConfig) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    out.extend(c.folders.keys().map(|k| ("Folder".to_owned(), k.0.clone())));
    out.extend(c.persons.keys().map(|k| ("Person".to_owned(), k.0.clone())));
    out.extend(c.groups.keys().map(|k| ("AccessGroup".to_owned(), k.0.clone())));
    out.extend(c.roles.keys().map(|k| ("Role".to_owned(), k.0.clone())));
    out.extend(c.objects.keys().map(|k| (k.kind.clone(), k.id.0.clone())));
    out
}

/// Query kinds: every type, plus one nobody uses.
fn query_kind(i: usize) -> &'static str {
    ALL_KINDS.get(i).copied().unwrap_or("Nope")
}

/// A reference to an existing thing, or (1 in 9) to one that does not exist.
fn ref_idx() -> impl Strategy<Value = usize> {
    0usize..18
}

fn subject_id(c: &TenantConfig, i: usize) -> String {
    if i >= 16 { "nobody".to_owned() } else { format!("p{}", i % c.persons.len()) }
}

fn app_ref(t: &RawTenant, i: usize) -> (String, Option<&RawCatalog>) {
    if i >= 16 {
        ("Nope".to_owned(), None)
    } else {
        let i = i % t.catalogs.len();
        (app_name(i), Some(&t.catalogs[i]))
    }
}

struct Owned {
    subject: String,
    application: Option<String>,
    permission: Option<Perm>,
    object: Option<(String, String, Option<String>)>,
    privilege: Option<String>,
    property: Option<String>,
}

impl Owned {
    fn request(&self) -> CheckRequest<'_> {
        CheckRequest {
            subject: &self.subject,
            application: self.application.as_deref(),
            permission: self.permission,
            object: self.object.as_ref().map(|(kind, id, tenant)| ObjectRef { kind, id, tenant: tenant.as_deref() }),
            privilege: self.privilege.as_deref(),
            property: self.property.as_deref(),
        }
    }
}

fn check_query(t: &RawTenant, c: &TenantConfig, all: &[(String, String)], q: &RawCheck) -> Owned {
    let (application, cat) = match q.application {
        Some(a) => {
            let (name, cat) = app_ref(t, a);
            (Some(name), cat)
        }
        None => (None, None),
    };
    let object = q.object.as_ref().map(|(o, tenant)| {
        let (kind, id) = match o {
            RawObj::Node(i) => all[i % all.len()].clone(),
            RawObj::Any(k, i) => {
                let id = if *i % (all.len() + 1) == all.len() { "zz".to_owned() } else { all[i % all.len()].1.clone() };
                (query_kind(*k).to_owned(), id)
            }
        };
        let tenant = match tenant {
            1 => Some(TENANT.to_owned()),
            2 => Some("other".to_owned()),
            _ => None,
        };
        (kind, id, tenant)
    });
    let privilege = q.privilege.map(|(k, alias)| match cat {
        Some(rc) if k < 16 => privilege_ref(rc, k, alias),
        Some(_) => "nope".to_owned(),
        None => privilege_name(k % 3),
    });
    Owned {
        subject: subject_id(c, q.subject),
        application,
        permission: q.permission.map(perm),
        object,
        privilege,
        property: q.property.map(|p| PROPERTIES[p].to_owned()),
    }
}

fn yaml(c: &TenantConfig) -> String {
    TenantFile::from_config(c).to_yaml().unwrap_or_else(|e| format!("<cannot export: {e}>"))
}

/// Runs every query of one case on both evaluators.
fn run_case(case: &RawCase) -> Result<(), TestCaseError> {
    let t = &case.tenant;
    let c = build(t);
    let view = TenantView::build(&c, 1);
    let all = nodes(&c);

    for q in &case.checks {
        let owned = check_query(t, &c, &all, q);
        let req = owned.request();
        let fast = view.check(&req);
        let slow = reference::check(&c, &req);
        seen(format!("check {}", slow.code()));
        prop_assert_eq!(
            fast.reason,
            slow,
            "check {:?}\nfast engine = {:?}, reference = {:?}\ntenant file:\n{}",
            req,
            fast.reason,
            slow,
            yaml(&c)
        );
    }

    for (i, q) in case.checks.iter().enumerate() {
        let owned = check_query(t, &c, &all, q);
        reverse_subjects(&view, &c, &owned.request(), 1 + i % 3)?;
    }

    for &(s, a) in &case.privileges {
        let (app, cat) = app_ref(t, a);
        if let Some(rc) = cat {
            let name = privilege_ref(rc, s % rc.privileges.len().max(1), s % 2 == 1);
            reverse_holders(&view, &c, &app, &name, 1 + s % 3)?;
        }
    }

    for &(s, a) in &case.privileges {
        let person = subject_id(&c, s);
        let (app, _) = app_ref(t, a);
        let fast = view.effective_privileges(&person, &app);
        let slow = reference::effective_privileges(&c, &person, &app);
        seen(match &slow {
            Ok(s) if s.is_empty() => "privileges empty".to_owned(),
            Ok(_) => "privileges some".to_owned(),
            Err(r) => format!("privileges {}", r.code()),
        });
        let fast_set =
            fast.as_ref().map(|e| e.privileges.iter().cloned().collect::<BTreeSet<String>>()).map_err(|r| *r);
        prop_assert_eq!(
            &fast_set,
            &slow,
            "effective privileges of {} in {} (left: fast engine, right: reference)\ntenant file:\n{}",
            person,
            app,
            yaml(&c)
        );
        if let Ok(e) = &fast {
            let slow_primary = reference::primary_role(&c, &person, &app);
            seen(format!("primary role {}", if slow_primary.is_some() { "some" } else { "none" }));
            prop_assert_eq!(
                &e.primary_role,
                &slow_primary,
                "primary role of {} in {} (left: fast engine, right: reference)\ntenant file:\n{}",
                person,
                app,
                yaml(&c)
            );
        }
    }

    for l in &case.lists {
        let subject = subject_id(&c, l.subject);
        let nf = c.folders.len();
        let folder = l.folder.map(|f| if f >= 16 { "zz".to_owned() } else { folder_id(f % nf).0 });
        let application = l.application.map(|a| app_ref(t, a).0);
        let req = ListRequest {
            subject: &subject,
            kind: query_kind(l.kind),
            folder: folder.as_deref(),
            permission: perm(l.permission),
            application: application.as_deref(),
            after: None,
            limit: l.limit,
        };
        let slow = reference::list_visible(&c, &req);
        seen(match &slow {
            Ok(v) if v.is_empty() => "list empty".to_owned(),
            Ok(v) if v.len() > l.limit => "list several pages".to_owned(),
            Ok(_) => "list one page".to_owned(),
            Err(r) => format!("list {}", r.code()),
        });
        // Follow the pages.
        let mut fast: Result<Vec<String>, Reason> = Ok(Vec::new());
        let mut after: Option<String> = None;
        for _ in 0..=all.len() + 1 {
            let page = view.list_visible(&ListRequest { after: after.as_deref(), ..req });
            match (page, &mut fast) {
                (Err(r), _) => {
                    fast = Err(r);
                    break;
                }
                (Ok(p), Ok(items)) => {
                    prop_assert!(p.items.len() <= l.limit, "page larger than the limit: {:?}", req);
                    items.extend(p.items.into_iter().map(|v| v.id));
                    match p.next_after {
                        Some(a) => after = Some(a),
                        None => {
                            after = None;
                            break;
                        }
                    }
                }
                (Ok(_), Err(_)) => unreachable!(),
            }
        }
        prop_assert!(after.is_none(), "paging did not end: {:?}", req);
        prop_assert_eq!(
            &fast,
            &slow,
            "list {:?} (left: fast engine, right: reference)\ntenant file:\n{}",
            req,
            yaml(&c)
        );
        // One page from an arbitrary cursor (an id, or a string between ids).
        let (cursor, page_limit) = &l.page;
        let cursor = cursor.map(|(i, how)| {
            let id = all.get(i % all.len().max(1)).map(|x| x.1.clone()).unwrap_or_default();
            match how {
                0 => id,
                1 => format!("{id}~"),
                2 => id.chars().take(id.chars().count() / 2).collect(),
                _ => String::new(),
            }
        });
        let req = ListRequest { after: cursor.as_deref(), limit: *page_limit, ..req };
        let page = view.list_visible_refs(&req);
        if let Some(tail) = page_matches(&c, &req, page, &slow)? {
            seen(format!("list page from a cursor: {tail}"));
        }
    }
    Ok(())
}

/// Whether a page equals the reference's full listing `slow` cut at the
/// request's cursor and limit: the same ids, `next_after` the last of them
/// exactly when more follow, and each object's name, folder and (for Read)
/// the properties the reference lets the person read. `Some` names the case.
fn page_matches(
    c: &TenantConfig,
    req: &ListRequest<'_>,
    page: Result<ListPageRef<'_>, Reason>,
    slow: &Result<Vec<String>, Reason>,
) -> Result<Option<&'static str>, TestCaseError> {
    let (p, ids) = match (page, slow) {
        (Err(a), Err(b)) => {
            prop_assert_eq!(&a, b, "list {:?}", req);
            return Ok(None);
        }
        (Ok(p), Ok(ids)) => (p, ids),
        (page, _) => {
            prop_assert!(false, "list {:?}: fast {:?}, reference {:?}\ntenant file:\n{}", req, page, slow, yaml(c));
            return Ok(None);
        }
    };
    let rest: Vec<&str> = ids.iter().map(String::as_str).filter(|id| req.after.is_none_or(|a| *id > a)).collect();
    let want: Vec<&str> = rest.iter().take(req.limit.max(1)).copied().collect();
    let want_next = if rest.len() > want.len() { want.last().copied() } else { None };
    let got: Vec<&str> = p.items.iter().map(|v| v.id).collect();
    prop_assert_eq!(
        (&got, p.next_after),
        (&want, want_next),
        "page {:?} (left: fast engine, right: reference)\ntenant file:\n{}",
        req,
        yaml(c)
    );
    for v in &p.items {
        let key = ObjectKey { kind: req.kind.to_owned(), id: ObjectId(v.id.to_owned()) };
        let Some(o) = c.objects.get(&key) else { continue };
        prop_assert_eq!((v.name, v.folder), (o.name.as_str(), o.folder.as_str()), "item of {:?}", req);
        if req.permission == Perm::Read {
            let readable: Vec<(&str, &str)> = o
                .properties
                .iter()
                .filter(|(k, _)| {
                    let q = CheckRequest {
                        subject: req.subject,
                        application: req.application,
                        permission: Some(Perm::Read),
                        object: Some(ObjectRef { kind: req.kind, id: v.id, tenant: None }),
                        privilege: None,
                        property: Some(k.as_str()),
                    };
                    reference::check(c, &q).is_allowed()
                })
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            prop_assert_eq!(&v.properties, &readable, "properties of {} in {:?}", v.id, req);
        }
    }
    Ok(Some(match (want.is_empty(), want_next.is_some()) {
        (true, _) => "empty",
        (false, true) => "more follow",
        (false, false) => "last page",
    }))
}

/// Follows the pages of a reverse lookup to the end.
fn all_pages<'v, T>(
    mut page: impl FnMut(Option<&str>) -> Result<(Vec<T>, Option<&'v str>), Reason>,
    bound: usize,
) -> Result<Vec<T>, Reason> {
    let mut out = Vec::new();
    let mut after: Option<&str> = None;
    for _ in 0..=bound {
        let (items, next) = page(after)?;
        out.extend(items);
        match next {
            Some(n) => after = Some(n),
            None => return Ok(out),
        }
    }
    panic!("paging did not end");
}

/// `allowed_subjects` of `req` against the reference evaluator asked person
/// by person: the same persons, with the same reasons; an error only when
/// the reference gives every enabled person that reason.
fn reverse_subjects(
    view: &TenantView,
    c: &TenantConfig,
    req: &CheckRequest<'_>,
    limit: usize,
) -> Result<(), TestCaseError> {
    let fast = all_pages(
        |after| {
            view.allowed_subjects(req, after, limit).map(|p| {
                assert!(p.items.len() <= limit, "page larger than the limit");
                (p.items.iter().map(|s| (s.person.to_owned(), s.reason)).collect::<Vec<_>>(), p.next_after)
            })
        },
        c.persons.len() + 1,
    );
    let slow: Vec<(String, Reason)> =
        c.persons.keys().map(|p| (p.0.clone(), reference::check(c, &CheckRequest { subject: &p.0, ..*req }))).collect();
    match &fast {
        Ok(items) => {
            let allowed: Vec<(String, Reason)> = slow.iter().filter(|(_, r)| r.is_allowed()).cloned().collect();
            seen(format!("subjects {}", if allowed.is_empty() { "none" } else { "some" }));
            prop_assert_eq!(
                items,
                &allowed,
                "subjects of {:?} (left: fast engine, right: reference)\ntenant file:\n{}",
                req,
                yaml(c)
            );
        }
        Err(reason) => {
            seen(format!("subjects {}", reason.code()));
            for (p, r) in &slow {
                let enabled = c.persons.get(&PersonId(p.clone())).is_some_and(|x| x.enabled);
                prop_assert!(
                    !r.is_allowed() && (!enabled || r == reason),
                    "subjects of {:?} failed with {:?} but the reference says {:?} for {}\ntenant file:\n{}",
                    req,
                    reason,
                    r,
                    p,
                    yaml(c)
                );
            }
        }
    }
    Ok(())
}

/// `privilege_holders` against the reference evaluator's check of the
/// privilege alone, person by person.
fn reverse_holders(
    view: &TenantView,
    c: &TenantConfig,
    app: &str,
    privilege: &str,
    limit: usize,
) -> Result<(), TestCaseError> {
    let fast = all_pages(
        |after| {
            view.privilege_holders(app, privilege, after, limit)
                .map(|p| (p.items.iter().map(|h| h.person.to_owned()).collect::<Vec<_>>(), p.next_after))
        },
        c.persons.len() + 1,
    );
    let slow: Vec<String> = c
        .persons
        .keys()
        .filter(|p| {
            let r = CheckRequest {
                subject: &p.0,
                application: Some(app),
                privilege: Some(privilege),
                ..Default::default()
            };
            reference::check(c, &r).is_allowed()
        })
        .map(|p| p.0.clone())
        .collect();
    seen(format!(
        "holders {}",
        match &fast {
            Ok(v) if v.is_empty() => "none".to_owned(),
            Ok(_) => "some".to_owned(),
            Err(r) => r.code().to_owned(),
        }
    ));
    prop_assert_eq!(
        fast,
        Ok(slow),
        "holders of {} in {} (left: fast engine, right: reference)\ntenant file:\n{}",
        privilege,
        app,
        yaml(c)
    );
    Ok(())
}

fn cases() -> u32 {
    std::env::var("AUTHZD_DIFF_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000)
}

#[test]
fn fast_engine_matches_the_reference() {
    let config = ProptestConfig {
        cases: cases(),
        // Shrunk failures are reported in full; no regression file is written.
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&raw_case(), |case| run_case(&case));
    if let Ok(m) = SEEN.lock() {
        for (what, n) in m.iter() {
            println!("{n:>9}  {what}");
        }
    }
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// The embedded follower (`authzd::follow::Follower`, the library shape of
/// a follower) answers exactly as the server it follows, on the generator's
/// tenants: each round replaces the tenant on a real server (SQLite store)
/// with a new random one, waits until the follower has the import's
/// revision, and asks the round's questions of both, the server over gRPC.
/// Reasons and revisions must be equal, asked of the follower and of a
/// `TenantReader` kept across rounds. A second follower starts half-way,
/// so both paths are covered: the first follower applies every round from
/// the change stream, the second loads an existing tenant from `Export`.
#[test]
fn embedded_follower_answers_as_the_server() {
    use authzd::follow::{Follower, UpstreamSettings};
    use authzd::proto::authzd::v1 as pb;
    use authzd::service::convert;
    use proptest::strategy::ValueTree;
    use std::time::Duration;

    const ROUNDS: usize = 40;
    let wait = Duration::from_secs(20);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = format!("sqlite://{}", dir.path().join("upstream.db").display());
        let server = support::server::serve(authzd::config::ServerConfig::new(store)).await;
        let mut admin = server.admin().await;
        let mut decisions = server.decisions().await;
        let first = Follower::start(UpstreamSettings::new(server.url())).unwrap();
        first.ready(wait).await.unwrap();
        // Each follower asked directly, and through a reader kept across the rounds.
        let mut readers = vec![first.reader(TENANT)];
        let mut followers = vec![("streamed", first)];
        let mut runner = TestRunner::new(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() });
        let (mut compared, mut refused) = (0usize, 0usize);
        for round in 0..ROUNDS {
            let case = raw_case().new_tree(&mut runner).unwrap().current();
            let c = build(&case.tenant);
            let file = yaml(&c);
            let imported = admin
                .import(pb::ImportRequest { yaml: file.clone(), replace: true, dry_run: false, include_changes: false })
                .await
                .unwrap_or_else(|s| panic!("round {round}: the server refused the tenant: {s:?}\n{file}"))
                .into_inner();
            if round == ROUNDS / 2 {
                let loaded = Follower::start(UpstreamSettings::new(server.url())).unwrap();
                loaded.ready(wait).await.unwrap();
                readers.push(loaded.reader(TENANT));
                followers.push(("loaded", loaded));
            }
            for (name, f) in &followers {
                f.wait_for(imported.revision, wait).await.unwrap_or_else(|e| panic!("{name} follower: {e}"));
            }
            let all = nodes(&c);
            for q in &case.checks {
                let owned = check_query(&case.tenant, &c, &all, q);
                let asked = decisions
                    .check(pb::CheckRequest {
                        tenant: TENANT.to_owned(),
                        person: owned.subject.clone(),
                        application: owned.application.clone(),
                        permission: owned.permission.map_or(0, |p| convert::permission_pb(p) as i32),
                        object: owned.object.as_ref().map(|(kind, id, tenant)| pb::ObjectRef {
                            r#type: kind.clone(),
                            id: id.clone(),
                            tenant: tenant.clone(),
                        }),
                        privilege: owned.privilege.clone(),
                        property: owned.property.clone(),
                        explain: false,
                        at_least_revision: imported.revision,
                    })
                    .await;
                let served = match asked {
                    Ok(a) => a.into_inner(),
                    // A question the server refuses as malformed (a privilege
                    // without its application, nothing to check): the engine
                    // the followers call must deny it.
                    Err(s) if s.code() == tonic::Code::InvalidArgument => {
                        for (name, f) in &followers {
                            let embedded = f.check(TENANT, &owned.request());
                            assert!(
                                !embedded.allowed(),
                                "round {round}: the {name} follower allows a question the server refuses ({}): {:?}",
                                s.message(),
                                owned.request()
                            );
                            refused += 1;
                        }
                        continue;
                    }
                    Err(s) => panic!("round {round}: the server failed a check: {s:?}"),
                };
                for ((name, f), reader) in followers.iter().zip(readers.iter_mut()) {
                    let embedded = f.check(TENANT, &owned.request());
                    assert_eq!(reader.check(&owned.request()), embedded, "round {round}: the {name} follower's reader");
                    assert_eq!(
                        (convert::reason(embedded.reason) as i32, embedded.revision),
                        (served.reason, served.revision),
                        "round {round}: the {name} follower answers {:?} at revision {}, the server {:?} at {}\ncheck {:?}\ntenant file:\n{file}",
                        embedded.reason,
                        embedded.revision,
                        pb::Reason::try_from(served.reason),
                        served.revision,
                        owned.request(),
                    );
                    compared += 1;
                }
            }
        }
        // Both followers took part, and every answer was compared.
        assert_eq!(followers.len(), 2);
        let checks = 24; // raw_case's questions per round
        assert_eq!(compared + refused, (ROUNDS / 2) * checks + (ROUNDS - ROUNDS / 2) * checks * 2);
        assert!(compared > refused, "most questions are well formed: {compared} compared, {refused} refused");
        println!("embedded followers: {compared} answers compared with the server's, {refused} malformed questions denied");
        for (_, f) in &followers {
            f.close();
        }
        server.stop().await;
    });
}

/// Listing on a generated tenant large enough for many 64-object words and
/// for both forms of the engine's ACL groups (folder-wide ones, whose metrics
/// interleave in id order, and object-level ones): random pages — cursor,
/// limit, folder scope, permission — equal the reference's listing cut there.
#[test]
fn paged_listing_of_a_generated_tenant_matches_the_reference() {
    use authzd::synth::{self, Rng, SynthParams};
    let p = SynthParams { persons: 10, groups: 6, roles: 4, privileges: 30, metrics: 1200, denies: 160, seed: 5 };
    let c = synth::tenant("t", &p).unwrap();
    let view = TenantView::build(&c, 1);
    let leaves = synth::metric_folders();
    let folders: Vec<Option<String>> = vec![
        None,
        Some(validate::METRICS_FOLDER.to_owned()),
        leaves.first().map(|l| l.2.clone()),
        leaves.get(7).map(|l| l.2.clone()),
        Some(folders::PERSONS.to_owned()),
    ];
    let mut reference_lists: BTreeMap<(usize, usize, usize), Result<Vec<String>, Reason>> = BTreeMap::new();
    let mut rng = Rng::new(11);
    for _ in 0..(cases() / 5).max(100) {
        let (who, perm_ix, scope) = (rng.below(p.persons + 1), rng.below(4), rng.below(folders.len()));
        let person = synth::person_id(who);
        let permission = if perm_ix == 0 { Perm::Change } else { Perm::Read };
        let m = synth::metric_id(rng.below(p.metrics));
        let cursor = match rng.below(5) {
            0 => None,
            1 => Some(m),
            2 => Some(format!("{m}~")),
            3 => Some(m.chars().take(1 + rng.below(m.len())).collect()),
            _ => Some(String::new()),
        };
        let limit = [0, 1, 2, 63, 64, 65, 130, 500, usize::MAX][rng.below(9)];
        let req = ListRequest {
            subject: &person,
            kind: types::METRIC,
            folder: folders[scope].as_deref(),
            permission,
            application: None,
            after: cursor.as_deref(),
            limit,
        };
        let slow = reference_lists.entry((who, perm_ix, scope)).or_insert_with(|| reference::list_visible(&c, &req));
        match page_matches(&c, &req, view.list_visible_refs(&req), slow) {
            Ok(Some(tail)) => seen(format!("generated tenant: page {tail}")),
            Ok(None) => {}
            Err(e) => panic!("{e}"),
        }
    }
    if let Ok(m) = SEEN.lock() {
        for (what, n) in m.iter().filter(|(w, _)| w.starts_with("generated")) {
            println!("{n:>9}  {what}");
        }
    }
}
