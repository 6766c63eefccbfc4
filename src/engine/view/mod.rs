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

mod check;
mod compile;
mod explain;
mod graph;
mod list;

pub use explain::{AceEvidence, Explanation, PrivilegeEvidence};

use crate::model::{Perm, Revision};
use hashbrown::HashTable;
use rustc_hash::{FxBuildHasher, FxHashMap, FxHashSet};
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
// INVARIANT: m < nodes.len(): `by_id` holds only indexes of nodes `GraphBuilder::add_node` had
// pushed, nodes are never removed, and both callers pass the kinds and nodes of one graph.
#[allow(clippy::indexing_slicing)]
fn find_node(kinds: &[KindC], nodes: &[NodeC], kind: u32, id: &str) -> Option<u32> {
    kinds.get(kind as usize)?.by_id.find(hash_id(id), |&m| nodes[m as usize].id == id).copied()
}

/// Whether two sorted slices share an element.
fn intersects(a: &[u32], b: &[u32]) -> bool {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        // INVARIANT: i < a.len() and j < b.len(): the loop condition.
        #[allow(clippy::indexing_slicing)]
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => return true,
        }
    }
    false
}

/// A person's privilege row in one application (`effective` or granted).
#[inline]
fn app_row<'p>(person: &'p PersonC, app: &AppC, effective: bool) -> Option<&'p [u64]> {
    let rows = if effective { &person.effective } else { &person.granted };
    rows.get(app.offset..app.offset + app.words)
}

impl TenantView {
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
}
