//! Followers (`authzd serve --follow URL`): replicas that hold no database
//! connection and follow an upstream authzd instead, all through real
//! in-process servers on `127.0.0.1`; upstreams on the REAL PostgreSQL
//! (`AUTHZD_TEST_PG_URL`, default `postgres://postgres@127.0.0.1:5432/test`)
//! or on SQLite files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod support;

use authzd::config::ServerConfig;
use authzd::proto::authzd::v1 as pb;
use authzd::proto::authzd::v1::admin_service_client::AdminServiceClient;
use authzd::store::{Store, UpstreamSettings};
use pb::watch_event::Event;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::web_callback_agent_role as agent_role;
use tonic::Streaming;
use tonic::transport::Channel;

const TENANT: &str = "acme";
const WCB: &str = "WorkspaceWebCallback";
const RESCHEDULE: &str = "Web Callback - Can Reschedule";
const PATIENCE: Duration = Duration::from_secs(20);

/// A replica on `store` (PostgreSQL or SQLite URL), with the demo tenant when `demo`.
fn replica_config(store: &str, demo: bool) -> ServerConfig {
    let mut c = ServerConfig::new(store);
    c.demo = demo;
    c.tail_interval = Duration::from_millis(100);
    c.watch.checkpoint_interval = Duration::from_millis(200);
    c
}

/// A follower of the server at `upstream`.
fn follower_config(upstream: &support::Serving) -> ServerConfig {
    let mut c = ServerConfig::new("unused: a follower opens no store");
    c.follow = Some(UpstreamSettings::new(upstream.url()));
    c.watch.checkpoint_interval = Duration::from_millis(200);
    c
}

async fn export(a: &mut AdminServiceClient<Channel>, at_least: u64) -> (String, u64) {
    let r =
        a.export(pb::ExportRequest { tenant: TENANT.into(), at_least_revision: at_least }).await.unwrap().into_inner();
    (r.yaml, r.revision)
}

fn raw_sub(from_revision: u64) -> pb::WatchRequest {
    pb::WatchRequest {
        subscription: Some(pb::watch_request::Subscription::Raw(pb::RawSubscription {
            tenant: Some(TENANT.into()),
            types: vec![],
            from_revision,
            from_now: false,
        })),
        at_least_revision: 0,
    }
}

/// The next event that is not a checkpoint.
async fn next_event(s: &mut Streaming<pb::WatchEvent>) -> Event {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.message()).await {
            Ok(Ok(Some(pb::WatchEvent { event: Some(Event::Checkpoint(_)) }))) => continue,
            Ok(Ok(Some(pb::WatchEvent { event: Some(e) }))) => return e,
            other => panic!("no event within {PATIENCE:?}: {other:?}"),
        }
    }
}

/// Whether `person` holds `privilege` on the server of `d`, answered at `at_least` or later.
async fn holds(
    d: &mut pb::decision_service_client::DecisionServiceClient<Channel>,
    person: &str,
    privilege: &str,
    at_least: u64,
) -> bool {
    let r = d
        .check(pb::CheckRequest {
            tenant: TENANT.into(),
            person: person.into(),
            application: Some(WCB.into()),
            privilege: Some(privilege.into()),
            at_least_revision: at_least,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.revision >= at_least, "answered at {} before {at_least}", r.revision);
    r.allowed
}

/// A follower of a replica, with two PostgreSQL replicas written at once:
/// it converges to the same tenant file at the same revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_converges_with_concurrent_writes_through_two_postgres_replicas() {
    let db = support::fresh_database("authzd_follow", "The follower tests").await;
    let a = support::serve(replica_config(&db.url, true)).await;
    let b = support::serve(replica_config(&db.url, false)).await;
    let f = support::serve(follower_config(&a)).await;
    assert_eq!(f.replica.store().display_url(), a.url(), "the follower's store is its upstream");
    let writers: Vec<_> = [a.admin().await, b.admin().await]
        .into_iter()
        .enumerate()
        .map(|(w, mut admin)| {
            tokio::spawn(async move {
                let mut last = 0;
                for i in 0..40 {
                    let yaml = format!("- put_person: {{id: w{w}-{i}, username: w{w}.{i}}}");
                    loop {
                        match admin.write(support::acme_write(&yaml)).await {
                            Ok(r) => {
                                last = r.into_inner().revision;
                                break;
                            }
                            // The other replica won the race: retry.
                            Err(s) if s.code() == tonic::Code::Aborted || s.code() == tonic::Code::Unavailable => {
                                continue;
                            }
                            Err(s) => panic!("write failed: {s:?}"),
                        }
                    }
                }
                last
            })
        })
        .collect();
    let mut head = 0;
    for w in writers {
        head = head.max(w.await.unwrap());
    }
    let (want, want_revision) = export(&mut a.admin().await, head).await;
    let (got, got_revision) = export(&mut f.admin().await, head).await;
    assert_eq!(got_revision, want_revision);
    assert!(got == want, "the follower's tenant file differs from the upstream's");
    assert!(want.contains("w0-39") && want.contains("w1-39"));
    let lag = match f.replica.store() {
        authzd::store::AnyStore::Upstream(u) => u.lag(),
        _ => panic!("a follower follows"),
    };
    eprintln!("follower at revision {got_revision} like its upstream; lag {lag:?}");
    assert_eq!(lag.revisions, 0, "caught up");
    for n in [f, b, a] {
        n.stop().await;
    }
}

