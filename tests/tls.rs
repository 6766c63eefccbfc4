//! Transport security and configuration, through the real server.
//!
//! Each test makes a throw-away certificate authority, server and client
//! certificates with `rcgen`, starts the server in-process on `127.0.0.1:0`
//! (temporary SQLite store, demo tenant ACME) and talks to it over TLS or
//! mTLS with the generated clients, or runs the `authzd` binary against it.
//! The configuration tests parse `authzd serve` command lines with the
//! binary's own clap definition and `ServerConfig::from_args`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod support;

use authzd::cli::{Cli, Command};
use authzd::config::{ConfigError, ServerConfig, TlsConfig};
use authzd::proto::authzd::v1 as pb;
use authzd::proto::authzd::v1::admin_service_client::AdminServiceClient;
use authzd::proto::authzd::v1::decision_service_client::DecisionServiceClient;
use authzd::proto::authzd::v1::watch_service_client::WatchServiceClient;
use clap::Parser as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const TENANT: &str = "acme";

// ------------------------------------------------------------------ certificates

/// A throw-away certificate authority.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its private key, PEM.
#[derive(Clone)]
struct Pem {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        Ca { issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap() }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// The server's certificate: `localhost` and 127.0.0.1.
    fn server(&self) -> Pem {
        let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "authzd");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate whose subject common name is `cn`.
    fn client(&self, cn: &str) -> Pem {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::OrganizationName, "ACME Contact Center");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Pem {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Pem { cert: cert.pem(), key: key.serialize_pem() }
    }
}

fn tls_config(ca: &Ca, server: &Pem, mtls: bool) -> TlsConfig {
    TlsConfig {
        cert_pem: server.cert.clone().into_bytes(),
        key_pem: server.key.clone().into_bytes(),
        client_ca_pem: mtls.then(|| ca.pem().into_bytes()),
    }
}

// ------------------------------------------------------------------ harness

/// A server on an ephemeral port.
type Running = support::Serving;
use support::{demo_config as config, serve as start};

impl Running {
    /// A TLS channel trusting `ca`, presenting `client` when given.
    async fn tls(&self, ca: &Ca, client: Option<&Pem>) -> Result<Channel, tonic::transport::Error> {
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca.pem())).domain_name("localhost");
        if let Some(c) = client {
            tls = tls.identity(Identity::from_pem(&c.cert, &c.key));
        }
        Channel::from_shared(format!("https://{}", self.addr)).unwrap().tls_config(tls)?.connect().await
    }
}

fn privilege_check() -> pb::CheckRequest {
    pb::CheckRequest {
        tenant: TENANT.into(),
        person: "cb-supervisor".into(),
        application: Some("Callback".into()),
        privilege: Some("Callback - Export Reports".into()),
        ..Default::default()
    }
}

/// A check the demo tenant allows: the call went through.
async fn check_allowed(channel: Channel) {
    let r = DecisionServiceClient::new(channel).check(privilege_check()).await.expect("check answers").into_inner();
    assert!(r.allowed, "cb-supervisor may export Callback reports");
}

fn with_token<T>(mut req: tonic::Request<T>, token: &str) -> tonic::Request<T> {
    req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

/// Whether a call over `connect`'s channel is refused (at the handshake or
/// on the first call, which is where TLS 1.3 reports a refused client certificate).
async fn refused(connect: Result<Channel, tonic::transport::Error>) -> bool {
    match connect {
        Err(_) => true,
        Ok(ch) => match DecisionServiceClient::new(ch).check(privilege_check()).await {
            Ok(_) => false,
            Err(s) => {
                assert!(matches!(s.code(), Code::Unavailable | Code::Unknown | Code::Internal), "{s:?}");
                true
            }
        },
    }
}

// ------------------------------------------------------------------ TLS and mTLS

#[tokio::test]
async fn check_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("authzd test CA");
    let mut c = config(&dir.path().join("authzd.db"));
    c.tls = Some(tls_config(&ca, &ca.server(), false));
    let r = start(c).await;

    check_allowed(r.tls(&ca, None).await.expect("TLS connects")).await;

    // A client that trusts another CA does not accept the server.
    let other = Ca::new("another CA");
    assert!(refused(r.tls(&other, None).await).await, "an untrusted server certificate is refused");
    // Plaintext HTTP/2 to the TLS port gets no answer.
    let plain = Channel::from_shared(format!("http://{}", r.addr)).unwrap().connect().await;
    assert!(refused(plain).await, "plaintext is not served on the TLS listener");

    // The server kept serving.
    check_allowed(r.tls(&ca, None).await.unwrap()).await;
    r.stop().await;
}

