//! `ReadService`: the configuration read back, and the reverse questions.
//!
//! Reads answer from the tenant's current state like decisions do: entities
//! from its configuration, reverse lookups from its compiled view.
//! `ListSubjects` runs the very evaluation of `Check` once per person (the
//! request's parts looked up once, [`crate::engine::TenantView::allowed_subjects`]),
//! so its answer is by construction the set of persons `Check` allows;
//! `ListHolders` reads the same privilege rows `Check` reads. Paged answers
//! continue after the last key of the page before, from the very state the
//! first page was read from (or are refused when it is no longer kept).

use super::convert;
use super::page::{next_token, page_state};
use super::status::not_found;
use super::status::{ServiceError, ServiceResult};
use crate::engine::{CheckRequest, HolderSource, Reason};
use crate::model::{self, FolderId, GroupId, ObjectId, ObjectKey, PartitionId, PersonId, RoleId, TenantConfig};
use crate::proto::authzd::v1 as pb;
use crate::proto::authzd::v1::read_service_server::ReadService;
use crate::replica::{Replica, cpu};
use crate::snapshot::TenantState;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Default page size of the read listings.
pub const DEFAULT_PAGE_SIZE: usize = 100;
/// Largest page size of the read listings.
pub const MAX_PAGE_SIZE: usize = 1_000;

/// The read service of one replica.
#[derive(Debug, Clone)]
pub struct Reads {
    replica: Arc<Replica>,
}

impl Reads {
    /// A read service answering from `replica`.
    pub fn new(replica: Arc<Replica>) -> Self {
        Reads { replica }
    }

    /// The tenant's state once the revision asked is reached; for a
    /// continuation, the state its first page was read from ([`page_state`]).
    async fn state(&self, tenant: &str, at_least: u64, token: Option<&(u64, String)>) -> ServiceResult<TenantState> {
        if tenant.is_empty() {
            return Err(ServiceError::invalid("tenant", "must not be empty"));
        }
        page_state(&self.replica, tenant, at_least, token.map(|t| t.0)).await
    }
}

fn page_size(n: u32) -> usize {
    match n as usize {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    }
}

fn kind_of(v: i32) -> ServiceResult<pb::EntityKind> {
    match pb::EntityKind::try_from(v) {
        Ok(pb::EntityKind::Unspecified) => Err(ServiceError::invalid("kind", "must be set (ENTITY_KIND_PERSON, ...)")),
        Ok(k) => Ok(k),
        Err(_) => Err(ServiceError::invalid("kind", format!("`{v}` is not an EntityKind"))),
    }
}

/// What `kind` is called in messages.
fn kind_label(kind: pb::EntityKind) -> &'static str {
    match kind {
        pb::EntityKind::Person => "person",
        pb::EntityKind::AccessGroup => "access group",
        pb::EntityKind::Role => "role",
        pb::EntityKind::Folder => "folder",
        pb::EntityKind::Object => "object",
        pb::EntityKind::Partition => "partition",
        pb::EntityKind::Catalog => "application",
        pb::EntityKind::Unspecified => "entity",
    }
}

fn entity(kind: pb::entity::Kind) -> pb::Entity {
    pb::Entity { kind: Some(kind) }
}

fn entities<V>(v: Vec<&V>, f: impl Fn(&V) -> pb::entity::Kind) -> Vec<pb::Entity> {
    v.into_iter().map(|x| entity(f(x))).collect()
}

/// The entity `(kind, type, id)` of `c`, as sent.
fn get(c: &TenantConfig, kind: pb::EntityKind, ty: &str, id: &str) -> Option<pb::Entity> {
    use pb::entity::Kind as E;
    let id_s = || id.to_owned();
    Some(entity(match kind {
        pb::EntityKind::Person => E::Person(convert::person_pb(c.persons.get(&PersonId(id_s()))?.clone())),
        pb::EntityKind::AccessGroup => E::Group(convert::group_pb(c.groups.get(&GroupId(id_s()))?.clone())),
        pb::EntityKind::Role => E::Role(convert::role_pb(c.roles.get(&RoleId(id_s()))?.clone())),
        pb::EntityKind::Folder => E::Folder(convert::folder_pb(c.folders.get(&FolderId(id_s()))?.clone())),
        pb::EntityKind::Object => {
            let key = ObjectKey { kind: ty.to_owned(), id: ObjectId(id_s()) };
            E::Object(convert::object_pb(c.objects.get(&key)?.clone()))
        }
        pb::EntityKind::Partition => {
            E::Partition(convert::partition_pb(c.partitions.get(&PartitionId(id_s()))?.clone()))
        }
        pb::EntityKind::Catalog => E::Catalog(convert::catalog_pb(c.catalogs.get(id)?.clone())),
        pb::EntityKind::Unspecified => return None,
    }))
}

