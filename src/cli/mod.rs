//! The command line: `authzd serve` and the client commands of the same binary.
//!
//! Client commands talk to a running server (`--server`, default
//! `http://127.0.0.1:50051`; `https://` with `--ca`, and `--cert`/`--key` for
//! mTLS; `unix:///path` or `unix:/path` for the server's Unix socket; admin commands and `watch raw` send `--token` as `authorization:
//! Bearer <token>`, decision commands and the other watches
//! `--decision-token`, else `--token`; `watch raw` without `--token` sends
//! `--decision-token`), print
//! human-readable answers, or JSON with `--json`. `validate` works offline.
//! Exit codes: 0 success (for `check`: allowed), 3 `check` denied or `lock
//! acquire` refused, 1 any error, 2 usage, 141 standard output closed
//! (`| head`: the command ends quietly, see [`output`]).

use crate::config::{DEFAULT_LISTEN, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_STORE, LogFormat};
use crate::model::{Mutation, TenantFile};
use crate::proto::authzd::v1 as pb;
use crate::proto::authzd::v1::admin_service_client::AdminServiceClient;
use crate::proto::authzd::v1::decision_service_client::DecisionServiceClient;
use crate::proto::authzd::v1::watch_service_client::WatchServiceClient;
use crate::service::convert;
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use thiserror::Error;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The client commands' standard output. Every line they print goes through
/// here: when the reader has gone (`authzd tenants --json | head -1`), the
/// process ends at once, quietly, with exit code 141 (128 + SIGPIPE, what a
/// shell reports for a writer killed by a closed pipe) instead of a panic.
/// Any other write error ends it with exit code 1 and a message.
pub mod output {
    use std::io::Write as _;

    /// Exit code of a client whose standard output was closed.
    pub const CLOSED_PIPE: i32 = 141;

    /// Writes `args` (and a newline) to standard output, or ends the process.
    pub fn write(args: std::fmt::Arguments<'_>, newline: bool) {
        let mut out = std::io::stdout().lock();
        let result = out.write_fmt(args).and_then(|()| if newline { out.write_all(b"\n") } else { Ok(()) });
        // Lines reach a pipe as they are printed (`watch` output is read live).
        if let Err(e) = result.and_then(|()| out.flush()) {
            end(&e);
        }
    }

    fn end(e: &std::io::Error) -> ! {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(CLOSED_PIPE);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// `println!` for client output (see [`output`]).
macro_rules! outln {
    ($($arg:tt)*) => { $crate::cli::output::write(format_args!($($arg)*), true) };
}
/// `print!` for client output (see [`output`]).
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::output::write(format_args!($($arg)*), false) };
}
pub(crate) use outln;

/// `authzd`: an authorization sidecar for contact-center software.
#[derive(Debug, Parser)]
#[command(name = "authzd", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (gRPC, gRPC-Web, HTTP/JSON, health, reflection).
    Serve(Box<ServeArgs>),
    /// May a person do something? Exit code 0 when allowed, 3 when denied.
    Check(CheckArgs),
    /// The same question as `check`, with the evidence that decided it.
    Explain(CheckArgs),
    /// The objects of a type a person may access (every page).
    List(ListArgs),
    /// A person's effective privileges in an application.
    Privileges(PrivilegesArgs),
    /// The tenants the server knows.
    Tenants(ClientArgs),
    /// Load a tenant file (YAML) into the server.
    Import(ImportArgs),
    /// Print a tenant's configuration as a tenant file (YAML).
    Export(ExportArgs),
    /// Check a tenant file offline: parse and validate, print errors with their field path.
    Validate(ValidateArgs),
    /// Run assertion files offline on the engine: checks, listings, privileges, who may, who holds.
    Test(TestArgs),
    /// Apply a YAML list of mutations to a tenant as one atomic batch.
    Write(WriteArgs),
    /// Load-test a running server, verifying every answer (see README "Load tests").
    Bench(Box<crate::loadgen::BenchArgs>),
    /// Acquire, renew or release a Designer edit lock (SPEC §4.4).
    Lock(LockArgs),
    /// Follow a change stream and print each event as a line, until Ctrl-C.
    Watch(WatchArgs),
}

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

/// How a client command reaches the server and prints.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Server URL: `http://host:port`, `https://host:port` (with `--ca`), or
    /// the server's Unix socket as `unix:///path/to.sock` or `unix:/path/to.sock`.
    #[arg(long, env = "AUTHZD_SERVER", default_value = "http://127.0.0.1:50051")]
    pub server: String,
    /// Admin bearer token.
    #[arg(long, env = "AUTHZD_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Bearer token of decision calls and privileges / visible-objects
    /// watches (default: `--token`; raw watches send `--token` when given).
    #[arg(long, env = "AUTHZD_DECISION_TOKEN", hide_env_values = true)]
    pub decision_token: Option<String>,
    /// CA certificate (PEM) the server's certificate must be signed by; needs an `https://` server URL.
    #[arg(long, env = "AUTHZD_SERVER_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mTLS; needs `--key`.
    #[arg(long, env = "AUTHZD_CLIENT_CERT")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of `--cert`.
    #[arg(long, env = "AUTHZD_CLIENT_KEY")]
    pub key: Option<PathBuf>,
    /// Name the server's certificate must carry, when it is not the URL's host.
    #[arg(long)]
    pub tls_server_name: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A decision question.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Connection and output.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Tenant id.
    #[arg(long, env = "AUTHZD_TENANT")]
    pub tenant: String,
    /// Person id.
    #[arg(long)]
    pub person: String,
    /// Application context (catalog name, e.g. `Callback`).
    #[arg(long = "app")]
    pub application: Option<String>,
    /// Permission (`Read`, `Create`, `Change`, `Execute`, `Delete`, `ReadPermissions`, `ChangePermissions`).
    #[arg(long)]
    pub permission: Option<String>,
    /// Object as `<type>/<id>`, e.g. `Script/ges_Sales_VQ`.
    #[arg(long)]
    pub object: Option<String>,
    /// Privilege that must be effective (needs `--app`).
    #[arg(long)]
    pub privilege: Option<String>,
    /// Property touched (needs `--object`).
    #[arg(long)]
    pub property: Option<String>,
    /// Also print the evidence (always on for `explain`).
    #[arg(long)]
    pub explain: bool,
}

/// A listing.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Connection and output.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Tenant id.
    #[arg(long, env = "AUTHZD_TENANT")]
    pub tenant: String,
    /// Person id.
    #[arg(long)]
    pub person: String,
    /// Object type (`Script`, `Metric`, `Person`, ...).
    #[arg(long = "type")]
    pub kind: String,
    /// Only under this folder id.
    #[arg(long)]
    pub folder: Option<String>,
    /// Permission needed (default `Read`).
    #[arg(long)]
    pub permission: Option<String>,
    /// Application context.
    #[arg(long = "app")]
    pub application: Option<String>,
    /// Objects per request.
    #[arg(long, default_value_t = 1_000)]
    pub page_size: u32,
}

