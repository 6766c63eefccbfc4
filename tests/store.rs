//! Store conformance suite: one set of cases run against SQLite (a temporary
//! file) and a real PostgreSQL (a fresh database per test, dropped at the end).
//!
//! PostgreSQL defaults to `postgres://postgres@127.0.0.1:5432/test`; set
//! `AUTHZD_TEST_PG_URL` to use another server. When it cannot be reached the
//! PostgreSQL cases fail with instructions; they never pass silently.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use authzd::model::{Mutation, PersonId, TenantConfig, TenantFile, TenantId};
use authzd::store::{AnyStore, Compaction, LockEventKind, LockOutcome, Notice, Store, StoreError};
use sqlx::Connection;
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------- harness

/// An open store plus whatever must be cleaned up after it.
struct Harness {
    store: AnyStore,
    url: String,
    _guard: Guard,
}

enum Guard {
    Dir(#[allow(dead_code)] tempfile::TempDir),
    Pg(#[allow(dead_code)] support::PgDatabase),
}

impl Harness {
    fn is_postgres(&self) -> bool {
        self.url.starts_with("postgres")
    }

    /// A second, independent store instance (its own pool) on the same database.
    async fn reopen(&self) -> AnyStore {
        AnyStore::open(&self.url).await.unwrap_or_else(|e| panic!("reopening `{}`: {e}", self.url))
    }

    /// Runs raw SQL against the database, bypassing the store (to plant bad rows).
    async fn raw(&self, sql: &str) {
        if self.is_postgres() {
            let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
            sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
            c.close().await.unwrap();
        } else {
            let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
            sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
            c.close().await.unwrap();
        }
    }

    /// Reads one text value with raw SQL, bypassing the store.
    async fn raw_text(&self, sql: &str) -> String {
        if self.is_postgres() {
            let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
            let v: String = sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap();
            c.close().await.unwrap();
            v
        } else {
            let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
            let v: String = sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap();
            c.close().await.unwrap();
            v
        }
    }

    /// The stored text of tenant `t`'s checkpoint: inline, or (SQLite, since
    /// schema v3) its parts in order.
    async fn checkpoint_text(&self) -> String {
        if self.is_postgres() {
            self.raw_text("SELECT config FROM authzd_checkpoints WHERE tenant = 't'").await
        } else {
            self.raw_text(
                "SELECT c.config || COALESCE((SELECT group_concat(data, '') FROM \
                 (SELECT data FROM authzd_checkpoint_parts p WHERE p.tenant = c.tenant AND p.revision = c.revision \
                  AND p.part < c.parts ORDER BY part)), '') FROM authzd_checkpoints c WHERE c.tenant = 't'",
            )
            .await
        }
    }

    async fn finish(self) {
        self.store.close().await;
    }
}

async fn open_sqlite() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    // A directory that does not exist yet: created when asked (`--create-store-dir`).
    let path = dir.path().join("state").join("authzd.db");
    let url = format!("sqlite://{}", path.display());
    let store = AnyStore::open_with(&url, true).await.unwrap_or_else(|e| panic!("opening `{url}`: {e}"));
    assert!(path.exists(), "the sqlite file was not created at {}", path.display());
    Harness { store, url, _guard: Guard::Dir(dir) }
}

async fn open_postgres() -> Harness {
    let db = support::fresh_database("authzd_test", "The store conformance tests").await;
    let url = db.url.clone();
    let store = AnyStore::open(&url).await.unwrap_or_else(|e| panic!("opening `{url}`: {e}"));
    assert!(matches!(store, AnyStore::Postgres(_)));
    Harness { store, url, _guard: Guard::Pg(db) }
}

/// Runs each case on a fresh store of the backend, then closes it.
macro_rules! conformance {
    ($backend:ident, $open:ident: $($case:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let h = super::$open().await;
                    let started = std::time::Instant::now();
                    super::$case(&h).await;
                    eprintln!("{}::{} took {:?}", stringify!($backend), stringify!($case), started.elapsed());
                    h.finish().await;
                }
            )*
        }
    };
}

conformance!(sqlite, open_sqlite:
    empty_store,
    the_replicas_clock_stamps_the_store,
    retention_primitives,
    one_replica_at_a_time_holds_the_compaction_lock,
    a_retention_round_leaves_the_compaction_lock_free,
    appends_get_consecutive_revisions,
    read_since_order_and_limit,
    expected_head_conflict_writes_nothing,
    concurrent_appends_are_gap_free,
    checkpoint_round_trip,
    large_checkpoints_round_trip,
    compaction_keeps_what_checkpoints_need,
    corrupt_rows_name_the_revision,
    locks,
    lock_events,
    lock_events_share_the_lock_transaction,
    schema_v1_is_upgraded,
    concurrent_acquires_grant_one,
);

conformance!(postgres, open_postgres:
    empty_store,
    the_replicas_clock_stamps_the_store,
    retention_primitives,
    one_replica_at_a_time_holds_the_compaction_lock,
    a_retention_round_leaves_the_compaction_lock_free,
    appends_get_consecutive_revisions,
    read_since_order_and_limit,
    expected_head_conflict_writes_nothing,
    concurrent_appends_are_gap_free,
    checkpoint_round_trip,
    large_checkpoints_round_trip,
    compaction_keeps_what_checkpoints_need,
    corrupt_rows_name_the_revision,
    locks,
    lock_events,
    lock_events_share_the_lock_transaction,
    schema_v1_is_upgraded,
    concurrent_acquires_grant_one,
);

// ---------------------------------------------------------------- helpers

fn t(id: &str) -> TenantId {
    TenantId(id.to_owned())
}

fn p(id: &str) -> PersonId {
    PersonId(id.to_owned())
}

fn rename(name: &str) -> Vec<Mutation> {
    vec![Mutation::RenameTenant { name: name.to_owned() }]
}

/// A fixed clock: tests pass explicit instants to the lock functions.
fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
}

async fn all_records(s: &AnyStore) -> Vec<authzd::store::ChangeRecord> {
    let mut out = Vec::new();
    let mut cursor = s.oldest_retained().await.unwrap();
    loop {
        let page = s.read_since(cursor, 64).await.unwrap();
        let Some(last) = page.last() else { return out };
        cursor = last.revision;
        out.extend(page);
    }
}

fn revisions(records: &[authzd::store::ChangeRecord]) -> Vec<u64> {
    records.iter().map(|r| r.revision).collect()
}

fn demo_config(id: &str, name: &str) -> TenantConfig {
    TenantConfig::empty(t(id))
        .apply_batch(&[Mutation::CreateTenant { name: name.to_owned(), presets: vec![], defaults: true }])
        .unwrap()
}

// ---------------------------------------------------------------- cases

async fn empty_store(h: &Harness) {
    let s = &h.store;
    assert_eq!(s.head().await.unwrap(), 0);
    assert_eq!(s.oldest_retained().await.unwrap(), 0);
    assert!(s.read_since(0, 10).await.unwrap().is_empty());
    assert!(s.load_checkpoints().await.unwrap().is_empty());
    assert!(s.list_locks(at(0)).await.unwrap().is_empty());
    assert!(s.expire_locks(at(0)).await.unwrap().is_empty());
    assert_eq!(s.compact(100, at(0)).await.unwrap(), 0);
}

