//! Wiring: the command dispatch, logging, the server's start-up, its
//! listeners and its graceful shutdown.
//!
//! [`Server::start`] opens the store and loads the snapshot (and the demo
//! tenant with `--demo`) before anything listens, so a server that accepts
//! connections answers from a loaded snapshot and reports `SERVING` on the
//! standard health service. [`Server::serve_with_incoming_shutdown`] serves
//! one listener; `authzd serve` runs a TCP listener and optionally a Unix
//! socket, both until SIGINT or SIGTERM, then reports `NOT_SERVING`, ends
//! every Watch stream (`UNAVAILABLE`: reconnect), lets in-flight calls finish
//! for at most the shutdown grace period (`--shutdown-grace-ms`), cuts the
//! connections still open after it (a client that stopped reading a stream
//! could otherwise hold the server forever), and closes the store. Tests
//! start a `Server` on `127.0.0.1:0` the same way.

use crate::cli::{Cli, Command};
use crate::config::{LogFormat, ServerConfig};
use crate::decision_log::DecisionLog;
use crate::engine::Reason;
use crate::metrics::{MeteredDecisions, Metrics, RpcMetricsLayer};
use crate::model::TenantFile;
use crate::proto::authzd::v1::admin_service_server::AdminServiceServer;
use crate::proto::authzd::v1::decision_service_server::DecisionServiceServer;
use crate::proto::authzd::v1::read_service_server::ReadServiceServer;
use crate::proto::authzd::v1::watch_service_server::WatchServiceServer;
use crate::replica::Replica;
use crate::replica::{Batch, WriteRequest};
use crate::service::auth::WatchAuth;
use crate::service::{Admin, AdminAuth, DecisionAuth, Decisions, Fanout, Reads, Watcher};
use crate::store::AnyStore;
use anyhow::Context as _;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::Stream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::Connected;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

// The demo tenant lives with the presets (`model::presets`, which `authzd bench --demo`
// reads too); this path stays for the callers that know it here.
pub use crate::model::presets::{DEMO_TENANT_ID, DEMO_TENANT_YAML};

/// Runs the parsed command line; the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    if let Command::Validate(args) = &cli.command {
        return crate::cli::validate(args);
    }
    if let Command::Test(args) = &cli.command {
        return crate::cli::test(args);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve(args) => {
            let config = match ServerConfig::from_args(&args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let telemetry =
                runtime.block_on(async { init_tracing(config.log_format, config.otlp_endpoint.as_deref()) });
            let code = match runtime.block_on(serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "server failed");
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            };
            telemetry.shutdown();
            code
        }
        other => runtime.block_on(crate::cli::run_client(other)),
    }
}

/// Installs the global log subscriber: `RUST_LOG` filter (default `info`),
/// text or JSON lines on standard error. A second call is a no-op.
pub fn init_logging(format: LogFormat) {
    init_tracing(format, None).shutdown();
}

/// What must be flushed at exit: the trace exporter, when there is one.
#[derive(Debug, Default)]
pub struct Telemetry {
    #[cfg(feature = "otel")]
    traces: Option<crate::metrics::otel::Tracing>,
}

impl Telemetry {
    /// Flushes pending spans and stops the exporter.
    pub fn shutdown(self) {
        #[cfg(feature = "otel")]
        if let Some(t) = self.traces {
            t.shutdown();
        }
    }
}

/// Installs the global subscriber: logs as [`init_logging`] says, and with an
/// OTLP endpoint (and the `otel` feature) a layer exporting spans. Call
/// inside the runtime (the exporter's client needs it). A second call is a no-op.
pub fn init_tracing(format: LogFormat, otlp_endpoint: Option<&str>) -> Telemetry {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::{EnvFilter, Layer as _};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        LogFormat::Text => fmt.boxed(),
    };
    let registry = tracing_subscriber::registry().with(filter).with(fmt);
    #[cfg(feature = "otel")]
    if let Some(endpoint) = otlp_endpoint {
        match crate::metrics::otel::layer(endpoint) {
            Ok((layer, traces)) => {
                let _ = registry.with(layer).try_init();
                tracing::info!(endpoint, "exporting traces over OTLP");
                return Telemetry { traces: Some(traces) };
            }
            Err(e) => {
                let _ = registry.try_init();
                tracing::warn!(endpoint, error = %e, "cannot export traces over OTLP; continuing without traces");
                return Telemetry::default();
            }
        }
    }
    let _ = registry.try_init();
    #[cfg(not(feature = "otel"))]
    if let Some(endpoint) = otlp_endpoint {
        tracing::warn!(
            endpoint,
            "an OTLP endpoint is configured but this build has no trace export (build with `--features otel`)"
        );
    }
    Telemetry::default()
}

