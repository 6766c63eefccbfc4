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
//!   - an event made through this replica ([`Replica::lock_changed`], called
//!     as soon as the store answered) is reported at once when it is the next
//!     one after the cursor, which is the usual case; its seq comes from the
//!     store handle ([`AnyStore::take_written_lock_event`]);
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

use super::changes::{self, ChangeSet};
use super::status::{ServiceError, ServiceResult};
use super::{actor, replace};
use crate::engine::{Reason, TenantView};
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

/// Changelog records read per page when replaying.
const REPLAY_PAGE: u32 = 1_000;
/// Lock events read per page when tailing the lock-event log.
const LOCK_EVENT_PAGE: u32 = 1_000;
/// How many of its own lock changes a replica keeps waiting for an earlier
/// event (beyond it, the oldest is reported at once), and how many changes of
/// unknown seq it remembers to drop their copy in the log.
const LOCK_BACKLOG: usize = 1_024;
/// How often a write retries after another replica wrote first.
const WRITE_ATTEMPTS: usize = 3;

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

/// Default [`Retention::keep`]: a week.
pub const DEFAULT_CHANGELOG_RETENTION: Duration = Duration::from_secs(7 * 24 * 3_600);
/// Default [`Retention::interval`]: hourly.
pub const DEFAULT_COMPACTION_INTERVAL: Duration = Duration::from_secs(3_600);

/// How long the changelog is kept, and how often the retention job runs
/// ([`Replica::run_retention`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Changelog records committed longer ago than this are compacted away
    /// (every tenant gets a checkpoint covering them first); edit-lock events
    /// too, kept at most [`LOCK_EVENT_RETENTION`]. Zero keeps everything: no
    /// job runs.
    pub keep: Duration,
    /// How often the job runs (first right after start-up); zero: never.
    pub interval: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { keep: DEFAULT_CHANGELOG_RETENTION, interval: DEFAULT_COMPACTION_INTERVAL }
    }
}

impl Retention {
    /// Whether the job runs at all.
    pub fn enabled(&self) -> bool {
        !self.keep.is_zero() && !self.interval.is_zero()
    }
}

/// What one round of [`Replica::enforce_retention`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionRound {
    /// False when another replica held the compaction lock: this round did
    /// nothing (that replica does the work).
    pub ran: bool,
    /// The newest revision committed before now − retention (0: none
    /// retained): what the round compacted up to, as far as checkpoints allow.
    pub cutoff: Revision,
    /// Checkpoints written first, for tenants whose stored checkpoint was
    /// older than the cutoff.
    pub checkpoints: usize,
    /// What the compaction deleted, and the oldest retained revision after it.
    pub compaction: Compaction,
}

/// Cumulative counters of the retention job, for metrics.
#[derive(Debug, Default)]
pub struct RetentionStats {
    /// Rounds this replica ran (not those it left to another replica).
    pub rounds: AtomicU64,
    /// Rounds that failed (store errors).
    pub failures: AtomicU64,
    /// Checkpoints the job wrote.
    pub checkpoints: AtomicU64,
    /// Changelog records it deleted.
    pub records: AtomicU64,
    /// Lock events it deleted.
    pub lock_events: AtomicU64,
    /// The oldest retained revision after its last round.
    pub oldest_retained: AtomicU64,
}

/// A reload across a compaction, as [`Replica::on_reload`] reports it.
///
/// A replica that fell behind a compaction cannot pass the records it missed
/// one by one: between `Started` and `Finished` the batches its observers
/// hear of are net differences (a reloaded tenant's whole change as one
/// batch at its checkpoint's revision) and the retained records replayed
/// among them, not the changelog. Raw change streams must end (their client
/// resumes from the store, or learns that its revision is too old).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// About to reload. Every record up to `from` was passed to the
    /// observers; the changelog was compacted up to `oldest_retained`
    /// (above `from`), so the records in between are gone.
    Started {
        /// The replica's revision: the last record passed.
        from: Revision,
        /// Records up to this revision may be gone.
        oldest_retained: Revision,
    },
    /// The reload is over (or failed halfway; tailing goes on from `to`).
    /// Revisions `from + 1 ..= to` were not passed as changelog records.
    Finished {
        /// The replica's revision before the reload.
        from: Revision,
        /// Its revision after.
        to: Revision,
    },
}

/// A condition a write needs on the current configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// The target must exist.
    Exists(Target),
    /// The target must not exist.
    Absent(Target),
}

/// What a write applies.
#[derive(Debug, Clone)]
pub enum Batch {
    /// A batch of mutations, as given.
    Mutations(Vec<Mutation>),
    /// A tenant file: its creating batch and the configuration it yields.
    /// With `replace`, an existing tenant is replaced by the smallest batch
    /// that turns its configuration into the file's.
    Import {
        /// The file's batch (`create_tenant` first).
        file: Vec<Mutation>,
        /// The configuration the file describes (already validated).
        config: Box<TenantConfig>,
        /// Replace an existing tenant instead of failing.
        replace: bool,
    },
}

/// A write, with its conditions and options.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    /// The tenant written.
    pub tenant: TenantId,
    /// What to apply.
    pub batch: Batch,
    /// Person on whose behalf the write is made (SPEC §6).
    pub actor: Option<String>,
    /// Refuse if the tenant changed after this revision.
    pub expected_revision: Option<Revision>,
    /// Further conditions.
    pub preconditions: Vec<Precondition>,
    /// Validate and report, store nothing.
    pub dry_run: bool,
    /// Report per-person changes of a real write too.
    pub include_changes: bool,
}

impl WriteRequest {
    /// A plain write of `mutations` to `tenant`.
    pub fn new(tenant: TenantId, mutations: Vec<Mutation>) -> Self {
        WriteRequest {
            tenant,
            batch: Batch::Mutations(mutations),
            actor: None,
            expected_revision: None,
            preconditions: Vec::new(),
            dry_run: false,
            include_changes: false,
        }
    }
}

/// The outcome of a write.
#[derive(Debug, Clone)]
pub struct WriteOutcome {
    /// The batch's revision; for a dry run, the revision it was evaluated at.
    pub revision: Revision,
    /// Per-person changes, when asked for (always for dry runs).
    pub changes: Option<ChangeSet>,
}

/// An edit-lock change (SPEC §4.4: every acquire, release and expiry is a change event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockChange {
    /// A person took the lock (or renewed it by acquiring again).
    Acquired(LockInfo),
    /// The holder gave the lock up.
    Released(LockInfo),
    /// The lock passed its idle timeout (removed, or taken over by the next editor).
    Expired(LockInfo),
}