/// A privileges question.
#[derive(Debug, Clone, Args)]
pub struct PrivilegesArgs {
    /// Connection and output.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Tenant id.
    #[arg(long, env = "AUTHZD_TENANT")]
    pub tenant: String,
    /// Person id.
    #[arg(long)]
    pub person: String,
    /// Application (catalog name).
    #[arg(long = "app")]
    pub application: String,
}

/// Loading a tenant file.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// Connection and output.
    #[command(flatten)]
    pub client: ClientArgs,
    /// The tenant file.
    pub file: PathBuf,
    /// Replace the tenant if it exists.
    #[arg(long)]
    pub replace: bool,
    /// Validate and report who gains and loses what; store nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Report per-person changes of a real import too.
    #[arg(long)]
    pub include_changes: bool,
}

/// Exporting a tenant.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// Connection and output.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Tenant id.
    pub tenant: String,
    /// Write to this file instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// Offline validation.
#[derive(Debug, Clone, Args)]
pub struct ValidateArgs {
    /// The tenant files.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Offline assertion files.
#[derive(Debug, Clone, Args)]
pub struct TestArgs {
    /// The assertion files (YAML; see README "authzd test").
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// A batch of mutations.
#[derive(Debug, Clone, Args)]
pub struct WriteArgs {
    /// Connection and output.
    #[command(flatten)]
    pub client: ClientArgs,
    /// YAML list of mutations (`- put_person: {id: x, username: x}`).
    pub file: PathBuf,
    /// Tenant id.
    #[arg(long, env = "AUTHZD_TENANT")]
    pub tenant: String,
    /// Person on whose behalf the batch is written.
    #[arg(long)]
    pub actor: Option<String>,
    /// Refuse if the tenant changed after this revision.
    #[arg(long)]
    pub expected_revision: Option<u64>,
    /// Validate and report who gains and loses what; store nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Report per-person changes of a real write too.
    #[arg(long)]
    pub include_changes: bool,
}

/// `authzd lock`.
#[derive(Debug, Clone, Args)]
pub struct LockArgs {
    /// What to do with the lock.
    #[command(subcommand)]
    pub action: LockAction,
}

/// The edit-lock operations.
#[derive(Debug, Clone, Subcommand)]
pub enum LockAction {
    /// Take the lock on an object for a person (or renew one's own); when
    /// another person holds it, print who and since when, exit code 3.
    Acquire(LockAcquireArgs),
    /// Extend a held lock's idle timeout from now.
    Renew(LockTokenArgs),
    /// Give a lock up.
    Release(LockTokenArgs),
}

/// Acquiring a lock.
#[derive(Debug, Clone, Args)]
pub struct LockAcquireArgs {
    /// Connection and output.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Tenant id.
    #[arg(long, env = "AUTHZD_TENANT")]
    pub tenant: String,
    /// Person id of the editor.
    #[arg(long)]
    pub person: String,
    /// The Application, SharedModule or DataTable as `<type>/<id>`.
    #[arg(long)]
    pub object: String,
    /// Idle timeout in seconds (default: the server's).
    #[arg(long)]
    pub idle_timeout_secs: Option<u64>,
    /// Application context whose type guards apply (normally `Designer`).
    #[arg(long = "app")]
    pub application: Option<String>,
}

/// Renewing or releasing a lock.
#[derive(Debug, Clone, Args)]
pub struct LockTokenArgs {
    /// Connection and output.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Tenant id.
    #[arg(long, env = "AUTHZD_TENANT")]
    pub tenant: String,
    /// The token `lock acquire` printed.
    #[arg(long)]
    pub lock_token: String,
    /// New idle timeout in seconds (`renew` only; default: the one given at acquire).
    #[arg(long)]
    pub idle_timeout_secs: Option<u64>,
}

/// `authzd watch`.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// What to follow.
    #[command(subcommand)]
    pub subscription: WatchSubscription,
}

/// The kinds of change stream.
#[derive(Debug, Clone, Subcommand)]
pub enum WatchSubscription {
    /// A person's effective privileges in an application.
    Privileges(WatchPrivilegesArgs),
    /// The objects of a type a person may access.
    Visible(WatchVisibleArgs),
    /// Committed configuration batches (and edit locks).
    Raw(WatchRawArgs),
}

/// How a watch runs and prints.
#[derive(Debug, Clone, Args)]
pub struct WatchCommon {
    /// Connection and output (`--json`: one JSON object per line).
    #[command(flatten)]
    pub client: ClientArgs,
    /// Start at a snapshot revision at least this one.
    #[arg(long, default_value_t = 0)]
    pub at_least_revision: u64,
    /// Stop after this many events (default: until Ctrl-C or the server ends the stream).
    #[arg(long)]
    pub max_events: Option<u64>,
    /// Also print the periodic checkpoints.
    #[arg(long)]
    pub checkpoints: bool,
}

/// Following privileges.
#[derive(Debug, Clone, Args)]
pub struct WatchPrivilegesArgs {
    /// Connection, output, limits.
    #[command(flatten)]
    pub common: WatchCommon,
    /// Tenant id.
    #[arg(long, env = "AUTHZD_TENANT")]
    pub tenant: String,
    /// Person id.
    #[arg(long)]
    pub person: String,
    /// Application (catalog name).
    #[arg(long = "app")]
    pub application: String,
}

/// Following visible objects.
#[derive(Debug, Clone, Args)]
pub struct WatchVisibleArgs {
    /// Connection, output, limits.
    #[command(flatten)]
    pub common: WatchCommon,
    /// Tenant id.
    #[arg(long, env = "AUTHZD_TENANT")]
    pub tenant: String,
    /// Person id.
    #[arg(long)]
    pub person: String,
    /// Object type (`Metric`, `Script`, ...).
    #[arg(long = "type")]
    pub kind: String,
    /// Only under this folder id.
    #[arg(long)]
    pub folder: Option<String>,
    /// Permission needed (default `Read`).
    #[arg(long)]
    pub permission: Option<String>,
    /// Application context.
    #[arg(long = "app")]
    pub application: Option<String>,
}

/// Following raw changes.
#[derive(Debug, Clone, Args)]
pub struct WatchRawArgs {
    /// Connection, output, limits.
    #[command(flatten)]
    pub common: WatchCommon,
    /// Only this tenant (default: every tenant).
    #[arg(long, env = "AUTHZD_TENANT")]
    pub tenant: Option<String>,
    /// Only changes touching this object type (repeat for several).
    #[arg(long = "type")]
    pub types: Vec<String>,
    /// Start (or resume) after this revision: every retained batch after it,
    /// then live changes (0: from the beginning). Without it: live changes
    /// from now (the first line names the revision they start after).
    #[arg(long)]
    pub from_revision: Option<u64>,
}

/// Why a client command failed.
#[derive(Debug, Error)]
pub enum CliError {
    /// Bad input on the command line or in a file.
    #[error("{0}")]
    Input(String),
    /// The server cannot be reached.
    #[error("cannot connect to `{server}`: {message}")]
    Connect {
        /// The server URL.
        server: String,
        /// Why.
        message: String,
    },
    /// The server refused the call (or the connection failed under it: a
    /// TLS refusal is then explained in words).
    #[error("{}", rpc_message(.0))]
    Rpc(#[from] tonic::Status),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Adds the admin bearer token to every call.
#[derive(Debug, Clone)]
pub struct BearerToken(Option<MetadataValue<Ascii>>);

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

type Intercepted = InterceptedService<Channel, BearerToken>;

/// Largest answer the client accepts (exports of large tenants exceed gRPC's 4 MiB default).
const CLIENT_MAX_MESSAGE_BYTES: usize = 1 << 30;

/// A connection to a server.
struct Conn {
    channel: Channel,
    /// `--token`, when given.
    token: BearerToken,
    /// `--decision-token`, else `--token`.
    decision_token: BearerToken,
}

fn bearer(flag: &str, token: Option<&String>) -> Result<BearerToken, CliError> {
    match token {
        Some(t) => format!("Bearer {t}")
            .parse::<MetadataValue<Ascii>>()
            .map(|v| BearerToken(Some(v)))
            .map_err(|_| CliError::Input(format!("--{flag}: not a valid header value"))),
        None => Ok(BearerToken(None)),
    }
}

/// The client TLS settings `--ca`, `--cert`, `--key` ask for; `None`: plaintext.
fn client_tls(c: &ClientArgs) -> Result<Option<tonic::transport::ClientTlsConfig>, CliError> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let https = c.server.starts_with("https://");
    if c.ca.is_none() && c.cert.is_none() && c.key.is_none() {
        if https {
            return Err(CliError::Input(format!(
                "--server `{}` is https://: give --ca (the CA that signed the server's certificate)",
                c.server
            )));
        }
        return Ok(None);
    }
    if !https {
        return Err(CliError::Input(format!("--ca/--cert/--key need an https:// --server, not `{}`", c.server)));
    }
    let read = |p: &PathBuf| std::fs::read(p).map_err(|source| CliError::Io { path: p.display().to_string(), source });
    let mut tls = ClientTlsConfig::new();
    match &c.ca {
        Some(ca) => tls = tls.ca_certificate(Certificate::from_pem(read(ca)?)),
        None => {
            return Err(CliError::Input("--cert/--key need --ca (the CA that signed the server's certificate)".into()));
        }
    }
    match (&c.cert, &c.key) {
        (Some(cert), Some(key)) => tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?)),
        (None, None) => {}
        (Some(_), None) => return Err(CliError::Input("--cert needs --key".into())),
        (None, Some(_)) => return Err(CliError::Input("--key needs --cert".into())),
    }
    if let Some(name) = &c.tls_server_name {
        tls = tls.domain_name(name.clone());
    }
    Ok(Some(tls))
}

