//! `authzd serve`'s command line: its flags and which of them were given.

use crate::config::{DEFAULT_LISTEN, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_STORE, LogFormat};
use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Flags of `authzd serve`; each has an `AUTHZD_*` environment fallback, and
/// (but `--config`) a key of the same name in the configuration file.
#[derive(Debug, Clone, Args)]
pub struct ServeFlags {
    /// Read settings from this YAML file: keys are these flags' long names
    /// (`listen: 127.0.0.1:50051`); flags and environment variables override it.
    #[arg(long, env = "AUTHZD_CONFIG")]
    pub config: Option<PathBuf>,
    /// TCP address to listen on.
    #[arg(long, env = "AUTHZD_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Store URL: `sqlite://<path>`, a file path, or `postgres://user:pass@host/db`.
    #[arg(long, env = "AUTHZD_STORE", default_value = DEFAULT_STORE)]
    pub store: String,
    /// Create the directory of an SQLite store when it does not exist (by
    /// default a missing directory is an error: a typo would start an empty store).
    #[arg(long, env = "AUTHZD_CREATE_STORE_DIR")]
    pub create_store_dir: bool,
    /// Load the demo tenant ACME (id `acme`) at start-up when it is absent.
    #[arg(long, env = "AUTHZD_DEMO")]
    pub demo: bool,
    /// Follow this upstream authzd (`http://host:port`, `https://...`)
    /// instead of opening a store: no database connection; tenants are
    /// loaded from its `Export`, changes follow its raw `Watch`, and writes,
    /// lock calls and restricted-mode switches are forwarded to it.
    #[arg(long, env = "AUTHZD_FOLLOW", value_name = "URL")]
    pub follow: Option<String>,
    /// Bearer token for the upstream's admin API (`--follow`).
    #[arg(long, env = "AUTHZD_UPSTREAM_TOKEN", hide_env_values = true)]
    pub upstream_token: Option<String>,
    /// CA certificate (PEM) that signed the upstream's TLS certificate (`--follow https://...`).
    #[arg(long, env = "AUTHZD_UPSTREAM_CA")]
    pub upstream_ca: Option<PathBuf>,
    /// Client certificate (PEM) this follower presents to the upstream (mTLS); needs `--upstream-key`.
    #[arg(long, env = "AUTHZD_UPSTREAM_CERT")]
    pub upstream_cert: Option<PathBuf>,
    /// The private key of `--upstream-cert` (PEM).
    #[arg(long, env = "AUTHZD_UPSTREAM_KEY")]
    pub upstream_key: Option<PathBuf>,
    /// Batches a follower keeps for its own raw subscribers to resume from.
    #[arg(long, env = "AUTHZD_FOLLOW_RETAIN", default_value_t = 10_000)]
    pub follow_retain: usize,
    /// Bearer token admin calls must present.
    #[arg(long, env = "AUTHZD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Bearer token decision calls and privileges / visible-objects Watch
    /// subscriptions must present (default: open; the admin token and, with
    /// mTLS, a client certificate are accepted too). Raw Watch subscriptions
    /// need the admin credential.
    #[arg(long, env = "AUTHZD_DECISION_TOKEN", hide_env_values = true)]
    pub decision_token: Option<String>,
    /// Serve TLS on the TCP listener with this certificate chain (PEM); needs `--tls-key`.
    #[arg(long, env = "AUTHZD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert` (PEM).
    #[arg(long, env = "AUTHZD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM) on the TCP
    /// listener (mTLS); a verified certificate may call the admin API.
    #[arg(long, env = "AUTHZD_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// With mTLS, only client certificates with this subject common name may
    /// call the admin API (repeat the flag; comma-separated in the environment).
    #[arg(long = "admin-client-cn", env = "AUTHZD_ADMIN_CLIENT_CN", value_name = "NAME", value_delimiter = ',')]
    pub admin_client_cn: Vec<String>,
    /// Also listen on this Unix domain socket (plaintext). Clients that send
    /// the socket path as HTTP/2 `:authority` (grpcurl, grpcio) are served
    /// as if they had sent `localhost` (`AUTHZD_UNIX_AUTHORITY_FIX=off`: not).
    #[arg(long, env = "AUTHZD_UNIX_SOCKET")]
    pub unix_socket: Option<PathBuf>,
    /// Most mutations per write batch (and items per CheckBatch).
    #[arg(long, env = "AUTHZD_MAX_BATCH", default_value_t = 10_000)]
    pub max_batch: usize,
    /// Log format (the level comes from `RUST_LOG`, default `info`).
    #[arg(long, env = "AUTHZD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Write a tenant checkpoint after this many of its batches.
    #[arg(long, env = "AUTHZD_CHECKPOINT_EVERY", default_value_t = 100)]
    pub checkpoint_every: u64,
    /// Largest request decoded, in bytes.
    #[arg(long, env = "AUTHZD_MAX_MESSAGE_BYTES", default_value_t = DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,
    /// Longest wait for a request's `at_least_revision`, in milliseconds.
    #[arg(long, env = "AUTHZD_REVISION_WAIT_MS", default_value_t = 5_000)]
    pub revision_wait_ms: u64,
    /// Replaced states of each tenant kept for the continuations of paged
    /// listings begun on them (every page of a listing is read at its first
    /// page's revision; past this a continuation is refused). 0: none.
    #[arg(long, env = "AUTHZD_PAGE_RETAIN_REVISIONS", default_value_t = 16)]
    pub page_retain_revisions: usize,
    /// How long a replaced revision stays readable by listing continuations, in seconds.
    #[arg(long, env = "AUTHZD_PAGE_RETAIN_SECS", default_value_t = 60)]
    pub page_retain_secs: u64,
    /// How often to poll the store for other replicas' writes, in milliseconds (0: never).
    #[arg(long, env = "AUTHZD_TAIL_INTERVAL_MS", default_value_t = 1_000)]
    pub tail_interval_ms: u64,
    /// Default idle timeout of Designer edit locks, in seconds.
    #[arg(long, env = "AUTHZD_LOCK_IDLE_TIMEOUT_SECS", default_value_t = 300)]
    pub lock_idle_timeout_secs: u64,
    /// Longest idle timeout a lock request may ask for, in seconds.
    #[arg(long, env = "AUTHZD_LOCK_MAX_IDLE_TIMEOUT_SECS", default_value_t = 3_600)]
    pub lock_max_idle_timeout_secs: u64,
    /// How often every Watch stream gets a checkpoint with the current
    /// revision, in milliseconds (0: never).
    #[arg(long, env = "AUTHZD_CHECKPOINT_INTERVAL_MS", default_value_t = 10_000)]
    pub checkpoint_interval_ms: u64,
    /// Keep the changelog for this long, in milliseconds (default 7 days):
    /// older batches are compacted away once tenant checkpoints cover them,
    /// and raw Watch subscribers cannot resume from before (edit-lock events
    /// are kept this long too, at most an hour). 0: keep everything.
    #[arg(long, env = "AUTHZD_CHANGELOG_RETENTION_MS", default_value_t = 604_800_000)]
    pub changelog_retention_ms: u64,
    /// How often the changelog retention is enforced (checkpoints, then
    /// compaction), in milliseconds; the first time at start-up (0: never).
    #[arg(long, env = "AUTHZD_COMPACTION_INTERVAL_MS", default_value_t = 3_600_000)]
    pub compaction_interval_ms: u64,
    /// At shutdown, after every Watch stream has ended, how long in-flight
    /// calls may take to finish, in milliseconds; connections still open then
    /// are cut (a client that stopped reading cannot hold the server).
    #[arg(long, env = "AUTHZD_SHUTDOWN_GRACE_MS", default_value_t = 10_000)]
    pub shutdown_grace_ms: u64,
    /// Serve Prometheus metrics (`/metrics`) and the probes `/healthz` and
    /// `/readyz` over HTTP on this address (off when absent).
    #[arg(long, env = "AUTHZD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Export traces over OTLP/gRPC to this collector (`http://collector:4317`);
    /// needs a build with `--features otel`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// A browser origin allowed to call the server from another origin
    /// (CORS, for gRPC-Web and HTTP/JSON): `https://desk.example.com`
    /// (scheme, host and port; no path), or `*` for any. Repeat the flag
    /// (comma-separated in the environment). None: cross-origin browser calls
    /// are refused.
    #[arg(
        long = "cors-allowed-origin",
        env = "AUTHZD_CORS_ALLOWED_ORIGIN",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    pub cors_allowed_origin: Vec<String>,
    /// Watch streams over HTTP (Server-Sent Events) get a `: keep-alive`
    /// comment after this many milliseconds without an event (0: never).
    #[arg(long, env = "AUTHZD_SSE_HEARTBEAT_MS", default_value_t = 15_000)]
    pub sse_heartbeat_ms: u64,
    /// Serve the access explorer, a page for administrators ("who can see
    /// this, and why?"), at `/explorer/` on the gRPC listener. Its calls
    /// carry the tokens typed into it; off: `/explorer/` is 404.
    #[arg(long, env = "AUTHZD_EXPLORER")]
    pub explorer: bool,
    /// Write a decision log to this file (appended to), or to standard output
    /// with `-`: one JSON line per decision of Check, CheckBatch (each item)
    /// and Explain (off when absent).
    #[arg(long, env = "AUTHZD_DECISION_LOG", value_name = "PATH|-")]
    pub decision_log: Option<String>,
    /// Fraction of decisions the decision log writes, 0 to 1 (decided by a
    /// hash of the request id: every replica keeps the same requests).
    #[arg(long, env = "AUTHZD_DECISION_LOG_SAMPLE", value_name = "FRACTION", default_value_t = 1.0)]
    pub decision_log_sample: f64,
    /// Which decisions the decision log writes.
    #[arg(long, env = "AUTHZD_DECISION_LOG_FILTER", value_enum, default_value_t = crate::decision_log::Filter::All)]
    pub decision_log_filter: crate::decision_log::Filter,
    /// Lines buffered between the decisions and the decision log's writer;
    /// when full, lines are dropped (and counted), decisions never wait.
    #[arg(long, env = "AUTHZD_DECISION_LOG_BUFFER", value_name = "LINES", default_value_t = crate::decision_log::DEFAULT_BUFFER)]
    pub decision_log_buffer: usize,
}

