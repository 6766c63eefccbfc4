//! Checkpoints written in the background, never inside a `Write` call.

use super::*;

/// The checkpoints a replica's writes ask for, written in the background
/// (never inside a `Write` call): the newest per tenant waits here, a task
/// started with the replica encodes it on the blocking pool and stores it.
/// A checkpoint only saves replaying the changelog, so one still waiting
/// when the process dies costs nothing but that replay; a graceful stop
/// writes what waits ([`Replica::flush_checkpoints`]).
#[derive(Debug)]
pub(super) struct Checkpointer {
    pending: Arc<std::sync::Mutex<PendingCheckpoints>>,
    wake: Arc<Notify>,
}

impl Checkpointer {
    /// A queue, and its writer task on `store`, stamping checkpoints with
    /// `clock` (ended when the queue is dropped).
    pub(super) fn start(store: AnyStore, clock: Arc<dyn Clock>) -> Checkpointer {
        let queue = Checkpointer { pending: Arc::default(), wake: Arc::new(Notify::new()) };
        let (pending, wake) = (Arc::downgrade(&queue.pending), Arc::clone(&queue.wake));
        tokio::spawn(async move {
            loop {
                let taken = match pending.upgrade() {
                    Some(p) => std::mem::take(&mut *p.lock().unwrap_or_else(|e| e.into_inner())),
                    None => return,
                };
                if taken.is_empty() {
                    wake.notified().await;
                    continue;
                }
                for (tenant, revision, config) in taken.into_values() {
                    write_checkpoint(&store, &tenant, revision, config, clock.now()).await;
                }
            }
        });
        queue
    }

    /// Asks for a checkpoint of `tenant` at `revision` (replacing an older one waiting).
    pub(super) fn request(&self, tenant: &TenantId, revision: Revision, config: Arc<TenantConfig>) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tenant.0.clone(), (tenant.clone(), revision, config));
        self.wake.notify_one();
    }

    fn take(&self) -> PendingCheckpoints {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // The writer task wakes, finds the queue gone, and ends.
        self.wake.notify_one();
    }
}

/// The newest checkpoint asked for, per tenant.
type PendingCheckpoints = BTreeMap<String, (TenantId, Revision, Arc<TenantConfig>)>;

/// Encodes `config` on the blocking pool and stores it as the checkpoint of
/// `tenant` at `revision`, written at `at`; a failure is logged (and true
/// when written).
pub(super) async fn write_checkpoint(
    store: &AnyStore,
    tenant: &TenantId,
    revision: Revision,
    config: Arc<TenantConfig>,
    at: SystemTime,
) -> bool {
    let result = match tokio::task::spawn_blocking(move || EncodedConfig::encode(&config)).await {
        Ok(Ok(encoded)) => store.put_encoded_checkpoint(tenant, revision, &encoded, at).await,
        Ok(Err(e)) => Err(e),
        Err(e) => Err(StoreError::Other(format!("the checkpoint encoder failed: {e}"))),
    };
    match result {
        Ok(()) => {
            tracing::debug!(tenant = %tenant, revision, "checkpoint written");
            true
        }
        Err(e) => {
            tracing::warn!(tenant = %tenant, revision, error = %e, "cannot write the checkpoint of tenant `{tenant}` at revision {revision}");
            false
        }
    }
}

impl Replica {
    /// Writes the checkpoints still waiting for the background writer (a
    /// graceful stop calls this before closing the store).
    pub async fn flush_checkpoints(&self) {
        for (tenant, revision, config) in self.checkpoints.take().into_values() {
            write_checkpoint(&self.store, &tenant, revision, config, self.clock.now()).await;
        }
    }
}