#[tokio::test]
async fn mtls_client_certificates_authorize_admin_by_common_name() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("authzd test CA");
    let mut c = config(&dir.path().join("authzd.db"));
    c.tls = Some(tls_config(&ca, &ca.server(), true));
    c.admin_client_cns = vec!["ops-console".into()];
    c.admin_token = Some("adm1n-token".into());
    c.decision_token = Some("d3cide".into());
    let r = start(c).await;

    // No client certificate: refused at the handshake.
    assert!(refused(r.tls(&ca, None).await).await, "a client without a certificate is refused");
    // A certificate another CA signed: refused too.
    let rogue = Ca::new("rogue CA");
    assert!(refused(r.tls(&ca, Some(&rogue.client("ops-console"))).await).await, "a foreign certificate is refused");

    // An allowed common name may administer, without a token; its
    // certificate also stands for the decision token.
    let ops = r.tls(&ca, Some(&ca.client("ops-console"))).await.expect("mTLS connects");
    let tenants = AdminServiceClient::new(ops.clone()).list_tenants(pb::ListTenantsRequest::default()).await.unwrap();
    assert!(tenants.into_inner().tenants.iter().any(|t| t.id == TENANT));
    check_allowed(ops.clone()).await;

    // Another common name may decide, not administer.
    let desk = r.tls(&ca, Some(&ca.client("agent-desktop"))).await.expect("mTLS connects");
    let s = AdminServiceClient::new(desk.clone()).list_tenants(pb::ListTenantsRequest::default()).await.unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert!(s.message().contains("`agent-desktop`") && s.message().contains("--admin-client-cn"), "{}", s.message());
    check_allowed(desk.clone()).await;
    // It may follow a person's privileges, not the raw configuration changes.
    let mut w = WatchServiceClient::new(desk.clone());
    first_event_is_a_snapshot(&mut w, tonic::Request::new(privileges_watch())).await;
    let s = w.watch(raw_watch()).await.unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert!(
        s.message().contains("raw change subscriptions") && s.message().contains("`agent-desktop`"),
        "{}",
        s.message()
    );
    // ... unless it brings the admin token.
    let req = with_token(tonic::Request::new(pb::ListTenantsRequest::default()), "adm1n-token");
    AdminServiceClient::new(desk).list_tenants(req).await.expect("the admin token still works");
    w.watch(with_token(tonic::Request::new(raw_watch()), "adm1n-token"))
        .await
        .expect("the admin token may watch raw changes");
    // The allowed name may watch raw changes without a token.
    let written = write_person(AdminServiceClient::new(ops.clone()), None, "raw-watched").await;
    let mut raw = WatchServiceClient::new(ops).watch(raw_watch()).await.expect("an admin certificate").into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), raw.message()).await.unwrap().unwrap().unwrap();
    assert!(matches!(&first.event, Some(pb::watch_event::Event::RawChange(c)) if c.revision == written), "{first:?}");

    r.stop().await;
}

fn privileges_watch() -> pb::WatchRequest {
    pb::WatchRequest {
        subscription: Some(pb::watch_request::Subscription::Privileges(pb::PrivilegesSubscription {
            tenant: TENANT.into(),
            person: "cb-supervisor".into(),
            application: "Callback".into(),
        })),
        at_least_revision: 0,
    }
}

/// Adds a person (with `token` as the admin bearer token); the revision written.
async fn write_person(mut a: AdminServiceClient<Channel>, token: Option<&str>, id: &str) -> u64 {
    let mutations: Vec<authzd::model::Mutation> =
        authzd::model::yaml::from_str(&format!("- put_person: {{id: {id}, username: {id}}}"), "test").unwrap();
    let mut req = tonic::Request::new(pb::WriteRequest {
        tenant: TENANT.into(),
        mutations: mutations.into_iter().map(authzd::service::convert::mutation_pb).collect(),
        ..Default::default()
    });
    if let Some(t) = token {
        req = with_token(req, t);
    }
    a.write(req).await.expect("the write is accepted").into_inner().revision
}

/// Every change of the demo tenant since its import (revision 1).
fn raw_watch() -> pb::WatchRequest {
    pb::WatchRequest {
        subscription: Some(pb::watch_request::Subscription::Raw(pb::RawSubscription {
            tenant: Some(TENANT.into()),
            types: Vec::new(),
            from_revision: 1,
            from_now: false,
        })),
        at_least_revision: 0,
    }
}

