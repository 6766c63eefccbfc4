//! The watch hub: computed change streams per subscriber (SPEC §7).
//!
//! A subscriber follows a person's effective privileges in an application
//! (agent desktops) or a person's visible objects of one type (dashboards). It
//! first receives the full state at revision R, then, for every applied batch
//! that changes it, only the difference (gained / lost) tagged with the
//! batch's revision.
//!
//! Every subscriber has a bounded queue (ARCHITECTURE habit 8). Publishing
//! never waits: when a queue is full the subscriber is marked *lagged*, the
//! difference is dropped, and the subscriber's next read discards what is
//! queued and returns a fresh full state (`Resync::Lagged`) computed from the
//! current view. Memory per subscriber is bounded by its queue, a slow reader
//! never slows the publisher or the other subscribers, and nothing is skipped
//! silently: a resync replaces every dropped difference.
//!
//! The hub knows nothing of gRPC or of the store: raw changelog subscriptions
//! (which resume from a revision) are served by the service from the store
//! plus [`Hub::publish`]'s records.

use crate::engine::{EffectivePrivileges, Inputs, ListRequest, Reason, TenantView, VisibleObject};
use crate::model::{Mutation, Perm, Revision};
use crate::snapshot::Snapshot;
use dashmap::DashMap;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Default capacity of a subscriber's queue.
pub const DEFAULT_QUEUE: usize = 64;

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
    /// The subscriber fell behind; this replaces every dropped difference.
    Lagged,
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
    /// Privileges gained and lost at `revision`.
    Privileges {
        /// Revision of the batch.
        revision: Revision,
        /// Newly effective privileges.
        gained: Vec<String>,
        /// Privileges no longer effective.
        lost: Vec<String>,
    },
    /// Objects gained and lost at `revision`.
    Objects {
        /// Revision of the batch.
        revision: Revision,
        /// Newly visible objects.
        gained: Vec<VisibleObject>,
        /// Ids of objects no longer visible.
        lost: Vec<String>,
    },
    /// The current revision (sent periodically).
    Checkpoint {
        /// Revision.
        revision: Revision,
    },
}

/// What the hub remembers of a subscriber: the last state it was sent.
#[derive(Debug)]
enum Last {
    /// The effective privilege bitset, and the catalog's names it indexes
    /// (shared with the view: remembering them allocates nothing).
    Privileges(Vec<u64>, Option<Arc<[String]>>),
    /// Visible ids, and the inputs of the view they were listed from: a
    /// batch that leaves the person's inputs as they were cannot change them.
    Objects(BTreeSet<String>, Option<Inputs>),
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

#[derive(Debug)]
struct Sub {
    spec: WatchSpec,
    tx: mpsc::Sender<Update>,
    lagged: AtomicBool,
    last: Mutex<Last>,
}

/// Counters of the hub, for metrics and tests.
#[derive(Debug, Default)]
pub struct HubStats {
    /// Differences delivered.
    pub delivered: AtomicU64,
    /// Resyncs sent because a subscriber lagged.
    pub resyncs: AtomicU64,
    /// Visible-object states recomputed on publish (those whose inputs changed).
    pub recomputed: AtomicU64,
}

/// All subscribers of this replica.
#[derive(Debug)]
pub struct Hub {
    subs: DashMap<u64, Arc<Sub>>,
    next: AtomicU64,
    capacity: usize,
    /// Counters.
    pub stats: HubStats,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new(DEFAULT_QUEUE)
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

fn inputs(view: Option<&TenantView>, spec: &WatchSpec) -> Option<Inputs> {
    match spec {
        WatchSpec::Objects { person, .. } => view?.inputs(person),
        WatchSpec::Privileges { .. } => None,
    }
}

/// What to remember of the full state just sent (the view it came from:
/// `None` when there is none, and so nothing is granted).
fn remember(view: Option<&TenantView>, spec: &WatchSpec, state: &State) -> Last {
    match (spec, state) {
        (WatchSpec::Privileges { .. }, State::Privileges(_) | State::Denied(_)) => match view {
            Some(v) => Last::Privileges(privilege_row(v, spec).to_vec(), privilege_catalog(v, spec).cloned()),
            None => Last::Privileges(Vec::new(), None),
        },
        (_, State::Objects(o)) => Last::Objects(o.iter().map(|v| v.id.clone()).collect(), inputs(view, spec)),
        (_, _) => Last::Objects(BTreeSet::new(), inputs(view, spec)),
    }
}

/// Whether a batch can change what an object subscription of `kind` sees.
/// Conservative: only batches made solely of changes to other object types
/// (or to nothing visibility depends on) are skipped.
fn may_affect_objects(kind: &str, mutations: &[Mutation]) -> bool {
    mutations.iter().any(|m| match m {
        Mutation::PutObject(o) => o.kind == kind,
        Mutation::DeleteObject(k) => k.kind == kind,
        Mutation::ProvisionVirtualQueue { .. } => kind == crate::model::types::SCRIPT,
        Mutation::RenameTenant { .. } => false,
        _ => true,
    })
}

impl Hub {
    /// A hub whose subscribers each queue at most `capacity` updates.
    pub fn new(capacity: usize) -> Self {
        Hub { subs: DashMap::new(), next: AtomicU64::new(1), capacity: capacity.max(2), stats: HubStats::default() }
    }

    /// Number of subscribers.
    pub fn len(&self) -> usize {
        self.subs.len()
    }