/// The upstream is stopped and started again on the same port while a
/// service follows the follower's raw changes: no batch is lost or repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_resumes_after_its_upstream_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("up.db").display());
    let up = support::serve(replica_config(&db, true)).await;
    let addr: SocketAddr = up.addr;
    let f = support::serve(follower_config(&up)).await;
    let start = f.replica.snapshot().revision();
    let mut raw = f.watcher().await.watch(raw_sub(start)).await.unwrap().into_inner();
    let mut admin = up.admin().await;
    let mut written = Vec::new();
    for i in 0..15 {
        written.push(
            admin
                .write(support::acme_write(&format!("- put_person: {{id: a-{i}, username: a.{i}}}")))
                .await
                .unwrap()
                .into_inner()
                .revision,
        );
    }
    drop(admin);
    up.stop().await;
    // The follower keeps answering meanwhile, from what it has.
    let mut d = f.decisions().await;
    assert!(holds(&mut d, "wcb-agent-full", RESCHEDULE, 0).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let up = support::serve_on(replica_config(&db, false), addr).await;
    let mut admin = up.admin().await;
    for i in 0..15 {
        written.push(
            admin
                .write(support::acme_write(&format!("- put_person: {{id: b-{i}, username: b.{i}}}")))
                .await
                .unwrap()
                .into_inner()
                .revision,
        );
    }
    let mut seen = Vec::new();
    while seen.len() < written.len() {
        match next_event(&mut raw).await {
            Event::RawChange(c) => seen.push(c.revision),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, written, "every batch once, in order, across the restart");
    let last = *written.last().unwrap();
    assert_eq!(export(&mut f.admin().await, last).await, export(&mut admin, last).await);
    drop(raw);
    f.stop().await;
    up.stop().await;
}

/// The upstream compacted its changelog past the follower's revision while
/// the follower could not reach it: the follower reloads the tenants, and a
/// desktop following it gets the difference.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_behind_a_compaction_reloads_and_its_desktops_get_the_difference() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("up.db").display());
    let up = support::serve(replica_config(&db, true)).await;
    let addr = up.addr;
    let f = support::serve(follower_config(&up)).await;
    let behind = f.replica.snapshot().revision();
    let mut desktop =
        f.watcher().await.watch(support::acme_privileges_sub("wcb-agent-full", WCB)).await.unwrap().into_inner();
    let Event::Snapshot(s) = next_event(&mut desktop).await else { panic!("a snapshot first") };
    let Some(pb::snapshot::State::Privileges(p)) = s.state else { panic!("privileges") };
    assert!(p.privileges.iter().any(|x| x == RESCHEDULE));
    up.stop().await;

    // Elsewhere (the follower cannot see it): a role change and more batches,
    // then a retention that compacts all of them away.
    let mut elsewhere = replica_config(&db, false);
    elsewhere.retention.keep = Duration::from_millis(1);
    elsewhere.retention.interval = Duration::from_millis(50);
    let hidden = support::serve(elsewhere.clone()).await;
    let mut admin = hidden.admin().await;
    admin.write(support::acme_write(&agent_role(&[RESCHEDULE]))).await.unwrap();
    let mut head = 0;
    for i in 0..5 {
        head = admin
            .write(support::acme_write(&format!("- put_person: {{id: c-{i}, username: c.{i}}}")))
            .await
            .unwrap()
            .into_inner()
            .revision;
    }
    let store = hidden.replica.store().clone();
    let deadline = Instant::now() + PATIENCE;
    while store.oldest_retained().await.unwrap() < head {
        assert!(Instant::now() < deadline, "the upstream did not compact");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(behind < head);
    drop(admin);
    hidden.stop().await;

    // Back where the follower expects it.
    let up = support::serve_on(elsewhere, addr).await;
    match next_event(&mut desktop).await {
        Event::PrivilegesChanged(c) => {
            assert!(c.lost.contains(&RESCHEDULE.to_owned()), "lost {:?}", c.lost);
            assert!(c.revision >= head - 5);
        }
        other => panic!("expected the difference, got {other:?}"),
    }
    let mut d = f.decisions().await;
    assert!(!holds(&mut d, "wcb-agent-full", RESCHEDULE, head).await);
    assert_eq!(export(&mut f.admin().await, head).await, export(&mut up.admin().await, head).await);
    drop(desktop);
    f.stop().await;
    up.stop().await;
}

/// PostgreSQL replica → follower → follower: a desktop on the leaf hears of
/// a write on the root, and a revoke at R is never allowed on the leaf by a
/// check at `at_least_revision = R` (100 rounds of grant and revoke).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_chain_of_followers_carries_writes_and_never_answers_from_before_them() {
    let db = support::fresh_database("authzd_follow", "The follower tests").await;
    let root = support::serve(replica_config(&db.url, true)).await;
    let middle = support::serve(follower_config(&root)).await;
    let leaf = support::serve(follower_config(&middle)).await;
    let mut desktop =
        leaf.watcher().await.watch(support::acme_privileges_sub("wcb-agent-full", WCB)).await.unwrap().into_inner();
    assert!(matches!(next_event(&mut desktop).await, Event::Snapshot(_)));
    let mut admin = root.admin().await;
    let t0 = Instant::now();
    let r = admin.write(support::acme_write(&agent_role(&[RESCHEDULE]))).await.unwrap().into_inner().revision;
    match next_event(&mut desktop).await {
        Event::PrivilegesChanged(c) => {
            assert_eq!(c.revision, r);
            assert!(c.lost.contains(&RESCHEDULE.to_owned()));
        }
        other => panic!("expected the loss, got {other:?}"),
    }
    eprintln!("root write → leaf desktop (two followers down): {:?}", t0.elapsed());
    drop(desktop);

    let mut d = leaf.decisions().await;
    let mut allowed_after_revoke = 0;
    for round in 0..100 {
        let grant = admin.write(support::acme_write(&agent_role(&[]))).await.unwrap().into_inner().revision;
        if round % 10 == 0 {
            assert!(holds(&mut d, "wcb-agent-full", RESCHEDULE, grant).await, "the grant reaches the leaf");
        }
        let revoke = admin.write(support::acme_write(&agent_role(&[RESCHEDULE]))).await.unwrap().into_inner().revision;
        if holds(&mut d, "wcb-agent-full", RESCHEDULE, revoke).await {
            allowed_after_revoke += 1;
        }
    }
    assert_eq!(allowed_after_revoke, 0, "a check at the revoke's revision was allowed on the leaf");
    drop(admin);
    for n in [leaf, middle, root] {
        n.stop().await;
    }
}