async fn first_event_is_a_snapshot<S>(w: &mut WatchServiceClient<S>, req: tonic::Request<pb::WatchRequest>)
where
    S: tonic::client::GrpcService<tonic::body::Body>,
    S::Error: Into<tonic::codegen::StdError>,
    S::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <S::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let mut stream = w.watch(req).await.expect("the subscription is accepted").into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.message()).await.unwrap().unwrap().unwrap();
    assert!(matches!(first.event, Some(pb::watch_event::Event::Snapshot(_))), "{first:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decision_token_is_required_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(&dir.path().join("authzd.db"));
    c.decision_token = Some("d3cide".into());
    c.admin_token = Some("adm1n-token".into());
    let r = start(c).await;
    let mut d = DecisionServiceClient::new(r.channel().await);

    let s = d.check(privilege_check()).await.unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);
    assert!(s.message().contains("Bearer <token>"), "{}", s.message());
    let s = d.check(with_token(tonic::Request::new(privilege_check()), "guess")).await.unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);
    assert!(!s.message().contains("guess") && !s.message().contains("d3cide"), "never echoes a token: {}", s.message());

    let ok = d.check(with_token(tonic::Request::new(privilege_check()), "d3cide")).await.unwrap().into_inner();
    assert!(ok.allowed);
    let ok = d.check(with_token(tonic::Request::new(privilege_check()), "adm1n-token")).await.unwrap().into_inner();
    assert!(ok.allowed, "the admin token may decide too");
    // The decision token is not an admin token.
    let req = with_token(tonic::Request::new(pb::ListTenantsRequest::default()), "d3cide");
    let s = AdminServiceClient::new(r.channel().await).list_tenants(req).await.unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);

    // A person's privileges followed live are decision-grade: the decision
    // token (or the admin token) is needed.
    let mut w = WatchServiceClient::new(r.channel().await);
    let s = w.watch(privileges_watch()).await.unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);
    assert!(s.message().contains("Bearer <token>") && s.message().contains("decision"), "{}", s.message());
    let s = w.watch(with_token(tonic::Request::new(privileges_watch()), "guess")).await.unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);
    for token in ["d3cide", "adm1n-token"] {
        first_event_is_a_snapshot(&mut w, with_token(tonic::Request::new(privileges_watch()), token)).await;
    }
    // Raw changes carry the whole configuration: the admin credential, as Export.
    let written = write_person(AdminServiceClient::new(r.channel().await), Some("adm1n-token"), "raw-watched").await;
    let s = w.watch(raw_watch()).await.unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);
    assert!(s.message().contains("admin"), "{}", s.message());
    let s = w.watch(with_token(tonic::Request::new(raw_watch()), "guess")).await.unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);
    let s = w.watch(with_token(tonic::Request::new(raw_watch()), "d3cide")).await.unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "a valid credential, not enough: {s:?}");
    assert!(s.message().contains("admin token") && !s.message().contains("d3cide"), "{}", s.message());
    let mut raw = w.watch(with_token(tonic::Request::new(raw_watch()), "adm1n-token")).await.unwrap().into_inner();
    let first = tokio::time::timeout(Duration::from_secs(10), raw.message()).await.unwrap().unwrap().unwrap();
    assert!(matches!(&first.event, Some(pb::watch_event::Event::RawChange(c)) if c.revision == written), "{first:?}");

    // The CLI sends the admin token to `watch raw`, the decision token to the other watches.
    let server = ["--server".to_owned(), format!("http://{}", r.addr)];
    let (code, out, err) = run_async(args(
        &[
            "watch",
            "raw",
            "--tenant",
            TENANT,
            "--from-revision",
            "1",
            "--max-events",
            "1",
            "--token",
            "adm1n-token",
            "--decision-token",
            "d3cide",
        ],
        &server,
    ))
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with(&format!("revision {written} ")), "{out}");
    let (code, out, err) = run_async(args(
        &[
            "watch",
            "privileges",
            "--tenant",
            TENANT,
            "--person",
            "cb-supervisor",
            "--app",
            "Callback",
            "--max-events",
            "1",
            "--token",
            "adm1n-token",
            "--decision-token",
            "d3cide",
        ],
        &server,
    ))
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("snapshot (initial)"), "{out}");
    let (code, _, err) = run_async(args(
        &["watch", "raw", "--tenant", TENANT, "--max-events", "1", "--decision-token", "d3cide"],
        &server,
    ))
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("PermissionDenied") && err.contains("admin"), "{err}");

    // Health checks stay open (probes carry no token).
    let mut h = tonic_health::pb::health_client::HealthClient::new(r.channel().await);
    let health = h.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(health.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);
    r.stop().await;
}