/// A loaded replica with its services, ready to serve listeners.
pub struct Server {
    replica: Arc<Replica>,
    config: ServerConfig,
    health: HealthReporter,
    stop: watch::Sender<bool>,
    tailer: Option<JoinHandle<()>>,
    metrics: Option<Arc<Metrics>>,
    /// The decision log, when configured (closed, so flushed, by [`Server::close`]).
    decision_log: Option<Arc<DecisionLog>>,
    watch: Arc<Fanout>,
    checkpoints: Option<JoinHandle<()>>,
    /// The changelog retention job (it ends at once when disabled).
    retention: Option<JoinHandle<()>>,
    /// Drops kept listing states past their time (ends at once when none are kept).
    page_sweeper: Option<JoinHandle<()>>,
    /// The TCP listener's TLS settings (handshakes are done by `crate::tls::accept`).
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// Connections cut at the end of a shutdown grace period, every listener.
    cut: AtomicU64,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Server {
    /// Opens the store, loads every tenant (and the demo tenant when asked
    /// and absent), starts tailing the store, and reports `SERVING`.
    pub async fn start(config: ServerConfig) -> anyhow::Result<Server> {
        let tls = config
            .tls
            .as_ref()
            .map(crate::tls::server_config)
            .transpose()
            .map_err(|e| anyhow::anyhow!("cannot use the TLS certificate, key and client CA: {e}"))?;
        let replica = Arc::new(match &config.follow {
            None => {
                let store =
                    AnyStore::open_with(&config.store_url, config.create_store_dir).await.with_context(|| {
                        format!("cannot open the store `{}`", crate::store::redact_url(&config.store_url))
                    })?;
                Replica::open_with_clock(store, config.limits.clone(), Arc::clone(&config.clock))
                    .await
                    .context("cannot load the snapshot")?
            }
            Some(upstream) => open_follower(upstream, &config.limits, &config.clock).await?,
        });
        // Before any write (the demo import included): change streams see every batch.
        let watch = Fanout::new(Arc::clone(&replica), config.watch);
        if config.demo {
            load_demo(&replica).await?;
        }
        log_open_applications(&replica);

        let health = HealthReporter::new();
        health.set_service_status("", ServingStatus::Serving).await;
        health.set_serving::<DecisionServiceServer<Decisions>>().await;
        health.set_serving::<ReadServiceServer<Reads>>().await;
        health.set_serving::<AdminServiceServer<Admin>>().await;
        health.set_serving::<WatchServiceServer<Watcher>>().await;

        let (stop, stopped) = watch::channel(false);
        let checkpoints = (!config.watch.checkpoint_interval.is_zero())
            .then(|| tokio::spawn(Arc::clone(&watch).run_checkpoints(stopped.clone())));
        let metrics = config.metrics_listen.map(|_| Metrics::new(Arc::clone(&replica)));
        let decision_log = match &config.decision_log {
            None => None,
            Some(settings) => {
                let log = DecisionLog::open(settings).with_context(|| match &settings.target {
                    crate::decision_log::Target::File(p) => {
                        format!("cannot open the decision log `{}` (--decision-log)", p.display())
                    }
                    crate::decision_log::Target::Stdout => "cannot start the decision log (--decision-log)".to_owned(),
                })?;
                if let Some(m) = &metrics {
                    m.observe_decision_log(Arc::clone(log.stats()));
                }
                Some(log)
            }
        };
        if let Some(m) = &metrics {
            let w = Arc::clone(&watch);
            m.observe_watch(move || {
                use std::sync::atomic::Ordering::Relaxed;
                crate::metrics::WatchGauges {
                    subscribers: w.hub().len() as u64,
                    coalesced: w.hub().stats.coalesced.load(Relaxed),
                    delivered: w.hub().stats.delivered.load(Relaxed),
                    open_streams: w.stats.open_streams.load(Relaxed),
                    resume_required: w.stats.resume_required.load(Relaxed),
                    reloads: w.stats.reloads.load(Relaxed),
                }
            });
            // Probe the store as often as the replica tails it (at least every 5 s).
            let every = if config.tail_interval.is_zero() { Duration::from_secs(5) } else { config.tail_interval };
            m.probe_once().await;
            tokio::spawn(Arc::clone(m).probe_loop(every.min(Duration::from_secs(5)), stopped.clone()));
        }
        let retention = Some(tokio::spawn(Arc::clone(&replica).run_retention(config.retention, stopped.clone())));
        let page_sweeper = Some(tokio::spawn(Arc::clone(&replica).run_page_sweeper(stopped.clone())));
        // A follower always tails: its upstream's stream wakes it for every batch.
        let tail_every = match (config.follow.is_some(), config.tail_interval.is_zero()) {
            (true, true) => Some(Duration::from_secs(1)),
            (_, false) => Some(config.tail_interval),
            (false, true) => None,
        };
        let tailer = tail_every.map(|every| tokio::spawn(Arc::clone(&replica).tail(every, stopped)));
        Ok(Server {
            replica,
            config,
            health,
            stop,
            tailer,
            metrics,
            decision_log,
            watch,
            checkpoints,
            retention,
            page_sweeper,
            tls,
            cut: AtomicU64::new(0),
        })
    }

    /// The replica behind the services.
    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    /// What feeds the change streams (its hub's counters, its own).
    pub fn watch(&self) -> &Arc<Fanout> {
        &self.watch
    }

    /// The metrics registry, when `metrics_listen` is configured.
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }

