//! The durable store: an append-only changelog of write batches, periodic
//! per-tenant checkpoints, the shared table of Designer edit locks and the
//! log of their changes.
//!
//! The store is event-sourced (SPEC §6): every accepted write batch is one
//! [`ChangeRecord`] with the next revision of the store, global across tenants
//! and strictly increasing by one. The in-memory snapshot is rebuilt from the
//! store and kept current by tailing the changelog:
//!
//! 1. read [`Store::oldest_retained`] as `O`;
//! 2. [`Store::load_checkpoints`] (the latest checkpoint of each tenant);
//! 3. [`Store::read_since`]`(max(min checkpoint revision, O), ..)` page by page
//!    and apply each record whose revision is above its tenant's checkpoint.
//!
//! Compaction ([`Store::compact`]) only deletes records that no current
//! checkpoint needs, and checkpoints only move forward, so the order above is
//! safe; if a compaction overtakes a reader, `read_since` answers
//! [`StoreError::Compacted`] instead of silently skipping, and the reader
//! starts over.
//!
//! Revision order is commit order on both backends: SQLite serializes writers
//! (`BEGIN IMMEDIATE`), and PostgreSQL allocates each revision while holding
//! the row lock of a single counter row until commit, so a tailer polling
//! `revision > cursor` can never skip a row that commits late (ARCHITECTURE
//! habit 9). On PostgreSQL every append also sends
//! `NOTIFY authzd_changes, '<revision>'` in the same transaction, which
//! [`AnyStore::subscribe`] turns into wake-ups for tailers.
//!
//! **Edit locks** live in the store so they hold across replicas (SPEC §4.4),
//! and every acquire, release and expiry also appends a [`LockEvent`] to the
//! lock-event log, in the same transaction as the change to the lock table
//! (a refused acquire writes nothing; renewals are not events). Events get a
//! sequence number (`seq`) of their own, dense and in commit order on both
//! backends (PostgreSQL allocates it under the row lock of a counter row, like
//! revisions), so replicas tail the log with [`Store::read_lock_events`] and
//! report each event once, in order. PostgreSQL also sends
//! `NOTIFY authzd_lock_events, '<seq>'`, which wakes tailers through the same
//! [`Notifications`]. [`Store::compact`] prunes the log too: events older than
//! [`LOCK_EVENT_RETENTION`] or beyond the [`LOCK_EVENTS_KEPT`] newest go
//! ([`Store::compact_until`] takes the age bound as an argument).
//!
//! **Retention.** Nothing is deleted unless someone compacts. The server's
//! retention job (`crate::replica::Replica::enforce_retention`) finds the
//! newest revision committed longer ago than the retention
//! ([`Store::revision_before`]), writes a checkpoint for every tenant whose
//! stored one ([`Store::checkpoint_revisions`]) is older than that, and
//! compacts up to it. Replicas sharing a PostgreSQL database take turns
//! through [`AnyStore::try_compaction_lock`] (an advisory lock); compaction
//! itself is idempotent and serialized by the store either way.
//!
//! **Time.** The store reads no clock for what it records or compares: every
//! operation that does is given the time by its caller — a record's commit
//! time ([`Store::append`]), a checkpoint's ([`Store::put_checkpoint`]), a
//! lock's grant, renewal, release and expiry ([`Store::acquire_lock`],
//! [`Store::renew_lock`], [`Store::release_lock`], [`Store::expire_locks`],
//! [`Store::list_locks`]) and the lock-event retention's cut-off
//! ([`Store::compact`], [`Store::compact_until`]). The replica passes its
//! `crate::replica::Clock`, so one clock (the system's on a server, a manual
//! one in tests) stamps and judges everything. Two times are not a caller's:
//! the `applied_at_ms` of a schema migration (operators' record of when the
//! schema changed, written at open, compared with nothing) and, on a
//! follower, a lock event the upstream sent without a time (which no authzd
//! upstream does: it is stamped on receipt by the follower's stream task).
//!
//! Two backends implement one [`Store`] trait: [`SqliteStore`] (the default,
//! a single replica on an embedded file) and [`PostgresStore`] (many replicas
//! sharing one database). [`AnyStore`] picks one from a URL.
//!
//! Schema: each backend keeps its SQL in `src/store/migrations/<backend>/`,
//! embedded into the binary and applied at open inside one transaction that
//! records the version in `authzd_schema_version` (see [`sqlite`] and
//! [`postgres`] for why not `sqlx::migrate!`).

pub mod postgres;
pub mod sqlite;
pub mod upstream;

pub use postgres::{Notice, Notifications, PostgresStore};
pub use sqlite::SqliteStore;
pub use upstream::{FollowerLag, UpstreamSettings, UpstreamStore};

