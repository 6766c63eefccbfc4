//! The PostgreSQL backend: many replicas sharing one database.
//!
//! Revision order is commit order (ARCHITECTURE habit 9): an append locks the
//! single counter row `authzd_meta` (`SELECT ... FOR UPDATE`), inserts the
//! record with head + 1, moves the head and notifies, and only then commits
//! and lets the next writer in. A tailer polling `revision > cursor` therefore
//! never sees revision N+1 before N. Writes are rare, so the serialization
//! costs nothing that matters.
//!
//! Lock events get their `seq` the same way, from the counter row
//! `authzd_lock_event_head`: a lock change takes that row lock last, after
//! the lock rows it changes, and holds it until commit (so no two lock
//! transactions wait on each other in a cycle, and lock changes never wait
//! for changelog appends).
//!
//! Every append sends `NOTIFY authzd_changes, '<revision>'` and every lock
//! change `NOTIFY authzd_lock_events, '<last seq>'` in its transaction
//! (delivered only on commit); [`PostgresStore::subscribe`] listens to both on
//! a dedicated connection so tailers wake at once and poll as a fallback.
//!
//! An outage answers quickly: a pooled connection is awaited at most
//! [`ACQUIRE_TIMEOUT`] (the pool retries refused connections meanwhile), and
//! opening the store or the listener gives up after [`CONNECT_TIMEOUT`]; both
//! end in [`StoreError::Unavailable`]. Nothing else is needed to recover: the
//! pool reconnects on the next call once the database is back.
//!
//! The schema lives in `migrations/postgres/*.sql`, embedded with
//! `include_str!` and applied at open in one transaction under a
//! transaction-scoped advisory lock, so replicas starting together apply it
//! once; versions are recorded in `authzd_schema_version`. (`sqlx::migrate!`
//! needs sqlx's `macros` feature, which the crate does not enable.) Requires
//! PostgreSQL 13 or newer (`gen_random_uuid()` for lock tokens).

use super::{
    COMPACTION_LOCK_KEY, ChangeRecord, Compaction, EncodedConfig, LOCK_EVENT_COLUMNS, LOCK_NOTIFY_CHANNEL, LockEvent,
    LockEventKind, LockEventRow, LockInfo, LockOutcome, LockRow, Migration, NOTIFY_CHANNEL, Store, StoreError,
    StoreResult, compaction_cutoff, db_error, decode_checkpoint, decode_lock_event, decode_record, duration_millis,
    encode_mutations, expiry_events, from_millis, granted_lock, lock_event_prune_bounds, redact_url, rev_from_db,
    rev_to_db, seq_from_db, seq_to_db, to_millis,
};
use crate::model::{Mutation, PersonId, Revision, TenantConfig, TenantId};
use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

/// The embedded schema, in order.
const MIGRATIONS: &[Migration] = &[
    (1, "initial", include_str!("migrations/postgres/0001_initial.sql")),
    (2, "lock_events", include_str!("migrations/postgres/0002_lock_events.sql")),
];

/// Key of the advisory lock that serializes schema migrations across replicas.
const MIGRATION_LOCK_KEY: i64 = 0x6175_7468_7a64_0001; // "authzd" 1

/// How long an operation waits for a pooled connection, opening one
/// included (refused connections are retried meanwhile): the most a read or
/// write waits during an outage before it fails as unavailable. Every query
/// takes milliseconds, so a healthy pool never comes near it.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long opening the store (its first connection) or the notification
/// listener may take before it fails as unavailable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Capacity of a subscriber's queue of notified revisions. A full queue drops
/// the newest notice, which is safe: the subscriber still has an older notice
/// to wake on, and reading after it returns every committed record.
const NOTIFY_QUEUE: usize = 256;

/// A store on a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    options: Arc<PgConnectOptions>,
    url: String,
}

/// A wake-up for tailers: what some replica just committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// An append committed this revision (`NOTIFY authzd_changes`).
    Revision(Revision),
    /// A lock change committed lock events up to this seq (`NOTIFY authzd_lock_events`).
    LockEvent(u64),
    /// The listening connection was lost and re-established: notices sent
    /// meanwhile are gone, so read both the changelog and the lock-event log.
    Reconnected,
}

