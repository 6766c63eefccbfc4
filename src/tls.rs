//! TLS on the TCP listener, with handshakes the server can explain.
//!
//! The server completes each TLS handshake itself ([`accept`]) instead of
//! leaving it to the gRPC stack, which drops a failed handshake without a
//! word. A refused handshake is logged at `warn` with the peer's address and
//! the reason in words ([`explain`]): a client without a certificate, one
//! signed by another CA, an X.509 v1 certificate, a plaintext client on the
//! TLS port. The CLI uses the same words for what its own handshake meets,
//! seen from the other side ([`Side::Client`]).
//!
//! The settings are tonic's own: the server's certificate chain and key, and
//! when a client CA is configured, client certificates required and verified
//! against it (never optional); ALPN offers HTTP/2 and HTTP/1.1 (gRPC-Web
//! and JSON over HTTP/1.1 are served on the same listener).

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, AlertDescription, CertificateError, RootCertStore};
use tokio_stream::{Stream, StreamExt as _};

/// TLS on the TCP listener: the server's certificate and key, and the CA
/// client certificates must be signed by (mTLS), all PEM.
#[derive(Clone)]
pub struct TlsConfig {
    /// The server's certificate chain.
    pub cert_pem: Vec<u8>,
    /// The server's private key.
    pub key_pem: Vec<u8>,
    /// When set, every client must present a certificate this CA signed.
    pub client_ca_pem: Option<Vec<u8>>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"***")
            .field("client_ca", &self.client_ca_pem.as_ref().map(|c| format!("{} bytes", c.len())))
            .finish()
    }
}

/// Longest a TLS handshake may take before the connection is dropped.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl TlsConfig {
    /// Checks that the certificate, key and CA are usable (they parse, and the
    /// key is the certificate's): the listener's own settings are built.
    pub fn check(&self) -> Result<(), String> {
        server_config(self).map(|_| ())
    }
}