    /// The decision log, when `decision_log` is configured.
    pub fn decision_log(&self) -> Option<&Arc<DecisionLog>> {
        self.decision_log.as_ref()
    }

    /// How many connections shutdowns cut so far because they were still
    /// open at the end of the grace period (every listener).
    pub fn connections_cut(&self) -> u64 {
        self.cut.load(Ordering::Relaxed)
    }

    /// Serves gRPC (and gRPC-Web, HTTP/JSON and Watch as Server-Sent Events
    /// over HTTP/1.1 or HTTP/2: `crate::http`) on `incoming` — over TLS
    /// when the configuration has a certificate — until `shutdown`
    /// completes, then ends every change stream (`UNAVAILABLE`: reconnect),
    /// lets in-flight calls finish for at most the shutdown grace period,
    /// and cuts the connections still open after it. Over TLS, each
    /// handshake is done by [`crate::tls::accept`], which logs a refused one
    /// with the peer's address and the reason.
    pub async fn serve_with_incoming_shutdown<I, IO, IE, F>(&self, incoming: I, shutdown: F) -> anyhow::Result<()>
    where
        I: Stream<Item = Result<IO, IE>> + Send + 'static,
        IO: AsyncRead + AsyncWrite + Connected + crate::tls::PeerAddr + Unpin + Send + 'static,
        IE: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
        F: Future<Output = ()>,
    {
        match &self.tls {
            Some(tls) => self.serve_inner(crate::tls::accept(incoming, Arc::clone(tls)), shutdown).await,
            None => self.serve_inner(incoming, shutdown).await,
        }
    }

    /// As [`Server::serve_with_incoming_shutdown`], never over TLS: for the
    /// Unix socket, which its file permissions guard.
    pub async fn serve_local_with_incoming_shutdown<I, IO, IE, F>(&self, incoming: I, shutdown: F) -> anyhow::Result<()>
    where
        I: Stream<Item = Result<IO, IE>>,
        IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
        IE: Into<Box<dyn std::error::Error + Send + Sync>>,
        F: Future<Output = ()>,
    {
        self.serve_inner(incoming, shutdown).await
    }