/// Without tokens or mTLS, decisions, watch streams of both kinds and admin
/// calls are open, as before.
#[tokio::test]
async fn without_credentials_configured_everything_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(config(&dir.path().join("authzd.db"))).await;
    check_allowed(r.channel().await).await;
    let mut w = WatchServiceClient::new(r.channel().await);
    first_event_is_a_snapshot(&mut w, tonic::Request::new(privileges_watch())).await;
    let mut raw = w.watch(raw_watch()).await.expect("raw changes are open too").into_inner();
    let mut a = AdminServiceClient::new(r.channel().await);
    a.list_tenants(pb::ListTenantsRequest::default()).await.expect("admin calls are open");
    let written = write_person(a, None, "open-watch").await;
    let first = tokio::time::timeout(Duration::from_secs(10), raw.message()).await.unwrap().unwrap().unwrap();
    match first.event {
        Some(pb::watch_event::Event::RawChange(c)) => assert_eq!(c.revision, written),
        other => panic!("expected the raw change, got {other:?}"),
    }
    r.stop().await;
}

// ------------------------------------------------------------------ configuration

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn parse(args: &[&str]) -> Result<ServerConfig, ConfigError> {
    let mut argv = vec!["authzd", "serve"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("`{}` does not parse: {e}", argv.join(" ")));
    let Command::Serve(a) = cli.command else { panic!("not serve") };
    ServerConfig::from_args(&a)
}

/// Certificates on disk, as an operator has them.
struct Files {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    ops_cert: PathBuf,
    ops_key: PathBuf,
}

fn files(dir: &Path, ca: &Ca) -> Files {
    let server = ca.server();
    let ops = ca.client("ops-console");
    Files {
        ca: write(dir, "ca.crt", &ca.pem()),
        cert: write(dir, "server.crt", &server.cert),
        key: write(dir, "server.key", &server.key),
        ops_cert: write(dir, "ops.crt", &ops.cert),
        ops_key: write(dir, "ops.key", &ops.key),
    }
}

#[test]
fn config_file_sets_values_that_flags_override() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("authzd test CA");
    let f = files(dir.path(), &ca);
    let file = write(
        dir.path(),
        "authzd.yaml",
        &format!(
            "listen: 0.0.0.0:7000\n\
             store: sqlite:///var/lib/authzd/from-file.db\n\
             demo: true\n\
             max_batch: 77\n\
             admin-token: from-file\n\
             tls-cert: {}\n\
             tls_key: {}\n\
             tls-client-ca: {}\n\
             admin-client-cn: [ops-console, designer-backend]\n\
             lock-idle-timeout-secs: 60\n",
            f.cert.display(),
            f.key.display(),
            f.ca.display()
        ),
    );
    let path = file.to_str().unwrap();

    let c = parse(&["--config", path]).unwrap();
    assert_eq!(c.listen, "0.0.0.0:7000".parse().unwrap());
    assert_eq!(c.store_url, "sqlite:///var/lib/authzd/from-file.db");
    assert!(c.demo);
    assert_eq!(c.limits.max_batch, 77, "underscores work as dashes");
    assert_eq!(c.admin_token.as_deref(), Some("from-file"));
    assert_eq!(c.admin_client_cns, ["ops-console", "designer-backend"]);
    let tls = c.tls.as_ref().expect("TLS from the file");
    assert!(tls.client_ca_pem.is_some());
    assert_eq!(c.locks.default_idle, Duration::from_secs(60));
    // What the file does not set keeps its default.
    assert_eq!(c.max_message_bytes, authzd::config::DEFAULT_MAX_MESSAGE_BYTES);
    assert!(c.security_warnings().is_empty(), "TLS and an admin token: nothing to warn about");

    // Flags win over the file, one setting at a time; lists are replaced whole.
    let c = parse(&[
        "--config",
        path,
        "--listen",
        "127.0.0.1:7001",
        "--max-batch",
        "5",
        "--admin-client-cn",
        "root-console",
        "--admin-token",
        "from-flag",
    ])
    .unwrap();
    assert_eq!(c.listen, "127.0.0.1:7001".parse().unwrap());
    assert_eq!(c.limits.max_batch, 5);
    assert_eq!(c.admin_client_cns, ["root-console"]);
    assert_eq!(c.admin_token.as_deref(), Some("from-flag"));
    assert_eq!(c.store_url, "sqlite:///var/lib/authzd/from-file.db", "the rest still comes from the file");
    assert!(c.demo);

    // Without the file, the defaults.
    let c = parse(&[]).unwrap();
    assert_eq!(c.listen, authzd::config::DEFAULT_LISTEN.parse().unwrap());
    assert_eq!(c.store_url, authzd::config::DEFAULT_STORE);
    assert!(!c.demo && c.tls.is_none() && c.admin_token.is_none());
    assert_eq!(c.shutdown_grace, authzd::config::DEFAULT_SHUTDOWN_GRACE);
    assert_eq!(ServerConfig::new("sqlite://x.db").shutdown_grace, authzd::config::DEFAULT_SHUTDOWN_GRACE);
    let c = parse(&["--shutdown-grace-ms", "2500"]).unwrap();
    assert_eq!(c.shutdown_grace, Duration::from_millis(2500));
}

