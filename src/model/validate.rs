//! Validation of a whole tenant configuration (SPEC §1, §3, §4.3, §6).
//!
//! Run after every batch on the resulting configuration, so no write can leave
//! a dangling reference, a cycle, a duplicate name or a malformed privilege
//! behind. The write path gets the first problem found ([`validate`],
//! [`validate_change`]); `authzd validate` gets every problem ([`validate_all`]).
//! The order of the checks is deterministic (entities in id order), so the
//! same input always gets the same errors, the first of them first.

use super::config::{Mutation, TenantConfig, subject_label, target_label};
use super::entity::*;
use super::error::{ErrorKind, ModelError, ModelResult};
use super::ids::{FolderId, GroupId, PartitionId, PersonId, RoleId};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// Longest identifier or name accepted.
pub const MAX_NAME_LEN: usize = 255;

/// Advisors metric applications (SPEC §4.3).
pub const METRIC_APPLICATIONS: [&str; 3] = ["FrontlineAdvisor", "WorkforceAdvisor", "ContactCenterAdvisor"];
/// Advisors metric object types.
pub const METRIC_OBJECT_TYPES: [&str; 5] = ["AgentGroup", "Agent", "ContactGroup", "Application", "Team"];
/// Advisors metric channels.
pub const METRIC_CHANNELS: [&str; 5] = ["Email", "WebChat", "Voice", "All", "AllNonVoice"];
/// Top folder of Advisors metrics.
pub const METRICS_FOLDER: &str = "Advisors Metrics";

/// What is wrong with `s` as an exact name, if anything: empty, longer than
/// [`MAX_NAME_LEN`] bytes, a control character, leading or trailing white space.
pub fn name_problem(s: &str) -> Option<String> {
    if s.is_empty() {
        Some("must not be empty".to_owned())
    } else if s.len() > MAX_NAME_LEN {
        Some(format!("`{s}` is longer than {MAX_NAME_LEN} bytes"))
    } else if s.chars().any(char::is_control) {
        Some(format!("`{}` contains a control character", s.escape_debug()))
    } else if s.trim() != s {
        Some(format!("`{s}` has leading or trailing white space"))
    } else {
        None
    }
}

/// Like [`name_problem`], and no white space at all (types, queue and metric names).
pub fn plain_name_problem(s: &str) -> Option<String> {
    name_problem(s).or_else(|| s.chars().any(char::is_whitespace).then(|| format!("`{s}` contains white space")))
}

/// Checks that `s` is an exact name (see [`name_problem`]).
pub fn check_name(field: &str, s: &str) -> ModelResult<()> {
    name_problem(s).map_or(Ok(()), |m| Err(ModelError::invalid(field, s, m)))
}

/// Checks that `s` is an exact name without white space.
pub fn check_plain_name(field: &str, s: &str) -> ModelResult<()> {
    plain_name_problem(s).map_or(Ok(()), |m| Err(ModelError::invalid(field, s, m)))
}

/// The errors found so far. Validation goes on after an error until `limit`
/// are found (1 on the write path, which needs only the first).
struct Sink {
    errors: Vec<ModelError>,
    limit: usize,
}

/// The sink is full: stop validating.
struct Full;

/// One validation step: `Err(Full)` stops the whole validation.
type Step = Result<(), Full>;

impl Sink {
    fn new(limit: usize) -> Self {
        Sink { errors: Vec::new(), limit: limit.max(1) }
    }
    fn push(&mut self, e: ModelError) -> Step {
        self.errors.push(e);
        if self.errors.len() >= self.limit { Err(Full) } else { Ok(()) }
    }
    fn check(&mut self, r: ModelResult<()>) -> Step {
        r.map_or_else(|e| self.push(e), Ok)
    }
    /// Turns a problem into an error whose field path is built only then: the
    /// large collections (100,000 objects) are validated without formatting a
    /// path per item.
    fn lazy(&mut self, problem: Option<String>, field: impl FnOnce() -> String, item: &str) -> Step {
        problem.map_or(Ok(()), |m| self.push(ModelError::invalid(field(), item, m)))
    }
    fn first(self) -> ModelResult<()> {
        self.errors.into_iter().next().map_or(Ok(()), Err)
    }
}

