//! Compiling a configuration into a view: ACL table, roles, memberships, person entries, `build`, `build_next`.

use super::check::verdict;
use super::{
    AclEntry, AclGroup, AclTable, AclVerdict, AppC, Apps, Compiled, EVERYONE, Graph, KindAcls, Members, NONE,
    PersonApp, PersonC, RoleC, Source, TenantView, bit, set_bit,
};
use crate::model::{self, Perm, PersonId, Revision, TenantConfig};
use rustc_hash::FxHashMap;
use std::cmp::Reverse;
use std::sync::Arc;

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

/// Unique, never reused numbers naming each compiled layer and person entry.
static STAMPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The first of `n` fresh stamps.
fn stamps(n: usize) -> u64 {
    STAMPS.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed)
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
            // INVARIANT: node.folder < f == propagated.len(): folders are nodes 0..folder_count in pre-order,
            // so a folder's parent comes before it, and each folder pushes its entry before the next.
            #[allow(clippy::indexing_slicing)]
            let base: &[AclEntry] = if node.folder == NONE { &[] } else { &propagated[node.folder as usize] };
            let mine = own.get(&(f as u32)).map(Vec::as_slice).unwrap_or(&[]);
            let prop: Vec<AclEntry> = mine.iter().filter(|e| e.propagate).copied().collect();
            *slot = add(overlay(base, mine));
            propagated.push(overlay(base, &prop));
        }
        let inherited: Vec<u32> = propagated.iter().map(|p| add(p.clone())).collect();
        let empty = add(Vec::new());
        // INVARIANT: folder < folder_count == propagated.len() == inherited.len(): a non-folder node's
        // folder is a folder node's index (`folder_of`) or NONE, and folders are nodes 0..folder_count.
        #[allow(clippy::indexing_slicing)]
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
    pub(super) fn of(&self, n: u32) -> &[AclEntry] {
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
                    // INVARIANT: ai < apps.apps.len(): `app_ix` maps each catalog to the index it was
                    // pushed at (`Apps::compile`).
                    #[allow(clippy::indexing_slicing)]
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
// INVARIANT: pi < out.len() == c.persons.len(): `person_ix` numbers the persons of the configuration
// the graph was compiled from: `c` itself, or one with the same persons (`same_graph`).
#[allow(clippy::indexing_slicing)]
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
            // INVARIANT: app.offset + app.words <= row_words == granted.len(): `Apps::compile` lays the
            // applications' words end to end and sets `row_words` to the end of the last.
            #[allow(clippy::indexing_slicing)]
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
                    // INVARIANT: k < readable.len(): `readable` has one entry per role of `m.roles`,
                    // which k enumerates.
                    #[allow(clippy::indexing_slicing)]
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
            // INVARIANT: app.offset + app.words <= row_words == effective.len(), as for `row` above.
            #[allow(clippy::indexing_slicing)]
            let eff = &mut effective[app.offset..app.offset + app.words];
            // INVARIANT: p < app.privs.len(): `topo_order` yields only indexes of `app.privs`.
            #[allow(clippy::indexing_slicing)]
            for &p in &app.topo {
                if bit(row, p) && app.privs[p as usize].requires.iter().all(|&r| bit(eff, r)) {
                    set_bit(eff, p);
                }
            }
            // INVARIANT: ri < self.roles.len(): `applied` only gets a role after `self.roles.get(ri)` was Some above.
            #[allow(clippy::indexing_slicing)]
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
                // INVARIANT: i < all.len(): `memberships_all` has an entry per person of `next`, which i enumerates.
                #[allow(clippy::indexing_slicing)]
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
}
