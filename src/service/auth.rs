//! Who may call which service: bearer tokens and mTLS client certificates.
//!
//! Two interceptors, one per kind of API, and one per-call check inside the
//! watch service:
//!
//! - [`AdminAuth`] guards `AdminService`. A call passes with the admin token
//!   (`authorization: Bearer <token>`), or, when the server verifies client
//!   certificates (mTLS), with a client certificate: any certificate the
//!   client CA signed, or only those whose subject common name is listed
//!   (`--admin-client-cn`). A certificate with another name is
//!   `PERMISSION_DENIED` (the client is known, it may not administer); no
//!   credential at all is `UNAUTHENTICATED`. With neither a token nor mTLS
//!   configured, admin calls are open.
//! - [`DecisionAuth`] guards `DecisionService` when a decision token is
//!   configured: the decision token, the admin token, or a verified client
//!   certificate (any name) passes; anything else is `UNAUTHENTICATED`.
//!   Without a decision token, decisions are open.
//! - [`WatchAuth`] is checked by `WatchService` per subscription, as one RPC
//!   carries both kinds (an interceptor runs before the request is decoded):
//!   computed subscriptions (a person's privileges, visible objects) are
//!   decision-grade data and need what [`DecisionAuth`] accepts; raw
//!   subscriptions carry every committed batch — the whole configuration, like
//!   `Export` — and need what [`AdminAuth`] accepts (and, when nothing guards
//!   the administration API, what [`DecisionAuth`] accepts). A valid but lesser
//!   credential on a raw subscription (the decision token, a certificate whose
//!   name may not administer) is `PERMISSION_DENIED`.
//!
//! Tokens are compared in constant time and never echoed. Client
//! certificates reach the interceptors through the request extensions
//! ([`tonic::Request::peer_certs`]); they exist only on the TLS listener and
//! only when the handshake verified them against the client CA (client
//! authentication is required there, never optional), so their presence alone
//! means "verified".

use super::status::ServiceError;
use std::sync::Arc;
use tonic::transport::CertificateDer;
use tonic::{Request, Status};

/// What client certificates may do on the administration API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ClientCertAdmin {
    /// No mTLS: certificates play no part.
    #[default]
    Off,
    /// mTLS: every certificate the client CA signed may administer.
    AnyVerified,
    /// mTLS: only certificates whose subject common name is one of these.
    CommonNames(Vec<String>),
}

/// Requires the admin token or an allowed client certificate on admin calls
/// (see the module documentation).
#[derive(Clone, Default)]
pub struct AdminAuth {
    token: Option<Arc<str>>,
    certs: Arc<ClientCertAdmin>,
}

impl std::fmt::Debug for AdminAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminAuth")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("certs", &self.certs)
            .finish()
    }
}

impl AdminAuth {
    /// Admin calls need `token` (none: admin calls are open).
    pub fn new(token: Option<&str>) -> Self {
        AdminAuth { token: token.map(Arc::from), certs: Arc::new(ClientCertAdmin::Off) }
    }

    /// Admin calls need `token` or a client certificate `certs` allows.
    pub fn with_client_certs(token: Option<&str>, certs: ClientCertAdmin) -> Self {
        AdminAuth { token: token.map(Arc::from), certs: Arc::new(certs) }
    }

    /// Whether nothing guards admin calls (no admin token, no mTLS).
    pub fn is_open(&self) -> bool {
        self.token.is_none() && *self.certs == ClientCertAdmin::Off
    }

    /// Checks an admin call (see the module documentation).
    pub fn check<T>(&self, request: &Request<T>) -> Result<(), ServiceError> {
        self.check_for(request, AdminScope::AdminCalls)
    }

    fn check_for<T>(&self, request: &Request<T>, scope: AdminScope) -> Result<(), ServiceError> {
        let verdict = self.verdict(request, scope);
        if let Err(e) = &verdict {
            log_refusal(request, scope, e);
        }
        verdict
    }

    fn verdict<T>(&self, request: &Request<T>, scope: AdminScope) -> Result<(), ServiceError> {
        if self.is_open() {
            return Ok(());
        }
        if let Some(token) = &self.token {
            if bearer(request).is_some_and(|t| constant_time_eq(t.as_bytes(), token.as_bytes())) {
                return Ok(());
            }
        }
        let Some(leaf) = leaf_certificate(request) else {
            return Err(ServiceError::Unauthenticated(scope.unauthenticated()));
        };
        let what = scope.name();
        match &*self.certs {
            ClientCertAdmin::Off => Err(ServiceError::Unauthenticated(scope.unauthenticated())),
            ClientCertAdmin::AnyVerified => Ok(()),
            ClientCertAdmin::CommonNames(allowed) => match common_name(&leaf) {
                Some(cn) if allowed.contains(&cn) => Ok(()),
                Some(cn) => Err(ServiceError::PermissionDenied(format!(
                    "{what}: the client certificate's common name `{cn}` is not one the server allows to administer (--admin-client-cn)"
                ))),
                None => Err(ServiceError::PermissionDenied(format!(
                    "{what}: the client certificate's subject has no single common name (--admin-client-cn)"
                ))),
            },
        }
    }
}

