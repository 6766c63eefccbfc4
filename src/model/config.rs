//! A tenant's whole access configuration and the mutations that change it,
//! as data.
//!
//! Every write path — a tenant file, an import, a `Write` RPC, a replayed
//! changelog entry — is a batch of [`Mutation`]s applied by
//! [`TenantConfig::apply_batch`] ([`super::apply`]) to a copy of the
//! configuration and then validated whole ([`super::validate`]): the batch
//! either yields a valid new configuration or an error naming the field and
//! item, never half of one.

use super::entity::*;
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

    /// Whether the tenant has been created (`create_tenant` sets its name,
    /// which validation requires to be non-empty).
    pub fn exists(&self) -> bool {
        !self.name.is_empty() || !self.folders.is_empty()
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
