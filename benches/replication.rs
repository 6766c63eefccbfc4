//! Replication over PostgreSQL, measured end to end:
//!
//! 1. **Write on replica A → event on replica B**: two replicas (in-process
//!    servers on `127.0.0.1:0`, each with its own store pool, tailing woken by
//!    PostgreSQL notifications, polling every second as a fallback) share one
//!    database; a desktop on B watches a person's privileges while 200 role
//!    changes are written through A's `Write` RPC. Reported: from the write's
//!    answer (the batch is committed in PostgreSQL and installed on A) to the
//!    `PrivilegesChanged` event on B's stream, and from the write's start.
//! 2. **Snapshot load of the 100,000-metric benchmark tenant**
//!    (`synth::tenant("bench", &SynthParams::default())`), written as one
//!    batch: a fresh replica's start-up (open the store, load, compile) from
//!    the checkpoint the import writes, and, on a second database holding only
//!    the changelog record, by replaying that one batch.
//!
//! 3. **Write → applied on N followers** (`authzd serve --follow`'s replica,
//!    in process: each follower is a replica on an [`UpstreamStore`] with its
//!    own gRPC connection and raw `Watch` to the upstream, a replica on
//!    PostgreSQL): for N = 10, 100 and 1,000 followers, 50 role changes
//!    written through the upstream; reported: from the write's answer to the
//!    moment every follower has applied it, and the number of PostgreSQL
//!    connections of the database with all N followers running, and the
//!    process's CPU time per write (upstream and followers together) over
//!    the cores: the floor under which no delivery design brings N
//!    followers in one process; then the same with N embedded followers
//!    (`authzd::follow::Follower`).
//! 4. **Write → watcher on one replica** (SQLite, then PostgreSQL), on the
//!    benchmark tenant: a raw `Watch` open while 1,000 group joins are written
//!    one after the other, a checkpoint every 100; reported: the `Write` RPC,
//!    the event after the write answered, and the replica's breakdown of each
//!    write; then the same writes with no checkpoints, the ceiling of what
//!    the checkpoints cost.
//! 5. **The embedded follower** (`authzd::follow::Follower`, in the bench's
//!    own process) on the benchmark tenant, following a replica on SQLite
//!    over loopback: a `check` (privilege, and object) on the follower
//!    against the same check on the engine's view directly (its ceiling),
//!    a million each, in the same run; then 1,000 group joins and leaves
//!    written through the upstream's `Write`, and for each the time from the
//!    write's answer until the follower has applied its revision.
//!
//! Run: `cargo bench --bench replication`. PostgreSQL at `AUTHZD_TEST_PG_URL`
//! (default `postgres://postgres@127.0.0.1:5432/test`; `scripts/test.sh`
//! starts the local cluster). Each part uses a fresh database, dropped at the end.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

/// The allocator the server binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../tests/support/mod.rs"]
mod support;

use authzd::config::ServerConfig;
use authzd::model::{Mutation, TenantId, yaml};
use authzd::proto::authzd::v1 as pb;
use authzd::proto::authzd::v1::admin_service_client::AdminServiceClient;
use authzd::proto::authzd::v1::watch_service_client::WatchServiceClient;
use authzd::replica::{Batch, WriteRequest};
use authzd::replica::{Limits, Replica};
use authzd::service::convert;
use authzd::store::{AnyStore, Store, UpstreamSettings, UpstreamStore};
use authzd::synth::{self, SynthParams};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WARM_UP: usize = 10;
const WRITES: usize = 200;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn summary(name: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "{name:<58} p50 {:>8.3} ms  p99 {:>8.3} ms  max {:>8.3} ms  (n = {})",
        ms(percentile(&v, 0.5)),
        ms(percentile(&v, 0.99)),
        ms(v.last().copied().unwrap_or_default()),
        v.len()
    );
}

