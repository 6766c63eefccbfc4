//! A deliberately naive evaluator of SPEC §2–§4, used only as the oracle of
//! the differential tests (`tests/differential.rs`).
//!
//! It works directly on a [`TenantConfig`], with no precomputation and no
//! index: every question walks the configuration from scratch, in the order
//! the specification states its rules. It is slow on purpose and must stay
//! simple enough to be checked against the text by reading it. Where the
//! specification is silent it follows the engine's documented choices:
//!
//! - An ACE target is a folder (`Folder`), a person (`Person`), an access
//!   group (`AccessGroup`), a role (`Role`) or a generic object (its own type).
//!   Every non-folder node lives in a folder; a folder's ancestors are its
//!   parent chain, an object's ancestors its folder and then that chain.
//! - Only generic objects have partitions.
//! - The permission checked is the request's, else the privilege's declared
//!   `permission`, else `Read`.
//! - Restricted mode without an application uses the union of every
//!   catalog's `restricted_types`.
//! - `OPEN_WHEN_UNCONFIGURED` is reported when a privilege was consulted
//!   (an existing type or property guard, or the privilege asked) and the
//!   person's privileges in the application come from that rule.
//! - The primary role is the applied role with most access (most distinct
//!   canonical privileges of the application); ties go to the role named
//!   first in `role_rank` (ranked before unranked), then by name. A legacy
//!   annex decision names the matching template.

use super::types::{CheckRequest, ListRequest, Reason};
use crate::model::{
    AccessGroup, Catalog, Folder, FolderId, Object, ObjectId, ObjectKey, Perm, Person, Role, Subject, Target,
    TenantConfig,
};
use std::collections::BTreeSet;

/// A node of the tenant that can carry ACEs.
#[derive(Debug, Clone, Copy)]
enum Node<'a> {
    Folder(&'a Folder),
    Person(&'a Person),
    Group(&'a AccessGroup),
    Role(&'a Role),
    Object(&'a Object),
}

impl<'a> Node<'a> {
    /// The ACE target naming this node.
    fn target(self) -> Target {
        match self {
            Node::Folder(f) => Target::Folder(f.id.clone()),
            Node::Person(p) => Target::Person(p.id.clone()),
            Node::Group(g) => Target::Group(g.id.clone()),
            Node::Role(r) => Target::Role(r.id.clone()),
            Node::Object(o) => Target::Object(o.key()),
        }
    }

    /// The node's object type.
    fn kind(self) -> &'a str {
        match self {
            Node::Folder(_) => "Folder",
            Node::Person(_) => "Person",
            Node::Group(_) => "AccessGroup",
            Node::Role(_) => "Role",
            Node::Object(o) => o.kind.as_str(),
        }
    }

    /// The node's id.
    fn id(self) -> &'a str {
        match self {
            Node::Folder(f) => f.id.as_str(),
            Node::Person(p) => p.id.as_str(),
            Node::Group(g) => g.id.as_str(),
            Node::Role(r) => r.id.as_str(),
            Node::Object(o) => o.id.as_str(),
        }
    }

    /// The first ancestor folder: the parent of a folder, the folder of anything else.
    fn first_ancestor(self) -> Option<&'a FolderId> {
        match self {
            Node::Folder(f) => f.parent.as_ref(),
            Node::Person(p) => Some(&p.folder),
            Node::Group(g) => Some(&g.folder),
            Node::Role(r) => Some(&r.folder),
            Node::Object(o) => Some(&o.folder),
        }
    }

    /// The folder that scopes the node in a listing: the folder itself for a
    /// folder, the containing folder for anything else.
    fn scope_folder(self) -> &'a FolderId {
        match self {
            Node::Folder(f) => &f.id,
            Node::Person(p) => &p.folder,
            Node::Group(g) => &g.folder,
            Node::Role(r) => &r.folder,
            Node::Object(o) => &o.folder,
        }
    }

    /// Partitions of the node (generic objects only).
    fn partitions(self) -> Vec<&'a str> {
        match self {
            Node::Object(o) => o.partitions.iter().map(|p| p.as_str()).collect(),
            _ => Vec::new(),
        }
    }
}

/// Finds the node of type `kind` with id `id`.
fn resolve<'a>(c: &'a TenantConfig, kind: &str, id: &str) -> Option<Node<'a>> {
    match kind {
        "Folder" => c.folders.get(id).map(Node::Folder),
        "Person" => c.persons.get(id).map(Node::Person),
        "AccessGroup" => c.groups.get(id).map(Node::Group),
        "Role" => c.roles.get(id).map(Node::Role),
        _ => c.objects.get(&ObjectKey { kind: kind.to_owned(), id: ObjectId(id.to_owned()) }).map(Node::Object),
    }
}

/// Every node of type `kind`.
fn nodes_of_kind<'a>(c: &'a TenantConfig, kind: &str) -> Vec<Node<'a>> {
    match kind {
        "Folder" => c.folders.values().map(Node::Folder).collect(),
        "Person" => c.persons.values().map(Node::Person).collect(),
        "AccessGroup" => c.groups.values().map(Node::Group).collect(),
        "Role" => c.roles.values().map(Node::Role).collect(),
        _ => c.objects.values().filter(|o| o.kind == kind).map(Node::Object).collect(),
    }
}

