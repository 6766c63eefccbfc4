//! The compiled, immutable view of one tenant at one revision, and the fast
//! decisions over it.
//!
//! Everything a check needs is precomputed when the view is built, so the hot
//! path is lookups and a short merge:
//! - every ACE target (folder, person, group, role, object) is a *node*;
//!   folders are numbered in pre-order, so "under folder F" is an interval test;
//! - each node points at its *effective ACL*: the entries that apply to it per
//!   principal after inheritance (SPEC §2 rule 2), sorted by principal and
//!   interned, so the 100,000 metrics of one folder share one ACL;
//! - each person carries its sorted principal list (everyone, its groups,
//!   itself), so a permission check is a merge of two sorted short lists;
//! - each (person, application) has its granted and effective privilege
//!   bitsets, its source and primary role (SPEC §3), computed once.
//!
//! A check borrows its strings and allocates nothing. Evidence (`explain`) and
//! listings allocate their answers.
//!
//! # Incremental compilation
//!
//! A view is made of layers, each behind an `Arc`, so the next revision's
//! view shares whatever a batch did not change ([`TenantView::build_next`]):
//!
//! | layer | rebuilt when the batch changes |
//! |---|---|
//! | graph (nodes, folders, kinds, ids) and catalogs | folders, objects, catalogs, or which persons, groups, roles or partitions exist, their names, places or properties |
//! | ACL table | any entry (ACE) |
//! | roles | any role |
//! | one person's entry (principals, privilege rows) | what that person's decisions read: the person itself, its group, partition and role memberships, a role it holds, or the entries on such a role (role readability, SPEC §3 rule 3) |
//!
//! So a role edit recomputes that role's holders, and a group membership
//! change only the persons who joined or left; every other person's entry is
//! the previous view's, shared. A batch that changes the graph compiles the
//! whole tenant. The rules of which person a change touches are in
//! `dirty_persons`; `tests/incremental.rs` checks on random batch sequences
//! that an incremental view equals the view compiled from scratch.

use super::types::*;

use crate::model::{self, Perm, PermSet, PersonId, Revision, Subject, Target, TenantConfig};
use hashbrown::HashTable;
use rustc_hash::{FxBuildHasher, FxHashMap, FxHashSet};
use std::cmp::Reverse;
use std::hash::BuildHasher;
use std::sync::Arc;

const NONE: u32 = u32::MAX;
/// Principal index of `everyone`.
const EVERYONE: u32 = 0;

/// One row of an effective ACL: the entry a principal has on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct AclEntry {
    principal: u32,
    allow: u8,
    deny: u8,
    /// Node holding the ACE (the node itself, or the folder it came from).
    origin: u32,
    propagate: bool,
}

/// One person: memberships and privilege rows. Shared between successive
/// views while nothing the person's decisions read changes.
#[derive(Debug, PartialEq, Eq)]
struct PersonC {
    id: String,
    enabled: bool,
    /// Sorted principal indexes: everyone, groups, the person itself.
    principals: Box<[u32]>,
    /// Sorted partition indexes.
    partitions: Box<[u32]>,
    /// Roles assigned directly or through a group (role indexes), sorted.
    roles: Box<[u32]>,
    /// Granted privileges: each application's words at its `offset`.
    granted: Box<[u64]>,
    /// Effective privileges (granted, with every requirement effective).
    effective: Box<[u64]>,
    /// Per application index.
    apps: Box<[PersonApp]>,
}

#[derive(Debug, PartialEq, Eq)]
struct NodeC {
    kind: u32,
    id: String,
    name: String,
    /// Containing folder node, or NONE for the root folder.
    folder: u32,
    /// Pre-order number of the folder the node is in (a folder: itself).
    pre: u32,
    partitions: Box<[u32]>,
    properties: Box<[(String, String)]>,
}

#[derive(Debug, Default)]
struct KindC {
    name: String,
    /// Node indexes hashed by their id: the ids are stored once, in the nodes.
    by_id: HashTable<u32>,
    /// Nodes of this kind ordered by id (listing order).
    sorted: Vec<u32>,
}

#[derive(Debug, PartialEq, Eq)]
struct PrivC {
    name: String,
    requires: Box<[u32]>,
    permission: Option<Perm>,
}

#[derive(Debug, PartialEq, Eq)]
struct AppC {
    name: String,
    privs: Vec<PrivC>,
    /// Canonical privilege names in catalog order, shared with change streams.
    names: Arc<[String]>,
    /// Name or alias → privilege index.
    priv_ix: FxHashMap<String, u32>,
    /// Privileges in dependency order (requirements first).
    topo: Vec<u32>,
    /// Offset of this application's words in a person's privilege row.
    offset: usize,
    words: usize,
    /// (kind, permission bit index) → privilege.
    type_guards: FxHashMap<(u32, u8), u32>,
    /// (kind, property, access, privilege).
    property_guards: Vec<(u32, String, Perm, u32)>,
    restricted: FxHashSet<u32>,
    open: bool,
    legacy_sections: Vec<String>,
    /// Legacy role name → (template name, granted privileges).
    legacy: FxHashMap<String, (String, Vec<u32>)>,
    role_rank: Vec<String>,
}

#[derive(Debug, PartialEq, Eq)]
struct RoleC {
    node: u32,
    name: String,
    /// Per application index: the role's privileges in it (sorted, canonical).
    privs: FxHashMap<u32, Vec<u32>>,
}

/// How a person's privileges in one application were derived.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Legacy { section: String, role: String, template: Option<String> },
    Roles,
    Open,
}

#[derive(Debug, PartialEq, Eq)]
struct PersonApp {
    source: Source,
    /// Applied roles (readable, holding a privilege of the application).
    applied: Vec<u32>,
    unreadable: Vec<u32>,
    primary: Option<String>,
}

/// What a principal's entry says about one permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AclVerdict {
    Deny,
    Allow,
    Nothing,
}

/// Every node and id of the tenant.
#[derive(Debug)]
struct Graph {
    person_ix: FxHashMap<String, u32>,
    /// Group ids in id order (principal `1 + i`).
    groups: Vec<String>,
    partitions: Vec<String>,
    nodes: Vec<NodeC>,
    /// Pre-order end (exclusive) of each folder's subtree, by folder node index.
    folder_end: Vec<u32>,
    kinds: Vec<KindC>,
    kind_ix: FxHashMap<String, u32>,
}

/// The interned effective ACLs and which one each node has.
#[derive(Debug, PartialEq, Eq)]
struct AclTable {
    acls: Vec<Box<[AclEntry]>>,
    /// By node index.
    node_acl: Vec<u32>,
    /// By kind index: the kind's nodes grouped by their ACL, for listings.
    listing: Vec<KindAcls>,
}

/// One kind's nodes grouped by effective ACL. Positions are indexes into the
/// kind's id order ([`KindC::sorted`]), so a listing decides each distinct
/// ACL once, unites the groups it allows and walks them in id order.
#[derive(Debug, Default, PartialEq, Eq)]
struct KindAcls {
    /// Nodes of the kind (the length of `KindC::sorted`).
    len: usize,
    /// One group per distinct ACL the kind's nodes have.
    groups: Vec<AclGroup>,
}

/// The nodes of one kind that have ACL `acl`.
#[derive(Debug, PartialEq, Eq)]
struct AclGroup {
    acl: u32,
    members: Members,
}

/// Positions in a kind's id order, in whichever form is smaller.
#[derive(Debug, PartialEq, Eq)]
enum Members {
    /// Ascending positions (a group of fewer than 1/32 of the kind's nodes).
    Positions(Box<[u32]>),
    /// Bit `i % 64` of word `i / 64`: position `i`.
    Bits(Box<[u64]>),
}

impl KindAcls {
    /// Groups a kind's nodes (`sorted`, in id order) by their ACL.
    fn compile(sorted: &[u32], node_acl: &[u32], acls: usize) -> KindAcls {
        let len = sorted.len();
        // Group index per ACL (NONE: no node of the kind has it yet).
        let mut slot = vec![NONE; acls];
        let mut lists: Vec<(u32, Vec<u32>)> = Vec::new();
        for (pos, &n) in sorted.iter().enumerate() {
            let Some(&acl) = node_acl.get(n as usize) else { continue };
            let Some(s) = slot.get_mut(acl as usize) else { continue };
            if *s == NONE {
                *s = lists.len() as u32;
                lists.push((acl, Vec::new()));
            }
            if let Some((_, v)) = lists.get_mut(*s as usize) {
                v.push(pos as u32);
            }
        }
        let words = len.div_ceil(64);
        let groups = lists
            .into_iter()
            .map(|(acl, v)| {
                let members = if v.len().saturating_mul(32) >= len {
                    let mut bits = vec![0u64; words];
                    for &pos in &v {
                        if let Some(w) = bits.get_mut(pos as usize / 64) {
                            *w |= 1 << (pos % 64);
                        }
                    }
                    Members::Bits(bits.into_boxed_slice())
                } else {
                    Members::Positions(v.into_boxed_slice())
                };
                AclGroup { acl, members }
            })
            .collect();
        KindAcls { len, groups }
    }
}

