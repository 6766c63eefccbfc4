//! The tenant file: a YAML document holding one tenant's configuration.
//!
//! A file is turned into one write batch (`create_tenant` followed by `put_*`
//! mutations) and applied like any other write, so a file is valid exactly
//! when the same configuration written through the API would be. Export
//! writes `defaults: false` and every entity explicitly, so load → export →
//! load gives the same configuration.

use super::config::{Mutation, TenantConfig, subject_label, target_label};
use super::entity::*;
use super::error::{ErrorKind, ModelError, ModelResult};
use super::ids::TenantId;
use super::yaml::{NodeKind, Pos, SourceMap};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

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
    /// Parses YAML; syntax and shape errors name the line and column, and so
    /// does a mapping key written twice (`annex: {ges: .., ges: ..}`).
    pub fn from_yaml(text: &str) -> ModelResult<TenantFile> {
        let file = super::yaml::from_str(text, "tenant file")?;
        let (_, dups) = super::yaml::source_map(text, false).map_err(|(at, m)| {
            ModelError::invalid(format!("tenant file line {} column {}", at.line, at.column), "", m)
        })?;
        if let Some(d) = dups.first() {
            return Err(ModelError::new(
                ErrorKind::Duplicate,
                d.path.clone(),
                key_of(&d.path),
                format!(
                    "duplicate key `{}` at line {} column {} (first at line {} column {})",
                    key_of(&d.path),
                    d.at.line,
                    d.at.column,
                    d.first.line,
                    d.first.column
                ),
            ));
        }
        Ok(file)
    }

    /// Serializes to YAML.
    pub fn to_yaml(&self) -> ModelResult<String> {
        super::yaml::to_string(self)
    }

    /// The write batch that creates this tenant. Two items of a list with the
    /// same id are rejected ([`Self::duplicates`]): the later one would
    /// silently replace the earlier.
    pub fn to_mutations(&self) -> ModelResult<Vec<Mutation>> {
        if let Some(d) = self.duplicates().into_iter().next() {
            return Err(d.error());
        }
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
                    super::presets::catalog(preset).map_err(|e| e.within(&format!("catalogs[{i}]")))?.clone()
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
            match super::presets::preset_of_catalog(cat) {
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

/// An item of a tenant file with the id of an earlier item of the same list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    /// Path of the later item's id (`persons[7].id`, an entry: `aces[7]`).
    pub path: String,
    /// Path of the first item with that id (`persons[2]`).
    pub first: String,
    /// The id (`p1`, `Script/ges_Sales_VQ`, `folder root for everyone`).
    pub item: String,
    /// What is wrong (``duplicate person id `p1` ``).
    pub message: String,
}

impl Duplicate {
    /// The model error naming both items.
    pub fn error(&self) -> ModelError {
        ModelError::new(
            ErrorKind::Duplicate,
            self.path.clone(),
            self.item.clone(),
            format!("{} (first defined at {})", self.message, self.first),
        )
    }
}

/// Pushes a [`Duplicate`] for each item of `list` whose key an earlier item has.
fn duplicates_in<'a, T: 'a, K: Ord>(
    out: &mut Vec<Duplicate>,
    list: &str,
    suffix: &str,
    items: impl IntoIterator<Item = &'a T>,
    key: impl Fn(&'a T) -> K,
    describe: impl Fn(&'a T) -> (String, String),
) {
    let mut first: BTreeMap<K, usize> = BTreeMap::new();
    for (i, x) in items.into_iter().enumerate() {
        match first.entry(key(x)) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(i);
            }
            std::collections::btree_map::Entry::Occupied(o) => {
                let (what, item) = describe(x);
                out.push(Duplicate {
                    path: format!("{list}[{i}]{suffix}"),
                    first: format!("{list}[{}]", o.get()),
                    message: format!("duplicate {what} `{item}`"),
                    item,
                });
            }
        }
    }
}

/// The last key of a path (`persons[2].annex.ges` → `ges`).
fn key_of(path: &str) -> &str {
    path.rfind('.').map_or(path, |i| &path[i + 1..])
}

/// The application name of a catalog entry, when it has one.
fn catalog_name(c: &CatalogEntry) -> Option<&str> {
    match c {
        CatalogEntry::Inline(c) => Some(c.name.as_str()),
        CatalogEntry::Preset { preset } => super::presets::catalog(preset).ok().map(|c| c.name.as_str()),
    }
}

/// One problem of a tenant file and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    /// Where (line and column from 1).
    pub pos: Pos,
    /// Field path in the file (`persons[3].folder`, `aces[12].subject.group`).
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// For a duplicate: where and which the first item is.
    pub first: Option<(Pos, String)>,
}

