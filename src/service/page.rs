//! Paged answers (`ListVisible`, `ListEntities`, `ListSubjects`, …): the
//! state a page is read from and the token to the next page, shared by the
//! decision and read services.

use super::convert;
use super::status::{ServiceError, ServiceResult, not_found};
use crate::model::Revision;
use crate::replica::Replica;
use crate::snapshot::TenantState;

/// The state one page of a listing is answered from. A first page (no token)
/// reads the tenant's current state once `at_least` is reached; a continuation
/// reads the very state its first page was read from, the one at the token's
/// revision, so the pages of one listing never mix revisions. When that state
/// is no longer kept ([`crate::snapshot::PageRetention`]) the continuation is
/// refused with `FAILED_PRECONDITION`, never answered from another revision.
pub(crate) async fn page_state(
    replica: &Replica,
    tenant: &str,
    at_least: Revision,
    token: Option<Revision>,
) -> ServiceResult<TenantState> {
    let Some(pinned) = token else {
        replica.wait_for(at_least).await?;
        return replica.state(tenant).map_err(|r| not_found(r, tenant, "", ""));
    };
    if at_least > pinned {
        return Err(ServiceError::FailedPrecondition(format!(
            "page_token: the listing began at revision `{pinned}`, older than at_least_revision `{at_least}`; \
             start the listing again with an empty page_token"
        )));
    }
    replica.wait_for(pinned).await?;
    match replica.snapshot().state_at(tenant, pinned) {
        Ok(Some(state)) => Ok(state),
        Ok(None) => {
            let keep = replica.snapshot().page_retention();
            Err(ServiceError::FailedPrecondition(format!(
                "page_token: the listing began at revision `{pinned}`, which this replica no longer keeps (it keeps \
                 the last {} replaced states of a tenant that listings began on, each for {} s); start the listing \
                 again with an empty page_token",
                keep.revisions,
                keep.ttl.as_secs_f64()
            )))
        }
        Err(r) => Err(not_found(r, tenant, "", "")),
    }
}

/// The continuation token of a page read from `state` (empty at the end);
/// a continuation marks the state as listed, so it is kept for the next pages.
pub(crate) fn next_token(state: &TenantState, revision: u64, next: Option<&str>) -> String {
    next.map(|id| {
        state.mark_listed();
        convert::encode_page_token(revision, id)
    })
    .unwrap_or_default()
}