/// The compiled application catalogs.
#[derive(Debug, PartialEq, Eq)]
struct Apps {
    apps: Vec<AppC>,
    app_ix: FxHashMap<String, u32>,
    /// Words per person in the privilege rows.
    row_words: usize,
    restricted_any: FxHashSet<u32>,
}

/// The compiled view of one tenant at one revision. Immutable: a write builds
/// a new view (sharing the layers the batch did not change) and the snapshot
/// swaps it in whole, so a reader never sees part of a batch.
#[derive(Debug)]
pub struct TenantView {
    revision: Revision,
    tenant: String,
    name: String,
    restricted_mode: bool,
    graph: Arc<Graph>,
    acl: Arc<AclTable>,
    catalog: Arc<Apps>,
    roles: Arc<[RoleC]>,
    /// By person index (the graph's `person_ix`).
    persons: Vec<Arc<PersonC>>,
    /// How this view was compiled (for logs, metrics and tests).
    compiled: Compiled,
    /// Stamps of the graph, ACL table and catalogs (see [`Inputs`]).
    stamps: [u64; 3],
    /// Stamp of each person's entry, by person index.
    person_stamps: Vec<u64>,
}

/// Unique, never reused numbers naming each compiled layer and person entry.
static STAMPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The first of `n` fresh stamps.
fn stamps(n: usize) -> u64 {
    STAMPS.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed)
}

/// What one person's answers in a view are computed from. Two views (of the
/// same tenant) with equal inputs for a person give that person the same
/// decisions, privileges and listings, whatever else their batches changed:
/// a change stream compares these before recomputing anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inputs {
    layers: [u64; 3],
    person: u64,
    restricted_mode: bool,
}

/// How much of a view was compiled rather than shared with the previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Compiled {
    /// The whole tenant was compiled (no previous view, or the graph changed).
    pub whole: bool,
    /// The ACL table was recompiled.
    pub acls: bool,
    /// Persons whose entries were computed (the others are shared).
    pub persons: usize,
}

fn bit(row: &[u64], i: u32) -> bool {
    row.get((i / 64) as usize).is_some_and(|w| w & (1 << (i % 64)) != 0)
}
fn set_bit(row: &mut [u64], i: u32) {
    if let Some(w) = row.get_mut((i / 64) as usize) {
        *w |= 1 << (i % 64);
    }
}

fn hash_id(id: &str) -> u64 {
    FxBuildHasher.hash_one(id)
}

/// The node of `kind` with `id`.
fn find_node(kinds: &[KindC], nodes: &[NodeC], kind: u32, id: &str) -> Option<u32> {
    kinds.get(kind as usize)?.by_id.find(hash_id(id), |&m| nodes[m as usize].id == id).copied()
}

/// Whether two sorted slices share an element.
fn intersects(a: &[u32], b: &[u32]) -> bool {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => return true,
        }
    }
    false
}

/// Overlays `own` entries on `base` (both sorted by principal): own wins per principal.
fn overlay(base: &[AclEntry], own: &[AclEntry]) -> Vec<AclEntry> {
    let mut out = Vec::with_capacity(base.len() + own.len());
    let (mut i, mut j) = (0, 0);
    while i < base.len() || j < own.len() {
        match (base.get(i), own.get(j)) {
            (Some(b), Some(o)) if b.principal < o.principal => {
                out.push(*b);
                i += 1;
            }
            (Some(b), Some(o)) if b.principal == o.principal => {
                out.push(*o);
                i += 1;
                j += 1;
            }
            (_, Some(o)) => {
                out.push(*o);
                j += 1;
            }
            (Some(b), None) => {
                out.push(*b);
                i += 1;
            }
            (None, None) => break,
        }
    }
    out
}

/// A person's privilege row in one application (`effective` or granted).
#[inline]
fn app_row<'p>(person: &'p PersonC, app: &AppC, effective: bool) -> Option<&'p [u64]> {
    let rows = if effective { &person.effective } else { &person.granted };
    rows.get(app.offset..app.offset + app.words)
}

/// Whether a person holds privilege `p` of `app` (`effective`, or only granted).
#[inline]
fn holds(person: &PersonC, app: &AppC, p: u32, effective: bool) -> bool {
    app_row(person, app, effective).is_some_and(|r| bit(r, p))
}

/// What the entries of one ACL say to a person with `principals` (both
/// sorted) about permission `b`: any deny wins, then any allow (SPEC §2).
#[inline]
fn verdict(principals: &[u32], acl: &[AclEntry], b: Perm) -> AclVerdict {
    let mask = b.bit();
    let (mut allow, mut deny) = (false, false);
    let (mut i, mut j) = (0, 0);
    while i < principals.len() && j < acl.len() {
        let (p, e) = (principals[i], &acl[j]);
        if p < e.principal {
            i += 1;
        } else if p > e.principal {
            j += 1;
        } else {
            deny |= e.deny & mask != 0;
            allow |= e.allow & mask != 0;
            i += 1;
            j += 1;
        }
    }
    if deny {
        AclVerdict::Deny
    } else if allow {
        AclVerdict::Allow
    } else {
        AclVerdict::Nothing
    }
}

/// The person-independent parts of a check, looked up once ([`TenantView::resolve`]).
#[derive(Debug, Clone, Copy)]
struct Resolved {
    node: Option<u32>,
    app: Option<u32>,
    privilege: Option<u32>,
    /// The property guard the request's property meets, if any.
    property_guard: Option<u32>,
    permission: Perm,
}

/// Privilege `p` of application `a`, when both are known.
fn privilege_def(a: Option<&AppC>, p: Option<u32>) -> Option<&PrivC> {
    a?.privs.get(p? as usize)
}

/// Whether a check request is malformed: a privilege without an application,
/// nothing to check, or a property without an object.
fn malformed(r: &CheckRequest<'_>) -> bool {
    (r.privilege.is_some() && r.application.is_none())
        || (r.object.is_none() && r.privilege.is_none())
        || (r.property.is_some() && r.object.is_none())
}

struct GraphBuilder {
    kinds: Vec<KindC>,
    kind_ix: FxHashMap<String, u32>,
    nodes: Vec<NodeC>,
}

impl GraphBuilder {
    fn kind(&mut self, name: &str) -> u32 {
        if let Some(&k) = self.kind_ix.get(name) {
            return k;
        }
        let k = self.kinds.len() as u32;
        self.kinds.push(KindC { name: name.to_owned(), ..Default::default() });
        self.kind_ix.insert(name.to_owned(), k);
        k
    }

    fn add_node(&mut self, kind: u32, id: &str, name: &str, folder: u32, pre: u32) -> u32 {
        let n = self.nodes.len() as u32;
        self.nodes.push(NodeC {
            kind,
            id: id.to_owned(),
            name: name.to_owned(),
            folder,
            pre,
            partitions: Box::new([]),
            properties: Box::new([]),
        });
        let (k, nodes) = (&mut self.kinds[kind as usize], &self.nodes);
        k.by_id.insert_unique(hash_id(id), n, |&m| hash_id(&nodes[m as usize].id));
        k.sorted.push(n);
        n
    }
}

impl Graph {
    fn kind(&self, name: &str) -> Option<u32> {
        self.kind_ix.get(name).copied()
    }

    fn node_of(&self, kind: &str, id: &str) -> Option<u32> {
        find_node(&self.kinds, &self.nodes, self.kind(kind)?, id)
    }

    /// The principal index of an ACE subject.
    fn principal(&self, s: &Subject) -> Option<u32> {
        let g = self.groups.len() as u32;
        match s {
            Subject::Everyone => Some(EVERYONE),
            Subject::Group(id) => {
                self.groups.binary_search_by(|x| x.as_str().cmp(id.as_str())).ok().map(|i| 1 + i as u32)
            }
            Subject::Person(id) => self.person_ix.get(id.as_str()).map(|i| 1 + g + i),
        }
    }

    /// The node an ACE is on.
    fn target(&self, t: &Target) -> Option<u32> {
        match t {
            Target::Folder(id) => self.node_of(model::types::FOLDER, id.as_str()),
            Target::Person(id) => self.node_of(model::types::PERSON, id.as_str()),
            Target::Group(id) => self.node_of(model::types::ACCESS_GROUP, id.as_str()),
            Target::Role(id) => self.node_of(model::types::ROLE, id.as_str()),
            Target::Object(k) => self.node_of(k.kind.as_str(), k.id.as_str()),
        }
    }