    /// Whether there are no subscribers.
    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// Subscribes: the first update is the full state at the tenant's current
    /// revision. Fails if the tenant is unknown or the snapshot not loaded.
    pub fn subscribe(self: &Arc<Self>, spec: WatchSpec, snapshot: &Snapshot) -> Result<Subscriber, Reason> {
        let view = snapshot.view(spec.tenant())?;
        let (tx, rx) = mpsc::channel(self.capacity);
        let state = compute(&view, &spec);
        let sub = Arc::new(Sub { last: Mutex::new(remember(Some(&view), &spec, &state)), spec, tx, lagged: AtomicBool::new(false) });
        let initial = Update::Full { revision: view.revision(), reason: Resync::Initial, state };
        // The queue is new and empty: this cannot fail for lack of room.
        if sub.tx.try_send(initial).is_err() {
            return Err(Reason::Internal);
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        // Registered after the state is taken under the same view: a batch
        // published in between is diffed against this state, so none is lost.
        self.subs.insert(id, Arc::clone(&sub));
        Ok(Subscriber { id, sub, rx, hub: Arc::clone(self) })
    }

    /// Publishes the view a batch produced: every subscriber of the tenant
    /// whose state changed gets the difference (or is marked lagged). Call in
    /// revision order, after the view is installed.
    pub fn publish(&self, view: &TenantView, mutations: &[Mutation]) {
        let revision = view.revision();
        for entry in self.subs.iter() {
            let sub = entry.value();
            if sub.spec.tenant() != view.tenant() || sub.lagged.load(Ordering::Acquire) {
                continue;
            }
            if let WatchSpec::Objects { kind, .. } = &sub.spec {
                if !may_affect_objects(kind, mutations) {
                    continue;
                }
            }
            let mut last = sub.last.lock().unwrap_or_else(|e| e.into_inner());
            let update = match (&mut *last, &sub.spec) {
                (Last::Privileges(old_bits, old_names), WatchSpec::Privileges { .. }) => {
                    let (row, names) = (privilege_row(view, &sub.spec), privilege_catalog(view, &sub.spec));
                    let same = same_catalog(old_names.as_ref(), names);
                    // Same bits under the same catalog: nothing changed for this
                    // desktop (the common case: one compare, no allocation).
                    if same && old_bits.as_slice() == row {
                        continue;
                    }
                    let (gained, lost) = privilege_diff((old_bits, old_names.as_ref()), (row, names));
                    if old_bits.len() == row.len() {
                        old_bits.copy_from_slice(row);
                    } else {
                        *old_bits = row.to_vec();
                    }
                    if !same {
                        *old_names = names.cloned();
                    }
                    if gained.is_empty() && lost.is_empty() {
                        continue;
                    }
                    Update::Privileges { revision, gained, lost }
                }
                (Last::Objects(old, old_inputs), _) => {
                    let now = inputs(Some(view), &sub.spec);
                    if now.is_some() && now == *old_inputs {
                        // Nothing this person's listing reads changed.
                        continue;
                    }
                    *old_inputs = now;
                    self.stats.recomputed.fetch_add(1, Ordering::Relaxed);
                    let state = compute(view, &sub.spec);
                    let objects = match state {
                        State::Objects(o) => o,
                        _ => Vec::new(),
                    };
                    let new: BTreeSet<String> = objects.iter().map(|o| o.id.clone()).collect();
                    if *old == new {
                        continue;
                    }
                    let gained = objects.into_iter().filter(|o| !old.contains(&o.id)).collect();
                    let lost = old.difference(&new).cloned().collect();
                    *old = new;
                    Update::Objects { revision, gained, lost }
                }
                // A privileges state always belongs to a privileges subscription.
                (Last::Privileges(..), WatchSpec::Objects { .. }) => continue,
            };
            match sub.tx.try_send(update) {
                Ok(()) => {
                    self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Full(_)) => sub.lagged.store(true, Ordering::Release),
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }

    /// Sends a checkpoint with the current revision to every subscriber that
    /// has room (a full queue will get a resync anyway).
    pub fn checkpoint(&self, revision: Revision) {
        for entry in self.subs.iter() {
            let _ = entry.value().tx.try_send(Update::Checkpoint { revision });
        }
    }
}

/// One subscription. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscriber {
    id: u64,
    sub: Arc<Sub>,
    rx: mpsc::Receiver<Update>,
    hub: Arc<Hub>,
}

impl Subscriber {
    /// The next update; `None` when the hub is gone. After a lag, this
    /// discards the queued differences and returns a fresh full state.
    pub async fn next(&mut self, snapshot: &Snapshot) -> Option<Update> {
        if self.sub.lagged.load(Ordering::Acquire) {
            return Some(self.resync(snapshot));
        }
        let update = self.rx.recv().await?;
        if self.sub.lagged.load(Ordering::Acquire) {
            return Some(self.resync(snapshot));
        }
        Some(update)
    }

    fn resync(&mut self, snapshot: &Snapshot) -> Update {
        while self.rx.try_recv().is_ok() {}
        let view = snapshot.view(self.sub.spec.tenant());
        let (revision, state) = match &view {
            Ok(view) => (view.revision(), compute(view, &self.sub.spec)),
            Err(r) => (snapshot.revision(), State::Denied(*r)),
        };
        let view = view.as_ref().ok().map(|v| &**v);
        {
            let mut last = self.sub.last.lock().unwrap_or_else(|e| e.into_inner());
            *last = remember(view, &self.sub.spec, &state);
            // Cleared under the lock the publisher takes: a publish after this
            // diffs against the state just computed.
            self.sub.lagged.store(false, Ordering::Release);
        }
        self.hub.stats.resyncs.fetch_add(1, Ordering::Relaxed);
        Update::Full { revision, reason: Resync::Lagged, state }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.hub.subs.remove(&self.id);
    }
}
