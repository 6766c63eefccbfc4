//! Start-up replay, tailing other replicas' writes, and reloads across a compaction.

use super::*;

/// Changelog records read per page when replaying.
const REPLAY_PAGE: u32 = 1_000;

/// A reload across a compaction, as [`Replica::on_reload`] reports it.
///
/// A replica that fell behind a compaction cannot pass the records it missed
/// one by one: between `Started` and `Finished` the batches its observers
/// hear of are net differences (a reloaded tenant's whole change as one
/// batch at its checkpoint's revision) and the retained records replayed
/// among them, not the changelog. Raw change streams must end (their client
/// resumes from the store, or learns that its revision is too old).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// About to reload. Every record up to `from` was passed to the
    /// observers; the changelog was compacted up to `oldest_retained`
    /// (above `from`), so the records in between are gone.
    Started {
        /// The replica's revision: the last record passed.
        from: Revision,
        /// Records up to this revision may be gone.
        oldest_retained: Revision,
    },
    /// The reload is over (or failed halfway; tailing goes on from `to`).
    /// Revisions `from + 1 ..= to` were not passed as changelog records.
    Finished {
        /// The replica's revision before the reload.
        from: Revision,
        /// Its revision after.
        to: Revision,
    },
}

impl Replica {
    pub(super) async fn load(&self) -> ReplicaResult<()> {
        let mut ws = self.writer.lock().await;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.load_once(&mut ws).await {
                Err(ReplicaError::Store(StoreError::Compacted { .. })) if attempt < 3 => {
                    tracing::warn!("the changelog was compacted while loading; starting over");
                }
                other => break other?,
            }
        }
        self.snapshot.mark_loaded();
        self.publish();
        for tenant in self.snapshot.tenant_ids() {
            if let Ok(v) = self.snapshot.view(&tenant) {
                let (persons, nodes, acls) = v.stats();
                tracing::info!(tenant = %tenant, revision = v.revision(), persons, nodes, acls, "tenant loaded");
            }
        }
        tracing::info!(revision = self.snapshot.revision(), store = self.store.display_url(), "snapshot loaded");
        Ok(())
    }

    async fn load_once(&self, ws: &mut WriterState) -> ReplicaResult<()> {
        let oldest = self.store.oldest_retained().await?;
        let mut covered = HashMap::new();
        for (tenant, revision, config) in self.store.load_checkpoints().await? {
            cpu(|| self.snapshot.install(config, revision));
            covered.insert(tenant.0, revision);
        }
        ws.since_checkpoint.clear();
        // Read from the oldest retained record, not from the lowest checkpoint:
        // a tenant without a checkpoint needs all of its records, which the
        // store keeps (compaction only drops records a checkpoint covers).
        let applied = self.replay(ws, oldest, &covered).await?;
        tracing::info!(checkpoints = covered.len(), replayed = applied, "changelog replayed");
        Ok(())
    }

    /// Applies every record after `after`, skipping those a checkpoint covers.
    async fn replay(
        &self,
        ws: &mut WriterState,
        after: Revision,
        covered: &HashMap<String, Revision>,
    ) -> ReplicaResult<usize> {
        let mut cursor = after;
        let mut applied = 0;
        loop {
            let page = self.store.read_since(cursor, REPLAY_PAGE).await?;
            let Some(last) = page.last() else { break };
            cursor = last.revision;
            for record in page {
                if covered.get(record.tenant.as_str()).is_some_and(|&c| record.revision <= c) {
                    self.snapshot.advance(record.revision);
                    continue;
                }
                applied += usize::from(self.apply_record(ws, record));
            }
            self.publish();
        }
        Ok(applied)
    }

    /// Validates and installs one stored batch; logs and skips it when it no
    /// longer validates. Whether it was installed.
    fn apply_record(&self, ws: &mut WriterState, record: ChangeRecord) -> bool {
        let installed = cpu(|| {
            self.snapshot
                .prepare(&record.tenant, &record.mutations)
                .map(|next| self.snapshot.install(next, record.revision))
        });
        let state = match installed {
            Ok(state) => Some(state),
            Err(e) => {
                tracing::warn!(
                    revision = record.revision,
                    tenant = %record.tenant,
                    error = %e,
                    "skipping stored batch at revision {} that no longer validates",
                    record.revision
                );
                self.snapshot.advance(record.revision);
                None
            }
        };
        if self.snapshot.is_loaded() {
            self.notify_batch(&Applied {
                revision: record.revision,
                tenant: &record.tenant,
                mutations: &record.mutations,
                actor: record.actor.as_deref(),
                committed_at: record.committed_at,
                state: state.as_ref(),
            });
        }
        if state.is_some() {
            *ws.since_checkpoint.entry(record.tenant.0).or_default() += 1;
        }
        state.is_some()
    }

    /// Applies what the store holds beyond the snapshot (other replicas'
    /// writes). How many batches (and checkpoints) were installed.
    ///
    /// When a compaction removed records this replica had not read yet (it
    /// was stopped, cut off or too slow), the tenants concerned are reloaded
    /// from their checkpoints and the rest replayed; observers see each
    /// reloaded tenant's changes as one batch at its checkpoint's revision,
    /// between a [`Reload::Started`] and a [`Reload::Finished`] (see
    /// [`Replica::on_reload`]).
    pub async fn catch_up(&self) -> ReplicaResult<usize> {
        let mut ws = self.writer.lock().await;
        self.catch_up_locked(&mut ws).await
    }

    pub(super) async fn catch_up_locked(&self, ws: &mut WriterState) -> ReplicaResult<usize> {
        let n = match self.replay(ws, self.snapshot.revision(), &HashMap::new()).await {
            Err(ReplicaError::Store(StoreError::Compacted { oldest_retained, .. })) => {
                let behind = self.snapshot.revision();
                tracing::warn!(
                    revision = behind,
                    oldest_retained,
                    "this replica is at revision {behind}, but the changelog was compacted up to revision \
                     {oldest_retained}: reloading the tenants that changed from their checkpoints"
                );
                self.notify_reload(&Reload::Started { from: behind, oldest_retained });
                let reloaded = self.reload(ws).await;
                self.notify_reload(&Reload::Finished { from: behind, to: self.snapshot.revision() });
                reloaded?
            }
            other => other?,
        };
        self.publish();
        Ok(n)
    }

    /// Catches up across a compaction: installs every checkpoint newer than
    /// the snapshot and replays the retained records the checkpoints do not
    /// cover, all in revision order, then publishes once.
    ///
    /// Observers see the result as ordinary batches, in revision order: a
    /// checkpoint appears as one batch at its revision holding the
    /// differences between the tenant as this replica had it and the
    /// checkpoint (the smallest batch that turns one into the other, as an
    /// `Import` with `replace` computes it; a tenant this replica did not
    /// have appears as its creating batch). So computed subscribers are
    /// diffed against the new view. The records such a batch stands for
    /// (compacted, or covered by the checkpoint) are not passed one by one:
    /// the caller brackets the reload with [`Reload`] notices, on which raw
    /// change streams end rather than receive the net batches.
    async fn reload(&self, ws: &mut WriterState) -> ReplicaResult<usize> {
        let from = self.snapshot.revision();
        let mut attempt = 0;
        let installed = loop {
            attempt += 1;
            match self.reload_once(ws).await {
                Err(ReplicaError::Store(StoreError::Compacted { .. })) if attempt < 3 => {
                    tracing::warn!("the changelog was compacted again while reloading; starting over");
                }
                other => break other?,
            }
        };
        tracing::info!(from, to = self.snapshot.revision(), installed, "reloaded after the changelog compaction");
        Ok(installed)
    }

    async fn reload_once(&self, ws: &mut WriterState) -> ReplicaResult<usize> {
        let behind = self.snapshot.revision();
        let oldest = self.store.oldest_retained().await?;
        // Checkpoints this replica has not reached, in revision order. A
        // tenant whose checkpoint it has reached lost no record it needs:
        // compaction keeps every record after a tenant's checkpoint.
        let mut checkpoints: Vec<(TenantId, Revision, TenantConfig)> =
            self.store.load_checkpoints().await?.into_iter().filter(|c| c.1 > behind).collect();
        checkpoints.sort_by(|a, b| (a.1, &a.0.0).cmp(&(b.1, &b.0.0)));
        let covered: HashMap<String, Revision> = checkpoints.iter().map(|c| (c.0.0.clone(), c.1)).collect();
        let mut pending = checkpoints.into_iter().peekable();
        let mut installed = 0;
        let mut cursor = oldest.max(behind);
        // Checkpoints at or before the oldest retained record: nothing retained precedes them.
        while let Some((tenant, revision, config)) = pending.next_if(|c| c.1 <= cursor) {
            installed += self.install_checkpoint(ws, &tenant, revision, config, None);
        }
        loop {
            let page = self.store.read_since(cursor, REPLAY_PAGE).await?;
            let Some(last) = page.last() else { break };
            cursor = last.revision;
            for record in page {
                while let Some((tenant, revision, config)) = pending.next_if(|c| c.1 < record.revision) {
                    installed += self.install_checkpoint(ws, &tenant, revision, config, None);
                }
                if let Some((tenant, revision, config)) =
                    pending.next_if(|c| c.1 == record.revision && c.0 == record.tenant)
                {
                    installed += self.install_checkpoint(ws, &tenant, revision, config, Some(&record));
                    continue;
                }
                // Covered by a checkpoint still to come (its batch will hold it).
                if covered.get(record.tenant.as_str()).is_some_and(|&c| record.revision <= c) {
                    continue;
                }
                installed += usize::from(self.apply_record(ws, record));
            }
        }
        for (tenant, revision, config) in pending {
            installed += self.install_checkpoint(ws, &tenant, revision, config, None);
        }
        Ok(installed)
    }

    /// Installs a tenant's checkpoint during [`Replica::reload`] and tells the
    /// observers what changed, as one batch at the checkpoint's revision
    /// (`record`: the changelog record at that revision, when retained).
    fn install_checkpoint(
        &self,
        ws: &mut WriterState,
        tenant: &TenantId,
        revision: Revision,
        config: TenantConfig,
        record: Option<&ChangeRecord>,
    ) -> usize {
        let (difference, state) = cpu(|| {
            let difference = match self.snapshot.state(tenant.as_str()) {
                Some(before) => replace::replace_batch(&before.config, &config),
                None => model::TenantFile::from_config(&config).to_mutations().unwrap_or_else(|e| {
                    tracing::warn!(tenant = %tenant, revision, error = %e, "cannot express the new tenant as a batch for the change streams");
                    Vec::new()
                }),
            };
            (difference, self.snapshot.install(config, revision))
        });
        ws.since_checkpoint.insert(tenant.0.clone(), 0);
        tracing::info!(tenant = %tenant, revision, changes = difference.len(), "tenant reloaded from its checkpoint");
        if !difference.is_empty() {
            self.notify_batch(&Applied {
                revision,
                tenant,
                mutations: &difference,
                actor: None,
                committed_at: record.map_or_else(|| self.clock.now(), |r| r.committed_at),
                state: Some(&state),
            });
        }
        1
    }

    /// Tails the store until `stop` turns true: applies other replicas' writes
    /// and reports lock changes from the lock-event log (woken by PostgreSQL
    /// notifications, else every `interval`), and expires edit locks every
    /// `interval`.
    pub async fn tail(self: Arc<Self>, interval: Duration, mut stop: watch::Receiver<bool>) {
        let mut notifications = match self.store.subscribe().await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "no change notifications; polling the store");
                None
            }
        };
        let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(1)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        let mut expired_at = Instant::now();
        loop {
            let woken = async {
                match notifications.as_mut() {
                    Some(n) => n.recv().await,
                    None => std::future::pending::<Option<Notice>>().await,
                }
            };
            // A lock-event wake-up reads only the lock-event log.
            let only_locks = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = ticks.tick() => false,
                () = self.lock_wake.notified() => true,
                notice = woken => match notice {
                    Some(Notice::LockEvent(_)) => true,
                    Some(Notice::Revision(_) | Notice::Reconnected) => false,
                    None => {
                        tracing::warn!("change notifications stopped; polling the store");
                        notifications = None;
                        false
                    }
                },
            };
            if !only_locks {
                if let Err(e) = self.catch_up().await {
                    tracing::warn!(error = %e, "cannot read the changelog");
                }
            }
            if expired_at.elapsed() >= interval {
                expired_at = Instant::now();
                if let Err(e) = self.expire_locks().await {
                    tracing::warn!(error = %e, "cannot expire edit locks");
                }
            }
            if let Err(e) = self.sync_lock_events().await {
                tracing::warn!(error = %e, "cannot read the lock-event log");
            }
        }
    }
}
