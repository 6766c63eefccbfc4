//! The acceptance scenarios of SPEC §8 that the engine alone can show (1–10
//! and 12), with the documents' names and values. Each test builds its own
//! tenant from the shipped presets through the write path, so every rule is
//! exercised as an administrator would configure it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests state their expectations by panicking

use authzd::engine::{CheckRequest, ListRequest, ObjectRef, PrivilegeSource, Reason, TenantView};
use authzd::model::*;
use std::collections::{BTreeMap, BTreeSet};

const ALL_PRESETS: [&str; 5] = ["callback", "workspace_web_callback", "genesys_administrator", "advisors", "designer"];

/// A tenant under construction: ACME with every preset, plus the test's batch.
struct Tenant {
    config: TenantConfig,
    revision: u64,
}

impl Tenant {
    fn acme() -> Tenant {
        let create = Mutation::CreateTenant {
            name: "ACME".into(),
            presets: ALL_PRESETS.iter().map(|s| s.to_string()).collect(),
            defaults: true,
        };
        let config = TenantConfig::empty(TenantId("acme".into())).apply_batch(&[create]).expect("new tenant is valid");
        Tenant { config, revision: 1 }
    }

    fn apply(&mut self, batch: Vec<Mutation>) -> &mut Self {
        self.config = self.config.apply_batch(&batch).unwrap_or_else(|e| panic!("batch rejected: {e}"));
        self.revision += 1;
        self
    }

    fn try_apply(&self, batch: Vec<Mutation>) -> Result<TenantConfig, ModelError> {
        self.config.apply_batch(&batch)
    }

    fn view(&self) -> TenantView {
        TenantView::build(&self.config, self.revision)
    }
}

fn person(id: &str) -> Mutation {
    Mutation::PutPerson(Person {
        id: PersonId(id.into()),
        username: id.into(),
        enabled: true,
        folder: FolderId(folders::PERSONS.into()),
        annex: BTreeMap::new(),
        properties: BTreeMap::new(),
    })
}

fn person_with_annex(id: &str, section: &str, role: &str) -> Mutation {
    let mut annex = BTreeMap::new();
    annex.insert(section.to_owned(), BTreeMap::from([("role".to_owned(), role.to_owned())]));
    Mutation::PutPerson(Person {
        id: PersonId(id.into()),
        username: id.into(),
        enabled: true,
        folder: FolderId(folders::PERSONS.into()),
        annex,
        properties: BTreeMap::new(),
    })
}

fn group(id: &str, members: &[&str]) -> Mutation {
    Mutation::PutGroup(AccessGroup {
        id: GroupId(id.into()),
        name: id.into(),
        folder: FolderId(folders::ACCESS_GROUPS.into()),
        members: members.iter().map(|m| PersonId((*m).into())).collect(),
    })
}

fn role(id: &str, app: &str, privileges: &[&str], persons: &[&str], groups: &[&str]) -> Mutation {
    Mutation::PutRole(Role {
        id: RoleId(id.into()),
        name: id.into(),
        folder: FolderId(folders::ROLES.into()),
        privileges: BTreeMap::from([(app.to_owned(), privileges.iter().map(|p| p.to_string()).collect())]),
        members: RoleMembers {
            persons: persons.iter().map(|p| PersonId((*p).into())).collect(),
            groups: groups.iter().map(|g| GroupId((*g).into())).collect(),
        },
    })
}

fn assign(role: &str, person: &str) -> Mutation {
    Mutation::AssignRole { role: RoleId(role.into()), to: Subject::Person(PersonId(person.into())) }
}

fn object(kind: &str, id: &str, folder: &str) -> Mutation {
    Mutation::PutObject(Object {
        kind: kind.into(),
        id: ObjectId(id.into()),
        name: id.into(),
        folder: FolderId(folder.into()),
        partitions: BTreeSet::new(),
        properties: BTreeMap::new(),
    })
}

fn perms(ps: &[Perm]) -> PermSet {
    ps.iter().copied().collect()
}

fn ace(target: Target, subject: Subject, allow: &[Perm], deny: &[Perm], propagate: bool) -> Mutation {
    Mutation::PutAce(Ace { target, subject, allow: perms(allow), deny: perms(deny), propagate })
}

fn on_object(kind: &str, id: &str) -> Target {
    Target::Object(ObjectKey { kind: kind.into(), id: ObjectId(id.into()) })
}

fn folder_target(id: &str) -> Target {
    Target::Folder(FolderId(id.into()))
}

fn g(id: &str) -> Subject {
    Subject::Group(GroupId(id.into()))
}

fn privilege(v: &TenantView, person: &str, app: &str, p: &str) -> Reason {
    v.check(&CheckRequest { subject: person, application: Some(app), privilege: Some(p), ..Default::default() }).reason
}