/// What appends and lock changes of any replica notify, for waking tailers.
///
/// When the database is unreachable nothing arrives: tailers keep polling as
/// a fallback. Dropping this stops the listener.
#[derive(Debug)]
pub struct Notifications {
    rx: mpsc::Receiver<Notice>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Notifications {
    /// Notices sent on `rx` by something that is not a PostgreSQL listener
    /// (a follower's upstream stream).
    pub(crate) fn from_receiver(rx: mpsc::Receiver<Notice>) -> Self {
        Notifications { rx, task: None }
    }

    /// The next notice; `None` once the listener has stopped (the store was closed).
    pub async fn recv(&mut self) -> Option<Notice> {
        self.rx.recv().await
    }

    /// A notice if one is queued, without waiting.
    pub fn try_recv(&mut self) -> Option<Notice> {
        self.rx.try_recv().ok()
    }
}

impl Drop for Notifications {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

impl PostgresStore {
    /// Connects to the PostgreSQL database at `url` (`postgres://user:pass@host:port/db`)
    /// and brings its schema up to date.
    pub async fn open(url: &str) -> StoreResult<PostgresStore> {
        let safe_url = redact_url(url);
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Other(format!("bad postgres url `{safe_url}`: {e}")))?
            .application_name("authzd");
        // One direct connection first: it fails fast with the real cause (the
        // pool would retry until its timeout and report only that), and it
        // applies the schema before any other work.
        let mut conn = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
            .await
            .map_err(|_| StoreError::Unavailable {
                url: safe_url.clone(),
                message: format!("connecting timed out after {} s", CONNECT_TIMEOUT.as_secs()),
            })?
            .map_err(|e| db_error(&safe_url, e))?;
        migrate(&mut conn, &safe_url).await?;
        if let Err(e) = conn.close().await {
            tracing::debug!(url = %safe_url, error = %e, "closing the migration connection");
        }
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_lazy_with(options.clone());
        let store = PostgresStore { pool, options: Arc::new(options), url: safe_url };
        tracing::debug!(url = %store.url, "postgres store open");
        Ok(store)
    }

    /// Closes the connections; later calls fail as unavailable.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The URL the store was opened with (passwords removed).
    pub fn display_url(&self) -> &str {
        &self.url
    }

    /// Starts listening on `authzd_changes` and `authzd_lock_events` on a
    /// dedicated connection.
    ///
    /// Subscribe first, then read from the cursor: a notice only says "read
    /// now"; the records always come from [`Store::read_since`] and
    /// [`Store::read_lock_events`].
    pub async fn subscribe(&self) -> StoreResult<Notifications> {
        let e = self.err();
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(CONNECT_TIMEOUT)
            .connect_lazy_with((*self.options).clone());
        let mut listener = PgListener::connect_with(&listen_pool).await.map_err(&e)?;
        listener.listen_all([NOTIFY_CHANNEL, LOCK_NOTIFY_CHANNEL]).await.map_err(&e)?;
        let (tx, rx) = mpsc::channel(NOTIFY_QUEUE);
        let task = tokio::spawn(forward_notifications(listener, tx, self.url.clone()));
        Ok(Notifications { rx, task: Some(task) })
    }

    /// A transaction holding the advisory lock [`COMPACTION_LOCK_KEY`]
    /// (transaction-scoped: dropping the transaction rolls it back and
    /// releases the lock, even if the caller fails halfway), or `None` when
    /// another session holds it. See [`super::AnyStore::try_compaction_lock`].
    pub async fn try_compaction_lock(&self) -> StoreResult<Option<sqlx::Transaction<'static, sqlx::Postgres>>> {
        let e = self.err();
        let mut tx = self.pool.begin().await.map_err(&e)?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(COMPACTION_LOCK_KEY)
            .fetch_one(&mut *tx)
            .await
            .map_err(&e)?;
        Ok(got.then_some(tx))
    }

