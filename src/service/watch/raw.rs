//! Raw streams: the changelog replayed from the store, then live batches, filtered by tenant and type.

use super::fanout::{Fanout, OpenStream, RawItem, Registration};
use super::{Out, Sent, checkpoint_event, event, shutting_down};
use crate::model::{Mutation, Revision, Target};
use crate::proto::authzd::v1 as pb;
use crate::service::convert;
use crate::service::status::ServiceError;
use crate::store::{ChangeRecord, Store, StoreError};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;

/// Changelog records read per page when a raw stream replays history.
const REPLAY_PAGE: u32 = 500;

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
pub(super) struct RawFilter {
    pub(super) tenant: Option<String>,
    pub(super) types: BTreeSet<String>,
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

/// Runs a raw stream: history from the store, then live batches.
/// Where a raw stream starts.
#[derive(Debug, Clone, Copy)]
pub(super) enum RawStart {
    /// After this revision (0: from the beginning).
    After(Revision),
    /// After the current revision, announced by a first `Checkpoint`.
    Now,
}

pub(super) async fn run_raw(
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
            match out.send(checkpoint_event(now, fanout.replica.clock())).await {
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
                checkpoint_event(r, fanout.replica.clock())
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use std::time::SystemTime;

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
