//! Paged listings never mix revisions, through the real gRPC server.
//!
//! Every paged read (`ListVisible`, `ListEntities`, `ListSubjects`,
//! `ListHolders`) is followed with small pages while a write changes what it
//! lists, on a generated tenant no other test uses. Every page must carry the
//! first page's revision, and the pages together must be exactly the
//! listing taken in one page before the write, while a listing started after
//! the write is different (so the write really changed it). Then the bounds:
//! a continuation past the kept revisions, past their time, or asking for a
//! newer `at_least_revision` is refused with `FAILED_PRECONDITION` and a
//! message that says to start again; writes to another tenant never expire
//! a listing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod support;

use authzd::config::ServerConfig;
use authzd::model::{Mutation, ObjectKey, TenantFile};
use authzd::proto::authzd::v1 as pb;
use authzd::proto::authzd::v1::decision_service_client::DecisionServiceClient;
use authzd::proto::authzd::v1::read_service_client::ReadServiceClient;
use authzd::service::convert;
use authzd::snapshot::PageRetention;
use std::collections::BTreeSet;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Code, Status};

const TENANT: &str = "paged";
const SMALL: u32 = 3;

/// A generated tenant: 90 persons, 8 groups, 6 roles, 15 privileges, 150 metrics.
const PARAMS: authzd::synth::SynthParams = authzd::synth::SynthParams {
    persons: 90,
    groups: 8,
    roles: 6,
    privileges: 15,
    metrics: 150,
    denies: 12,
    seed: 20261202,
};

async fn server(dir: &tempfile::TempDir, retention: PageRetention) -> support::Serving {
    let mut config: ServerConfig = support::demo_config(&dir.path().join("paging.db"));
    config.limits.page_retention = retention;
    let s = support::serve(config).await;
    support::load_synth(&s, TENANT, &PARAMS).await;
    s
}

/// The four paged reads, each asked one question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listing {
    Visible,
    Entities,
    Subjects,
    Holders,
}

const LISTINGS: [Listing; 4] = [Listing::Visible, Listing::Entities, Listing::Subjects, Listing::Holders];

/// What each listing asks: a person and type for `ListVisible`, an object
/// for `ListSubjects`, a privilege for `ListHolders`.
#[derive(Debug, Clone)]
struct Question {
    person: String,
    object: (String, String),
    privilege: String,
}

#[derive(Debug)]
struct Page {
    items: Vec<String>,
    next: String,
    revision: u64,
}

struct Clients {
    decisions: DecisionServiceClient<Channel>,
    reads: ReadServiceClient<Channel>,
}

impl Clients {
    async fn new(s: &support::Serving) -> Self {
        let ch = s.channel().await;
        Clients { decisions: DecisionServiceClient::new(ch.clone()), reads: ReadServiceClient::new(ch) }
    }

