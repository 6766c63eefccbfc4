//! Applying mutations to a tenant's configuration: the one function every
//! write path goes through ([`TenantConfig::apply_batch`]), which applies a
//! batch to a copy and validates the result whole ([`super::validate`]), so a
//! batch yields a valid new configuration or an error naming the field and
//! item, never half of one.
//!
//! Kept apart from [`super::config`] (the data) so that the data, its
//! validation, the presets and this module import one another in one
//! direction: config ← validate ← presets ← apply.

use super::config::{Mutation, TenantConfig, subject_label, target_label, virtual_queue_script};
use super::entity::*;
use super::error::{ErrorKind, ModelError, ModelResult};
use super::ids::*;
use std::collections::BTreeMap;
use std::sync::Arc;

fn missing<T>(field: &str, item: &str, what: &str) -> ModelResult<T> {
    Err(ModelError::unknown(field, item, what))
}

impl TenantConfig {
    /// Applies `mutations` in order to a copy of `self` and validates the
    /// result. On error `self` is untouched and the error names the mutation.
    pub fn apply_batch(&self, mutations: &[Mutation]) -> ModelResult<TenantConfig> {
        let mut next = self.clone();
        for (i, m) in mutations.iter().enumerate() {
            next.apply(m).map_err(|e| e.within(&format!("mutations[{i}].{}", m.op())))?;
        }
        super::validate::validate_batch(self, &next, mutations)?;
        Ok(next)
    }

    /// Applies one mutation without validating the whole (structural errors
    /// such as a missing entity to delete are reported here).
    pub fn apply(&mut self, m: &Mutation) -> ModelResult<()> {
        if !self.exists() && !matches!(m, Mutation::CreateTenant { .. }) {
            return Err(ModelError::new(
                ErrorKind::UnknownReference,
                "tenant",
                self.id.as_str(),
                format!("unknown tenant `{}`: the batch must start with create_tenant", self.id),
            ));
        }
        self.apply_inner(m)
    }

