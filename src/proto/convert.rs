//! Proto ↔ model conversions of the model's own data: permissions,
//! entities and mutations. The server's handlers and the embedded follower
//! both read the wire through these (`service::convert` adds the requests
//! and answers of the services).
//!
//! Inbound, every conversion validates what the wire cannot express (an enum
//! value out of range, an unset oneof, an empty id) and names the offending
//! field by its path in the message, e.g. `mutations[3].put_person.id: must
//! not be empty`. Payloads are converted by value (the strings are moved, not
//! copied).

use crate::model::{
    self, AccessGroup, Ace, Catalog, Folder, FolderId, GroupId, Mutation, Object, ObjectId, ObjectKey, Partition,
    PartitionId, Perm, PermSet, Person, PersonId, PrivilegeDef, PropertyGuard, Role, RoleId, RoleMembers, RoleTemplate,
    Subject, Target, TypeGuard,
};
use crate::proto::authzd::v1 as pb;
use std::collections::{BTreeMap, BTreeSet};

/// A message field that does not hold what the model needs: the field's
/// path in the message and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// Path of the offending field (`mutations[3].put_person.id`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// An error naming `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { field: field.into(), message: message.into() }
    }
}

/// The result of a conversion from the wire.
pub type FieldResult<T> = Result<T, FieldError>;

// ---------------------------------------------------------------- permissions

/// What a proto permission value stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PermValue {
    /// `PERMISSION_UNSPECIFIED`.
    Unspecified,
    /// One permission.
    One(Perm),
    /// `PERMISSION_ALL`: every permission (sets only).
    All,
}

/// What a proto enum value stands for.
pub(crate) fn perm_of(p: pb::Permission) -> PermValue {
    match p {
        pb::Permission::Unspecified => PermValue::Unspecified,
        pb::Permission::Read => PermValue::One(Perm::Read),
        pb::Permission::Create => PermValue::One(Perm::Create),
        pb::Permission::Change => PermValue::One(Perm::Change),
        pb::Permission::Execute => PermValue::One(Perm::Execute),
        pb::Permission::Delete => PermValue::One(Perm::Delete),
        pb::Permission::ReadPermissions => PermValue::One(Perm::ReadPermissions),
        pb::Permission::ChangePermissions => PermValue::One(Perm::ChangePermissions),
        pb::Permission::All => PermValue::All,
    }
}

/// The proto enum value of a permission.
pub fn permission_pb(p: Perm) -> pb::Permission {
    match p {
        Perm::Read => pb::Permission::Read,
        Perm::Create => pb::Permission::Create,
        Perm::Change => pb::Permission::Change,
        Perm::Execute => pb::Permission::Execute,
        Perm::Delete => pb::Permission::Delete,
        Perm::ReadPermissions => pb::Permission::ReadPermissions,
        Perm::ChangePermissions => pb::Permission::ChangePermissions,
    }
}

/// A permission set as proto enum values, in bit order (never
/// `PERMISSION_ALL`: answers list every permission).
pub fn perm_set_pb(s: PermSet) -> Vec<i32> {
    s.iter().map(|p| permission_pb(p) as i32).collect()
}

/// What a proto value stands for; a value out of range is an error naming
/// the field (built only on error).
pub(crate) fn perm_value(v: i32, field: impl FnOnce() -> String) -> FieldResult<PermValue> {
    match pb::Permission::try_from(v) {
        Ok(p) => Ok(perm_of(p)),
        Err(_) => Err(FieldError::new(field(), format!("unknown permission value `{v}`"))),
    }
}

/// An optional single permission: unspecified is `None`; `PERMISSION_ALL`
/// (a set's shorthand) and values out of range are errors naming the field.
pub(crate) fn permission_at(v: i32, field: impl FnOnce() -> String) -> FieldResult<Option<Perm>> {
    match pb::Permission::try_from(v).map(perm_of) {
        Ok(PermValue::Unspecified) => Ok(None),
        Ok(PermValue::One(p)) => Ok(Some(p)),
        Ok(PermValue::All) => Err(FieldError::new(
            field(),
            "PERMISSION_ALL stands for every permission of a set (an entry's allow or deny); give one permission here",
        )),
        Err(_) => Err(FieldError::new(field(), format!("unknown permission value `{v}`"))),
    }
}