use crate::model::{Mutation, PersonId, Revision, TenantConfig, TenantId};
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// The PostgreSQL channel on which every append notifies its revision.
pub const NOTIFY_CHANNEL: &str = "authzd_changes";

/// The PostgreSQL channel on which every lock change notifies the `seq` of
/// its last lock event (a channel of its own: replicas of an older build,
/// which parse every notice on [`NOTIFY_CHANNEL`] as a revision, never see it).
pub const LOCK_NOTIFY_CHANNEL: &str = "authzd_lock_events";

/// [`Store::compact`] deletes lock events recorded longer ago than this.
pub const LOCK_EVENT_RETENTION: Duration = Duration::from_secs(3_600);

/// [`Store::compact`] keeps at most this many of the newest lock events.
pub const LOCK_EVENTS_KEPT: u64 = 100_000;

/// Key of the PostgreSQL advisory lock that lets one replica at a time run
/// the retention job ([`AnyStore::try_compaction_lock`]).
pub const COMPACTION_LOCK_KEY: i64 = 0x6175_7468_7a64_0002; // "authzd" 2

/// What one compaction deleted ([`Store::compact_until`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compaction {
    /// The oldest retained revision after the call: revisions up to it may be gone.
    pub oldest_retained: Revision,
    /// Changelog records this call deleted.
    pub records: u64,
    /// Lock events this call deleted.
    pub lock_events: u64,
}

/// One committed write batch of the changelog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeRecord {
    /// The revision the batch got (global across tenants).
    pub revision: Revision,
    /// The tenant the batch changes.
    pub tenant: TenantId,
    /// The batch, in order.
    pub mutations: Vec<Mutation>,
    /// Who made the change, when the write named an actor.
    pub actor: Option<String>,
    /// When the batch was committed: the time its writer passed to
    /// [`Store::append`] (the writing replica's clock), millisecond precision.
    pub committed_at: SystemTime,
}

/// The answer to [`Store::acquire_lock`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockOutcome {
    /// The caller holds the lock now.
    Granted {
        /// Opaque handle to renew or release the lock with.
        token: String,
        /// Since when the caller holds it (unchanged by a renewal).
        since: SystemTime,
        /// When it expires unless renewed.
        expires_at: SystemTime,
        /// True when the caller already held it and this acquire only renewed it
        /// (same token).
        renewed: bool,
        /// The expired lock of another person (or of the caller's own earlier
        /// session) that this acquire took over.
        taken_over: Option<LockInfo>,
        /// The events this acquire logged, in `seq` order: the takeover's
        /// expiry, then the acquire; none for a renewal.
        events: Vec<LockEvent>,
    },
    /// Another person holds the lock; the caller may go on read-only.
    Held {
        /// Who holds it.
        holder: PersonId,
        /// Since when.
        since: SystemTime,
        /// When it expires unless renewed.
        expires_at: SystemTime,
    },
}

/// A lock as stored: who holds which object of which tenant, since and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockInfo {
    /// The tenant of the object.
    pub tenant: TenantId,
    /// The locked object (`<type>/<id>` as the caller spells it).
    pub object: String,
    /// Who holds (or held) the lock.
    pub holder: PersonId,
    /// Since when.
    pub since: SystemTime,
    /// When it expires (or expired) unless renewed.
    pub expires_at: SystemTime,
}

/// What happened to a lock, as the lock-event log records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockEventKind {
    /// A person took the lock (a renewal by its holder is not an event).
    Acquired,
    /// The holder gave the lock up.
    Released,
    /// The lock passed its idle timeout (removed by [`Store::expire_locks`],
    /// or taken over by the next editor).
    Expired,
}

impl LockEventKind {
    /// The name stored in the log's `kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            LockEventKind::Acquired => "acquired",
            LockEventKind::Released => "released",
            LockEventKind::Expired => "expired",
        }
    }

    /// The kind named `s` (as [`as_str`](LockEventKind::as_str) spells it).
    pub fn parse(s: &str) -> Option<LockEventKind> {
        match s {
            "acquired" => Some(LockEventKind::Acquired),
            "released" => Some(LockEventKind::Released),
            "expired" => Some(LockEventKind::Expired),
            _ => None,
        }
    }
}

/// One entry of the lock-event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockEvent {
    /// Position in the log: dense, starting at 1, in commit order.
    pub seq: u64,
    /// What happened.
    pub kind: LockEventKind,
    /// The lock it happened to (for an expiry or a release: as it was last).
    pub lock: LockInfo,
    /// When it was recorded: the time the operation was given (`now` of an
    /// acquire or an expiry, `at` of a release; the replica's clock), or, on
    /// a follower, the time the upstream sent.
    pub at: SystemTime,
}

