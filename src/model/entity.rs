//! The entities of a tenant's access configuration (SPEC §1), as plain data.
//!
//! These types are what a tenant file, a write batch and the store hold. They
//! are validated by [`crate::model::validate`] and compiled into a fast,
//! immutable view by [`crate::engine`]; nothing here decides anything.

use super::ids::*;
use super::perm::{Perm, PermSet};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Object types that name built-in entities. Generic objects may not use them.
pub mod types {
    /// Persons are objects of this type (they carry ACEs and live in a folder).
    pub const PERSON: &str = "Person";
    /// Access groups are objects of this type.
    pub const ACCESS_GROUP: &str = "AccessGroup";
    /// Roles are objects of this type.
    pub const ROLE: &str = "Role";
    /// Folders are objects of this type.
    pub const FOLDER: &str = "Folder";
    /// Callback virtual-queue scripts (`ges_<queue>`) are Scripts.
    pub const SCRIPT: &str = "Script";
    /// Advisors metrics.
    pub const METRIC: &str = "Metric";
    /// The object types that have Designer edit locks (SPEC §4.4).
    pub const LOCKABLE: [&str; 3] = ["Application", "SharedModule", "DataTable"];
    /// The types that are entities of their own, not generic objects.
    pub const RESERVED: [&str; 4] = [PERSON, ACCESS_GROUP, ROLE, FOLDER];
}

/// Default folders of the built-in entity types, created by the core preset.
pub mod folders {
    /// Where persons live unless told otherwise.
    pub const PERSONS: &str = "Persons";
    /// Where access groups live unless told otherwise.
    pub const ACCESS_GROUPS: &str = "Access Groups";
    /// Where roles live unless told otherwise.
    pub const ROLES: &str = "Roles";
    /// Parent of virtual-queue scripts (SPEC §4.2).
    pub const CALLBACK_SCRIPTS: &str = "Scripts/Callback";
    /// The id of every tenant's root folder.
    pub const ROOT: &str = "root";
}

fn default_true() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}
fn persons_folder() -> FolderId {
    FolderId(folders::PERSONS.into())
}
fn groups_folder() -> FolderId {
    FolderId(folders::ACCESS_GROUPS.into())
}
fn roles_folder() -> FolderId {
    FolderId(folders::ROLES.into())
}

/// A person (user, agent) of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Person {
    /// Identifier, unique among the tenant's persons.
    pub id: PersonId,
    /// Login name, unique among the tenant's persons.
    pub username: String,
    /// A disabled person is denied everything (`DISABLED_SUBJECT`).
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub enabled: bool,
    /// The folder the person object lives in (default `Persons`).
    #[serde(default = "persons_folder")]
    pub folder: FolderId,
    /// Annex: section → option → value. The legacy Callback role lives in
    /// `ges.role` / `gms.role` (SPEC §3 rule 1).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annex: BTreeMap<String, BTreeMap<String, String>>,
    /// Other properties of the person object (guarded by property guards).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}

/// An access group: a flat set of persons (no nesting).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessGroup {
    /// Identifier, unique among the tenant's access groups.
    pub id: GroupId,
    /// Display name, unique among the tenant's access groups ("ACME Administrators").
    pub name: String,
    /// The folder the group object lives in (default `Access Groups`).
    #[serde(default = "groups_folder")]
    pub folder: FolderId,
    /// Member persons.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub members: BTreeSet<PersonId>,
}

/// A folder of the tenant's tree. Exactly one folder (the root) has no parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Folder {
    /// Identifier. Presets use the folder's path (`Scripts/Callback`) as its id.
    pub id: FolderId,
    /// Name, unique among the folder's siblings.
    pub name: String,
    /// Parent folder; `None` only for the tenant's root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<FolderId>,
}

/// Key of a generic configuration object: (type, id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectKey {
    /// Object type (`Script`, `Metric`, `Application`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// Identifier, unique per tenant and type.
    pub id: ObjectId,
}

/// A configuration object (Script, Metric, Application, Skill, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Object {
    /// Object type; case-sensitive; not one of [`types::RESERVED`].
    #[serde(rename = "type")]
    pub kind: String,
    /// Identifier, unique per tenant and type.
    pub id: ObjectId,
    /// Name, unique per tenant and type (Advisors metric names are namespaced).
    pub name: String,
    /// The folder the object lives in.
    pub folder: FolderId,
    /// Designer partitions the object is assigned to (SPEC §4.4).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub partitions: BTreeSet<PartitionId>,
    /// Free-form properties (guarded by property guards).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: BTreeMap<String, String>,
}

impl Object {
    /// This object's key.
    pub fn key(&self) -> ObjectKey {
        ObjectKey { kind: self.kind.clone(), id: self.id.clone() }
    }
}

/// Who a role is assigned to.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleMembers {
    /// Persons holding the role directly.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub persons: BTreeSet<PersonId>,
    /// Access groups holding the role (every member holds it).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub groups: BTreeSet<GroupId>,
}

