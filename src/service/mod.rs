//! The gRPC services: thin adapters between the wire and the core
//! (ARCHITECTURE habit 7).
//!
//! - [`decision`]: `DecisionService` (Check, CheckBatch, ListVisible,
//!   EffectivePrivileges, Explain), answered from the in-memory snapshot.
//! - [`read`]: `ReadService` (GetEntity, ListEntities, ListEntries,
//!   ListSubjects, ListHolders): the configuration read back and the reverse
//!   lookups, from the same snapshot.
//! - [`admin`]: `AdminService` (Write, Import, Export, ListTenants, virtual
//!   queues, edit locks, restricted mode).
//! - [`auth`]: who may call what: bearer tokens (admin, decisions) and mTLS
//!   client certificates, as interceptors.
//! - [`watch`]: `WatchService` (computed and raw change streams) and the
//!   fan-out that feeds it from the replica.
//! - [`convert`]: proto ↔ model, the only place wire types are read or built.
//! - [`page`]: the state a page of a listing is read from, and the token to
//!   the next page (shared by `decision` and `read`).
//! - [`status`]: the layer's error enum, the replica's error mapped into it,
//!   and its one mapping to `tonic::Status`.
//!
//! The replica these adapters call (writes, locks, waits) is
//! [`crate::replica`]; its rules of who may write what are
//! [`crate::engine::actor`] and [`crate::engine::changes`].

pub mod admin;
pub mod auth;
pub mod convert;
pub mod decision;
pub mod page;
pub mod read;
pub mod status;
pub mod watch;
pub mod wire;

pub use admin::{Admin, LockSettings};
pub use auth::{AdminAuth, ClientCertAdmin, DecisionAuth};
pub use decision::Decisions;
pub use read::Reads;
pub use status::{ServiceError, ServiceResult};
pub use watch::{Fanout, WatchSettings, Watcher};
