//! The shipped presets against the seed documents (SPEC §1, §3, §5): every
//! privilege the documents name exists by its exact name in the right catalog,
//! the dependency chains are the documents' ones, the default roles grant what the
//! documents list, a new tenant gets the documented skeleton, and the demo tenant
//! (`examples/acme.yaml`) loads and survives an export round trip.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use authzd::model::validate::validate_catalog;
use authzd::model::{
    Catalog, FolderId, GroupId, Mutation, ObjectKey, Perm, PermSet, PrivilegeDef, RoleId, Subject, Target,
    TenantConfig, TenantFile,
};
use std::collections::{BTreeMap, BTreeSet};
use support::WEB_CALLBACK_PRIVILEGES;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const APP_PRESETS: [&str; 5] = ["callback", "workspace_web_callback", "genesys_administrator", "advisors", "designer"];

fn catalog(preset: &str) -> &'static Catalog {
    authzd::model::presets::catalog(preset).unwrap_or_else(|e| panic!("preset {preset}: {e}"))
}

fn names(cat: &Catalog) -> BTreeSet<&str> {
    cat.privileges.iter().map(|p| p.name.as_str()).collect()
}

fn set<'a>(items: &[&'a str]) -> BTreeSet<&'a str> {
    items.iter().copied().collect()
}

fn privilege<'a>(cat: &'a Catalog, name: &str) -> &'a PrivilegeDef {
    cat.privilege(name).unwrap_or_else(|| panic!("{}: no privilege `{name}`", cat.name))
}

fn requires<'a>(cat: &'a Catalog, name: &str) -> BTreeSet<&'a str> {
    privilege(cat, name).requires.iter().map(String::as_str).collect()
}

fn template<'a>(cat: &'a Catalog, role: &str) -> BTreeSet<&'a str> {
    cat.roles
        .iter()
        .find(|r| r.name == role)
        .unwrap_or_else(|| panic!("{}: no role template `{role}`", cat.name))
        .privileges
        .iter()
        .map(String::as_str)
        .collect()
}

// ---------------------------------------------------------------- the documents' lists

/// seeds/000: the Callback features (view, create, cancel, reschedule, export
/// reports, Developer tab and its three features).
const CALLBACK: [&str; 9] = [
    "Callback - View",
    "Callback - Create",
    "Callback - Cancel",
    "Callback - Reschedule",
    "Callback - Export Reports",
    "Callback - Developer Tab",
    "Callback - View Recent Errors",
    "Callback - Test API Keys",
    "Callback - Provision",
];

/// seeds/001: the table's "Role privilege" column, spelled exactly as the table does.
const WEB_CALLBACK_TABLE: [&str; 9] = [
    "Web Callback - Can Cancel",
    "Web Callback - Can Use Callback Channel",
    "Web Callback - Can Decline",
    "Web Callback - Can Reject",
    "Web Callback - Can Reschedule",
    "Can Reschedule Before Call",
    "Web Callback - Can Reschedule On New Number",
    "Web Callback - Can Set Interaction Disposition",
    "Web Callback - Can Mark Done",
];

const ACCOUNT_ITEMS: [&str; 7] =
    ["Users", "Agent Groups", "Access Groups", "Skills", "Roles", "Capacity Rules", "Agent Info"];
const ENVIRONMENT_ITEMS: [&str; 5] = ["Applications", "Hosts", "Scripts", "Tenants", "Time Zones"];
const PROVISIONING_SECTIONS: [&str; 7] =
    ["Accounts", "Environment", "Switching", "Routing/eServices", "Desktop", "Outbound Contact", "Voice Platform"];
/// seeds/002 "Hierarchical Access": the four functional modules.
const MODULES: [&str; 4] = ["Monitoring", "Provisioning", "Deployment", "Operations"];

/// seeds/002: the privileges of the clerk example's table.
const HR_CLERK: [&str; 4] = [
    "Modules > Provisioning",
    "Provisioning > Accounts",
    "Account Provisioning > Agent Info",
    "Account Provisioning > Users",
];
const OPERATIONS_CLERK: [&str; 3] =
    ["Modules > Provisioning", "Provisioning > Accounts", "Account Provisioning > Skills"];

fn genesys_administrator_names() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    out.extend(MODULES.iter().map(|m| format!("Modules > {m}")));
    out.extend(PROVISIONING_SECTIONS.iter().map(|s| format!("Provisioning > {s}")));
    out.extend(ACCOUNT_ITEMS.iter().map(|i| format!("Account Provisioning > {i}")));
    out.extend(ENVIRONMENT_ITEMS.iter().map(|i| format!("Environment Provisioning > {i}")));
    out
}