/// Called with every batch installed (the tenant's new state, the batch).
pub type BatchObserver = Box<dyn Fn(&TenantState, &[Mutation]) + Send + Sync>;
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
    /// When the batch was committed (for this replica's own writes: when the
    /// store answered, within milliseconds of the stored time).
    pub committed_at: SystemTime,
    /// The tenant's state after the batch; `None` when the batch was skipped.
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

impl LockChange {
    /// The kind of event and the lock it is about.
    pub fn parts(&self) -> (LockEventKind, &LockInfo) {
        match self {
            LockChange::Acquired(l) => (LockEventKind::Acquired, l),
            LockChange::Released(l) => (LockEventKind::Released, l),
            LockChange::Expired(l) => (LockEventKind::Expired, l),
        }
    }

    /// The change a lock-event log entry records.
    pub fn from_event(e: LockEvent) -> LockChange {
        match e.kind {
            LockEventKind::Acquired => LockChange::Acquired(e.lock),
            LockEventKind::Released => LockChange::Released(e.lock),
            LockEventKind::Expired => LockChange::Expired(e.lock),
        }
    }

    /// Whether `self` and `other` are the same event: same kind, same lock
    /// instance (tenant, object, holder, since). The expiry time is left out:
    /// it is not part of a lock's identity.
    fn same_event(&self, other: &LockChange) -> bool {
        let ((k1, a), (k2, b)) = (self.parts(), other.parts());
        k1 == k2 && a.tenant == b.tenant && a.object == b.object && a.holder == b.holder && a.since == b.since
    }
}

/// Where this replica stands in the store's lock-event log (see the module
/// documentation): every event up to `cursor` has been reported.
#[derive(Debug, Default)]
struct LockFeed {
    /// The seq of the last event reported (or logged before start-up).
    cursor: u64,
    /// This replica's own changes whose earlier events are not reported yet,
    /// by seq: reported as soon as the cursor reaches them.
    deferred: BTreeMap<u64, LockChange>,
    /// Seqs above the cursor already reported (a backlog overflow): skipped.
    ahead: std::collections::BTreeSet<u64>,
    /// Changes reported whose seq was unknown (not logged through this
    /// replica's store handle): their copy in the log is skipped.
    unsequenced: VecDeque<LockChange>,
}

impl LockFeed {
    /// Passes the log's event `seq`: reports it unless it was reported already.
    fn pass(&mut self, seq: u64, change: LockChange, out: &mut Vec<LockChange>) {
        if seq <= self.cursor {
            return;
        }
        self.cursor = seq;
        self.deferred.remove(&seq);
        if self.ahead.remove(&seq) {
            return;
        }
        match self.unsequenced.iter().position(|c| c.same_event(&change)) {
            Some(i) => {
                self.unsequenced.remove(i);
            }
            None => out.push(change),
        }
        self.drain(out);
    }

    /// Reports the deferred own changes the cursor has reached, in order.
    fn drain(&mut self, out: &mut Vec<LockChange>) {
        loop {
            let next = self.cursor + 1;
            if self.ahead.remove(&next) {
                self.cursor = next;
            } else if let Some(change) = self.deferred.remove(&next) {
                self.cursor = next;
                out.push(change);
            } else {
                return;
            }
        }
    }

    /// Handles a change made through this replica whose event has `seq`
    /// (`None`: unknown). False when it waits for the tailer.
    fn own(&mut self, seq: Option<u64>, change: LockChange, out: &mut Vec<LockChange>) -> bool {
        match seq {
            // The tailer read and reported it first.
            Some(seq) if seq <= self.cursor => true,
            Some(seq) if seq == self.cursor + 1 => {
                self.cursor = seq;
                out.push(change);
                self.drain(out);
                true
            }
            Some(seq) => {
                self.deferred.insert(seq, change);
                if self.deferred.len() > LOCK_BACKLOG {
                    // The tailer is not keeping up (or not running): report the
                    // oldest now rather than hold changes without bound.
                    if let Some((seq, change)) = self.deferred.pop_first() {
                        self.ahead.insert(seq);
                        out.push(change);
                    }
                }
                false
            }
            None => {
                if self.unsequenced.len() >= LOCK_BACKLOG {
                    self.unsequenced.pop_front();
                }
                self.unsequenced.push_back(change.clone());
                out.push(change);
                true
            }
        }
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
}

/// How many writes' breakdowns a replica keeps ([`Replica::recent_write_phases`]).
const PHASES_KEPT: usize = 4_096;

/// How long each part of one write took: the write path's breakdown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WritePhases {
    /// Resolving the batch, checking its conditions, and validating it on a
    /// copy of the tenant's configuration (and authorizing its actor).
    pub validate: Duration,
    /// Appending it to the store: the commit.
    pub append: Duration,
    /// Compiling the tenant's next view and installing it.
    pub compile: Duration,
    /// Telling the observers (the watch hub's publication, raw subscribers,
    /// the decision caches of `at_least_revision` waiters).
    pub publish: Duration,
}

/// The checkpoints a replica's writes ask for, written in the background
/// (never inside a `Write` call): the newest per tenant waits here, a task
/// started with the replica encodes it on the blocking pool and stores it.
/// A checkpoint only saves replaying the changelog, so one still waiting
/// when the process dies costs nothing but that replay; a graceful stop
/// writes what waits ([`Replica::flush_checkpoints`]).
#[derive(Debug)]
struct Checkpointer {
    pending: Arc<std::sync::Mutex<PendingCheckpoints>>,
    wake: Arc<Notify>,
}

impl Checkpointer {
    /// A queue, and its writer task on `store` (ended when the queue is dropped).
    fn start(store: AnyStore) -> Checkpointer {
        let queue = Checkpointer { pending: Arc::default(), wake: Arc::new(Notify::new()) };
        let (pending, wake) = (Arc::downgrade(&queue.pending), Arc::clone(&queue.wake));
        tokio::spawn(async move {
            loop {
                let taken = match pending.upgrade() {
                    Some(p) => std::mem::take(&mut *p.lock().unwrap_or_else(|e| e.into_inner())),
                    None => return,
                };
                if taken.is_empty() {
                    wake.notified().await;
                    continue;
                }
                for (tenant, revision, config) in taken.into_values() {
                    write_checkpoint(&store, &tenant, revision, config).await;
                }
            }
        });
        queue
    }

    /// Asks for a checkpoint of `tenant` at `revision` (replacing an older one waiting).
    fn request(&self, tenant: &TenantId, revision: Revision, config: Arc<TenantConfig>) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tenant.0.clone(), (tenant.clone(), revision, config));
        self.wake.notify_one();
    }

    fn take(&self) -> PendingCheckpoints {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // The writer task wakes, finds the queue gone, and ends.
        self.wake.notify_one();
    }
}