/// A permission that must be given.
pub(crate) fn required_permission(v: i32, field: &str) -> FieldResult<Perm> {
    permission_at(v, || field.to_owned())?
        .ok_or_else(|| FieldError::new(field, "must be set (PERMISSION_UNSPECIFIED is not a permission)"))
}

/// A set of permissions; `PERMISSION_ALL` adds every permission, unspecified
/// members are rejected.
pub(crate) fn perm_set(values: &[i32], field: &str) -> FieldResult<PermSet> {
    let mut set = PermSet::EMPTY;
    for (j, v) in values.iter().enumerate() {
        let at = || format!("{field}[{j}]");
        set = match perm_value(*v, at)? {
            PermValue::All => set.union(PermSet::ALL),
            PermValue::One(p) => set.with(p),
            PermValue::Unspecified => {
                return Err(FieldError::new(at(), "must be set (PERMISSION_UNSPECIFIED is not a permission)"));
            }
        };
    }
    Ok(set)
}

/// The model permission of a proto value (`None` for unspecified, `PERMISSION_ALL` or unknown values).
pub fn permission_of(v: i32) -> Option<Perm> {
    match pb::Permission::try_from(v).ok().map(perm_of) {
        Some(PermValue::One(p)) => Some(p),
        _ => None,
    }
}

/// Parses a permission name as the CLI and files spell it (`Read`, `Change`).
pub fn parse_permission(s: &str) -> Option<Perm> {
    Perm::parse(s)
}

// ------------------------------------------------------------ write payloads

/// `v` if non-empty, else an error naming `field`.
pub(crate) fn required(v: String, field: impl FnOnce() -> String) -> FieldResult<String> {
    if v.is_empty() { Err(FieldError::new(field(), "must not be empty")) } else { Ok(v) }
}

/// Every element non-empty, as a set.
pub(crate) fn required_set<T: Ord + From<String>>(vs: Vec<String>, field: &str) -> FieldResult<BTreeSet<T>> {
    vs.into_iter().enumerate().map(|(j, v)| required(v, || format!("{field}[{j}]")).map(T::from)).collect()
}

/// Every element non-empty, in order.
pub(crate) fn required_list(vs: Vec<String>, field: &str) -> FieldResult<Vec<String>> {
    vs.into_iter().enumerate().map(|(j, v)| required(v, || format!("{field}[{j}]"))).collect()
}

/// `v`, or `default` when empty.
pub(crate) fn or_default(v: String, default: &str) -> String {
    if v.is_empty() { default.to_owned() } else { v }
}