/// The rustls settings of the listener, or why the certificate, key or CA
/// cannot be used (in words, naming the setting).
pub fn server_config(c: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(ring::default_provider());
    let certs = CertificateDer::pem_slice_iter(&c.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--tls-cert: not a PEM certificate chain ({e})"))?;
    if certs.is_empty() {
        return Err("--tls-cert: no certificate in the file".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&c.key_pem).map_err(|e| format!("--tls-key: no PEM private key ({e})"))?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match &c.client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("--tls-client-ca: not a PEM certificate ({e})"))?;
                roots.add(cert).map_err(|e| format!("--tls-client-ca: not a usable CA certificate ({e})"))?;
            }
            if roots.is_empty() {
                return Err("--tls-client-ca: no certificate in the file".into());
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("--tls-client-ca: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("--tls-cert/--tls-key: {e} (is the key the certificate's?)"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The address of a connection's peer, for logs.
pub trait PeerAddr {
    /// `ip:port`, or what stands for it (`unix socket`).
    fn peer(&self) -> String;
}

impl PeerAddr for tokio::net::TcpStream {
    fn peer(&self) -> String {
        self.peer_addr().map_or_else(|_| "unknown".into(), |a| a.to_string())
    }
}

#[cfg(unix)]
impl PeerAddr for tokio::net::UnixStream {
    fn peer(&self) -> String {
        "unix socket".into()
    }
}

/// Connections in flight at most: handshakes beyond wait for one to end.
const MAX_HANDSHAKES: usize = 256;

/// The TLS connections of `incoming`: each handshake runs on its own task,
/// bounded by [`TLS_HANDSHAKE_TIMEOUT`]; a refused one is logged with the
/// peer's address and the reason, and its connection closed. Errors of
/// `incoming` itself pass through. The stream stops taking connections (and
/// lets go of the listener) once it is dropped.
pub fn accept<I, IO, IE>(
    incoming: I,
    config: Arc<rustls::ServerConfig>,
) -> impl Stream<Item = Result<tokio_rustls::server::TlsStream<IO>, IE>>
where
    I: Stream<Item = Result<IO, IE>> + Send + 'static,
    IO: AsyncRead + AsyncWrite + PeerAddr + Unpin + Send + 'static,
    IE: Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(MAX_HANDSHAKES);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        let mut incoming = std::pin::pin!(incoming);
        loop {
            let next = tokio::select! {
                next = incoming.next() => next,
                () = tx.closed() => return,
            };
            let Some(conn) = next else { return };
            let io = match conn {
                Ok(io) => io,
                Err(e) => {
                    if tx.send(Err(e)).await.is_err() {
                        return;
                    }
                    continue;
                }
            };
            let Ok(permit) = Arc::clone(&limit).acquire_owned().await else { return };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let peer = io.peer();
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(peer = %peer, reason = %explain_io(&e, Side::Server), "refused a TLS handshake")
                    }
                    Err(_) => tracing::warn!(
                        peer = %peer,
                        reason = %format!("the handshake did not finish within {} s", TLS_HANDSHAKE_TIMEOUT.as_secs()),
                        "refused a TLS handshake"
                    ),
                }
                drop(permit);
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// What a client's TLS settings meet at `server` (`https://host[:port]`), in
/// words, when something is wrong; `None` when the handshake and a first read
/// succeed (or the server cannot be reached at all: that is not a TLS
/// problem). TLS 1.3 reports a refused client certificate only after the
/// client finished its handshake, and a gRPC channel then just says the call
/// was cancelled: this probe reads once more to hear the server's alert.
pub async fn probe(
    server: &str,
    server_name: Option<&str>,
    ca_pem: &[u8],
    identity: Option<(&[u8], &[u8])>,
) -> Option<String> {
    use tokio::io::AsyncReadExt as _;
    const WAIT: std::time::Duration = std::time::Duration::from_secs(5);
    let authority = server.strip_prefix("https://")?.split('/').next()?;
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => authority,
    };
    let address = if authority.len() == host.len() { format!("{authority}:443") } else { authority.to_owned() };
    let name = server_name.unwrap_or(host).trim_start_matches('[').trim_end_matches(']').to_owned();
    let name = rustls::pki_types::ServerName::try_from(name).ok()?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.ok()?).ok()?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs = CertificateDer::pem_slice_iter(cert).collect::<Result<Vec<_>, _>>().ok()?;
            builder.with_client_auth_cert(certs, PrivateKeyDer::from_pem_slice(key).ok()?).ok()?
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(&address)).await.ok()?.ok()?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut tls = match tokio::time::timeout(WAIT, connector.connect(name, tcp)).await.ok()? {
        Ok(tls) => tls,
        Err(e) => return Some(explain_io(&e, Side::Client)),
    };
    match tokio::time::timeout(WAIT, tls.read(&mut [0u8; 64])).await {
        Ok(Err(e)) => e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()).map(|t| explain(t, Side::Client)),
        _ => None,
    }
}

/// Which end of the handshake is explaining: the server (its peer is a
/// client) or a client such as the CLI (its peer is the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The listener: the peer is a client.
    Server,
    /// A client: the peer is the server.
    Client,
}

/// The TLS problem inside an I/O error, in words.
pub fn explain_io(e: &std::io::Error, side: Side) -> String {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(tls) => explain(tls, side),
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the connection was closed during the handshake".into()
        }
        None => format!("the handshake failed: {e}"),
    }
}

/// The first TLS problem among `e` and its causes, in words; `None` if
/// there is none.
pub fn explain_chain(e: &(dyn StdError + 'static), side: Side) -> Option<String> {
    let mut cause: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(tls) = c.downcast_ref::<rustls::Error>() {
            return Some(explain(tls, side));
        }
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if let Some(tls) = io.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
                return Some(explain(tls, side));
            }
        }
        cause = c.source();
    }
    None
}

