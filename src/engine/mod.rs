//! Pure decisions (SPEC §2–§4): no I/O, no async, no globals.
//!
//! [`TenantView::build`] compiles a validated [`crate::model::TenantConfig`]
//! into an immutable view with every inheritance, membership and privilege
//! precomputed; [`TenantView::check`] then answers a [`CheckRequest`] without
//! allocating. [`reference`] is a deliberately naive evaluator written straight
//! from the specification, used by the differential tests as the oracle.

// Every index in the engine is proven in range where it is made
// (`// INVARIANT:` beside each allowed one); the reference evaluator, test
// code, is exempt.
#[deny(clippy::indexing_slicing)]
pub mod actor;
#[deny(clippy::indexing_slicing)]
pub mod changes;
#[cfg(feature = "bench")]
pub mod reference;
#[deny(clippy::indexing_slicing)]
pub mod types;
#[deny(clippy::indexing_slicing)]
pub mod view;

pub use types::*;
pub use view::{AceEvidence, Compiled, Explanation, Inputs, PrivilegeEvidence, TenantView};
