//! Writes on behalf of a person (SPEC §6): a batch with an `actor` is accepted
//! only if the actor may make every change under the same model that decides
//! everything else.
//!
//! Each mutation needs, evaluated against the tenant's *current* view (the
//! state before the batch) in the application context `GenesysAdministrator`
//! when the tenant has that catalog, so its type guards apply ("this is how the
//! HR clerk edits persons but not skills"):
//!
//! | change | needs |
//! |---|---|
//! | create an entity (put of a new id) | `Create` on its folder, plus the guard privilege of (its type, Create), plus the Change guard of each guarded property it sets |
//! | change an entity (put of an existing id) | `Change` on it, with the property guard of each property whose value changes; `Create` on the new folder if it moves |
//! | move | `Change` on the object and `Create` on the destination folder |
//! | delete | `Delete` on it |
//! | group membership, role assignment | `Change` on the group / role |
//! | ACE put / delete | `ChangePermissions` on the target |
//! | tenant-wide (rename, restricted mode, catalogs, partitions) | `Change` on the tenant's root folder |
//!
//! Restricted mode applies as in decisions: creating, changing or deleting an
//! object of a type some catalog lists in `restricted_types` is refused while
//! the tenant is in restricted mode. Entities created earlier in the same
//! batch need no further permission to be changed in it; a folder created
//! earlier in the batch is judged by its nearest folder that exists now.
//!
//! A refusal names the mutation index, the object, the permission and the
//! reason code, e.g. ``mutations[1].put_object: actor `hr-clerk` may not Change
//! Skill `skill-english`: MISSING_PRIVILEGE (needs `Account Provisioning > Skills`
//! of `GenesysAdministrator`)``.

use crate::engine::{CheckRequest, ObjectRef, Reason, TenantView};
use crate::model::{
    Catalog, ErrorKind, FolderId, ModelError, ModelResult, Mutation, ObjectId, ObjectKey, Perm, Target, TenantConfig,
    folders, types,
};
use std::collections::{BTreeMap, HashSet};

/// The application whose type guards apply to administrative writes.
pub const ADMIN_APPLICATION: &str = "GenesysAdministrator";

/// One thing the actor must be allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Need {
    /// A permission on an existing object (optionally touching a property).
    On { perm: Perm, kind: String, id: String, property: Option<String> },
    /// Creating an object of `kind` in `folder`.
    Create { folder: String, kind: String },
    /// Holding a privilege of the admin application (a property guard at creation).
    Privilege { name: String, what: String },
}

/// The object type and id a target names in decisions.
fn target_ref(t: &Target) -> (&str, &str) {
    match t {
        Target::Folder(id) => (types::FOLDER, id.as_str()),
        Target::Person(id) => (types::PERSON, id.as_str()),
        Target::Group(id) => (types::ACCESS_GROUP, id.as_str()),
        Target::Role(id) => (types::ROLE, id.as_str()),
        Target::Object(k) => (k.kind.as_str(), k.id.as_str()),
    }
}

struct Ctx<'a> {
    config: &'a TenantConfig,
    view: &'a TenantView,
    next: &'a TenantConfig,
    app: Option<&'a Catalog>,
    actor: &'a str,
    restricted: HashSet<&'a str>,
    root: String,
}

