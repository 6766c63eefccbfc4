//! The embedded follower: an upstream authzd's decisions inside your own
//! process.
//!
//! [`Follower::start`] loads every tenant from the upstream and keeps them
//! current from its raw change stream, with the rules every follower has
//! (see the [module](super)): resume by revision after a disconnect, reload
//! when the upstream compacted past the resume point. A check is then a
//! function call on the compiled view ([`Follower::check`]), with no RPC and
//! no allocation, and every answer carries the revision it was made at.
//! [`Follower::check_at_least`] first waits for a revision the caller saw
//! elsewhere (a write's answer, another replica's check), so the follower
//! never answers from before it: a privilege revoked at revision R is never
//! allowed by a check that asks for R.
//!
//! ```no_run
//! # async fn demo() -> Result<(), authzd::follow::FollowerError> {
//! use authzd::engine::CheckRequest;
//! use authzd::follow::{Follower, UpstreamSettings};
//! use std::time::Duration;
//!
//! let follower = Follower::start(UpstreamSettings::new("http://127.0.0.1:50051"))?;
//! follower.ready(Duration::from_secs(10)).await?;
//! let request = CheckRequest {
//!     subject: "agent-1",
//!     application: Some("Web Callback"),
//!     permission: None,
//!     object: None,
//!     privilege: Some("Can Reschedule"),
//!     property: None,
//! };
//! let answer = follower.check("acme", &request);
//! println!("{:?} at revision {}", answer.reason, answer.revision);
//! # Ok(()) }
//! ```

use super::{FIRST_BACKOFF, Feed, FollowerLag, LoadedTenant, MAX_BACKOFF, RawBatch, Upstream, UpstreamSettings};
use crate::engine::{CheckRequest, Decision, Reason, TenantView};
use crate::model::Revision;
use crate::proto::authzd::v1 as pb;
use crate::snapshot::Snapshot;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// A check's answer: the engine's decision, with the revision it was made at.
pub type Checked = Decision;

/// Why the follower could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FollowerError {
    /// The settings do not make a connection (a bad URL, TLS material or token).
    #[error("{0}")]
    Settings(String),
    /// The wanted revision (or the first load) did not arrive in time.
    #[error(
        "revision {wanted} has not arrived from `{upstream}` within {waited_ms} ms (the follower is at {at}){detail}"
    )]
    NotYet {
        /// The upstream's URL.
        upstream: String,
        /// The revision waited for (0: the first load).
        wanted: Revision,
        /// The revision the follower is at.
        at: Revision,
        /// How long it waited.
        waited_ms: u64,
        /// The last load's failure, when there was one (`; last error: ...`).
        detail: String,
    },
    /// [`Follower::close`] was called.
    #[error("the follower was closed")]
    Closed,
}

/// An embedded follower (cheap to clone: one shared state). Dropping every
/// clone, or [`Follower::close`], stops its tasks.
#[derive(Debug, Clone)]
pub struct Follower {
    inner: Arc<Inner>,
    // Dropping the last handle closes the follower (the tasks hold only `Weak`s).
    _closer: Arc<Closer>,
}

