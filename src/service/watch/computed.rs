//! Computed streams (privileges, visible objects): the hub's updates as events.

use super::fanout::{Fanout, OpenStream, Registration, Side};
use super::{Out, Sent, checkpoint_event, event, shutting_down};
use crate::model::Revision;
use crate::proto::authzd::v1 as pb;
use crate::replica::Clock;
use crate::service::convert;
use crate::service::status::ServiceError;
use crate::watch::{Resync, State, Subscriber, Update};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;
use tonic::Status;

/// What a computed stream follows, for building its events.
#[derive(Debug, Clone)]
pub(super) enum Shape {
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
fn update_events(shape: &Shape, u: Update, part_bytes: usize, clock: &dyn Clock) -> Vec<pb::WatchEvent> {
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
        Update::Checkpoint { revision } => vec![checkpoint_event(revision, clock)],
    }
}

/// Runs a computed stream until the client leaves, the server shuts down or
/// the hub goes away.
pub(super) async fn run_computed(
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
    match out.send_all(update_events(&shape, first, part_bytes, fanout.replica.clock())).await {
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
                events.extend(update_events(&shape, u, part_bytes, fanout.replica.clock()));
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::engine::Reason;

    #[test]
    fn large_states_are_split_with_complete_on_the_last_part() {
        let objects = (0..1000).map(|i| crate::engine::VisibleObject {
            id: format!("o{i:04}"),
            name: format!("object {i}"),
            folder: "F".into(),
            properties: Default::default(),
        });
        let u = Update::Full { revision: 7, reason: Resync::Initial, state: State::Objects(objects.collect()) };
        let events = update_events(&Shape::Objects { kind: "Metric".into() }, u, 4096, &crate::replica::SystemClock);
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
        let events = update_events(&Shape::Objects { kind: "Metric".into() }, u, 4096, &crate::replica::SystemClock);
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
        let events = update_events(&Shape::Objects { kind: "Metric".into() }, u, 1024, &crate::replica::SystemClock);
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
        let events = update_events(&Shape::Objects { kind: "Metric".into() }, u, 1024, &crate::replica::SystemClock);
        assert_eq!(events.len(), 1);
    }
}
