//! Following an upstream authzd: the part every follower shares.
//!
//! A follower holds no database connection. It loads each tenant from the
//! upstream's `Export` (the tenant file at the revision of its last change),
//! then follows the upstream's raw `Watch` from the revision of that load:
//! every committed batch, in revision order. Two followers are built on this
//! module:
//! - the server's (`authzd serve --follow URL`, `store::UpstreamStore`),
//!   which feeds the replica like any store and serves every API;
//! - the embedded one ([`Follower`]), a library type that keeps the tenants'
//!   views current inside the application's own process, so checks are a
//!   function call (feature `follower`, no sqlx and no server).
//!
//! Both take the same rules from here:
//! - [`Upstream`]: how the upstream is reached (URL, TLS, mTLS, token) and
//!   how every tenant is loaded ([`Upstream::load_all`]);
//! - [`follow`]: the stream task. It opens the raw `Watch` where its
//!   [`Feed`] says to resume, hands every event to it, resumes from the last
//!   revision received after a disconnect or an ended stream (backoff from
//!   100 ms doubling to 5 s), and waits while the feed needs a load (at
//!   start, and after the upstream answered `RevisionTooOld`: the resume
//!   point was compacted away).

mod embedded;

pub use embedded::{Checked, Follower, FollowerError, TenantReader};

use crate::model::{Mutation, Revision, TenantConfig, TenantFile, TenantId};
use crate::proto::authzd::v1 as pb;
use crate::proto::authzd::v1::admin_service_client::AdminServiceClient;
use crate::proto::authzd::v1::watch_service_client::WatchServiceClient;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tonic::Request;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// How a follower reaches its upstream.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// `http://host:port` or `https://host:port` of the upstream authzd.
    pub url: String,
    /// Bearer token for the upstream's admin API (its `Export` and raw
    /// `Watch` need the admin credential when it has one).
    pub token: Option<String>,
    /// PEM of the CA that signed the upstream's certificate (`https`).
    pub ca_pem: Option<String>,
    /// PEM of this follower's client certificate and key (mTLS).
    pub identity_pem: Option<(String, String)>,
    /// Batches kept for the follower's own raw subscribers to resume from
    /// (the server's follower; the embedded one keeps none).
    pub retain: usize,
    /// Largest message accepted from the upstream (an exported tenant).
    pub max_message_bytes: usize,
}

impl UpstreamSettings {
    /// Settings for `url` with no credentials.
    pub fn new(url: impl Into<String>) -> Self {
        UpstreamSettings {
            url: url.into(),
            token: None,
            ca_pem: None,
            identity_pem: None,
            retain: 10_000,
            max_message_bytes: 64 * 1024 * 1024,
        }
    }
}

/// A connection to the upstream (lazy: nothing is dialed until the first
/// call) with the follower's credential.
#[derive(Debug, Clone)]
pub struct Upstream {
    url: String,
    channel: Channel,
    token: Option<MetadataValue<Ascii>>,
    max_message_bytes: usize,
}

/// A tenant as loaded from the upstream: its id, the revision of its last
/// change, and its configuration.
pub type LoadedTenant = (TenantId, Revision, TenantConfig);

/// Why a load from the upstream failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    /// The upstream could not be reached or refused a call.
    #[error("upstream `{url}`: {message}")]
    Unavailable {
        /// The upstream's URL.
        url: String,
        /// The call's status, in words.
        message: String,
    },
    /// The upstream sent a tenant this build cannot read.
    #[error("tenant `{tenant}` exported by `{url}` at revision {revision}: {message}")]
    Unreadable {
        /// The upstream's URL.
        url: String,
        /// The tenant.
        tenant: String,
        /// The revision it was exported at.
        revision: Revision,
        /// What is wrong with it.
        message: String,
    },
}

