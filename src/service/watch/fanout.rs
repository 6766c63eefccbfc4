//! The subscriber registry ([`Fanout`]): what the replica publishes, queued for every stream.

use crate::model::{Mutation, Revision};
use crate::proto::authzd::v1 as pb;
use crate::replica::{Applied, LockChange, Reload, Replica};
use crate::service::convert;
use crate::store::{ChangeRecord, LockInfo};
use crate::watch::Hub;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};

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
pub(super) enum Side {
    Lock(Arc<pb::LockEvent>),
    Restricted { revision: Revision, tenant: String, on: bool },
}

impl Side {
    pub(super) fn revision(&self) -> Revision {
        match self {
            Side::Lock(l) => l.revision,
            Side::Restricted { revision, .. } => *revision,
        }
    }

    pub(super) fn event(&self) -> pb::WatchEvent {
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
pub(super) enum RawItem {
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

/// Registered subscribers and the last revisions published to them.
#[derive(Debug, Default)]
struct Subscribers {
    /// The last record sent to the raw streams.
    published: Revision,
    /// The last view sent to the hub (computed streams): at most `published`,
    /// as a write's raw change goes out before its view is compiled.
    viewed: Revision,
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
    pub(super) replica: Arc<Replica>,
    pub(super) hub: Arc<Hub>,
    pub(super) settings: WatchSettings,
    subscribers: Mutex<Subscribers>,
    next_id: AtomicU64,
    pub(super) closing: watch::Sender<bool>,
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
            subscribers: Mutex::new(Subscribers {
                published: replica.snapshot().revision(),
                viewed: replica.snapshot().revision(),
                ..Subscribers::default()
            }),
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
        replica.on_batch(move |applied| {
            if let Some(f) = weak.upgrade() {
                f.on_batch(applied);
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

    pub(super) fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }

    /// Sends a `Checkpoint` with the last published revision to every stream
    /// that has room (a full raw queue gets a resume anyway).
    pub fn checkpoint(&self) {
        let mut subs = self.lock();
        let revision = subs.published;
        // Computed streams are told of the views they have: a checkpoint at
        // R only once the view of R was published.
        self.hub.checkpoint(subs.viewed);
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

    /// An installed batch: its side events, then its view to the hub.
    fn on_batch(&self, a: &Applied<'_>) {
        let Some(state) = a.state else { return };
        let mut subs = self.lock();
        if a.mutations.iter().any(|m| matches!(m, Mutation::SetRestrictedMode { .. })) {
            let event =
                Side::Restricted { revision: a.revision, tenant: a.tenant.0.clone(), on: state.config.restricted_mode };
            subs.side.retain(|_, s| s.tenant != a.tenant.0 || offer(&s.tx, &s.lagged, event.clone()));
        }
        // After the side events of the same revision: a stream sends those first.
        self.hub.publish(&state.view, a.mutations);
        subs.viewed = subs.viewed.max(a.revision);
    }

    /// A changelog record, for the raw streams (this replica's own writes as
    /// soon as they are committed, before their view is compiled).
    fn on_record(&self, a: &Applied<'_>) {
        let mut subs = self.lock();
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
            LockChange::Released(l) => (pb::LockEventKind::Released, l, self.replica.clock().now()),
            LockChange::Expired(l) => (pb::LockEventKind::Expired, l, l.expires_at),
        };
        let mut subs = self.lock();
        let event = Arc::new(lock_event(subs.viewed, kind, l, at));
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

    pub(super) fn register_raw(
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

    pub(super) fn register_side(
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
pub(super) struct Registration {
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
pub(super) struct OpenStream(Arc<Fanout>);

impl OpenStream {
    pub(super) fn new(f: &Arc<Fanout>) -> Self {
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// A reload ends every raw subscriber (lagged, unregistered: its stream
    /// drains and sends `ResumeRequired`), and one registering during the
    /// reload is ended at once; afterwards raw subscribers register again.
    #[tokio::test]
    async fn a_reload_ends_raw_subscribers_and_refuses_new_ones_until_it_is_over() {
        let store = crate::store::AnyStore::open("sqlite::memory:").await.unwrap();
        let replica = Arc::new(Replica::open(store, crate::replica::Limits::default()).await.unwrap());
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
}
