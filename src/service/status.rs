//! The service layer's error, and its one mapping to `tonic::Status`.
//!
//! Every handler returns [`ServiceError`]; the conversion to a gRPC status
//! happens here and nowhere else (ARCHITECTURE habit 4), so the same problem
//! always gets the same code, and messages never carry secrets. Messages are
//! lowercase, name the field and quote the offending input in backticks.

use crate::engine::Reason;
use crate::model::{ErrorKind, ModelError};
use crate::replica::ReplicaError;
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
    /// A request body that is not the protobuf message its method takes
    /// (refused by the codec, before any handler).
    #[error("{0}")]
    Undecodable(String),
    /// A limit was exceeded (a request message over `--max-message-bytes`);
    /// the message names the limit.
    #[error("{0}")]
    ResourceExhausted(String),
    /// A stream ended because its subscriber could not keep up; subscribe again.
    #[error("{0}")]
    Aborted(String),
    /// Not available in this build or configuration.
    #[error("{0}")]
    Unimplemented(String),
    /// A bug: something that validated input should never produce.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The replica's errors, as the service layer reports them.
impl From<ReplicaError> for ServiceError {
    fn from(e: ReplicaError) -> Self {
        match e {
            ReplicaError::Invalid { field, message } => ServiceError::InvalidArgument { field, message },
            ReplicaError::Model(e) => ServiceError::Model(e),
            ReplicaError::NotFound(m) => ServiceError::NotFound(m),
            ReplicaError::AlreadyExists(m) => ServiceError::AlreadyExists(m),
            ReplicaError::FailedPrecondition(m) => ServiceError::FailedPrecondition(m),
            ReplicaError::PermissionDenied(m) => ServiceError::PermissionDenied(m),
            ReplicaError::Unavailable(m) => ServiceError::Unavailable(m),
            ReplicaError::Store(e) => ServiceError::Store(e),
            ReplicaError::Internal(m) => ServiceError::Internal(m),
        }
    }
}

impl From<ReplicaError> for Status {
    fn from(e: ReplicaError) -> Self {
        ServiceError::from(e).into()
    }
}

/// Result alias of the service layer.
pub type ServiceResult<T> = Result<T, ServiceError>;

/// A field of a message that does not convert to the model is a malformed request.
impl From<crate::proto::convert::FieldError> for ServiceError {
    fn from(e: crate::proto::convert::FieldError) -> Self {
        ServiceError::InvalidArgument { field: e.field, message: e.message }
    }
}

impl From<crate::proto::convert::FieldError> for Status {
    fn from(e: crate::proto::convert::FieldError) -> Self {
        ServiceError::from(e).into()
    }
}

impl ServiceError {
    /// A malformed field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ServiceError::InvalidArgument { field: field.into(), message: message.into() }
    }

    /// The gRPC code of this error.
    pub fn code(&self) -> Code {
        match self {
            ServiceError::InvalidArgument { .. } | ServiceError::Undecodable(_) => Code::InvalidArgument,
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
            ServiceError::ResourceExhausted(_) => Code::ResourceExhausted,
            ServiceError::Aborted(_) => Code::Aborted,
            ServiceError::Unimplemented(_) => Code::Unimplemented,
            ServiceError::Internal(_) => Code::Internal,
        }
    }

    /// The gRPC status, without logging: for answers that are expected in
    /// numbers (every stream told at shutdown, a codec's refusal) and are
    /// logged, if at all, where they happen. [`From`] logs, then does this.
    pub fn status(&self) -> Status {
        Status::new(self.code(), self.to_string())
    }

    /// The status of `self` (logged as [`From`] does) with `hint` after its
    /// message: what the client is to do next (`resume with from_revision = 7`).
    pub fn with_hint(self, hint: impl std::fmt::Display) -> Status {
        let status = Status::from(self);
        Status::new(status.code(), format!("{}; {hint}", status.message()))
    }
}