/// seeds/003, Administration Module table (CCAdv/WA).
const ADVISORS_ADMINISTRATION: [&str; 20] = [
    "AdvisorsAdministration.canView",
    "AdvisorsAdministration.DeletedObjects.canView",
    "AdvisorsAdministration.SystemConfiguration.canView",
    "AdvisorsAdministration.Regions.canView",
    "AdvisorsAdministration.ApplicationGroups.canView",
    "AdvisorsAdministration.ContactCenters.canView",
    "AdvisorsAdministration.ApplicationConfiguration.canView",
    "AdvisorsAdministration.AgentGroupConfiguration.canView",
    "AdvisorsAdministration.ContactGroupConfiguration.canView",
    "AdvisorsAdministration.Metrics.canView",
    "AdvisorsAdministration.MMW.canCreate",
    "AdvisorsAdministration.MMW.canEdit",
    "AdvisorsAdministration.MMW.canDelete",
    "AdvisorsAdministration.MMW.SourceMetrics.canView",
    "AdvisorsAdministration.MMW.SourceMetrics.canCreate",
    "AdvisorsAdministration.MMW.SourceMetrics.canEdit",
    "AdvisorsAdministration.MMW.SourceMetrics.canDelete",
    "AdvisorsAdministration.DistributionLists.canView",
    "AdvisorsAdministration.ManualAlerts.canView",
    "AdvisorsAdministration.RMC.Notifications.canView",
];
/// seeds/003, Advisors Dashboards table.
const ADVISORS_DASHBOARDS: [&str; 4] = [
    "Advisors.ChangePassword.canView",
    "Advisors.RMC.canView",
    "Advisors.RMC.ManageAgentSkills.canView",
    "Advisors.RMC.ManageAgentStatus.canView",
];
/// seeds/003, Contact Center Advisor table.
const CCADV: [&str; 5] = [
    "ContactCenterAdvisor.Dashboard.canView",
    "ContactCenterAdvisor.Dashboard.AgentGroupsPane.canView",
    "ContactCenterAdvisor.Dashboard.ColumnChooser.canView",
    "ContactCenterAdvisor.Dashboard.EnterpriseStats.canView",
    "ContactCenterAdvisor.Dashboard.PivotSelect.canView",
];
/// seeds/003, Workforce Advisor table.
const WA: [&str; 5] = [
    "WorkforceAdvisor.Dashboard.AgentGroupsPane.canView",
    "WorkforceAdvisor.Dashboard.canView",
    "WorkforceAdvisor.Dashboard.ColumnChooser.canView",
    "WorkforceAdvisor.Dashboard.EnterpriseStats.canView",
    "WorkforceAdvisor.Dashboard.PivotSelect.canView",
];
/// seeds/003, the three FA tables (Administration Module, Advisors Dashboards,
/// Frontline Advisor Dashboard), including the names they repeat.
const FA: [&str; 19] = [
    "AdvisorsAdministration.canView",
    "Advisors.ChangePassword.canView",
    "AdvisorsAdministration.Metrics.canView",
    "AdvisorsAdministration.MMW.canCreate",
    "AdvisorsAdministration.MMW.canEdit",
    "AdvisorsAdministration.MMW.canDelete",
    "AdvisorsAdministration.MMW.SourceMetrics.canView",
    "AdvisorsAdministration.MMW.SourceMetrics.canCreate",
    "AdvisorsAdministration.MMW.SourceMetrics.canEdit",
    "AdvisorsAdministration.MMW.SourceMetrics.canDelete",
    "FrontlineAdvisor.SupervisorDashboard.canView",
    "FrontlineAdvisor.SupervisorDashboard.TeamsPane.canView",
    "FrontlineAdvisor.SupervisorDashboard.AlertsPane.canView",
    "FrontlineAdvisor.SupervisorDashboard.ColumnChooser.canView",
    "FrontlineAdvisor.SupervisorDashboard.TeamsPane.canSort",
    "FrontlineAdvisor.SupervisorDashboard.TeamAlertsPane.canSort",
    "FrontlineAdvisor.Administration.canView",
    "FrontlineAdvisor.Administration.Settings.canView",
    "FrontlineAdvisor.Administration.Hierarchy.canReload",
];

const SD: &str = "FrontlineAdvisor.SupervisorDashboard.canView";
const TEAMS: &str = "FrontlineAdvisor.SupervisorDashboard.TeamsPane.canView";
const ALERTS: &str = "FrontlineAdvisor.SupervisorDashboard.AlertsPane.canView";
const FA_ADMIN: &str = "FrontlineAdvisor.Administration.canView";
const FA_SETTINGS: &str = "FrontlineAdvisor.Administration.Settings.canView";

/// seeds/003, FA table: every "must also be present" / "Requires" note.
fn advisors_requires() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    BTreeMap::from([
        (TEAMS, set(&[SD])),
        (ALERTS, set(&[SD, TEAMS])),
        ("FrontlineAdvisor.SupervisorDashboard.ColumnChooser.canView", set(&[SD])),
        ("FrontlineAdvisor.SupervisorDashboard.TeamsPane.canSort", set(&[SD, TEAMS])),
        ("FrontlineAdvisor.SupervisorDashboard.TeamAlertsPane.canSort", set(&[SD, TEAMS, ALERTS])),
        (FA_SETTINGS, set(&[FA_ADMIN])),
        ("FrontlineAdvisor.Administration.Hierarchy.canReload", set(&[FA_ADMIN, FA_SETTINGS])),
    ])
}

fn advisors_names() -> BTreeSet<&'static str> {
    ADVISORS_ADMINISTRATION.iter().chain(&ADVISORS_DASHBOARDS).chain(&CCADV).chain(&WA).chain(&FA).copied().collect()
}

const DESIGNER_ROLES: [&str; 4] =
    ["Designer Developer", "Designer Business User", "Designer Administrator", "Designer Analytics"];

