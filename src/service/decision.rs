//! `DecisionService`: thin handlers over the engine (SPEC §4).
//!
//! Each handler waits for `at_least_revision` if asked, converts the request
//! (borrowing from it), asks the tenant's current view, and converts back.
//! Decisions never fail for model reasons: an unknown tenant, person or object
//! is a deny with its reason. Listings and effective privileges answer
//! `NOT_FOUND` for an unknown tenant, person, application or folder instead,
//! since an empty answer would hide the typo.

use super::convert;
use super::page::{next_token, page_state};
use super::status::{ServiceError, ServiceResult, not_found};
use crate::engine::{Decision, ListRequest, Reason};
use crate::proto::authzd::v1 as pb;
use crate::proto::authzd::v1::decision_service_server::DecisionService;
use crate::replica::{Replica, cpu};
use crate::snapshot::TenantState;
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// Default page size of `ListVisible`.
pub const DEFAULT_PAGE_SIZE: usize = 1_000;
/// Largest page size of `ListVisible`.
pub const MAX_PAGE_SIZE: usize = 10_000;
/// Largest page of a listing in the names view.
pub const MAX_PAGE_SIZE_NAMES: usize = 25_000;
/// Largest page of a listing in the ids view.
pub const MAX_PAGE_SIZE_IDS: usize = 100_000;

/// The decision service of one replica.
#[derive(Debug, Clone)]
pub struct Decisions {
    replica: Arc<Replica>,
}

impl Decisions {
    /// A decision service answering from `replica`.
    pub fn new(replica: Arc<Replica>) -> Self {
        Decisions { replica }
    }

    /// The tenant's state for an answer that is not a decision: unknown
    /// tenants are `NOT_FOUND`, an unloaded replica `UNAVAILABLE`.
    fn state(&self, tenant: &str) -> ServiceResult<TenantState> {
        self.replica.state(tenant).map_err(|r| not_found(r, tenant, "", ""))
    }
}

/// Pages larger than this are listed off the async workers.
const LARGE_PAGE: usize = 1_000;

#[tonic::async_trait]
impl DecisionService for Decisions {
    async fn check(&self, request: Request<pb::CheckRequest>) -> Result<Response<pb::CheckResponse>, Status> {
        let req = request.into_inner();
        self.replica.wait_for(req.at_least_revision).await?;
        let check = convert::check_request(&req)?;
        let snapshot = self.replica.snapshot();
        let response = if req.explain {
            match self.replica.state(&req.tenant) {
                Ok(state) => {
                    let (d, evidence) = convert::explained(&state, &check);
                    convert::check_response(d, Some(evidence))
                }
                Err(reason) => {
                    convert::check_response(Decision::new(reason, snapshot.revision()), Some(pb::Evidence::default()))
                }
            }
        } else {
            convert::check_response(snapshot.check(&req.tenant, &check), None)
        };
        Ok(Response::new(response))
    }

    async fn check_batch(
        &self,
        request: Request<pb::CheckBatchRequest>,
    ) -> Result<Response<pb::CheckBatchResponse>, Status> {
        let req = request.into_inner();
        self.replica.limits().check_batch("items", req.items.len()).map_err(ServiceError::from)?;
        self.replica.wait_for(req.at_least_revision).await?;
        let checks = req
            .items
            .iter()
            .enumerate()
            .map(|(i, item)| convert::batch_item(&req.person, i, item))
            .collect::<ServiceResult<Vec<_>>>()?;
        // One view for the whole batch: every answer is at one revision.
        let response = match self.replica.state(&req.tenant) {
            Ok(state) => pb::CheckBatchResponse {
                revision: state.view.revision(),
                results: checks
                    .iter()
                    .map(|c| {
                        let (d, evidence) = if req.explain {
                            let (d, e) = convert::explained(&state, c);
                            (d, Some(e))
                        } else {
                            (state.view.check(c), None)
                        };
                        pb::CheckBatchResult {
                            allowed: d.allowed(),
                            reason: convert::reason(d.reason) as i32,
                            evidence,
                        }
                    })
                    .collect(),
            },
            Err(reason) => pb::CheckBatchResponse {
                revision: self.replica.snapshot().revision(),
                results: checks
                    .iter()
                    .map(|_| pb::CheckBatchResult {
                        allowed: false,
                        reason: convert::reason(reason) as i32,
                        evidence: req.explain.then(pb::Evidence::default),
                    })
                    .collect(),
            },
        };
        Ok(Response::new(response))
    }