fn on(v: &TenantView, person: &str, app: Option<&str>, b: Perm, kind: &str, id: &str) -> Reason {
    v.check(&CheckRequest {
        subject: person,
        application: app,
        permission: Some(b),
        object: Some(ObjectRef { kind, id, tenant: None }),
        ..Default::default()
    })
    .reason
}

fn visible(v: &TenantView, person: &str, kind: &str, folder: Option<&str>, app: Option<&str>) -> Vec<String> {
    let page = v
        .list_visible(&ListRequest {
            subject: person,
            kind,
            folder,
            permission: Perm::Read,
            application: app,
            after: None,
            limit: 10_000,
        })
        .expect("listing answers");
    assert!(page.next_after.is_none());
    page.items.into_iter().map(|o| o.name).collect()
}

const CB: &str = "Callback";
const CB_PRIVS: [&str; 9] = [
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

/// What each Callback role may do, as document 000 lists it.
fn callback_expected(role: &str) -> Vec<&'static str> {
    match role {
        "Administrator" => CB_PRIVS.to_vec(),
        "Supervisor" => CB_PRIVS[..5].to_vec(),
        "Monitor" => vec!["Callback - View"],
        "Developer" => {
            vec![
                "Callback - View",
                "Callback - Developer Tab",
                "Callback - View Recent Errors",
                "Callback - Test API Keys",
                "Callback - Provision",
            ]
        }
        _ => vec![],
    }
}

#[test]
fn s1_callback_roles_do_exactly_what_the_document_lists() {
    let mut t = Tenant::acme();
    t.apply(vec![
        person("admin"),
        person("sup"),
        person("mon"),
        person("dev"),
        Mutation::AddGroupMember { group: GroupId("administrators".into()), person: PersonId("admin".into()) },
        Mutation::AddGroupMember { group: GroupId("supervisors".into()), person: PersonId("sup".into()) },
        Mutation::AddGroupMember { group: GroupId("callback-developers".into()), person: PersonId("dev".into()) },
        assign("callback-monitor", "mon"),
    ]);
    let v = t.view();
    for (p, r) in [("admin", "Administrator"), ("sup", "Supervisor"), ("mon", "Monitor"), ("dev", "Developer")] {
        let expected = callback_expected(r);
        for priv_name in CB_PRIVS {
            let reason = privilege(&v, p, CB, priv_name);
            assert_eq!(reason.is_allowed(), expected.contains(&priv_name), "{r} / {priv_name}: {reason:?}");
            assert_ne!(reason, Reason::OpenWhenUnconfigured, "{r} is configured");
        }
        let ep = v.effective_privileges(p, CB).expect("person and app exist");
        assert_eq!(ep.privileges, expected, "{r}");
        assert_eq!(ep.primary_role.as_deref(), Some(format!("Callback {r}").as_str()));
    }
    // Tasks that are not permission bits are checked with Read on the queue's script.
    t.apply(vec![Mutation::ProvisionVirtualQueue { queue: "Sales_VQ".into(), folder: None }]);
    let v = t.view();
    let on_queue = |p: &str, task: &str| {
        v.check(&CheckRequest {
            subject: p,
            application: Some(CB),
            object: Some(ObjectRef { kind: "Script", id: "ges_Sales_VQ", tenant: None }),
            privilege: Some(task),
            ..Default::default()
        })
        .reason
    };
    assert_eq!(on_queue("sup", "Callback - Reschedule"), Reason::Allowed);
    assert_eq!(on_queue("mon", "Callback - Reschedule"), Reason::MissingPrivilege);
    assert_eq!(on_queue("mon", "Callback - View"), Reason::Allowed);
}

#[test]
fn s1_unconfigured_callback_user_has_full_access_as_its_own_reason() {
    let mut t = Tenant::acme();
    t.apply(vec![person("nobody")]);
    let v = t.view();
    for p in CB_PRIVS {
        assert_eq!(privilege(&v, "nobody", CB, p), Reason::OpenWhenUnconfigured, "{p}");
    }
    let ep = v.effective_privileges("nobody", CB).expect("exists");
    assert_eq!(ep.source, PrivilegeSource::OpenWhenUnconfigured);
    // Other applications are not open.
    assert_eq!(
        privilege(&v, "nobody", "WorkspaceWebCallback", "Web Callback - Can Reschedule"),
        Reason::MissingPrivilege
    );
    // A configured user whose only Callback role is unreadable gets nothing from the open rule.
    t.apply(vec![
        person("hidden"),
        assign("callback-monitor", "hidden"),
        ace(
            Target::Role(RoleId("callback-monitor".into())),
            Subject::Person(PersonId("hidden".into())),
            &[],
            &[Perm::Read],
            false,
        ),
    ]);
    let v = t.view();
    assert_eq!(privilege(&v, "hidden", CB, "Callback - View"), Reason::MissingPrivilege);
    let ep = v.effective_privileges("hidden", CB).expect("exists");
    assert_eq!(ep.source, PrivilegeSource::Roles);
    assert_eq!(ep.unreadable_roles, vec!["Callback Monitor".to_owned()]);
}

