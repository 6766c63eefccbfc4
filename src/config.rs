//! The server's validated configuration.
//!
//! `authzd serve` flags (with `AUTHZD_*` environment fallbacks, see
//! [`crate::cli::ServeArgs`]) are checked once here and turned into a
//! [`ServerConfig`]; the rest of the server never sees raw flags. Tests build
//! a [`ServerConfig`] directly with [`ServerConfig::new`].

use crate::service::{Limits, LockSettings, WatchSettings};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;

/// Default gRPC listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Default store URL.
pub const DEFAULT_STORE: &str = "sqlite://authzd.db";
/// Default largest request the server decodes (4 MiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log collectors).
    Json,
}

/// Why the configuration was refused. Messages name the flag.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// A flag has a value the server cannot use.
    #[error("--{flag}: {message}")]
    Invalid {
        /// The flag (without dashes).
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Everything `authzd serve` needs, validated.
#[derive(Clone)]
pub struct ServerConfig {
    /// TCP address of the gRPC (and gRPC-Web) listener.
    pub listen: SocketAddr,
    /// Optional Unix domain socket to listen on as well (sidecars on one host).
    pub unix_socket: Option<PathBuf>,
    /// Store URL: `sqlite://<path>`, a file path, or `postgres://...`.
    pub store_url: String,
    /// Load the demo tenant ACME (`examples/acme.yaml`, id `acme`) when absent.
    pub demo: bool,
    /// Bearer token admin calls must present; `None`: admin calls are open.
    pub admin_token: Option<String>,
    /// Log format.
    pub log_format: LogFormat,
    /// Batch sizes, checkpoint cadence, waits, change-report budget.
    pub limits: Limits,
    /// Edit-lock idle timeouts.
    pub locks: LockSettings,
    /// Largest request message decoded.
    pub max_message_bytes: usize,
    /// How often the store is polled for other replicas' writes and expired
    /// locks; zero disables tailing (a single replica needs none).
    pub tail_interval: Duration,
    /// Change streams: checkpoint cadence and queue sizes.
    pub watch: WatchSettings,
    /// HTTP address of `/metrics`, `/healthz` and `/readyz`; `None`: off.
    pub metrics_listen: Option<SocketAddr>,
    /// OTLP/gRPC collector traces are exported to; `None`: no traces.
    pub otlp_endpoint: Option<String>,
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("unix_socket", &self.unix_socket)
            .field("store_url", &crate::store::redact_url(&self.store_url))
            .field("demo", &self.demo)
            .field("admin_token", &self.admin_token.as_ref().map(|_| "***"))
            .field("log_format", &self.log_format)
            .field("limits", &self.limits)
            .field("locks", &self.locks)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("tail_interval", &self.tail_interval)
            .field("watch", &self.watch)
            .field("metrics_listen", &self.metrics_listen)
            .field("otlp_endpoint", &self.otlp_endpoint)
            .finish()
    }
}

impl ServerConfig {
    /// Defaults with the given store: listen on the default address, no demo,
    /// no admin token.
    pub fn new(store_url: impl Into<String>) -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            unix_socket: None,
            store_url: store_url.into(),
            demo: false,
            admin_token: None,
            log_format: LogFormat::Text,
            limits: Limits::default(),
            locks: LockSettings::default(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            tail_interval: Duration::from_secs(1),
            watch: WatchSettings::default(),
            metrics_listen: None,
            otlp_endpoint: None,
        }
    }

    /// Validates the `serve` flags.
    pub fn from_args(a: &crate::cli::ServeArgs) -> Result<Self, ConfigError> {
        let invalid = |flag, message: &str| ConfigError::Invalid { flag, message: message.to_owned() };
        if a.max_batch == 0 {
            return Err(invalid("max-batch", "must be at least 1"));
        }
        if a.checkpoint_every == 0 {
            return Err(invalid("checkpoint-every", "must be at least 1"));
        }
        if a.max_message_bytes < 1024 {
            return Err(invalid("max-message-bytes", "must be at least 1024"));
        }
        if a.store.trim().is_empty() {
            return Err(invalid("store", "must not be empty"));
        }
        let admin_token = match a.admin_token.as_deref() {
            Some(t) if t.trim().is_empty() => return Err(invalid("admin-token", "must not be empty when given")),
            Some(t) if t.chars().any(|c| c.is_control() || c.is_whitespace()) => {
                return Err(invalid("admin-token", "must not contain white space or control characters"));
            }
            t => t.map(str::to_owned),
        };
        if a.lock_idle_timeout_secs == 0 || a.lock_idle_timeout_secs > a.lock_max_idle_timeout_secs {
            return Err(invalid("lock-idle-timeout-secs", "must be between 1 and --lock-max-idle-timeout-secs"));
        }
        Ok(ServerConfig {
            listen: a.listen,
            unix_socket: a.unix_socket.clone(),
            store_url: a.store.clone(),
            demo: a.demo,
            admin_token,
            log_format: a.log_format,
            limits: Limits {
                max_batch: a.max_batch,
                checkpoint_every: a.checkpoint_every,
                revision_wait: Duration::from_millis(a.revision_wait_ms),
                ..Limits::default()
            },
            locks: LockSettings {
                default_idle: Duration::from_secs(a.lock_idle_timeout_secs),
                max_idle: Duration::from_secs(a.lock_max_idle_timeout_secs),
            },
            max_message_bytes: a.max_message_bytes,
            tail_interval: Duration::from_millis(a.tail_interval_ms),
            watch: WatchSettings {
                checkpoint_interval: Duration::from_millis(a.checkpoint_interval_ms),
                ..WatchSettings::default()
            },
            metrics_listen: a.metrics_listen,
            otlp_endpoint: a.otlp_endpoint.clone().filter(|e| !e.trim().is_empty()),
        })
    }
}