    async fn serve_inner<I, IO, IE, F>(&self, incoming: I, shutdown: F) -> anyhow::Result<()>
    where
        I: Stream<Item = Result<IO, IE>>,
        IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
        IE: Into<Box<dyn std::error::Error + Send + Sync>>,
        F: Future<Output = ()>,
    {
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("cannot build the reflection service")?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .context("cannot build the reflection service")?;
        let limit = self.config.max_message_bytes;
        let decision_auth =
            DecisionAuth::new(self.config.decision_token.as_deref(), self.config.admin_token.as_deref());
        let decisions = InterceptedService::new(
            DecisionServiceServer::new(
                MeteredDecisions::new(Decisions::new(Arc::clone(&self.replica)), self.metrics.clone())
                    .with_log(self.decision_log.clone()),
            )
            .max_decoding_message_size(limit),
            decision_auth.clone(),
        );
        // Reads reveal what decisions reveal (Explain gives entries, groups
        // and roles): the same credential.
        let reads = InterceptedService::new(
            ReadServiceServer::new(Reads::new(Arc::clone(&self.replica))).max_decoding_message_size(limit),
            decision_auth.clone(),
        );
        let admin_auth =
            AdminAuth::with_client_certs(self.config.admin_token.as_deref(), self.config.client_cert_admin());
        let admin = InterceptedService::new(
            AdminServiceServer::new(Admin::new(Arc::clone(&self.replica), self.config.locks))
                .max_decoding_message_size(limit),
            admin_auth.clone(),
        );
        // One RPC, two kinds of subscription with different credentials: the
        // service checks each request (an interceptor cannot see which kind).
        let watch = WatchServiceServer::new(Watcher::with_auth(
            Arc::clone(&self.watch),
            WatchAuth::new(decision_auth, admin_auth),
        ))
        .max_decoding_message_size(limit);
        let health = HealthServer::new(HealthService::from_health_reporter(self.health.clone()));
        // Streams never end by themselves: end them when shutdown starts, or
        // the server would wait for them forever.
        let streams = Arc::clone(&self.watch);
        let (began, shutdown_began) = tokio::sync::oneshot::channel::<()>();
        let shutdown = async move {
            shutdown.await;
            streams.shutdown();
            let _ = began.send(());
        };
        let connections = Connections::default();
        let incoming = connections.track(incoming);
        #[cfg_attr(not(feature = "otel"), allow(unused_mut))]
        let mut builder = tonic::transport::Server::builder();
        #[cfg(feature = "otel")]
        if self.config.otlp_endpoint.is_some() {
            builder = builder.trace_fn(crate::metrics::otel::request_span);
        }
        // Outermost: CORS, HTTP/JSON and event streams, and the content-type
        // gate (a body that is neither gRPC nor JSON is never executed).
        let http = crate::http::HttpLayer::new(&self.config.http, limit)
            .map_err(|e| anyhow::anyhow!("cannot set up HTTP/JSON: {e}"))?;
        let serving = builder
            .accept_http1(true)
            .layer(http)
            .layer(self.metrics.as_ref().map_or_else(RpcMetricsLayer::off, Metrics::layer))
            .layer(tonic_web::GrpcWebLayer::new())
            .layer(crate::service::wire::LimitStatusLayer { limit })
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(decisions)
            .add_service(reads)
            .add_service(admin)
            .add_service(watch)
            .serve_with_incoming_shutdown(incoming, shutdown);
        self.drain(serving, shutdown_began, &connections).await
    }

    /// Runs `serving` until it ends by itself, or — once shutdown began —
    /// for at most the grace period; then cuts the connections still open
    /// and gives them [`CUT_WAIT`] to close.
    async fn drain<S>(
        &self,
        serving: S,
        began: tokio::sync::oneshot::Receiver<()>,
        connections: &Connections,
    ) -> anyhow::Result<()>
    where
        S: Future<Output = Result<(), tonic::transport::Error>>,
    {
        tokio::pin!(serving);
        tokio::select! {
            r = &mut serving => return r.context("the gRPC server failed"),
            b = began => if b.is_err() {
                // The signal was dropped unfired: no graceful shutdown to bound.
                return serving.await.context("the gRPC server failed");
            },
        }
        let grace = self.config.shutdown_grace;
        tracing::info!(
            connections = connections.open(),
            grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
            "shutting down: watch streams ended; waiting for in-flight calls"
        );
        if let Ok(r) = tokio::time::timeout(grace, &mut serving).await {
            return r.context("the gRPC server failed");
        }
        let cut = connections.cut();
        self.cut.fetch_add(cut, Ordering::Relaxed);
        tracing::warn!(
            connections = cut,
            grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
            "shutdown grace period over: cut the connections still open"
        );
        match tokio::time::timeout(CUT_WAIT, &mut serving).await {
            Ok(r) => r.context("the gRPC server failed"),
            Err(_) => {
                tracing::warn!(
                    connections = connections.open(),
                    "connections still open after being cut; stopping without them"
                );
                Ok(())
            }
        }
    }

