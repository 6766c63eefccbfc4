//! The service layer's error, and its one mapping to `tonic::Status`.
//!
//! Every handler returns [`ServiceError`]; the conversion to a gRPC status
//! happens here and nowhere else (ARCHITECTURE habit 4), so the same problem
//! always gets the same code, and messages never carry secrets. Messages are
//! lowercase, name the field and quote the offending input in backticks.

use crate::model::{ErrorKind, ModelError};
use crate::store::StoreError;
use thiserror::Error;
use tonic::{Code, Status};

/// Why a request was not served.
#[derive(Debug, Error)]
pub enum ServiceError {
    /// A malformed request: a bad enum value, an empty id, an oversized batch.
    #[error("{field}: {message}")]
    InvalidArgument {
        /// Path of the offending field (`mutations[3].put_person.id`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The model rejected the write (validation, unknown reference, ...).
    #[error(transparent)]
    Model(#[from] ModelError),
    /// An unknown tenant, person, application or folder (outside decisions,
    /// which deny with a reason instead).
    #[error("{0}")]
    NotFound(String),
    /// Creating or importing something that exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// `expected_revision`, a precondition or a lock token does not hold.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The actor of a write (or a lock requester) may not do it.
    #[error("{0}")]
    PermissionDenied(String),
    /// A call without the credential its service needs (bearer token, client
    /// certificate); the message says which, and never echoes what was sent.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// The replica cannot answer now (not loaded, revision not reached, store down).
    #[error("{0}")]
    Unavailable(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Not available in this build or configuration.
    #[error("{0}")]
    Unimplemented(String),
    /// A bug: something that validated input should never produce.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result alias of the service layer.
pub type ServiceResult<T> = Result<T, ServiceError>;

impl ServiceError {
    /// A malformed field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ServiceError::InvalidArgument { field: field.into(), message: message.into() }
    }

    /// The gRPC code of this error.
    pub fn code(&self) -> Code {
        match self {
            ServiceError::InvalidArgument { .. } => Code::InvalidArgument,
            ServiceError::Model(e) => match e.kind {
                ErrorKind::Invalid
                | ErrorKind::UnknownReference
                | ErrorKind::Duplicate
                | ErrorKind::Cycle
                | ErrorKind::TooLarge => Code::InvalidArgument,
                ErrorKind::Precondition => Code::FailedPrecondition,
                ErrorKind::AlreadyExists => Code::AlreadyExists,
                ErrorKind::PermissionDenied => Code::PermissionDenied,
            },
            ServiceError::NotFound(_) => Code::NotFound,
            ServiceError::AlreadyExists(_) => Code::AlreadyExists,
            ServiceError::FailedPrecondition(_) => Code::FailedPrecondition,
            ServiceError::PermissionDenied(_) => Code::PermissionDenied,
            ServiceError::Unauthenticated(_) => Code::Unauthenticated,
            ServiceError::Unavailable(_) => Code::Unavailable,
            ServiceError::Store(e) => match e {
                StoreError::Unavailable { .. } => Code::Unavailable,
                StoreError::Conflict { .. } | StoreError::Compacted { .. } => Code::Aborted,
                StoreError::Corrupt { .. } | StoreError::Other(_) => Code::Internal,
            },
            ServiceError::Unimplemented(_) => Code::Unimplemented,
            ServiceError::Internal(_) => Code::Internal,
        }
    }
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Status {
        let code = e.code();
        match code {
            Code::Internal => tracing::error!(error = %e, "request failed"),
            Code::Unavailable => tracing::warn!(error = %e, "request failed"),
            _ => tracing::debug!(error = %e, code = ?code, "request refused"),
        }
        Status::new(code, e.to_string())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn model_errors_keep_field_and_map_by_kind() {
        let e = ServiceError::from(ModelError::invalid("mutations[3].put_person.id", "", "must not be empty"));
        let s = Status::from(e);
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "mutations[3].put_person.id: must not be empty");
        let e = ServiceError::from(ModelError::new(ErrorKind::AlreadyExists, "tenant", "acme", "exists"));
        assert_eq!(Status::from(e).code(), Code::AlreadyExists);
    }

    #[test]
    fn unauthenticated_does_not_echo_anything() {
        let s = Status::from(ServiceError::Unauthenticated("calls need the header `authorization: Bearer <token>`"));
        assert_eq!(s.code(), Code::Unauthenticated);
        assert!(s.message().contains("Bearer <token>"));
    }
}
