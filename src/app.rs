//! Wiring: the command dispatch, logging, the server's start-up, its
//! listeners and its graceful shutdown.
//!
//! [`Server::start`] opens the store and loads the snapshot (and the demo
//! tenant with `--demo`) before anything listens, so a server that accepts
//! connections answers from a loaded snapshot and reports `SERVING` on the
//! standard health service. [`Server::serve_with_incoming_shutdown`] serves
//! one listener; `authzd serve` runs a TCP listener and optionally a Unix
//! socket, both until SIGINT or SIGTERM, then reports `NOT_SERVING`, lets
//! in-flight calls finish, and closes the store. Tests start a `Server` on
//! `127.0.0.1:0` the same way.

use crate::cli::{Cli, Command};
use crate::config::{LogFormat, ServerConfig};
use crate::engine::Reason;
use crate::model::TenantFile;
use crate::proto::authzd::v1::admin_service_server::AdminServiceServer;
use crate::proto::authzd::v1::decision_service_server::DecisionServiceServer;
use crate::service::replica::{Batch, WriteRequest};
use crate::service::{Admin, AdminAuth, Decisions, Replica};
use crate::store::AnyStore;
use anyhow::Context as _;
use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::Stream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::Connected;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

/// The demo tenant (`--demo`), compiled in so the binary needs no data directory.
pub const DEMO_TENANT_YAML: &str = include_str!("../examples/acme.yaml");
/// The demo tenant's id.
pub const DEMO_TENANT_ID: &str = "acme";

/// Runs the parsed command line; the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    if let Command::Validate(args) = &cli.command {
        return crate::cli::validate(args);
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
            init_logging(config.log_format);
            match runtime.block_on(serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "server failed");
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        other => runtime.block_on(crate::cli::run_client(other)),
    }
}

/// Installs the global log subscriber: `RUST_LOG` filter (default `info`),
/// text or JSON lines on standard error. A second call is a no-op.
pub fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// A loaded replica with its services, ready to serve listeners.
pub struct Server {
    replica: Arc<Replica>,
    config: ServerConfig,
    health: HealthReporter,
    stop: watch::Sender<bool>,
    tailer: Option<JoinHandle<()>>,
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
        let store = AnyStore::open(&config.store_url)
            .await
            .with_context(|| format!("cannot open the store `{}`", crate::store::redact_url(&config.store_url)))?;
        let replica = Arc::new(Replica::open(store, config.limits.clone()).await.context("cannot load the snapshot")?);
        if config.demo {
            load_demo(&replica).await?;
        }
        log_open_applications(&replica);

        let health = HealthReporter::new();
        health.set_service_status("", ServingStatus::Serving).await;
        health.set_serving::<DecisionServiceServer<Decisions>>().await;
        health.set_serving::<AdminServiceServer<Admin>>().await;

        let (stop, stopped) = watch::channel(false);
        let tailer = (!config.tail_interval.is_zero())
            .then(|| tokio::spawn(Arc::clone(&replica).tail(config.tail_interval, stopped)));
        Ok(Server { replica, config, health, stop, tailer })
    }

    /// The replica behind the services.
    pub fn replica(&self) -> &Arc<Replica> {
        &self.replica
    }

    /// Serves gRPC (and gRPC-Web over HTTP/1.1) on `incoming` until `shutdown`
    /// completes, then lets in-flight calls finish.
    pub async fn serve_with_incoming_shutdown<I, IO, IE, F>(&self, incoming: I, shutdown: F) -> anyhow::Result<()>
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
        let decisions =
            DecisionServiceServer::new(Decisions::new(Arc::clone(&self.replica))).max_decoding_message_size(limit);
        let admin = InterceptedService::new(
            AdminServiceServer::new(Admin::new(Arc::clone(&self.replica), self.config.locks))
                .max_decoding_message_size(limit),
            AdminAuth::new(self.config.admin_token.as_deref()),
        );
        let health = HealthServer::new(HealthService::from_health_reporter(self.health.clone()));
        tonic::transport::Server::builder()
            .accept_http1(true)
            .layer(tonic_web::GrpcWebLayer::new())
            .add_service(health)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(decisions)
            .add_service(admin)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
            .context("the gRPC server failed")
    }

    /// Reports `NOT_SERVING` (load balancers stop sending new calls).
    pub async fn set_not_serving(&self) {
        self.health.set_service_status("", ServingStatus::NotServing).await;
        self.health.set_not_serving::<DecisionServiceServer<Decisions>>().await;
        self.health.set_not_serving::<AdminServiceServer<Admin>>().await;
    }

    /// Stops tailing and closes the store. Call after every listener stopped.
    pub async fn close(mut self) {
        self.set_not_serving().await;
        self.stop.send_replace(true);
        if let Some(t) = self.tailer.take() {
            let _ = t.await;
        }
        self.replica.store().close().await;
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

/// `authzd serve`: starts the server, listens on TCP (and a Unix socket if
/// configured) until a signal, then shuts down gracefully.
pub async fn serve(config: ServerConfig) -> anyhow::Result<()> {
    tracing::info!(config = ?config, "starting authzd {}", env!("CARGO_PKG_VERSION"));
    let server = Server::start(config.clone()).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on `{}`", config.listen))?;
    let (stop, stopped) = watch::channel(false);
    let wait = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    tracing::info!(address = %config.listen, "listening (gRPC, gRPC-Web, health, reflection)");
    let tcp = server.serve_with_incoming_shutdown(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        wait(stopped.clone()),
    );
    let unix = async {
        #[cfg(unix)]
        if let Some(path) = &config.unix_socket {
            if path.exists() {
                std::fs::remove_file(path)
                    .with_context(|| format!("cannot remove the stale socket `{}`", path.display()))?;
            }
            let listener = tokio::net::UnixListener::bind(path)
                .with_context(|| format!("cannot listen on the unix socket `{}`", path.display()))?;
            tracing::info!(socket = %path.display(), "listening on unix socket");
            let result = server
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::UnixListenerStream::new(listener),
                    wait(stopped.clone()),
                )
                .await;
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
    server.close().await;
    tracing::info!("stopped");
    result
}