async fn appends_get_consecutive_revisions(h: &Harness) {
    let s = &h.store;
    let batches = [
        (
            t("acme"),
            vec![Mutation::CreateTenant { name: "ACME".into(), presets: vec!["callback".into()], defaults: true }],
            Some("alice"),
        ),
        (t("globex"), rename("Globex"), None),
        (
            t("acme"),
            vec![Mutation::SetRestrictedMode { on: true }, Mutation::SetRestrictedMode { on: false }],
            Some("bob"),
        ),
    ];
    // Each batch is committed at the time its writer gives, kept to the
    // millisecond (the third one's extra half millisecond is dropped).
    let given = [at(10), at(10) + Duration::from_millis(1), at(12) + Duration::from_micros(7_500)];
    let stored = [at(10), at(10) + Duration::from_millis(1), at(12) + Duration::from_millis(7)];
    for (i, ((tenant, muts, actor), when)) in batches.iter().zip(given).enumerate() {
        let r = s.append(tenant, muts, *actor, None, when).await.unwrap();
        assert_eq!(r, i as u64 + 1);
    }
    assert_eq!(s.head().await.unwrap(), 3);
    let records = s.read_since(0, 100).await.unwrap();
    assert_eq!(revisions(&records), vec![1, 2, 3]);
    for ((rec, (tenant, muts, actor)), when) in records.iter().zip(&batches).zip(stored) {
        assert_eq!(&rec.tenant, tenant);
        assert_eq!(&rec.mutations, muts);
        assert_eq!(rec.actor.as_deref(), *actor);
        assert_eq!(rec.committed_at, when, "revision {}", rec.revision);
    }
}

async fn read_since_order_and_limit(h: &Harness) {
    let s = &h.store;
    for i in 1..=10 {
        s.append(&t(if i % 2 == 0 { "a" } else { "b" }), &rename(&format!("n{i}")), None, None, at(i)).await.unwrap();
    }
    assert_eq!(revisions(&s.read_since(0, 3).await.unwrap()), vec![1, 2, 3]);
    assert_eq!(revisions(&s.read_since(3, 3).await.unwrap()), vec![4, 5, 6]);
    assert_eq!(revisions(&s.read_since(8, 100).await.unwrap()), vec![9, 10]);
    assert!(s.read_since(10, 5).await.unwrap().is_empty());
    assert!(s.read_since(99, 5).await.unwrap().is_empty());
    assert!(s.read_since(0, 0).await.unwrap().is_empty());
    let all = all_records(s).await;
    assert_eq!(revisions(&all), (1..=10).collect::<Vec<_>>());
    assert_eq!(all[4].mutations, rename("n5"));
    assert_eq!(all[4].tenant, t("b"));
}

async fn expected_head_conflict_writes_nothing(h: &Harness) {
    let s = &h.store;
    assert_eq!(s.append(&t("a"), &rename("one"), None, Some(0), at(0)).await.unwrap(), 1);
    let err = s.append(&t("a"), &rename("stale"), Some("alice"), Some(0), at(1)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { expected: 0, actual: 1 }), "{err:?}");
    assert_eq!(err.to_string(), "revision conflict: expected head revision `0`, but the store is at `1`");
    let err = s.append(&t("a"), &rename("future"), None, Some(7), at(2)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { expected: 7, actual: 1 }), "{err:?}");
    assert_eq!(s.head().await.unwrap(), 1);
    let records = s.read_since(0, 10).await.unwrap();
    assert_eq!(revisions(&records), vec![1]);
    assert_eq!(records[0].mutations, rename("one"));
    // The conflicts gave the store's write lock back at once: another
    // replica's store writes without waiting. (The conflict path rolls back
    // explicitly; before, it dropped the transaction and relied on sqlx
    // queueing the rollback, which this check did not catch failing.)
    let other = h.reopen().await;
    let (tenant, batch) = (t("a"), rename("elsewhere"));
    let elsewhere = other.append(&tenant, &batch, None, None, at(3));
    let written = tokio::time::timeout(std::time::Duration::from_secs(5), elsewhere).await;
    assert_eq!(written.expect("another store writes while this one is idle after its conflicts").unwrap(), 2);
    other.close().await;
    assert_eq!(s.append(&t("a"), &rename("two"), None, Some(2), at(4)).await.unwrap(), 3);
}

async fn concurrent_appends_are_gap_free(h: &Harness) {
    const TASKS: usize = 8;
    const PER_TASK: usize = 25;
    // Two independent instances (separate pools), as two replicas would have.
    let stores = [h.store.clone(), h.reopen().await];
    let mut handles = Vec::new();
    for task in 0..TASKS {
        let s = stores[task % 2].clone();
        handles.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for seq in 0..PER_TASK {
                let name = format!("{task}-{seq}");
                let r = s.append(&t(&format!("t{task}")), &rename(&name), None, None, at(seq as u64)).await.unwrap();
                got.push((r, task, name));
            }
            got
        }));
    }
    let mut written = Vec::new();
    for handle in handles {
        let got = handle.await.unwrap();
        // Each writer sees its own revisions increase.
        assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
        written.extend(got);
    }
    let n = (TASKS * PER_TASK) as u64;
    written.sort();
    assert_eq!(written.iter().map(|w| w.0).collect::<Vec<_>>(), (1..=n).collect::<Vec<_>>(), "gaps or duplicates");
    assert_eq!(h.store.head().await.unwrap(), n);
    assert_eq!(stores[1].head().await.unwrap(), n);
    let records = all_records(&stores[1]).await;
    assert_eq!(revisions(&records), (1..=n).collect::<Vec<_>>());
    for (rec, (r, task, name)) in records.iter().zip(&written) {
        assert_eq!(rec.revision, *r);
        assert_eq!(rec.tenant, t(&format!("t{task}")));
        assert_eq!(rec.mutations, rename(name), "revision {r} holds another writer's batch");
    }
    stores[1].close().await;
}