/// A write sent to a follower is forwarded with the caller's credential,
/// stored once at the upstream, and seen on the follower when the answer
/// comes; without the credential the upstream refuses it and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_sent_to_a_follower_are_stored_once_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("up.db").display());
    let mut upc = replica_config(&db, true);
    upc.admin_token = Some("up-secret".into());
    let up = support::serve(upc).await;
    let mut fc = follower_config(&up);
    // The follower reads the upstream's admin API with its own token.
    if let Some(f) = fc.follow.as_mut() {
        f.token = Some("up-secret".into());
    }
    let f = support::serve(fc).await;
    let before = up.replica.store().head().await.unwrap();

    // The caller's credential goes upstream: the right one is accepted.
    let mut req = tonic::Request::new(support::acme_write("- put_person: {id: via-follower, username: via.follower}"));
    req.metadata_mut().insert("authorization", "Bearer up-secret".parse().unwrap());
    let r = f.admin().await.write(req).await.unwrap().into_inner().revision;
    assert_eq!(r, before + 1);
    let records = up.replica.store().read_since(before, 10).await.unwrap();
    assert_eq!(records.len(), 1, "stored once");
    assert_eq!(records[0].revision, r);
    // Seen on the follower as soon as the write answered.
    let (yaml, _) = export(&mut f.admin().await, 0).await;
    assert!(yaml.contains("via-follower"));
    assert_eq!(f.replica.snapshot().revision(), r);

    // A wrong credential is the upstream's refusal, and nothing is stored.
    let mut req = tonic::Request::new(support::acme_write("- put_person: {id: refused, username: refused}"));
    req.metadata_mut().insert("authorization", "Bearer wrong".parse().unwrap());
    let status = f.admin().await.write(req).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    assert_eq!(up.replica.store().head().await.unwrap(), r);

    // Lock calls go upstream too.
    let mut lock = tonic::Request::new(pb::AcquireLockRequest {
        tenant: TENANT.into(),
        person: "dz-developer".into(),
        object: Some(pb::ObjectKey { r#type: "Application".into(), id: "app-main-ivr".into() }),
        ..Default::default()
    });
    lock.metadata_mut().insert("authorization", "Bearer up-secret".parse().unwrap());
    let granted = f.admin().await.acquire_lock(lock).await.unwrap().into_inner();
    assert!(granted.granted, "{granted:?}");
    let held = up.replica.store().list_locks(std::time::SystemTime::now()).await.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].holder.0, "dz-developer");
    f.stop().await;
    up.stop().await;
}