/// seeds/004's tables: (privilege, ticks for Developer, Business User,
/// Administrator, Analytics), read row by row.
const DESIGNER_TABLES: [(&str, [bool; 4]); 31] = [
    // Media Resources
    ("MediaResources.View", [true, true, true, false]),
    ("MediaResources.Modify", [true, true, false, false]),
    ("MediaResources.Create", [true, true, false, false]),
    ("MediaResources.Delete", [true, false, false, false]),
    // Message Resources
    ("MessageResources.View", [true, true, true, false]),
    ("MessageResources.Modify", [true, false, false, false]),
    ("MessageResources.Create", [true, false, false, false]),
    ("MessageResources.Delete", [true, false, false, false]),
    // Applications
    ("Applications.View", [true, true, true, false]),
    ("Applications.Modify", [true, false, false, false]),
    ("Applications.Create", [true, false, false, false]),
    ("Applications.Delete", [true, false, false, false]),
    ("Applications.SwitchToLastSnapshot", [true, true, false, false]),
    ("Applications.AssignPhoneNumbers", [true, true, true, false]),
    ("Applications.ChangeBlockProperties", [true, false, false, false]),
    // Shared Modules
    ("SharedModules.View", [true, true, true, false]),
    ("SharedModules.Modify", [true, false, false, false]),
    ("SharedModules.Create", [true, false, false, false]),
    ("SharedModules.Delete", [true, false, false, false]),
    // Speech Grammars
    ("SpeechGrammars.View", [true, true, true, false]),
    ("SpeechGrammars.Modify", [true, false, false, false]),
    ("SpeechGrammars.Create", [true, false, false, false]),
    ("SpeechGrammars.Delete", [true, false, false, false]),
    // Bot Registry
    ("BotRegistry.View", [true, true, true, false]),
    ("BotRegistry.Modify", [true, false, false, false]),
    ("BotRegistry.Create", [true, false, false, false]),
    ("BotRegistry.Delete", [true, false, false, false]),
    // Business Controls
    ("BusinessControls.View", [true, true, true, false]),
    ("BusinessControls.Modify", [true, true, false, false]),
    ("BusinessControls.Create", [true, true, false, false]),
    ("BusinessControls.Delete", [true, true, false, false]),
];
const DESIGNER_OTHERS: [&str; 6] = [
    "Analytics.View",
    "Analytics.Modify",
    "Admin.ManagePartitions",
    "Admin.ManageUsers",
    "Tools.PIIRules",
    "Tools.StandardResponses",
];

// ---------------------------------------------------------------- loading

#[test]
fn every_preset_loads_and_every_catalog_validates() -> TestResult {
    let all = authzd::model::presets::all()?;
    let mut expected: BTreeSet<&str> = APP_PRESETS.into_iter().collect();
    expected.insert(authzd::model::presets::CORE);
    assert_eq!(all.keys().map(String::as_str).collect::<BTreeSet<_>>(), expected);
    let apps = [
        ("callback", "Callback"),
        ("workspace_web_callback", "WorkspaceWebCallback"),
        ("genesys_administrator", "GenesysAdministrator"),
        ("advisors", "Advisors"),
        ("designer", "Designer"),
    ];
    for (preset, app) in apps {
        let p = authzd::model::presets::get(preset)?;
        assert_eq!(p.name, preset);
        assert!(!p.description.is_empty(), "{preset}: no description");
        let cat = p.catalog.as_ref().unwrap_or_else(|| panic!("{preset}: no catalog"));
        assert_eq!(cat.name, app, "{preset}: catalog name");
        validate_catalog(cat)?;
        for pr in &cat.privileges {
            assert!(!pr.description.is_empty(), "{app}: `{}` has no description", pr.name);
        }
        for r in &p.default_roles {
            assert!(cat.roles.iter().any(|t| t.name == r.template), "{preset}: unknown template {}", r.template);
        }
    }
    assert!(authzd::model::presets::catalog(authzd::model::presets::CORE).is_err(), "core has no catalog");
    Ok(())
}

// ---------------------------------------------------------------- Callback (seeds/000)

#[test]
fn callback_catalog_is_the_documents() {
    let cat = catalog("callback");
    assert_eq!(names(cat), set(&CALLBACK));
    for name in ["Callback - Create", "Callback - Cancel", "Callback - Reschedule", "Callback - Export Reports"] {
        assert_eq!(requires(cat, name), set(&["Callback - View"]), "{name}");
    }
    for name in ["Callback - View Recent Errors", "Callback - Test API Keys", "Callback - Provision"] {
        assert_eq!(requires(cat, name), set(&["Callback - Developer Tab"]), "{name}");
    }
    assert!(requires(cat, "Callback - View").is_empty());
    assert!(requires(cat, "Callback - Developer Tab").is_empty());
    // Callback-tab tasks are checked with Read on the queue's script (SPEC §5).
    for name in &CALLBACK[..5] {
        assert_eq!(privilege(cat, name).permission, Some(Perm::Read), "{name}");
    }
    assert!(cat.open_when_unconfigured);
    assert_eq!(cat.legacy_annex_sections, ["ges", "gms"]);
    assert_eq!(
        cat.role_rank,
        ["Callback Administrator", "Callback Supervisor", "Callback Developer", "Callback Monitor"]
    );
    assert!(cat.type_guards.is_empty() && cat.property_guards.is_empty());

    let legacy: BTreeMap<&str, &str> =
        cat.roles.iter().filter_map(|r| Some((r.name.as_str(), r.legacy_name.as_deref()?))).collect();
    assert_eq!(
        legacy,
        BTreeMap::from([
            ("Callback Administrator", "Administrator"),
            ("Callback Supervisor", "Supervisor"),
            ("Callback Monitor", "Monitor"),
            ("Callback Developer", "Developer"),
        ])
    );
    // seeds/000 "Callback Roles".
    assert_eq!(template(cat, "Callback Administrator"), set(&CALLBACK));
    assert_eq!(template(cat, "Callback Supervisor"), set(&CALLBACK[..5]));
    assert_eq!(template(cat, "Callback Monitor"), set(&["Callback - View"]));
    assert_eq!(
        template(cat, "Callback Developer"),
        set(&[
            "Callback - View",
            "Callback - Developer Tab",
            "Callback - View Recent Errors",
            "Callback - Test API Keys",
            "Callback - Provision"
        ])
    );
}