/// Why a store operation failed. Messages are lowercase.
#[derive(Debug, Error)]
pub enum StoreError {
    /// `expected_head` did not match the store's head; nothing was written.
    #[error("revision conflict: expected head revision `{expected}`, but the store is at `{actual}`")]
    Conflict {
        /// The head the writer expected.
        expected: Revision,
        /// The store's actual head.
        actual: Revision,
    },
    /// Records after `after` were compacted away: reload from the checkpoints.
    #[error("revisions after `{after}` are no longer all retained: records up to `{oldest_retained}` were compacted")]
    Compacted {
        /// The revision the reader asked to read after.
        after: Revision,
        /// Revisions up to this one may be gone.
        oldest_retained: Revision,
    },
    /// The database cannot be reached or answered with an I/O or connection error.
    #[error("store `{url}` is unavailable: {message}")]
    Unavailable {
        /// The store URL, password removed.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// A stored row does not deserialize.
    #[error("corrupt store row at revision `{revision}`: {message}")]
    Corrupt {
        /// The revision of the row (the checkpoint's revision for a checkpoint).
        revision: Revision,
        /// What is wrong with it.
        message: String,
    },
    /// Anything else (a database error, a value out of range, a bad URL).
    #[error("store error: {0}")]
    Other(String),
}

/// Result alias of the store layer.
pub type StoreResult<T> = Result<T, StoreError>;

/// The durable store of changelog, checkpoints and edit locks.
///
/// Implemented by [`SqliteStore`], [`PostgresStore`] and [`AnyStore`]; the
/// conformance suite in `tests/store.rs` runs the same cases on both backends.
pub trait Store: Send + Sync + 'static {
    /// The latest committed revision; 0 when nothing was ever written.
    fn head(&self) -> impl Future<Output = StoreResult<Revision>> + Send;

    /// Appends one batch for `tenant` and returns its revision (head + 1).
    ///
    /// With `expected_head`, the batch is written only if the head is that
    /// revision; otherwise [`StoreError::Conflict`] and nothing is written.
    /// The store does not validate the batch: the caller applies it first.
    /// `at` is recorded as the record's [`committed_at`](ChangeRecord::committed_at)
    /// (to the millisecond): the caller's clock, read just before the append.
    fn append(
        &self,
        tenant: &TenantId,
        mutations: &[Mutation],
        actor: Option<&str>,
        expected_head: Option<Revision>,
        at: SystemTime,
    ) -> impl Future<Output = StoreResult<Revision>> + Send;

    /// At most `limit` records with a revision above `after`, in revision order.
    ///
    /// [`StoreError::Compacted`] when `after` is below
    /// [`oldest_retained`](Store::oldest_retained): some records after it may be gone.
    fn read_since(&self, after: Revision, limit: u32) -> impl Future<Output = StoreResult<Vec<ChangeRecord>>> + Send;

    /// Revisions up to and including this one may have been compacted away (0: none).
    fn oldest_retained(&self) -> impl Future<Output = StoreResult<Revision>> + Send;

    /// Stores the configuration of `tenant` as of `revision` (its tenant file
    /// as JSON), written at `at` (the caller's clock; kept with the row for
    /// operators, compared with nothing). An older checkpoint than the stored
    /// one is ignored; the same revision again only renews its time.
    ///
    /// Encodes on the calling thread: the replica encodes on the blocking
    /// pool and calls [`Store::put_encoded_checkpoint`] instead.
    fn put_checkpoint(
        &self,
        tenant: &TenantId,
        revision: Revision,
        config: &TenantConfig,
        at: SystemTime,
    ) -> impl Future<Output = StoreResult<()>> + Send {
        async move { self.put_encoded_checkpoint(tenant, revision, &EncodedConfig::encode(config)?, at).await }
    }