/// The folders a listing's folder filter admits: the folder itself, or with
/// `recursive` every folder below it too.
fn folder_scope(c: &TenantConfig, folder: &str, recursive: bool) -> ServiceResult<BTreeSet<FolderId>> {
    let root = FolderId(folder.to_owned());
    if !c.folders.contains_key(&root) {
        return Err(ServiceError::NotFound(format!("folder: unknown folder `{folder}` in tenant `{}`", c.id)));
    }
    let mut scope = BTreeSet::from([root.clone()]);
    if recursive {
        for id in c.folders.keys() {
            // Walk up (bounded by the tree's size: the tree is acyclic).
            let mut at = c.folders.get(id).and_then(|f| f.parent.as_ref());
            let mut steps = 0;
            while let Some(p) = at {
                if *p == root {
                    scope.insert(id.clone());
                    break;
                }
                steps += 1;
                if steps > c.folders.len() {
                    break;
                }
                at = c.folders.get(p).and_then(|f| f.parent.as_ref());
            }
        }
    }
    Ok(scope)
}

/// The filters of a `ListEntities` request.
struct Filter<'a> {
    scope: Option<BTreeSet<FolderId>>,
    /// For folders: the folder listed is not its own child.
    exclude: Option<FolderId>,
    prefix: &'a str,
}

impl Filter<'_> {
    fn keep(&self, name: &str, folder: Option<&FolderId>, id: Option<&FolderId>) -> bool {
        if !name.starts_with(self.prefix) {
            return false;
        }
        if self.exclude.is_some() && self.exclude.as_ref() == id {
            return false;
        }
        match &self.scope {
            None => true,
            Some(s) => folder.is_some_and(|f| s.contains(f)),
        }
    }
}

/// One page of `map` from `lower` on, until `until` says stop, of at most
/// `limit` kept values, and the key to continue after when more may follow.
fn page_of<K: Ord + Clone, V>(
    map: &BTreeMap<K, V>,
    lower: Bound<K>,
    until: impl Fn(&K) -> bool,
    keep: impl Fn(&V) -> bool,
    limit: usize,
) -> (Vec<&V>, Option<K>) {
    let mut out = Vec::new();
    let mut last: Option<&K> = None;
    for (k, v) in map.range((lower, Bound::Unbounded)).take_while(|(k, _)| !until(k)).filter(|(_, v)| keep(v)) {
        if out.len() == limit {
            return (out, last.cloned());
        }
        out.push(v);
        last = Some(k);
    }
    (out, None)
}

fn never<K>(_: &K) -> bool {
    false
}

fn after<K>(after: Option<&str>, key: impl FnOnce(String) -> K) -> Bound<K> {
    after.map_or(Bound::Unbounded, |a| Bound::Excluded(key(a.to_owned())))
}

/// The kind number that prefixes a `ListEntities` continuation key, so a
/// token from another kind's listing is refused.
fn token_key(kind: pb::EntityKind, key: &str) -> String {
    format!("{}|{key}", kind as i32)
}

fn token_error() -> ServiceError {
    ServiceError::invalid("page_token", "not a page token this listing returned; start again with an empty token")
}

/// The continuation key of a `ListEntities` token, checked against the kind.
fn untoken(kind: pb::EntityKind, token: Option<&(u64, String)>) -> ServiceResult<Option<&str>> {
    let Some((_, key)) = token else { return Ok(None) };
    let (k, rest) = key.split_once('|').ok_or_else(token_error)?;
    if k != (kind as i32).to_string() {
        return Err(token_error());
    }
    Ok(Some(rest))
}