impl Ctx<'_> {
    fn config(&self) -> &TenantConfig {
        self.config
    }

    fn exists(&self, t: &Target) -> bool {
        self.config().has_target(t)
    }

    /// The folder that decides a Create in `f`: `f` if it exists now, else its
    /// nearest ancestor (in the batch's result) that does.
    fn create_folder(&self, f: &FolderId) -> String {
        let mut cur = Some(f);
        for _ in 0..=self.next.folders.len() {
            let Some(id) = cur else { break };
            if self.config().folders.contains_key(id) {
                return id.0.clone();
            }
            cur = self.next.folders.get(id).and_then(|x| x.parent.as_ref());
        }
        self.root.clone()
    }

    /// The canonical guard privilege of (kind, perm) in the admin application.
    fn type_guard(&self, kind: &str, perm: Perm) -> Option<&str> {
        let cat = self.app?;
        let g = cat.type_guards.iter().find(|g| g.kind == kind && g.permission == perm)?;
        Some(cat.privilege(&g.privilege).map_or(g.privilege.as_str(), |p| p.name.as_str()))
    }

    /// The Change guard privileges of the properties of `kind`, by property.
    fn change_guards(&self, kind: &str) -> Vec<(&str, &str)> {
        self.app
            .map(|cat| {
                cat.property_guards
                    .iter()
                    .filter(|g| g.kind == kind && g.access == Perm::Change)
                    .map(|g| (g.property.as_str(), g.privilege.as_str()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn on(perm: Perm, t: &Target) -> Need {
        let (kind, id) = target_ref(t);
        Need::On { perm, kind: kind.to_owned(), id: id.to_owned(), property: None }
    }

    fn tenant_wide(&self) -> Vec<Need> {
        vec![Need::On { perm: Perm::Change, kind: types::FOLDER.into(), id: self.root.clone(), property: None }]
    }

    /// Needs of a put of an entity (`target`) living in `folder`, whose current
    /// folder and properties are `old` when it exists.
    fn put(
        &self,
        target: &Target,
        folder: &FolderId,
        properties: &BTreeMap<String, String>,
        old: Option<(&FolderId, &BTreeMap<String, String>)>,
        created: &mut HashSet<Target>,
    ) -> Vec<Need> {
        let (kind, id) = target_ref(target);
        if created.contains(target) {
            return Vec::new();
        }
        let mut needs = Vec::new();
        match old {
            Some((old_folder, old_props)) if self.exists(target) => {
                needs.push(Self::on(Perm::Change, target));
                for (prop, _) in self.change_guards(kind) {
                    if properties.get(prop) != old_props.get(prop) {
                        needs.push(Need::On {
                            perm: Perm::Change,
                            kind: kind.to_owned(),
                            id: id.to_owned(),
                            property: Some(prop.to_owned()),
                        });
                    }
                }
                if old_folder != folder {
                    needs.push(Need::Create { folder: self.create_folder(folder), kind: kind.to_owned() });
                }
            }
            _ => {
                needs.push(Need::Create { folder: self.create_folder(folder), kind: kind.to_owned() });
                for (prop, privilege) in self.change_guards(kind) {
                    if properties.contains_key(prop) {
                        needs.push(Need::Privilege {
                            name: privilege.to_owned(),
                            what: format!("set property `{prop}` of a new {kind}"),
                        });
                    }
                }
                created.insert(target.clone());
            }
        }
        needs
    }

    /// `need` on `target` unless the batch created it.
    fn existing(&self, perm: Perm, target: &Target, created: &HashSet<Target>) -> Vec<Need> {
        if created.contains(target) || !self.exists(target) { Vec::new() } else { vec![Self::on(perm, target)] }
    }

    fn needs(&self, m: &Mutation, created: &mut HashSet<Target>) -> Vec<Need> {
        let empty = BTreeMap::new();
        let c = self.config();
        match m {
            Mutation::CreateTenant { .. }
            | Mutation::RenameTenant { .. }
            | Mutation::SetRestrictedMode { .. }
            | Mutation::PutCatalog(_)
            | Mutation::DeleteCatalog { .. }
            | Mutation::PutPartition(_)
            | Mutation::DeletePartition { .. } => self.tenant_wide(),
            Mutation::PutFolder(f) => {
                let t = Target::Folder(f.id.clone());
                let parent = f.parent.clone().unwrap_or_else(|| FolderId(self.root.clone()));
                let old = c.folders.get(&f.id).map(|x| x.parent.clone().unwrap_or_else(|| FolderId(self.root.clone())));
                match &old {
                    Some(old_parent) => self.put(&t, &parent, &empty, Some((old_parent, &empty)), created),
                    None => self.put(&t, &parent, &empty, None, created),
                }
            }
            Mutation::DeleteFolder { id } => self.existing(Perm::Delete, &Target::Folder(id.clone()), created),
            Mutation::PutPerson(p) => {
                let old = c.persons.get(&p.id).map(|x| (&x.folder, &x.properties));
                self.put(&Target::Person(p.id.clone()), &p.folder, &p.properties, old, created)
            }
            Mutation::DeletePerson { id } => self.existing(Perm::Delete, &Target::Person(id.clone()), created),
            Mutation::PutGroup(g) => {
                let old = c.groups.get(&g.id).map(|x| (&x.folder, &empty));
                self.put(&Target::Group(g.id.clone()), &g.folder, &empty, old, created)
            }
            Mutation::DeleteGroup { id } => self.existing(Perm::Delete, &Target::Group(id.clone()), created),
            Mutation::AddGroupMember { group, .. } | Mutation::RemoveGroupMember { group, .. } => {
                self.existing(Perm::Change, &Target::Group(group.clone()), created)
            }
            Mutation::PutRole(r) => {
                let old = c.roles.get(&r.id).map(|x| (&x.folder, &empty));
                self.put(&Target::Role(r.id.clone()), &r.folder, &empty, old, created)
            }
            Mutation::DeleteRole { id } => self.existing(Perm::Delete, &Target::Role(id.clone()), created),
            Mutation::AssignRole { role, .. } | Mutation::UnassignRole { role, .. } => {
                self.existing(Perm::Change, &Target::Role(role.clone()), created)
            }
            Mutation::PutObject(o) => {
                let key = o.key();
                let old = c.objects.get(&key).map(|x| (&x.folder, &x.properties));
                self.put(&Target::Object(key), &o.folder, &o.properties, old, created)
            }
            Mutation::DeleteObject(k) => self.existing(Perm::Delete, &Target::Object(k.clone()), created),
            Mutation::MoveObject { target, folder } => {
                let mut needs = self.existing(Perm::Change, target, created);
                needs.push(Need::Create { folder: self.create_folder(folder), kind: target_ref(target).0.to_owned() });
                needs
            }
            Mutation::PutAce(a) => self.existing(Perm::ChangePermissions, &a.target, created),
            Mutation::DeleteAce { target, .. } => self.existing(Perm::ChangePermissions, target, created),
            Mutation::ProvisionVirtualQueue { queue, folder } => {
                let key = ObjectKey {
                    kind: types::SCRIPT.into(),
                    id: ObjectId(crate::model::config::virtual_queue_script(queue)),
                };
                let t = Target::Object(key);
                if self.exists(&t) || created.contains(&t) {
                    return Vec::new();
                }
                created.insert(t);
                let folder = folder.clone().unwrap_or_else(|| FolderId(folders::CALLBACK_SCRIPTS.into()));
                vec![Need::Create { folder: self.create_folder(&folder), kind: types::SCRIPT.into() }]
            }
        }
    }

    /// Evaluates one need; the refusal text on failure.
    fn evaluate(&self, need: &Need) -> Result<(), String> {
        let view = self.view;
        let app = self.app.map(|a| a.name.as_str());
        let (req, what, kind) = match need {
            Need::On { perm, kind, id, property } => (
                CheckRequest {
                    subject: self.actor,
                    application: app,
                    permission: Some(*perm),
                    object: Some(ObjectRef { kind, id, tenant: None }),
                    privilege: None,
                    property: property.as_deref(),
                },
                match property {
                    Some(p) => format!("change property `{p}` of {kind} `{id}`"),
                    None => format!("{perm} {kind} `{id}`"),
                },
                Some((kind.as_str(), *perm)),
            ),
            Need::Create { folder, kind } => (
                CheckRequest {
                    subject: self.actor,
                    application: app,
                    permission: Some(Perm::Create),
                    object: Some(ObjectRef { kind: types::FOLDER, id: folder, tenant: None }),
                    privilege: self.type_guard(kind, Perm::Create),
                    property: None,
                },
                format!("Create {kind} in folder `{folder}`"),
                Some((kind.as_str(), Perm::Create)),
            ),
            Need::Privilege { name, what } => (
                CheckRequest {
                    subject: self.actor,
                    application: app,
                    permission: None,
                    object: None,
                    privilege: Some(name),
                    property: None,
                },
                what.clone(),
                None,
            ),
        };
        let d = view.check(&req);
        if !d.allowed() {
            let mut why = format!("{what}: {}", d.reason.code());
            if matches!(d.reason, Reason::MissingPrivilege | Reason::UnmetDependency) {
                let ex = view.explain(&req);
                if let Some(p) = ex.privileges.iter().find(|p| !p.effective) {
                    let app = app.unwrap_or_default();
                    why.push_str(&format!(" (needs `{}` of `{app}`", p.name));
                    if !p.missing_requires.is_empty() {
                        why.push_str(&format!(", which requires `{}`", p.missing_requires.join("`, `")));
                    }
                    why.push(')');
                }
            }
            return Err(why);
        }
        if let Some((kind, perm)) = kind {
            if view.restricted_mode()
                && matches!(perm, Perm::Create | Perm::Change | Perm::Delete)
                && self.restricted.contains(kind)
            {
                return Err(format!(
                    "{what}: {} (restricted mode locks `{kind}` objects)",
                    Reason::RestrictedMode.code()
                ));
            }
        }
        Ok(())
    }
}

/// Refuses the batch unless `actor` may make every change in it (module docs).
/// `current` is the tenant before the batch (its configuration and view),
/// `next` after it. A refusal is a [`ErrorKind::PermissionDenied`] error
/// naming the mutation.
pub fn authorize(
    current: Option<(&TenantConfig, &TenantView)>,
    next: &TenantConfig,
    batch: &[Mutation],
    actor: &str,
) -> ModelResult<()> {
    let Some((config, view)) = current else {
        return Err(ModelError::new(
            ErrorKind::PermissionDenied,
            "actor",
            actor,
            format!(
                "tenant `{}` does not exist yet, so `{actor}` is not one of its persons; create tenants without an actor",
                next.id
            ),
        ));
    };
    let root = config
        .folders
        .values()
        .find(|f| f.parent.is_none())
        .map_or_else(|| folders::ROOT.to_owned(), |f| f.id.0.clone());
    let ctx = Ctx {
        config,
        view,
        next,
        app: config.catalogs.get(ADMIN_APPLICATION),
        actor,
        restricted: config.catalogs.values().flat_map(|c| c.restricted_types.iter().map(String::as_str)).collect(),
        root,
    };
    let mut created = HashSet::new();
    for (i, m) in batch.iter().enumerate() {
        for need in ctx.needs(m, &mut created) {
            ctx.evaluate(&need).map_err(|why| {
                ModelError::new(
                    ErrorKind::PermissionDenied,
                    format!("mutations[{i}].{}", m.op()),
                    actor,
                    format!("actor `{actor}` may not {why}"),
                )
            })?;
        }
    }
    Ok(())
}
