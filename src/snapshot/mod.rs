//! The in-memory snapshot: one immutable [`TenantView`] per tenant, held in a
//! `DashMap` and replaced whole when a write batch is applied.
//!
//! `DashMap` is atomic per key only, so the unit of atomicity is the tenant's
//! whole view (ARCHITECTURE habit 9): a write builds the next view beside the
//! current one and swaps the `Arc` in one insert. A reader takes one `Arc`
//! and answers every part of its request from it, so no decision can see part
//! of a batch, and every decision names the revision it was made at.
//!
//! Writers are serialized by one mutex (writes are rare); the configuration
//! each view was built from is kept beside it so the next batch applies to it.
//!
//! A replaced state is kept a little longer when a paged listing began on it
//! ([`TenantState::mark_listed`]): a listing's continuation token names the
//! revision of its first page, and every later page is answered from that
//! same state ([`Snapshot::state_at`]) for as long as [`PageRetention`] keeps
//! it. Kept states share all but what their batch changed with the current
//! one (the incremental views' layers are `Arc`s); a batch that rebuilds the
//! view (objects, folders, catalogs) leaves a kept state sharing nothing.

use crate::engine::{CheckRequest, Decision, Reason, TenantView};
use crate::model::{ModelResult, Mutation, Revision, TenantConfig, TenantId};
use dashmap::DashMap;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, mpsc};
use std::time::{Duration, Instant};

/// What the graveyard frees.
type Corpse = Box<dyn Send>;

/// Frees replaced states on a background thread; if the thread cannot be
/// started, they are freed where they are replaced.
static GRAVEYARD: LazyLock<Option<Mutex<mpsc::Sender<Corpse>>>> = LazyLock::new(|| {
    let (tx, rx) = mpsc::channel::<Corpse>();
    std::thread::Builder::new().name("authzd-retire".into()).spawn(move || rx.into_iter().for_each(drop)).ok()?;
    Some(Mutex::new(tx))
});

fn retire(old: impl Send + 'static) {
    match GRAVEYARD.as_ref() {
        Some(tx) => {
            let tx = tx.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(mpsc::SendError(old)) = tx.send(Box::new(old)) {
                drop(old);
            }
        }
        None => drop(old),
    }
}

/// Lets go of `view`: when this is its last reference, it is freed on the
/// background thread (a large tenant's view takes tens of milliseconds to
/// drop), else the count just goes down. Holders of views other than the
/// snapshot (the watch hub, its subscribers) let go through this.
pub fn release(view: Arc<TenantView>) {
    if Arc::strong_count(&view) == 1 {
        retire(view);
    }
}

/// A tenant's configuration and the view compiled from it, at one revision.
#[derive(Debug, Clone)]
pub struct TenantState {
    /// The configuration (what the next batch applies to, and exports).
    pub config: Arc<TenantConfig>,
    /// The compiled view (what decisions read).
    pub view: Arc<TenantView>,
    /// Whether a paged listing began on this state and may continue: only
    /// such a state is kept for continuations once it is replaced.
    listed: Arc<AtomicBool>,
}

impl TenantState {
    /// A state of `config` and the view compiled from it (no listing began on it).
    pub fn new(config: Arc<TenantConfig>, view: Arc<TenantView>) -> Self {
        TenantState { config, view, listed: Arc::default() }
    }

    /// Notes that a listing's first page was read from this state and more
    /// pages follow: once replaced, it is kept for their continuations
    /// ([`PageRetention`]). A state no listing needs is freed when replaced.
    pub fn mark_listed(&self) {
        if !self.listed.load(Ordering::Relaxed) {
            self.listed.store(true, Ordering::Release);
        }
    }

    fn is_listed(&self) -> bool {
        self.listed.load(Ordering::Acquire)
    }
}

/// How long a replaced tenant state stays readable by the continuations of
/// listings that began on it: of each tenant, the last `revisions` replaced
/// states that a listing began on, each for `ttl` after it was replaced,
/// whichever ends first. States no listing began on are freed when replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRetention {
    /// Replaced states kept per tenant (0: none; a continuation then needs the
    /// current revision).
    pub revisions: usize,
    /// How long a replaced state is kept.
    pub ttl: Duration,
}

