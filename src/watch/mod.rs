//! The watch hub: computed change streams per subscriber (SPEC §7).
//!
//! A subscriber follows a person's effective privileges in an application
//! (agent desktops) or a person's visible objects of one type (dashboards). It
//! first receives the full state at revision R, then, whenever a newer view
//! changes it, only the difference (gained / lost) tagged with that view's
//! revision.
//!
//! **Delivery.** The writer publishes each tenant's newest view once, on a
//! `tokio::sync::watch` channel per tenant ([`Hub::publish`]: one store of an
//! `Arc`, no per-subscriber work), and returns. Each subscriber remembers the
//! state it last *delivered* and, when it asks for its next update, computes
//! the difference from that state to the newest view; visible-object listings
//! are computed off the async worker threads. A subscriber that falls behind
//! (a slow desktop, a full transport) simply skips the views it never looked
//! at: its next message is the net difference since what it last received.
//! There is no lag flag, no queue of differences to overflow, and no window
//! in which a batch can be lost: the only state shared between the writer and
//! a subscriber is the newest view, and the subscriber's own "last delivered"
//! state is touched by nobody else. Memory per subscriber is that state;
//! a slow reader holds at most one view beyond what the writer holds, and
//! never slows the writer or the other subscribers.
//!
//! **Checkpoints** ([`Hub::checkpoint`]) go through the same channel (each
//! tenant's newest publication also carries the last checkpoint), so a
//! subscriber waits on one thing, and sends a checkpoint only after it has
//! diffed the view published with it: a checkpoint at R follows every change
//! up to R.
//!
//! The hub knows nothing of gRPC or of the store: raw changelog subscriptions
//! (which resume from a revision) are served by the service from the store
//! and the replica's records.

use crate::engine::{EffectivePrivileges, Inputs, ListRequest, Reason, TenantView, VisibleObject};
use crate::model::{Mutation, Perm, Revision};
use crate::snapshot::Snapshot;
use dashmap::DashMap;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use tokio::sync::{Semaphore, watch};

/// What a subscriber follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchSpec {
    /// A person's effective privileges in an application.
    Privileges {
        /// Tenant id.
        tenant: String,
        /// Person id.
        person: String,
        /// Application (catalog) name.
        application: String,
    },
    /// A person's visible objects of one type.
    Objects {
        /// Tenant id.
        tenant: String,
        /// Person id.
        person: String,
        /// Object type.
        kind: String,
        /// Only under this folder.
        folder: Option<String>,
        /// Application context.
        application: Option<String>,
        /// Permission (default Read).
        permission: Perm,
    },
}

impl WatchSpec {
    fn tenant(&self) -> &str {
        match self {
            WatchSpec::Privileges { tenant, .. } | WatchSpec::Objects { tenant, .. } => tenant,
        }
    }
}

/// Why a full state is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resync {
    /// The first state of the subscription.
    Initial,
}

/// A full state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Effective privileges.
    Privileges(EffectivePrivileges),
    /// Visible objects, in id order.
    Objects(Vec<VisibleObject>),
    /// The person or tenant is gone (or disabled): nothing is granted.
    Denied(Reason),
}

/// One message to a subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// The full state at `revision`.
    Full {
        /// Revision of the state.
        revision: Revision,
        /// Why it is sent.
        reason: Resync,
        /// The state.
        state: State,
    },
    /// Privileges gained and lost since the last update, as of `revision`.
    Privileges {
        /// Revision of the view the difference leads to.
        revision: Revision,
        /// Newly effective privileges.
        gained: Vec<String>,
        /// Privileges no longer effective.
        lost: Vec<String>,
    },
    /// Objects gained and lost since the last update, as of `revision`.
    Objects {
        /// Revision of the view the difference leads to.
        revision: Revision,
        /// Newly visible objects.
        gained: Vec<VisibleObject>,
        /// Ids of objects no longer visible.
        lost: Vec<String>,
    },
    /// Every change up to `revision` has been sent (sent periodically).
    Checkpoint {
        /// Revision.
        revision: Revision,
    },
}