    /// [`Store::put_checkpoint`] of a configuration already encoded.
    fn put_encoded_checkpoint(
        &self,
        tenant: &TenantId,
        revision: Revision,
        config: &EncodedConfig,
        at: SystemTime,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    /// The latest checkpoint of every tenant: (tenant, revision, configuration).
    fn load_checkpoints(&self) -> impl Future<Output = StoreResult<Vec<(TenantId, Revision, TenantConfig)>>> + Send;

    /// The revision of every tenant's latest checkpoint, by tenant (without
    /// reading the configurations: cheap enough to ask every retention round).
    fn checkpoint_revisions(&self) -> impl Future<Output = StoreResult<Vec<(TenantId, Revision)>>> + Send;

    /// The newest retained revision committed before `time` (by its
    /// `committed_at`, the time its writer gave [`Store::append`]); 0 when no
    /// retained record was.
    /// Records up to it are older than `time` (give or take the clock skew
    /// between the replicas that wrote them): what a retention ending at
    /// `time` compacts.
    fn revision_before(&self, time: SystemTime) -> impl Future<Output = StoreResult<Revision>> + Send;

    /// Deletes the changelog records below `before` that no checkpoint needs
    /// (a record is needed while its tenant has no checkpoint at or after it)
    /// and returns the new [`oldest_retained`](Store::oldest_retained).
    ///
    /// Also prunes the lock-event log: events recorded more than
    /// [`LOCK_EVENT_RETENTION`] before `now` (the caller's clock), and all but
    /// the [`LOCK_EVENTS_KEPT`] newest.
    fn compact(&self, before: Revision, now: SystemTime) -> impl Future<Output = StoreResult<Revision>> + Send {
        async move {
            let lock_events_before = now.checked_sub(LOCK_EVENT_RETENTION).unwrap_or(UNIX_EPOCH);
            self.compact_until(before, lock_events_before).await.map(|c| c.oldest_retained)
        }
    }

    /// [`compact`](Store::compact), pruning the lock events recorded before
    /// `lock_events_before` (and all but the [`LOCK_EVENTS_KEPT`] newest), and
    /// saying what it deleted. Idempotent; concurrent calls (other replicas)
    /// are serialized by the store.
    fn compact_until(
        &self,
        before: Revision,
        lock_events_before: SystemTime,
    ) -> impl Future<Output = StoreResult<Compaction>> + Send;

    /// Acquires (or, for its holder, renews) the edit lock of `object` in
    /// `tenant` for `person` until `now + idle_timeout`. An expired lock is
    /// taken over. One atomic conditional upsert: replicas sharing the store
    /// never both get it.
    ///
    /// In the same transaction it logs an `expired` event for a lock it took
    /// over, then an `acquired` event (none for a renewal or a refusal).
    fn acquire_lock(
        &self,
        tenant: &TenantId,
        object: &str,
        person: &PersonId,
        idle_timeout: Duration,
        now: SystemTime,
    ) -> impl Future<Output = StoreResult<LockOutcome>> + Send;

    /// Extends a live lock by its idle timeout from `now`; the new expiry, or
    /// `None` when the token is unknown or the lock has expired.
    fn renew_lock(&self, token: &str, now: SystemTime) -> impl Future<Output = StoreResult<Option<SystemTime>>> + Send;

    /// Releases a lock; the release event it logged (with the lock as it
    /// was), or `None` when the token is unknown.
    /// Logs a `released` event recorded at `at` (the caller's clock) in the
    /// same transaction.
    fn release_lock(&self, token: &str, at: SystemTime) -> impl Future<Output = StoreResult<Option<LockEvent>>> + Send;

    /// Removes every lock expired at `now` (`expires_at <= now`) and returns
    /// them, ordered by tenant and object; logs an `expired` event for each in
    /// the same transaction. Locks another transaction is changing right now
    /// are left to it (PostgreSQL: `SKIP LOCKED`), so each expiry is logged once.
    fn expire_locks(&self, now: SystemTime) -> impl Future<Output = StoreResult<Vec<LockEvent>>> + Send;

    /// The `seq` of the newest lock event ever logged; 0 when none was.
    fn lock_events_head(&self) -> impl Future<Output = StoreResult<u64>> + Send;

    /// At most `limit` lock events with a `seq` above `after`, in `seq` order.
    /// Events pruned by [`compact`](Store::compact) are simply absent (seqs
    /// are dense, so a reader sees the gap).
    fn read_lock_events(&self, after: u64, limit: u32) -> impl Future<Output = StoreResult<Vec<LockEvent>>> + Send;

    /// The locks live at `now`, ordered by tenant and object (to rebuild a
    /// replica's view of the locks at start).
    fn list_locks(&self, now: SystemTime) -> impl Future<Output = StoreResult<Vec<LockInfo>>> + Send;
}

/// A store chosen by URL at start.
#[derive(Debug, Clone)]
pub enum AnyStore {
    /// An embedded SQLite file.
    Sqlite(SqliteStore),
    /// A shared PostgreSQL database.
    Postgres(PostgresStore),
    /// Another authzd, followed over gRPC (a follower holds no database connection).
    Upstream(UpstreamStore),
}

impl AnyStore {
    /// Opens the store at `url` and brings its schema up to date.
    ///
    /// `postgres://` and `postgresql://` open PostgreSQL; `sqlite:` URLs
    /// (`sqlite://data/authzd.db`, `sqlite:///var/lib/authzd.db`,
    /// `sqlite::memory:`) and bare paths open SQLite, creating the file on
    /// first start (its directory must exist: see [`AnyStore::open_with`]).
    pub async fn open(url: &str) -> StoreResult<AnyStore> {
        AnyStore::open_with(url, false).await
    }

