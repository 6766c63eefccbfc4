//! Edit locks (SPEC §4.4): the replica's cursor in the store's lock-event
//! log, and every lock change reported to the observers once, in order.

use super::*;
use crate::engine::{CheckRequest, ObjectRef};
use crate::model::{Perm, PersonId, types};
use crate::store::LockOutcome;

/// Lock events read per page when tailing the lock-event log.
const LOCK_EVENT_PAGE: u32 = 1_000;

/// How many of its own lock changes a replica keeps waiting for an earlier
/// event (beyond it, the oldest is reported at once).
const LOCK_BACKLOG: usize = 1_024;

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
}

/// An edit-lock request ([`Replica::acquire_lock`]).
#[derive(Debug, Clone, Copy)]
pub struct LockRequest<'a> {
    /// The tenant of the object.
    pub tenant: &'a TenantId,
    /// Who asks for it.
    pub person: &'a str,
    /// The object's type (one of [`types::LOCKABLE`]).
    pub kind: &'a str,
    /// The object's id.
    pub id: &'a str,
    /// The application context of the Change check (its type guards apply).
    pub application: Option<&'a str>,
    /// How long the lock lives without a renewal.
    pub idle: Duration,
}

/// Where this replica stands in the store's lock-event log (see the module
/// documentation): every event up to `cursor` has been reported.
#[derive(Debug, Default)]
pub(super) struct LockFeed {
    /// The seq of the last event reported (or logged before start-up).
    cursor: u64,
    /// This replica's own changes whose earlier events are not reported yet,
    /// by seq: reported as soon as the cursor reaches them.
    deferred: BTreeMap<u64, LockChange>,
    /// Seqs above the cursor already reported (a backlog overflow): skipped.
    ahead: std::collections::BTreeSet<u64>,
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
        out.push(change);
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

    /// Handles a change made through this replica whose event has `seq`.
    /// False when it waits for the tailer.
    fn own(&mut self, seq: u64, change: LockChange, out: &mut Vec<LockChange>) -> bool {
        match seq {
            // The tailer read and reported it first.
            seq if seq <= self.cursor => true,
            seq if seq == self.cursor + 1 => {
                self.cursor = seq;
                out.push(change);
                self.drain(out);
                true
            }
            seq => {
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
        }
    }
}

impl Replica {
    /// Places the cursor at the lock-event log's head: locks held before are
    /// known, not news (their release or expiry is reported).
    pub(super) async fn start_lock_feed(&self) -> ReplicaResult<()> {
        let head = self.store.lock_events_head().await?;
        self.lock_feed().cursor = head;
        Ok(())
    }

    pub(super) fn lock_feed(&self) -> std::sync::MutexGuard<'_, LockFeed> {
        self.locks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reports the lock events this replica's store call logged to the
    /// observers, exactly once: at once when every earlier event of the
    /// store's lock-event log is reported already (the usual case), else as
    /// soon as the tailer, woken now, has read up to it. An event the tailer
    /// reported first is not reported again.
    fn report_own(&self, logged: Vec<LockEvent>) {
        if logged.is_empty() {
            return;
        }
        let mut feed = self.lock_feed();
        let mut events = Vec::new();
        let mut done = true;
        for e in logged {
            done &= feed.own(e.seq, LockChange::from_event(e), &mut events);
        }
        // Reported under the lock: observers see the changes in order.
        self.report_locks(&events);
        drop(feed);
        if !done {
            self.lock_wake.notify_one();
        }
    }

    /// Takes (or, for its holder, renews) the edit lock of an object for a
    /// person (SPEC §4.4). Only [`types::LOCKABLE`] objects have one; the
    /// person needs `Change` on the object, with its type guard in the
    /// application the request names, as a check would answer it. A lock
    /// held by someone else is not an error: the answer says who holds it.
    pub async fn acquire_lock(&self, r: LockRequest<'_>) -> ReplicaResult<LockOutcome> {
        if r.person.is_empty() {
            return Err(ReplicaError::invalid("person", "must not be empty"));
        }
        if !types::LOCKABLE.contains(&r.kind) {
            return Err(ReplicaError::invalid(
                "object.type",
                format!("`{}` objects have no edit lock (only {})", r.kind, types::LOCKABLE.join(", ")),
            ));
        }
        let state = self.state(r.tenant.as_str()).map_err(|why| ReplicaError::no_state(why, r.tenant.as_str()))?;
        let check = CheckRequest {
            subject: r.person,
            application: r.application,
            permission: Some(Perm::Change),
            object: Some(ObjectRef { kind: r.kind, id: r.id, tenant: None }),
            privilege: None,
            property: None,
        };
        let d = state.view.check(&check);
        if !d.allowed() {
            return Err(ReplicaError::PermissionDenied(format!(
                "person `{}` may not edit {} `{}`: {}",
                r.person,
                r.kind,
                r.id,
                d.reason.code()
            )));
        }
        let key = format!("{}/{}", r.kind, r.id);
        let person = PersonId(r.person.to_owned());
        let outcome = self.store.acquire_lock(r.tenant, &key, &person, r.idle, self.clock.now()).await?;
        if let LockOutcome::Granted { events, .. } = &outcome {
            // The answer keeps its events: what the store logged for this acquire.
            self.report_own(events.clone());
        }
        Ok(outcome)
    }

    /// Extends a live lock by its idle timeout; its new expiry.
    pub async fn renew_lock(&self, token: &str) -> ReplicaResult<SystemTime> {
        if token.is_empty() {
            return Err(ReplicaError::invalid("lock_token", "must not be empty"));
        }
        self.store.renew_lock(token, self.clock.now()).await?.ok_or_else(|| {
            ReplicaError::FailedPrecondition("lock_token: the lock expired or was released; acquire it again".into())
        })
    }

    /// Releases a lock; what was released, or `None` for an unknown token
    /// (released already, expired, never issued): releasing is idempotent.
    pub async fn release_lock(&self, token: &str) -> ReplicaResult<Option<LockInfo>> {
        if token.is_empty() {
            return Err(ReplicaError::invalid("lock_token", "must not be empty"));
        }
        let Some(event) = self.store.release_lock(token, self.clock.now()).await? else { return Ok(None) };
        let lock = event.lock.clone();
        self.report_own(vec![event]);
        Ok(Some(lock))
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
    pub async fn sync_lock_events(&self) -> ReplicaResult<usize> {
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

    /// Removes expired edit locks from the store (which logs their expiry)
    /// and reports them.
    pub async fn expire_locks(&self) -> ReplicaResult<usize> {
        let expired = self.store.expire_locks(self.clock.now()).await?;
        let n = expired.len();
        self.report_own(expired);
        Ok(n)
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
        assert!(feed.own(11, LockChange::Acquired(lock("a", 1)), &mut out));
        assert!(feed.own(12, LockChange::Released(lock("a", 1)), &mut out));
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
        assert!(!feed.own(12, LockChange::Acquired(lock("me", 2)), &mut out));
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
        assert!(feed.own(11, LockChange::Acquired(lock("me", 1)), &mut out));
        assert_eq!(names(&out), ["acquired me"]);
    }

    #[test]
    fn an_overflowing_backlog_reports_the_oldest_and_skips_it_later() {
        let mut feed = LockFeed { cursor: 0, ..LockFeed::default() };
        let mut out = Vec::new();
        for seq in 2..=(LOCK_BACKLOG as u64 + 2) {
            feed.own(seq, LockChange::Acquired(lock("me", seq)), &mut out);
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