#[test]
fn config_file_errors_name_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let err = |text: &str| {
        let path = write(dir.path(), "bad.yaml", text);
        let e = parse(&["--config", path.to_str().unwrap()]).unwrap_err().to_string();
        assert!(e.contains("bad.yaml"), "names the file: {e}");
        e
    };
    let e = err("listen: 127.0.0.1:1\nlissen: 127.0.0.1:2\n");
    assert!(e.contains("unknown key `lissen`"), "{e}");
    let e = err("listen: not-an-address\n");
    assert!(e.contains("key `listen`") && e.contains("not-an-address"), "{e}");
    let e = err("max-batch: 0\n");
    assert!(e.contains("key `max-batch`") && e.contains("at least 1"), "a value the server refuses: {e}");
    let e = err("demo: maybe\n");
    assert!(e.contains("key `demo`") && e.contains("true or false"), "{e}");
    let e = err("config: other.yaml\n");
    assert!(e.contains("key `config`"), "{e}");
    let e = err("max-batch: 1\nmax_batch: 2\n");
    assert!(e.contains("twice"), "{e}");
    let e = err("- listen\n");
    assert!(e.contains("mapping"), "{e}");
    let e = err("listen: [127.0.0.1:1]\n");
    assert!(e.contains("key `listen`") && e.contains("one value"), "{e}");
    let e = err("listen: 127.0.0.1:1\n  bad indentation: x\n");
    assert!(e.contains("YAML"), "{e}");
    let missing = dir.path().join("missing.yaml");
    let e = parse(&["--config", missing.to_str().unwrap()]).unwrap_err().to_string();
    assert!(e.contains("missing.yaml") && e.contains("cannot read"), "{e}");
    // A flag given on the command line is not reported when the file's value
    // would have been bad: the flag wins (the file is still parsed whole).
    let path = write(dir.path(), "ok.yaml", "max-batch: 0\n");
    assert_eq!(parse(&["--config", path.to_str().unwrap(), "--max-batch", "3"]).unwrap().limits.max_batch, 3);
}

#[test]
fn tls_flags_are_checked_together() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("authzd test CA");
    let f = files(dir.path(), &ca);
    let (cert, key, client_ca) = (f.cert.to_str().unwrap(), f.key.to_str().unwrap(), f.ca.to_str().unwrap());
    let e = |args: &[&str]| parse(args).unwrap_err().to_string();
    assert!(e(&["--tls-cert", cert]).contains("--tls-key"));
    assert!(e(&["--tls-key", key]).contains("--tls-cert"));
    assert!(e(&["--tls-client-ca", client_ca]).contains("--tls-client-ca"));
    assert!(e(&["--tls-cert", cert, "--tls-key", key, "--admin-client-cn", "ops"]).contains("--admin-client-cn"));
    // A key that is not the certificate's.
    let other = write(dir.path(), "other.key", &ca.client("x").key);
    let msg = e(&["--tls-cert", cert, "--tls-key", other.to_str().unwrap()]);
    assert!(msg.contains("--tls-cert"), "{msg}");
    // Not PEM, or absent.
    let junk = write(dir.path(), "junk.crt", "hello");
    assert!(e(&["--tls-cert", junk.to_str().unwrap(), "--tls-key", key]).contains("not PEM"));
    assert!(e(&["--tls-cert", "/nonexistent/x.crt", "--tls-key", key]).contains("cannot read"));
    assert!(e(&["--decision-token", " "]).contains("--decision-token"));

    let c = parse(&["--tls-cert", cert, "--tls-key", key, "--tls-client-ca", client_ca]).unwrap();
    assert_eq!(c.client_cert_admin(), authzd::service::ClientCertAdmin::AnyVerified);
}

#[test]
fn non_loopback_decisions_without_tls_or_token_are_warned_about() {
    let mut c = ServerConfig::new("sqlite://x.db");
    assert!(c.security_warnings().is_empty(), "loopback: no warning");
    c.listen = "0.0.0.0:50051".parse().unwrap();
    let w = c.security_warnings();
    assert!(w.iter().any(|w| w.contains("decisions") && w.contains("0.0.0.0:50051")), "{w:?}");
    assert!(w.iter().any(|w| w.contains("administration API")), "{w:?}");
    c.decision_token = Some("t".into());
    c.admin_token = Some("a".into());
    assert!(c.security_warnings().is_empty(), "{:?}", c.security_warnings());
}