impl tonic::service::Interceptor for AdminAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.check(&request)?;
        Ok(request)
    }
}

/// Requires the decision token (or the admin token, or a verified client
/// certificate) on decision calls when a decision token is configured.
#[derive(Clone, Default)]
pub struct DecisionAuth {
    decision_token: Option<Arc<str>>,
    admin_token: Option<Arc<str>>,
}

impl std::fmt::Debug for DecisionAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionAuth")
            .field("decision_token", &self.decision_token.as_ref().map(|_| "***"))
            .field("admin_token", &self.admin_token.as_ref().map(|_| "***"))
            .finish()
    }
}

impl DecisionAuth {
    /// Decision calls need `decision_token` (none: open); the admin token is
    /// accepted as well.
    pub fn new(decision_token: Option<&str>, admin_token: Option<&str>) -> Self {
        DecisionAuth { decision_token: decision_token.map(Arc::from), admin_token: admin_token.map(Arc::from) }
    }

    /// Checks a decision call (or a computed watch subscription).
    pub fn check<T>(&self, request: &Request<T>) -> Result<(), ServiceError> {
        let Some(token) = &self.decision_token else { return Ok(()) };
        if let Some(given) = bearer(request) {
            // Both comparisons always run: which token matched is not timed either.
            let decision = constant_time_eq(given.as_bytes(), token.as_bytes());
            let admin = self.admin_token.as_ref().is_some_and(|a| constant_time_eq(given.as_bytes(), a.as_bytes()));
            if decision | admin {
                return Ok(());
            }
        }
        if leaf_certificate(request).is_some() {
            return Ok(());
        }
        Err(ServiceError::Unauthenticated(UNAUTHENTICATED_DECISIONS))
    }
}

impl tonic::service::Interceptor for DecisionAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.check(&request)?;
        Ok(request)
    }
}

impl DecisionAuth {
    /// Whether the request carries the decision token itself (not the admin
    /// token): a valid credential that may decide but not administer.
    fn is_decision_token<T>(&self, request: &Request<T>) -> bool {
        match (&self.decision_token, bearer(request)) {
            (Some(token), Some(given)) => constant_time_eq(given.as_bytes(), token.as_bytes()),
            _ => false,
        }
    }
}

/// Who may open which change stream: checked by `WatchService` per
/// subscription (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct WatchAuth {
    decision: DecisionAuth,
    admin: AdminAuth,
}

impl WatchAuth {
    /// Computed subscriptions need what `decision` accepts; raw subscriptions
    /// what `admin` accepts. Give both the tokens the server has (the
    /// decision check accepts the admin token too), as the services get them.
    pub fn new(decision: DecisionAuth, admin: AdminAuth) -> Self {
        WatchAuth { decision, admin }
    }

    /// A computed subscription (privileges, visible objects): decision-grade data.
    pub fn check_computed<T>(&self, request: &Request<T>) -> Result<(), ServiceError> {
        self.decision.check(request).map_err(|_| ServiceError::Unauthenticated(UNAUTHENTICATED_COMPUTED_WATCH))
    }

    /// A raw subscription: every committed batch, the whole configuration.
    pub fn check_raw<T>(&self, request: &Request<T>) -> Result<(), ServiceError> {
        if self.admin.is_open() {
            // Nothing guards the administration API (Export is open too):
            // raw streams are as open as the watch service.
            return self.decision.check(request).map_err(|_| ServiceError::Unauthenticated(UNAUTHENTICATED_RAW_WATCH));
        }
        match self.admin.check_for(request, AdminScope::RawWatch) {
            Err(ServiceError::Unauthenticated(_)) if self.decision.is_decision_token(request) => {
                Err(ServiceError::PermissionDenied(PERMISSION_DENIED_RAW_WATCH.into()))
            }
            r => r,
        }
    }
}

/// Logs a refused admin-level call: the peer, what it presented (never the
/// secret itself: a token is only said to be there) and why it was refused.
fn log_refusal<T>(request: &Request<T>, scope: AdminScope, e: &ServiceError) {
    let peer = request.remote_addr().map_or_else(|| "unix socket".to_owned(), |a| a.to_string());
    let presented = match (bearer(request).is_some(), leaf_certificate(request)) {
        (true, _) => "a bearer token that is not the admin token".to_owned(),
        (false, Some(leaf)) => match common_name(&leaf) {
            Some(cn) => format!("a client certificate with common name `{cn}`"),
            None => "a client certificate without a single common name".to_owned(),
        },
        (false, None) => "no credential".to_owned(),
    };
    tracing::warn!(peer = %peer, calls = scope.name(), presented = %presented, code = ?e.code(), reason = %e, "refused an admin call");
}