async fn checkpoint_round_trip(h: &Harness) {
    let s = &h.store;
    let create = [Mutation::CreateTenant { name: "T".into(), presets: vec![], defaults: true }];
    let config = demo_config("t", "T");
    assert!(config.exists() && !config.folders.is_empty());
    assert_eq!(s.append(&t("t"), &create, None, None, at(0)).await.unwrap(), 1);
    s.put_checkpoint(&t("t"), 1, &config, at(1)).await.unwrap();
    // Stored as the tenant file in JSON.
    let stored = h.checkpoint_text().await;
    let file: TenantFile = serde_json::from_str(&stored).unwrap();
    assert!(file == TenantFile::from_config(&config), "stored checkpoint is not the tenant file");
    let loaded = s.load_checkpoints().await.unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].0, t("t"));
    assert_eq!(loaded[0].1, 1);
    assert!(loaded[0].2 == config, "checkpoint does not round-trip");

    // A newer checkpoint replaces it; an older one is ignored.
    let renamed = config.apply_batch(&rename("T2")).unwrap();
    assert_eq!(s.append(&t("t"), &rename("T2"), None, None, at(2)).await.unwrap(), 2);
    s.put_checkpoint(&t("t"), 2, &renamed, at(3)).await.unwrap();
    s.put_checkpoint(&t("t"), 1, &config, at(4)).await.unwrap();
    let loaded = s.load_checkpoints().await.unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(loaded[0].1, 2);
    assert!(loaded[0].2 == renamed);

    // A second tenant; a checkpoint beyond the head is refused.
    let other = demo_config("u", "U");
    s.put_checkpoint(&t("u"), 2, &other, at(5)).await.unwrap();
    let err = s.put_checkpoint(&t("u"), 3, &other, at(6)).await.unwrap_err();
    assert!(matches!(err, StoreError::Other(_)), "{err:?}");
    let loaded = s.load_checkpoints().await.unwrap();
    assert_eq!(loaded.iter().map(|c| (c.0.clone(), c.1)).collect::<Vec<_>>(), vec![(t("t"), 2), (t("u"), 2)]);
    assert!(loaded[1].2 == other);
}

/// A checkpoint of megabytes (SQLite writes it in parts of 256 KiB, each in
/// a transaction of its own, and switches to it last): it round-trips, the
/// next one replaces it and leaves none of its parts behind, and parts an
/// interrupted write left behind are neither read nor kept.
async fn large_checkpoints_round_trip(h: &Harness) {
    use authzd::synth::{self, SynthParams};
    let s = &h.store;
    let params = SynthParams { persons: 2_000, metrics: 8_000, ..SynthParams::default() };
    let config = synth::tenant("t", &params).unwrap();
    let create = [Mutation::CreateTenant { name: "T".into(), presets: vec![], defaults: true }];
    for r in 1..=3 {
        assert_eq!(s.append(&t("t"), &create, None, None, at(r)).await.unwrap(), r);
    }
    s.put_checkpoint(&t("t"), 1, &config, at(4)).await.unwrap();
    let stored = h.checkpoint_text().await;
    assert!(stored.len() > 1 << 20, "the test tenant's checkpoint is only {} bytes", stored.len());
    let file: TenantFile = serde_json::from_str(&stored).unwrap();
    assert!(file == TenantFile::from_config(&config), "stored checkpoint is not the tenant file");
    let loaded = s.load_checkpoints().await.unwrap();
    assert_eq!(loaded.iter().map(|c| (c.0.clone(), c.1)).collect::<Vec<_>>(), vec![(t("t"), 1)]);
    assert!(loaded[0].2 == config, "a checkpoint in parts does not round-trip");
    if !h.is_postgres() {
        let parts = h.raw_text("SELECT CAST(COUNT(*) AS TEXT) FROM authzd_checkpoint_parts WHERE revision = 1").await;
        assert!(parts.parse::<usize>().unwrap() >= 4, "{parts} parts for {} bytes", stored.len());
        // An interrupted write of revision 3 left parts behind, one beyond
        // the count the next write of revision 3 makes.
        h.raw("INSERT INTO authzd_checkpoint_parts (tenant, revision, part, data) VALUES ('t', 3, 0, 'junk'), ('t', 3, 9999, 'junk')")
            .await;
        assert!(s.load_checkpoints().await.unwrap()[0].2 == config, "parts nobody switched to were read");
    }
    let renamed = config.apply_batch(&rename("T2")).unwrap();
    s.put_checkpoint(&t("t"), 3, &renamed, at(5)).await.unwrap();
    let loaded = s.load_checkpoints().await.unwrap();
    assert_eq!(loaded[0].1, 3);
    assert!(loaded[0].2 == renamed, "the newer checkpoint in parts does not round-trip");
    if !h.is_postgres() {
        let left = h.raw_text("SELECT CAST(COUNT(*) AS TEXT) FROM authzd_checkpoint_parts WHERE revision < 3").await;
        assert_eq!(left, "0", "the replaced checkpoint's parts are still stored");
    }
    // An older checkpoint changes nothing; the same revision again renews it.
    s.put_checkpoint(&t("t"), 1, &config, at(6)).await.unwrap();
    s.put_checkpoint(&t("t"), 3, &renamed, at(7)).await.unwrap();
    let loaded = s.load_checkpoints().await.unwrap();
    assert_eq!(loaded[0].1, 3);
    assert!(loaded[0].2 == renamed);
}

async fn compaction_keeps_what_checkpoints_need(h: &Harness) {
    let s = &h.store;
    // t1: 1, 2, 3   t2: 4, 5   t1: 6
    for (tenant, name) in [("t1", "a"), ("t1", "b"), ("t1", "c"), ("t2", "d"), ("t2", "e"), ("t1", "f")] {
        s.append(&t(tenant), &rename(name), None, None, at(0)).await.unwrap();
    }
    let c1 = demo_config("t1", "T1");
    let c2 = demo_config("t2", "T2");
    // No checkpoint at all: nothing can go.
    assert_eq!(s.compact(100, at(1)).await.unwrap(), 0);
    assert_eq!(revisions(&s.read_since(0, 100).await.unwrap()), vec![1, 2, 3, 4, 5, 6]);
    // t1 checkpointed at 3, t2 never: t2's record 4 is the oldest needed.
    s.put_checkpoint(&t("t1"), 3, &c1, at(1)).await.unwrap();
    assert_eq!(s.compact(100, at(1)).await.unwrap(), 3);
    assert_eq!(s.oldest_retained().await.unwrap(), 3);
    assert_eq!(revisions(&s.read_since(3, 100).await.unwrap()), vec![4, 5, 6]);
    // Reading from before the boundary is refused, not silently short.
    let err = s.read_since(0, 100).await.unwrap_err();
    assert!(matches!(err, StoreError::Compacted { after: 0, oldest_retained: 3 }), "{err:?}");
    // t2 checkpointed at 5: t1's record 6 is needed; `before` bounds it further.
    s.put_checkpoint(&t("t2"), 5, &c2, at(2)).await.unwrap();
    assert_eq!(s.compact(5, at(2)).await.unwrap(), 4);
    assert_eq!(revisions(&s.read_since(4, 100).await.unwrap()), vec![5, 6]);
    assert_eq!(s.compact(100, at(2)).await.unwrap(), 5);
    assert_eq!(revisions(&s.read_since(5, 100).await.unwrap()), vec![6]);
    // Never backwards, and the head survives.
    assert_eq!(s.compact(1, at(2)).await.unwrap(), 5);
    assert_eq!(s.head().await.unwrap(), 6);
    assert_eq!(s.append(&t("t1"), &rename("g"), None, Some(6), at(3)).await.unwrap(), 7);
    // Everything checkpointed: all may go.
    s.put_checkpoint(&t("t1"), 7, &c1, at(3)).await.unwrap();
    assert_eq!(s.compact(100, at(3)).await.unwrap(), 7);
    assert!(s.read_since(7, 100).await.unwrap().is_empty());
    assert_eq!(s.head().await.unwrap(), 7);
    assert_eq!(s.append(&t("t2"), &rename("h"), None, None, at(4)).await.unwrap(), 8);
}