impl RoleMembers {
    /// Whether nobody holds the role.
    pub fn is_empty(&self) -> bool {
        self.persons.is_empty() && self.groups.is_empty()
    }
}

/// A role: privileges of applications, assigned to persons and access groups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// Identifier, unique among the tenant's roles.
    pub id: RoleId,
    /// Name, unique among the tenant's roles ("Callback Supervisor").
    pub name: String,
    /// The folder the role object lives in (default `Roles`).
    #[serde(default = "roles_folder")]
    pub folder: FolderId,
    /// Application name → privilege names of that application's catalog.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub privileges: BTreeMap<String, BTreeSet<String>>,
    /// Holders of the role.
    #[serde(default, skip_serializing_if = "RoleMembers::is_empty")]
    pub members: RoleMembers,
}

/// A Designer partition (partition-based access control, SPEC §4.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partition {
    /// Identifier, unique among the tenant's partitions.
    pub id: PartitionId,
    /// Name, unique among the tenant's partitions.
    pub name: String,
    /// Persons belonging to the partition.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub members: BTreeSet<PersonId>,
}

/// What an ACE is attached to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Target {
    /// A folder (its entry covers the folder; with `propagate`, everything below).
    Folder(FolderId),
    /// A person object.
    Person(PersonId),
    /// An access-group object.
    Group(GroupId),
    /// A role object.
    Role(RoleId),
    /// A generic configuration object.
    Object(ObjectKey),
}

/// Who an ACE applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Subject {
    /// Every person of the tenant.
    Everyone,
    /// One person.
    Person(PersonId),
    /// Every member of an access group.
    Group(GroupId),
}

/// An access control entry: at most one per (target, subject); writing one
/// replaces the previous (SPEC §2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ace {
    /// What the entry protects.
    pub target: Target,
    /// Whom the entry is for.
    pub subject: Subject,
    /// Permissions granted.
    #[serde(default, skip_serializing_if = "PermSet::is_empty")]
    pub allow: PermSet,
    /// Permissions explicitly denied (deny wins over every grant).
    #[serde(default, skip_serializing_if = "PermSet::is_empty")]
    pub deny: PermSet,
    /// On a folder: whether the entry is inherited by everything below it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub propagate: bool,
}

/// A privilege declared by an application catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivilegeDef {
    /// Exact name (no surrounding white space, no control characters, matches
    /// the catalog's `name_pattern`).
    pub name: String,
    /// What the privilege controls.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Privileges of the same application this one depends on (acyclic).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<String>,
    /// Other exact names accepted for this privilege (documents that spell it
    /// two ways); answers always use `name`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// For tasks that are not permission bits (SPEC §5): the permission a check
    /// of this privilege on an object uses when the request names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission: Option<Perm>,
}

/// (object type, permission) → privilege: in this application's context the
/// permission on objects of the type also needs the privilege.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeGuard {
    /// Object type guarded.
    #[serde(rename = "type")]
    pub kind: String,
    /// Permission guarded.
    pub permission: Perm,
    /// Privilege needed.
    pub privilege: String,
}

/// (object type, property, Read|Change) → privilege.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PropertyGuard {
    /// Object type guarded.
    #[serde(rename = "type")]
    pub kind: String,
    /// Property guarded.
    pub property: String,
    /// `Read` or `Change`.
    pub access: Perm,
    /// Privilege needed.
    pub privilege: String,
}

/// A role the catalog defines (default roles of the preset; also the legacy
/// roles that an annex `role` option names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleTemplate {
    /// Role name ("Callback Administrator").
    pub name: String,
    /// Legacy name an annex `role` option uses ("Administrator").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legacy_name: Option<String>,
    /// What the role does, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Privileges of this application the role grants.
    #[serde(default)]
    pub privileges: Vec<String>,
}

/// An application catalog (SPEC §3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// Application name, unique per tenant ("Callback", "Advisors").
    pub name: String,
    /// What the application is.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Regular expression every privilege name must match (whole name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_pattern: Option<String>,
    /// Declared privileges.
    pub privileges: Vec<PrivilegeDef>,
    /// Type guards.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub type_guards: Vec<TypeGuard>,
    /// Property guards.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub property_guards: Vec<PropertyGuard>,
    /// A person with no configuration for this application has every privilege.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub open_when_unconfigured: bool,
    /// Annex sections whose `role` option decides the person's privileges alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub legacy_annex_sections: Vec<String>,
    /// Object types locked for Create/Change/Delete during restricted mode.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restricted_types: Vec<String>,
    /// Role names, most access first: names the primary role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub role_rank: Vec<String>,
    /// Roles the catalog defines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<RoleTemplate>,
}

impl Catalog {
    /// The privilege named `name` (or one of its aliases).
    pub fn privilege(&self, name: &str) -> Option<&PrivilegeDef> {
        self.privileges.iter().find(|p| p.name == name || p.aliases.iter().any(|a| a == name))
    }
}
