//! `WatchService`: change streams (SPEC §7) as a thin adapter over the watch
//! hub ([`crate::watch::Hub`]) and the changelog.
//!
//! **Computed subscriptions** (a person's privileges in an application, a
//! person's visible objects of a type) are [`Hub`] subscribers: the first event
//! is the full state (`Snapshot`, reason `INITIAL`), then only differences,
//! each tagged with the revision of the view it leads to; a subscriber that
//! fell behind skips the views it never looked at and gets the net difference
//! to the newest one (see [`crate::watch`]). A state too
//! large for one message (tens of thousands of visible objects) is sent as
//! several `Snapshot` events of the same revision, `complete` on the last; a
//! difference that large is likewise split into several `VisibleObjectsChanged`
//! of the same revision (their union is the difference). Visible-objects
//! streams also get the tenant's edit-lock events for their object type, and
//! every computed stream gets `RestrictedModeChanged` when a batch sets the
//! tenant's restricted mode, ordered by revision with the differences.
//!
//! **Raw subscriptions** get the committed batches themselves. With
//! `from_revision`, the stream first registers for live batches (buffered),
//! then replays the changelog from the store after `from_revision` up to its
//! head, then forwards the buffered and following live batches whose revision
//! is above the last one replayed: no gap, no duplicate. A resume point the
//! store no longer holds ends the stream with `RevisionTooOld`. If the live
//! buffer overflows while the changelog is replayed, the replay simply goes
//! on from the store (the server is the slow one); once live, a subscriber
//! that does not read fast enough is ended with `ResumeRequired` naming the
//! last revision it was sent — never a silent skip, never an unbounded queue.
//! When the replica reloads across a compaction ([`Replica::on_reload`]) it
//! has no records to give for the revisions it skipped, only net
//! differences: every raw stream is ended the same way, with
//! `ResumeRequired` naming the last revision it was sent, before any of
//! those differences, and a raw stream opened during the reload is ended at
//! once. Its client resumes; if the store no longer holds that revision the
//! resume answers `RevisionTooOld` and the client knows to read the state
//! again. Computed streams are diffed against the reloaded views as usual.
//!
//! **Fan-out** ([`Fanout`]): the replica calls [`Fanout`] with every record it
//! passes, every lock change and every reload (see [`Replica::on_record`],
//! [`Replica::on_lock`], [`Replica::on_reload`]), under one mutex that also
//! orders the periodic `Checkpoint`s, so a checkpoint at revision R always
//! follows every event of revisions up to R on every stream. Publishing
//! never waits on a subscriber: a computed stream's view is one channel
//! store, and every other queue is bounded and written with `try_send`.
//!
//! Each stream is a task that reads its queues and writes events into a small
//! bounded channel that the transport drains; when the client stops reading,
//! HTTP/2 flow control stops the transport, the channel fills, and the task
//! waits; meanwhile newer views replace one another in the hub, and the task
//! diffs against the newest when it runs again. Memory per stream is bounded
//! by those buffers. At shutdown ([`Fanout::shutdown`]) every stream's
//! next item is `UNAVAILABLE` ("reconnect"), ahead of what it still buffers
//! ([`WatchEvents`]), so graceful shutdown does not wait on endless streams; a
//! client that stopped reading altogether cannot take even that, and is cut
//! when the server's shutdown grace period ends (`crate::app`).
//!
//! **Credentials** ([`WatchAuth`]) are checked per subscription: computed
//! subscriptions need the decision credential, raw ones the admin credential.

use super::auth::WatchAuth;
use super::convert;
use super::replica::{Applied, LockChange, Reload, Replica};
use super::status::{ServiceError, ServiceResult};
use crate::engine::{ListRequest, Reason};
use crate::model::{Mutation, Perm, Revision, Target};
use crate::proto::authzd::v1 as pb;
use crate::proto::authzd::v1::watch_service_server::WatchService;
use crate::store::{ChangeRecord, LockInfo, Store, StoreError};
use crate::watch::{Hub, Resync, State, Subscriber, Update, WatchSpec};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, WatchStream};
use tonic::{Request, Response, Status};

/// Changelog records read per page when a raw stream replays history.
const REPLAY_PAGE: u32 = 500;

/// Queue sizes and cadences of the change streams.
#[derive(Debug, Clone, Copy)]
pub struct WatchSettings {
    /// How often every stream gets a `Checkpoint` (zero: never).
    pub checkpoint_interval: Duration,
    /// Batches (and lock events, checkpoints) queued per raw subscriber
    /// before it must resume.
    pub raw_queue: usize,
    /// Lock and restricted-mode events queued per computed subscriber.
    pub side_queue: usize,
    /// Events a stream buffers between its task and the transport.
    pub stream_buffer: usize,
    /// Largest encoded size of one part of a split `Snapshot` or difference.
    pub part_bytes: usize,
}

impl Default for WatchSettings {
    fn default() -> Self {
        WatchSettings {
            checkpoint_interval: Duration::from_secs(10),
            raw_queue: 256,
            side_queue: 256,
            stream_buffer: 16,
            part_bytes: 1024 * 1024,
        }
    }
}

/// Counters of the change streams, for metrics and tests.
#[derive(Debug, Default)]
pub struct WatchStats {
    /// Streams open now.
    pub open_streams: AtomicU64,
    /// Raw streams ended with `ResumeRequired`: they fell behind, or the
    /// replica reloaded across a compaction.
    pub resume_required: AtomicU64,
    /// Reloads across a compaction (each ended every raw stream).
    pub reloads: AtomicU64,
    /// Raw streams ended with `RevisionTooOld`.
    pub revision_too_old: AtomicU64,
    /// Raw streams whose live buffer overflowed while they replayed the
    /// changelog (the replay went on from the store).
    pub replay_restarts: AtomicU64,
    /// Computed streams ended because their lock / restricted-mode queue overflowed.
    pub side_overflows: AtomicU64,
}

/// An event for computed streams besides the hub's updates.
#[derive(Debug, Clone)]
enum Side {
    Lock(Arc<pb::LockEvent>),
    Restricted { revision: Revision, tenant: String, on: bool },
}