/// What a subscriber remembers of the last state it delivered.
#[derive(Debug)]
enum Last {
    /// The effective privilege bitset, and the catalog's names it indexes
    /// (shared with the view: remembering them allocates nothing).
    Privileges(Vec<u64>, Option<Arc<[String]>>),
    /// Visible ids, and the inputs of the view they were listed from: a
    /// view that leaves the person's inputs as they were cannot change them.
    /// Shared with the worker that computes the next difference.
    Objects(Arc<BTreeSet<String>>, Option<Inputs>),
}

/// The names whose bits are set in `row`.
fn named<'a>(row: &'a [u64], names: Option<&'a Arc<[String]>>) -> impl Iterator<Item = &'a String> + 'a {
    names.into_iter().flat_map(|n| n.iter()).enumerate().filter(|(i, _)| bit(row, *i)).map(|(_, n)| n)
}

fn bit(row: &[u64], i: usize) -> bool {
    row.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
}

/// Whether two name lists are the same catalog (numbering) of an application.
fn same_catalog(a: Option<&Arc<[String]>>, b: Option<&Arc<[String]>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// Privileges gained and lost from (`old`, `old_names`) to (`new`, `new_names`).
/// Under the same catalog the bitsets are compared; across a catalog change
/// (privileges renumbered) the names are.
fn privilege_diff(
    (old, old_names): (&[u64], Option<&Arc<[String]>>),
    (new, new_names): (&[u64], Option<&Arc<[String]>>),
) -> (Vec<String>, Vec<String>) {
    if same_catalog(old_names, new_names) {
        let changed = |a: &[u64], b: &[u64]| -> Vec<String> {
            let names = new_names.map_or(&[][..], |n| &n[..]);
            names.iter().enumerate().filter(|(i, _)| bit(a, *i) && !bit(b, *i)).map(|(_, n)| n.clone()).collect()
        };
        return (changed(new, old), changed(old, new));
    }
    let was: BTreeSet<&String> = named(old, old_names).collect();
    let is: Vec<&String> = named(new, new_names).collect();
    let gained = is.iter().filter(|n| !was.contains(*n)).map(|n| (*n).clone()).collect();
    let is: BTreeSet<&String> = is.into_iter().collect();
    let lost = named(old, old_names).filter(|n| !is.contains(n)).cloned().collect();
    (gained, lost)
}

/// The revisions of the last batches that may have changed object listings:
/// `any` for every type (entries, memberships, roles, catalogs, ...),
/// `kinds` per object type (objects of that type put or deleted).
#[derive(Debug, Clone, Default)]
struct ListingChanges {
    any: Revision,
    kinds: HashMap<String, Revision>,
}

impl ListingChanges {
    fn record(&mut self, revision: Revision, mutations: &[Mutation]) {
        for m in mutations {
            match m {
                Mutation::PutObject(o) => self.touch(&o.kind, revision),
                Mutation::DeleteObject(k) => self.touch(&k.kind, revision),
                Mutation::ProvisionVirtualQueue { .. } => self.touch(crate::model::types::SCRIPT, revision),
                Mutation::RenameTenant { .. } => {}
                _ => self.any = revision,
            }
        }
    }

    fn touch(&mut self, kind: &str, revision: Revision) {
        match self.kinds.get_mut(kind) {
            Some(r) => *r = revision,
            None => {
                self.kinds.insert(kind.to_owned(), revision);
            }
        }
    }

    /// Whether a listing of `kind` may differ from what it was at `since`.
    fn since(&self, kind: &str, since: Revision) -> bool {
        self.any > since || self.kinds.get(kind).is_some_and(|r| *r > since)
    }
}

/// A tenant's newest view, as published.
#[derive(Debug, Clone)]
struct Published {
    /// Counts the tenant's publications: a subscriber compares it with the
    /// one it last looked at.
    seq: u64,
    view: Arc<TenantView>,
    listings: Arc<ListingChanges>,
    /// The last checkpoint announced (its revision), and how many were:
    /// every tick is sent, even at an unchanged revision.
    checkpoint: Revision,
    checkpoints: u64,
}

/// The publishing side of a tenant's channel.
#[derive(Debug)]
struct Feed {
    tx: watch::Sender<Published>,
    listings: ListingChanges,
}

/// Counters of the hub, for metrics and tests.
#[derive(Debug, Default)]
pub struct HubStats {
    /// Differences delivered.
    pub delivered: AtomicU64,
    /// Views a subscriber skipped because a newer one was published before
    /// it looked (their changes reached it in the next difference).
    pub coalesced: AtomicU64,
    /// Visible-object states recomputed (those whose inputs changed).
    pub recomputed: AtomicU64,
}

/// All subscribers of this replica: one channel per tenant with its newest
/// view and the last checkpoint.
#[derive(Debug)]
pub struct Hub {
    feeds: DashMap<String, Feed>,
    subscribers: AtomicUsize,
    /// Counters.
    pub stats: HubStats,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new()
    }
}

