//! One replica: the in-memory snapshot kept in step with the durable store.
//!
//! - **Start-up** ([`Replica::open`]): install every tenant's latest checkpoint,
//!   then replay the changelog from the oldest retained revision, skipping the
//!   records a checkpoint already covers. Each record is validated and
//!   installed at its revision like a fresh write; a record that no longer
//!   validates (a preset changed under it) is logged with its revision and
//!   skipped, so one bad batch never keeps a replica down.
//! - **Writes** ([`Replica::write`]): one writer at a time (an async mutex, held
//!   across validate → store append → install so batches apply in revision
//!   order). The batch is validated on a copy of the tenant (nothing changes on
//!   error), appended with the replica's revision as the expected head (another
//!   replica's write in between is a conflict: the replica catches up and
//!   retries), then installed at the revision the store gave it. Every
//!   [`Limits::checkpoint_every`] batches of a tenant (and after every import)
//!   a checkpoint is written so start-up does not replay history.
//! - **Tailing** ([`Replica::catch_up`]): applies what other replicas wrote,
//!   woken by PostgreSQL notifications or a poll. A replica that fell so far
//!   behind that a compaction removed records it had not read yet reloads
//!   the tenants concerned from their checkpoints, then replays the rest
//!   (see [`Replica::catch_up`]).
//! - **Reads at a revision** ([`Replica::wait_for`]): a bounded wait on a
//!   `watch` channel that every install publishes to.
//! - **Observers** ([`Replica::on_batch`], [`Replica::on_record`],
//!   [`Replica::on_lock`], [`Replica::on_reload`]): the watch service hears
//!   of every batch installed (in revision order, under the writer mutex), of
//!   every edit-lock change, and of every reload across a compaction (during
//!   which the batches it hears of are net differences, not changelog records).
//! - **Retention** ([`Replica::enforce_retention`], run every
//!   [`Retention::interval`] by [`Replica::run_retention`]): checkpoints for
//!   the tenants whose stored checkpoint is older than the retention, then a
//!   compaction of the changelog (and of the edit-lock event log) up to the
//!   newest revision committed before now − [`Retention::keep`]. Replicas on
//!   one PostgreSQL take turns ([`AnyStore::try_compaction_lock`]).
//! - **Lock events** (SPEC §4.4): every acquire, release and expiry is logged
//!   by the store in the same transaction as the lock change, with a dense
//!   `seq` in commit order. Each replica keeps a cursor in that log (its head
//!   at start-up: locks held before are known, not news; their release or
//!   expiry is reported) and reports every event once, in `seq` order:
//!   - an event made through this replica (its edit-lock operations,
//!     [`Replica::acquire_lock`], [`Replica::release_lock`],
//!     [`Replica::expire_locks`]) is reported as soon as the store answered,
//!     with the seq the store returned, when it is the next one after the
//!     cursor, which is the usual case;
//!   - otherwise (another replica's event before it is not read yet) it waits
//!     for the tailer, which is woken at once, reads the log up to it
//!     ([`Replica::sync_lock_events`]) and reports the events in order;
//!   - the tailer skips every event already reported, so nothing is reported
//!     twice, and another replica's acquire and release made between two
//!     tailing rounds are both reported (PostgreSQL notifies every lock change).
//!
//! The snapshot's own `write_lock` is a `std` mutex, which cannot be held across
//! the store's `.await`; the async writer mutex here plays its role for every
//! path that changes the snapshot (start-up, writes, tailing).

mod checkpoint;
mod clock;
mod error;
mod locks;
mod retention;
mod tail;
mod write;

use checkpoint::{Checkpointer, write_checkpoint};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{ReplicaError, ReplicaResult};
use locks::LockFeed;
pub use locks::{LockChange, LockRequest};
pub use retention::{
    DEFAULT_CHANGELOG_RETENTION, DEFAULT_COMPACTION_INTERVAL, Retention, RetentionRound, RetentionStats,
};
pub use tail::Reload;
pub use write::{Batch, Precondition, WriteOutcome, WritePhases, WriteRequest};