    /// Nodes, kinds and ids; then the catalogs (whose guards name kinds).
    fn compile(c: &TenantConfig) -> (Graph, Apps) {
        let mut b = GraphBuilder { kinds: Vec::new(), kind_ix: FxHashMap::default(), nodes: Vec::new() };
        let k_folder = b.kind(model::types::FOLDER);
        let k_person = b.kind(model::types::PERSON);
        let k_group = b.kind(model::types::ACCESS_GROUP);
        let k_role = b.kind(model::types::ROLE);

        // Folders in pre-order: node index = pre-order number.
        let mut children: FxHashMap<&str, Vec<&model::Folder>> = FxHashMap::default();
        let mut roots = Vec::new();
        for f in c.folders.values() {
            match &f.parent {
                Some(p) => children.entry(p.as_str()).or_default().push(f),
                None => roots.push(f),
            }
        }
        let mut folder_end = Vec::new();
        let mut folder_ix: FxHashMap<&str, u32> = FxHashMap::default();
        // Iterative DFS: (folder, parent node, entered?)
        let mut stack: Vec<(&model::Folder, u32, bool)> = roots.iter().rev().map(|f| (*f, NONE, false)).collect();
        let mut open: Vec<u32> = Vec::new();
        while let Some((f, parent, entered)) = stack.pop() {
            if entered {
                if let Some(n) = open.pop() {
                    let end = b.nodes.len() as u32;
                    if let Some(slot) = folder_end.get_mut(n as usize) {
                        *slot = end;
                    }
                }
                continue;
            }
            if folder_ix.contains_key(f.id.as_str()) {
                continue; // cycle guard (validated configs have none)
            }
            let pre = b.nodes.len() as u32;
            let n = b.add_node(k_folder, f.id.as_str(), &f.name, parent, pre);
            folder_ix.insert(f.id.as_str(), n);
            folder_end.push(n + 1);
            open.push(n);
            stack.push((f, parent, true));
            if let Some(kids) = children.get(f.id.as_str()) {
                for k in kids.iter().rev() {
                    stack.push((k, n, false));
                }
            }
        }
        let folder_of = |id: &str| folder_ix.get(id).copied().unwrap_or(NONE);

        for p in c.persons.values() {
            let f = folder_of(p.folder.as_str());
            let n = b.add_node(k_person, p.id.as_str(), &p.username, f, f);
            b.nodes[n as usize].properties = p.properties.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        }
        for g in c.groups.values() {
            let f = folder_of(g.folder.as_str());
            b.add_node(k_group, g.id.as_str(), &g.name, f, f);
        }
        for r in c.roles.values() {
            let f = folder_of(r.folder.as_str());
            b.add_node(k_role, r.id.as_str(), &r.name, f, f);
        }
        let partitions: Vec<String> = c.partitions.keys().map(|p| p.0.clone()).collect();
        let partition_ix: FxHashMap<&str, u32> =
            c.partitions.keys().enumerate().map(|(i, p)| (p.as_str(), i as u32)).collect();
        for o in c.objects.values() {
            let k = b.kind(&o.kind);
            let f = folder_of(o.folder.as_str());
            let n = b.add_node(k, o.id.as_str(), &o.name, f, f);
            let node = &mut b.nodes[n as usize];
            let mut parts: Vec<u32> =
                o.partitions.iter().filter_map(|p| partition_ix.get(p.as_str()).copied()).collect();
            parts.sort_unstable();
            node.partitions = parts.into_boxed_slice();
            node.properties = o.properties.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        }
        let apps = Apps::compile(c, &mut b);

        // Listing order per kind: nodes were added from the configuration's
        // ordered maps, so every kind but folders (pre-order) is already in id
        // order; sort only what is not.
        for k in &mut b.kinds {
            let nodes = &b.nodes;
            if !k.sorted.is_sorted_by(|&x, &y| nodes[x as usize].id <= nodes[y as usize].id) {
                k.sorted.sort_unstable_by(|&x, &y| nodes[x as usize].id.cmp(&nodes[y as usize].id));
            }
        }
        let graph = Graph {
            person_ix: c.persons.keys().enumerate().map(|(i, p)| (p.0.clone(), i as u32)).collect(),
            groups: c.groups.keys().map(|g| g.0.clone()).collect(),
            partitions,
            nodes: b.nodes,
            folder_end,
            kinds: b.kinds,
            kind_ix: b.kind_ix,
        };
        (graph, apps)
    }
}

impl Apps {
    fn compile(c: &TenantConfig, b: &mut GraphBuilder) -> Apps {
        let mut apps = Vec::new();
        let mut app_ix = FxHashMap::default();
        let mut offset = 0usize;
        let mut restricted_any = FxHashSet::default();
        for cat in c.catalogs.values() {
            let mut priv_ix: FxHashMap<String, u32> = FxHashMap::default();
            for (i, p) in cat.privileges.iter().enumerate() {
                priv_ix.insert(p.name.clone(), i as u32);
                for a in &p.aliases {
                    priv_ix.insert(a.clone(), i as u32);
                }
            }
            let privs: Vec<PrivC> = cat
                .privileges
                .iter()
                .map(|p| PrivC {
                    name: p.name.clone(),
                    requires: p.requires.iter().filter_map(|r| priv_ix.get(r).copied()).collect(),
                    permission: p.permission,
                })
                .collect();
            let topo = topo_order(&privs);
            let words = privs.len().div_ceil(64).max(1);
            let mut type_guards = FxHashMap::default();
            for g in &cat.type_guards {
                let k = b.kind(&g.kind);
                if let Some(&p) = priv_ix.get(&g.privilege) {
                    type_guards.insert((k, g.permission as u8), p);
                }
            }
            let mut property_guards = Vec::new();
            for g in &cat.property_guards {
                let k = b.kind(&g.kind);
                if let Some(&p) = priv_ix.get(&g.privilege) {
                    property_guards.push((k, g.property.clone(), g.access, p));
                }
            }
            let mut restricted = FxHashSet::default();
            for t in &cat.restricted_types {
                let k = b.kind(t);
                restricted.insert(k);
                restricted_any.insert(k);
            }
            let legacy = cat
                .roles
                .iter()
                .filter_map(|t| {
                    let l = t.legacy_name.as_ref()?;
                    let mut ps: Vec<u32> = t.privileges.iter().filter_map(|p| priv_ix.get(p).copied()).collect();
                    ps.sort_unstable();
                    ps.dedup();
                    Some((l.clone(), (t.name.clone(), ps)))
                })
                .collect();
            app_ix.insert(cat.name.clone(), apps.len() as u32);
            apps.push(AppC {
                name: cat.name.clone(),
                names: privs.iter().map(|p| p.name.clone()).collect(),
                privs,
                priv_ix,
                topo,
                offset,
                words,
                type_guards,
                property_guards,
                restricted,
                open: cat.open_when_unconfigured,
                legacy_sections: cat.legacy_annex_sections.clone(),
                legacy,
                role_rank: cat.role_rank.clone(),
            });
            offset += words;
        }
        Apps { apps, app_ix, row_words: offset, restricted_any }
    }
}

impl AclTable {
    /// Every node's effective ACL (SPEC §2 rule 2), interned.
    fn compile(g: &Graph, c: &TenantConfig) -> AclTable {
        let mut intern: FxHashMap<Box<[AclEntry]>, u32> = FxHashMap::default();
        let mut acls: Vec<Box<[AclEntry]>> = Vec::new();
        let mut add = |acl: Vec<AclEntry>| -> u32 {
            let acl = acl.into_boxed_slice();
            if let Some(&i) = intern.get(&acl) {
                return i;
            }
            let i = acls.len() as u32;
            acls.push(acl.clone());
            intern.insert(acl, i);
            i
        };
        // Own ACEs per node, sorted by principal.
        let mut own: FxHashMap<u32, Vec<AclEntry>> = FxHashMap::default();
        for ace in c.aces.values() {
            let (Some(node), Some(principal)) = (g.target(&ace.target), g.principal(&ace.subject)) else { continue };
            own.entry(node).or_default().push(AclEntry {
                principal,
                allow: ace.allow.0,
                deny: ace.deny.0,
                origin: node,
                propagate: ace.propagate,
            });
        }
        for v in own.values_mut() {
            v.sort_unstable_by_key(|e| e.principal);
        }
        let mut node_acl = vec![0u32; g.nodes.len()];
        // Propagated ACL per folder (what its contents inherit), in pre-order.
        let folder_count = g.folder_end.len();
        let mut propagated: Vec<Vec<AclEntry>> = Vec::with_capacity(folder_count);
        for (f, (node, slot)) in g.nodes.iter().zip(node_acl.iter_mut()).take(folder_count).enumerate() {
            let base: &[AclEntry] = if node.folder == NONE { &[] } else { &propagated[node.folder as usize] };
            let mine = own.get(&(f as u32)).map(Vec::as_slice).unwrap_or(&[]);
            let prop: Vec<AclEntry> = mine.iter().filter(|e| e.propagate).copied().collect();
            *slot = add(overlay(base, mine));
            propagated.push(overlay(base, &prop));
        }
        let inherited: Vec<u32> = propagated.iter().map(|p| add(p.clone())).collect();
        let empty = add(Vec::new());
        for (n, (node, slot)) in g.nodes.iter().zip(node_acl.iter_mut()).enumerate().skip(folder_count) {
            let folder = node.folder;
            *slot = match own.get(&(n as u32)) {
                Some(mine) => {
                    let base: &[AclEntry] = if folder == NONE { &[] } else { &propagated[folder as usize] };
                    add(overlay(base, mine))
                }
                None if folder == NONE => empty,
                None => inherited[folder as usize],
            };
        }
        let listing = g.kinds.iter().map(|k| KindAcls::compile(&k.sorted, &node_acl, acls.len())).collect();
        AclTable { acls, node_acl, listing }
    }

    /// The effective ACL of node `n` (empty for an unknown node: fail closed).
    fn of(&self, n: u32) -> &[AclEntry] {
        self.node_acl.get(n as usize).and_then(|&a| self.acls.get(a as usize)).map_or(&[], |a| a)
    }
}