// ---------------------------------------------------------------- Web Callback (seeds/001)

#[test]
fn web_callback_catalog_is_the_documents() {
    let cat = catalog("workspace_web_callback");
    assert_eq!(names(cat), set(&WEB_CALLBACK_PRIVILEGES));
    // Both spellings of the document resolve, answers use the canonical name.
    for (table, canonical) in WEB_CALLBACK_TABLE.iter().zip(WEB_CALLBACK_PRIVILEGES) {
        assert_eq!(privilege(cat, table).name, canonical, "{table}");
    }
    let channel = "Web Callback - Can Use Web Callback Channel";
    for name in ["Web Callback - Can Cancel", "Web Callback - Can Reject", "Web Callback - Can Reschedule"] {
        assert_eq!(requires(cat, name), set(&[channel]), "{name}");
    }
    assert_eq!(requires(cat, "Can Reschedule Before Call"), set(&["Web Callback - Can Reschedule"]));
    for name in [
        channel,
        "Web Callback - Can Decline",
        "Web Callback - Can Reschedule On New Number",
        "Web Callback - Can Set Interaction Disposition",
        "Web Callback - Can Mark Done",
    ] {
        assert!(requires(cat, name).is_empty(), "{name}: the document states no dependency");
    }
    assert_eq!(template(cat, "Web Callback Agent"), set(&WEB_CALLBACK_PRIVILEGES));
    assert!(authzd::model::presets::get("workspace_web_callback").map(|p| p.default_roles.is_empty()).unwrap_or(false));
}

// ---------------------------------------------------------------- Genesys Administrator (seeds/002)

#[test]
fn genesys_administrator_catalog_is_module_section_item() {
    let cat = catalog("genesys_administrator");
    let expected = genesys_administrator_names();
    assert_eq!(names(cat), expected.iter().map(String::as_str).collect());
    for name in HR_CLERK.iter().chain(&OPERATIONS_CLERK) {
        privilege(cat, name);
    }
    for m in MODULES {
        assert!(requires(cat, &format!("Modules > {m}")).is_empty());
    }
    for s in PROVISIONING_SECTIONS {
        assert_eq!(requires(cat, &format!("Provisioning > {s}")), set(&["Modules > Provisioning"]), "{s}");
    }
    for i in ACCOUNT_ITEMS {
        assert_eq!(requires(cat, &format!("Account Provisioning > {i}")), set(&["Provisioning > Accounts"]), "{i}");
    }
    for i in ENVIRONMENT_ITEMS {
        let name = format!("Environment Provisioning > {i}");
        assert_eq!(requires(cat, &name), set(&["Provisioning > Environment"]), "{i}");
    }
    assert_eq!(template(cat, "HR_Clerk"), set(&HR_CLERK));
    assert_eq!(template(cat, "Operations_Clerk"), set(&OPERATIONS_CLERK));
    assert_eq!(template(cat, "Genesys Administrator Full Access"), names(cat));

    let guards: BTreeMap<(&str, Perm), &str> =
        cat.type_guards.iter().map(|g| ((g.kind.as_str(), g.permission), g.privilege.as_str())).collect();
    let by_type = [
        ("Person", "Account Provisioning > Users"),
        ("Skill", "Account Provisioning > Skills"),
        ("AccessGroup", "Account Provisioning > Access Groups"),
        ("Role", "Account Provisioning > Roles"),
        ("AgentGroup", "Account Provisioning > Agent Groups"),
        ("Application", "Environment Provisioning > Applications"),
        ("Host", "Environment Provisioning > Hosts"),
        ("Script", "Environment Provisioning > Scripts"),
    ];
    assert_eq!(guards.len(), by_type.len() * 4);
    for (kind, privilege) in by_type {
        for perm in [Perm::Read, Perm::Create, Perm::Change, Perm::Delete] {
            assert_eq!(guards.get(&(kind, perm)), Some(&privilege), "{kind} {perm}");
        }
    }
    let props: BTreeSet<(&str, &str, Perm, &str)> = cat
        .property_guards
        .iter()
        .map(|g| (g.kind.as_str(), g.property.as_str(), g.access, g.privilege.as_str()))
        .collect();
    let agent_info = "Account Provisioning > Agent Info";
    let expected: BTreeSet<_> = ["EmployeeID", "AgentLogins", "Skills", "IsAgent"]
        .into_iter()
        .map(|p| ("Person", p, Perm::Change, agent_info))
        .collect();
    assert_eq!(props, expected);
}

// ---------------------------------------------------------------- Advisors (seeds/003)

