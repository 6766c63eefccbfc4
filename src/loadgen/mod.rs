//! `authzd bench`: a closed-loop load generator that checks every answer.
//!
//! It generates the benchmark tenant (`crate::synth`, or loads a tenant file,
//! or takes the compiled-in demo tenant), imports it into a running server
//! unless told not to, builds the same [`TenantView`] locally, and drives the
//! server with a fixed number of requests in flight for a fixed time per
//! workload:
//!
//! - `health`: `grpc.health.v1.Health/Check`, a unary call that does no work:
//!   the transport ceiling every other figure is divided by;
//! - `check-privilege`, `check-object`: single `Check`s over a pool of
//!   different persons, privileges and objects;
//! - `check-batch`: `CheckBatch` of `--batch-size` mixed questions;
//! - `list-visible`: every visible object of a type for a person, all pages;
//! - `list-subjects`, `list-holders`: the reverse lookups (who may read an
//!   object of that type, who holds a privilege), all pages;
//! - `watch`: `--watchers` privilege subscriptions, then role flips; the time
//!   until every affected subscriber has its difference;
//! - `check-http`, `watch-sse`: `Check` as HTTP/JSON, and `watch` with its
//!   subscribers on Server-Sent Events ([`httpjson`]; not in the default list).
//! - `watch-storm`: `check-privilege` while the `watch` flips go on, one
//!   every `--flip-every` (default 100 ms): what a storm of differences
//!   costs the checks (reported as `check-during-storm`; not in the default list).
//! - `soak`: all of it at once for a long time, the server's memory,
//!   descriptors and tasks sampled from its metrics ([`soak`]; not in the
//!   default list).
//!
//! `--decision-log-cost` ([`dlog`]) starts the servers itself, with the
//! decision log off and on, and runs `check-privilege` against each.
//!
//! Every answer is compared with the local view (allowed and reason; the
//! listed ids; the privileges gained and lost). An error or a mismatch is
//! counted and makes the exit code 1, so a server that fails fast, or answers
//! wrongly, can never look fast. The modules: [`pools`] (requests and their
//! expected answers), [`tally`] (a workload's counters, histograms and
//! figures), [`runner`] (the closed loop), [`fanout`] (the watch workload),
//! [`scrape`] (the server's metrics), [`report`] (text and JSON),
//! [`memory`] (`--memory-only`: resident memory and load time of a tenant
//! built in-process).

pub mod dlog;
pub mod fanout;
pub mod httpjson;
pub mod memory;
pub mod pools;
pub mod report;
pub mod runner;
pub mod scrape;
pub mod soak;
pub mod tally;

use crate::console::CliError;
use crate::engine::TenantView;
use crate::model::{Mutation, TenantConfig, TenantFile, TenantId};
use crate::proto::authzd::v1 as pb;
use crate::proto::authzd::v1::admin_service_client::AdminServiceClient;
use crate::service::convert;
use crate::synth::SynthParams;
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

/// Largest answer the load generator accepts.
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// A workload of `authzd bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum Workload {
    /// `grpc.health.v1.Health/Check`: the transport ceiling.
    Health,
    /// `Check` of a privilege.
    CheckPrivilege,
    /// `Check` of a permission on an object.
    CheckObject,
    /// `CheckBatch` of mixed privilege and object questions.
    CheckBatch,
    /// `ListVisible`, following every page.
    ListVisible,
    /// `ListSubjects` of an object (who may read it), every page, with evidence.
    ListSubjects,
    /// `ListHolders` of a privilege, every page.
    ListHolders,
    /// `Watch` fan-out: privilege subscribers, then role flips.
    Watch,
    /// `Check` as HTTP/JSON (`POST /authzd.v1.DecisionService/Check`).
    CheckHttp,
    /// The `watch` fan-out with its subscribers on Server-Sent Events.
    WatchSse,
    /// Mixed load for a long time (checks, writes, subscribers coming and
    /// going, listings), the server's memory, descriptors and tasks sampled.
    Soak,
    /// `check-privilege` while the `watch` fan-out flips its role every
    /// `--flip-every`: the checks' latency during a storm of differences.
    WatchStorm,
}