fn compile_roles(g: &Graph, apps: &Apps, c: &TenantConfig) -> Arc<[RoleC]> {
    c.roles
        .values()
        .map(|r| {
            let mut privs = FxHashMap::default();
            for (app, names) in &r.privileges {
                if let Some(&ai) = apps.app_ix.get(app.as_str()) {
                    let a: &AppC = &apps.apps[ai as usize];
                    let mut v: Vec<u32> = names.iter().filter_map(|n| a.priv_ix.get(n.as_str()).copied()).collect();
                    v.sort_unstable();
                    v.dedup();
                    if !v.is_empty() {
                        privs.insert(ai, v);
                    }
                }
            }
            RoleC { node: g.node_of(model::types::ROLE, r.id.as_str()).unwrap_or(NONE), name: r.name.clone(), privs }
        })
        .collect()
}

/// A person's memberships, as indexes (each list sorted, no duplicates).
#[derive(Debug, Default, Clone)]
struct Membership {
    groups: Vec<u32>,
    partitions: Vec<u32>,
    roles: Vec<u32>,
}

/// Every person's memberships, in one pass over the memberships.
fn memberships_all(g: &Graph, c: &TenantConfig) -> Vec<Membership> {
    let mut out = vec![Membership::default(); c.persons.len()];
    for (gi, grp) in c.groups.values().enumerate() {
        for m in &grp.members {
            if let Some(&pi) = g.person_ix.get(m.as_str()) {
                out[pi as usize].groups.push(gi as u32);
            }
        }
    }
    for (xi, p) in c.partitions.values().enumerate() {
        for m in &p.members {
            if let Some(&pi) = g.person_ix.get(m.as_str()) {
                out[pi as usize].partitions.push(xi as u32);
            }
        }
    }
    for (ri, r) in c.roles.values().enumerate() {
        for p in holders(c, r) {
            if let Some(&pi) = g.person_ix.get(p.as_str()) {
                out[pi as usize].roles.push(ri as u32);
            }
        }
    }
    for m in &mut out {
        m.partitions.sort_unstable();
        m.partitions.dedup();
        m.roles.sort_unstable();
        m.roles.dedup();
    }
    out
}

/// One person's memberships, by scanning the groups, partitions and roles.
fn membership_of(c: &TenantConfig, id: &PersonId) -> Membership {
    let groups = c.groups.values().enumerate().filter(|(_, x)| x.members.contains(id)).map(|(i, _)| i as u32).collect();
    let partitions =
        c.partitions.values().enumerate().filter(|(_, x)| x.members.contains(id)).map(|(i, _)| i as u32).collect();
    let roles = c
        .roles
        .values()
        .enumerate()
        .filter(|(_, r)| {
            r.members.persons.contains(id)
                || r.members.groups.iter().any(|g| c.groups.get(g).is_some_and(|x| x.members.contains(id)))
        })
        .map(|(i, _)| i as u32)
        .collect();
    Membership { groups, partitions, roles }
}

/// The persons a role is assigned to, directly or through a group (may repeat).
fn holders<'c>(c: &'c TenantConfig, r: &'c model::Role) -> impl Iterator<Item = &'c PersonId> + 'c {
    let via_groups = r.members.groups.iter().filter_map(|g| c.groups.get(g)).flat_map(|g| g.members.iter());
    r.members.persons.iter().chain(via_groups)
}

/// Whether `old` and `new` compile to the same graph and catalogs: the same
/// folders, objects and catalogs, and the same persons, groups, roles and
/// partitions by id, name, place and properties (memberships, privileges,
/// annexes and the enabled flag are not part of the graph).
fn same_graph(old: &TenantConfig, new: &TenantConfig) -> bool {
    fn same<K: Eq, V>(
        a: &Arc<std::collections::BTreeMap<K, V>>,
        b: &Arc<std::collections::BTreeMap<K, V>>,
        eq: impl Fn(&V, &V) -> bool,
    ) -> bool {
        Arc::ptr_eq(a, b)
            || (a.len() == b.len() && a.iter().zip(b.iter()).all(|((ka, va), (kb, vb))| ka == kb && eq(va, vb)))
    }
    Arc::ptr_eq(&old.catalogs, &new.catalogs)
        && Arc::ptr_eq(&old.folders, &new.folders)
        && Arc::ptr_eq(&old.objects, &new.objects)
        && same(&old.partitions, &new.partitions, |_, _| true)
        && same(&old.persons, &new.persons, |a, b| {
            a.username == b.username && a.folder == b.folder && a.properties == b.properties
        })
        && same(&old.groups, &new.groups, |a, b| a.name == b.name && a.folder == b.folder)
        && same(&old.roles, &new.roles, |a, b| a.name == b.name && a.folder == b.folder)
}

/// The persons (indexes, sorted) whose entries a batch may change, given that
/// it left the graph as it was: every person whose decisions read something
/// the batch changed (see the module documentation).
fn dirty_persons(
    g: &Graph,
    old: &TenantConfig,
    new: &TenantConfig,
    (old_acl, new_acl): (&AclTable, &AclTable),
    roles: &[RoleC],
) -> Vec<u32> {
    let mut dirty = vec![false; g.person_ix.len()];
    let mark = |dirty: &mut [bool], id: &PersonId| {
        if let Some(d) = g.person_ix.get(id.as_str()).and_then(|&i| dirty.get_mut(i as usize)) {
            *d = true;
        }
    };
    if !Arc::ptr_eq(&old.persons, &new.persons) {
        for (a, b) in old.persons.values().zip(new.persons.values()) {
            if a != b {
                mark(&mut dirty, &b.id);
            }
        }
    }
    if !Arc::ptr_eq(&old.groups, &new.groups) {
        for (a, b) in old.groups.values().zip(new.groups.values()) {
            if a.members != b.members {
                a.members.symmetric_difference(&b.members).for_each(|p| mark(&mut dirty, p));
            }
        }
    }
    if !Arc::ptr_eq(&old.partitions, &new.partitions) {
        for (a, b) in old.partitions.values().zip(new.partitions.values()) {
            if a.members != b.members {
                a.members.symmetric_difference(&b.members).for_each(|p| mark(&mut dirty, p));
            }
        }
    }
    let acls_changed = !std::ptr::eq(old_acl, new_acl);
    for (ri, (a, b)) in old.roles.values().zip(new.roles.values()).enumerate() {
        // Readability (SPEC §3 rule 3): the entries on the role's node changed.
        let node = roles.get(ri).map_or(NONE, |r| r.node);
        let readability = acls_changed && old_acl.of(node) != new_acl.of(node);
        if !readability && a == b {
            continue;
        }
        if readability || a.privileges != b.privileges || a.name != b.name {
            // Every holder, before and after.
            holders(old, a).chain(holders(new, b)).for_each(|p| mark(&mut dirty, p));
            continue;
        }
        // Only the persons who gained or lost the role: 1 = held before, 2 = after.
        let mut held = FxHashMap::<u32, u8>::default();
        for (c, r, flag) in [(old, a, 1u8), (new, b, 2u8)] {
            for p in holders(c, r) {
                if let Some(&i) = g.person_ix.get(p.as_str()) {
                    *held.entry(i).or_default() |= flag;
                }
            }
        }
        for (i, h) in held {
            if let (Some(d), true) = (dirty.get_mut(i as usize), h != 3) {
                *d = true;
            }
        }
    }
    dirty.iter().enumerate().filter(|(_, d)| **d).map(|(i, _)| i as u32).collect()
}

/// Everything a person's entry is computed from.
struct Layers<'a> {
    graph: &'a Graph,
    acl: &'a AclTable,
    apps: &'a Apps,
    roles: &'a [RoleC],
}

