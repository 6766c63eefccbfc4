//! Compiling the graph layer: nodes, kinds and ids, and the application catalogs.

use super::{AppC, Apps, EVERYONE, Graph, KindC, NONE, NodeC, PrivC, find_node, hash_id};
use crate::model::{self, Subject, Target, TenantConfig};
use rustc_hash::{FxHashMap, FxHashSet};

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

    // INVARIANT: kind < self.kinds.len(): every caller passes an index `Self::kind` returned;
    // m < self.nodes.len(): `by_id` holds only indexes of nodes pushed here (n was, just above).
    #[allow(clippy::indexing_slicing)]
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

    pub(super) fn node_of(&self, kind: &str, id: &str) -> Option<u32> {
        find_node(&self.kinds, &self.nodes, self.kind(kind)?, id)
    }

    /// The principal index of an ACE subject.
    pub(super) fn principal(&self, s: &Subject) -> Option<u32> {
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
    pub(super) fn target(&self, t: &Target) -> Option<u32> {
        match t {
            Target::Folder(id) => self.node_of(model::types::FOLDER, id.as_str()),
            Target::Person(id) => self.node_of(model::types::PERSON, id.as_str()),
            Target::Group(id) => self.node_of(model::types::ACCESS_GROUP, id.as_str()),
            Target::Role(id) => self.node_of(model::types::ROLE, id.as_str()),
            Target::Object(k) => self.node_of(k.kind.as_str(), k.id.as_str()),
        }
    }

    /// Nodes, kinds and ids; then the catalogs (whose guards name kinds).
    pub(super) fn compile(c: &TenantConfig) -> (Graph, Apps) {
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

        // INVARIANT: n < b.nodes.len(): `add_node` returns the index of the node it pushed.
        #[allow(clippy::indexing_slicing)]
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
            // INVARIANT: n < b.nodes.len(): `add_node` returns the index of the node it pushed.
            #[allow(clippy::indexing_slicing)]
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
        // INVARIANT: x, y < nodes.len(): `sorted` holds only indexes of nodes `add_node` pushed.
        #[allow(clippy::indexing_slicing)]
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

/// Privileges in dependency order (requirements first); cycles (rejected by
/// validation) are broken by skipping the back edge.
// INVARIANT: n, d < privs.len() == state.len(): n is a start in 0..privs.len() or a requirement d,
// and requirements are `priv_ix` values of the same catalog (`Apps::compile`, the only caller).
#[allow(clippy::indexing_slicing)]
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
