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

use super::status::{ServiceError, ServiceResult};
use crate::engine::changes::PersonDelta;
use crate::engine::{
    self, AceEvidence, CheckRequest, Decision, EffectivePrivileges, Explanation, ObjectRef, PrivilegeSource, Reason,
    VisibleObject, VisibleRef,
};
use crate::model::{self, ObjectKey, Perm, Revision, TenantConfig};
use crate::proto::authzd::v1 as pb;
pub use crate::proto::convert::*;
use crate::replica::Precondition;
use crate::snapshot::TenantState;
use base64::Engine as _;

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

/// An engine object reference spelled `<type>/<id>` (the CLI's `--object`).
pub fn parse_object_spec(spec: &str) -> Option<(&str, &str)> {
    spec.split_once('/').filter(|(t, id)| !t.is_empty() && !id.is_empty())
}

/// Re-exported for the handlers: the engine's listing request.
pub use engine::ListRequest;

/// Where the person's privileges in the request's application come from.
fn source_of(state: &TenantState, r: &CheckRequest<'_>) -> Option<PrivilegeSource> {
    let app = r.application?;
    state.view.effective_privileges(r.subject, app).ok().map(|e| e.source)
}

/// Decides `r` on `state` with evidence.
pub(crate) fn explained(state: &TenantState, r: &CheckRequest<'_>) -> (Decision, pb::Evidence) {
    let ex = state.view.explain(r);
    let evidence = evidence(&ex, r, &state.config, source_of(state, r).as_ref());
    (ex.decision, evidence)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::model::{Mutation, PermSet};

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