/// The newest checkpoint asked for, per tenant.
type PendingCheckpoints = BTreeMap<String, (TenantId, Revision, Arc<TenantConfig>)>;

/// Encodes `config` on the blocking pool and stores it as the checkpoint of
/// `tenant` at `revision`; a failure is logged (and true when written).
async fn write_checkpoint(store: &AnyStore, tenant: &TenantId, revision: Revision, config: Arc<TenantConfig>) -> bool {
    let result = match tokio::task::spawn_blocking(move || EncodedConfig::encode(&config)).await {
        Ok(Ok(encoded)) => store.put_encoded_checkpoint(tenant, revision, &encoded).await,
        Ok(Err(e)) => Err(e),
        Err(e) => Err(StoreError::Other(format!("the checkpoint encoder failed: {e}"))),
    };
    match result {
        Ok(()) => {
            tracing::debug!(tenant = %tenant, revision, "checkpoint written");
            true
        }
        Err(e) => {
            tracing::warn!(tenant = %tenant, revision, error = %e, "cannot write the checkpoint of tenant `{tenant}` at revision {revision}");
            false
        }
    }
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
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> ServiceResult<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ServiceError::Internal(format!("worker failed: {e}")))
}

/// The field-path prefix validation uses for the entity a mutation writes
/// (`objects[Metric/m1]`), and whether the mutation puts that whole entity.
fn entity_path(m: &Mutation) -> Option<(String, bool)> {
    use model::config::{subject_label, target_label};
    let target_path = |t: &Target| match t {
        Target::Folder(id) => format!("folders[{id}]"),
        Target::Person(id) => format!("persons[{id}]"),
        Target::Group(id) => format!("access_groups[{id}]"),
        Target::Role(id) => format!("roles[{id}]"),
        Target::Object(k) => format!("objects[{}/{}]", k.kind, k.id),
    };
    Some(match m {
        Mutation::PutFolder(f) => (format!("folders[{}]", f.id), true),
        Mutation::PutPerson(p) => (format!("persons[{}]", p.id), true),
        Mutation::PutGroup(g) => (format!("access_groups[{}]", g.id), true),
        Mutation::AddGroupMember { group, .. } | Mutation::RemoveGroupMember { group, .. } => {
            (format!("access_groups[{group}]"), false)
        }
        Mutation::PutRole(r) => (format!("roles[{}]", r.id), true),
        Mutation::AssignRole { role, .. } | Mutation::UnassignRole { role, .. } => (format!("roles[{role}]"), false),
        Mutation::PutPartition(p) => (format!("partitions[{}]", p.id), true),
        Mutation::PutObject(o) => (format!("objects[{}/{}]", o.kind, o.id), true),
        Mutation::MoveObject { target, .. } => (target_path(target), false),
        Mutation::ProvisionVirtualQueue { queue, .. } => {
            (format!("objects[{}/{}]", model::types::SCRIPT, model::config::virtual_queue_script(queue)), false)
        }
        Mutation::PutAce(a) => (format!("aces[{} for {}]", target_label(&a.target), subject_label(&a.subject)), true),
        Mutation::PutCatalog(c) => (format!("catalogs[{}]", c.name), true),
        _ => return None,
    })
}

/// Names the mutation behind a whole-configuration validation error: an
/// error about `objects[Metric/m1].name` caused by mutation 3, a put of that
/// object, becomes `mutations[3].put_object.name`; one caused by another
/// mutation on the entity keeps the entity path after the mutation's
/// (`mutations[0].add_group_member.access_groups[sales].members`).
fn locate(e: model::ModelError, batch: &[Mutation]) -> model::ModelError {
    if e.field.starts_with("mutations[") {
        return e;
    }
    for (i, m) in batch.iter().enumerate().rev() {
        let Some((prefix, whole)) = entity_path(m) else { continue };
        let Some(rest) = e.field.strip_prefix(&prefix) else { continue };
        if !(rest.is_empty() || rest.starts_with('.')) {
            continue;
        }
        let field = if whole {
            format!("mutations[{i}].{}{rest}", m.op())
        } else {
            format!("mutations[{i}].{}.{}", m.op(), e.field)
        };
        return model::ModelError { field, ..e };
    }
    e
}

/// Whether `t` exists in `c`.
pub fn target_exists(c: &TenantConfig, t: &Target) -> bool {
    match t {
        Target::Folder(id) => c.folders.contains_key(id),
        Target::Person(id) => c.persons.contains_key(id),
        Target::Group(id) => c.groups.contains_key(id),
        Target::Role(id) => c.roles.contains_key(id),
        Target::Object(k) => c.objects.contains_key(k),
    }
}

impl Replica {
    /// Opens a replica on `store`: loads every tenant, then marks the snapshot loaded.
    pub async fn open(store: AnyStore, limits: Limits) -> ServiceResult<Replica> {
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
            checkpoints: Checkpointer::start(store.clone()),
            phases: std::sync::Mutex::new(VecDeque::new()),
        };
        replica.load().await?;
        // Lock events logged before start-up are not news: the locks already
        // held are known, and only their release or expiry will be reported.
        replica.lock_feed().cursor = replica.store.lock_events_head().await?;
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

    fn record_phases(&self, p: WritePhases) {
        let mut kept = self.phases.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() == PHASES_KEPT {
            kept.pop_front();
        }
        kept.push_back(p);
    }

    /// The breakdown of this replica's last writes (at most 4,096, the
    /// oldest first): where a write's time goes.
    pub fn recent_write_phases(&self) -> Vec<WritePhases> {
        self.phases.lock().unwrap_or_else(|e| e.into_inner()).iter().copied().collect()
    }

    /// Calls `f` after every batch this replica installs (its writes and the
    /// batches it replays from the store after start-up), in revision order,
    /// with the tenant's new state: how the watch hub learns of changes.
    pub fn on_batch(&self, f: impl Fn(&TenantState, &[Mutation]) + Send + Sync + 'static) {
        self.observers.write().unwrap_or_else(|e| e.into_inner()).batches.push(Box::new(f));
    }

    /// Calls `f` with every changelog record this replica passes after
    /// start-up, in revision order without gaps: the batches it installs (its
    /// writes, other replicas' writes) and the ones it skips because they no
    /// longer validate. Raw change streams are fed from here.
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

    fn notify_batch(&self, applied: &Applied<'_>) {
        let observers = self.observers.read().unwrap_or_else(|e| e.into_inner());
        if let Some(state) = applied.state {
            for f in &observers.batches {
                f(state, applied.mutations);
            }
        }
        for f in &observers.records {
            f(applied);
        }
    }