/// The error of an answer that is not a decision (a listing's scope, a
/// stream's subject) for `reason`: the same message for the same unknown
/// tenant, person, application or folder, whichever service refuses it.
pub fn not_found(reason: Reason, tenant: &str, person: &str, what: &str) -> ServiceError {
    match reason {
        // The same words as the replica's own refusals (edit locks, writes).
        Reason::NotLoaded | Reason::UnknownTenant => ReplicaError::no_state(reason, tenant).into(),
        Reason::UnknownSubject => {
            ServiceError::NotFound(format!("person: unknown person `{person}` in tenant `{tenant}`"))
        }
        Reason::UnknownApplication => {
            ServiceError::NotFound(format!("application: unknown application `{what}` in tenant `{tenant}`"))
        }
        Reason::UnknownObject => {
            ServiceError::NotFound(format!("folder: unknown folder `{what}` in tenant `{tenant}`"))
        }
        other => ServiceError::Internal(format!("unexpected `{}`", other.code())),
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
        e.status()
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

    #[test]
    fn every_variant_has_its_code_and_a_hint_keeps_it() {
        let m = || "m".to_owned();
        for (e, code) in [
            (ServiceError::Undecodable(m()), Code::InvalidArgument),
            (ServiceError::ResourceExhausted(m()), Code::ResourceExhausted),
            (ServiceError::Aborted(m()), Code::Aborted),
            (ServiceError::Unavailable(m()), Code::Unavailable),
            (ServiceError::Internal(m()), Code::Internal),
        ] {
            assert_eq!(e.status().code(), code, "{e:?}");
        }
        let s = ServiceError::Unavailable("the store is down".to_owned()).with_hint("resume with from_revision = 7");
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(s.message(), "the store is down; resume with from_revision = 7");
    }

    /// The replica's errors reach the wire with the code of their meaning and
    /// their message unchanged.
    #[test]
    fn replica_errors_map_to_their_codes() {
        let m = || "m".to_owned();
        for (e, code) in [
            (ReplicaError::invalid("mutations", "the batch is empty"), Code::InvalidArgument),
            (ReplicaError::Model(ModelError::new(ErrorKind::PermissionDenied, "f", "i", "m")), Code::PermissionDenied),
            (ReplicaError::NotFound(m()), Code::NotFound),
            (ReplicaError::AlreadyExists(m()), Code::AlreadyExists),
            (ReplicaError::FailedPrecondition(m()), Code::FailedPrecondition),
            (ReplicaError::PermissionDenied(m()), Code::PermissionDenied),
            (ReplicaError::Unavailable(m()), Code::Unavailable),
            (ReplicaError::Store(StoreError::Conflict { expected: 1, actual: 2 }), Code::Aborted),
            (ReplicaError::Internal(m()), Code::Internal),
            (ReplicaError::loading(), Code::Unavailable),
            (ReplicaError::no_state(Reason::UnknownTenant, "acme"), Code::NotFound),
        ] {
            let message = e.to_string();
            let s = ServiceError::from(e).status();
            assert_eq!((s.code(), s.message()), (code, message.as_str()));
        }
        assert_eq!(
            ReplicaError::invalid("mutations", "the batch is empty").to_string(),
            "mutations: the batch is empty"
        );
    }

    /// The one status table: no code outside this file builds a `Status` from
    /// a code (a new answer gets a [`ServiceError`] variant here instead).
    #[test]
    fn statuses_are_built_here_and_nowhere_else() {
        const BUILDERS: &[&str] = &[
            "new",
            "with_details",
            "internal",
            "unavailable",
            "invalid_argument",
            "not_found",
            "already_exists",
            "permission_denied",
            "resource_exhausted",
            "failed_precondition",
            "aborted",
            "out_of_range",
            "unimplemented",
            "data_loss",
            "unauthenticated",
            "cancelled",
            "unknown",
            "deadline_exceeded",
        ];
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, out);
                } else if path.extension().is_some_and(|x| x == "rs") {
                    out.push(path);
                }
            }
        }
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        walk(&src, &mut files);
        assert!(files.len() > 20, "the source tree was not found at {}", src.display());
        let mut found = Vec::new();
        for file in files.iter().filter(|f| !f.ends_with("service/status.rs")) {
            let text = std::fs::read_to_string(file).unwrap();
            for (n, line) in text.lines().enumerate() {
                for b in BUILDERS {
                    if line.contains(&format!("Status::{b}(")) {
                        found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                    }
                }
            }
        }
        assert!(found.is_empty(), "statuses built outside src/service/status.rs:\n{}", found.join("\n"));
    }
}