#[test]
fn advisors_catalog_has_every_privilege_once() {
    let cat = catalog("advisors");
    assert_eq!(names(cat), advisors_names());
    assert_eq!(cat.privileges.len(), 43, "each name declared once");
    for name in advisors_names() {
        assert_eq!(privilege(cat, name).name, name);
    }
    // Descriptions are the "Controls Access To" text.
    assert_eq!(privilege(cat, "AdvisorsAdministration.canView").description, "Administration module");
    assert_eq!(privilege(cat, "Advisors.RMC.canView").description, "Resource Management Console (RMC)");
}

#[test]
fn advisors_requires_chains_are_the_fa_tables() {
    let cat = catalog("advisors");
    let chains = advisors_requires();
    for p in &cat.privileges {
        let got: BTreeSet<&str> = p.requires.iter().map(String::as_str).collect();
        let want = chains.get(p.name.as_str()).cloned().unwrap_or_default();
        assert_eq!(got, want, "requires of {}", p.name);
    }
}

#[test]
fn advisors_name_pattern_rejects_inexact_names() -> TestResult {
    let base = catalog("advisors").clone();
    assert!(base.name_pattern.is_some());
    validate_catalog(&base)?;
    let bad = [
        "FrontlineAdvisor.SupervisorDashboard.canView ",
        " FrontlineAdvisor.SupervisorDashboard.canView",
        "FrontlineAdvisor.SupervisorDashboard .canView",
        "Frontline Advisor.SupervisorDashboard.canView",
        "frontlineAdvisor.SupervisorDashboard.canView",
        "FrontlineAdvisor.SupervisorDashboard.view",
        "FrontlineAdvisor.SupervisorDashboard.canview",
        "FrontlineAdvisor..canView",
        "canView",
        "FrontlineAdvisor.SupervisorDashboard.canView\t",
    ];
    for name in bad {
        // Renaming a declared privilege (and fixing the references to it).
        let mut renamed = base.clone();
        for p in &mut renamed.privileges {
            if p.name == SD {
                p.name = name.to_owned();
            }
            for r in &mut p.requires {
                if r == SD {
                    *r = name.to_owned();
                }
            }
        }
        for t in &mut renamed.roles {
            for r in &mut t.privileges {
                if r == SD {
                    *r = name.to_owned();
                }
            }
        }
        let err = validate_catalog(&renamed).err().ok_or(format!("`{name:?}` accepted"))?;
        assert_eq!(err.item, name, "the error names the privilege: {err}");
        // Adding it as a new privilege.
        let mut added = base.clone();
        added.privileges.push(PrivilegeDef {
            name: name.to_owned(),
            description: String::new(),
            requires: Vec::new(),
            aliases: Vec::new(),
            permission: None,
        });
        let err = validate_catalog(&added).err().ok_or(format!("`{name:?}` accepted"))?;
        assert_eq!(err.item, name, "the error names the privilege: {err}");
    }
    // A name with an inner space passes the generic checks: only the pattern stops it.
    let mut inner_space = base.clone();
    inner_space.privileges.push(PrivilegeDef {
        name: "Frontline Advisor.SupervisorDashboard.canSort".into(),
        description: String::new(),
        requires: Vec::new(),
        aliases: Vec::new(),
        permission: None,
    });
    let err = validate_catalog(&inner_space).err().ok_or("inner space accepted")?;
    assert!(err.message.contains("pattern"), "{err}");
    inner_space.name_pattern = None;
    validate_catalog(&inner_space)?;
    Ok(())
}

#[test]
fn advisors_guards_and_default_roles() {
    let p = authzd::model::presets::get("advisors").unwrap();
    let cat = catalog("advisors");
    let guards: BTreeSet<(&str, Perm, &str)> =
        cat.type_guards.iter().map(|g| (g.kind.as_str(), g.permission, g.privilege.as_str())).collect();
    assert_eq!(
        guards,
        BTreeSet::from([
            ("Metric", Perm::Create, "AdvisorsAdministration.MMW.canCreate"),
            ("Metric", Perm::Change, "AdvisorsAdministration.MMW.canEdit"),
            ("Metric", Perm::Delete, "AdvisorsAdministration.MMW.canDelete"),
        ]),
        "Read on metrics is governed by permissions alone"
    );
    let templates: BTreeSet<&str> = cat.roles.iter().map(|r| r.name.as_str()).collect();
    let documented = [
        "AdvisorsAdmin",
        "AdvisorsFAUser",
        "AdvisorsFAAgent",
        "AdvisorsCCAdvUser",
        "AdvisorsWAUser",
        "AdvisorsAlertMgmtUser",
    ];
    assert_eq!(templates, set(&documented));
    let instantiated: BTreeSet<&str> = p.default_roles.iter().map(|r| r.template.as_str()).collect();
    assert_eq!(instantiated, set(&documented));
    let admin: BTreeSet<&str> = advisors_names()
        .into_iter()
        .filter(|n| n.starts_with("AdvisorsAdministration.") || n.starts_with("FrontlineAdvisor.Administration."))
        .collect();
    assert_eq!(template(cat, "AdvisorsAdmin"), admin);
    let mut fa_user: BTreeSet<&str> =
        advisors_names().into_iter().filter(|n| n.starts_with("FrontlineAdvisor.SupervisorDashboard.")).collect();
    fa_user.insert("Advisors.ChangePassword.canView");
    assert_eq!(template(cat, "AdvisorsFAUser"), fa_user);
    assert_eq!(template(cat, "AdvisorsFAAgent"), set(&["Advisors.ChangePassword.canView"]));
    let mut ccadv = set(&CCADV);
    ccadv.extend(["Advisors.ChangePassword.canView", "Advisors.RMC.canView"]);
    ccadv.extend(["Advisors.RMC.ManageAgentSkills.canView", "Advisors.RMC.ManageAgentStatus.canView"]);
    assert_eq!(template(cat, "AdvisorsCCAdvUser"), ccadv);
    let mut wa = set(&WA);
    wa.insert("Advisors.ChangePassword.canView");
    assert_eq!(template(cat, "AdvisorsWAUser"), wa);
    assert_eq!(
        template(cat, "AdvisorsAlertMgmtUser"),
        set(&[
            "AdvisorsAdministration.canView",
            "AdvisorsAdministration.ManualAlerts.canView",
            "AdvisorsAdministration.DistributionLists.canView"
        ])
    );
    let admin_role = p.default_roles.iter().find(|r| r.template == "AdvisorsAdmin").unwrap();
    assert_eq!(admin_role.groups, [GroupId::from("administrators")]);
}

