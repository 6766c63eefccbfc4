//! Evidence for a decision: the matching entries, groups, roles and privileges consulted.

use super::{AclEntry, EVERYONE, TenantView};
use crate::engine::types::{CheckRequest, Decision, Reason};
use crate::model::{Perm, PermSet};

impl TenantView {
    /// The entries that apply to a node after inheritance (SPEC §2 rule 2):
    /// per principal, its own entry on the node or the nearest propagating
    /// one of a folder above, ordered by principal (everyone, groups by id,
    /// persons by id). `None`: no such node.
    pub fn effective_entries(&self, kind: &str, id: &str) -> Option<Vec<AceEvidence>> {
        let n = self.node(kind, id)?;
        Some(self.acl.of(n).iter().map(|e| self.ace_evidence(n, e)).collect())
    }

    // INVARIANT: e.origin < nodes.len(): an entry's origin is a node of the graph its ACL table was
    // compiled against, this view's; origin.kind < kinds.len(): node kinds come from `GraphBuilder::kind`.
    #[allow(clippy::indexing_slicing)]
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

    // INVARIANT: p - 1 < groups.len(): that branch has 1 <= p <= g == groups.len().
    #[allow(clippy::indexing_slicing)]
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
    // INVARIANT: each index comes from this view's own tables: pi < persons.len() (one entry
    // per `person_ix` index); p - 1 < groups.len() (filtered to 1..=g); n < nodes.len() (from `node`);
    // the node's partitions index `graph.partitions` (both from the configuration's partitions);
    // ai < apps.len() (from `app_ix`); p, q < app.privs.len() (guards, `priv_ix` and `requires`
    // of `app` all hold `priv_ix` values of its catalog).
    #[allow(clippy::indexing_slicing)]
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