/// The ancestor folders of a node, nearest first (cycle-safe).
fn ancestors<'a>(c: &'a TenantConfig, node: Node<'a>) -> Vec<&'a FolderId> {
    let mut out = Vec::new();
    let mut cur = node.first_ancestor();
    while let Some(f) = cur {
        if out.len() > c.folders.len() {
            break;
        }
        out.push(f);
        cur = c.folders.get(f).and_then(|x| x.parent.as_ref());
    }
    out
}

/// Whether folder `f` is `top` or lies below it.
fn folder_within(c: &TenantConfig, f: &FolderId, top: &str) -> bool {
    c.folder_is_under(f, top)
}

/// §2 step 1: the principals of person `u`.
fn principals(c: &TenantConfig, u: &Person) -> Vec<Subject> {
    let mut out = vec![Subject::Person(u.id.clone())];
    for g in c.groups.values() {
        if g.members.contains(&u.id) {
            out.push(Subject::Group(g.id.clone()));
        }
    }
    out.push(Subject::Everyone);
    out
}

/// §2: may person `u` do `b` on `node` by its ACEs alone?
/// `Ok(())`, or `Err(ExplicitDeny | NoGrant)`.
fn object_permission(c: &TenantConfig, u: &Person, node: Node<'_>, b: Perm) -> Result<(), Reason> {
    let own = node.target();
    let chain = ancestors(c, node);
    let mut denied = false;
    let mut allowed = false;
    for p in principals(c, u) {
        // Step 2: the entry on the node itself, else the nearest propagating one above.
        let entry = c.aces.get(&(own.clone(), p.clone())).or_else(|| {
            chain.iter().filter_map(|f| c.aces.get(&(Target::Folder((*f).clone()), p.clone()))).find(|a| a.propagate)
        });
        if let Some(a) = entry {
            denied |= a.deny.contains(b);
            allowed |= a.allow.contains(b);
        }
    }
    if denied {
        Err(Reason::ExplicitDeny)
    } else if allowed {
        Ok(())
    } else {
        Err(Reason::NoGrant)
    }
}

/// The canonical name of privilege `name` (a name or an alias) of `cat`.
fn canonical(cat: &Catalog, name: &str) -> Option<String> {
    cat.privilege(name).map(|p| p.name.clone())
}

/// Where a person's privileges in an application come from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    /// A legacy annex role decided; the name of the matching template, if any.
    Legacy(Option<String>),
    /// The readable assigned roles.
    Roles,
    /// The `open_when_unconfigured` rule.
    Open,
}

/// A person's privileges in one application, before and after pruning.
#[derive(Debug, Clone)]
struct Privileges {
    source: Source,
    /// Granted, before dependency pruning (canonical names).
    granted: BTreeSet<String>,
    /// Effective (canonical names).
    effective: BTreeSet<String>,
    /// Primary role name.
    primary: Option<String>,
}

/// Whether role `r` is assigned to `u`, directly or through one of its groups.
fn assigned(c: &TenantConfig, u: &Person, r: &Role) -> bool {
    r.members.persons.contains(&u.id)
        || r.members.groups.iter().any(|g| c.groups.get(g).is_some_and(|g| g.members.contains(&u.id)))
}

/// The canonical privileges of application `cat` that role `r` holds.
fn role_privileges(cat: &Catalog, r: &Role) -> BTreeSet<String> {
    r.privileges.get(&cat.name).map(|ps| ps.iter().filter_map(|p| canonical(cat, p)).collect()).unwrap_or_default()
}

/// §3: the privileges of person `u` in application `cat`.
fn privileges(c: &TenantConfig, u: &Person, cat: &Catalog) -> Privileges {
    let (source, granted, primary) = granted_privileges(c, u, cat);
    // Rule 4: drop privileges whose requirements are not all effective, until nothing changes.
    let mut effective = granted.clone();
    loop {
        let unmet: Vec<String> = effective
            .iter()
            .filter(|p| {
                cat.privilege(p).is_some_and(|def| {
                    def.requires.iter().any(|r| canonical(cat, r).is_none_or(|r| !effective.contains(&r)))
                })
            })
            .cloned()
            .collect();
        if unmet.is_empty() {
            break;
        }
        for p in unmet {
            effective.remove(&p);
        }
    }
    Privileges { source, granted, effective, primary }
}

