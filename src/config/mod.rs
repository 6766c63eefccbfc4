//! The server's validated configuration.
//!
//! `authzd serve` flags (with `AUTHZD_*` environment fallbacks, see
//! [`ServeFlags`], defined here for the CLI to parse) and the optional configuration file
//! (`--config`, YAML, its keys the flags' long names) are merged and checked
//! once here and turned into a [`ServerConfig`]; the rest of the server never
//! sees raw flags. Precedence: flags, then environment, then the file, then
//! the defaults. Tests build a [`ServerConfig`] directly with
//! [`ServerConfig::new`].

use crate::http::HttpSettings;
use crate::replica::Limits;
use crate::replica::Retention;
use crate::service::{ClientCertAdmin, LockSettings, WatchSettings};
use crate::snapshot::PageRetention;
use crate::store::UpstreamSettings;
use clap::FromArgMatches as _;
use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;

mod serve;

pub use serve::{ServeArgs, ServeFlags};

// The listener's TLS settings belong to `crate::tls`, which builds the
// listener from them (so it need not import this module); they stay part of
// the configuration here.
pub use crate::tls::{TLS_HANDSHAKE_TIMEOUT, TlsConfig};

/// Default gRPC listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// Default store URL.
pub const DEFAULT_STORE: &str = "sqlite://authzd.db";
/// Default largest request the server decodes (4 MiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Default shutdown grace period (`--shutdown-grace-ms`).
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

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
    /// The configuration file cannot be read or has a bad key or value.
    #[error("{path}: {message}")]
    File {
        /// The file, as given.
        path: String,
        /// What is wrong (naming the key).
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
    /// Create an SQLite store's missing directory (else it is an error).
    pub create_store_dir: bool,
    /// Load the demo tenant ACME (`examples/acme.yaml`, id `acme`) when absent.
    pub demo: bool,
    /// Follow this upstream authzd instead of opening `store_url`.
    pub follow: Option<UpstreamSettings>,
    /// Bearer token admin calls must present; `None` (and no mTLS): admin calls are open.
    pub admin_token: Option<String>,
    /// Bearer token decision calls and computed Watch subscriptions must
    /// present; `None`: open. Raw Watch subscriptions need the admin credential.
    pub decision_token: Option<String>,
    /// TLS (and mTLS) on the TCP listener; `None`: plaintext. The Unix
    /// socket is never TLS (its file permissions guard it).
    pub tls: Option<TlsConfig>,
    /// With mTLS, the client certificate common names that may call the admin
    /// API; empty: every certificate the client CA signed.
    pub admin_client_cns: Vec<String>,
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
    /// How long the changelog is kept and how often it is compacted.
    pub retention: Retention,
    /// HTTP address of `/metrics`, `/healthz` and `/readyz`; `None`: off.
    pub metrics_listen: Option<SocketAddr>,
    /// OTLP/gRPC collector traces are exported to; `None`: no traces.
    pub otlp_endpoint: Option<String>,
    /// At shutdown, once the Watch streams have ended, how long in-flight
    /// calls may take to finish before the connections still open are cut.
    pub shutdown_grace: Duration,
    /// CORS origins, the event streams' heartbeat and the access explorer (`crate::http`).
    pub http: HttpSettings,
    /// The decision log (`crate::decision_log`); `None`: off.
    pub decision_log: Option<crate::decision_log::Settings>,
    /// Where "now" comes from for edit locks, retention and commit times:
    /// the system clock; tests give a [`crate::replica::ManualClock`].
    pub clock: std::sync::Arc<dyn crate::replica::Clock>,
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("unix_socket", &self.unix_socket)
            .field("store_url", &crate::store::redact_url(&self.store_url))
            .field("create_store_dir", &self.create_store_dir)
            .field("demo", &self.demo)
            .field("follow", &self.follow.as_ref().map(|f| &f.url))
            .field("admin_token", &self.admin_token.as_ref().map(|_| "***"))
            .field("decision_token", &self.decision_token.as_ref().map(|_| "***"))
            .field("tls", &self.tls)
            .field("admin_client_cns", &self.admin_client_cns)
            .field("log_format", &self.log_format)
            .field("limits", &self.limits)
            .field("locks", &self.locks)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("tail_interval", &self.tail_interval)
            .field("watch", &self.watch)
            .field("retention", &self.retention)
            .field("metrics_listen", &self.metrics_listen)
            .field("otlp_endpoint", &self.otlp_endpoint)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("http", &self.http)
            .field("decision_log", &self.decision_log)
            .field("clock", &self.clock)
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
            create_store_dir: false,
            demo: false,
            follow: None,
            admin_token: None,
            decision_token: None,
            tls: None,
            admin_client_cns: Vec::new(),
            log_format: LogFormat::Text,
            limits: Limits::default(),
            locks: LockSettings::default(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            tail_interval: Duration::from_secs(1),
            watch: WatchSettings::default(),
            retention: Retention::default(),
            metrics_listen: None,
            otlp_endpoint: None,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            http: HttpSettings::default(),
            decision_log: None,
            clock: std::sync::Arc::new(crate::replica::SystemClock),
        }
    }

    /// Merges the configuration file (when `--config` names one) under the
    /// flags and environment, and validates the result.
    pub fn from_args(args: &ServeArgs) -> Result<Self, ConfigError> {
        let Some(path) = &args.flags.config else { return Self::from_flags(&args.flags) };
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: shown.clone(),
            message: format!("cannot read the configuration file: {e}"),
        })?;
        Self::from_given_and_file(&args.given, &args.given_names, &shown, &text)
    }

    /// The configuration of `authzd serve --config <shown>` whose file holds
    /// `text`, with no flag or environment variable given: what the
    /// configuration file alone configures (the fuzz targets and tests).
    pub fn from_file_text(shown: &str, text: &str) -> Result<Self, ConfigError> {
        Self::from_given_and_file(&[], &Default::default(), shown, text)
    }

    /// The flags given (`given`, named `given_names`) merged over the file's settings, validated.
    fn from_given_and_file(
        given: &[OsString],
        given_names: &std::collections::BTreeSet<String>,
        shown: &str,
        text: &str,
    ) -> Result<Self, ConfigError> {
        let (flags, from_file) = merge_file(given, given_names, shown, text)?;
        Self::from_flags(&flags).map_err(|e| match e {
            // A value the file gave: name the file and the key.
            ConfigError::Invalid { flag, message } if from_file.iter().any(|k| k == flag) => {
                ConfigError::File { path: shown.to_owned(), message: format!("key `{flag}`: {message}") }
            }
            e => e,
        })
    }

    /// Validates the `serve` flags (the configuration file already merged).
    pub fn from_flags(a: &ServeFlags) -> Result<Self, ConfigError> {
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
        let admin_token = token("admin-token", a.admin_token.as_deref())?;
        let decision_token = token("decision-token", a.decision_token.as_deref())?;
        let tls = match (&a.tls_cert, &a.tls_key) {
            (None, None) => None,
            (Some(_), None) => return Err(invalid("tls-cert", "needs --tls-key (the certificate's private key)")),
            (None, Some(_)) => return Err(invalid("tls-key", "needs --tls-cert (the certificate it is the key of)")),
            (Some(cert), Some(key)) => {
                let tls = TlsConfig {
                    cert_pem: read_pem("tls-cert", cert)?,
                    key_pem: read_pem("tls-key", key)?,
                    client_ca_pem: a.tls_client_ca.as_deref().map(|ca| read_pem("tls-client-ca", ca)).transpose()?,
                };
                tls.check()
                    .map_err(|e| invalid("tls-cert", &format!("cannot use the certificate, key and client CA: {e}")))?;
                Some(tls)
            }
        };
        if a.tls_client_ca.is_some() && tls.is_none() {
            return Err(invalid(
                "tls-client-ca",
                "needs --tls-cert and --tls-key (client certificates are checked over TLS)",
            ));
        }
        if !a.admin_client_cn.is_empty() && a.tls_client_ca.is_none() {
            return Err(invalid(
                "admin-client-cn",
                "needs --tls-client-ca (the names are those of verified client certificates)",
            ));
        }
        if a.admin_client_cn.iter().any(|n| n.trim().is_empty()) {
            return Err(invalid("admin-client-cn", "must not be empty"));
        }
        if a.lock_idle_timeout_secs == 0 || a.lock_idle_timeout_secs > a.lock_max_idle_timeout_secs {
            return Err(invalid(
                "lock-idle-timeout-secs",
                &format!(
                    "is {} s; it must be between 1 and --lock-max-idle-timeout-secs, \
                     which is {} s",
                    a.lock_idle_timeout_secs, a.lock_max_idle_timeout_secs
                ),
            ));
        }
        let follow = follow_settings(a)?;
        if follow.is_some() && a.demo {
            return Err(invalid("demo", "cannot be combined with --follow (a follower loads what its upstream holds)"));
        }
        let cors_allowed_origins = a
            .cors_allowed_origin
            .iter()
            .map(|o| crate::http::cors::parse_origin(o))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("cors-allowed-origin", &e))?;
        let decision_log = decision_log_settings(a)?;
        Ok(ServerConfig {
            listen: a.listen,
            unix_socket: a.unix_socket.clone(),
            store_url: a.store.clone(),
            create_store_dir: a.create_store_dir,
            demo: a.demo,
            follow,
            admin_token,
            decision_token,
            tls,
            admin_client_cns: a.admin_client_cn.clone(),
            log_format: a.log_format,
            limits: Limits {
                max_batch: a.max_batch,
                checkpoint_every: a.checkpoint_every,
                revision_wait: Duration::from_millis(a.revision_wait_ms),
                page_retention: PageRetention {
                    revisions: a.page_retain_revisions,
                    ttl: Duration::from_secs(a.page_retain_secs),
                },
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
            retention: Retention {
                keep: Duration::from_millis(a.changelog_retention_ms),
                interval: Duration::from_millis(a.compaction_interval_ms),
            },
            metrics_listen: a.metrics_listen,
            otlp_endpoint: a.otlp_endpoint.clone().filter(|e| !e.trim().is_empty()),
            shutdown_grace: Duration::from_millis(a.shutdown_grace_ms),
            http: HttpSettings {
                cors_allowed_origins,
                sse_heartbeat: Duration::from_millis(a.sse_heartbeat_ms),
                explorer: a.explorer,
            },
            decision_log,
            clock: std::sync::Arc::new(crate::replica::SystemClock),
        })
    }

    /// What client certificates may do on the admin API.
    pub fn client_cert_admin(&self) -> ClientCertAdmin {
        match &self.tls {
            Some(TlsConfig { client_ca_pem: Some(_), .. }) if self.admin_client_cns.is_empty() => {
                ClientCertAdmin::AnyVerified
            }
            Some(TlsConfig { client_ca_pem: Some(_), .. }) => {
                ClientCertAdmin::CommonNames(self.admin_client_cns.clone())
            }
            _ => ClientCertAdmin::Off,
        }
    }

    /// Exposures worth a warning at start-up: decisions (or the admin API)
    /// reachable from other hosts with no credential.
    pub fn security_warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.listen.ip().is_loopback() {
            return warnings;
        }
        if self.tls.is_none() && self.decision_token.is_none() {
            warnings.push(format!(
                "decisions are served on the non-loopback address {} without TLS or a decision token: anyone who reaches it may ask about any person (set --tls-cert/--tls-key or --decision-token)",
                self.listen
            ));
        }
        if self.admin_token.is_none() && self.client_cert_admin() == ClientCertAdmin::Off {
            warnings.push(format!(
                "the administration API is open on the non-loopback address {}: anyone who reaches it may change the configuration (set --admin-token or --tls-client-ca)",
                self.listen
            ));
        }
        warnings
    }
}