    fn lock_feed(&self) -> std::sync::MutexGuard<'_, LockFeed> {
        self.locks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reports an edit-lock change made through this replica (the store has
    /// logged it) to the observers, exactly once: at once when every earlier
    /// event of the store's lock-event log is reported already (the usual
    /// case), else as soon as the tailer, woken now, has read up to it. A
    /// change the tailer reported first is not reported again.
    pub fn lock_changed(&self, change: LockChange) {
        let (kind, lock) = change.parts();
        let seq = self.store.take_written_lock_event(kind, lock);
        let mut feed = self.lock_feed();
        let mut events = Vec::new();
        let done = feed.own(seq, change, &mut events);
        // Reported under the lock: observers see the changes in order.
        self.report_locks(&events);
        drop(feed);
        if !done {
            self.lock_wake.notify_one();
        }
    }

    fn report_locks(&self, events: &[LockChange]) {
        if events.is_empty() {
            return;
        }
        let observers = self.observers.read().unwrap_or_else(|e| e.into_inner());
        for change in events {
            let (kind, l) = change.parts();
            tracing::info!(tenant = %l.tenant, object = %l.object, holder = %l.holder, "edit lock {}", kind.as_str());
            for f in &observers.locks {
                f(change);
            }
        }
    }

    /// Reads the store's lock-event log past this replica's cursor and
    /// reports what was not reported yet (other replicas' lock changes, and
    /// this replica's own that waited for an earlier event), once each, in
    /// `seq` order. How many changes were reported.
    pub async fn sync_lock_events(&self) -> ServiceResult<usize> {
        let mut reported = 0;
        loop {
            let after = self.lock_feed().cursor;
            let page = self.store.read_lock_events(after, LOCK_EVENT_PAGE).await?;
            let full = page.len() >= LOCK_EVENT_PAGE as usize;
            reported += self.pass_lock_events(page);
            if !full {
                return Ok(reported);
            }
        }
    }

    fn pass_lock_events(&self, page: Vec<LockEvent>) -> usize {
        let mut feed = self.lock_feed();
        let mut events = Vec::new();
        for e in page {
            if e.seq > feed.cursor + 1 {
                // Seqs are dense: the events in between were pruned (a compaction
                // overtook this replica). Own changes among them are reported still.
                tracing::warn!(
                    from = feed.cursor + 1,
                    to = e.seq - 1,
                    "lock events {}..={} were pruned from the store before this replica read them",
                    feed.cursor + 1,
                    e.seq - 1
                );
                let own: Vec<(u64, LockChange)> = {
                    let later = feed.deferred.split_off(&e.seq);
                    std::mem::replace(&mut feed.deferred, later).into_iter().collect()
                };
                events.extend(own.into_iter().map(|(_, c)| c));
                let later = feed.ahead.split_off(&e.seq);
                feed.ahead = later;
            }
            let seq = e.seq;
            feed.pass(seq, LockChange::from_event(e), &mut events);
        }
        self.report_locks(&events);
        events.len()
    }

    /// Waits, bounded by [`Limits::revision_wait`], until the replica has
    /// applied `revision`; `UNAVAILABLE` if it does not in time.
    pub async fn wait_for(&self, revision: Revision) -> ServiceResult<()> {
        if revision == 0 || self.snapshot.revision() >= revision {
            return Ok(());
        }
        let mut rx = self.revision.subscribe();
        let reached = tokio::time::timeout(self.limits.revision_wait, rx.wait_for(|r| *r >= revision)).await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            _ => Err(ServiceError::Unavailable(format!(
                "at_least_revision: this replica is at revision `{}` and did not reach `{revision}` within {} ms; retry",
                self.snapshot.revision(),
                self.limits.revision_wait.as_millis()
            ))),
        }
    }