use crate::engine::actor;
use crate::engine::changes::{self, ChangeSet};
use crate::engine::{Reason, TenantView};
use crate::model::replace;
use crate::model::{self, Mutation, Revision, Target, TenantConfig, TenantId};
use crate::snapshot::{PageRetention, Snapshot, TenantState};
use crate::store::{
    AnyStore, ChangeRecord, Compaction, EncodedConfig, LOCK_EVENT_RETENTION, LockEvent, LockEventKind, LockInfo,
    Notice, Store, StoreError,
};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{Mutex, Notify, watch};

/// Bounds and cadences of a replica.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most mutations in one write batch (and items in one `CheckBatch`).
    pub max_batch: usize,
    /// Write a tenant checkpoint after this many of its batches.
    pub checkpoint_every: u64,
    /// Longest wait for `at_least_revision`.
    pub revision_wait: Duration,
    /// Work budget of a change report (objects examined), beyond which it is truncated.
    pub changes_budget: u64,
    /// Most persons in a change report.
    pub max_changes: usize,
    /// How long replaced states stay readable by listing continuations.
    pub page_retention: PageRetention,
}

impl Limits {
    /// Refuses a batch of `len` items (mutations, checks) over [`Limits::max_batch`];
    /// `field` names the request's list.
    pub fn check_batch(&self, field: &str, len: usize) -> ReplicaResult<()> {
        if len > self.max_batch {
            return Err(ReplicaError::invalid(
                field,
                format!("the batch has {len} {field}, more than the limit of {} per request", self.max_batch),
            ));
        }
        Ok(())
    }

    /// What a change report may cost.
    pub fn change_budget(&self) -> changes::Budget {
        changes::Budget { work: self.changes_budget, persons: self.max_changes }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch: 10_000,
            checkpoint_every: 100,
            revision_wait: Duration::from_secs(5),
            changes_budget: 5_000_000,
            max_changes: 10_000,
            page_retention: PageRetention::default(),
        }
    }
}

/// Called with every batch installed (the tenant's new state, the batch).
pub type BatchObserver = Box<dyn Fn(&Applied<'_>) + Send + Sync>;
/// Called with every changelog record this replica passes after start-up.
pub type RecordObserver = Box<dyn Fn(&Applied<'_>) + Send + Sync>;
/// Called with every edit-lock change this replica makes or sees.
pub type LockObserver = Box<dyn Fn(&LockChange) + Send + Sync>;
/// Called when a reload across a compaction starts and when it ends.
pub type ReloadObserver = Box<dyn Fn(&Reload) + Send + Sync>;

/// A changelog record as this replica passed it: installed (with the
/// tenant's new state) or skipped because it no longer validates. Raw change
/// streams need every record, skipped ones included, so that their revisions
/// have no gap.
#[derive(Debug, Clone, Copy)]
pub struct Applied<'a> {
    /// Revision of the batch.
    pub revision: Revision,
    /// Tenant of the batch.
    pub tenant: &'a TenantId,
    /// The batch.
    pub mutations: &'a [Mutation],
    /// Person id of the write's actor, if any.
    pub actor: Option<&'a str>,
    /// When the batch was committed: its record's
    /// [`committed_at`](ChangeRecord::committed_at) (for this replica's own
    /// writes, the time of its clock it gave the store, as stored).
    pub committed_at: SystemTime,
    /// The tenant's state after the batch; `None` when the batch was
    /// skipped, and for this replica's own write when the record observers
    /// hear of it at commit, before its view is compiled.
    pub state: Option<&'a TenantState>,
}

/// Who hears about applied batches and lock changes (the watch hub).
#[derive(Default)]
struct Observers {
    batches: Vec<BatchObserver>,
    records: Vec<RecordObserver>,
    locks: Vec<LockObserver>,
    reloads: Vec<ReloadObserver>,
}

impl std::fmt::Debug for Observers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observers")
            .field("batches", &self.batches.len())
            .field("records", &self.records.len())
            .field("locks", &self.locks.len())
            .field("reloads", &self.reloads.len())
            .finish()
    }
}