/// What an admin-level check is for, in its messages.
#[derive(Debug, Clone, Copy)]
enum AdminScope {
    AdminCalls,
    RawWatch,
}

impl AdminScope {
    fn name(self) -> &'static str {
        match self {
            AdminScope::AdminCalls => "admin calls",
            AdminScope::RawWatch => "raw change subscriptions",
        }
    }

    fn unauthenticated(self) -> &'static str {
        match self {
            AdminScope::AdminCalls => UNAUTHENTICATED_ADMIN,
            AdminScope::RawWatch => UNAUTHENTICATED_RAW_WATCH,
        }
    }
}

const UNAUTHENTICATED_ADMIN: &str = "admin calls need the header `authorization: Bearer <token>` or an allowed client certificate: the token is missing or wrong";
const UNAUTHENTICATED_DECISIONS: &str = "decision calls need the header `authorization: Bearer <token>` (the decision or the admin token): the token is missing or wrong";
const UNAUTHENTICATED_COMPUTED_WATCH: &str = "privileges and visible-objects subscriptions need the header `authorization: Bearer <token>` (the decision or the admin token): the token is missing or wrong";
const UNAUTHENTICATED_RAW_WATCH: &str = "raw change subscriptions need the admin credential: the header `authorization: Bearer <admin token>` or a client certificate allowed to administer; the token is missing or wrong";
const PERMISSION_DENIED_RAW_WATCH: &str = "raw change subscriptions carry the whole configuration and need the admin credential (the admin token or a client certificate allowed to administer), as Export does; the decision token may only follow privileges and visible objects";

/// The bearer token of a request, if it has one.
fn bearer<T>(request: &Request<T>) -> Option<&str> {
    request.metadata().get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))
}

/// The client's own certificate (the first of the chain it presented), when
/// the connection is TLS with a verified client certificate.
fn leaf_certificate<T>(request: &Request<T>) -> Option<CertificateDer<'static>> {
    request.peer_certs().and_then(|chain| chain.first().cloned())
}

/// Compares without an early exit, so timing does not reveal a prefix of the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The subject common name of a DER certificate: `None` when the certificate
/// does not parse, or its subject has no common name or more than one.
///
/// `rustls-webpki` (the parser rustls verified the certificate with) finds the
/// subject; this walks its relative distinguished names for the attribute
/// `2.5.4.3` (commonName) and decodes its string (UTF8String, PrintableString,
/// IA5String or BMPString).
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let cert = webpki::EndEntityCert::try_from(cert).ok()?;
    let mut names = Vec::new();
    let mut rdns = cert.subject();
    while !rdns.is_empty() {
        let (tag, set, rest) = der_tlv(rdns)?;
        rdns = rest;
        if tag != 0x31 {
            return None; // a Name is a SEQUENCE OF SET
        }
        let mut attrs = set;
        while !attrs.is_empty() {
            let (tag, attr, rest) = der_tlv(attrs)?;
            attrs = rest;
            if tag != 0x30 {
                return None;
            }
            let (oid_tag, oid, value) = der_tlv(attr)?;
            if oid_tag == 0x06 && oid == [0x55, 0x04, 0x03] {
                let (string_tag, bytes, _) = der_tlv(value)?;
                names.push(der_string(string_tag, bytes)?);
            }
        }
    }
    if names.len() == 1 { names.pop() } else { None }
}

/// One DER tag-length-value: (tag, value, what follows). Definite lengths only.
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        (bytes.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b)), rest)
    };
    if rest.len() < len {
        return None;
    }
    let (value, rest) = rest.split_at(len);
    Some((tag, value, rest))
}