/// Checks an Advisors metric name `[Application].[ObjectType].[Channel].[Name]`
/// and returns its application and object type.
pub fn parse_metric_name<'a>(field: &str, name: &'a str) -> ModelResult<(&'a str, &'a str)> {
    metric_name_parts(name).map_err(|m| ModelError::invalid(field, name, m))
}

/// The application and object type of a metric name, or what is wrong with it.
fn metric_name_parts(name: &str) -> Result<(&str, &str), String> {
    if let Some(m) = plain_name_problem(name) {
        return Err(m);
    }
    let bad =
        |why: String| Err(format!("metric name `{name}` is not `[Application].[ObjectType].[Channel].[Name]`: {why}"));
    let mut parts = name.splitn(4, '.');
    let (Some(app), Some(kind), Some(channel), Some(rest)) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return bad("it needs four dot-separated parts".into());
    };
    if !METRIC_APPLICATIONS.contains(&app) {
        return bad(format!("application `{app}` is not one of {}", METRIC_APPLICATIONS.join(", ")));
    }
    if !METRIC_OBJECT_TYPES.contains(&kind) {
        return bad(format!("object type `{kind}` is not one of {}", METRIC_OBJECT_TYPES.join(", ")));
    }
    if !METRIC_CHANNELS.contains(&channel) {
        return bad(format!("channel `{channel}` is not one of {}", METRIC_CHANNELS.join(", ")));
    }
    if rest.is_empty() {
        return bad("the name part is empty".into());
    }
    Ok((app, kind))
}

/// How much of one collection to check.
#[derive(Debug)]
enum Check<'a, K> {
    /// None of it.
    No,
    /// All of it.
    All,
    /// These entities (the ones a batch put or edited), and those whose name
    /// they share: nothing else of the collection can have changed validity.
    Keys(&'a BTreeSet<K>),
}

impl<K> Clone for Check<'_, K> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K> Copy for Check<'_, K> {}

impl<K> Check<'_, K> {
    fn all_if(b: bool) -> Self {
        if b { Check::All } else { Check::No }
    }
}

/// Which collections to check.
#[derive(Debug, Clone, Copy)]
struct Scope<'a> {
    catalogs: bool,
    folders: bool,
    persons: Check<'a, PersonId>,
    groups: Check<'a, GroupId>,
    roles: Check<'a, RoleId>,
    partitions: Check<'a, PartitionId>,
    objects: Check<'a, ObjectKey>,
    aces: Check<'a, (Target, Subject)>,
}

const EVERYTHING: Scope<'static> = Scope {
    catalogs: true,
    folders: true,
    persons: Check::All,
    groups: Check::All,
    roles: Check::All,
    partitions: Check::All,
    objects: Check::All,
    aces: Check::All,
};

/// The entities of `map` that `check` asks for, in key order, each with
/// whether its name (`name`: what must be unique) repeats the name of an
/// entity earlier in key order. With [`Check::Keys`], the entities checked
/// are those that share a name with a listed one (the listed ones among
/// them): exactly the entities whole validation could find a problem with
/// when only the listed ones changed, each with the same verdict.
fn to_check<'c, K: Ord, V, N: Eq + std::hash::Hash>(
    map: &'c BTreeMap<K, V>,
    check: Check<'_, K>,
    name: impl Fn(&'c V) -> N,
) -> Vec<(&'c V, bool)> {
    match check {
        Check::No => Vec::new(),
        Check::All => {
            let mut seen = HashSet::new();
            map.values().map(|v| (v, !seen.insert(name(v)))).collect()
        }
        Check::Keys(keys) if keys.is_empty() => Vec::new(),
        Check::Keys(keys) => {
            let wanted: Vec<N> = keys.iter().filter_map(|k| map.get(k)).map(&name).collect();
            let wanted_set: HashSet<&N> = if wanted.len() > 8 { wanted.iter().collect() } else { HashSet::new() };
            let mut seen = HashSet::new();
            let mut out = Vec::new();
            for v in map.values() {
                let n = name(v);
                let hit = if wanted.len() > 8 { wanted_set.contains(&n) } else { wanted.contains(&n) };
                if hit {
                    let dup = !seen.insert(n);
                    out.push((v, dup));
                }
            }
            out
        }
    }
}

