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
//!   woken by PostgreSQL notifications or a poll.
//! - **Reads at a revision** ([`Replica::wait_for`]): a bounded wait on a
//!   `watch` channel that every install publishes to.
//! - **Observers** ([`Replica::on_batch`], [`Replica::on_record`],
//!   [`Replica::on_lock`]): the watch service hears of every batch installed
//!   (in revision order, under the writer mutex) and of every edit-lock change.
//!   Lock changes made through another replica are seen too: every tailing
//!   round compares the store's live locks with the ones this replica knows
//!   ([`Replica::sync_locks`]), so acquires, releases and expiries are change
//!   events on every replica of the fleet, each reported once per replica.
//!
//! The snapshot's own `write_lock` is a `std` mutex, which cannot be held across
//! the store's `.await`; the async writer mutex here plays its role for every
//! path that changes the snapshot (start-up, writes, tailing).

use super::changes::{self, ChangeSet};
use super::status::{ServiceError, ServiceResult};
use super::{actor, replace};
use crate::engine::{Reason, TenantView};
use crate::model::{self, Mutation, Revision, Target, TenantConfig, TenantId};
use crate::snapshot::{Snapshot, TenantState};
use crate::store::{AnyStore, ChangeRecord, LockInfo, Store, StoreError};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio::sync::{Mutex, watch};

/// Changelog records read per page when replaying.
const REPLAY_PAGE: u32 = 1_000;
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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_batch: 10_000,
            checkpoint_every: 100,
            revision_wait: Duration::from_secs(5),
            changes_budget: 5_000_000,
            max_changes: 10_000,
        }
    }
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
}

impl std::fmt::Debug for Observers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observers")
            .field("batches", &self.batches.len())
            .field("records", &self.records.len())
            .field("locks", &self.locks.len())
            .finish()
    }
}

/// How many ended locks are remembered to drop a second report of the same end.
const ENDED_LOCKS: usize = 1_024;

/// The edit locks this replica knows of, to report each acquire, release and
/// expiry once, whether it happened through this replica or another one.
#[derive(Debug, Default)]
struct KnownLocks {
    /// Live locks by (tenant, object).
    live: HashMap<(String, String), LockInfo>,
    /// Recently ended locks (tenant, object, holder, since), oldest first.
    ended: VecDeque<(String, String, String, SystemTime)>,
    /// Bumped by every change this replica reports itself: a store listing
    /// taken before one is stale and is not compared.
    generation: u64,
}

fn lock_key(l: &LockInfo) -> (String, String) {
    (l.tenant.0.clone(), l.object.clone())
}

fn same_lock(a: &LockInfo, b: &LockInfo) -> bool {
    a.tenant == b.tenant && a.object == b.object && a.holder == b.holder && a.since == b.since
}

impl KnownLocks {
    fn was_ended(&self, l: &LockInfo) -> bool {
        self.ended.iter().any(|(t, o, h, s)| *t == l.tenant.0 && *o == l.object && *h == l.holder.0 && *s == l.since)
    }

    fn end(&mut self, l: &LockInfo) {
        if self.ended.len() >= ENDED_LOCKS {
            self.ended.pop_front();
        }
        self.ended.push_back((l.tenant.0.clone(), l.object.clone(), l.holder.0.clone(), l.since));
    }

    /// The end of a lock this replica knew, as seen at `now`: an expiry when
    /// its idle timeout has passed, else a release.
    fn end_of(l: LockInfo, now: SystemTime) -> LockChange {
        if l.expires_at <= now { LockChange::Expired(l) } else { LockChange::Released(l) }
    }

    /// Records `change` and adds the events to report to `out` (none for a
    /// change already reported, one more for a lock it silently replaces).
    fn apply(&mut self, change: LockChange, now: SystemTime, out: &mut Vec<LockChange>) {
        match change {
            LockChange::Acquired(l) => {
                let key = lock_key(&l);
                if let Some(k) = self.live.get_mut(&key).filter(|k| same_lock(k, &l)) {
                    k.expires_at = l.expires_at;
                    return;
                }
                if self.was_ended(&l) {
                    return;
                }
                if let Some(old) = self.live.remove(&key) {
                    self.end(&old);
                    out.push(Self::end_of(old, now));
                }
                self.live.insert(key, l.clone());
                out.push(LockChange::Acquired(l));
            }
            LockChange::Released(l) => {
                if self.ends(&l) {
                    out.push(LockChange::Released(l));
                }
            }
            LockChange::Expired(l) => {
                if self.ends(&l) {
                    out.push(LockChange::Expired(l));
                }
            }
        }
    }