/// §3 rules 1–3 and 5: the granted privileges (before pruning), their source
/// and the primary role.
fn granted_privileges(c: &TenantConfig, u: &Person, cat: &Catalog) -> (Source, BTreeSet<String>, Option<String>) {
    // Rule 1: the first legacy annex section with a `role` option decides alone.
    for section in &cat.legacy_annex_sections {
        let Some(role) = u.annex.get(section).and_then(|opts| opts.get("role")) else { continue };
        let template = cat.roles.iter().find(|t| t.legacy_name.as_deref() == Some(role.as_str()));
        let granted =
            template.map(|t| t.privileges.iter().filter_map(|p| canonical(cat, p)).collect()).unwrap_or_default();
        let name = template.map(|t| t.name.clone());
        return (Source::Legacy(name.clone()), granted, name);
    }
    // Rule 2: readable assigned roles; rule 3: configured or not.
    let mut configured = false;
    let mut granted = BTreeSet::new();
    let mut applied: Vec<(&Role, usize)> = Vec::new();
    for r in c.roles.values() {
        if !assigned(c, u, r) {
            continue;
        }
        let ps = role_privileges(cat, r);
        if ps.is_empty() {
            continue;
        }
        configured = true;
        if object_permission(c, u, Node::Role(r), Perm::Read).is_ok() {
            applied.push((r, ps.len()));
            granted.extend(ps);
        }
    }
    if cat.open_when_unconfigured && !configured {
        let all = cat.privileges.iter().map(|p| p.name.clone()).collect();
        return (Source::Open, all, None);
    }
    // Rule 5: the primary role: most access, ties by rank order, then name.
    let rank = |r: &Role| cat.role_rank.iter().position(|n| *n == r.name);
    applied.sort_by(|(a, na), (b, nb)| {
        nb.cmp(na)
            .then_with(|| match (rank(a), rank(b)) {
                (Some(x), Some(y)) => x.cmp(&y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            })
            .then_with(|| a.name.cmp(&b.name))
    });
    let primary = applied.first().map(|(r, _)| r.name.clone());
    (Source::Roles, granted, primary)
}

/// The person `id`, enabled, or why not.
fn subject<'a>(c: &'a TenantConfig, id: &str) -> Result<&'a Person, Reason> {
    let u = c.persons.get(id).ok_or(Reason::UnknownSubject)?;
    if !u.enabled {
        return Err(Reason::DisabledSubject);
    }
    Ok(u)
}

/// SPEC §4: the reason of the decision on `req` (allowed iff `reason.is_allowed()`).
pub fn check(c: &TenantConfig, req: &CheckRequest<'_>) -> Reason {
    match check_inner(c, req) {
        Ok(r) | Err(r) => r,
    }
}

fn check_inner(c: &TenantConfig, req: &CheckRequest<'_>) -> Result<Reason, Reason> {
    // Malformed requests.
    if req.privilege.is_some() && req.application.is_none() {
        return Err(Reason::InvalidRequest);
    }
    if req.object.is_none() && req.privilege.is_none() {
        return Err(Reason::InvalidRequest);
    }
    if req.property.is_some() && req.object.is_none() {
        return Err(Reason::InvalidRequest);
    }
    // Part 1: subject, tenant, object; then the application and privilege named.
    let u = subject(c, req.subject)?;
    let node = match req.object {
        Some(o) => {
            if o.tenant.is_some_and(|t| t != c.id.as_str()) {
                return Err(Reason::CrossTenant);
            }
            Some(resolve(c, o.kind, o.id).ok_or(Reason::UnknownObject)?)
        }
        None => None,
    };
    let cat = match req.application {
        Some(a) => Some(c.catalogs.get(a).ok_or(Reason::UnknownApplication)?),
        None => None,
    };
    let asked = match (req.privilege, cat) {
        (Some(p), Some(cat)) => Some(cat.privilege(p).ok_or(Reason::UnknownPrivilege)?),
        _ => None,
    };
    let b = req.permission.or_else(|| asked.and_then(|p| p.permission)).unwrap_or(Perm::Read);
    let privs = cat.map(|cat| privileges(c, u, cat));
    let holds = |name: &str| -> bool {
        match (cat, &privs) {
            (Some(cat), Some(privs)) => canonical(cat, name).is_some_and(|n| privs.effective.contains(&n)),
            _ => false,
        }
    };
    let mut consulted = false;

    if let Some(node) = node {
        // Part 2: partitions.
        let parts = node.partitions();
        if !parts.is_empty() && !parts.iter().any(|p| c.partitions.get(*p).is_some_and(|p| p.members.contains(&u.id))) {
            return Err(Reason::Partition);
        }
        // Part 3: object permission (§2).
        object_permission(c, u, node, b)?;
        if let Some(cat) = cat {
            // Part 4: type guard.
            if let Some(g) = cat.type_guards.iter().find(|g| g.kind == node.kind() && g.permission == b) {
                consulted = true;
                if !holds(&g.privilege) {
                    return Err(Reason::MissingPrivilege);
                }
            }
            // Part 5: property guard.
            if let Some(f) = req.property {
                if let Some(g) =
                    cat.property_guards.iter().find(|g| g.kind == node.kind() && g.property == f && g.access == b)
                {
                    consulted = true;
                    if !holds(&g.privilege) {
                        return Err(Reason::MissingPrivilege);
                    }
                }
            }
        }
    }
    // Part 6: the privilege asked.
    if let (Some(p), Some(privs)) = (asked, &privs) {
        consulted = true;
        if !privs.effective.contains(&p.name) {
            return Err(if privs.granted.contains(&p.name) {
                Reason::UnmetDependency
            } else {
                Reason::MissingPrivilege
            });
        }
    }
    // Part 7: restricted mode.
    if let Some(node) = node {
        if c.restricted_mode && matches!(b, Perm::Create | Perm::Change | Perm::Delete) {
            let restricted = match cat {
                Some(cat) => cat.restricted_types.iter().any(|t| t == node.kind()),
                None => c.catalogs.values().any(|cat| cat.restricted_types.iter().any(|t| t == node.kind())),
            };
            if restricted {
                return Err(Reason::RestrictedMode);
            }
        }
    }
    if consulted && privs.is_some_and(|p| p.source == Source::Open) {
        Ok(Reason::OpenWhenUnconfigured)
    } else {
        Ok(Reason::Allowed)
    }
}