    fn err(&self) -> impl Fn(sqlx::Error) -> StoreError + '_ {
        move |e| db_error(&self.url, e)
    }

    /// Appends `events` to the lock-event log inside the caller's transaction
    /// and notifies them; the seq of the first.
    ///
    /// The seqs come from the counter row, whose row lock this takes (the
    /// caller's last lock: it already holds the lock rows it changed) and
    /// keeps until commit. A transaction that got seq N therefore commits
    /// before any other can get N + 1, so a tailer reading `seq > cursor`
    /// never skips an event that commits late, and a rolled-back transaction
    /// leaves no gap.
    async fn log_lock_events(
        &self,
        conn: &mut PgConnection,
        events: &[(LockEventKind, LockInfo)],
        at_ms: i64,
    ) -> StoreResult<u64> {
        let e = self.err();
        let n = i64::try_from(events.len()).unwrap_or(i64::MAX);
        let last: i64 =
            sqlx::query_scalar("UPDATE authzd_lock_event_head SET seq = seq + $1 WHERE id = 1 RETURNING seq")
                .bind(n)
                .fetch_one(&mut *conn)
                .await
                .map_err(&e)?;
        let last = seq_from_db(last)?;
        let first = last + 1 - events.len() as u64;
        for (i, (kind, l)) in events.iter().enumerate() {
            sqlx::query(&format!(
                "INSERT INTO authzd_lock_events ({LOCK_EVENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            ))
            .bind(seq_to_db(first + i as u64)?)
            .bind(l.tenant.as_str())
            .bind(&l.object)
            .bind(l.holder.as_str())
            .bind(kind.as_str())
            .bind(to_millis(l.since))
            .bind(to_millis(l.expires_at))
            .bind(at_ms)
            .execute(&mut *conn)
            .await
            .map_err(&e)?;
        }
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(LOCK_NOTIFY_CHANNEL)
            .bind(last.to_string())
            .execute(&mut *conn)
            .await
            .map_err(&e)?;
        Ok(first)
    }
}

/// Applies the embedded migrations the database lacks, in one transaction
/// under an advisory lock (replicas starting together apply them once).
async fn migrate(conn: &mut PgConnection, url: &str) -> StoreResult<()> {
    let e = |err| db_error(url, err);
    let mut tx = conn.begin().await.map_err(e)?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MIGRATION_LOCK_KEY).execute(&mut *tx).await.map_err(e)?;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS authzd_schema_version (
                version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at_ms BIGINT NOT NULL)",
    )
    .execute(&mut *tx)
    .await
    .map_err(e)?;
    let current: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM authzd_schema_version")
        .fetch_one(&mut *tx)
        .await
        .map_err(e)?;
    let latest = MIGRATIONS.last().map_or(0, |m| m.0);
    if current > latest {
        return Err(StoreError::Other(format!(
            "`{}`: store schema version `{current}` is newer than this build supports (`{latest}`): upgrade authzd",
            url
        )));
    }
    for &(version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(e)?;
        sqlx::query("INSERT INTO authzd_schema_version (version, name, applied_at_ms) VALUES ($1, $2, $3)")
            .bind(version)
            .bind(name)
            // The store's one wall-clock read: when this schema version was applied
            // to this database, for operators. Written at open, before any replica
            // (and its clock) exists, and compared with nothing.
            .bind(to_millis(SystemTime::now()))
            .execute(&mut *tx)
            .await
            .map_err(e)?;
        tracing::info!(url = %url, version, name, "applied store schema migration");
    }
    tx.commit().await.map_err(e)
}

/// Forwards notifications until the subscriber goes away or the listener's pool closes.
async fn forward_notifications(mut listener: PgListener, tx: mpsc::Sender<Notice>, url: String) {
    loop {
        let next = tokio::select! {
            _ = tx.closed() => return,
            next = listener.try_recv() => next,
        };
        let notice = match next {
            Ok(Some(n)) => {
                let number = n.payload().parse::<u64>();
                match (n.channel(), number) {
                    (NOTIFY_CHANNEL, Ok(revision)) => Notice::Revision(revision),
                    (LOCK_NOTIFY_CHANNEL, Ok(seq)) => Notice::LockEvent(seq),
                    (channel, _) => {
                        tracing::warn!(url, channel, payload = n.payload(), "ignoring a malformed notification");
                        continue;
                    }
                }
            }
            Ok(None) => {
                tracing::warn!(url, "change notification connection lost and re-established");
                Notice::Reconnected
            }
            Err(sqlx::Error::PoolClosed) => return,
            Err(err) => {
                tracing::warn!(url, error = %err, "change notification listener failed; retrying");
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                // Notices sent while the connection was down are lost: wake the tailer anyway.
                Notice::Reconnected
            }
        };
        // A full queue drops the notice: the subscriber has older ones to wake on.
        if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(notice) {
            return;
        }
    }
}