    /// [`AnyStore::open`]; an SQLite file's missing directory is created
    /// first when `create_dir` (`--create-store-dir`).
    pub async fn open_with(url: &str, create_dir: bool) -> StoreResult<AnyStore> {
        let lower = url.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            Ok(AnyStore::Postgres(PostgresStore::open(url).await?))
        } else if lower.starts_with("sqlite:") || !url.contains("://") {
            Ok(AnyStore::Sqlite(SqliteStore::open_with(url, create_dir).await?))
        } else {
            Err(StoreError::Other(format!(
                "unsupported store url `{}`: use `sqlite://<path>`, a file path, or `postgres://...`",
                redact_url(url)
            )))
        }
    }

    /// Wake-ups for tailers: the revision of every append and the last `seq`
    /// of every lock change, as PostgreSQL notifies them. `None` on SQLite,
    /// where tailers poll.
    pub async fn subscribe(&self) -> StoreResult<Option<Notifications>> {
        match self {
            AnyStore::Sqlite(_) => Ok(None),
            AnyStore::Postgres(p) => p.subscribe().await.map(Some),
            AnyStore::Upstream(u) => Ok(Some(u.subscribe())),
        }
    }

    /// Closes the connections (graceful shutdown); later calls fail as unavailable.
    pub async fn close(&self) {
        match self {
            AnyStore::Sqlite(s) => s.close().await,
            AnyStore::Postgres(p) => p.close().await,
            AnyStore::Upstream(u) => u.close(),
        }
    }

    /// The store URL with any password removed (for logs).
    pub fn display_url(&self) -> &str {
        match self {
            AnyStore::Sqlite(s) => s.display_url(),
            AnyStore::Postgres(p) => p.display_url(),
            AnyStore::Upstream(u) => u.display_url(),
        }
    }

    /// The right to run the retention job now: on PostgreSQL a
    /// transaction-scoped advisory lock ([`COMPACTION_LOCK_KEY`]) held by the
    /// returned guard until it is dropped, `None` while another replica holds
    /// it (that replica does the work; skip this round). On SQLite, which one
    /// replica owns, always granted.
    ///
    /// Only an optimization: compaction is idempotent and the store
    /// serializes it, so replicas that compact together are safe, merely
    /// wasteful (each would write the same checkpoints).
    pub async fn try_compaction_lock(&self) -> StoreResult<Option<CompactionLock>> {
        match self {
            AnyStore::Sqlite(_) => Ok(Some(CompactionLock { tx: None })),
            AnyStore::Postgres(p) => Ok(p.try_compaction_lock().await?.map(|tx| CompactionLock { tx: Some(tx) })),
            // The upstream compacts; a follower never does.
            AnyStore::Upstream(_) => Ok(None),
        }
    }
}

/// Held while this replica runs the retention job (see
/// [`AnyStore::try_compaction_lock`]); dropping it releases the lock.
pub struct CompactionLock {
    /// PostgreSQL: the open transaction holding the advisory lock (rolled
    /// back, which releases the lock, when dropped).
    tx: Option<sqlx::Transaction<'static, sqlx::Postgres>>,
}

impl CompactionLock {
    /// Releases the lock now. PostgreSQL: rolls the transaction back and
    /// waits for it. Dropping the lock releases it too, but only when its
    /// connection is next used (the pool queues the rollback), so until then
    /// every other round, this replica's next included, finds it held.
    pub async fn release(mut self) {
        if let Some(tx) = self.tx.take()
            && let Err(e) = tx.rollback().await
        {
            tracing::warn!(error = %e, "cannot release the compaction lock now; it goes when its connection is next used");
        }
    }
}

impl std::fmt::Debug for CompactionLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompactionLock").field("postgres", &self.tx.is_some()).finish()
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr) => {
        match $self {
            AnyStore::Sqlite($s) => $call.await,
            AnyStore::Postgres($s) => $call.await,
            AnyStore::Upstream($s) => $call.await,
        }
    };
}