/// What the retention job builds on: the newest revision committed before
/// an instant, the checkpoints' revisions without their configurations, and
/// a compaction that prunes lock events before a given instant and says
/// what it deleted.
async fn retention_primitives(h: &Harness) {
    let s = &h.store;
    // The times the writers give: t1: 1, 2   t2: 3 at 100 s, then `mid`,
    // then t1: 4 and a second lock event at 200 s (no sleeping in between).
    let (early, mid, late) = (at(100), at(150), at(200));
    assert_eq!(s.revision_before(late + Duration::from_secs(60)).await.unwrap(), 0, "nothing written yet");
    assert!(s.checkpoint_revisions().await.unwrap().is_empty());
    // A lock event at 0 s, then t1: 1, 2   t2: 3   — then, later, t1: 4.
    s.acquire_lock(&t("t1"), "Application/x", &p("alice"), Duration::from_secs(60), at(0)).await.unwrap();
    for (tenant, name) in [("t1", "a"), ("t1", "b"), ("t2", "c")] {
        s.append(&t(tenant), &rename(name), None, None, early).await.unwrap();
    }
    assert_eq!(s.append(&t("t1"), &rename("d"), None, None, late).await.unwrap(), 4);
    s.acquire_lock(&t("t1"), "Application/y", &p("bob"), Duration::from_secs(60), late).await.unwrap();
    assert_eq!(s.revision_before(mid).await.unwrap(), 3);
    assert_eq!(s.revision_before(late + Duration::from_secs(1)).await.unwrap(), 4);
    assert_eq!(s.revision_before(mid - Duration::from_secs(3_600)).await.unwrap(), 0);
    // Checkpoints: their revisions, by tenant, and only the latest of each.
    s.put_checkpoint(&t("t2"), 3, &demo_config("t2", "T2"), late).await.unwrap();
    s.put_checkpoint(&t("t1"), 1, &demo_config("t1", "T1"), late).await.unwrap();
    s.put_checkpoint(&t("t1"), 2, &demo_config("t1", "T1"), late).await.unwrap();
    assert_eq!(s.checkpoint_revisions().await.unwrap(), vec![(t("t1"), 2), (t("t2"), 3)]);
    // Compact what was committed before `mid`: records 1-3 (every one covered
    // by its tenant's checkpoint) and the lock event recorded before `mid`.
    let first = s.compact_until(s.revision_before(mid).await.unwrap() + 1, mid).await.unwrap();
    assert_eq!(first, Compaction { oldest_retained: 3, records: 3, lock_events: 1 });
    assert_eq!(s.oldest_retained().await.unwrap(), 3);
    assert_eq!(revisions(&s.read_since(3, 10).await.unwrap()), vec![4]);
    let left = s.read_lock_events(0, 10).await.unwrap();
    assert_eq!(left.iter().map(|e| (e.seq, e.lock.holder.as_str())).collect::<Vec<_>>(), vec![(2, "bob")]);
    // Idempotent: nothing more to delete.
    assert_eq!(s.compact_until(4, mid).await.unwrap(), Compaction { oldest_retained: 3, records: 0, lock_events: 0 });
    // Only retained records count.
    assert_eq!(s.revision_before(mid).await.unwrap(), 0);
    // Record 4 is after t1's checkpoint: kept whatever `before` says; the
    // newer lock event goes when the bound passes it; the head stays.
    let last = s.compact_until(100, late + Duration::from_secs(1)).await.unwrap();
    assert_eq!(last, Compaction { oldest_retained: 3, records: 0, lock_events: 1 });
    assert!(s.read_lock_events(0, 10).await.unwrap().is_empty());
    assert_eq!(s.lock_events_head().await.unwrap(), 2);
    assert_eq!(s.head().await.unwrap(), 4);
}

/// Replicas sharing a PostgreSQL database take turns running the retention
/// job: while one holds the compaction lock, another does not get it; once
/// it is dropped (even without any cleanup call) the next one does. SQLite
/// has one replica: always granted.
async fn one_replica_at_a_time_holds_the_compaction_lock(h: &Harness) {
    let other = h.reopen().await;
    let held = h.store.try_compaction_lock().await.unwrap();
    assert!(held.is_some(), "a free lock is granted");
    let second = other.try_compaction_lock().await.unwrap();
    if h.is_postgres() {
        assert!(second.is_none(), "another replica holds it");
        // The store stays usable meanwhile: compaction itself does not take this lock.
        other.compact(1, at(0)).await.unwrap();
        drop(held);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            if other.try_compaction_lock().await.unwrap().is_some() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the dropped lock was never released");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    } else {
        assert!(second.is_some(), "SQLite: one replica per file, always granted");
    }
    other.close().await;
}

/// A retention round gives the compaction lock back before it returns: the
/// next round, on any connection of any replica, gets it at once (a dropped
/// PostgreSQL transaction is rolled back only when its connection is next
/// used, so a round that merely dropped it left the lock held meanwhile).
async fn a_retention_round_leaves_the_compaction_lock_free(h: &Harness) {
    use authzd::replica::{Limits, Replica};
    let other = h.reopen().await;
    let replica = Replica::open(h.store.clone(), Limits::default()).await.unwrap();
    for round in 0..20 {
        let r = replica.enforce_retention(Duration::from_secs(3_600), at(round)).await.unwrap();
        assert!(r.ran, "round {round}: this replica's own last round still holds the lock");
        let lock = other.try_compaction_lock().await.unwrap();
        assert!(lock.is_some(), "round {round}: the lock is still held after the round returned");
        lock.unwrap().release().await;
    }
    other.close().await;
}

async fn corrupt_rows_name_the_revision(h: &Harness) {
    let s = &h.store;
    assert_eq!(s.append(&t("a"), &rename("fine"), None, None, at(0)).await.unwrap(), 1);
    h.raw(
        "INSERT INTO authzd_changelog (revision, tenant, mutations, actor, committed_at_ms) \
         VALUES (2, 'a', '[{\"no_such_mutation\":1}]', NULL, 0); \
         UPDATE authzd_meta SET head = 2 WHERE id = 1; \
         INSERT INTO authzd_checkpoints (tenant, revision, config, created_at_ms) VALUES ('a', 1, '{}', 0);",
    )
    .await;
    assert_eq!(revisions(&s.read_since(0, 1).await.unwrap()), vec![1]);
    let err = s.read_since(0, 10).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { revision: 2, .. }), "{err:?}");
    assert!(err.to_string().starts_with("corrupt store row at revision `2`"), "{err}");
    let err = s.load_checkpoints().await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { revision: 1, .. }), "{err:?}");
    assert!(err.to_string().contains("checkpoint of tenant `a`"), "{err}");
}