/// The decision log of `--decision-log` and its `--decision-log-*` settings.
fn decision_log_settings(a: &ServeFlags) -> Result<Option<crate::decision_log::Settings>, ConfigError> {
    use crate::decision_log::{DEFAULT_BUFFER, Filter, Settings, Target};
    let invalid = |flag, message: &str| ConfigError::Invalid { flag, message: message.to_owned() };
    if !(0.0..=1.0).contains(&a.decision_log_sample) {
        return Err(invalid("decision-log-sample", "must be a fraction from 0 to 1 (1: every decision)"));
    }
    if a.decision_log_buffer == 0 {
        return Err(invalid("decision-log-buffer", "must be at least 1 line"));
    }
    let Some(path) = a.decision_log.as_deref() else {
        for (flag, given) in [
            ("decision-log-sample", a.decision_log_sample != 1.0),
            ("decision-log-filter", a.decision_log_filter != Filter::All),
            ("decision-log-buffer", a.decision_log_buffer != DEFAULT_BUFFER),
        ] {
            if given {
                return Err(invalid(flag, "needs --decision-log (the file, or `-` for standard output)"));
            }
        }
        return Ok(None);
    };
    let target = match path.trim() {
        "" => return Err(invalid("decision-log", "must be a file path, or `-` for standard output")),
        "-" => Target::Stdout,
        p => {
            let p = PathBuf::from(p);
            if p.is_dir() {
                return Err(invalid("decision-log", &format!("`{}` is a directory; give a file", p.display())));
            }
            Target::File(p)
        }
    };
    Ok(Some(Settings {
        target,
        sample: a.decision_log_sample,
        filter: a.decision_log_filter,
        buffer: a.decision_log_buffer,
    }))
}