/// Runs the binary with only the given environment; (exit code, stdout, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_authzd"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn environment_overrides_the_file_and_flags_override_both() {
    let dir = tempfile::tempdir().unwrap();
    // Three values the server refuses; the environment fixes the first, a flag
    // the second, so the error is about the third. The file also names the
    // variable's flag with an underscore.
    let file = write(dir.path(), "authzd.yaml", "max_batch: 0\ncheckpoint-every: 0\nmax-message-bytes: 10\n");
    let (code, _, err) = run(
        &["serve", "--config", file.to_str().unwrap(), "--checkpoint-every", "3"],
        &[("AUTHZD_MAX_BATCH", "5"), ("AUTHZD_CHECKPOINT_EVERY", "0")],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("key `max-message-bytes`") && err.contains("authzd.yaml"), "{err}");
    // The file named through the environment; the environment's value wins again.
    let (code, _, err) = run(&["serve"], &[("AUTHZD_CONFIG", file.to_str().unwrap()), ("AUTHZD_MAX_BATCH", "5")]);
    assert_eq!(code, 2);
    assert!(err.contains("key `checkpoint-every`"), "{err}");
}

// ------------------------------------------------------------------ the CLI over mTLS

/// Client flags of the binary for an mTLS connection to `r`.
fn client_flags(addr: std::net::SocketAddr, f: &Files) -> Vec<String> {
    vec![
        "--server".into(),
        format!("https://{addr}"),
        "--tls-server-name".into(),
        "localhost".into(),
        "--ca".into(),
        f.ca.display().to_string(),
        "--cert".into(),
        f.ops_cert.display().to_string(),
        "--key".into(),
        f.ops_key.display().to_string(),
    ]
}

async fn run_async(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&args, &[])
    })
    .await
    .unwrap()
}

fn args(parts: &[&str], client: &[String]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_owned()).chain(client.iter().cloned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_lock_and_watch_over_mtls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("authzd test CA");
    let f = files(dir.path(), &ca);
    let mut c = config(&dir.path().join("authzd.db"));
    c.tls = Some(tls_config(&ca, &ca.server(), true));
    c.admin_client_cns = vec!["ops-console".into()];
    let r = start(c).await;
    let client = client_flags(r.addr, &f);
    let object = ["--tenant", TENANT, "--object", "Application/app-main-ivr", "--app", "Designer"];

    // Acquire, as one developer.
    let mut acquire = args(&["lock", "acquire", "--person", "dz-developer", "--json"], &client);
    acquire.extend(object.iter().map(|s| (*s).to_owned()));
    let (code, out, err) = run_async(acquire).await;
    assert_eq!(code, 0, "{out}{err}");
    // `--json` is the proto3 JSON mapping of the answer, as the HTTP API gives it.
    let granted: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(granted["granted"], true);
    assert_eq!(granted["holder"], "dz-developer");
    let token = granted["lockToken"].as_str().unwrap().to_owned();
    // RFC 3339, to the second (the text output writes the fraction its own way).
    let since = granted["since"].as_str().unwrap()[..19].to_owned();
    assert!(granted["revision"].is_string(), "64-bit numbers are strings in proto3 JSON: {granted}");

    // Another developer is refused and told who holds it since when.
    let mut other = args(&["lock", "acquire", "--person", "dz-dev-sales"], &client);
    other.extend(object.iter().map(|s| (*s).to_owned()));
    let (code, out, err) = run_async(other).await;
    assert_eq!(code, 3, "refused: {out}{err}");
    assert!(out.contains("refused") && out.contains("dz-developer") && out.contains(&since), "{out}");

    // Renew and release with the token.
    let (code, out, err) =
        run_async(args(&["lock", "renew", "--tenant", TENANT, "--lock-token", &token], &client)).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("renewed"), "{out}");
    let (code, out, err) =
        run_async(args(&["lock", "release", "--tenant", TENANT, "--lock-token", &token], &client)).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("released"), "{out}");

    // Watch a person's privileges: the first event is the full state.
    let watch = args(
        &[
            "watch",
            "privileges",
            "--tenant",
            TENANT,
            "--person",
            "cb-supervisor",
            "--app",
            "Callback",
            "--json",
            "--max-events",
            "1",
        ],
        &client,
    );
    let (code, out, err) = run_async(watch).await;
    assert_eq!(code, 0, "{out}{err}");
    let event: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let snapshot = &event["snapshot"];
    assert_eq!(snapshot["reason"], "RESYNC_REASON_INITIAL", "{event}");
    assert!(
        snapshot["privileges"]["privileges"].as_array().unwrap().iter().any(|p| p == "Callback - Export Reports"),
        "{event}"
    );

    // Raw changes from a revision: a write made before the watch starts is
    // delivered (resumed from the changelog), as one line.
    let mut admin = AdminServiceClient::new(r.tls(&ca, Some(&ca.client("ops-console"))).await.unwrap());
    let before = admin.list_tenants(pb::ListTenantsRequest::default()).await.unwrap().into_inner().revision;
    let mutations: Vec<authzd::model::Mutation> =
        authzd::model::yaml::from_str("- put_person: {id: cli-watch, username: cli-watch}", "test").unwrap();
    let written = admin
        .write(pb::WriteRequest {
            tenant: TENANT.into(),
            mutations: mutations.into_iter().map(authzd::service::convert::mutation_pb).collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .revision;
    let from = before.to_string();
    let watch = args(
        &["watch", "raw", "--tenant", TENANT, "--type", "Person", "--from-revision", &from, "--max-events", "1"],
        &client,
    );
    let (code, out, err) = run_async(watch).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with(&format!("revision {written} tenant {TENANT}")), "{out}");
    assert!(out.contains("put_person") && out.contains("cli-watch"), "{out}");

    // Until Ctrl-C: the first line comes, then SIGINT ends the command cleanly.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_authzd"))
        .args(args(
            &["watch", "privileges", "--tenant", TENANT, "--person", "cb-supervisor", "--app", "Callback"],
            &client,
        ))
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    assert!(line.contains("snapshot (initial)") && line.contains("Callback - Export Reports"), "{line}");
    let status = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
    assert!(status.success(), "Ctrl-C ends `watch` with exit code 0: {status:?}");

    // Without a client certificate the CLI is refused, and says so.
    let plain_tls = vec![
        "--server".to_owned(),
        format!("https://{}", r.addr),
        "--tls-server-name".into(),
        "localhost".into(),
        "--ca".into(),
        f.ca.display().to_string(),
    ];
    let (code, _, err) = run_async(args(&["tenants"], &plain_tls)).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.starts_with("error:"), "{err}");
    assert!(err.contains("the server requires a client certificate: give --cert and --key"), "{err}");
    r.stop().await;
}

