//! `AdminService`: writes, tenant files, virtual queues, edit locks and
//! restricted mode (SPEC §4.2, §4.4, §6), as thin handlers over [`Replica`].
//!
//! Every admin call needs `authorization: Bearer <token>` when the server has
//! an admin token, or an allowed client certificate with mTLS
//! ([`super::auth::AdminAuth`]).

use super::convert;
use super::status::{ServiceError, ServiceResult, not_found};
use crate::model::{Mutation, TenantFile, TenantId, config::virtual_queue_script, types};
use crate::proto::authzd::v1 as pb;
use crate::proto::authzd::v1::admin_service_client::AdminServiceClient;
use crate::proto::authzd::v1::admin_service_server::AdminService;
use crate::replica::{Batch, LockRequest, Replica, WriteOutcome, WriteRequest};
use crate::store::{AnyStore, LockOutcome, StoreError, UpstreamStore};
use std::sync::Arc;
use std::time::Duration;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// Idle timeouts of edit locks.
#[derive(Debug, Clone, Copy)]
pub struct LockSettings {
    /// When the request names none.
    pub default_idle: Duration,
    /// The longest accepted (longer requests are capped).
    pub max_idle: Duration,
}

impl Default for LockSettings {
    fn default() -> Self {
        LockSettings { default_idle: Duration::from_secs(300), max_idle: Duration::from_secs(3600) }
    }
}

/// The admin service of one replica.
#[derive(Debug, Clone)]
pub struct Admin {
    replica: Arc<Replica>,
    locks: LockSettings,
}

impl Admin {
    /// An admin service writing through `replica`.
    pub fn new(replica: Arc<Replica>, locks: LockSettings) -> Self {
        Admin { replica, locks }
    }

    fn changes(outcome: WriteOutcome) -> (u64, Vec<pb::PersonChange>, bool) {
        match outcome.changes {
            Some(c) => (outcome.revision, c.persons.into_iter().map(convert::person_change).collect(), c.truncated),
            None => (outcome.revision, Vec::new(), false),
        }
    }

    fn idle_timeout(&self, d: Option<prost_types::Duration>, field: &str) -> ServiceResult<Duration> {
        match d {
            None => Ok(self.locks.default_idle),
            Some(d) => {
                let d =
                    Duration::try_from(d).map_err(|_| ServiceError::invalid(field, "must be a positive duration"))?;
                if d.is_zero() {
                    return Err(ServiceError::invalid(field, "must be a positive duration"));
                }
                Ok(d.min(self.locks.max_idle))
            }
        }
    }
}

impl Admin {
    /// The upstream this replica follows, when it is a follower.
    fn upstream(&self) -> Option<&UpstreamStore> {
        match self.replica.store() {
            AnyStore::Upstream(u) => Some(u),
            _ => None,
        }
    }

    /// A follower's write-like call: forwarded to the upstream with the
    /// caller's credential (nothing is applied here first), then answered
    /// once the change has come back down the upstream's stream, so the
    /// caller's next read on this replica sees it. A change slower than the
    /// revision wait is still answered (it is committed); the caller can
    /// pass the revision as `at_least_revision`.
    async fn forwarded<Req, Resp, F, Fut>(
        &self,
        upstream: &UpstreamStore,
        request: Request<Req>,
        call: F,
        revision: fn(&Resp) -> u64,
    ) -> Result<Response<Resp>, Status>
    where
        F: FnOnce(AdminServiceClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        let response = upstream.forward(request, call).await.map_err(|e| match e {
            StoreError::Unavailable { url, message } => {
                ServiceError::Unavailable(format!("the upstream `{url}` cannot be reached: {message}"))
            }
            other => ServiceError::Store(other),
        })??;
        let at = revision(response.get_ref());
        if let Err(e) = self.replica.wait_for(at).await {
            tracing::warn!(revision = at, error = %e, "a forwarded change has not reached this follower yet");
        }
        Ok(response)
    }
}

fn tenant_id(t: String) -> ServiceResult<TenantId> {
    if t.is_empty() { Err(ServiceError::invalid("tenant", "must not be empty")) } else { Ok(TenantId(t)) }
}

