//! Proto ↔ model conversions: the edge where wire types stop (ARCHITECTURE habit 3).
//!
//! Inbound, every conversion validates what the wire cannot express (an enum
//! value out of range, an unset oneof, an empty id) and names the offending
//! field by its path in the request, e.g. `mutations[3].put_person.id: must not
//! be empty`. Checks borrow their strings from the decoded proto message, so a
//! decision allocates nothing beyond what prost did. Write payloads are
//! converted by value (the strings are moved, not copied).
//!
//! Outbound, engine answers become proto messages; [`reason`] maps the
//! engine's [`Reason`] to the proto enum, whose values are `REASON_<code>` in
//! the order of [`Reason::code`].

use super::changes::PersonDelta;
use super::replica::Precondition;
use super::status::{ServiceError, ServiceResult};
use crate::engine::{
    self, AceEvidence, CheckRequest, Decision, EffectivePrivileges, Explanation, ObjectRef, PrivilegeSource, Reason,
    VisibleObject, VisibleRef,
};
use crate::model::{
    self, AccessGroup, Ace, Catalog, Folder, FolderId, GroupId, Mutation, Object, ObjectId, ObjectKey, Partition,
    PartitionId, Perm, PermSet, Person, PersonId, PrivilegeDef, PropertyGuard, Revision, Role, RoleId, RoleMembers,
    RoleTemplate, Subject, Target, TenantConfig, TypeGuard,
};
use crate::proto::authzd::v1 as pb;
use base64::Engine as _;
use std::collections::{BTreeMap, BTreeSet};

// ---------------------------------------------------------------- permissions

/// What a proto permission value stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PermValue {
    /// `PERMISSION_UNSPECIFIED`.
    Unspecified,
    /// One permission.
    One(Perm),
    /// `PERMISSION_ALL`: every permission (sets only).
    All,
}

