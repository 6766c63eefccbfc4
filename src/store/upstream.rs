//! The store of a *follower*: another authzd instead of a database.
//!
//! A follower (`authzd serve --follow URL`) holds no database connection.
//! It loads each tenant from the upstream's `Export` (the tenant file at the
//! revision of its last change), then follows the upstream's raw `Watch`
//! from the revision of that load: every committed batch, in revision order,
//! with the edit-lock events between them. The upstream is a replica on
//! PostgreSQL or SQLite, or another follower, so fleets can be tiered: a few
//! replicas hold database connections, thousands of sidecars follow them
//! over one gRPC stream each, as service-mesh proxies follow their control
//! plane.
//!
//! To the replica this is a [`Store`] like the others, read-only:
//! - [`Store::read_since`] answers from the batches received (the last
//!   [`UpstreamSettings::retain`] of them, so the follower's own raw
//!   subscribers can resume too); before them, or after the upstream said the
//!   resume point is gone (`RevisionTooOld`), it answers
//!   [`StoreError::Compacted`], and the replica reloads: the next
//!   [`Store::oldest_retained`] exports every tenant again and restarts the
//!   stream from there, exactly as a replica behind a compaction reloads
//!   from checkpoints;
//! - notifications ([`AnyStore::subscribe`](super::AnyStore::subscribe))
//!   wake the replica for every batch and lock event, so a change is applied
//!   as soon as it arrives;
//! - after a disconnect the stream resumes from the last revision received,
//!   with backoff (100 ms doubling to 5 s): nothing is lost or applied twice;
//! - writes, lock calls and checkpoints are not the follower's to store:
//!   the admin service forwards write-like calls to the upstream with the
//!   caller's credentials ([`UpstreamStore::forward`]) and waits until the
//!   change has come back down the stream; checkpoints and compaction are
//!   the upstream's business (no-ops here).

use super::{
    ChangeRecord, Compaction, EncodedConfig, LockEvent, LockEventKind, LockInfo, LockOutcome, Notice, Notifications,
    Store, StoreError, StoreResult,
};
use crate::follow::{Feed as StreamFeed, LoadError, RawBatch, Upstream};
use crate::model::{Mutation, PersonId, Revision, TenantConfig, TenantId};
use crate::proto::authzd::v1 as pb;
use crate::proto::authzd::v1::admin_service_client::AdminServiceClient;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

pub use crate::follow::{FollowerLag, UpstreamSettings};

/// A follower's view of its upstream (cheap to clone: one shared state).
#[derive(Debug, Clone)]
pub struct UpstreamStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    upstream: Upstream,
    retain: usize,
    feed: Mutex<Feed>,
    /// Bumped when the stream must start over from `feed.head` (after a load).
    restart: watch::Sender<u64>,
    closed: watch::Sender<bool>,
    listeners: Mutex<Vec<mpsc::Sender<Notice>>>,
    /// The upstream's newest revision, as its checkpoints and batches say.
    upstream_head: AtomicU64,
}

/// What the stream has brought.
#[derive(Debug, Default)]
struct Feed {
    /// Batches after `base` are held (the oldest first); none before.
    base: Revision,
    records: VecDeque<ChangeRecord>,
    /// The last revision received (or loaded).
    head: Revision,
    /// The tenants must be exported again before anything is read (at
    /// start, and after the upstream said the resume point is gone).
    needs_load: bool,
    /// The stream generation: a load starts a new one.
    generation: u64,
    /// Tenants exported by the last load, until the replica takes them.
    loaded: Option<Vec<(TenantId, Revision, TenantConfig)>>,
    /// Lock events received, numbered from 1.
    lock_events: VecDeque<LockEvent>,
    lock_seq: u64,
    /// When the last batch received was committed upstream.
    last_committed_at: Option<SystemTime>,
}

fn read_only(what: &str) -> StoreError {
    StoreError::Other(format!("this replica follows an upstream authzd: {what} is done by the upstream"))
}

