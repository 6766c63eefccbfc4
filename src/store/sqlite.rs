//! The SQLite backend: one replica on an embedded file, nothing else to run.
//!
//! The file (and its directory) is created on first start and opened in WAL
//! mode, so readers never wait for the writer. Every write runs in a
//! `BEGIN IMMEDIATE` transaction: it takes SQLite's single write lock before
//! reading the head, so writers are serialized (revision order is commit
//! order) and never fail halfway with `SQLITE_BUSY` on a lock upgrade; other
//! connections and processes wait up to the busy timeout.
//!
//! The schema lives in `migrations/sqlite/*.sql`, embedded with
//! `include_str!` and applied at open in one `BEGIN IMMEDIATE` transaction
//! that records each version in `authzd_schema_version`. The crate's sqlx has
//! no `macros` feature, so `sqlx::migrate!` is not available, and this way a
//! binary carries its schema, applies it atomically, and refuses a file
//! written by a newer version.

use super::{
    ChangeRecord, Compaction, EncodedConfig, LOCK_EVENT_COLUMNS, LockEvent, LockEventKind, LockEventRow, LockInfo,
    LockOutcome, LockRow, Migration, Store, StoreError, StoreResult, compaction_cutoff, db_error, decode_checkpoint,
    decode_lock_event, decode_record, duration_millis, encode_mutations, expiry_events, from_millis, granted_lock,
    lock_event_prune_bounds, redact_url, rev_from_db, rev_to_db, seq_from_db, seq_to_db, to_millis,
};
use crate::model::{Mutation, PersonId, Revision, TenantConfig, TenantId};
use sqlx::SqliteConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The embedded schema, in order.
const MIGRATIONS: &[Migration] = &[
    (1, "initial", include_str!("migrations/sqlite/0001_initial.sql")),
    (2, "lock_events", include_str!("migrations/sqlite/0002_lock_events.sql")),
    (3, "checkpoint_parts", include_str!("migrations/sqlite/0003_checkpoint_parts.sql")),
];

/// Largest part of a checkpoint's text written in one transaction (see
/// `migrations/sqlite/0003_checkpoint_parts.sql`): about a millisecond of
/// SQLite's write lock.
const CHECKPOINT_PART: usize = 256 * 1024;

/// How often the WAL is copied back into the database file. SQLite's own
/// automatic checkpoint is off: it runs inside the COMMIT of whichever write
/// crosses 1,000 pages, so a write batch after a large tenant checkpoint paid
/// for copying megabytes. A passive WAL checkpoint on its own task takes no
/// write lock, so writes go on meanwhile.
const WAL_CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// How long a connection waits for another writer before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A store on an SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    url: String,
    /// This process's writers queue here, first come first served, before
    /// they ask SQLite for its write lock (see [`SqliteStore::begin_write`]).
    gate: Arc<tokio::sync::Mutex<()>>,
    /// Held by every handle; the WAL checkpoint task ends when the last is dropped.
    alive: Arc<()>,
}