impl Side {
    fn revision(&self) -> Revision {
        match self {
            Side::Lock(l) => l.revision,
            Side::Restricted { revision, .. } => *revision,
        }
    }

    fn event(&self) -> pb::WatchEvent {
        use pb::watch_event::Event;
        let event = match self {
            Side::Lock(l) => Event::Lock((**l).clone()),
            Side::Restricted { revision, tenant, on } => Event::RestrictedModeChanged(pb::RestrictedModeChanged {
                revision: *revision,
                tenant: tenant.clone(),
                on: *on,
            }),
        };
        pb::WatchEvent { event: Some(event) }
    }
}

/// What a raw subscriber's live queue carries.
#[derive(Debug, Clone)]
enum RawItem {
    Record(Arc<ChangeRecord>),
    Lock(Arc<pb::LockEvent>),
    Checkpoint(Revision),
}

#[derive(Debug)]
struct RawSub {
    tenant: Option<String>,
    tx: mpsc::Sender<RawItem>,
    lagged: Arc<AtomicBool>,
}

#[derive(Debug)]
struct SideSub {
    tenant: String,
    /// Object type whose lock events the stream gets (visible-objects streams).
    lock_type: Option<String>,
    tx: mpsc::Sender<Side>,
    lagged: Arc<AtomicBool>,
}

/// Registered subscribers and the last revision published to them.
#[derive(Debug, Default)]
struct Subscribers {
    published: Revision,
    raw: HashMap<u64, RawSub>,
    side: HashMap<u64, SideSub>,
    /// The replica is reloading across a compaction: raw subscribers are
    /// not registered (they end with `ResumeRequired` at once).
    reloading: bool,
}

/// Sends `item`, or marks the subscriber lagged (and unregisters it, which
/// closes its queue once drained) when its queue is full.
fn offer<T>(tx: &mpsc::Sender<T>, lagged: &AtomicBool, item: T) -> bool {
    match tx.try_send(item) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            lagged.store(true, Ordering::Release);
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// Everything that feeds this replica's change streams: the computed-diff
/// hub, the raw subscribers, the lock and restricted-mode events.
pub struct Fanout {
    replica: Arc<Replica>,
    hub: Arc<Hub>,
    settings: WatchSettings,
    subscribers: Mutex<Subscribers>,
    next_id: AtomicU64,
    closing: watch::Sender<bool>,
    /// Counters.
    pub stats: WatchStats,
}

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanout").field("settings", &self.settings).field("hub", &self.hub.len()).finish_non_exhaustive()
    }
}

impl Fanout {
    /// A fan-out fed by `replica`: registers itself as the replica's record,
    /// lock and reload observer. Create it once per replica, before any write.
    pub fn new(replica: Arc<Replica>, settings: WatchSettings) -> Arc<Fanout> {
        let fanout = Arc::new(Fanout {
            hub: Arc::new(Hub::new()),
            subscribers: Mutex::new(Subscribers { published: replica.snapshot().revision(), ..Subscribers::default() }),
            replica: Arc::clone(&replica),
            settings,
            next_id: AtomicU64::new(1),
            closing: watch::channel(false).0,
            stats: WatchStats::default(),
        });
        // Weak: the replica owns the observers, and the fan-out owns the replica.
        let weak: Weak<Fanout> = Arc::downgrade(&fanout);
        replica.on_record(move |applied| {
            if let Some(f) = weak.upgrade() {
                f.on_record(applied);
            }
        });
        let weak: Weak<Fanout> = Arc::downgrade(&fanout);
        replica.on_lock(move |change| {
            if let Some(f) = weak.upgrade() {
                f.on_lock(change);
            }
        });
        let weak: Weak<Fanout> = Arc::downgrade(&fanout);
        replica.on_reload(move |reload| {
            if let Some(f) = weak.upgrade() {
                f.on_reload(reload);
            }
        });
        fanout
    }

    /// The computed-diff hub (its counters: differences delivered, views coalesced).
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// The replica the streams follow.
    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    /// The settings.
    pub fn settings(&self) -> &WatchSettings {
        &self.settings
    }

    /// The last revision published to the streams.
    pub fn published(&self) -> Revision {
        self.lock().published
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Subscribers> {
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends every stream with `UNAVAILABLE` and refuses new ones (graceful shutdown).
    pub fn shutdown(&self) {
        self.closing.send_replace(true);
    }

    fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }

    /// Sends a `Checkpoint` with the last published revision to every stream
    /// that has room (a full raw queue gets a resume anyway).
    pub fn checkpoint(&self) {
        let mut subs = self.lock();
        let revision = subs.published;
        self.hub.checkpoint(revision);
        subs.raw.retain(|_, s| {
            !matches!(s.tx.try_send(RawItem::Checkpoint(revision)), Err(mpsc::error::TrySendError::Closed(_)))
        });
    }

    /// Sends checkpoints every [`WatchSettings::checkpoint_interval`] until `stop` turns true.
    pub async fn run_checkpoints(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        if self.settings.checkpoint_interval.is_zero() {
            return;
        }
        let mut ticks = tokio::time::interval(self.settings.checkpoint_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = ticks.tick() => self.checkpoint(),
            }
        }
    }

    fn on_record(&self, a: &Applied<'_>) {
        let mut subs = self.lock();
        if let Some(state) = a.state {
            if a.mutations.iter().any(|m| matches!(m, Mutation::SetRestrictedMode { .. })) {
                let event = Side::Restricted {
                    revision: a.revision,
                    tenant: a.tenant.0.clone(),
                    on: state.config.restricted_mode,
                };
                subs.side.retain(|_, s| s.tenant != a.tenant.0 || offer(&s.tx, &s.lagged, event.clone()));
            }
            // After the side events of the same revision: a stream sends those first.
            self.hub.publish(&state.view, a.mutations);
        }
        // During a reload there is no raw subscriber (see `on_reload`).
        if subs.raw.values().any(|s| s.tenant.as_deref().is_none_or(|t| t == a.tenant.0)) {
            let record = Arc::new(ChangeRecord {
                revision: a.revision,
                tenant: a.tenant.clone(),
                mutations: a.mutations.to_vec(),
                actor: a.actor.map(str::to_owned),
                committed_at: a.committed_at,
            });
            subs.raw.retain(|_, s| {
                s.tenant.as_deref().is_some_and(|t| t != a.tenant.0)
                    || offer(&s.tx, &s.lagged, RawItem::Record(Arc::clone(&record)))
            });
        }
        subs.published = subs.published.max(a.revision);
    }