fn compute(view: &TenantView, spec: &WatchSpec) -> State {
    match spec {
        WatchSpec::Privileges { person, application, .. } => match view.effective_privileges(person, application) {
            Ok(p) => State::Privileges(p),
            Err(r) => State::Denied(r),
        },
        WatchSpec::Objects { person, kind, folder, application, permission, .. } => {
            let r = ListRequest {
                subject: person,
                kind,
                folder: folder.as_deref(),
                permission: *permission,
                application: application.as_deref(),
                after: None,
                limit: usize::MAX,
            };
            match view.list_visible(&r) {
                Ok(p) => State::Objects(p.items),
                Err(r) => State::Denied(r),
            }
        }
    }
}

fn privilege_row<'v>(view: &'v TenantView, spec: &WatchSpec) -> &'v [u64] {
    match spec {
        WatchSpec::Privileges { person, application, .. } => view.privilege_row(person, application).unwrap_or(&[]),
        WatchSpec::Objects { .. } => &[],
    }
}

fn privilege_catalog<'v>(view: &'v TenantView, spec: &WatchSpec) -> Option<&'v Arc<[String]>> {
    match spec {
        WatchSpec::Privileges { application, .. } => view.privilege_catalog(application),
        WatchSpec::Objects { .. } => None,
    }
}

fn inputs(view: &TenantView, spec: &WatchSpec) -> Option<Inputs> {
    match spec {
        WatchSpec::Objects { person, .. } => view.inputs(person),
        WatchSpec::Privileges { .. } => None,
    }
}

/// What to remember of the full state just computed from `view`.
fn remember(view: &TenantView, spec: &WatchSpec, state: &State) -> Last {
    match (spec, state) {
        (WatchSpec::Privileges { .. }, _) => {
            Last::Privileges(privilege_row(view, spec).to_vec(), privilege_catalog(view, spec).cloned())
        }
        (WatchSpec::Objects { .. }, State::Objects(o)) => {
            Last::Objects(Arc::new(o.iter().map(|v| v.id.clone()).collect()), inputs(view, spec))
        }
        (WatchSpec::Objects { .. }, _) => Last::Objects(Arc::new(BTreeSet::new()), inputs(view, spec)),
    }
}

/// Visible objects gained and lost from `old` to the listing of `spec` in
/// `view`: `None` when they are the same.
fn objects_diff(
    view: &TenantView,
    spec: &WatchSpec,
    old: &BTreeSet<String>,
) -> Option<(BTreeSet<String>, Vec<VisibleObject>, Vec<String>)> {
    let objects = match compute(view, spec) {
        State::Objects(o) => o,
        _ => Vec::new(),
    };
    let new: BTreeSet<String> = objects.iter().map(|o| o.id.clone()).collect();
    if *old == new {
        return None;
    }
    let gained = objects.into_iter().filter(|o| !old.contains(&o.id)).collect();
    let lost = old.difference(&new).cloned().collect();
    Some((new, gained, lost))
}