/// An object key.
pub(crate) fn object_key(k: pb::ObjectKey, f: &str) -> FieldResult<ObjectKey> {
    Ok(ObjectKey {
        kind: required(k.r#type, || format!("{f}.type"))?,
        id: ObjectId(required(k.id, || format!("{f}.id"))?),
    })
}

/// A target (exactly one kind set).
pub fn target(t: Option<pb::Target>, f: &str) -> FieldResult<Target> {
    use pb::target::Kind;
    let kind = t
        .and_then(|t| t.kind)
        .ok_or_else(|| FieldError::new(f, "must be set to one of `folder`, `person`, `group`, `role` or `object`"))?;
    Ok(match kind {
        Kind::Folder(id) => Target::Folder(FolderId(required(id, || format!("{f}.folder"))?)),
        Kind::Person(id) => Target::Person(PersonId(required(id, || format!("{f}.person"))?)),
        Kind::Group(id) => Target::Group(GroupId(required(id, || format!("{f}.group"))?)),
        Kind::Role(id) => Target::Role(RoleId(required(id, || format!("{f}.role"))?)),
        Kind::Object(k) => Target::Object(object_key(k, &format!("{f}.object"))?),
    })
}

/// A subject (exactly one kind set).
pub(crate) fn subject(s: Option<pb::Subject>, f: &str) -> FieldResult<Subject> {
    use pb::subject::Kind;
    let kind = s
        .and_then(|s| s.kind)
        .ok_or_else(|| FieldError::new(f, "must be set to one of `everyone`, `person` or `group`"))?;
    Ok(match kind {
        Kind::Everyone(_) => Subject::Everyone,
        Kind::Person(id) => Subject::Person(PersonId(required(id, || format!("{f}.person"))?)),
        Kind::Group(id) => Subject::Group(GroupId(required(id, || format!("{f}.group"))?)),
    })
}

pub(crate) fn ace(a: pb::Ace, f: &str) -> FieldResult<Ace> {
    Ok(Ace {
        target: target(a.target, &format!("{f}.target"))?,
        subject: subject(a.subject, &format!("{f}.subject"))?,
        allow: perm_set(&a.allow, &format!("{f}.allow"))?,
        deny: perm_set(&a.deny, &format!("{f}.deny"))?,
        propagate: a.propagate,
    })
}

pub(crate) fn person(p: pb::Person, f: &str) -> FieldResult<Person> {
    Ok(Person {
        id: PersonId(required(p.id, || format!("{f}.id"))?),
        username: required(p.username, || format!("{f}.username"))?,
        enabled: p.enabled.unwrap_or(true),
        folder: FolderId(or_default(p.folder, model::folders::PERSONS)),
        annex: p.annex.into_iter().map(|(k, v)| (k, v.options)).collect(),
        properties: p.properties,
    })
}

pub(crate) fn group(g: pb::AccessGroup, f: &str) -> FieldResult<AccessGroup> {
    Ok(AccessGroup {
        id: GroupId(required(g.id, || format!("{f}.id"))?),
        name: required(g.name, || format!("{f}.name"))?,
        folder: FolderId(or_default(g.folder, model::folders::ACCESS_GROUPS)),
        members: required_set(g.members, &format!("{f}.members"))?,
    })
}

pub(crate) fn folder(x: pb::Folder, f: &str) -> FieldResult<Folder> {
    let parent = match x.parent {
        Some(p) if p.is_empty() => {
            return Err(FieldError::new(format!("{f}.parent"), "must not be empty (leave it unset for the root)"));
        }
        p => p.map(FolderId),
    };
    Ok(Folder {
        id: FolderId(required(x.id, || format!("{f}.id"))?),
        name: required(x.name, || format!("{f}.name"))?,
        parent,
    })
}

pub(crate) fn object(o: pb::Object, f: &str) -> FieldResult<Object> {
    Ok(Object {
        kind: required(o.r#type, || format!("{f}.type"))?,
        id: ObjectId(required(o.id, || format!("{f}.id"))?),
        name: required(o.name, || format!("{f}.name"))?,
        folder: FolderId(required(o.folder, || format!("{f}.folder"))?),
        partitions: required_set(o.partitions, &format!("{f}.partitions"))?,
        properties: o.properties,
    })
}

pub(crate) fn role(r: pb::Role, f: &str) -> FieldResult<Role> {
    let mut privileges = BTreeMap::new();
    for (app, names) in r.privileges {
        let field = format!("{f}.privileges.{app}");
        let app = required(app, || format!("{f}.privileges"))?;
        privileges.insert(app, required_set(names.names, &field)?);
    }
    let members = r.members.unwrap_or_default();
    Ok(Role {
        id: RoleId(required(r.id, || format!("{f}.id"))?),
        name: required(r.name, || format!("{f}.name"))?,
        folder: FolderId(or_default(r.folder, model::folders::ROLES)),
        privileges,
        members: RoleMembers {
            persons: required_set(members.persons, &format!("{f}.members.persons"))?,
            groups: required_set(members.groups, &format!("{f}.members.groups"))?,
        },
    })
}

pub(crate) fn partition(p: pb::Partition, f: &str) -> FieldResult<Partition> {
    Ok(Partition {
        id: PartitionId(required(p.id, || format!("{f}.id"))?),
        name: required(p.name, || format!("{f}.name"))?,
        members: required_set(p.members, &format!("{f}.members"))?,
    })
}

pub(crate) fn catalog(c: pb::Catalog, f: &str) -> FieldResult<Catalog> {
    let privileges = c
        .privileges
        .into_iter()
        .enumerate()
        .map(|(j, p)| {
            let pf = format!("{f}.privileges[{j}]");
            Ok(PrivilegeDef {
                name: required(p.name, || format!("{pf}.name"))?,
                description: p.description,
                requires: required_list(p.requires, &format!("{pf}.requires"))?,
                aliases: required_list(p.aliases, &format!("{pf}.aliases"))?,
                permission: permission_at(p.permission, || format!("{pf}.permission"))?,
            })
        })
        .collect::<FieldResult<Vec<_>>>()?;
    let type_guards = c
        .type_guards
        .into_iter()
        .enumerate()
        .map(|(j, g)| {
            let gf = format!("{f}.type_guards[{j}]");
            Ok(TypeGuard {
                kind: required(g.r#type, || format!("{gf}.type"))?,
                permission: required_permission(g.permission, &format!("{gf}.permission"))?,
                privilege: required(g.privilege, || format!("{gf}.privilege"))?,
            })
        })
        .collect::<FieldResult<Vec<_>>>()?;
    let property_guards = c
        .property_guards
        .into_iter()
        .enumerate()
        .map(|(j, g)| {
            let gf = format!("{f}.property_guards[{j}]");
            let access = required_permission(g.access, &format!("{gf}.access"))?;
            if !matches!(access, Perm::Read | Perm::Change) {
                return Err(FieldError::new(format!("{gf}.access"), format!("`{access}` is not `Read` or `Change`")));
            }
            Ok(PropertyGuard {
                kind: required(g.r#type, || format!("{gf}.type"))?,
                property: required(g.property, || format!("{gf}.property"))?,
                access,
                privilege: required(g.privilege, || format!("{gf}.privilege"))?,
            })
        })
        .collect::<FieldResult<Vec<_>>>()?;
    let roles = c
        .roles
        .into_iter()
        .enumerate()
        .map(|(j, r)| {
            let rf = format!("{f}.roles[{j}]");
            Ok(RoleTemplate {
                name: required(r.name, || format!("{rf}.name"))?,
                legacy_name: r.legacy_name,
                description: r.description,
                privileges: required_list(r.privileges, &format!("{rf}.privileges"))?,
            })
        })
        .collect::<FieldResult<Vec<_>>>()?;
    Ok(Catalog {
        name: required(c.name, || format!("{f}.name"))?,
        description: c.description,
        name_pattern: c.name_pattern,
        privileges,
        type_guards,
        property_guards,
        open_when_unconfigured: c.open_when_unconfigured,
        legacy_annex_sections: c.legacy_annex_sections,
        restricted_types: c.restricted_types,
        role_rank: c.role_rank,
        roles,
    })
}

/// A role holder (`person` or `group`; `everyone` is refused by the model).
pub(crate) fn holder(s: Option<pb::Subject>, f: &str) -> FieldResult<Subject> {
    subject(s, f)
}

/// Mutation `i` of a batch. Field errors are named `mutations[i].<op>.<field>`.
pub fn mutation(i: usize, m: pb::Mutation) -> FieldResult<Mutation> {
    use pb::mutation::Op;
    let Some(op) = m.op else {
        return Err(FieldError::new(format!("mutations[{i}]"), "no operation is set"));
    };
    let at = |name: &str| format!("mutations[{i}].{name}");
    Ok(match op {
        Op::CreateTenant(c) => {
            let f = at("create_tenant");
            Mutation::CreateTenant {
                name: required(c.name, || format!("{f}.name"))?,
                presets: required_list(c.presets, &format!("{f}.presets"))?,
                defaults: c.defaults.unwrap_or(true),
            }
        }
        Op::RenameTenant(r) => {
            Mutation::RenameTenant { name: required(r.name, || format!("{}.name", at("rename_tenant")))? }
        }
        Op::SetRestrictedMode(s) => Mutation::SetRestrictedMode { on: s.on },
        Op::PutCatalog(c) => Mutation::PutCatalog(catalog(c, &at("put_catalog"))?),
        Op::DeleteCatalog(d) => {
            Mutation::DeleteCatalog { name: required(d.name, || format!("{}.name", at("delete_catalog")))? }
        }
        Op::PutFolder(x) => Mutation::PutFolder(folder(x, &at("put_folder"))?),
        Op::DeleteFolder(d) => {
            Mutation::DeleteFolder { id: FolderId(required(d.id, || format!("{}.id", at("delete_folder")))?) }
        }
        Op::PutPerson(p) => Mutation::PutPerson(person(p, &at("put_person"))?),
        Op::DeletePerson(d) => {
            Mutation::DeletePerson { id: PersonId(required(d.id, || format!("{}.id", at("delete_person")))?) }
        }
        Op::PutGroup(g) => Mutation::PutGroup(group(g, &at("put_group"))?),
        Op::DeleteGroup(d) => {
            Mutation::DeleteGroup { id: GroupId(required(d.id, || format!("{}.id", at("delete_group")))?) }
        }
        Op::AddGroupMember(a) => {
            let f = at("add_group_member");
            Mutation::AddGroupMember {
                group: GroupId(required(a.group, || format!("{f}.group"))?),
                person: PersonId(required(a.person, || format!("{f}.person"))?),
            }
        }
        Op::RemoveGroupMember(a) => {
            let f = at("remove_group_member");
            Mutation::RemoveGroupMember {
                group: GroupId(required(a.group, || format!("{f}.group"))?),
                person: PersonId(required(a.person, || format!("{f}.person"))?),
            }
        }
        Op::PutRole(r) => Mutation::PutRole(role(r, &at("put_role"))?),
        Op::DeleteRole(d) => {
            Mutation::DeleteRole { id: RoleId(required(d.id, || format!("{}.id", at("delete_role")))?) }
        }
        Op::AssignRole(a) => {
            let f = at("assign_role");
            Mutation::AssignRole {
                role: RoleId(required(a.role, || format!("{f}.role"))?),
                to: holder(a.to, &format!("{f}.to"))?,
            }
        }
        Op::UnassignRole(a) => {
            let f = at("unassign_role");
            Mutation::UnassignRole {
                role: RoleId(required(a.role, || format!("{f}.role"))?),
                from: holder(a.holder, &format!("{f}.holder"))?,
            }
        }
        Op::PutPartition(p) => Mutation::PutPartition(partition(p, &at("put_partition"))?),
        Op::DeletePartition(d) => {
            Mutation::DeletePartition { id: PartitionId(required(d.id, || format!("{}.id", at("delete_partition")))?) }
        }
        Op::PutObject(o) => Mutation::PutObject(object(o, &at("put_object"))?),
        Op::DeleteObject(k) => Mutation::DeleteObject(object_key(k, &at("delete_object"))?),
        Op::MoveObject(m) => {
            let f = at("move_object");
            Mutation::MoveObject {
                target: target(m.target, &format!("{f}.target"))?,
                folder: FolderId(required(m.folder, || format!("{f}.folder"))?),
            }
        }
        Op::PutAce(a) => Mutation::PutAce(ace(a, &at("put_ace"))?),
        Op::DeleteAce(d) => {
            let f = at("delete_ace");
            Mutation::DeleteAce {
                target: target(d.target, &format!("{f}.target"))?,
                subject: subject(d.subject, &format!("{f}.subject"))?,
            }
        }
        Op::ProvisionVirtualQueue(p) => {
            let f = at("provision_virtual_queue");
            let folder = match p.folder {
                Some(x) if x.is_empty() => {
                    return Err(FieldError::new(
                        format!("{f}.folder"),
                        "must not be empty (leave it unset for `Scripts/Callback`)",
                    ));
                }
                x => x.map(FolderId),
            };
            Mutation::ProvisionVirtualQueue { queue: required(p.queue, || format!("{f}.queue"))?, folder }
        }
    })
}

/// A whole batch, in order.
pub fn mutations(ms: Vec<pb::Mutation>) -> FieldResult<Vec<Mutation>> {
    ms.into_iter().enumerate().map(|(i, m)| mutation(i, m)).collect()
}

// ----------------------------------------------------- model → proto (client)

pub(crate) fn object_key_pb(k: ObjectKey) -> pb::ObjectKey {
    pb::ObjectKey { r#type: k.kind, id: k.id.0 }
}

/// A model target as sent.
pub fn target_pb(t: Target) -> pb::Target {
    use pb::target::Kind;
    let kind = match t {
        Target::Folder(id) => Kind::Folder(id.0),
        Target::Person(id) => Kind::Person(id.0),
        Target::Group(id) => Kind::Group(id.0),
        Target::Role(id) => Kind::Role(id.0),
        Target::Object(k) => Kind::Object(object_key_pb(k)),
    };
    pb::Target { kind: Some(kind) }
}

/// A model subject as sent.
pub fn subject_pb(s: Subject) -> pb::Subject {
    use pb::subject::Kind;
    let kind = match s {
        Subject::Everyone => Kind::Everyone(pb::subject::Everyone {}),
        Subject::Person(id) => Kind::Person(id.0),
        Subject::Group(id) => Kind::Group(id.0),
    };
    pb::Subject { kind: Some(kind) }
}

pub(crate) fn ids<T: Into<String>>(v: impl IntoIterator<Item = T>) -> Vec<String> {
    v.into_iter().map(Into::into).collect()
}

/// A catalog as sent.
pub fn catalog_pb(c: Catalog) -> pb::Catalog {
    pb::Catalog {
        name: c.name,
        description: c.description,
        name_pattern: c.name_pattern,
        privileges: c
            .privileges
            .into_iter()
            .map(|p| pb::PrivilegeDef {
                name: p.name,
                description: p.description,
                requires: p.requires,
                aliases: p.aliases,
                permission: p.permission.map_or(pb::Permission::Unspecified, permission_pb) as i32,
            })
            .collect(),
        type_guards: c
            .type_guards
            .into_iter()
            .map(|g| pb::TypeGuard {
                r#type: g.kind,
                permission: permission_pb(g.permission) as i32,
                privilege: g.privilege,
            })
            .collect(),
        property_guards: c
            .property_guards
            .into_iter()
            .map(|g| pb::PropertyGuard {
                r#type: g.kind,
                property: g.property,
                access: permission_pb(g.access) as i32,
                privilege: g.privilege,
            })
            .collect(),
        open_when_unconfigured: c.open_when_unconfigured,
        legacy_annex_sections: c.legacy_annex_sections,
        restricted_types: c.restricted_types,
        role_rank: c.role_rank,
        roles: c
            .roles
            .into_iter()
            .map(|r| pb::RoleTemplate {
                name: r.name,
                legacy_name: r.legacy_name,
                description: r.description,
                privileges: r.privileges,
            })
            .collect(),
    }
}

/// A person as sent.
pub fn person_pb(p: Person) -> pb::Person {
    pb::Person {
        id: p.id.0,
        username: p.username,
        enabled: Some(p.enabled),
        folder: p.folder.0,
        annex: p.annex.into_iter().map(|(k, options)| (k, pb::AnnexSection { options })).collect(),
        properties: p.properties,
    }
}

/// An access group as sent.
pub fn group_pb(g: AccessGroup) -> pb::AccessGroup {
    pb::AccessGroup { id: g.id.0, name: g.name, folder: g.folder.0, members: ids(g.members.into_iter().map(|m| m.0)) }
}

/// A folder as sent.
pub fn folder_pb(f: Folder) -> pb::Folder {
    pb::Folder { id: f.id.0, name: f.name, parent: f.parent.map(|p| p.0) }
}

/// A role as sent.
pub fn role_pb(r: Role) -> pb::Role {
    pb::Role {
        id: r.id.0,
        name: r.name,
        folder: r.folder.0,
        privileges: r
            .privileges
            .into_iter()
            .map(|(app, names)| (app, pb::RolePrivileges { names: names.into_iter().collect() }))
            .collect(),
        members: Some(pb::RoleMembers {
            persons: ids(r.members.persons.into_iter().map(|m| m.0)),
            groups: ids(r.members.groups.into_iter().map(|m| m.0)),
        }),
    }
}

/// A partition as sent.
pub fn partition_pb(p: Partition) -> pb::Partition {
    pb::Partition { id: p.id.0, name: p.name, members: ids(p.members.into_iter().map(|m| m.0)) }
}

/// A configuration object as sent.
pub fn object_pb(o: Object) -> pb::Object {
    pb::Object {
        r#type: o.kind,
        id: o.id.0,
        name: o.name,
        folder: o.folder.0,
        partitions: ids(o.partitions.into_iter().map(|p| p.0)),
        properties: o.properties,
    }
}

/// An access control entry as sent.
pub fn ace_pb(a: Ace) -> pb::Ace {
    pb::Ace {
        target: Some(target_pb(a.target)),
        subject: Some(subject_pb(a.subject)),
        allow: perm_set_pb(a.allow),
        deny: perm_set_pb(a.deny),
        propagate: a.propagate,
    }
}

/// A model mutation as sent (the CLI's `write` command reads model YAML).
pub fn mutation_pb(m: Mutation) -> pb::Mutation {
    use pb::mutation as pm;
    use pm::Op;
    let op = match m {
        Mutation::CreateTenant { name, presets, defaults } => {
            Op::CreateTenant(pm::CreateTenant { name, presets, defaults: Some(defaults) })
        }
        Mutation::RenameTenant { name } => Op::RenameTenant(pm::RenameTenant { name }),
        Mutation::SetRestrictedMode { on } => Op::SetRestrictedMode(pm::SetRestrictedMode { on }),
        Mutation::PutCatalog(c) => Op::PutCatalog(catalog_pb(c)),
        Mutation::DeleteCatalog { name } => Op::DeleteCatalog(pm::DeleteCatalog { name }),
        Mutation::PutFolder(f) => Op::PutFolder(folder_pb(f)),
        Mutation::DeleteFolder { id } => Op::DeleteFolder(pm::DeleteFolder { id: id.0 }),
        Mutation::PutPerson(p) => Op::PutPerson(person_pb(p)),
        Mutation::DeletePerson { id } => Op::DeletePerson(pm::DeletePerson { id: id.0 }),
        Mutation::PutGroup(g) => Op::PutGroup(group_pb(g)),
        Mutation::DeleteGroup { id } => Op::DeleteGroup(pm::DeleteGroup { id: id.0 }),
        Mutation::AddGroupMember { group, person } => {
            Op::AddGroupMember(pm::AddGroupMember { group: group.0, person: person.0 })
        }
        Mutation::RemoveGroupMember { group, person } => {
            Op::RemoveGroupMember(pm::RemoveGroupMember { group: group.0, person: person.0 })
        }
        Mutation::PutRole(r) => Op::PutRole(role_pb(r)),
        Mutation::DeleteRole { id } => Op::DeleteRole(pm::DeleteRole { id: id.0 }),
        Mutation::AssignRole { role, to } => Op::AssignRole(pm::AssignRole { role: role.0, to: Some(subject_pb(to)) }),
        Mutation::UnassignRole { role, from } => {
            Op::UnassignRole(pm::UnassignRole { role: role.0, holder: Some(subject_pb(from)) })
        }
        Mutation::PutPartition(p) => Op::PutPartition(partition_pb(p)),
        Mutation::DeletePartition { id } => Op::DeletePartition(pm::DeletePartition { id: id.0 }),
        Mutation::PutObject(o) => Op::PutObject(object_pb(o)),
        Mutation::DeleteObject(k) => Op::DeleteObject(object_key_pb(k)),
        Mutation::MoveObject { target, folder } => {
            Op::MoveObject(pm::MoveObject { target: Some(target_pb(target)), folder: folder.0 })
        }
        Mutation::PutAce(a) => Op::PutAce(ace_pb(a)),
        Mutation::DeleteAce { target, subject } => {
            Op::DeleteAce(pm::DeleteAce { target: Some(target_pb(target)), subject: Some(subject_pb(subject)) })
        }
        Mutation::ProvisionVirtualQueue { queue, folder } => {
            Op::ProvisionVirtualQueue(pm::ProvisionVirtualQueue { queue, folder: folder.map(|f| f.0) })
        }
    };
    pb::Mutation { op: Some(op) }
}
