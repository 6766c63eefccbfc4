//! The shipped application presets (SPEC §5): catalogs of the seed
//! applications and the defaults a new tenant starts with (SPEC §1).
//!
//! Presets are YAML files in `presets/`, compiled into the binary so a sidecar
//! needs no data directory. `core` is the tenant skeleton every new tenant gets
//! (folders, "<name> Administrators", default entries); the others each carry
//! one application catalog plus that application's default groups, roles and
//! entries. In group and folder names, `{tenant}` stands for the tenant's
//! business name.
//!
//! The demo tenant ACME (`examples/acme.yaml`, [`DEMO_TENANT_YAML`]) is
//! shipped here too: `authzd serve --demo` loads it, `authzd bench --demo`
//! measures it.

use super::{Catalog, FolderId, GroupId, ModelError, ModelResult, Mutation, Role, RoleId, RoleMembers};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::LazyLock;

/// The preset every new tenant gets when defaults are requested.
pub const CORE: &str = "core";

/// The source of every shipped preset: (file name, YAML text).
pub const SOURCES: [(&str, &str); 6] = [
    ("core", include_str!("../../presets/core.yaml")),
    ("callback", include_str!("../../presets/callback.yaml")),
    ("workspace_web_callback", include_str!("../../presets/workspace_web_callback.yaml")),
    ("genesys_administrator", include_str!("../../presets/genesys_administrator.yaml")),
    ("advisors", include_str!("../../presets/advisors.yaml")),
    ("designer", include_str!("../../presets/designer.yaml")),
];

/// The demo tenant (`--demo`), compiled in so the binary needs no data directory.
pub const DEMO_TENANT_YAML: &str = include_str!("../../examples/acme.yaml");
/// The demo tenant's id.
pub const DEMO_TENANT_ID: &str = "acme";

/// A role instantiated from a catalog's role template when a tenant is created.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultRole {
    /// Role id in the tenant.
    pub id: RoleId,
    /// Name of the catalog's role template (also the role's name).
    pub template: String,
    /// Access groups that hold the role.
    #[serde(default)]
    pub groups: Vec<GroupId>,
    /// Folder (default `Roles`).
    #[serde(default)]
    pub folder: Option<FolderId>,
}

/// One preset file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preset {
    /// Preset name (`callback`); equals the file name.
    pub name: String,
    /// What the preset provides.
    #[serde(default)]
    pub description: String,
    /// The application catalog (none for `core`).
    #[serde(default)]
    pub catalog: Option<Catalog>,
    /// Roles created from the catalog's templates.
    #[serde(default)]
    pub default_roles: Vec<DefaultRole>,
    /// Other default mutations: folders, groups, entries.
    #[serde(default)]
    pub defaults: Vec<Mutation>,
}

static PRESETS: LazyLock<Result<BTreeMap<String, Preset>, ModelError>> = LazyLock::new(|| {
    let mut out = BTreeMap::new();
    for (file, text) in SOURCES {
        let p: Preset = crate::model::yaml::from_str(text, &format!("presets/{file}.yaml"))?;
        if p.name != file {
            return Err(ModelError::invalid(
                format!("presets/{file}.yaml"),
                &p.name,
                "preset name differs from its file name",
            ));
        }
        if let Some(c) = &p.catalog {
            crate::model::validate::validate_catalog(c).map_err(|e| e.within(&format!("presets/{file}.yaml")))?;
        }
        out.insert(p.name.clone(), p);
    }
    Ok(out)
});

/// Every shipped preset by name, or the error that makes one unusable.
pub fn all() -> ModelResult<&'static BTreeMap<String, Preset>> {
    PRESETS.as_ref().map_err(Clone::clone)
}

/// The preset named `name`.
pub fn get(name: &str) -> ModelResult<&'static Preset> {
    let all = all()?;
    all.get(name).ok_or_else(|| {
        let known: Vec<&str> = all.keys().map(String::as_str).filter(|n| *n != CORE).collect();
        ModelError::unknown("preset", name, "preset").with_hint(&format!("known presets: {}", known.join(", ")))
    })
}

/// The catalog of preset `name`.
pub fn catalog(name: &str) -> ModelResult<&'static Catalog> {
    get(name)?
        .catalog
        .as_ref()
        .ok_or_else(|| ModelError::invalid("preset", name, format!("preset `{name}` has no application catalog")))
}

/// The name of the preset whose catalog equals `c`, if any.
pub fn preset_of_catalog(c: &Catalog) -> Option<&'static str> {
    all().ok()?.values().find(|p| p.catalog.as_ref() == Some(c)).map(|p| p.name.as_str())
}

fn substitute(m: &Mutation, tenant: &str) -> Mutation {
    let mut m = m.clone();
    match &mut m {
        Mutation::PutGroup(g) => g.name = g.name.replace("{tenant}", tenant),
        Mutation::PutFolder(f) => f.name = f.name.replace("{tenant}", tenant),
        _ => {}
    }
    m
}

/// The mutations that set a new tenant up: the catalogs of `presets` and, when
/// `defaults`, the core skeleton and each preset's default roles, groups and
/// entries, in that order.
pub fn tenant_defaults(tenant_name: &str, presets: &[String], defaults: bool) -> ModelResult<Vec<Mutation>> {
    let mut out = Vec::new();
    if defaults {
        out.extend(get(CORE)?.defaults.iter().map(|m| substitute(m, tenant_name)));
    }
    for name in presets {
        let p = get(name)?;
        let Some(cat) = &p.catalog else {
            return Err(ModelError::invalid("presets", name, format!("`{name}` is not an application preset")));
        };
        out.push(Mutation::PutCatalog(cat.clone()));
        if !defaults {
            continue;
        }
        out.extend(p.defaults.iter().map(|m| substitute(m, tenant_name)));
        for r in &p.default_roles {
            let Some(t) = cat.roles.iter().find(|t| t.name == r.template) else {
                return Err(ModelError::unknown(format!("presets/{name}.default_roles"), &r.template, "role template"));
            };
            let mut privileges = BTreeMap::new();
            privileges.insert(cat.name.clone(), t.privileges.iter().cloned().collect());
            out.push(Mutation::PutRole(Role {
                id: r.id.clone(),
                name: t.name.clone(),
                folder: r.folder.clone().unwrap_or_else(|| FolderId(crate::model::folders::ROLES.into())),
                privileges,
                members: RoleMembers { persons: Default::default(), groups: r.groups.iter().cloned().collect() },
            }));
        }
    }
    Ok(out)
}
