//! `authzd test FILE...`: assertion files run offline, in process, on the
//! engine — no server. An assertion file names a tenant (a tenant file next
//! to it, or one written inline), optional edits applied first (the syntax of
//! `authzd write` files), and what the tenant must answer: checks, listings,
//! effective privileges, and the reverse lookups (who may, who holds). See
//! README "authzd test" for the format.

use crate::engine::{CheckRequest, ListRequest, ObjectRef, PrivilegeSource, Reason, TenantView};
use crate::model::file::FileCheck;
use crate::model::yaml::{Pos, SourceMap};
use crate::model::{Mutation, Perm, TenantConfig, TenantFile};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// An assertion file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssertionFile {
    /// A tenant file, relative to the assertion file's directory.
    #[serde(default)]
    pub tenant: Option<PathBuf>,
    /// A whole tenant file written inline.
    #[serde(default)]
    pub tenant_inline: Option<Box<TenantFile>>,
    /// Mutations applied to the tenant first, as one batch.
    #[serde(default)]
    pub edits: Vec<Mutation>,
    /// Check decisions.
    #[serde(default)]
    pub checks: Vec<CheckCase>,
    /// Listings (ListVisible): exactly these object ids.
    #[serde(default)]
    pub listings: Vec<ListingCase>,
    /// Effective privileges of a person in an application.
    #[serde(default)]
    pub privileges: Vec<PrivilegesCase>,
    /// Reverse lookup: exactly these persons does the check allow.
    #[serde(default)]
    pub subjects: Vec<SubjectsCase>,
    /// Reverse lookup: exactly these persons hold the privilege.
    #[serde(default)]
    pub holders: Vec<HoldersCase>,
}

/// An object named by an assertion.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectSpec {
    /// Object type (`Script`, `Metric`, `Folder`, `Person`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// Object id.
    pub id: String,
}

/// The expected decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// Allowed.
    Allow,
    /// Denied.
    Deny,
}

/// One check and its expected decision.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckCase {
    /// Person id.
    pub person: String,
    /// Application context.
    #[serde(default)]
    pub application: Option<String>,
    /// Privilege that must be effective (needs `application`).
    #[serde(default)]
    pub privilege: Option<String>,
    /// Object to check the permission on.
    #[serde(default)]
    pub object: Option<ObjectSpec>,
    /// Permission (`Read`, `Execute`, ...).
    #[serde(default)]
    pub permission: Option<Perm>,
    /// Property touched (needs `object`).
    #[serde(default)]
    pub property: Option<String>,
    /// `allow` or `deny`.
    pub expect: Expect,
    /// The expected reason code (`NO_GRANT`, `ALLOWED`, ...).
    #[serde(default)]
    pub reason: Option<String>,
}

/// One listing and the ids it must give.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListingCase {
    /// Person id.
    pub person: String,
    /// Object type listed.
    #[serde(rename = "type")]
    pub kind: String,
    /// Only objects under this folder.
    #[serde(default)]
    pub folder: Option<String>,
    /// Permission needed (default Read).
    #[serde(default)]
    pub permission: Option<Perm>,
    /// Application context.
    #[serde(default)]
    pub application: Option<String>,
    /// Exactly these object ids.
    pub expect: Vec<String>,
}

/// Where effective privileges come from, as an assertion names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceName {
    /// Assigned roles.
    Roles,
    /// A legacy annex `role` option.
    LegacyAnnex,
    /// The application's open-when-unconfigured rule.
    OpenWhenUnconfigured,
}

fn some<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A person's effective privileges in an application.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivilegesCase {
    /// Person id.
    pub person: String,
    /// Application.
    pub application: String,
    /// Exactly these effective privileges (canonical names), when given.
    #[serde(default)]
    pub expect: Option<Vec<String>>,
    /// The primary role; `null` for none. Not checked when absent.
    #[serde(default, deserialize_with = "some")]
    pub primary_role: Option<Option<String>>,
    /// Where the privileges come from.
    #[serde(default)]
    pub source: Option<SourceName>,
    /// Exactly these granted-but-unmet privileges, when given.
    #[serde(default)]
    pub unmet: Option<Vec<String>>,
}

