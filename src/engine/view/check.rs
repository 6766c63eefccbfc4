//! Decisions over a compiled view: checks (SPEC §4) and privilege queries (SPEC §3).

use super::{AclEntry, AclVerdict, AppC, NONE, PersonC, PrivC, Source, TenantView, app_row, bit, intersects};
use crate::engine::types::{CheckRequest, Decision, EffectivePrivileges, PrivilegeSource, Reason};
use crate::model::Perm;
use std::sync::Arc;

/// Whether a person holds privilege `p` of `app` (`effective`, or only granted).
#[inline]
pub(super) fn holds(person: &PersonC, app: &AppC, p: u32, effective: bool) -> bool {
    app_row(person, app, effective).is_some_and(|r| bit(r, p))
}

/// What the entries of one ACL say to a person with `principals` (both
/// sorted) about permission `b`: any deny wins, then any allow (SPEC §2).
#[inline]
pub(super) fn verdict(principals: &[u32], acl: &[AclEntry], b: Perm) -> AclVerdict {
    let mask = b.bit();
    let (mut allow, mut deny) = (false, false);
    let (mut i, mut j) = (0, 0);
    while i < principals.len() && j < acl.len() {
        // INVARIANT: i < principals.len() and j < acl.len(): the loop condition.
        #[allow(clippy::indexing_slicing)]
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
pub(super) struct Resolved {
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

impl TenantView {
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
        match self.resolve_well_formed(r) {
            Ok(q) => self.decide(person, &q),
            Err(reason) => reason,
        }
    }

    /// The parts of a check that do not depend on the person, looked up once
    /// (SPEC §4 order: the object, the application, the privilege).
    pub(super) fn resolve(&self, r: &CheckRequest<'_>) -> Result<Resolved, Reason> {
        if malformed(r) {
            return Err(Reason::InvalidRequest);
        }
        self.resolve_well_formed(r)
    }

    /// [`Self::resolve`] of a request already known not to be [`malformed`].
    fn resolve_well_formed(&self, r: &CheckRequest<'_>) -> Result<Resolved, Reason> {
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
    pub(super) fn decide(&self, person: &PersonC, q: &Resolved) -> Reason {
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
        // INVARIANT: p < a.privs.len(): p ranges over 0..a.privs.len().
        #[allow(clippy::indexing_slicing)]
        let names = |pred: &dyn Fn(u32) -> bool| -> Vec<String> {
            (0..a.privs.len() as u32).filter(|&p| pred(p)).map(|p| a.privs[p as usize].name.clone()).collect()
        };
        // INVARIANT: r < self.roles.len(): `applied` and `unreadable` hold only role indexes that
        // `Layers::person` found in the roles it was given (`roles.get(ri)` is Some), and a view
        // sharing a person entry has the same roles by id (`same_graph`), so as many.
        #[allow(clippy::indexing_slicing)]
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
    // INVARIANT: p < a.privs.len(): p ranges over 0..a.privs.len().
    #[allow(clippy::indexing_slicing)]
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
}
