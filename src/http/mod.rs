//! HTTP for browsers and plain clients, on the gRPC listener itself: CORS,
//! HTTP/JSON, Watch as Server-Sent Events, and the OpenAPI document.
//!
//! [`HttpLayer`] is the outermost tower layer of the server (`crate::app`).
//! It looks at each request before tonic does and routes it by method,
//! content type and path:
//!
//! | request | goes to |
//! |---|---|
//! | `OPTIONS` with `Access-Control-Request-Method` (a CORS preflight) | answered here ([`cors`]) |
//! | any `application/grpc…` content type (gRPC, gRPC-Web) | tonic, untouched |
//! | `GET /explorer/…` (with `--explorer`; else `404`) | the access explorer's page and assets ([`explorer`]) |
//! | `GET /openapi.json` | the document `build.rs` generated from `proto/` ([`OPENAPI_JSON`]) |
//! | `POST /authzd.v1.WatchService/Watch` with a JSON body, or `GET` with `?request=<JSON>` | Server-Sent Events ([`sse`]) |
//! | `POST /authzd.v1.<Service>/<Method>`, `content-type: application/json` | the JSON gateway ([`gateway`]) |
//! | a `POST` with any other content type, or none | `415`, never executed |
//! | anything else | `404` / `405` |
//!
//! The gateway and the event streams translate JSON to protobuf with the
//! descriptor set the build produced and call the **same** in-process gRPC
//! stack as a gRPC client would (the metrics layer, gRPC-Web, the router, the
//! interceptors checking `authorization: Bearer`, the message limits, the
//! handlers), then translate the answer — or the gRPC status — back to JSON
//! ([`error`] has the status → HTTP mapping). Nothing here decides anything.
//!
//! Before this layer, tonic executed a gRPC-framed body whatever its content
//! type over HTTP/2 (tonic routes by path only). A browser may send
//! `text/plain`, form and multipart bodies across origins *without* a
//! preflight, so those are now refused with `415` before any handler runs:
//! every request that executes is either gRPC (which browsers cannot send),
//! gRPC-Web or JSON (both of which browsers preflight, so CORS decides).

pub mod cors;
pub mod error;
pub mod explorer;
pub mod gateway;
pub mod sse;

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Bytes;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tonic::body::Body;

/// The OpenAPI 3 document of the HTTP/JSON API, generated from `proto/` by
/// `build.rs` (`build/openapi.rs`): one path per RPC, schemas with the
/// `.proto` comments.
pub const OPENAPI_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/openapi.json"));

/// Default idle time after which an event stream gets a `: keep-alive` comment.
pub const DEFAULT_SSE_HEARTBEAT: Duration = Duration::from_secs(15);

/// The path of the watch RPC, served as Server-Sent Events.
pub const WATCH_PATH: &str = "/authzd.v1.WatchService/Watch";

/// HTTP settings of the server (`--cors-allowed-origin`, `--sse-heartbeat-ms`, `--explorer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// Origins browsers may call from across origins (`https://desk.example.com`,
    /// or `*` for any); empty: cross-origin calls are refused.
    pub cors_allowed_origins: Vec<String>,
    /// Idle time after which an event stream gets a `: keep-alive` comment; zero: never.
    pub sse_heartbeat: Duration,
    /// Whether `GET /explorer/` serves the access explorer ([`explorer`]); off: `404`.
    pub explorer: bool,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings { cors_allowed_origins: Vec::new(), sse_heartbeat: DEFAULT_SSE_HEARTBEAT, explorer: false }
    }
}

/// What every request of one listener shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) cors: cors::Cors,
    pub(crate) api: gateway::Api,
    /// Largest request body (`--max-message-bytes`), JSON or not.
    pub(crate) limit: usize,
    pub(crate) heartbeat: Duration,
    /// `--explorer`.
    pub(crate) explorer: bool,
}

/// The outermost layer of the server (see the module documentation).
#[derive(Debug, Clone)]
pub struct HttpLayer {
    shared: Arc<Shared>,
}

impl HttpLayer {
    /// The layer for `settings`, with `limit` the largest request body
    /// (the server's message limit). Fails only if the compiled-in
    /// descriptor set does not decode (a build defect).
    pub fn new(settings: &HttpSettings, limit: usize) -> Result<Self, String> {
        Ok(HttpLayer {
            shared: Arc::new(Shared {
                cors: cors::Cors::new(&settings.cors_allowed_origins),
                api: gateway::Api::new()?,
                limit,
                heartbeat: settings.sse_heartbeat,
                explorer: settings.explorer,
            }),
        })
    }
}

impl<S> tower::Layer<S> for HttpLayer {
    type Service = Http<S>;
    fn layer(&self, inner: S) -> Http<S> {
        Http { inner, shared: Arc::clone(&self.shared) }
    }
}

/// The service of [`HttpLayer`].
#[derive(Debug, Clone)]
pub struct Http<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// A full response body.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Body::new(Full::new(bytes.into()))
}

/// Whether `content_type` is gRPC or gRPC-Web (`application/grpc`,
/// `application/grpc+proto`, `application/grpc-web-text`, ...).
pub fn is_grpc(content_type: &str) -> bool {
    let t = content_type.trim_start();
    let Some(prefix) = t.get(..16) else { return false };
    prefix.eq_ignore_ascii_case("application/grpc")
        && matches!(t.as_bytes().get(16), None | Some(b'+' | b';' | b'-' | b' '))
}