/// A write transaction with its place at the write gate.
type WriteTx = (tokio::sync::OwnedMutexGuard<()>, sqlx::Transaction<'static, sqlx::Sqlite>);

impl SqliteStore {
    /// Opens the SQLite store at `url`: `sqlite://<path>`, `sqlite:<path>`,
    /// `sqlite::memory:` or a bare file path. The file is created when
    /// missing (a new, empty store); its directory must exist.
    pub async fn open(url: &str) -> StoreResult<SqliteStore> {
        SqliteStore::open_with(url, false).await
    }

    /// [`SqliteStore::open`], creating the file's directory (and its
    /// parents) first when `create_dir`.
    pub async fn open_with(url: &str, create_dir: bool) -> StoreResult<SqliteStore> {
        let safe_url = redact_url(url);
        let (options, path) = if url.get(..7).is_some_and(|p| p.eq_ignore_ascii_case("sqlite:")) {
            let rest = url[7..].trim_start_matches("//");
            let path = rest.split('?').next().unwrap_or_default();
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| StoreError::Other(format!("bad sqlite url `{safe_url}`: {e}")))?;
            (options, path.to_owned())
        } else {
            (SqliteConnectOptions::new().filename(url), url.to_owned())
        };
        let memory = path.is_empty() || path == ":memory:";
        if !memory {
            if let Some(dir) = PathBuf::from(&path).parent().filter(|d| !d.as_os_str().is_empty()) {
                if create_dir {
                    tokio::fs::create_dir_all(dir).await.map_err(|e| StoreError::Unavailable {
                        url: safe_url.clone(),
                        message: format!("cannot create directory `{}`: {e}", dir.display()),
                    })?;
                } else if !tokio::fs::metadata(dir).await.is_ok_and(|m| m.is_dir()) {
                    // A typo in the path would otherwise start a new, empty store that reports ready.
                    return Err(StoreError::Unavailable {
                        url: safe_url.clone(),
                        message: format!(
                            "the directory `{}` does not exist; create it, or start with --create-store-dir",
                            dir.display()
                        ),
                    });
                }
            }
        }
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .pragma("wal_autocheckpoint", "0")
            .foreign_keys(true);
        let mut pool_options = SqlitePoolOptions::new().max_connections(4).acquire_timeout(BUSY_TIMEOUT * 2);
        if memory {
            // An in-memory database lives as long as one of its connections.
            pool_options = pool_options.min_connections(1).idle_timeout(None).max_lifetime(None);
        }
        let pool = pool_options.connect_with(options).await.map_err(|e| db_error(&safe_url, e))?;
        let store = SqliteStore { pool, url: safe_url, gate: Arc::default(), alive: Arc::default() };
        store.migrate().await?;
        if !memory {
            tokio::spawn(wal_checkpoints(store.pool.clone(), Arc::downgrade(&store.alive), store.url.clone()));
        }
        tracing::debug!(url = %store.url, "sqlite store open");
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

    /// Begins a write transaction: first the place at this process's write
    /// gate (a fair queue, so a waiting write goes next as soon as the one
    /// before commits), then SQLite's write lock (`BEGIN IMMEDIATE`), which
    /// only another process can still hold. Without the gate, writers of one
    /// process waited for each other in SQLite's busy handler, which polls
    /// with growing sleeps (1, 2, 5, 10 … ms), and a write behind a long
    /// one could be passed over again and again.
    async fn begin_write(&self) -> StoreResult<WriteTx> {
        let gate = Arc::clone(&self.gate).lock_owned().await;
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(self.err())?;
        Ok((gate, tx))
    }

    /// Deletes the parts of `tenant`'s checkpoints older than `revision`, one
    /// part per transaction (freeing a large row's pages also takes time
    /// under the write lock).
    async fn delete_parts_before(&self, tenant: &TenantId, revision: i64) -> StoreResult<()> {
        let e = self.err();
        let old: Vec<(i64, i64)> =
            sqlx::query_as("SELECT revision, part FROM authzd_checkpoint_parts WHERE tenant = ?1 AND revision < ?2")
                .bind(tenant.as_str())
                .bind(revision)
                .fetch_all(&self.pool)
                .await
                .map_err(&e)?;
        for (r, part) in old {
            let (_gate, mut tx) = self.begin_write().await?;
            let deleted =
                sqlx::query("DELETE FROM authzd_checkpoint_parts WHERE tenant = ?1 AND revision = ?2 AND part = ?3")
                    .bind(tenant.as_str())
                    .bind(r)
                    .bind(part)
                    .execute(&mut *tx)
                    .await
                    .map_err(&e);
            match deleted {
                Ok(_) => tx.commit().await.map_err(&e)?,
                Err(err) => return super::rollback(tx, err).await,
            }
        }
        Ok(())
    }

    fn err(&self) -> impl Fn(sqlx::Error) -> StoreError + '_ {
        move |e| db_error(&self.url, e)
    }

    /// Appends `events` to the lock-event log inside the caller's
    /// `BEGIN IMMEDIATE` transaction (the single writer: seq order is commit
    /// order) and returns the seq of the first.
    async fn log_lock_events(
        &self,
        conn: &mut SqliteConnection,
        events: &[(LockEventKind, LockInfo)],
        at_ms: i64,
    ) -> StoreResult<u64> {
        let e = self.err();
        let n = i64::try_from(events.len()).unwrap_or(i64::MAX);
        let last: i64 =
            sqlx::query_scalar("UPDATE authzd_lock_event_head SET seq = seq + ?1 WHERE id = 1 RETURNING seq")
                .bind(n)
                .fetch_one(&mut *conn)
                .await
                .map_err(&e)?;
        let first = seq_from_db(last)? + 1 - events.len() as u64;
        for (i, (kind, l)) in events.iter().enumerate() {
            sqlx::query(&format!(
                "INSERT INTO authzd_lock_events ({LOCK_EVENT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
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
        Ok(first)
    }

    async fn migrate(&self) -> StoreResult<()> {
        let e = self.err();
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(&e)?;
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS authzd_schema_version (
                version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at_ms INTEGER NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .map_err(&e)?;
        let current: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM authzd_schema_version")
            .fetch_one(&mut *tx)
            .await
            .map_err(&e)?;
        let latest = MIGRATIONS.last().map_or(0, |m| m.0);
        if current > latest {
            return Err(StoreError::Other(format!(
                "`{}`: store schema version `{current}` is newer than this build supports (`{latest}`): upgrade authzd",
                self.url
            )));
        }
        for &(version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
            sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(&e)?;
            sqlx::query("INSERT INTO authzd_schema_version (version, name, applied_at_ms) VALUES (?1, ?2, ?3)")
                .bind(version)
                .bind(name)
                // The store's one wall-clock read: when this schema version was applied
                // to this database, for operators. Written at open, before any replica
                // (and its clock) exists, and compared with nothing.
                .bind(to_millis(SystemTime::now()))
                .execute(&mut *tx)
                .await
                .map_err(&e)?;
            tracing::info!(url = %self.url, version, name, "applied store schema migration");
        }
        tx.commit().await.map_err(&e)
    }
}

const LOCK_COLUMNS: &str = "tenant, object_key, holder, since_ms, expires_at_ms";

fn lock_row((tenant, object, holder, since_ms, expires_at_ms): (String, String, String, i64, i64)) -> LockInfo {
    LockRow { tenant, object, holder, since_ms, expires_at_ms }.into()
}

impl Store for SqliteStore {
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
        let (_gate, mut tx) = self.begin_write().await?;
        // Every failure, a conflict included, rolls back at once: a dropped
        // transaction would keep its lock until the connection is next used.
        let result = async {
            let head: i64 = sqlx::query_scalar("SELECT head FROM authzd_meta WHERE id = 1")
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
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .bind(rev)
            .bind(tenant.as_str())
            .bind(&json)
            .bind(actor)
            .bind(to_millis(at))
            .execute(&mut *tx)
            .await
            .map_err(&e)?;
            sqlx::query("UPDATE authzd_meta SET head = ?1 WHERE id = 1")
                .bind(rev)
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
        // One read transaction: the compaction boundary and the rows come from one snapshot.
        let mut tx = self.pool.begin().await.map_err(&e)?;
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
             WHERE revision > ?1 ORDER BY revision LIMIT ?2",
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
        let e = self.err();
        let rev = rev_to_db(revision)?;
        let at_ms = to_millis(at);
        // The head only grows: a checkpoint within it now stays within it.
        let head = self.head().await?;
        if revision > head {
            return Err(StoreError::Other(format!(
                "checkpoint of tenant `{tenant}` at revision `{revision}` is beyond the head `{head}`"
            )));
        }
        let stored: Option<i64> = sqlx::query_scalar("SELECT revision FROM authzd_checkpoints WHERE tenant = ?1")
            .bind(tenant.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(&e)?;
        if stored.is_some_and(|r| r >= rev) {
            // Nothing newer to store: a checkpoint at the same revision only
            // renews its time.
            let (_gate, mut tx) = self.begin_write().await?;
            let renewed =
                sqlx::query("UPDATE authzd_checkpoints SET created_at_ms = ?3 WHERE tenant = ?1 AND revision = ?2")
                    .bind(tenant.as_str())
                    .bind(rev)
                    .bind(at_ms)
                    .execute(&mut *tx)
                    .await
                    .map_err(&e);
            return match renewed {
                Ok(_) => tx.commit().await.map_err(&e),
                Err(err) => super::rollback(tx, err).await,
            };
        }
        // The parts first, each in a transaction of its own: a write batch
        // waits for one part at most (migrations/sqlite/0003_checkpoint_parts.sql).
        let parts = text_parts(config.as_str(), CHECKPOINT_PART);
        for (i, part) in parts.iter().enumerate() {
            let (_gate, mut tx) = self.begin_write().await?;
            let written = sqlx::query(
                "INSERT OR REPLACE INTO authzd_checkpoint_parts (tenant, revision, part, data) VALUES (?1, ?2, ?3, ?4)",
            )
            .bind(tenant.as_str())
            .bind(rev)
            .bind(i64::try_from(i).unwrap_or(i64::MAX))
            .bind(*part)
            .execute(&mut *tx)
            .await
            .map_err(&e);
            match written {
                Ok(_) => tx.commit().await.map_err(&e)?,
                Err(err) => return super::rollback(tx, err).await,
            }
        }
        // Then the switch, in one small transaction.
        let (_gate, mut tx) = self.begin_write().await?;
        let switched = sqlx::query(
            "INSERT INTO authzd_checkpoints (tenant, revision, config, parts, created_at_ms)
             VALUES (?1, ?2, '', ?3, ?4)
             ON CONFLICT (tenant) DO UPDATE SET
                 revision = excluded.revision, config = excluded.config, parts = excluded.parts,
                 created_at_ms = excluded.created_at_ms
             WHERE excluded.revision >= authzd_checkpoints.revision",
        )
        .bind(tenant.as_str())
        .bind(rev)
        .bind(i64::try_from(parts.len()).unwrap_or(i64::MAX))
        .bind(at_ms)
        .execute(&mut *tx)
        .await
        .map_err(&e);
        match switched {
            Ok(_) => tx.commit().await.map_err(&e)?,
            Err(err) => return super::rollback(tx, err).await,
        }
        drop(_gate);
        // Last, the parts of older checkpoints (and of any an interrupted
        // write left behind).
        self.delete_parts_before(tenant, rev).await
    }

    async fn load_checkpoints(&self) -> StoreResult<Vec<(TenantId, Revision, TenantConfig)>> {
        let e = self.err();
        // One read transaction: the rows and their parts from one snapshot.
        let mut tx = self.pool.begin().await.map_err(&e)?;
        let rows: Vec<(String, i64, String, i64)> =
            sqlx::query_as("SELECT tenant, revision, config, parts FROM authzd_checkpoints ORDER BY tenant")
                .fetch_all(&mut *tx)
                .await
                .map_err(&e)?;
        let mut out = Vec::with_capacity(rows.len());
        for (tenant, revision, mut config, parts) in rows {
            if parts > 0 {
                let texts: Vec<String> = sqlx::query_scalar(
                    "SELECT data FROM authzd_checkpoint_parts WHERE tenant = ?1 AND revision = ?2 AND part < ?3
                     ORDER BY part",
                )
                .bind(&tenant)
                .bind(revision)
                .bind(parts)
                .fetch_all(&mut *tx)
                .await
                .map_err(&e)?;
                if i64::try_from(texts.len()).ok() != Some(parts) {
                    return Err(StoreError::Corrupt {
                        revision: rev_from_db(revision)?,
                        message: format!("checkpoint of tenant `{tenant}` has {} of its {parts} parts", texts.len()),
                    });
                }
                config = texts.concat();
            }
            out.push(decode_checkpoint(tenant, revision, &config)?);
        }
        tx.commit().await.map_err(&e)?;
        Ok(out)
    }

    async fn checkpoint_revisions(&self) -> StoreResult<Vec<(TenantId, Revision)>> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT tenant, revision FROM authzd_checkpoints ORDER BY tenant")
                .fetch_all(&self.pool)
                .await
                .map_err(self.err())?;
        rows.into_iter().map(|(t, r)| Ok((TenantId(t), rev_from_db(r)?))).collect()
    }

    async fn revision_before(&self, time: SystemTime) -> StoreResult<Revision> {
        let newest: Option<i64> =
            sqlx::query_scalar("SELECT MAX(revision) FROM authzd_changelog WHERE committed_at_ms < ?1")
                .bind(to_millis(time))
                .fetch_one(&self.pool)
                .await
                .map_err(self.err())?;
        newest.map_or(Ok(0), rev_from_db)
    }

    async fn compact_until(&self, before: Revision, lock_events_before: SystemTime) -> StoreResult<Compaction> {
        let e = self.err();
        let (_gate, mut tx) = self.begin_write().await?;
        let (head, oldest): (i64, i64) = sqlx::query_as("SELECT head, oldest_retained FROM authzd_meta WHERE id = 1")
            .fetch_one(&mut *tx)
            .await
            .map_err(&e)?;
        let (head, oldest) = (rev_from_db(head)?, rev_from_db(oldest)?);
        // The lock-event log: old events, and all but the newest.
        let lock_head: i64 = sqlx::query_scalar("SELECT seq FROM authzd_lock_event_head WHERE id = 1")
            .fetch_one(&mut *tx)
            .await
            .map_err(&e)?;
        let (before_ms, up_to) = lock_event_prune_bounds(lock_events_before, seq_from_db(lock_head)?);
        let pruned = sqlx::query("DELETE FROM authzd_lock_events WHERE at_ms < ?1 OR seq <= ?2")
            .bind(before_ms)
            .bind(up_to)
            .execute(&mut *tx)
            .await
            .map_err(&e)?
            .rows_affected();
        if pruned > 0 {
            tracing::debug!(url = %self.url, pruned, "pruned the lock-event log");
        }
        // The oldest record some tenant still needs: one after its checkpoint, or any without one.
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
        let deleted = sqlx::query("DELETE FROM authzd_changelog WHERE revision <= ?1")
            .bind(cut)
            .execute(&mut *tx)
            .await
            .map_err(&e)?
            .rows_affected();
        sqlx::query("UPDATE authzd_meta SET oldest_retained = ?1 WHERE id = 1")
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
        let (_gate, mut tx) = self.begin_write().await?;
        let prev: Option<(String, i64, i64)> = sqlx::query_as(
            "SELECT holder, since_ms, expires_at_ms FROM authzd_locks WHERE tenant = ?1 AND object_key = ?2",
        )
        .bind(tenant.as_str())
        .bind(object)
        .fetch_optional(&mut *tx)
        .await
        .map_err(&e)?;
        let granted: Option<(String, i64, i64)> = sqlx::query_as(
            "INSERT INTO authzd_locks (tenant, object_key, holder, token, since_ms, expires_at_ms, idle_timeout_ms)
             VALUES (?1, ?2, ?3, lower(hex(randomblob(16))), ?4, ?5, ?6)
             ON CONFLICT (tenant, object_key) DO UPDATE SET
                 holder = excluded.holder,
                 token = CASE WHEN authzd_locks.expires_at_ms > ?4 THEN authzd_locks.token ELSE excluded.token END,
                 since_ms = CASE WHEN authzd_locks.expires_at_ms > ?4 THEN authzd_locks.since_ms
                                 ELSE excluded.since_ms END,
                 expires_at_ms = excluded.expires_at_ms,
                 idle_timeout_ms = excluded.idle_timeout_ms
             WHERE authzd_locks.expires_at_ms <= ?4 OR authzd_locks.holder = excluded.holder
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
                    "SELECT holder, since_ms, expires_at_ms FROM authzd_locks WHERE tenant = ?1 AND object_key = ?2",
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
        let now_ms = to_millis(now);
        // One statement, its own write transaction: it queues at the gate too.
        let _gate = self.gate.lock().await;
        let expires: Option<i64> = sqlx::query_scalar(
            "UPDATE authzd_locks SET expires_at_ms = ?2 + idle_timeout_ms
             WHERE token = ?1 AND expires_at_ms > ?2 RETURNING expires_at_ms",
        )
        .bind(token)
        .bind(now_ms)
        .fetch_optional(&self.pool)
        .await
        .map_err(self.err())?;
        Ok(expires.map(from_millis))
    }

    async fn release_lock(&self, token: &str, at: SystemTime) -> StoreResult<Option<LockEvent>> {
        let e = self.err();
        let (_gate, mut tx) = self.begin_write().await?;
        let row: Option<(String, String, String, i64, i64)> =
            sqlx::query_as(&format!("DELETE FROM authzd_locks WHERE token = ?1 RETURNING {LOCK_COLUMNS}"))
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
        let (_gate, mut tx) = self.begin_write().await?;
        let rows: Vec<(String, String, String, i64, i64)> =
            sqlx::query_as(&format!("DELETE FROM authzd_locks WHERE expires_at_ms <= ?1 RETURNING {LOCK_COLUMNS}"))
                .bind(now_ms)
                .fetch_all(&mut *tx)
                .await
                .map_err(&e)?;
        if rows.is_empty() {
            // Ends the write transaction now (dropping it would hold SQLite's
            // write lock until the deferred rollback runs).
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
            "SELECT {LOCK_EVENT_COLUMNS} FROM authzd_lock_events WHERE seq > ?1 ORDER BY seq LIMIT ?2"
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
            "SELECT {LOCK_COLUMNS} FROM authzd_locks WHERE expires_at_ms > ?1 ORDER BY tenant, object_key"
        ))
        .bind(to_millis(now))
        .fetch_all(&self.pool)
        .await
        .map_err(self.err())?;
        Ok(rows.into_iter().map(lock_row).collect())
    }
}

/// Splits `text` into parts of at most `max` bytes (never inside a UTF-8
/// character), in order; an empty text is one empty part.
fn text_parts(text: &str, max: usize) -> Vec<&str> {
    let mut parts = Vec::with_capacity(text.len() / max.max(1) + 1);
    let mut rest = text;
    loop {
        if rest.len() <= max {
            parts.push(rest);
            return parts;
        }
        let mut cut = max.max(1);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        if cut == 0 {
            // `max` is smaller than one character: the character alone.
            cut = rest.char_indices().nth(1).map_or(rest.len(), |(i, _)| i);
        }
        let (head, tail) = rest.split_at(cut);
        parts.push(head);
        if tail.is_empty() {
            // The last character alone was longer than `max`.
            return parts;
        }
        rest = tail;
    }
}

/// Copies the WAL back into the database file every [`WAL_CHECKPOINT_EVERY`]
/// (passive: it waits for no writer and no reader, and copies what it can),
/// until the store's last handle is dropped or its pool is closed.
async fn wal_checkpoints(pool: SqlitePool, alive: std::sync::Weak<()>, url: String) {
    loop {
        tokio::time::sleep(WAL_CHECKPOINT_EVERY).await;
        if alive.upgrade().is_none() || pool.is_closed() {
            return;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
            tracing::debug!(url = %url, error = %e, "WAL checkpoint failed (retried later)");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod part_tests {
    use super::text_parts;

    #[test]
    fn parts_rejoin_to_the_text_and_respect_characters() {
        for text in ["", "a", "abcdef", "aé€😀bc", "😀😀😀"] {
            for max in 1..8 {
                let parts = text_parts(text, max);
                assert_eq!(parts.concat(), text, "{text:?} in parts of {max}");
                for p in &parts {
                    assert!(p.len() <= max.max(p.chars().next().map_or(0, char::len_utf8)), "{p:?} over {max}");
                }
                assert!(text.is_empty() || parts.iter().all(|p| !p.is_empty()), "{parts:?}");
            }
        }
    }
}