#[test]
fn s2_supervisor_and_monitor_get_supervisor_access_and_primary_role() {
    let mut t = Tenant::acme();
    t.apply(vec![person("u"), assign("callback-monitor", "u"), assign("callback-supervisor", "u")]);
    let v = t.view();
    let ep = v.effective_privileges("u", CB).expect("exists");
    assert_eq!(ep.privileges, callback_expected("Supervisor"));
    assert_eq!(ep.primary_role.as_deref(), Some("Callback Supervisor"));
}

#[test]
fn s3_legacy_annex_role_overrides_access_groups_until_removed() {
    for section in ["ges", "gms"] {
        let mut t = Tenant::acme();
        t.apply(vec![
            person_with_annex("legacy", section, "Administrator"),
            group("Monitors", &["legacy"]),
            Mutation::AssignRole { role: RoleId("callback-monitor".into()), to: g("Monitors") },
        ]);
        let v = t.view();
        let ep = v.effective_privileges("legacy", CB).expect("exists");
        assert_eq!(ep.privileges, callback_expected("Administrator"), "{section}");
        assert_eq!(ep.source, PrivilegeSource::LegacyAnnex { section: section.into(), role: "Administrator".into() });
        assert_eq!(privilege(&v, "legacy", CB, "Callback - Developer Tab"), Reason::Allowed);
        // Removing the section switches the person to the group's roles.
        t.apply(vec![person("legacy")]);
        let v = t.view();
        let ep = v.effective_privileges("legacy", CB).expect("exists");
        assert_eq!(ep.privileges, callback_expected("Monitor"));
        assert_eq!(privilege(&v, "legacy", CB, "Callback - Developer Tab"), Reason::MissingPrivilege);
    }
    // An unknown legacy role name decides alone too, and grants nothing (fail closed).
    let mut t = Tenant::acme();
    t.apply(vec![person_with_annex("odd", "ges", "Overlord"), assign("callback-supervisor", "odd")]);
    assert_eq!(privilege(&t.view(), "odd", CB, "Callback - View"), Reason::MissingPrivilege);
}

#[test]
fn s4_line_of_business_segmentation_of_virtual_queues() {
    let mut t = Tenant::acme();
    t.apply(vec![
        person("sales1"),
        person("service1"),
        group("Sales", &["sales1"]),
        group("Service", &["service1"]),
        Mutation::ProvisionVirtualQueue { queue: "Sales_VQ".into(), folder: None },
        Mutation::ProvisionVirtualQueue { queue: "Service_VQ".into(), folder: None },
        Mutation::ProvisionVirtualQueue { queue: "Billing_VQ".into(), folder: None },
    ]);
    let scripts = |v: &TenantView, p: &str| visible(v, p, "Script", Some("Scripts/Callback"), None);
    // New tenants: every queue visible to everyone.
    let v = t.view();
    assert_eq!(scripts(&v, "sales1"), ["ges_Billing_VQ", "ges_Sales_VQ", "ges_Service_VQ"]);
    assert_eq!(scripts(&v, "service1"), ["ges_Billing_VQ", "ges_Sales_VQ", "ges_Service_VQ"]);
    // Restrict the two queues: each keeps Read for its own team only.
    t.apply(vec![
        ace(on_object("Script", "ges_Sales_VQ"), Subject::Everyone, &[], &[], false),
        ace(on_object("Script", "ges_Sales_VQ"), g("Sales"), &[Perm::Read], &[], false),
        ace(on_object("Script", "ges_Service_VQ"), Subject::Everyone, &[], &[], false),
        ace(on_object("Script", "ges_Service_VQ"), g("Service"), &[Perm::Read], &[], false),
    ]);
    let v = t.view();
    assert_eq!(scripts(&v, "sales1"), ["ges_Billing_VQ", "ges_Sales_VQ"]);
    assert_eq!(scripts(&v, "service1"), ["ges_Billing_VQ", "ges_Service_VQ"]);
    assert_eq!(on(&v, "service1", None, Perm::Read, "Script", "ges_Sales_VQ"), Reason::NoGrant);
    // A subfolder with propagating permissions: Sales only.
    t.apply(vec![
        Mutation::PutFolder(Folder {
            id: FolderId("Scripts/Callback/Premium".into()),
            name: "Premium".into(),
            parent: Some(FolderId("Scripts/Callback".into())),
        }),
        ace(folder_target("Scripts/Callback/Premium"), Subject::Everyone, &[], &[], true),
        ace(folder_target("Scripts/Callback/Premium"), g("Sales"), &[Perm::Read], &[], true),
        Mutation::MoveObject {
            target: on_object("Script", "ges_Billing_VQ"),
            folder: FolderId("Scripts/Callback/Premium".into()),
        },
    ]);
    let v = t.view();
    assert_eq!(scripts(&v, "sales1"), ["ges_Billing_VQ", "ges_Sales_VQ"]);
    assert_eq!(scripts(&v, "service1"), ["ges_Service_VQ"], "moving the queue changed who sees it at once");
    // A queue added there later follows the folder.
    t.apply(vec![Mutation::ProvisionVirtualQueue {
        queue: "Gold_VQ".into(),
        folder: Some(FolderId("Scripts/Callback/Premium".into())),
    }]);
    let v = t.view();
    assert_eq!(scripts(&v, "sales1"), ["ges_Billing_VQ", "ges_Gold_VQ", "ges_Sales_VQ"]);
    assert_eq!(scripts(&v, "service1"), ["ges_Service_VQ"]);
    // Provisioning outside Scripts/Callback is refused with the folder named.
    let err = t
        .try_apply(vec![Mutation::ProvisionVirtualQueue {
            queue: "X_VQ".into(),
            folder: Some(FolderId("Skills".into())),
        }])
        .expect_err("outside Scripts/Callback");
    assert!(err.to_string().contains("Skills"), "{err}");
}

