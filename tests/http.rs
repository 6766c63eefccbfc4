//! HTTP on the gRPC listener, through a real server in-process: HTTP/JSON
//! (over HTTP/1.1 and HTTP/2), its errors, CORS, Watch as Server-Sent Events
//! (role changes, heartbeats, resuming a raw subscription with
//! `Last-Event-ID`), the OpenAPI document, bad input of every kind (the
//! server keeps serving after each), and the content-type gate that keeps a
//! gRPC-framed body with another content type from being executed.
//!
//! The client is hyper's own connection API (already in the tree through
//! tonic), so what is tested is the bytes on the wire.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod support;

use authzd::config::ServerConfig;
use authzd::proto::authzd::v1 as pb;
use authzd::service::convert;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use prost::Message as _;
use serde_json::{Value, json};
use std::time::Duration;
use support::Serving;

const TENANT: &str = "acme";
const ORIGIN: &str = "https://desk.example.com";
/// How long a test waits for an event that must come.
const PATIENCE: Duration = Duration::from_secs(15);

// ------------------------------------------------------------------ client

/// One HTTP connection (HTTP/1.1 keep-alive, or HTTP/2 prior knowledge).
enum Conn {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Conn {
    async fn h1(s: &Serving) -> Conn {
        let io = hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(s.addr).await.unwrap());
        let (send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        Conn::H1(send)
    }

    async fn h2(s: &Serving) -> Conn {
        let io = hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(s.addr).await.unwrap());
        let (send, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.unwrap();
        tokio::spawn(conn);
        Conn::H2(send)
    }

    async fn send(&mut self, req: Request<Full<Bytes>>) -> http::Response<Incoming> {
        match self {
            Conn::H1(s) => {
                s.ready().await.unwrap();
                s.send_request(req).await.unwrap()
            }
            Conn::H2(s) => {
                s.ready().await.unwrap();
                s.send_request(req).await.unwrap()
            }
        }
    }

    /// Sends and reads the whole answer.
    async fn call(&mut self, req: Request<Full<Bytes>>) -> Answer {
        let resp = self.send(req).await;
        let (parts, body) = resp.into_parts();
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        let bytes = collected.to_bytes();
        Answer { status: parts.status, headers: parts.headers, body: bytes, trailers }
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// An error answer: its HTTP status, code and message.
    fn error(&self) -> (u16, String, String) {
        assert_eq!(self.header("content-type"), Some("application/json"), "{}", String::from_utf8_lossy(&self.body));
        let v = self.json();
        let field = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("no `{k}` in {v} ({})", self.status)).to_owned();
        assert!(v["details"].is_array(), "every error has `details`: {v}");
        (self.status.as_u16(), field("code"), field("message"))
    }
}

fn request(method: Method, path: &str, content_type: Option<&str>) -> http::request::Builder {
    let mut b = Request::builder().method(method).uri(format!("http://authzd{path}"));
    if let Some(t) = content_type {
        b = b.header("content-type", t);
    }
    b
}

fn post_json(path: &str, body: &Value) -> Request<Full<Bytes>> {
    json_bytes(path, body.to_string())
}

fn json_bytes(path: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    let body = body.into();
    request(Method::POST, path, Some("application/json")).body(Full::new(body)).unwrap()
}

const CHECK: &str = "/authzd.v1.DecisionService/Check";
const WATCH: &str = "/authzd.v1.WatchService/Watch";

fn privilege_check(person: &str) -> Value {
    json!({"tenant": TENANT, "person": person, "application": "Callback", "privilege": "Callback - Export Reports"})
}

/// A check the demo tenant always allows: the server still serves (over a new connection).
async fn still_serving(s: &Serving) {
    let a = Conn::h1(s).await.call(post_json(CHECK, &privilege_check("cb-supervisor"))).await;
    assert_eq!(a.status, StatusCode::OK, "the server keeps answering");
    assert_eq!(a.json()["allowed"], true);
}

fn dir_config(dir: &tempfile::TempDir) -> ServerConfig {
    support::demo_config(&dir.path().join("a.db"))
}

fn write_pb(yaml: &str) -> pb::WriteRequest {
    let mutations: Vec<authzd::model::Mutation> = authzd::model::yaml::from_str(yaml, "test batch").unwrap();
    pb::WriteRequest {
        tenant: TENANT.into(),
        mutations: mutations.into_iter().map(convert::mutation_pb).collect(),
        ..Default::default()
    }
}

// ------------------------------------------------------------------ SSE reading

/// One Server-Sent Event (or a comment).
#[derive(Debug, Clone, PartialEq)]
enum Sse {
    Event { event: Option<String>, id: Option<String>, data: String },
    Comment(String),
}

/// Reads events off a streaming answer.
struct Events {
    body: Incoming,
    buf: String,
}

impl Events {
    fn new(resp: http::Response<Incoming>) -> Events {
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Events { body: resp.into_body(), buf: String::new() }
    }