#[tonic::async_trait]
impl AdminService for Admin {
    async fn write(&self, request: Request<pb::WriteRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        if let Some(up) = self.upstream() {
            let call = |mut c: AdminServiceClient<Channel>, r| async move { c.write(r).await };
            return self.forwarded(up, request, call, |r| r.revision).await;
        }
        let req = request.into_inner();
        // Before converting: an oversized batch is refused without reading it.
        self.replica.limits().check_batch("mutations", req.mutations.len()).map_err(ServiceError::from)?;
        let write = WriteRequest {
            tenant: tenant_id(req.tenant)?,
            batch: Batch::Mutations(convert::mutations(req.mutations)?),
            actor: req.actor.filter(|a| !a.is_empty()),
            expected_revision: req.expected_revision,
            preconditions: req
                .preconditions
                .into_iter()
                .enumerate()
                .map(|(i, p)| convert::precondition(i, p))
                .collect::<ServiceResult<_>>()?,
            dry_run: req.dry_run,
            include_changes: req.include_changes,
        };
        let (revision, changes, changes_truncated) = Self::changes(self.replica.write(write).await?);
        Ok(Response::new(pb::WriteResponse { revision, changes, changes_truncated }))
    }

    async fn import(&self, request: Request<pb::ImportRequest>) -> Result<Response<pb::ImportResponse>, Status> {
        if let Some(up) = self.upstream() {
            let call = |mut c: AdminServiceClient<Channel>, r| async move { c.import(r).await };
            return self.forwarded(up, request, call, |r| r.revision).await;
        }
        let req = request.into_inner();
        let file = TenantFile::from_yaml(&req.yaml).map_err(ServiceError::from)?;
        let tenant = file.tenant.id.clone();
        let mutations = file.to_mutations().map_err(ServiceError::from)?;
        let config = file.to_config().map_err(ServiceError::from)?;
        let write = WriteRequest {
            tenant: tenant.clone(),
            batch: Batch::Import { file: mutations, config: Box::new(config), replace: req.replace },
            actor: None,
            expected_revision: None,
            preconditions: Vec::new(),
            dry_run: req.dry_run,
            include_changes: req.include_changes,
        };
        let (revision, changes, changes_truncated) = Self::changes(self.replica.write(write).await?);
        Ok(Response::new(pb::ImportResponse { tenant: tenant.0, revision, changes, changes_truncated }))
    }

    async fn export(&self, request: Request<pb::ExportRequest>) -> Result<Response<pb::ExportResponse>, Status> {
        let req = request.into_inner();
        self.replica.wait_for(req.at_least_revision).await?;
        let state = self.replica.state(&req.tenant).map_err(|r| not_found(r, &req.tenant, "", ""))?;
        let yaml = TenantFile::from_config(&state.config).to_yaml().map_err(ServiceError::from)?;
        Ok(Response::new(pb::ExportResponse { yaml, revision: state.view.revision() }))
    }