/// The server binary as an operator runs it, its log (standard error) read
/// line by line into a buffer.
struct ServerProcess {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl ServerProcess {
    fn start(args: &[String]) -> ServerProcess {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_authzd"))
            .arg("serve")
            .args(args)
            .args(["--listen", &addr.to_string()])
            .env_clear()
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let p = ServerProcess { child, addr, log };
        p.wait_for_log_line(&["listening"]);
        p
    }

    /// Waits (at most 20 s) until the log has a line containing every one of
    /// `parts`, and returns it.
    fn wait_for_log_line(&self, parts: &[&str]) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(line) =
                self.log.lock().unwrap().lines().find(|l| parts.iter().all(|p| l.contains(p))).map(str::to_owned)
            {
                return line;
            }
            assert!(std::time::Instant::now() < deadline, "no log line with {parts:?}:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_handshakes_and_admin_calls_are_logged_and_the_cli_explains_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("authzd test CA");
    let f = files(dir.path(), &ca);
    let stranger = Ca::new("a CA nobody trusts");
    let desk = ca.client("desk-7");
    let desk_cert = write(dir.path(), "desk.crt", &desk.cert);
    let desk_key = write(dir.path(), "desk.key", &desk.key);
    let forged = stranger.client("ops-console");
    let forged_cert = write(dir.path(), "forged.crt", &forged.cert);
    let forged_key = write(dir.path(), "forged.key", &forged.key);
    let stranger_ca = write(dir.path(), "stranger.crt", &stranger.pem());
    let secret = "admin-secret-4f1c9a";
    let path = |p: &Path| p.display().to_string();
    let server = ServerProcess::start(&[
        "--demo".into(),
        "--store".into(),
        format!("sqlite://{}", dir.path().join("authzd.db").display()),
        "--tls-cert".into(),
        path(&f.cert),
        "--tls-key".into(),
        path(&f.key),
        "--tls-client-ca".into(),
        path(&f.ca),
        "--admin-client-cn".into(),
        "ops-console".into(),
        "--admin-token".into(),
        secret.into(),
    ]);
    let url = format!("https://{}", server.addr);
    let cli = |extra: &[&str]| {
        let mut v: Vec<String> = vec!["--server".into(), url.clone(), "--tls-server-name".into(), "localhost".into()];
        v.extend(extra.iter().map(|s| (*s).to_owned()));
        v
    };
    let ca_path = path(&f.ca);

    // No client certificate: the CLI says what to give; the server logs the peer and why.
    let (code, _, err) = run_async(args(&["tenants"], &cli(&["--ca", &ca_path]))).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("the server requires a client certificate: give --cert and --key"), "{err}");
    let line = server.wait_for_log_line(&["refused a TLS handshake", "the client sent no certificate"]);
    assert!(line.contains("peer=127.0.0.1:"), "{line}");