/// An X.520 directory string's text.
fn der_string(tag: u8, bytes: &[u8]) -> Option<String> {
    match tag {
        // UTF8String, PrintableString, IA5String
        0x0c | 0x13 | 0x16 => std::str::from_utf8(bytes).ok().map(str::to_owned),
        // BMPString: UTF-16 big-endian
        0x1e if bytes.len() % 2 == 0 => {
            let units: Vec<u16> = bytes.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]])).collect();
            String::from_utf16(&units).ok()
        }
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    fn with_token(token: &str) -> Request<()> {
        let mut r = Request::new(());
        r.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        r
    }

    #[test]
    fn bearer_token_is_required_when_configured() {
        let mut open = AdminAuth::new(None);
        assert!(open.call(Request::new(())).is_ok());
        let mut auth = AdminAuth::new(Some("s3cret"));
        let err = auth.call(Request::new(())).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert!(!err.message().contains("s3cret"));
        assert_eq!(auth.call(with_token("nope")).unwrap_err().code(), tonic::Code::Unauthenticated);
        assert!(auth.call(with_token("s3cret")).is_ok());
    }

    #[test]
    fn mtls_without_a_certificate_needs_the_token() {
        // A connection without a client certificate (the Unix socket) and no token.
        let mut auth = AdminAuth::with_client_certs(None, ClientCertAdmin::AnyVerified);
        assert_eq!(auth.call(Request::new(())).unwrap_err().code(), tonic::Code::Unauthenticated);
        let mut auth = AdminAuth::with_client_certs(Some("t"), ClientCertAdmin::CommonNames(vec!["ops".into()]));
        assert!(auth.call(with_token("t")).is_ok());
        assert_eq!(auth.call(with_token("x")).unwrap_err().code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn decision_token_is_required_when_configured_and_never_echoed() {
        let mut open = DecisionAuth::new(None, Some("admin"));
        assert!(open.call(Request::new(())).is_ok());
        let mut auth = DecisionAuth::new(Some("d3cide"), Some("admin"));
        let err = auth.call(Request::new(())).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert!(err.message().contains("Bearer <token>"));
        let err = auth.call(with_token("guess")).unwrap_err();
        assert!(!err.message().contains("guess") && !err.message().contains("d3cide"));
        assert!(auth.call(with_token("d3cide")).is_ok());
        assert!(auth.call(with_token("admin")).is_ok(), "the admin token may decide too");
    }

    #[test]
    fn raw_watch_needs_the_admin_credential_computed_the_decision_one() {
        let code = |r: Result<(), ServiceError>| r.map_err(|e| Status::from(e).code());
        // Nothing configured: both open, as decisions and admin calls are.
        let open = WatchAuth::default();
        assert!(open.check_computed(&Request::new(())).is_ok());
        assert!(open.check_raw(&Request::new(())).is_ok());

        let both = WatchAuth::new(DecisionAuth::new(Some("d3cide"), Some("adm1n")), AdminAuth::new(Some("adm1n")));
        assert_eq!(code(both.check_computed(&Request::new(()))), Err(tonic::Code::Unauthenticated));
        assert!(both.check_computed(&with_token("d3cide")).is_ok());
        assert!(both.check_computed(&with_token("adm1n")).is_ok());
        let err = both.check_raw(&Request::new(())).unwrap_err();
        assert_eq!(Status::from(err).code(), tonic::Code::Unauthenticated);
        let err = Status::from(both.check_raw(&with_token("guess")).unwrap_err());
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert!(err.message().contains("admin") && !err.message().contains("guess"), "{}", err.message());
        // The decision token is valid, but not enough.
        let err = Status::from(both.check_raw(&with_token("d3cide")).unwrap_err());
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert!(err.message().contains("admin token") && !err.message().contains("d3cide"), "{}", err.message());
        assert!(both.check_raw(&with_token("adm1n")).is_ok());

        // Only an admin token: computed streams open, raw ones need it.
        let admin_only = WatchAuth::new(DecisionAuth::new(None, Some("adm1n")), AdminAuth::new(Some("adm1n")));
        assert!(admin_only.check_computed(&Request::new(())).is_ok());
        assert_eq!(code(admin_only.check_raw(&Request::new(()))), Err(tonic::Code::Unauthenticated));
        assert!(admin_only.check_raw(&with_token("adm1n")).is_ok());

        // Only a decision token: the administration API is open, raw streams
        // still need what every watch call needs.
        let decision_only = WatchAuth::new(DecisionAuth::new(Some("d3cide"), None), AdminAuth::new(None));
        assert_eq!(code(decision_only.check_raw(&Request::new(()))), Err(tonic::Code::Unauthenticated));
        assert!(decision_only.check_raw(&with_token("d3cide")).is_ok());
    }

    #[test]
    fn der_walk_refuses_truncated_input() {
        assert_eq!(der_tlv(&[0x30, 0x05, 0x01]), None);
        assert_eq!(der_tlv(&[0x30, 0x81]), None);
        assert_eq!(der_tlv(&[0x30, 0x81, 0x01, 0xff]), Some((0x30, &[0xff][..], &[][..])));
        assert_eq!(der_string(0x1e, &[0x00, 0x6f, 0x00, 0x70]), Some("op".into()));
        assert_eq!(der_string(0x14, b"x"), None);
        assert_eq!(common_name(&CertificateDer::from(vec![0x30, 0x00])), None);
    }
}
