//! The tenant file: a YAML document holding one tenant's configuration.
//!
//! A file is turned into one write batch (`create_tenant` followed by `put_*`
//! mutations) and applied like any other write, so a file is valid exactly
//! when the same configuration written through the API would be. Export
//! writes `defaults: false` and every entity explicitly, so load → export →
//! load gives the same configuration.

use super::config::{Mutation, TenantConfig};
use super::entity::*;
use super::error::ModelResult;
use super::ids::TenantId;
use serde::{Deserialize, Serialize};

/// The tenant's identity in a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantHeader {
    /// Tenant id.
    pub id: TenantId,
    /// Business name.
    pub name: String,
}

/// A catalog in a file: a preset by name, or written out in full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CatalogEntry {
    /// `{preset: callback}`: the catalog of a shipped preset.
    Preset {
        /// Preset name.
        preset: String,
    },
    /// A catalog written out.
    Inline(Box<Catalog>),
}

fn default_true() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}

/// One tenant's configuration as a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantFile {
    /// Which tenant.
    pub tenant: TenantHeader,
    /// Presets whose catalogs are installed (and, with `defaults`, their
    /// default roles, groups and entries).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub presets: Vec<String>,
    /// Create the core skeleton and the presets' defaults first (default true).
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub defaults: bool,
    /// Restricted mode.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restricted_mode: bool,
    /// Further catalogs (custom applications, or a preset's catalog modified).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub catalogs: Vec<CatalogEntry>,
    /// Folders (besides the defaults).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub folders: Vec<Folder>,
    /// Persons.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub persons: Vec<Person>,
    /// Access groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_groups: Vec<AccessGroup>,
    /// Roles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<Role>,
    /// Partitions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<Partition>,
    /// Configuration objects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<Object>,
    /// Access control entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aces: Vec<Ace>,
}

impl TenantFile {
    /// Parses YAML; syntax and shape errors name the line and column.
    pub fn from_yaml(text: &str) -> ModelResult<TenantFile> {
        super::yaml::from_str(text, "tenant file")
    }

    /// Serializes to YAML.
    pub fn to_yaml(&self) -> ModelResult<String> {
        super::yaml::to_string(self)
    }

    /// The write batch that creates this tenant.
    pub fn to_mutations(&self) -> ModelResult<Vec<Mutation>> {
        let mut out = vec![Mutation::CreateTenant {
            name: self.tenant.name.clone(),
            presets: self.presets.clone(),
            defaults: self.defaults,
        }];
        if self.restricted_mode {
            out.push(Mutation::SetRestrictedMode { on: true });
        }
        for (i, c) in self.catalogs.iter().enumerate() {
            let cat = match c {
                CatalogEntry::Inline(c) => (**c).clone(),
                CatalogEntry::Preset { preset } => {
                    crate::presets::catalog(preset).map_err(|e| e.within(&format!("catalogs[{i}]")))?.clone()
                }
            };
            out.push(Mutation::PutCatalog(cat));
        }
        out.extend(self.folders.iter().cloned().map(Mutation::PutFolder));
        out.extend(self.persons.iter().cloned().map(Mutation::PutPerson));
        out.extend(self.access_groups.iter().cloned().map(Mutation::PutGroup));
        out.extend(self.roles.iter().cloned().map(Mutation::PutRole));
        out.extend(self.partitions.iter().cloned().map(Mutation::PutPartition));
        out.extend(self.objects.iter().cloned().map(Mutation::PutObject));
        out.extend(self.aces.iter().cloned().map(Mutation::PutAce));
        Ok(out)
    }

    /// Builds the tenant's configuration from this file.
    pub fn to_config(&self) -> ModelResult<TenantConfig> {
        TenantConfig::empty(self.tenant.id.clone()).apply_batch(&self.to_mutations()?)
    }

    /// The file that exports `c`: every entity explicit, `defaults: false`,
    /// catalogs equal to a shipped preset named by the preset.
    pub fn from_config(c: &TenantConfig) -> TenantFile {
        let mut presets = Vec::new();
        let mut catalogs = Vec::new();
        for cat in c.catalogs.values() {
            match crate::presets::preset_of_catalog(cat) {
                Some(p) => presets.push(p.to_owned()),
                None => catalogs.push(CatalogEntry::Inline(Box::new(cat.clone()))),
            }
        }
        TenantFile {
            tenant: TenantHeader { id: c.id.clone(), name: c.name.clone() },
            presets,
            defaults: false,
            restricted_mode: c.restricted_mode,
            catalogs,
            folders: c.folders.values().cloned().collect(),
            persons: c.persons.values().cloned().collect(),
            access_groups: c.groups.values().cloned().collect(),
            roles: c.roles.values().cloned().collect(),
            partitions: c.partitions.values().cloned().collect(),
            objects: c.objects.values().cloned().collect(),
            aces: c.aces.values().cloned().collect(),
        }
    }
}