/// What checking a tenant file's text found.
#[derive(Debug, Clone)]
pub struct FileCheck {
    /// The configuration, when the file is valid.
    pub config: Option<TenantConfig>,
    /// Every problem found, in file order; empty when valid.
    pub problems: Vec<FileProblem>,
}

impl TenantFile {
    /// Every item whose id an earlier item of the same list has: persons,
    /// folders, access groups, roles, partitions by id, objects by (type, id),
    /// entries by (target, subject), catalogs by application name.
    pub fn duplicates(&self) -> Vec<Duplicate> {
        let mut out = Vec::new();
        let id = |what: &str, id: &str| (what.to_owned(), id.to_owned());
        let mut cats = Vec::new();
        duplicates_in(&mut cats, "catalogs", "", &self.catalogs, catalog_name, |c| {
            id("application catalog", catalog_name(c).unwrap_or_default())
        });
        // A preset that does not exist has no name: reported by `to_mutations`, not as a duplicate.
        cats.retain(|d| !d.item.is_empty());
        for d in &mut cats {
            let i: usize = d.path["catalogs[".len()..d.path.len() - 1].parse().unwrap_or_default();
            d.path.push_str(if matches!(self.catalogs.get(i), Some(CatalogEntry::Preset { .. })) {
                ".preset"
            } else {
                ".name"
            });
        }
        out.extend(cats);
        duplicates_in(&mut out, "folders", ".id", &self.folders, |f| &f.id, |f| id("folder id", f.id.as_str()));
        duplicates_in(&mut out, "persons", ".id", &self.persons, |p| &p.id, |p| id("person id", p.id.as_str()));
        duplicates_in(
            &mut out,
            "access_groups",
            ".id",
            &self.access_groups,
            |g| &g.id,
            |g| id("access group id", g.id.as_str()),
        );
        duplicates_in(&mut out, "roles", ".id", &self.roles, |r| &r.id, |r| id("role id", r.id.as_str()));
        duplicates_in(
            &mut out,
            "partitions",
            ".id",
            &self.partitions,
            |p| &p.id,
            |p| id("partition id", p.id.as_str()),
        );
        duplicates_in(
            &mut out,
            "objects",
            ".id",
            &self.objects,
            |o| (&o.kind, &o.id),
            |o| (format!("{} object id", o.kind), o.id.to_string()),
        );
        duplicates_in(
            &mut out,
            "aces",
            "",
            &self.aces,
            |a| (&a.target, &a.subject),
            |a| id("entry for", &format!("{} and {}", target_label(&a.target), subject_label(&a.subject))),
        );
        out
    }