/// Validates a whole tenant configuration: the first problem found.
pub fn validate(c: &TenantConfig) -> ModelResult<()> {
    let mut sink = Sink::new(1);
    let _ = validate_scope(c, EVERYTHING, &mut sink);
    sink.first()
}

/// Every problem of a whole tenant configuration, in the order [`validate`]
/// finds them (its error is the first of these); empty when it is valid.
pub fn validate_all(c: &TenantConfig) -> Vec<ModelError> {
    let mut sink = Sink::new(usize::MAX);
    let _ = validate_scope(c, EVERYTHING, &mut sink);
    sink.errors
}

/// Validates `new`, a batch applied to the valid configuration `old`: only
/// the collections the batch replaced, and those whose validity depends on
/// them, are checked. The rest were valid in `old` and refer only to
/// collections that did not change, so they still are. A role edit on a
/// tenant of 100,000 metrics does not re-check the metrics.
///
/// Dependencies: persons → folders; groups → persons, folders; roles →
/// catalogs, persons, groups, folders; partitions → persons; objects →
/// folders (metric paths), partitions; entries → every entity.
pub fn validate_change(old: &TenantConfig, new: &TenantConfig) -> ModelResult<()> {
    if !old.exists() {
        return validate(new);
    }
    let catalogs = !Arc::ptr_eq(&old.catalogs, &new.catalogs);
    let folders = !Arc::ptr_eq(&old.folders, &new.folders);
    let persons = !Arc::ptr_eq(&old.persons, &new.persons);
    let groups = !Arc::ptr_eq(&old.groups, &new.groups);
    let roles = !Arc::ptr_eq(&old.roles, &new.roles);
    let partitions = !Arc::ptr_eq(&old.partitions, &new.partitions);
    let objects = !Arc::ptr_eq(&old.objects, &new.objects);
    let aces = !Arc::ptr_eq(&old.aces, &new.aces);
    let mut sink = Sink::new(1);
    let _ = validate_scope(
        new,
        Scope {
            catalogs,
            folders,
            persons: Check::all_if(persons || folders),
            groups: Check::all_if(groups || persons || folders),
            roles: Check::all_if(roles || catalogs || persons || groups || folders),
            partitions: Check::all_if(partitions || persons),
            objects: Check::all_if(objects || folders || partitions),
            aces: Check::all_if(aces || folders || persons || groups || roles || objects),
        },
        &mut sink,
    );
    sink.first()
}

/// What a batch put or edited, collection by collection.
#[derive(Debug, Default)]
struct Touched {
    persons: BTreeSet<PersonId>,
    groups: BTreeSet<GroupId>,
    roles: BTreeSet<RoleId>,
    partitions: BTreeSet<PartitionId>,
    objects: BTreeSet<ObjectKey>,
    aces: BTreeSet<(Target, Subject)>,
}