/// A check whose allowed persons are asserted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectsCase {
    /// Application context.
    #[serde(default)]
    pub application: Option<String>,
    /// Privilege that must be effective.
    #[serde(default)]
    pub privilege: Option<String>,
    /// Object.
    #[serde(default)]
    pub object: Option<ObjectSpec>,
    /// Permission.
    #[serde(default)]
    pub permission: Option<Perm>,
    /// Property touched.
    #[serde(default)]
    pub property: Option<String>,
    /// Exactly these person ids.
    pub expect: Vec<String>,
}

/// A privilege whose holders are asserted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldersCase {
    /// Application.
    pub application: String,
    /// Privilege (a name or an alias).
    pub privilege: String,
    /// Exactly these person ids.
    pub expect: Vec<String>,
}

/// The reason whose code (as the server logs it: `NO_GRANT`) is `code`.
pub fn reason_of_code(code: &str) -> Option<Reason> {
    Reason::ALL.iter().copied().find(|r| r.code() == code)
}

/// One failed assertion, or a problem of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Where in the assertion file (line and column from 1; line 0 when unknown).
    pub pos: Pos,
    /// The assertion's path (`checks[1]`), or the field of a problem.
    pub path: String,
    /// What differs, or what is wrong.
    pub message: String,
}

/// What running one assertion file gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Assertions run.
    pub assertions: usize,
    /// Failed assertions.
    pub failures: Vec<Failure>,
    /// Problems that kept the file from running (bad file, bad tenant, bad edits).
    pub errors: Vec<Failure>,
}

impl Outcome {
    /// Whether every assertion held and the file ran.
    pub fn passed(&self) -> bool {
        self.failures.is_empty() && self.errors.is_empty()
    }
}

fn error(pos: Pos, path: impl Into<String>, message: impl Into<String>) -> Outcome {
    Outcome {
        assertions: 0,
        failures: Vec::new(),
        errors: vec![Failure { pos, path: path.into(), message: message.into() }],
    }
}

/// Runs the assertion file at `path`.
pub fn run_file(path: &Path) -> Outcome {
    match std::fs::read_to_string(path) {
        Ok(text) => run_text(&text, path.parent().unwrap_or(Path::new("."))),
        Err(e) => error(Pos::default(), "", format!("cannot read {}: {e}", path.display())),
    }
}

/// Runs an assertion file's text; `dir` is where a `tenant:` path is relative to.
pub fn run_text(text: &str, dir: &Path) -> Outcome {
    let file: AssertionFile = match crate::model::yaml::parse(text) {
        Ok(f) => f,
        Err((pos, path, message)) => return error(pos.unwrap_or(Pos { line: 1, column: 1 }), path, message),
    };
    let map = match crate::model::yaml::source_map(text, true) {
        Ok((map, dups)) => {
            if let Some(d) = dups.first() {
                return error(d.at, d.path.clone(), format!("duplicate key (first at {})", d.first));
            }
            map
        }
        Err((pos, message)) => return error(pos, "", message),
    };
    let config = match load_tenant(&file, dir, &map) {
        Ok(c) => c,
        Err(o) => return o,
    };
    let config = if file.edits.is_empty() {
        config
    } else {
        match config.apply_batch(&file.edits) {
            Ok(c) => c,
            Err(e) => {
                // A mutation that does not apply names its index; the tenant the
                // edits leave invalid names the field of the configuration.
                return match e.field.strip_prefix("mutations") {
                    Some(rest) => {
                        let field = format!("edits{rest}");
                        let at = field.find(']').map_or("edits", |i| &field[..=i]).to_owned();
                        error(map.pos(&at), field, e.message)
                    }
                    None => error(map.pos("edits"), "edits", format!("the edited tenant is invalid: {e}")),
                };
            }
        }
    };
    let view = TenantView::build(&config, 1);
    let mut out = Outcome { assertions: 0, failures: Vec::new(), errors: Vec::new() };
    let mut record = |path: String, result: Result<(), String>| {
        out.assertions += 1;
        if let Err(message) = result {
            out.failures.push(Failure { pos: map.pos(&path), path, message });
        }
    };
    for (i, c) in file.checks.iter().enumerate() {
        record(format!("checks[{i}]"), run_check(&view, c));
    }
    for (i, c) in file.listings.iter().enumerate() {
        record(format!("listings[{i}]"), run_listing(&view, c));
    }
    for (i, c) in file.privileges.iter().enumerate() {
        record(format!("privileges[{i}]"), run_privileges(&view, c));
    }
    for (i, c) in file.subjects.iter().enumerate() {
        record(format!("subjects[{i}]"), run_subjects(&view, c));
    }
    for (i, c) in file.holders.iter().enumerate() {
        record(format!("holders[{i}]"), run_holders(&view, c));
    }
    // A bad reason code is a problem of the file, not a failed assertion.
    for (i, c) in file.checks.iter().enumerate() {
        if let Some(code) = &c.reason {
            let path = format!("checks[{i}].reason");
            match reason_of_code(code) {
                None => out.errors.push(Failure {
                    pos: map.pos(&path),
                    path,
                    message: format!(
                        "unknown reason `{code}` (expected one of {})",
                        Reason::ALL.iter().map(|r| r.code()).collect::<Vec<_>>().join(", ")
                    ),
                }),
                Some(r) if r.is_allowed() != (c.expect == Expect::Allow) => out.errors.push(Failure {
                    pos: map.pos(&path),
                    path,
                    message: format!(
                        "reason `{code}` is {}, but `expect` is {}",
                        if r.is_allowed() { "an allow" } else { "not an allow" },
                        expect_name(c.expect)
                    ),
                }),
                Some(_) => {}
            }
        }
    }
    if file.checks.is_empty()
        && file.listings.is_empty()
        && file.privileges.is_empty()
        && file.subjects.is_empty()
        && file.holders.is_empty()
    {
        out.errors.push(Failure {
            pos: map.pos(""),
            path: String::new(),
            message: "no assertions: give at least one of checks, listings, privileges, subjects, holders".into(),
        });
    }
    if !out.errors.is_empty() {
        out.failures.clear();
    }
    out
}

