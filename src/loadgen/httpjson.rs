//! The HTTP/JSON workloads of `authzd bench`: `check-http` (JSON `Check`s
//! in a closed loop, over HTTP/1.1 keep-alive connections — one per request
//! in flight — or, with `--http2`, over `--connections` HTTP/2 connections)
//! and `watch-sse` (the `watch` workload with its subscribers on Server-Sent
//! Events instead of gRPC streams: see [`super::fanout`]).
//!
//! Requests are the same pools as `check-privilege` and `check-object`
//! (alternately), turned into proto3 JSON once before the run; every answer
//! is parsed and checked against the local view like the gRPC ones. Events
//! are parsed back into `WatchEvent`s so the fan-out's checks apply
//! unchanged. The client is hyper's connection API (in the tree through
//! tonic); plain HTTP only (TCP or `--unix-socket`). Many SSE subscribers
//! over HTTP/1.1 need as many connections (and file descriptors): use
//! `--http2` for thousands.

use super::pools::{Expect, Pools};
use super::tally::{Live, Sample, Tally, WorkloadResult, progress};
use super::{BenchArgs, Workload};
use crate::proto::authzd::v1 as pb;
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// One HTTP connection to the server.
#[derive(Clone)]
pub enum Conn {
    /// HTTP/1.1: one request at a time.
    H1(Arc<tokio::sync::Mutex<hyper::client::conn::http1::SendRequest<Full<Bytes>>>>),
    /// HTTP/2 (prior knowledge): requests multiplexed.
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

/// The server's `host:port` from `--server` (plain `http://` only).
fn authority(a: &BenchArgs) -> Result<String, String> {
    let uri: http::Uri = a.server.parse().map_err(|e| format!("--server `{}`: {e}", a.server))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("--server `{}`: the HTTP workloads speak plain `http://` only", a.server));
    }
    let auth = uri.authority().ok_or_else(|| format!("--server `{}` has no host", a.server))?;
    Ok(match auth.port() {
        Some(_) => auth.to_string(),
        None => format!("{}:80", auth.host()),
    })
}

async fn handshake<IO>(io: IO, h2: bool) -> Result<Conn, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = hyper_util::rt::TokioIo::new(io);
    if h2 {
        let (send, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .map_err(|e| format!("HTTP/2 handshake: {e}"))?;
        tokio::spawn(conn);
        Ok(Conn::H2(send))
    } else {
        let (send, conn) =
            hyper::client::conn::http1::handshake(io).await.map_err(|e| format!("HTTP/1.1 handshake: {e}"))?;
        tokio::spawn(conn);
        Ok(Conn::H1(Arc::new(tokio::sync::Mutex::new(send))))
    }
}

/// Opens one connection (TCP, or the Unix socket), HTTP/2 when `h2`.
pub async fn connect(a: &BenchArgs, h2: bool) -> Result<Conn, String> {
    #[cfg(unix)]
    if let Some(path) = &a.unix_socket {
        let s = tokio::net::UnixStream::connect(path).await.map_err(|e| format!("unix:{}: {e}", path.display()))?;
        return handshake(s, h2).await;
    }
    let addr = authority(a)?;
    let s = tokio::net::TcpStream::connect(&addr).await.map_err(|e| format!("{addr}: {e}"))?;
    let _ = s.set_nodelay(true);
    handshake(s, h2).await
}

impl Conn {
    /// Sends one request; the answer's head and streaming body.
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<http::Response<Incoming>, String> {
        match self {
            Conn::H1(s) => {
                let mut s = s.lock().await;
                s.ready().await.map_err(|e| e.to_string())?;
                s.send_request(req).await.map_err(|e| e.to_string())
            }
            Conn::H2(s) => {
                let mut s = s.clone();
                s.ready().await.map_err(|e| e.to_string())?;
                s.send_request(req).await.map_err(|e| e.to_string())
            }
        }
    }
}