/// SPEC §3: the canonical names of the effective privileges of `person` in `app`.
pub fn effective_privileges(c: &TenantConfig, person: &str, app: &str) -> Result<BTreeSet<String>, Reason> {
    let u = subject(c, person)?;
    let cat = c.catalogs.get(app).ok_or(Reason::UnknownApplication)?;
    Ok(privileges(c, u, cat).effective)
}

/// SPEC §3 rule 5: the primary role of `person` in `app` (`None` also when the
/// person or the application is unknown or the person disabled).
pub fn primary_role(c: &TenantConfig, person: &str, app: &str) -> Option<String> {
    let u = subject(c, person).ok()?;
    let cat = c.catalogs.get(app)?;
    privileges(c, u, cat).primary
}

/// SPEC §4.1: the ids of every object of `req.kind` (under `req.folder`) on which
/// the check of `req.permission` is allowed, sorted by id. `after` and `limit`
/// are ignored.
pub fn list_visible(c: &TenantConfig, req: &ListRequest<'_>) -> Result<Vec<String>, Reason> {
    subject(c, req.subject)?;
    if let Some(a) = req.application {
        if !c.catalogs.contains_key(a) {
            return Err(Reason::UnknownApplication);
        }
    }
    if let Some(f) = req.folder {
        if !c.folders.contains_key(f) {
            return Err(Reason::UnknownObject);
        }
    }
    let mut out: Vec<String> = nodes_of_kind(c, req.kind)
        .into_iter()
        .filter(|n| req.folder.is_none_or(|top| folder_within(c, n.scope_folder(), top)))
        .filter(|n| {
            let q = CheckRequest {
                subject: req.subject,
                application: req.application,
                permission: Some(req.permission),
                object: Some(super::types::ObjectRef { kind: req.kind, id: n.id(), tenant: None }),
                privilege: None,
                property: None,
            };
            check(c, &q).is_allowed()
        })
        .map(|n| n.id().to_owned())
        .collect();
    out.sort();
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::engine::types::ObjectRef;
    use crate::model::*;
    use std::collections::BTreeMap;

    /// A tenant `t` with a root folder and the given mutations.
    fn tenant(muts: Vec<Mutation>) -> TenantConfig {
        let mut batch = vec![
            Mutation::CreateTenant { name: "T".into(), presets: vec![], defaults: false },
            Mutation::PutFolder(Folder { id: FolderId("root".into()), name: "root".into(), parent: None }),
        ];
        batch.extend(muts);
        TenantConfig::empty(TenantId("t".into())).apply_batch(&batch).unwrap()
    }

    fn folder(id: &str, parent: &str) -> Mutation {
        Mutation::PutFolder(Folder { id: FolderId(id.into()), name: id.into(), parent: Some(FolderId(parent.into())) })
    }
    fn person(id: &str) -> Mutation {
        Mutation::PutPerson(Person {
            id: PersonId(id.into()),
            username: id.into(),
            enabled: true,
            folder: FolderId("root".into()),
            annex: BTreeMap::new(),
            properties: BTreeMap::new(),
        })
    }
    fn group(id: &str, members: &[&str]) -> Mutation {
        Mutation::PutGroup(AccessGroup {
            id: GroupId(id.into()),
            name: id.into(),
            folder: FolderId("root".into()),
            members: members.iter().map(|m| PersonId((*m).into())).collect(),
        })
    }
    fn object(kind: &str, id: &str, folder: &str) -> Mutation {
        Mutation::PutObject(Object {
            kind: kind.into(),
            id: ObjectId(id.into()),
            name: id.into(),
            folder: FolderId(folder.into()),
            partitions: Default::default(),
            properties: Default::default(),
        })
    }
    fn perms(ps: &[Perm]) -> PermSet {
        ps.iter().copied().collect()
    }
    fn ace(target: Target, subject: Subject, allow: &[Perm], deny: &[Perm], propagate: bool) -> Mutation {
        Mutation::PutAce(Ace { target, subject, allow: perms(allow), deny: perms(deny), propagate })
    }
    fn on_folder(id: &str) -> Target {
        Target::Folder(FolderId(id.into()))
    }
    fn on_object(kind: &str, id: &str) -> Target {
        Target::Object(ObjectKey { kind: kind.into(), id: ObjectId(id.into()) })
    }
    fn to_person(id: &str) -> Subject {
        Subject::Person(PersonId(id.into()))
    }
    fn to_group(id: &str) -> Subject {
        Subject::Group(GroupId(id.into()))
    }
    fn priv_def(name: &str, requires: &[&str]) -> PrivilegeDef {
        PrivilegeDef {
            name: name.into(),
            description: String::new(),
            requires: requires.iter().map(|r| (*r).to_owned()).collect(),
            aliases: vec![],
            permission: None,
        }
    }
    fn catalog(name: &str, privileges: Vec<PrivilegeDef>) -> Catalog {
        Catalog {
            name: name.into(),
            description: String::new(),
            name_pattern: None,
            privileges,
            type_guards: vec![],
            property_guards: vec![],
            open_when_unconfigured: false,
            legacy_annex_sections: vec![],
            restricted_types: vec![],
            role_rank: vec![],
            roles: vec![],
        }
    }
    fn role(id: &str, app: &str, privs: &[&str], persons: &[&str], groups: &[&str]) -> Mutation {
        let mut privileges = BTreeMap::new();
        privileges.insert(app.to_owned(), privs.iter().map(|p| (*p).to_owned()).collect());
        Mutation::PutRole(Role {
            id: RoleId(id.into()),
            name: id.into(),
            folder: FolderId("root".into()),
            privileges,
            members: RoleMembers {
                persons: persons.iter().map(|p| PersonId((*p).into())).collect(),
                groups: groups.iter().map(|g| GroupId((*g).into())).collect(),
            },
        })
    }
    /// Everyone may Read everything (roles included), propagating from the root.
    fn everyone_reads() -> Mutation {
        ace(on_folder("root"), Subject::Everyone, &[Perm::Read], &[], true)
    }

    fn read<'a>(subject: &'a str, kind: &'a str, id: &'a str) -> CheckRequest<'a> {
        CheckRequest { subject, object: Some(ObjectRef { kind, id, tenant: None }), ..Default::default() }
    }
    fn with_perm(mut r: CheckRequest<'_>, b: Perm) -> CheckRequest<'_> {
        r.permission = Some(b);
        r
    }
    fn privilege<'a>(subject: &'a str, app: &'a str, p: &'a str) -> CheckRequest<'a> {
        CheckRequest { subject, application: Some(app), privilege: Some(p), ..Default::default() }
    }
    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn deny_wins_over_a_group_grant() {
        let c = tenant(vec![
            person("u"),
            group("ga", &["u"]),
            group("gb", &["u"]),
            object("Skill", "m", "root"),
            object("Script", "s", "root"),
            ace(on_folder("root"), to_group("ga"), &[Perm::Read], &[], true),
            ace(on_folder("root"), to_group("gb"), &[], &[Perm::Read], false),
            ace(on_object("Skill", "m"), to_group("gb"), &[], &[Perm::Read], false),
        ]);
        assert_eq!(check(&c, &read("u", "Skill", "m")), Reason::ExplicitDeny);
        // gb's folder deny does not propagate: the Script keeps ga's grant.
        assert_eq!(check(&c, &read("u", "Script", "s")), Reason::Allowed);
        // On the folder itself the non-propagating deny counts.
        assert_eq!(check(&c, &read("u", "Folder", "root")), Reason::ExplicitDeny);
        assert_eq!(check(&c, &with_perm(read("u", "Skill", "m"), Perm::Change)), Reason::NoGrant);
    }

    #[test]
    fn the_nearest_propagating_ancestor_decides() {
        let mut muts = vec![
            person("u"),
            folder("a", "root"),
            folder("b", "a"),
            object("Script", "s", "b"),
            ace(on_folder("root"), Subject::Everyone, &[Perm::Read], &[], true),
            ace(on_folder("a"), Subject::Everyone, &[], &[Perm::Read], false),
        ];
        let c = tenant(muts.clone());
        // a's entry does not propagate: the root's does.
        assert_eq!(check(&c, &read("u", "Script", "s")), Reason::Allowed);
        assert_eq!(check(&c, &read("u", "Folder", "b")), Reason::Allowed);
        assert_eq!(check(&c, &read("u", "Folder", "a")), Reason::ExplicitDeny);
        // Once it propagates, the nearer one wins.
        muts.push(ace(on_folder("a"), Subject::Everyone, &[Perm::Change], &[], true));
        let c = tenant(muts.clone());
        assert_eq!(check(&c, &read("u", "Script", "s")), Reason::NoGrant);
        assert_eq!(check(&c, &with_perm(read("u", "Script", "s"), Perm::Change)), Reason::Allowed);
        // A nearer non-propagating entry does not hide it.
        muts.push(ace(on_folder("b"), Subject::Everyone, &[Perm::Read], &[], false));
        let c = tenant(muts);
        assert_eq!(check(&c, &read("u", "Script", "s")), Reason::NoGrant);
        assert_eq!(check(&c, &read("u", "Folder", "b")), Reason::Allowed);
    }

    #[test]
    fn an_object_entry_overrides_the_folder_entry_of_that_principal_only() {
        let c = tenant(vec![
            person("u"),
            group("g", &["u"]),
            object("Script", "s", "root"),
            ace(on_folder("root"), to_group("g"), &[Perm::Read, Perm::Change], &[], true),
            ace(on_object("Script", "s"), to_group("g"), &[Perm::Change], &[], false),
        ]);
        assert_eq!(check(&c, &read("u", "Script", "s")), Reason::NoGrant);
        assert_eq!(check(&c, &with_perm(read("u", "Script", "s"), Perm::Change)), Reason::Allowed);
        // Another principal's inherited grant still counts.
        let c2 = tenant(vec![
            person("u"),
            group("g", &["u"]),
            object("Script", "s", "root"),
            ace(on_folder("root"), to_group("g"), &[Perm::Read], &[], true),
            ace(on_folder("root"), to_person("u"), &[Perm::Read], &[], true),
            ace(on_object("Script", "s"), to_group("g"), &[], &[], false),
        ]);
        assert_eq!(check(&c2, &read("u", "Script", "s")), Reason::Allowed);
    }

    fn callback() -> Catalog {
        let mut cat = catalog("CB", vec![priv_def("view", &[]), priv_def("edit", &["view"]), priv_def("admin", &[])]);
        cat.legacy_annex_sections = vec!["ges".into(), "gms".into()];
        cat.open_when_unconfigured = true;
        cat.roles = vec![
            RoleTemplate {
                name: "Callback Administrator".into(),
                legacy_name: Some("Administrator".into()),
                description: String::new(),
                privileges: vec!["view".into(), "edit".into(), "admin".into()],
            },
            RoleTemplate {
                name: "Callback Monitor".into(),
                legacy_name: Some("Monitor".into()),
                description: String::new(),
                privileges: vec!["view".into()],
            },
        ];
        cat
    }

    fn with_annex(id: &str, section: &str, value: &str) -> Mutation {
        let Mutation::PutPerson(mut p) = person(id) else { unreachable!() };
        let mut opts = BTreeMap::new();
        opts.insert("role".to_owned(), value.to_owned());
        p.annex.insert(section.to_owned(), opts);
        Mutation::PutPerson(p)
    }

    #[test]
    fn a_legacy_annex_role_overrides_roles() {
        let mut muts = vec![
            Mutation::PutCatalog(callback()),
            everyone_reads(),
            with_annex("u", "gms", "Administrator"),
            role("mon", "CB", &["view"], &["u"], &[]),
        ];
        let c = tenant(muts.clone());
        assert_eq!(effective_privileges(&c, "u", "CB"), Ok(set(&["view", "edit", "admin"])));
        assert_eq!(primary_role(&c, "u", "CB").as_deref(), Some("Callback Administrator"));
        assert_eq!(check(&c, &privilege("u", "CB", "admin")), Reason::Allowed);
        // An unknown legacy name grants nothing, and roles still do not count.
        muts[2] = with_annex("u", "ges", "Nobody");
        let c = tenant(muts.clone());
        assert_eq!(effective_privileges(&c, "u", "CB"), Ok(set(&[])));
        assert_eq!(primary_role(&c, "u", "CB"), None);
        assert_eq!(check(&c, &privilege("u", "CB", "view")), Reason::MissingPrivilege);
        // Without the annex the roles apply.
        muts[2] = person("u");
        let c = tenant(muts);
        assert_eq!(effective_privileges(&c, "u", "CB"), Ok(set(&["view"])));
        assert_eq!(primary_role(&c, "u", "CB").as_deref(), Some("mon"));
    }

    #[test]
    fn open_when_unconfigured_only_for_unconfigured_persons() {
        let muts = vec![
            Mutation::PutCatalog(callback()),
            Mutation::PutCatalog(catalog("Other", vec![priv_def("x", &[])])),
            everyone_reads(),
            person("free"),
            person("conf"),
            role("mon", "CB", &["view"], &["conf"], &[]),
            role("other", "Other", &["x"], &["free"], &[]),
        ];
        let c = tenant(muts);
        assert_eq!(effective_privileges(&c, "free", "CB"), Ok(set(&["view", "edit", "admin"])));
        assert_eq!(check(&c, &privilege("free", "CB", "edit")), Reason::OpenWhenUnconfigured);
        // Without a privilege consulted the rule is not the reason.
        assert_eq!(
            check(&c, &CheckRequest { application: Some("CB"), ..read("free", "Folder", "root") }),
            Reason::Allowed
        );
        assert_eq!(effective_privileges(&c, "conf", "CB"), Ok(set(&["view"])));
        assert_eq!(check(&c, &privilege("conf", "CB", "edit")), Reason::MissingPrivilege);
        assert_eq!(check(&c, &privilege("conf", "CB", "view")), Reason::Allowed);
        // Other does not opt in.
        assert_eq!(effective_privileges(&c, "conf", "Other"), Ok(set(&[])));
    }

    #[test]
    fn an_unreadable_role_does_not_apply_and_still_configures() {
        let c = tenant(vec![
            Mutation::PutCatalog(callback()),
            person("u"),
            group("g", &["u"]),
            role("mon", "CB", &["view"], &[], &["g"]),
            ace(on_folder("root"), Subject::Everyone, &[Perm::Read], &[], true),
            ace(Target::Role(RoleId("mon".into())), to_person("u"), &[], &[Perm::Read], false),
        ]);
        assert_eq!(effective_privileges(&c, "u", "CB"), Ok(set(&[])));
        assert_eq!(primary_role(&c, "u", "CB"), None);
        assert_eq!(check(&c, &privilege("u", "CB", "view")), Reason::MissingPrivilege);
    }

    #[test]
    fn dependency_pruning_is_transitive() {
        let mut muts = vec![
            Mutation::PutCatalog(catalog("W", vec![priv_def("c", &[]), priv_def("b", &["c"]), priv_def("a", &["b"])])),
            everyone_reads(),
            person("u"),
            role("r", "W", &["a", "b"], &["u"], &[]),
        ];
        let c = tenant(muts.clone());
        assert_eq!(effective_privileges(&c, "u", "W"), Ok(set(&[])));
        assert_eq!(check(&c, &privilege("u", "W", "a")), Reason::UnmetDependency);
        assert_eq!(check(&c, &privilege("u", "W", "c")), Reason::MissingPrivilege);
        muts.push(role("r2", "W", &["c"], &["u"], &[]));
        let c = tenant(muts);
        assert_eq!(effective_privileges(&c, "u", "W"), Ok(set(&["a", "b", "c"])));
        assert_eq!(check(&c, &privilege("u", "W", "a")), Reason::Allowed);
    }

    #[test]
    fn aliases_map_to_canonical_names() {
        let mut cat = catalog("W", vec![priv_def("c", &[]), priv_def("b", &["C2"])]);
        cat.privileges[0].aliases = vec!["C2".into()];
        let c = tenant(vec![
            Mutation::PutCatalog(cat),
            everyone_reads(),
            person("u"),
            role("r", "W", &["C2", "b"], &["u"], &[]),
        ]);
        assert_eq!(effective_privileges(&c, "u", "W"), Ok(set(&["b", "c"])));
        assert_eq!(check(&c, &privilege("u", "W", "C2")), Reason::Allowed);
    }

    #[test]
    fn check_order_of_failures() {
        let mut cat = catalog("D", vec![priv_def("edit", &[]), priv_def("phone", &[])]);
        cat.privileges[1].permission = Some(Perm::Execute);
        cat.type_guards = vec![TypeGuard { kind: "App".into(), permission: Perm::Change, privilege: "edit".into() }];
        cat.property_guards = vec![PropertyGuard {
            kind: "App".into(),
            property: "Name".into(),
            access: Perm::Read,
            privilege: "edit".into(),
        }];
        cat.restricted_types = vec!["App".into()];
        let mut muts = vec![
            Mutation::PutCatalog(cat),
            person("u"),
            Mutation::PutPartition(Partition {
                id: PartitionId("p1".into()),
                name: "p1".into(),
                members: [PersonId("u".into())].into_iter().collect(),
            }),
            Mutation::PutPartition(Partition {
                id: PartitionId("p2".into()),
                name: "p2".into(),
                members: Default::default(),
            }),
            object("App", "a", "root"),
            object("App", "hidden", "root"),
            object("Grammar", "g", "root"),
            ace(on_folder("root"), to_person("u"), &[Perm::Read, Perm::Change, Perm::Execute], &[], true),
            role("r", "D", &["phone"], &["u"], &[]),
            Mutation::SetRestrictedMode { on: true },
        ];
        if let Mutation::PutObject(o) = &mut muts[5] {
            o.partitions = [PartitionId("p2".into())].into_iter().collect();
        }
        if let Mutation::PutObject(o) = &mut muts[4] {
            o.partitions = [PartitionId("p1".into()), PartitionId("p2".into())].into_iter().collect();
        }
        let c = tenant(muts);
        let base = read("u", "App", "a");
        assert_eq!(check(&c, &CheckRequest { subject: "u", ..Default::default() }), Reason::InvalidRequest);
        assert_eq!(check(&c, &CheckRequest { privilege: Some("edit"), ..base }), Reason::InvalidRequest);
        assert_eq!(
            check(
                &c,
                &CheckRequest {
                    subject: "u",
                    application: Some("D"),
                    property: Some("Name"),
                    privilege: Some("edit"),
                    ..Default::default()
                }
            ),
            Reason::InvalidRequest
        );
        assert_eq!(check(&c, &read("nobody", "App", "a")), Reason::UnknownSubject);
        let other = CheckRequest { object: Some(ObjectRef { kind: "App", id: "a", tenant: Some("x") }), ..base };
        assert_eq!(check(&c, &other), Reason::CrossTenant);
        let same = CheckRequest { object: Some(ObjectRef { kind: "App", id: "a", tenant: Some("t") }), ..base };
        assert_eq!(check(&c, &same), Reason::Allowed);
        assert_eq!(check(&c, &read("u", "App", "zz")), Reason::UnknownObject);
        assert_eq!(check(&c, &read("u", "Script", "a")), Reason::UnknownObject);
        assert_eq!(check(&c, &CheckRequest { application: Some("Z"), ..base }), Reason::UnknownApplication);
        assert_eq!(
            check(&c, &CheckRequest { application: Some("D"), privilege: Some("zz"), ..base }),
            Reason::UnknownPrivilege
        );
        assert_eq!(check(&c, &read("u", "App", "hidden")), Reason::Partition);
        assert_eq!(check(&c, &with_perm(base, Perm::Delete)), Reason::NoGrant);
        let app = CheckRequest { application: Some("D"), ..base };
        assert_eq!(check(&c, &app), Reason::Allowed);
        assert_eq!(check(&c, &with_perm(app, Perm::Change)), Reason::MissingPrivilege);
        assert_eq!(check(&c, &CheckRequest { property: Some("Name"), ..app }), Reason::MissingPrivilege);
        assert_eq!(check(&c, &CheckRequest { property: Some("Other"), ..app }), Reason::Allowed);
        // The privilege's declared permission is the default: Execute is granted.
        assert_eq!(check(&c, &CheckRequest { privilege: Some("phone"), ..app }), Reason::Allowed);
        // Restricted mode: without an application every catalog's types count.
        assert_eq!(check(&c, &with_perm(base, Perm::Change)), Reason::RestrictedMode);
        assert_eq!(check(&c, &with_perm(read("u", "Script", "zz"), Perm::Change)), Reason::UnknownObject);
        assert_eq!(check(&c, &with_perm(read("u", "Grammar", "g"), Perm::Change)), Reason::Allowed);
    }

    #[test]
    fn primary_role_by_size_then_rank_then_name() {
        let mut cat = catalog("C", vec![priv_def("a", &[]), priv_def("b", &[]), priv_def("c", &[])]);
        cat.role_rank = vec!["small".into(), "mid2".into()];
        let mut muts = vec![
            Mutation::PutCatalog(cat),
            everyone_reads(),
            person("u"),
            role("big", "C", &["a", "b", "c"], &["u"], &[]),
            role("mid2", "C", &["a", "b"], &["u"], &[]),
            role("mid1", "C", &["b", "c"], &["u"], &[]),
            role("small", "C", &["a"], &["u"], &[]),
        ];
        // Most access wins over rank.
        let c = tenant(muts.clone());
        assert_eq!(primary_role(&c, "u", "C").as_deref(), Some("big"));
        // A tie in access goes to rank order (mid2 is ranked, mid1 is not).
        muts.remove(3);
        let c = tenant(muts.clone());
        assert_eq!(primary_role(&c, "u", "C").as_deref(), Some("mid2"));
        // A tie with neither ranked goes by name.
        muts.remove(3);
        muts.push(role("mid0", "C", &["a", "c"], &["u"], &[]));
        let c = tenant(muts);
        assert_eq!(primary_role(&c, "u", "C").as_deref(), Some("mid0"));
    }

    #[test]
    fn list_visible_filters_by_folder_and_check() {
        let c = tenant(vec![
            person("u"),
            folder("a", "root"),
            folder("b", "a"),
            object("Script", "s1", "root"),
            object("Script", "s2", "a"),
            object("Script", "s3", "b"),
            object("Skill", "m", "b"),
            ace(on_folder("a"), to_person("u"), &[Perm::Read], &[], true),
            ace(on_object("Script", "s3"), to_person("u"), &[], &[Perm::Read], false),
        ]);
        let req = |kind, folder| ListRequest {
            subject: "u",
            kind,
            folder,
            permission: Perm::Read,
            application: None,
            after: None,
            limit: 10,
        };
        assert_eq!(list_visible(&c, &req("Script", None)), Ok(vec!["s2".to_owned()]));
        assert_eq!(list_visible(&c, &req("Skill", Some("a"))), Ok(vec!["m".to_owned()]));
        assert_eq!(list_visible(&c, &req("Folder", None)), Ok(vec!["a".to_owned(), "b".to_owned()]));
        assert_eq!(list_visible(&c, &req("Folder", Some("b"))), Ok(vec!["b".to_owned()]));
        assert_eq!(list_visible(&c, &req("Script", Some("root"))), Ok(vec!["s2".to_owned()]));
        assert_eq!(list_visible(&c, &req("Script", Some("zz"))), Err(Reason::UnknownObject));
        assert_eq!(list_visible(&c, &ListRequest { subject: "x", ..req("Script", None) }), Err(Reason::UnknownSubject));
        assert_eq!(
            list_visible(&c, &ListRequest { application: Some("Z"), ..req("Script", None) }),
            Err(Reason::UnknownApplication)
        );
    }

    #[test]
    fn a_disabled_person_is_refused() {
        let Mutation::PutPerson(mut p) = person("u") else { unreachable!() };
        p.enabled = false;
        let c = tenant(vec![Mutation::PutPerson(p), everyone_reads(), Mutation::PutCatalog(callback())]);
        assert_eq!(check(&c, &read("u", "Folder", "root")), Reason::DisabledSubject);
        assert_eq!(effective_privileges(&c, "u", "CB"), Err(Reason::DisabledSubject));
        assert_eq!(effective_privileges(&c, "x", "CB"), Err(Reason::UnknownSubject));
        assert_eq!(effective_privileges(&c, "u", "Z"), Err(Reason::DisabledSubject));
    }
}