/// A refused call as printed: the code and message, and when a TLS problem
/// is among its causes (TLS 1.3 reports a refused client certificate on the
/// first call, not at the handshake), that problem in words.
fn rpc_message(s: &tonic::Status) -> String {
    match crate::tls::explain_chain(s, crate::tls::Side::Client) {
        Some(words) => format!("{:?}: {}: {words}", s.code(), s.message()),
        None => format!("{:?}: {}", s.code(), s.message()),
    }
}

/// An error and its causes on one line (a TLS refusal is a cause of a cause),
/// a TLS problem explained in words.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        source = s.source();
    }
    match crate::tls::explain_chain(e, crate::tls::Side::Client) {
        Some(words) => format!("{words}; {message}"),
        None => message,
    }
}

/// The socket path of a `unix:///path` or `unix:/path` server, if it is one.
pub fn unix_socket_path(server: &str) -> Option<&str> {
    let rest = server.strip_prefix("unix:")?;
    // `unix:///path` (URL form, empty authority) or `unix:/path`; `unix:path` is relative.
    Some(rest.strip_prefix("//").unwrap_or(rest))
}

impl Conn {
    async fn open(c: &ClientArgs) -> Result<Conn, CliError> {
        let connect = |message: String| CliError::Connect { server: c.server.clone(), message };
        let channel = if let Some(path) = unix_socket_path(&c.server) {
            if c.ca.is_some() || c.cert.is_some() || c.key.is_some() {
                return Err(CliError::Input(format!(
                    "--ca/--cert/--key need an https:// --server; the Unix socket `{}` is plaintext",
                    c.server
                )));
            }
            if path.is_empty() {
                return Err(CliError::Input(format!("--server `{}`: no socket path", c.server)));
            }
            crate::loadgen::connect(&c.server, Some(std::path::Path::new(path))).await.map_err(|e| match e {
                CliError::Connect { message, .. } => connect(message),
                other => other,
            })?
        } else {
            let mut endpoint = Channel::from_shared(c.server.clone()).map_err(|e| connect(e.to_string()))?;
            if let Some(tls) = client_tls(c)? {
                endpoint = endpoint.tls_config(tls).map_err(|e| connect(error_chain(&e)))?;
            }
            endpoint.connect().await.map_err(|e| connect(error_chain(&e)))?
        };
        let token = bearer("token", c.token.as_ref())?;
        let decision_token = match &c.decision_token {
            Some(_) => bearer("decision-token", c.decision_token.as_ref())?,
            None => token.clone(),
        };
        Ok(Conn { channel, token, decision_token })
    }

    fn decisions(&self) -> DecisionServiceClient<Intercepted> {
        DecisionServiceClient::with_interceptor(self.channel.clone(), self.decision_token.clone())
            .max_decoding_message_size(CLIENT_MAX_MESSAGE_BYTES)
    }

    /// The watch client: raw subscriptions (the whole configuration) need the
    /// admin credential, so they send `--token` when given; computed ones
    /// (decision-grade data) the decision token.
    fn watch(&self, raw: bool) -> WatchServiceClient<Intercepted> {
        let token = if raw && self.token.0.is_some() { &self.token } else { &self.decision_token };
        WatchServiceClient::with_interceptor(self.channel.clone(), token.clone())
            .max_decoding_message_size(CLIENT_MAX_MESSAGE_BYTES)
    }

    fn admin(&self) -> AdminServiceClient<Intercepted> {
        AdminServiceClient::with_interceptor(self.channel.clone(), self.token.clone())
            .max_decoding_message_size(CLIENT_MAX_MESSAGE_BYTES)
    }
}

fn read_file(path: &PathBuf) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|source| CliError::Io { path: path.display().to_string(), source })
}

