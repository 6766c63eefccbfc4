//! Listings over a compiled view: visible objects (SPEC §4.1), allowed subjects and privilege holders.

use super::check::{holds, verdict};
use super::{AclVerdict, Members, PersonC, Source, TenantView, intersects};
use crate::engine::types::{
    AllowedSubject, CheckRequest, Holder, HolderSource, HoldersPage, ListPage, ListPageRef, ListRequest, Reason,
    SubjectsPage, VisibleObject, VisibleRef,
};
use crate::model::{self, Perm};

impl TenantView {
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
        // INVARIANT: n < nodes.len(): a kind's `sorted` holds only node indexes (`GraphBuilder::add_node`).
        #[allow(clippy::indexing_slicing)]
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
                    #[allow(clippy::indexing_slicing)]
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
}