impl Layers<'_> {
    /// SPEC §3 for one person in every application.
    fn person(&self, pi: usize, person: &model::Person, m: Membership) -> PersonC {
        let g_count = self.graph.groups.len() as u32;
        let mut principals: Vec<u32> = Vec::with_capacity(m.groups.len() + 2);
        principals.push(EVERYONE);
        principals.extend(m.groups.iter().map(|g| g + 1));
        principals.push(1 + g_count + pi as u32);
        let row_words = self.apps.row_words;
        let mut granted = vec![0u64; row_words];
        let mut effective = vec![0u64; row_words];
        let readable: Vec<bool> = m
            .roles
            .iter()
            .map(|&ri| {
                let node = self.roles.get(ri as usize).map_or(NONE, |r| r.node);
                verdict(&principals, self.acl.of(node), Perm::Read) == AclVerdict::Allow
            })
            .collect();
        let mut person_apps = Vec::with_capacity(self.apps.apps.len());
        for (ai, app) in self.apps.apps.iter().enumerate() {
            let ai = ai as u32;
            let row = &mut granted[app.offset..app.offset + app.words];
            let legacy = app
                .legacy_sections
                .iter()
                .find_map(|s| person.annex.get(s).and_then(|opts| opts.get("role")).map(|r| (s.clone(), r.clone())));
            let mut applied = Vec::new();
            let mut unreadable = Vec::new();
            let source = if let Some((section, role)) = legacy {
                let template = app.legacy.get(&role).map(|(name, ps)| {
                    for &p in ps {
                        set_bit(row, p);
                    }
                    name.clone()
                });
                Source::Legacy { section, role, template }
            } else {
                let mut configured = false;
                for (k, &ri) in m.roles.iter().enumerate() {
                    let Some(ps) = self.roles.get(ri as usize).and_then(|r| r.privs.get(&ai)) else { continue };
                    configured = true;
                    if readable[k] {
                        applied.push(ri);
                        for &p in ps {
                            set_bit(row, p);
                        }
                    } else {
                        unreadable.push(ri);
                    }
                }
                if app.open && !configured {
                    for p in 0..app.privs.len() as u32 {
                        set_bit(row, p);
                    }
                    Source::Open
                } else {
                    Source::Roles
                }
            };
            // Dependencies: in topological order, a privilege is effective
            // when granted and all it requires are effective.
            let eff = &mut effective[app.offset..app.offset + app.words];
            for &p in &app.topo {
                if bit(row, p) && app.privs[p as usize].requires.iter().all(|&r| bit(eff, r)) {
                    set_bit(eff, p);
                }
            }
            let primary = match &source {
                Source::Legacy { template, .. } => template.clone(),
                _ => applied
                    .iter()
                    .map(|&ri| {
                        let r = &self.roles[ri as usize];
                        let rank = app.role_rank.iter().position(|n| *n == r.name).unwrap_or(usize::MAX);
                        let count = r.privs.get(&ai).map_or(0, Vec::len);
                        // Most access, ties by rank order, then name (SPEC §3.5).
                        (Reverse(count), rank, r.name.as_str())
                    })
                    .min()
                    .map(|(_, _, n)| n.to_owned()),
            };
            person_apps.push(PersonApp { source, applied, unreadable, primary });
        }
        PersonC {
            id: person.id.0.clone(),
            enabled: person.enabled,
            principals: principals.into_boxed_slice(),
            partitions: m.partitions.into_boxed_slice(),
            roles: m.roles.into_boxed_slice(),
            granted: granted.into_boxed_slice(),
            effective: effective.into_boxed_slice(),
            apps: person_apps.into_boxed_slice(),
        }
    }
}

impl TenantView {
    /// Compiles a validated configuration. An invalid one (which the model
    /// layer never lets through) still yields a view: dangling references are
    /// skipped, never followed, so every decision fails closed.
    pub fn build(c: &TenantConfig, revision: Revision) -> TenantView {
        let (graph, apps) = Graph::compile(c);
        let acl = AclTable::compile(&graph, c);
        let roles = compile_roles(&graph, &apps, c);
        let layers = Layers { graph: &graph, acl: &acl, apps: &apps, roles: &roles };
        let persons: Vec<Arc<PersonC>> = c
            .persons
            .values()
            .zip(memberships_all(&graph, c))
            .enumerate()
            .map(|(i, (p, m))| Arc::new(layers.person(i, p, m)))
            .collect();
        let compiled = Compiled { whole: true, acls: true, persons: persons.len() };
        let first = stamps(3 + persons.len());
        TenantView {
            stamps: [first, first + 1, first + 2],
            person_stamps: (first + 3..first + 3 + persons.len() as u64).collect(),
            revision,
            tenant: c.id.0.clone(),
            name: c.name.clone(),
            restricted_mode: c.restricted_mode,
            graph: Arc::new(graph),
            acl: Arc::new(acl),
            catalog: Arc::new(apps),
            roles,
            persons,
            compiled,
        }
    }

    /// Compiles `next`, sharing with `prev` (the view compiled from the
    /// configuration given beside it) every layer and person entry the
    /// change from that configuration to `next` leaves as it was. The result
    /// equals `TenantView::build(next, revision)`.
    pub fn build_next(
        prev: Option<(&TenantView, &TenantConfig)>,
        next: &TenantConfig,
        revision: Revision,
    ) -> TenantView {
        let Some((pv, pc)) = prev else { return TenantView::build(next, revision) };
        if pv.tenant != next.id.as_str() || pc.id != next.id || !same_graph(pc, next) {
            return TenantView::build(next, revision);
        }
        let graph = Arc::clone(&pv.graph);
        let apps = Arc::clone(&pv.catalog);
        let acl = if Arc::ptr_eq(&pc.aces, &next.aces) {
            Arc::clone(&pv.acl)
        } else {
            Arc::new(AclTable::compile(&graph, next))
        };
        let roles = if Arc::ptr_eq(&pc.roles, &next.roles) {
            Arc::clone(&pv.roles)
        } else {
            compile_roles(&graph, &apps, next)
        };
        let dirty = dirty_persons(&graph, pc, next, (&pv.acl, &acl), &roles);
        let mut persons = pv.persons.clone();
        let mut person_stamps = pv.person_stamps.clone();
        let first = stamps(1 + dirty.len());
        for (k, &i) in dirty.iter().enumerate() {
            if let Some(s) = person_stamps.get_mut(i as usize) {
                *s = first + 1 + k as u64;
            }
        }
        if !dirty.is_empty() {
            let layers = Layers { graph: &graph, acl: &acl, apps: &apps, roles: &roles };
            // Memberships: scan per dirty person, or one pass over all
            // memberships, whichever reads less.
            let per_person = (next.groups.len() + next.partitions.len() + next.roles.len()).max(1);
            let all: usize = next.groups.values().map(|g| g.members.len()).sum::<usize>()
                + next.partitions.values().map(|p| p.members.len()).sum::<usize>()
                + next.roles.values().map(|r| r.members.persons.len() + r.members.groups.len()).sum::<usize>();
            let mut ms =
                if dirty.len().saturating_mul(per_person) > all { Some(memberships_all(&graph, next)) } else { None };
            let mut d = dirty.iter().peekable();
            for (i, p) in next.persons.values().enumerate() {
                if d.peek().is_none() {
                    break;
                }
                if d.next_if(|&&x| x as usize == i).is_none() {
                    continue;
                }
                let m = match ms.as_mut() {
                    Some(all) => std::mem::take(&mut all[i]),
                    None => membership_of(next, &p.id),
                };
                if let Some(slot) = persons.get_mut(i) {
                    *slot = Arc::new(layers.person(i, p, m));
                }
            }
        }
        let acls = !Arc::ptr_eq(&acl, &pv.acl);
        let compiled = Compiled { whole: false, acls, persons: dirty.len() };
        let [graph_stamp, acl_stamp, catalog_stamp] = pv.stamps;
        TenantView {
            stamps: [graph_stamp, if acls { first } else { acl_stamp }, catalog_stamp],
            person_stamps,
            revision,
            tenant: next.id.0.clone(),
            name: next.name.clone(),
            restricted_mode: next.restricted_mode,
            graph,
            acl,
            catalog: apps,
            roles,
            persons,
            compiled,
        }
    }

    /// What a person's answers in this view are computed from (`None` for
    /// an unknown person): see [`Inputs`].
    pub fn inputs(&self, person: &str) -> Option<Inputs> {
        let &pi = self.graph.person_ix.get(person)?;
        Some(Inputs {
            layers: self.stamps,
            person: *self.person_stamps.get(pi as usize)?,
            restricted_mode: self.restricted_mode,
        })
    }

    /// How this view was compiled: whole, or which parts were recomputed.
    pub fn compiled(&self) -> Compiled {
        self.compiled
    }

    /// Where this view differs from `other` (same revision or not), or `Ok`
    /// when every compiled part is equal: for tests of incremental compilation.
    #[doc(hidden)]
    pub fn compare(&self, other: &TenantView) -> Result<(), String> {
        let (a, b) = (&*self.graph, &*other.graph);
        let kinds = |g: &Graph| g.kinds.iter().map(|k| (k.name.clone(), k.sorted.clone())).collect::<Vec<_>>();
        let checks: [(&str, bool); 12] = [
            ("tenant", self.tenant == other.tenant && self.name == other.name),
            ("restricted_mode", self.restricted_mode == other.restricted_mode),
            ("nodes", a.nodes == b.nodes),
            ("folders", a.folder_end == b.folder_end),
            ("kinds", kinds(a) == kinds(b) && a.kind_ix == b.kind_ix),
            ("person ids", a.person_ix == b.person_ix),
            ("groups", a.groups == b.groups),
            ("partitions", a.partitions == b.partitions),
            ("acls", self.acl == other.acl),
            ("catalogs", self.catalog == other.catalog),
            ("roles", self.roles == other.roles),
            ("persons", self.persons.len() == other.persons.len()),
        ];
        if let Some((what, _)) = checks.iter().find(|(_, same)| !same) {
            return Err(format!("{what} differ"));
        }
        for (x, y) in self.persons.iter().zip(&other.persons) {
            if x != y {
                return Err(format!("person `{}` differs: {x:?} vs {y:?}", x.id));
            }
        }
        Ok(())
    }

    /// The revision this view was built at.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// The tenant's id.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// The tenant's business name.
    pub fn tenant_name(&self) -> &str {
        &self.name
    }

    /// Whether restricted mode is on.
    pub fn restricted_mode(&self) -> bool {
        self.restricted_mode
    }