/// What a proto enum value stands for.
fn perm_of(p: pb::Permission) -> PermValue {
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
fn perm_value(v: i32, field: impl FnOnce() -> String) -> ServiceResult<PermValue> {
    match pb::Permission::try_from(v) {
        Ok(p) => Ok(perm_of(p)),
        Err(_) => Err(ServiceError::invalid(field(), format!("unknown permission value `{v}`"))),
    }
}

/// An optional single permission: unspecified is `None`; `PERMISSION_ALL`
/// (a set's shorthand) and values out of range are errors naming the field.
fn permission_at(v: i32, field: impl FnOnce() -> String) -> ServiceResult<Option<Perm>> {
    match pb::Permission::try_from(v).map(perm_of) {
        Ok(PermValue::Unspecified) => Ok(None),
        Ok(PermValue::One(p)) => Ok(Some(p)),
        Ok(PermValue::All) => Err(ServiceError::invalid(
            field(),
            "PERMISSION_ALL stands for every permission of a set (an entry's allow or deny); give one permission here",
        )),
        Err(_) => Err(ServiceError::invalid(field(), format!("unknown permission value `{v}`"))),
    }
}

/// A permission that must be given.
fn required_permission(v: i32, field: &str) -> ServiceResult<Perm> {
    permission_at(v, || field.to_owned())?
        .ok_or_else(|| ServiceError::invalid(field, "must be set (PERMISSION_UNSPECIFIED is not a permission)"))
}

/// A set of permissions; `PERMISSION_ALL` adds every permission, unspecified
/// members are rejected.
fn perm_set(values: &[i32], field: &str) -> ServiceResult<PermSet> {
    let mut set = PermSet::EMPTY;
    for (j, v) in values.iter().enumerate() {
        let at = || format!("{field}[{j}]");
        set = match perm_value(*v, at)? {
            PermValue::All => set.union(PermSet::ALL),
            PermValue::One(p) => set.with(p),
            PermValue::Unspecified => {
                return Err(ServiceError::invalid(at(), "must be set (PERMISSION_UNSPECIFIED is not a permission)"));
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

// ------------------------------------------------------------------ decisions

/// The proto reason of an engine reason.
pub fn reason(r: Reason) -> pb::Reason {
    match r {
        Reason::Allowed => pb::Reason::Allowed,
        Reason::OpenWhenUnconfigured => pb::Reason::OpenWhenUnconfigured,
        Reason::UnknownTenant => pb::Reason::UnknownTenant,
        Reason::NotLoaded => pb::Reason::NotLoaded,
        Reason::UnknownSubject => pb::Reason::UnknownSubject,
        Reason::DisabledSubject => pb::Reason::DisabledSubject,
        Reason::UnknownObject => pb::Reason::UnknownObject,
        Reason::CrossTenant => pb::Reason::CrossTenant,
        Reason::UnknownApplication => pb::Reason::UnknownApplication,
        Reason::UnknownPrivilege => pb::Reason::UnknownPrivilege,
        Reason::Partition => pb::Reason::Partition,
        Reason::ExplicitDeny => pb::Reason::ExplicitDeny,
        Reason::NoGrant => pb::Reason::NoGrant,
        Reason::MissingPrivilege => pb::Reason::MissingPrivilege,
        Reason::UnmetDependency => pb::Reason::UnmetDependency,
        Reason::RestrictedMode => pb::Reason::RestrictedMode,
        Reason::InvalidRequest => pb::Reason::InvalidRequest,
        Reason::Internal => pb::Reason::Internal,
    }
}

/// The stable code of a proto reason value (`EXPLICIT_DENY`), for the CLI.
pub fn reason_code(v: i32) -> &'static str {
    match pb::Reason::try_from(v) {
        Ok(r) => r.as_str_name().strip_prefix("REASON_").unwrap_or("UNSPECIFIED"),
        Err(_) => "UNSPECIFIED",
    }
}

/// The parts of a check, borrowed from the message they came in.
#[allow(clippy::too_many_arguments)]
pub fn check_parts<'a>(
    item: Option<usize>,
    person: &'a str,
    application: Option<&'a str>,
    permission: i32,
    object: Option<&'a pb::ObjectRef>,
    privilege: Option<&'a str>,
    property: Option<&'a str>,
) -> ServiceResult<CheckRequest<'a>> {
    let field = |name: &str| match item {
        Some(i) => format!("items[{i}].{name}"),
        None => name.to_owned(),
    };
    let permission = permission_at(permission, || field("permission"))?;
    // Malformed questions are refused like every other malformed request
    // (`INVALID_ARGUMENT` naming the field), never answered as a denial.
    if privilege.is_some() && application.is_none() {
        return Err(ServiceError::invalid(
            field("application"),
            "must be set with `privilege` (the privilege's catalog)",
        ));
    }
    if property.is_some() && object.is_none() {
        return Err(ServiceError::invalid(
            field("object"),
            "must be set with `property` (the object the property is of)",
        ));
    }
    if object.is_none() && privilege.is_none() {
        return Err(ServiceError::invalid(field("object"), "nothing to check: give an object, a privilege, or both"));
    }
    Ok(CheckRequest {
        subject: person,
        application,
        permission,
        object: object.map(|o| ObjectRef { kind: &o.r#type, id: &o.id, tenant: o.tenant.as_deref() }),
        privilege,
        property,
    })
}

/// A `Check` as an engine request, borrowing from the message.
pub fn check_request(r: &pb::CheckRequest) -> ServiceResult<CheckRequest<'_>> {
    check_parts(
        None,
        &r.person,
        r.application.as_deref(),
        r.permission,
        r.object.as_ref(),
        r.privilege.as_deref(),
        r.property.as_deref(),
    )
}

/// An `Explain` as an engine request, borrowing from the message.
pub fn explain_request(r: &pb::ExplainRequest) -> ServiceResult<CheckRequest<'_>> {
    check_parts(
        None,
        &r.person,
        r.application.as_deref(),
        r.permission,
        r.object.as_ref(),
        r.privilege.as_deref(),
        r.property.as_deref(),
    )
}

/// Item `i` of a `CheckBatch` as an engine request for `person`.
pub fn batch_item<'a>(person: &'a str, i: usize, item: &'a pb::CheckBatchItem) -> ServiceResult<CheckRequest<'a>> {
    check_parts(
        Some(i),
        person,
        item.application.as_deref(),
        item.permission,
        item.object.as_ref(),
        item.privilege.as_deref(),
        item.property.as_deref(),
    )
}

/// The permission of a listing (unspecified: Read).
pub fn list_permission(v: i32) -> ServiceResult<Perm> {
    Ok(permission_at(v, || "permission".to_owned())?.unwrap_or(Perm::Read))
}

/// A decision as a `CheckResponse` (evidence added by the caller).
pub fn check_response(d: Decision, evidence: Option<pb::Evidence>) -> pb::CheckResponse {
    pb::CheckResponse { allowed: d.allowed(), reason: reason(d.reason) as i32, revision: d.revision, evidence }
}

/// The opaque continuation token of a listing: base64 of `<revision>:<last id>`,
/// so the next page is answered from the same revision as this one.
pub fn encode_page_token(revision: Revision, last_id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{revision}:{last_id}"))
}

/// Decodes a continuation token: (revision, id to continue after); `None` for
/// the first page.
pub fn decode_page_token(token: &str) -> ServiceResult<Option<(Revision, String)>> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || {
        ServiceError::invalid("page_token", "not a page token this listing returned; start again with an empty token")
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let (rev, id) = text.split_once(':').ok_or_else(bad)?;
    let rev = rev.parse::<Revision>().map_err(|_| bad())?;
    Ok(Some((rev, id.to_owned())))
}

/// A visible object as sent.
/// An object of a listing borrowed from the view, as sent in `view`: each
/// string is copied once, straight into the message.
pub fn visible_ref(v: &VisibleRef<'_>, view: pb::ListView) -> pb::VisibleObject {
    match view {
        pb::ListView::Ids => pb::VisibleObject { id: v.id.to_owned(), ..Default::default() },
        pb::ListView::Names => pb::VisibleObject { id: v.id.to_owned(), name: v.name.to_owned(), ..Default::default() },
        pb::ListView::Full | pb::ListView::Unspecified => pb::VisibleObject {
            id: v.id.to_owned(),
            name: v.name.to_owned(),
            folder: v.folder.to_owned(),
            properties: v.properties.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        },
    }
}

/// An object of a listing, as sent.
pub fn visible_object(v: VisibleObject) -> pb::VisibleObject {
    pb::VisibleObject { id: v.id, name: v.name, folder: v.folder, properties: v.properties.into_iter().collect() }
}

/// The proto source of an engine privilege source.
fn source_pb(s: &PrivilegeSource) -> pb::PrivilegeSource {
    match s {
        PrivilegeSource::LegacyAnnex { .. } => pb::PrivilegeSource::LegacyAnnex,
        PrivilegeSource::Roles => pb::PrivilegeSource::Roles,
        PrivilegeSource::OpenWhenUnconfigured => pb::PrivilegeSource::OpenWhenUnconfigured,
    }
}

/// Effective privileges as sent.
pub fn effective_privileges(application: &str, e: EffectivePrivileges) -> pb::EffectivePrivileges {
    let (legacy_section, legacy_role) = match &e.source {
        PrivilegeSource::LegacyAnnex { section, role } => (Some(section.clone()), Some(role.clone())),
        _ => (None, None),
    };
    pb::EffectivePrivileges {
        application: application.to_owned(),
        source: source_pb(&e.source) as i32,
        legacy_section,
        legacy_role,
        privileges: e.privileges,
        unmet: e.unmet,
        roles: e.roles,
        unreadable_roles: e.unreadable_roles,
        primary_role: e.primary_role,
    }
}

/// A principal of the engine's evidence (`everyone`, `group`, `person`) as a subject.
fn principal_pb(kind: &str, id: &str) -> pb::Subject {
    let kind = match kind {
        "group" => pb::subject::Kind::Group(id.to_owned()),
        "person" => pb::subject::Kind::Person(id.to_owned()),
        _ => pb::subject::Kind::Everyone(pb::subject::Everyone {}),
    };
    pb::Subject { kind: Some(kind) }
}

/// A node of the engine's evidence (type, id) as a target.
pub fn node_target_pb(kind: &str, id: &str) -> pb::Target {
    let kind = match kind {
        model::types::FOLDER => pb::target::Kind::Folder(id.to_owned()),
        model::types::PERSON => pb::target::Kind::Person(id.to_owned()),
        model::types::ACCESS_GROUP => pb::target::Kind::Group(id.to_owned()),
        model::types::ROLE => pb::target::Kind::Role(id.to_owned()),
        other => pb::target::Kind::Object(pb::ObjectKey { r#type: other.to_owned(), id: id.to_owned() }),
    };
    pb::Target { kind: Some(kind) }
}

/// An entry of the engine's evidence as sent.
pub fn matched_ace_pb(e: &AceEvidence) -> pb::MatchedAce {
    pb::MatchedAce {
        principal: Some(principal_pb(&e.principal_kind, &e.principal_id)),
        target: Some(node_target_pb(&e.target_kind, &e.target_id)),
        inherited_from: if e.inherited { e.target_id.clone() } else { String::new() },
        allow: perm_set_pb(e.allow),
        deny: perm_set_pb(e.deny),
        propagate: e.propagate,
    }
}

/// Which privilege a check consults as its type guard, and which it asked for
/// (canonical names), so evidence can say why each privilege was needed.
fn privilege_needs<'c>(r: &CheckRequest<'_>, config: &'c TenantConfig) -> (Option<&'c str>, Option<&'c str>) {
    let Some(cat) = r.application.and_then(|a| config.catalogs.get(a)) else { return (None, None) };
    let requested = r.privilege.and_then(|p| cat.privilege(p));
    let b = r.permission.or_else(|| requested.and_then(|p| p.permission)).unwrap_or(Perm::Read);
    let guard = r.object.and_then(|o| {
        cat.type_guards
            .iter()
            .find(|g| g.kind == o.kind && g.permission == b)
            .and_then(|g| cat.privilege(&g.privilege))
            .map(|p| p.name.as_str())
    });
    (guard, requested.map(|p| p.name.as_str()))
}

/// The evidence of a decision as sent. `source` is where the person's
/// privileges in the request's application come from, if one was named.
pub fn evidence(
    ex: &Explanation,
    r: &CheckRequest<'_>,
    config: &TenantConfig,
    source: Option<&PrivilegeSource>,
) -> pb::Evidence {
    let aces = ex.entries.iter().map(matched_ace_pb).collect();
    let (guard, requested) = privilege_needs(r, config);
    let n = ex.privileges.len();
    let privileges = ex
        .privileges
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let need = if i == 0 && guard == Some(p.name.as_str()) {
                pb::PrivilegeNeed::TypeGuard
            } else if i + 1 == n && requested == Some(p.name.as_str()) {
                pb::PrivilegeNeed::Requested
            } else {
                pb::PrivilegeNeed::PropertyGuard
            };
            pb::PrivilegeEvidence {
                name: p.name.clone(),
                effective: p.effective,
                missing_requires: p.missing_requires.clone(),
                need: need as i32,
            }
        })
        .collect();
    pb::Evidence {
        aces,
        groups: ex.groups.clone(),
        roles: ex.roles.clone(),
        privileges,
        privilege_source: source.map_or(pb::PrivilegeSource::Unspecified, source_pb) as i32,
    }
}

// ------------------------------------------------------------ write payloads

/// `v` if non-empty, else an error naming `field`.
fn required(v: String, field: impl FnOnce() -> String) -> ServiceResult<String> {
    if v.is_empty() { Err(ServiceError::invalid(field(), "must not be empty")) } else { Ok(v) }
}

/// Every element non-empty, as a set.
fn required_set<T: Ord + From<String>>(vs: Vec<String>, field: &str) -> ServiceResult<BTreeSet<T>> {
    vs.into_iter().enumerate().map(|(j, v)| required(v, || format!("{field}[{j}]")).map(T::from)).collect()
}

/// Every element non-empty, in order.
fn required_list(vs: Vec<String>, field: &str) -> ServiceResult<Vec<String>> {
    vs.into_iter().enumerate().map(|(j, v)| required(v, || format!("{field}[{j}]"))).collect()
}

/// `v`, or `default` when empty.
fn or_default(v: String, default: &str) -> String {
    if v.is_empty() { default.to_owned() } else { v }
}

/// An object key.
fn object_key(k: pb::ObjectKey, f: &str) -> ServiceResult<ObjectKey> {
    Ok(ObjectKey {
        kind: required(k.r#type, || format!("{f}.type"))?,
        id: ObjectId(required(k.id, || format!("{f}.id"))?),
    })
}

/// A target (exactly one kind set).
pub fn target(t: Option<pb::Target>, f: &str) -> ServiceResult<Target> {
    use pb::target::Kind;
    let kind = t.and_then(|t| t.kind).ok_or_else(|| {
        ServiceError::invalid(f, "must be set to one of `folder`, `person`, `group`, `role` or `object`")
    })?;
    Ok(match kind {
        Kind::Folder(id) => Target::Folder(FolderId(required(id, || format!("{f}.folder"))?)),
        Kind::Person(id) => Target::Person(PersonId(required(id, || format!("{f}.person"))?)),
        Kind::Group(id) => Target::Group(GroupId(required(id, || format!("{f}.group"))?)),
        Kind::Role(id) => Target::Role(RoleId(required(id, || format!("{f}.role"))?)),
        Kind::Object(k) => Target::Object(object_key(k, &format!("{f}.object"))?),
    })
}

/// A subject (exactly one kind set).
fn subject(s: Option<pb::Subject>, f: &str) -> ServiceResult<Subject> {
    use pb::subject::Kind;
    let kind = s
        .and_then(|s| s.kind)
        .ok_or_else(|| ServiceError::invalid(f, "must be set to one of `everyone`, `person` or `group`"))?;
    Ok(match kind {
        Kind::Everyone(_) => Subject::Everyone,
        Kind::Person(id) => Subject::Person(PersonId(required(id, || format!("{f}.person"))?)),
        Kind::Group(id) => Subject::Group(GroupId(required(id, || format!("{f}.group"))?)),
    })
}

fn ace(a: pb::Ace, f: &str) -> ServiceResult<Ace> {
    Ok(Ace {
        target: target(a.target, &format!("{f}.target"))?,
        subject: subject(a.subject, &format!("{f}.subject"))?,
        allow: perm_set(&a.allow, &format!("{f}.allow"))?,
        deny: perm_set(&a.deny, &format!("{f}.deny"))?,
        propagate: a.propagate,
    })
}

fn person(p: pb::Person, f: &str) -> ServiceResult<Person> {
    Ok(Person {
        id: PersonId(required(p.id, || format!("{f}.id"))?),
        username: required(p.username, || format!("{f}.username"))?,
        enabled: p.enabled.unwrap_or(true),
        folder: FolderId(or_default(p.folder, model::folders::PERSONS)),
        annex: p.annex.into_iter().map(|(k, v)| (k, v.options)).collect(),
        properties: p.properties,
    })
}

fn group(g: pb::AccessGroup, f: &str) -> ServiceResult<AccessGroup> {
    Ok(AccessGroup {
        id: GroupId(required(g.id, || format!("{f}.id"))?),
        name: required(g.name, || format!("{f}.name"))?,
        folder: FolderId(or_default(g.folder, model::folders::ACCESS_GROUPS)),
        members: required_set(g.members, &format!("{f}.members"))?,
    })
}

fn folder(x: pb::Folder, f: &str) -> ServiceResult<Folder> {
    let parent = match x.parent {
        Some(p) if p.is_empty() => {
            return Err(ServiceError::invalid(
                format!("{f}.parent"),
                "must not be empty (leave it unset for the root)",
            ));
        }
        p => p.map(FolderId),
    };
    Ok(Folder {
        id: FolderId(required(x.id, || format!("{f}.id"))?),
        name: required(x.name, || format!("{f}.name"))?,
        parent,
    })
}

fn object(o: pb::Object, f: &str) -> ServiceResult<Object> {
    Ok(Object {
        kind: required(o.r#type, || format!("{f}.type"))?,
        id: ObjectId(required(o.id, || format!("{f}.id"))?),
        name: required(o.name, || format!("{f}.name"))?,
        folder: FolderId(required(o.folder, || format!("{f}.folder"))?),
        partitions: required_set(o.partitions, &format!("{f}.partitions"))?,
        properties: o.properties,
    })
}

fn role(r: pb::Role, f: &str) -> ServiceResult<Role> {
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

fn partition(p: pb::Partition, f: &str) -> ServiceResult<Partition> {
    Ok(Partition {
        id: PartitionId(required(p.id, || format!("{f}.id"))?),
        name: required(p.name, || format!("{f}.name"))?,
        members: required_set(p.members, &format!("{f}.members"))?,
    })
}

fn catalog(c: pb::Catalog, f: &str) -> ServiceResult<Catalog> {
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
        .collect::<ServiceResult<Vec<_>>>()?;
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
        .collect::<ServiceResult<Vec<_>>>()?;
    let property_guards = c
        .property_guards
        .into_iter()
        .enumerate()
        .map(|(j, g)| {
            let gf = format!("{f}.property_guards[{j}]");
            let access = required_permission(g.access, &format!("{gf}.access"))?;
            if !matches!(access, Perm::Read | Perm::Change) {
                return Err(ServiceError::invalid(
                    format!("{gf}.access"),
                    format!("`{access}` is not `Read` or `Change`"),
                ));
            }
            Ok(PropertyGuard {
                kind: required(g.r#type, || format!("{gf}.type"))?,
                property: required(g.property, || format!("{gf}.property"))?,
                access,
                privilege: required(g.privilege, || format!("{gf}.privilege"))?,
            })
        })
        .collect::<ServiceResult<Vec<_>>>()?;
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
        .collect::<ServiceResult<Vec<_>>>()?;
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
fn holder(s: Option<pb::Subject>, f: &str) -> ServiceResult<Subject> {
    subject(s, f)
}

/// Mutation `i` of a batch. Field errors are named `mutations[i].<op>.<field>`.
pub fn mutation(i: usize, m: pb::Mutation) -> ServiceResult<Mutation> {
    use pb::mutation::Op;
    let Some(op) = m.op else {
        return Err(ServiceError::invalid(format!("mutations[{i}]"), "no operation is set"));
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
                    return Err(ServiceError::invalid(
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
pub fn mutations(ms: Vec<pb::Mutation>) -> ServiceResult<Vec<Mutation>> {
    ms.into_iter().enumerate().map(|(i, m)| mutation(i, m)).collect()
}

/// Precondition `i` of a write.
pub fn precondition(i: usize, p: pb::Precondition) -> ServiceResult<Precondition> {
    use pb::precondition::Condition;
    let f = format!("preconditions[{i}]");
    match p.condition {
        Some(Condition::Exists(t)) => Ok(Precondition::Exists(target(Some(t), &format!("{f}.exists"))?)),
        Some(Condition::Absent(t)) => Ok(Precondition::Absent(target(Some(t), &format!("{f}.absent"))?)),
        None => Err(ServiceError::invalid(f, "must be set to `exists` or `absent`")),
    }
}

/// Per-person changes as sent.
pub fn person_change(d: PersonDelta) -> pb::PersonChange {
    let key = |k: ObjectKey| pb::ObjectKey { r#type: k.kind, id: k.id.0 };
    pb::PersonChange {
        person: d.person,
        privileges: d
            .privileges
            .into_iter()
            .map(|(application, gained, lost)| pb::PrivilegeChange { application, gained, lost })
            .collect(),
        visible_gained: d.visible_gained.into_iter().map(key).collect(),
        visible_lost: d.visible_lost.into_iter().map(key).collect(),
    }
}

// ----------------------------------------------------- model → proto (client)

fn object_key_pb(k: ObjectKey) -> pb::ObjectKey {
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

fn ids<T: Into<String>>(v: impl IntoIterator<Item = T>) -> Vec<String> {
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

/// An engine object reference spelled `<type>/<id>` (the CLI's `--object`).
pub fn parse_object_spec(spec: &str) -> Option<(&str, &str)> {
    spec.split_once('/').filter(|(t, id)| !t.is_empty() && !id.is_empty())
}

/// Re-exported for the handlers: the engine's listing request.
pub use engine::ListRequest;

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn reasons_map_to_the_proto_value_named_after_their_code() {
        let all = Reason::ALL;
        for (i, r) in all.into_iter().enumerate() {
            let p = reason(r);
            assert_eq!(p.as_str_name(), format!("REASON_{}", r.code()));
            assert_eq!(p as i32, i as i32 + 1, "proto order follows Reason::code order");
            assert_eq!(reason_code(p as i32), r.code());
        }
    }

    #[test]
    fn page_tokens_round_trip_and_reject_garbage() {
        let t = encode_page_token(42, "ges_Sales:VQ");
        assert_eq!(decode_page_token(&t).ok().flatten(), Some((42, "ges_Sales:VQ".to_owned())));
        assert_eq!(decode_page_token("").ok().flatten(), None);
        assert!(decode_page_token("!!").is_err());
    }

    #[test]
    fn empty_ids_name_the_mutation_and_field() {
        let m = pb::Mutation {
            op: Some(pb::mutation::Op::PutPerson(pb::Person { username: "x".into(), ..Default::default() })),
        };
        let e = mutation(3, m).err().map(|e| e.to_string());
        assert_eq!(e.as_deref(), Some("mutations[3].put_person.id: must not be empty"));
        let e = mutation(0, pb::Mutation { op: None }).err().map(|e| e.to_string());
        assert_eq!(e.as_deref(), Some("mutations[0]: no operation is set"));
    }

    #[test]
    fn mutations_round_trip_through_proto() {
        let text = include_str!("../../examples/acme.yaml");
        let batch = crate::model::TenantFile::from_yaml(text).unwrap().to_mutations().unwrap();
        for (i, m) in batch.iter().enumerate() {
            let back = mutation(i, mutation_pb(m.clone())).map_err(|e| e.to_string());
            assert_eq!(back.as_ref(), Ok(m));
        }
    }

    #[test]
    fn permission_all_is_every_bit_in_a_set_and_refused_alone() {
        let all = pb::Permission::All as i32;
        assert_eq!(perm_set(&[all], "allow").ok(), Some(PermSet::ALL));
        assert_eq!(perm_set(&[pb::Permission::Read as i32, all], "deny").ok(), Some(PermSet::ALL));
        let unset = perm_set(&[all, 0], "allow").err().map(|e| e.to_string());
        assert_eq!(unset.as_deref(), Some("allow[1]: must be set (PERMISSION_UNSPECIFIED is not a permission)"));
        let m = pb::Mutation {
            op: Some(pb::mutation::Op::PutAce(pb::Ace {
                target: Some(pb::Target { kind: Some(pb::target::Kind::Folder("Scripts".into())) }),
                subject: Some(pb::Subject { kind: Some(pb::subject::Kind::Person("p".into())) }),
                allow: vec![all],
                deny: vec![],
                propagate: true,
            })),
        };
        let Ok(Mutation::PutAce(a)) = mutation(0, m) else { panic!("put_ace does not convert") };
        assert_eq!(a.allow, PermSet::ALL);
        // Answers list the bits, never the shorthand.
        assert_eq!(perm_set_pb(PermSet::ALL), (1..=7).collect::<Vec<i32>>());
        let r = pb::CheckRequest { permission: all, ..Default::default() };
        let e = check_request(&r).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.starts_with("permission: PERMISSION_ALL stands for every permission of a set"), "{e}");
        assert_eq!(permission_of(all), None);
    }

    #[test]
    fn unassign_role_names_its_holder() {
        let m = pb::Mutation {
            op: Some(pb::mutation::Op::UnassignRole(pb::mutation::UnassignRole { role: "r".into(), holder: None })),
        };
        let e = mutation(2, m).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.starts_with("mutations[2].unassign_role.holder"), "{e}");
    }

    #[test]
    fn unknown_permission_values_are_rejected() {
        let r = pb::CheckRequest { permission: 99, ..Default::default() };
        let e = check_request(&r).err().map(|e| e.to_string());
        assert_eq!(e.as_deref(), Some("permission: unknown permission value `99`"));
    }
}