fn load_tenant(file: &AssertionFile, dir: &Path, map: &SourceMap) -> Result<TenantConfig, Outcome> {
    match (&file.tenant, &file.tenant_inline) {
        (Some(_), Some(_)) => Err(error(
            map.pos("tenant_inline"),
            "tenant_inline",
            "give either `tenant` (a file) or `tenant_inline`, not both",
        )),
        (None, None) => Err(error(
            Pos { line: 1, column: 1 },
            "tenant",
            "missing the tenant: `tenant: <tenant file>` or `tenant_inline: {...}`",
        )),
        (None, Some(t)) => {
            t.to_config().map_err(|e| error(map.pos("tenant_inline"), format!("tenant_inline.{}", e.field), e.message))
        }
        (Some(rel), None) => {
            let path = dir.join(rel);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                error(map.pos("tenant"), "tenant", format!("cannot read tenant file {}: {e}", path.display()))
            })?;
            let FileCheck { config, problems } = TenantFile::check_text(&text);
            config.ok_or_else(|| Outcome {
                assertions: 0,
                failures: Vec::new(),
                errors: problems
                    .into_iter()
                    .map(|p| Failure {
                        pos: map.pos("tenant"),
                        path: "tenant".into(),
                        message: format!(
                            "{}:{}: {}{}",
                            path.display(),
                            p.pos,
                            if p.path.is_empty() { String::new() } else { format!("{}: ", p.path) },
                            p.message
                        ),
                    })
                    .collect(),
            })
        }
    }
}

fn expect_name(e: Expect) -> &'static str {
    match e {
        Expect::Allow => "allow",
        Expect::Deny => "deny",
    }
}

fn object_ref(o: &Option<ObjectSpec>) -> Option<ObjectRef<'_>> {
    o.as_ref().map(|o| ObjectRef { kind: &o.kind, id: &o.id, tenant: None })
}

fn run_check(view: &TenantView, c: &CheckCase) -> Result<(), String> {
    let d = view.check(&CheckRequest {
        subject: &c.person,
        application: c.application.as_deref(),
        permission: c.permission,
        object: object_ref(&c.object),
        privilege: c.privilege.as_deref(),
        property: c.property.as_deref(),
    });
    let got = if d.allowed() { Expect::Allow } else { Expect::Deny };
    let reason_ok = c.reason.as_deref().is_none_or(|r| r == d.reason.code());
    if got == c.expect && reason_ok {
        return Ok(());
    }
    let want = match &c.reason {
        Some(r) => format!("{} ({r})", expect_name(c.expect)),
        None => expect_name(c.expect).to_owned(),
    };
    Err(format!("expected {want}, got {} ({})", expect_name(got), d.reason.code()))
}

