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

use super::types::*;

use crate::model::{self, Perm, PermSet, Revision, Subject, Target, TenantConfig};
use hashbrown::HashTable;
use rustc_hash::{FxBuildHasher, FxHashMap, FxHashSet};
use std::hash::BuildHasher;
use std::cmp::Reverse;

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

#[derive(Debug)]
struct PersonC {
    id: String,
    enabled: bool,
    /// Sorted principal indexes: everyone, groups, the person itself.
    principals: Box<[u32]>,
    /// Sorted partition indexes.
    partitions: Box<[u32]>,
    /// Roles assigned directly or through a group (role indexes), sorted.
    roles: Box<[u32]>,
}

#[derive(Debug)]
struct NodeC {
    kind: u32,
    id: String,
    name: String,
    /// Containing folder node, or NONE for the root folder.
    folder: u32,
    /// Pre-order number of the folder the node is in (a folder: itself).
    pre: u32,
    acl: u32,
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

#[derive(Debug)]
struct PrivC {
    name: String,
    requires: Box<[u32]>,
    permission: Option<Perm>,
}

#[derive(Debug)]
struct AppC {
    name: String,
    privs: Vec<PrivC>,
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

#[derive(Debug)]
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

#[derive(Debug)]
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

/// The compiled view of one tenant at one revision. Immutable: a write builds
/// a new view and the snapshot swaps it in whole, so a reader never sees part
/// of a batch.
#[derive(Debug)]
pub struct TenantView {
    revision: Revision,
    tenant: String,
    name: String,
    restricted_mode: bool,
    persons: Vec<PersonC>,
    person_ix: FxHashMap<String, u32>,
    groups: Vec<String>,
    partitions: Vec<String>,
    nodes: Vec<NodeC>,
    /// Pre-order end (exclusive) of each folder's subtree, by folder node index.
    folder_end: Vec<u32>,
    kinds: Vec<KindC>,
    kind_ix: FxHashMap<String, u32>,
    acls: Vec<Box<[AclEntry]>>,
    apps: Vec<AppC>,
    app_ix: FxHashMap<String, u32>,
    roles: Vec<RoleC>,
    /// Words per person in the privilege rows.
    row_words: usize,
    granted: Vec<u64>,
    effective: Vec<u64>,
    /// persons × apps.
    person_apps: Vec<PersonApp>,
    restricted_any: FxHashSet<u32>,
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

struct Builder {
    kinds: Vec<KindC>,
    kind_ix: FxHashMap<String, u32>,
    nodes: Vec<NodeC>,
    acl_intern: FxHashMap<Box<[AclEntry]>, u32>,
    acls: Vec<Box<[AclEntry]>>,
}

impl Builder {
    fn kind(&mut self, name: &str) -> u32 {
        if let Some(&k) = self.kind_ix.get(name) {
            return k;
        }
        let k = self.kinds.len() as u32;
        self.kinds.push(KindC { name: name.to_owned(), ..Default::default() });
        self.kind_ix.insert(name.to_owned(), k);
        k
    }

    fn intern(&mut self, acl: Vec<AclEntry>) -> u32 {
        let acl = acl.into_boxed_slice();
        if let Some(&i) = self.acl_intern.get(&acl) {
            return i;
        }
        let i = self.acls.len() as u32;
        self.acls.push(acl.clone());
        self.acl_intern.insert(acl, i);
        i
    }