// ---------------------------------------------------------------- Designer (seeds/004)

#[test]
fn designer_catalog_is_the_role_task_tables() {
    let cat = catalog("designer");
    let mut expected: BTreeSet<&str> = DESIGNER_TABLES.iter().map(|(n, _)| *n).collect();
    expected.extend(DESIGNER_OTHERS);
    assert_eq!(names(cat), expected);
    for p in &cat.privileges {
        assert!(p.requires.is_empty(), "{}: the document states no dependency", p.name);
    }
    for task in ["SwitchToLastSnapshot", "AssignPhoneNumbers", "ChangeBlockProperties"] {
        assert_eq!(privilege(cat, &format!("Applications.{task}")).permission, Some(Perm::Read), "{task}");
    }
    for (i, role) in DESIGNER_ROLES.iter().enumerate() {
        let mut want: BTreeSet<&str> = DESIGNER_TABLES.iter().filter(|(_, t)| t[i]).map(|(n, _)| *n).collect();
        want.extend(["Analytics.View", "Analytics.Modify"]);
        if *role == "Designer Developer" {
            want.extend(["Tools.PIIRules", "Tools.StandardResponses"]);
        }
        if *role == "Designer Administrator" {
            want.extend(["Admin.ManagePartitions", "Admin.ManageUsers"]);
        }
        assert_eq!(template(cat, role), want, "{role}");
    }
    // The Media Resources table (Delete: Developer only) wins over the prose.
    assert!(!template(cat, "Designer Business User").contains("MediaResources.Delete"));
    assert_eq!(template(cat, "Designer Analytics"), set(&["Analytics.View", "Analytics.Modify"]));
    assert_eq!(cat.restricted_types, ["Application", "SharedModule", "WorkspaceSettings"]);
    assert_eq!(
        cat.role_rank,
        ["Designer Developer", "Designer Administrator", "Designer Business User", "Designer Analytics"]
    );

    let guards: BTreeMap<(&str, Perm), &str> =
        cat.type_guards.iter().map(|g| ((g.kind.as_str(), g.permission), g.privilege.as_str())).collect();
    let resources = [
        ("MediaResource", "MediaResources"),
        ("MessageResource", "MessageResources"),
        ("Application", "Applications"),
        ("SharedModule", "SharedModules"),
        ("SpeechGrammar", "SpeechGrammars"),
        ("BotRegistry", "BotRegistry"),
        ("BusinessControl", "BusinessControls"),
        ("DataTable", "BusinessControls"),
    ];
    let tasks = [(Perm::Read, "View"), (Perm::Change, "Modify"), (Perm::Create, "Create"), (Perm::Delete, "Delete")];
    for (kind, resource) in resources {
        for (perm, task) in tasks {
            let want = format!("{resource}.{task}");
            assert_eq!(guards.get(&(kind, perm)).copied(), Some(want.as_str()), "{kind} {perm}");
        }
    }
    assert_eq!(guards.get(&("AnalyticsDashboard", Perm::Read)), Some(&"Analytics.View"));
    for perm in [Perm::Change, Perm::Create, Perm::Delete] {
        assert_eq!(guards.get(&("AnalyticsDashboard", perm)), Some(&"Analytics.Modify"), "{perm}");
    }
    assert_eq!(guards.len(), resources.len() * 4 + 4);
}

// ---------------------------------------------------------------- new tenant (SPEC §1)

fn globex() -> TenantConfig {
    TenantConfig::empty("globex".into())
        .apply_batch(&[Mutation::CreateTenant {
            name: "Globex".into(),
            presets: APP_PRESETS.iter().map(|p| p.to_string()).collect(),
            defaults: true,
        }])
        .unwrap_or_else(|e| panic!("create Globex: {e}"))
}

fn group_named<'a>(c: &'a TenantConfig, name: &str) -> &'a GroupId {
    &c.groups.values().find(|g| g.name == name).unwrap_or_else(|| panic!("no group named {name}")).id
}

