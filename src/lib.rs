//! authzd — an authorization sidecar for contact-center software.
//!
//! Crate map:
//! - [`model`]: the access model as plain data (entities, mutations, validation, tenant files).
//! - [`presets`]: the shipped application catalogs and tenant skeleton.
//! - [`engine`]: pure decisions over a compiled, immutable tenant view.
//! - [`snapshot`]: the current view of every tenant, swapped whole per write batch.

pub mod engine;
pub mod model;
pub mod presets;
pub mod snapshot;