#[derive(Debug)]
struct Closer(watch::Sender<bool>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

#[derive(Debug)]
struct Inner {
    upstream: Upstream,
    snapshot: Snapshot,
    state: Mutex<State>,
    /// Bumped after a load: the stream starts over from its revision.
    restart: watch::Sender<u64>,
    /// Bumped when a load is needed (the loader task waits on it).
    load_wanted: watch::Sender<u64>,
    /// The revision applied: what [`Follower::wait_for`] waits on.
    applied: watch::Sender<Revision>,
    closed: watch::Receiver<bool>,
    upstream_head: AtomicU64,
    /// Bumped after every change of any tenant's view: a [`TenantReader`]
    /// looks the view up again only when it moved.
    views_changed: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    /// The last revision applied (or loaded).
    head: Revision,
    needs_load: bool,
    generation: u64,
    loaded_once: bool,
    last_committed_at: Option<SystemTime>,
    last_load_error: Option<String>,
}

impl Follower {
    /// Starts following `settings.url`: loads every tenant, then applies its
    /// changes as they come. Returns at once; [`Follower::ready`] waits for
    /// the first load. Must be called inside a tokio runtime (any flavor).
    pub fn start(settings: UpstreamSettings) -> Result<Follower, FollowerError> {
        let upstream = Upstream::connect(&settings).map_err(FollowerError::Settings)?;
        let (closer, closed) = watch::channel(false);
        let inner = Arc::new(Inner {
            upstream,
            snapshot: Snapshot::new(),
            state: Mutex::new(State { needs_load: true, ..State::default() }),
            restart: watch::channel(0).0,
            load_wanted: watch::channel(0).0,
            applied: watch::channel(0).0,
            closed: closed.clone(),
            upstream_head: AtomicU64::new(0),
            views_changed: AtomicU64::new(0),
        });
        tokio::spawn(load_when_wanted(Arc::downgrade(&inner), inner.load_wanted.subscribe(), closed.clone()));
        tokio::spawn(super::follow(Arc::downgrade(&inner), inner.restart.subscribe(), closed));
        Ok(Follower { inner, _closer: Arc::new(Closer(closer)) })
    }

    /// Waits until the tenants are loaded (at most `timeout`), and returns
    /// the revision loaded. Until then every check denies with
    /// `NOT_LOADED`.
    pub async fn ready(&self, timeout: Duration) -> Result<Revision, FollowerError> {
        let mut loaded = self.inner.applied.subscribe();
        let started = std::time::Instant::now();
        let waited = tokio::time::timeout(timeout, async {
            loop {
                if self.inner.snapshot.is_loaded() {
                    return Ok(());
                }
                if *self.inner.closed.borrow() {
                    return Err(FollowerError::Closed);
                }
                if loaded.changed().await.is_err() {
                    return Err(FollowerError::Closed);
                }
            }
        })
        .await;
        match waited {
            Ok(Ok(())) => Ok(self.revision()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(self.not_yet(0, started.elapsed())),
        }
    }

    /// True once the tenants are loaded.
    pub fn is_ready(&self) -> bool {
        self.inner.snapshot.is_loaded()
    }

    /// The revision of the newest batch applied (or of the load).
    pub fn revision(&self) -> Revision {
        self.inner.snapshot.revision()
    }

    /// How far behind the upstream this follower is.
    pub fn lag(&self) -> FollowerLag {
        let s = self.inner.state();
        FollowerLag::of(
            self.inner.upstream_head.load(Ordering::Relaxed),
            s.head,
            s.last_committed_at,
            SystemTime::now(),
        )
    }

    /// Checks `request` in `tenant` on the current view: a function call,
    /// no allocation. Fails closed: an unknown tenant is `UNKNOWN_TENANT`,
    /// and before the first load every check is `NOT_LOADED`.
    pub fn check(&self, tenant: &str, request: &CheckRequest<'_>) -> Checked {
        if !self.inner.snapshot.is_loaded() {
            return Decision::new(Reason::NotLoaded, self.revision());
        }
        self.inner.snapshot.check(tenant, request)
    }

    /// Waits for `at_least_revision` (at most `timeout`), then checks. The
    /// answer is never older than that revision.
    pub async fn check_at_least(
        &self,
        tenant: &str,
        request: &CheckRequest<'_>,
        at_least_revision: Revision,
        timeout: Duration,
    ) -> Result<Checked, FollowerError> {
        self.wait_for(at_least_revision, timeout).await?;
        Ok(self.check(tenant, request))
    }

    /// Waits until the follower has applied `revision` (at most `timeout`).
    pub async fn wait_for(&self, revision: Revision, timeout: Duration) -> Result<(), FollowerError> {
        let reached = |at: &Revision| *at >= revision;
        if self.inner.snapshot.is_loaded() && reached(&self.revision()) {
            return Ok(());
        }
        let mut applied = self.inner.applied.subscribe();
        let mut closed = self.inner.closed.clone();
        let started = std::time::Instant::now();
        let waited = tokio::time::timeout(timeout, async {
            tokio::select! {
                r = applied.wait_for(|at| reached(at)) => r.map(|_| ()).map_err(|_| FollowerError::Closed),
                _ = closed.wait_for(|c| *c) => Err(FollowerError::Closed),
            }
        })
        .await;
        match waited {
            Ok(r) => r,
            Err(_) => Err(self.not_yet(revision, started.elapsed())),
        }
    }

    /// The tenant's current compiled view, for the engine's other questions
    /// (listing, effective privileges, explanations).
    pub fn view(&self, tenant: &str) -> Result<Arc<TenantView>, Reason> {
        if !self.inner.snapshot.is_loaded() {
            return Err(Reason::NotLoaded);
        }
        self.inner.snapshot.view(tenant)
    }

    /// A reader of `tenant` for one thread (or task): its
    /// [`TenantReader::check`] keeps the tenant's view and looks it up again
    /// only after a change arrived (one atomic load per check otherwise), so
    /// a check costs what the engine's does.
    pub fn reader(&self, tenant: &str) -> TenantReader {
        TenantReader {
            follower: self.clone(),
            tenant: tenant.to_owned(),
            seen: (u64::MAX, 0),
            view: Err(Reason::NotLoaded),
        }
    }

    /// The tenants held, in id order.
    pub fn tenants(&self) -> Vec<String> {
        let mut ids = self.inner.snapshot.tenant_ids();
        ids.sort();
        ids
    }

    /// Stops following (every clone of this follower stops).
    pub fn close(&self) {
        self._closer.0.send_replace(true);
    }

    fn not_yet(&self, wanted: Revision, waited: Duration) -> FollowerError {
        let detail = match &self.inner.state().last_load_error {
            Some(e) => format!("; last error: {e}"),
            None => String::new(),
        };
        FollowerError::NotYet {
            upstream: self.inner.upstream.url().to_owned(),
            wanted,
            at: self.revision(),
            waited_ms: u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
            detail,
        }
    }
}

/// One thread's view of one tenant of a [`Follower`] ([`Follower::reader`]).
#[derive(Debug)]
pub struct TenantReader {
    follower: Follower,
    tenant: String,
    /// The change count and the snapshot revision the view was taken at
    /// (`u64::MAX`: never taken).
    seen: (u64, Revision),
    view: Result<Arc<TenantView>, Reason>,
}

impl TenantReader {
    /// Checks `request` on the tenant's newest view, as [`Follower::check`]
    /// does (the same answers, failing closed the same way).
    pub fn check(&mut self, request: &CheckRequest<'_>) -> Checked {
        let inner = &self.follower.inner;
        // The revision too: the snapshot advances it right after it swaps a
        // view in, before the change count moves, and `wait_for` returns on
        // it; a reader asked after that must see the view.
        let changed = (inner.views_changed.load(Ordering::Acquire), inner.snapshot.revision());
        if changed != self.seen {
            self.seen = changed;
            self.view = self.follower.view(&self.tenant);
        }
        match &self.view {
            Ok(v) => v.check(request),
            Err(reason) => Decision::new(*reason, inner.snapshot.revision()),
        }
    }

    /// The tenant this reader reads.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks that every tenant must be loaded again, and wakes the loader.
    fn want_load(&self) {
        self.state().needs_load = true;
        self.load_wanted.send_modify(|n| *n += 1);
    }

    /// Installs a load: every tenant exported, the rest removed; the stream
    /// then starts over from `from`.
    fn install_load(&self, from: Revision, tenants: Vec<LoadedTenant>) {
        {
            let _w = self.snapshot.write_lock();
            let keep: HashSet<String> = tenants.iter().map(|(id, _, _)| id.0.clone()).collect();
            for old in self.snapshot.tenant_ids() {
                if !keep.contains(&old) {
                    self.snapshot.remove(&old, from);
                }
            }
            for (_, revision, config) in tenants {
                self.snapshot.install(config, revision);
            }
            self.snapshot.advance(from);
            self.snapshot.mark_loaded();
            self.views_changed.fetch_add(1, Ordering::Release);
        }
        let generation = {
            let mut s = self.state();
            s.head = from;
            s.needs_load = false;
            s.generation += 1;
            s.loaded_once = true;
            s.last_load_error = None;
            s.generation
        };
        self.upstream_head.fetch_max(from, Ordering::Relaxed);
        self.applied.send_replace(from);
        self.restart.send_replace(generation);
        tracing::info!(upstream = %self.upstream.url(), revision = from, "embedded follower: tenants loaded; following the changes from there");
    }

    /// Applies one batch (validation and compilation on the blocking pool:
    /// a large tenant's view takes milliseconds to build).
    async fn apply(self: Arc<Self>, batch: RawBatch) {
        let revision = batch.revision;
        let me = Arc::clone(&self);
        let applied = tokio::task::spawn_blocking(move || {
            let _w = me.snapshot.write_lock();
            match me.snapshot.prepare(&batch.tenant, &batch.mutations) {
                Ok(next) => {
                    me.snapshot.install(next, revision);
                    me.views_changed.fetch_add(1, Ordering::Release);
                    Ok(batch.committed_at)
                }
                Err(e) => {
                    me.snapshot.advance(revision);
                    Err((batch.tenant, e))
                }
            }
        })
        .await;
        let committed_at = match applied {
            Ok(Ok(at)) => Some(at),
            Ok(Err((tenant, e))) => {
                // As a replica does with a stored batch that no longer validates.
                tracing::warn!(upstream = %self.upstream.url(), revision, tenant = %tenant, error = %e, "embedded follower: skipping a batch that does not validate here");
                None
            }
            Err(e) => {
                tracing::error!(upstream = %self.upstream.url(), revision, error = %e, "embedded follower: applying a batch failed; reloading");
                self.want_load();
                return;
            }
        };
        {
            let mut s = self.state();
            s.head = s.head.max(revision);
            if committed_at.is_some() {
                s.last_committed_at = committed_at;
            }
        }
        self.upstream_head.fetch_max(revision, Ordering::Relaxed);
        self.applied.send_replace(revision);
    }
}

impl Feed for Inner {
    fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    fn resume_point(&self) -> Option<(u64, Revision)> {
        let s = self.state();
        (!s.needs_load && s.loaded_once).then_some((s.generation, s.head))
    }

    async fn receive(self: &Arc<Self>, generation: u64, event: pb::watch_event::Event) -> bool {
        use pb::watch_event::Event;
        match event {
            Event::RawChange(c) => {
                let batch = match RawBatch::from_pb(c) {
                    Ok(b) => b,
                    Err(e) => {
                        // A batch this build cannot read: reload rather than skip it.
                        tracing::warn!(upstream = %self.upstream.url(), error = %e, "embedded follower: cannot read a batch from the upstream; reloading");
                        self.want_load();
                        return false;
                    }
                };
                {
                    let s = self.state();
                    if s.generation != generation || s.needs_load {
                        return false;
                    }
                    if batch.revision <= s.head {
                        return true;
                    }
                }
                Arc::clone(self).apply(batch).await;
            }
            Event::Checkpoint(c) => {
                self.upstream_head.fetch_max(c.revision, Ordering::Relaxed);
            }
            Event::RevisionTooOld(t) => {
                tracing::warn!(
                    upstream = %self.upstream.url(),
                    requested = t.requested_revision,
                    oldest = t.oldest_available_revision,
                    "embedded follower: the upstream no longer holds the changes after revision {}; reloading the tenants",
                    t.requested_revision
                );
                self.want_load();
                return false;
            }
            Event::ResumeRequired(_) => return false,
            _ => {}
        }
        true
    }

    fn ended(&self) {}
}

/// The loader task: loads every tenant whenever the follower needs it (at
/// start, and after the upstream said the resume point is gone), retrying
/// with backoff while the upstream cannot be reached.
async fn load_when_wanted(inner: Weak<Inner>, mut wanted: watch::Receiver<u64>, mut closed: watch::Receiver<bool>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let Some(me) = inner.upgrade() else { return };
        wanted.mark_unchanged();
        if !me.state().needs_load {
            drop(me);
            tokio::select! {
                _ = wanted.changed() => {}
                _ = closed.wait_for(|c| *c) => return,
            }
            continue;
        }
        let upstream = me.upstream.clone();
        drop(me);
        let loaded = tokio::select! {
            r = upstream.load_all() => r,
            _ = closed.wait_for(|c| *c) => return,
        };
        let Some(me) = inner.upgrade() else { return };
        let failed = match loaded {
            // Compiling every tenant's view takes a while: on the blocking pool.
            Ok((from, tenants)) => tokio::task::spawn_blocking(move || me.install_load(from, tenants))
                .await
                .err()
                .map(|e| format!("installing the load failed: {e}")),
            Err(e) => Some(e.to_string()),
        };
        let Some(error) = failed else {
            backoff = FIRST_BACKOFF;
            continue;
        };
        tracing::warn!(upstream = %upstream.url(), error = %error, retry_in_ms = backoff.as_millis() as u64, "embedded follower: cannot load the tenants");
        if let Some(me) = inner.upgrade() {
            me.state().last_load_error = Some(error);
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = closed.wait_for(|c| *c) => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
