//! The command line: `authzd serve` and the client commands of the same binary.
//!
//! Client commands talk to a running server (`--server`, default
//! `http://127.0.0.1:50051`; admin commands send `--token` as
//! `authorization: Bearer <token>`), print human-readable answers, or JSON
//! with `--json`. `validate` works offline. Exit codes: 0 success (for
//! `check`: allowed), 3 `check` denied, 1 any error, 2 usage.

use crate::config::{DEFAULT_LISTEN, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_STORE, LogFormat};
use crate::model::{Mutation, TenantFile};
use crate::proto::authzd::v1 as pb;
use crate::proto::authzd::v1::admin_service_client::AdminServiceClient;
use crate::proto::authzd::v1::decision_service_client::DecisionServiceClient;
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
    /// Run the server (gRPC, gRPC-Web, health, reflection).
    Serve(ServeArgs),
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
    /// Apply a YAML list of mutations to a tenant as one atomic batch.
    Write(WriteArgs),
    /// Load-test a running server, verifying every answer (see README "Load tests").
    Bench(crate::loadgen::BenchArgs),
}

/// Flags of `authzd serve`; each has an `AUTHZD_*` environment fallback.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// TCP address to listen on.
    #[arg(long, env = "AUTHZD_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Store URL: `sqlite://<path>`, a file path, or `postgres://user:pass@host/db`.
    #[arg(long, env = "AUTHZD_STORE", default_value = DEFAULT_STORE)]
    pub store: String,
    /// Load the demo tenant ACME (id `acme`) at start-up when it is absent.
    #[arg(long, env = "AUTHZD_DEMO")]
    pub demo: bool,
    /// Bearer token admin calls must present (decisions stay open).
    #[arg(long, env = "AUTHZD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Also listen on this Unix domain socket.
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
    /// Serve Prometheus metrics (`/metrics`) and the probes `/healthz` and
    /// `/readyz` over HTTP on this address (off when absent).
    #[arg(long, env = "AUTHZD_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Export traces over OTLP/gRPC to this collector (`http://collector:4317`);
    /// needs a build with `--features otel`.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

/// How a client command reaches the server and prints.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Server URL.
    #[arg(long, env = "AUTHZD_SERVER", default_value = "http://127.0.0.1:50051")]
    pub server: String,
    /// Admin bearer token.
    #[arg(long, env = "AUTHZD_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
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
    /// The tenant file.
    pub file: PathBuf,
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
    /// The server refused the call.
    #[error("{:?}: {}", .0.code(), .0.message())]
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
    token: BearerToken,
}

impl Conn {
    async fn open(c: &ClientArgs) -> Result<Conn, CliError> {
        let connect = |message: String| CliError::Connect { server: c.server.clone(), message };
        let endpoint = Channel::from_shared(c.server.clone()).map_err(|e| connect(e.to_string()))?;
        let channel = endpoint.connect().await.map_err(|e| connect(e.to_string()))?;
        let token = match &c.token {
            Some(t) => Some(
                format!("Bearer {t}")
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| CliError::Input("--token: not a valid header value".into()))?,
            ),
            None => None,
        };
        Ok(Conn { channel, token: BearerToken(token) })
    }

    fn decisions(&self) -> DecisionServiceClient<Intercepted> {
        DecisionServiceClient::with_interceptor(self.channel.clone(), self.token.clone())
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
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()));
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

fn evidence_json(e: &pb::Evidence) -> Value {
    json!({
        "groups": e.groups,
        "roles": e.roles,
        "privilege_source": source_text(e.privilege_source),
        "aces": e.aces.iter().map(|a| json!({
            "principal": subject_text(a.principal.as_ref()),
            "target": target_text(a.target.as_ref()),
            "inherited_from": a.inherited_from,
            "allow": perms_text(&a.allow),
            "deny": perms_text(&a.deny),
            "propagate": a.propagate,
        })).collect::<Vec<_>>(),
        "privileges": e.privileges.iter().map(|p| json!({
            "name": p.name,
            "effective": p.effective,
            "missing_requires": p.missing_requires,
            "need": need_text(p.need),
        })).collect::<Vec<_>>(),
    })
}

