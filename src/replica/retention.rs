//! Retention: checkpoints older than the retention rewritten, then the
//! changelog and the lock-event log compacted; the page sweeper of paged listings.

use super::*;

/// Default [`Retention::keep`]: a week.
pub const DEFAULT_CHANGELOG_RETENTION: Duration = Duration::from_secs(7 * 24 * 3_600);

/// Default [`Retention::interval`]: hourly.
pub const DEFAULT_COMPACTION_INTERVAL: Duration = Duration::from_secs(3_600);

/// How long the changelog is kept, and how often the retention job runs
/// ([`Replica::run_retention`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Changelog records committed longer ago than this are compacted away
    /// (every tenant gets a checkpoint covering them first); edit-lock events
    /// too, kept at most [`LOCK_EVENT_RETENTION`]. Zero keeps everything: no
    /// job runs.
    pub keep: Duration,
    /// How often the job runs (first right after start-up); zero: never.
    pub interval: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { keep: DEFAULT_CHANGELOG_RETENTION, interval: DEFAULT_COMPACTION_INTERVAL }
    }
}

impl Retention {
    /// Whether the job runs at all.
    pub fn enabled(&self) -> bool {
        !self.keep.is_zero() && !self.interval.is_zero()
    }
}

/// What one round of [`Replica::enforce_retention`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionRound {
    /// False when another replica held the compaction lock: this round did
    /// nothing (that replica does the work).
    pub ran: bool,
    /// The newest revision committed before now − retention (0: none
    /// retained): what the round compacted up to, as far as checkpoints allow.
    pub cutoff: Revision,
    /// Checkpoints written first, for tenants whose stored checkpoint was
    /// older than the cutoff.
    pub checkpoints: usize,
    /// What the compaction deleted, and the oldest retained revision after it.
    pub compaction: Compaction,
}

/// Cumulative counters of the retention job, for metrics.
#[derive(Debug, Default)]
pub struct RetentionStats {
    /// Rounds this replica ran (not those it left to another replica).
    pub rounds: AtomicU64,
    /// Rounds that failed (store errors).
    pub failures: AtomicU64,
    /// Checkpoints the job wrote.
    pub checkpoints: AtomicU64,
    /// Changelog records it deleted.
    pub records: AtomicU64,
    /// Lock events it deleted.
    pub lock_events: AtomicU64,
    /// The oldest retained revision after its last round.
    pub oldest_retained: AtomicU64,
}

impl Replica {
    /// Counters of the retention job (for metrics).
    pub fn retention_stats(&self) -> &RetentionStats {
        &self.retention
    }

    /// One round of the retention job at `now`, keeping `keep` of history:
    ///
    /// 1. takes the compaction lock ([`AnyStore::try_compaction_lock`]); when
    ///    another replica holds it, does nothing (`ran: false`);
    /// 2. finds the cutoff, the newest revision committed before `now - keep`
    ///    ([`Store::revision_before`]);
    /// 3. writes a checkpoint of this replica's state for every tenant whose
    ///    stored checkpoint is older than both the cutoff and the tenant's
    ///    last batch here: compaction never removes a record its tenant's
    ///    checkpoint does not cover, so without these a tenant written less
    ///    often than [`Limits::checkpoint_every`] would keep every record
    ///    (its own and, as the boundary is one revision, every later one of
    ///    every tenant) forever;
    /// 4. compacts the changelog up to the cutoff, and prunes the edit-lock
    ///    events recorded before `now - min(keep, LOCK_EVENT_RETENTION)`.
    ///
    /// Safe on several replicas at once: checkpoints only move forward and
    /// compaction is idempotent. A replica that is behind writes checkpoints
    /// of the states it has, which are still true of their revisions.
    /// A round that ran is logged at info and counted in
    /// [`Replica::retention_stats`].
    pub async fn enforce_retention(&self, keep: Duration, now: SystemTime) -> ReplicaResult<RetentionRound> {
        let Some(lock) = self.store.try_compaction_lock().await? else {
            return Ok(RetentionRound::default());
        };
        let round = self.retention_round(keep, now).await;
        lock.release().await;
        round
    }