// ------------------------------------------------------------------------
// The embedded follower (`authzd::follow::Follower`): the same rules in a
// library, inside the test's own process.

/// Whether `person` holds `privilege` on the embedded follower, once it has
/// `at_least`.
async fn holds_embedded(f: &authzd::follow::Follower, person: &str, privilege: &str, at_least: u64) -> bool {
    let r = authzd::engine::CheckRequest {
        subject: person,
        application: Some(WCB),
        privilege: Some(privilege),
        ..Default::default()
    };
    let d = f.check_at_least(TENANT, &r, at_least, PATIENCE).await.unwrap();
    assert!(d.revision >= at_least || d.reason == authzd::engine::Reason::UnknownSubject);
    d.allowed()
}

/// Before its first load an embedded follower denies every check with
/// `NOT_LOADED`, and `ready` gives up with an error naming the upstream and
/// why it could not load; once the upstream is there, it loads by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_embedded_follower_fails_closed_until_it_has_loaded() {
    use authzd::follow::{Follower, FollowerError};
    // A port nobody listens on yet.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let f = Follower::start(UpstreamSettings::new(format!("http://{addr}"))).unwrap();
    let r = authzd::engine::CheckRequest {
        subject: "wcb-agent-full",
        application: Some(WCB),
        privilege: Some(RESCHEDULE),
        ..Default::default()
    };
    assert_eq!(f.check(TENANT, &r).reason, authzd::engine::Reason::NotLoaded);
    assert!(!f.is_ready());
    match f.ready(Duration::from_millis(700)).await {
        Err(FollowerError::NotYet { upstream, detail, .. }) => {
            assert_eq!(upstream, format!("http://{addr}"));
            assert!(detail.contains("last error"), "says why: {detail}");
        }
        other => panic!("expected NotYet, got {other:?}"),
    }
    let dir = tempfile::tempdir().unwrap();
    let up = support::serve_on(replica_config(&format!("sqlite://{}", dir.path().join("up.db").display()), true), addr)
        .await;
    let revision = f.ready(PATIENCE).await.unwrap();
    assert_eq!(revision, up.replica.snapshot().revision());
    assert!(f.check(TENANT, &r).allowed());
    assert_eq!(f.check("no-such-tenant", &r).reason, authzd::engine::Reason::UnknownTenant);
    match authzd::follow::Follower::start(UpstreamSettings::new("not a url")) {
        Err(FollowerError::Settings(m)) => assert!(m.contains("not a url"), "{m}"),
        other => panic!("a bad URL is refused: {other:?}"),
    }
    f.close();
    up.stop().await;
}

