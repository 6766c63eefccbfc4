//! The replica's error: why a write, a lock operation or a wait was not
//! done. The gRPC layer maps it to a status in one place
//! (`service/status.rs`); nothing here knows about gRPC.

use crate::engine::Reason;
use crate::model::ModelError;
use crate::store::StoreError;
use thiserror::Error;

/// Why the replica did not do what it was asked. Messages are lowercase,
/// name the field and quote the offending input in backticks.
#[derive(Debug, Error)]
pub enum ReplicaError {
    /// A malformed request: an empty batch, an oversized one, an unknown lock type.
    #[error("{field}: {message}")]
    Invalid {
        /// Path of the offending field (`mutations`, `object.type`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The model refused the batch (validation, an unknown reference, the
    /// actor may not make a change).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// An unknown tenant.
    #[error("{0}")]
    NotFound(String),
    /// Creating or importing a tenant that exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// `expected_revision`, a precondition or a lock token does not hold.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The person may not take the edit lock.
    #[error("{0}")]
    PermissionDenied(String),
    /// The replica cannot do it now: still loading, or the revision waited
    /// for did not arrive in time.
    #[error("{0}")]
    Unavailable(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bug: something validated input should never produce.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result alias of the replica.
pub type ReplicaResult<T> = Result<T, ReplicaError>;

impl ReplicaError {
    /// A malformed field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ReplicaError::Invalid { field: field.into(), message: message.into() }
    }

    /// The snapshot is not loaded yet (start-up replay or a reload is running).
    pub fn loading() -> Self {
        ReplicaError::Unavailable("the replica is still loading; retry".into())
    }

    /// Why there is no state for `tenant`: the reason `Replica::state` gave.
    pub fn no_state(reason: Reason, tenant: &str) -> Self {
        match reason {
            Reason::NotLoaded => ReplicaError::loading(),
            _ => ReplicaError::NotFound(format!("tenant: unknown tenant `{tenant}`")),
        }
    }
}
