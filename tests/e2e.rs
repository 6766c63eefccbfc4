//! End-to-end tests through the real gRPC server (ARCHITECTURE habit 10).
//!
//! Each test starts its own server in-process on `127.0.0.1:0` with a
//! temporary SQLite store and the demo tenant ACME (`examples/acme.yaml`), and
//! talks to it with the generated tonic clients, exactly as a desktop, a
//! dashboard or an administration tool would. The SPEC §8 scenarios are
//! checked here through the API with the demo tenant's persons.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod support;

use authzd::model::{Mutation, TenantFile};
use authzd::proto::authzd::v1 as pb;
use authzd::proto::authzd::v1::admin_service_client::AdminServiceClient;
use authzd::proto::authzd::v1::decision_service_client::DecisionServiceClient;
use authzd::proto::authzd::v1::watch_service_client::WatchServiceClient;
use authzd::service::convert;
use std::time::{Duration, Instant};
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

const TENANT: &str = "acme";

// ------------------------------------------------------------------ harness

/// A server running on an ephemeral port.
type Running = support::Serving;
use support::{demo_config as config, serve as start};

type Auth = Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;

async fn admin_with_token(r: &Running, token: &str) -> AdminServiceClient<InterceptedService<Channel, Auth>> {
    let value: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    let auth: Auth = Box::new(move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", value.clone());
        Ok(req)
    });
    AdminServiceClient::with_interceptor(r.channel().await, auth)
}

// ------------------------------------------------------------------ helpers

fn obj(kind: &str, id: &str) -> Option<pb::ObjectRef> {
    Some(pb::ObjectRef { r#type: kind.into(), id: id.into(), tenant: None })
}

fn perm(p: pb::Permission) -> i32 {
    p as i32
}

fn privilege_check(person: &str, app: &str, privilege: &str) -> pb::CheckRequest {
    pb::CheckRequest {
        tenant: TENANT.into(),
        person: person.into(),
        application: Some(app.into()),
        privilege: Some(privilege.into()),
        ..Default::default()
    }
}

fn object_check(person: &str, app: Option<&str>, p: pb::Permission, kind: &str, id: &str) -> pb::CheckRequest {
    pb::CheckRequest {
        tenant: TENANT.into(),
        person: person.into(),
        application: app.map(str::to_owned),
        permission: perm(p),
        object: obj(kind, id),
        ..Default::default()
    }
}

/// (allowed, reason code, revision) of a check.
async fn check(c: &mut DecisionServiceClient<Channel>, req: pb::CheckRequest) -> (bool, &'static str, u64) {
    let r = c.check(req).await.expect("check answers").into_inner();
    (r.allowed, convert::reason_code(r.reason), r.revision)
}

/// A check the demo tenant always answers the same way: the server still serves.
async fn still_serving(c: &mut DecisionServiceClient<Channel>) {
    let r = check(c, privilege_check("cb-supervisor", "Callback", "Callback - Export Reports")).await;
    assert_eq!((r.0, r.1), (true, "ALLOWED"), "the server keeps answering");
}

fn write(mutations: Vec<Mutation>) -> pb::WriteRequest {
    pb::WriteRequest {
        tenant: TENANT.into(),
        mutations: mutations.into_iter().map(convert::mutation_pb).collect(),
        ..Default::default()
    }
}

/// Mutations from YAML, as the CLI's `write` reads them.
fn mutations(yaml: &str) -> Vec<Mutation> {
    authzd::model::yaml::from_str(yaml, "test batch").unwrap()
}

async fn export(a: &mut AdminServiceClient<Channel>) -> (String, u64) {
    let r = a.export(pb::ExportRequest { tenant: TENANT.into(), at_least_revision: 0 }).await.unwrap().into_inner();
    (r.yaml, r.revision)
}

async fn list_all(
    c: &mut DecisionServiceClient<Channel>,
    person: &str,
    kind: &str,
    folder: Option<&str>,
    app: Option<&str>,
    page_size: u32,
) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let r = c
            .list_visible(pb::ListVisibleRequest {
                tenant: TENANT.into(),
                person: person.into(),
                r#type: kind.into(),
                folder: folder.map(str::to_owned),
                application: app.map(str::to_owned),
                page_size,
                page_token: token,
                ..Default::default()
            })
            .await
            .expect("listing answers")
            .into_inner();
        pages += 1;
        let limit = if page_size == 0 { 1_000 } else { page_size as usize };
        assert!(r.objects.len() <= limit);
        ids.extend(r.objects.into_iter().map(|o| o.id));
        if r.next_page_token.is_empty() {
            return (ids, pages);
        }
        token = r.next_page_token;
    }
}

fn status_of<T: std::fmt::Debug>(r: Result<T, tonic::Status>) -> tonic::Status {
    r.expect_err("the call is refused")
}