/// An embedded follower keeps answering while its upstream is down, resumes
/// by revision when it is back (every later write arrives), and reloads when
/// the upstream compacted past it meanwhile: a privilege revoked while it
/// could not see is denied once it has caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_embedded_follower_resumes_and_reloads_after_a_compaction() {
    use authzd::follow::Follower;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("up.db").display());
    let up = support::serve(replica_config(&db, true)).await;
    let addr = up.addr;
    let f = Follower::start(UpstreamSettings::new(up.url())).unwrap();
    f.ready(PATIENCE).await.unwrap();
    assert!(holds_embedded(&f, "wcb-agent-full", RESCHEDULE, 0).await);

    // Resume: writes on both sides of a restart all arrive.
    let mut admin = up.admin().await;
    let mut last = 0;
    for i in 0..5 {
        last = admin
            .write(support::acme_write(&format!("- put_person: {{id: a-{i}, username: a.{i}}}")))
            .await
            .unwrap()
            .into_inner()
            .revision;
    }
    f.wait_for(last, PATIENCE).await.unwrap();
    drop(admin);
    up.stop().await;
    assert!(holds_embedded(&f, "wcb-agent-full", RESCHEDULE, 0).await, "answers from what it has");
    let up = support::serve_on(replica_config(&db, false), addr).await;
    let mut admin = up.admin().await;
    for i in 0..5 {
        last = admin
            .write(support::acme_write(&format!("- put_person: {{id: b-{i}, username: b.{i}}}")))
            .await
            .unwrap()
            .into_inner()
            .revision;
    }
    f.wait_for(last, PATIENCE).await.unwrap();
    let newest = authzd::engine::CheckRequest { subject: "b-4", ..Default::default() };
    assert_ne!(f.check(TENANT, &newest).reason, authzd::engine::Reason::UnknownSubject, "the last write arrived");
    drop(admin);
    up.stop().await;

    // Reload: a revoke and more batches, compacted away while it is cut off.
    let mut elsewhere = replica_config(&db, false);
    elsewhere.retention.keep = Duration::from_millis(1);
    elsewhere.retention.interval = Duration::from_millis(50);
    let hidden = support::serve(elsewhere.clone()).await;
    let mut admin = hidden.admin().await;
    admin.write(support::acme_write(&agent_role(&[RESCHEDULE]))).await.unwrap();
    let mut head = 0;
    for i in 0..5 {
        head = admin
            .write(support::acme_write(&format!("- put_person: {{id: c-{i}, username: c.{i}}}")))
            .await
            .unwrap()
            .into_inner()
            .revision;
    }
    let store = hidden.replica.store().clone();
    let deadline = Instant::now() + PATIENCE;
    while store.oldest_retained().await.unwrap() < head {
        assert!(Instant::now() < deadline, "the upstream did not compact");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(f.revision() < head);
    drop(admin);
    hidden.stop().await;
    let up = support::serve_on(elsewhere, addr).await;
    assert!(!holds_embedded(&f, "wcb-agent-full", RESCHEDULE, head).await, "the revoke reached it by a reload");
    let mut d = up.decisions().await;
    assert!(!holds(&mut d, "wcb-agent-full", RESCHEDULE, head).await);
    f.close();
    up.stop().await;
}

/// PostgreSQL replica → server follower → embedded follower: a revoke at R
/// is never allowed by the embedded follower's check at R (100 rounds of
/// grant and revoke written on the root).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_embedded_follower_under_a_follower_never_answers_from_before_a_revoke() {
    use authzd::follow::Follower;
    let db = support::fresh_database("authzd_follow_embedded", "The follower tests").await;
    let root = support::serve(replica_config(&db.url, true)).await;
    let middle = support::serve(follower_config(&root)).await;
    let f = Follower::start(UpstreamSettings::new(middle.url())).unwrap();
    f.ready(PATIENCE).await.unwrap();
    let mut admin = root.admin().await;
    let mut allowed_after_revoke = 0;
    for round in 0..100 {
        let grant = admin.write(support::acme_write(&agent_role(&[]))).await.unwrap().into_inner().revision;
        if round % 10 == 0 {
            assert!(holds_embedded(&f, "wcb-agent-full", RESCHEDULE, grant).await, "the grant arrives");
        }
        let revoke = admin.write(support::acme_write(&agent_role(&[RESCHEDULE]))).await.unwrap().into_inner().revision;
        if holds_embedded(&f, "wcb-agent-full", RESCHEDULE, revoke).await {
            allowed_after_revoke += 1;
        }
    }
    assert_eq!(allowed_after_revoke, 0, "a check at the revoke's revision was allowed on the embedded follower");
    f.close();
    drop(admin);
    middle.stop().await;
    root.stop().await;
}