    async fn list_visible(
        &self,
        request: Request<pb::ListVisibleRequest>,
    ) -> Result<Response<pb::ListVisibleResponse>, Status> {
        let req = request.into_inner();
        let token = convert::decode_page_token(&req.page_token)?;
        if req.r#type.is_empty() {
            return Err(ServiceError::invalid("type", "must not be empty").into());
        }
        let permission = convert::list_permission(req.permission)?;
        let view = pb::ListView::try_from(req.view).unwrap_or(pb::ListView::Unspecified);
        let max = match view {
            pb::ListView::Ids => MAX_PAGE_SIZE_IDS,
            pb::ListView::Names => MAX_PAGE_SIZE_NAMES,
            pb::ListView::Full | pb::ListView::Unspecified => MAX_PAGE_SIZE,
        };
        let limit = match req.page_size as usize {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(max),
        };
        let state = page_state(&self.replica, &req.tenant, req.at_least_revision, token.as_ref().map(|t| t.0)).await?;
        let list = ListRequest {
            subject: &req.person,
            kind: &req.r#type,
            folder: req.folder.as_deref(),
            permission,
            application: req.application.as_deref(),
            after: token.as_ref().map(|(_, id)| id.as_str()),
            limit,
        };
        let answer = || -> ServiceResult<pb::ListVisibleResponse> {
            let page = match state.view.list_visible_refs(&list) {
                Ok(page) => page,
                Err(Reason::DisabledSubject) => {
                    return Ok(pb::ListVisibleResponse {
                        objects: Vec::new(),
                        next_page_token: String::new(),
                        revision: state.view.revision(),
                    });
                }
                Err(Reason::UnknownApplication) => {
                    return Err(not_found(
                        Reason::UnknownApplication,
                        &req.tenant,
                        &req.person,
                        list.application.unwrap_or_default(),
                    ));
                }
                Err(r) => return Err(not_found(r, &req.tenant, &req.person, list.folder.unwrap_or_default())),
            };
            let next_page_token = next_token(&state, page.revision, page.next_after);
            Ok(pb::ListVisibleResponse {
                objects: page.items.iter().map(|v| convert::visible_ref(v, view)).collect(),
                next_page_token,
                revision: page.revision,
            })
        };
        // A large page takes a millisecond or more to list and encode: off the async workers.
        let answer = if limit > LARGE_PAGE { cpu(answer) } else { answer() };
        Ok(Response::new(answer?))
    }

    async fn effective_privileges(
        &self,
        request: Request<pb::EffectivePrivilegesRequest>,
    ) -> Result<Response<pb::EffectivePrivilegesResponse>, Status> {
        let req = request.into_inner();
        self.replica.wait_for(req.at_least_revision).await?;
        let state = self.state(&req.tenant)?;
        let revision = state.view.revision();
        let effective = match state.view.effective_privileges(&req.person, &req.application) {
            Ok(e) => convert::effective_privileges(&req.application, e),
            Err(Reason::DisabledSubject) => pb::EffectivePrivileges {
                application: req.application.clone(),
                source: pb::PrivilegeSource::Roles as i32,
                ..Default::default()
            },
            Err(r) => return Err(not_found(r, &req.tenant, &req.person, &req.application).into()),
        };
        Ok(Response::new(pb::EffectivePrivilegesResponse { effective: Some(effective), revision }))
    }

    async fn explain(&self, request: Request<pb::ExplainRequest>) -> Result<Response<pb::ExplainResponse>, Status> {
        let req = request.into_inner();
        self.replica.wait_for(req.at_least_revision).await?;
        let check = convert::explain_request(&req)?;
        let (d, evidence) = match self.replica.state(&req.tenant) {
            Ok(state) => convert::explained(&state, &check),
            Err(reason) => (Decision::new(reason, self.replica.snapshot().revision()), pb::Evidence::default()),
        };
        Ok(Response::new(pb::ExplainResponse {
            allowed: d.allowed(),
            reason: convert::reason(d.reason) as i32,
            revision: d.revision,
            evidence: Some(evidence),
        }))
    }
}
