//! A tenant's whole access configuration, the mutations that change it, and
//! the one function that applies a batch of them.
//!
//! Every write path — a tenant file, an import, a `Write` RPC, a replayed
//! changelog entry — is a batch of [`Mutation`]s applied by
//! [`TenantConfig::apply_batch`] to a copy of the configuration and then
//! validated whole ([`super::validate`]): the batch either yields a valid new
//! configuration or an error naming the field and item, never half of one.

use super::entity::*;
use super::error::{ErrorKind, ModelError, ModelResult};
use super::ids::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The configuration of one tenant. Maps are ordered so exports are stable.
///
/// Each collection sits behind its own `Arc` (copy on write): a batch copies
/// only the collections it changes, and validation re-checks only those and
/// the collections that refer to them ([`super::validate::validate_change`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TenantConfig {
    /// Tenant id.
    pub id: TenantId,
    /// Business name ("ACME"); tenant-wide groups are named "<name> <Group>".
    pub name: String,
    /// Restricted mode (SPEC §4.4): Create/Change/Delete on restricted types denied.
    pub restricted_mode: bool,
    /// Application catalogs by application name.
    pub catalogs: Arc<BTreeMap<String, Catalog>>,
    /// Folders by id.
    pub folders: Arc<BTreeMap<FolderId, Folder>>,
    /// Persons by id.
    pub persons: Arc<BTreeMap<PersonId, Person>>,
    /// Access groups by id.
    pub groups: Arc<BTreeMap<GroupId, AccessGroup>>,
    /// Roles by id.
    pub roles: Arc<BTreeMap<RoleId, Role>>,
    /// Partitions by id.
    pub partitions: Arc<BTreeMap<PartitionId, Partition>>,
    /// Generic objects by (type, id).
    pub objects: Arc<BTreeMap<ObjectKey, Object>>,
    /// ACEs by (target, subject): at most one per pair.
    pub aces: Arc<BTreeMap<(Target, Subject), Ace>>,
}

/// One change to a tenant's configuration.
///
/// `put_*` creates or replaces the whole entity; `delete_*` removes it and
/// every reference to it (memberships, role assignments, ACEs), except that a
/// folder must be empty to be deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Mutation {
    /// Creates the tenant with the core skeleton and the named presets.
    CreateTenant {
        /// Business name.
        name: String,
        /// Application presets whose catalogs to install.
        #[serde(default)]
        presets: Vec<String>,
        /// Whether to create the core skeleton (folders, "<name> Administrators",
        /// default entries) and the presets' default roles, groups and entries.
        /// Exports say `false`: they list everything explicitly.
        #[serde(default = "default_true")]
        defaults: bool,
    },
    /// Renames the tenant.
    RenameTenant {
        /// New business name.
        name: String,
    },
    /// Turns restricted mode on or off.
    SetRestrictedMode {
        /// On or off.
        on: bool,
    },
    /// Creates or replaces an application catalog.
    PutCatalog(Catalog),
    /// Removes a catalog; roles' privileges of it are removed too.
    DeleteCatalog {
        /// Application name.
        name: String,
    },
    /// Creates or replaces a folder.
    PutFolder(Folder),
    /// Removes an empty folder and the entries on it.
    DeleteFolder {
        /// Folder id.
        id: FolderId,
    },
    /// Creates or replaces a person.
    PutPerson(Person),
    /// Removes a person and every reference to it.
    DeletePerson {
        /// Person id.
        id: PersonId,
    },
    /// Creates or replaces an access group.
    PutGroup(AccessGroup),
    /// Removes an access group and every reference to it.
    DeleteGroup {
        /// Group id.
        id: GroupId,
    },
    /// Adds a person to an access group.
    AddGroupMember {
        /// Group id.
        group: GroupId,
        /// Person id.
        person: PersonId,
    },
    /// Removes a person from an access group.
    RemoveGroupMember {
        /// Group id.
        group: GroupId,
        /// Person id.
        person: PersonId,
    },
    /// Creates or replaces a role.
    PutRole(Role),
    /// Removes a role and the entries on it.
    DeleteRole {
        /// Role id.
        id: RoleId,
    },
    /// Assigns a role to a person or an access group.
    AssignRole {
        /// Role id.
        role: RoleId,
        /// `person` or `group` (not `everyone`).
        to: Subject,
    },
    /// Removes a role assignment.
    UnassignRole {
        /// Role id.
        role: RoleId,
        /// `person` or `group`.
        from: Subject,
    },
    /// Creates or replaces a partition.
    PutPartition(Partition),
    /// Removes a partition and its assignments.
    DeletePartition {
        /// Partition id.
        id: PartitionId,
    },
    /// Creates or replaces a configuration object.
    PutObject(Object),
    /// Removes a configuration object and the entries on it.
    DeleteObject(ObjectKey),
    /// Moves an object (of any type, persons, groups and roles included) to a folder.
    MoveObject {
        /// What to move: a non-folder target.
        target: Target,
        /// Destination folder.
        folder: FolderId,
    },
    /// Sets the ACE for (target, subject), replacing any previous one.
    PutAce(Ace),
    /// Removes the ACE for (target, subject).
    DeleteAce {
        /// Target.
        target: Target,
        /// Subject.
        subject: Subject,
    },
    /// Provisions a Callback virtual queue: creates Script `ges_<queue>` in
    /// `Scripts/Callback` or the given subfolder of it (SPEC §4.2). Idempotent.
    ProvisionVirtualQueue {
        /// Virtual queue name (`Sales_VQ`).
        queue: String,
        /// Subfolder of `Scripts/Callback` (folder id); default the folder itself.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        folder: Option<FolderId>,
    },
}

