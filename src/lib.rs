//! authzd — an authorization sidecar for contact-center software.
//!
//! Crate map:
//! - [`model`]: the access model as plain data (entities, mutations, validation, tenant files).
//! - [`presets`]: the shipped application catalogs and tenant skeleton.
//! - [`proto`]: the generated gRPC API (`proto/authzd/v1`), and its descriptor set for reflection.
//! - [`engine`]: pure decisions over a compiled, immutable tenant view.
//! - [`store`]: the durable changelog, checkpoints and edit locks (SQLite or PostgreSQL).
//! - [`synth`]: synthetic tenants of a chosen size for benchmarks.
//! - [`snapshot`]: the current view of every tenant, swapped whole per write batch.
//! - [`service`]: the gRPC services as thin handlers, the replica (start-up replay, the single writer, tailing), proto ↔ model conversion and the one error → status mapping.
//! - [`config`]: the server's validated configuration.
//! - [`cli`]: the command line (`serve` and the client commands of the same binary).
//! - [`app`]: wiring: logging, start-up, listeners (TCP, Unix socket), graceful shutdown.
//! - [`authority`]: the Unix socket's `:authority` fix, so that gRPC clients dialing a socket path are served.
//! - [`watch`]: computed change streams per subscriber, bounded, with resync on lag.
//! - [`decision_log`]: the decision log (off by default): one JSON line per decision, a bounded non-blocking writer.
//! - [`metrics`]: operations: Prometheus metrics, liveness/readiness probes, OTLP traces (feature `otel`).
//! - [`http`]: HTTP on the gRPC listener: CORS, HTTP/JSON through the gRPC stack, Watch as Server-Sent Events, the OpenAPI document.
//! - [`loadgen`]: `authzd bench`, the load generator that verifies every answer against a local view.

pub mod app;
pub mod authority;
pub mod cli;
pub mod config;
pub mod decision_log;
pub mod engine;
pub mod http;
pub mod loadgen;
pub mod metrics;
pub mod model;
pub mod policytest;
pub mod presets;
pub mod proto;
pub mod service;
pub mod snapshot;
pub mod store;
pub mod synth;
pub mod tls;
pub mod watch;
