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
//! - [`replica`]: the snapshot kept in step with the store: start-up replay,
//!   the single writer, tailing, checkpoints, `at_least_revision` waits.
//! - [`watch`]: `WatchService` (computed and raw change streams) and the
//!   fan-out that feeds it from the replica.
//! - [`actor`]: which permissions a write on behalf of a person needs (SPEC §6).
//! - [`changes`]: who gains and loses what with a write (dry runs).
//! - [`replace`]: a whole-tenant replacement expressed as one write batch.
//! - [`convert`]: proto ↔ model, the only place wire types are read or built.
//! - [`status`]: the layer's error enum and its one mapping to `tonic::Status`.

pub mod actor;
pub mod admin;
pub mod auth;
pub mod changes;
pub mod convert;
pub mod decision;
pub mod read;
pub mod replace;
pub mod replica;
pub mod status;
pub mod watch;
pub mod wire;

pub use admin::{Admin, LockSettings};
pub use auth::{AdminAuth, ClientCertAdmin, DecisionAuth};
pub use decision::Decisions;
pub use read::Reads;
pub use replica::{Limits, Replica, WritePhases};
pub use status::{ServiceError, ServiceResult};
pub use watch::{Fanout, WatchSettings, Watcher};