impl UpstreamStore {
    /// Connects (lazily) to the upstream and starts following it. The first
    /// [`Store::oldest_retained`] (the replica's load) exports the tenants.
    pub fn open(settings: &UpstreamSettings) -> StoreResult<UpstreamStore> {
        let upstream = Upstream::connect(settings).map_err(StoreError::Other)?;
        let inner = Arc::new(Inner {
            upstream,
            retain: settings.retain.max(1),
            feed: Mutex::new(Feed { needs_load: true, ..Feed::default() }),
            restart: watch::channel(0).0,
            closed: watch::channel(false).0,
            listeners: Mutex::new(Vec::new()),
            upstream_head: AtomicU64::new(0),
        });
        tokio::spawn(crate::follow::follow(
            Arc::downgrade(&inner),
            inner.restart.subscribe(),
            inner.closed.subscribe(),
        ));
        Ok(UpstreamStore { inner })
    }

    /// The upstream's URL.
    pub fn display_url(&self) -> &str {
        self.inner.upstream.url()
    }

    /// How far behind the upstream this follower is, now (the wall clock's:
    /// the upstream's commit times are its wall clock's).
    pub fn lag(&self) -> FollowerLag {
        let f = self.inner.feed();
        FollowerLag::of(
            self.inner.upstream_head.load(Ordering::Relaxed),
            f.head,
            f.last_committed_at,
            SystemTime::now(),
        )
    }

    /// Wake-ups for the replica's tailer: every batch and lock event received.
    pub fn subscribe(&self) -> Notifications {
        let (tx, rx) = mpsc::channel(64);
        self.inner.listeners.lock().unwrap_or_else(|e| e.into_inner()).push(tx);
        Notifications::from_receiver(rx)
    }

    /// Stops following.
    pub fn close(&self) {
        self.inner.closed.send_replace(true);
    }

    /// Sends a write-like admin call to the upstream with the caller's
    /// credential (its `authorization` header; the follower's own upstream
    /// token when the caller sent none), and returns the upstream's answer
    /// as it is, error or not; [`StoreError::Unavailable`] when the call
    /// never reached the upstream (a transport error).
    pub async fn forward<Req, Resp, F, Fut>(
        &self,
        request: Request<Req>,
        call: F,
    ) -> StoreResult<Result<Response<Resp>, Status>>
    where
        F: FnOnce(AdminServiceClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let credential =
            request.metadata().get("authorization").cloned().or_else(|| self.inner.upstream.token().cloned());
        let mut forwarded = Request::new(request.into_inner());
        if let Some(c) = credential {
            forwarded.metadata_mut().insert("authorization", c);
        }
        match call(self.inner.upstream.admin(), forwarded).await {
            Err(s)
                if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown)
                    && s.message().contains("transport") =>
            {
                Err(StoreError::Unavailable {
                    url: self.inner.upstream.url().to_owned(),
                    message: s.message().to_owned(),
                })
            }
            answer => Ok(answer),
        }
    }

    /// Exports every tenant of the upstream and starts the stream over from
    /// the revision of the tenant list.
    async fn load(&self) -> StoreResult<Revision> {
        let (from, loaded) = self.inner.upstream.load_all().await.map_err(|e| match e {
            LoadError::Unavailable { url, message } => StoreError::Unavailable { url, message },
            LoadError::Unreadable { revision, .. } => StoreError::Corrupt { revision, message: e.to_string() },
        })?;
        let generation = {
            let mut f = self.inner.feed();
            f.base = from;
            f.head = from;
            f.records.clear();
            f.needs_load = false;
            f.generation += 1;
            f.loaded = Some(loaded);
            f.generation
        };
        self.inner.upstream_head.fetch_max(from, Ordering::Relaxed);
        self.inner.restart.send_replace(generation);
        tracing::info!(upstream = %self.inner.upstream.url(), revision = from, "tenants loaded from the upstream; following its changes from there");
        Ok(from)
    }
}