#[test]
fn a_new_tenant_gets_the_skeleton_groups_roles_and_entries() {
    let c = globex();
    let mut folders = vec![
        "Persons".to_owned(),
        "Access Groups".to_owned(),
        "Roles".to_owned(),
        "Scripts/Callback".to_owned(),
        "Skills".to_owned(),
    ];
    for app in ["FrontlineAdvisor", "WorkforceAdvisor", "ContactCenterAdvisor"] {
        for kind in ["AgentGroup", "Agent", "ContactGroup", "Application", "Team"] {
            folders.push(format!("Advisors Metrics/{app}/{kind}"));
        }
    }
    assert_eq!(folders.len(), 20);
    for f in &folders {
        let id = FolderId::from(f.as_str());
        assert!(c.folders.contains_key(&id), "no folder {f}");
        assert_eq!(c.folder_path(&id).map(|p| p.join("/")).as_deref(), Some(f.as_str()), "path of {f}");
    }
    assert_eq!(c.folders[&FolderId::from("root")].name, "Globex");
    for f in ["Designer/Applications", "Designer/Data Tables", "Designer/Analytics"] {
        assert!(c.folders.contains_key(&FolderId::from(f)), "no folder {f}");
    }

    // Groups: tenant-wide ones prefixed with the business name, Callback- and
    // Designer-specific ones not (seeds/000).
    let admins = group_named(&c, "Globex Administrators").clone();
    assert_eq!(admins, GroupId::from("administrators"));
    let supervisors = group_named(&c, "Globex Supervisors").clone();
    let developers = group_named(&c, "Callback Developers").clone();
    for g in ["Designer Developers", "Designer Business Users", "Designer Administrators", "Designer Analytics Users"] {
        group_named(&c, g);
    }
    assert!(c.groups.values().all(|g| g.members.is_empty()), "new groups are empty");
    assert!(c.persons.is_empty(), "a new tenant has no persons");

    // Roles from the catalogs' templates.
    let role = |id: &str| c.roles.get(&RoleId::from(id)).unwrap_or_else(|| panic!("no role {id}"));
    let holders = |id: &str| role(id).members.groups.iter().cloned().collect::<Vec<_>>();
    assert_eq!(role("callback-administrator").name, "Callback Administrator");
    assert_eq!(holders("callback-administrator"), std::slice::from_ref(&admins));
    assert_eq!(holders("callback-supervisor"), [supervisors]);
    assert_eq!(holders("callback-developer"), [developers]);
    assert!(role("callback-monitor").members.is_empty());
    assert_eq!(holders("ga-full-access"), std::slice::from_ref(&admins));
    assert_eq!(holders("advisors-admin"), std::slice::from_ref(&admins));
    for id in
        ["advisors-fa-user", "advisors-fa-agent", "advisors-ccadv-user", "advisors-wa-user", "advisors-alert-mgmt-user"]
    {
        assert!(role(id).members.is_empty(), "{id}");
    }
    assert_eq!(holders("designer-analytics"), [GroupId::from("designer-analytics-users")]);
    let cb = catalog("callback");
    let monitor = &role("callback-monitor").privileges["Callback"];
    assert_eq!(monitor.iter().map(String::as_str).collect::<BTreeSet<_>>(), template(cb, "Callback Monitor"));
    assert_eq!(c.catalogs.len(), 5);

    // The default entries (SPEC §1).
    let ace =
        |t: Target, s: Subject| c.aces.get(&(t.clone(), s.clone())).unwrap_or_else(|| panic!("no entry {t:?} {s:?}"));
    let read = PermSet::EMPTY.with(Perm::Read);
    for f in ["Roles", "Scripts/Callback"] {
        let a = ace(Target::Folder(f.into()), Subject::Everyone);
        assert_eq!((a.allow, a.deny, a.propagate), (read, PermSet::EMPTY, true), "everyone on {f}");
    }
    let a = ace(Target::Folder("root".into()), Subject::Group(admins));
    assert_eq!((a.allow, a.deny, a.propagate), (PermSet::ALL, PermSet::EMPTY, true));
    // The Designer groups on the Designer tree: Developers and Business Users may
    // change, Administrators read (the type guards narrow per type), Analytics
    // users have no entry outside Analytics, and every role modifies Analytics.
    let rccd: PermSet = [Perm::Read, Perm::Create, Perm::Change, Perm::Delete].into_iter().collect();
    let designer = |folder: &str, group: &str| {
        c.aces.get(&(Target::Folder(folder.into()), Subject::Group(group.into()))).map(|a| (a.allow, a.propagate))
    };
    assert_eq!(designer("Designer", "designer-developers"), Some((rccd, true)));
    assert_eq!(designer("Designer", "designer-business-users"), Some((rccd, true)));
    assert_eq!(designer("Designer", "designer-administrators"), Some((read, true)));
    assert_eq!(designer("Designer", "designer-analytics-users"), None);
    assert_eq!(designer("Designer/Analytics", "designer-administrators"), Some((rccd, true)));
    assert_eq!(designer("Designer/Analytics", "designer-analytics-users"), Some((rccd, true)));
    // Nothing else is granted to everyone.
    let everyone: Vec<_> = c.aces.values().filter(|a| a.subject == Subject::Everyone).collect();
    assert_eq!(everyone.len(), 2, "{everyone:?}");
}

#[test]
fn defaults_false_installs_catalogs_only() {
    let c = TenantConfig::empty("bare".into())
        .apply_batch(&[
            Mutation::CreateTenant { name: "Bare".into(), presets: vec!["callback".into()], defaults: false },
            Mutation::PutFolder(authzd::model::Folder { id: "root".into(), name: "Bare".into(), parent: None }),
        ])
        .unwrap();
    assert_eq!(c.catalogs.keys().collect::<Vec<_>>(), ["Callback"]);
    assert!(c.groups.is_empty() && c.roles.is_empty() && c.aces.is_empty());
}