/// A JSON `POST` to `path`, with the bearer token when given.
pub fn post(
    path: &str,
    json: Bytes,
    token: Option<&str>,
    accept: &'static str,
) -> Result<Request<Full<Bytes>>, String> {
    let mut b = Request::post(format!("http://authzd{path}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, accept);
    if let Some(t) = token {
        b = b.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(Full::new(json)).map_err(|e| e.to_string())
}

/// A message as proto3 JSON (through the server's own descriptor set).
pub fn to_json<M: prost::Message>(
    api: &crate::http::gateway::Api,
    path: &str,
    m: &M,
    input: bool,
) -> Result<Bytes, String> {
    let rpc = api.method(path).ok_or_else(|| format!("no RPC `{path}`"))?;
    let desc = if input { rpc.input.clone() } else { rpc.output.clone() };
    let dm = prost_reflect::DynamicMessage::decode(desc, m.encode_to_vec().as_slice()).map_err(|e| e.to_string())?;
    serde_json::to_vec(&dm).map(Bytes::from).map_err(|e| e.to_string())
}

const CHECK: &str = "/authzd.v1.DecisionService/Check";

async fn check(conn: &Conn, json: &Bytes, want: &Expect, token: Option<&str>) -> Sample {
    let req = match post(CHECK, json.clone(), token, "application/json") {
        Ok(r) => r,
        Err(e) => return Sample::Error(e),
    };
    let resp = match conn.send(req).await {
        Ok(r) => r,
        Err(e) => return Sample::Error(format!("HTTP: {e}")),
    };
    let status = resp.status();
    let body = match resp.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Sample::Error(format!("reading the answer: {e}")),
    };
    if status != StatusCode::OK {
        return Sample::Error(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
    }
    let v: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return Sample::Error(format!("the answer is not JSON: {e}")),
    };
    let allowed = v["allowed"].as_bool().unwrap_or(false);
    let reason = v["reason"].as_str().and_then(pb::Reason::from_str_name).map_or(-1, |r| r as i32);
    if want.matches(allowed, reason) {
        Sample::Ok(1)
    } else {
        Sample::Mismatch(
            1,
            format!(
                "{}: got {allowed} {}, want {} {}",
                String::from_utf8_lossy(json),
                v["reason"],
                want.allowed,
                crate::service::convert::reason_code(want.reason)
            ),
        )
    }
}

/// Runs `check-http`.
pub async fn run_check(a: &BenchArgs, pools: &Arc<Pools>) -> WorkloadResult {
    let name = Workload::CheckHttp.name();
    let failed = |msg: String| {
        let mut t = Tally::new();
        t.errors = 1;
        t.messages.push(format!("error: {msg}"));
        WorkloadResult::from_tally(name, t, Duration::ZERO)
    };
    let api = match crate::http::gateway::Api::new() {
        Ok(api) => api,
        Err(e) => return failed(e),
    };
    // The privilege and object questions, alternately.
    let mut requests = Vec::new();
    for k in 0..pools.privilege.len().max(pools.object.len()) {
        for (req, want) in [pools.privilege.get(k), pools.object.get(k)].into_iter().flatten() {
            match to_json(&api, CHECK, req, true) {
                Ok(j) => requests.push((j, *want)),
                Err(e) => return failed(e),
            }
        }
    }
    if requests.is_empty() {
        return failed("no requests: the tenant has neither privileges nor objects".into());
    }
    let requests = Arc::new(requests);
    let mut conns = Vec::new();
    let n = if a.http2 { a.connections.max(1) } else { a.concurrency };
    for _ in 0..n {
        match connect(a, a.http2).await {
            Ok(c) => conns.push(c),
            Err(e) => return failed(e),
        }
    }
    let start = Instant::now();
    let warm_end = start + a.warmup();
    let end = warm_end + a.duration();
    let live = Arc::new(Live::default());
    let seq = Arc::new(AtomicU64::new(0));
    let ticker = progress(name, Arc::clone(&live), start, end, a.quiet);
    let mut tasks = Vec::with_capacity(a.concurrency);
    for i in 0..a.concurrency {
        let conn = conns[i % conns.len()].clone();
        let (requests, live, seq, token) =
            (Arc::clone(&requests), Arc::clone(&live), Arc::clone(&seq), a.token.clone());
        tasks.push(tokio::spawn(async move {
            let mut t = Tally::new();
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let k = usize::try_from(seq.fetch_add(1, Ordering::Relaxed)).unwrap_or(0) % requests.len();
                let (json, want) = &requests[k];
                let s = check(&conn, json, want, token.as_deref()).await;
                let t1 = Instant::now();
                t.record(s, t1 - t0, t0 >= warm_end && t1 <= end, &live);
            }
            t
        }));
    }
    let mut total = Tally::new();
    for task in tasks {
        match task.await {
            Ok(t) => total.merge(t),
            Err(e) => {
                total.errors += 1;
                total.messages.push(format!("error: a load task failed: {e}"));
            }
        }
    }
    ticker.abort();
    let mut r = WorkloadResult::from_tally(name, total, a.duration());
    r.extra = serde_json::json!({ "http": if a.http2 { "HTTP/2" } else { "HTTP/1.1" }, "connections": conns.len() });
    r
}

/// What one subscriber task sends the fan-out: (subscriber, event or error, when received).
pub type Received = (usize, Result<pb::WatchEvent, String>, Instant);

/// Subscribes `req` over Server-Sent Events on `conn` and forwards every
/// event, parsed back into a `WatchEvent`, to `tx` as subscriber `i`.
pub async fn sse_subscriber(
    api: Arc<crate::http::gateway::Api>,
    conn: Conn,
    req: pb::WatchRequest,
    token: Option<String>,
    i: usize,
    tx: mpsc::UnboundedSender<Received>,
) {
    let fail = |tx: &mpsc::UnboundedSender<Received>, m: String| {
        let _ = tx.send((i, Err(m), Instant::now()));
    };
    let path = crate::http::WATCH_PATH;
    let Some(event_desc) = api.method(path).map(|r| r.output.clone()) else { return fail(&tx, "no Watch RPC".into()) };
    let json = match to_json(&api, path, &req, true) {
        Ok(j) => j,
        Err(e) => return fail(&tx, e),
    };
    let request = match post(path, json, token.as_deref(), "text/event-stream") {
        Ok(r) => r,
        Err(e) => return fail(&tx, e),
    };
    let resp = match conn.send(request).await {
        Ok(r) => r,
        Err(e) => return fail(&tx, format!("HTTP: {e}")),
    };
    if resp.status() != StatusCode::OK {
        let status = resp.status();
        let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        return fail(&tx, format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
    }
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    loop {
        let frame = match body.frame().await {
            Some(Ok(f)) => f,
            Some(Err(e)) => return fail(&tx, format!("the event stream failed: {e}")),
            None => return fail(&tx, "the server ended the event stream".into()),
        };
        let Ok(data) = frame.into_data() else { continue };
        buf.extend_from_slice(&data);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = buf.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&block);
            let mut error = false;
            let mut payload = None;
            for line in text.lines() {
                if line == "event: error" {
                    error = true;
                } else if let Some(d) = line.strip_prefix("data: ") {
                    payload = Some(d.to_owned());
                }
            }
            let Some(payload) = payload else { continue }; // a comment (keep-alive)
            if error {
                return fail(&tx, format!("the stream ended: {payload}"));
            }
            let mut de = serde_json::Deserializer::from_str(&payload);
            let event = prost_reflect::DynamicMessage::deserialize(event_desc.clone(), &mut de)
                .map_err(|e| format!("an event is not a WatchEvent: {e}"))
                .and_then(|m| m.transcode_to::<pb::WatchEvent>().map_err(|e| e.to_string()));
            let end = event.is_err();
            if tx.send((i, event, Instant::now())).is_err() || end {
                return;
            }
        }
    }
}