const WCB: &str = "WorkspaceWebCallback";

#[test]
fn s5_web_callback_dependency_chain() {
    let mut t = Tenant::acme();
    t.apply(vec![
        person("a"),
        person("b"),
        person("c"),
        role("only-before", WCB, &["Web Callback - Can Reschedule Before Call"], &["a"], &[]),
        role(
            "no-channel",
            WCB,
            &["Web Callback - Can Reschedule Before Call", "Web Callback - Can Reschedule"],
            &["b"],
            &[],
        ),
        role(
            "chain",
            WCB,
            &[
                "Web Callback - Can Reschedule Before Call",
                "Web Callback - Can Reschedule",
                "Web Callback - Can Use Web Callback Channel",
            ],
            &["c"],
            &[],
        ),
    ]);
    let v = t.view();
    let before = "Web Callback - Can Reschedule Before Call";
    assert_eq!(privilege(&v, "a", WCB, before), Reason::UnmetDependency);
    assert_eq!(privilege(&v, "b", WCB, before), Reason::UnmetDependency);
    assert_eq!(privilege(&v, "b", WCB, "Web Callback - Can Reschedule"), Reason::UnmetDependency);
    assert_eq!(privilege(&v, "c", WCB, before), Reason::Allowed);
    assert_eq!(privilege(&v, "c", WCB, "Web Callback - Can Mark Done"), Reason::MissingPrivilege);
    // The document's other spellings name the same privileges.
    assert_eq!(privilege(&v, "c", WCB, "Can Reschedule Before Call"), Reason::Allowed);
    assert_eq!(privilege(&v, "c", WCB, "Web Callback - Can Use Callback Channel"), Reason::Allowed);
    let ep = v.effective_privileges("b", WCB).expect("exists");
    assert!(ep.privileges.is_empty());
    assert_eq!(ep.unmet.len(), 2);
}

const GA: &str = "GenesysAdministrator";

#[test]
fn s6_hr_clerk_and_operations_clerk() {
    let mut t = Tenant::acme();
    let agent_info = "Account Provisioning > Agent Info";
    t.apply(vec![
        person("clerk-a"),
        person("clerk-b"),
        person("clerk-c"),
        person("agent1"),
        object("Skill", "spanish", "Skills"),
        object("Skill", "billing", "Skills"),
        group("Clerks", &["clerk-a", "clerk-b", "clerk-c"]),
        ace(folder_target("Persons"), g("Clerks"), &[Perm::Read, Perm::Change], &[], true),
        ace(folder_target("Skills"), g("Clerks"), &[Perm::Read, Perm::Change], &[], true),
        role(
            "HR_Clerk",
            GA,
            &["Modules > Provisioning", "Provisioning > Accounts", agent_info, "Account Provisioning > Users"],
            &["clerk-a"],
            &[],
        ),
        role(
            "Operations_Clerk",
            GA,
            &["Modules > Provisioning", "Provisioning > Accounts", "Account Provisioning > Skills"],
            &["clerk-b"],
            &[],
        ),
        // Clerk C has the item privileges but not the Provisioning module.
        role(
            "No_Module",
            GA,
            &["Provisioning > Accounts", "Account Provisioning > Users", "Account Provisioning > Skills"],
            &["clerk-c"],
            &[],
        ),
    ]);
    let v = t.view();
    let persons = visible(&v, "clerk-a", "Person", None, Some(GA));
    assert!(persons.contains(&"agent1".to_owned()) && persons.len() == 4, "{persons:?}");
    assert!(visible(&v, "clerk-a", "Skill", None, Some(GA)).is_empty());
    assert_eq!(on(&v, "clerk-a", Some(GA), Perm::Change, "Person", "agent1"), Reason::Allowed);
    assert_eq!(on(&v, "clerk-a", Some(GA), Perm::Read, "Skill", "spanish"), Reason::MissingPrivilege);
    assert_eq!(visible(&v, "clerk-b", "Skill", None, Some(GA)), ["billing", "spanish"]);
    assert!(visible(&v, "clerk-b", "Person", None, Some(GA)).is_empty());
    assert_eq!(on(&v, "clerk-b", Some(GA), Perm::Change, "Skill", "spanish"), Reason::Allowed);
    assert_eq!(on(&v, "clerk-b", Some(GA), Perm::Change, "Person", "agent1"), Reason::MissingPrivilege);
    // Without the module, neither list.
    assert!(visible(&v, "clerk-c", "Person", None, Some(GA)).is_empty());
    assert!(visible(&v, "clerk-c", "Skill", None, Some(GA)).is_empty());
    assert_eq!(privilege(&v, "clerk-c", GA, "Account Provisioning > Users"), Reason::UnmetDependency);
    // Agent information is a guarded property of persons.
    let change_prop = |p: &str, prop: &str| {
        v.check(&CheckRequest {
            subject: p,
            application: Some(GA),
            permission: Some(Perm::Change),
            object: Some(ObjectRef { kind: "Person", id: "agent1", tenant: None }),
            property: Some(prop),
            ..Default::default()
        })
        .reason
    };
    assert_eq!(change_prop("clerk-a", "AgentLogins"), Reason::Allowed);
    // Without Change on the object no privilege helps (permissions are never overridden by roles).
    t.apply(vec![ace(on_object("Skill", "spanish"), g("Clerks"), &[Perm::Read], &[], false)]);
    assert_eq!(on(&t.view(), "clerk-b", Some(GA), Perm::Change, "Skill", "spanish"), Reason::NoGrant);
}