impl Workload {
    /// The name used in flags and reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Health => "health",
            Workload::CheckPrivilege => "check-privilege",
            Workload::CheckObject => "check-object",
            Workload::CheckBatch => "check-batch",
            Workload::ListVisible => "list-visible",
            Workload::ListSubjects => "list-subjects",
            Workload::ListHolders => "list-holders",
            Workload::Watch => "watch",
            Workload::CheckHttp => "check-http",
            Workload::WatchSse => "watch-sse",
            Workload::Soak => "soak",
            Workload::WatchStorm => "watch-storm",
        }
    }
}

/// Parses `10s`, `500ms`, `2m` or plain seconds (`10`, `0.5`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.trim().parse().map_err(|_| format!("`{s}` is not a duration (`10s`, `500ms`, `2m`)"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("`{s}` is not a duration (`10s`, `500ms`, `2m`)"));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

/// Flags of `authzd bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Server URL (`unix:///path/to.sock` is the same as `--unix-socket`).
    #[arg(long, env = "AUTHZD_SERVER", default_value = "http://127.0.0.1:50051")]
    pub server: String,
    /// Connect to the server's Unix domain socket instead of `--server`.
    #[arg(long)]
    pub unix_socket: Option<PathBuf>,
    /// Admin bearer token (for the import and the watch workload's writes).
    #[arg(long, env = "AUTHZD_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the results as JSON on standard output.
    #[arg(long)]
    pub json: bool,
    /// Id of the generated tenant.
    #[arg(long, default_value = "bench")]
    pub tenant: String,
    /// Use this tenant file (YAML) instead of generating a tenant.
    #[arg(long, conflicts_with = "demo")]
    pub tenant_file: Option<PathBuf>,
    /// Use the demo tenant ACME, as `authzd serve --demo` loads it (no import).
    #[arg(long)]
    pub demo: bool,
    /// Persons of the generated tenant.
    #[arg(long, default_value_t = SynthParams::default().persons)]
    pub persons: usize,
    /// Access groups of the generated tenant.
    #[arg(long, default_value_t = SynthParams::default().groups)]
    pub groups: usize,
    /// Roles of the generated tenant.
    #[arg(long, default_value_t = SynthParams::default().roles)]
    pub roles: usize,
    /// Privileges of the generated tenant's application (`Bench`).
    #[arg(long, default_value_t = SynthParams::default().privileges)]
    pub privileges: usize,
    /// Metrics of the generated tenant.
    #[arg(long, default_value_t = SynthParams::default().metrics)]
    pub metrics: usize,
    /// Object-level entries of the generated tenant (half denies).
    #[arg(long, default_value_t = SynthParams::default().denies)]
    pub denies: usize,
    /// Random seed (tenant and requests).
    #[arg(long, default_value_t = SynthParams::default().seed)]
    pub seed: u64,
    /// Do not import: the server already holds the tenant (answers are still
    /// verified against the local one, so a different tenant shows as mismatches).
    #[arg(long)]
    pub no_import: bool,
    /// Mutations per write when importing the generated tenant.
    #[arg(long, default_value_t = 5_000)]
    pub import_batch: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Measured time per workload (`10s`, `500ms`, `30m`; default 10 s, for `soak` 30 min).
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Unmeasured time before each workload (default 1 s; for `soak`, 10 min
    /// at the start of its `--duration`, after which its start figures are taken).
    #[arg(long, value_parser = parse_duration)]
    pub warmup: Option<Duration>,
    /// HTTP/2 connections the requests are spread over.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Workloads to run, in order (comma-separated).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "health,check-privilege,check-object,check-batch,list-visible,watch"
    )]
    pub workloads: Vec<Workload>,
    /// Questions per `CheckBatch`.
    #[arg(long, default_value_t = 50)]
    pub batch_size: usize,
    /// Object type listed by `list-visible` (default: the tenant's most common type).
    #[arg(long)]
    pub list_type: Option<String>,
    /// Page size of `list-visible` (the server caps it: 10,000 in the full
    /// view, 25,000 with names, 100,000 with ids).
    #[arg(long, default_value_t = 10_000)]
    pub page_size: u32,
    /// What each listed object carries in `list-visible` (the ids are verified in every view).
    #[arg(long, value_enum, default_value_t = ListViewArg::Full)]
    pub list_view: ListViewArg,
    /// Subscribers of the `watch` workload.
    #[arg(long, default_value_t = 1_000)]
    pub watchers: usize,
    /// Application the `watch` subscribers follow (default: the catalog with most privileges).
    #[arg(long)]
    pub watch_app: Option<String>,
    /// `watch` flips a role assigned to every person (created for the run as
    /// `authzd-bench-desk`, granting one privilege no other role grants, and
    /// deleted at its end) instead of the tenant's most-held role: every
    /// subscriber is affected by every flip.
    #[arg(long)]
    pub watch_role_for_all: bool,
    /// `watch-storm`: a flip starts this often (the next one right away when
    /// a flip takes longer).
    #[arg(long, value_parser = parse_duration, default_value = "100ms")]
    pub flip_every: Duration,
    /// `check-http` and `watch-sse` over HTTP/2 (prior knowledge, `--connections`
    /// connections) instead of HTTP/1.1 (one keep-alive connection per
    /// request in flight or subscriber).
    #[arg(long)]
    pub http2: bool,
    /// Different requests per workload (cycled).
    #[arg(long, default_value_t = 16_384)]
    pub pool: usize,
    /// No server: build the tenant and its view in this process and print
    /// resident memory and load time.
    #[arg(long)]
    pub memory_only: bool,
    /// No progress lines on standard error.
    #[arg(long)]
    pub quiet: bool,
    /// `soak`: the server's metrics endpoint (`http://127.0.0.1:9090`, the
    /// address of `serve --metrics-listen`; `/metrics` unless a path is given),
    /// sampled for resident memory, open file descriptors and live tasks;
    /// `watch`, `watch-sse`, `watch-storm`: read before and after the flips
    /// for the server's CPU time per flip.
    #[arg(long, value_name = "URL")]
    pub metrics_url: Option<String>,
    /// `soak`: time between two samples of the server's metrics.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub sample_interval: Duration,
    /// `soak`: time between two write batches (each flips a role, the next flips it back).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub write_interval: Duration,
    /// `soak`: privilege subscribers, each on its own connection, connecting,
    /// reading `--soak-changes` differences, disconnecting, and again.
    #[arg(long, default_value_t = 32)]
    pub soak_subscribers: usize,
    /// `soak`: differences each subscription reads before it disconnects.
    #[arg(long, default_value_t = 2)]
    pub soak_changes: usize,
    /// `soak`: tasks listing (`ListVisible`, every page) in a loop.
    #[arg(long, default_value_t = 2)]
    pub soak_listers: usize,
    /// `soak`: resident memory is flat when it grew by at most this percentage of its start figure...
    #[arg(long, default_value_t = 10.0)]
    pub flat_rss_percent: f64,
    /// ...and by at most this many MiB.
    #[arg(long, default_value_t = 32.0)]
    pub flat_rss_mib: f64,
    /// `soak`: open file descriptors are flat when they grew by at most this
    /// many (default: `--soak-subscribers` + 16, as each subscriber has its own connection).
    #[arg(long)]
    pub flat_fds: Option<i64>,
    /// `soak`: live tasks are flat when they grew by at most this many (default:
    /// `--concurrency` + `--soak-listers` + 4 × `--soak-subscribers` + 32, what in-flight calls and
    /// subscriptions being opened or closed at the moment of a sample can hold).
    #[arg(long)]
    pub flat_tasks: Option<i64>,
    /// Measure the decision log's cost: start `authzd serve` (this binary)
    /// three times on one fresh store — the log off, writing every decision
    /// to a file, and to /dev/null — and run `check-privilege` against each;
    /// calls/s of each against the log-off run. `--server`, `--unix-socket`
    /// and `--workloads` are not used.
    #[arg(long, conflicts_with_all = ["memory_only", "no_import", "unix_socket"])]
    pub decision_log_cost: bool,
    /// `--decision-log-cost`: directory of the spawned servers' store, logs
    /// and decision log (default: a new directory under the system's temporary directory).
    #[arg(long, value_name = "DIR")]
    pub cost_dir: Option<PathBuf>,
    /// `--decision-log-cost`: run the spawned servers under `taskset -c CPUS`
    /// (`0`: the server on core 0; run the bench itself under `taskset -c 1`).
    #[arg(long, value_name = "CPUS")]
    pub serve_cpus: Option<String>,
    /// `--decision-log-cost`: one more flag for the spawned servers (repeat;
    /// `--serve-arg=--decision-log-buffer=1000000`).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub serve_arg: Vec<String>,
}