/// This process's CPU time (user + system), from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// The floor a fan-out's latency cannot go under on this machine: the CPU
/// the process spent per write (the upstream and every follower in it),
/// spread over every core.
fn cpu_floor(name: &str, cpu: f64, writes: usize, latencies: &[Duration]) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_write_ms = cpu * 1e3 / writes.max(1) as f64;
    let floor_ms = per_write_ms / cores as f64;
    let mut v = latencies.to_vec();
    v.sort();
    println!(
        "{name:<58} {per_write_ms:.1} ms CPU per write; / {cores} cores = floor {floor_ms:.1} ms; p50 {:.2}x, p99 {:.2}x the floor",
        ms(percentile(&v, 0.5)) / floor_ms,
        ms(percentile(&v, 0.99)) / floor_ms,
    );
}

/// A server on an ephemeral port.
async fn start(config: ServerConfig) -> support::Serving {
    support::serve(config).await
}

/// The demo tenant's "Web Callback Agent" role, with or without "Can Mark Done".
fn agent_role(mark_done: bool) -> Vec<pb::Mutation> {
    let without: &[&str] = if mark_done { &[] } else { &["Web Callback - Can Mark Done"] };
    let text = support::web_callback_agent_role(without);
    let batch: Vec<Mutation> = yaml::from_str(&text, "bench").unwrap();
    batch.into_iter().map(convert::mutation_pb).collect()
}