impl Store for AnyStore {
    async fn head(&self) -> StoreResult<Revision> {
        delegate!(self, s => s.head())
    }
    async fn append(
        &self,
        tenant: &TenantId,
        mutations: &[Mutation],
        actor: Option<&str>,
        expected_head: Option<Revision>,
        at: SystemTime,
    ) -> StoreResult<Revision> {
        delegate!(self, s => s.append(tenant, mutations, actor, expected_head, at))
    }
    async fn read_since(&self, after: Revision, limit: u32) -> StoreResult<Vec<ChangeRecord>> {
        delegate!(self, s => s.read_since(after, limit))
    }
    async fn oldest_retained(&self) -> StoreResult<Revision> {
        delegate!(self, s => s.oldest_retained())
    }
    async fn put_encoded_checkpoint(
        &self,
        tenant: &TenantId,
        revision: Revision,
        config: &EncodedConfig,
        at: SystemTime,
    ) -> StoreResult<()> {
        delegate!(self, s => s.put_encoded_checkpoint(tenant, revision, config, at))
    }
    async fn load_checkpoints(&self) -> StoreResult<Vec<(TenantId, Revision, TenantConfig)>> {
        delegate!(self, s => s.load_checkpoints())
    }
    async fn checkpoint_revisions(&self) -> StoreResult<Vec<(TenantId, Revision)>> {
        delegate!(self, s => s.checkpoint_revisions())
    }
    async fn revision_before(&self, time: SystemTime) -> StoreResult<Revision> {
        delegate!(self, s => s.revision_before(time))
    }
    async fn compact_until(&self, before: Revision, lock_events_before: SystemTime) -> StoreResult<Compaction> {
        delegate!(self, s => s.compact_until(before, lock_events_before))
    }
    async fn acquire_lock(
        &self,
        tenant: &TenantId,
        object: &str,
        person: &PersonId,
        idle_timeout: Duration,
        now: SystemTime,
    ) -> StoreResult<LockOutcome> {
        delegate!(self, s => s.acquire_lock(tenant, object, person, idle_timeout, now))
    }
    async fn renew_lock(&self, token: &str, now: SystemTime) -> StoreResult<Option<SystemTime>> {
        delegate!(self, s => s.renew_lock(token, now))
    }
    async fn release_lock(&self, token: &str, at: SystemTime) -> StoreResult<Option<LockEvent>> {
        delegate!(self, s => s.release_lock(token, at))
    }
    async fn expire_locks(&self, now: SystemTime) -> StoreResult<Vec<LockEvent>> {
        delegate!(self, s => s.expire_locks(now))
    }
    async fn list_locks(&self, now: SystemTime) -> StoreResult<Vec<LockInfo>> {
        delegate!(self, s => s.list_locks(now))
    }
    async fn lock_events_head(&self) -> StoreResult<u64> {
        delegate!(self, s => s.lock_events_head())
    }
    async fn read_lock_events(&self, after: u64, limit: u32) -> StoreResult<Vec<LockEvent>> {
        delegate!(self, s => s.read_lock_events(after, limit))
    }
}

// ---- helpers shared by the backends ----

/// `url` with the password of its user-info part and any `password=` query
/// parameter replaced by `***`.
pub(crate) fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..].find(['/', '?', '#']).map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(rest_start + colon + 1..rest_start + at, "***");
            }
        }
    }
    if let Some(q) = out.find('?') {
        let (base, query) = out.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => kv.to_owned(),
            })
            .collect();
        out = format!("{base}{}", query.join("&"));
    }
    out
}

/// Maps a database driver error: connection and I/O problems are
/// [`StoreError::Unavailable`] (naming `url`), the rest [`StoreError::Other`].
pub(crate) fn db_error(url: &str, e: sqlx::Error) -> StoreError {
    use sqlx::Error as E;
    let unavailable = match &e {
        E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed | E::Protocol(_) => true,
        E::Database(d) => match d.code() {
            None => false,
            // SQLite result codes: busy (5), locked (6), I/O error (10), cannot open (14),
            // each with its extended codes (primary code in the low byte).
            Some(code) if d.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() => {
                code.parse::<i64>().is_ok_and(|c| matches!(c & 0xff, 5 | 6 | 10 | 14))
            }
            // PostgreSQL SQLSTATE: connection exceptions (08...), operator intervention such as
            // shutdown (57P0x), too many connections (53300).
            Some(code) => code.starts_with("08") || code.starts_with("57P") || code == "53300",
        },
        _ => false,
    };
    if unavailable {
        StoreError::Unavailable { url: url.to_owned(), message: e.to_string() }
    } else {
        StoreError::Other(format!("`{url}`: {e}"))
    }
}

/// Milliseconds since the Unix epoch (0 before it, saturating far in the future).
pub(crate) fn to_millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The instant `ms` milliseconds after the Unix epoch (negative values clamp to it).
pub(crate) fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A revision as the databases store it (signed 64-bit).
/// The highest revision compaction may delete up to: below `before`, never
/// past the head, and keeping every record some tenant still needs (`needed`:
/// the oldest record after its tenant's checkpoint, or of a tenant without one).
/// Rolls a failed transaction back now and returns its error. Dropping it
/// instead leaves the ROLLBACK queued until its connection is next used, and
/// the transaction's row locks held until then: a concurrent `FOR UPDATE SKIP
/// LOCKED` (another replica expiring locks) would skip rows nothing changed.
pub(crate) async fn rollback<DB: sqlx::Database, T>(tx: sqlx::Transaction<'_, DB>, err: StoreError) -> StoreResult<T> {
    if let Err(e) = tx.rollback().await {
        tracing::debug!(error = %e, "rolling back a failed store transaction failed (the connection is discarded)");
    }
    Err(err)
}