#[test]
fn s7_advisors_four_group_scenarios_on_metrics() {
    let mut t = Tenant::acme();
    let folder = "Advisors Metrics/FrontlineAdvisor/Agent";
    let m = |name: &str| {
        Mutation::PutObject(Object {
            kind: "Metric".into(),
            id: ObjectId(name.into()),
            name: name.into(),
            folder: FolderId(folder.into()),
            partitions: BTreeSet::new(),
            properties: BTreeMap::new(),
        })
    };
    let (m1, m2, m3, m4) = (
        "FrontlineAdvisor.Agent.Voice.nch",
        "FrontlineAdvisor.Agent.Voice.aht",
        "FrontlineAdvisor.Agent.Email.nch",
        "FrontlineAdvisor.Agent.All.occupancy",
    );
    t.apply(vec![
        person("user-a"),
        group("X", &["user-a"]),
        group("Y", &["user-a"]),
        m(m1),
        m(m2),
        m(m3),
        m(m4),
        // grant + nothing = allow
        ace(on_object("Metric", m1), g("Y"), &[Perm::Read], &[], false),
        // deny + grant = deny
        ace(on_object("Metric", m2), g("X"), &[], &[Perm::Read], false),
        ace(on_object("Metric", m2), g("Y"), &[Perm::Read], &[], false),
        // deny + nothing = deny
        ace(on_object("Metric", m3), g("X"), &[], &[Perm::Read], false),
        // nothing + nothing = deny (m4)
    ]);
    let v = t.view();
    assert_eq!(on(&v, "user-a", Some("Advisors"), Perm::Read, "Metric", m1), Reason::Allowed);
    assert_eq!(on(&v, "user-a", Some("Advisors"), Perm::Read, "Metric", m2), Reason::ExplicitDeny);
    assert_eq!(on(&v, "user-a", Some("Advisors"), Perm::Read, "Metric", m3), Reason::ExplicitDeny);
    assert_eq!(on(&v, "user-a", Some("Advisors"), Perm::Read, "Metric", m4), Reason::NoGrant);
    assert_eq!(visible(&v, "user-a", "Metric", None, Some("Advisors")), [m1]);
    // The same with the grant inherited from the folder: an object-level deny still wins.
    t.apply(vec![ace(folder_target(folder), g("Y"), &[Perm::Read], &[], true)]);
    let v = t.view();
    let mut seen = visible(&v, "user-a", "Metric", None, Some("Advisors"));
    seen.sort();
    assert_eq!(seen, [m4, m1], "m2 and m3 stay denied, m4 now inherits Y's grant");
}