/// Whether `content_type`'s media type is `application/json` (parameters
/// such as `charset=utf-8` allowed).
pub fn is_json(content_type: &str) -> bool {
    content_type.split(';').next().is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

fn content_type(req: &Request<Body>) -> Option<&str> {
    req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok())
}

type BoxFuture = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

impl<S> tower::Service<Request<Body>> for Http<S>
where
    S: tower::Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<tower::BoxError> + Send,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = HttpFuture<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let shared = &self.shared;
        let origin = shared.cors.verdict(req.headers(), req.uri().path());
        let allowed = match origin {
            cors::Verdict::Allowed(o) => Some(o),
            cors::Verdict::NotCors | cors::Verdict::Refused => None,
        };
        if req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
            let resp = match &allowed {
                Some(o) => cors::preflight(o),
                None => error::refused_origin(req.headers()),
            };
            return HttpFuture::ready(resp);
        }
        // The hot path: gRPC and gRPC-Web go to tonic as they came.
        if content_type(&req).is_some_and(is_grpc) {
            let clone = self.inner.clone();
            let mut inner = std::mem::replace(&mut self.inner, clone);
            return HttpFuture { state: State::Inner { future: inner.call(req) }, cors: allowed, _error: PhantomData };
        }
        let path = req.uri().path();
        let method = req.method().clone();
        let resp: Result<BoxFuture, Response<Body>> = if explorer::is_explorer_path(path) {
            Err(explorer::serve(shared.explorer, &method, path, req.uri().query(), req.headers()))
        } else if path == "/openapi.json" {
            match method {
                Method::GET | Method::HEAD => Err(openapi()),
                _ => Err(error::method_not_allowed("GET")),
            }
        } else if path == WATCH_PATH && (method == Method::GET || method == Method::POST) {
            if method == Method::POST && !content_type(&req).is_some_and(is_json) {
                Err(error::unsupported_media_type(content_type(&req)))
            } else {
                Ok(Box::pin(sse::watch(self.inner.clone(), req, Arc::clone(shared))))
            }
        } else if method == Method::POST {
            if content_type(&req).is_some_and(is_json) {
                Ok(Box::pin(gateway::unary(self.inner.clone(), req, Arc::clone(shared))))
            } else {
                Err(error::unsupported_media_type(content_type(&req)))
            }
        } else if method == Method::OPTIONS {
            let mut r = Response::new(full(Bytes::new()));
            *r.status_mut() = StatusCode::NO_CONTENT;
            r.headers_mut().insert(header::ALLOW, http::HeaderValue::from_static("GET, POST, OPTIONS"));
            Err(r)
        } else if shared.api.method(path).is_some() {
            Err(error::method_not_allowed("POST"))
        } else {
            Err(error::not_found(path))
        };
        let state = match resp {
            Ok(future) => State::Boxed { future },
            Err(r) => State::Ready { response: Some(r) },
        };
        HttpFuture { state, cors: allowed, _error: PhantomData }
    }
}

fn openapi() -> Response<Body> {
    let mut r = Response::new(full(OPENAPI_JSON));
    r.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    r
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F> {
        Inner { #[pin] future: F },
        Boxed { future: BoxFuture },
        Ready { response: Option<Response<Body>> },
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`Http`]: CORS headers are added to whatever
    /// answers an allowed origin.
    pub struct HttpFuture<F, E> {
        #[pin]
        state: State<F>,
        cors: Option<http::HeaderValue>,
        _error: PhantomData<fn() -> E>,
    }
}

impl<F, E> HttpFuture<F, E> {
    fn ready(response: Response<Body>) -> Self {
        HttpFuture { state: State::Ready { response: Some(response) }, cors: None, _error: PhantomData }
    }
}

impl<F, E> Future for HttpFuture<F, E>
where
    F: Future<Output = Result<Response<Body>, E>>,
{
    type Output = Result<Response<Body>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut resp = match this.state.project() {
            StateProj::Inner { future } => std::task::ready!(future.poll(cx))?,
            StateProj::Boxed { future } => std::task::ready!(future.as_mut().poll(cx)),
            StateProj::Ready { response } => match response.take() {
                Some(r) => r,
                None => error::internal("response polled after completion"),
            },
        };
        if let Some(origin) = this.cors.take() {
            cors::decorate(resp.headers_mut(), origin);
        }
        Poll::Ready(Ok(resp))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        for t in [
            "application/grpc",
            "application/grpc+proto",
            "application/grpc-web",
            "application/grpc-web-text+proto",
            "Application/GRPC",
        ] {
            assert!(is_grpc(t), "{t}");
        }
        for t in ["application/grpcx", "text/plain", "application/x-protobuf", "application/json", ""] {
            assert!(!is_grpc(t), "{t}");
        }
        assert!(is_json("application/json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(!is_json("application/jsonx"));
        assert!(!is_json("text/json"));
    }

    #[test]
    fn the_openapi_document_is_json_with_a_path_per_rpc() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        assert_eq!(doc["openapi"], "3.0.3");
        let api = gateway::Api::new().unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for path in api.paths() {
            assert!(paths.contains_key(path), "{path} has no OpenAPI path");
        }
        assert!(paths[WATCH_PATH]["get"].is_object());
    }
}
