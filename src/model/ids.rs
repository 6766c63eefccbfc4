//! Newtype identifiers. Identifiers are opaque, case-sensitive strings, unique
//! per tenant and per type (SPEC §1); the newtypes keep a person id from being
//! passed where a role id is expected.

use serde::{Deserialize, Serialize};
use std::borrow::Borrow;
use std::fmt;

macro_rules! id_type {
    ($(#[$doc:meta] $name:ident),* $(,)?) => {$(
        #[$doc]
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// The identifier as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_owned())
            }
        }
        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s)
            }
        }
    )*};
}

id_type!(
    /// Identifies a tenant.
    TenantId,
    /// Identifies a person within a tenant.
    PersonId,
    /// Identifies an access group within a tenant.
    GroupId,
    /// Identifies a folder within a tenant.
    FolderId,
    /// Identifies a role within a tenant.
    RoleId,
    /// Identifies a partition within a tenant.
    PartitionId,
    /// Identifies a configuration object within a tenant and object type.
    ObjectId,
);

/// Monotonic revision of the store: every accepted write batch gets the next one.
pub type Revision = u64;