async fn locks(h: &Harness) {
    let s = &h.store;
    let app = "Application/billing";
    let idle = Duration::from_secs(60);
    let LockOutcome::Granted { token, since, expires_at, renewed, taken_over, .. } =
        s.acquire_lock(&t("a"), app, &p("alice"), idle, at(0)).await.unwrap()
    else {
        panic!("first acquire refused")
    };
    assert_eq!((since, expires_at, renewed, taken_over), (at(0), at(60), false, None));

    // Another person is refused, told who holds it and since when.
    let held = s.acquire_lock(&t("a"), app, &p("bob"), idle, at(10)).await.unwrap();
    assert_eq!(held, LockOutcome::Held { holder: p("alice"), since: at(0), expires_at: at(60) });
    // The same object in another tenant, or another object, is independent.
    assert!(matches!(
        s.acquire_lock(&t("b"), app, &p("bob"), idle, at(10)).await.unwrap(),
        LockOutcome::Granted { .. }
    ));

    // The holder re-acquiring renews: same token, same since, later expiry.
    let again = s.acquire_lock(&t("a"), app, &p("alice"), idle, at(20)).await.unwrap();
    assert_eq!(
        again,
        LockOutcome::Granted {
            token: token.clone(),
            since: at(0),
            expires_at: at(80),
            renewed: true,
            taken_over: None,
            events: Vec::new()
        }
    );
    assert_eq!(s.renew_lock(&token, at(30)).await.unwrap(), Some(at(90)));
    assert_eq!(s.renew_lock("no-such-token", at(30)).await.unwrap(), None);
    let live = s.list_locks(at(30)).await.unwrap();
    assert_eq!(live.len(), 2);
    assert_eq!((live[0].tenant.clone(), live[0].holder.clone(), live[0].expires_at), (t("a"), p("alice"), at(90)));

    // After the idle timeout another person takes it over, and learns whose lock expired.
    assert!(matches!(s.acquire_lock(&t("a"), app, &p("bob"), idle, at(89)).await.unwrap(), LockOutcome::Held { .. }));
    let LockOutcome::Granted { token: bob_token, since, expires_at, renewed, taken_over, .. } =
        s.acquire_lock(&t("a"), app, &p("bob"), idle, at(90)).await.unwrap()
    else {
        panic!("expired lock not taken over")
    };
    assert_ne!(bob_token, token);
    assert_eq!((since, expires_at, renewed), (at(90), at(150), false));
    let old = taken_over.expect("takeover reports the expired lock");
    assert_eq!(
        (old.tenant, old.object.as_str(), old.holder, old.since, old.expires_at),
        (t("a"), app, p("alice"), at(0), at(90))
    );
    // The old holder's token is dead.
    assert_eq!(s.renew_lock(&token, at(91)).await.unwrap(), None);
    assert_eq!(s.release_lock(&token, at(91)).await.unwrap(), None);

    // Release frees it for anyone.
    let released = s.release_lock(&bob_token, at(95)).await.unwrap().expect("release finds the lock").lock;
    assert_eq!((released.holder, released.object.as_str()), (p("bob"), app));
    assert_eq!(s.release_lock(&bob_token, at(96)).await.unwrap(), None);
    let LockOutcome::Granted { since, taken_over, .. } =
        s.acquire_lock(&t("a"), app, &p("carol"), idle, at(100)).await.unwrap()
    else {
        panic!("released lock not granted")
    };
    assert_eq!((since, taken_over), (at(100), None));

    // Expiry removes exactly the expired locks and reports them.
    s.acquire_lock(&t("a"), "SharedModule/m1", &p("dave"), Duration::from_secs(5), at(100)).await.unwrap();
    let expired = s.expire_locks(at(105)).await.unwrap();
    let mut who: Vec<_> =
        expired.iter().map(|e| (e.lock.tenant.as_str(), e.lock.object.as_str(), e.lock.holder.as_str())).collect();
    who.sort();
    assert_eq!(who, vec![("a", "SharedModule/m1", "dave"), ("b", app, "bob")]);
    let live = s.list_locks(at(105)).await.unwrap();
    assert_eq!(live.iter().map(|l| l.holder.as_str()).collect::<Vec<_>>(), vec!["carol"]);
    assert!(s.expire_locks(at(105)).await.unwrap().is_empty());
}

async fn concurrent_acquires_grant_one(h: &Harness) {
    let stores = [h.store.clone(), h.reopen().await];
    let mut handles = Vec::new();
    for i in 0..16 {
        let s = stores[i % 2].clone();
        handles.push(tokio::spawn(async move {
            s.acquire_lock(&t("a"), "DataTable/d1", &p(&format!("person{i}")), Duration::from_secs(60), at(0))
                .await
                .unwrap()
        }));
    }
    let mut granted = Vec::new();
    let mut holders = BTreeSet::new();
    for (i, handle) in handles.into_iter().enumerate() {
        match handle.await.unwrap() {
            LockOutcome::Granted { .. } => granted.push(format!("person{i}")),
            LockOutcome::Held { holder, .. } => {
                holders.insert(holder);
            }
        }
    }
    assert_eq!(granted.len(), 1, "granted to {granted:?}");
    assert!(holders.iter().all(|h| h.as_str() == granted[0]), "refusals name {holders:?}, winner {granted:?}");
    // One grant, one event: the refusals logged nothing.
    let events = stores[1].read_lock_events(0, 100).await.unwrap();
    assert_eq!(
        events.iter().map(|e| (e.seq, e.kind, e.lock.holder.as_str())).collect::<Vec<_>>(),
        vec![(1, LockEventKind::Acquired, granted[0].as_str())]
    );
    stores[1].close().await;
}