    /// A reload across a compaction: at its start every raw subscriber is
    /// unregistered and marked lagged, exactly as one whose queue overflowed,
    /// so its stream sends what it has queued (records up to the replica's
    /// revision before the reload) and ends with `ResumeRequired`; until the
    /// end no raw subscriber is registered.
    fn on_reload(&self, reload: &Reload) {
        let mut subs = self.lock();
        match *reload {
            Reload::Started { from, oldest_retained } => {
                subs.reloading = true;
                self.stats.reloads.fetch_add(1, Ordering::Relaxed);
                let ended = subs.raw.len();
                for (_, s) in subs.raw.drain() {
                    s.lagged.store(true, Ordering::Release);
                }
                tracing::info!(
                    from,
                    oldest_retained,
                    raw_streams = ended,
                    "reloading across a compaction: raw change streams end with ResumeRequired"
                );
            }
            Reload::Finished { .. } => subs.reloading = false,
        }
    }

    fn on_lock(&self, change: &LockChange) {
        let (kind, l, at) = match change {
            LockChange::Acquired(l) => (pb::LockEventKind::Acquired, l, l.since),
            LockChange::Released(l) => (pb::LockEventKind::Released, l, SystemTime::now()),
            LockChange::Expired(l) => (pb::LockEventKind::Expired, l, l.expires_at),
        };
        let mut subs = self.lock();
        let event = Arc::new(lock_event(subs.published, kind, l, at));
        let object_type = event.object.as_ref().map(|o| o.r#type.clone()).unwrap_or_default();
        let side = Side::Lock(Arc::clone(&event));
        subs.side.retain(|_, s| {
            s.tenant != l.tenant.0
                || s.lock_type.as_deref() != Some(object_type.as_str())
                || offer(&s.tx, &s.lagged, side.clone())
        });
        subs.raw.retain(|_, s| {
            s.tenant.as_deref().is_some_and(|t| t != l.tenant.0)
                || offer(&s.tx, &s.lagged, RawItem::Lock(Arc::clone(&event)))
        });
    }

    fn register_raw(
        self: &Arc<Self>,
        tenant: Option<String>,
    ) -> (Registration, mpsc::Receiver<RawItem>, Arc<AtomicBool>, Revision) {
        let (tx, rx) = mpsc::channel(self.settings.raw_queue.max(2));
        let lagged = Arc::new(AtomicBool::new(false));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut subs = self.lock();
        if subs.reloading {
            // Nothing it could be sent now is a changelog record: the queue
            // closes at once (`tx` dropped) and the stream must resume.
            lagged.store(true, Ordering::Release);
        } else {
            subs.raw.insert(id, RawSub { tenant, tx, lagged: Arc::clone(&lagged) });
        }
        (Registration { fanout: Arc::clone(self), id }, rx, lagged, subs.published)
    }

    fn register_side(
        self: &Arc<Self>,
        tenant: String,
        lock_type: Option<String>,
    ) -> (Registration, mpsc::Receiver<Side>, Arc<AtomicBool>) {
        let (tx, rx) = mpsc::channel(self.settings.side_queue.max(2));
        let lagged = Arc::new(AtomicBool::new(false));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().side.insert(id, SideSub { tenant, lock_type, tx, lagged: Arc::clone(&lagged) });
        (Registration { fanout: Arc::clone(self), id }, rx, lagged)
    }
}

/// Unregisters a raw or side subscriber when its stream ends.
struct Registration {
    fanout: Arc<Fanout>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut subs = self.fanout.lock();
        subs.raw.remove(&self.id);
        subs.side.remove(&self.id);
    }
}

/// Counts a stream as open while it lives.
struct OpenStream(Arc<Fanout>);