/// The entities `mutations` put or edit; `None` when the batch does more
/// than put and edit persons, groups, roles, partitions, objects and entries
/// (it creates the tenant, changes catalogs or folders, removes something,
/// provisions a virtual queue): then validity elsewhere may have changed.
fn touched(mutations: &[Mutation]) -> Option<Touched> {
    let mut t = Touched::default();
    for m in mutations {
        match m {
            // The tenant's name is checked whatever the scope; removing an
            // entry leaves nothing dangling (nothing refers to entries).
            Mutation::RenameTenant { .. } | Mutation::SetRestrictedMode { .. } | Mutation::DeleteAce { .. } => {}
            Mutation::PutPerson(p) => {
                t.persons.insert(p.id.clone());
            }
            Mutation::PutGroup(g) => {
                t.groups.insert(g.id.clone());
            }
            Mutation::AddGroupMember { group, .. } | Mutation::RemoveGroupMember { group, .. } => {
                t.groups.insert(group.clone());
            }
            Mutation::PutRole(r) => {
                t.roles.insert(r.id.clone());
            }
            Mutation::AssignRole { role, .. } | Mutation::UnassignRole { role, .. } => {
                t.roles.insert(role.clone());
            }
            Mutation::PutPartition(p) => {
                t.partitions.insert(p.id.clone());
            }
            Mutation::PutObject(o) => {
                t.objects.insert(ObjectKey { kind: o.kind.clone(), id: o.id.clone() });
            }
            Mutation::MoveObject { target, .. } => match target {
                Target::Person(id) => {
                    t.persons.insert(id.clone());
                }
                Target::Group(id) => {
                    t.groups.insert(id.clone());
                }
                Target::Role(id) => {
                    t.roles.insert(id.clone());
                }
                Target::Object(k) => {
                    t.objects.insert(k.clone());
                }
                Target::Folder(_) => return None,
            },
            Mutation::PutAce(a) => {
                t.aces.insert((a.target.clone(), a.subject.clone()));
            }
            _ => return None,
        }
    }
    Some(t)
}

/// Validates `new`, the result of applying `mutations` to the valid
/// configuration `old`, and gives exactly the answer of [`validate`] on
/// `new` (the first problem found), cheaply:
/// - a batch that only puts and edits persons, groups, roles, partitions,
///   objects and entries (the common writes: a group join, a role change,
///   a new object) checks those entities, and the ones whose unique name
///   they share. Nothing else can have become invalid: every other entity
///   is as it was in `old`, and what it refers to still exists (nothing
///   was removed) with the same folders and catalogs;
/// - any other batch goes to [`validate_change`], which checks the
///   collections it replaced and those that depend on them, whole.
///
/// A group join on a tenant of 10,000 persons and 1,000 groups checks one
/// group instead of every group, role and entry.
pub fn validate_batch(old: &TenantConfig, new: &TenantConfig, mutations: &[Mutation]) -> ModelResult<()> {
    let Some(t) = touched(mutations).filter(|_| old.exists()) else { return validate_change(old, new) };
    let scope = Scope {
        catalogs: false,
        folders: false,
        persons: Check::Keys(&t.persons),
        groups: Check::Keys(&t.groups),
        roles: Check::Keys(&t.roles),
        partitions: Check::Keys(&t.partitions),
        objects: Check::Keys(&t.objects),
        aces: Check::Keys(&t.aces),
    };
    let mut sink = Sink::new(1);
    let _ = validate_scope(new, scope, &mut sink);
    sink.first()
}