impl BenchArgs {
    /// The generated tenant's size.
    pub fn synth_params(&self) -> SynthParams {
        SynthParams {
            persons: self.persons,
            groups: self.groups,
            roles: self.roles,
            privileges: self.privileges,
            metrics: self.metrics,
            denies: self.denies,
            seed: self.seed,
        }
    }

    /// Measured time of a workload: `--duration`, else 10 s (30 min for `soak`).
    pub fn duration(&self) -> Duration {
        self.duration.unwrap_or(Duration::from_secs(10))
    }

    /// Unmeasured time before a workload: `--warmup`, else 1 s (10 min for `soak`).
    pub fn warmup(&self) -> Duration {
        self.warmup.unwrap_or(Duration::from_secs(1))
    }

    fn progress(&self, msg: impl std::fmt::Display) {
        if !self.quiet {
            eprintln!("bench: {msg}");
        }
    }
}

/// How the tenant gets into the server.
enum Import {
    /// Write batches (the generated tenant; too large for one message).
    Mutations(Vec<Mutation>),
    /// One `Import` of a tenant file.
    Yaml(String),
    /// Nothing to import.
    None,
}

/// The benchmark tenant: its configuration, the local view answers are
/// checked against, and how to import it.
pub struct Target {
    /// Tenant id.
    pub tenant: String,
    /// The configuration.
    pub config: TenantConfig,
    /// The local view (ground truth).
    pub view: Arc<TenantView>,
    import: Import,
}