impl OpenStream {
    fn new(f: &Arc<Fanout>) -> Self {
        f.stats.open_streams.fetch_add(1, Ordering::Relaxed);
        OpenStream(Arc::clone(f))
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.stats.open_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

fn lock_event(revision: Revision, kind: pb::LockEventKind, l: &LockInfo, at: SystemTime) -> pb::LockEvent {
    let (t, id) = convert::parse_object_spec(&l.object).unwrap_or(("", l.object.as_str()));
    pb::LockEvent {
        revision,
        tenant: l.tenant.0.clone(),
        kind: kind as i32,
        holder: l.holder.0.clone(),
        object: Some(pb::ObjectKey { r#type: t.to_owned(), id: id.to_owned() }),
        at: Some(at.into()),
    }
}

// ------------------------------------------------------------- raw filtering

fn target_type(t: &Target) -> &str {
    use crate::model::types;
    match t {
        Target::Folder(_) => types::FOLDER,
        Target::Person(_) => types::PERSON,
        Target::Group(_) => types::ACCESS_GROUP,
        Target::Role(_) => types::ROLE,
        Target::Object(k) => &k.kind,
    }
}

/// The object type a mutation touches; `None` for tenant-wide mutations
/// (tenant, catalog, restricted mode), which pass every type filter.
fn mutation_type(m: &Mutation) -> Option<&str> {
    use crate::model::types;
    Some(match m {
        Mutation::CreateTenant { .. }
        | Mutation::RenameTenant { .. }
        | Mutation::SetRestrictedMode { .. }
        | Mutation::PutCatalog(_)
        | Mutation::DeleteCatalog { .. } => return None,
        Mutation::PutFolder(_) | Mutation::DeleteFolder { .. } => types::FOLDER,
        Mutation::PutPerson(_) | Mutation::DeletePerson { .. } => types::PERSON,
        Mutation::PutGroup(_)
        | Mutation::DeleteGroup { .. }
        | Mutation::AddGroupMember { .. }
        | Mutation::RemoveGroupMember { .. } => types::ACCESS_GROUP,
        Mutation::PutRole(_)
        | Mutation::DeleteRole { .. }
        | Mutation::AssignRole { .. }
        | Mutation::UnassignRole { .. } => types::ROLE,
        Mutation::PutPartition(_) | Mutation::DeletePartition { .. } => "Partition",
        Mutation::PutObject(o) => &o.kind,
        Mutation::DeleteObject(k) => &k.kind,
        Mutation::MoveObject { target, .. } => target_type(target),
        Mutation::PutAce(a) => target_type(&a.target),
        Mutation::DeleteAce { target, .. } => target_type(target),
        Mutation::ProvisionVirtualQueue { .. } => types::SCRIPT,
    })
}

/// What a raw stream follows.
#[derive(Debug, Clone)]
struct RawFilter {
    tenant: Option<String>,
    types: BTreeSet<String>,
}

impl RawFilter {
    /// The record as sent, or `None` when nothing of it matches.
    fn change(&self, r: &ChangeRecord) -> Option<pb::RawChange> {
        if self.tenant.as_deref().is_some_and(|t| t != r.tenant.0) {
            return None;
        }
        let mutations: Vec<pb::Mutation> = r
            .mutations
            .iter()
            .filter(|m| self.types.is_empty() || mutation_type(m).is_none_or(|t| self.types.contains(t)))
            .map(|m| convert::mutation_pb(m.clone()))
            .collect();
        if mutations.is_empty() {
            return None;
        }
        Some(pb::RawChange {
            revision: r.revision,
            tenant: r.tenant.0.clone(),
            mutations,
            committed_at: Some(r.committed_at.into()),
            actor: r.actor.clone(),
        })
    }

    fn lock(&self, l: &pb::LockEvent) -> bool {
        self.tenant.as_deref().is_none_or(|t| t == l.tenant)
            && (self.types.is_empty() || l.object.as_ref().is_some_and(|o| self.types.contains(&o.r#type)))
    }
}

// ------------------------------------------------------------------ streams

type Item = Result<pb::WatchEvent, Status>;

fn event(e: pb::watch_event::Event) -> pb::WatchEvent {
    pb::WatchEvent { event: Some(e) }
}

fn checkpoint_event(revision: Revision) -> pb::WatchEvent {
    event(pb::watch_event::Event::Checkpoint(pb::Checkpoint { revision, time: Some(SystemTime::now().into()) }))
}

fn shutting_down() -> Status {
    ServiceError::Unavailable("the server is shutting down; reconnect (to this or another replica)".to_owned()).status()
}

/// The sending half of a stream: waits for room, gives up at shutdown or
/// when the client is gone.
struct Out {
    tx: mpsc::Sender<Item>,
    closing: watch::Receiver<bool>,
}

enum Sent {
    Ok,
    /// The client went away.
    Gone,
    /// The server is shutting down.
    Closing,
}

impl Out {
    async fn send(&mut self, e: pb::WatchEvent) -> Sent {
        let Out { tx, closing } = self;
        tokio::select! {
            biased;
            _ = closing.wait_for(|c| *c) => Sent::Closing,
            r = tx.send(Ok(e)) => if r.is_ok() { Sent::Ok } else { Sent::Gone },
        }
    }

    /// Ends the stream with `status` if there is room for it (a client that
    /// does not read would not see it anyway; dropping the stream ends it).
    fn end(&self, status: Status) {
        let _ = self.tx.try_send(Err(status));
    }

    async fn send_all(&mut self, events: Vec<pb::WatchEvent>) -> Sent {
        for e in events {
            match self.send(e).await {
                Sent::Ok => {}
                other => return other,
            }
        }
        Sent::Ok
    }
}

/// What a computed stream follows, for building its events.
#[derive(Debug, Clone)]
enum Shape {
    Privileges { application: String },
    Objects { kind: String },
}

fn update_revision(u: &Update) -> Revision {
    match u {
        Update::Full { revision, .. }
        | Update::Privileges { revision, .. }
        | Update::Objects { revision, .. }
        | Update::Checkpoint { revision } => *revision,
    }
}

/// Splits `items` into parts of at most `limit` encoded bytes (at least one item each).
fn parts<T: prost::Message>(items: Vec<T>, limit: usize) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut part = Vec::new();
    let mut size = 0;
    for item in items {
        let len = item.encoded_len() + 8;
        if !part.is_empty() && size + len > limit {
            out.push(std::mem::take(&mut part));
            size = 0;
        }
        size += len;
        part.push(item);
    }
    if !part.is_empty() {
        out.push(part);
    }
    out
}

/// The events of one hub update.
fn update_events(shape: &Shape, u: Update, part_bytes: usize) -> Vec<pb::WatchEvent> {
    use pb::watch_event::Event;
    match u {
        Update::Full { revision, reason, state } => {
            let reason = match reason {
                Resync::Initial => pb::ResyncReason::Initial,
            } as i32;
            match (shape, state) {
                (Shape::Privileges { application }, state) => {
                    let privileges = match state {
                        State::Privileges(p) => convert::effective_privileges(application, p),
                        // An unknown or disabled person holds nothing.
                        _ => pb::EffectivePrivileges {
                            application: application.clone(),
                            source: pb::PrivilegeSource::Roles as i32,
                            ..Default::default()
                        },
                    };
                    vec![event(Event::Snapshot(pb::Snapshot {
                        revision,
                        reason,
                        state: Some(pb::snapshot::State::Privileges(privileges)),
                        complete: true,
                    }))]
                }
                (Shape::Objects { .. }, state) => {
                    let objects: Vec<pb::VisibleObject> = match state {
                        State::Objects(o) => o.into_iter().map(convert::visible_object).collect(),
                        _ => Vec::new(),
                    };
                    let mut chunks = parts(objects, part_bytes);
                    if chunks.is_empty() {
                        chunks.push(Vec::new());
                    }
                    let last = chunks.len() - 1;
                    chunks
                        .into_iter()
                        .enumerate()
                        .map(|(i, objects)| {
                            event(Event::Snapshot(pb::Snapshot {
                                revision,
                                reason,
                                state: Some(pb::snapshot::State::Objects(pb::VisibleObjects { objects })),
                                complete: i == last,
                            }))
                        })
                        .collect()
                }
            }
        }
        Update::Privileges { revision, gained, lost } => {
            vec![event(Event::PrivilegesChanged(pb::PrivilegesChanged { revision, gained, lost }))]
        }
        Update::Objects { revision, gained, lost } => {
            let kind = match shape {
                Shape::Objects { kind } => kind.clone(),
                Shape::Privileges { .. } => String::new(),
            };
            let gained: Vec<pb::VisibleObject> = gained.into_iter().map(convert::visible_object).collect();
            let lost: Vec<pb::ObjectKey> =
                lost.into_iter().map(|id| pb::ObjectKey { r#type: kind.clone(), id }).collect();
            // Parts paired up: each event carries at most one part of each list.
            let (gained, lost) = (parts(gained, part_bytes), parts(lost, part_bytes));
            let n = gained.len().max(lost.len()).max(1);
            let (mut gained, mut lost) = (gained.into_iter(), lost.into_iter());
            (0..n)
                .map(|_| {
                    event(Event::VisibleObjectsChanged(pb::VisibleObjectsChanged {
                        revision,
                        gained: gained.next().unwrap_or_default(),
                        lost: lost.next().unwrap_or_default(),
                    }))
                })
                .collect()
        }
        Update::Checkpoint { revision } => vec![checkpoint_event(revision)],
    }
}

/// Runs a computed stream until the client leaves, the server shuts down or
/// the hub goes away.
async fn run_computed(
    fanout: Arc<Fanout>,
    mut sub: Subscriber,
    shape: Shape,
    side: (Registration, mpsc::Receiver<Side>, Arc<AtomicBool>),
    mut out: Out,
) {
    let _open = OpenStream::new(&fanout);
    let (_registration, mut side_rx, side_lagged) = side;
    let part_bytes = fanout.settings.part_bytes;
    // The first update is the initial state, queued by `subscribe`.
    let Some(first) = sub.next().await else { return };
    let initial = update_revision(&first);
    match out.send_all(update_events(&shape, first, part_bytes)).await {
        Sent::Ok => {}
        Sent::Gone => return,
        Sent::Closing => return out.end(shutting_down()),
    }
    // A restricted-mode change at or before the initial revision is in the
    // initial state already.
    let stale = |s: &Side| matches!(s, Side::Restricted { revision, .. } if *revision <= initial);
    let mut pending: Option<Side> = None;
    let mut closing = fanout.closing.subscribe();
    loop {
        enum Step {
            Update(Option<Update>),
            Pending,
            Side(Option<Side>),
            Closing,
            Gone,
        }
        let step = tokio::select! {
            biased;
            _ = closing.wait_for(|c| *c) => Step::Closing,
            _ = out.tx.closed() => Step::Gone,
            u = sub.next() => Step::Update(u),
            () = std::future::ready(()), if pending.is_some() => Step::Pending,
            s = side_rx.recv(), if pending.is_none() => Step::Side(s),
        };
        let events = match step {
            Step::Closing => return out.end(shutting_down()),
            Step::Gone | Step::Update(None) => return,
            Step::Update(Some(u)) => {
                // Lock and restricted-mode events of earlier (or the same)
                // revisions go first.
                let revision = update_revision(&u);
                let mut events = Vec::new();
                while let Some(s) = pending.take().or_else(|| side_rx.try_recv().ok()) {
                    if s.revision() > revision {
                        pending = Some(s);
                        break;
                    }
                    if !stale(&s) {
                        events.push(s.event());
                    }
                }
                events.extend(update_events(&shape, u, part_bytes));
                events
            }
            Step::Pending => pending.take().filter(|s| !stale(s)).map(|s| vec![s.event()]).unwrap_or_default(),
            Step::Side(Some(s)) => {
                if stale(&s) {
                    continue;
                }
                vec![s.event()]
            }
            Step::Side(None) => {
                if side_lagged.load(Ordering::Acquire) {
                    fanout.stats.side_overflows.fetch_add(1, Ordering::Relaxed);
                    return out.end(Status::from(ServiceError::Aborted(
                        "the subscriber fell behind on edit-lock and restricted-mode events; subscribe again"
                            .to_owned(),
                    )));
                }
                return;
            }
        };
        match out.send_all(events).await {
            Sent::Ok => {}
            Sent::Gone => return,
            Sent::Closing => return out.end(shutting_down()),
        }
    }
}

/// Runs a raw stream: history from the store, then live batches.
/// Where a raw stream starts.
#[derive(Debug, Clone, Copy)]
enum RawStart {
    /// After this revision (0: from the beginning).
    After(Revision),
    /// After the current revision, announced by a first `Checkpoint`.
    Now,
}

async fn run_raw(
    fanout: Arc<Fanout>,
    filter: RawFilter,
    start: RawStart,
    registered: (Registration, mpsc::Receiver<RawItem>, Arc<AtomicBool>, Revision),
    mut out: Out,
) {
    let _open = OpenStream::new(&fanout);
    let (mut registration, mut live, mut lagged, now) = registered;
    // Every batch up to `cursor` has been sent (or did not match the filter).
    let mut cursor = match start {
        RawStart::Now => {
            match out.send(checkpoint_event(now)).await {
                Sent::Ok => {}
                Sent::Gone => return,
                Sent::Closing => return out.end(shutting_down()),
            }
            now
        }
        RawStart::After(r) => r,
    };
    if matches!(start, RawStart::After(_)) {
        loop {
            let page = match fanout.replica.store().read_since(cursor, REPLAY_PAGE).await {
                Ok(p) => p,
                Err(StoreError::Compacted { oldest_retained, .. }) => {
                    fanout.stats.revision_too_old.fetch_add(1, Ordering::Relaxed);
                    let e = event(pb::watch_event::Event::RevisionTooOld(pb::RevisionTooOld {
                        requested_revision: cursor,
                        oldest_available_revision: oldest_retained,
                        revision: fanout.published(),
                    }));
                    let _ = out.send(e).await;
                    return;
                }
                Err(e) => {
                    return out
                        .end(ServiceError::from(e).with_hint(format_args!("resume with from_revision = {cursor}")));
                }
            };
            let Some(last) = page.last().map(|r| r.revision) else { break };
            for record in &page {
                if let Some(change) = filter.change(record) {
                    match out.send(event(pb::watch_event::Event::RawChange(change))).await {
                        Sent::Ok => {}
                        Sent::Gone => return,
                        Sent::Closing => return out.end(shutting_down()),
                    }
                }
            }
            cursor = last;
            if lagged.load(Ordering::Acquire) {
                // The live buffer overflowed while replaying: what it held is
                // in the store too. Register again and go on replaying.
                fanout.stats.replay_restarts.fetch_add(1, Ordering::Relaxed);
                drop(registration);
                (registration, live, lagged, _) = fanout.register_raw(filter.tenant.clone());
            }
        }
    }
    let _registration = registration;
    let mut closing = fanout.closing.subscribe();
    loop {
        let item = tokio::select! {
            biased;
            _ = closing.wait_for(|c| *c) => return out.end(shutting_down()),
            _ = out.tx.closed() => return,
            item = live.recv() => item,
        };
        let e = match item {
            Some(RawItem::Record(r)) => {
                if r.revision <= cursor {
                    continue;
                }
                cursor = r.revision;
                match filter.change(&r) {
                    Some(change) => event(pb::watch_event::Event::RawChange(change)),
                    None => continue,
                }
            }
            Some(RawItem::Lock(l)) => {
                if !filter.lock(&l) {
                    continue;
                }
                event(pb::watch_event::Event::Lock((*l).clone()))
            }
            Some(RawItem::Checkpoint(r)) => {
                if r < cursor {
                    continue;
                }
                // Every batch up to `r` was queued before this checkpoint.
                cursor = r;
                checkpoint_event(r)
            }
            None => {
                if lagged.load(Ordering::Acquire) {
                    fanout.stats.resume_required.fetch_add(1, Ordering::Relaxed);
                    let e = event(pb::watch_event::Event::ResumeRequired(pb::ResumeRequired {
                        resume_from_revision: cursor,
                        revision: fanout.published(),
                    }));
                    let _ = out.send(e).await;
                }
                return;
            }
        };
        match out.send(e).await {
            Sent::Ok => {}
            Sent::Gone => return,
            Sent::Closing => return out.end(shutting_down()),
        }
    }
}

// ------------------------------------------------------------------ service

/// The watch service of one replica.
#[derive(Debug, Clone)]
pub struct Watcher {
    fanout: Arc<Fanout>,
    auth: WatchAuth,
}

impl Watcher {
    /// A watch service over `fanout`, open to every caller.
    pub fn new(fanout: Arc<Fanout>) -> Self {
        Watcher { fanout, auth: WatchAuth::default() }
    }

    /// A watch service over `fanout` that checks each subscription's
    /// credential with `auth`: computed subscriptions the decision one, raw
    /// subscriptions the admin one.
    pub fn with_auth(fanout: Arc<Fanout>, auth: WatchAuth) -> Self {
        Watcher { fanout, auth }
    }

    fn out(&self) -> (Out, mpsc::Receiver<Item>) {
        let (tx, rx) = mpsc::channel(self.fanout.settings.stream_buffer.max(1));
        (Out { tx, closing: self.fanout.closing.subscribe() }, rx)
    }

    /// Checks a computed subscription against the tenant's current view:
    /// unknown tenants, applications and folders are `NOT_FOUND` (an empty
    /// stream would hide the typo); an unknown person is followed as holding
    /// nothing until created (proto contract).
    fn check_computed(&self, spec: &WatchSpec) -> ServiceResult<()> {
        let (tenant, person) = match spec {
            WatchSpec::Privileges { tenant, person, .. } | WatchSpec::Objects { tenant, person, .. } => {
                (tenant, person)
            }
        };
        let state = self.fanout.replica.state(tenant).map_err(|r| not_found(r, tenant, person, ""))?;
        let result = match spec {
            WatchSpec::Privileges { person, application, .. } => {
                state.view.effective_privileges(person, application).map(|_| ()).map_err(|r| (r, application.as_str()))
            }
            WatchSpec::Objects { person, kind, folder, application, permission, .. } => {
                let r = ListRequest {
                    subject: person,
                    kind,
                    folder: folder.as_deref(),
                    permission: *permission,
                    application: application.as_deref(),
                    after: None,
                    limit: 1,
                };
                state.view.list_visible(&r).map(|_| ()).map_err(|r| match r {
                    Reason::UnknownApplication => (r, application.as_deref().unwrap_or_default()),
                    _ => (r, folder.as_deref().unwrap_or_default()),
                })
            }
        };
        match result {
            Ok(()) | Err((Reason::UnknownSubject | Reason::DisabledSubject, _)) => Ok(()),
            Err((r, what)) => Err(not_found(r, tenant, person, what)),
        }
    }

    async fn computed(&self, spec: WatchSpec, shape: Shape) -> ServiceResult<WatchEvents> {
        self.check_computed(&spec)?;
        let (tenant, lock_type) = match &spec {
            WatchSpec::Privileges { tenant, .. } => (tenant.clone(), None),
            WatchSpec::Objects { tenant, kind, .. } => (tenant.clone(), Some(kind.clone())),
        };
        // Side events first: a restricted-mode change between this and the
        // hub's initial state is then either in that state or queued here.
        let side = self.fanout.register_side(tenant.clone(), lock_type);
        let sub = self
            .fanout
            .hub
            .subscribe(spec, self.fanout.replica.snapshot())
            .map_err(|r| not_found(r, &tenant, "", ""))?;
        let (out, rx) = self.out();
        tokio::spawn(run_computed(Arc::clone(&self.fanout), sub, shape, side, out));
        Ok(self.events(rx))
    }

    async fn raw(&self, r: pb::RawSubscription) -> ServiceResult<WatchEvents> {
        if let Some(t) = &r.tenant {
            if t.is_empty() {
                return Err(ServiceError::invalid("raw.tenant", "must not be empty (leave it unset for every tenant)"));
            }
            self.fanout.replica.state(t).map_err(|reason| not_found(reason, t, "", ""))?;
        }
        if let Some(i) = r.types.iter().position(String::is_empty) {
            return Err(ServiceError::invalid(format!("raw.types[{i}]"), "must not be empty"));
        }
        let start = match (r.from_now, r.from_revision) {
            (true, 0) => RawStart::Now,
            (true, _) => {
                return Err(ServiceError::invalid(
                    "raw.from_now",
                    "cannot be combined with raw.from_revision (resume after a revision, or start after the current one)",
                ));
            }
            (false, r) => RawStart::After(r),
        };
        let filter = RawFilter { tenant: r.tenant, types: r.types.into_iter().collect() };
        let (out, rx) = self.out();
        // Registered before the call answers: a batch committed after the
        // answer is in the live queue (or, when resuming, in the store).
        let registered = self.fanout.register_raw(filter.tenant.clone());
        tokio::spawn(run_raw(Arc::clone(&self.fanout), filter, start, registered, out));
        Ok(self.events(rx))
    }

    fn events(&self, rx: mpsc::Receiver<Item>) -> WatchEvents {
        WatchEvents {
            events: ReceiverStream::new(rx),
            closing: WatchStream::new(self.fanout.closing.subscribe()),
            ended: false,
        }
    }
}

/// The events of one `Watch` stream, as the transport reads them.
///
/// When the server starts shutting down, the next item is `UNAVAILABLE`
/// ("reconnect") and the stream ends, ahead of any events still buffered:
/// the client learns at once that it must reconnect, and the stream never
/// waits for room in a full buffer to say so. Nothing is lost by skipping
/// the buffered events: a computed subscription starts again from the full
/// state, and a raw one resumes from the last revision its client received.
#[derive(Debug)]
pub struct WatchEvents {
    events: ReceiverStream<Item>,
    closing: WatchStream<bool>,
    ended: bool,
}

impl tokio_stream::Stream for WatchEvents {
    type Item = Item;

    fn poll_next(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<Item>> {
        use std::task::Poll;
        if self.ended {
            return Poll::Ready(None);
        }
        // Every value the shutdown flag took since the last poll (the first
        // poll sees its current value); `None` once the fan-out is gone.
        while let Poll::Ready(Some(closing)) = std::pin::Pin::new(&mut self.closing).poll_next(cx) {
            if closing {
                self.ended = true;
                return Poll::Ready(Some(Err(shutting_down())));
            }
        }
        let item = std::pin::Pin::new(&mut self.events).poll_next(cx);
        if matches!(item, Poll::Ready(None)) {
            self.ended = true;
        }
        item
    }
}

/// The error for an unknown tenant, person, application or folder.
fn not_found(reason: Reason, tenant: &str, person: &str, what: &str) -> ServiceError {
    match reason {
        Reason::NotLoaded => ServiceError::Unavailable("the replica is still loading; retry".into()),
        Reason::UnknownTenant => ServiceError::NotFound(format!("tenant: unknown tenant `{tenant}`")),
        Reason::UnknownSubject => {
            ServiceError::NotFound(format!("person: unknown person `{person}` in tenant `{tenant}`"))
        }
        Reason::UnknownApplication => {
            ServiceError::NotFound(format!("application: unknown application `{what}` in tenant `{tenant}`"))
        }
        Reason::UnknownObject => {
            ServiceError::NotFound(format!("folder: unknown folder `{what}` in tenant `{tenant}`"))
        }
        other => ServiceError::Internal(format!("unexpected `{}`", other.code())),
    }
}

fn required(v: String, field: &str) -> ServiceResult<String> {
    if v.is_empty() { Err(ServiceError::invalid(field, "must not be empty")) } else { Ok(v) }
}

#[tonic::async_trait]
impl WatchService for Watcher {
    type WatchStream = WatchEvents;

    async fn watch(&self, request: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        use pb::watch_request::Subscription;
        // The credential first: an unauthenticated caller learns nothing,
        // not even whether the tenant exists.
        match &request.get_ref().subscription {
            Some(Subscription::Raw(_)) => self.auth.check_raw(&request)?,
            Some(Subscription::Privileges(_) | Subscription::VisibleObjects(_)) | None => {
                self.auth.check_computed(&request)?;
            }
        }
        if self.fanout.is_closing() {
            return Err(shutting_down());
        }
        let req = request.into_inner();
        self.fanout.replica.wait_for(req.at_least_revision).await?;
        let stream = match req.subscription {
            None => {
                return Err(
                    ServiceError::invalid("subscription", "must be set (privileges, visible_objects or raw)").into()
                );
            }
            Some(Subscription::Privileges(p)) => {
                let application = required(p.application, "privileges.application")?;
                let spec = WatchSpec::Privileges {
                    tenant: required(p.tenant, "privileges.tenant")?,
                    person: required(p.person, "privileges.person")?,
                    application: application.clone(),
                };
                self.computed(spec, Shape::Privileges { application }).await?
            }
            Some(Subscription::VisibleObjects(v)) => {
                let kind = required(v.r#type, "visible_objects.type")?;
                let permission: Perm = convert::list_permission(v.permission)?;
                if v.folder.as_deref() == Some("") {
                    return Err(ServiceError::invalid(
                        "visible_objects.folder",
                        "must not be empty (leave it unset for the whole tenant)",
                    )
                    .into());
                }
                let spec = WatchSpec::Objects {
                    tenant: required(v.tenant, "visible_objects.tenant")?,
                    person: required(v.person, "visible_objects.person")?,
                    kind: kind.clone(),
                    folder: v.folder,
                    application: v.application.filter(|a| !a.is_empty()),
                    permission,
                };
                self.computed(spec, Shape::Objects { kind }).await?
            }
            Some(Subscription::Raw(r)) => self.raw(r).await?,
        };
        Ok(Response::new(stream))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn large_states_are_split_with_complete_on_the_last_part() {
        let objects = (0..1000).map(|i| crate::engine::VisibleObject {
            id: format!("o{i:04}"),
            name: format!("object {i}"),
            folder: "F".into(),
            properties: Default::default(),
        });
        let u = Update::Full { revision: 7, reason: Resync::Initial, state: State::Objects(objects.collect()) };
        let events = update_events(&Shape::Objects { kind: "Metric".into() }, u, 4096);
        assert!(events.len() > 5);
        let mut ids = Vec::new();
        for (i, e) in events.iter().enumerate() {
            let Some(pb::watch_event::Event::Snapshot(s)) = &e.event else { panic!("not a snapshot") };
            assert_eq!(s.revision, 7);
            assert_eq!(s.complete, i == events.len() - 1);
            assert!(prost::Message::encoded_len(s) < 4096 + 200);
            let Some(pb::snapshot::State::Objects(o)) = &s.state else { panic!("not objects") };
            ids.extend(o.objects.iter().map(|o| o.id.clone()));
        }
        assert_eq!(ids.len(), 1000);
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn an_empty_state_is_one_complete_snapshot() {
        let u = Update::Full { revision: 3, reason: Resync::Initial, state: State::Denied(Reason::UnknownSubject) };
        let events = update_events(&Shape::Objects { kind: "Metric".into() }, u, 4096);
        assert_eq!(events.len(), 1);
        let Some(pb::watch_event::Event::Snapshot(s)) = &events[0].event else { panic!() };
        assert!(s.complete);
        assert_eq!(s.reason, pb::ResyncReason::Initial as i32);
    }

    #[test]
    fn large_differences_are_split_without_losing_anything() {
        let gained = (0..300).map(|i| crate::engine::VisibleObject {
            id: format!("g{i:03}"),
            name: String::new(),
            folder: "F".into(),
            properties: Default::default(),
        });
        let lost = (0..300).map(|i| format!("l{i:03}")).collect();
        let u = Update::Objects { revision: 9, gained: gained.collect(), lost };
        let events = update_events(&Shape::Objects { kind: "Metric".into() }, u, 1024);
        let (mut g, mut l) = (0, 0);
        for e in &events {
            let Some(pb::watch_event::Event::VisibleObjectsChanged(c)) = &e.event else { panic!() };
            assert_eq!(c.revision, 9);
            g += c.gained.len();
            l += c.lost.len();
            assert!(c.lost.iter().all(|k| k.r#type == "Metric"));
        }
        assert_eq!((g, l), (300, 300));
        // Only lost: still sent.
        let u = Update::Objects { revision: 10, gained: vec![], lost: vec!["x".into()] };
        let events = update_events(&Shape::Objects { kind: "Metric".into() }, u, 1024);
        assert_eq!(events.len(), 1);
    }

    /// A reload ends every raw subscriber (lagged, unregistered: its stream
    /// drains and sends `ResumeRequired`), and one registering during the
    /// reload is ended at once; afterwards raw subscribers register again.
    #[tokio::test]
    async fn a_reload_ends_raw_subscribers_and_refuses_new_ones_until_it_is_over() {
        let store = crate::store::AnyStore::open("sqlite::memory:").await.unwrap();
        let replica = Arc::new(Replica::open(store, crate::service::Limits::default()).await.unwrap());
        let fanout = Fanout::new(replica, WatchSettings::default());
        let (before, mut before_rx, before_lagged, _) = fanout.register_raw(None);
        assert_eq!(fanout.lock().raw.len(), 1);
        fanout.on_reload(&Reload::Started { from: 3, oldest_retained: 9 });
        assert!(before_lagged.load(Ordering::Acquire), "marked lagged: it ends with ResumeRequired");
        assert!(before_rx.recv().await.is_none(), "its queue is closed");
        let (during, mut during_rx, during_lagged, _) = fanout.register_raw(Some("t".into()));
        assert!(during_lagged.load(Ordering::Acquire) && during_rx.recv().await.is_none(), "ended at once");
        assert!(fanout.lock().raw.is_empty());
        fanout.on_reload(&Reload::Finished { from: 3, to: 12 });
        let (after, _after_rx, after_lagged, _) = fanout.register_raw(None);
        assert!(!after_lagged.load(Ordering::Acquire));
        assert_eq!(fanout.lock().raw.len(), 1);
        assert_eq!(fanout.stats.reloads.load(Ordering::Relaxed), 1);
        drop((before, during, after));
    }

    #[test]
    fn raw_type_filter_keeps_tenant_wide_mutations() {
        use crate::model::{ObjectId, ObjectKey, TenantId};
        let record = ChangeRecord {
            revision: 4,
            tenant: TenantId("t".into()),
            mutations: vec![
                Mutation::SetRestrictedMode { on: true },
                Mutation::DeleteObject(ObjectKey { kind: "Metric".into(), id: ObjectId("m".into()) }),
                Mutation::DeleteObject(ObjectKey { kind: "Script".into(), id: ObjectId("s".into()) }),
            ],
            actor: None,
            committed_at: SystemTime::now(),
        };
        let f = RawFilter { tenant: None, types: BTreeSet::from(["Metric".to_owned()]) };
        assert_eq!(f.change(&record).unwrap().mutations.len(), 2);
        let f = RawFilter { tenant: Some("other".into()), types: BTreeSet::new() };
        assert!(f.change(&record).is_none());
        let f = RawFilter { tenant: Some("t".into()), types: BTreeSet::new() };
        assert_eq!(f.change(&record).unwrap().mutations.len(), 3);
    }
}