    async fn list_tenants(
        &self,
        request: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsResponse>, Status> {
        self.replica.wait_for(request.into_inner().at_least_revision).await?;
        let snapshot = self.replica.snapshot();
        let tenants = snapshot
            .tenant_ids()
            .into_iter()
            .filter_map(|id| snapshot.state(&id))
            .map(|s| pb::TenantSummary {
                id: s.config.id.0.clone(),
                name: s.config.name.clone(),
                restricted_mode: s.config.restricted_mode,
                applications: s.config.catalogs.keys().cloned().collect(),
                changed_at_revision: s.view.revision(),
            })
            .collect();
        Ok(Response::new(pb::ListTenantsResponse { tenants, revision: snapshot.revision() }))
    }

    async fn provision_virtual_queue(
        &self,
        request: Request<pb::ProvisionVirtualQueueRequest>,
    ) -> Result<Response<pb::ProvisionVirtualQueueResponse>, Status> {
        if let Some(up) = self.upstream() {
            let call = |mut c: AdminServiceClient<Channel>, r| async move { c.provision_virtual_queue(r).await };
            return self.forwarded(up, request, call, |r| r.revision).await;
        }
        let req = request.into_inner();
        let tenant = tenant_id(req.tenant)?;
        if req.queue.is_empty() {
            return Err(ServiceError::invalid("queue", "must not be empty").into());
        }
        let script_id = virtual_queue_script(&req.queue);
        // Idempotent: an existing queue is not written again.
        if let Some(state) = self.replica.snapshot().state(tenant.as_str()) {
            if state.view.has_object(types::SCRIPT, &script_id) {
                return Ok(Response::new(pb::ProvisionVirtualQueueResponse {
                    script_id,
                    revision: state.view.revision(),
                }));
            }
        }
        let folder = match req.folder {
            Some(f) if f.is_empty() => {
                return Err(ServiceError::invalid(
                    "folder",
                    "must not be empty (leave it unset for `Scripts/Callback`)",
                )
                .into());
            }
            f => f.map(crate::model::FolderId),
        };
        let mut write = WriteRequest::new(tenant, vec![Mutation::ProvisionVirtualQueue { queue: req.queue, folder }]);
        write.actor = req.actor.filter(|a| !a.is_empty());
        let outcome = self.replica.write(write).await?;
        Ok(Response::new(pb::ProvisionVirtualQueueResponse { script_id, revision: outcome.revision }))
    }

    async fn acquire_lock(
        &self,
        request: Request<pb::AcquireLockRequest>,
    ) -> Result<Response<pb::AcquireLockResponse>, Status> {
        if let Some(up) = self.upstream() {
            let call = |mut c: AdminServiceClient<Channel>, r| async move { c.acquire_lock(r).await };
            return self.forwarded(up, request, call, |r| r.revision).await;
        }
        let req = request.into_inner();
        let tenant = tenant_id(req.tenant)?;
        let object = req.object.ok_or_else(|| ServiceError::invalid("object", "must be set"))?;
        let idle = self.idle_timeout(req.idle_timeout, "idle_timeout")?;
        let lock = LockRequest {
            tenant: &tenant,
            person: &req.person,
            kind: &object.r#type,
            id: &object.id,
            application: req.application.as_deref(),
            idle,
        };
        let outcome = self.replica.acquire_lock(lock).await?;
        let revision = self.replica.snapshot().revision();
        let response = match outcome {
            LockOutcome::Granted { token, since, expires_at, .. } => pb::AcquireLockResponse {
                granted: true,
                holder: req.person,
                since: Some(since.into()),
                expires_at: Some(expires_at.into()),
                lock_token: token,
                revision,
            },
            LockOutcome::Held { holder, since, expires_at } => pb::AcquireLockResponse {
                granted: false,
                holder: holder.0,
                since: Some(since.into()),
                expires_at: Some(expires_at.into()),
                lock_token: String::new(),
                revision,
            },
        };
        Ok(Response::new(response))
    }

    async fn renew_lock(
        &self,
        request: Request<pb::RenewLockRequest>,
    ) -> Result<Response<pb::RenewLockResponse>, Status> {
        if let Some(up) = self.upstream() {
            let call = |mut c: AdminServiceClient<Channel>, r| async move { c.renew_lock(r).await };
            return self.forwarded(up, request, call, |r| r.revision).await;
        }
        let req = request.into_inner();
        if req.idle_timeout.is_some() {
            // The store keeps the idle timeout given at acquire; a renewal extends by it.
            tracing::debug!("renew_lock: idle_timeout ignored, the one given at acquire applies");
        }
        let expires = self.replica.renew_lock(&req.lock_token).await?;
        Ok(Response::new(pb::RenewLockResponse {
            expires_at: Some(expires.into()),
            revision: self.replica.snapshot().revision(),
        }))
    }

    async fn release_lock(
        &self,
        request: Request<pb::ReleaseLockRequest>,
    ) -> Result<Response<pb::ReleaseLockResponse>, Status> {
        if let Some(up) = self.upstream() {
            let call = |mut c: AdminServiceClient<Channel>, r| async move { c.release_lock(r).await };
            return self.forwarded(up, request, call, |r| r.revision).await;
        }
        let req = request.into_inner();
        self.replica.release_lock(&req.lock_token).await?;
        Ok(Response::new(pb::ReleaseLockResponse { revision: self.replica.snapshot().revision() }))
    }

    async fn set_restricted_mode(
        &self,
        request: Request<pb::SetRestrictedModeRequest>,
    ) -> Result<Response<pb::SetRestrictedModeResponse>, Status> {
        if let Some(up) = self.upstream() {
            let call = |mut c: AdminServiceClient<Channel>, r| async move { c.set_restricted_mode(r).await };
            return self.forwarded(up, request, call, |r| r.revision).await;
        }
        let req = request.into_inner();
        let mut write = WriteRequest::new(tenant_id(req.tenant)?, vec![Mutation::SetRestrictedMode { on: req.on }]);
        write.actor = req.actor.filter(|a| !a.is_empty());
        let outcome = self.replica.write(write).await?;
        Ok(Response::new(pb::SetRestrictedModeResponse { revision: outcome.revision }))
    }
}