/// Writer-side bookkeeping, guarded by the writer mutex.
#[derive(Debug, Default)]
struct WriterState {
    /// Batches per tenant since its last checkpoint.
    since_checkpoint: HashMap<String, u64>,
}

/// A replica: snapshot + store + the single writer.
#[derive(Debug)]
pub struct Replica {
    snapshot: Arc<Snapshot>,
    store: AnyStore,
    writer: Mutex<WriterState>,
    revision: watch::Sender<Revision>,
    limits: Limits,
    observers: RwLock<Observers>,
    locks: std::sync::Mutex<LockFeed>,
    /// Wakes the tailer to read the lock-event log now.
    lock_wake: Notify,
    /// Counters of the retention job.
    retention: RetentionStats,
    /// Checkpoints waiting for the background writer.
    checkpoints: Checkpointer,
    /// The breakdown of the last writes (newest last).
    phases: std::sync::Mutex<VecDeque<WritePhases>>,
    /// Where "now" comes from.
    clock: Arc<dyn Clock>,
}

/// Runs CPU-heavy work that borrows the replica (validating and compiling
/// the views of batches it tails or loads, reverse lookups and large
/// listings) without stalling the async
/// workers: on a multi-threaded runtime the worker first hands its other
/// tasks to another thread (`block_in_place`), so checks keep being answered
/// meanwhile; on a current-thread runtime (some tests, the CLI) it runs inline.
pub(crate) fn cpu<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Runs CPU-heavy work (validating and compiling a tenant) off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> ReplicaResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ReplicaError::Internal(format!("worker failed: {e}")))
}

impl Replica {
    /// Opens a replica on `store`: loads every tenant, then marks the snapshot loaded.
    pub async fn open(store: AnyStore, limits: Limits) -> ReplicaResult<Replica> {
        Replica::open_with_clock(store, limits, Arc::new(SystemClock)).await
    }

    /// [`Replica::open`] with the time read from `clock`: edit locks (grant,
    /// renewal, release, expiry), retention, and the commit times of batches
    /// and checkpoints. The store reads no clock of its own (the replica
    /// passes this one's time to every store call that records or compares
    /// one), so tests move a [`ManualClock`] instead of sleeping.
    pub async fn open_with_clock(store: AnyStore, limits: Limits, clock: Arc<dyn Clock>) -> ReplicaResult<Replica> {
        let (revision, _) = watch::channel(0);
        let replica = Replica {
            snapshot: Arc::new(Snapshot::with_page_retention(limits.page_retention)),
            store: store.clone(),
            writer: Mutex::new(WriterState::default()),
            revision,
            limits,
            observers: RwLock::new(Observers::default()),
            locks: std::sync::Mutex::new(LockFeed::default()),
            lock_wake: Notify::new(),
            retention: RetentionStats::default(),
            checkpoints: Checkpointer::start(store.clone(), Arc::clone(&clock)),
            phases: std::sync::Mutex::new(VecDeque::new()),
            clock,
        };
        replica.load().await?;
        // Lock events logged before start-up are not news: the locks already
        // held are known, and only their release or expiry will be reported.
        replica.start_lock_feed().await?;
        Ok(replica)
    }

    /// The in-memory snapshot (decisions read it directly).
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The durable store.
    pub fn store(&self) -> &AnyStore {
        &self.store
    }

    /// The replica's clock (what edit locks, retention and commit times read,
    /// the store's included).
    pub fn clock(&self) -> &dyn Clock {
        &*self.clock
    }

    /// The replica's limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A tenant's current state, or the reason there is none (`NOT_LOADED`, `UNKNOWN_TENANT`).
    pub fn state(&self, tenant: &str) -> Result<TenantState, Reason> {
        if !self.snapshot.is_loaded() {
            return Err(Reason::NotLoaded);
        }
        self.snapshot.state(tenant).ok_or(Reason::UnknownTenant)
    }

    fn publish(&self) {
        self.revision.send_replace(self.snapshot.revision());
    }