#[test]
fn s8_unreadable_role_does_not_apply_and_fa_alerts_pane_needs_its_chain() {
    let mut t = Tenant::acme();
    let (sd, teams, alerts) = (
        "FrontlineAdvisor.SupervisorDashboard.canView",
        "FrontlineAdvisor.SupervisorDashboard.TeamsPane.canView",
        "FrontlineAdvisor.SupervisorDashboard.AlertsPane.canView",
    );
    t.apply(vec![
        person("sup"),
        person("sup2"),
        person("sup3"),
        role("alerts-only", "Advisors", &[alerts], &["sup"], &[]),
        role("alerts-sd", "Advisors", &[alerts, sd], &["sup2"], &[]),
        role("full", "Advisors", &[alerts, sd, teams], &["sup3"], &[]),
        role("hidden-role", "Advisors", &["ContactCenterAdvisor.Dashboard.canView"], &["sup3"], &[]),
        ace(Target::Role(RoleId("hidden-role".into())), Subject::Everyone, &[], &[], false),
    ]);
    let v = t.view();
    assert_eq!(privilege(&v, "sup", "Advisors", alerts), Reason::UnmetDependency);
    assert_eq!(privilege(&v, "sup2", "Advisors", alerts), Reason::UnmetDependency);
    assert_eq!(privilege(&v, "sup3", "Advisors", alerts), Reason::Allowed);
    assert_eq!(privilege(&v, "sup3", "Advisors", "ContactCenterAdvisor.Dashboard.canView"), Reason::MissingPrivilege);
    let ep = v.effective_privileges("sup3", "Advisors").expect("exists");
    assert_eq!(ep.unreadable_roles, vec!["hidden-role".to_owned()]);
    // Granting Read on the role makes it apply.
    t.apply(vec![ace(
        Target::Role(RoleId("hidden-role".into())),
        Subject::Person(PersonId("sup3".into())),
        &[Perm::Read],
        &[],
        false,
    )]);
    assert_eq!(privilege(&t.view(), "sup3", "Advisors", "ContactCenterAdvisor.Dashboard.canView"), Reason::Allowed);
}

#[test]
fn s9_metric_names_and_folders() {
    let t = Tenant::acme();
    let put = |name: &str, folder: &str| {
        t.try_apply(vec![Mutation::PutObject(Object {
            kind: "Metric".into(),
            id: ObjectId("m".into()),
            name: name.into(),
            folder: FolderId(folder.into()),
            partitions: BTreeSet::new(),
            properties: BTreeMap::new(),
        })])
    };
    for (name, folder) in [
        ("FrontlineAdvisor.Agent.Voice.nch", "Advisors Metrics/FrontlineAdvisor/Agent"),
        ("FrontlineAdvisor.Team.Voice.taht", "Advisors Metrics/FrontlineAdvisor/Team"),
        ("WorkforceAdvisor.ContactGroup.AllNonVoice.forecast", "Advisors Metrics/WorkforceAdvisor/ContactGroup"),
        ("ContactCenterAdvisor.AgentGroup.WebChat.sl", "Advisors Metrics/ContactCenterAdvisor/AgentGroup"),
        ("ContactCenterAdvisor.Application.Email.x", "Advisors Metrics/ContactCenterAdvisor/Application"),
    ] {
        assert!(put(name, folder).is_ok(), "{name} in {folder}: {:?}", put(name, folder).err());
    }
    for (name, folder, needle) in [
        ("FrontlineAdvisor.Agent.Fax.nch", "Advisors Metrics/FrontlineAdvisor/Agent", "channel `Fax`"),
        (
            "frontlineadvisor.Agent.Voice.nch",
            "Advisors Metrics/FrontlineAdvisor/Agent",
            "application `frontlineadvisor`",
        ),
        ("FrontlineAdvisor.agent.Voice.nch", "Advisors Metrics/FrontlineAdvisor/Agent", "object type `agent`"),
        ("FrontlineAdvisor.Agent.Voice.nch ", "Advisors Metrics/FrontlineAdvisor/Agent", "white space"),
        ("FrontlineAdvisor.Agent.Voice", "Advisors Metrics/FrontlineAdvisor/Agent", "four"),
        ("FrontlineAdvisor.Agent.Voice.", "Advisors Metrics/FrontlineAdvisor/Agent", "empty"),
        ("FrontlineAdvisor.Agent.Voice.nch", "Advisors Metrics/FrontlineAdvisor/Team", "must live in folder"),
        ("FrontlineAdvisor.Agent.Voice.nch", "Skills", "must live in folder"),
    ] {
        let err = put(name, folder).expect_err(name);
        assert!(err.to_string().contains(needle), "{name:?} in {folder}: {err}");
        assert!(err.field.contains("objects[Metric/m]"), "the error names the item: {}", err.field);
    }
    // Duplicate names are rejected.
    let dup = t.try_apply(vec![
        Mutation::PutObject(Object {
            kind: "Metric".into(),
            id: ObjectId("a".into()),
            name: "FrontlineAdvisor.Agent.Voice.nch".into(),
            folder: FolderId("Advisors Metrics/FrontlineAdvisor/Agent".into()),
            partitions: BTreeSet::new(),
            properties: BTreeMap::new(),
        }),
        Mutation::PutObject(Object {
            kind: "Metric".into(),
            id: ObjectId("b".into()),
            name: "FrontlineAdvisor.Agent.Voice.nch".into(),
            folder: FolderId("Advisors Metrics/FrontlineAdvisor/Agent".into()),
            partitions: BTreeSet::new(),
            properties: BTreeMap::new(),
        }),
    ]);
    assert_eq!(dup.expect_err("duplicate").kind, ErrorKind::Duplicate);
}