/// `authzd serve`'s command line: its flags, and which of them the command
/// line or the environment set (a configuration file does not override those).
#[derive(Clone)]
pub struct ServeArgs {
    /// The flags, with their defaults.
    pub flags: ServeFlags,
    /// The flags set on the command line or in the environment, as arguments
    /// (`--listen=...`, `--demo`), in definition order.
    pub given: Vec<std::ffi::OsString>,
    /// Their long names.
    pub given_names: std::collections::BTreeSet<String>,
}

impl std::fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `given` holds tokens: only the names.
        f.debug_struct("ServeArgs").field("flags", &self.flags).field("given_names", &self.given_names).finish()
    }
}

impl ServeArgs {
    /// The definition of `serve`'s flags, as clap sees them.
    pub fn command() -> clap::Command {
        ServeFlags::augment_args(clap::Command::new("serve"))
    }

    fn from_matches(m: &clap::ArgMatches, flags: ServeFlags) -> ServeArgs {
        use clap::parser::ValueSource;
        let mut given = Vec::new();
        let mut given_names = std::collections::BTreeSet::new();
        for arg in ServeArgs::command().get_arguments() {
            let (Some(long), id) = (arg.get_long(), arg.get_id().as_str()) else { continue };
            if !matches!(m.value_source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable)) {
                continue;
            }
            given_names.insert(long.to_owned());
            if arg.get_action().takes_values() {
                for v in m.try_get_raw(id).ok().flatten().into_iter().flatten() {
                    let mut a = std::ffi::OsString::from(format!("--{long}="));
                    a.push(v);
                    given.push(a);
                }
            } else if m.try_get_one::<bool>(id).ok().flatten() == Some(&true) {
                given.push(format!("--{long}").into());
            }
        }
        ServeArgs { flags, given, given_names }
    }
}

impl clap::FromArgMatches for ServeArgs {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        Ok(ServeArgs::from_matches(m, ServeFlags::from_arg_matches(m)?))
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        let mut flags = self.flags.clone();
        flags.update_from_arg_matches(m)?;
        *self = ServeArgs::from_matches(m, flags);
        Ok(())
    }
}

impl Args for ServeArgs {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        ServeFlags::augment_args(cmd)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        ServeFlags::augment_args_for_update(cmd)
    }

    fn group_id() -> Option<clap::Id> {
        ServeFlags::group_id()
    }
}