fn permission_arg(flag: &str, p: Option<&str>) -> Result<i32, CliError> {
    match p {
        None => Ok(pb::Permission::Unspecified as i32),
        Some(s) => convert::parse_permission(s).map(|p| convert::permission_pb(p) as i32).ok_or_else(|| {
            CliError::Input(format!(
                "--{flag}: unknown permission `{s}` (expected Read, Create, Change, Execute, Delete, ReadPermissions or ChangePermissions)"
            ))
        }),
    }
}

fn print_json(v: &Value) {
    outln!("{}", serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()));
}

/// `m`, the `authzd.v1.<name>` message, in the proto3 JSON mapping: the shape
/// the HTTP API answers with (default values written out, enums by name,
/// 64-bit numbers as strings), so a script needs one schema for both.
fn proto_json(m: &impl prost::Message, name: &str) -> Value {
    static POOL: std::sync::LazyLock<Option<prost_reflect::DescriptorPool>> =
        std::sync::LazyLock::new(|| prost_reflect::DescriptorPool::decode(crate::proto::FILE_DESCRIPTOR_SET).ok());
    let full = format!("authzd.v1.{name}");
    let Some(desc) = POOL.as_ref().and_then(|p| p.get_message_by_name(&full)) else {
        return json!({"error": format!("no message `{full}` in the API's descriptor set")});
    };
    match prost_reflect::DynamicMessage::decode(desc, m.encode_to_vec().as_slice()) {
        Ok(d) => d
            .serialize_with_options(serde_json::value::Serializer, &crate::http::gateway::serialize_options())
            .unwrap_or_else(|e| json!({"error": e.to_string()})),
        Err(e) => json!({"error": e.to_string()}),
    }
}

fn print_proto(m: &impl prost::Message, name: &str) {
    print_json(&proto_json(m, name));
}

fn perms_text(v: &[i32]) -> Vec<&'static str> {
    v.iter().filter_map(|p| convert::permission_of(*p)).map(crate::model::Perm::name).collect()
}

fn subject_text(s: Option<&pb::Subject>) -> String {
    match s.and_then(|s| s.kind.as_ref()) {
        Some(pb::subject::Kind::Everyone(_)) | None => "everyone".into(),
        Some(pb::subject::Kind::Person(p)) => format!("person {p}"),
        Some(pb::subject::Kind::Group(g)) => format!("group {g}"),
    }
}

fn target_text(t: Option<&pb::Target>) -> String {
    match t.and_then(|t| t.kind.as_ref()) {
        None => String::new(),
        Some(pb::target::Kind::Folder(f)) => format!("folder {f}"),
        Some(pb::target::Kind::Person(p)) => format!("Person {p}"),
        Some(pb::target::Kind::Group(g)) => format!("AccessGroup {g}"),
        Some(pb::target::Kind::Role(r)) => format!("Role {r}"),
        Some(pb::target::Kind::Object(k)) => format!("{} {}", k.r#type, k.id),
    }
}

fn need_text(v: i32) -> &'static str {
    match pb::PrivilegeNeed::try_from(v) {
        Ok(pb::PrivilegeNeed::TypeGuard) => "type guard",
        Ok(pb::PrivilegeNeed::PropertyGuard) => "property guard",
        Ok(pb::PrivilegeNeed::Requested) => "requested",
        _ => "",
    }
}

fn source_text(v: i32) -> &'static str {
    pb::PrivilegeSource::try_from(v)
        .map(|s| s.as_str_name().strip_prefix("PRIVILEGE_SOURCE_").unwrap_or("UNSPECIFIED"))
        .unwrap_or("UNSPECIFIED")
}

fn print_evidence(e: &pb::Evidence) {
    outln!("  groups: {}", if e.groups.is_empty() { "-".into() } else { e.groups.join(", ") });
    if !e.roles.is_empty() {
        outln!("  roles: {} (source {})", e.roles.join(", "), source_text(e.privilege_source));
    }
    if e.aces.is_empty() {
        outln!("  entries: none for this person's principals");
    }
    for a in &e.aces {
        let from =
            if a.inherited_from.is_empty() { String::new() } else { format!(" (inherited from {})", a.inherited_from) };
        outln!(
            "  entry: {} on {}{from}: allow [{}] deny [{}]{}",
            subject_text(a.principal.as_ref()),
            target_text(a.target.as_ref()),
            perms_text(&a.allow).join(", "),
            perms_text(&a.deny).join(", "),
            if a.propagate { " propagate" } else { "" }
        );
    }
    for p in &e.privileges {
        let missing = if p.missing_requires.is_empty() {
            String::new()
        } else {
            format!(", missing {}", p.missing_requires.join(", "))
        };
        outln!(
            "  privilege: {} ({}): {}{missing}",
            p.name,
            need_text(p.need),
            if p.effective { "effective" } else { "not effective" }
        );
    }
}