async fn lock_events(h: &Harness) {
    let s = &h.store;
    assert_eq!(s.lock_events_head().await.unwrap(), 0);
    assert!(s.read_lock_events(0, 10).await.unwrap().is_empty());
    let app = "Application/billing";
    let idle = Duration::from_secs(60);
    // An acquire logs one event; each operation returns the events it logged.
    let mut returned = Vec::new();
    let LockOutcome::Granted { token: alice, events, .. } =
        s.acquire_lock(&t("a"), app, &p("alice"), idle, at(0)).await.unwrap()
    else {
        panic!("first acquire refused")
    };
    returned.extend(events);
    // A refusal, a renewal by acquiring again, a renewal by token: none.
    assert!(matches!(s.acquire_lock(&t("a"), app, &p("bob"), idle, at(10)).await.unwrap(), LockOutcome::Held { .. }));
    assert!(matches!(
        s.acquire_lock(&t("a"), app, &p("alice"), idle, at(20)).await.unwrap(),
        LockOutcome::Granted { renewed: true, events, .. } if events.is_empty()
    ));
    assert_eq!(s.renew_lock(&alice, at(30)).await.unwrap(), Some(at(90)));
    assert_eq!(s.lock_events_head().await.unwrap(), 1);
    // A takeover logs the expiry of the old lock, then the acquire.
    let LockOutcome::Granted { token: bob, events, .. } =
        s.acquire_lock(&t("a"), app, &p("bob"), idle, at(90)).await.unwrap()
    else {
        panic!("expired lock not taken over")
    };
    returned.extend(events);
    // A release logs one event; releasing an unknown token none. (Released
    // two hours after the rest, so that the compaction below tells them apart.)
    let released_at = at(7_200);
    returned.push(s.release_lock(&bob, released_at).await.unwrap().expect("release finds the lock"));
    assert_eq!(s.release_lock(&bob, released_at).await.unwrap(), None);
    assert_eq!(s.release_lock(&alice, released_at).await.unwrap(), None);
    // Expiry logs one event per lock, once.
    let LockOutcome::Granted { events, .. } =
        s.acquire_lock(&t("b"), "SharedModule/m1", &p("dave"), Duration::from_secs(5), at(100)).await.unwrap()
    else {
        panic!("free lock refused")
    };
    returned.extend(events);
    let expired = s.expire_locks(at(105)).await.unwrap();
    assert_eq!(expired.len(), 1);
    returned.extend(expired);
    assert!(s.expire_locks(at(105)).await.unwrap().is_empty());

    let events = s.read_lock_events(0, 100).await.unwrap();
    // What the operations returned is what the log holds: same seqs, kinds, locks and times.
    assert_eq!(returned, events);
    let summary: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.seq,
                e.kind,
                e.lock.tenant.as_str(),
                e.lock.object.as_str(),
                e.lock.holder.as_str(),
                e.lock.since,
                e.lock.expires_at,
            )
        })
        .collect();
    use LockEventKind::{Acquired, Expired, Released};
    assert_eq!(
        summary,
        vec![
            (1, Acquired, "a", app, "alice", at(0), at(60)),
            (2, Expired, "a", app, "alice", at(0), at(90)),
            (3, Acquired, "a", app, "bob", at(90), at(150)),
            (4, Released, "a", app, "bob", at(90), at(150)),
            (5, Acquired, "b", "SharedModule/m1", "dave", at(100), at(105)),
            (6, Expired, "b", "SharedModule/m1", "dave", at(100), at(105)),
        ]
    );
    // When: the time the operation was given (`now`, or `at` for a release).
    assert_eq!(
        [events[0].at, events[1].at, events[2].at, events[3].at, events[4].at, events[5].at],
        [at(0), at(90), at(90), released_at, at(100), at(105)]
    );
    assert_eq!(s.lock_events_head().await.unwrap(), 6);
    // Paging.
    assert_eq!(s.read_lock_events(2, 2).await.unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(), vec![3, 4]);
    assert!(s.read_lock_events(6, 10).await.unwrap().is_empty());
    assert!(s.read_lock_events(0, 0).await.unwrap().is_empty());

    // Another instance (another replica) reads the same log.
    let other = h.reopen().await;
    assert_eq!(other.read_lock_events(0, 100).await.unwrap(), events);

    // Compaction at the release's time prunes the events older than the
    // retention (all but the release, which came two hours after them); the
    // head stays, numbering goes on.
    s.compact(0, released_at).await.unwrap();
    assert_eq!(s.read_lock_events(0, 100).await.unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4]);
    assert_eq!(s.lock_events_head().await.unwrap(), 6);
    let LockOutcome::Granted { .. } =
        other.acquire_lock(&t("a"), app, &p("carol"), idle, released_at + Duration::from_secs(1)).await.unwrap()
    else {
        panic!("free lock refused")
    };
    s.compact(100, released_at + Duration::from_secs(1)).await.unwrap();
    let left = s.read_lock_events(0, 100).await.unwrap();
    assert_eq!(
        left.iter().map(|e| (e.seq, e.kind, e.lock.holder.as_str())).collect::<Vec<_>>(),
        vec![(4, Released, "bob"), (7, Acquired, "carol")]
    );
    other.close().await;
}

/// A store written by a build with schema v1 (no lock-event log) gets the
/// log when a newer build opens it; its data and live locks are kept.
async fn schema_v1_is_upgraded(h: &Harness) {
    let s = &h.store;
    assert_eq!(s.append(&t("a"), &rename("one"), None, None, at(0)).await.unwrap(), 1);
    s.acquire_lock(&t("a"), "Application/x", &p("alice"), Duration::from_secs(60), at(0)).await.unwrap();
    h.raw("DROP TABLE authzd_lock_events; DROP TABLE authzd_lock_event_head; DELETE FROM authzd_schema_version WHERE version > 1;")
        .await;
    // SQLite's v3: checkpoints in parts.
    let latest = if h.is_postgres() {
        "2"
    } else {
        h.raw("DROP TABLE authzd_checkpoint_parts; ALTER TABLE authzd_checkpoints DROP COLUMN parts;").await;
        "3"
    };
    let upgraded = h.reopen().await;
    assert_eq!(h.raw_text("SELECT CAST(MAX(version) AS TEXT) FROM authzd_schema_version").await, latest);
    assert_eq!(upgraded.head().await.unwrap(), 1);
    assert_eq!(upgraded.list_locks(at(0)).await.unwrap().len(), 1);
    assert_eq!(upgraded.lock_events_head().await.unwrap(), 0);
    upgraded.acquire_lock(&t("a"), "Application/y", &p("bob"), Duration::from_secs(60), at(0)).await.unwrap();
    let events = upgraded.read_lock_events(0, 10).await.unwrap();
    assert_eq!(events.iter().map(|e| (e.seq, e.lock.holder.as_str())).collect::<Vec<_>>(), vec![(1, "bob")]);
    upgraded.close().await;
}

/// The event and the lock change commit together: when logging the event
/// fails, the lock change is rolled back too.
async fn lock_events_share_the_lock_transaction(h: &Harness) {
    let s = &h.store;
    let idle = Duration::from_secs(60);
    let LockOutcome::Granted { token, .. } =
        s.acquire_lock(&t("a"), "DataTable/d1", &p("alice"), idle, at(0)).await.unwrap()
    else {
        panic!("acquire refused")
    };
    assert_eq!(s.lock_events_head().await.unwrap(), 1);
    // Plant the row the next event would get: logging it fails.
    h.raw(
        "INSERT INTO authzd_lock_events (seq, tenant, object_key, holder, kind, since_ms, expires_at_ms, at_ms) \
         VALUES (2, 'x', 'DataTable/x', 'x', 'acquired', 0, 0, 0)",
    )
    .await;
    s.acquire_lock(&t("a"), "DataTable/d2", &p("bob"), idle, at(0)).await.unwrap_err();
    s.release_lock(&token, at(1)).await.unwrap_err();
    s.expire_locks(at(61)).await.unwrap_err();
    // Nothing changed: alice still holds d1, nobody d2, the head is where it was.
    let live = s.list_locks(at(0)).await.unwrap();
    assert_eq!(
        live.iter().map(|l| (l.object.as_str(), l.holder.as_str())).collect::<Vec<_>>(),
        vec![("DataTable/d1", "alice")]
    );
    assert_eq!(s.lock_events_head().await.unwrap(), 1);
    h.raw("DELETE FROM authzd_lock_events WHERE seq = 2").await;
    assert_eq!(s.release_lock(&token, at(1)).await.unwrap().map(|e| e.lock.holder), Some(p("alice")));
    let events = s.read_lock_events(0, 10).await.unwrap();
    assert_eq!(
        events.iter().map(|e| (e.seq, e.kind)).collect::<Vec<_>>(),
        vec![(1, LockEventKind::Acquired), (2, LockEventKind::Released)]
    );
}