fn validate_scope(c: &TenantConfig, scope: Scope<'_>, sink: &mut Sink) -> Step {
    sink.check(check_name("tenant.id", c.id.as_str()))?;
    sink.check(check_name("tenant.name", &c.name))?;
    if scope.catalogs {
        validate_catalogs(c, sink)?;
    }
    if scope.folders {
        validate_folders(c, sink)?;
    }
    let folder_ok = |sink: &mut Sink, field: String, f: &FolderId| -> Step {
        if c.folders.contains_key(f) {
            Ok(())
        } else {
            sink.push(ModelError::unknown(format!("{field}.folder"), f.as_str(), "folder"))
        }
    };

    for (p, dup) in to_check(&c.persons, scope.persons, |p| p.username.as_str()) {
        let field = || format!("persons[{}]", p.id);
        sink.lazy(name_problem(p.id.as_str()), || format!("{}.id", field()), p.id.as_str())?;
        sink.lazy(name_problem(&p.username), || format!("{}.username", field()), &p.username)?;
        if dup {
            sink.push(ModelError::duplicate(format!("{}.username", field()), &p.username, "username"))?;
        }
        if !c.folders.contains_key(&p.folder) {
            sink.push(ModelError::unknown(format!("{}.folder", field()), p.folder.as_str(), "folder"))?;
        }
        for (section, options) in &p.annex {
            sink.lazy(name_problem(section), || format!("{}.annex", field()), section)?;
            for key in options.keys() {
                sink.lazy(name_problem(key), || format!("{}.annex.{section}", field()), key)?;
            }
        }
    }

    for (g, dup) in to_check(&c.groups, scope.groups, |g| g.name.as_str()) {
        let field = format!("access_groups[{}]", g.id);
        sink.check(check_name(&format!("{field}.id"), g.id.as_str()))?;
        sink.check(check_name(&format!("{field}.name"), &g.name))?;
        if dup {
            sink.push(ModelError::duplicate(format!("{field}.name"), &g.name, "access group name"))?;
        }
        folder_ok(sink, field.clone(), &g.folder)?;
        for m in &g.members {
            if !c.persons.contains_key(m) {
                sink.push(ModelError::unknown(format!("{field}.members"), m.as_str(), "person"))?;
            }
        }
    }

    for (r, dup) in to_check(&c.roles, scope.roles, |r| r.name.as_str()) {
        let field = format!("roles[{}]", r.id);
        sink.check(check_name(&format!("{field}.id"), r.id.as_str()))?;
        sink.check(check_name(&format!("{field}.name"), &r.name))?;
        if dup {
            sink.push(ModelError::duplicate(format!("{field}.name"), &r.name, "role name"))?;
        }
        folder_ok(sink, field.clone(), &r.folder)?;
        for (app, privs) in &r.privileges {
            let Some(cat) = c.catalogs.get(app) else {
                sink.push(ModelError::unknown(format!("{field}.privileges"), app, "application"))?;
                continue;
            };
            for p in privs {
                if cat.privilege(p).is_none() {
                    sink.push(ModelError::unknown(
                        format!("{field}.privileges.{app}"),
                        p,
                        &format!("privilege of application `{app}`"),
                    ))?;
                }
            }
        }
        for m in &r.members.persons {
            if !c.persons.contains_key(m) {
                sink.push(ModelError::unknown(format!("{field}.members.persons"), m.as_str(), "person"))?;
            }
        }
        for m in &r.members.groups {
            if !c.groups.contains_key(m) {
                sink.push(ModelError::unknown(format!("{field}.members.groups"), m.as_str(), "access group"))?;
            }
        }
    }

    for (p, dup) in to_check(&c.partitions, scope.partitions, |p| p.name.as_str()) {
        let field = format!("partitions[{}]", p.id);
        sink.check(check_name(&format!("{field}.id"), p.id.as_str()))?;
        sink.check(check_name(&format!("{field}.name"), &p.name))?;
        if dup {
            sink.push(ModelError::duplicate(format!("{field}.name"), &p.name, "partition name"))?;
        }
        for m in &p.members {
            if !c.persons.contains_key(m) {
                sink.push(ModelError::unknown(format!("{field}.members"), m.as_str(), "person"))?;
            }
        }
    }

    let mut paths: HashMap<&str, Option<Vec<&str>>> = HashMap::new();
    for (o, dup) in to_check(&c.objects, scope.objects, |o| (o.kind.as_str(), o.name.as_str())) {
        let field = || format!("objects[{}/{}]", o.kind, o.id);
        sink.lazy(plain_name_problem(&o.kind), || format!("{}.type", field()), &o.kind)?;
        if types::RESERVED.contains(&o.kind.as_str()) {
            sink.push(ModelError::invalid(
                format!("{}.type", field()),
                &o.kind,
                format!("`{}` objects are their own entities; use the {} mutations", o.kind, o.kind.to_lowercase()),
            ))?;
        }
        sink.lazy(name_problem(o.id.as_str()), || format!("{}.id", field()), o.id.as_str())?;
        sink.lazy(name_problem(&o.name), || format!("{}.name", field()), &o.name)?;
        if dup {
            sink.push(ModelError::duplicate(format!("{}.name", field()), &o.name, &format!("{} name", o.kind)))?;
        }
        if !c.folders.contains_key(&o.folder) {
            sink.push(ModelError::unknown(format!("{}.folder", field()), o.folder.as_str(), "folder"))?;
        }
        for p in &o.partitions {
            if !c.partitions.contains_key(p) {
                sink.push(ModelError::unknown(format!("{}.partitions", field()), p.as_str(), "partition"))?;
            }
        }
        for k in o.properties.keys() {
            sink.lazy(name_problem(k), || format!("{}.properties", field()), k)?;
        }
        if o.kind == types::METRIC {
            let (app, kind) = match metric_name_parts(&o.name) {
                Ok(parts) => parts,
                Err(m) => {
                    sink.push(ModelError::invalid(format!("{}.name", field()), &o.name, m))?;
                    continue;
                }
            };
            // A missing folder was reported above.
            if !c.folders.contains_key(&o.folder) {
                continue;
            }
            let path = paths.entry(o.folder.as_str()).or_insert_with(|| c.folder_path(&o.folder));
            let path = path.as_deref().unwrap_or_default();
            if path != [METRICS_FOLDER, app, kind] {
                sink.push(ModelError::invalid(
                    format!("{}.folder", field()),
                    o.folder.as_str(),
                    format!(
                        "metric `{}` must live in folder `{METRICS_FOLDER}/{app}/{kind}`, not `{}`",
                        o.name,
                        path.join("/")
                    ),
                ))?;
            }
        }
    }

    // (at most one entry per target and subject: the key, never a duplicate)
    for (ace, _) in to_check(&c.aces, scope.aces, |a| (&a.target, &a.subject)) {
        let field = format!("aces[{} for {}]", target_label(&ace.target), subject_label(&ace.subject));
        let exists = match &ace.target {
            Target::Folder(id) => c.folders.contains_key(id),
            Target::Person(id) => c.persons.contains_key(id),
            Target::Group(id) => c.groups.contains_key(id),
            Target::Role(id) => c.roles.contains_key(id),
            Target::Object(k) => c.objects.contains_key(k),
        };
        if !exists {
            sink.push(ModelError::unknown(format!("{field}.target"), target_label(&ace.target), "target"))?;
        }
        let subject_exists = match &ace.subject {
            Subject::Everyone => true,
            Subject::Person(id) => c.persons.contains_key(id),
            Subject::Group(id) => c.groups.contains_key(id),
        };
        if !subject_exists {
            sink.push(ModelError::unknown(format!("{field}.subject"), subject_label(&ace.subject), "subject"))?;
        }
        if ace.propagate && !matches!(ace.target, Target::Folder(_)) {
            sink.push(ModelError::invalid(
                format!("{field}.propagate"),
                target_label(&ace.target),
                "`propagate` applies only to entries on folders",
            ))?;
        }
    }
    Ok(())
}