/// `ListEntities` on one configuration.
fn list(
    c: &TenantConfig,
    req: &pb::ListEntitiesRequest,
    kind: pb::EntityKind,
    from: Option<&str>,
) -> ServiceResult<(Vec<pb::Entity>, Option<String>)> {
    use pb::entity::Kind as E;
    if kind != pb::EntityKind::Object && !req.r#type.is_empty() {
        return Err(ServiceError::invalid("type", "applies to ENTITY_KIND_OBJECT only"));
    }
    if req.recursive && req.folder.is_none() {
        return Err(ServiceError::invalid("recursive", "needs `folder`"));
    }
    if req.folder.is_some() && matches!(kind, pb::EntityKind::Partition | pb::EntityKind::Catalog) {
        return Err(ServiceError::invalid("folder", format!("{}s do not live in folders", kind_label(kind))));
    }
    let scope = req.folder.as_deref().map(|f| folder_scope(c, f, req.recursive)).transpose()?;
    let exclude = if kind == pb::EntityKind::Folder { req.folder.clone().map(FolderId) } else { None };
    let filter = Filter { scope, exclude, prefix: &req.name_prefix };
    let limit = page_size(req.page_size);
    Ok(match kind {
        pb::EntityKind::Person => {
            let keep = |p: &model::Person| filter.keep(&p.username, Some(&p.folder), None);
            let (v, next) = page_of(&c.persons, after(from, PersonId), never, keep, limit);
            (entities(v, |p: &model::Person| E::Person(convert::person_pb(p.clone()))), next.map(|k| k.0))
        }
        pb::EntityKind::AccessGroup => {
            let keep = |g: &model::AccessGroup| filter.keep(&g.name, Some(&g.folder), None);
            let (v, next) = page_of(&c.groups, after(from, GroupId), never, keep, limit);
            (entities(v, |g: &model::AccessGroup| E::Group(convert::group_pb(g.clone()))), next.map(|k| k.0))
        }
        pb::EntityKind::Role => {
            let keep = |r: &model::Role| filter.keep(&r.name, Some(&r.folder), None);
            let (v, next) = page_of(&c.roles, after(from, RoleId), never, keep, limit);
            (entities(v, |r: &model::Role| E::Role(convert::role_pb(r.clone()))), next.map(|k| k.0))
        }
        pb::EntityKind::Folder => {
            let keep = |f: &model::Folder| filter.keep(&f.name, f.parent.as_ref(), Some(&f.id));
            let (v, next) = page_of(&c.folders, after(from, FolderId), never, keep, limit);
            (entities(v, |f: &model::Folder| E::Folder(convert::folder_pb(f.clone()))), next.map(|k| k.0))
        }
        pb::EntityKind::Partition => {
            let keep = |p: &model::Partition| filter.keep(&p.name, None, None);
            let (v, next) = page_of(&c.partitions, after(from, PartitionId), never, keep, limit);
            (entities(v, |p: &model::Partition| E::Partition(convert::partition_pb(p.clone()))), next.map(|k| k.0))
        }
        pb::EntityKind::Catalog => {
            let keep = |k: &model::Catalog| filter.keep(&k.name, None, None);
            let (v, next) = page_of(&c.catalogs, after(from, |a| a), never, keep, limit);
            (entities(v, |k: &model::Catalog| E::Catalog(convert::catalog_pb(k.clone()))), next)
        }
        pb::EntityKind::Object => {
            let ty = req.r#type.as_str();
            // Objects continue after (type, id), written `type NUL id`.
            let lower = match from {
                Some(a) => {
                    let (t, id) = a.split_once('\0').ok_or_else(token_error)?;
                    Bound::Excluded(ObjectKey { kind: t.to_owned(), id: ObjectId(id.to_owned()) })
                }
                None if ty.is_empty() => Bound::Unbounded,
                None => Bound::Included(ObjectKey { kind: ty.to_owned(), id: ObjectId(String::new()) }),
            };
            let keep = |o: &model::Object| filter.keep(&o.name, Some(&o.folder), None);
            let (v, next) = page_of(&c.objects, lower, |k| !ty.is_empty() && k.kind != ty, keep, limit);
            let next = next.map(|k| format!("{}\0{}", k.kind, k.id.0));
            (entities(v, |o: &model::Object| E::Object(convert::object_pb(o.clone()))), next)
        }
        pb::EntityKind::Unspecified => return Err(ServiceError::invalid("kind", "must be set")),
    })
}

/// The engine node `(type, id)` of a target, and whether it exists in `c`.
fn target_node(c: &TenantConfig, t: &model::Target) -> (String, String, bool) {
    use model::Target as T;
    match t {
        T::Folder(id) => (model::types::FOLDER.to_owned(), id.0.clone(), c.folders.contains_key(id)),
        T::Person(id) => (model::types::PERSON.to_owned(), id.0.clone(), c.persons.contains_key(id)),
        T::Group(id) => (model::types::ACCESS_GROUP.to_owned(), id.0.clone(), c.groups.contains_key(id)),
        T::Role(id) => (model::types::ROLE.to_owned(), id.0.clone(), c.roles.contains_key(id)),
        T::Object(k) => (k.kind.clone(), k.id.0.clone(), c.objects.contains_key(k)),
    }
}