impl Inner {
    fn feed(&self) -> std::sync::MutexGuard<'_, Feed> {
        self.feed.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self, notice: Notice) {
        self.listeners.lock().unwrap_or_else(|e| e.into_inner()).retain(|l| match l.try_send(notice) {
            Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }

    /// Takes one event of the stream of `generation`; false when the stream
    /// must end (a newer generation, or the upstream said to reload).
    fn take(&self, generation: u64, event: pb::watch_event::Event) -> bool {
        use pb::watch_event::Event;
        match event {
            Event::RawChange(c) => {
                let record = match record(c) {
                    Ok(r) => r,
                    Err(e) => {
                        // A batch this build cannot read: reload rather than skip it.
                        tracing::warn!(upstream = %self.upstream.url(), error = %e, "cannot read a batch from the upstream; reloading");
                        self.feed().needs_load = true;
                        self.notify(Notice::Reconnected);
                        return false;
                    }
                };
                let revision = record.revision;
                {
                    let mut f = self.feed();
                    if f.generation != generation {
                        return false;
                    }
                    if revision <= f.head {
                        return true;
                    }
                    f.head = revision;
                    f.last_committed_at = Some(record.committed_at);
                    f.records.push_back(record);
                    while f.records.len() > self.retain {
                        if let Some(old) = f.records.pop_front() {
                            f.base = old.revision;
                        }
                    }
                }
                self.upstream_head.fetch_max(revision, Ordering::Relaxed);
                self.notify(Notice::Revision(revision));
            }
            Event::Lock(l) => {
                let Some(kind) = lock_kind(l.kind) else { return true };
                let object = l.object.map(|o| format!("{}/{}", o.r#type, o.id)).unwrap_or_default();
                // The upstream's time of the event. An authzd upstream always
                // sends one; without it, the time of receipt: no caller (and
                // no replica clock) is at hand on this stream task, and
                // `follow::RawBatch::from_pb` stamps a batch without a commit
                // time the same way.
                let at = l.at.and_then(|t| SystemTime::try_from(t).ok()).unwrap_or_else(SystemTime::now);
                let seq = {
                    let mut f = self.feed();
                    f.lock_seq += 1;
                    let seq = f.lock_seq;
                    let lock = LockInfo {
                        tenant: TenantId(l.tenant),
                        object,
                        holder: PersonId(l.holder),
                        since: at,
                        expires_at: at,
                    };
                    f.lock_events.push_back(LockEvent { seq, kind, lock, at });
                    while f.lock_events.len() > self.retain {
                        f.lock_events.pop_front();
                    }
                    seq
                };
                self.notify(Notice::LockEvent(seq));
            }
            Event::Checkpoint(c) => {
                self.upstream_head.fetch_max(c.revision, Ordering::Relaxed);
            }
            Event::RevisionTooOld(t) => {
                tracing::warn!(
                    upstream = %self.upstream.url(),
                    requested = t.requested_revision,
                    oldest = t.oldest_available_revision,
                    "the upstream no longer holds the changes after revision {}: reloading the tenants",
                    t.requested_revision
                );
                self.feed().needs_load = true;
                self.notify(Notice::Reconnected);
                return false;
            }
            Event::ResumeRequired(r) => {
                tracing::info!(upstream = %self.upstream.url(), revision = r.revision, "the upstream asked to resume; resuming");
                return false;
            }
            _ => {}
        }
        true
    }
}

fn lock_kind(kind: i32) -> Option<LockEventKind> {
    match pb::LockEventKind::try_from(kind).ok()? {
        pb::LockEventKind::Acquired => Some(LockEventKind::Acquired),
        pb::LockEventKind::Released => Some(LockEventKind::Released),
        pb::LockEventKind::Expired => Some(LockEventKind::Expired),
        pb::LockEventKind::Unspecified => None,
    }
}

/// A raw change as a changelog record.
fn record(c: pb::RawChange) -> Result<ChangeRecord, String> {
    let b = RawBatch::from_pb(c)?;
    Ok(ChangeRecord {
        revision: b.revision,
        tenant: b.tenant,
        mutations: b.mutations,
        actor: b.actor,
        committed_at: b.committed_at,
    })
}

impl StreamFeed for Inner {
    fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    fn resume_point(&self) -> Option<(u64, Revision)> {
        let f = self.feed();
        // Until the replica's load (the next `oldest_retained`): nothing to resume.
        (!f.needs_load && f.generation != 0).then_some((f.generation, f.head))
    }

    async fn receive(self: &Arc<Self>, generation: u64, event: pb::watch_event::Event) -> bool {
        self.take(generation, event)
    }

    fn ended(&self) {
        // Wake the replica to read what the stream brought.
        self.notify(Notice::Reconnected);
    }
}

impl Store for UpstreamStore {
    async fn head(&self) -> StoreResult<Revision> {
        Ok(self.inner.feed().head)
    }

    async fn append(
        &self,
        _tenant: &TenantId,
        _mutations: &[Mutation],
        _actor: Option<&str>,
        _expected_head: Option<Revision>,
        _at: SystemTime,
    ) -> StoreResult<Revision> {
        Err(read_only("writing"))
    }

    async fn read_since(&self, after: Revision, limit: u32) -> StoreResult<Vec<ChangeRecord>> {
        let f = self.inner.feed();
        if f.needs_load {
            return Err(StoreError::Compacted { after, oldest_retained: f.head.max(after) });
        }
        if after < f.base {
            return Err(StoreError::Compacted { after, oldest_retained: f.base });
        }
        // Records are in revision order: skip those at or before `after`.
        let start = f.records.partition_point(|r| r.revision <= after);
        Ok(f.records.iter().skip(start).take(limit as usize).cloned().collect())
    }

    async fn oldest_retained(&self) -> StoreResult<Revision> {
        let (needs_load, base) = {
            let f = self.inner.feed();
            (f.needs_load, f.base)
        };
        if needs_load { self.load().await } else { Ok(base) }
    }

    async fn put_checkpoint(
        &self,
        _tenant: &TenantId,
        _revision: Revision,
        _config: &TenantConfig,
        _at: SystemTime,
    ) -> StoreResult<()> {
        Ok(())
    }

    async fn put_encoded_checkpoint(
        &self,
        _tenant: &TenantId,
        _revision: Revision,
        _config: &EncodedConfig,
        _at: SystemTime,
    ) -> StoreResult<()> {
        // The upstream keeps the checkpoints.
        Ok(())
    }

    async fn load_checkpoints(&self) -> StoreResult<Vec<(TenantId, Revision, TenantConfig)>> {
        let taken = self.inner.feed().loaded.take();
        match taken {
            Some(l) => Ok(l),
            None => {
                self.load().await?;
                Ok(self.inner.feed().loaded.take().unwrap_or_default())
            }
        }
    }

    async fn checkpoint_revisions(&self) -> StoreResult<Vec<(TenantId, Revision)>> {
        Ok(Vec::new())
    }

    async fn revision_before(&self, _time: SystemTime) -> StoreResult<Revision> {
        Ok(0)
    }

    async fn compact_until(&self, _before: Revision, _lock_events_before: SystemTime) -> StoreResult<Compaction> {
        let f = self.inner.feed();
        Ok(Compaction { records: 0, lock_events: 0, oldest_retained: f.base })
    }

    async fn acquire_lock(
        &self,
        _tenant: &TenantId,
        _object: &str,
        _person: &PersonId,
        _idle_timeout: Duration,
        _now: SystemTime,
    ) -> StoreResult<LockOutcome> {
        Err(read_only("edit locking"))
    }

    async fn renew_lock(&self, _token: &str, _now: SystemTime) -> StoreResult<Option<SystemTime>> {
        Err(read_only("edit locking"))
    }

    async fn release_lock(&self, _token: &str, _at: SystemTime) -> StoreResult<Option<LockEvent>> {
        Err(read_only("edit locking"))
    }

    async fn expire_locks(&self, _now: SystemTime) -> StoreResult<Vec<LockEvent>> {
        // The upstream expires locks; their expiry arrives as an event.
        Ok(Vec::new())
    }

    async fn lock_events_head(&self) -> StoreResult<u64> {
        Ok(self.inner.feed().lock_seq)
    }

    async fn read_lock_events(&self, after: u64, limit: u32) -> StoreResult<Vec<LockEvent>> {
        let f = self.inner.feed();
        Ok(f.lock_events.iter().filter(|e| e.seq > after).take(limit as usize).cloned().collect())
    }

    async fn list_locks(&self, _now: SystemTime) -> StoreResult<Vec<LockInfo>> {
        Ok(Vec::new())
    }
}
