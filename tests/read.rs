//! The read API (`ReadService`) through the real gRPC server.
//!
//! The reverse lookups are checked differentially against `Check` asked
//! person by person through the same public API, on the demo tenant and on a
//! generated tenant (`authzd::synth` with its own seed and sizes): for a
//! sample of questions over every object type, permission and application,
//! `ListSubjects` (followed page by page) must be exactly the persons
//! `CheckBatch` allows, with the same reasons; `ListHolders` of every
//! privilege exactly the persons whose check of the privilege is allowed. The
//! engine-level differential test (`tests/differential.rs`) checks the same
//! two rules against the reference evaluator on random tenants.
//!
//! Then the entity reads: every page of every kind equals the tenant's
//! export, filters, the errors that name the field, and `at_least_revision`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod support;

use authzd::model::{Mutation, TenantFile};
use authzd::proto::authzd::v1 as pb;
use authzd::proto::authzd::v1::read_service_client::ReadServiceClient;
use authzd::service::convert;
use std::collections::{BTreeMap, BTreeSet};
use tonic::Code;
use tonic::transport::Channel;

const DEMO: &str = "acme";
const SYNTH: &str = "synth";

async fn reads(s: &support::Serving) -> ReadServiceClient<Channel> {
    ReadServiceClient::new(s.channel().await)
}

/// A generated tenant no test lists: 60 persons, 7 groups, 5 roles, 12
/// privileges in dependency chains, 45 metrics with denies.
async fn load_synth(s: &support::Serving) {
    let p = authzd::synth::SynthParams {
        persons: 60,
        groups: 7,
        roles: 5,
        privileges: 12,
        metrics: 45,
        denies: 9,
        seed: 20261201,
    };
    support::load_synth(s, SYNTH, &p).await;
}

async fn export(s: &support::Serving, tenant: &str) -> TenantFile {
    let yaml = s.admin().await.export(pb::ExportRequest { tenant: tenant.into(), ..Default::default() }).await;
    TenantFile::from_yaml(&yaml.unwrap().into_inner().yaml).unwrap()
}

/// Every page of a `ListEntities`, checking each is within the page size.
async fn list_all(c: &mut ReadServiceClient<Channel>, mut req: pb::ListEntitiesRequest) -> Vec<pb::Entity> {
    let mut out = Vec::new();
    for _ in 0..100_000 {
        let page = c.list_entities(req.clone()).await.unwrap().into_inner();
        assert!(page.entities.len() <= req.page_size.max(1) as usize || req.page_size == 0);
        out.extend(page.entities);
        if page.next_page_token.is_empty() {
            return out;
        }
        req.page_token = page.next_page_token;
    }
    panic!("paging did not end");
}