pub(crate) fn compaction_cutoff(before: Revision, head: Revision, needed: Option<Revision>) -> Revision {
    let needed_floor = needed.map_or(head, |n| n.saturating_sub(1));
    before.saturating_sub(1).min(head).min(needed_floor)
}

pub(crate) fn rev_to_db(r: Revision) -> StoreResult<i64> {
    i64::try_from(r).map_err(|_| StoreError::Other(format!("revision `{r}` is out of range")))
}

/// A stored revision; negative values mean a corrupt row.
pub(crate) fn rev_from_db(r: i64) -> StoreResult<Revision> {
    u64::try_from(r).map_err(|_| StoreError::Corrupt { revision: 0, message: format!("negative revision `{r}`") })
}

/// Decodes a changelog row.
pub(crate) fn decode_record(
    revision: i64,
    tenant: String,
    mutations: &str,
    actor: Option<String>,
    committed_at_ms: i64,
) -> StoreResult<ChangeRecord> {
    let revision = rev_from_db(revision)?;
    let mutations: Vec<Mutation> = serde_json::from_str(mutations).map_err(|e| StoreError::Corrupt {
        revision,
        message: format!("mutations of tenant `{tenant}` do not deserialize: {e}"),
    })?;
    Ok(ChangeRecord {
        revision,
        tenant: TenantId(tenant),
        mutations,
        actor,
        committed_at: from_millis(committed_at_ms),
    })
}

/// Encodes a batch as the JSON text stored in the changelog.
pub(crate) fn encode_mutations(mutations: &[Mutation]) -> StoreResult<String> {
    serde_json::to_string(mutations).map_err(|e| StoreError::Other(format!("cannot serialize the batch: {e}")))
}

/// Encodes a configuration as the JSON text of its tenant file.
/// A tenant's configuration encoded for a checkpoint row (its tenant file as
/// JSON). Encoding a large tenant takes tens of milliseconds: do it off the
/// async workers.
#[derive(Debug, Clone)]
pub struct EncodedConfig(String);

impl EncodedConfig {
    /// Encodes `config`.
    pub fn encode(config: &TenantConfig) -> StoreResult<EncodedConfig> {
        serde_json::to_string(&crate::model::TenantFile::from_config(config))
            .map(EncodedConfig)
            .map_err(|e| StoreError::Other(format!("cannot serialize the checkpoint of tenant `{}`: {e}", config.id)))
    }

