//! authzd — an authorization sidecar for contact-center software.
//!
//! Crate map (the features that build each part are in brackets; see
//! `docs/embedding.md`):
//! - [`model`]: the access model as plain data (entities, mutations, validation, tenant files), and
//!   [`model::presets`], the shipped application catalogs, tenant skeleton and demo tenant.
//! - [`policytest`]: `authzd test`, policy tests over tenant files.
//! - [`proto`] (`follower`): the generated gRPC API (`proto/authzd/v1`), and its descriptor set for reflection.
//! - [`engine`]: pure decisions over a compiled, immutable tenant view.
//! - [`store`] (`server`): the durable changelog, checkpoints and edit locks (SQLite or PostgreSQL).
//! - [`synth`] (`bench`): synthetic tenants of a chosen size for benchmarks.
//! - [`follow`] (`follower`): the embedded follower, a tenant's decisions in your own process, kept current from an upstream authzd.
//! - [`snapshot`] (`follower`): the current view of every tenant, swapped whole per write batch.
//! - [`replica`] (`server`): the snapshot kept in step with the store: start-up replay, the single writer, tailing, checkpoints, edit locks, retention; its own error.
//! - [`service`] (`server`): the gRPC services as thin handlers, proto ↔ model conversion and the one error → status mapping.
//! - [`config`]: the server's validated configuration.
//! - [`cli`]: the command line (`serve` and the client commands of the same binary).
//! - [`console`]: what the client commands and `authzd bench` share: standard output that ends quietly on a closed pipe, their error, the Unix socket form of a server URL.
//! - [`app`]: wiring: logging, start-up, listeners (TCP, Unix socket), graceful shutdown.
//! - [`authority`]: the Unix socket's `:authority` fix, so that gRPC clients dialing a socket path are served.
//! - [`watch`]: computed change streams per subscriber, bounded, with resync on lag.
//! - [`decision_log`]: the decision log (off by default): one JSON line per decision, a bounded non-blocking writer.
//! - [`metrics`]: operations: Prometheus metrics, liveness/readiness probes, OTLP traces (feature `otel`).
//! - [`http`]: HTTP on the gRPC listener: CORS, HTTP/JSON through the gRPC stack, Watch as Server-Sent Events, the OpenAPI document.
//! - [`loadgen`] (`bench`): `authzd bench`, the load generator that verifies every answer against a local view.

// No unsafe code anywhere in the library (the test allocator of
// tests/no_alloc.rs is the only unsafe code of the project).
#![forbid(unsafe_code)]

// Always built (`default-features = false` gives just these): the decision core.
pub mod engine;
pub mod model;
pub mod policytest;

// Feature `follower`: the generated API, the snapshot and the embedded follower.
#[cfg(feature = "follower")]
pub mod follow;
#[cfg(feature = "follower")]
pub mod proto;
#[cfg(feature = "follower")]
pub mod snapshot;

// Feature `server` (default): the server, its stores and the CLI.
#[cfg(feature = "server")]
pub mod app;
#[cfg(feature = "server")]
pub mod authority;
#[cfg(feature = "server")]
pub mod cli;
#[cfg(feature = "server")]
pub mod config;
#[cfg(feature = "server")]
pub mod console;
#[cfg(feature = "server")]
pub mod decision_log;
#[cfg(feature = "server")]
pub mod http;
#[cfg(feature = "server")]
pub mod metrics;
#[cfg(feature = "server")]
pub mod replica;
#[cfg(feature = "server")]
pub mod service;
#[cfg(feature = "server")]
pub mod store;
#[cfg(feature = "server")]
pub mod tls;
#[cfg(feature = "server")]
pub mod watch;

// Feature `bench` (default): the load generator and synthetic tenants.
#[cfg(feature = "bench")]
pub mod loadgen;
#[cfg(feature = "bench")]
pub mod synth;