/// `missing: [..], unexpected: [..]` between an expected and an actual set, or `None` when equal.
fn set_difference<'a>(
    expected: impl IntoIterator<Item = &'a str>,
    got: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let expected: BTreeSet<&str> = expected.into_iter().collect();
    let got: BTreeSet<&str> = got.into_iter().collect();
    let missing: Vec<&str> = expected.difference(&got).copied().collect();
    let unexpected: Vec<&str> = got.difference(&expected).copied().collect();
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("missing: [{}]", missing.join(", ")));
    }
    if !unexpected.is_empty() {
        parts.push(format!("unexpected: [{}]", unexpected.join(", ")));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

fn run_listing(view: &TenantView, c: &ListingCase) -> Result<(), String> {
    let r = ListRequest {
        subject: &c.person,
        kind: &c.kind,
        folder: c.folder.as_deref(),
        permission: c.permission.unwrap_or(Perm::Read),
        application: c.application.as_deref(),
        after: None,
        limit: usize::MAX,
    };
    let ids = view.visible_ids(&r).map_err(|reason| format!("the listing failed: {}", reason.code()))?;
    match set_difference(c.expect.iter().map(String::as_str), ids) {
        None => Ok(()),
        Some(d) => Err(d),
    }
}

fn source_name(s: &PrivilegeSource) -> &'static str {
    match s {
        PrivilegeSource::Roles => "roles",
        PrivilegeSource::LegacyAnnex { .. } => "legacy_annex",
        PrivilegeSource::OpenWhenUnconfigured => "open_when_unconfigured",
    }
}

fn run_privileges(view: &TenantView, c: &PrivilegesCase) -> Result<(), String> {
    let e = view
        .effective_privileges(&c.person, &c.application)
        .map_err(|reason| format!("no privileges: {}", reason.code()))?;
    let mut problems = Vec::new();
    if let Some(want) = &c.expect {
        if let Some(d) = set_difference(want.iter().map(String::as_str), e.privileges.iter().map(String::as_str)) {
            problems.push(format!("privileges {d}"));
        }
    }
    if let Some(want) = &c.unmet {
        if let Some(d) = set_difference(want.iter().map(String::as_str), e.unmet.iter().map(String::as_str)) {
            problems.push(format!("unmet {d}"));
        }
    }
    if let Some(want) = &c.primary_role {
        if want != &e.primary_role {
            let show = |r: &Option<String>| r.as_ref().map_or_else(|| "none".to_owned(), |r| format!("\"{r}\""));
            problems.push(format!("primary role: expected {}, got {}", show(want), show(&e.primary_role)));
        }
    }
    if let Some(want) = c.source {
        let want = match want {
            SourceName::Roles => "roles",
            SourceName::LegacyAnnex => "legacy_annex",
            SourceName::OpenWhenUnconfigured => "open_when_unconfigured",
        };
        if want != source_name(&e.source) {
            problems.push(format!("source: expected {want}, got {}", source_name(&e.source)));
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
}

/// Page size of the reverse lookups (every page is read).
const PAGE: usize = 1000;

fn run_subjects(view: &TenantView, c: &SubjectsCase) -> Result<(), String> {
    let r = CheckRequest {
        subject: "",
        application: c.application.as_deref(),
        permission: c.permission,
        object: object_ref(&c.object),
        privilege: c.privilege.as_deref(),
        property: c.property.as_deref(),
    };
    let mut got: Vec<&str> = Vec::new();
    let mut after: Option<&str> = None;
    loop {
        let page =
            view.allowed_subjects(&r, after, PAGE).map_err(|reason| format!("the lookup failed: {}", reason.code()))?;
        got.extend(page.items.iter().map(|s| s.person));
        match page.next_after {
            Some(a) => after = Some(a),
            None => break,
        }
    }
    set_difference(c.expect.iter().map(String::as_str), got).map_or(Ok(()), Err)
}

fn run_holders(view: &TenantView, c: &HoldersCase) -> Result<(), String> {
    let mut got: Vec<&str> = Vec::new();
    let mut after: Option<&str> = None;
    loop {
        let page = view
            .privilege_holders(&c.application, &c.privilege, after, PAGE)
            .map_err(|reason| format!("the lookup failed: {}", reason.code()))?;
        got.extend(page.items.iter().map(|h| h.person));
        match page.next_after {
            Some(a) => after = Some(a),
            None => break,
        }
    }
    set_difference(c.expect.iter().map(String::as_str), got).map_or(Ok(()), Err)
}