/// The questions of the differential test: every object (every type, and
/// folders, persons, groups and roles as objects) with a rotating
/// permission and application, plus each privilege asked on an object.
fn questions(file: &TenantFile) -> Vec<pb::CheckBatchItem> {
    let config = file.to_config().unwrap();
    let apps: Vec<Option<String>> =
        std::iter::once(None).chain(config.catalogs.keys().map(|a| Some(a.clone()))).collect();
    let mut objects: Vec<(String, String)> = config.objects.keys().map(|k| (k.kind.clone(), k.id.0.clone())).collect();
    objects.extend(config.folders.keys().map(|f| ("Folder".to_owned(), f.0.clone())));
    objects.extend(config.persons.keys().take(5).map(|p| ("Person".to_owned(), p.0.clone())));
    objects.extend(config.groups.keys().take(5).map(|g| ("AccessGroup".to_owned(), g.0.clone())));
    objects.extend(config.roles.keys().take(5).map(|r| ("Role".to_owned(), r.0.clone())));
    let perms = [pb::Permission::Read, pb::Permission::Change, pb::Permission::Execute, pb::Permission::Create];
    let mut out = Vec::new();
    for (i, (ty, id)) in objects.iter().enumerate() {
        let application = apps[i % apps.len()].clone();
        // With an application, now and then a privilege of it too.
        let privilege = application.as_ref().filter(|_| i % 3 == 0).and_then(|a| {
            let cat = &config.catalogs[a];
            cat.privileges.get(i % cat.privileges.len().max(1)).map(|p| p.name.clone())
        });
        out.push(pb::CheckBatchItem {
            application,
            permission: perms[i % perms.len()] as i32,
            object: Some(pb::ObjectRef { r#type: ty.clone(), id: id.clone(), tenant: None }),
            privilege,
            property: None,
        });
    }
    out
}

/// For every question: ListSubjects (pages of 7) equals the persons whose
/// CheckBatch answer allows, with the same reason. Returns how many
/// (question, person) pairs were allowed, to show the test is not vacuous.
async fn subjects_match_checks(s: &support::Serving, tenant: &str) -> (usize, usize) {
    let file = export(s, tenant).await;
    let items = questions(&file);
    let persons: Vec<String> = file.to_config().unwrap().persons.keys().map(|p| p.0.clone()).collect();
    let mut decisions = s.decisions().await;
    // allowed[q] = persons allowed for question q, from per-person checks.
    let mut allowed: Vec<BTreeMap<String, i32>> = vec![BTreeMap::new(); items.len()];
    for chunk in (0..items.len()).collect::<Vec<_>>().chunks(500) {
        for p in &persons {
            let req = pb::CheckBatchRequest {
                tenant: tenant.into(),
                person: p.clone(),
                items: chunk.iter().map(|&i| items[i].clone()).collect(),
                ..Default::default()
            };
            let answer = decisions.check_batch(req).await.unwrap().into_inner();
            for (&i, r) in chunk.iter().zip(answer.results) {
                if r.allowed {
                    allowed[i].insert(p.clone(), r.reason);
                }
            }
        }
    }
    let mut c = reads(s).await;
    let mut pairs = 0;
    for (q, item) in items.iter().enumerate() {
        let mut got = BTreeMap::new();
        let mut token = String::new();
        loop {
            let req = pb::ListSubjectsRequest {
                tenant: tenant.into(),
                object: item.object.clone(),
                permission: item.permission,
                application: item.application.clone(),
                privilege: item.privilege.clone(),
                property: None,
                page_size: 7,
                page_token: token.clone(),
                at_least_revision: 0,
            };
            let page = c.list_subjects(req).await.unwrap().into_inner();
            assert!(page.subjects.len() <= 7);
            for sub in page.subjects {
                let evidence = sub.evidence.expect("every allowed subject carries evidence");
                if item.object.is_some() {
                    assert!(!evidence.aces.is_empty(), "an allowed object check has a matching entry: {item:?}");
                }
                assert!(got.insert(sub.person.clone(), sub.reason).is_none(), "{} listed twice", sub.person);
            }
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(got, allowed[q], "ListSubjects of {item:?} in `{tenant}` (left) vs per-person checks (right)");
        pairs += got.len();
    }
    (items.len(), pairs)
}

/// For every privilege of every application: ListHolders equals the persons
/// whose check of the privilege alone is allowed; role grants say how.
async fn holders_match_checks(s: &support::Serving, tenant: &str) -> usize {
    let file = export(s, tenant).await;
    let config = file.to_config().unwrap();
    let mut decisions = s.decisions().await;
    let mut c = reads(s).await;
    let mut holders = 0;
    for (app, cat) in config.catalogs.iter() {
        let items: Vec<pb::CheckBatchItem> = cat
            .privileges
            .iter()
            .map(|p| pb::CheckBatchItem {
                application: Some(app.clone()),
                privilege: Some(p.name.clone()),
                ..Default::default()
            })
            .collect();
        let mut expected: Vec<BTreeSet<String>> = vec![BTreeSet::new(); items.len()];
        for p in config.persons.keys() {
            let req = pb::CheckBatchRequest {
                tenant: tenant.into(),
                person: p.0.clone(),
                items: items.clone(),
                ..Default::default()
            };
            for (i, r) in decisions.check_batch(req).await.unwrap().into_inner().results.iter().enumerate() {
                if r.allowed {
                    expected[i].insert(p.0.clone());
                }
            }
        }
        for (i, privilege) in cat.privileges.iter().enumerate() {
            let mut got = BTreeSet::new();
            let mut token = String::new();
            loop {
                let req = pb::ListHoldersRequest {
                    tenant: tenant.into(),
                    application: app.clone(),
                    privilege: privilege.name.clone(),
                    page_size: 5,
                    page_token: token.clone(),
                    at_least_revision: 0,
                };
                let page = c.list_holders(req).await.unwrap().into_inner();
                assert_eq!(page.privilege, privilege.name);
                for h in page.holders {
                    if h.source == pb::PrivilegeSource::Roles as i32 {
                        assert!(!h.roles.is_empty(), "a holder from roles names a role: {h:?}");
                        for g in &h.roles {
                            assert!(g.direct || !g.groups.is_empty(), "a role grant says how it is held: {g:?}");
                            let role = &config.roles[&authzd::model::RoleId(g.role.clone())];
                            assert!(role.privileges.get(app).is_some_and(|ps| !ps.is_empty()));
                        }
                    } else {
                        assert!(h.roles.is_empty());
                    }
                    assert!(got.insert(h.person.clone()), "{} listed twice", h.person);
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            assert_eq!(got, expected[i], "ListHolders of {app}/{} (left) vs per-person checks (right)", privilege.name);
            holders += got.len();
        }
    }
    holders
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_lookups_are_exactly_what_check_allows() {
    let dir = tempfile::tempdir().unwrap();
    let s = support::serve(support::demo_config(&dir.path().join("a.db"))).await;
    load_synth(&s).await;
    for tenant in [DEMO, SYNTH] {
        let (questions, pairs) = subjects_match_checks(&s, tenant).await;
        assert!(questions > 40 && pairs > questions, "{tenant}: {questions} questions, {pairs} allowed pairs");
        let holders = holders_match_checks(&s, tenant).await;
        assert!(holders > 0, "{tenant}: some privilege has holders");
        println!("{tenant}: {questions} ListSubjects questions, {pairs} allowed pairs; {holders} holders");
    }
    s.stop().await;
}

fn entity_id(e: &pb::Entity) -> String {
    use pb::entity::Kind as E;
    match e.kind.as_ref().unwrap() {
        E::Person(x) => x.id.clone(),
        E::Group(x) => x.id.clone(),
        E::Role(x) => x.id.clone(),
        E::Folder(x) => x.id.clone(),
        E::Object(x) => format!("{}/{}", x.r#type, x.id),
        E::Partition(x) => x.id.clone(),
        E::Catalog(x) => x.name.clone(),
    }
}

fn list_req(tenant: &str, kind: pb::EntityKind, page_size: u32) -> pb::ListEntitiesRequest {
    pb::ListEntitiesRequest { tenant: tenant.into(), kind: kind as i32, page_size, ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entities_read_back_as_exported_and_filters_hold() {
    let dir = tempfile::tempdir().unwrap();
    let s = support::serve(support::demo_config(&dir.path().join("a.db"))).await;
    let mut c = reads(&s).await;
    let config = export(&s, DEMO).await.to_config().unwrap();

    // Every kind, in pages of 3, is the export's set in id order.
    use pb::EntityKind as K;
    let expected: Vec<(K, Vec<String>)> = vec![
        (K::Person, config.persons.keys().map(|k| k.0.clone()).collect()),
        (K::AccessGroup, config.groups.keys().map(|k| k.0.clone()).collect()),
        (K::Role, config.roles.keys().map(|k| k.0.clone()).collect()),
        (K::Folder, config.folders.keys().map(|k| k.0.clone()).collect()),
        (K::Object, config.objects.keys().map(|k| format!("{}/{}", k.kind, k.id.0)).collect()),
        (K::Partition, config.partitions.keys().map(|k| k.0.clone()).collect()),
        (K::Catalog, config.catalogs.keys().cloned().collect()),
    ];
    for (kind, ids) in &expected {
        let got: Vec<String> = list_all(&mut c, list_req(DEMO, *kind, 3)).await.iter().map(entity_id).collect();
        assert_eq!(&got, ids, "{kind:?}");
        assert!(!ids.is_empty(), "the demo has {kind:?}");
    }

    // Get returns what the export has (a person with an annex, a catalog with `requires`).
    let get = |kind: K, ty: &str, id: &str| pb::GetEntityRequest {
        tenant: DEMO.into(),
        kind: kind as i32,
        r#type: ty.into(),
        id: id.into(),
        at_least_revision: 0,
    };
    let annex = c.get_entity(get(K::Person, "", "cb-annex-admin")).await.unwrap().into_inner();
    let Some(pb::entity::Kind::Person(p)) = annex.entity.unwrap().kind else { panic!("a person") };
    let model_p = &config.persons[&authzd::model::PersonId("cb-annex-admin".into())];
    assert_eq!(p.username, model_p.username);
    assert_eq!(p.annex.len(), model_p.annex.len());
    assert!(!p.annex.is_empty());
    let cat = c.get_entity(get(K::Catalog, "", "WorkspaceWebCallback")).await;
    let Some(pb::entity::Kind::Catalog(cat)) = cat.unwrap().into_inner().entity.unwrap().kind else {
        panic!("a catalog")
    };
    assert!(cat.privileges.iter().any(|p| !p.requires.is_empty()), "requires are read back");
    for (app, cat) in config.catalogs.iter() {
        let got = c.get_entity(get(K::Catalog, "", app)).await.unwrap().into_inner();
        let Some(pb::entity::Kind::Catalog(g)) = got.entity.unwrap().kind else { panic!("a catalog") };
        assert_eq!(g.privileges.len(), cat.privileges.len(), "{app}");
        assert_eq!(g.type_guards.len(), cat.type_guards.len(), "{app}");
    }
    let (okey, _) = config.objects.iter().next().unwrap();
    let obj = c.get_entity(get(K::Object, &okey.kind, &okey.id.0)).await.unwrap().into_inner();
    assert_eq!(entity_id(&obj.entity.unwrap()), format!("{}/{}", okey.kind, okey.id.0));

    // Filters: type, folder (direct and recursive), name prefix.
    let mut scripts = list_req(DEMO, K::Object, 2);
    scripts.r#type = "Script".into();
    let got: Vec<String> = list_all(&mut c, scripts.clone()).await.iter().map(entity_id).collect();
    let want: Vec<String> =
        config.objects.keys().filter(|k| k.kind == "Script").map(|k| format!("Script/{}", k.id.0)).collect();
    assert_eq!(got, want);
    assert!(!want.is_empty());
    let mut under = scripts.clone();
    under.folder = Some("Scripts".into());
    under.recursive = true;
    let below: Vec<String> = list_all(&mut c, under.clone()).await.iter().map(entity_id).collect();
    under.recursive = false;
    let direct: Vec<String> = list_all(&mut c, under).await.iter().map(entity_id).collect();
    let in_scripts = |f: &str| f == "Scripts" || f.starts_with("Scripts/");
    let want_below: Vec<String> = config
        .objects
        .values()
        .filter(|o| o.kind == "Script" && in_scripts(&o.folder.0))
        .map(|o| format!("Script/{}", o.id.0))
        .collect();
    let want_direct: Vec<String> = config
        .objects
        .values()
        .filter(|o| o.kind == "Script" && o.folder.0 == "Scripts")
        .map(|o| format!("Script/{}", o.id.0))
        .collect();
    assert_eq!(below, want_below);
    assert_eq!(direct, want_direct);
    assert!(below.len() > direct.len(), "the demo has scripts in subfolders of Scripts");
    let mut prefix = list_req(DEMO, K::Person, 0);
    prefix.name_prefix = "cb.".into();
    let got: Vec<String> = list_all(&mut c, prefix).await.iter().map(entity_id).collect();
    let want: Vec<String> =
        config.persons.values().filter(|p| p.username.starts_with("cb.")).map(|p| p.id.0.clone()).collect();
    assert_eq!(got, want);
    assert!(want.len() > 2);
    let mut subfolders = list_req(DEMO, K::Folder, 0);
    subfolders.folder = Some("root".into());
    let got: Vec<String> = list_all(&mut c, subfolders).await.iter().map(entity_id).collect();
    let want: Vec<String> = config
        .folders
        .values()
        .filter(|f| f.parent.as_ref().is_some_and(|p| p.0 == "root"))
        .map(|f| f.id.0.clone())
        .collect();
    assert_eq!(got, want);

    // Entries on a target: own entries as exported; effective ones include inherited.
    let root = pb::Target { kind: Some(pb::target::Kind::Folder("Scripts/Callback".into())) };
    let entries = c
        .list_entries(pb::ListEntriesRequest { tenant: DEMO.into(), target: Some(root), at_least_revision: 0 })
        .await
        .unwrap()
        .into_inner();
    let own = config.aces.keys().filter(|(t, _)| *t == authzd::model::Target::Folder("Scripts/Callback".into()));
    assert_eq!(entries.entries.len(), own.count());
    assert!(entries.effective.len() >= entries.entries.len());
    let script = config.objects.keys().find(|k| k.kind == "Script").unwrap();
    let target = pb::Target {
        kind: Some(pb::target::Kind::Object(pb::ObjectKey { r#type: script.kind.clone(), id: script.id.0.clone() })),
    };
    let e = c
        .list_entries(pb::ListEntriesRequest { tenant: DEMO.into(), target: Some(target), at_least_revision: 0 })
        .await
        .unwrap()
        .into_inner();
    assert!(e.effective.iter().any(|m| !m.inherited_from.is_empty()), "a script inherits entries: {e:?}");

    s.stop().await;
}

/// `r` failed with `code` and a message naming `text`.
fn expect<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>, code: Code, text: &str) {
    let e = r.expect_err("an error");
    assert_eq!(e.code(), code, "{e:?}");
    assert!(e.message().contains(text), "`{}` should name `{text}`", e.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_reads_name_the_field_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let s = support::serve(support::demo_config(&dir.path().join("a.db"))).await;
    let mut c = reads(&s).await;
    use pb::EntityKind as K;
    let get = |kind: K, ty: &str, id: &str| pb::GetEntityRequest {
        tenant: DEMO.into(),
        kind: kind as i32,
        r#type: ty.into(),
        id: id.into(),
        at_least_revision: 0,
    };
    expect(c.get_entity(get(K::Person, "", "nobody")).await, Code::NotFound, "`nobody`");
    expect(c.get_entity(get(K::Object, "", "x")).await, Code::InvalidArgument, "type");
    expect(c.get_entity(get(K::Person, "Script", "x")).await, Code::InvalidArgument, "type");
    expect(c.get_entity(get(K::Unspecified, "", "x")).await, Code::InvalidArgument, "kind");
    let mut g = get(K::Person, "", "cb-admin");
    g.tenant = "nope".into();
    expect(c.get_entity(g).await, Code::NotFound, "`nope`");

    let mut bad = list_req(DEMO, K::Person, 2);
    bad.page_token = "!!garbage".into();
    expect(c.list_entities(bad).await, Code::InvalidArgument, "page_token");
    // A token of another kind's listing is refused.
    let page = c.list_entities(list_req(DEMO, K::Person, 2)).await.unwrap().into_inner();
    let mut other = list_req(DEMO, K::AccessGroup, 2);
    other.page_token = page.next_page_token;
    expect(c.list_entities(other).await, Code::InvalidArgument, "page_token");
    let mut f = list_req(DEMO, K::Partition, 2);
    f.folder = Some("root".into());
    expect(c.list_entities(f).await, Code::InvalidArgument, "folder");
    let mut f = list_req(DEMO, K::Person, 2);
    f.folder = Some("Nowhere".into());
    expect(c.list_entities(f).await, Code::NotFound, "`Nowhere`");
    let mut f = list_req(DEMO, K::Person, 2);
    f.recursive = true;
    expect(c.list_entities(f).await, Code::InvalidArgument, "recursive");

    let subjects =
        |object: Option<pb::ObjectRef>, app: Option<&str>, privilege: Option<&str>| pb::ListSubjectsRequest {
            tenant: DEMO.into(),
            object,
            application: app.map(Into::into),
            privilege: privilege.map(Into::into),
            ..Default::default()
        };
    let obj = |ty: &str, id: &str| Some(pb::ObjectRef { r#type: ty.into(), id: id.into(), tenant: None });
    expect(c.list_subjects(subjects(None, None, None)).await, Code::InvalidArgument, "object");
    expect(c.list_subjects(subjects(obj("Script", "nope"), None, None)).await, Code::NotFound, "`nope`");
    expect(c.list_subjects(subjects(obj("Folder", "root"), Some("Nope"), None)).await, Code::NotFound, "`Nope`");
    expect(
        c.list_subjects(subjects(obj("Folder", "root"), Some("Callback"), Some("Fly"))).await,
        Code::NotFound,
        "`Fly`",
    );
    expect(
        c.list_subjects(subjects(obj("Folder", "root"), None, Some("Fly"))).await,
        Code::InvalidArgument,
        "application",
    );
    let mut all = subjects(obj("Folder", "root"), None, None);
    all.permission = pb::Permission::All as i32;
    expect(c.list_subjects(all).await, Code::InvalidArgument, "permission");
    let holders = |app: &str, p: &str| pb::ListHoldersRequest {
        tenant: DEMO.into(),
        application: app.into(),
        privilege: p.into(),
        ..Default::default()
    };
    expect(c.list_holders(holders("Callback", "Fly")).await, Code::NotFound, "`Fly`");
    expect(c.list_holders(holders("Nope", "Fly")).await, Code::NotFound, "`Nope`");
    expect(c.list_holders(holders("", "Fly")).await, Code::InvalidArgument, "application");

    // Still serving.
    assert!(c.list_entities(list_req(DEMO, K::Person, 1)).await.is_ok());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_lookups_follow_writes_at_least_revision() {
    let dir = tempfile::tempdir().unwrap();
    let s = support::serve(support::demo_config(&dir.path().join("a.db"))).await;
    let mut c = reads(&s).await;
    let config = export(&s, DEMO).await.to_config().unwrap();
    // A person with no roles at all gets one that grants a Callback privilege.
    let (role_id, role) =
        config.roles.iter().find(|(_, r)| r.privileges.get("Callback").is_some_and(|p| !p.is_empty())).unwrap();
    let privilege = role.privileges["Callback"].iter().next().unwrap().clone();
    let holders_of = |rev: u64| pb::ListHoldersRequest {
        tenant: DEMO.into(),
        application: "Callback".into(),
        privilege: privilege.clone(),
        page_size: 1000,
        at_least_revision: rev,
        ..Default::default()
    };
    let before = c.list_holders(holders_of(0)).await.unwrap().into_inner();
    let newcomer = "read-test-newcomer";
    let yaml = format!(
        "- put_person: {{id: {newcomer}, username: read.newcomer}}\n- assign_role: {{role: {}, to: {{person: {newcomer}}}}}\n",
        role_id.0
    );
    let mutations: Vec<Mutation> = authzd::model::yaml::from_str(&yaml, "mutations").unwrap();
    let req = pb::WriteRequest {
        tenant: DEMO.into(),
        mutations: mutations.into_iter().map(convert::mutation_pb).collect(),
        ..Default::default()
    };
    let rev = s.admin().await.write(req).await.unwrap().into_inner().revision;
    let after = c.list_holders(holders_of(rev)).await.unwrap().into_inner();
    assert!(after.revision >= rev);
    assert!(!before.holders.iter().any(|h| h.person == newcomer));
    let h = after.holders.iter().find(|h| h.person == newcomer);
    // The role may be unreadable to the newcomer (role readability): then it does not apply.
    let check = s
        .decisions()
        .await
        .check(pb::CheckRequest {
            tenant: DEMO.into(),
            person: newcomer.into(),
            application: Some("Callback".into()),
            privilege: Some(privilege.clone()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(h.is_some(), check.allowed, "ListHolders agrees with Check after the write");
    if let Some(h) = h {
        assert_eq!(h.roles.len(), 1);
        assert!(h.roles[0].direct && h.roles[0].role == role_id.0);
    }
    s.stop().await;
}

/// One rule for malformed questions, kept by every RPC that asks one: a
/// privilege without an application, a property without an object, or
/// nothing to check is `INVALID_ARGUMENT` naming the field, never a denial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_questions_are_refused_by_every_rpc() {
    let dir = tempfile::tempdir().unwrap();
    let s = support::serve(support::demo_config(&dir.path().join("a.db"))).await;
    let mut d = s.decisions().await;
    let obj = || Some(pb::ObjectRef { r#type: "Folder".into(), id: "root".into(), tenant: None });
    let check = |application: Option<&str>, object, privilege: Option<&str>, property: Option<&str>| pb::CheckRequest {
        tenant: DEMO.into(),
        person: "cb-admin".into(),
        application: application.map(Into::into),
        object,
        privilege: privilege.map(Into::into),
        property: property.map(Into::into),
        ..Default::default()
    };
    expect(d.check(check(None, None, Some("Can Reschedule"), None)).await, Code::InvalidArgument, "application");
    expect(d.check(check(None, None, None, Some("Name"))).await, Code::InvalidArgument, "object");
    expect(d.check(check(Some("Callback"), None, None, None)).await, Code::InvalidArgument, "nothing to check");
    let explain = pb::ExplainRequest {
        tenant: DEMO.into(),
        person: "cb-admin".into(),
        privilege: Some("x".into()),
        ..Default::default()
    };
    expect(d.explain(explain).await, Code::InvalidArgument, "application");
    let batch = pb::CheckBatchRequest {
        tenant: DEMO.into(),
        person: "cb-admin".into(),
        items: vec![
            pb::CheckBatchItem { object: obj(), ..Default::default() },
            pb::CheckBatchItem { privilege: Some("x".into()), ..Default::default() },
        ],
        ..Default::default()
    };
    expect(d.check_batch(batch).await, Code::InvalidArgument, "items[1].application");
    // A well-formed question is still answered.
    assert!(d.check(check(None, obj(), None, None)).await.unwrap().into_inner().allowed);
    s.stop().await;
}
