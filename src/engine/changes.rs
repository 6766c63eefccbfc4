//! What a write changes for people (SPEC §6 dry runs): per person, the
//! privileges gained and lost per application, and the objects they start or
//! stop being able to Read.
//!
//! Computed by comparing the tenant's view before the batch with the view
//! after it, never by reasoning about the mutations, so the report is exactly
//! what decisions would answer:
//! - privileges: per person × application, the effective privilege bitsets are
//!   compared first (cheap), and names are only listed when they differ (or the
//!   catalog itself changed, which renumbers bits);
//! - visible objects (object permissions and partitions, no application
//!   context): only for the object types the batch touches, unless it changes
//!   something that moves visibility of every type (entries, groups,
//!   memberships, partitions, folders), or a person record itself (enabled
//!   flag, folder), in which case that person's every type is compared.
//!
//! The work is bounded: every (person, type) comparison costs the number of
//! objects of that type, charged against [`Budget::work`]; at most
//! [`Budget::persons`] persons are reported. Past either, the report stops
//! and says `truncated` (the write itself is never affected).

use crate::engine::{ListRequest, TenantView};
use crate::model::{Mutation, ObjectId, ObjectKey, Perm, Target, TenantConfig, types};
use std::collections::{BTreeMap, BTreeSet};

/// How much a report may cost (the replica's `Limits::changes_budget` and
/// `Limits::max_changes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Object comparisons allowed (each (person, type) costs the objects of that type).
    pub work: u64,
    /// Persons reported at most.
    pub persons: usize,
}

/// One side of the comparison: a configuration and the view built from it.
#[derive(Debug, Clone, Copy)]
pub struct Side<'a> {
    /// The configuration.
    pub config: &'a TenantConfig,
    /// Its compiled view.
    pub view: &'a TenantView,
}

/// What a write changes for one person.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PersonDelta {
    /// Person id.
    pub person: String,
    /// (application, privileges gained, privileges lost), by application name.
    pub privileges: Vec<(String, Vec<String>, Vec<String>)>,
    /// Objects the person starts being able to Read.
    pub visible_gained: Vec<ObjectKey>,
    /// Objects the person stops being able to Read.
    pub visible_lost: Vec<ObjectKey>,
}

impl PersonDelta {
    fn is_empty(&self) -> bool {
        self.privileges.is_empty() && self.visible_gained.is_empty() && self.visible_lost.is_empty()
    }
}

/// The per-person changes of a write.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChangeSet {
    /// Persons whose privileges or visible objects change, in id order.
    pub persons: Vec<PersonDelta>,
    /// Whether the report was cut at a limit.
    pub truncated: bool,
}

/// Which object types a batch can change visibility of.
#[derive(Debug, Default)]
struct Scope {
    /// Every type, for every person.
    all: bool,
    /// These types, for every person.
    kinds: BTreeSet<String>,
    /// Every type, for these persons.
    persons: BTreeSet<String>,
}

fn scope(batch: &[Mutation]) -> Scope {
    let mut s = Scope::default();
    for m in batch {
        match m {
            Mutation::CreateTenant { .. }
            | Mutation::PutAce(_)
            | Mutation::DeleteAce { .. }
            | Mutation::PutGroup(_)
            | Mutation::DeleteGroup { .. }
            | Mutation::AddGroupMember { .. }
            | Mutation::RemoveGroupMember { .. }
            | Mutation::PutPartition(_)
            | Mutation::DeletePartition { .. }
            | Mutation::PutFolder(_)
            | Mutation::DeleteFolder { .. }
            | Mutation::DeletePerson { .. }
            | Mutation::MoveObject { target: Target::Folder(_), .. } => s.all = true,
            Mutation::PutPerson(p) => {
                s.kinds.insert(types::PERSON.into());
                s.persons.insert(p.id.0.clone());
            }
            Mutation::PutRole(_)
            | Mutation::DeleteRole { .. }
            | Mutation::AssignRole { .. }
            | Mutation::UnassignRole { .. } => {
                s.kinds.insert(types::ROLE.into());
            }
            Mutation::PutObject(o) => {
                s.kinds.insert(o.kind.clone());
            }
            Mutation::DeleteObject(k) => {
                s.kinds.insert(k.kind.clone());
            }
            Mutation::MoveObject { target, .. } => {
                let kind = match target {
                    Target::Person(_) => types::PERSON,
                    Target::Group(_) => types::ACCESS_GROUP,
                    Target::Role(_) => types::ROLE,
                    Target::Folder(_) => types::FOLDER,
                    Target::Object(k) => k.kind.as_str(),
                };
                s.kinds.insert(kind.to_owned());
            }
            Mutation::ProvisionVirtualQueue { .. } => {
                s.kinds.insert(types::SCRIPT.into());
            }
            Mutation::RenameTenant { .. }
            | Mutation::SetRestrictedMode { .. }
            | Mutation::PutCatalog(_)
            | Mutation::DeleteCatalog { .. } => {}
        }
    }
    s
}