    /// The encoded text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Decodes a checkpoint row back into a configuration.
pub(crate) fn decode_checkpoint(
    tenant: String,
    revision: i64,
    config: &str,
) -> StoreResult<(TenantId, Revision, TenantConfig)> {
    let revision = rev_from_db(revision)?;
    let corrupt = |message: String| StoreError::Corrupt { revision, message };
    let file: crate::model::TenantFile = serde_json::from_str(config)
        .map_err(|e| corrupt(format!("checkpoint of tenant `{tenant}` does not deserialize: {e}")))?;
    let config =
        file.to_config().map_err(|e| corrupt(format!("checkpoint of tenant `{tenant}` does not rebuild: {e}")))?;
    Ok((TenantId(tenant), revision, config))
}

/// A lock row as both backends read it.
pub(crate) struct LockRow {
    pub tenant: String,
    pub object: String,
    pub holder: String,
    pub since_ms: i64,
    pub expires_at_ms: i64,
}

impl From<LockRow> for LockInfo {
    fn from(r: LockRow) -> Self {
        LockInfo {
            tenant: TenantId(r.tenant),
            object: r.object,
            holder: PersonId(r.holder),
            since: from_millis(r.since_ms),
            expires_at: from_millis(r.expires_at_ms),
        }
    }
}

/// The events of one operation as logged: numbered from `first` (dense,
/// in order), recorded at `at`.
pub(crate) fn numbered(first: u64, events: Vec<(LockEventKind, LockInfo)>, at: SystemTime) -> Vec<LockEvent> {
    events.into_iter().zip(first..).map(|((kind, lock), seq)| LockEvent { seq, kind, lock, at }).collect()
}

/// A granted acquire: the answer, and the events it logs in its transaction
/// — the expiry of the lock it took over (`prev`: holder, since and expiry of
/// the row before, expired when `expires_at_ms <= now_ms`), then the acquire,
/// unless it only renewed the caller's live lock. `granted`: the token, since
/// and expiry the upsert returned.
pub(crate) fn granted_lock(
    tenant: &TenantId,
    object: &str,
    person: &PersonId,
    prev: Option<(String, i64, i64)>,
    now_ms: i64,
    (token, since_ms, expires_at_ms): (String, i64, i64),
) -> (LockOutcome, Vec<(LockEventKind, LockInfo)>) {
    let renewed = prev.as_ref().is_some_and(|p| p.2 > now_ms);
    let taken_over = prev.filter(|p| p.2 <= now_ms).map(|(holder, since_ms, expires_at_ms)| {
        LockInfo::from(LockRow { tenant: tenant.0.clone(), object: object.to_owned(), holder, since_ms, expires_at_ms })
    });
    let (since, expires_at) = (from_millis(since_ms), from_millis(expires_at_ms));
    let mut events = Vec::new();
    if let Some(old) = &taken_over {
        events.push((LockEventKind::Expired, old.clone()));
    }
    if !renewed {
        let lock =
            LockInfo { tenant: tenant.clone(), object: object.to_owned(), holder: person.clone(), since, expires_at };
        events.push((LockEventKind::Acquired, lock));
    }
    (LockOutcome::Granted { token, since, expires_at, renewed, taken_over, events: Vec::new() }, events)
}

/// The expiry events of the locks `expire_locks` removed, ordered by tenant and object.
pub(crate) fn expiry_events(mut locks: Vec<LockInfo>) -> Vec<(LockEventKind, LockInfo)> {
    locks.sort_by(|a, b| (&a.tenant.0, &a.object).cmp(&(&b.tenant.0, &b.object)));
    locks.into_iter().map(|l| (LockEventKind::Expired, l)).collect()
}

/// A seq as the databases store it (signed 64-bit).
pub(crate) fn seq_to_db(seq: u64) -> StoreResult<i64> {
    i64::try_from(seq).map_err(|_| StoreError::Other(format!("lock event seq `{seq}` is out of range")))
}

/// A stored seq; negative values mean a corrupt row.
pub(crate) fn seq_from_db(seq: i64) -> StoreResult<u64> {
    u64::try_from(seq)
        .map_err(|_| StoreError::Corrupt { revision: 0, message: format!("negative lock event seq `{seq}`") })
}

/// A lock-event row as both backends read it:
/// (seq, tenant, object_key, holder, kind, since_ms, expires_at_ms, at_ms).
pub(crate) type LockEventRow = (i64, String, String, String, String, i64, i64, i64);

/// The columns of [`LockEventRow`], in order.
pub(crate) const LOCK_EVENT_COLUMNS: &str = "seq, tenant, object_key, holder, kind, since_ms, expires_at_ms, at_ms";

/// Decodes a lock-event row.
pub(crate) fn decode_lock_event(
    (seq, tenant, object, holder, kind, since_ms, expires_at_ms, at_ms): LockEventRow,
) -> StoreResult<LockEvent> {
    let seq = seq_from_db(seq)?;
    let kind = LockEventKind::parse(&kind).ok_or_else(|| StoreError::Corrupt {
        revision: 0,
        message: format!("lock event `{seq}` has the unknown kind `{kind}`"),
    })?;
    Ok(LockEvent {
        seq,
        kind,
        lock: LockRow { tenant, object, holder, since_ms, expires_at_ms }.into(),
        at: from_millis(at_ms),
    })
}

/// What [`Store::compact_until`] prunes from the lock-event log, with the
/// log's head at `head`: `(before_ms, up_to_seq)`, to delete every event
/// with `at_ms < before_ms` (recorded before `before`) or `seq <= up_to_seq`
/// (beyond the [`LOCK_EVENTS_KEPT`] newest).
pub(crate) fn lock_event_prune_bounds(before: SystemTime, head: u64) -> (i64, i64) {
    let beyond = i64::try_from(head.saturating_sub(LOCK_EVENTS_KEPT)).unwrap_or(i64::MAX);
    (to_millis(before), beyond)
}

/// One embedded schema migration: (version, name, SQL).
pub(crate) type Migration = (i64, &'static str, &'static str);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_url("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(
            redact_url("postgres://u@h/db?password=x&sslmode=off"),
            "postgres://u@h/db?password=***&sslmode=off"
        );
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
        assert_eq!(redact_url("sqlite://a/b.db"), "sqlite://a/b.db");
    }

    #[test]
    fn millis_round_trip() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(from_millis(to_millis(t)), t);
        assert_eq!(to_millis(UNIX_EPOCH - Duration::from_secs(1)), 0);
    }
}