    fn add_node(&mut self, kind: u32, id: &str, name: &str, folder: u32, pre: u32) -> u32 {
        let n = self.nodes.len() as u32;
        self.nodes.push(NodeC {
            kind,
            id: id.to_owned(),
            name: name.to_owned(),
            folder,
            pre,
            acl: 0,
            partitions: Box::new([]),
            properties: Box::new([]),
        });
        let (k, nodes) = (&mut self.kinds[kind as usize], &self.nodes);
        k.by_id.insert_unique(hash_id(id), n, |&m| hash_id(&nodes[m as usize].id));
        k.sorted.push(n);
        n
    }
}

impl TenantView {
    /// Compiles a validated configuration. An invalid one (which the model
    /// layer never lets through) still yields a view: dangling references are
    /// skipped, never followed, so every decision fails closed.
    pub fn build(c: &TenantConfig, revision: Revision) -> TenantView {
        let mut b = Builder {
            kinds: Vec::new(),
            kind_ix: FxHashMap::default(),
            nodes: Vec::new(),
            acl_intern: FxHashMap::default(),
            acls: Vec::new(),
        };
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
            b.nodes[n as usize].properties =
                p.properties.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        }
        for g in c.groups.values() {
            let f = folder_of(g.folder.as_str());
            b.add_node(k_group, g.id.as_str(), &g.name, f, f);
        }
        let role_node_start = b.nodes.len() as u32;
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
            let mut parts: Vec<u32> = o.partitions.iter().filter_map(|p| partition_ix.get(p.as_str()).copied()).collect();
            parts.sort_unstable();
            node.partitions = parts.into_boxed_slice();
            node.properties = o.properties.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        }

        // Principals: everyone = 0, groups 1..=G, persons G+1...
        let groups: Vec<String> = c.groups.keys().map(|g| g.0.clone()).collect();
        let group_ix: FxHashMap<&str, u32> = c.groups.keys().enumerate().map(|(i, g)| (g.as_str(), i as u32)).collect();
        let person_ix: FxHashMap<String, u32> =
            c.persons.keys().enumerate().map(|(i, p)| (p.0.clone(), i as u32)).collect();
        let g_count = groups.len() as u32;
        let principal_of = |s: &Subject| -> Option<u32> {
            match s {
                Subject::Everyone => Some(EVERYONE),
                Subject::Group(g) => group_ix.get(g.as_str()).map(|i| 1 + i),
                Subject::Person(p) => person_ix.get(p.as_str()).map(|i| 1 + g_count + i),
            }
        };

