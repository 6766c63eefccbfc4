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
//! passes (for its own writes as soon as the store committed them, before
//! the view is compiled), every installed batch, every lock change and every
//! reload (see [`Replica::on_record`], [`Replica::on_batch`],
//! [`Replica::on_lock`], [`Replica::on_reload`]), under one mutex that also
//! orders the periodic `Checkpoint`s, so a checkpoint at revision R always
//! follows every event of revisions up to R on every stream: on a raw stream
//! once the record of R was sent, on a computed stream once the view of R was
//! published. Publishing
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
//!
//! [`Hub`]: crate::watch::Hub
//! [`Replica::on_record`]: crate::replica::Replica::on_record
//! [`Replica::on_batch`]: crate::replica::Replica::on_batch
//! [`Replica::on_lock`]: crate::replica::Replica::on_lock
//! [`Replica::on_reload`]: crate::replica::Replica::on_reload

use super::auth::WatchAuth;
use super::convert;
use super::status::{ServiceError, ServiceResult, not_found};
use crate::engine::{ListRequest, Reason};
use crate::model::{Perm, Revision};
use crate::proto::authzd::v1 as pb;
use crate::proto::authzd::v1::watch_service_server::WatchService;
use crate::replica::Clock;
use crate::watch::WatchSpec;
use computed::{Shape, run_computed};
use raw::{RawFilter, RawStart, run_raw};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::{ReceiverStream, WatchStream};
use tonic::{Request, Response, Status};

mod computed;
mod fanout;
mod raw;

pub use fanout::{Fanout, WatchSettings, WatchStats};

// ------------------------------------------------------------------ streams

type Item = Result<pb::WatchEvent, Status>;

fn event(e: pb::watch_event::Event) -> pb::WatchEvent {
    pb::WatchEvent { event: Some(e) }
}

/// A checkpoint at `revision`, stamped with `clock`'s time (the replica's).
fn checkpoint_event(revision: Revision, clock: &dyn Clock) -> pb::WatchEvent {
    event(pb::watch_event::Event::Checkpoint(pb::Checkpoint { revision, time: Some(clock.now().into()) }))
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