fn model_err(e: impl std::fmt::Display) -> CliError {
    CliError::Input(e.to_string())
}

fn target(a: &BenchArgs) -> Result<Target, CliError> {
    let (tenant, config, import) = if a.demo {
        let file = TenantFile::from_yaml(crate::model::presets::DEMO_TENANT_YAML).map_err(model_err)?;
        (file.tenant.id.0.clone(), file.to_config().map_err(model_err)?, Import::None)
    } else if let Some(path) = &a.tenant_file {
        let yaml = std::fs::read_to_string(path)
            .map_err(|source| CliError::Io { path: path.display().to_string(), source })?;
        let file = TenantFile::from_yaml(&yaml).map_err(model_err)?;
        (file.tenant.id.0.clone(), file.to_config().map_err(model_err)?, Import::Yaml(yaml))
    } else {
        let mutations = crate::synth::mutations(&a.synth_params());
        let config = TenantConfig::empty(TenantId(a.tenant.clone())).apply_batch(&mutations).map_err(model_err)?;
        (a.tenant.clone(), config, Import::Mutations(mutations))
    };
    let view = Arc::new(TenantView::build(&config, 0));
    let import = if a.no_import { Import::None } else { import };
    Ok(Target { tenant, config, view, import })
}

/// Adds the admin bearer token to admin calls.
#[derive(Debug, Clone)]
pub struct Token(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

/// The admin client the load generator writes with.
pub type Admin = AdminServiceClient<tonic::service::interceptor::InterceptedService<Channel, Token>>;

fn token(a: &BenchArgs) -> Result<Token, CliError> {
    match &a.token {
        None => Ok(Token(None)),
        Some(t) => format!("Bearer {t}")
            .parse::<MetadataValue<Ascii>>()
            .map(|v| Token(Some(v)))
            .map_err(|_| CliError::Input("--token: not a valid header value".into())),
    }
}

/// Opens one HTTP/2 connection to the server (TCP or Unix socket).
pub async fn connect(server: &str, unix_socket: Option<&std::path::Path>) -> Result<Channel, CliError> {
    // `--server unix:///path` (or `unix:/path`) is the same as `--unix-socket /path`.
    let unix_socket = unix_socket.or_else(|| crate::console::unix_socket_path(server).map(std::path::Path::new));
    let err = |message: String| CliError::Connect {
        server: unix_socket.map_or_else(|| server.to_owned(), |p| format!("unix:{}", p.display())),
        message,
    };
    match unix_socket {
        #[cfg(unix)]
        Some(path) => {
            let path = path.to_owned();
            Endpoint::from_static("http://localhost")
                .connect_with_connector(tower::service_fn(move |_: http::Uri| {
                    let path = path.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                    }
                }))
                .await
                .map_err(|e| {
                    err(format!("{e}: {}", std::error::Error::source(&e).map(ToString::to_string).unwrap_or_default()))
                })
        }
        #[cfg(not(unix))]
        Some(_) => Err(err("Unix sockets are only available on Unix".into())),
        None => {
            let endpoint = Endpoint::from_shared(server.to_owned()).map_err(|e| err(e.to_string()))?;
            endpoint.connect().await.map_err(|e| {
                err(format!("{e}: {}", std::error::Error::source(&e).map(ToString::to_string).unwrap_or_default()))
            })
        }
    }
}