/// The error of a reverse lookup that cannot ask any person. (Malformed
/// questions never get here: `convert::check_parts` refuses them first.)
fn lookup_error(reason: Reason, tenant: &str, r: &CheckRequest<'_>) -> ServiceError {
    let object = r.object.map_or(String::new(), |o| format!("{} `{}`", o.kind, o.id));
    match reason {
        Reason::CrossTenant => ServiceError::invalid("object.tenant", format!("names another tenant than `{tenant}`")),
        Reason::UnknownObject => {
            ServiceError::NotFound(format!("object: unknown object {object} in tenant `{tenant}`"))
        }
        Reason::UnknownPrivilege => ServiceError::NotFound(format!(
            "privilege: unknown privilege `{}` in application `{}` of tenant `{tenant}`",
            r.privilege.unwrap_or_default(),
            r.application.unwrap_or_default()
        )),
        other => not_found(other, tenant, "", r.application.unwrap_or_default()),
    }
}

/// The holder of a privilege as sent: its roles with how it holds each
/// (directly, through which of its groups).
fn holder_pb(c: &TenantConfig, h: &crate::engine::Holder<'_>) -> pb::PrivilegeHolder {
    let person = PersonId(h.person.to_owned());
    let (source, legacy_section, legacy_role) = match h.source {
        HolderSource::Roles => (pb::PrivilegeSource::Roles, None, None),
        HolderSource::OpenWhenUnconfigured => (pb::PrivilegeSource::OpenWhenUnconfigured, None, None),
        HolderSource::LegacyAnnex { section, role } => {
            (pb::PrivilegeSource::LegacyAnnex, Some(section.to_owned()), Some(role.to_owned()))
        }
    };
    let roles = h
        .roles
        .iter()
        .map(|&(id, name)| {
            let role = c.roles.get(&RoleId(id.to_owned()));
            pb::RoleGrant {
                role: id.to_owned(),
                name: name.to_owned(),
                direct: role.is_some_and(|r| r.members.persons.contains(&person)),
                groups: role
                    .map(|r| {
                        r.members
                            .groups
                            .iter()
                            .filter(|g| c.groups.get(*g).is_some_and(|g| g.members.contains(&person)))
                            .map(|g| g.0.clone())
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        })
        .collect();
    pb::PrivilegeHolder { person: h.person.to_owned(), source: source as i32, roles, legacy_section, legacy_role }
}

#[tonic::async_trait]
impl ReadService for Reads {
    async fn get_entity(
        &self,
        request: Request<pb::GetEntityRequest>,
    ) -> Result<Response<pb::GetEntityResponse>, Status> {
        let req = request.into_inner();
        let kind = kind_of(req.kind)?;
        if kind == pb::EntityKind::Object && req.r#type.is_empty() {
            return Err(ServiceError::invalid("type", "must be set with ENTITY_KIND_OBJECT").into());
        }
        if kind != pb::EntityKind::Object && !req.r#type.is_empty() {
            return Err(ServiceError::invalid("type", "applies to ENTITY_KIND_OBJECT only").into());
        }
        if req.id.is_empty() {
            return Err(ServiceError::invalid("id", "must not be empty").into());
        }
        let state = self.state(&req.tenant, req.at_least_revision, None).await?;
        let Some(entity) = get(&state.config, kind, &req.r#type, &req.id) else {
            let what = if kind == pb::EntityKind::Object {
                format!("{} `{}`", req.r#type, req.id)
            } else {
                format!("{} `{}`", kind_label(kind), req.id)
            };
            return Err(ServiceError::NotFound(format!("id: unknown {what} in tenant `{}`", req.tenant)).into());
        };
        Ok(Response::new(pb::GetEntityResponse { entity: Some(entity), revision: state.view.revision() }))
    }

    async fn list_entities(
        &self,
        request: Request<pb::ListEntitiesRequest>,
    ) -> Result<Response<pb::ListEntitiesResponse>, Status> {
        let req = request.into_inner();
        let kind = kind_of(req.kind)?;
        let token = convert::decode_page_token(&req.page_token)?;
        let from = untoken(kind, token.as_ref())?;
        let state = self.state(&req.tenant, req.at_least_revision, token.as_ref()).await?;
        let revision = state.view.revision();
        let (entities, next) = list(&state.config, &req, kind, from)?;
        let next_page_token = next_token(&state, revision, next.map(|k| token_key(kind, &k)).as_deref());
        Ok(Response::new(pb::ListEntitiesResponse { entities, next_page_token, revision }))
    }

    async fn list_entries(
        &self,
        request: Request<pb::ListEntriesRequest>,
    ) -> Result<Response<pb::ListEntriesResponse>, Status> {
        let req = request.into_inner();
        let target = convert::target(req.target, "target")?;
        let state = self.state(&req.tenant, req.at_least_revision, None).await?;
        let c = &state.config;
        let (kind, id, exists) = target_node(c, &target);
        let effective = state.view.effective_entries(&kind, &id);
        let (true, Some(effective)) = (exists, effective) else {
            return Err(
                ServiceError::NotFound(format!("target: unknown {kind} `{id}` in tenant `{}`", req.tenant)).into()
            );
        };
        let entries = c
            .aces
            .range((target.clone(), model::Subject::Everyone)..)
            .take_while(|((t, _), _)| *t == target)
            .map(|(_, a)| convert::ace_pb(a.clone()))
            .collect();
        Ok(Response::new(pb::ListEntriesResponse {
            entries,
            effective: effective.iter().map(convert::matched_ace_pb).collect(),
            revision: state.view.revision(),
        }))
    }

    async fn list_subjects(
        &self,
        request: Request<pb::ListSubjectsRequest>,
    ) -> Result<Response<pb::ListSubjectsResponse>, Status> {
        let req = request.into_inner();
        let token = convert::decode_page_token(&req.page_token)?;
        if req.object.is_none() {
            return Err(ServiceError::invalid("object", "must be set").into());
        }
        let mut r = convert::check_parts(
            None,
            "",
            req.application.as_deref(),
            req.permission,
            req.object.as_ref(),
            req.privilege.as_deref(),
            req.property.as_deref(),
        )?;
        let state = self.state(&req.tenant, req.at_least_revision, token.as_ref()).await?;
        // A page asks every person (milliseconds on a large tenant): off the async workers.
        let answer = cpu(|| {
            let page = state
                .view
                .allowed_subjects(&r, token.as_ref().map(|(_, id)| id.as_str()), page_size(req.page_size))
                .map_err(|reason| lookup_error(reason, &req.tenant, &r))?;
            let subjects = page
                .items
                .iter()
                .map(|s| {
                    r.subject = s.person;
                    let (_, evidence) = convert::explained(&state, &r);
                    pb::AllowedSubject {
                        person: s.person.to_owned(),
                        reason: convert::reason(s.reason) as i32,
                        evidence: Some(evidence),
                    }
                })
                .collect();
            Ok::<_, ServiceError>(pb::ListSubjectsResponse {
                subjects,
                next_page_token: next_token(&state, page.revision, page.next_after),
                revision: page.revision,
            })
        })?;
        Ok(Response::new(answer))
    }

    async fn list_holders(
        &self,
        request: Request<pb::ListHoldersRequest>,
    ) -> Result<Response<pb::ListHoldersResponse>, Status> {
        let req = request.into_inner();
        let token = convert::decode_page_token(&req.page_token)?;
        if req.application.is_empty() {
            return Err(ServiceError::invalid("application", "must not be empty").into());
        }
        if req.privilege.is_empty() {
            return Err(ServiceError::invalid("privilege", "must not be empty").into());
        }
        let state = self.state(&req.tenant, req.at_least_revision, token.as_ref()).await?;
        let answer = cpu(|| {
            let page = state
                .view
                .privilege_holders(
                    &req.application,
                    &req.privilege,
                    token.as_ref().map(|(_, id)| id.as_str()),
                    page_size(req.page_size),
                )
                .map_err(|reason| {
                    let r = CheckRequest {
                        application: Some(&req.application),
                        privilege: Some(&req.privilege),
                        ..Default::default()
                    };
                    lookup_error(reason, &req.tenant, &r)
                })?;
            Ok::<_, ServiceError>(pb::ListHoldersResponse {
                holders: page.items.iter().map(|h| holder_pb(&state.config, h)).collect(),
                next_page_token: next_token(&state, page.revision, page.next_after),
                revision: page.revision,
                privilege: page.privilege.to_owned(),
            })
        })?;
        Ok(Response::new(answer))
    }
}