fn validate_folders(c: &TenantConfig, sink: &mut Sink) -> Step {
    let roots: Vec<&Folder> = c.folders.values().filter(|f| f.parent.is_none()).collect();
    match roots.as_slice() {
        [_] => {}
        [] => sink.push(ModelError::invalid("folders", "", "the tenant has no root folder"))?,
        [a, rest @ ..] => {
            for b in rest {
                sink.push(ModelError::invalid(
                    format!("folders[{}].parent", b.id),
                    b.id.as_str(),
                    format!("only the root folder may have no parent, and `{}` is the root", a.id),
                ))?;
            }
        }
    }
    let mut siblings: HashSet<(&str, &str)> = HashSet::new();
    for f in c.folders.values() {
        let field = format!("folders[{}]", f.id);
        sink.check(check_name(&format!("{field}.id"), f.id.as_str()))?;
        sink.check(check_name(&format!("{field}.name"), &f.name))?;
        if let Some(p) = &f.parent {
            if !c.folders.contains_key(p) {
                sink.push(ModelError::unknown(format!("{field}.parent"), p.as_str(), "folder"))?;
            }
            if !siblings.insert((p.as_str(), f.name.as_str())) {
                sink.push(ModelError::duplicate(format!("{field}.name"), &f.name, &format!("folder name in `{p}`")))?;
            }
        }
    }
    // Every chain must reach the root: a chain longer than the folder count is a cycle.
    for f in c.folders.values() {
        let mut cur = f;
        let mut steps = 0usize;
        while let Some(p) = &cur.parent {
            steps += 1;
            if steps > c.folders.len() {
                sink.push(ModelError::new(
                    ErrorKind::Cycle,
                    format!("folders[{}].parent", f.id),
                    f.id.as_str(),
                    format!("folder `{}` is its own ancestor", f.id),
                ))?;
                break;
            }
            cur = match c.folders.get(p) {
                Some(x) => x,
                None => break,
            };
        }
    }
    Ok(())
}