/// Opens `n` connections.
pub async fn connect_many(a: &BenchArgs, n: usize) -> Result<Vec<Channel>, CliError> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        v.push(connect(&a.server, a.unix_socket.as_deref()).await?);
    }
    Ok(v)
}

fn admin(channel: &Channel, token: &Token) -> Admin {
    AdminServiceClient::with_interceptor(channel.clone(), token.clone())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// Imports the tenant unless the server has it already.
async fn import(a: &BenchArgs, t: &mut Target, admin: &mut Admin) -> Result<(), CliError> {
    if matches!(t.import, Import::None) {
        return Ok(());
    }
    let tenants = admin.list_tenants(pb::ListTenantsRequest { at_least_revision: 0 }).await?.into_inner();
    if tenants.tenants.iter().any(|x| x.id == t.tenant) {
        a.progress(format_args!(
            "tenant `{}` exists on the server: not importing it (answers are still verified against the local tenant)",
            t.tenant
        ));
        return Ok(());
    }
    let started = Instant::now();
    match std::mem::replace(&mut t.import, Import::None) {
        Import::Mutations(mutations) => {
            let chunk = a.import_batch.max(1);
            let total = mutations.len();
            let mut sent = 0;
            let mut batches = mutations.into_iter().peekable();
            while batches.peek().is_some() {
                let batch: Vec<pb::Mutation> = batches.by_ref().take(chunk).map(convert::mutation_pb).collect();
                sent += batch.len();
                let r = admin
                    .write(pb::WriteRequest {
                        tenant: t.tenant.clone(),
                        mutations: batch,
                        expected_revision: None,
                        preconditions: Vec::new(),
                        actor: None,
                        dry_run: false,
                        include_changes: false,
                    })
                    .await?
                    .into_inner();
                a.progress(format_args!("imported {sent}/{total} mutations (revision {})", r.revision));
            }
        }
        Import::Yaml(yaml) => {
            let r = admin
                .import(pb::ImportRequest { yaml, replace: false, dry_run: false, include_changes: false })
                .await?
                .into_inner();
            a.progress(format_args!("imported tenant `{}` at revision {}", r.tenant, r.revision));
        }
        Import::None => {}
    }
    a.progress(format_args!("import took {:.1} s", started.elapsed().as_secs_f64()));
    Ok(())
}

/// Runs `authzd bench`.
pub async fn run(a: BenchArgs) -> Result<ExitCode, CliError> {
    if a.memory_only {
        return memory::run(&a);
    }
    if a.concurrency == 0 || a.batch_size == 0 || a.pool == 0 {
        return Err(CliError::Input("--concurrency, --batch-size and --pool must be at least 1".into()));
    }
    if a.decision_log_cost {
        return dlog::run(a).await;
    }
    if a.workloads.contains(&Workload::Soak) {
        soak::check_args(&a).map_err(CliError::Input)?;
    }
    let started = Instant::now();
    let mut t = target(&a)?;
    let (persons, nodes, _) = t.view.stats();
    a.progress(format_args!(
        "tenant `{}`: {} persons, {} groups, {} roles, {} objects ({nodes} nodes, {persons} persons in the view) built in {:.1} s",
        t.tenant,
        t.config.persons.len(),
        t.config.groups.len(),
        t.config.roles.len(),
        t.config.objects.len(),
        started.elapsed().as_secs_f64()
    ));
    let token = token(&a)?;
    let channels = connect_many(&a, a.connections).await?;
    let mut admin_client = admin(&channels[0], &token);
    import(&a, &mut t, &mut admin_client).await?;

    let pools = Arc::new(pools::Pools::build(&a, &t));
    let mut results = Vec::new();
    let mut health_rps = None;
    for w in &a.workloads {
        if *w != Workload::Soak {
            a.progress(format_args!("{}: running for {:?} (+{:?} warm-up)", w.name(), a.duration(), a.warmup()));
        }
        let r = match w {
            Workload::Watch => fanout::run(&a, &t, &token, false).await,
            Workload::WatchStorm => {
                let (started, flipping) = tokio::sync::oneshot::channel();
                // The flips change some answers (the flipped privilege, and
                // those requiring it): the checks are the others, which the
                // storm must leave alone, so that each is still verified.
                let storm_pools = fanout::storm_pools(&a, &t, &pools).map(Arc::new);
                let checks = async {
                    // The checks start with the flips (not while 10,000 streams subscribe).
                    if flipping.await.is_err() {
                        return None;
                    }
                    let pools = storm_pools.as_ref().unwrap_or(&pools);
                    let mut r = runner::run(&a, Workload::CheckPrivilege, &channels, pools).await;
                    r.name = "check-during-storm";
                    Some(r)
                };
                let (watch, checks) = tokio::join!(fanout::run_storm(&a, &t, &token, started), checks);
                results.extend(checks);
                watch
            }
            Workload::WatchSse => fanout::run(&a, &t, &token, true).await,
            Workload::CheckHttp => httpjson::run_check(&a, &pools).await,
            Workload::Soak => soak::run(&a, &t, &token, &channels, Arc::clone(&pools)).await,
            w => runner::run(&a, *w, &channels, &pools).await,
        };
        if *w == Workload::Health && r.errors == 0 {
            health_rps = Some(r.calls_per_sec);
        }
        results.push(r);
    }
    let report = report::Report::new(&a, &t, results, health_rps);
    if a.json {
        report.print_json();
    } else {
        report.print_text();
    }
    Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}

/// `--list-view`: the `ListView` the `list-visible` workload asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListViewArg {
    /// Id, name, folder and readable properties.
    Full,
    /// Id and name.
    Names,
    /// Id only.
    Ids,
}

impl ListViewArg {
    /// The proto value.
    pub fn proto(self) -> crate::proto::authzd::v1::ListView {
        use crate::proto::authzd::v1::ListView;
        match self {
            ListViewArg::Full => ListView::Full,
            ListViewArg::Names => ListView::Names,
            ListViewArg::Ids => ListView::Ids,
        }
    }
}
