//! An in-process server on `127.0.0.1:0`, started the way the end-to-end
//! tests and the replication benchmark need it: the binary's own start-up
//! (`Server::start`), TCP_NODELAY on accepted connections as in production,
//! and a stop that shuts down gracefully and closes the store.

use authzd::app::Server;
use authzd::config::ServerConfig;
use authzd::proto::authzd::v1::admin_service_client::AdminServiceClient;
use authzd::proto::authzd::v1::decision_service_client::DecisionServiceClient;
use authzd::proto::authzd::v1::watch_service_client::WatchServiceClient;
use authzd::replica::Replica;
use authzd::service::Fanout;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

/// Longest graceful shutdown [`Serving::stop`] waits for.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running server.
pub struct Serving {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its replica (snapshot, store, observers).
    pub replica: Arc<Replica>,
    /// Its watch fan-out.
    pub watch: Arc<Fanout>,
    /// Sending (or dropping) this starts the graceful shutdown.
    pub stop: oneshot::Sender<()>,
    /// Ends with the server once it stopped serving.
    pub handle: JoinHandle<Server>,
}

/// A server on the SQLite file `db` with the demo tenant loaded.
pub fn demo_config(db: &std::path::Path) -> ServerConfig {
    let mut c = ServerConfig::new(format!("sqlite://{}", db.display()));
    c.demo = true;
    c
}

/// Starts a server with `config` on a fresh local port.
pub async fn serve(config: ServerConfig) -> Serving {
    serve_on(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
}

/// Starts a server with `config` on `addr` (a port of a server that stopped,
/// to restart it where its clients expect it).
pub async fn serve_on(config: ServerConfig, addr: SocketAddr) -> Serving {
    let server = Server::start(config).await.expect("server starts");
    let (replica, watch) = (Arc::clone(server.replica()), Arc::clone(server.watch()));
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        server
            .serve_with_incoming_shutdown(authzd::app::nodelay(listener), async {
                let _ = stopped.await;
            })
            .await
            .expect("server runs");
        server
    });
    Serving { addr, replica, watch, stop, handle }
}

impl Serving {
    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// An endpoint to the server (plain HTTP/2).
    pub fn endpoint(&self) -> Endpoint {
        Channel::from_shared(self.url()).unwrap()
    }

    /// A connected plain channel.
    pub async fn channel(&self) -> Channel {
        self.endpoint().connect().await.unwrap()
    }

    /// A connected plain channel whose HTTP/2 stream and connection windows
    /// are `bytes`: a client that stops reading stops the server's sends at once.
    pub async fn channel_with_window(&self, bytes: u32) -> Channel {
        self.endpoint().initial_stream_window_size(bytes).initial_connection_window_size(bytes).connect().await.unwrap()
    }

    /// An admin client on a new connection.
    pub async fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel().await)
    }

    /// A decision client on a new connection.
    pub async fn decisions(&self) -> DecisionServiceClient<Channel> {
        DecisionServiceClient::new(self.channel().await)
    }

    /// A watch client on a new connection.
    pub async fn watcher(&self) -> WatchServiceClient<Channel> {
        WatchServiceClient::new(self.channel().await)
    }

    /// Stops serving (ending the change streams) and closes the store, as
    /// SIGTERM does; fails the test if the shutdown takes over [`STOP_TIMEOUT`].
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let server = tokio::time::timeout(STOP_TIMEOUT, self.handle)
            .await
            .expect("graceful shutdown completes (streams end)")
            .unwrap();
        server.close().await;
    }
}