/// Document 004's tables: resource → task → roles that have it (D, B, A, N =
/// Developer, Business User, Administrator, Analytics).
const DESIGNER_TABLE: [(&str, [(&str, &str); 4]); 7] = [
    ("MediaResource", [("View", "DBA"), ("Modify", "DB"), ("Create", "DB"), ("Delete", "D")]),
    ("MessageResource", [("View", "DBA"), ("Modify", "D"), ("Create", "D"), ("Delete", "D")]),
    ("Application", [("View", "DBA"), ("Modify", "D"), ("Create", "D"), ("Delete", "D")]),
    ("SharedModule", [("View", "DBA"), ("Modify", "D"), ("Create", "D"), ("Delete", "D")]),
    ("SpeechGrammar", [("View", "DBA"), ("Modify", "D"), ("Create", "D"), ("Delete", "D")]),
    ("BotRegistry", [("View", "DBA"), ("Modify", "D"), ("Create", "D"), ("Delete", "D")]),
    ("BusinessControl", [("View", "DBA"), ("Modify", "DB"), ("Create", "DB"), ("Delete", "DB")]),
];

/// The preset folder each Designer resource type lives in.
fn designer_folder(kind: &str) -> &'static str {
    match kind {
        "MediaResource" => "Designer/Media Resources",
        "MessageResource" => "Designer/Message Resources",
        "Application" => "Designer/Applications",
        "SharedModule" => "Designer/Shared Modules",
        "SpeechGrammar" => "Designer/Speech Grammars",
        "BotRegistry" => "Designer/Bot Registry",
        "BusinessControl" => "Designer/Business Controls",
        _ => "Designer",
    }
}

fn designer_tenant() -> Tenant {
    let mut t = Tenant::acme();
    let mut batch = vec![
        person("dev"),
        person("biz"),
        person("adm"),
        person("ana"),
        Mutation::AddGroupMember { group: GroupId("designer-developers".into()), person: PersonId("dev".into()) },
        Mutation::AddGroupMember { group: GroupId("designer-business-users".into()), person: PersonId("biz".into()) },
        Mutation::AddGroupMember { group: GroupId("designer-administrators".into()), person: PersonId("adm".into()) },
        Mutation::AddGroupMember { group: GroupId("designer-analytics-users".into()), person: PersonId("ana".into()) },
    ];
    for (kind, _) in DESIGNER_TABLE {
        batch.push(object(kind, &format!("{kind}-1"), designer_folder(kind)));
    }
    batch.push(object("AnalyticsDashboard", "dash-1", "Designer/Analytics"));
    batch.push(object("WorkspaceSettings", "ws-1", "Designer"));
    t.apply(batch);
    t
}

#[test]
fn s10_designer_role_task_tables_hold_for_every_resource_type() {
    let t = designer_tenant();
    let v = t.view();
    for (kind, tasks) in DESIGNER_TABLE {
        for (task, who) in tasks {
            let b = match task {
                "View" => Perm::Read,
                "Modify" => Perm::Change,
                "Create" => Perm::Create,
                _ => Perm::Delete,
            };
            for (p, letter) in [("dev", 'D'), ("biz", 'B'), ("adm", 'A'), ("ana", 'N')] {
                let r = on(&v, p, Some("Designer"), b, kind, &format!("{kind}-1"));
                assert_eq!(r.is_allowed(), who.contains(letter), "{p} {task} {kind}: {r:?}");
            }
        }
    }
    // Every role sees and modifies Analytics.
    for p in ["dev", "biz", "adm", "ana"] {
        assert!(on(&v, p, Some("Designer"), Perm::Read, "AnalyticsDashboard", "dash-1").is_allowed(), "{p}");
        assert!(on(&v, p, Some("Designer"), Perm::Change, "AnalyticsDashboard", "dash-1").is_allowed(), "{p}");
    }
    // Analytics-only users see only Analytics.
    for (kind, _) in DESIGNER_TABLE {
        assert!(visible(&v, "ana", kind, None, Some("Designer")).is_empty(), "{kind}");
    }
    assert_eq!(visible(&v, "ana", "AnalyticsDashboard", None, Some("Designer")), ["dash-1"]);
    // ... nor types no guard covers, nor anything without an application context.
    for kind in ["WorkspaceSettings", "Application", "DataTable"] {
        assert!(visible(&v, "ana", kind, None, None).is_empty(), "{kind}");
    }
}

#[test]
fn s10_business_user_assigns_phone_numbers_but_cannot_modify_applications() {
    let t = designer_tenant();
    let v = t.view();
    let task = |p: &str, name: &str| {
        v.check(&CheckRequest {
            subject: p,
            application: Some("Designer"),
            object: Some(ObjectRef { kind: "Application", id: "Application-1", tenant: None }),
            privilege: Some(name),
            ..Default::default()
        })
        .reason
    };
    assert_eq!(task("biz", "Applications.AssignPhoneNumbers"), Reason::Allowed);
    assert_eq!(task("biz", "Applications.SwitchToLastSnapshot"), Reason::Allowed);
    assert_eq!(task("biz", "Applications.ChangeBlockProperties"), Reason::MissingPrivilege);
    assert_eq!(task("adm", "Applications.AssignPhoneNumbers"), Reason::Allowed);
    // Analytics-only users have no entry on applications at all.
    assert_eq!(task("ana", "Applications.AssignPhoneNumbers"), Reason::NoGrant);
    assert_eq!(on(&v, "biz", Some("Designer"), Perm::Change, "Application", "Application-1"), Reason::MissingPrivilege);
}