/// A TLS error in words, with rustls's own name for it at the end.
pub fn explain(e: &rustls::Error, side: Side) -> String {
    use rustls::Error as E;
    let (peer, own, ca) = match side {
        Side::Server => ("the client", "the client's certificate", "the client CA (--tls-client-ca)"),
        Side::Client => ("the server", "the server's certificate", "the CA given with --ca"),
    };
    let words = match e {
        E::NoCertificatesPresented => match side {
            Side::Server => "the client sent no certificate; this listener requires one signed by the client CA \
                             (--tls-client-ca)"
                .to_owned(),
            Side::Client => "the server sent no certificate".to_owned(),
        },
        E::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => format!("{own} is not signed by {ca}"),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => format!("{own} has expired"),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                format!("{own} is not valid yet (check the clocks)")
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => format!(
                "{own} does not name the host dialed (give the name it has with --tls-server-name, or dial that name)"
            ),
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => match side {
                Side::Server => format!("{own} is not for client authentication (extended key usage)"),
                Side::Client => format!("{own} is not for server authentication (extended key usage)"),
            },
            CertificateError::BadSignature | CertificateError::BadEncoding => {
                format!("{own} is malformed or its signature does not verify")
            }
            CertificateError::Revoked => format!("{own} is revoked"),
            other if format!("{other:?}").contains("UnsupportedCertVersion") => {
                format!("{own} is not an X.509 version 3 certificate; issue a v3 certificate")
            }
            _ => format!("{own} was refused"),
        },
        E::AlertReceived(alert) => match (side, alert) {
            (Side::Client, AlertDescription::CertificateRequired) => {
                "the server requires a client certificate: give --cert and --key (a certificate signed by the CA \
                 the server trusts, its --tls-client-ca)"
                    .to_owned()
            }
            (Side::Client, AlertDescription::UnknownCA) => {
                "the server does not trust the CA that signed this client's certificate (--cert)".to_owned()
            }
            (Side::Client, AlertDescription::CertificateExpired) => {
                "the server says this client's certificate (--cert) has expired".to_owned()
            }
            (
                Side::Client,
                AlertDescription::BadCertificate
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::DecryptError,
            ) => "the server refused this client's certificate (--cert): it must be an X.509 v3 certificate for \
                  client authentication, signed by the CA the server trusts"
                .to_owned(),
            (
                Side::Server,
                AlertDescription::BadCertificate
                | AlertDescription::UnknownCA
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::CertificateExpired,
            ) => "the client refused the server's certificate: does it trust the CA that signed --tls-cert, and \
                  does the certificate name the host it dialed?"
                .to_owned(),
            (_, a) => format!("{peer} ended the handshake with the alert `{a:?}`"),
        },
        E::InvalidMessage(_) | E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => match side {
            Side::Server => "the client did not speak TLS (a plaintext client on the TLS port?)".to_owned(),
            Side::Client => "the server did not answer in TLS (is it plaintext? then dial http://)".to_owned(),
        },
        E::PeerIncompatible(_) => format!("{peer} has no TLS version or cipher suite in common with this end"),
        E::NoApplicationProtocol => format!("{peer} offered neither HTTP/2 nor HTTP/1.1 (ALPN)"),
        _ => format!("{peer}: the handshake failed"),
    };
    format!("{words} ({e})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_explanation_names_the_side_and_keeps_the_rustls_name() {
        let none = explain(&rustls::Error::NoCertificatesPresented, Side::Server);
        assert!(none.starts_with("the client sent no certificate"), "{none}");
        assert!(none.contains("--tls-client-ca"), "{none}");
        let issuer = rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer);
        assert!(explain(&issuer, Side::Server).starts_with("the client's certificate is not signed by the client CA"));
        assert!(explain(&issuer, Side::Client).starts_with("the server's certificate is not signed by the CA given"));
        let required = explain(&rustls::Error::AlertReceived(AlertDescription::CertificateRequired), Side::Client);
        assert!(required.contains("give --cert and --key"), "{required}");
        assert!(required.ends_with(')'), "{required}");
    }

    #[test]
    fn a_tls_error_is_found_among_the_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls::Error::NoCertificatesPresented);
        assert!(explain_chain(&io, Side::Server).is_some_and(|w| w.contains("sent no certificate")));
        let plain = std::io::Error::other("nothing TLS");
        assert_eq!(explain_chain(&plain, Side::Server), None);
    }
}