impl Upstream {
    /// Checks the settings and prepares the (lazy) connection: a URL that
    /// does not parse, unreadable PEM or a token that cannot be a header
    /// value are errors naming the upstream.
    pub fn connect(settings: &UpstreamSettings) -> Result<Upstream, String> {
        let bad = |m: String| format!("upstream `{}`: {m}", settings.url);
        let mut endpoint = Endpoint::from_shared(settings.url.clone())
            .map_err(|e| bad(format!("not a URL: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        if settings.url.starts_with("https://") || settings.ca_pem.is_some() || settings.identity_pem.is_some() {
            let mut tls = ClientTlsConfig::new();
            if let Some(ca) = &settings.ca_pem {
                tls = tls.ca_certificate(Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &settings.identity_pem {
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            endpoint = endpoint.tls_config(tls).map_err(|e| bad(format!("TLS: {e}")))?;
        }
        let token = match &settings.token {
            Some(t) => Some(
                format!("Bearer {t}")
                    .parse::<MetadataValue<Ascii>>()
                    .map_err(|_| bad("the token is not valid in a header".into()))?,
            ),
            None => None,
        };
        Ok(Upstream {
            url: settings.url.clone(),
            channel: endpoint.connect_lazy(),
            token,
            max_message_bytes: settings.max_message_bytes,
        })
    }

    /// The upstream's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The follower's own credential, as a header value.
    pub fn token(&self) -> Option<&MetadataValue<Ascii>> {
        self.token.as_ref()
    }

    /// `message` with the follower's credential.
    pub fn authorized<T>(&self, message: T) -> Request<T> {
        let mut r = Request::new(message);
        if let Some(t) = &self.token {
            r.metadata_mut().insert("authorization", t.clone());
        }
        r
    }

    /// An admin client of the upstream.
    pub fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel.clone())
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes)
    }

    /// Exports every tenant of the upstream: the revision of the tenant
    /// list (follow the raw changes after it), and each tenant at the
    /// revision of its last change. Tenant files are parsed on the blocking
    /// pool (a large tenant takes a while).
    pub async fn load_all(&self) -> Result<(Revision, Vec<LoadedTenant>), LoadError> {
        let url = &self.url;
        let unavailable = |s: tonic::Status| LoadError::Unavailable {
            url: url.clone(),
            message: format!("{}: {}", s.code(), s.message()),
        };
        let mut admin = self.admin();
        let list = admin
            .list_tenants(self.authorized(pb::ListTenantsRequest { at_least_revision: 0 }))
            .await
            .map_err(unavailable)?
            .into_inner();
        let from = list.revision;
        let mut loaded = Vec::with_capacity(list.tenants.len());
        for t in list.tenants {
            let export = admin
                .export(self.authorized(pb::ExportRequest { tenant: t.id.clone(), at_least_revision: from }))
                .await
                .map_err(unavailable)?
                .into_inner();
            let revision = export.revision;
            let unreadable =
                |message: String| LoadError::Unreadable { url: url.clone(), tenant: t.id.clone(), revision, message };
            let config =
                tokio::task::spawn_blocking(move || TenantFile::from_yaml(&export.yaml).and_then(|f| f.to_config()))
                    .await
                    .map_err(|e| unreadable(format!("the tenant parser failed: {e}")))?
                    .map_err(|e| unreadable(e.to_string()))?;
            loaded.push((TenantId(t.id), revision, config));
        }
        Ok((from, loaded))
    }
}

/// How far a follower is behind its upstream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FollowerLag {
    /// The upstream's newest revision (as its checkpoints and batches say)
    /// minus the last one the follower holds.
    pub revisions: u64,
    /// How long ago the last batch the follower holds was committed
    /// upstream, when the follower is behind (0 when it is caught up).
    pub millis: u64,
}

impl FollowerLag {
    /// The lag of a follower at `head`, whose upstream is at `upstream_head`,
    /// and whose last batch was committed upstream at `last_committed_at`,
    /// as of `now`.
    pub fn of(
        upstream_head: Revision,
        head: Revision,
        last_committed_at: Option<SystemTime>,
        now: SystemTime,
    ) -> FollowerLag {
        let revisions = upstream_head.saturating_sub(head);
        let millis = match (revisions, last_committed_at) {
            (0, _) | (_, None) => 0,
            (_, Some(at)) => now.duration_since(at).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        };
        FollowerLag { revisions, millis }
    }
}

/// A raw change of the upstream as the model's batch.
#[derive(Debug, Clone)]
pub struct RawBatch {
    /// Revision of the batch.
    pub revision: Revision,
    /// Tenant it changed.
    pub tenant: TenantId,
    /// Its mutations, in order.
    pub mutations: Vec<Mutation>,
    /// Person id of the write's actor, when the write named one.
    pub actor: Option<String>,
    /// When the upstream committed it.
    pub committed_at: SystemTime,
}

impl RawBatch {
    /// Reads a raw change; an error names the mutation this build cannot read.
    pub fn from_pb(c: pb::RawChange) -> Result<RawBatch, String> {
        let mutations = crate::proto::convert::mutations(c.mutations).map_err(|e| e.to_string())?;
        let committed_at = c.committed_at.and_then(|t| SystemTime::try_from(t).ok()).unwrap_or_else(SystemTime::now);
        Ok(RawBatch { revision: c.revision, tenant: TenantId(c.tenant), mutations, actor: c.actor, committed_at })
    }
}

/// What a stream of the upstream's raw changes delivers to.
pub trait Feed: Send + Sync + 'static {
    /// The upstream this feed follows.
    fn upstream(&self) -> &Upstream;
    /// Where the next stream starts: the feed's generation (a load starts a
    /// new one) and the last revision it holds; `None` while a load is
    /// pending (the stream waits for `restart`).
    fn resume_point(&self) -> Option<(u64, Revision)>;
    /// Takes one event of the stream of `generation`; false ends that stream
    /// (a newer generation, a load needed, the upstream asked to resume).
    fn receive(self: &Arc<Self>, generation: u64, event: pb::watch_event::Event) -> impl Future<Output = bool> + Send;
    /// A stream ended (readers may want to look at what it brought).
    fn ended(&self);
}

pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(100);
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The stream task: follows the upstream's raw changes from the feed's
/// resume point, reconnecting with backoff, until `closed` is true or the
/// feed is dropped. `restart` is bumped when the stream must start over
/// (after a load).
pub async fn follow<F: Feed>(feed: Weak<F>, mut restart: watch::Receiver<u64>, mut closed: watch::Receiver<bool>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let Some(me) = feed.upgrade() else { return };
        if *closed.borrow() {
            return;
        }
        restart.mark_unchanged();
        let Some((generation, from)) = me.resume_point() else {
            // Waiting for a load.
            drop(me);
            tokio::select! {
                _ = restart.changed() => {}
                _ = closed.wait_for(|c| *c) => return,
            }
            continue;
        };
        let upstream = me.upstream().clone();
        let mut client =
            WatchServiceClient::new(upstream.channel.clone()).max_decoding_message_size(upstream.max_message_bytes);
        let request = upstream.authorized(pb::WatchRequest {
            subscription: Some(pb::watch_request::Subscription::Raw(pb::RawSubscription {
                tenant: None,
                types: Vec::new(),
                // 0 (an upstream that had no batch at load): from its beginning.
                from_revision: from,
                from_now: false,
            })),
            at_least_revision: 0,
        });
        drop(me);
        let opened = tokio::select! {
            r = client.watch(request) => r,
            _ = closed.wait_for(|c| *c) => return,
        };
        let mut stream = match opened {
            Ok(s) => s.into_inner(),
            Err(s) => {
                tracing::warn!(upstream = %upstream.url, code = ?s.code(), error = s.message(), retry_in_ms = backoff.as_millis() as u64, "cannot follow the upstream");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = closed.wait_for(|c| *c) => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        tracing::info!(upstream = %upstream.url, from_revision = from, "following the upstream");
        loop {
            let message = tokio::select! {
                m = stream.message() => m,
                _ = restart.changed() => break,
                _ = closed.wait_for(|c| *c) => return,
            };
            let Some(me) = feed.upgrade() else { return };
            match message {
                Ok(Some(pb::WatchEvent { event: Some(e) })) => {
                    backoff = FIRST_BACKOFF;
                    if !me.receive(generation, e).await {
                        break;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => {
                    tracing::info!(upstream = %upstream.url, "the upstream ended the change stream; resuming");
                    break;
                }
                Err(s) => {
                    tracing::warn!(upstream = %upstream.url, code = ?s.code(), error = s.message(), "the upstream change stream failed; resuming");
                    drop(me);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = closed.wait_for(|c| *c) => return,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    break;
                }
            }
        }
        if let Some(me) = feed.upgrade() {
            me.ended();
        }
    }
}