/// The upstream of `--follow`, with its credentials.
fn follow_settings(a: &ServeFlags) -> Result<Option<UpstreamSettings>, ConfigError> {
    let invalid = |flag, message: &str| ConfigError::Invalid { flag, message: message.to_owned() };
    let Some(url) = a.follow.as_deref() else {
        for (flag, given) in [
            ("upstream-token", a.upstream_token.is_some()),
            ("upstream-ca", a.upstream_ca.is_some()),
            ("upstream-cert", a.upstream_cert.is_some()),
            ("upstream-key", a.upstream_key.is_some()),
        ] {
            if given {
                return Err(invalid(flag, "needs --follow (it configures how the upstream is reached)"));
            }
        }
        return Ok(None);
    };
    let url = url.trim();
    if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() <= "https://".len() {
        return Err(invalid("follow", "must be the upstream's `http://host:port` or `https://host:port`"));
    }
    let pem = |flag, p: &Path| {
        read_pem(flag, p).and_then(|b| String::from_utf8(b).map_err(|_| invalid(flag, "is not UTF-8 PEM text")))
    };
    let identity_pem = match (&a.upstream_cert, &a.upstream_key) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(invalid("upstream-cert", "needs --upstream-key (the certificate's private key)"));
        }
        (None, Some(_)) => {
            return Err(invalid("upstream-key", "needs --upstream-cert (the certificate it is the key of)"));
        }
        (Some(c), Some(k)) => Some((pem("upstream-cert", c)?, pem("upstream-key", k)?)),
    };
    if a.follow_retain == 0 {
        return Err(invalid("follow-retain", "must be at least 1"));
    }
    let mut s = UpstreamSettings::new(url);
    s.token = token("upstream-token", a.upstream_token.as_deref())?;
    s.ca_pem = a.upstream_ca.as_deref().map(|p| pem("upstream-ca", p)).transpose()?;
    s.identity_pem = identity_pem;
    s.retain = a.follow_retain;
    s.max_message_bytes = a.max_message_bytes.max(64 * 1024 * 1024);
    Ok(Some(s))
}