    /// Reports `NOT_SERVING` (load balancers stop sending new calls).
    pub async fn set_not_serving(&self) {
        if let Some(m) = &self.metrics {
            m.set_stopping();
        }
        self.health.set_service_status("", ServingStatus::NotServing).await;
        self.health.set_not_serving::<DecisionServiceServer<Decisions>>().await;
        self.health.set_not_serving::<ReadServiceServer<Reads>>().await;
        self.health.set_not_serving::<AdminServiceServer<Admin>>().await;
        self.health.set_not_serving::<WatchServiceServer<Watcher>>().await;
    }

    /// Stops tailing and closes the store. Call after every listener stopped.
    pub async fn close(mut self) {
        self.set_not_serving().await;
        self.stop.send_replace(true);
        self.watch.shutdown();
        if let Some(t) = self.tailer.take() {
            let _ = t.await;
        }
        if let Some(t) = self.checkpoints.take() {
            let _ = t.await;
        }
        if let Some(t) = self.retention.take() {
            let _ = t.await;
        }
        if let Some(t) = self.page_sweeper.take() {
            let _ = t.await;
        }
        self.replica.flush_checkpoints().await;
        self.replica.store().close().await;
        // Every decision was answered: write and flush the log's last lines.
        if let Some(log) = self.decision_log.take() {
            let _ = tokio::task::spawn_blocking(move || log.close()).await;
        }
    }
}