#[test]
fn s10_partitions_hide_other_partitions_resources() {
    let mut t = designer_tenant();
    let part = |id: &str, members: &[&str]| {
        Mutation::PutPartition(Partition {
            id: PartitionId(id.into()),
            name: id.into(),
            members: members.iter().map(|m| PersonId((*m).into())).collect(),
        })
    };
    let in_part = |id: &str, p: &str| {
        Mutation::PutObject(Object {
            kind: "Application".into(),
            id: ObjectId(id.into()),
            name: id.into(),
            folder: FolderId("Designer/Applications".into()),
            partitions: BTreeSet::from([PartitionId(p.into())]),
            properties: BTreeMap::new(),
        })
    };
    t.apply(vec![
        person("dev2"),
        Mutation::AddGroupMember { group: GroupId("designer-developers".into()), person: PersonId("dev2".into()) },
        part("North", &["dev"]),
        part("South", &["dev2"]),
        in_part("north-app", "North"),
        in_part("south-app", "South"),
    ]);
    let v = t.view();
    assert_eq!(visible(&v, "dev", "Application", None, Some("Designer")), ["Application-1", "north-app"]);
    assert_eq!(visible(&v, "dev2", "Application", None, Some("Designer")), ["Application-1", "south-app"]);
    assert_eq!(on(&v, "dev", Some("Designer"), Perm::Read, "Application", "south-app"), Reason::Partition);
    // Even an administrator's full grant does not cross partitions.
    assert_eq!(on(&v, "dev2", None, Perm::Change, "Application", "north-app"), Reason::Partition);
}

#[test]
fn s12_restricted_mode_locks_applications_and_shared_modules_not_business_controls() {
    let mut t = designer_tenant();
    t.apply(vec![Mutation::SetRestrictedMode { on: true }]);
    let v = t.view();
    assert_eq!(on(&v, "dev", Some("Designer"), Perm::Change, "Application", "Application-1"), Reason::RestrictedMode);
    assert_eq!(on(&v, "dev", Some("Designer"), Perm::Delete, "SharedModule", "SharedModule-1"), Reason::RestrictedMode);
    assert_eq!(on(&v, "dev", Some("Designer"), Perm::Read, "Application", "Application-1"), Reason::Allowed);
    assert_eq!(on(&v, "dev", Some("Designer"), Perm::Change, "BusinessControl", "BusinessControl-1"), Reason::Allowed);
    assert_eq!(on(&v, "dev", Some("Designer"), Perm::Change, "MediaResource", "MediaResource-1"), Reason::Allowed);
    // Without an application context the lock still holds (fail closed).
    assert_eq!(on(&v, "dev", None, Perm::Change, "Application", "Application-1"), Reason::RestrictedMode);
    t.apply(vec![Mutation::SetRestrictedMode { on: false }]);
    assert_eq!(on(&t.view(), "dev", Some("Designer"), Perm::Change, "Application", "Application-1"), Reason::Allowed);
}

#[test]
fn fail_closed_on_unknown_things() {
    let mut t = Tenant::acme();
    t.apply(vec![person("u"), object("Skill", "s", "Skills")]);
    let v = t.view();
    assert_eq!(privilege(&v, "ghost", CB, "Callback - View"), Reason::UnknownSubject);
    assert_eq!(privilege(&v, "u", "NoSuchApp", "Callback - View"), Reason::UnknownApplication);
    assert_eq!(privilege(&v, "u", CB, "Callback - view"), Reason::UnknownPrivilege, "names are case-sensitive");
    assert_eq!(privilege(&v, "u", CB, "Callback - View "), Reason::UnknownPrivilege);
    assert_eq!(on(&v, "u", None, Perm::Read, "Skill", "nope"), Reason::UnknownObject);
    let cross = v.check(&CheckRequest {
        subject: "u",
        object: Some(ObjectRef { kind: "Skill", id: "s", tenant: Some("globex") }),
        ..Default::default()
    });
    assert_eq!(cross.reason, Reason::CrossTenant);
    t.apply(vec![Mutation::PutPerson(Person {
        id: PersonId("u".into()),
        username: "u".into(),
        enabled: false,
        folder: FolderId(folders::PERSONS.into()),
        annex: BTreeMap::new(),
        properties: BTreeMap::new(),
    })]);
    assert_eq!(privilege(&t.view(), "u", CB, "Callback - View"), Reason::DisabledSubject);
}