fn print_evidence(e: &pb::Evidence) {
    println!("  groups: {}", if e.groups.is_empty() { "-".into() } else { e.groups.join(", ") });
    if !e.roles.is_empty() {
        println!("  roles: {} (source {})", e.roles.join(", "), source_text(e.privilege_source));
    }
    if e.aces.is_empty() {
        println!("  entries: none for this person's principals");
    }
    for a in &e.aces {
        let from = if a.inherited_from.is_empty() { String::new() } else { format!(" (inherited from {})", a.inherited_from) };
        println!(
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
        println!(
            "  privilege: {} ({}): {}{missing}",
            p.name,
            need_text(p.need),
            if p.effective { "effective" } else { "not effective" }
        );
    }
}

fn changes_json(changes: &[pb::PersonChange], truncated: bool) -> Value {
    json!({
        "truncated": truncated,
        "persons": changes.iter().map(|c| json!({
            "person": c.person,
            "privileges": c.privileges.iter().map(|p| json!({
                "application": p.application, "gained": p.gained, "lost": p.lost,
            })).collect::<Vec<_>>(),
            "visible_gained": c.visible_gained.iter().map(|k| format!("{}/{}", k.r#type, k.id)).collect::<Vec<_>>(),
            "visible_lost": c.visible_lost.iter().map(|k| format!("{}/{}", k.r#type, k.id)).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

fn print_changes(changes: &[pb::PersonChange], truncated: bool) {
    if changes.is_empty() {
        println!("nobody gains or loses anything");
    }
    for c in changes {
        println!("{}:", c.person);
        for p in &c.privileges {
            for g in &p.gained {
                println!("  + {}: {g}", p.application);
            }
            for l in &p.lost {
                println!("  - {}: {l}", p.application);
            }
        }
        for k in &c.visible_gained {
            println!("  + sees {} {}", k.r#type, k.id);
        }
        for k in &c.visible_lost {
            println!("  - no longer sees {} {}", k.r#type, k.id);
        }
    }
    if truncated {
        println!("(report truncated at the server's limit)");
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
        let mut v = json!({"allowed": r.allowed, "reason": code, "revision": r.revision});
        if let (Some(e), Some(obj)) = (&r.evidence, v.as_object_mut()) {
            obj.insert("evidence".into(), evidence_json(e));
        }
        print_json(&v);
    } else {
        println!("{} ({code}, revision {})", if r.allowed { "ALLOWED" } else { "DENIED" }, r.revision);
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
        print_json(&json!({
            "revision": revision,
            "objects": objects.iter().map(|o| json!({
                "id": o.id, "name": o.name, "folder": o.folder, "properties": o.properties,
            })).collect::<Vec<_>>(),
        }));
    } else {
        for o in &objects {
            println!("{}\t{}\t{}", o.id, o.name, o.folder);
        }
        println!("{} {} object(s) at revision {revision}", objects.len(), a.kind);
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
    let e = r.effective.unwrap_or_default();
    if a.client.json {
        print_json(&json!({
            "revision": r.revision,
            "application": e.application,
            "source": source_text(e.source),
            "legacy_section": e.legacy_section,
            "legacy_role": e.legacy_role,
            "privileges": e.privileges,
            "unmet": e.unmet,
            "roles": e.roles,
            "unreadable_roles": e.unreadable_roles,
            "primary_role": e.primary_role,
        }));
    } else {
        let legacy = match (&e.legacy_section, &e.legacy_role) {
            (Some(s), Some(r)) => format!(" ({s}.role = {r})"),
            _ => String::new(),
        };
        println!("{} at revision {}: source {}{legacy}", e.application, r.revision, source_text(e.source));
        if let Some(p) = &e.primary_role {
            println!("primary role: {p}");
        }
        if !e.roles.is_empty() {
            println!("roles: {}", e.roles.join(", "));
        }
        if !e.unreadable_roles.is_empty() {
            println!("roles not applied (not readable): {}", e.unreadable_roles.join(", "));
        }
        for p in &e.privileges {
            println!("  {p}");
        }
        for p in &e.unmet {
            println!("  {p} (granted, but a required privilege is missing)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn tenants(c: ClientArgs) -> Result<ExitCode, CliError> {
    let conn = Conn::open(&c).await?;
    let r = conn.admin().list_tenants(pb::ListTenantsRequest { at_least_revision: 0 }).await?.into_inner();
    if c.json {
        print_json(&json!({
            "revision": r.revision,
            "tenants": r.tenants.iter().map(|t| json!({
                "id": t.id, "name": t.name, "restricted_mode": t.restricted_mode,
                "applications": t.applications, "changed_at_revision": t.changed_at_revision,
            })).collect::<Vec<_>>(),
        }));
    } else {
        for t in &r.tenants {
            println!(
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
        print_json(&json!({
            "tenant": r.tenant, "revision": r.revision, "dry_run": a.dry_run,
            "changes": changes_json(&r.changes, r.changes_truncated),
        }));
    } else {
        if a.dry_run {
            println!("dry run: tenant `{}` would be imported (evaluated at revision {})", r.tenant, r.revision);
        } else {
            println!("imported tenant `{}` at revision {}", r.tenant, r.revision);
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
            std::fs::write(path, &r.yaml).map_err(|source| CliError::Io { path: path.display().to_string(), source })?;
            if a.client.json {
                print_json(&json!({"file": path.display().to_string(), "revision": r.revision}));
            } else {
                eprintln!("wrote {} (revision {})", path.display(), r.revision);
            }
        }
        None if a.client.json => print_json(&json!({"yaml": r.yaml, "revision": r.revision})),
        None => print!("{}", r.yaml),
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
        print_json(&json!({
            "tenant": a.tenant, "revision": r.revision, "dry_run": a.dry_run,
            "changes": changes_json(&r.changes, r.changes_truncated),
        }));
    } else {
        if a.dry_run {
            println!("dry run on tenant `{}` at revision {}: nothing was stored", a.tenant, r.revision);
        } else {
            println!("written to tenant `{}` at revision {}", a.tenant, r.revision);
        }
        if a.dry_run || a.include_changes {
            print_changes(&r.changes, r.changes_truncated);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `authzd validate FILE`: parses and validates a tenant file offline. YAML
/// errors name the line and column; model errors the field path and item.
pub fn validate(a: &ValidateArgs) -> ExitCode {
    let path = a.file.display().to_string();
    let result = read_file(&a.file).and_then(|text| {
        let file = TenantFile::from_yaml(&text).map_err(|e| CliError::Input(e.to_string()))?;
        let config = file.to_config().map_err(|e| CliError::Input(e.to_string()))?;
        Ok(config)
    });
    match result {
        Ok(c) => {
            if a.json {
                print_json(&json!({
                    "file": path, "valid": true, "tenant": c.id.0, "name": c.name,
                    "persons": c.persons.len(), "groups": c.groups.len(), "roles": c.roles.len(),
                    "folders": c.folders.len(), "objects": c.objects.len(), "aces": c.aces.len(),
                    "applications": c.catalogs.keys().collect::<Vec<_>>(),
                }));
            } else {
                println!(
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
            ExitCode::SUCCESS
        }
        Err(e) => {
            if a.json {
                print_json(&json!({"file": path, "valid": false, "error": e.to_string()}));
            } else {
                eprintln!("{path}: {e}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Runs a client command (everything but `serve` and `validate`).
pub async fn run_client(command: Command) -> ExitCode {
    let json = match &command {
        Command::Check(a) | Command::Explain(a) => a.client.json,
        Command::List(a) => a.client.json,
        Command::Privileges(a) => a.client.json,
        Command::Tenants(a) => a.json,
        Command::Import(a) => a.client.json,
        Command::Export(a) => a.client.json,
        Command::Write(a) => a.client.json,
        Command::Validate(a) => a.json,
        Command::Bench(a) => a.json,
        Command::Serve(_) => false,
    };
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
        Command::Bench(a) => crate::loadgen::run(a).await,
        Command::Serve(_) => Err(CliError::Input("`serve` is not a client command".into())),
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