// ---------------------------------------------------------------- the demo tenant

const ACME: &str = include_str!("../examples/acme.yaml");

fn acme() -> TenantConfig {
    TenantFile::from_yaml(ACME).and_then(|f| f.to_config()).unwrap_or_else(|e| panic!("examples/acme.yaml: {e}"))
}

#[test]
fn acme_loads() {
    let c = acme();
    assert_eq!(c.name, "ACME");
    assert_eq!(c.catalogs.len(), 5);
    assert_eq!(group_named(&c, "ACME Administrators"), &GroupId::from("administrators"));
    group_named(&c, "ACME Supervisors");
    group_named(&c, "Callback Developers");
    // The documents' names are all there.
    for g in ["Sales", "Service", "X", "Y", "Clerks"] {
        group_named(&c, g);
    }
    for r in ["HR_Clerk", "Operations_Clerk", "Callback Monitor", "AdvisorsFAUser"] {
        assert!(c.roles.values().any(|x| x.name == r), "no role {r}");
    }
    for q in ["ges_Sales_VQ", "ges_Service_VQ"] {
        let o = &c.objects[&ObjectKey { kind: "Script".into(), id: q.into() }];
        assert_eq!(c.folder_path(&o.folder).map(|p| p.join("/")).as_deref(), Some("Scripts/Callback"));
        assert_eq!(o.properties.get("virtual_queue").map(String::as_str), q.strip_prefix("ges_"));
    }
    for m in ["FrontlineAdvisor.Agent.Voice.nch", "FrontlineAdvisor.Team.Voice.taht"] {
        assert!(c.objects.contains_key(&ObjectKey { kind: "Metric".into(), id: m.into() }), "no metric {m}");
    }
    // Every guarded Designer type has at least one object.
    for kind in [
        "Application",
        "SharedModule",
        "MediaResource",
        "MessageResource",
        "SpeechGrammar",
        "BotRegistry",
        "BusinessControl",
        "DataTable",
        "AnalyticsDashboard",
        "WorkspaceSettings",
    ] {
        assert!(c.objects.values().any(|o| o.kind == kind), "no {kind} object");
    }
    assert_eq!(c.partitions.len(), 2);
    assert!(c.objects.values().filter(|o| !o.partitions.is_empty()).count() >= 2);
    // The legacy annex persons.
    assert_eq!(c.persons[&authzd::model::PersonId::from("cb-annex-admin")].annex["ges"]["role"], "Administrator");
}

#[test]
fn acme_restated_default_roles_match_their_templates() {
    let c = acme();
    for preset in APP_PRESETS {
        let p = authzd::model::presets::get(preset).unwrap();
        let cat = p.catalog.as_ref().unwrap();
        for d in &p.default_roles {
            let role = &c.roles[&d.id];
            assert_eq!(role.name, d.template, "{}", d.id);
            let got: BTreeSet<&str> =
                role.privileges.get(&cat.name).into_iter().flatten().map(String::as_str).collect();
            assert_eq!(got, template(cat, &d.template), "role {} drifted from its template", d.id);
            for g in &d.groups {
                assert!(role.members.groups.contains(g), "role {} lost default holder {g}", d.id);
            }
        }
    }
}

#[test]
fn acme_round_trips_through_export() -> TestResult {
    let first = acme();
    let exported = TenantFile::from_config(&first);
    assert!(!exported.defaults);
    assert_eq!(exported.presets.len(), 5, "shipped catalogs export as presets");
    assert!(exported.catalogs.is_empty());
    let yaml = exported.to_yaml()?;
    let again = TenantFile::from_yaml(&yaml)?.to_config()?;
    assert_eq!(again, first);
    Ok(())
}

#[test]
fn acme_rejects_bad_metric_names_and_places() {
    let c = acme();
    let metric = |id: &str, name: &str, folder: &str| {
        Mutation::PutObject(authzd::model::Object {
            kind: "Metric".into(),
            id: id.into(),
            name: name.into(),
            folder: folder.into(),
            partitions: Default::default(),
            properties: Default::default(),
        })
    };
    let ok =
        c.apply_batch(&[metric("m1", "FrontlineAdvisor.Agent.All.aht", "Advisors Metrics/FrontlineAdvisor/Agent")]);
    assert!(ok.is_ok(), "{ok:?}");
    for (name, folder) in [
        ("FrontlineAdvisor.Agent.Phone.aht", "Advisors Metrics/FrontlineAdvisor/Agent"),
        ("frontlineAdvisor.Agent.Voice.aht", "Advisors Metrics/FrontlineAdvisor/Agent"),
        ("FrontlineAdvisor.Agent.Voice.aht ", "Advisors Metrics/FrontlineAdvisor/Agent"),
        ("FrontlineAdvisor.Agent.Voice.aht", "Advisors Metrics/FrontlineAdvisor/Team"),
        ("FrontlineAdvisor.Agent.Voice.nch", "Advisors Metrics/FrontlineAdvisor/Agent"),
    ] {
        // A new object (id `m1`), so the last one is a duplicate name.
        let err = c.apply_batch(&[metric("m1", name, folder)]);
        assert!(err.is_err(), "{name:?} in {folder} accepted");
    }
}
