//! The access model as plain data (SPEC §1–§3): identifiers, permission bits,
//! entities, a tenant's configuration, the mutations that change it, its
//! validation and its file format. No I/O and no decisions live here.

pub mod apply;
pub mod config;
pub mod entity;
pub mod error;
pub mod file;
pub mod ids;
pub mod perm;
pub mod presets;
pub mod replace;
pub mod validate;
pub mod yaml;

pub use config::{Mutation, TenantConfig};
pub use entity::*;
pub use error::{ErrorKind, ModelError, ModelResult};
pub use file::TenantFile;
pub use ids::*;
pub use perm::{Perm, PermSet};