impl PageRetention {
    /// Whether any replaced state is kept at all (not with 0 revisions or no time).
    pub fn keeps_any(&self) -> bool {
        self.revisions > 0 && !self.ttl.is_zero()
    }

    /// How often the server drops kept states past their time: a quarter of
    /// `ttl`, between 100 ms and 5 s (so a state is freed at most 5 s late).
    pub fn sweep_every(&self) -> Duration {
        (self.ttl / 4).clamp(Duration::from_millis(100), Duration::from_secs(5))
    }
}

impl Default for PageRetention {
    fn default() -> Self {
        PageRetention { revisions: 16, ttl: Duration::from_secs(60) }
    }
}

/// A replaced state, kept for listing continuations.
#[derive(Debug)]
struct Kept {
    state: TenantState,
    replaced: Instant,
}

/// Every tenant's current state.
#[derive(Debug, Default)]
pub struct Snapshot {
    tenants: DashMap<String, TenantState>,
    loaded: AtomicBool,
    revision: AtomicU64,
    writer: Mutex<()>,
    retention: PageRetention,
    /// Replaced states by tenant, newest first (written under the writer lock).
    kept: Mutex<HashMap<String, VecDeque<Kept>>>,
}

impl Snapshot {
    /// An empty snapshot, not yet loaded: every decision is `NOT_LOADED`.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty snapshot that keeps replaced states as `retention` says.
    pub fn with_page_retention(retention: PageRetention) -> Self {
        Snapshot { retention, ..Self::default() }
    }

    /// How replaced states are kept for listing continuations.
    pub fn page_retention(&self) -> PageRetention {
        self.retention
    }

    fn kept(&self) -> MutexGuard<'_, HashMap<String, VecDeque<Kept>>> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tenant's state whose view is at exactly `revision`: the current one,
    /// or a replaced one still kept. `Ok(None)`: no longer kept (or never
    /// existed here), so a listing begun there cannot continue.
    pub fn state_at(&self, tenant: &str, revision: Revision) -> Result<Option<TenantState>, Reason> {
        if !self.is_loaded() {
            return Err(Reason::NotLoaded);
        }
        let current = self.state(tenant).ok_or(Reason::UnknownTenant)?;
        if current.view.revision() == revision {
            return Ok(Some(current));
        }
        let mut kept = self.kept();
        let Some(states) = kept.get_mut(tenant) else { return Ok(None) };
        self.expire(states, Instant::now());
        Ok(states.iter().find(|k| k.state.view.revision() == revision).map(|k| k.state.clone()))
    }

    /// Drops the kept states past their time (oldest last).
    fn expire(&self, states: &mut VecDeque<Kept>, now: Instant) {
        while states.back().is_some_and(|k| now.saturating_duration_since(k.replaced) >= self.retention.ttl) {
            if let Some(k) = states.pop_back() {
                retire(k.state);
            }
        }
    }

    /// Replaced states kept for listing continuations, over every tenant
    /// (those past their time included until [`Snapshot::expire_kept`], the
    /// next write or the next lookup drops them).
    pub fn kept_states(&self) -> usize {
        self.kept().values().map(VecDeque::len).sum()
    }

    /// Drops every tenant's kept states past their time; how many. The server
    /// calls it every [`PageRetention::sweep_every`], so a tenant no one
    /// writes to does not hold its replaced states past `ttl` either.
    pub fn expire_kept(&self) -> usize {
        let now = Instant::now();
        let mut kept = self.kept();
        let mut dropped = 0;
        for states in kept.values_mut() {
            let before = states.len();
            self.expire(states, now);
            dropped += before - states.len();
        }
        kept.retain(|_, states| !states.is_empty());
        dropped
    }

    /// Keeps `old`, the state just replaced, for continuations, if a listing
    /// began on it (a burst of writes, an import, keeps nothing).
    fn keep(&self, old: TenantState) {
        if !self.retention.keeps_any() || !old.is_listed() {
            retire(old);
            return;
        }
        let now = Instant::now();
        let mut kept = self.kept();
        let states = kept.entry(old.view.tenant().to_owned()).or_default();
        states.push_front(Kept { state: old, replaced: now });
        while states.len() > self.retention.revisions {
            if let Some(k) = states.pop_back() {
                retire(k.state);
            }
        }
        self.expire(states, now);
    }