fn print_changes(changes: &[pb::PersonChange], truncated: bool) {
    if changes.is_empty() {
        outln!("nobody gains or loses anything");
    }
    for c in changes {
        outln!("{}:", c.person);
        for p in &c.privileges {
            for g in &p.gained {
                outln!("  + {}: {g}", p.application);
            }
            for l in &p.lost {
                outln!("  - {}: {l}", p.application);
            }
        }
        for k in &c.visible_gained {
            outln!("  + sees {} {}", k.r#type, k.id);
        }
        for k in &c.visible_lost {
            outln!("  - no longer sees {} {}", k.r#type, k.id);
        }
    }
    if truncated {
        outln!("(report truncated at the server's limit)");
    }
}

async fn check(a: CheckArgs, always_explain: bool) -> Result<ExitCode, CliError> {
    let object = match a.object.as_deref() {
        Some(spec) => {
            let (kind, id) = convert::parse_object_spec(spec)
                .ok_or_else(|| CliError::Input(format!("--object: `{spec}` is not `<type>/<id>`")))?;
            Some(pb::ObjectRef { r#type: kind.to_owned(), id: id.to_owned(), tenant: None })
        }
        None => None,
    };
    let explain = always_explain || a.explain;
    let req = pb::CheckRequest {
        tenant: a.tenant,
        person: a.person,
        application: a.application,
        permission: permission_arg("permission", a.permission.as_deref())?,
        object,
        privilege: a.privilege,
        property: a.property,
        explain,
        at_least_revision: 0,
    };
    let conn = Conn::open(&a.client).await?;
    let r = conn.decisions().check(req).await?.into_inner();
    let code = convert::reason_code(r.reason);
    if a.client.json {
        print_proto(&r, "CheckResponse");
    } else {
        outln!("{} ({code}, revision {})", if r.allowed { "ALLOWED" } else { "DENIED" }, r.revision);
        if let Some(e) = &r.evidence {
            print_evidence(e);
        }
    }
    Ok(if r.allowed { ExitCode::SUCCESS } else { ExitCode::from(3) })
}

async fn list(a: ListArgs) -> Result<ExitCode, CliError> {
    let conn = Conn::open(&a.client).await?;
    let mut client = conn.decisions();
    let permission = permission_arg("permission", a.permission.as_deref())?;
    let mut token = String::new();
    let mut objects = Vec::new();
    let revision = loop {
        let page = client
            .list_visible(pb::ListVisibleRequest {
                tenant: a.tenant.clone(),
                person: a.person.clone(),
                r#type: a.kind.clone(),
                folder: a.folder.clone(),
                permission,
                application: a.application.clone(),
                page_size: a.page_size,
                page_token: token,
                at_least_revision: 0,
                view: pb::ListView::Full as i32,
            })
            .await?
            .into_inner();
        objects.extend(page.objects);
        if page.next_page_token.is_empty() {
            break page.revision;
        }
        token = page.next_page_token;
    };
    if a.client.json {
        // Every page in one answer, as if the page size were unlimited.
        print_proto(
            &pb::ListVisibleResponse { objects, next_page_token: String::new(), revision },
            "ListVisibleResponse",
        );
    } else {
        for o in &objects {
            outln!("{}\t{}\t{}", o.id, o.name, o.folder);
        }
        outln!("{} {} object(s) at revision {revision}", objects.len(), a.kind);
    }
    Ok(ExitCode::SUCCESS)
}

async fn privileges(a: PrivilegesArgs) -> Result<ExitCode, CliError> {
    let conn = Conn::open(&a.client).await?;
    let r = conn
        .decisions()
        .effective_privileges(pb::EffectivePrivilegesRequest {
            tenant: a.tenant,
            person: a.person,
            application: a.application,
            at_least_revision: 0,
        })
        .await?
        .into_inner();
    if a.client.json {
        print_proto(&r, "EffectivePrivilegesResponse");
        return Ok(ExitCode::SUCCESS);
    }
    let e = r.effective.unwrap_or_default();
    {
        let legacy = match (&e.legacy_section, &e.legacy_role) {
            (Some(s), Some(r)) => format!(" ({s}.role = {r})"),
            _ => String::new(),
        };
        outln!("{} at revision {}: source {}{legacy}", e.application, r.revision, source_text(e.source));
        if let Some(p) = &e.primary_role {
            outln!("primary role: {p}");
        }
        if !e.roles.is_empty() {
            outln!("roles: {}", e.roles.join(", "));
        }
        if !e.unreadable_roles.is_empty() {
            outln!("roles not applied (not readable): {}", e.unreadable_roles.join(", "));
        }
        for p in &e.privileges {
            outln!("  {p}");
        }
        for p in &e.unmet {
            outln!("  {p} (granted, but a required privilege is missing)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn tenants(c: ClientArgs) -> Result<ExitCode, CliError> {
    let conn = Conn::open(&c).await?;
    let r = conn.admin().list_tenants(pb::ListTenantsRequest { at_least_revision: 0 }).await?.into_inner();
    if c.json {
        print_proto(&r, "ListTenantsResponse");
    } else {
        for t in &r.tenants {
            outln!(
                "{}\t{}\t{}\tchanged at revision {}{}",
                t.id,
                t.name,
                t.applications.join(", "),
                t.changed_at_revision,
                if t.restricted_mode { "\trestricted mode" } else { "" }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn import(a: ImportArgs) -> Result<ExitCode, CliError> {
    let yaml = read_file(&a.file)?;
    let conn = Conn::open(&a.client).await?;
    let r = conn
        .admin()
        .import(pb::ImportRequest { yaml, replace: a.replace, dry_run: a.dry_run, include_changes: a.include_changes })
        .await?
        .into_inner();
    if a.client.json {
        print_proto(&r, "ImportResponse");
    } else {
        if a.dry_run {
            outln!("dry run: tenant `{}` would be imported (evaluated at revision {})", r.tenant, r.revision);
        } else {
            outln!("imported tenant `{}` at revision {}", r.tenant, r.revision);
        }
        if a.dry_run || a.include_changes {
            print_changes(&r.changes, r.changes_truncated);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn export(a: ExportArgs) -> Result<ExitCode, CliError> {
    let conn = Conn::open(&a.client).await?;
    let r = conn.admin().export(pb::ExportRequest { tenant: a.tenant, at_least_revision: 0 }).await?.into_inner();
    match &a.output {
        Some(path) => {
            std::fs::write(path, &r.yaml)
                .map_err(|source| CliError::Io { path: path.display().to_string(), source })?;
            if a.client.json {
                // The answer without the text written to the file, and where it went.
                let mut v =
                    proto_json(&pb::ExportResponse { yaml: String::new(), revision: r.revision }, "ExportResponse");
                if let Some(o) = v.as_object_mut() {
                    o.remove("yaml");
                    o.insert("file".into(), json!(path.display().to_string()));
                }
                print_json(&v);
            } else {
                eprintln!("wrote {} (revision {})", path.display(), r.revision);
            }
        }
        None if a.client.json => print_proto(&r, "ExportResponse"),
        None => out!("{}", r.yaml),
    }
    Ok(ExitCode::SUCCESS)
}

async fn write(a: WriteArgs) -> Result<ExitCode, CliError> {
    let text = read_file(&a.file)?;
    let batch: Vec<Mutation> = crate::model::yaml::from_str(&text, &a.file.display().to_string())
        .map_err(|e| CliError::Input(e.to_string()))?;
    let conn = Conn::open(&a.client).await?;
    let r = conn
        .admin()
        .write(pb::WriteRequest {
            tenant: a.tenant.clone(),
            mutations: batch.into_iter().map(convert::mutation_pb).collect(),
            expected_revision: a.expected_revision,
            preconditions: Vec::new(),
            actor: a.actor,
            dry_run: a.dry_run,
            include_changes: a.include_changes,
        })
        .await?
        .into_inner();
    if a.client.json {
        print_proto(&r, "WriteResponse");
    } else {
        if a.dry_run {
            outln!("dry run on tenant `{}` at revision {}: nothing was stored", a.tenant, r.revision);
        } else {
            outln!("written to tenant `{}` at revision {}", a.tenant, r.revision);
        }
        if a.dry_run || a.include_changes {
            print_changes(&r.changes, r.changes_truncated);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `authzd validate FILE...`: parses and validates tenant files offline and
/// reports every problem of each, as `file:line:column: field.path: message`
/// on standard error (a valid file gets its summary line on standard output).
/// Exit code 1 when any file has a problem.
pub fn validate(a: &ValidateArgs) -> ExitCode {
    let mut reports = Vec::new();
    let mut failed = false;
    for file in &a.files {
        let path = file.display().to_string();
        let check = match read_file(file) {
            Ok(text) => TenantFile::check_text(&text),
            Err(e) => crate::model::file::FileCheck {
                config: None,
                problems: vec![crate::model::file::FileProblem {
                    pos: crate::model::yaml::Pos { line: 0, column: 0 },
                    path: String::new(),
                    message: e.to_string(),
                    first: None,
                }],
            },
        };
        let errors: Vec<Value> = check
            .problems
            .iter()
            .map(|p| {
                json!({"file": path, "line": p.pos.line, "column": p.pos.column, "path": p.path,
                       "message": problem_message(&path, p)})
            })
            .collect();
        match &check.config {
            Some(c) => {
                if a.json {
                    reports.push(json!({
                        "file": path, "valid": true, "tenant": c.id.0, "name": c.name,
                        "persons": c.persons.len(), "groups": c.groups.len(), "roles": c.roles.len(),
                        "folders": c.folders.len(), "objects": c.objects.len(), "aces": c.aces.len(),
                        "applications": c.catalogs.keys().collect::<Vec<_>>(),
                        "errors": errors,
                    }));
                } else {
                    outln!(
                        "{path}: valid tenant `{}` ({}): {} persons, {} groups, {} roles, {} folders, {} objects, {} entries; applications: {}",
                        c.id,
                        c.name,
                        c.persons.len(),
                        c.groups.len(),
                        c.roles.len(),
                        c.folders.len(),
                        c.objects.len(),
                        c.aces.len(),
                        c.catalogs.keys().cloned().collect::<Vec<_>>().join(", ")
                    );
                }
            }
            None => {
                failed = true;
                if a.json {
                    let first = check.problems.first().map(|p| problem_line(&path, p)).unwrap_or_default();
                    reports.push(json!({"file": path, "valid": false, "error": first, "errors": errors}));
                } else {
                    for p in &check.problems {
                        eprintln!("{}", problem_line(&path, p));
                    }
                    let n = check.problems.len();
                    eprintln!("{path}: invalid: {n} error{}", if n == 1 { "" } else { "s" });
                }
            }
        }
    }
    if a.json {
        match reports.as_slice() {
            [one] => print_json(one),
            _ => print_json(&Value::Array(reports)),
        }
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// `authzd test FILE...`: runs assertion files offline. One line per file
/// (`PASS file: N assertions`, or `FAIL ...` followed by each difference as
/// `file:line: checks[1]: expected deny (NO_GRANT), got allow (ALLOWED)`);
/// exit code 1 when any assertion fails or any file cannot run.
pub fn test(a: &TestArgs) -> ExitCode {
    let mut all_passed = true;
    let mut reports = Vec::new();
    for file in &a.files {
        let path = file.display().to_string();
        let o = crate::policytest::run_file(file);
        all_passed &= o.passed();
        let at = |f: &crate::policytest::Failure| {
            let pos = if f.pos.line == 0 { path.clone() } else { format!("{path}:{}", f.pos.line) };
            if f.path.is_empty() {
                format!("{pos}: {}", f.message)
            } else {
                format!("{pos}: {}: {}", f.path, f.message)
            }
        };
        if a.json {
            let items = |fs: &[crate::policytest::Failure]| -> Vec<Value> {
                fs.iter()
                    .map(|f| json!({"line": f.pos.line, "column": f.pos.column, "path": f.path, "message": f.message}))
                    .collect()
            };
            reports.push(json!({
                "file": path, "passed": o.passed(), "assertions": o.assertions,
                "failures": items(&o.failures), "errors": items(&o.errors),
            }));
            continue;
        }
        if !o.errors.is_empty() {
            outln!("ERROR {path}: the file cannot run");
            for f in &o.errors {
                outln!("  {}", at(f));
            }
        } else if o.failures.is_empty() {
            outln!("PASS {path}: {} assertion{}", o.assertions, if o.assertions == 1 { "" } else { "s" });
        } else {
            outln!("FAIL {path}: {} of {} assertions failed", o.failures.len(), o.assertions);
            for f in &o.failures {
                outln!("  {}", at(f));
            }
        }
    }
    if a.json {
        print_json(&json!({"passed": all_passed, "files": reports}));
    }
    if all_passed { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// A problem's message; a duplicate's names where the first item is.
fn problem_message(file: &str, p: &crate::model::file::FileProblem) -> String {
    match &p.first {
        Some((pos, first)) => format!("{} (first defined at {file}:{pos}, {first})", p.message),
        None => p.message.clone(),
    }
}

/// `file:line:column: field.path: message`.
fn problem_line(file: &str, p: &crate::model::file::FileProblem) -> String {
    let at = if p.pos.line == 0 { file.to_owned() } else { format!("{file}:{}", p.pos) };
    if p.path.is_empty() {
        format!("{at}: {}", problem_message(file, p))
    } else {
        format!("{at}: {}: {}", p.path, problem_message(file, p))
    }
}

fn duration_pb(flag: &str, secs: Option<u64>) -> Result<Option<prost_types::Duration>, CliError> {
    match secs {
        None => Ok(None),
        Some(0) => Err(CliError::Input(format!("--{flag}: must be at least 1"))),
        Some(s) => i64::try_from(s)
            .map(|seconds| Some(prost_types::Duration { seconds, nanos: 0 }))
            .map_err(|_| CliError::Input(format!("--{flag}: too large"))),
    }
}

fn time_text(t: Option<&prost_types::Timestamp>) -> String {
    t.map_or_else(|| "-".into(), ToString::to_string)
}

/// `authzd lock acquire|renew|release`.
async fn lock(a: LockArgs) -> Result<ExitCode, CliError> {
    match a.action {
        LockAction::Acquire(a) => {
            let (kind, id) = convert::parse_object_spec(&a.object)
                .ok_or_else(|| CliError::Input(format!("--object: `{}` is not `<type>/<id>`", a.object)))?;
            let req = pb::AcquireLockRequest {
                tenant: a.tenant.clone(),
                person: a.person.clone(),
                object: Some(pb::ObjectKey { r#type: kind.to_owned(), id: id.to_owned() }),
                idle_timeout: duration_pb("idle-timeout-secs", a.idle_timeout_secs)?,
                application: a.application.clone(),
            };
            let conn = Conn::open(&a.client).await?;
            let r = conn.admin().acquire_lock(req).await?.into_inner();
            let (since, expires) = (time_text(r.since.as_ref()), time_text(r.expires_at.as_ref()));
            if a.client.json {
                print_proto(&r, "AcquireLockResponse");
            } else if r.granted {
                outln!(
                    "granted: {} holds {} since {since}, until {expires} unless renewed (revision {})",
                    r.holder,
                    a.object,
                    r.revision
                );
                outln!("lock token: {}", r.lock_token);
            } else {
                outln!(
                    "refused: {} is held by {} since {since} (expires at {expires} unless renewed)",
                    a.object,
                    r.holder
                );
            }
            Ok(if r.granted { ExitCode::SUCCESS } else { ExitCode::from(3) })
        }
        LockAction::Renew(a) => {
            let req = pb::RenewLockRequest {
                tenant: a.tenant.clone(),
                lock_token: a.lock_token.clone(),
                idle_timeout: duration_pb("idle-timeout-secs", a.idle_timeout_secs)?,
            };
            let conn = Conn::open(&a.client).await?;
            let r = conn.admin().renew_lock(req).await?.into_inner();
            let expires = time_text(r.expires_at.as_ref());
            if a.client.json {
                print_proto(&r, "RenewLockResponse");
            } else {
                outln!("renewed: the lock expires at {expires} unless renewed");
            }
            Ok(ExitCode::SUCCESS)
        }
        LockAction::Release(a) => {
            if a.idle_timeout_secs.is_some() {
                return Err(CliError::Input(
                    "--idle-timeout-secs: only `lock acquire` and `lock renew` take it".into(),
                ));
            }
            let conn = Conn::open(&a.client).await?;
            let r = conn
                .admin()
                .release_lock(pb::ReleaseLockRequest { tenant: a.tenant.clone(), lock_token: a.lock_token.clone() })
                .await?
                .into_inner();
            if a.client.json {
                print_proto(&r, "ReleaseLockResponse");
            } else {
                outln!("released (revision {})", r.revision);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

impl WatchSubscription {
    /// Connection, output and limits of any subscription.
    pub fn common(&self) -> &WatchCommon {
        match self {
            WatchSubscription::Privileges(a) => &a.common,
            WatchSubscription::Visible(a) => &a.common,
            WatchSubscription::Raw(a) => &a.common,
        }
    }
}

/// How `watch` goes on after an event.
enum Next {
    /// Keep reading.
    Continue,
    /// The server ended the stream and asked to resume from this revision.
    Resume(u64),
    /// The server ended the stream for good (its event says why).
    End,
}

fn object_key_text(k: &pb::ObjectKey) -> String {
    format!("{}/{}", k.r#type, k.id)
}

fn resync_text(v: i32) -> &'static str {
    match pb::ResyncReason::try_from(v) {
        Ok(pb::ResyncReason::Initial) => "initial",
        Ok(pb::ResyncReason::Lagged) => "lagged",
        Ok(pb::ResyncReason::Reloaded) => "reloaded",
        _ => "unspecified",
    }
}

fn lock_kind_text(v: i32) -> &'static str {
    match pb::LockEventKind::try_from(v) {
        Ok(pb::LockEventKind::Acquired) => "acquired",
        Ok(pb::LockEventKind::Released) => "released",
        Ok(pb::LockEventKind::Expired) => "expired",
        _ => "unspecified",
    }
}

/// A raw change's mutations as the model's JSON (`{"put_person": {...}}`);
/// one the client cannot read is shown as its protobuf debug text.
fn mutations_json(ms: &[pb::Mutation]) -> Vec<Value> {
    ms.iter()
        .enumerate()
        .map(|(i, m)| match convert::mutation(i, m.clone()) {
            Ok(m) => serde_json::to_value(&m).unwrap_or_else(|e| json!({"unreadable": e.to_string()})),
            Err(e) => json!({"unreadable": e.to_string(), "debug": format!("{m:?}")}),
        })
        .collect()
}

/// One event as a line of text, and what follows it (`--json` prints the
/// event itself, in the proto3 JSON mapping).
fn watch_event(e: pb::watch_event::Event) -> (String, Next) {
    use pb::watch_event::Event;
    match e {
        Event::Snapshot(s) => {
            let part = if s.complete { "" } else { " (part; more follows)" };
            let reason = resync_text(s.reason);
            match s.state {
                Some(pb::snapshot::State::Privileges(p)) => (
                    format!(
                        "revision {} snapshot ({reason}){part}: {} privilege(s) in {}: {}",
                        s.revision,
                        p.privileges.len(),
                        p.application,
                        p.privileges.join(", ")
                    ),
                    Next::Continue,
                ),
                Some(pb::snapshot::State::Objects(o)) => (
                    format!(
                        "revision {} snapshot ({reason}){part}: {} object(s): {}",
                        s.revision,
                        o.objects.len(),
                        o.objects.iter().map(|o| o.id.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                    Next::Continue,
                ),
                None => (format!("revision {} snapshot ({reason}){part}: empty", s.revision), Next::Continue),
            }
        }
        Event::PrivilegesChanged(c) => {
            let mut parts: Vec<String> = c.gained.iter().map(|p| format!("+{p}")).collect();
            parts.extend(c.lost.iter().map(|p| format!("-{p}")));
            (format!("revision {} privileges: {}", c.revision, parts.join(", ")), Next::Continue)
        }
        Event::VisibleObjectsChanged(c) => {
            let mut parts: Vec<String> = c.gained.iter().map(|o| format!("+{}", o.id)).collect();
            parts.extend(c.lost.iter().map(|k| format!("-{}", object_key_text(k))));
            (format!("revision {} visible objects: {}", c.revision, parts.join(", ")), Next::Continue)
        }
        Event::RawChange(r) => {
            let mutations = mutations_json(&r.mutations);
            let actor = r.actor.as_deref().map(|a| format!(" by {a}")).unwrap_or_default();
            let text: Vec<String> = mutations.iter().map(|m| m.to_string()).collect();
            (
                format!(
                    "revision {} tenant {}{actor} at {}: {}",
                    r.revision,
                    r.tenant,
                    time_text(r.committed_at.as_ref()),
                    text.join("; ")
                ),
                Next::Continue,
            )
        }
        Event::Checkpoint(c) => {
            (format!("revision {} checkpoint at {}", c.revision, time_text(c.time.as_ref())), Next::Continue)
        }
        Event::Lock(l) => {
            let object = l.object.as_ref().map(object_key_text).unwrap_or_default();
            let kind = lock_kind_text(l.kind);
            (
                format!(
                    "revision {} lock {kind}: {object} in tenant {} by {} at {}",
                    l.revision,
                    l.tenant,
                    l.holder,
                    time_text(l.at.as_ref())
                ),
                Next::Continue,
            )
        }
        Event::RestrictedModeChanged(m) => (
            format!(
                "revision {} restricted mode {} in tenant {}",
                m.revision,
                if m.on { "on" } else { "off" },
                m.tenant
            ),
            Next::Continue,
        ),
        Event::RevisionTooOld(t) => (
            format!(
                "revision {} too old: revision {} is no longer in the changelog (oldest resumable: {}); reload with `export` and watch from its revision",
                t.revision, t.requested_revision, t.oldest_available_revision
            ),
            Next::End,
        ),
        Event::ResumeRequired(r) => (
            format!(
                "revision {} resume required: fell behind; resuming from revision {}",
                r.revision, r.resume_from_revision
            ),
            Next::Resume(r.resume_from_revision),
        ),
    }
}

/// `authzd watch privileges|visible|raw`: prints every event as a line
/// (JSON lines with `--json`) until Ctrl-C, `--max-events`, or the server
/// ends the stream. A raw stream the server ends with `ResumeRequired` is
/// resumed from the revision it names, so nothing is skipped.
async fn watch(a: WatchArgs) -> Result<ExitCode, CliError> {
    let common = a.subscription.common().clone();
    let mut request = pb::WatchRequest {
        at_least_revision: common.at_least_revision,
        subscription: Some(match a.subscription {
            WatchSubscription::Privileges(p) => {
                pb::watch_request::Subscription::Privileges(pb::PrivilegesSubscription {
                    tenant: p.tenant,
                    person: p.person,
                    application: p.application,
                })
            }
            WatchSubscription::Visible(v) => {
                pb::watch_request::Subscription::VisibleObjects(pb::VisibleObjectsSubscription {
                    permission: permission_arg("permission", v.permission.as_deref())?,
                    tenant: v.tenant,
                    person: v.person,
                    r#type: v.kind,
                    folder: v.folder,
                    application: v.application,
                })
            }
            WatchSubscription::Raw(r) => pb::watch_request::Subscription::Raw(pb::RawSubscription {
                tenant: r.tenant,
                types: r.types,
                from_revision: r.from_revision.unwrap_or(0),
                from_now: r.from_revision.is_none(),
            }),
        }),
    };
    let conn = Conn::open(&common.client).await?;
    let raw = matches!(request.subscription, Some(pb::watch_request::Subscription::Raw(_)));
    let mut client = conn.watch(raw);
    let mut printed = 0u64;
    let run = async {
        loop {
            let mut stream = client.watch(request.clone()).await?.into_inner();
            loop {
                let Some(event) = stream.message().await? else {
                    if !common.client.json {
                        eprintln!("the server ended the stream");
                    }
                    return Ok(ExitCode::SUCCESS);
                };
                let Some(event) = event.event else { continue };
                if matches!(event, pb::watch_event::Event::Checkpoint(_)) && !common.checkpoints {
                    continue;
                }
                let json = common
                    .client
                    .json
                    .then(|| proto_json(&pb::WatchEvent { event: Some(event.clone()) }, "WatchEvent"));
                let (text, next) = watch_event(event);
                match json {
                    Some(v) => outln!("{v}"),
                    None => outln!("{text}"),
                }
                printed += 1;
                if common.max_events.is_some_and(|max| printed >= max) {
                    return Ok(ExitCode::SUCCESS);
                }
                match next {
                    Next::Continue => {}
                    Next::End => return Ok(ExitCode::FAILURE),
                    Next::Resume(from) => {
                        if let Some(pb::watch_request::Subscription::Raw(r)) = &mut request.subscription {
                            r.from_revision = from;
                            r.from_now = false;
                        }
                        request.at_least_revision = 0;
                        break;
                    }
                }
            }
        }
    };
    tokio::select! {
        r = run => r,
        _ = tokio::signal::ctrl_c() => Ok(ExitCode::SUCCESS),
    }
}

/// The connection settings of a client command.
fn client_args(command: &Command) -> Option<&ClientArgs> {
    Some(match command {
        Command::Check(a) | Command::Explain(a) => &a.client,
        Command::List(a) => &a.client,
        Command::Privileges(a) => &a.client,
        Command::Tenants(a) => a,
        Command::Import(a) => &a.client,
        Command::Export(a) => &a.client,
        Command::Write(a) => &a.client,
        Command::Lock(a) => match &a.action {
            LockAction::Acquire(a) => &a.client,
            LockAction::Renew(a) | LockAction::Release(a) => &a.client,
        },
        Command::Watch(a) => &a.subscription.common().client,
        Command::Validate(_) | Command::Test(_) | Command::Bench(_) | Command::Serve(_) => return None,
    })
}

/// Whether a call failed for want of a connection rather than by the
/// server's answer (a TLS refusal of the client certificate looks so).
fn connection_failed(s: &tonic::Status) -> bool {
    matches!(s.code(), tonic::Code::Cancelled | tonic::Code::Unavailable | tonic::Code::Unknown)
}

/// What the client's TLS settings meet at the server, in words, if anything
/// is wrong ([`crate::tls::probe`]).
async fn tls_problem(c: &ClientArgs) -> Option<String> {
    let read = |p: &Option<PathBuf>| p.as_ref().and_then(|p| std::fs::read(p).ok());
    let ca = read(&c.ca)?;
    let identity = match (read(&c.cert), read(&c.key)) {
        (Some(cert), Some(key)) => Some((cert, key)),
        _ => None,
    };
    let identity = identity.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice()));
    crate::tls::probe(&c.server, c.tls_server_name.as_deref(), &ca, identity).await
}

/// Runs a client command (everything but `serve` and `validate`).
pub async fn run_client(command: Command) -> ExitCode {
    let json = match &command {
        Command::Validate(a) => a.json,
        Command::Test(a) => a.json,
        Command::Bench(a) => a.json,
        other => client_args(other).is_some_and(|c| c.json),
    };
    let client = client_args(&command).cloned();
    let client = client.as_ref();
    let result = match command {
        Command::Check(a) => check(a, false).await,
        Command::Explain(a) => check(a, true).await,
        Command::List(a) => list(a).await,
        Command::Privileges(a) => privileges(a).await,
        Command::Tenants(a) => tenants(a).await,
        Command::Import(a) => import(a).await,
        Command::Export(a) => export(a).await,
        Command::Write(a) => write(a).await,
        Command::Validate(a) => Ok(validate(&a)),
        Command::Test(a) => Ok(test(&a)),
        Command::Bench(a) => crate::loadgen::run(*a).await,
        Command::Lock(a) => lock(a).await,
        Command::Watch(a) => watch(a).await,
        Command::Serve(_) => Err(CliError::Input("`serve` is not a client command".into())),
    };
    let result = match result {
        Err(CliError::Rpc(s)) if client.is_some_and(|c| c.ca.is_some()) && connection_failed(&s) => {
            match client.map(tls_problem) {
                Some(problem) => match problem.await {
                    Some(words) => Err(CliError::Connect {
                        server: client.map(|c| c.server.clone()).unwrap_or_default(),
                        message: format!("{words}; {}", rpc_message(&s)),
                    }),
                    None => Err(CliError::Rpc(s)),
                },
                None => Err(CliError::Rpc(s)),
            }
        }
        other => other,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if json {
                let code = match &e {
                    CliError::Rpc(s) => format!("{:?}", s.code()),
                    _ => "ERROR".into(),
                };
                print_json(&json!({"error": e.to_string(), "code": code}));
            } else {
                eprintln!("error: {e}");
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::unix_socket_path;

    #[test]
    fn unix_server_urls() {
        assert_eq!(unix_socket_path("unix:///run/authzd/authzd.sock"), Some("/run/authzd/authzd.sock"));
        assert_eq!(unix_socket_path("unix:/run/authzd/authzd.sock"), Some("/run/authzd/authzd.sock"));
        assert_eq!(unix_socket_path("unix:authzd.sock"), Some("authzd.sock"));
        assert_eq!(unix_socket_path("http://127.0.0.1:50051"), None);
        assert_eq!(unix_socket_path("https://unix:443"), None);
    }
}