    /// The next event or comment; `None` when the stream ended.
    async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(i) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..i + 2).collect();
                let (mut event, mut id, mut data, mut comment) = (None, None, Vec::new(), None);
                for line in block.lines() {
                    if let Some(c) = line.strip_prefix(':') {
                        comment = Some(c.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data.push(v.to_owned());
                    }
                }
                return Some(match comment {
                    Some(c) if data.is_empty() => Sse::Comment(c),
                    _ => Sse::Event { event, id, data: data.join("\n") },
                });
            }
            let frame = tokio::time::timeout(PATIENCE, self.body.frame()).await.expect("an event in time")?;
            if let Ok(d) = frame.unwrap().into_data() {
                self.buf.push_str(std::str::from_utf8(&d).unwrap());
            }
        }
    }

    /// The next event that is not a comment or a checkpoint: (id, JSON).
    async fn event(&mut self) -> (u64, Value) {
        loop {
            match self.next().await.expect("the stream goes on") {
                Sse::Comment(_) => continue,
                Sse::Event { event: Some(e), data, .. } => panic!("event `{e}`: {data}"),
                Sse::Event { id, data, .. } => {
                    let v: Value = serde_json::from_str(&data).unwrap();
                    if v.get("checkpoint").is_some() {
                        continue;
                    }
                    return (id.expect("every event has an id").parse().unwrap(), v);
                }
            }
        }
    }
}

fn watch_request(body: &Value) -> Request<Full<Bytes>> {
    let mut r = post_json(WATCH, body);
    r.headers_mut().insert("accept", "text/event-stream".parse().unwrap());
    r
}

fn desktop() -> Value {
    json!({"privileges": {"tenant": TENANT, "person": "wcb-agent-full", "application": "WorkspaceWebCallback"}})
}