fn token(flag: &'static str, t: Option<&str>) -> Result<Option<String>, ConfigError> {
    let invalid = |message: &str| ConfigError::Invalid { flag, message: message.to_owned() };
    match t {
        Some(t) if t.trim().is_empty() => Err(invalid("must not be empty when given")),
        Some(t) if t.chars().any(|c| c.is_control() || c.is_whitespace()) => {
            Err(invalid("must not contain white space or control characters"))
        }
        t => Ok(t.map(str::to_owned)),
    }
}

fn read_pem(flag: &'static str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    let bytes = std::fs::read(path)
        .map_err(|e| ConfigError::Invalid { flag, message: format!("cannot read `{}`: {e}", path.display()) })?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(ConfigError::Invalid {
            flag,
            message: format!("`{}` is not PEM (no `-----BEGIN` line)", path.display()),
        });
    }
    Ok(bytes)
}

/// The `serve` flags with the configuration file's settings under those the
/// command line or the environment gave.
///
/// The file's keys are the flags' long names (dashes or underscores); each
/// value goes through the flag's own parser, so the file accepts exactly what
/// the flag does. Unknown keys, and values a flag refuses, are errors naming
/// the key and the file. Relative paths are relative to the working
/// directory, as on the command line.
/// Also returns the keys whose file value was used. `shown` is the file as
/// named in errors, `text` what it holds.
fn merge_file(
    given: &[OsString],
    given_names: &std::collections::BTreeSet<String>,
    shown: &str,
    text: &str,
) -> Result<(ServeFlags, Vec<String>), ConfigError> {
    let file_error = |message: String| ConfigError::File { path: shown.to_owned(), message };
    let settings = file_settings(text).map_err(file_error)?;
    let mut argv = given.to_vec();
    let mut used = Vec::new();
    for (key, values) in settings {
        if !given_names.contains(&key) {
            argv.extend(values);
            used.push(key);
        }
    }
    let matches = file_parser().try_get_matches_from(argv).map_err(|e| file_error(clap_message(&e)))?;
    let flags = ServeFlags::from_arg_matches(&matches).map_err(|e| file_error(clap_message(&e)))?;
    Ok((flags, used))
}