    /// Marks the snapshot as loaded (after the store was read at start-up).
    pub fn mark_loaded(&self) {
        self.loaded.store(true, Ordering::Release);
    }

    /// Whether the snapshot has been loaded.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// The highest revision applied.
    pub fn revision(&self) -> Revision {
        self.revision.load(Ordering::Acquire)
    }

    /// Takes the writer lock: hold it across validate → store → install so
    /// batches apply in revision order.
    pub fn write_lock(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current state of a tenant.
    pub fn state(&self, tenant: &str) -> Option<TenantState> {
        self.tenants.get(tenant).map(|s| s.clone())
    }

    /// The current view of a tenant, or why there is none.
    pub fn view(&self, tenant: &str) -> Result<Arc<TenantView>, Reason> {
        if !self.is_loaded() {
            return Err(Reason::NotLoaded);
        }
        self.tenants.get(tenant).map(|s| Arc::clone(&s.view)).ok_or(Reason::UnknownTenant)
    }

    /// Runs `f` on the tenant's current view without cloning the `Arc`.
    pub fn with_view<T>(&self, tenant: &str, f: impl FnOnce(&TenantView) -> T) -> Result<T, Reason> {
        if !self.is_loaded() {
            return Err(Reason::NotLoaded);
        }
        let s = self.tenants.get(tenant).ok_or(Reason::UnknownTenant)?;
        Ok(f(&s.view))
    }

    /// Decides one check; an unknown tenant or unloaded snapshot denies with its reason.
    pub fn check(&self, tenant: &str, r: &CheckRequest<'_>) -> Decision {
        let revision = self.revision();
        self.with_view(tenant, |v| v.check(r)).unwrap_or_else(|reason| Decision::new(reason, revision))
    }

    /// Tenant ids, sorted.
    pub fn tenant_ids(&self) -> Vec<String> {
        let mut v: Vec<String> = self.tenants.iter().map(|e| e.key().clone()).collect();
        v.sort();
        v
    }

    /// Validates `mutations` against the tenant's current configuration (an
    /// empty one if the tenant does not exist) and returns the next configuration.
    pub fn prepare(&self, tenant: &TenantId, mutations: &[Mutation]) -> ModelResult<TenantConfig> {
        match self.tenants.get(tenant.as_str()) {
            Some(s) => s.config.apply_batch(mutations),
            None => TenantConfig::empty(tenant.clone()).apply_batch(mutations),
        }
    }

    /// Compiles `config` at `revision` and swaps it in as the tenant's state.
    /// The replaced state is freed off the writer's path (a large tenant's
    /// view takes tens of milliseconds to drop).
    pub fn install(&self, config: TenantConfig, revision: Revision) -> TenantState {
        let prev = self.tenants.get(config.id.as_str()).map(|s| s.clone());
        let view = Arc::new(TenantView::build_next(prev.as_ref().map(|s| (&*s.view, &*s.config)), &config, revision));
        let state = TenantState::new(Arc::new(config), view);
        let old = self.tenants.insert(state.view.tenant().to_owned(), state.clone());
        self.revision.fetch_max(revision, Ordering::AcqRel);
        if let Some(old) = old {
            self.keep(old);
        }
        state
    }

    /// Records that the store reached `revision` (a batch of another tenant,
    /// or a lock event) without changing any view.
    pub fn advance(&self, revision: Revision) {
        self.revision.fetch_max(revision, Ordering::AcqRel);
    }

    /// Removes a tenant.
    pub fn remove(&self, tenant: &str, revision: Revision) {
        self.tenants.remove(tenant);
        if let Some(states) = self.kept().remove(tenant) {
            retire(states);
        }
        self.advance(revision);
    }

    /// Validates and installs a batch at `revision` in one step (tests,
    /// start-up replay). Holds the writer lock.
    pub fn apply(&self, tenant: &TenantId, mutations: &[Mutation], revision: Revision) -> ModelResult<TenantState> {
        let _w = self.write_lock();
        let next = self.prepare(tenant, mutations)?;
        Ok(self.install(next, revision))
    }
}