    /// Number of persons, objects (nodes) and distinct ACLs: for logs and metrics.
    pub fn stats(&self) -> (usize, usize, usize) {
        (self.persons.len(), self.graph.nodes.len(), self.acl.acls.len())
    }

    /// Application names.
    pub fn applications(&self) -> impl Iterator<Item = &str> {
        self.catalog.apps.iter().map(|a| a.name.as_str())
    }

    /// Whether the person exists (enabled or not).
    pub fn has_person(&self, id: &str) -> bool {
        self.graph.person_ix.contains_key(id)
    }

    /// Ids of every person.
    pub fn person_ids(&self) -> impl Iterator<Item = &str> {
        self.persons.iter().map(|p| p.id.as_str())
    }

    fn node(&self, kind: &str, id: &str) -> Option<u32> {
        let k = self.graph.kind_ix.get(kind)?;
        find_node(&self.graph.kinds, &self.graph.nodes, *k, id)
    }

    /// Whether an object of `kind` with `id` exists.
    pub fn has_object(&self, kind: &str, id: &str) -> bool {
        self.node(kind, id).is_some()
    }

    /// A person's privilege row in one application (`effective` or granted).
    #[inline]
    fn row(&self, pi: u32, ai: u32, effective: bool) -> Option<&[u64]> {
        app_row(self.persons.get(pi as usize)?, self.catalog.apps.get(ai as usize)?, effective)
    }

    #[inline]
    fn has_privilege(&self, pi: u32, ai: u32, p: u32) -> bool {
        self.row(pi, ai, true).is_some_and(|r| bit(r, p))
    }

    #[inline]
    fn is_granted(&self, pi: u32, ai: u32, p: u32) -> bool {
        self.row(pi, ai, false).is_some_and(|r| bit(r, p))
    }

    #[inline]
    fn person_app(&self, pi: u32, ai: u32) -> Option<&PersonApp> {
        self.persons.get(pi as usize)?.apps.get(ai as usize)
    }

    /// Decides one check (SPEC §4). Allocates nothing.
    pub fn check(&self, r: &CheckRequest<'_>) -> Decision {
        let reason = self.evaluate(r);
        Decision::new(reason, self.revision)
    }

    fn evaluate(&self, r: &CheckRequest<'_>) -> Reason {
        if malformed(r) {
            return Reason::InvalidRequest;
        }
        let Some(&pi) = self.graph.person_ix.get(r.subject) else { return Reason::UnknownSubject };
        let Some(person) = self.persons.get(pi as usize) else { return Reason::Internal };
        if !person.enabled {
            return Reason::DisabledSubject;
        }
        match self.resolve(r) {
            Ok(q) => self.decide(person, &q),
            Err(reason) => reason,
        }
    }

    /// The parts of a check that do not depend on the person, looked up once
    /// (SPEC §4 order: the object, the application, the privilege).
    fn resolve(&self, r: &CheckRequest<'_>) -> Result<Resolved, Reason> {
        if malformed(r) {
            return Err(Reason::InvalidRequest);
        }
        let node = match r.object {
            Some(o) => {
                if o.tenant.is_some_and(|t| t != self.tenant) {
                    return Err(Reason::CrossTenant);
                }
                Some(self.node(o.kind, o.id).ok_or(Reason::UnknownObject)?)
            }
            None => None,
        };
        let app = match r.application {
            Some(a) => Some(*self.catalog.app_ix.get(a).ok_or(Reason::UnknownApplication)?),
            None => None,
        };
        let app_c = app.and_then(|ai| self.catalog.apps.get(ai as usize));
        let privilege = match (r.privilege, app_c) {
            (Some(name), Some(a)) => Some(*a.priv_ix.get(name).ok_or(Reason::UnknownPrivilege)?),
            _ => None,
        };
        // What `permission_of` says, from the privilege already looked up.
        let permission =
            r.permission.or_else(|| privilege_def(app_c, privilege).and_then(|p| p.permission)).unwrap_or(Perm::Read);
        let property_guard = match (r.property, node, app_c) {
            (Some(prop), Some(n), Some(a)) => {
                let kind = self.graph.nodes.get(n as usize).ok_or(Reason::Internal)?.kind;
                a.property_guards
                    .iter()
                    .find(|(k, name, acc, _)| *k == kind && *acc == permission && name == prop)
                    .map(|g| g.3)
            }
            _ => None,
        };
        Ok(Resolved { node, app, privilege, property_guard, permission })
    }

    /// The person-dependent parts of a resolved check, in SPEC §4 order:
    /// partitions, entries, type guard, property guard, the privilege asked
    /// (and its requirements), restricted mode; then whether an allow came
    /// from `open_when_unconfigured`.
    #[inline]
    fn decide(&self, person: &PersonC, q: &Resolved) -> Reason {
        let app_c = q.app.and_then(|ai| self.catalog.apps.get(ai as usize));
        let b = q.permission;
        let mut consulted = false;
        let mut kind = NONE;
        if let Some(n) = q.node {
            let Some(nc) = self.graph.nodes.get(n as usize) else { return Reason::Internal };
            kind = nc.kind;
            if !nc.partitions.is_empty() && !intersects(&nc.partitions, &person.partitions) {
                return Reason::Partition;
            }
            match verdict(&person.principals, self.acl.of(n), b) {
                AclVerdict::Deny => return Reason::ExplicitDeny,
                AclVerdict::Nothing => return Reason::NoGrant,
                AclVerdict::Allow => {}
            }
            if let Some(a) = app_c {
                if let Some(&g) = a.type_guards.get(&(nc.kind, b as u8)) {
                    consulted = true;
                    if !holds(person, a, g, true) {
                        return Reason::MissingPrivilege;
                    }
                }
                if let Some(g) = q.property_guard {
                    consulted = true;
                    if !holds(person, a, g, true) {
                        return Reason::MissingPrivilege;
                    }
                }
            }
        }
        if let (Some(p), Some(a)) = (q.privilege, app_c) {
            consulted = true;
            if !holds(person, a, p, true) {
                return if holds(person, a, p, false) { Reason::UnmetDependency } else { Reason::MissingPrivilege };
            }
        }
        if q.node.is_some() && self.restricted_mode && matches!(b, Perm::Create | Perm::Change | Perm::Delete) {
            let locked = match app_c {
                Some(a) => a.restricted.contains(&kind),
                None => self.catalog.restricted_any.contains(&kind),
            };
            if locked {
                return Reason::RestrictedMode;
            }
        }
        let open =
            consulted && q.app.and_then(|ai| person.apps.get(ai as usize)).is_some_and(|pa| pa.source == Source::Open);
        if open { Reason::OpenWhenUnconfigured } else { Reason::Allowed }
    }

    /// The persons `r` allows (its `subject` is ignored), in id order, after
    /// `after`, at most `limit`: exactly those for whom [`Self::check`] of `r`
    /// with them as the subject is allowed (the same evaluation, the request's
    /// parts looked up once). Disabled persons are never allowed. An error is
    /// the reason no person can be asked: a malformed request, an unknown
    /// object, application or privilege.
    pub fn allowed_subjects<'v>(
        &'v self,
        r: &CheckRequest<'_>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<SubjectsPage<'v>, Reason> {
        let q = self.resolve(r)?;
        let mut page = SubjectsPage { items: Vec::new(), next_after: None, revision: self.revision };
        for person in self.persons_after(after).filter(|p| p.enabled) {
            let reason = self.decide(person, &q);
            if !reason.is_allowed() {
                continue;
            }
            if page.items.len() == limit.max(1) {
                page.next_after = page.items.last().map(|s| s.person);
                break;
            }
            page.items.push(AllowedSubject { person: &person.id, reason });
        }
        Ok(page)
    }