        // Own ACEs per node, sorted by principal.
        let mut own: FxHashMap<u32, Vec<AclEntry>> = FxHashMap::default();
        for ace in c.aces.values() {
            let node = match &ace.target {
                Target::Folder(id) => folder_ix.get(id.as_str()).copied(),
                Target::Person(id) => find_node(&b.kinds, &b.nodes, k_person, id.as_str()),
                Target::Group(id) => find_node(&b.kinds, &b.nodes, k_group, id.as_str()),
                Target::Role(id) => find_node(&b.kinds, &b.nodes, k_role, id.as_str()),
                Target::Object(k) => {
                    b.kind_ix.get(k.kind.as_str()).and_then(|&ki| find_node(&b.kinds, &b.nodes, ki, k.id.as_str()))
                }
            };
            let (Some(node), Some(principal)) = (node, principal_of(&ace.subject)) else { continue };
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

        // Propagated ACL per folder (what its contents inherit), in pre-order.
        let folder_count = folder_end.len();
        let mut propagated: Vec<Vec<AclEntry>> = Vec::with_capacity(folder_count);
        for f in 0..folder_count as u32 {
            let parent = b.nodes[f as usize].folder;
            let base: &[AclEntry] = if parent == NONE { &[] } else { &propagated[parent as usize] };
            let mine = own.get(&f).map(Vec::as_slice).unwrap_or(&[]);
            let prop: Vec<AclEntry> = mine.iter().filter(|e| e.propagate).copied().collect();
            let folder_acl = overlay(base, mine);
            let acl = b.intern(folder_acl);
            b.nodes[f as usize].acl = acl;
            propagated.push(overlay(base, &prop));
        }
        let mut inherited_ix: Vec<u32> = Vec::with_capacity(folder_count);
        for p in &propagated {
            let i = b.intern(p.clone());
            inherited_ix.push(i);
        }
        let empty_acl = b.intern(Vec::new());
        for n in folder_count as u32..b.nodes.len() as u32 {
            let folder = b.nodes[n as usize].folder;
            let acl = match own.get(&n) {
                Some(mine) => {
                    let base: &[AclEntry] = if folder == NONE { &[] } else { &propagated[folder as usize] };
                    b.intern(overlay(base, mine))
                }
                None if folder == NONE => empty_acl,
                None => inherited_ix[folder as usize],
            };
            b.nodes[n as usize].acl = acl;
        }

        // Listing order per kind: nodes were added from the configuration's
        // ordered maps, so every kind but folders (pre-order) is already in id
        // order; sort only what is not.
        for k in &mut b.kinds {
            let nodes = &b.nodes;
            if !k.sorted.is_sorted_by(|&x, &y| nodes[x as usize].id <= nodes[y as usize].id) {
                k.sorted.sort_unstable_by(|&x, &y| nodes[x as usize].id.cmp(&nodes[y as usize].id));
            }
        }

        // Persons: principals, partitions.
        let mut person_groups: Vec<Vec<u32>> = vec![Vec::new(); c.persons.len()];
        for (gi, g) in c.groups.values().enumerate() {
            for m in &g.members {
                if let Some(&pi) = person_ix.get(m.as_str()) {
                    person_groups[pi as usize].push(gi as u32);
                }
            }
        }
        let mut person_parts: Vec<Vec<u32>> = vec![Vec::new(); c.persons.len()];
        for (pi, p) in c.partitions.values().enumerate() {
            for m in &p.members {
                if let Some(&x) = person_ix.get(m.as_str()) {
                    person_parts[x as usize].push(pi as u32);
                }
            }
        }
        let mut person_roles: Vec<Vec<u32>> = vec![Vec::new(); c.persons.len()];
        for (ri, r) in c.roles.values().enumerate() {
            let via_groups = r.members.groups.iter().filter_map(|g| c.groups.get(g)).flat_map(|g| g.members.iter());
            for p in r.members.persons.iter().chain(via_groups) {
                if let Some(&pi) = person_ix.get(p.as_str()) {
                    person_roles[pi as usize].push(ri as u32);
                }
            }
        }
        let persons: Vec<PersonC> = c
            .persons
            .values()
            .enumerate()
            .map(|(i, p)| {
                let mut principals: Vec<u32> = Vec::with_capacity(person_groups[i].len() + 2);
                principals.push(EVERYONE);
                principals.extend(person_groups[i].iter().map(|g| g + 1));
                principals.push(1 + g_count + i as u32);
                let mut parts = std::mem::take(&mut person_parts[i]);
                parts.sort_unstable();
                parts.dedup();
                let mut roles = std::mem::take(&mut person_roles[i]);
                roles.sort_unstable();
                roles.dedup();
                PersonC {
                    id: p.id.0.clone(),
                    enabled: p.enabled,
                    principals: principals.into_boxed_slice(),
                    partitions: parts.into_boxed_slice(),
                    roles: roles.into_boxed_slice(),
                }
            })
            .collect();

        // Applications.
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
        let row_words = offset;

        let roles: Vec<RoleC> = c
            .roles
            .values()
            .enumerate()
            .map(|(ri, r)| {
                let mut privs = FxHashMap::default();
                for (app, names) in &r.privileges {
                    if let Some(&ai) = app_ix.get(app.as_str()) {
                        let a: &AppC = &apps[ai as usize];
                        let mut v: Vec<u32> = names.iter().filter_map(|n| a.priv_ix.get(n.as_str()).copied()).collect();
                        v.sort_unstable();
                        v.dedup();
                        if !v.is_empty() {
                            privs.insert(ai, v);
                        }
                    }
                }
                RoleC { node: role_node_start + ri as u32, name: r.name.clone(), privs }
            })
            .collect();

        let mut view = TenantView {
            revision,
            tenant: c.id.0.clone(),
            name: c.name.clone(),
            restricted_mode: c.restricted_mode,
            persons,
            person_ix,
            groups,
            partitions,
            nodes: b.nodes,
            folder_end,
            kinds: b.kinds,
            kind_ix: b.kind_ix,
            acls: b.acls,
            apps,
            app_ix,
            roles,
            row_words,
            granted: Vec::new(),
            effective: Vec::new(),
            person_apps: Vec::new(),
            restricted_any,
        };
        view.compute_privileges(c);
        view
    }