/// Runs `f` on the blocking pool, at most one job per core at a time (a
/// storm of dashboards recomputing their listings queues here instead of
/// starting hundreds of threads or stalling the async workers). `None` if
/// the job panicked.
async fn off_worker<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    static PERMITS: LazyLock<Semaphore> =
        LazyLock::new(|| Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())));
    let _permit = PERMITS.acquire().await.ok()?;
    tokio::task::spawn_blocking(f).await.ok()
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Self {
        Hub { feeds: DashMap::new(), subscribers: AtomicUsize::new(0), stats: HubStats::default() }
    }

    /// Number of subscribers.
    pub fn len(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    /// Whether there are no subscribers.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Subscribes: the first update is the full state of the tenant's newest
    /// view. Fails if the tenant is unknown or the snapshot not loaded.
    pub fn subscribe(self: &Arc<Self>, spec: WatchSpec, snapshot: &Snapshot) -> Result<Subscriber, Reason> {
        let views = match self.feeds.get(spec.tenant()) {
            Some(feed) => feed.tx.subscribe(),
            None => {
                // The view is read under the entry's lock: a publish that
                // installed a newer view before this read is seen here, and
                // one after it waits for the entry and is sent on it.
                let entry = self.feeds.entry(spec.tenant().to_owned());
                let view = snapshot.view(spec.tenant())?;
                entry
                    .or_insert_with(|| Feed {
                        tx: watch::channel(Published {
                            seq: 0,
                            view,
                            listings: Arc::default(),
                            checkpoint: 0,
                            checkpoints: 0,
                        })
                        .0,
                        listings: ListingChanges::default(),
                    })
                    .tx
                    .subscribe()
            }
        };
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        Ok(Subscriber {
            spec: Arc::new(spec),
            views,
            last: None,
            seen: 0,
            revision: 0,
            checkpoints: 0,
            hub: Arc::clone(self),
        })
    }

    /// Publishes the view a batch produced (`mutations`: the batch) as its
    /// tenant's newest. Costs one channel store, whatever the number of
    /// subscribers. Call in revision order, after the view is installed.
    pub fn publish(&self, view: &Arc<TenantView>, mutations: &[Mutation]) {
        // No feed: nobody follows the tenant; a first subscriber reads the
        // installed view itself.
        let Some(mut feed) = self.feeds.get_mut(view.tenant()) else { return };
        feed.listings.record(view.revision(), mutations);
        let listings = Arc::new(feed.listings.clone());
        let mut replaced = None;
        feed.tx.send_if_modified(|p| {
            if view.revision() < p.view.revision() {
                return false;
            }
            let next = Published { seq: p.seq + 1, view: Arc::clone(view), listings, ..*p };
            replaced = Some(std::mem::replace(p, next));
            true
        });
        drop(feed);
        if let Some(old) = replaced {
            crate::snapshot::release(old.view);
        }
    }

    /// Announces that every batch up to `revision` has been published:
    /// every subscriber sends a checkpoint once it has diffed its tenant's
    /// newest view (every tick is announced, never a revision older than the last).
    pub fn checkpoint(&self, revision: Revision) {
        for feed in self.feeds.iter() {
            feed.tx.send_modify(|p| {
                p.checkpoint = p.checkpoint.max(revision);
                p.checkpoints += 1;
            });
        }
    }
}

/// One subscription. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscriber {
    spec: Arc<WatchSpec>,
    views: watch::Receiver<Published>,
    /// The last state delivered; `None` before the initial one.
    last: Option<Last>,
    /// The publication (`Published::seq`) that state came from, and its revision.
    seen: u64,
    revision: Revision,
    /// Checkpoints announced so far (`Published::checkpoints`) that were sent.
    checkpoints: u64,
    hub: Arc<Hub>,
}