async fn write_to_event() {
    let db = support::fresh_database("authzd_bench_repl", "the replication benchmark").await;
    let url = db.url.clone();
    let mut config = ServerConfig::new(url.clone());
    config.tail_interval = Duration::from_secs(1);
    config.demo = true;
    let a = start(config.clone()).await;
    config.demo = false;
    let b = start(config).await;

    let mut watch = WatchServiceClient::new(b.channel().await);
    let mut desktop = watch
        .watch(pb::WatchRequest {
            subscription: Some(pb::watch_request::Subscription::Privileges(pb::PrivilegesSubscription {
                tenant: "acme".into(),
                person: "wcb-agent-full".into(),
                application: "WorkspaceWebCallback".into(),
            })),
            at_least_revision: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut next_change = async || loop {
        let e = desktop.message().await.unwrap().expect("the stream stays open").event.unwrap();
        match e {
            pb::watch_event::Event::PrivilegesChanged(c) => return c,
            pb::watch_event::Event::Snapshot(_) | pb::watch_event::Event::Checkpoint(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    };
    let mut admin = AdminServiceClient::new(a.channel().await);
    let (mut after_commit, mut after_start, mut write_rtt) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..WARM_UP + WRITES {
        let req = pb::WriteRequest { tenant: "acme".into(), mutations: agent_role(k % 2 == 1), ..Default::default() };
        let t0 = Instant::now();
        let revision = admin.write(req).await.unwrap().into_inner().revision;
        let t1 = Instant::now();
        let change = next_change().await;
        let t2 = Instant::now();
        assert_eq!(change.revision, revision);
        if k >= WARM_UP {
            write_rtt.push(t1 - t0);
            after_commit.push(t2.saturating_duration_since(t1));
            after_start.push(t2 - t0);
        }
    }
    println!("\n== write on replica A -> event on replica B (PostgreSQL, {WRITES} role changes, release build) ==");
    summary("Write RPC on A (validate, commit, install)", write_rtt);
    summary("event on B after A's write answered (beyond the commit)", after_commit);
    summary("event on B after A's write started", after_start);
    drop(desktop);
    a.stop().await;
    b.stop().await;
    drop(db);
}

async fn snapshot_load() {
    let params = SynthParams::default();
    let tenant = TenantId("bench".into());
    let t = Instant::now();
    let batch = synth::mutations(&params);
    let config = synth::tenant("bench", &params).expect("the benchmark tenant validates");
    println!(
        "\n== snapshot load of the benchmark tenant ({} persons, {} metrics; one batch of {} mutations, generated in {:.0} ms) ==",
        params.persons,
        params.metrics,
        batch.len(),
        ms(t.elapsed())
    );

    // From the checkpoint the import writes.
    let db = support::fresh_database("authzd_bench_repl", "the replication benchmark").await;
    let url = db.url.clone();
    {
        let replica = Replica::open(AnyStore::open(&url).await.unwrap(), Limits::default()).await.unwrap();
        let write = WriteRequest {
            batch: Batch::Import { file: batch.clone(), config: Box::new(config), replace: false },
            ..WriteRequest::new(tenant.clone(), Vec::new())
        };
        let t = Instant::now();
        let outcome = replica.write(write).await.unwrap();
        println!(
            "{:<58} {:>8.0} ms  (revision {})",
            "write it as one batch (validate, append, checkpoint)",
            ms(t.elapsed()),
            outcome.revision
        );
        replica.store().close().await;
    }
    let mut loads = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let replica = Replica::open(AnyStore::open(&url).await.unwrap(), Limits::default()).await.unwrap();
        loads.push(t.elapsed());
        let (persons, nodes, acls) = replica.snapshot().view("bench").unwrap().stats();
        assert!(persons >= params.persons && nodes >= params.metrics, "{persons} persons, {nodes} nodes, {acls} acls");
        replica.store().close().await;
    }
    summary("fresh replica start-up from the checkpoint (3 runs)", loads);
    drop(db);

    // By replaying the one changelog record (no checkpoint).
    let db2 = support::fresh_database("authzd_bench_load", "the replication benchmark").await;
    let url = db2.url.clone();
    {
        let store = AnyStore::open(&url).await.unwrap();
        let t = Instant::now();
        store.append(&tenant, &batch, None, None, std::time::SystemTime::now()).await.unwrap();
        println!("{:<58} {:>8.0} ms", "append the batch alone (no checkpoint)", ms(t.elapsed()));
        store.close().await;
    }
    let mut loads = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let replica = Replica::open(AnyStore::open(&url).await.unwrap(), Limits::default()).await.unwrap();
        loads.push(t.elapsed());
        assert!(replica.snapshot().view("bench").is_ok());
        replica.store().close().await;
    }
    summary("fresh replica start-up replaying the batch (3 runs)", loads);
    drop(db2);
}

/// Connections to database `name` (every client, this process's included).
async fn pg_connections(name: &str) -> i64 {
    use sqlx::Connection;
    let mut c = sqlx::PgConnection::connect(&support::pg_admin_url()).await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
        .bind(name)
        .fetch_one(&mut c)
        .await
        .unwrap();
    c.close().await.unwrap();
    n
}

async fn followers() {
    let db = support::fresh_database("authzd_bench_follow", "the replication benchmark").await;
    let mut config = ServerConfig::new(db.url.clone());
    config.demo = true;
    config.tail_interval = Duration::from_secs(1);
    let up = start(config).await;
    let mut admin = AdminServiceClient::new(up.channel().await);
    println!("\n== write on a PostgreSQL replica -> applied on every follower (in process, one gRPC stream each) ==");
    println!("PostgreSQL connections of the database with the upstream alone: {}", pg_connections(&db.name).await);
    let mut all: Vec<Arc<Replica>> = Vec::new();
    let mut stops = Vec::new();
    for n in [10usize, 100, 1_000] {
        while all.len() < n {
            let store = AnyStore::Upstream(UpstreamStore::open(&UpstreamSettings::new(up.url())).unwrap());
            let replica = Arc::new(Replica::open(store, Limits::default()).await.unwrap());
            let (stop, stopped) = tokio::sync::watch::channel(false);
            tokio::spawn(Arc::clone(&replica).tail(Duration::from_secs(1), stopped));
            stops.push(stop);
            all.push(replica);
        }
        let mut applied = Vec::new();
        let mut cpu = 0.0;
        for k in 0..WARM_UP + 50 {
            let req =
                pb::WriteRequest { tenant: "acme".into(), mutations: agent_role(k % 2 == 1), ..Default::default() };
            let c0 = cpu_seconds();
            let revision = admin.write(req).await.unwrap().into_inner().revision;
            let t = Instant::now();
            for r in &all {
                r.wait_for(revision).await.unwrap();
            }
            if k >= WARM_UP {
                applied.push(t.elapsed());
                cpu += cpu_seconds() - c0;
            }
        }
        cpu_floor(&format!("{n} followers: the process's CPU"), cpu, applied.len(), &applied);
        summary(&format!("{n} followers: all applied after the write answered"), applied);
        println!("{:<58} {}", format!("PostgreSQL connections with {n} followers"), pg_connections(&db.name).await);
    }
    for s in stops {
        s.send_replace(true);
    }
    for r in all {
        r.store().close().await;
    }

    // The same with embedded followers (`authzd::follow::Follower`: no
    // replica, no hub, no service around the views).
    println!(
        "\n== write on a PostgreSQL replica -> applied on every embedded follower (in process, one gRPC stream each) =="
    );
    let mut embedded: Vec<authzd::follow::Follower> = Vec::new();
    for n in [10usize, 100, 1_000] {
        while embedded.len() < n {
            let f = authzd::follow::Follower::start(UpstreamSettings::new(up.url())).unwrap();
            f.ready(Duration::from_secs(60)).await.unwrap();
            embedded.push(f);
        }
        let mut applied = Vec::new();
        let mut cpu = 0.0;
        for k in 0..WARM_UP + 50 {
            let req =
                pb::WriteRequest { tenant: "acme".into(), mutations: agent_role(k % 2 == 1), ..Default::default() };
            let c0 = cpu_seconds();
            let revision = admin.write(req).await.unwrap().into_inner().revision;
            let t = Instant::now();
            for f in &embedded {
                f.wait_for(revision, Duration::from_secs(30)).await.unwrap();
            }
            if k >= WARM_UP {
                applied.push(t.elapsed());
                cpu += cpu_seconds() - c0;
            }
        }
        cpu_floor(&format!("{n} embedded followers: the process's CPU"), cpu, applied.len(), &applied);
        summary(&format!("{n} embedded followers: all applied after the write answered"), applied);
        println!(
            "{:<58} {}",
            format!("PostgreSQL connections with {n} embedded followers"),
            pg_connections(&db.name).await
        );
    }
    for f in &embedded {
        f.close();
    }
    up.stop().await;
    drop(db);
}

/// Write → watcher on one replica of `store_url`, on the benchmark tenant.
async fn write_path(label: &str, store_url: &str, checkpoint_every: u64) {
    let params = SynthParams::default();
    let mut config = ServerConfig::new(store_url);
    config.tail_interval = Duration::from_secs(1);
    config.limits.checkpoint_every = checkpoint_every;
    let node = start(config).await;
    let write = WriteRequest {
        batch: Batch::Import {
            file: synth::mutations(&params),
            config: Box::new(synth::tenant("bench", &params).unwrap()),
            replace: false,
        },
        ..WriteRequest::new(TenantId("bench".into()), Vec::new())
    };
    node.replica.write(write).await.unwrap();
    let mut watch = WatchServiceClient::new(node.channel().await);
    let mut raw = watch
        .watch(pb::WatchRequest {
            subscription: Some(pb::watch_request::Subscription::Raw(pb::RawSubscription {
                tenant: Some("bench".into()),
                types: vec![],
                from_revision: node.replica.snapshot().revision(),
                from_now: false,
            })),
            at_least_revision: 0,
        })
        .await
        .unwrap()
        .into_inner();
    // The stream is read on its own task, so an event that arrives before
    // the write's answer is timed when it arrives.
    let (arrivals, mut arrived) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let reader = tokio::spawn(async move {
        while let Ok(Some(m)) = raw.message().await {
            if let Some(pb::watch_event::Event::RawChange(c)) = m.event {
                if arrivals.send((c.revision, Instant::now())).is_err() {
                    return;
                }
            }
        }
    });
    let mut admin = AdminServiceClient::new(node.channel().await);
    let (mut rtt, mut after, mut from_start) = (Vec::new(), Vec::new(), Vec::new());
    // A group of its own: person k/2 joins it, then leaves it.
    let group = "bench-joins".to_owned();
    let create: Vec<Mutation> = yaml::from_str("- put_group: {id: bench-joins, name: Bench joins}", "bench").unwrap();
    let req = pb::WriteRequest {
        tenant: "bench".into(),
        mutations: create.into_iter().map(convert::mutation_pb).collect(),
        ..Default::default()
    };
    admin.write(req).await.unwrap();
    for k in 0..1_000 {
        let person = synth::person_id((k / 2) % params.persons);
        let m = if k % 2 == 0 {
            Mutation::AddGroupMember {
                group: authzd::model::GroupId(group.clone()),
                person: authzd::model::PersonId(person),
            }
        } else {
            Mutation::RemoveGroupMember {
                group: authzd::model::GroupId(group.clone()),
                person: authzd::model::PersonId(person),
            }
        };
        let req =
            pb::WriteRequest { tenant: "bench".into(), mutations: vec![convert::mutation_pb(m)], ..Default::default() };
        let t0 = Instant::now();
        let revision = admin.write(req).await.unwrap().into_inner().revision;
        let t1 = Instant::now();
        let at = loop {
            match arrived.recv().await.expect("the raw stream is open") {
                (r, at) if r == revision => break at,
                _ => continue,
            }
        };
        rtt.push(t1 - t0);
        after.push(at.saturating_duration_since(t1));
        from_start.push(at - t0);
    }
    println!(
        "\n== write -> raw watcher on one replica ({label}, benchmark tenant, 1,000 group joins/leaves, {}) ==",
        if checkpoint_every == u64::MAX {
            "no checkpoints".to_owned()
        } else {
            format!("checkpoint every {checkpoint_every}")
        }
    );
    summary("Write RPC (validate, compile, append, publish)", rtt.clone());
    let mut sorted = rtt.clone();
    sorted.sort();
    println!(
        "{:<58} {:.2}",
        "Write RPC p99 / p50",
        percentile(&sorted, 0.99).as_secs_f64() / percentile(&sorted, 0.5).as_secs_f64()
    );
    summary("raw event after the write answered (0: it came first)", after);
    // The replica's own breakdown of the same 1,000 writes (the newest it kept).
    let phases = node.replica.recent_write_phases();
    let phases = &phases[phases.len().saturating_sub(from_start.len())..];
    assert_eq!(phases.len(), from_start.len(), "one breakdown per write");
    summary("  validate (resolve, conditions, validate on a copy)", phases.iter().map(|p| p.validate).collect());
    summary("  append (the store's commit)", phases.iter().map(|p| p.append).collect());
    summary("  compile (next view, installed)", phases.iter().map(|p| p.compile).collect());
    summary("  publish (hub, raw subscribers, waiters)", phases.iter().map(|p| p.publish).collect());
    summary(
        "raw event after the store's commit",
        from_start.iter().zip(phases).map(|(total, p)| total.saturating_sub(p.validate + p.append)).collect(),
    );
    reader.abort();
    node.stop().await;
}

/// Check time on the embedded follower against the engine's view, and the
/// follower's freshness behind its upstream.
async fn embedded() {
    use authzd::engine::{CheckRequest, ObjectRef};
    use authzd::follow::{Follower, UpstreamSettings};
    use authzd::model::{Perm, types};
    use std::hint::black_box;

    let params = SynthParams::default();
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(format!("sqlite://{}", dir.path().join("bench.db").display()));
    config.tail_interval = Duration::from_secs(1);
    let up = start(config).await;
    let write = WriteRequest {
        batch: Batch::Import {
            file: synth::mutations(&params),
            config: Box::new(synth::tenant("bench", &params).unwrap()),
            replace: false,
        },
        ..WriteRequest::new(TenantId("bench".into()), Vec::new())
    };
    up.replica.write(write).await.unwrap();
    let follower = Follower::start(UpstreamSettings::new(up.url())).unwrap();
    let t = Instant::now();
    follower.ready(Duration::from_secs(120)).await.unwrap();
    println!(
        "\n== the embedded follower (in process) following a replica on SQLite over loopback, benchmark tenant =="
    );
    println!("{:<58} {:.0} ms", "first load (Export, parse, compile)", ms(t.elapsed()));

    let mut rng = synth::Rng::new(7);
    let persons: Vec<String> = (0..4096).map(|_| synth::person_id(rng.below(params.persons))).collect();
    let privs: Vec<String> = (0..4096).map(|_| synth::privilege_name(rng.below(params.privileges))).collect();
    let metrics: Vec<String> = (0..4096).map(|_| synth::metric_id(rng.below(params.metrics))).collect();
    let privilege = |i: usize| CheckRequest {
        subject: &persons[i & 4095],
        application: Some(synth::APP),
        privilege: Some(&privs[i & 4095]),
        ..Default::default()
    };
    let object = |i: usize| CheckRequest {
        subject: &persons[i & 4095],
        permission: Some(Perm::Read),
        object: Some(ObjectRef { kind: types::METRIC, id: &metrics[(i * 7) & 4095], tenant: None }),
        ..Default::default()
    };
    let view = follower.view("bench").unwrap();
    const N: usize = 1_000_000;
    // Best of 5 rounds of N checks each: ns per check.
    fn best(f: impl Fn(usize) -> bool) -> f64 {
        (0..5)
            .map(|_| {
                let t = Instant::now();
                let mut allowed = 0usize;
                for i in 0..N {
                    allowed += usize::from(f(black_box(i)));
                }
                black_box(allowed);
                t.elapsed().as_nanos() as f64 / N as f64
            })
            .fold(f64::INFINITY, f64::min)
    }
    let reader = std::cell::RefCell::new(follower.reader("bench"));
    let rows = [
        ("privilege", "Follower::check", best(|i| follower.check("bench", &privilege(i)).allowed())),
        ("privilege", "TenantReader::check", best(|i| reader.borrow_mut().check(&privilege(i)).allowed())),
        ("privilege", "engine view (ceiling)", best(|i| view.check(&privilege(i)).allowed())),
        ("object", "Follower::check", best(|i| follower.check("bench", &object(i)).allowed())),
        ("object", "TenantReader::check", best(|i| reader.borrow_mut().check(&object(i)).allowed())),
        ("object", "engine view (ceiling)", best(|i| view.check(&object(i)).allowed())),
    ];
    let ceiling = |kind: &str| rows.iter().find(|r| r.0 == kind && r.1.starts_with("engine")).map_or(1.0, |r| r.2);
    for (kind, how, ns) in rows {
        println!("{:<58} {ns:>6.1} ns   {:.2} x the engine view", format!("check/{kind}: {how}"), ns / ceiling(kind));
    }
    drop(view);

    let mut admin = AdminServiceClient::new(up.channel().await);
    let create: Vec<Mutation> = yaml::from_str("- put_group: {id: bench-joins, name: Bench joins}", "bench").unwrap();
    let req = pb::WriteRequest {
        tenant: "bench".into(),
        mutations: create.into_iter().map(convert::mutation_pb).collect(),
        ..Default::default()
    };
    admin.write(req).await.unwrap();
    let (mut after_answer, mut after_start) = (Vec::new(), Vec::new());
    for k in 0..1_000 + WARM_UP {
        let person = authzd::model::PersonId(synth::person_id((k / 2) % params.persons));
        let group = authzd::model::GroupId("bench-joins".into());
        let m = if k % 2 == 0 {
            Mutation::AddGroupMember { group, person }
        } else {
            Mutation::RemoveGroupMember { group, person }
        };
        let req =
            pb::WriteRequest { tenant: "bench".into(), mutations: vec![convert::mutation_pb(m)], ..Default::default() };
        let t0 = Instant::now();
        let revision = admin.write(req).await.unwrap().into_inner().revision;
        let t1 = Instant::now();
        follower.wait_for(revision, Duration::from_secs(10)).await.unwrap();
        if k >= WARM_UP {
            after_answer.push(t1.elapsed());
            after_start.push(t0.elapsed());
        }
    }
    summary("follower applied it, after the write answered", after_answer);
    summary("follower applied it, from the write's start", after_start);
    println!("{:<58} {:?}", "follower lag at the end", follower.lag());
    follower.close();
    up.stop().await;
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects one part.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wants = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        if wants("write_to_event") {
            write_to_event().await;
        }
        if wants("snapshot_load") {
            snapshot_load().await;
        }
        if wants("followers") {
            followers().await;
        }
        if wants("embedded") {
            embedded().await;
        }
        if wants("write_path") {
            // Each store twice: with a checkpoint every 100 batches, then with
            // none (the same writes' ceiling: what the checkpoints add).
            for every in [100, u64::MAX] {
                let dir = tempfile::tempdir().unwrap();
                write_path("SQLite", &format!("sqlite://{}", dir.path().join("bench.db").display()), every).await;
                let db = support::fresh_database("authzd_bench_path", "the replication benchmark").await;
                write_path("PostgreSQL", &db.url, every).await;
            }
        }
    });
}