fn validate_catalogs(c: &TenantConfig, sink: &mut Sink) -> Step {
    for (key, cat) in c.catalogs.iter() {
        let field = format!("catalogs[{key}]");
        sink.check(check_name(&format!("{field}.name"), &cat.name))?;
        if key != &cat.name {
            sink.push(ModelError::invalid(format!("{field}.name"), &cat.name, "catalog key and name differ"))?;
        }
        let mut inner = Sink::new(sink.limit - sink.errors.len());
        let _ = catalog_errors(cat, &mut inner);
        for e in inner.errors {
            sink.push(e.within(&field))?;
        }
    }
    Ok(())
}

/// Validates one application catalog on its own (presets are checked with it too).
pub fn validate_catalog(cat: &Catalog) -> ModelResult<()> {
    let mut sink = Sink::new(1);
    let _ = catalog_errors(cat, &mut sink);
    sink.first()
}

fn catalog_errors(cat: &Catalog, sink: &mut Sink) -> Step {
    let pattern = match &cat.name_pattern {
        Some(p) => match regex::Regex::new(&format!("^(?:{p})$")) {
            Ok(re) => Some(re),
            Err(e) => {
                sink.push(ModelError::invalid(
                    "name_pattern",
                    p,
                    format!("`{p}` is not a valid regular expression: {e}"),
                ))?;
                None
            }
        },
        None => None,
    };
    let mut known: BTreeMap<&str, &str> = BTreeMap::new(); // name or alias -> canonical
    for p in &cat.privileges {
        for n in std::iter::once(&p.name).chain(&p.aliases) {
            let field = format!("privileges[{}]", p.name);
            sink.check(check_name(&format!("{field}.name"), n))?;
            if let Some(re) = &pattern {
                if !re.is_match(n) {
                    sink.push(ModelError::invalid(
                        format!("{field}.name"),
                        n,
                        format!(
                            "privilege name `{n}` does not match the pattern `{}` of application `{}`",
                            cat.name_pattern.as_deref().unwrap_or_default(),
                            cat.name
                        ),
                    ))?;
                }
            }
            if known.insert(n.as_str(), p.name.as_str()).is_some() {
                sink.push(ModelError::duplicate(format!("{field}.name"), n, "privilege name"))?;
            }
        }
    }
    for p in &cat.privileges {
        for r in &p.requires {
            if !known.contains_key(r.as_str()) {
                sink.push(ModelError::unknown(format!("privileges[{}].requires", p.name), r, "privilege"))?;
            }
        }
    }
    // Acyclic requires: depth-first search with colours over canonical names.
    // After a cycle is reported, the nodes on the search path are closed, so
    // each cycle is reported once.
    let deps: HashMap<&str, Vec<&str>> = cat
        .privileges
        .iter()
        .map(|p| (p.name.as_str(), p.requires.iter().filter_map(|r| known.get(r.as_str()).copied()).collect()))
        .collect();
    let mut state: HashMap<&str, u8> = HashMap::new();
    for p in &cat.privileges {
        let mut stack: Vec<(&str, usize)> = vec![(p.name.as_str(), 0)];
        while let Some((n, i)) = stack.pop() {
            if i == 0 {
                match state.get(n) {
                    Some(2) => continue,
                    Some(1) => {
                        sink.push(ModelError::new(
                            ErrorKind::Cycle,
                            format!("privileges[{n}].requires"),
                            n,
                            format!("privilege `{n}` requires itself through its dependencies"),
                        ))?;
                        state.insert(n, 2);
                        for (m, _) in stack.drain(..) {
                            state.insert(m, 2);
                        }
                        break;
                    }
                    _ => {
                        state.insert(n, 1);
                    }
                }
            }
            let next = deps.get(n).and_then(|d| d.get(i)).copied();
            match next {
                Some(d) => {
                    stack.push((n, i + 1));
                    if state.get(d) == Some(&1) {
                        sink.push(ModelError::new(
                            ErrorKind::Cycle,
                            format!("privileges[{d}].requires"),
                            d,
                            format!("privilege `{d}` requires itself through `{n}`"),
                        ))?;
                        for (m, _) in stack.drain(..) {
                            state.insert(m, 2);
                        }
                        break;
                    }
                    stack.push((d, 0));
                }
                None => {
                    state.insert(n, 2);
                }
            }
        }
    }
    let guard_priv = |sink: &mut Sink, field: String, p: &str| -> Step {
        if known.contains_key(p) { Ok(()) } else { sink.push(ModelError::unknown(field, p, "privilege")) }
    };
    for (i, g) in cat.type_guards.iter().enumerate() {
        sink.check(check_plain_name(&format!("type_guards[{i}].type"), &g.kind))?;
        guard_priv(sink, format!("type_guards[{i}].privilege"), &g.privilege)?;
    }
    let mut seen = BTreeSet::new();
    for (i, g) in cat.type_guards.iter().enumerate() {
        if !seen.insert((&g.kind, g.permission)) {
            sink.push(ModelError::duplicate(
                format!("type_guards[{i}]"),
                format!("{} {}", g.kind, g.permission),
                "type guard",
            ))?;
        }
    }
    let mut seen = BTreeSet::new();
    for (i, g) in cat.property_guards.iter().enumerate() {
        sink.check(check_plain_name(&format!("property_guards[{i}].type"), &g.kind))?;
        sink.check(check_name(&format!("property_guards[{i}].property"), &g.property))?;
        if !matches!(g.access, super::perm::Perm::Read | super::perm::Perm::Change) {
            sink.push(ModelError::invalid(
                format!("property_guards[{i}].access"),
                g.access.name(),
                format!("property guards protect Read or Change, not `{}`", g.access),
            ))?;
        }
        guard_priv(sink, format!("property_guards[{i}].privilege"), &g.privilege)?;
        if !seen.insert((&g.kind, &g.property, g.access)) {
            sink.push(ModelError::duplicate(
                format!("property_guards[{i}]"),
                format!("{} {} {}", g.kind, g.property, g.access),
                "property guard",
            ))?;
        }
    }
    let mut legacy = HashSet::new();
    let mut role_names = HashSet::new();
    for r in &cat.roles {
        let field = format!("roles[{}]", r.name);
        sink.check(check_name(&format!("{field}.name"), &r.name))?;
        if !role_names.insert(r.name.as_str()) {
            sink.push(ModelError::duplicate(format!("{field}.name"), &r.name, "role name"))?;
        }
        if let Some(l) = &r.legacy_name {
            sink.check(check_name(&format!("{field}.legacy_name"), l))?;
            if !legacy.insert(l.as_str()) {
                sink.push(ModelError::duplicate(format!("{field}.legacy_name"), l, "legacy role name"))?;
            }
        }
        for p in &r.privileges {
            guard_priv(sink, format!("{field}.privileges"), p)?;
        }
    }
    for s in &cat.legacy_annex_sections {
        sink.check(check_name("legacy_annex_sections", s))?;
    }
    for t in &cat.restricted_types {
        sink.check(check_plain_name("restricted_types", t))?;
    }
    for r in &cat.role_rank {
        sink.check(check_name("role_rank", r))?;
    }
    Ok(())
}