const LOCK_COLUMNS: &str = "tenant, object_key, holder, since_ms, expires_at_ms";

fn lock_row((tenant, object, holder, since_ms, expires_at_ms): (String, String, String, i64, i64)) -> LockInfo {
    LockRow { tenant, object, holder, since_ms, expires_at_ms }.into()
}

impl Store for PostgresStore {
    async fn head(&self) -> StoreResult<Revision> {
        let head: i64 = sqlx::query_scalar("SELECT head FROM authzd_meta WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(self.err())?;
        rev_from_db(head)
    }

    async fn append(
        &self,
        tenant: &TenantId,
        mutations: &[Mutation],
        actor: Option<&str>,
        expected_head: Option<Revision>,
        at: SystemTime,
    ) -> StoreResult<Revision> {
        let json = encode_mutations(mutations)?;
        let e = self.err();
        let mut tx = self.pool.begin().await.map_err(&e)?;
        // Every failure, a conflict included, rolls back at once: a dropped
        // transaction would keep its lock until the connection is next used.
        let result = async {
            // The row lock is held until commit: revisions are allocated in commit order.
            let head: i64 = sqlx::query_scalar("SELECT head FROM authzd_meta WHERE id = 1 FOR UPDATE")
                .fetch_one(&mut *tx)
                .await
                .map_err(&e)?;
            let head = rev_from_db(head)?;
            if let Some(expected) = expected_head {
                if expected != head {
                    return Err(StoreError::Conflict { expected, actual: head });
                }
            }
            let revision = head + 1;
            let rev = rev_to_db(revision)?;
            sqlx::query(
                "INSERT INTO authzd_changelog (revision, tenant, mutations, actor, committed_at_ms)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(rev)
            .bind(tenant.as_str())
            .bind(&json)
            .bind(actor)
            .bind(to_millis(at))
            .execute(&mut *tx)
            .await
            .map_err(&e)?;
            sqlx::query("UPDATE authzd_meta SET head = $1 WHERE id = 1")
                .bind(rev)
                .execute(&mut *tx)
                .await
                .map_err(&e)?;
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(NOTIFY_CHANNEL)
                .bind(revision.to_string())
                .execute(&mut *tx)
                .await
                .map_err(&e)?;
            Ok(revision)
        }
        .await;
        match result {
            Ok(revision) => {
                tx.commit().await.map_err(&e)?;
                Ok(revision)
            }
            Err(err) => super::rollback(tx, err).await,
        }
    }

    async fn read_since(&self, after: Revision, limit: u32) -> StoreResult<Vec<ChangeRecord>> {
        let e = self.err();
        // One snapshot for the compaction boundary and the rows.
        let mut tx = self.pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await.map_err(&e)?;
        let oldest: i64 = sqlx::query_scalar("SELECT oldest_retained FROM authzd_meta WHERE id = 1")
            .fetch_one(&mut *tx)
            .await
            .map_err(&e)?;
        let oldest_retained = rev_from_db(oldest)?;
        if after < oldest_retained {
            return Err(StoreError::Compacted { after, oldest_retained });
        }
        let rows: Vec<(i64, String, String, Option<String>, i64)> = sqlx::query_as(
            "SELECT revision, tenant, mutations, actor, committed_at_ms FROM authzd_changelog
             WHERE revision > $1 ORDER BY revision LIMIT $2",
        )
        .bind(rev_to_db(after)?)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(&e)?;
        tx.commit().await.map_err(&e)?;
        rows.into_iter().map(|(r, t, m, a, c)| decode_record(r, t, &m, a, c)).collect()
    }

    async fn oldest_retained(&self) -> StoreResult<Revision> {
        let oldest: i64 = sqlx::query_scalar("SELECT oldest_retained FROM authzd_meta WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(self.err())?;
        rev_from_db(oldest)
    }

    async fn put_encoded_checkpoint(
        &self,
        tenant: &TenantId,
        revision: Revision,
        config: &EncodedConfig,
        at: SystemTime,
    ) -> StoreResult<()> {
        let json = config.as_str();
        let e = self.err();
        let head = self.head().await?;
        if revision > head {
            return Err(StoreError::Other(format!(
                "checkpoint of tenant `{tenant}` at revision `{revision}` is beyond the head `{head}`"
            )));
        }
        sqlx::query(
            "INSERT INTO authzd_checkpoints (tenant, revision, config, created_at_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant) DO UPDATE SET
                 revision = excluded.revision, config = excluded.config, created_at_ms = excluded.created_at_ms
             WHERE excluded.revision >= authzd_checkpoints.revision",
        )
        .bind(tenant.as_str())
        .bind(rev_to_db(revision)?)
        .bind(json)
        .bind(to_millis(at))
        .execute(&self.pool)
        .await
        .map_err(&e)?;
        Ok(())
    }

    async fn load_checkpoints(&self) -> StoreResult<Vec<(TenantId, Revision, TenantConfig)>> {
        let rows: Vec<(String, i64, String)> =
            sqlx::query_as("SELECT tenant, revision, config FROM authzd_checkpoints ORDER BY tenant COLLATE \"C\"")
                .fetch_all(&self.pool)
                .await
                .map_err(self.err())?;
        rows.into_iter().map(|(t, r, c)| decode_checkpoint(t, r, &c)).collect()
    }

    async fn checkpoint_revisions(&self) -> StoreResult<Vec<(TenantId, Revision)>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT tenant, revision FROM authzd_checkpoints ORDER BY tenant COLLATE \"C\"")
                .fetch_all(&self.pool)
                .await
                .map_err(self.err())?;
        rows.into_iter().map(|(t, r)| Ok((TenantId(t), rev_from_db(r)?))).collect()
    }

    async fn revision_before(&self, time: SystemTime) -> StoreResult<Revision> {
        let newest: Option<i64> =
            sqlx::query_scalar("SELECT MAX(revision) FROM authzd_changelog WHERE committed_at_ms < $1")
                .bind(to_millis(time))
                .fetch_one(&self.pool)
                .await
                .map_err(self.err())?;
        newest.map_or(Ok(0), rev_from_db)
    }

    async fn compact_until(&self, before: Revision, lock_events_before: SystemTime) -> StoreResult<Compaction> {
        let e = self.err();
        let mut tx = self.pool.begin().await.map_err(&e)?;
        // Lock the counter row: no append and no other compaction runs meanwhile.
        let (head, oldest): (i64, i64) =
            sqlx::query_as("SELECT head, oldest_retained FROM authzd_meta WHERE id = 1 FOR UPDATE")
                .fetch_one(&mut *tx)
                .await
                .map_err(&e)?;
        let (head, oldest) = (rev_from_db(head)?, rev_from_db(oldest)?);
        // The lock-event log: old events, and all but the newest. No lock on its
        // counter row: only events far behind the head are deleted.
        let lock_head: i64 = sqlx::query_scalar("SELECT seq FROM authzd_lock_event_head WHERE id = 1")
            .fetch_one(&mut *tx)
            .await
            .map_err(&e)?;
        let (before_ms, up_to) = lock_event_prune_bounds(lock_events_before, seq_from_db(lock_head)?);
        let pruned = sqlx::query("DELETE FROM authzd_lock_events WHERE at_ms < $1 OR seq <= $2")
            .bind(before_ms)
            .bind(up_to)
            .execute(&mut *tx)
            .await
            .map_err(&e)?
            .rows_affected();
        if pruned > 0 {
            tracing::debug!(url = %self.url, pruned, "pruned the lock-event log");
        }
        // Checkpoints may move forward concurrently; that only makes this bound conservative.
        let needed: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(l.revision) FROM authzd_changelog l
             LEFT JOIN authzd_checkpoints c ON c.tenant = l.tenant
             WHERE c.revision IS NULL OR l.revision > c.revision",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(&e)?;
        let cutoff = compaction_cutoff(before, head, needed.map(rev_from_db).transpose()?);
        if cutoff <= oldest {
            tx.commit().await.map_err(&e)?;
            return Ok(Compaction { oldest_retained: oldest, records: 0, lock_events: pruned });
        }
        let cut = rev_to_db(cutoff)?;
        let deleted = sqlx::query("DELETE FROM authzd_changelog WHERE revision <= $1")
            .bind(cut)
            .execute(&mut *tx)
            .await
            .map_err(&e)?
            .rows_affected();
        sqlx::query("UPDATE authzd_meta SET oldest_retained = $1 WHERE id = 1")
            .bind(cut)
            .execute(&mut *tx)
            .await
            .map_err(&e)?;
        tx.commit().await.map_err(&e)?;
        tracing::debug!(url = %self.url, cutoff, deleted, "compacted changelog");
        Ok(Compaction { oldest_retained: cutoff, records: deleted, lock_events: pruned })
    }

    async fn acquire_lock(
        &self,
        tenant: &TenantId,
        object: &str,
        person: &PersonId,
        idle_timeout: Duration,
        now: SystemTime,
    ) -> StoreResult<LockOutcome> {
        let e = self.err();
        let now_ms = to_millis(now);
        let idle_ms = duration_millis(idle_timeout);
        let expires_ms = now_ms.saturating_add(idle_ms);
        let mut tx = self.pool.begin().await.map_err(&e)?;
        // The previous lock (row-locked until commit), to report a takeover.
        let prev: Option<(String, i64, i64)> = sqlx::query_as(
            "SELECT holder, since_ms, expires_at_ms FROM authzd_locks
             WHERE tenant = $1 AND object_key = $2 FOR UPDATE",
        )
        .bind(tenant.as_str())
        .bind(object)
        .fetch_optional(&mut *tx)
        .await
        .map_err(&e)?;
        // The conditional upsert is what decides: it is atomic even against a
        // concurrent first insert of the same key (and locks the row either way).
        let granted: Option<(String, i64, i64)> = sqlx::query_as(
            "INSERT INTO authzd_locks (tenant, object_key, holder, token, since_ms, expires_at_ms, idle_timeout_ms)
             VALUES ($1, $2, $3, gen_random_uuid()::text, $4, $5, $6)
             ON CONFLICT (tenant, object_key) DO UPDATE SET
                 holder = excluded.holder,
                 token = CASE WHEN authzd_locks.expires_at_ms > $4 THEN authzd_locks.token ELSE excluded.token END,
                 since_ms = CASE WHEN authzd_locks.expires_at_ms > $4 THEN authzd_locks.since_ms
                                 ELSE excluded.since_ms END,
                 expires_at_ms = excluded.expires_at_ms,
                 idle_timeout_ms = excluded.idle_timeout_ms
             WHERE authzd_locks.expires_at_ms <= $4 OR authzd_locks.holder = excluded.holder
             RETURNING token, since_ms, expires_at_ms",
        )
        .bind(tenant.as_str())
        .bind(object)
        .bind(person.as_str())
        .bind(now_ms)
        .bind(expires_ms)
        .bind(idle_ms)
        .fetch_optional(&mut *tx)
        .await
        .map_err(&e)?;
        let (outcome, events) = match granted {
            Some(granted) => granted_lock(tenant, object, person, prev, now_ms, granted),
            None => {
                let (holder, since_ms, expires_at_ms): (String, i64, i64) = sqlx::query_as(
                    "SELECT holder, since_ms, expires_at_ms FROM authzd_locks WHERE tenant = $1 AND object_key = $2",
                )
                .bind(tenant.as_str())
                .bind(object)
                .fetch_one(&mut *tx)
                .await
                .map_err(&e)?;
                let held = LockOutcome::Held {
                    holder: PersonId(holder),
                    since: from_millis(since_ms),
                    expires_at: from_millis(expires_at_ms),
                };
                (held, Vec::new())
            }
        };
        let logged = if events.is_empty() { Ok(0) } else { self.log_lock_events(&mut tx, &events, now_ms).await };
        let first = match logged {
            Ok(first) => first,
            Err(err) => return super::rollback(tx, err).await,
        };
        tx.commit().await.map_err(&e)?;
        Ok(match outcome {
            LockOutcome::Granted { token, since, expires_at, renewed, taken_over, .. } => {
                let events = super::numbered(first, events, from_millis(now_ms));
                LockOutcome::Granted { token, since, expires_at, renewed, taken_over, events }
            }
            held => held,
        })
    }

    async fn renew_lock(&self, token: &str, now: SystemTime) -> StoreResult<Option<SystemTime>> {
        let expires: Option<i64> = sqlx::query_scalar(
            "UPDATE authzd_locks SET expires_at_ms = $2 + idle_timeout_ms
             WHERE token = $1 AND expires_at_ms > $2 RETURNING expires_at_ms",
        )
        .bind(token)
        .bind(to_millis(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(self.err())?;
        Ok(expires.map(from_millis))
    }

    async fn release_lock(&self, token: &str, at: SystemTime) -> StoreResult<Option<LockEvent>> {
        let e = self.err();
        let mut tx = self.pool.begin().await.map_err(&e)?;
        let row: Option<(String, String, String, i64, i64)> =
            sqlx::query_as(&format!("DELETE FROM authzd_locks WHERE token = $1 RETURNING {LOCK_COLUMNS}"))
                .bind(token)
                .fetch_optional(&mut *tx)
                .await
                .map_err(&e)?;
        let Some(released) = row.map(lock_row) else {
            // Nothing to release: end the transaction now rather than on drop.
            tx.commit().await.map_err(&e)?;
            return Ok(None);
        };
        let events = vec![(LockEventKind::Released, released)];
        let at_ms = to_millis(at);
        let first = match self.log_lock_events(&mut tx, &events, at_ms).await {
            Ok(first) => first,
            Err(err) => return super::rollback(tx, err).await,
        };
        tx.commit().await.map_err(&e)?;
        Ok(super::numbered(first, events, from_millis(at_ms)).pop())
    }

    async fn expire_locks(&self, now: SystemTime) -> StoreResult<Vec<LockEvent>> {
        let e = self.err();
        let now_ms = to_millis(now);
        let mut tx = self.pool.begin().await.map_err(&e)?;
        // SKIP LOCKED: a lock another transaction holds the row of (a takeover,
        // a renewal, another replica expiring it) is left to that transaction,
        // so expiries are logged once and replicas never wait on each other here.
        let rows: Vec<(String, String, String, i64, i64)> = sqlx::query_as(&format!(
            "DELETE FROM authzd_locks WHERE (tenant, object_key) IN (
                 SELECT tenant, object_key FROM authzd_locks WHERE expires_at_ms <= $1 FOR UPDATE SKIP LOCKED)
             RETURNING {LOCK_COLUMNS}"
        ))
        .bind(now_ms)
        .fetch_all(&mut *tx)
        .await
        .map_err(&e)?;
        if rows.is_empty() {
            tx.commit().await.map_err(&e)?;
            return Ok(Vec::new());
        }
        let events = expiry_events(rows.into_iter().map(lock_row).collect());
        let first = match self.log_lock_events(&mut tx, &events, now_ms).await {
            Ok(first) => first,
            Err(err) => return super::rollback(tx, err).await,
        };
        tx.commit().await.map_err(&e)?;
        Ok(super::numbered(first, events, from_millis(now_ms)))
    }

    async fn lock_events_head(&self) -> StoreResult<u64> {
        let head: i64 = sqlx::query_scalar("SELECT seq FROM authzd_lock_event_head WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(self.err())?;
        seq_from_db(head)
    }

    async fn read_lock_events(&self, after: u64, limit: u32) -> StoreResult<Vec<LockEvent>> {
        let rows: Vec<LockEventRow> = sqlx::query_as(&format!(
            "SELECT {LOCK_EVENT_COLUMNS} FROM authzd_lock_events WHERE seq > $1 ORDER BY seq LIMIT $2"
        ))
        .bind(seq_to_db(after)?)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(self.err())?;
        rows.into_iter().map(decode_lock_event).collect()
    }

    async fn list_locks(&self, now: SystemTime) -> StoreResult<Vec<LockInfo>> {
        let rows: Vec<(String, String, String, i64, i64)> = sqlx::query_as(&format!(
            "SELECT {LOCK_COLUMNS} FROM authzd_locks WHERE expires_at_ms > $1 ORDER BY tenant COLLATE \"C\", object_key COLLATE \"C\""
        ))
        .bind(to_millis(now))
        .fetch_all(&self.pool)
        .await
        .map_err(self.err())?;
        Ok(rows.into_iter().map(lock_row).collect())
    }
}