    /// Checks a tenant file's text and reports every problem it can find, each
    /// with its position and field path: a syntax or shape error (which ends
    /// the reading there), every mapping key written twice, every duplicate
    /// id, and every semantic error of the configuration the file builds.
    pub fn check_text(text: &str) -> FileCheck {
        let fail = |problems| FileCheck { config: None, problems };
        let file: TenantFile = match super::yaml::parse(text) {
            Ok(f) => f,
            Err((pos, path, message)) => {
                return fail(vec![FileProblem {
                    pos: pos.unwrap_or(Pos { line: 1, column: 1 }),
                    path,
                    message,
                    first: None,
                }]);
            }
        };
        let (map, dup_keys) = match super::yaml::source_map(text, true) {
            Ok(x) => x,
            Err((pos, message)) => return fail(vec![FileProblem { pos, path: String::new(), message, first: None }]),
        };
        let mut problems: Vec<FileProblem> = dup_keys
            .iter()
            .map(|d| FileProblem {
                pos: d.at,
                path: d.path.clone(),
                message: format!("duplicate key `{}`", key_of(&d.path)),
                first: Some((d.first, d.path.clone())),
            })
            .collect();
        for d in file.duplicates() {
            problems.push(FileProblem {
                pos: map.pos(&d.path),
                path: d.path.clone(),
                message: d.message.clone(),
                first: Some((map.pos(&d.first), d.first.clone())),
            });
        }
        let index = file.path_index();
        let report = |e: &ModelError, problems: &mut Vec<FileProblem>| {
            let (path, pos) = locate(&map, &index, e);
            problems.push(FileProblem { pos, path, message: e.message.clone(), first: None });
        };
        // The batch: create_tenant, then every entity, applied without stopping at the first error.
        let mut config = TenantConfig::empty(file.tenant.id.clone());
        let create = Mutation::CreateTenant {
            name: file.tenant.name.clone(),
            presets: file.presets.clone(),
            defaults: file.defaults,
        };
        if let Err(e) = config.apply(&create) {
            report(&e, &mut problems);
            problems.sort_by_key(|p| p.pos);
            return fail(problems);
        }
        if file.restricted_mode {
            config.restricted_mode = true;
        }
        for (i, c) in file.catalogs.iter().enumerate() {
            let cat = match c {
                CatalogEntry::Inline(c) => (**c).clone(),
                CatalogEntry::Preset { preset } => match super::presets::catalog(preset) {
                    Ok(c) => c.clone(),
                    Err(e) => {
                        let path = format!("catalogs[{i}].preset");
                        problems.push(FileProblem { pos: map.pos(&path), path, message: e.message, first: None });
                        continue;
                    }
                },
            };
            std::sync::Arc::make_mut(&mut config.catalogs).insert(cat.name.clone(), cat);
        }
        let entities = file
            .folders
            .iter()
            .cloned()
            .map(Mutation::PutFolder)
            .chain(file.persons.iter().cloned().map(Mutation::PutPerson))
            .chain(file.access_groups.iter().cloned().map(Mutation::PutGroup))
            .chain(file.roles.iter().cloned().map(Mutation::PutRole))
            .chain(file.partitions.iter().cloned().map(Mutation::PutPartition))
            .chain(file.objects.iter().cloned().map(Mutation::PutObject))
            .chain(file.aces.iter().cloned().map(Mutation::PutAce));
        for m in entities {
            if let Err(e) = config.apply(&m) {
                report(&e, &mut problems);
            }
        }
        for e in super::validate::validate_all(&config) {
            report(&e, &mut problems);
        }
        problems.sort_by_key(|p| p.pos);
        if problems.is_empty() { FileCheck { config: Some(config), problems } } else { fail(problems) }
    }

    /// Validation's id-keyed paths (`persons[p1]`, `objects[Script/x]`,
    /// `aces[folder root for everyone]`, `catalogs[Callback].privileges[X]`)
    /// → this file's index paths (`persons[3]`). A later item with the same
    /// id wins, as it does in the configuration.
    fn path_index(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        for (i, c) in self.catalogs.iter().enumerate() {
            let Some(name) = catalog_name(c) else { continue };
            let at = format!("catalogs[{i}]");
            if let CatalogEntry::Inline(cat) = c {
                for (j, p) in cat.privileges.iter().enumerate() {
                    m.insert(format!("{at}.privileges[{}]", p.name), format!("{at}.privileges[{j}]"));
                }
                for (j, r) in cat.roles.iter().enumerate() {
                    m.insert(format!("{at}.roles[{}]", r.name), format!("{at}.roles[{j}]"));
                }
            }
            m.insert(format!("catalogs[{name}]"), at);
        }
        let mut add = |list: &str, i: usize, key: &str| {
            m.insert(format!("{list}[{key}]"), format!("{list}[{i}]"));
        };
        for (i, x) in self.folders.iter().enumerate() {
            add("folders", i, x.id.as_str());
        }
        for (i, x) in self.persons.iter().enumerate() {
            add("persons", i, x.id.as_str());
        }
        for (i, x) in self.access_groups.iter().enumerate() {
            add("access_groups", i, x.id.as_str());
        }
        for (i, x) in self.roles.iter().enumerate() {
            add("roles", i, x.id.as_str());
        }
        for (i, x) in self.partitions.iter().enumerate() {
            add("partitions", i, x.id.as_str());
        }
        for (i, x) in self.objects.iter().enumerate() {
            add("objects", i, &format!("{}/{}", x.kind, x.id));
        }
        for (i, x) in self.aces.iter().enumerate() {
            add("aces", i, &format!("{} for {}", target_label(&x.target), subject_label(&x.subject)));
        }
        m
    }
}