    /// Calls `f` after every batch this replica installs (its writes and the
    /// batches it replays from the store after start-up), in revision order,
    /// with the tenant's new state (`state` is always set): how the watch hub
    /// learns of changes. A batch of this replica's own is heard of here after
    /// [`Replica::on_record`] heard of it.
    pub fn on_batch(&self, f: impl Fn(&Applied<'_>) + Send + Sync + 'static) {
        self.observers.write().unwrap_or_else(|e| e.into_inner()).batches.push(Box::new(f));
    }

    /// Calls `f` with every changelog record this replica passes after
    /// start-up, in revision order without gaps: the batches it installs (its
    /// writes, other replicas' writes) and the ones it skips because they no
    /// longer validate. Raw change streams are fed from here.
    ///
    /// A write of this replica's own is heard of as soon as the store
    /// committed it, before its view is compiled (`state` is `None` then;
    /// [`Replica::on_batch`] follows with the state): a raw change needs no
    /// view, and a reader that asks at its revision waits for the view.
    ///
    /// The one exception is a reload across a compaction (see
    /// [`Replica::on_reload`]): between its `Started` and `Finished` the
    /// batches are net differences and the records they stand for are skipped.
    pub fn on_record(&self, f: impl Fn(&Applied<'_>) + Send + Sync + 'static) {
        self.observers.write().unwrap_or_else(|e| e.into_inner()).records.push(Box::new(f));
    }

    /// Calls `f` with every edit-lock change (acquire, release, expiry), made
    /// through this replica or another one (read from the store's lock-event
    /// log as soon as PostgreSQL notifies it, else at the next tailing round):
    /// each once, in the order of the log.
    pub fn on_lock(&self, f: impl Fn(&LockChange) + Send + Sync + 'static) {
        self.observers.write().unwrap_or_else(|e| e.into_inner()).locks.push(Box::new(f));
    }

    /// Calls `f` when this replica starts reloading across a compaction
    /// ([`Reload::Started`], before any batch of the reload reaches the other
    /// observers) and when it is done ([`Reload::Finished`]), under the writer
    /// mutex like every batch. The watch service ends its raw change streams
    /// there with `ResumeRequired`: they cannot be given the records the
    /// replica skipped.
    pub fn on_reload(&self, f: impl Fn(&Reload) + Send + Sync + 'static) {
        self.observers.write().unwrap_or_else(|e| e.into_inner()).reloads.push(Box::new(f));
    }

    fn notify_reload(&self, reload: &Reload) {
        let observers = self.observers.read().unwrap_or_else(|e| e.into_inner());
        for f in &observers.reloads {
            f(reload);
        }
    }

    /// Tells the record observers of a changelog record (raw change streams).
    fn notify_record(&self, applied: &Applied<'_>) {
        let observers = self.observers.read().unwrap_or_else(|e| e.into_inner());
        for f in &observers.records {
            f(applied);
        }
    }

    /// Tells the batch observers of an installed batch (`applied.state` set).
    fn notify_installed(&self, applied: &Applied<'_>) {
        if applied.state.is_none() {
            return;
        }
        let observers = self.observers.read().unwrap_or_else(|e| e.into_inner());
        for f in &observers.batches {
            f(applied);
        }
    }

    /// A record passed by tailing, replay or a reload: its raw change, then
    /// (when installed) its new state.
    fn notify_batch(&self, applied: &Applied<'_>) {
        self.notify_record(applied);
        self.notify_installed(applied);
    }

    /// Waits, bounded by [`Limits::revision_wait`], until the replica has
    /// applied `revision`; `UNAVAILABLE` if it does not in time.
    pub async fn wait_for(&self, revision: Revision) -> ReplicaResult<()> {
        if revision == 0 || self.snapshot.revision() >= revision {
            return Ok(());
        }
        let mut rx = self.revision.subscribe();
        let reached = tokio::time::timeout(self.limits.revision_wait, rx.wait_for(|r| *r >= revision)).await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            _ => Err(ReplicaError::Unavailable(format!(
                "at_least_revision: this replica is at revision `{}` and did not reach `{revision}` within {} ms; retry",
                self.snapshot.revision(),
                self.limits.revision_wait.as_millis()
            ))),
        }
    }
}
