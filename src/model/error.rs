//! The model layer's error: every rejection names the field and the item.

use thiserror::Error;

/// Why a configuration, tenant file or write batch was rejected.
///
/// `field` is a path into the input (`roles[callback-admin].privileges.Callback`,
/// `mutations[3].put_object`), `item` the offending value; the message says what
/// is wrong with it. Messages are lowercase with the input in backticks.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field}: {message}")]
pub struct ModelError {
    /// Where in the input the problem is.
    pub field: String,
    /// The offending item (id, name or value).
    pub item: String,
    /// What is wrong, with the item quoted.
    pub message: String,
    /// What kind of problem it is (maps to a gRPC status).
    pub kind: ErrorKind,
}

/// The class of a model error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed value: bad name, bad id, bad pattern.
    Invalid,
    /// A reference to something that does not exist.
    UnknownReference,
    /// Something that must be unique is not.
    Duplicate,
    /// A cycle in folders or privilege dependencies.
    Cycle,
    /// A precondition of the write failed.
    Precondition,
    /// The request is larger than allowed.
    TooLarge,
    /// The entity exists already where it must not (create of an existing tenant).
    AlreadyExists,
    /// The actor of a write may not make a change.
    PermissionDenied,
}

impl ModelError {
    /// A new error of `kind`.
    pub fn new(kind: ErrorKind, field: impl Into<String>, item: impl Into<String>, message: impl Into<String>) -> Self {
        ModelError { field: field.into(), item: item.into(), message: message.into(), kind }
    }
    /// A malformed value.
    pub fn invalid(field: impl Into<String>, item: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, field, item, message)
    }
    /// A reference to something missing.
    pub fn unknown(field: impl Into<String>, item: impl Into<String>, what: &str) -> Self {
        let item = item.into();
        let message = format!("unknown {what} `{item}`");
        Self::new(ErrorKind::UnknownReference, field, item, message)
    }
    /// A duplicate.
    pub fn duplicate(field: impl Into<String>, item: impl Into<String>, what: &str) -> Self {
        let item = item.into();
        let message = format!("duplicate {what} `{item}`");
        Self::new(ErrorKind::Duplicate, field, item, message)
    }
    /// Prefixes the field path (errors found inside a mutation get the mutation's index).
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = if self.field.is_empty() { prefix.to_owned() } else { format!("{prefix}.{}", self.field) };
        self
    }
}

/// Result alias of the model layer.
pub type ModelResult<T> = Result<T, ModelError>;

impl ModelError {
    /// Appends a hint to the message (`known presets: ...`).
    pub fn with_hint(mut self, hint: &str) -> Self {
        self.message = format!("{}; {hint}", self.message);
        self
    }
}