// -------------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread")]
async fn reflection_lists_the_services_and_health_is_serving() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let dir = tempfile::tempdir().unwrap();
    let r = start(config(&dir.path().join("a.db"))).await;

    let mut reflection = ServerReflectionClient::new(r.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses =
        reflection.server_reflection_info(tokio_stream::iter(vec![request])).await.unwrap().into_inner();
    let response = responses.message().await.unwrap().expect("one response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("not a service list: {response:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for service in
        ["authzd.v1.DecisionService", "authzd.v1.AdminService", "authzd.v1.WatchService", "grpc.health.v1.Health"]
    {
        assert!(names.iter().any(|n| n == service), "{service} listed in {names:?}");
    }

    let mut health = tonic_health::pb::health_client::HealthClient::new(r.channel().await);
    for service in ["", "authzd.v1.DecisionService", "authzd.v1.AdminService"] {
        let s =
            health.check(tonic_health::pb::HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(s.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32, "{service:?}");
    }
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_web_clients_are_answered_over_http1() {
    use prost::Message as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let dir = tempfile::tempdir().unwrap();
    let r = start(config(&dir.path().join("a.db"))).await;
    let msg = privilege_check("cb-supervisor", "Callback", "Callback - Export Reports").encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    body.extend_from_slice(&msg);
    let mut stream = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    let head = format!(
        "POST /authzd.v1.DecisionService/Check HTTP/1.1\r\nhost: {}\r\ncontent-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        r.addr,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.to_ascii_lowercase().contains("content-type: application/grpc-web"), "{text}");
    assert!(text.contains("grpc-status:0"), "trailers frame with OK status: {text}");
    r.stop().await;
}

/// SPEC §8 scenarios 1-3, 5: Callback roles, the legacy annex, unconfigured
/// persons, and the Web Callback dependency chain.
#[tokio::test(flavor = "multi_thread")]
async fn callback_roles_and_web_callback_chain() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(config(&dir.path().join("a.db"))).await;
    let mut d = r.decisions().await;

    let tasks = [
        "Callback - View",
        "Callback - Create",
        "Callback - Cancel",
        "Callback - Reschedule",
        "Callback - Export Reports",
        "Callback - Developer Tab",
    ];
    let expected: [(&str, [bool; 6]); 4] = [
        ("cb-admin", [true, true, true, true, true, true]),
        ("cb-supervisor", [true, true, true, true, true, false]),
        ("cb-monitor", [true, false, false, false, false, false]),
        ("cb-developer", [true, false, false, false, false, true]),
    ];
    for (person, allowed) in expected {
        for (task, want) in tasks.iter().zip(allowed) {
            let (got, reason, _) = check(&mut d, privilege_check(person, "Callback", task)).await;
            assert_eq!(got, want, "{person} / {task}: {reason}");
            if !want {
                assert_eq!(reason, "MISSING_PRIVILEGE", "{person} / {task}");
            }
        }
    }
    // Scenario 2: Supervisor + Monitor gives the Supervisor's access, primary role Supervisor.
    let e = d
        .effective_privileges(pb::EffectivePrivilegesRequest {
            tenant: TENANT.into(),
            person: "cb-super-monitor".into(),
            application: "Callback".into(),
            at_least_revision: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .effective
        .unwrap();
    assert_eq!(e.primary_role.as_deref(), Some("Callback Supervisor"));
    assert!(e.privileges.iter().any(|p| p == "Callback - Export Reports"));
    assert_eq!(e.source, pb::PrivilegeSource::Roles as i32);
    // Scenario 3: the `ges` annex decides alone, although the group says Monitor.
    let e = d
        .effective_privileges(pb::EffectivePrivilegesRequest {
            tenant: TENANT.into(),
            person: "cb-annex-admin".into(),
            application: "Callback".into(),
            at_least_revision: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .effective
        .unwrap();
    assert_eq!(e.source, pb::PrivilegeSource::LegacyAnnex as i32);
    assert_eq!((e.legacy_section.as_deref(), e.legacy_role.as_deref()), (Some("ges"), Some("Administrator")));
    assert_eq!(
        check(&mut d, privilege_check("cb-annex-admin", "Callback", "Callback - Developer Tab")).await.1,
        "ALLOWED"
    );
    // SPEC §3 rule 3: no configuration at all -> every privilege, with its own reason.
    assert_eq!(
        check(&mut d, privilege_check("cb-unconfigured", "Callback", "Callback - Developer Tab")).await.1,
        "OPEN_WHEN_UNCONFIGURED"
    );
    // Scenario 5: "Can Reschedule Before Call" without "Can Reschedule" is not effective.
    let before_call = "Web Callback - Can Reschedule Before Call";
    assert_eq!(
        check(&mut d, privilege_check("wcb-agent-broken", "WorkspaceWebCallback", before_call)).await.1,
        "UNMET_DEPENDENCY"
    );
    assert_eq!(
        check(&mut d, privilege_check("wcb-agent-chain", "WorkspaceWebCallback", before_call)).await.1,
        "ALLOWED"
    );
    assert_eq!(
        check(&mut d, privilege_check("wcb-agent-full", "WorkspaceWebCallback", before_call)).await.1,
        "ALLOWED"
    );
    r.stop().await;
}

/// SPEC §8 scenario 4: Sales and Service agents each see their own queue;
/// listings page through with an opaque token; moving a queue into the
/// Premium subfolder changes who sees it at once.
#[tokio::test(flavor = "multi_thread")]
async fn line_of_business_queues_page_by_page() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(config(&dir.path().join("a.db"))).await;
    let mut d = r.decisions().await;
    let mut a = r.admin().await;

    let (sales, _) = list_all(&mut d, "sales-agent-1", "Script", Some("Scripts/Callback"), None, 1).await;
    assert_eq!(sales, ["ges_Sales_VQ"]);
    let (service, _) = list_all(&mut d, "service-agent-2", "Script", Some("Scripts/Callback"), None, 1).await;
    assert_eq!(service, ["ges_Service_VQ"]);
    // A supervisor sees every queue: three pages of one, in id order.
    let (all, pages) = list_all(&mut d, "cb-supervisor", "Script", Some("Scripts/Callback"), None, 1).await;
    assert_eq!(all, ["ges_Premium_VQ", "ges_Sales_VQ", "ges_Service_VQ"]);
    assert_eq!(pages, 3);
    let (again, pages) = list_all(&mut d, "cb-supervisor", "Script", None, None, 0).await;
    assert_eq!((again, pages), (all.clone(), 1));
    // A garbled token is refused, naming the field.
    let s = status_of(
        d.list_visible(pb::ListVisibleRequest {
            tenant: TENANT.into(),
            person: "cb-supervisor".into(),
            r#type: "Script".into(),
            page_token: "not a token".into(),
            ..Default::default()
        })
        .await,
    );
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().starts_with("page_token:"), "{}", s.message());

    // Provisioning a queue in the Premium folder: Premium agents see it, Sales agents do not.
    let p = a
        .provision_virtual_queue(pb::ProvisionVirtualQueueRequest {
            tenant: TENANT.into(),
            queue: "Gold_VQ".into(),
            folder: Some("Scripts/Callback/Premium".into()),
            actor: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.script_id, "ges_Gold_VQ");
    let (premium, _) = list_all(&mut d, "premium-agent-1", "Script", None, None, 10).await;
    assert_eq!(premium, ["ges_Gold_VQ", "ges_Premium_VQ"]);
    // Provisioning again is idempotent: no new revision.
    let again = a
        .provision_virtual_queue(pb::ProvisionVirtualQueueRequest {
            tenant: TENANT.into(),
            queue: "Gold_VQ".into(),
            folder: Some("Scripts/Callback/Premium".into()),
            actor: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.revision, p.revision);
    // A queue provisioned in Scripts/Callback is visible to everyone; moving its
    // script into the Premium subfolder takes it away from Sales agents at once.
    a.provision_virtual_queue(pb::ProvisionVirtualQueueRequest {
        tenant: TENANT.into(),
        queue: "Open_VQ".into(),
        folder: None,
        actor: None,
    })
    .await
    .unwrap();
    let (sales, _) = list_all(&mut d, "sales-agent-1", "Script", None, None, 10).await;
    assert_eq!(sales, ["ges_Open_VQ", "ges_Sales_VQ"]);
    a.write(write(mutations(
        "- move_object: {target: {object: {type: Script, id: ges_Open_VQ}}, folder: Scripts/Callback/Premium}",
    )))
    .await
    .unwrap();
    let (sales, _) = list_all(&mut d, "sales-agent-1", "Script", None, None, 10).await;
    assert_eq!(sales, ["ges_Sales_VQ"]);
    let (premium, _) = list_all(&mut d, "premium-agent-1", "Script", None, None, 10).await;
    assert_eq!(premium, ["ges_Gold_VQ", "ges_Open_VQ", "ges_Premium_VQ"]);
    r.stop().await;
}

/// SPEC §8 scenarios 6, 7 and 10: the clerks, the Advisors group scenarios,
/// Designer roles and partitions, through Check and ListVisible.
#[tokio::test(flavor = "multi_thread")]
async fn clerks_metrics_and_designer_decisions() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(config(&dir.path().join("a.db"))).await;
    let mut d = r.decisions().await;
    let ga = Some("GenesysAdministrator");

    // Scenario 6: HR clerk lists persons and no skills; the Operations clerk the reverse;
    // without the Provisioning module neither sees anything.
    let (hr_persons, _) = list_all(&mut d, "hr-clerk", "Person", None, ga, 100).await;
    let (hr_skills, _) = list_all(&mut d, "hr-clerk", "Skill", None, ga, 100).await;
    let (ops_persons, _) = list_all(&mut d, "ops-clerk", "Person", None, ga, 100).await;
    let (ops_skills, _) = list_all(&mut d, "ops-clerk", "Skill", None, ga, 100).await;
    let (none_persons, _) = list_all(&mut d, "clerk-nomodule", "Person", None, ga, 100).await;
    let (none_skills, _) = list_all(&mut d, "clerk-nomodule", "Skill", None, ga, 100).await;
    assert!(hr_persons.iter().any(|p| p == "sales-agent-1"));
    assert!(hr_skills.is_empty() && ops_persons.is_empty() && none_persons.is_empty() && none_skills.is_empty());
    assert_eq!(ops_skills.len(), 4);
    assert_eq!(
        check(&mut d, object_check("hr-clerk", ga, pb::Permission::Change, "Person", "sales-agent-1")).await.1,
        "ALLOWED"
    );
    assert_eq!(
        check(&mut d, object_check("hr-clerk", ga, pb::Permission::Change, "Skill", "skill-english")).await.1,
        "MISSING_PRIVILEGE"
    );
    assert_eq!(
        check(&mut d, object_check("clerk-nomodule", ga, pb::Permission::Read, "Skill", "skill-english")).await.1,
        "MISSING_PRIVILEGE"
    );

    // Scenario 7: the four Advisors group scenarios on metrics.
    for (metric, want) in [
        ("FrontlineAdvisor.Agent.Voice.nch", "ALLOWED"),
        ("FrontlineAdvisor.Team.Voice.taht", "EXPLICIT_DENY"),
        ("FrontlineAdvisor.AgentGroup.Voice.aht", "EXPLICIT_DENY"),
        ("FrontlineAdvisor.Agent.Email.handled", "NO_GRANT"),
    ] {
        let got = check(&mut d, object_check("adv-user-a", None, pb::Permission::Read, "Metric", metric)).await.1;
        assert_eq!(got, want, "{metric}");
    }

    // Scenario 10: a Business User assigns phone numbers to an application they
    // can read, but may not change it; partitions hide the other partition's resources.
    let mut assign =
        object_check("dz-business", Some("Designer"), pb::Permission::Unspecified, "Application", "app-main-ivr");
    assign.privilege = Some("Applications.AssignPhoneNumbers".into());
    assert_eq!(check(&mut d, assign).await.1, "ALLOWED");
    let change = object_check("dz-business", Some("Designer"), pb::Permission::Change, "Application", "app-main-ivr");
    assert_eq!(check(&mut d, change.clone()).await.1, "MISSING_PRIVILEGE");
    let change = pb::CheckRequest { person: "dz-developer".into(), ..change };
    assert_eq!(check(&mut d, change).await.1, "ALLOWED");
    assert_eq!(
        check(
            &mut d,
            object_check("dz-dev-sales", Some("Designer"), pb::Permission::Read, "Application", "app-service-ivr")
        )
        .await
        .1,
        "PARTITION"
    );
    let (apps, _) = list_all(&mut d, "dz-dev-sales", "Application", None, Some("Designer"), 100).await;
    assert_eq!(apps, ["app-main-ivr", "app-sales-ivr"]);
    assert_eq!(
        check(&mut d, object_check("dz-former", Some("Designer"), pb::Permission::Read, "Application", "app-main-ivr"))
            .await
            .1,
        "DISABLED_SUBJECT"
    );
    // Unknown things: decisions deny with the reason; listings and privileges say NOT_FOUND.
    assert_eq!(check(&mut d, privilege_check("nobody", "Callback", "Callback - View")).await.1, "UNKNOWN_SUBJECT");
    let unknown_tenant =
        pb::CheckRequest { tenant: "globex".into(), ..privilege_check("cb-admin", "Callback", "Callback - View") };
    assert_eq!(check(&mut d, unknown_tenant).await.1, "UNKNOWN_TENANT");
    let s = status_of(
        d.list_visible(pb::ListVisibleRequest {
            tenant: TENANT.into(),
            person: "nobody".into(),
            r#type: "Script".into(),
            ..Default::default()
        })
        .await,
    );
    assert_eq!(s.code(), Code::NotFound);
    assert!(s.message().contains("`nobody`"), "{}", s.message());
    let s = status_of(
        d.effective_privileges(pb::EffectivePrivilegesRequest {
            tenant: TENANT.into(),
            person: "cb-admin".into(),
            application: "Calback".into(),
            at_least_revision: 0,
        })
        .await,
    );
    assert_eq!(s.code(), Code::NotFound);
    assert!(s.message().contains("`Calback`"), "{}", s.message());
    r.stop().await;
}

/// Explain returns the entries (and the folder they come from), groups, roles
/// and the privileges consulted, each with why it was needed.
#[tokio::test(flavor = "multi_thread")]
async fn explain_names_what_decided() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(config(&dir.path().join("a.db"))).await;
    let mut d = r.decisions().await;
    let e = d
        .explain(pb::ExplainRequest {
            tenant: TENANT.into(),
            person: "ops-clerk".into(),
            application: Some("GenesysAdministrator".into()),
            permission: perm(pb::Permission::Change),
            object: obj("Person", "sales-agent-1"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!e.allowed);
    assert_eq!(convert::reason_code(e.reason), "MISSING_PRIVILEGE");
    let ev = e.evidence.unwrap();
    assert!(ev.groups.contains(&"clerks".to_owned()));
    assert_eq!(ev.roles, ["Operations_Clerk"]);
    assert_eq!(ev.privilege_source, pb::PrivilegeSource::Roles as i32);
    let entry = ev.aces.iter().find(|a| a.inherited_from == "Persons").expect("the clerks' entry on Persons");
    assert!(entry.allow.contains(&perm(pb::Permission::Change)) && entry.propagate);
    let p = &ev.privileges[0];
    assert_eq!(
        (p.name.as_str(), p.effective, p.need),
        ("Account Provisioning > Users", false, pb::PrivilegeNeed::TypeGuard as i32)
    );
    r.stop().await;
}

/// SPEC §8 scenario 12: restricted mode locks applications and shared modules,
/// not business controls; turning it off unlocks them.
#[tokio::test(flavor = "multi_thread")]
async fn restricted_mode_locks_applications_not_business_controls() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(config(&dir.path().join("a.db"))).await;
    let mut d = r.decisions().await;
    let mut a = r.admin().await;
    let designer = Some("Designer");
    let change = |kind: &str, id: &str| object_check("dz-developer", designer, pb::Permission::Change, kind, id);
    assert_eq!(check(&mut d, change("Application", "app-main-ivr")).await.1, "ALLOWED");

    let on = a
        .set_restricted_mode(pb::SetRestrictedModeRequest { tenant: TENANT.into(), on: true, actor: None })
        .await
        .unwrap()
        .into_inner();
    let mut at = change("Application", "app-main-ivr");
    at.at_least_revision = on.revision;
    let (allowed, reason, revision) = check(&mut d, at).await;
    assert_eq!((allowed, reason), (false, "RESTRICTED_MODE"));
    assert!(revision >= on.revision);
    assert_eq!(check(&mut d, change("SharedModule", "sm-authenticate")).await.1, "RESTRICTED_MODE");
    assert_eq!(check(&mut d, change("BusinessControl", "bc-business-hours")).await.1, "ALLOWED");
    assert_eq!(
        check(&mut d, object_check("dz-developer", designer, pb::Permission::Read, "Application", "app-main-ivr"))
            .await
            .1,
        "ALLOWED"
    );
    let tenants = a.list_tenants(pb::ListTenantsRequest { at_least_revision: 0 }).await.unwrap().into_inner();
    assert!(tenants.tenants.iter().any(|t| t.id == TENANT && t.restricted_mode));

    a.set_restricted_mode(pb::SetRestrictedModeRequest { tenant: TENANT.into(), on: false, actor: None })
        .await
        .unwrap();
    assert_eq!(check(&mut d, change("Application", "app-main-ivr")).await.1, "ALLOWED");
    r.stop().await;
}

/// A CheckBatch is answered from one view: every result at one revision,
/// in request order, with evidence when asked.
#[tokio::test(flavor = "multi_thread")]
async fn check_batch_answers_at_one_revision() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(config(&dir.path().join("a.db"))).await;
    let mut d = r.decisions().await;
    let item = |app: &str, privilege: &str| pb::CheckBatchItem {
        application: Some(app.into()),
        privilege: Some(privilege.into()),
        ..Default::default()
    };
    let req = pb::CheckBatchRequest {
        tenant: TENANT.into(),
        person: "cb-supervisor".into(),
        items: vec![
            item("Callback", "Callback - View"),
            item("Callback", "Callback - Developer Tab"),
            pb::CheckBatchItem {
                permission: perm(pb::Permission::Read),
                object: obj("Script", "ges_Premium_VQ"),
                ..Default::default()
            },
            item("Nope", "x"),
        ],
        explain: true,
        at_least_revision: 0,
    };
    let b = d.check_batch(req.clone()).await.unwrap().into_inner();
    let reasons: Vec<&str> = b.results.iter().map(|x| convert::reason_code(x.reason)).collect();
    assert_eq!(reasons, ["ALLOWED", "MISSING_PRIVILEGE", "ALLOWED", "UNKNOWN_APPLICATION"]);
    assert!(b.results.iter().all(|x| x.evidence.is_some()));
    let (_, _, single) = check(&mut d, privilege_check("cb-supervisor", "Callback", "Callback - View")).await;
    assert_eq!(b.revision, single);
    // A bad permission value names the item.
    let mut bad = req;
    bad.items[2].permission = 42;
    let s = status_of(d.check_batch(bad).await);
    assert_eq!(s.code(), Code::InvalidArgument);
    assert_eq!(s.message(), "items[2].permission: unknown permission value `42`");
    r.stop().await;
}

/// SPEC §6: the HR clerk may change a person but not a skill; a refused batch
/// names the mutation, the object and the reason, and stores nothing.
#[tokio::test(flavor = "multi_thread")]
async fn actor_writes_are_checked_under_the_same_model() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(config(&dir.path().join("a.db"))).await;
    let mut a = r.admin().await;
    let mut d = r.decisions().await;
    let person = r#"- put_person: {id: sales-agent-1, username: sales.agent1, properties: {EmployeeID: E-1001, IsAgent: "true", AgentLogins: "5001", Skills: "English,French"}}"#;
    let skill = "- put_object: {type: Skill, id: skill-english, name: English (UK), folder: Skills}";

    let (before, _) = export(&mut a).await;
    let mut req = write(mutations(&format!("{person}\n{skill}")));
    req.actor = Some("hr-clerk".into());
    let s = status_of(a.write(req).await);
    assert_eq!(s.code(), Code::PermissionDenied);
    assert!(
        s.message().starts_with(
            "mutations[1].put_object: actor `hr-clerk` may not Change Skill `skill-english`: MISSING_PRIVILEGE"
        ),
        "{}",
        s.message()
    );
    assert!(s.message().contains("Account Provisioning > Skills"), "{}", s.message());
    assert_eq!(export(&mut a).await.0, before, "nothing was stored");

    // The person alone is accepted (Change on Persons, the Users item and Agent Info).
    let mut req = write(mutations(person));
    req.actor = Some("hr-clerk".into());
    let w = a.write(req).await.expect("the HR clerk may change persons").into_inner();
    assert_ne!(export(&mut a).await.0, before);
    // The Operations clerk may change the skill, not the person.
    let mut req = write(mutations(skill));
    req.actor = Some("ops-clerk".into());
    a.write(req).await.expect("the Operations clerk may change skills");
    let mut req = write(mutations(person));
    req.actor = Some("ops-clerk".into());
    let s = status_of(a.write(req).await);
    assert_eq!(s.code(), Code::PermissionDenied);
    assert!(s.message().contains("Person `sales-agent-1`"), "{}", s.message());
    // An ACE edit needs ChangePermissions; a person outside every group has none.
    let mut req =
        write(mutations("- put_ace: {target: {folder: Skills}, subject: everyone, allow: [Read], propagate: true}"));
    req.actor = Some("sales-agent-2".into());
    let s = status_of(a.write(req).await);
    assert_eq!(s.code(), Code::PermissionDenied);
    assert!(s.message().contains("may not ChangePermissions Folder `Skills`: NO_GRANT"), "{}", s.message());
    // Administrators may do anything.
    let mut req = write(mutations(skill));
    req.actor = Some("cb-admin".into());
    a.write(req).await.expect("administrators hold every permission");
    let mut at = privilege_check("cb-supervisor", "Callback", "Callback - View");
    at.at_least_revision = w.revision;
    assert!(check(&mut d, at).await.0);
    r.stop().await;
}

/// SPEC §6 dry runs: the answer lists who gains and loses what, and nothing is stored.
#[tokio::test(flavor = "multi_thread")]
async fn dry_run_lists_gains_and_losses() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(config(&dir.path().join("a.db"))).await;
    let mut a = r.admin().await;
    let mut d = r.decisions().await;
    let (before, revision) = export(&mut a).await;
    let mut req = write(mutations(
        "- add_group_member: {group: sales, person: service-agent-1}\n\
         - add_group_member: {group: web-callback-agents, person: wcb-agent-broken}\n\
         - remove_group_member: {group: supervisors, person: cb-super-monitor}",
    ));
    req.dry_run = true;
    let w = a.write(req).await.unwrap().into_inner();
    assert_eq!(w.revision, revision, "evaluated at the current revision");
    assert!(!w.changes_truncated);
    let by_person =
        |id: &str| w.changes.iter().find(|c| c.person == id).unwrap_or_else(|| panic!("{id} in {:?}", w.changes));
    let service = by_person("service-agent-1");
    assert!(service.visible_gained.iter().any(|k| k.r#type == "Script" && k.id == "ges_Sales_VQ"));
    let broken = by_person("wcb-agent-broken");
    let wcb = broken.privileges.iter().find(|p| p.application == "WorkspaceWebCallback").unwrap();
    assert!(wcb.gained.iter().any(|p| p == "Web Callback - Can Reschedule Before Call"));
    let demoted = by_person("cb-super-monitor");
    let cb = demoted.privileges.iter().find(|p| p.application == "Callback").unwrap();
    assert!(cb.lost.iter().any(|p| p == "Callback - Export Reports"));
    assert!(cb.gained.is_empty());
    assert!(demoted.visible_lost.is_empty(), "Callback Monitors still read every queue");
    assert!(w.changes.iter().all(|c| c.person != "cb-admin"), "nobody else changes");
    assert_eq!(export(&mut a).await, (before, revision), "a dry run stores nothing");
    assert_eq!(
        check(
            &mut d,
            privilege_check("wcb-agent-broken", "WorkspaceWebCallback", "Web Callback - Can Reschedule Before Call")
        )
        .await
        .1,
        "UNMET_DEPENDENCY"
    );
    r.stop().await;
}

/// SPEC §6: a failed precondition changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn failed_preconditions_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(config(&dir.path().join("a.db"))).await;
    let mut a = r.admin().await;
    let (_, stale) = export(&mut a).await;
    a.write(write(mutations("- put_person: {id: temp-1, username: temp.1}"))).await.unwrap();
    let (before, current) = export(&mut a).await;
    assert!(current > stale);

    let mut req = write(mutations("- put_person: {id: temp-2, username: temp.2}"));
    req.expected_revision = Some(stale);
    let s = status_of(a.write(req).await);
    assert_eq!(s.code(), Code::FailedPrecondition);
    assert!(s.message().starts_with("expected_revision:"), "{}", s.message());

    let target = |person: &str| pb::Target { kind: Some(pb::target::Kind::Person(person.into())) };
    let mut req = write(mutations("- put_person: {id: temp-2, username: temp.2}"));
    req.preconditions =
        vec![pb::Precondition { condition: Some(pb::precondition::Condition::Absent(target("temp-1"))) }];
    let s = status_of(a.write(req).await);
    assert_eq!(s.code(), Code::FailedPrecondition);
    assert!(s.message().contains("person temp-1 exists"), "{}", s.message());

    let mut req = write(mutations("- put_person: {id: temp-2, username: temp.2}"));
    req.preconditions =
        vec![pb::Precondition { condition: Some(pb::precondition::Condition::Exists(target("ghost"))) }];
    assert_eq!(status_of(a.write(req).await).code(), Code::FailedPrecondition);
    assert_eq!(export(&mut a).await, (before, current), "nothing changed");

    // With the current revision and holding preconditions, the write goes through.
    let mut req = write(mutations("- put_person: {id: temp-2, username: temp.2}"));
    req.expected_revision = Some(current);
    req.preconditions = vec![
        pb::Precondition { condition: Some(pb::precondition::Condition::Exists(target("temp-1"))) },
        pb::Precondition { condition: Some(pb::precondition::Condition::Absent(target("temp-2"))) },
    ];
    let w = a.write(req).await.unwrap().into_inner();
    assert!(w.revision > current);
    r.stop().await;
}

/// SPEC §6: invalid input of any kind is refused whole with an error naming
/// the field and item, and the server keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&dir.path().join("a.db"));
    cfg.admin_token = Some("s3cret-token".into());
    cfg.limits.max_batch = 5;
    cfg.limits.revision_wait = Duration::from_millis(300);
    let r = start(cfg).await;
    let mut d = r.decisions().await;
    let mut a = admin_with_token(&r, "s3cret-token").await;
    let (before, _) = {
        let x = a.export(pb::ExportRequest { tenant: TENANT.into(), at_least_revision: 0 }).await.unwrap().into_inner();
        (x.yaml, x.revision)
    };
    let refused = |s: tonic::Status, code: Code, needle: &str| {
        assert_eq!(s.code(), code, "{}", s.message());
        assert!(s.message().contains(needle), "`{needle}` in `{}`", s.message());
    };

    // Empty id: the mutation index and field.
    let req = pb::WriteRequest {
        tenant: TENANT.into(),
        mutations: vec![
            convert::mutation_pb(mutations("- put_person: {id: ok-1, username: ok.1}").remove(0)),
            pb::Mutation {
                op: Some(pb::mutation::Op::PutPerson(pb::Person { username: "x".into(), ..Default::default() })),
            },
        ],
        ..Default::default()
    };
    refused(status_of(a.write(req).await), Code::InvalidArgument, "mutations[1].put_person.id: must not be empty");
    still_serving(&mut d).await;

    // A metric name with a wrong channel, one with a trailing space, one in the wrong folder.
    for (yaml, needle) in [
        (
            "- put_object: {type: Metric, id: m1, name: FrontlineAdvisor.Team.Phone.x, folder: Advisors Metrics/FrontlineAdvisor/Team}",
            "mutations[0].put_object.name: metric name `FrontlineAdvisor.Team.Phone.x` is not `[Application].[ObjectType].[Channel].[Name]`: channel `Phone`",
        ),
        (
            "- put_object: {type: Metric, id: m2, name: 'FrontlineAdvisor.Team.Voice.x ', folder: Advisors Metrics/FrontlineAdvisor/Team}",
            "trailing white space",
        ),
        (
            "- put_object: {type: Metric, id: m3, name: FrontlineAdvisor.Team.Voice.x, folder: Advisors Metrics/FrontlineAdvisor/Agent}",
            "must live in folder `Advisors Metrics/FrontlineAdvisor/Team`",
        ),
        (
            "- put_object: {type: Metric, id: m4, name: frontlineAdvisor.Team.Voice.x, folder: Advisors Metrics/FrontlineAdvisor/Team}",
            "application `frontlineAdvisor`",
        ),
    ] {
        refused(status_of(a.write(write(mutations(yaml))).await), Code::InvalidArgument, needle);
        still_serving(&mut d).await;
    }

    // An unknown reference names the item.
    refused(
        status_of(a.write(write(mutations("- add_group_member: {group: sales, person: nobody}"))).await),
        Code::InvalidArgument,
        "mutations[0].add_group_member.access_groups[sales].members: unknown person `nobody`",
    );
    refused(
        status_of(a.write(write(mutations("- add_group_member: {group: no-such-group, person: cb-admin}"))).await),
        Code::InvalidArgument,
        "mutations[0].add_group_member.group: unknown access group `no-such-group`",
    );
    still_serving(&mut d).await;

    // An oversized batch names the limit.
    let many: Vec<Mutation> =
        (0..6).flat_map(|i| mutations(&format!("- put_person: {{id: p{i}, username: p{i}}}"))).collect();
    refused(status_of(a.write(write(many)).await), Code::InvalidArgument, "limit of 5");
    still_serving(&mut d).await;

    // An unknown tenant.
    let mut req = write(mutations("- put_person: {id: p, username: p}"));
    req.tenant = "globex".into();
    refused(status_of(a.write(req).await), Code::NotFound, "unknown tenant `globex`");

    // Missing or wrong token: refused without echoing the token; decisions stay open.
    let mut open = r.admin().await;
    let s = status_of(open.list_tenants(pb::ListTenantsRequest::default()).await);
    assert_eq!(s.code(), Code::Unauthenticated);
    let mut wrong = admin_with_token(&r, "guess").await;
    let s = status_of(wrong.write(write(mutations("- put_person: {id: p, username: p}"))).await);
    assert_eq!(s.code(), Code::Unauthenticated);
    assert!(!s.message().contains("s3cret-token") && !s.message().contains("guess"));
    still_serving(&mut d).await;

    let after =
        a.export(pb::ExportRequest { tenant: TENANT.into(), at_least_revision: 0 }).await.unwrap().into_inner().yaml;
    assert_eq!(after, before, "nothing was half-applied");

    // A revision this replica will not reach in time: UNAVAILABLE, bounded.
    let mut far = privilege_check("cb-admin", "Callback", "Callback - View");
    far.at_least_revision = 1_000_000;
    let started = std::time::Instant::now();
    let s = status_of(d.check(far).await);
    assert_eq!(s.code(), Code::Unavailable);
    assert!(started.elapsed() < Duration::from_secs(3), "the wait is bounded");
    still_serving(&mut d).await;
    r.stop().await;
}

/// Tenant files: import refuses an existing tenant unless `replace`; replace
/// is exact (export after equals the file); export → import round-trips.
#[tokio::test(flavor = "multi_thread")]
async fn import_replace_and_export_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(config(&dir.path().join("a.db"))).await;
    let mut a = r.admin().await;
    let mut d = r.decisions().await;
    let (yaml, _) = export(&mut a).await;

    let s = status_of(a.import(pb::ImportRequest { yaml: yaml.clone(), ..Default::default() }).await);
    assert_eq!(s.code(), Code::AlreadyExists);

    // Replacing with the same file changes nobody.
    let same = a
        .import(pb::ImportRequest { yaml: yaml.clone(), replace: true, dry_run: true, include_changes: false })
        .await
        .unwrap()
        .into_inner();
    assert!(same.changes.is_empty(), "{:?}", same.changes);

    // A trimmed copy: renamed, one person and their memberships gone, a new person.
    let mut file = TenantFile::from_yaml(&yaml).unwrap();
    file.tenant.name = "ACME Corp".into();
    file.persons.retain(|p| p.id.as_str() != "cb-monitor");
    for g in &mut file.access_groups {
        g.members.retain(|m| m.as_str() != "cb-monitor");
    }
    file.persons.push(serde_yaml_ng::from_str("{id: new-hire, username: new.hire}").unwrap());
    let trimmed = file.to_yaml().unwrap();
    let w = a
        .import(pb::ImportRequest { yaml: trimmed.clone(), replace: true, dry_run: false, include_changes: true })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(w.tenant, TENANT);
    assert!(w.changes.iter().any(|c| c.person == "cb-monitor"), "cb-monitor loses everything");
    let (after, revision) = export(&mut a).await;
    assert_eq!(revision, w.revision);
    assert_eq!(TenantFile::from_yaml(&after).unwrap().to_config().unwrap(), file.to_config().unwrap());
    assert_eq!(check(&mut d, privilege_check("cb-monitor", "Callback", "Callback - View")).await.1, "UNKNOWN_SUBJECT");
    // A file that does not parse names the line.
    let s =
        status_of(a.import(pb::ImportRequest { yaml: "tenant: {id: x, name: [".into(), ..Default::default() }).await);
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("line"), "{}", s.message());
    // Two persons with one id: refused naming both items (a file used to keep
    // the last one silently), and nothing stored.
    let mut dup = file.clone();
    dup.persons.push(dup.persons[0].clone());
    let last = dup.persons.len() - 1;
    let s = status_of(
        a.import(pb::ImportRequest { yaml: dup.to_yaml().unwrap(), replace: true, ..Default::default() }).await,
    );
    assert_eq!(s.code(), Code::InvalidArgument);
    let first = dup.persons[0].id.clone();
    assert_eq!(
        s.message(),
        format!("persons[{last}].id: duplicate person id `{first}` (first defined at persons[0])"),
        "{}",
        s.message()
    );
    assert_eq!(export(&mut a).await.1, revision, "nothing was stored");
    r.stop().await;
}

/// SPEC §4.4 edit locks, through the store's shared lock table.
#[tokio::test(flavor = "multi_thread")]
async fn edit_locks_refuse_a_second_editor_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    // Lock time moves only when the test says so.
    let clock = authzd::replica::ManualClock::new(std::time::SystemTime::now());
    let mut cfg = config(&dir.path().join("a.db"));
    cfg.clock = std::sync::Arc::new(clock.clone());
    let r = start(cfg).await;
    let mut a = r.admin().await;
    let acquire = |person: &str, idle_ms: Option<u64>| pb::AcquireLockRequest {
        tenant: TENANT.into(),
        person: person.into(),
        object: Some(pb::ObjectKey { r#type: "Application".into(), id: "app-main-ivr".into() }),
        idle_timeout: idle_ms.map(|ms| prost_types::Duration { seconds: 0, nanos: (ms * 1_000_000) as i32 }),
        application: Some("Designer".into()),
    };
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&events);
    r.replica.on_lock(move |change| {
        let (what, l) = match change {
            authzd::replica::LockChange::Acquired(l) => ("acquired", l),
            authzd::replica::LockChange::Released(l) => ("released", l),
            authzd::replica::LockChange::Expired(l) => ("expired", l),
        };
        seen.lock().unwrap().push(format!("{what} {} by {}", l.object, l.holder));
    });
    let first = a.acquire_lock(acquire("dz-developer", None)).await.unwrap().into_inner();
    assert!(first.granted && !first.lock_token.is_empty());
    let second = a.acquire_lock(acquire("dz-dev-sales", None)).await.unwrap().into_inner();
    assert!(!second.granted);
    assert_eq!(second.holder, "dz-developer");
    assert_eq!(second.since, first.since);
    // Without Change (Applications.Modify) there is no lock to take.
    let s = status_of(a.acquire_lock(acquire("dz-business", None)).await);
    assert_eq!(s.code(), Code::PermissionDenied);
    assert!(s.message().contains("MISSING_PRIVILEGE"), "{}", s.message());
    a.renew_lock(pb::RenewLockRequest {
        tenant: TENANT.into(),
        lock_token: first.lock_token.clone(),
        idle_timeout: None,
    })
    .await
    .unwrap();
    a.release_lock(pb::ReleaseLockRequest { tenant: TENANT.into(), lock_token: first.lock_token.clone() })
        .await
        .unwrap();
    let s = status_of(
        a.renew_lock(pb::RenewLockRequest { tenant: TENANT.into(), lock_token: first.lock_token, idle_timeout: None })
            .await,
    );
    assert_eq!(s.code(), Code::FailedPrecondition);
    // A short idle timeout: after it, the lock is free for the next editor.
    let short = a.acquire_lock(acquire("dz-dev-sales", Some(200))).await.unwrap().into_inner();
    assert!(short.granted);
    clock.advance(Duration::from_millis(199));
    let early = a.acquire_lock(acquire("dz-developer", None)).await.unwrap().into_inner();
    assert!(!early.granted, "a lock is held until its idle timeout has passed");
    clock.advance(Duration::from_millis(1));
    let next = a.acquire_lock(acquire("dz-developer", None)).await.unwrap().into_inner();
    assert!(next.granted, "the idle lock expired");
    assert_eq!(
        *events.lock().unwrap(),
        [
            "acquired Application/app-main-ivr by dz-developer",
            "released Application/app-main-ivr by dz-developer",
            "acquired Application/app-main-ivr by dz-dev-sales",
            "expired Application/app-main-ivr by dz-dev-sales",
            "acquired Application/app-main-ivr by dz-developer",
        ]
    );
    r.stop().await;
}

/// A write survives a restart on the same SQLite file (replayed from the
/// changelog, and from checkpoints), and the demo tenant is not loaded twice.
#[tokio::test(flavor = "multi_thread")]
async fn writes_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let mut cfg = config(&db);
    cfg.limits.checkpoint_every = 2;
    let r = start(cfg.clone()).await;
    let mut a = r.admin().await;
    let mut last = 0;
    for i in 0..3 {
        let w =
            a.write(write(mutations(&format!("- put_person: {{id: hire-{i}, username: hire.{i}}}")))).await.unwrap();
        last = w.into_inner().revision;
    }
    a.write(write(mutations("- add_group_member: {group: supervisors, person: hire-2}"))).await.unwrap();
    let (before, revision) = export(&mut a).await;
    assert!(revision > last);
    r.stop().await;

    let r = start(cfg).await;
    let mut a = r.admin().await;
    let mut d = r.decisions().await;
    assert_eq!(export(&mut a).await, (before, revision), "same configuration, same revision");
    let tenants = a.list_tenants(pb::ListTenantsRequest::default()).await.unwrap().into_inner();
    assert_eq!(tenants.tenants.len(), 1);
    assert_eq!(tenants.revision, revision);
    assert_eq!(check(&mut d, privilege_check("hire-2", "Callback", "Callback - Export Reports")).await.1, "ALLOWED");
    let w = a.write(write(mutations("- put_person: {id: hire-9, username: hire.9}"))).await.unwrap().into_inner();
    assert_eq!(w.revision, revision + 1, "revisions continue after a restart");
    r.stop().await;
}

/// The changelog retention job on the embedded SQLite store: with a tiny
/// retention the server checkpoints the tenant (written fewer times than
/// `checkpoint_every`) and compacts its history; a raw subscriber resuming
/// from revision 1 is told the oldest revision it could resume from; a
/// restart loads the same configuration from the checkpoint.
#[tokio::test(flavor = "multi_thread")]
async fn the_changelog_is_compacted_after_its_retention() {
    use authzd::store::Store as _;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let mut cfg = config(&db);
    cfg.limits.checkpoint_every = 1_000;
    cfg.retention.keep = Duration::from_millis(300);
    cfg.retention.interval = Duration::from_millis(100);
    let r = start(cfg.clone()).await;
    let mut a = r.admin().await;
    let mut head = 0;
    for i in 0..5 {
        head = a
            .write(write(mutations(&format!("- put_person: {{id: old-{i}, username: old.{i}}}"))))
            .await
            .unwrap()
            .into_inner()
            .revision;
    }
    let store = r.replica.store().clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.oldest_retained().await.unwrap() < head {
        assert!(Instant::now() < deadline, "not compacted: oldest retained {}", store.oldest_retained().await.unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(store.oldest_retained().await.unwrap(), head);
    assert_eq!(store.checkpoint_revisions().await.unwrap(), vec![(authzd::model::TenantId(TENANT.into()), head)]);
    let stats = r.replica.retention_stats();
    assert!(stats.rounds.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    assert!(stats.checkpoints.load(std::sync::atomic::Ordering::Relaxed) >= 1);

    let mut w = WatchServiceClient::new(r.channel().await);
    let mut too_old = w.watch(raw_watch(1)).await.unwrap().into_inner();
    match too_old.message().await.unwrap().and_then(|e| e.event) {
        Some(pb::watch_event::Event::RevisionTooOld(t)) => {
            assert_eq!((t.requested_revision, t.oldest_available_revision), (1, head));
        }
        other => panic!("expected RevisionTooOld, got {other:?}"),
    }
    let (before, revision) = export(&mut a).await;
    assert_eq!(revision, head);
    r.stop().await;

    let r = start(cfg).await;
    let mut a = r.admin().await;
    assert_eq!(export(&mut a).await, (before, revision), "same configuration, same revision, from the checkpoint");
    let w = a.write(write(mutations("- put_person: {id: new-1, username: new.1}"))).await.unwrap().into_inner();
    assert_eq!(w.revision, head + 1, "revisions continue after the compaction");
    r.stop().await;
}

/// No CheckBatch ever mixes two revisions: while restricted mode is toggled
/// by concurrent writes, the two locked items of every batch agree.
#[tokio::test(flavor = "multi_thread")]
async fn check_batches_never_mix_revisions_under_concurrent_writes() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(config(&dir.path().join("a.db"))).await;
    let mut a = r.admin().await;
    let writer = tokio::spawn(async move {
        // 21 toggles (ending with the mode on), with room for checks in between.
        for i in 0..21 {
            a.set_restricted_mode(pb::SetRestrictedModeRequest { tenant: TENANT.into(), on: i % 2 == 0, actor: None })
                .await
                .unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    });
    let mut d = r.decisions().await;
    let item = |kind: &str, id: &str| pb::CheckBatchItem {
        application: Some("Designer".into()),
        permission: perm(pb::Permission::Change),
        object: obj(kind, id),
        ..Default::default()
    };
    let req = pb::CheckBatchRequest {
        tenant: TENANT.into(),
        person: "dz-developer".into(),
        items: vec![
            item("Application", "app-main-ivr"),
            item("BusinessControl", "bc-business-hours"),
            item("SharedModule", "sm-authenticate"),
        ],
        ..Default::default()
    };
    let mut seen = std::collections::BTreeSet::new();
    while !writer.is_finished() {
        let b = d.check_batch(req.clone()).await.unwrap().into_inner();
        let reasons: Vec<&str> = b.results.iter().map(|x| convert::reason_code(x.reason)).collect();
        assert_eq!(reasons[0], reasons[2], "one revision per batch: {reasons:?} at {}", b.revision);
        assert_eq!(reasons[1], "ALLOWED");
        seen.insert(reasons[0]);
    }
    writer.await.unwrap();
    // The last toggle turned the mode on: a batch now sees it (whatever the interleaving was).
    let b = d.check_batch(req.clone()).await.unwrap().into_inner();
    let last: Vec<&str> = b.results.iter().map(|x| convert::reason_code(x.reason)).collect();
    assert_eq!(last, ["RESTRICTED_MODE", "ALLOWED", "RESTRICTED_MODE"]);
    seen.insert(last[0]);
    assert!(seen.contains("ALLOWED"), "batches ran while the mode was off: {seen:?}");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s8_unreadable_role_does_not_apply_and_alerts_pane_needs_its_chain() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(config(&dir.path().join("s8.db"))).await;
    let mut c = r.decisions().await;
    let alerts = "FrontlineAdvisor.SupervisorDashboard.AlertsPane.canView";
    // The whole FA chain: effective.
    assert_eq!(check(&mut c, privilege_check("fa-supervisor", "Advisors", alerts)).await.1, "ALLOWED");
    // Alerts pane with the dashboard but without the Teams pane: granted, not effective.
    assert_eq!(check(&mut c, privilege_check("fa-alerts-only", "Advisors", alerts)).await.1, "UNMET_DEPENDENCY");
    // A role the person cannot Read gives nothing, and says so.
    assert_eq!(
        check(&mut c, privilege_check("fa-unreadable", "Advisors", "FrontlineAdvisor.SupervisorDashboard.canView"))
            .await
            .1,
        "MISSING_PRIVILEGE"
    );
    let p = c
        .effective_privileges(pb::EffectivePrivilegesRequest {
            tenant: TENANT.into(),
            person: "fa-unreadable".into(),
            application: "Advisors".into(),
            ..Default::default()
        })
        .await
        .expect("answers")
        .into_inner();
    let p = p.effective.expect("effective privileges");
    assert!(p.privileges.is_empty(), "{:?}", p.privileges);
    assert_eq!(p.unreadable_roles, ["FA Hidden Supervisor"]);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn s10_designer_tables_and_analytics_only_through_the_api() {
    use pb::Permission::{Change, Create, Delete, Read};
    let dir = tempfile::tempdir().unwrap();
    let r = start(config(&dir.path().join("s10.db"))).await;
    let mut c = r.decisions().await;
    // Document 004's tables: (type, demo object, [(permission, roles that may: D B A N)]).
    type Row = (&'static str, &'static str, [(pb::Permission, &'static str); 4]);
    let table: [Row; 7] = [
        ("MediaResource", "mr-welcome", [(Read, "DBA"), (Change, "DB"), (Create, "DB"), (Delete, "D")]),
        ("MessageResource", "msg-holiday", [(Read, "DBA"), (Change, "D"), (Create, "D"), (Delete, "D")]),
        ("Application", "app-main-ivr", [(Read, "DBA"), (Change, "D"), (Create, "D"), (Delete, "D")]),
        ("SharedModule", "sm-authenticate", [(Read, "DBA"), (Change, "D"), (Create, "D"), (Delete, "D")]),
        ("SpeechGrammar", "sg-yes-no", [(Read, "DBA"), (Change, "D"), (Create, "D"), (Delete, "D")]),
        ("BotRegistry", "bot-faq", [(Read, "DBA"), (Change, "D"), (Create, "D"), (Delete, "D")]),
        ("BusinessControl", "bc-business-hours", [(Read, "DBA"), (Change, "DB"), (Create, "DB"), (Delete, "DB")]),
    ];
    let people = [("dz-developer", 'D'), ("dz-business", 'B'), ("dz-admin", 'A'), ("dz-analytics", 'N')];
    for (kind, id, rows) in table {
        for (p, who) in rows {
            for (person, letter) in people {
                let (allowed, reason, _) = check(&mut c, object_check(person, Some("Designer"), p, kind, id)).await;
                assert_eq!(allowed, who.contains(letter), "{person} {p:?} {kind}: {reason}");
            }
        }
    }
    // Every role views and modifies Analytics; the Analytics-only user sees nothing else.
    for (person, _) in people {
        for p in [Read, Change] {
            let (allowed, reason, _) =
                check(&mut c, object_check(person, Some("Designer"), p, "AnalyticsDashboard", "ad-overview")).await;
            assert!(allowed, "{person} {p:?} analytics: {reason}");
        }
    }
    for (kind, _, _) in table {
        let (ids, _) = list_all(&mut c, "dz-analytics", kind, None, Some("Designer"), 0).await;
        assert!(ids.is_empty(), "analytics-only user lists {kind}: {ids:?}");
    }
    let (ids, _) = list_all(&mut c, "dz-analytics", "AnalyticsDashboard", None, Some("Designer"), 0).await;
    assert_eq!(ids, ["ad-overview"]);
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn list_views_carry_less_but_list_the_same_objects() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(config(&dir.path().join("views.db"))).await;
    let mut c = r.decisions().await;
    let listing = |view: pb::ListView| {
        let mut c = c.clone();
        async move {
            c.list_visible(pb::ListVisibleRequest {
                tenant: TENANT.into(),
                person: "dz-developer".into(),
                r#type: "Application".into(),
                application: Some("Designer".into()),
                view: view as i32,
                ..Default::default()
            })
            .await
            .expect("listing answers")
            .into_inner()
            .objects
        }
    };
    let full = listing(pb::ListView::Full).await;
    let names = listing(pb::ListView::Names).await;
    let ids = listing(pb::ListView::Ids).await;
    assert!(!full.is_empty());
    let id_list = |v: &[pb::VisibleObject]| v.iter().map(|o| o.id.clone()).collect::<Vec<_>>();
    assert_eq!(id_list(&full), id_list(&names));
    assert_eq!(id_list(&full), id_list(&ids));
    assert!(full.iter().all(|o| !o.name.is_empty() && !o.folder.is_empty()));
    assert!(names.iter().zip(&full).all(|(n, f)| n.name == f.name && n.folder.is_empty()));
    assert!(ids.iter().all(|o| o.name.is_empty() && o.folder.is_empty() && o.properties.is_empty()));
    still_serving(&mut c).await;
    r.stop().await;
}

// -------------------------------------------------------------------- shutdown

fn privileges_watch(person: &str, app: &str) -> pb::WatchRequest {
    pb::WatchRequest {
        subscription: Some(pb::watch_request::Subscription::Privileges(pb::PrivilegesSubscription {
            tenant: TENANT.into(),
            person: person.into(),
            application: app.into(),
        })),
        at_least_revision: 0,
    }
}

fn raw_watch(from_revision: u64) -> pb::WatchRequest {
    pb::WatchRequest {
        subscription: Some(pb::watch_request::Subscription::Raw(pb::RawSubscription {
            tenant: Some(TENANT.into()),
            types: Vec::new(),
            from_revision,
            from_now: false,
        })),
        at_least_revision: 0,
    }
}

/// Reads a stream to its end: how it ended (`None`: cleanly, without a status).
async fn read_to_end(mut s: tonic::Streaming<pb::WatchEvent>) -> Option<tonic::Status> {
    loop {
        match s.message().await {
            Ok(Some(_)) => {}
            Ok(None) => return None,
            Err(status) => return Some(status),
        }
    }
}

/// At shutdown a watch client that reads sees its stream end at once with
/// `UNAVAILABLE` (reconnect), and the server stops without waiting for the
/// grace period: nothing is cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_watch_streams_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&dir.path().join("a.db"));
    c.shutdown_grace = Duration::from_secs(30);
    let r = start(c).await;
    let mut w = WatchServiceClient::new(r.channel().await);
    let mut computed = w.watch(privileges_watch("cb-supervisor", "Callback")).await.unwrap().into_inner();
    let first = computed.message().await.unwrap().unwrap();
    assert!(matches!(first.event, Some(pb::watch_event::Event::Snapshot(_))), "{first:?}");
    let raw = w.watch(raw_watch(0)).await.unwrap().into_inner();
    let computed = tokio::spawn(read_to_end(computed));
    let raw = tokio::spawn(read_to_end(raw));

    let started = Instant::now();
    let _ = r.stop.send(());
    let server = tokio::time::timeout(Duration::from_secs(10), r.handle).await.expect("the server stops").unwrap();
    let stopped = started.elapsed();
    assert!(stopped < Duration::from_secs(5), "well under the 30 s grace period: {stopped:?}");
    assert_eq!(server.connections_cut(), 0);
    for (name, ended) in [("privileges", computed), ("raw", raw)] {
        let status = tokio::time::timeout(Duration::from_secs(5), ended).await.expect("the stream ends").unwrap();
        let status = status.unwrap_or_else(|| panic!("{name}: ended without a status"));
        assert_eq!(status.code(), Code::Unavailable, "{name}: {status:?}");
        assert!(status.message().contains("shutting down"), "{name}: {}", status.message());
    }
    server.close().await;
}

/// A watch client that stops reading cannot hold the server: once its
/// flow-control window is full the server cannot even send it the final
/// status, so it is cut when the grace period ends. A well-behaved client on
/// the same server still sees its stream end with `UNAVAILABLE` at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cuts_a_stalled_watch_client_after_the_grace_period() {
    let grace = Duration::from_secs(1);
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&dir.path().join("a.db"));
    c.shutdown_grace = grace;
    let r = start(c).await;
    let mut a = r.admin().await;
    let before = a.list_tenants(pb::ListTenantsRequest::default()).await.unwrap().into_inner().revision;
    // One batch far larger than the client's window (64 KiB).
    let mut yaml = String::new();
    for i in 0..2_000 {
        yaml.push_str(&format!(
            "- put_person: {{id: stalled-reader-{i:05}, username: a.person.with.a.rather.long.username.{i:05}}}\n"
        ));
    }
    a.write(write(mutations(&yaml))).await.unwrap();

    // The stalled client: the smallest windows HTTP/2 allows, and it never reads.
    let stalled_channel = r.channel_with_window(65_535).await;
    let stalled = WatchServiceClient::new(stalled_channel.clone()).watch(raw_watch(before)).await.unwrap().into_inner();
    // The well-behaved client, on a connection of its own.
    let mut w = WatchServiceClient::new(r.channel().await);
    let mut computed = w.watch(privileges_watch("cb-supervisor", "Callback")).await.unwrap().into_inner();
    computed.message().await.unwrap().unwrap();
    let computed = tokio::spawn(async move {
        let status = read_to_end(computed).await;
        (status, Instant::now())
    });
    // Let the server fill the stalled client's window.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let _ = r.stop.send(());
    let server = tokio::time::timeout(grace + Duration::from_secs(10), r.handle)
        .await
        .expect("the stalled client does not hold the server")
        .unwrap();
    let stopped = started.elapsed();
    assert!(stopped < grace + Duration::from_secs(3), "stopped {stopped:?} after the signal (grace {grace:?})");
    assert!(stopped >= grace - Duration::from_millis(100), "it waited for the grace period: {stopped:?}");
    assert_eq!(server.connections_cut(), 1, "the stalled client's connection was cut, only it");

    let (status, ended_at) =
        tokio::time::timeout(Duration::from_secs(5), computed).await.expect("the stream ends").unwrap();
    let status = status.expect("ended with a status");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(ended_at.duration_since(started) < grace, "the reading client is not kept until the cut");
    drop((stalled, stalled_channel));
    server.close().await;
}

/// Raw bytes as a gRPC message, to send what no generated client would.
#[derive(Debug, Clone, Copy, Default)]
struct RawBytes;

impl tonic::codec::Codec for RawBytes {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytes;
    type Decoder = RawBytes;
    fn encoder(&mut self) -> RawBytes {
        RawBytes
    }
    fn decoder(&mut self) -> RawBytes {
        RawBytes
    }
}

impl tonic::codec::Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        use prost::bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        use prost::bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// Sends `body` as the request message of `path` (`/authzd.v1.DecisionService/Check`).
async fn raw_call(channel: Channel, path: &'static str, body: Vec<u8>) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(channel).max_encoding_message_size(64 << 20);
    grpc.ready().await.unwrap();
    match grpc.unary(tonic::Request::new(body), http::uri::PathAndQuery::from_static(path), RawBytes).await {
        Ok(_) => panic!("{path} accepted a malformed request"),
        Err(s) => s,
    }
}

/// One rule for malformed messages on every RPC: undecodable is
/// INVALID_ARGUMENT naming the message type, too large is RESOURCE_EXHAUSTED
/// naming the limit; the server keeps serving.
#[tokio::test(flavor = "multi_thread")]
async fn undecodable_and_oversized_messages_get_the_documented_codes() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(config(&dir.path().join("a.db"))).await;
    let channel = r.channel().await;
    // Wire type 7 does not exist: no message decodes from this.
    for (path, name) in [
        ("/authzd.v1.DecisionService/Check", "CheckRequest"),
        ("/authzd.v1.AdminService/Write", "WriteRequest"),
        ("/authzd.v1.WatchService/Watch", "WatchRequest"),
    ] {
        let s = match path {
            "/authzd.v1.WatchService/Watch" => {
                let mut grpc = tonic::client::Grpc::new(channel.clone());
                grpc.ready().await.unwrap();
                grpc.server_streaming(
                    tonic::Request::new(vec![0x0f, 0xff, 0xff]),
                    http::uri::PathAndQuery::from_static(path),
                    RawBytes,
                )
                .await
                .expect_err("a malformed subscription is refused")
            }
            _ => raw_call(channel.clone(), path, vec![0x0f, 0xff, 0xff]).await,
        };
        assert_eq!(s.code(), Code::InvalidArgument, "{path}: {s:?}");
        assert!(s.message().contains(name), "{path}: {}", s.message());
    }
    // 5 MiB in the `tenant` field of a CheckRequest: over the 4 MiB default.
    let mut big = vec![0x0a];
    let len = 5 * 1024 * 1024usize;
    prost::encoding::encode_varint(len as u64, &mut big);
    big.resize(big.len() + len, b'a');
    let s = raw_call(channel.clone(), "/authzd.v1.DecisionService/Check", big).await;
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    assert!(s.message().contains(&authzd::config::DEFAULT_MAX_MESSAGE_BYTES.to_string()), "{}", s.message());
    assert!(s.message().contains("--max-message-bytes"), "{}", s.message());
    // Still serving, on the same connection.
    let mut d = DecisionServiceClient::new(channel);
    let ok =
        d.check(privilege_check("cb-supervisor", "Callback", "Callback - Export Reports")).await.unwrap().into_inner();
    assert!(ok.allowed);
    r.stop().await;
}

/// A store path whose directory does not exist is an error (a typo would
/// start an empty store that reports ready), unless `--create-store-dir`.
#[tokio::test(flavor = "multi_thread")]
async fn a_store_in_a_missing_directory_is_refused_unless_asked_to_create_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir").join("authzd.db");
    let err = match authzd::app::Server::start(config(&missing)).await {
        Ok(_) => panic!("a store in a missing directory was opened"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("no-such-dir") && err.contains("does not exist") && err.contains("--create-store-dir"),
        "{err}"
    );
    assert!(!missing.parent().unwrap().exists(), "nothing was created");
    let mut c = config(&missing);
    c.create_store_dir = true;
    let r = start(c).await;
    assert!(missing.exists());
    r.stop().await;
}

/// A raw stream's starting point is explicit: `from_now` starts after the
/// current revision, named by a first checkpoint, and a write made as soon
/// as the call answered is never missed; `from_revision = 0` is every
/// retained batch from the beginning; both at once is refused.
#[tokio::test(flavor = "multi_thread")]
async fn raw_streams_start_where_they_say() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(config(&dir.path().join("a.db"))).await;
    let mut w = WatchServiceClient::new(r.channel().await);
    let mut a = r.admin().await;
    for round in 0..20 {
        let mut now = raw_watch(0);
        if let Some(pb::watch_request::Subscription::Raw(raw)) = &mut now.subscription {
            raw.from_now = true;
        }
        let mut s = w.watch(now).await.unwrap().into_inner();
        // Written right after the answer, before the first event is read.
        let written = a
            .write(write(mutations(&format!("- put_person: {{id: now-{round}, username: now.{round}}}"))))
            .await
            .unwrap()
            .into_inner()
            .revision;
        let first = s.message().await.unwrap().and_then(|e| e.event);
        let Some(pb::watch_event::Event::Checkpoint(c)) = first else { panic!("a checkpoint first, got {first:?}") };
        assert_eq!(c.revision, written - 1, "it starts after the revision current when it was opened");
        match s.message().await.unwrap().and_then(|e| e.event) {
            Some(pb::watch_event::Event::RawChange(ch)) => assert_eq!(ch.revision, written, "round {round}"),
            other => panic!("round {round}: expected the write, got {other:?}"),
        }
    }
    // From the beginning: the demo import (revision 1) first.
    let mut s = w.watch(raw_watch(0)).await.unwrap().into_inner();
    match s.message().await.unwrap().and_then(|e| e.event) {
        Some(pb::watch_event::Event::RawChange(ch)) => assert_eq!(ch.revision, 1),
        other => panic!("expected the first batch, got {other:?}"),
    }
    let mut both = raw_watch(3);
    if let Some(pb::watch_request::Subscription::Raw(raw)) = &mut both.subscription {
        raw.from_now = true;
    }
    let e = w.watch(both).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("raw.from_now"), "{}", e.message());
    r.stop().await;
}