    /// [`Self::enforce_retention`] with the compaction lock held.
    async fn retention_round(&self, keep: Duration, now: SystemTime) -> ReplicaResult<RetentionRound> {
        let cutoff = self.store.revision_before(now.checked_sub(keep).unwrap_or(UNIX_EPOCH)).await?;
        let mut checkpoints = 0;
        if cutoff > 0 {
            let stored: HashMap<String, Revision> =
                self.store.checkpoint_revisions().await?.into_iter().map(|(t, r)| (t.0, r)).collect();
            for tenant in self.snapshot.tenant_ids() {
                let Some(state) = self.snapshot.state(&tenant) else { continue };
                let revision = state.view.revision();
                let have = stored.get(&tenant).copied().unwrap_or(0);
                if have >= revision || have >= cutoff {
                    continue;
                }
                let id = TenantId(tenant);
                // A failure keeps this tenant's records (and the later ones);
                // the compaction below still does what the others allow.
                if write_checkpoint(&self.store, &id, revision, Arc::clone(&state.config), now).await {
                    tracing::debug!(tenant = %id, revision, previous = have, "checkpoint written for the changelog retention");
                    checkpoints += 1;
                }
            }
        }
        let lock_events_before = now.checked_sub(keep.min(LOCK_EVENT_RETENTION)).unwrap_or(UNIX_EPOCH);
        let compaction = self.store.compact_until(cutoff.saturating_add(1), lock_events_before).await?;
        let stats = &self.retention;
        stats.rounds.fetch_add(1, Ordering::Relaxed);
        stats.checkpoints.fetch_add(checkpoints as u64, Ordering::Relaxed);
        stats.records.fetch_add(compaction.records, Ordering::Relaxed);
        stats.lock_events.fetch_add(compaction.lock_events, Ordering::Relaxed);
        stats.oldest_retained.store(compaction.oldest_retained, Ordering::Relaxed);
        tracing::info!(
            retention_ms = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX),
            cutoff,
            checkpoints,
            records = compaction.records,
            lock_events = compaction.lock_events,
            oldest_retained = compaction.oldest_retained,
            "changelog compacted: {} records deleted (oldest retained revision {}), {} lock events deleted",
            compaction.records,
            compaction.oldest_retained,
            compaction.lock_events
        );
        Ok(RetentionRound { ran: true, cutoff, checkpoints, compaction })
    }

    /// Drops the replaced states kept for listing continuations once they are
    /// past `--page-retain-secs`, every [`PageRetention::sweep_every`], until
    /// `stop` (writes and lookups drop them too, but a quiet tenant has none).
    ///
    /// [`PageRetention::sweep_every`]: crate::snapshot::PageRetention::sweep_every
    pub async fn run_page_sweeper(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let retention = self.snapshot.page_retention();
        if !retention.keeps_any() {
            return;
        }
        let mut ticks = tokio::time::interval(retention.sweep_every());
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = ticks.tick() => {}
            }
            let dropped = self.snapshot.expire_kept();
            if dropped > 0 {
                tracing::debug!(dropped, "kept listing states past --page-retain-secs dropped");
            }
        }
    }

    /// Runs [`Replica::enforce_retention`] every [`Retention::interval`] (the
    /// first round right away) until `stop` turns true; nothing when the
    /// retention is disabled. A failed round is logged as a warning, counted,
    /// and retried at the next interval.
    pub async fn run_retention(self: Arc<Self>, retention: Retention, mut stop: watch::Receiver<bool>) {
        if !retention.enabled() {
            tracing::info!("changelog retention disabled: the changelog and the edit-lock event log are kept whole");
            return;
        }
        let mut ticks = tokio::time::interval(retention.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = ticks.tick() => {}
            }
            // Stopping mid-round is safe: each step commits alone, and the
            // compaction lock is released with its transaction.
            let round = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                round = self.enforce_retention(retention.keep, self.clock.now()) => round,
            };
            match round {
                Ok(round) if !round.ran => {
                    tracing::debug!("another replica holds the compaction lock; leaving this round to it");
                }
                Ok(_) => {}
                Err(e) => {
                    self.retention.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "cannot compact the changelog; retrying at the next interval");
                }
            }
        }
    }
}