    async fn load(&self) -> ServiceResult<()> {
        let mut ws = self.writer.lock().await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.load_once(&mut ws).await {
                Err(ServiceError::Store(StoreError::Compacted { .. })) if attempt < 3 => {
                    tracing::warn!("the changelog was compacted while loading; starting over");
                }
                other => break other?,
            }
        }
        self.snapshot.mark_loaded();
        self.publish();
        for tenant in self.snapshot.tenant_ids() {
            if let Ok(v) = self.snapshot.view(&tenant) {
                let (persons, nodes, acls) = v.stats();
                tracing::info!(tenant = %tenant, revision = v.revision(), persons, nodes, acls, "tenant loaded");
            }
        }
        tracing::info!(revision = self.snapshot.revision(), store = self.store.display_url(), "snapshot loaded");
        Ok(())
    }

    async fn load_once(&self, ws: &mut WriterState) -> ServiceResult<()> {
        let oldest = self.store.oldest_retained().await?;
        let mut covered = HashMap::new();
        for (tenant, revision, config) in self.store.load_checkpoints().await? {
            cpu(|| self.snapshot.install(config, revision));
            covered.insert(tenant.0, revision);
        }
        ws.since_checkpoint.clear();
        // Read from the oldest retained record, not from the lowest checkpoint:
        // a tenant without a checkpoint needs all of its records, which the
        // store keeps (compaction only drops records a checkpoint covers).
        let applied = self.replay(ws, oldest, &covered).await?;
        tracing::info!(checkpoints = covered.len(), replayed = applied, "changelog replayed");
        Ok(())
    }

    /// Applies every record after `after`, skipping those a checkpoint covers.
    async fn replay(
        &self,
        ws: &mut WriterState,
        after: Revision,
        covered: &HashMap<String, Revision>,
    ) -> ServiceResult<usize> {
        let mut cursor = after;
        let mut applied = 0;
        loop {
            let page = self.store.read_since(cursor, REPLAY_PAGE).await?;
            let Some(last) = page.last() else { break };
            cursor = last.revision;
            for record in page {
                if covered.get(record.tenant.as_str()).is_some_and(|&c| record.revision <= c) {
                    self.snapshot.advance(record.revision);
                    continue;
                }
                applied += usize::from(self.apply_record(ws, record));
            }
            self.publish();
        }
        Ok(applied)
    }

    /// Validates and installs one stored batch; logs and skips it when it no
    /// longer validates. Whether it was installed.
    fn apply_record(&self, ws: &mut WriterState, record: ChangeRecord) -> bool {
        let installed = cpu(|| {
            self.snapshot
                .prepare(&record.tenant, &record.mutations)
                .map(|next| self.snapshot.install(next, record.revision))
        });
        match installed {
            Ok(state) => {
                if self.snapshot.is_loaded() {
                    self.notify_batch(&Applied {
                        revision: record.revision,
                        tenant: &record.tenant,
                        mutations: &record.mutations,
                        actor: record.actor.as_deref(),
                        committed_at: record.committed_at,
                        state: Some(&state),
                    });
                }
                *ws.since_checkpoint.entry(record.tenant.0).or_default() += 1;
                true
            }
            Err(e) => {
                tracing::warn!(
                    revision = record.revision,
                    tenant = %record.tenant,
                    error = %e,
                    "skipping stored batch at revision {} that no longer validates",
                    record.revision
                );
                self.snapshot.advance(record.revision);
                if self.snapshot.is_loaded() {
                    self.notify_batch(&Applied {
                        revision: record.revision,
                        tenant: &record.tenant,
                        mutations: &record.mutations,
                        actor: record.actor.as_deref(),
                        committed_at: record.committed_at,
                        state: None,
                    });
                }
                false
            }
        }
    }

    /// Applies what the store holds beyond the snapshot (other replicas'
    /// writes). How many batches (and checkpoints) were installed.
    ///
    /// When a compaction removed records this replica had not read yet (it
    /// was stopped, cut off or too slow), the tenants concerned are reloaded
    /// from their checkpoints and the rest replayed; observers see each
    /// reloaded tenant's changes as one batch at its checkpoint's revision,
    /// between a [`Reload::Started`] and a [`Reload::Finished`] (see
    /// [`Replica::on_reload`]).
    pub async fn catch_up(&self) -> ServiceResult<usize> {
        let mut ws = self.writer.lock().await;
        self.catch_up_locked(&mut ws).await
    }

    async fn catch_up_locked(&self, ws: &mut WriterState) -> ServiceResult<usize> {
        let n = match self.replay(ws, self.snapshot.revision(), &HashMap::new()).await {
            Err(ServiceError::Store(StoreError::Compacted { oldest_retained, .. })) => {
                let behind = self.snapshot.revision();
                tracing::warn!(
                    revision = behind,
                    oldest_retained,
                    "this replica is at revision {behind}, but the changelog was compacted up to revision \
                     {oldest_retained}: reloading the tenants that changed from their checkpoints"
                );
                self.notify_reload(&Reload::Started { from: behind, oldest_retained });
                let reloaded = self.reload(ws).await;
                self.notify_reload(&Reload::Finished { from: behind, to: self.snapshot.revision() });
                reloaded?
            }
            other => other?,
        };
        self.publish();
        Ok(n)
    }

    /// Catches up across a compaction: installs every checkpoint newer than
    /// the snapshot and replays the retained records the checkpoints do not
    /// cover, all in revision order, then publishes once.
    ///
    /// Observers see the result as ordinary batches, in revision order: a
    /// checkpoint appears as one batch at its revision holding the
    /// differences between the tenant as this replica had it and the
    /// checkpoint (the smallest batch that turns one into the other, as an
    /// `Import` with `replace` computes it; a tenant this replica did not
    /// have appears as its creating batch). So computed subscribers are
    /// diffed against the new view. The records such a batch stands for
    /// (compacted, or covered by the checkpoint) are not passed one by one:
    /// the caller brackets the reload with [`Reload`] notices, on which raw
    /// change streams end rather than receive the net batches.
    async fn reload(&self, ws: &mut WriterState) -> ServiceResult<usize> {
        let from = self.snapshot.revision();
        let mut attempt = 0;
        let installed = loop {
            attempt += 1;
            match self.reload_once(ws).await {
                Err(ServiceError::Store(StoreError::Compacted { .. })) if attempt < 3 => {
                    tracing::warn!("the changelog was compacted again while reloading; starting over");
                }
                other => break other?,
            }
        };
        tracing::info!(from, to = self.snapshot.revision(), installed, "reloaded after the changelog compaction");
        Ok(installed)
    }

    async fn reload_once(&self, ws: &mut WriterState) -> ServiceResult<usize> {
        let behind = self.snapshot.revision();
        let oldest = self.store.oldest_retained().await?;
        // Checkpoints this replica has not reached, in revision order. A
        // tenant whose checkpoint it has reached lost no record it needs:
        // compaction keeps every record after a tenant's checkpoint.
        let mut checkpoints: Vec<(TenantId, Revision, TenantConfig)> =
            self.store.load_checkpoints().await?.into_iter().filter(|c| c.1 > behind).collect();
        checkpoints.sort_by(|a, b| (a.1, &a.0.0).cmp(&(b.1, &b.0.0)));
        let covered: HashMap<String, Revision> = checkpoints.iter().map(|c| (c.0.0.clone(), c.1)).collect();
        let mut pending = checkpoints.into_iter().peekable();
        let mut installed = 0;
        let mut cursor = oldest.max(behind);
        // Checkpoints at or before the oldest retained record: nothing retained precedes them.
        while let Some((tenant, revision, config)) = pending.next_if(|c| c.1 <= cursor) {
            installed += self.install_checkpoint(ws, &tenant, revision, config, None);
        }
        loop {
            let page = self.store.read_since(cursor, REPLAY_PAGE).await?;
            let Some(last) = page.last() else { break };
            cursor = last.revision;
            for record in page {
                while let Some((tenant, revision, config)) = pending.next_if(|c| c.1 < record.revision) {
                    installed += self.install_checkpoint(ws, &tenant, revision, config, None);
                }
                if let Some((tenant, revision, config)) =
                    pending.next_if(|c| c.1 == record.revision && c.0 == record.tenant)
                {
                    installed += self.install_checkpoint(ws, &tenant, revision, config, Some(&record));
                    continue;
                }
                // Covered by a checkpoint still to come (its batch will hold it).
                if covered.get(record.tenant.as_str()).is_some_and(|&c| record.revision <= c) {
                    continue;
                }
                installed += usize::from(self.apply_record(ws, record));
            }
        }
        for (tenant, revision, config) in pending {
            installed += self.install_checkpoint(ws, &tenant, revision, config, None);
        }
        Ok(installed)
    }

    /// Installs a tenant's checkpoint during [`Replica::reload`] and tells the
    /// observers what changed, as one batch at the checkpoint's revision
    /// (`record`: the changelog record at that revision, when retained).
    fn install_checkpoint(
        &self,
        ws: &mut WriterState,
        tenant: &TenantId,
        revision: Revision,
        config: TenantConfig,
        record: Option<&ChangeRecord>,
    ) -> usize {
        let (difference, state) = cpu(|| {
            let difference = match self.snapshot.state(tenant.as_str()) {
                Some(before) => replace::replace_batch(&before.config, &config),
                None => model::TenantFile::from_config(&config).to_mutations().unwrap_or_else(|e| {
                    tracing::warn!(tenant = %tenant, revision, error = %e, "cannot express the new tenant as a batch for the change streams");
                    Vec::new()
                }),
            };
            (difference, self.snapshot.install(config, revision))
        });
        ws.since_checkpoint.insert(tenant.0.clone(), 0);
        tracing::info!(tenant = %tenant, revision, changes = difference.len(), "tenant reloaded from its checkpoint");
        if !difference.is_empty() {
            self.notify_batch(&Applied {
                revision,
                tenant,
                mutations: &difference,
                actor: None,
                committed_at: record.map_or_else(SystemTime::now, |r| r.committed_at),
                state: Some(&state),
            });
        }
        1
    }

    /// Applies a write: conditions, validation, the actor's permissions, then
    /// (unless a dry run) the store append and the install. Nothing changes on
    /// any error.
    pub async fn write(&self, req: WriteRequest) -> ServiceResult<WriteOutcome> {
        if !self.snapshot.is_loaded() {
            return Err(ServiceError::Unavailable("the replica is still loading; retry".into()));
        }
        if let Batch::Mutations(m) = &req.batch {
            if m.len() > self.limits.max_batch {
                return Err(ServiceError::invalid(
                    "mutations",
                    format!(
                        "the batch has {} mutations, more than the limit of {} per write",
                        m.len(),
                        self.limits.max_batch
                    ),
                ));
            }
            if m.is_empty() {
                return Err(ServiceError::invalid("mutations", "the batch is empty"));
            }
        }
        let tenant = req.tenant.clone();
        let mut ws = self.writer.lock().await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = Instant::now();
            let current = self.snapshot.state(tenant.as_str());
            let mutations = Arc::new(self.resolve_batch(&req, current.as_ref())?);
            self.check_conditions(&req, current.as_ref(), &mutations)?;

            // Validate (and authorize) on a copy, off the async workers.
            let (snapshot, t, m, cur, actor) = (
                Arc::clone(&self.snapshot),
                tenant.clone(),
                Arc::clone(&mutations),
                current.clone(),
                req.actor.clone(),
            );
            let import_target = match &req.batch {
                Batch::Import { config, .. } if current.is_some() => Some(config.clone()),
                _ => None,
            };
            let next = blocking(move || -> ServiceResult<TenantConfig> {
                let next = snapshot.prepare(&t, &m).map_err(|e| locate(e, &m))?;
                if import_target.is_some_and(|want| *want != next) {
                    return Err(ServiceError::Internal(format!(
                        "replacing tenant `{t}` could not be expressed as one batch; nothing was written"
                    )));
                }
                if let Some(actor) = &actor {
                    actor::authorize(cur.as_ref(), &next, &m, actor)?;
                }
                Ok(next)
            })
            .await??;

            if req.dry_run {
                let at = self.snapshot.revision();
                let limits = self.limits.clone();
                drop(ws);
                let changes = blocking(move || {
                    let view = TenantView::build_next(current.as_ref().map(|s| (&*s.view, &*s.config)), &next, at);
                    let old = current.as_ref().map(|s| changes::Side { config: &s.config, view: &s.view });
                    changes::compute(old, changes::Side { config: &next, view: &view }, &mutations, &limits)
                })
                .await?;
                return Ok(WriteOutcome { revision: at, changes: Some(changes) });
            }

            let head = self.snapshot.revision();
            let validated = Instant::now();
            match self.store.append(&tenant, &mutations, req.actor.as_deref(), Some(head)).await {
                Ok(revision) => {
                    let appended = Instant::now();
                    let snapshot = Arc::clone(&self.snapshot);
                    let committed_at = SystemTime::now();
                    let state = blocking(move || snapshot.install(next, revision)).await?;
                    let compiled = Instant::now();
                    self.publish();
                    self.notify_batch(&Applied {
                        revision,
                        tenant: &tenant,
                        mutations: &mutations,
                        actor: req.actor.as_deref(),
                        committed_at,
                        state: Some(&state),
                    });
                    self.record_phases(WritePhases {
                        validate: validated - started,
                        append: appended - validated,
                        compile: compiled - appended,
                        publish: compiled.elapsed(),
                    });
                    let imported = mutations.iter().any(|m| matches!(m, Mutation::CreateTenant { .. }))
                        || matches!(req.batch, Batch::Import { .. });
                    self.maybe_checkpoint(&mut ws, &tenant, revision, &state, imported);
                    drop(ws);
                    tracing::info!(
                        tenant = %tenant,
                        revision,
                        mutations = mutations.len(),
                        actor = req.actor.as_deref().unwrap_or(""),
                        "batch written"
                    );
                    let changes = if req.include_changes {
                        let limits = self.limits.clone();
                        Some(
                            blocking(move || {
                                let old = current.as_ref().map(|s| changes::Side { config: &s.config, view: &s.view });
                                let new = changes::Side { config: &state.config, view: &state.view };
                                changes::compute(old, new, &mutations, &limits)
                            })
                            .await?,
                        )
                    } else {
                        None
                    };
                    return Ok(WriteOutcome { revision, changes });
                }
                Err(StoreError::Conflict { expected, actual }) if attempt < WRITE_ATTEMPTS => {
                    tracing::info!(expected, actual, "another replica wrote first; catching up and retrying");
                    self.catch_up_locked(&mut ws).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The mutations a write applies, given the tenant's current state.
    fn resolve_batch(&self, req: &WriteRequest, current: Option<&TenantState>) -> ServiceResult<Vec<Mutation>> {
        match &req.batch {
            Batch::Mutations(m) => Ok(m.clone()),
            Batch::Import { file, config, replace } => match current {
                None => Ok(file.clone()),
                Some(_) if !replace => Err(ServiceError::AlreadyExists(format!(
                    "tenant `{}` exists already; import with `replace` to replace its whole configuration",
                    req.tenant
                ))),
                Some(s) => Ok(replace::replace_batch(&s.config, config)),
            },
        }
    }

    /// Tenant existence, `expected_revision` and preconditions.
    fn check_conditions(
        &self,
        req: &WriteRequest,
        current: Option<&TenantState>,
        batch: &[Mutation],
    ) -> ServiceResult<()> {
        let creates = matches!(batch.first(), Some(Mutation::CreateTenant { .. }));
        if current.is_none() && !creates {
            return Err(ServiceError::NotFound(format!(
                "unknown tenant `{}` (a batch that creates it starts with `create_tenant`)",
                req.tenant
            )));
        }
        let last = current.map_or(0, |s| s.view.revision());
        if let Some(expected) = req.expected_revision {
            if last > expected {
                return Err(ServiceError::FailedPrecondition(format!(
                    "expected_revision: tenant `{}` changed at revision `{last}`, after the expected revision `{expected}`; nothing was written",
                    req.tenant
                )));
            }
        }
        for (i, p) in req.preconditions.iter().enumerate() {
            let exists = |t: &Target| current.is_some_and(|s| target_exists(&s.config, t));
            match p {
                Precondition::Exists(t) if !exists(t) => {
                    return Err(ServiceError::FailedPrecondition(format!(
                        "preconditions[{i}].exists: {} does not exist; nothing was written",
                        model::config::target_label(t)
                    )));
                }
                Precondition::Absent(t) if exists(t) => {
                    return Err(ServiceError::FailedPrecondition(format!(
                        "preconditions[{i}].absent: {} exists; nothing was written",
                        model::config::target_label(t)
                    )));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Counts a batch of `tenant` and, every [`Limits::checkpoint_every`]
    /// batches (or at once when `force`), asks the background writer for a
    /// checkpoint of `state`.
    fn maybe_checkpoint(
        &self,
        ws: &mut WriterState,
        tenant: &TenantId,
        revision: Revision,
        state: &TenantState,
        force: bool,
    ) {
        let count = ws.since_checkpoint.entry(tenant.0.clone()).or_default();
        *count += 1;
        if !force && *count < self.limits.checkpoint_every {
            return;
        }
        *count = 0;
        self.checkpoints.request(tenant, revision, Arc::clone(&state.config));
    }

    /// Writes the checkpoints still waiting for the background writer (a
    /// graceful stop calls this before closing the store).
    pub async fn flush_checkpoints(&self) {
        for (tenant, revision, config) in self.checkpoints.take().into_values() {
            write_checkpoint(&self.store, &tenant, revision, config).await;
        }
    }

    /// Counters of the retention job (for metrics).
    pub fn retention_stats(&self) -> &RetentionStats {
        &self.retention
    }

    /// One round of the retention job at `now`, keeping `keep` of history:
    ///
    /// 1. takes the compaction lock ([`AnyStore::try_compaction_lock`]); when
    ///    another replica holds it, does nothing (`ran: false`);
    /// 2. finds the cutoff, the newest revision committed before `now - keep`
    ///    ([`Store::revision_before`]);
    /// 3. writes a checkpoint of this replica's state for every tenant whose
    ///    stored checkpoint is older than both the cutoff and the tenant's
    ///    last batch here: compaction never removes a record its tenant's
    ///    checkpoint does not cover, so without these a tenant written less
    ///    often than [`Limits::checkpoint_every`] would keep every record
    ///    (its own and, as the boundary is one revision, every later one of
    ///    every tenant) forever;
    /// 4. compacts the changelog up to the cutoff, and prunes the edit-lock
    ///    events recorded before `now - min(keep, LOCK_EVENT_RETENTION)`.
    ///
    /// Safe on several replicas at once: checkpoints only move forward and
    /// compaction is idempotent. A replica that is behind writes checkpoints
    /// of the states it has, which are still true of their revisions.
    /// A round that ran is logged at info and counted in
    /// [`Replica::retention_stats`].
    pub async fn enforce_retention(&self, keep: Duration, now: SystemTime) -> ServiceResult<RetentionRound> {
        let Some(_lock) = self.store.try_compaction_lock().await? else {
            return Ok(RetentionRound::default());
        };
        let cutoff = self.store.revision_before(now.checked_sub(keep).unwrap_or(UNIX_EPOCH)).await?;
        let mut checkpoints = 0;
        if cutoff > 0 {
            let stored: HashMap<String, Revision> =
                self.store.checkpoint_revisions().await?.into_iter().map(|(t, r)| (t.0, r)).collect();
            for tenant in self.snapshot.tenant_ids() {
                let Some(state) = self.snapshot.state(&tenant) else { continue };
                let revision = state.view.revision();
                let have = stored.get(&tenant).copied().unwrap_or(0);
                if have >= revision || have >= cutoff {
                    continue;
                }
                let id = TenantId(tenant);
                // A failure keeps this tenant's records (and the later ones);
                // the compaction below still does what the others allow.
                if write_checkpoint(&self.store, &id, revision, Arc::clone(&state.config)).await {
                    tracing::debug!(tenant = %id, revision, previous = have, "checkpoint written for the changelog retention");
                    checkpoints += 1;
                }
            }
        }
        let lock_events_before = now.checked_sub(keep.min(LOCK_EVENT_RETENTION)).unwrap_or(UNIX_EPOCH);
        let compaction = self.store.compact_until(cutoff.saturating_add(1), lock_events_before).await?;
        let stats = &self.retention;
        stats.rounds.fetch_add(1, Ordering::Relaxed);
        stats.checkpoints.fetch_add(checkpoints as u64, Ordering::Relaxed);
        stats.records.fetch_add(compaction.records, Ordering::Relaxed);
        stats.lock_events.fetch_add(compaction.lock_events, Ordering::Relaxed);
        stats.oldest_retained.store(compaction.oldest_retained, Ordering::Relaxed);
        tracing::info!(
            retention_ms = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX),
            cutoff,
            checkpoints,
            records = compaction.records,
            lock_events = compaction.lock_events,
            oldest_retained = compaction.oldest_retained,
            "changelog compacted: {} records deleted (oldest retained revision {}), {} lock events deleted",
            compaction.records,
            compaction.oldest_retained,
            compaction.lock_events
        );
        Ok(RetentionRound { ran: true, cutoff, checkpoints, compaction })
    }

    /// Drops the replaced states kept for listing continuations once they are
    /// past `--page-retain-secs`, every [`PageRetention::sweep_every`], until
    /// `stop` (writes and lookups drop them too, but a quiet tenant has none).
    ///
    /// [`PageRetention::sweep_every`]: crate::snapshot::PageRetention::sweep_every
    pub async fn run_page_sweeper(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let retention = self.snapshot.page_retention();
        if !retention.keeps_any() {
            return;
        }
        let mut ticks = tokio::time::interval(retention.sweep_every());
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = ticks.tick() => {}
            }
            let dropped = self.snapshot.expire_kept();
            if dropped > 0 {
                tracing::debug!(dropped, "kept listing states past --page-retain-secs dropped");
            }
        }
    }

    /// Runs [`Replica::enforce_retention`] every [`Retention::interval`] (the
    /// first round right away) until `stop` turns true; nothing when the
    /// retention is disabled. A failed round is logged as a warning, counted,
    /// and retried at the next interval.
    pub async fn run_retention(self: Arc<Self>, retention: Retention, mut stop: watch::Receiver<bool>) {
        if !retention.enabled() {
            tracing::info!("changelog retention disabled: the changelog and the edit-lock event log are kept whole");
            return;
        }
        let mut ticks = tokio::time::interval(retention.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = ticks.tick() => {}
            }
            // Stopping mid-round is safe: each step commits alone, and the
            // compaction lock is released with its transaction.
            let round = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                round = self.enforce_retention(retention.keep, SystemTime::now()) => round,
            };
            match round {
                Ok(round) if !round.ran => {
                    tracing::debug!("another replica holds the compaction lock; leaving this round to it");
                }
                Ok(_) => {}
                Err(e) => {
                    self.retention.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "cannot compact the changelog; retrying at the next interval");
                }
            }
        }
    }

    /// Removes expired edit locks from the store (which logs their expiry)
    /// and reports them.
    pub async fn expire_locks(&self) -> ServiceResult<usize> {
        let expired = self.store.expire_locks(std::time::SystemTime::now()).await?;
        let n = expired.len();
        for l in expired {
            self.lock_changed(LockChange::Expired(l));
        }
        Ok(n)
    }

    /// Tails the store until `stop` turns true: applies other replicas' writes
    /// and reports lock changes from the lock-event log (woken by PostgreSQL
    /// notifications, else every `interval`), and expires edit locks every
    /// `interval`.
    pub async fn tail(self: Arc<Self>, interval: Duration, mut stop: watch::Receiver<bool>) {
        let mut notifications = match self.store.subscribe().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "no change notifications; polling the store");
                None
            }
        };
        let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(1)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        let mut expired_at = Instant::now();
        loop {
            let woken = async {
                match notifications.as_mut() {
                    Some(n) => n.recv().await,
                    None => std::future::pending::<Option<Notice>>().await,
                }
            };
            // A lock-event wake-up reads only the lock-event log.
            let only_locks = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = ticks.tick() => false,
                () = self.lock_wake.notified() => true,
                notice = woken => match notice {
                    Some(Notice::LockEvent(_)) => true,
                    Some(Notice::Revision(_) | Notice::Reconnected) => false,
                    None => {
                        tracing::warn!("change notifications stopped; polling the store");
                        notifications = None;
                        false
                    }
                },
            };
            if !only_locks {
                if let Err(e) = self.catch_up().await {
                    tracing::warn!(error = %e, "cannot read the changelog");
                }
            }
            if expired_at.elapsed() >= interval {
                expired_at = Instant::now();
                if let Err(e) = self.expire_locks().await {
                    tracing::warn!(error = %e, "cannot expire edit locks");
                }
            }
            if let Err(e) = self.sync_lock_events().await {
                tracing::warn!(error = %e, "cannot read the lock-event log");
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::model::PersonId;
    use std::time::UNIX_EPOCH;

    fn lock(holder: &str, since: u64) -> LockInfo {
        LockInfo {
            tenant: TenantId("t".into()),
            object: "Application/a".into(),
            holder: PersonId(holder.into()),
            since: UNIX_EPOCH + Duration::from_secs(since),
            expires_at: UNIX_EPOCH + Duration::from_secs(since + 60),
        }
    }

    fn names(events: &[LockChange]) -> Vec<String> {
        events.iter().map(|c| format!("{} {}", c.parts().0.as_str(), c.parts().1.holder)).collect()
    }

    #[test]
    fn own_changes_next_in_line_are_reported_at_once_and_not_again_from_the_log() {
        let mut feed = LockFeed { cursor: 10, ..LockFeed::default() };
        let mut out = Vec::new();
        assert!(feed.own(Some(11), LockChange::Acquired(lock("a", 1)), &mut out));
        assert!(feed.own(Some(12), LockChange::Released(lock("a", 1)), &mut out));
        assert_eq!(names(&out), ["acquired a", "released a"]);
        // The tailer reads them afterwards: nothing new.
        out.clear();
        feed.pass(11, LockChange::Acquired(lock("a", 1)), &mut out);
        assert!(out.is_empty() && feed.cursor == 12);
    }

    #[test]
    fn own_changes_wait_for_earlier_events_then_come_in_seq_order() {
        let mut feed = LockFeed { cursor: 10, ..LockFeed::default() };
        let mut out = Vec::new();
        // Another replica's release (11) is not read yet: the acquire (12) waits.
        assert!(!feed.own(Some(12), LockChange::Acquired(lock("me", 2)), &mut out));
        assert!(out.is_empty());
        feed.pass(11, LockChange::Released(lock("other", 1)), &mut out);
        assert_eq!(names(&out), ["released other", "acquired me"]);
        assert_eq!(feed.cursor, 12);
        // The log's copy of 12 is not reported again.
        out.clear();
        feed.pass(12, LockChange::Acquired(lock("me", 2)), &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn a_change_the_tailer_reported_first_is_dropped() {
        let mut feed = LockFeed { cursor: 10, ..LockFeed::default() };
        let mut out = Vec::new();
        feed.pass(11, LockChange::Acquired(lock("me", 1)), &mut out);
        assert!(feed.own(Some(11), LockChange::Acquired(lock("me", 1)), &mut out));
        assert_eq!(names(&out), ["acquired me"]);
    }

    #[test]
    fn changes_of_unknown_seq_are_reported_once() {
        let mut feed = LockFeed { cursor: 10, ..LockFeed::default() };
        let mut out = Vec::new();
        assert!(feed.own(None, LockChange::Released(lock("me", 1)), &mut out));
        feed.pass(11, LockChange::Acquired(lock("other", 2)), &mut out);
        feed.pass(12, LockChange::Released(lock("me", 1)), &mut out);
        assert_eq!(names(&out), ["released me", "acquired other"]);
    }

    #[test]
    fn an_overflowing_backlog_reports_the_oldest_and_skips_it_later() {
        let mut feed = LockFeed { cursor: 0, ..LockFeed::default() };
        let mut out = Vec::new();
        for seq in 2..=(LOCK_BACKLOG as u64 + 2) {
            feed.own(Some(seq), LockChange::Acquired(lock("me", seq)), &mut out);
        }
        assert_eq!(out.len(), 1, "the oldest waiting change went out");
        assert_eq!(feed.deferred.len(), LOCK_BACKLOG);
        out.clear();
        feed.pass(1, LockChange::Released(lock("other", 0)), &mut out);
        assert_eq!(out.len(), LOCK_BACKLOG + 1, "the gap closed: the rest, in order, the early one skipped");
        assert_eq!(feed.cursor, LOCK_BACKLOG as u64 + 2);
        assert!(feed.ahead.is_empty() && feed.deferred.is_empty());
    }
}