/// Where in the file a model error is: its field path translated to the
/// file's indexes, narrowed to the offending item of a list or key of a
/// mapping, and into an enum's variant (`subject.group`); and its position.
/// An error about an entity the file does not write (a preset's default) is
/// reported at `presets`.
fn locate(map: &SourceMap, index: &HashMap<String, String>, e: &ModelError) -> (String, Pos) {
    // `create_tenant` names an unknown preset as `preset`.
    let mut path = if e.field == "preset" { "presets".to_owned() } else { e.field.clone() };
    let mut from = 0;
    let mut translated = false;
    'outer: loop {
        for (j, _) in path[from..].match_indices(']') {
            let end = from + j + 1;
            if end == path.len() || path[end..].starts_with('.') {
                if let Some(t) = index.get(&path[..end]) {
                    from = t.len();
                    path = format!("{t}{}", &path[end..]);
                    translated = true;
                    continue 'outer;
                }
            }
        }
        break;
    }
    let in_file = translated || path.starts_with("tenant") || map.get(&path).is_some();
    if !in_file {
        let at = if map.get("presets").is_some() { "presets" } else { "tenant" };
        return (path, map.pos(at));
    }
    // Narrow to the item: an element of a list, or a key of a mapping.
    if !e.item.is_empty() {
        match map.get(&path).map(|n| &n.kind) {
            Some(NodeKind::Sequence(len)) => {
                if let Some(i) = (0..*len).find(|i| {
                    map.get(&format!("{path}[{i}]")).is_some_and(|n| n.kind == NodeKind::Scalar(e.item.clone()))
                }) {
                    path = format!("{path}[{i}]");
                }
            }
            Some(NodeKind::Mapping(keys)) if keys.contains(&e.item) && !path.ends_with(']') => {
                path = format!("{path}.{}", e.item);
            }
            _ => {}
        }
    }
    if path.ends_with(".target") || path.ends_with(".subject") {
        if let Some(NodeKind::Mapping(keys)) = map.get(&path).map(|n| &n.kind) {
            if let [k] = keys.as_slice() {
                path = format!("{path}.{k}");
            }
        }
    }
    let pos = map.pos(&path);
    (path, pos)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    const DUP: &str = "tenant: {id: t, name: T}\npersons:\n  - {id: p1, username: a}\n  - {id: p2, username: b}\n  - {id: p1, username: c}\n";

    #[test]
    fn duplicate_ids_are_rejected_on_every_path_naming_both_items() {
        let file = TenantFile::from_yaml(DUP).unwrap_or_else(|e| panic!("{e}"));
        let d = file.duplicates();
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!((d[0].path.as_str(), d[0].first.as_str()), ("persons[2].id", "persons[0]"));
        // The write batch (what Import and `--demo` build) refuses it, naming both items.
        let e = file.to_mutations().expect_err("duplicate");
        assert_eq!(e.kind, ErrorKind::Duplicate);
        assert_eq!(e.to_string(), "persons[2].id: duplicate person id `p1` (first defined at persons[0])");
        assert!(file.to_config().is_err());
        // Without the duplicate the same file loads.
        let ok = TenantFile::from_yaml(&DUP.replace("{id: p1, username: c}", "{id: p3, username: c}"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(ok.duplicates().is_empty());
        assert_eq!(ok.to_config().map(|c| c.persons.len()).unwrap_or_default(), 3);
    }

    #[test]
    fn duplicates_of_every_list() {
        let yaml = "tenant: {id: t, name: T}\n\
            catalogs: [{preset: callback}, {preset: callback}]\n\
            folders: [{id: f, name: F, parent: root}, {id: f, name: G, parent: root}]\n\
            access_groups: [{id: g, name: G}, {id: g, name: H}]\n\
            roles: [{id: r, name: R}, {id: r, name: S}]\n\
            partitions: [{id: x, name: X}, {id: x, name: Y}]\n\
            objects: [{type: A, id: o, name: O, folder: root}, {type: B, id: o, name: O, folder: root}, {type: A, id: o, name: P, folder: root}]\n\
            aces: [{target: {folder: root}, subject: everyone}, {target: {folder: f}, subject: everyone}, {target: {folder: root}, subject: everyone, allow: [Read]}]\n";
        let file = TenantFile::from_yaml(yaml).unwrap_or_else(|e| panic!("{e}"));
        let got: Vec<(String, String)> = file.duplicates().into_iter().map(|d| (d.path, d.first)).collect();
        let want = [
            ("catalogs[1].preset", "catalogs[0]"),
            ("folders[1].id", "folders[0]"),
            ("access_groups[1].id", "access_groups[0]"),
            ("roles[1].id", "roles[0]"),
            ("partitions[1].id", "partitions[0]"),
            ("objects[2].id", "objects[0]"),
            ("aces[2]", "aces[0]"),
        ];
        assert_eq!(got, want.map(|(a, b)| (a.to_owned(), b.to_owned())));
    }

    #[test]
    fn duplicate_mapping_keys_are_rejected() {
        let yaml = "tenant: {id: t, name: T}\npersons:\n  - id: p1\n    username: a\n    annex:\n      ges: {role: A}\n      ges: {role: B}\n";
        let e = TenantFile::from_yaml(yaml).expect_err("duplicate key");
        assert_eq!(e.kind, ErrorKind::Duplicate);
        assert_eq!(e.field, "persons[0].annex.ges");
        assert!(e.message.contains("at line 7 column 7 (first at line 6 column 7)"), "{e}");
    }

    #[test]
    fn check_text_reports_every_problem_at_its_position() {
        let yaml = "tenant: {id: t, name: T}\n\
            persons:\n\
            \x20 - {id: p1, username: a, folder: nope}\n\
            \x20 - {id: p2, username: a}\n\
            access_groups:\n\
            \x20 - {id: g, name: G, members: [p1, ghost, p2]}\n";
        let check = TenantFile::check_text(yaml);
        assert!(check.config.is_none());
        let got: Vec<(String, usize, usize)> =
            check.problems.iter().map(|p| (p.path.clone(), p.pos.line, p.pos.column)).collect();
        assert_eq!(
            got,
            [
                ("persons[0].folder".to_owned(), 3, 27),
                ("persons[1].username".to_owned(), 4, 14),
                ("access_groups[0].members[1]".to_owned(), 6, 36),
            ]
        );
        // The configuration's first error is the write path's error.
        let c = TenantFile::from_yaml(yaml).map(|f| f.to_config());
        assert!(matches!(c, Ok(Err(_))));
        let valid = TenantFile::check_text("tenant: {id: t, name: T}\n");
        assert!(valid.problems.is_empty() && valid.config.is_some());
    }

    #[test]
    fn validate_all_keeps_going_and_starts_with_validates_error() {
        let file = TenantFile::from_yaml(
            "tenant: {id: t, name: T}\npersons: [{id: a, username: x, folder: f1}, {id: b, username: y, folder: f2}]\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut c = TenantConfig::empty(file.tenant.id.clone());
        for m in file.to_mutations().unwrap_or_default() {
            c.apply(&m).unwrap_or_else(|e| panic!("{e}"));
        }
        let all = super::super::validate::validate_all(&c);
        assert_eq!(all.len(), 2, "{all:?}");
        assert_eq!(super::super::validate::validate(&c), Err(all[0].clone()));
        assert_eq!(all[1].field, "persons[b].folder");
    }
}