/// `serve`'s flags without their environment fallbacks (the environment was
/// read once, by the real command line).
fn file_parser() -> clap::Command {
    ServeArgs::command().no_binary_name(true).mut_args(|a| a.env(None::<&'static str>))
}

/// The first line of a clap error, without its `error: ` prefix.
fn clap_message(e: &clap::Error) -> String {
    let text = e.to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

/// The settings of a configuration file: (long flag name, its arguments),
/// each value already checked by its flag's parser.
pub fn file_settings(text: &str) -> Result<Vec<(String, Vec<OsString>)>, String> {
    use serde_yaml_ng::Value;
    let doc: Value = serde_yaml_ng::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
    let map = match doc {
        Value::Null => return Ok(Vec::new()),
        Value::Mapping(m) => m,
        _ => return Err("must be a mapping of settings (`listen: 127.0.0.1:50051`)".into()),
    };
    let command = ServeArgs::command();
    let parser = file_parser();
    let mut out: Vec<(String, Vec<OsString>)> = Vec::new();
    for (k, v) in map {
        let Some(key) = k.as_str() else {
            return Err(format!("key `{}` is not a flag name", scalar(&k).unwrap_or_else(|| "?".into())));
        };
        let name = key.replace('_', "-");
        let Some(arg) = command.get_arguments().find(|a| a.get_long() == Some(name.as_str()) && name != "help") else {
            return Err(format!(
                "unknown key `{key}` (the keys are the long flags of `authzd serve`, e.g. `listen`, `store`, `admin-token`)"
            ));
        };
        if name == "config" {
            return Err(format!("key `{key}`: a configuration file cannot name another one"));
        }
        if out.iter().any(|(n, _)| *n == name) {
            return Err(format!("key `{key}` is given twice"));
        }
        let values = if arg.get_action().takes_values() {
            let items = match &v {
                Value::Sequence(items) if matches!(arg.get_action(), clap::ArgAction::Append) => items.clone(),
                Value::Sequence(_) => return Err(format!("key `{key}`: takes one value, not a list")),
                other => vec![other.clone()],
            };
            let mut values = Vec::new();
            for item in &items {
                let Some(text) = scalar(item) else {
                    return Err(format!("key `{key}`: the value must be a string, a number or a boolean"));
                };
                values.push(OsString::from(format!("--{name}={text}")));
            }
            values
        } else {
            match v {
                Value::Bool(true) => vec![OsString::from(format!("--{name}"))],
                Value::Bool(false) => Vec::new(),
                _ => return Err(format!("key `{key}`: must be true or false")),
            }
        };
        parser.clone().try_get_matches_from(&values).map_err(|e| format!("key `{key}`: {}", clap_message(&e)))?;
        out.push((name, values));
    }
    Ok(out)
}

/// A YAML scalar as the text a flag would get.
fn scalar(v: &serde_yaml_ng::Value) -> Option<String> {
    use serde_yaml_ng::Value;
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn args(argv: &[&str]) -> ServeArgs {
        let m = ServeArgs::command().mut_args(|a| a.env(None::<&'static str>)).try_get_matches_from(argv).unwrap();
        ServeArgs::from_arg_matches(&m).unwrap()
    }

    #[test]
    fn the_explorer_is_off_by_default_and_on_by_flag_or_configuration_file() {
        assert!(!ServerConfig::from_args(&args(&["serve"])).unwrap().http.explorer);
        assert!(ServerConfig::from_args(&args(&["serve", "--explorer"])).unwrap().http.explorer);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("authzd.yaml");
        for (text, on) in [("explorer: true\n", true), ("explorer: false\n", false)] {
            std::fs::write(&file, text).unwrap();
            let path = file.to_str().unwrap();
            assert_eq!(
                ServerConfig::from_args(&args(&["serve", "--config", path])).unwrap().http.explorer,
                on,
                "{text}"
            );
        }
        std::fs::write(&file, "explorer: yes please\n").unwrap();
        let e = ServerConfig::from_args(&args(&["serve", "--config", file.to_str().unwrap()])).unwrap_err();
        assert!(e.to_string().contains("key `explorer`: must be true or false"), "{e}");
    }

    #[test]
    fn a_lock_timeout_above_the_maximum_names_both_values() {
        // Only the maximum is set (in a file): the message must show the
        // default it was checked against, not just name a flag never given.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("authzd.yaml");
        std::fs::write(&file, "lock-max-idle-timeout-secs: 60\n").unwrap();
        let e = ServerConfig::from_args(&args(&["serve", "--config", file.to_str().unwrap()])).unwrap_err();
        let e = e.to_string();
        assert!(e.contains("lock-idle-timeout-secs") && e.contains("is 300 s") && e.contains("which is 60 s"), "{e}");
        let e = ServerConfig::from_args(&args(&["serve", "--lock-idle-timeout-secs", "0"])).unwrap_err().to_string();
        assert!(e.contains("is 0 s") && e.contains("which is 3600 s"), "{e}");
        assert!(ServerConfig::from_args(&args(&["serve", "--lock-idle-timeout-secs", "3600"])).is_ok());
    }
}