    /// Compiles `next`, reusing what it shares with `prev` (the view compiled
    /// from the configuration given beside it).
    pub fn build_next(prev: Option<(&TenantView, &TenantConfig)>, next: &TenantConfig, revision: Revision) -> TenantView {
        let _ = prev;
        TenantView::build(next, revision)
    }

    /// SPEC §3 for every (person, application).
    fn compute_privileges(&mut self, c: &TenantConfig) {
        let n_persons = self.persons.len();
        let mut granted = vec![0u64; n_persons * self.row_words];
        let mut effective = vec![0u64; n_persons * self.row_words];
        let mut person_apps = Vec::with_capacity(n_persons * self.apps.len());
        let role_read = Perm::Read;
        for (pi, person) in c.persons.values().enumerate() {
            let readable: Vec<bool> = self.persons[pi]
                .roles
                .iter()
                .map(|&ri| {
                    let node = &self.nodes[self.roles[ri as usize].node as usize];
                    self.acl_verdict(pi as u32, node.acl, role_read) == AclVerdict::Allow
                })
                .collect();
            for (ai, app) in self.apps.iter().enumerate() {
                let ai = ai as u32;
                let base = pi * self.row_words + app.offset;
                let row = &mut granted[base..base + app.words];
                let legacy = app.legacy_sections.iter().find_map(|s| {
                    person.annex.get(s).and_then(|opts| opts.get("role")).map(|r| (s.clone(), r.clone()))
                });
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
                    for (k, &ri) in self.persons[pi].roles.iter().enumerate() {
                        let Some(ps) = self.roles[ri as usize].privs.get(&ai) else { continue };
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
                let eff = &mut effective[base..base + app.words];
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
        }
        self.granted = granted;
        self.effective = effective;
        self.person_apps = person_apps;
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
        (self.persons.len(), self.nodes.len(), self.acls.len())
    }

    /// Application names.
    pub fn applications(&self) -> impl Iterator<Item = &str> {
        self.apps.iter().map(|a| a.name.as_str())
    }

    /// Whether the person exists (enabled or not).
    pub fn has_person(&self, id: &str) -> bool {
        self.person_ix.contains_key(id)
    }

    /// Ids of every person.
    pub fn person_ids(&self) -> impl Iterator<Item = &str> {
        self.persons.iter().map(|p| p.id.as_str())
    }

    fn node(&self, kind: &str, id: &str) -> Option<u32> {
        let k = self.kind_ix.get(kind)?;
        find_node(&self.kinds, &self.nodes, *k, id)
    }

    /// Whether an object of `kind` with `id` exists.
    pub fn has_object(&self, kind: &str, id: &str) -> bool {
        self.node(kind, id).is_some()
    }

    /// The ACL verdict for person `pi` on ACL `acl` for permission `b`.
    #[inline]
    fn acl_verdict(&self, pi: u32, acl: u32, b: Perm) -> AclVerdict {
        let (Some(person), Some(acl)) = (self.persons.get(pi as usize), self.acls.get(acl as usize)) else {
            return AclVerdict::Nothing;
        };
        let mask = b.bit();
        let (mut allow, mut deny) = (false, false);
        let (ps, es) = (&person.principals[..], &acl[..]);
        let (mut i, mut j) = (0, 0);
        while i < ps.len() && j < es.len() {
            let (p, e) = (ps[i], &es[j]);
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

    #[inline]
    fn row<'a>(&self, rows: &'a [u64], pi: u32, ai: u32) -> Option<&'a [u64]> {
        let app = self.apps.get(ai as usize)?;
        let base = pi as usize * self.row_words + app.offset;
        rows.get(base..base + app.words)
    }

    #[inline]
    fn has_privilege(&self, pi: u32, ai: u32, p: u32) -> bool {
        self.row(&self.effective, pi, ai).is_some_and(|r| bit(r, p))
    }

    #[inline]
    fn is_granted(&self, pi: u32, ai: u32, p: u32) -> bool {
        self.row(&self.granted, pi, ai).is_some_and(|r| bit(r, p))
    }

    #[inline]
    fn person_app(&self, pi: u32, ai: u32) -> Option<&PersonApp> {
        self.person_apps.get(pi as usize * self.apps.len() + ai as usize)
    }

    /// Decides one check (SPEC §4). Allocates nothing.
    pub fn check(&self, r: &CheckRequest<'_>) -> Decision {
        let reason = self.evaluate(r);
        Decision { allowed: reason.is_allowed(), reason, revision: self.revision }
    }

    fn evaluate(&self, r: &CheckRequest<'_>) -> Reason {
        if (r.privilege.is_some() && r.application.is_none())
            || (r.object.is_none() && r.privilege.is_none())
            || (r.property.is_some() && r.object.is_none())
        {
            return Reason::InvalidRequest;
        }
        let Some(&pi) = self.person_ix.get(r.subject) else { return Reason::UnknownSubject };
        let Some(person) = self.persons.get(pi as usize) else { return Reason::Internal };
        if !person.enabled {
            return Reason::DisabledSubject;
        }
        let node = match r.object {
            Some(o) => {
                if o.tenant.is_some_and(|t| t != self.tenant) {
                    return Reason::CrossTenant;
                }
                match self.node(o.kind, o.id) {
                    Some(n) => Some(n),
                    None => return Reason::UnknownObject,
                }
            }
            None => None,
        };
        let app = match r.application {
            Some(a) => match self.app_ix.get(a) {
                Some(&ai) => Some(ai),
                None => return Reason::UnknownApplication,
            },
            None => None,
        };
        let app_c = app.and_then(|ai| self.apps.get(ai as usize));
        let privilege = match (r.privilege, app_c) {
            (Some(name), Some(a)) => match a.priv_ix.get(name) {
                Some(&p) => Some(p),
                None => return Reason::UnknownPrivilege,
            },
            _ => None,
        };
        let b = self.permission_of(r);
        let mut consulted = false;
        if let Some(n) = node {
            let Some(nc) = self.nodes.get(n as usize) else { return Reason::Internal };
            if !nc.partitions.is_empty() && !intersects(&nc.partitions, &person.partitions) {
                return Reason::Partition;
            }
            match self.acl_verdict(pi, nc.acl, b) {
                AclVerdict::Deny => return Reason::ExplicitDeny,
                AclVerdict::Nothing => return Reason::NoGrant,
                AclVerdict::Allow => {}
            }
            if let (Some(ai), Some(a)) = (app, app_c) {
                if let Some(&g) = a.type_guards.get(&(nc.kind, b as u8)) {
                    consulted = true;
                    if !self.has_privilege(pi, ai, g) {
                        return Reason::MissingPrivilege;
                    }
                }
                if let Some(prop) = r.property {
                    if let Some(&(_, _, _, g)) =
                        a.property_guards.iter().find(|(k, name, acc, _)| *k == nc.kind && *acc == b && name == prop)
                    {
                        consulted = true;
                        if !self.has_privilege(pi, ai, g) {
                            return Reason::MissingPrivilege;
                        }
                    }
                }
            }
        }
        if let (Some(p), Some(ai)) = (privilege, app) {
            consulted = true;
            if !self.has_privilege(pi, ai, p) {
                return if self.is_granted(pi, ai, p) { Reason::UnmetDependency } else { Reason::MissingPrivilege };
            }
        }
        if let Some(n) = node {
            if self.restricted_mode && matches!(b, Perm::Create | Perm::Change | Perm::Delete) {
                let kind = self.nodes[n as usize].kind;
                let locked = match app_c {
                    Some(a) => a.restricted.contains(&kind),
                    None => self.restricted_any.contains(&kind),
                };
                if locked {
                    return Reason::RestrictedMode;
                }
            }
        }
        let open = consulted
            && app.and_then(|ai| self.person_app(pi, ai)).is_some_and(|pa| pa.source == Source::Open);
        if open { Reason::OpenWhenUnconfigured } else { Reason::Allowed }
    }

    /// The permission a check asks: the request's, else the privilege's
    /// declared permission (tasks that are not bits, SPEC §5), else Read.
    fn permission_of(&self, r: &CheckRequest<'_>) -> Perm {
        r.permission
            .or_else(|| {
                let a = self.apps.get(*self.app_ix.get(r.application?)? as usize)?;
                a.privs.get(*a.priv_ix.get(r.privilege?)? as usize)?.permission
            })
            .unwrap_or(Perm::Read)
    }

    /// A person's effective privileges in an application (SPEC §3).
    pub fn effective_privileges(&self, person: &str, app: &str) -> Result<EffectivePrivileges, Reason> {
        let (pi, ai) = self.person_and_app(person, app)?;
        let (Some(a), Some(pa), Some(eff), Some(granted)) = (
            self.apps.get(ai as usize),
            self.person_app(pi, ai),
            self.row(&self.effective, pi, ai),
            self.row(&self.granted, pi, ai),
        ) else {
            return Err(Reason::Internal);
        };
        let names = |pred: &dyn Fn(u32) -> bool| -> Vec<String> {
            (0..a.privs.len() as u32).filter(|&p| pred(p)).map(|p| a.privs[p as usize].name.clone()).collect()
        };
        let role_names = |rs: &[u32]| -> Vec<String> { rs.iter().map(|&r| self.roles[r as usize].name.clone()).collect() };
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
        let (Some(a), Some(eff)) = (self.apps.get(ai as usize), self.row(&self.effective, pi, ai)) else {
            return Err(Reason::Internal);
        };
        Ok((0..a.privs.len() as u32).filter(|&p| bit(eff, p)).map(|p| a.privs[p as usize].name.as_str()).collect())
    }

    /// [`Self::privilege_bits`] borrowed from the view (no allocation): bit
    /// `i` is the catalog's `i`-th privilege.
    pub fn privilege_row(&self, person: &str, app: &str) -> Result<&[u64], Reason> {
        let (pi, ai) = self.person_and_app(person, app)?;
        self.row(&self.effective, pi, ai).ok_or(Reason::Internal)
    }

    fn person_and_app(&self, person: &str, app: &str) -> Result<(u32, u32), Reason> {
        let &pi = self.person_ix.get(person).ok_or(Reason::UnknownSubject)?;
        if !self.persons.get(pi as usize).is_some_and(|p| p.enabled) {
            return Err(Reason::DisabledSubject);
        }
        let &ai = self.app_ix.get(app).ok_or(Reason::UnknownApplication)?;
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
        let &pi = self.person_ix.get(r.subject).ok_or(Reason::UnknownSubject)?;
        let person = self.persons.get(pi as usize).ok_or(Reason::Internal)?;
        if !person.enabled {
            return Err(Reason::DisabledSubject);
        }
        let app = match r.application {
            Some(a) => Some(*self.app_ix.get(a).ok_or(Reason::UnknownApplication)?),
            None => None,
        };
        let scope = match r.folder {
            Some(f) => {
                let n = self.node(model::types::FOLDER, f).ok_or(Reason::UnknownObject)?;
                Some((n, self.folder_end.get(n as usize).copied().unwrap_or(n + 1)))
            }
            None => None,
        };
        let empty = ListPageRef { items: Vec::new(), next_after: None, revision: self.revision };
        let Some(&kind) = self.kind_ix.get(r.kind) else { return Ok(empty) };
        let b = r.permission;
        let app_c = app.and_then(|ai| self.apps.get(ai as usize));
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
                None => self.restricted_any.contains(&kind),
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
        let Some(kc) = self.kinds.get(kind as usize) else { return Ok(empty) };
        let start = match r.after {
            Some(after) => kc.sorted.partition_point(|&n| self.nodes[n as usize].id.as_str() <= after),
            None => 0,
        };
        // Verdict per distinct ACL, computed on first use (0 unknown, 1 allow, 2 not).
        let mut memo = vec![0u8; self.acls.len()];
        let limit = r.limit.max(1);
        let mut items = Vec::with_capacity(limit.min(kc.sorted.len() - start));
        let mut next_after = None;
        for &n in &kc.sorted[start..] {
            let nc = &self.nodes[n as usize];
            if let Some((lo, hi)) = scope {
                if nc.pre < lo || nc.pre >= hi {
                    continue;
                }
            }
            if !nc.partitions.is_empty() && !intersects(&nc.partitions, &person.partitions) {
                continue;
            }
            let Some(slot) = memo.get_mut(nc.acl as usize) else { continue };
            if *slot == 0 {
                *slot = if self.acl_verdict(pi, nc.acl, b) == AclVerdict::Allow { 1 } else { 2 };
            }
            if *slot != 1 {
                continue;
            }
            if items.len() == limit {
                next_after = items.last().map(|v: &VisibleRef<'v>| v.id);
                break;
            }
            items.push(VisibleRef {
                id: &nc.id,
                name: &nc.name,
                folder: self.folder_id(nc.folder),
                properties: nc
                    .properties
                    .iter()
                    .filter(|(k, _)| !hidden.contains(&k.as_str()))
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect(),
            });
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
        self.nodes.get(n as usize).map_or("", |x| x.id.as_str())
    }

    fn principal_label(&self, p: u32) -> (String, String) {
        let g = self.groups.len() as u32;
        if p == EVERYONE {
            ("everyone".into(), String::new())
        } else if p <= g {
            ("group".into(), self.groups[(p - 1) as usize].clone())
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
        let Some(&pi) = self.person_ix.get(r.subject) else { return ex };
        let person = &self.persons[pi as usize];
        let g = self.groups.len() as u32;
        ex.groups = person.principals.iter().filter(|&&p| p != EVERYONE && p <= g).map(|&p| self.groups[(p - 1) as usize].clone()).collect();
        if let Some(n) = r.object.and_then(|o| self.node(o.kind, o.id)) {
            let nc = &self.nodes[n as usize];
            if let Some(acl) = self.acls.get(nc.acl as usize) {
                for e in acl.iter().filter(|e| person.principals.binary_search(&e.principal).is_ok()) {
                    let (pk, pid) = self.principal_label(e.principal);
                    let origin = &self.nodes[e.origin as usize];
                    ex.entries.push(AceEvidence {
                        principal_kind: pk,
                        principal_id: pid,
                        target_kind: self.kinds[origin.kind as usize].name.clone(),
                        target_id: origin.id.clone(),
                        inherited: e.origin != n,
                        allow: PermSet(e.allow),
                        deny: PermSet(e.deny),
                        propagate: e.propagate,
                    });
                }
            }
            ex.partitions = nc.partitions.iter().map(|&p| self.partitions[p as usize].clone()).collect();
        }
        if let Some(a) = r.application {
            if let Ok(ep) = self.effective_privileges(r.subject, a) {
                ex.roles = ep.roles.clone();
                if let Some(&ai) = self.app_ix.get(a) {
                    let app = &self.apps[ai as usize];
                    let mut consulted: Vec<u32> = Vec::new();
                    if let Some(n) = r.object.and_then(|o| self.node(o.kind, o.id)) {
                        let kind = self.nodes[n as usize].kind;
                        let b = self.permission_of(r);
                        consulted.extend(app.type_guards.get(&(kind, b as u8)));
                        if let Some(prop) = r.property {
                            consulted.extend(
                                app.property_guards.iter().filter(|(k, nm, acc, _)| *k == kind && *acc == b && nm == prop).map(|x| x.3),
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
            decision: Decision { allowed: false, reason: Reason::Internal, revision: 0 },
            entries: Vec::new(),
            groups: Vec::new(),
            roles: Vec::new(),
            privileges: Vec::new(),
            partitions: Vec::new(),
        }
    }
}