/// Number of objects of each type (the built-in entity types included).
fn counts(c: &TenantConfig) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    out.insert(types::PERSON.to_owned(), c.persons.len() as u64);
    out.insert(types::ACCESS_GROUP.to_owned(), c.groups.len() as u64);
    out.insert(types::ROLE.to_owned(), c.roles.len() as u64);
    out.insert(types::FOLDER.to_owned(), c.folders.len() as u64);
    for k in c.objects.keys() {
        *out.entry(k.kind.clone()).or_default() += 1;
    }
    out
}

/// The ids of `kind` that `person` may Read on `side`, sorted (empty when the
/// person does not exist or is disabled).
fn visible<'v>(side: Option<Side<'v>>, person: &str, kind: &str) -> Vec<&'v str> {
    let Some(side) = side else { return Vec::new() };
    let req = ListRequest {
        subject: person,
        kind,
        folder: None,
        permission: Perm::Read,
        application: None,
        after: None,
        limit: usize::MAX,
    };
    let mut ids = side.view.visible_ids(&req).unwrap_or_default();
    ids.sort_unstable();
    ids
}

/// Elements of sorted `a` not in sorted `b`.
fn minus<'a, T: Ord>(a: &'a [T], b: &[T]) -> impl Iterator<Item = &'a T> {
    a.iter().filter(move |x| b.binary_search(x).is_err())
}

fn effective(side: Option<Side<'_>>, person: &str, app: &str) -> Vec<String> {
    let mut v =
        side.and_then(|s| s.view.effective_privileges(person, app).ok()).map(|e| e.privileges).unwrap_or_default();
    v.sort_unstable();
    v
}

/// Compares `old` (none for a new tenant) with `new` (module docs).
pub fn compute(old: Option<Side<'_>>, new: Side<'_>, batch: &[Mutation], limits: Budget) -> ChangeSet {
    let scope = scope(batch);
    let old_counts = old.map(|s| counts(s.config)).unwrap_or_default();
    let new_counts = counts(new.config);
    let all_kinds: BTreeSet<&str> = old_counts.keys().chain(new_counts.keys()).map(String::as_str).collect();
    let scoped_kinds: BTreeSet<&str> =
        if scope.all { all_kinds.clone() } else { scope.kinds.iter().map(String::as_str).collect() };
    let apps: BTreeSet<&str> = old
        .iter()
        .flat_map(|s| s.config.catalogs.keys())
        .chain(new.config.catalogs.keys())
        .map(String::as_str)
        .collect();
    let persons: BTreeSet<&str> =
        old.iter().flat_map(|s| s.config.persons.keys()).chain(new.config.persons.keys()).map(|p| p.as_str()).collect();

    let mut out = ChangeSet::default();
    let mut spent: u64 = 0;
    'persons: for person in persons {
        let mut delta = PersonDelta { person: person.to_owned(), ..Default::default() };
        for app in &apps {
            let same_catalog = old.and_then(|s| s.config.catalogs.get(*app)) == new.config.catalogs.get(*app);
            if same_catalog {
                let before = old.map(|s| s.view.privilege_bits(person, app));
                let after = new.view.privilege_bits(person, app);
                if before.as_ref() == Some(&after) {
                    continue;
                }
            }
            let (before, after) = (effective(old, person, app), effective(Some(new), person, app));
            let gained: Vec<String> = minus(&after, &before).cloned().collect();
            let lost: Vec<String> = minus(&before, &after).cloned().collect();
            if !gained.is_empty() || !lost.is_empty() {
                delta.privileges.push(((*app).to_owned(), gained, lost));
            }
        }
        let kinds = if scope.persons.contains(person) { &all_kinds } else { &scoped_kinds };
        for kind in kinds {
            let cost = old_counts.get(*kind).copied().unwrap_or(0) + new_counts.get(*kind).copied().unwrap_or(0) + 1;
            if spent.saturating_add(cost) > limits.work {
                out.truncated = true;
                if !delta.is_empty() && out.persons.len() < limits.persons {
                    out.persons.push(delta);
                }
                break 'persons;
            }
            spent += cost;
            let (before, after) = (visible(old, person, kind), visible(Some(new), person, kind));
            let key = |id: &&str| ObjectKey { kind: (*kind).to_owned(), id: ObjectId((*id).to_owned()) };
            delta.visible_gained.extend(minus(&after, &before).map(key));
            delta.visible_lost.extend(minus(&before, &after).map(key));
        }
        if !delta.is_empty() {
            if out.persons.len() == limits.persons {
                out.truncated = true;
                break;
            }
            out.persons.push(delta);
        }
    }
    out
}