    /// Records the end of `l`; false when it was already reported.
    fn ends(&mut self, l: &LockInfo) -> bool {
        if self.was_ended(l) {
            return false;
        }
        let key = lock_key(l);
        if self.live.get(&key).is_some_and(|k| same_lock(k, l)) {
            self.live.remove(&key);
        }
        self.end(l);
        true
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
    locks: std::sync::Mutex<KnownLocks>,
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
            snapshot: Arc::new(Snapshot::new()),
            store,
            writer: Mutex::new(WriterState::default()),
            revision,
            limits,
            observers: RwLock::new(Observers::default()),
            locks: std::sync::Mutex::new(KnownLocks::default()),
        };
        replica.load().await?;
        // The locks already held are known, not news.
        let now = SystemTime::now();
        let live = replica.store.list_locks(now).await?;
        replica.known_locks().live = live.into_iter().map(|l| (lock_key(&l), l)).collect();
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
    pub fn on_record(&self, f: impl Fn(&Applied<'_>) + Send + Sync + 'static) {
        self.observers.write().unwrap_or_else(|e| e.into_inner()).records.push(Box::new(f));
    }

    /// Calls `f` with every edit-lock change (acquire, release, expiry), made
    /// through this replica or, seen at the next tailing round, another one.
    pub fn on_lock(&self, f: impl Fn(&LockChange) + Send + Sync + 'static) {
        self.observers.write().unwrap_or_else(|e| e.into_inner()).locks.push(Box::new(f));
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

    fn known_locks(&self) -> std::sync::MutexGuard<'_, KnownLocks> {
        self.locks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reports an edit-lock change to the observers (and the log), once: a
    /// change this replica already reported (seen in the store first) is
    /// dropped, and a lock that replaces one this replica knew ends it first.
    pub fn lock_changed(&self, change: LockChange) {
        let mut known = self.known_locks();
        known.generation += 1;
        let mut events = Vec::new();
        known.apply(change, SystemTime::now(), &mut events);
        // Reported under the lock: observers see the changes in order.
        self.report_locks(&events);
    }

    fn report_locks(&self, events: &[LockChange]) {
        if events.is_empty() {
            return;
        }
        let observers = self.observers.read().unwrap_or_else(|e| e.into_inner());
        for change in events {
            let (what, l) = match change {
                LockChange::Acquired(l) => ("acquired", l),
                LockChange::Released(l) => ("released", l),
                LockChange::Expired(l) => ("expired", l),
            };
            tracing::info!(tenant = %l.tenant, object = %l.object, holder = %l.holder, "edit lock {what}");
            for f in &observers.locks {
                f(change);
            }
        }
    }

    /// Compares the store's live locks with the ones this replica knows and
    /// reports the differences: acquires, releases and expiries made through
    /// other replicas. A listing that a change through this replica overtook
    /// is dropped (the next round compares again).
    pub async fn sync_locks(&self) -> ServiceResult<usize> {
        let generation = self.known_locks().generation;
        let now = SystemTime::now();
        let listed = self.store.list_locks(now).await?;
        let mut known = self.known_locks();
        if known.generation != generation {
            return Ok(0);
        }
        let mut events = Vec::new();
        let current: HashMap<(String, String), LockInfo> = listed.into_iter().map(|l| (lock_key(&l), l)).collect();
        let gone: Vec<LockInfo> = known
            .live
            .iter()
            .filter(|(key, k)| current.get(*key).is_none_or(|c| !same_lock(c, k)))
            .map(|(_, k)| k.clone())
            .collect();
        for k in gone {
            let end = KnownLocks::end_of(k, now);
            known.apply(end, now, &mut events);
        }
        for l in current.into_values() {
            known.apply(LockChange::Acquired(l), now, &mut events);
        }
        self.report_locks(&events);
        Ok(events.len())
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
            self.snapshot.install(config, revision);
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
        match self.snapshot.prepare(&record.tenant, &record.mutations) {
            Ok(next) => {
                let state = self.snapshot.install(next, record.revision);
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
    /// writes). How many batches were installed.
    pub async fn catch_up(&self) -> ServiceResult<usize> {
        let mut ws = self.writer.lock().await;
        self.catch_up_locked(&mut ws).await
    }

    async fn catch_up_locked(&self, ws: &mut WriterState) -> ServiceResult<usize> {
        let n = self.replay(ws, self.snapshot.revision(), &HashMap::new()).await?;
        self.publish();
        Ok(n)
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
                    format!("the batch has {} mutations, more than the limit of {} per write", m.len(), self.limits.max_batch),
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
            let current = self.snapshot.state(tenant.as_str());
            let mutations = Arc::new(self.resolve_batch(&req, current.as_ref())?);
            self.check_conditions(&req, current.as_ref(), &mutations)?;

            // Validate (and authorize) on a copy, off the async workers.
            let (snapshot, t, m, cur, actor) =
                (Arc::clone(&self.snapshot), tenant.clone(), Arc::clone(&mutations), current.clone(), req.actor.clone());
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
            match self.store.append(&tenant, &mutations, req.actor.as_deref(), Some(head)).await {
                Ok(revision) => {
                    let snapshot = Arc::clone(&self.snapshot);
                    let committed_at = SystemTime::now();
                    let state = blocking(move || snapshot.install(next, revision)).await?;
                    self.publish();
                    self.notify_batch(&Applied {
                        revision,
                        tenant: &tenant,
                        mutations: &mutations,
                        actor: req.actor.as_deref(),
                        committed_at,
                        state: Some(&state),
                    });
                    let imported = mutations.iter().any(|m| matches!(m, Mutation::CreateTenant { .. }))
                        || matches!(req.batch, Batch::Import { .. });
                    self.maybe_checkpoint(&mut ws, &tenant, revision, &state, imported).await;
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
    fn check_conditions(&self, req: &WriteRequest, current: Option<&TenantState>, batch: &[Mutation]) -> ServiceResult<()> {
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

    async fn maybe_checkpoint(
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
        match self.store.put_checkpoint(tenant, revision, &state.config).await {
            Ok(()) => {
                *count = 0;
                tracing::debug!(tenant = %tenant, revision, "checkpoint written");
            }
            Err(e) => tracing::warn!(tenant = %tenant, revision, error = %e, "cannot write checkpoint"),
        }
    }

    /// Removes expired edit locks from the store and logs them.
    pub async fn expire_locks(&self) -> ServiceResult<usize> {
        let expired = self.store.expire_locks(std::time::SystemTime::now()).await?;
        let n = expired.len();
        for l in expired {
            self.lock_changed(LockChange::Expired(l));
        }
        Ok(n)
    }

    /// Tails the store until `stop` turns true: applies other replicas' writes
    /// (woken by PostgreSQL notifications, else every `interval`), expires
    /// edit locks and reports lock changes made through other replicas.
    pub async fn tail(self: Arc<Self>, interval: Duration, mut stop: watch::Receiver<bool>) {
        let mut notifications = match self.store.subscribe().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "no change notifications; polling the store");
                None
            }
        };
        loop {
            let woken = async {
                match notifications.as_mut() {
                    Some(n) => n.recv().await.is_some(),
                    None => std::future::pending::<bool>().await,
                }
            };
            let closed = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                () = tokio::time::sleep(interval) => false,
                alive = woken => !alive,
            };
            if closed {
                tracing::warn!("change notifications stopped; polling the store");
                notifications = None;
            }
            if let Err(e) = self.catch_up().await {
                tracing::warn!(error = %e, "cannot read the changelog");
            }
            if let Err(e) = self.expire_locks().await {
                tracing::warn!(error = %e, "cannot expire edit locks");
            }
            if let Err(e) = self.sync_locks().await {
                tracing::warn!(error = %e, "cannot list edit locks");
            }
        }
    }
}