/// A follower's replica: waits for the upstream (retrying with backoff, up
/// to 5 s apart, saying so) until it has loaded every tenant from it.
async fn open_follower(
    upstream: &crate::store::UpstreamSettings,
    limits: &crate::replica::Limits,
    clock: &Arc<dyn crate::replica::Clock>,
) -> anyhow::Result<Replica> {
    let mut backoff = Duration::from_millis(200);
    loop {
        let store = AnyStore::Upstream(
            crate::store::UpstreamStore::open(upstream).with_context(|| format!("cannot follow `{}`", upstream.url))?,
        );
        match Replica::open_with_clock(store.clone(), limits.clone(), Arc::clone(clock)).await {
            Ok(r) => return Ok(r),
            Err(e) => {
                store.close().await;
                tracing::warn!(upstream = %upstream.url, error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot load from the upstream yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Imports the demo tenant unless a tenant `acme` exists.
async fn load_demo(replica: &Replica) -> anyhow::Result<()> {
    match replica.state(DEMO_TENANT_ID) {
        Ok(_) => {
            tracing::info!(tenant = DEMO_TENANT_ID, "demo tenant present; not loading it again");
            return Ok(());
        }
        Err(Reason::UnknownTenant) => {}
        Err(r) => anyhow::bail!("cannot check for the demo tenant: {}", r.code()),
    }
    let file = TenantFile::from_yaml(DEMO_TENANT_YAML).context("the demo tenant does not parse")?;
    let mutations = file.to_mutations().context("the demo tenant does not expand")?;
    let config = file.to_config().context("the demo tenant does not validate")?;
    let write = WriteRequest {
        batch: Batch::Import { file: mutations, config: Box::new(config), replace: false },
        ..WriteRequest::new(file.tenant.id.clone(), Vec::new())
    };
    let outcome = replica.write(write).await.context("cannot store the demo tenant")?;
    tracing::info!(tenant = DEMO_TENANT_ID, revision = outcome.revision, "demo tenant loaded");
    Ok(())
}

/// SPEC §3 rule 3: applications open to unconfigured persons are logged at start-up.
fn log_open_applications(replica: &Replica) {
    let snapshot = replica.snapshot();
    for tenant in snapshot.tenant_ids() {
        if let Some(state) = snapshot.state(&tenant) {
            for cat in state.config.catalogs.values().filter(|c| c.open_when_unconfigured) {
                tracing::info!(
                    tenant = %tenant,
                    application = %cat.name,
                    "application is open when unconfigured: persons with no role or legacy annex role for it hold every privilege"
                );
            }
        }
    }
}

/// How long cut connections get to close before a listener stops without them.
const CUT_WAIT: Duration = Duration::from_secs(2);

/// The connections one listener accepted and has not closed, so that a
/// shutdown can cut those still open when its grace period ends.
///
/// tonic serves each connection on a task of its own and waits for all of
/// them at shutdown, with no time limit; dropping its future leaves them
/// running. So every accepted connection is wrapped ([`Tracked`]): once cut,
/// its reads and writes fail, which ends the connection's task (and closes
/// its socket) whatever its streams were waiting for.
#[derive(Debug, Default)]
struct Connections {
    inner: Arc<ConnectionSet>,
}

#[derive(Debug, Default)]
struct ConnectionSet {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<CutSwitch>>>,
    /// Set by [`Connections::cut`]: connections accepted later start cut.
    cut: AtomicBool,
}

impl ConnectionSet {
    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<CutSwitch>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Connections {
    /// `incoming`, each connection wrapped and registered.
    fn track<I, IO, IE>(&self, incoming: I) -> impl Stream<Item = Result<Tracked<IO>, IE>> + use<I, IO, IE>
    where
        I: Stream<Item = Result<IO, IE>>,
    {
        use tokio_stream::StreamExt as _;
        let set = Arc::clone(&self.inner);
        incoming.map(move |conn| conn.map(|io| Tracked::new(io, &set)))
    }

    /// Connections open now.
    fn open(&self) -> usize {
        self.inner.open().len()
    }

    /// Cuts every open connection (and any accepted later); how many were open.
    fn cut(&self) -> u64 {
        self.inner.cut.store(true, Ordering::SeqCst);
        let switches: Vec<Arc<CutSwitch>> = self.inner.open().values().cloned().collect();
        for s in &switches {
            s.cut();
        }
        switches.len() as u64
    }
}

/// One connection's switch: once cut, its reads and writes fail. The tasks
/// parked on its reads or writes are woken so that they see it.
#[derive(Debug, Default)]
struct CutSwitch {
    cut: AtomicBool,
    /// The wakers of the last pending read and the last pending write.
    parked: Mutex<[Option<Waker>; 2]>,
}

const READ: usize = 0;
const WRITE: usize = 1;

impl CutSwitch {
    fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        let parked = std::mem::take(&mut *self.parked.lock().unwrap_or_else(|e| e.into_inner()));
        for waker in parked.into_iter().flatten() {
            waker.wake();
        }
    }

    /// Remembers who waits on `direction`; whether the connection was cut
    /// meanwhile (then nobody would wake it: fail now).
    fn park(&self, direction: usize, cx: &Context<'_>) -> bool {
        {
            let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(slot) = parked.get_mut(direction) {
                if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *slot = Some(cx.waker().clone());
                }
            }
        }
        self.is_cut()
    }
}

/// An accepted connection that a shutdown can cut (see [`Connections`]).
#[derive(Debug)]
struct Tracked<IO> {
    io: IO,
    id: u64,
    switch: Arc<CutSwitch>,
    set: Arc<ConnectionSet>,
}

impl<IO> Tracked<IO> {
    fn new(io: IO, set: &Arc<ConnectionSet>) -> Self {
        let id = set.next.fetch_add(1, Ordering::Relaxed);
        let switch = Arc::new(CutSwitch::default());
        set.open().insert(id, Arc::clone(&switch));
        if set.cut.load(Ordering::SeqCst) {
            switch.cut();
        }
        Tracked { io, id, switch, set: Arc::clone(set) }
    }

    fn cut_error() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "the shutdown grace period is over: connection cut")
    }

    /// `poll` on the connection, failing once it is cut.
    fn gate<T>(
        &mut self,
        direction: usize,
        cx: &mut Context<'_>,
        poll: impl FnOnce(Pin<&mut IO>, &mut Context<'_>) -> Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>>
    where
        IO: Unpin,
    {
        if self.switch.is_cut() {
            return Poll::Ready(Err(Self::cut_error()));
        }
        match poll(Pin::new(&mut self.io), cx) {
            Poll::Pending if self.switch.park(direction, cx) => Poll::Ready(Err(Self::cut_error())),
            other => other,
        }
    }
}

impl<IO> Drop for Tracked<IO> {
    fn drop(&mut self) {
        self.set.open().remove(&self.id);
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Tracked<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        self.get_mut().gate(READ, cx, |io, cx| io.poll_read(cx, buf))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Tracked<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.get_mut().gate(WRITE, cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.get_mut().gate(WRITE, cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.get_mut().gate(WRITE, cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<IO: Connected> Connected for Tracked<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        // The inner connection's own: `Request::peer_certs` and
        // `remote_addr` look for exactly those types.
        self.io.connect_info()
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("interrupted; shutting down"),
        () = terminate => tracing::info!("terminated; shutting down"),
    }
}

/// Accepted TCP connections with Nagle's algorithm off. tonic cannot set it
/// on connections it is handed: left on, a response written in several
/// segments waits for the client's delayed ACK (up to 40 ms a page of a
/// large `ListVisible` on Linux).
pub fn nodelay(listener: tokio::net::TcpListener) -> impl Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt as _;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
        if let Ok(c) = &conn {
            if let Err(e) = c.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        }
        conn
    })
}

/// `authzd serve`: starts the server, listens on TCP (and a Unix socket if
/// configured) until a signal, then shuts down gracefully.
pub async fn serve(config: ServerConfig) -> anyhow::Result<()> {
    tracing::info!(config = ?config, "starting authzd {}", env!("CARGO_PKG_VERSION"));
    for warning in config.security_warnings() {
        tracing::warn!("{warning}");
    }
    let server = Server::start(config.clone()).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on `{}`", config.listen))?;
    let (stop, stopped) = watch::channel(false);
    let wait = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let transport = match &config.tls {
        None => "plaintext",
        Some(t) if t.client_ca_pem.is_some() => "TLS, client certificates required",
        Some(_) => "TLS",
    };
    tracing::info!(address = %config.listen, transport, "listening (gRPC, gRPC-Web, HTTP/JSON and Server-Sent Events, health, reflection)");
    // The metrics port outlives the gRPC listeners' drain: `/readyz` answers
    // 503 from the signal on, `/healthz` 200 until the process exits.
    let metrics_port = match (config.metrics_listen, server.metrics()) {
        (Some(addr), Some(m)) => {
            let listener = crate::metrics::bind(addr)
                .await
                .with_context(|| format!("cannot listen on `{addr}` (--metrics-listen)"))?;
            tracing::info!(address = %addr, "serving metrics and probes over HTTP (/metrics, /healthz, /readyz)");
            Some(tokio::spawn(crate::metrics::serve_http(listener, Arc::clone(m), std::future::pending())))
        }
        _ => None,
    };
    let tcp = server.serve_with_incoming_shutdown(nodelay(listener), wait(stopped.clone()));
    let unix = async {
        #[cfg(unix)]
        if let Some(path) = &config.unix_socket {
            if path.exists() {
                std::fs::remove_file(path)
                    .with_context(|| format!("cannot remove the stale socket `{}`", path.display()))?;
            }
            let listener = tokio::net::UnixListener::bind(path)
                .with_context(|| format!("cannot listen on the unix socket `{}`", path.display()))?;
            let accepted = tokio_stream::wrappers::UnixListenerStream::new(listener);
            // Clients that send the socket path as `:authority` are served
            // (see `crate::authority`); AUTHZD_UNIX_AUTHORITY_FIX=off measures without.
            let result = if crate::authority::enabled_by_env() {
                use tokio_stream::StreamExt as _;
                tracing::info!(socket = %path.display(), "listening on unix socket");
                let fixed = accepted.map(|c| c.map(crate::authority::AuthorityFix::new));
                server.serve_local_with_incoming_shutdown(fixed, wait(stopped.clone())).await
            } else {
                tracing::info!(socket = %path.display(), "listening on unix socket (AUTHZD_UNIX_AUTHORITY_FIX=off: clients must send a valid :authority)");
                server.serve_local_with_incoming_shutdown(accepted, wait(stopped.clone())).await
            };
            let _ = std::fs::remove_file(path);
            return result;
        }
        #[cfg(not(unix))]
        if config.unix_socket.is_some() {
            anyhow::bail!("--unix-socket is only available on Unix");
        }
        Ok(())
    };
    let signal = async {
        shutdown_signal().await;
        server.set_not_serving().await;
        stop.send_replace(true);
    };
    let result = {
        let serving = async { tokio::try_join!(tcp, unix) };
        tokio::pin!(serving);
        tokio::select! {
            r = &mut serving => r.map(|_| ()),
            () = signal => serving.await.map(|_| ()),
        }
    };
    if let Some(port) = metrics_port {
        port.abort();
    }
    server.close().await;
    tracing::info!("stopped");
    result
}