    /// The persons for whom `privilege` (a name or an alias) of `app` is
    /// effective, in id order, after `after`, at most `limit`, each with where
    /// the person's privileges in `app` come from and, from roles, which
    /// applied roles grant it. Exactly the persons for whom a check of the
    /// privilege alone is allowed. Disabled persons hold nothing.
    pub fn privilege_holders<'v>(
        &'v self,
        app: &str,
        privilege: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<HoldersPage<'v>, Reason> {
        let &ai = self.catalog.app_ix.get(app).ok_or(Reason::UnknownApplication)?;
        let a = self.catalog.apps.get(ai as usize).ok_or(Reason::Internal)?;
        let &p = a.priv_ix.get(privilege).ok_or(Reason::UnknownPrivilege)?;
        let name = a.privs.get(p as usize).map_or("", |x| x.name.as_str());
        let mut page = HoldersPage { privilege: name, items: Vec::new(), next_after: None, revision: self.revision };
        for person in self.persons_after(after).filter(|x| x.enabled) {
            if !holds(person, a, p, true) {
                continue;
            }
            if page.items.len() == limit.max(1) {
                page.next_after = page.items.last().map(|h| h.person);
                break;
            }
            let Some(pa) = person.apps.get(ai as usize) else { return Err(Reason::Internal) };
            let source = match &pa.source {
                Source::Legacy { section, role, .. } => HolderSource::LegacyAnnex { section, role },
                Source::Roles => HolderSource::Roles,
                Source::Open => HolderSource::OpenWhenUnconfigured,
            };
            let roles = match pa.source {
                Source::Roles => pa
                    .applied
                    .iter()
                    .filter_map(|&r| self.roles.get(r as usize))
                    .filter(|r| r.privs.get(&ai).is_some_and(|ps| ps.binary_search(&p).is_ok()))
                    .map(|r| (self.graph.nodes.get(r.node as usize).map_or("", |n| n.id.as_str()), r.name.as_str()))
                    .collect(),
                _ => Vec::new(),
            };
            page.items.push(Holder { person: &person.id, source, roles });
        }
        Ok(page)
    }

    /// Persons in id order, from the first after `after`.
    fn persons_after(&self, after: Option<&str>) -> impl Iterator<Item = &PersonC> {
        let start = after.map_or(0, |a| self.persons.partition_point(|p| p.id.as_str() <= a));
        self.persons.get(start..).unwrap_or_default().iter().map(|p| &**p)
    }

    /// The entries that apply to a node after inheritance (SPEC §2 rule 2):
    /// per principal, its own entry on the node or the nearest propagating
    /// one of a folder above, ordered by principal (everyone, groups by id,
    /// persons by id). `None`: no such node.
    pub fn effective_entries(&self, kind: &str, id: &str) -> Option<Vec<AceEvidence>> {
        let n = self.node(kind, id)?;
        Some(self.acl.of(n).iter().map(|e| self.ace_evidence(n, e)).collect())
    }

    fn ace_evidence(&self, n: u32, e: &AclEntry) -> AceEvidence {
        let (principal_kind, principal_id) = self.principal_label(e.principal);
        let origin = &self.graph.nodes[e.origin as usize];
        AceEvidence {
            principal_kind,
            principal_id,
            target_kind: self.graph.kinds[origin.kind as usize].name.clone(),
            target_id: origin.id.clone(),
            inherited: e.origin != n,
            allow: PermSet(e.allow),
            deny: PermSet(e.deny),
            propagate: e.propagate,
        }
    }

    /// The permission a check asks: the request's, else the privilege's
    /// declared permission (tasks that are not bits, SPEC §5), else Read.
    fn permission_of(&self, r: &CheckRequest<'_>) -> Perm {
        r.permission
            .or_else(|| {
                let a = self.catalog.apps.get(*self.catalog.app_ix.get(r.application?)? as usize)?;
                a.privs.get(*a.priv_ix.get(r.privilege?)? as usize)?.permission
            })
            .unwrap_or(Perm::Read)
    }

    /// A person's effective privileges in an application (SPEC §3).
    pub fn effective_privileges(&self, person: &str, app: &str) -> Result<EffectivePrivileges, Reason> {
        let (pi, ai) = self.person_and_app(person, app)?;
        let (Some(a), Some(pa), Some(eff), Some(granted)) = (
            self.catalog.apps.get(ai as usize),
            self.person_app(pi, ai),
            self.row(pi, ai, true),
            self.row(pi, ai, false),
        ) else {
            return Err(Reason::Internal);
        };
        let names = |pred: &dyn Fn(u32) -> bool| -> Vec<String> {
            (0..a.privs.len() as u32).filter(|&p| pred(p)).map(|p| a.privs[p as usize].name.clone()).collect()
        };
        let role_names =
            |rs: &[u32]| -> Vec<String> { rs.iter().map(|&r| self.roles[r as usize].name.clone()).collect() };
        Ok(EffectivePrivileges {
            source: match &pa.source {
                Source::Legacy { section, role, .. } => {
                    PrivilegeSource::LegacyAnnex { section: section.clone(), role: role.clone() }
                }
                Source::Roles => PrivilegeSource::Roles,
                Source::Open => PrivilegeSource::OpenWhenUnconfigured,
            },
            privileges: names(&|p| bit(eff, p)),
            unmet: names(&|p| bit(granted, p) && !bit(eff, p)),
            roles: role_names(&pa.applied),
            unreadable_roles: role_names(&pa.unreadable),
            primary_role: pa.primary.clone(),
        })
    }

    /// The effective privilege bitset of a person in an application (for
    /// change streams, which diff successive revisions).
    pub fn privilege_bits(&self, person: &str, app: &str) -> Result<Vec<u64>, Reason> {
        self.privilege_row(person, app).map(<[u64]>::to_vec)
    }

    /// The names of a person's effective privileges in an application, in
    /// catalog order (what [`Self::effective_privileges`] lists, without the
    /// roles and sources: for change streams, which diff names).
    pub fn privilege_names(&self, person: &str, app: &str) -> Result<Vec<&str>, Reason> {
        let (pi, ai) = self.person_and_app(person, app)?;
        let (Some(a), Some(eff)) = (self.catalog.apps.get(ai as usize), self.row(pi, ai, true)) else {
            return Err(Reason::Internal);
        };
        Ok((0..a.privs.len() as u32).filter(|&p| bit(eff, p)).map(|p| a.privs[p as usize].name.as_str()).collect())
    }

    /// The canonical privilege names of an application in catalog order:
    /// bit `i` of a [`Self::privilege_row`] is the `i`-th name. Shared by
    /// every view compiled from the same catalogs, so a change stream can
    /// tell whether the numbering changed by comparing pointers.
    pub fn privilege_catalog(&self, app: &str) -> Option<&Arc<[String]>> {
        let &ai = self.catalog.app_ix.get(app)?;
        self.catalog.apps.get(ai as usize).map(|a| &a.names)
    }

    /// [`Self::privilege_bits`] borrowed from the view (no allocation): bit
    /// `i` is the catalog's `i`-th privilege.
    pub fn privilege_row(&self, person: &str, app: &str) -> Result<&[u64], Reason> {
        let (pi, ai) = self.person_and_app(person, app)?;
        self.row(pi, ai, true).ok_or(Reason::Internal)
    }

    fn person_and_app(&self, person: &str, app: &str) -> Result<(u32, u32), Reason> {
        let &pi = self.graph.person_ix.get(person).ok_or(Reason::UnknownSubject)?;
        if !self.persons.get(pi as usize).is_some_and(|p| p.enabled) {
            return Err(Reason::DisabledSubject);
        }
        let &ai = self.catalog.app_ix.get(app).ok_or(Reason::UnknownApplication)?;
        Ok((pi, ai))
    }

    /// Objects of a type the person may access (SPEC §4.1), in id order, from
    /// `after` on, at most `limit` of them.
    pub fn list_visible(&self, r: &ListRequest<'_>) -> Result<ListPage, Reason> {
        let page = self.list_visible_refs(r)?;
        Ok(ListPage {
            items: page
                .items
                .into_iter()
                .map(|v| VisibleObject {
                    id: v.id.to_owned(),
                    name: v.name.to_owned(),
                    folder: v.folder.to_owned(),
                    properties: v.properties.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
                })
                .collect(),
            next_after: page.next_after.map(str::to_owned),
            revision: page.revision,
        })
    }

    /// [`Self::list_visible`] borrowing from the view: no string is copied,
    /// so a caller that serializes the page copies each string once.
    pub fn list_visible_refs<'v>(&'v self, r: &ListRequest<'_>) -> Result<ListPageRef<'v>, Reason> {
        let &pi = self.graph.person_ix.get(r.subject).ok_or(Reason::UnknownSubject)?;
        let person = self.persons.get(pi as usize).ok_or(Reason::Internal)?;
        if !person.enabled {
            return Err(Reason::DisabledSubject);
        }
        let app = match r.application {
            Some(a) => Some(*self.catalog.app_ix.get(a).ok_or(Reason::UnknownApplication)?),
            None => None,
        };
        let scope = match r.folder {
            Some(f) => {
                let n = self.node(model::types::FOLDER, f).ok_or(Reason::UnknownObject)?;
                Some((n, self.graph.folder_end.get(n as usize).copied().unwrap_or(n + 1)))
            }
            None => None,
        };
        let empty = ListPageRef { items: Vec::new(), next_after: None, revision: self.revision };
        let Some(&kind) = self.graph.kind_ix.get(r.kind) else { return Ok(empty) };
        let b = r.permission;
        let app_c = app.and_then(|ai| self.catalog.apps.get(ai as usize));
        // Parts that depend only on (person, kind, permission): decided once.
        if let (Some(ai), Some(a)) = (app, app_c) {
            if let Some(&g) = a.type_guards.get(&(kind, b as u8)) {
                if !self.has_privilege(pi, ai, g) {
                    return Ok(empty);
                }
            }
        }
        if self.restricted_mode && matches!(b, Perm::Create | Perm::Change | Perm::Delete) {
            let locked = match app_c {
                Some(a) => a.restricted.contains(&kind),
                None => self.catalog.restricted_any.contains(&kind),
            };
            if locked {
                return Ok(empty);
            }
        }
        // Properties hidden from this person (Read guards it does not hold).
        let hidden: Vec<&str> = match (app, app_c) {
            (Some(ai), Some(a)) => a
                .property_guards
                .iter()
                .filter(|(k, _, acc, g)| *k == kind && *acc == Perm::Read && !self.has_privilege(pi, ai, *g))
                .map(|(_, name, _, _)| name.as_str())
                .collect(),
            _ => Vec::new(),
        };
        let Some(kc) = self.graph.kinds.get(kind as usize) else { return Ok(empty) };
        let Some(ka) = self.acl.listing.get(kind as usize) else { return Ok(empty) };
        let start = match r.after {
            Some(after) => kc.sorted.partition_point(|&n| self.graph.nodes[n as usize].id.as_str() <= after),
            None => 0,
        };
        // The positions (in id order, from `start` on) whose ACL allows the
        // person: each distinct ACL of the kind decided once, its group of
        // nodes added whole.
        let first = start / 64;
        let mut bits = vec![0u64; ka.len.div_ceil(64)];
        for grp in &ka.groups {
            let entries = self.acl.acls.get(grp.acl as usize).map_or(&[][..], |a| a);
            if verdict(&person.principals, entries, b) != AclVerdict::Allow {
                continue;
            }
            match &grp.members {
                Members::Bits(words) => {
                    for (w, &x) in bits.iter_mut().zip(words.iter()).skip(first) {
                        *w |= x;
                    }
                }
                Members::Positions(ps) => {
                    // INVARIANT: a partition point is at most the length.
                    for &pos in &ps[ps.partition_point(|&p| (p as usize) < start)..] {
                        if let Some(w) = bits.get_mut(pos as usize / 64) {
                            *w |= 1 << (pos % 64);
                        }
                    }
                }
            }
        }
        // Bits below `start` in its word are not candidates.
        if let Some(w) = bits.get_mut(first) {
            *w &= !0u64 << (start % 64);
        }
        let candidates: usize = bits.iter().skip(first).map(|w| w.count_ones() as usize).sum();
        let limit = r.limit.max(1);
        let mut items = Vec::with_capacity(limit.min(candidates));
        let mut next_after = None;
        'words: for (wi, &word) in bits.iter().enumerate().skip(first) {
            let mut w = word;
            while w != 0 {
                let pos = wi * 64 + w.trailing_zeros() as usize;
                w &= w - 1;
                let Some(nc) = kc.sorted.get(pos).and_then(|&n| self.graph.nodes.get(n as usize)) else { continue };
                if let Some((lo, hi)) = scope {
                    if nc.pre < lo || nc.pre >= hi {
                        continue;
                    }
                }
                if !nc.partitions.is_empty() && !intersects(&nc.partitions, &person.partitions) {
                    continue;
                }
                if items.len() == limit {
                    next_after = items.last().map(|v: &VisibleRef<'v>| v.id);
                    break 'words;
                }
                items.push(VisibleRef {
                    id: &nc.id,
                    name: &nc.name,
                    folder: self.folder_id(nc.folder),
                    properties: if nc.properties.is_empty() {
                        Vec::new()
                    } else {
                        nc.properties
                            .iter()
                            .filter(|(k, _)| !hidden.contains(&k.as_str()))
                            .map(|(k, v)| (k.as_str(), v.as_str()))
                            .collect()
                    },
                });
            }
        }
        Ok(ListPageRef { items, next_after, revision: self.revision })
    }

    /// Every visible object of a kind (ids, in id order), without paging: for
    /// change streams that diff visible sets. Same rules as [`Self::list_visible`].
    pub fn visible_ids<'v>(&'v self, r: &ListRequest<'_>) -> Result<Vec<&'v str>, Reason> {
        let req = ListRequest { after: None, limit: usize::MAX, ..*r };
        Ok(self.list_visible_refs(&req)?.items.into_iter().map(|v| v.id).collect())
    }

    fn folder_id(&self, n: u32) -> &str {
        self.graph.nodes.get(n as usize).map_or("", |x| x.id.as_str())
    }

    fn principal_label(&self, p: u32) -> (String, String) {
        let g = self.graph.groups.len() as u32;
        if p == EVERYONE {
            ("everyone".into(), String::new())
        } else if p <= g {
            ("group".into(), self.graph.groups[(p - 1) as usize].clone())
        } else {
            ("person".into(), self.persons.get((p - 1 - g) as usize).map_or(String::new(), |x| x.id.clone()))
        }
    }

    /// The decision with its evidence: the entries that matched the person's
    /// principals on the object (and where each came from), the person's
    /// groups, the roles that applied and the privileges consulted.
    pub fn explain(&self, r: &CheckRequest<'_>) -> Explanation {
        let decision = self.check(r);
        let mut ex = Explanation { decision, ..Default::default() };
        let Some(&pi) = self.graph.person_ix.get(r.subject) else { return ex };
        let person = &self.persons[pi as usize];
        let g = self.graph.groups.len() as u32;
        ex.groups = person
            .principals
            .iter()
            .filter(|&&p| p != EVERYONE && p <= g)
            .map(|&p| self.graph.groups[(p - 1) as usize].clone())
            .collect();
        if let Some(n) = r.object.and_then(|o| self.node(o.kind, o.id)) {
            let nc = &self.graph.nodes[n as usize];
            ex.entries = self
                .acl
                .of(n)
                .iter()
                .filter(|e| person.principals.binary_search(&e.principal).is_ok())
                .map(|e| self.ace_evidence(n, e))
                .collect();
            ex.partitions = nc.partitions.iter().map(|&p| self.graph.partitions[p as usize].clone()).collect();
        }
        if let Some(a) = r.application {
            if let Ok(ep) = self.effective_privileges(r.subject, a) {
                ex.roles = ep.roles.clone();
                if let Some(&ai) = self.catalog.app_ix.get(a) {
                    let app = &self.catalog.apps[ai as usize];
                    let mut consulted: Vec<u32> = Vec::new();
                    if let Some(n) = r.object.and_then(|o| self.node(o.kind, o.id)) {
                        let kind = self.graph.nodes[n as usize].kind;
                        let b = self.permission_of(r);
                        consulted.extend(app.type_guards.get(&(kind, b as u8)));
                        if let Some(prop) = r.property {
                            consulted.extend(
                                app.property_guards
                                    .iter()
                                    .filter(|(k, nm, acc, _)| *k == kind && *acc == b && nm == prop)
                                    .map(|x| x.3),
                            );
                        }
                    }
                    consulted.extend(r.privilege.and_then(|p| app.priv_ix.get(p)));
                    for p in consulted {
                        let pc = &app.privs[p as usize];
                        ex.privileges.push(PrivilegeEvidence {
                            name: pc.name.clone(),
                            effective: self.has_privilege(pi, ai, p),
                            granted: self.is_granted(pi, ai, p),
                            missing_requires: pc
                                .requires
                                .iter()
                                .filter(|&&q| !self.has_privilege(pi, ai, q))
                                .map(|&q| app.privs[q as usize].name.clone())
                                .collect(),
                        });
                    }
                }
            }
        }
        ex
    }
}