    fn apply_inner(&mut self, m: &Mutation) -> ModelResult<()> {
        match m {
            Mutation::CreateTenant { name, presets, defaults } => {
                if self.exists() {
                    return Err(ModelError::new(
                        ErrorKind::AlreadyExists,
                        "tenant",
                        self.id.as_str(),
                        format!("tenant `{}` exists already", self.id),
                    ));
                }
                self.name = name.clone();
                let batch = super::presets::tenant_defaults(name, presets, *defaults)?;
                for (i, d) in batch.iter().enumerate() {
                    self.apply_inner(d).map_err(|e| e.within(&format!("presets[{i}]")))?;
                }
            }
            Mutation::RenameTenant { name } => self.name = name.clone(),
            Mutation::SetRestrictedMode { on } => self.restricted_mode = *on,
            Mutation::PutCatalog(c) => {
                Arc::make_mut(&mut self.catalogs).insert(c.name.clone(), c.clone());
            }
            Mutation::DeleteCatalog { name } => {
                if Arc::make_mut(&mut self.catalogs).remove(name.as_str()).is_none() {
                    return missing("name", name, "application catalog");
                }
                if self.roles.values().any(|r| r.privileges.contains_key(name.as_str())) {
                    for r in Arc::make_mut(&mut self.roles).values_mut() {
                        r.privileges.remove(name.as_str());
                    }
                }
            }
            Mutation::PutFolder(f) => {
                Arc::make_mut(&mut self.folders).insert(f.id.clone(), f.clone());
            }
            Mutation::DeleteFolder { id } => {
                if !self.folders.contains_key(id) {
                    return missing("id", id.as_str(), "folder");
                }
                if let Some(what) = self.first_in_folder(id) {
                    return Err(ModelError::invalid(
                        "id",
                        id.as_str(),
                        format!("folder `{id}` is not empty: it holds {what}"),
                    ));
                }
                Arc::make_mut(&mut self.folders).remove(id);
                self.remove_aces_on(&Target::Folder(id.clone()));
            }
            Mutation::PutPerson(p) => {
                Arc::make_mut(&mut self.persons).insert(p.id.clone(), p.clone());
            }
            Mutation::DeletePerson { id } => {
                if Arc::make_mut(&mut self.persons).remove(id).is_none() {
                    return missing("id", id.as_str(), "person");
                }
                if self.groups.values().any(|g| g.members.contains(id)) {
                    for g in Arc::make_mut(&mut self.groups).values_mut() {
                        g.members.remove(id);
                    }
                }
                if self.roles.values().any(|r| r.members.persons.contains(id)) {
                    for r in Arc::make_mut(&mut self.roles).values_mut() {
                        r.members.persons.remove(id);
                    }
                }
                if self.partitions.values().any(|p| p.members.contains(id)) {
                    for p in Arc::make_mut(&mut self.partitions).values_mut() {
                        p.members.remove(id);
                    }
                }
                self.remove_aces(|t, s| *t == Target::Person(id.clone()) || *s == Subject::Person(id.clone()));
            }
            Mutation::PutGroup(g) => {
                Arc::make_mut(&mut self.groups).insert(g.id.clone(), g.clone());
            }
            Mutation::DeleteGroup { id } => {
                if Arc::make_mut(&mut self.groups).remove(id).is_none() {
                    return missing("id", id.as_str(), "access group");
                }
                if self.roles.values().any(|r| r.members.groups.contains(id)) {
                    for r in Arc::make_mut(&mut self.roles).values_mut() {
                        r.members.groups.remove(id);
                    }
                }
                self.remove_aces(|t, s| *t == Target::Group(id.clone()) || *s == Subject::Group(id.clone()));
            }
            Mutation::AddGroupMember { group, person } => {
                let Some(g) = Arc::make_mut(&mut self.groups).get_mut(group) else {
                    return missing("group", group.as_str(), "access group");
                };
                g.members.insert(person.clone());
            }
            Mutation::RemoveGroupMember { group, person } => {
                let Some(g) = Arc::make_mut(&mut self.groups).get_mut(group) else {
                    return missing("group", group.as_str(), "access group");
                };
                if !g.members.remove(person) {
                    return Err(ModelError::unknown("person", person.as_str(), &format!("member of group `{group}`")));
                }
            }
            Mutation::PutRole(r) => {
                Arc::make_mut(&mut self.roles).insert(r.id.clone(), r.clone());
            }
            Mutation::DeleteRole { id } => {
                if Arc::make_mut(&mut self.roles).remove(id).is_none() {
                    return missing("id", id.as_str(), "role");
                }
                self.remove_aces_on(&Target::Role(id.clone()));
            }
            Mutation::AssignRole { role, to } => {
                let Some(r) = Arc::make_mut(&mut self.roles).get_mut(role) else {
                    return missing("role", role.as_str(), "role");
                };
                match to {
                    Subject::Person(p) => r.members.persons.insert(p.clone()),
                    Subject::Group(g) => r.members.groups.insert(g.clone()),
                    Subject::Everyone => {
                        return Err(ModelError::invalid(
                            "to",
                            "everyone",
                            "roles are assigned to persons and access groups, not `everyone`",
                        ));
                    }
                };
            }
            Mutation::UnassignRole { role, from } => {
                let Some(r) = Arc::make_mut(&mut self.roles).get_mut(role) else {
                    return missing("role", role.as_str(), "role");
                };
                let removed = match from {
                    Subject::Person(p) => r.members.persons.remove(p),
                    Subject::Group(g) => r.members.groups.remove(g),
                    Subject::Everyone => false,
                };
                if !removed {
                    return Err(ModelError::unknown("from", subject_label(from), &format!("holder of role `{role}`")));
                }
            }
            Mutation::PutPartition(p) => {
                Arc::make_mut(&mut self.partitions).insert(p.id.clone(), p.clone());
            }
            Mutation::DeletePartition { id } => {
                if Arc::make_mut(&mut self.partitions).remove(id).is_none() {
                    return missing("id", id.as_str(), "partition");
                }
                if self.objects.values().any(|o| o.partitions.contains(id)) {
                    for o in Arc::make_mut(&mut self.objects).values_mut() {
                        o.partitions.remove(id);
                    }
                }
            }
            Mutation::PutObject(o) => {
                Arc::make_mut(&mut self.objects).insert(o.key(), o.clone());
            }
            Mutation::DeleteObject(k) => {
                if Arc::make_mut(&mut self.objects).remove(k).is_none() {
                    return missing("id", &format!("{}/{}", k.kind, k.id), "object");
                }
                self.remove_aces_on(&Target::Object(k.clone()));
            }
            Mutation::MoveObject { target, folder } => {
                let slot = match target {
                    Target::Folder(f) => {
                        let Some(x) = Arc::make_mut(&mut self.folders).get_mut(f) else {
                            return missing("target", f.as_str(), "folder");
                        };
                        if x.parent.is_none() {
                            return Err(ModelError::invalid("target", f.as_str(), "the root folder cannot be moved"));
                        }
                        x.parent = Some(folder.clone());
                        return Ok(());
                    }
                    Target::Person(id) => Arc::make_mut(&mut self.persons).get_mut(id).map(|x| &mut x.folder),
                    Target::Group(id) => Arc::make_mut(&mut self.groups).get_mut(id).map(|x| &mut x.folder),
                    Target::Role(id) => Arc::make_mut(&mut self.roles).get_mut(id).map(|x| &mut x.folder),
                    Target::Object(k) => Arc::make_mut(&mut self.objects).get_mut(k).map(|x| &mut x.folder),
                };
                let Some(slot) = slot else { return missing("target", &target_label(target), "object") };
                *slot = folder.clone();
            }
            Mutation::PutAce(a) => {
                Arc::make_mut(&mut self.aces).insert((a.target.clone(), a.subject.clone()), a.clone());
            }
            Mutation::DeleteAce { target, subject } => {
                if Arc::make_mut(&mut self.aces).remove(&(target.clone(), subject.clone())).is_none() {
                    return Err(ModelError::unknown(
                        "target",
                        format!("{} for {}", target_label(target), subject_label(subject)),
                        "access control entry",
                    ));
                }
            }
            Mutation::ProvisionVirtualQueue { queue, folder } => {
                super::validate::check_plain_name("queue", queue)?;
                let folder = folder.clone().unwrap_or_else(|| FolderId(folders::CALLBACK_SCRIPTS.into()));
                if !self.folder_is_under(&folder, folders::CALLBACK_SCRIPTS) {
                    return Err(ModelError::invalid(
                        "folder",
                        folder.as_str(),
                        format!("folder `{folder}` is not `{}` or a folder below it", folders::CALLBACK_SCRIPTS),
                    ));
                }
                let name = virtual_queue_script(queue);
                let key = ObjectKey { kind: types::SCRIPT.into(), id: ObjectId(name.clone()) };
                if let std::collections::btree_map::Entry::Vacant(slot) = Arc::make_mut(&mut self.objects).entry(key) {
                    let mut properties = BTreeMap::new();
                    properties.insert("virtual_queue".to_owned(), queue.clone());
                    slot.insert(Object {
                        kind: types::SCRIPT.into(),
                        id: ObjectId(name.clone()),
                        name,
                        folder,
                        partitions: Default::default(),
                        properties,
                    });
                }
            }
        }
        Ok(())
    }

    fn first_in_folder(&self, id: &FolderId) -> Option<String> {
        if let Some(f) = self.folders.values().find(|f| f.parent.as_ref() == Some(id)) {
            return Some(format!("folder `{}`", f.id));
        }
        if let Some(o) = self.objects.values().find(|o| &o.folder == id) {
            return Some(format!("{} `{}`", o.kind, o.id));
        }
        if let Some(p) = self.persons.values().find(|p| &p.folder == id) {
            return Some(format!("person `{}`", p.id));
        }
        if let Some(g) = self.groups.values().find(|g| &g.folder == id) {
            return Some(format!("access group `{}`", g.id));
        }
        self.roles.values().find(|r| &r.folder == id).map(|r| format!("role `{}`", r.id))
    }

    fn remove_aces_on(&mut self, target: &Target) {
        self.remove_aces(|t, _| t == target);
    }

    /// Removes the entries matching `gone`, copying the collection only if any does.
    fn remove_aces(&mut self, gone: impl Fn(&Target, &Subject) -> bool) {
        if self.aces.keys().any(|(t, s)| gone(t, s)) {
            Arc::make_mut(&mut self.aces).retain(|(t, s), _| !gone(t, s));
        }
    }
}