// ------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread")]
async fn json_check_over_http1_and_http2_and_every_answer_is_proto3_json() {
    let dir = tempfile::tempdir().unwrap();
    let s = support::serve(dir_config(&dir)).await;
    for mut conn in [Conn::h1(&s).await, Conn::h2(&s).await] {
        // Several calls on one connection (keep-alive, or streams of one h2 connection).
        for _ in 0..3 {
            let a = conn.call(post_json(CHECK, &privilege_check("cb-supervisor"))).await;
            assert_eq!(a.status, StatusCode::OK);
            assert_eq!(a.header("content-type"), Some("application/json"));
            let v = a.json();
            assert_eq!(v["allowed"], true, "{v}");
            assert_eq!(v["reason"], "REASON_ALLOWED");
            assert_eq!(v["revision"], "1", "64-bit integers are strings in proto3 JSON");
        }
        let v = conn.call(post_json(CHECK, &privilege_check("cb-monitor"))).await.json();
        assert_eq!(
            (v["allowed"].clone(), v["reason"].clone()),
            (json!(false), json!("REASON_MISSING_PRIVILEGE")),
            "defaults are written: {v}"
        );
        // Another service, a request with nested messages and an enum by name.
        let v = conn
            .call(post_json(
                "/authzd.v1.DecisionService/Explain",
                &json!({"tenant": TENANT, "person": "adv-user-a", "permission": "PERMISSION_READ",
                        "object": {"type": "Metric", "id": "FrontlineAdvisor.Agent.Voice.nch"}}),
            ))
            .await
            .json();
        assert!(v["evidence"].is_object(), "{v}");
        // Media type parameters are fine.
        let mut r = post_json(CHECK, &privilege_check("cb-supervisor"));
        r.headers_mut().insert("content-type", "application/json; charset=utf-8".parse().unwrap());
        assert_eq!(conn.call(r).await.json()["allowed"], true);
        // An empty body is the empty message.
        let a = conn.call(json_bytes("/authzd.v1.AdminService/ListTenants", "")).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.json()["tenants"][0]["id"], TENANT);
    }
    // The same answer as gRPC gives.
    let mut d = s.decisions().await;
    let grpc = d
        .check(pb::CheckRequest {
            tenant: TENANT.into(),
            person: "cb-monitor".into(),
            application: Some("Callback".into()),
            privilege: Some("Callback - Export Reports".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(convert::reason_code(grpc.reason), "MISSING_PRIVILEGE");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_errors_become_json_with_their_code_and_http_status() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = dir_config(&dir);
    config.admin_token = Some("adm1n".into());
    config.decision_token = Some("d3cide".into());
    let s = support::serve(config).await;
    let mut c = Conn::h1(&s).await;

    // UNAUTHENTICATED: the interceptors run as for gRPC.
    let a = c.call(post_json(CHECK, &privilege_check("cb-supervisor"))).await;
    let (status, code, message) = a.error();
    assert_eq!((status, code.as_str()), (401, "UNAUTHENTICATED"));
    assert!(message.contains("Bearer <token>"), "{message}");
    assert_eq!(a.header("www-authenticate"), Some("Bearer"));
    let with_token = |path: &str, body: Value, token: &str| {
        let mut r = post_json(path, &body);
        r.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        r
    };
    let a = c.call(with_token(CHECK, privilege_check("cb-supervisor"), "d3cide")).await;
    assert_eq!((a.status, a.json()["allowed"].clone()), (StatusCode::OK, json!(true)));

    // PERMISSION_DENIED: the decision token may not administer... it is UNAUTHENTICATED for admin calls;
    // a raw watch with the decision token is PERMISSION_DENIED.
    let mut r = with_token(WATCH, json!({"raw": {"tenant": TENANT}}), "d3cide");
    r.headers_mut().insert("accept", "text/event-stream".parse().unwrap());
    let (status, code, message) = c.call(r).await.error();
    assert_eq!((status, code.as_str()), (403, "PERMISSION_DENIED"), "{message}");

    // NOT_FOUND.
    let (status, code, message) = c
        .call(with_token(
            "/authzd.v1.DecisionService/ListVisible",
            json!({"tenant": "nope", "person": "p", "type": "Metric"}),
            "d3cide",
        ))
        .await
        .error();
    assert_eq!((status, code.as_str()), (404, "NOT_FOUND"), "{message}");

    // INVALID_ARGUMENT from the handler, with the same field path and message as over gRPC.
    let bad = json!({"tenant": TENANT, "mutations": [{"putPerson": {"id": "", "username": "x"}}]});
    let (status, code, message) = c.call(with_token("/authzd.v1.AdminService/Write", bad, "adm1n")).await.error();
    assert_eq!((status, code.as_str()), (400, "INVALID_ARGUMENT"));
    let mut admin = {
        let token: tonic::metadata::MetadataValue<_> = "Bearer adm1n".parse().unwrap();
        authzd::proto::authzd::v1::admin_service_client::AdminServiceClient::with_interceptor(
            s.channel().await,
            move |mut req: tonic::Request<()>| {
                req.metadata_mut().insert("authorization", token.clone());
                Ok(req)
            },
        )
    };
    let grpc = admin
        .write(pb::WriteRequest {
            tenant: TENANT.into(),
            mutations: vec![pb::Mutation {
                op: Some(pb::mutation::Op::PutPerson(pb::Person {
                    id: String::new(),
                    username: "x".into(),
                    ..Default::default()
                })),
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(message, grpc.message(), "the same message (and field path) as over gRPC");
    assert!(message.starts_with("mutations[0]"), "{message}");

    // FAILED_PRECONDITION: 409.
    let stale = json!({"tenant": TENANT, "expectedRevision": "0", "mutations": [{"putPerson": {"id": "late", "username": "late"}}]});
    let (status, code, _) = c.call(with_token("/authzd.v1.AdminService/Write", stale, "adm1n")).await.error();
    assert_eq!((status, code.as_str()), (409, "FAILED_PRECONDITION"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_a_clear_json_error_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = dir_config(&dir);
    config.max_message_bytes = 64 * 1024;
    config.http.cors_allowed_origins = vec![ORIGIN.into()];
    let s = support::serve(config).await;
    let mut c = Conn::h1(&s).await;

    // Malformed JSON.
    let (status, code, message) = c.call(json_bytes(CHECK, r#"{"tenant": "acme", "person": "#)).await.error();
    assert_eq!((status, code.as_str()), (400, "INVALID_ARGUMENT"));
    assert!(message.contains("not valid JSON"), "{message}");
    still_serving(&s).await;

    // An unknown field: named.
    let (status, code, message) = c.call(post_json(CHECK, &json!({"tenant": TENANT, "persn": "x"}))).await.error();
    assert_eq!((status, code.as_str()), (400, "INVALID_ARGUMENT"));
    assert!(message.contains("persn"), "{message}");
    still_serving(&s).await;

    // A wrong type: the field is named.
    let (status, _, message) = c.call(post_json(CHECK, &json!({"tenant": TENANT, "person": 42}))).await.error();
    assert_eq!(status, 400);
    assert!(message.contains("invalid type") && message.contains("field `person`"), "{message}");
    let (status, _, message) =
        c.call(post_json(CHECK, &json!({"tenant": TENANT, "permission": "PERMISSION_FLY"}))).await.error();
    assert_eq!(status, 400, "{message}");
    still_serving(&s).await;

    // An oversized body: 413 naming the limit (declared length, and a chunked body without one).
    let big = format!(r#"{{"tenant": "{}"}}"#, "x".repeat(70 * 1024));
    let (status, code, message) = c.call(json_bytes(CHECK, big.clone())).await.error();
    assert_eq!((status, code.as_str()), (413, "RESOURCE_EXHAUSTED"));
    assert!(message.contains("65536") && message.contains("--max-message-bytes"), "{message}");
    let mut h2 = Conn::h2(&s).await;
    let mut r = json_bytes(CHECK, big);
    r.headers_mut().remove("content-length");
    let (status, _, _) = h2.call(r).await.error();
    assert_eq!(status, 413);
    still_serving(&s).await;
    // The refused body was not read: that connection is closed; go on with a new one.
    let mut c = Conn::h1(&s).await;

    // A content type that is neither JSON nor gRPC.
    let a = c.call(request(Method::POST, CHECK, Some("text/plain")).body(Full::new(Bytes::from("{}"))).unwrap()).await;
    let (status, _, message) = a.error();
    assert_eq!(status, 415);
    assert!(message.contains("text/plain") && message.contains("application/json"), "{message}");
    still_serving(&s).await;

    // An origin that is not allowed: its preflight is refused, its requests get no CORS headers.
    let preflight = Request::builder()
        .method(Method::OPTIONS)
        .uri(format!("http://authzd{CHECK}"))
        .header("origin", "https://evil.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let a = c.call(preflight).await;
    let (status, code, message) = a.error();
    assert_eq!((status, code.as_str()), (403, "PERMISSION_DENIED"));
    assert!(message.contains("https://evil.example.com"), "{message}");
    assert!(a.headers.keys().all(|k| !k.as_str().starts_with("access-control-")), "{:?}", a.headers);
    let mut r = post_json(CHECK, &privilege_check("cb-supervisor"));
    r.headers_mut().insert("origin", "https://evil.example.com".parse().unwrap());
    let a = c.call(r).await;
    assert!(a.headers.keys().all(|k| !k.as_str().starts_with("access-control-")), "{:?}", a.headers);
    still_serving(&s).await;

    // A bad Last-Event-ID.
    let mut r = watch_request(&desktop());
    r.headers_mut().insert("last-event-id", "yesterday".parse().unwrap());
    let (status, code, message) = c.call(r).await.error();
    assert_eq!((status, code.as_str()), (400, "INVALID_ARGUMENT"));
    assert!(message.contains("Last-Event-ID") && message.contains("yesterday"), "{message}");
    still_serving(&s).await;

    // An unknown path, a wrong method.
    assert_eq!(c.call(post_json("/authzd.v1.DecisionService/Chek", &json!({}))).await.error().0, 404);
    let get = Request::builder().uri(format!("http://authzd{CHECK}")).body(Full::new(Bytes::new())).unwrap();
    assert_eq!(c.call(get).await.error().0, 405);
    still_serving(&s).await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grpc_framed_body_with_another_content_type_is_never_executed() {
    let dir = tempfile::tempdir().unwrap();
    let s = support::serve(dir_config(&dir)).await;
    let revision = |s: &Serving| s.replica.snapshot().revision();
    let before = revision(&s);
    let message = write_pb("- put_person: {id: intruder, username: intruder}").encode_to_vec();
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    let framed = Bytes::from(framed);
    for conn in [Conn::h2(&s).await, Conn::h1(&s).await] {
        let mut conn = conn;
        for content_type in [Some("text/plain"), Some("application/x-protobuf"), Some("application/octet-stream"), None]
        {
            let r = request(Method::POST, "/authzd.v1.AdminService/Write", content_type)
                .header("te", "trailers")
                .body(Full::new(framed.clone()))
                .unwrap();
            let a = conn.call(r).await;
            assert_eq!(
                a.status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{content_type:?}: {}",
                String::from_utf8_lossy(&a.body)
            );
            assert!(
                a.trailers.as_ref().is_none_or(|t| t.get("grpc-status").is_none()),
                "not answered by a gRPC handler"
            );
        }
    }
    assert_eq!(revision(&s), before, "nothing was written");
    let v = Conn::h1(&s)
        .await
        .call(post_json(
            "/authzd.v1.DecisionService/Check",
            &json!({"tenant": TENANT, "person": "intruder", "permission": "PERMISSION_READ", "object": {"type": "Script", "id": "x"}}),
        ))
        .await
        .json();
    assert_eq!(v["reason"], "REASON_UNKNOWN_SUBJECT", "the person was never created: {v}");
    // The same bytes as gRPC are executed.
    let mut grpc = s.admin().await;
    let r = grpc.write(write_pb("- put_person: {id: intruder, username: intruder}")).await.unwrap().into_inner();
    assert_eq!(r.revision, before + 1);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_preflight_and_actual_requests_from_an_allowed_origin() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = dir_config(&dir);
    config.http.cors_allowed_origins = vec![ORIGIN.into(), "http://localhost:5173".into()];
    let s = support::serve(config).await;
    let mut c = Conn::h1(&s).await;
    for (path, method, headers) in [
        (CHECK, "POST", "content-type, authorization"),
        ("/authzd.v1.DecisionService/Check", "POST", "content-type, x-grpc-web, x-user-agent, grpc-timeout"),
        (WATCH, "GET", "last-event-id"),
    ] {
        let preflight = Request::builder()
            .method(Method::OPTIONS)
            .uri(format!("http://authzd{path}"))
            .header("origin", ORIGIN)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", headers)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let a = c.call(preflight).await;
        assert_eq!(a.status, StatusCode::NO_CONTENT);
        assert_eq!(a.header("access-control-allow-origin"), Some(ORIGIN));
        assert!(a.header("vary").unwrap().contains("Origin"));
        assert!(a.header("access-control-allow-methods").unwrap().contains(method));
        let allowed = a.header("access-control-allow-headers").unwrap();
        for h in headers.split(", ").chain(["connect-protocol-version", "last-event-id", "grpc-timeout"]) {
            assert!(allowed.contains(h), "{h} in {allowed}");
        }
        assert_eq!(a.header("access-control-max-age"), Some("7200"));
    }
    // The actual JSON request.
    let mut r = post_json(CHECK, &privilege_check("cb-supervisor"));
    r.headers_mut().insert("origin", ORIGIN.parse().unwrap());
    let a = c.call(r).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("access-control-allow-origin"), Some(ORIGIN));
    assert_eq!(a.header("vary"), Some("Origin"));
    let exposed = a.header("access-control-expose-headers").unwrap();
    for h in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        assert!(exposed.contains(h), "{h} in {exposed}");
    }
    // An error answer too (scripts must be able to read it).
    let mut r = post_json(CHECK, &json!({"bogus": 1}));
    r.headers_mut().insert("origin", "http://localhost:5173".parse().unwrap());
    let a = c.call(r).await;
    assert_eq!(
        (a.status, a.header("access-control-allow-origin")),
        (StatusCode::BAD_REQUEST, Some("http://localhost:5173"))
    );
    // gRPC-Web from the browser: the same headers on the gRPC answer.
    let msg = pb::CheckRequest {
        tenant: TENANT.into(),
        person: "cb-supervisor".into(),
        application: Some("Callback".into()),
        privilege: Some("Callback - Export Reports".into()),
        ..Default::default()
    }
    .encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    body.extend_from_slice(&msg);
    let r = request(Method::POST, CHECK, Some("application/grpc-web+proto"))
        .header("x-grpc-web", "1")
        .header("origin", ORIGIN)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let a = c.call(r).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("content-type"), Some("application/grpc-web+proto"));
    assert_eq!(a.header("access-control-allow-origin"), Some(ORIGIN));
    assert!(String::from_utf8_lossy(&a.body).contains("grpc-status:0"));
    // No Origin: not a CORS request, nothing added.
    let a = c.call(post_json(CHECK, &privilege_check("cb-supervisor"))).await;
    assert!(a.headers.keys().all(|k| !k.as_str().starts_with("access-control-")));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_as_server_sent_events_with_role_changes_and_heartbeats() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = dir_config(&dir);
    config.http.sse_heartbeat = Duration::from_millis(300);
    let s = support::serve(config).await;
    let mut admin = s.admin().await;
    for mut conn in [Conn::h1(&s).await, Conn::h2(&s).await] {
        let mut events = Events::new(conn.send(watch_request(&desktop())).await);
        let (id, v) = events.event().await;
        let snapshot = &v["snapshot"];
        assert_eq!(snapshot["reason"], "RESYNC_REASON_INITIAL", "{v}");
        assert_eq!(snapshot["revision"].as_str().unwrap().parse::<u64>().unwrap(), id);
        let held = snapshot["privileges"]["privileges"].as_array().unwrap();
        assert!(held.contains(&json!("Web Callback - Can Mark Done")), "{v}");
        // Idle: heartbeats.
        let mut comments = 0;
        while comments < 2 {
            match events.next().await.unwrap() {
                Sse::Comment(c) => {
                    assert_eq!(c, "keep-alive");
                    comments += 1;
                }
                Sse::Event { data, .. } => assert!(data.contains("checkpoint"), "only checkpoints meanwhile: {data}"),
            }
        }
        // A role change: PrivilegesChanged, its id the write's revision.
        for (without, lost) in [(&["Web Callback - Can Mark Done"][..], true), (&[][..], false)] {
            let revision =
                admin.write(write_pb(&support::web_callback_agent_role(without))).await.unwrap().into_inner().revision;
            let (id, v) = events.event().await;
            let c = &v["privilegesChanged"];
            assert_eq!(id, revision, "{v}");
            assert_eq!(c["revision"], json!(revision.to_string()));
            let (gained, lost_list) = (c["gained"].as_array().unwrap(), c["lost"].as_array().unwrap());
            let changed = if lost { lost_list } else { gained };
            assert_eq!(changed, &vec![json!("Web Callback - Can Mark Done")], "{v}");
        }
    }
    // A client that goes away ends its subscription (the two streams above are gone).
    let open = || s.watch.stats.open_streams.load(std::sync::atomic::Ordering::Relaxed);
    let t0 = std::time::Instant::now();
    while open() > 0 {
        assert!(t0.elapsed() < PATIENCE, "{} streams still open after their clients left", open());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // GET with the request in the query (EventSource).
    let query: String = desktop().to_string().bytes().map(|b| format!("%{b:02X}")).collect();
    let r = Request::builder()
        .uri(format!("http://authzd{WATCH}?request={query}"))
        .header("accept", "text/event-stream")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let mut events = Events::new(Conn::h1(&s).await.send(r).await);
    assert!(events.event().await.1["snapshot"].is_object());
    // An unknown tenant is a JSON error, not a stream.
    let r = watch_request(&json!({"privileges": {"tenant": "nope", "person": "p", "application": "Callback"}}));
    let (status, code, _) = Conn::h1(&s).await.call(r).await.error();
    assert_eq!((status, code.as_str()), (404, "NOT_FOUND"));
    // Shutdown ends the stream with an error event (reconnect).
    let stop = tokio::spawn(s.stop());
    loop {
        match events.next().await {
            Some(Sse::Event { event: Some(e), data, .. }) => {
                assert_eq!(e, "error");
                assert_eq!(serde_json::from_str::<Value>(&data).unwrap()["code"], "UNAVAILABLE");
                break;
            }
            Some(_) => continue,
            None => panic!("the stream ended without saying why"),
        }
    }
    assert!(events.next().await.is_none(), "then the stream ends");
    tokio::time::timeout(PATIENCE, stop).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_raw_subscription_resumes_from_last_event_id_without_gap_or_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let s = support::serve(dir_config(&dir)).await;
    let mut admin = s.admin().await;
    let put = |n: usize| write_pb(&format!("- put_person: {{id: temp-{n}, username: temp-{n}}}"));
    let person_of = |v: &Value| -> String {
        v["rawChange"]["mutations"][0]["putPerson"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("a put_person: {v}"))
            .to_owned()
    };
    let raw = json!({"raw": {"tenant": TENANT, "types": ["Person"]}});

    let mut conn = Conn::h1(&s).await;
    // From the current revision (not 0, "from now", whose registration may
    // trail the answer's headers): the writes below are either replayed or live.
    let now = s.replica.snapshot().revision();
    let first = json!({"raw": {"tenant": TENANT, "types": ["Person"], "fromRevision": now.to_string()}});
    let mut events = Events::new(conn.send(watch_request(&first)).await);
    let r1 = admin.write(put(1)).await.unwrap().into_inner().revision;
    let r2 = admin.write(put(2)).await.unwrap().into_inner().revision;
    let (id1, v1) = events.event().await;
    let (id2, v2) = events.event().await;
    assert_eq!((id1, person_of(&v1)), (r1, "temp-1".to_owned()));
    assert_eq!((id2, person_of(&v2)), (r2, "temp-2".to_owned()));
    drop(events);
    drop(conn);

    // Written while the client is away.
    let r3 = admin.write(put(3)).await.unwrap().into_inner().revision;
    let r4 = admin.write(put(4)).await.unwrap().into_inner().revision;

    // Resume after the first event: 2 (again: it was received, but the
    // client says it has only 1), 3, 4, then live 5 — each once, in order.
    let mut r = watch_request(&raw);
    r.headers_mut().insert("last-event-id", id1.to_string().parse().unwrap());
    let mut events = Events::new(Conn::h2(&s).await.send(r).await);
    let mut got = Vec::new();
    for _ in 0..3 {
        let (id, v) = events.event().await;
        got.push((id, person_of(&v)));
    }
    assert_eq!(got, vec![(r2, "temp-2".to_owned()), (r3, "temp-3".to_owned()), (r4, "temp-4".to_owned())]);
    let r5 = admin.write(put(5)).await.unwrap().into_inner().revision;
    let (id, v) = events.event().await;
    assert_eq!((id, person_of(&v)), (r5, "temp-5".to_owned()), "live after the replay, no duplicate");

    // Resume from the last id: nothing replayed, the next write only.
    drop(events);
    let mut r = watch_request(&raw);
    r.headers_mut().insert("last-event-id", r5.to_string().parse().unwrap());
    let mut events = Events::new(Conn::h1(&s).await.send(r).await);
    let r6 = admin.write(put(6)).await.unwrap().into_inner().revision;
    let (id, v) = events.event().await;
    assert_eq!((id, person_of(&v)), (r6, "temp-6".to_owned()));

    // A computed subscription with Last-Event-ID starts again from its full state.
    let mut r = watch_request(&desktop());
    r.headers_mut().insert("last-event-id", "3".parse().unwrap());
    let mut desk = Events::new(Conn::h1(&s).await.send(r).await);
    let (_, v) = desk.event().await;
    assert_eq!(v["snapshot"]["reason"], "RESYNC_REASON_INITIAL", "{v}");
    drop((events, desk));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_has_a_path_for_every_rpc() {
    let dir = tempfile::tempdir().unwrap();
    let s = support::serve(dir_config(&dir)).await;
    let get = Request::builder().uri("http://authzd/openapi.json").body(Full::new(Bytes::new())).unwrap();
    let a = Conn::h1(&s).await.call(get).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("content-type"), Some("application/json"));
    let doc = a.json();
    assert_eq!(doc["openapi"], "3.0.3");
    let set = prost_types::FileDescriptorSet::decode(authzd::proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut rpcs = 0;
    for file in set.file.iter().filter(|f| f.package() == "authzd.v1") {
        for svc in &file.service {
            for m in &svc.method {
                let path = format!("/authzd.v1.{}/{}", svc.name(), m.name());
                let item = &doc["paths"][&path];
                assert!(item["post"].is_object(), "no path for {path}");
                let input = m.input_type().trim_start_matches('.');
                assert_eq!(
                    item["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"],
                    format!("#/components/schemas/{input}")
                );
                assert!(doc["components"]["schemas"][input]["properties"].is_object(), "{input}");
                rpcs += 1;
            }
        }
    }
    assert!(rpcs >= 15, "{rpcs} RPCs");
    // Comments become descriptions.
    let check = &doc["components"]["schemas"]["authzd.v1.CheckRequest"];
    assert!(check["properties"]["person"]["description"].as_str().unwrap().contains("Person id"), "{check}");
    assert!(doc["paths"][CHECK]["post"]["description"].as_str().unwrap().contains("may the person"));
    assert_eq!(
        doc["components"]["schemas"]["authzd.v1.CheckRequest"]["properties"]["atLeastRevision"]["type"],
        "string"
    );
    s.stop().await;
}

#[test]
fn cors_origins_and_the_heartbeat_come_from_flags_or_the_file() {
    use clap::Parser as _;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("authzd.yaml");
    let parse = |args: &[&str]| {
        let mut argv = vec!["authzd", "serve"];
        argv.extend_from_slice(args);
        match authzd::cli::Cli::try_parse_from(argv).unwrap().command {
            authzd::cli::Command::Serve(a) => authzd::config::ServerConfig::from_args(&a),
            _ => unreachable!(),
        }
    };
    std::fs::write(
        &file,
        "cors-allowed-origin: [https://a.example.com, 'http://localhost:5173']\nsse-heartbeat-ms: 500\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let c = parse(&["--config", path]).unwrap();
    assert_eq!(c.http.cors_allowed_origins, vec!["https://a.example.com", "http://localhost:5173"]);
    assert_eq!(c.http.sse_heartbeat, Duration::from_millis(500));
    // The flag replaces the file's whole list.
    let c = parse(&["--config", path, "--cors-allowed-origin", "https://b.example.com,https://c.example.com"]).unwrap();
    assert_eq!(c.http.cors_allowed_origins, vec!["https://b.example.com", "https://c.example.com"]);
    // A bad origin in the file names the file and the key; on the command line, the flag.
    std::fs::write(&file, "cors-allowed-origin: https://a.example.com/app\n").unwrap();
    let e = parse(&["--config", path]).unwrap_err().to_string();
    assert!(e.contains("authzd.yaml") && e.contains("key `cors-allowed-origin`") && e.contains("no path"), "{e}");
    let e = parse(&["--cors-allowed-origin", "desk.example.com"]).unwrap_err().to_string();
    assert!(e.starts_with("--cors-allowed-origin:"), "{e}");
    // Defaults: no origin, a 15 s heartbeat.
    let c = parse(&[]).unwrap();
    assert!(c.http.cors_allowed_origins.is_empty());
    assert_eq!(c.http.sse_heartbeat, Duration::from_secs(15));
}

/// The environment variable is read, and it overrides the file (the binary
/// itself, which refuses the configuration before opening anything).
#[test]
fn the_cors_environment_variable_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("authzd.yaml");
    std::fs::write(&file, "cors-allowed-origin: https://a.example.com\n").unwrap();
    let store = format!("sqlite://{}", dir.path().join("a.db").display());
    let run = |with_file: bool| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_authzd"));
        c.args(["serve", "--store", &store, "--listen", "127.0.0.1:0"])
            .env("AUTHZD_CORS_ALLOWED_ORIGIN", "https://e.example.com,desk.example.com");
        if with_file {
            c.arg("--config").arg(&file);
        }
        c.output().unwrap()
    };
    for with_file in [false, true] {
        let out = run(with_file);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "with_file {with_file}: {stderr}");
        assert!(stderr.contains("--cors-allowed-origin: `desk.example.com` is not an origin"), "{stderr}");
    }
    assert!(!dir.path().join("a.db").exists(), "refused before opening the store");
}

/// `authzd <command> --json` prints the same JSON as the HTTP API answers
/// (the proto3 mapping of the response): one schema for scripts of both.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_json_is_the_http_api_json() {
    let dir = tempfile::tempdir().unwrap();
    let s = support::serve(dir_config(&dir)).await;
    let server = s.url();
    let cli = |args: Vec<String>| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_authzd")).args(&args).env_clear().output().unwrap();
        serde_json::from_slice::<Value>(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
    };
    let args = |v: &[&str]| {
        v.iter().map(|s| (*s).to_owned()).chain(["--server".into(), server.clone(), "--json".into()]).collect()
    };
    for person in ["cb-supervisor", "cb-monitor"] {
        let from_cli = tokio::task::spawn_blocking({
            let a = args(&[
                "check",
                "--tenant",
                TENANT,
                "--person",
                person,
                "--app",
                "Callback",
                "--privilege",
                "Callback - Export Reports",
            ]);
            move || cli(a)
        })
        .await
        .unwrap();
        let from_http = Conn::h1(&s).await.call(post_json(CHECK, &privilege_check(person))).await.json();
        assert_eq!(from_cli, from_http, "{person}");
    }
    let from_cli = tokio::task::spawn_blocking({
        let a =
            args(&["privileges", "--tenant", TENANT, "--person", "wcb-agent-full", "--app", "WorkspaceWebCallback"]);
        move || cli(a)
    })
    .await
    .unwrap();
    let from_http = Conn::h1(&s)
        .await
        .call(post_json(
            "/authzd.v1.DecisionService/EffectivePrivileges",
            &json!({"tenant": TENANT, "person": "wcb-agent-full", "application": "WorkspaceWebCallback"}),
        ))
        .await
        .json();
    assert_eq!(from_cli, from_http);
    assert!(from_cli["effective"]["privileges"].as_array().is_some_and(|p| p.len() == 9), "{from_cli}");
    s.stop().await;
}