/// Privileges in dependency order (requirements first); cycles (rejected by
/// validation) are broken by skipping the back edge.
fn topo_order(privs: &[PrivC]) -> Vec<u32> {
    let mut state = vec![0u8; privs.len()];
    let mut out = Vec::with_capacity(privs.len());
    for start in 0..privs.len() as u32 {
        let mut stack = vec![(start, 0usize)];
        while let Some((n, i)) = stack.pop() {
            if i == 0 {
                if state[n as usize] != 0 {
                    continue;
                }
                state[n as usize] = 1;
            }
            match privs[n as usize].requires.get(i) {
                Some(&d) => {
                    stack.push((n, i + 1));
                    if state[d as usize] == 0 {
                        stack.push((d, 0));
                    }
                }
                None => {
                    state[n as usize] = 2;
                    out.push(n);
                }
            }
        }
    }
    out
}

/// An entry that matched, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AceEvidence {
    /// `everyone`, `group` or `person`.
    pub principal_kind: String,
    /// Group or person id (empty for everyone).
    pub principal_id: String,
    /// Kind of the node holding the ACE (`Folder` when inherited).
    pub target_kind: String,
    /// Id of the node holding the ACE.
    pub target_id: String,
    /// Whether the entry was inherited from a folder.
    pub inherited: bool,
    /// Permissions the entry allows.
    pub allow: PermSet,
    /// Permissions the entry denies.
    pub deny: PermSet,
    /// Whether the entry propagates.
    pub propagate: bool,
}

/// A privilege consulted by a decision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PrivilegeEvidence {
    /// Canonical name.
    pub name: String,
    /// Whether it is effective.
    pub effective: bool,
    /// Whether it is granted (effective unless a requirement is missing).
    pub granted: bool,
    /// Required privileges that are not effective.
    pub missing_requires: Vec<String>,
}

/// A decision with its evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The decision.
    pub decision: Decision,
    /// Entries of the person's principals on the object.
    pub entries: Vec<AceEvidence>,
    /// The person's access groups.
    pub groups: Vec<String>,
    /// Roles that applied in the application.
    pub roles: Vec<String>,
    /// Privileges consulted.
    pub privileges: Vec<PrivilegeEvidence>,
    /// The object's partitions.
    pub partitions: Vec<String>,
}

impl Default for Explanation {
    fn default() -> Self {
        Explanation {
            decision: Decision::new(Reason::Internal, 0),
            entries: Vec::new(),
            groups: Vec::new(),
            roles: Vec::new(),
            privileges: Vec::new(),
            partitions: Vec::new(),
        }
    }
}
