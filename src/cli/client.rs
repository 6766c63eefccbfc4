//! The connection of the client commands: server URL, TLS, bearer tokens, the gRPC clients.

use super::CliError;
use super::render::error_chain;
use crate::console::unix_socket_path;
use crate::proto::authzd::v1::admin_service_client::AdminServiceClient;
use crate::proto::authzd::v1::decision_service_client::DecisionServiceClient;
use crate::proto::authzd::v1::watch_service_client::WatchServiceClient;
use clap::Args;
use std::path::PathBuf;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

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
pub(super) struct Conn {
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

impl Conn {
    pub(super) async fn open(c: &ClientArgs) -> Result<Conn, CliError> {
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

    pub(super) fn decisions(&self) -> DecisionServiceClient<Intercepted> {
        DecisionServiceClient::with_interceptor(self.channel.clone(), self.decision_token.clone())
            .max_decoding_message_size(CLIENT_MAX_MESSAGE_BYTES)
    }

    /// The watch client: raw subscriptions (the whole configuration) need the
    /// admin credential, so they send `--token` when given; computed ones
    /// (decision-grade data) the decision token.
    pub(super) fn watch(&self, raw: bool) -> WatchServiceClient<Intercepted> {
        let token = if raw && self.token.0.is_some() { &self.token } else { &self.decision_token };
        WatchServiceClient::with_interceptor(self.channel.clone(), token.clone())
            .max_decoding_message_size(CLIENT_MAX_MESSAGE_BYTES)
    }

    pub(super) fn admin(&self) -> AdminServiceClient<Intercepted> {
        AdminServiceClient::with_interceptor(self.channel.clone(), self.token.clone())
            .max_decoding_message_size(CLIENT_MAX_MESSAGE_BYTES)
    }
}

/// Whether a call failed for want of a connection rather than by the
/// server's answer (a TLS refusal of the client certificate looks so).
pub(super) fn connection_failed(s: &tonic::Status) -> bool {
    matches!(s.code(), tonic::Code::Cancelled | tonic::Code::Unavailable | tonic::Code::Unknown)
}

/// What the client's TLS settings meet at the server, in words, if anything
/// is wrong ([`crate::tls::probe`]).
pub(super) async fn tls_problem(c: &ClientArgs) -> Option<String> {
    let read = |p: &Option<PathBuf>| p.as_ref().and_then(|p| std::fs::read(p).ok());
    let ca = read(&c.ca)?;
    let identity = match (read(&c.cert), read(&c.key)) {
        (Some(cert), Some(key)) => Some((cert, key)),
        _ => None,
    };
    let identity = identity.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice()));
    crate::tls::probe(&c.server, c.tls_server_name.as_deref(), &ca, identity).await
}