impl Subscriber {
    /// The next update: the initial full state first, then the difference
    /// from the last update to the newest view whenever one changes this
    /// subscription, and checkpoints. `None` when the hub is gone.
    ///
    /// Cancel-safe: dropped before it answers, it delivers nothing and
    /// changes nothing, and the next call starts over from the same state.
    pub async fn next(&mut self) -> Option<Update> {
        loop {
            let newest = self.views.borrow_and_update().clone();
            if self.last.is_none() || newest.seq != self.seen {
                let view = Arc::clone(&newest.view);
                let update = self.advance(newest).await;
                // Maybe the last reference, if a newer view came meanwhile.
                crate::snapshot::release(view);
                if let Some(update) = update? {
                    return Some(update);
                }
                continue;
            }
            if newest.checkpoints != self.checkpoints {
                self.checkpoints = newest.checkpoints;
                // Never older than a difference already sent.
                return Some(Update::Checkpoint { revision: newest.checkpoint.max(self.revision) });
            }
            self.views.changed().await.ok()?;
        }
    }

    /// Moves this subscriber's delivered state to `newest`: the initial full
    /// state, or the difference (`None` if nothing changed for it). `None`
    /// outside if the computation failed.
    async fn advance(&mut self, newest: Published) -> Option<Option<Update>> {
        let revision = newest.view.revision();
        let update = match self.last.as_mut() {
            None => {
                let (state, last) = self.full(&newest.view).await?;
                self.last = Some(last);
                Some(Update::Full { revision, reason: Resync::Initial, state })
            }
            Some(Last::Privileges(old_bits, old_names)) => {
                let (row, names) =
                    (privilege_row(&newest.view, &self.spec), privilege_catalog(&newest.view, &self.spec));
                let same = same_catalog(old_names.as_ref(), names);
                // Same bits under the same catalog: nothing changed for this
                // desktop (the common case: one compare, no allocation).
                if same && old_bits.as_slice() == row {
                    None
                } else {
                    let (gained, lost) = privilege_diff((old_bits, old_names.as_ref()), (row, names));
                    if old_bits.len() == row.len() {
                        old_bits.copy_from_slice(row);
                    } else {
                        *old_bits = row.to_vec();
                    }
                    if !same {
                        *old_names = names.cloned();
                    }
                    (!gained.is_empty() || !lost.is_empty()).then_some(Update::Privileges { revision, gained, lost })
                }
            }
            Some(Last::Objects(old, old_inputs)) => {
                let WatchSpec::Objects { kind, .. } = &*self.spec else { return None };
                let now = inputs(&newest.view, &self.spec);
                // Nothing this person's listing reads changed, or only
                // objects of other types did.
                if (now.is_some() && now == *old_inputs) || !newest.listings.since(kind, self.revision) {
                    *old_inputs = now;
                    None
                } else {
                    self.hub.stats.recomputed.fetch_add(1, Ordering::Relaxed);
                    let (spec, view, before) = (Arc::clone(&self.spec), Arc::clone(&newest.view), Arc::clone(old));
                    let diff = off_worker(move || objects_diff(&view, &spec, &before)).await?;
                    *old_inputs = now;
                    diff.map(|(new, gained, lost)| {
                        *old = Arc::new(new);
                        Update::Objects { revision, gained, lost }
                    })
                }
            }
        };
        let initial = matches!(update, Some(Update::Full { .. }));
        if !initial && newest.seq > self.seen + 1 {
            self.hub.stats.coalesced.fetch_add(newest.seq - self.seen - 1, Ordering::Relaxed);
        }
        self.seen = newest.seq;
        self.revision = revision;
        if update.is_some() && !initial {
            self.hub.stats.delivered.fetch_add(1, Ordering::Relaxed);
        }
        Some(update)
    }

    /// The full state of `view` and what to remember of it (a listing is
    /// computed off the async workers).
    async fn full(&self, view: &Arc<TenantView>) -> Option<(State, Last)> {
        let (spec, view) = (Arc::clone(&self.spec), Arc::clone(view));
        let job = move || {
            let state = compute(&view, &spec);
            let last = remember(&view, &spec, &state);
            (state, last)
        };
        match &*self.spec {
            WatchSpec::Privileges { .. } => Some(job()),
            WatchSpec::Objects { .. } => off_worker(job).await,
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.hub.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}