/// Through a replica on a [`ManualClock`] set far from the wall clock, every
/// time the store records is that clock's: a batch's commit time (stored, and
/// told to the replica's observers), a checkpoint's, a lock's grant, expiry
/// and release, and their events. Retention judged by the same clock is
/// consistent with them: nothing goes while the records are younger than the
/// retention, and once the clock has moved past it the records and the lock
/// events recorded before the bound go, to the millisecond.
async fn the_replicas_clock_stamps_the_store(h: &Harness) {
    use authzd::replica::{Batch, Clock as _, Limits, LockRequest, ManualClock, Replica, WriteRequest};
    use std::sync::{Arc, Mutex};
    let s = &h.store;
    let t0 = at(0);
    let ms = Duration::from_millis;
    let clock = ManualClock::new(t0);
    let replica = Replica::open_with_clock(s.clone(), Limits::default(), Arc::new(clock.clone())).await.unwrap();
    let heard = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&heard);
    replica.on_record(move |a| seen.lock().unwrap().push((a.revision, a.committed_at)));
    let stored_ms = |w: SystemTime| w.duration_since(UNIX_EPOCH).unwrap().as_millis().to_string();

    // Batches: the import at t0, a rename 1.5 s later.
    let file = TenantFile::from_yaml(authzd::app::DEMO_TENANT_YAML).unwrap();
    let acme = file.tenant.id.clone();
    let import = WriteRequest {
        batch: Batch::Import {
            file: file.to_mutations().unwrap(),
            config: Box::new(file.to_config().unwrap()),
            replace: false,
        },
        ..WriteRequest::new(acme.clone(), Vec::new())
    };
    let imported = replica.write(import).await.unwrap().revision;
    // The import's checkpoint is written in the background: at t0 too, as the clock stands still.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.checkpoint_revisions().await.unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "the import's checkpoint was never written");
        tokio::time::sleep(ms(5)).await;
    }
    let checkpoint_time = "SELECT CAST(created_at_ms AS TEXT) FROM authzd_checkpoints WHERE tenant = 'acme'";
    assert_eq!(h.raw_text(checkpoint_time).await, stored_ms(t0));
    clock.advance(ms(1_500));
    let renamed = replica.write(WriteRequest::new(acme.clone(), rename("ACME 2"))).await.unwrap().revision;
    let committed = vec![(imported, t0), (renamed, t0 + ms(1_500))];
    let records = all_records(s).await;
    assert_eq!(records.iter().map(|r| (r.revision, r.committed_at)).collect::<Vec<_>>(), committed);
    assert_eq!(*heard.lock().unwrap(), committed, "the observers hear of the stored commit times");

    // Locks: granted at 1.5 s, released at 11.5 s; granted again for 5 s and expired at 16.5 s.
    let lock = |idle| LockRequest {
        tenant: &acme,
        person: "dz-developer",
        kind: "Application",
        id: "app-main-ivr",
        application: Some("Designer"),
        idle,
    };
    let LockOutcome::Granted { token, since, expires_at, events, .. } =
        replica.acquire_lock(lock(Duration::from_secs(60))).await.unwrap()
    else {
        panic!("lock refused")
    };
    assert_eq!((since, expires_at), (t0 + ms(1_500), t0 + ms(61_500)));
    assert_eq!(events.iter().map(|e| e.at).collect::<Vec<_>>(), vec![t0 + ms(1_500)]);
    clock.advance(ms(10_000));
    assert_eq!(replica.renew_lock(&token).await.unwrap(), t0 + ms(71_500));
    assert!(replica.release_lock(&token).await.unwrap().is_some());
    let LockOutcome::Granted { expires_at, .. } = replica.acquire_lock(lock(Duration::from_secs(5))).await.unwrap()
    else {
        panic!("released lock refused")
    };
    assert_eq!(expires_at, t0 + ms(16_500));
    clock.advance(ms(4_999));
    assert_eq!(replica.expire_locks().await.unwrap(), 0, "a lock lives until its idle timeout has passed");
    clock.advance(ms(1));
    assert_eq!(replica.expire_locks().await.unwrap(), 1);
    use LockEventKind::{Acquired, Expired, Released};
    let logged = s.read_lock_events(0, 10).await.unwrap();
    assert_eq!(
        logged.iter().map(|e| (e.seq, e.kind, e.at)).collect::<Vec<_>>(),
        vec![
            (1, Acquired, t0 + ms(1_500)),
            (2, Released, t0 + ms(11_500)),
            (3, Acquired, t0 + ms(11_500)),
            (4, Expired, t0 + ms(16_500)),
        ]
    );

    // Retention of an hour, by the same clock: nothing is that old yet...
    let keep = Duration::from_secs(3_600);
    let round = replica.enforce_retention(keep, clock.now()).await.unwrap();
    assert_eq!((round.cutoff, round.checkpoints, round.compaction.records, round.compaction.lock_events), (0, 0, 0, 0));
    // ...an hour later both batches are: the tenant is checkpointed at the
    // round's time and the changelog compacted up to the last batch; the lock
    // events recorded before 16.5 s go, the expiry at 16.5 s stays.
    clock.advance(keep);
    let round = replica.enforce_retention(keep, clock.now()).await.unwrap();
    assert_eq!((round.cutoff, round.checkpoints), (renamed, 1));
    assert_eq!(round.compaction, Compaction { oldest_retained: renamed, records: 2, lock_events: 3 });
    assert_eq!(h.raw_text(checkpoint_time).await, stored_ms(t0 + ms(16_500) + keep));
    assert_eq!(s.read_lock_events(0, 10).await.unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4]);
}