    // A certificate of another CA.
    let (code, _, err) = run_async(args(
        &["tenants"],
        &cli(&["--ca", &ca_path, "--cert", &path(&forged_cert), "--key", &path(&forged_key)]),
    ))
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("the server does not trust the CA that signed this client's certificate"), "{err}");
    server.wait_for_log_line(&["refused a TLS handshake", "the client's certificate is not signed by the client CA"]);

    // The CLI trusts another CA than the server's: it says so, and the server hears the client's refusal.
    let (code, _, err) = run_async(args(
        &["tenants"],
        &cli(&["--ca", &path(&stranger_ca), "--cert", &path(&desk_cert), "--key", &path(&desk_key)]),
    ))
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("the server's certificate is not signed by the CA given with --ca"), "{err}");
    server.wait_for_log_line(&["refused a TLS handshake", "the client refused the server's certificate"]);

    // Plaintext on the TLS port.
    {
        use tokio::io::AsyncWriteExt as _;
        let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
        let _ =
            tokio::time::timeout(Duration::from_secs(5), tokio::io::AsyncReadExt::read(&mut tcp, &mut [0; 64])).await;
    }
    server.wait_for_log_line(&["refused a TLS handshake", "the client did not speak TLS"]);

    // An admin call with a valid certificate the server does not let administer, and a wrong token.
    let desk_client = cli(&["--ca", &ca_path, "--cert", &path(&desk_cert), "--key", &path(&desk_key)]);
    let wrong = format!("{secret}-not");
    let mut export = args(&["export", TENANT], &desk_client);
    export.extend(["--token".to_owned(), wrong.clone()]);
    let (code, _, err) = run_async(export).await;
    assert_ne!(code, 0, "{err}");
    let line = server.wait_for_log_line(&["refused an admin call", "a bearer token that is not the admin token"]);
    assert!(line.contains("peer=127.0.0.1:") && line.contains("PermissionDenied"), "{line}");
    let (code, _, err) = run_async(args(&["export", TENANT], &desk_client)).await;
    assert_ne!(code, 0, "{err}");
    let line = server.wait_for_log_line(&["refused an admin call", "common name `desk-7`"]);
    assert!(line.contains("PermissionDenied") && line.contains("--admin-client-cn"), "{line}");
    // The allowed certificate still works, and no secret reached the log.
    let (code, out, err) = run_async(args(&["tenants"], &client_flags(server.addr, &f))).await;
    assert_eq!(code, 0, "{out}{err}");
    let log = server.log();
    assert!(!log.contains(secret), "a token reached the log:\n{log}");
}

/// One HTTP/JSON call over TLS (HTTP/2 by ALPN) presenting `client`: (HTTP status, body).
async fn json_over_tls(r: &Running, ca: &Ca, client: &Pem, path: &str, body: &str) -> (u16, serde_json::Value) {
    use http_body_util::BodyExt as _;
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject as _;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap()).unwrap();
    let chain = vec![CertificateDer::from_pem_slice(client.cert.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(client.key.as_bytes()).unwrap();
    let mut tls =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(format!("https://localhost{path}"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(hyper::body::Bytes::from(body.to_owned())))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

/// HTTP/JSON goes through the same checks as gRPC with the connection's
/// client certificate: an allowed common name administers, another is
/// refused as over gRPC.
#[tokio::test(flavor = "multi_thread")]
async fn http_json_over_mtls_is_authorized_by_the_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("authzd test CA");
    let mut c = config(&dir.path().join("a.db"));
    c.tls = Some(tls_config(&ca, &ca.server(), true));
    c.admin_client_cns = vec!["ops-console".into()];
    let r = start(c).await;
    let (status, v) =
        json_over_tls(&r, &ca, &ca.client("ops-console"), "/authzd.v1.AdminService/ListTenants", "{}").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["tenants"][0]["id"], TENANT);
    let (status, v) = json_over_tls(&r, &ca, &ca.client("desk-17"), "/authzd.v1.AdminService/ListTenants", "{}").await;
    assert_eq!((status, v["code"].as_str()), (403, Some("PERMISSION_DENIED")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("desk-17"), "{v}");
    // Any verified certificate may decide.
    let check = r#"{"tenant":"acme","person":"cb-supervisor","application":"Callback","privilege":"Callback - Export Reports"}"#;
    let (status, v) = json_over_tls(&r, &ca, &ca.client("desk-17"), "/authzd.v1.DecisionService/Check", check).await;
    assert_eq!((status, v["allowed"].as_bool()), (200, Some(true)), "{v}");
    r.stop().await;
}