    async fn page(&mut self, l: Listing, q: &Question, token: &str, size: u32, at_least: u64) -> Result<Page, Status> {
        let (page_token, page_size, at_least_revision) = (token.to_owned(), size, at_least);
        Ok(match l {
            Listing::Visible => {
                let r = self
                    .decisions
                    .list_visible(pb::ListVisibleRequest {
                        tenant: TENANT.into(),
                        person: q.person.clone(),
                        r#type: q.object.0.clone(),
                        page_size,
                        page_token,
                        at_least_revision,
                        view: pb::ListView::Ids as i32,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                Page {
                    items: r.objects.into_iter().map(|o| o.id).collect(),
                    next: r.next_page_token,
                    revision: r.revision,
                }
            }
            Listing::Entities => {
                let r = self
                    .reads
                    .list_entities(pb::ListEntitiesRequest {
                        tenant: TENANT.into(),
                        kind: pb::EntityKind::Object as i32,
                        r#type: q.object.0.clone(),
                        page_size,
                        page_token,
                        at_least_revision,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                let ids = r.entities.into_iter().map(|e| format!("{:?}", e.kind)).collect();
                Page { items: ids, next: r.next_page_token, revision: r.revision }
            }
            Listing::Subjects => {
                let r = self
                    .reads
                    .list_subjects(pb::ListSubjectsRequest {
                        tenant: TENANT.into(),
                        object: Some(pb::ObjectRef {
                            r#type: q.object.0.clone(),
                            id: q.object.1.clone(),
                            tenant: None,
                        }),
                        permission: pb::Permission::Read as i32,
                        page_size,
                        page_token,
                        at_least_revision,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                let items = r.subjects.into_iter().map(|s| s.person).collect();
                Page { items, next: r.next_page_token, revision: r.revision }
            }
            Listing::Holders => {
                let r = self
                    .reads
                    .list_holders(pb::ListHoldersRequest {
                        tenant: TENANT.into(),
                        application: authzd::synth::APP.into(),
                        privilege: q.privilege.clone(),
                        page_size,
                        page_token,
                        at_least_revision,
                    })
                    .await?
                    .into_inner();
                Page {
                    items: r.holders.into_iter().map(|h| h.person).collect(),
                    next: r.next_page_token,
                    revision: r.revision,
                }
            }
        })
    }

    /// The whole listing in one page.
    async fn whole(&mut self, l: Listing, q: &Question) -> Page {
        let p = self.page(l, q, "", 1_000, 0).await.unwrap();
        assert!(p.next.is_empty(), "{l:?}: more than one page of 1,000");
        p
    }

    /// Follows `first` to the end, checking every page's size and revision.
    async fn rest(&mut self, l: Listing, q: &Question, first: Page) -> Result<Vec<String>, Status> {
        let mut items = first.items;
        let mut token = first.next;
        for _ in 0..10_000 {
            if token.is_empty() {
                return Ok(items);
            }
            let p = self.page(l, q, &token, SMALL, 0).await?;
            assert_eq!(p.revision, first.revision, "{l:?}: a continuation answered at another revision");
            assert!(p.items.len() <= SMALL as usize);
            items.extend(p.items);
            token = p.next;
        }
        panic!("{l:?}: paging did not end");
    }
}

/// The question each listing asks, chosen through the API so that each
/// listing has many pages: the metric type, person, metric and privilege
/// with the longest listings.
async fn question(s: &support::Serving, c: &mut Clients) -> Question {
    let yaml = s.admin().await.export(pb::ExportRequest { tenant: TENANT.into(), ..Default::default() }).await;
    let config = TenantFile::from_yaml(&yaml.unwrap().into_inner().yaml).unwrap().to_config().unwrap();
    let kind = config.objects.keys().next().unwrap().kind.clone();
    let mut best = Question { person: String::new(), object: (kind.clone(), String::new()), privilege: String::new() };
    let mut counts = (0, 0, 0);
    for p in config.persons.keys().take(30) {
        let q = Question { person: p.0.clone(), ..best.clone() };
        let n = c.whole(Listing::Visible, &q).await.items.len();
        if n > counts.0 {
            (counts.0, best.person) = (n, p.0.clone());
        }
    }
    for k in config.objects.keys().filter(|k| k.kind == kind).take(30) {
        let q = Question { object: (kind.clone(), k.id.0.clone()), ..best.clone() };
        let n = c.whole(Listing::Subjects, &q).await.items.len();
        if n > counts.1 {
            (counts.1, best.object.1) = (n, k.id.0.clone());
        }
    }
    for i in 0..PARAMS.privileges {
        let q = Question { privilege: authzd::synth::privilege_name(i), ..best.clone() };
        let n = c.whole(Listing::Holders, &q).await.items.len();
        if n > counts.2 {
            (counts.2, best.privilege) = (n, q.privilege.clone());
        }
    }
    assert!(
        counts.0 > 4 * SMALL as usize && counts.1 > 4 * SMALL as usize && counts.2 > 4 * SMALL as usize,
        "{counts:?}"
    );
    best
}

/// A batch that changes every listing of `q` past its first page: every
/// other object of the type after the first page deleted (never the asked
/// one), and every other person listed by `ListSubjects` or `ListHolders`
/// after the first page disabled (never the asked one).
async fn change(s: &support::Serving, c: &mut Clients, q: &Question) -> Vec<Mutation> {
    let yaml = s.admin().await.export(pb::ExportRequest { tenant: TENANT.into(), ..Default::default() }).await;
    let config = TenantFile::from_yaml(&yaml.unwrap().into_inner().yaml).unwrap().to_config().unwrap();
    let mut out = Vec::new();
    let objects: Vec<&ObjectKey> = config.objects.keys().filter(|k| k.kind == q.object.0).collect();
    for k in objects.iter().skip(SMALL as usize).step_by(2).filter(|k| k.id.0 != q.object.1) {
        out.push(Mutation::DeleteObject((*k).clone()));
    }
    let mut persons = BTreeSet::new();
    for l in [Listing::Subjects, Listing::Holders] {
        persons.extend(c.whole(l, q).await.items.into_iter().skip(SMALL as usize).step_by(2));
    }
    persons.remove(&q.person);
    for p in persons {
        let mut person = config.persons[&authzd::model::PersonId(p)].clone();
        person.enabled = false;
        out.push(Mutation::PutPerson(person));
    }
    out
}

async fn write(s: &support::Serving, tenant: &str, mutations: Vec<Mutation>) -> u64 {
    let mutations = mutations.into_iter().map(convert::mutation_pb).collect();
    let req = pb::WriteRequest { tenant: tenant.into(), mutations, ..Default::default() };
    s.admin().await.write(req).await.unwrap().into_inner().revision
}

/// A write to the tenant that changes no listing (a person's property).
async fn touch(s: &support::Serving, q: &Question, n: usize) -> u64 {
    let yaml = s.admin().await.export(pb::ExportRequest { tenant: TENANT.into(), ..Default::default() }).await;
    let config = TenantFile::from_yaml(&yaml.unwrap().into_inner().yaml).unwrap().to_config().unwrap();
    let mut person = config.persons[&authzd::model::PersonId(q.person.clone())].clone();
    person.properties.insert("touched".into(), n.to_string());
    write(s, TENANT, vec![Mutation::PutPerson(person)]).await
}

fn assert_restart(e: &Status, what: &str) {
    assert_eq!(e.code(), Code::FailedPrecondition, "{what}: {e:?}");
    assert!(e.message().starts_with("page_token: "), "{what}: {}", e.message());
    assert!(e.message().contains("start the listing again with an empty page_token"), "{what}: {}", e.message());
}

#[tokio::test]
async fn every_page_of_a_listing_is_read_at_the_revision_of_its_first() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(&dir, PageRetention::default()).await;
    let mut c = Clients::new(&s).await;
    let q = question(&s, &mut c).await;
    let mut before = Vec::new();
    let mut firsts = Vec::new();
    for l in LISTINGS {
        let whole = c.whole(l, &q).await;
        let first = c.page(l, &q, "", SMALL, 0).await.unwrap();
        assert_eq!(first.revision, whole.revision);
        assert!(!first.next.is_empty());
        before.push(whole);
        firsts.push(first);
    }
    let batch = change(&s, &mut c, &q).await;
    let changed = write(&s, TENANT, batch).await;
    for ((l, whole), first) in LISTINGS.into_iter().zip(before).zip(firsts) {
        assert!(changed > whole.revision);
        let paged = c.rest(l, &q, first).await.unwrap();
        assert_eq!(paged, whole.items, "{l:?}: the pages are not the listing at their revision");
        let after = c.whole(l, &q).await;
        assert_eq!(after.revision, changed);
        assert_ne!(after.items, whole.items, "{l:?}: the write did not change the listing, so this test shows nothing");
        // A listing begun now pages at the new revision.
        let first = c.page(l, &q, "", SMALL, changed).await.unwrap();
        assert_eq!(c.rest(l, &q, first).await.unwrap(), after.items, "{l:?}");
    }
    s.stop().await;
}

#[tokio::test]
async fn a_continuation_past_the_kept_revisions_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = server(&dir, PageRetention { revisions: 2, ttl: Duration::from_secs(3_600) }).await;
    let mut c = Clients::new(&s).await;
    let q = question(&s, &mut c).await;
    for l in LISTINGS {
        // Three listings begun on three successive states; two are kept.
        let a = c.page(l, &q, "", SMALL, 0).await.unwrap();
        touch(&s, &q, 1).await;
        let b = c.page(l, &q, "", SMALL, 0).await.unwrap();
        touch(&s, &q, 2).await;
        // Writes to another tenant do not replace this tenant's state, and a
        // state no listing began on is not kept.
        write(&s, "acme", vec![Mutation::SetRestrictedMode { on: false }]).await;
        touch(&s, &q, 3).await;
        let a = c.page(l, &q, &a.next, SMALL, 0).await.unwrap();
        let b = c.page(l, &q, &b.next, SMALL, 0).await.unwrap();
        assert_eq!(s.replica.snapshot().kept_states(), 2, "{l:?}: the states of a and b, nothing else");
        let third = c.page(l, &q, "", SMALL, 0).await.unwrap();
        touch(&s, &q, 4).await;
        // The third listing's state is kept, the oldest (a's) dropped.
        let e = c.page(l, &q, &a.next, SMALL, 0).await.unwrap_err();
        assert_restart(&e, &format!("{l:?}: a, after 3 kept states"));
        assert!(e.message().contains(&format!("revision `{}`", a.revision)), "{}", e.message());
        assert_eq!(c.page(l, &q, &b.next, SMALL, 0).await.unwrap().revision, b.revision, "{l:?}");
        assert_eq!(c.page(l, &q, &third.next, SMALL, 0).await.unwrap().revision, third.revision, "{l:?}");
        assert!(a.revision < b.revision && b.revision < third.revision);
        // A token never pins a revision newer than the one asked at least.
        let fresh = c.page(l, &q, "", SMALL, 0).await.unwrap();
        let e = c.page(l, &q, &fresh.next, SMALL, fresh.revision + 1).await.unwrap_err();
        assert_restart(&e, &format!("{l:?} with a newer at_least_revision"));
        assert!(e.message().contains("at_least_revision"), "{}", e.message());
    }
    s.stop().await;
}

#[tokio::test]
async fn a_continuation_past_the_kept_time_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Kept for no time at all: any write of the tenant ends its listings.
    let s = server(&dir, PageRetention { revisions: 16, ttl: Duration::ZERO }).await;
    let mut c = Clients::new(&s).await;
    let q = question(&s, &mut c).await;
    for l in LISTINGS {
        let first = c.page(l, &q, "", SMALL, 0).await.unwrap();
        write(&s, "acme", vec![Mutation::SetRestrictedMode { on: false }]).await;
        let next = c.page(l, &q, &first.next, SMALL, 0).await.unwrap();
        assert_eq!(next.revision, first.revision, "{l:?}: another tenant's write expired the listing");
        touch(&s, &q, 1).await;
        assert_restart(&c.page(l, &q, &next.next, SMALL, 0).await.unwrap_err(), &format!("{l:?}"));
        assert_eq!(s.replica.snapshot().kept_states(), 0);
    }
    s.stop().await;
}

#[tokio::test]
async fn kept_states_are_freed_after_their_time_with_no_write_or_lookup() {
    let dir = tempfile::tempdir().unwrap();
    let ttl = Duration::from_millis(800);
    let s = server(&dir, PageRetention { revisions: 16, ttl }).await;
    let mut c = Clients::new(&s).await;
    let q = question(&s, &mut c).await;
    let first = c.page(Listing::Visible, &q, "", SMALL, 0).await.unwrap();
    // The state is replaced between these two instants.
    let before = std::time::Instant::now();
    touch(&s, &q, 1).await;
    let replaced = std::time::Instant::now();
    assert_eq!(s.replica.snapshot().kept_states(), 1, "the listing's state is kept when replaced");
    // Nothing more is asked or written: the server's sweep alone frees it,
    // after its time and at most one sweep (ttl / 4) later.
    let deadline = replaced + ttl + Duration::from_secs(3);
    while s.replica.snapshot().kept_states() > 0 {
        assert!(std::time::Instant::now() < deadline, "a kept state outlived --page-retain-secs with no write");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(before.elapsed() >= ttl, "freed {:?} after the write began, before its time ({ttl:?})", before.elapsed());
    assert_restart(&c.page(Listing::Visible, &q, &first.next, SMALL, 0).await.unwrap_err(), "after the sweep");
    s.stop().await;
}