impl Mutation {
    /// Short name of the operation, for error paths and logs.
    pub fn op(&self) -> &'static str {
        match self {
            Mutation::CreateTenant { .. } => "create_tenant",
            Mutation::RenameTenant { .. } => "rename_tenant",
            Mutation::SetRestrictedMode { .. } => "set_restricted_mode",
            Mutation::PutCatalog(_) => "put_catalog",
            Mutation::DeleteCatalog { .. } => "delete_catalog",
            Mutation::PutFolder(_) => "put_folder",
            Mutation::DeleteFolder { .. } => "delete_folder",
            Mutation::PutPerson(_) => "put_person",
            Mutation::DeletePerson { .. } => "delete_person",
            Mutation::PutGroup(_) => "put_group",
            Mutation::DeleteGroup { .. } => "delete_group",
            Mutation::AddGroupMember { .. } => "add_group_member",
            Mutation::RemoveGroupMember { .. } => "remove_group_member",
            Mutation::PutRole(_) => "put_role",
            Mutation::DeleteRole { .. } => "delete_role",
            Mutation::AssignRole { .. } => "assign_role",
            Mutation::UnassignRole { .. } => "unassign_role",
            Mutation::PutPartition(_) => "put_partition",
            Mutation::DeletePartition { .. } => "delete_partition",
            Mutation::PutObject(_) => "put_object",
            Mutation::DeleteObject(_) => "delete_object",
            Mutation::MoveObject { .. } => "move_object",
            Mutation::PutAce(_) => "put_ace",
            Mutation::DeleteAce { .. } => "delete_ace",
            Mutation::ProvisionVirtualQueue { .. } => "provision_virtual_queue",
        }
    }
}

/// The name of the Script object that represents virtual queue `queue`.
pub fn virtual_queue_script(queue: &str) -> String {
    format!("ges_{queue}")
}

fn default_true() -> bool {
    true
}

fn missing<T>(field: &str, item: &str, what: &str) -> ModelResult<T> {
    Err(ModelError::unknown(field, item, what))
}

impl TenantConfig {
    /// Whether the entity `t` names exists in this tenant.
    pub fn has_target(&self, t: &Target) -> bool {
        match t {
            Target::Folder(id) => self.folders.contains_key(id),
            Target::Person(id) => self.persons.contains_key(id),
            Target::Group(id) => self.groups.contains_key(id),
            Target::Role(id) => self.roles.contains_key(id),
            Target::Object(k) => self.objects.contains_key(k),
        }
    }

    /// An empty configuration for tenant `id` (no root folder yet: not valid
    /// until `create_tenant` runs).
    pub fn empty(id: TenantId) -> Self {
        TenantConfig { id, ..Default::default() }
    }

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

    /// Whether the tenant has been created (`create_tenant` sets its name,
    /// which validation requires to be non-empty).
    pub fn exists(&self) -> bool {
        !self.name.is_empty() || !self.folders.is_empty()
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

    /// Whether folder `id` is `ancestor` or lies below it (ids; cycle-safe).
    pub fn folder_is_under(&self, id: &FolderId, ancestor: &str) -> bool {
        let mut cur = Some(id);
        let mut steps = 0;
        while let Some(f) = cur {
            if f.as_str() == ancestor {
                return true;
            }
            steps += 1;
            if steps > self.folders.len() {
                return false;
            }
            cur = self.folders.get(f).and_then(|x| x.parent.as_ref());
        }
        false
    }

    /// The names from the root's child down to folder `id` (the root excluded),
    /// or `None` if the chain is broken or cyclic.
    pub fn folder_path(&self, id: &FolderId) -> Option<Vec<&str>> {
        let mut names = Vec::new();
        let mut cur = self.folders.get(id)?;
        while let Some(parent) = &cur.parent {
            names.push(cur.name.as_str());
            if names.len() > self.folders.len() {
                return None;
            }
            cur = self.folders.get(parent)?;
        }
        names.reverse();
        Some(names)
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

/// A short human label of an ACE target (`folder Scripts/Callback`, `Script ges_Sales_VQ`).
pub fn target_label(t: &Target) -> String {
    match t {
        Target::Folder(id) => format!("folder {id}"),
        Target::Person(id) => format!("person {id}"),
        Target::Group(id) => format!("access group {id}"),
        Target::Role(id) => format!("role {id}"),
        Target::Object(k) => format!("{} {}", k.kind, k.id),
    }
}

/// A short human label of an ACE subject.
pub fn subject_label(s: &Subject) -> String {
    match s {
        Subject::Everyone => "everyone".to_owned(),
        Subject::Person(id) => format!("person {id}"),
        Subject::Group(id) => format!("access group {id}"),
    }
}