// ---------------------------------------------------------------- backend-specific

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reopen_keeps_data() {
    let h = open_sqlite().await;
    let s = &h.store;
    let config = demo_config("t", "T");
    s.append(
        &t("t"),
        &[Mutation::CreateTenant { name: "T".into(), presets: vec![], defaults: true }],
        Some("admin"),
        None,
        at(0),
    )
    .await
    .unwrap();
    s.append(&t("t"), &rename("T2"), None, None, at(0)).await.unwrap();
    s.put_checkpoint(&t("t"), 1, &config, at(0)).await.unwrap();
    let LockOutcome::Granted { token, .. } =
        s.acquire_lock(&t("t"), "Application/x", &p("alice"), Duration::from_secs(60), at(0)).await.unwrap()
    else {
        panic!("lock refused")
    };
    let before = s.read_since(0, 10).await.unwrap();
    s.close().await;

    // Reopen through the bare path this time.
    let path = h.url.trim_start_matches("sqlite://").to_owned();
    let reopened = AnyStore::open(&path).await.unwrap();
    assert!(matches!(reopened, AnyStore::Sqlite(_)));
    assert_eq!(reopened.head().await.unwrap(), 2);
    assert_eq!(reopened.read_since(0, 10).await.unwrap(), before);
    let loaded = reopened.load_checkpoints().await.unwrap();
    assert_eq!(loaded.len(), 1);
    assert!(loaded[0].2 == config);
    assert_eq!(reopened.renew_lock(&token, at(1)).await.unwrap(), Some(at(61)));
    assert_eq!(reopened.append(&t("t"), &rename("T3"), None, Some(2), at(1)).await.unwrap(), 3);

    // The file is in WAL mode.
    let mut c = sqlx::SqliteConnection::connect(&h.url).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut c).await.unwrap();
    assert_eq!(mode, "wal");
    c.close().await.unwrap();
    reopened.close().await;
}

#[tokio::test]
async fn sqlite_in_memory_works() {
    let s = AnyStore::open("sqlite::memory:").await.unwrap();
    assert_eq!(s.append(&t("a"), &rename("x"), None, None, at(0)).await.unwrap(), 1);
    assert_eq!(s.append(&t("a"), &rename("y"), None, Some(1), at(1)).await.unwrap(), 2);
    assert_eq!(revisions(&s.read_since(0, 10).await.unwrap()), vec![1, 2]);
    s.close().await;
}

#[tokio::test]
async fn open_rejects_unknown_schemes_and_hides_passwords() {
    let err = AnyStore::open("mysql://u:pw@localhost/db").await.unwrap_err();
    assert!(matches!(err, StoreError::Other(_)), "{err:?}");
    assert!(!err.to_string().contains("pw@"), "{err}");
    // Nothing listens on port 1: unavailable, URL named, password hidden.
    let err = AnyStore::open("postgres://postgres:s3cret@127.0.0.1:1/test").await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("postgres://postgres:***@127.0.0.1:1/test") && !msg.contains("s3cret"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_notify_delivers_revisions() {
    let h = open_postgres().await;
    let mut notices = h.store.subscribe().await.unwrap().expect("postgres subscribes");
    // An append from another instance (another replica) wakes this one.
    let other = h.reopen().await;
    let started = std::time::Instant::now();
    let r1 = other.append(&t("a"), &rename("x"), None, None, at(0)).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), notices.recv()).await.expect("no notification in 10 s");
    assert_eq!(got, Some(Notice::Revision(r1)));
    eprintln!("postgres notify latency {:?}", started.elapsed());
    let r2 = h.store.append(&t("a"), &rename("y"), None, None, at(1)).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), notices.recv()).await.expect("no notification in 10 s");
    assert_eq!(got, Some(Notice::Revision(r2)));
    // A lock change notifies the seq of its last event (a takeover: two events).
    let idle = Duration::from_secs(5);
    other.acquire_lock(&t("a"), "Application/x", &p("alice"), idle, at(0)).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), notices.recv()).await.expect("no notification in 10 s");
    assert_eq!(got, Some(Notice::LockEvent(1)));
    h.store.acquire_lock(&t("a"), "Application/x", &p("bob"), idle, at(10)).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), notices.recv()).await.expect("no notification in 10 s");
    assert_eq!(got, Some(Notice::LockEvent(3)));
    // A rejected append and a refused acquire notify nothing.
    assert!(other.append(&t("a"), &rename("z"), None, Some(0), at(12)).await.is_err());
    other.acquire_lock(&t("a"), "Application/x", &p("carol"), idle, at(11)).await.unwrap();
    // The next notice is the next append's: PostgreSQL delivers notifications
    // in commit order, so one sent by either of them would come before it.
    let r3 = h.store.append(&t("a"), &rename("w"), None, None, at(13)).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), notices.recv()).await.expect("no notification in 10 s");
    assert_eq!(got, Some(Notice::Revision(r3)), "the rejected append or the refused acquire notified");
    // SQLite has no notifications.
    let sqlite = open_sqlite().await;
    assert!(sqlite.store.subscribe().await.unwrap().is_none());
    sqlite.finish().await;
    drop(notices);
    other.close().await;
    h.finish().await;
}

/// PostgreSQL: a lock event's seq is taken under the counter row's lock,
/// held until commit, so an event that commits late is never overtaken by a
/// later seq (a tailer reading `seq > cursor` would skip it for good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lock_events_commit_in_seq_order() {
    let h = open_postgres().await;
    // A slow lock transaction: seq 1 taken and its event written, not committed.
    let mut slow = sqlx::PgConnection::connect(&h.url).await.unwrap();
    sqlx::raw_sql(
        "BEGIN; UPDATE authzd_lock_event_head SET seq = seq + 1 WHERE id = 1; \
         INSERT INTO authzd_lock_events (seq, tenant, object_key, holder, kind, since_ms, expires_at_ms, at_ms) \
         VALUES (1, 'a', 'Application/slow', 'alice', 'acquired', 0, 60000, 0);",
    )
    .execute(&mut slow)
    .await
    .unwrap();
    // Another lock change meanwhile waits for the counter row...
    let s = h.store.clone();
    let fast = tokio::spawn(async move {
        s.acquire_lock(&t("a"), "Application/fast", &p("bob"), Duration::from_secs(60), at(0)).await.unwrap()
    });
    // Waits until the other change is blocked on a row lock (an event, not a
    // delay): from then on it can only go on once the first commits.
    let mut watcher = sqlx::PgConnection::connect(&h.url).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&mut watcher)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(!fast.is_finished(), "a later lock change got its seq before the earlier one committed");
        assert!(std::time::Instant::now() < deadline, "the later lock change never waited for the counter row");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!fast.is_finished(), "a later lock change got its seq before the earlier one committed");
    assert!(h.store.read_lock_events(0, 10).await.unwrap().is_empty());
    // ...and gets seq 2 once the first commits: a reader never sees 2 without 1.
    sqlx::raw_sql("COMMIT").execute(&mut slow).await.unwrap();
    assert!(matches!(fast.await.unwrap(), LockOutcome::Granted { .. }));
    let events = h.store.read_lock_events(0, 10).await.unwrap();
    assert_eq!(
        events.iter().map(|e| (e.seq, e.lock.object.as_str())).collect::<Vec<_>>(),
        vec![(1, "Application/slow"), (2, "Application/fast")]
    );
    slow.close().await.unwrap();
    h.finish().await;
}

#[test]
fn with_database_replaces_the_path() {
    use support::with_database;
    assert_eq!(with_database("postgres://u@h:5432/test", "x"), "postgres://u@h:5432/x");
    assert_eq!(with_database("postgres://u@h/test?sslmode=disable", "x"), "postgres://u@h/x?sslmode=disable");
    assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
}
