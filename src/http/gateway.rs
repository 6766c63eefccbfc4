//! The HTTP/JSON gateway: one general mechanism for every unary RPC.
//!
//! `POST /authzd.v1.<Service>/<Method>` with `content-type:
//! application/json`: the body is read (at most the server's message limit:
//! 413 beyond it), parsed as the method's request message in the proto3 JSON
//! mapping (`prost-reflect` over the descriptor set the build produced;
//! unknown fields are errors naming the field), encoded to protobuf, framed
//! as a gRPC message and sent through the server's own gRPC stack with the
//! request's headers (so `authorization`, `grpc-timeout`, `traceparent`
//! apply as over gRPC) and its connection's extensions (peer address, client
//! certificates). The gRPC answer is decoded with the response descriptor and
//! written as proto3 JSON (lowerCamelCase names, enums by name, 64-bit
//! integers as strings, `Timestamp`s in RFC 3339, fields at their default
//! value included so clients need not know the defaults); a gRPC status other
//! than OK becomes a JSON error ([`super::error`]).
//!
//! An empty body is the empty message `{}`. JSON conversion of a large body
//! (over [`BLOCKING_BYTES`]) runs on the blocking pool, off the async workers.

use super::{Shared, error, full};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt as _;
use hyper::body::Bytes;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions};
use std::collections::HashMap;
use std::sync::Arc;
use tonic::body::Body;

/// Bodies (JSON in, protobuf out) at least this large are converted on the
/// blocking pool.
pub const BLOCKING_BYTES: usize = 64 * 1024;

/// The package whose services are served.
const PACKAGE: &str = "authzd.v1";

/// One RPC.
#[derive(Debug, Clone)]
pub struct Rpc {
    /// Request message.
    pub input: MessageDescriptor,
    /// Response message.
    pub output: MessageDescriptor,
    /// Whether the server streams its answer (`Watch`).
    pub server_streaming: bool,
    /// Whether the client streams its request (none today).
    pub client_streaming: bool,
}

/// The RPCs of package `authzd.v1`, by HTTP path.
#[derive(Debug, Clone)]
pub struct Api {
    rpcs: HashMap<String, Rpc>,
}

impl Api {
    /// Decodes the compiled-in descriptor set.
    pub fn new() -> Result<Api, String> {
        let pool = DescriptorPool::decode(crate::proto::FILE_DESCRIPTOR_SET)
            .map_err(|e| format!("the compiled-in descriptor set does not decode: {e}"))?;
        let mut rpcs = HashMap::new();
        for service in pool.services().filter(|s| s.package_name() == PACKAGE) {
            for m in service.methods() {
                rpcs.insert(
                    format!("/{}/{}", service.full_name(), m.name()),
                    Rpc {
                        input: m.input(),
                        output: m.output(),
                        server_streaming: m.is_server_streaming(),
                        client_streaming: m.is_client_streaming(),
                    },
                );
            }
        }
        Ok(Api { rpcs })
    }

    /// The RPC at `path` (`/authzd.v1.DecisionService/Check`).
    pub fn method(&self, path: &str) -> Option<&Rpc> {
        self.rpcs.get(path)
    }

    /// Every RPC's path, sorted.
    pub fn paths(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.rpcs.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }
}

/// How answers are written: proto3 JSON with default values included.
pub fn serialize_options() -> SerializeOptions {
    SerializeOptions::new().skip_default_fields(false)
}

/// Reads a request body of at most `limit` bytes; `Err` is the response to send.
pub async fn read_body(headers: &http::HeaderMap, body: Body, limit: usize) -> Result<Bytes, Response<Body>> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(error::too_large(limit));
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(error::too_large(limit)),
        Err(e) => Err(error::bad_request(format!("cannot read the request body: {e}"))),
    }
}

/// Parses `json` as a `desc` message (proto3 JSON, unknown fields refused);
/// the error says what is wrong and where.
pub fn parse(desc: &MessageDescriptor, json: &[u8]) -> Result<DynamicMessage, String> {
    let json: &[u8] = if json.iter().all(u8::is_ascii_whitespace) { b"{}" } else { json };
    let mut de = serde_json::Deserializer::from_slice(json);
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    let parsed =
        DynamicMessage::deserialize_with_options(desc.clone(), &mut de, &options).and_then(|m| de.end().map(|()| m));
    parsed.map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                "the request body is not valid JSON"
            }
            _ => "the request body does not fit",
        };
        let text = e.to_string();
        let names_it = text.contains("field name") || text.contains("unknown field");
        let near = match e.classify() {
            serde_json::error::Category::Data if !names_it => {
                key_before(json, e.line(), e.column()).map(|k| format!(" (at field `{k}`)")).unwrap_or_default()
            }
            _ => String::new(),
        };
        format!("{what} `{}`: {e}{near}", desc.full_name())
    })
}

/// The last object key (`"name":`) before `line`:`column` (1-based) of
/// `json`: the field a type error is in (serde_json positions the error just
/// after the value it could not take).
fn key_before(json: &[u8], line: usize, column: usize) -> Option<String> {
    let mut offset = 0;
    for (i, l) in json.split(|b| *b == b'\n').enumerate() {
        if i + 1 == line {
            offset += column.min(l.len());
            break;
        }
        offset += l.len() + 1;
    }
    let text = std::str::from_utf8(json.get(..offset.min(json.len()))?).ok()?;
    // Walk the key/value separators backwards: the nearest `"...":` outside a string value.
    let mut end = text.len();
    while let Some(colon) = text.get(..end)?.rfind(':') {
        let before = text.get(..colon)?.trim_end();
        if let Some(body) = before.strip_suffix('"') {
            if let Some(start) = body.rfind('"') {
                let key = body.get(start + 1..)?;
                if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Some(key.to_owned());
                }
            }
        }
        end = colon;
    }
    None
}

/// `message` as one gRPC length-prefixed message (uncompressed).
pub fn frame(message: &[u8]) -> Result<Bytes, String> {
    let len = u32::try_from(message.len()).map_err(|_| "the request is too large for one gRPC message".to_owned())?;
    let mut out = Vec::with_capacity(5 + message.len());
    out.push(0);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    Ok(Bytes::from(out))
}

/// Takes the next whole gRPC message off the front of `buf`; `Err` for a
/// compressed message (the gateway never asks for compression).
pub fn unframe(buf: &mut bytes_buf::Buf) -> Result<Option<Bytes>, String> {
    buf.next_message()
}

/// A growable buffer of gRPC frames.
pub mod bytes_buf {
    use hyper::body::Bytes;

    /// Received bytes not yet consumed as messages.
    #[derive(Debug, Default)]
    pub struct Buf {
        data: Vec<u8>,
    }

    impl Buf {
        /// Appends received bytes.
        pub fn push(&mut self, b: &[u8]) {
            self.data.extend_from_slice(b);
        }

        /// Whether bytes are left (a truncated message at the end of a body).
        pub fn is_empty(&self) -> bool {
            self.data.is_empty()
        }

        /// The next whole message, if one has arrived.
        pub fn next_message(&mut self) -> Result<Option<Bytes>, String> {
            let Some(head) = self.data.get(..5) else { return Ok(None) };
            if head[0] != 0 {
                return Err("the server sent a compressed message".into());
            }
            let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
            if self.data.len() < 5 + len {
                return Ok(None);
            }
            let msg = Bytes::copy_from_slice(&self.data[5..5 + len]);
            self.data.drain(..5 + len);
            Ok(Some(msg))
        }
    }
}

/// Runs `f` inline for small inputs, on the blocking pool for large ones.
pub async fn offload<T: Send + 'static>(size: usize, f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    if size < BLOCKING_BYTES {
        Ok(f())
    } else {
        tokio::task::spawn_blocking(f).await.map_err(|e| format!("a conversion task failed: {e}"))
    }
}

/// The request to send through the gRPC stack: `parts` (headers,
/// extensions) with a gRPC body, for `path`.
pub fn grpc_request(mut parts: http::request::Parts, path: &str, body: Bytes) -> Result<Request<Body>, String> {
    parts.method = http::Method::POST;
    parts.uri = http::Uri::try_from(path).map_err(|e| format!("bad path `{path}`: {e}"))?;
    // The gRPC server below reads HTTP/2 semantics (tonic-web passes only
    // HTTP/2 through when the content type is not gRPC-Web).
    parts.version = http::Version::HTTP_2;
    let h = &mut parts.headers;
    for name in [
        header::CONTENT_LENGTH,
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::ACCEPT_ENCODING,
        header::HeaderName::from_static("keep-alive"),
        header::HeaderName::from_static("grpc-encoding"),
        header::HeaderName::from_static("grpc-accept-encoding"),
    ] {
        h.remove(name);
    }
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    h.insert(header::TE, HeaderValue::from_static("trailers"));
    Ok(Request::from_parts(parts, super::full(body)))
}

/// The gRPC status in `headers` (trailers-only answers) or trailers, if not OK.
pub fn failed(headers: &http::HeaderMap) -> Option<tonic::Status> {
    tonic::Status::from_header_map(headers).filter(|s| s.code() != tonic::Code::Ok)
}

/// Serves one unary RPC from JSON.
pub(crate) async fn unary<S>(svc: S, req: Request<Body>, shared: Arc<Shared>) -> Response<Body>
where
    S: tower::Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Future: Send,
    S::Error: Into<tower::BoxError>,
{
    let path = req.uri().path().to_owned();
    let Some(rpc) = shared.api.method(&path).cloned() else { return error::not_found(&path) };
    if rpc.server_streaming || rpc.client_streaming {
        return error::bad_request(format!("`{path}` is a stream: ask for `Accept: text/event-stream`"));
    }
    let (parts, body) = req.into_parts();
    let json = match read_body(&parts.headers, body, shared.limit).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let input = rpc.input.clone();
    let encoded = offload(json.len(), move || parse(&input, &json).map(|m| m.encode_to_vec())).await;
    let framed = match encoded {
        Ok(Ok(bytes)) => frame(&bytes),
        Ok(Err(message)) => return error::bad_request(message),
        Err(e) => return error::internal(e),
    };
    let request = match framed.and_then(|b| grpc_request(parts, &path, b)) {
        Ok(r) => r,
        Err(e) => return error::internal(e),
    };
    let resp = match tower::ServiceExt::oneshot(svc, request).await {
        Ok(r) => r,
        Err(e) => return error::internal(format!("the gRPC service failed: {}", e.into())),
    };
    let (rparts, rbody) = resp.into_parts();
    if let Some(status) = failed(&rparts.headers) {
        return error::from_status(&status);
    }
    if rparts.status != StatusCode::OK {
        return error::internal(format!("the gRPC service answered HTTP {}", rparts.status));
    }
    let collected = match rbody.collect().await {
        Ok(c) => c,
        Err(e) => return error::internal(format!("cannot read the gRPC answer: {e}")),
    };
    if let Some(status) = collected.trailers().and_then(failed) {
        return error::from_status(&status);
    }
    let mut buf = bytes_buf::Buf::default();
    buf.push(&collected.to_bytes());
    let message = match unframe(&mut buf) {
        Ok(Some(m)) if buf.is_empty() => m,
        Ok(_) => return error::internal("the gRPC answer is not exactly one message"),
        Err(e) => return error::internal(e),
    };
    let output = rpc.output;
    let json = offload(message.len(), move || -> Result<Vec<u8>, String> {
        let m = DynamicMessage::decode(output, message).map_err(|e| format!("cannot decode the gRPC answer: {e}"))?;
        let mut out = Vec::new();
        let mut ser = serde_json::Serializer::new(&mut out);
        m.serialize_with_options(&mut ser, &serialize_options())
            .map_err(|e| format!("cannot write the answer as JSON: {e}"))?;
        Ok(out)
    })
    .await;
    match json {
        Ok(Ok(body)) => {
            let mut r = Response::new(full(body));
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        Ok(Err(e)) | Err(e) => error::internal(e),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::proto::authzd::v1 as pb;

    #[test]
    fn every_rpc_is_known_and_json_round_trips() {
        let api = Api::new().unwrap();
        assert!(api.paths().contains(&"/authzd.v1.DecisionService/Check"));
        assert!(api.method("/authzd.v1.WatchService/Watch").unwrap().server_streaming);
        let check = &api.method("/authzd.v1.DecisionService/Check").unwrap().input;
        let m = parse(
            check,
            br#"{"tenant":"acme","person":"p","application":"Callback","permission":"PERMISSION_READ","object":{"type":"Script","id":"x"},"atLeastRevision":"3"}"#,
        )
        .unwrap();
        let req: pb::CheckRequest = m.transcode_to().unwrap();
        assert_eq!(req.tenant, "acme");
        assert_eq!(req.application.as_deref(), Some("Callback"));
        assert_eq!(req.permission, pb::Permission::Read as i32);
        assert_eq!(req.at_least_revision, 3);
        assert_eq!(req.object.unwrap().id, "x");
        assert_eq!(parse(check, b"").unwrap().transcode_to::<pb::CheckRequest>().unwrap(), pb::CheckRequest::default());
    }

    #[test]
    fn bad_json_is_explained() {
        let api = Api::new().unwrap();
        let check = &api.method("/authzd.v1.DecisionService/Check").unwrap().input;
        let e = parse(check, br#"{"tenant":"acme","persn":"p"}"#).unwrap_err();
        assert!(e.contains("unrecognized field name 'persn'") && !e.contains("at field"), "{e}");
        let e = parse(check, br#"{"tenant":"acme""#).unwrap_err();
        assert!(e.contains("not valid JSON"), "{e}");
        let e = parse(check, br#"{"tenant":7}"#).unwrap_err();
        assert!(e.contains("does not fit"), "{e}");
        assert!(e.contains("field `tenant`"), "{e}");
        let e = parse(check, br#"{} x"#).unwrap_err();
        assert!(e.contains("trailing"), "{e}");
    }

    #[test]
    fn frames_split_across_reads() {
        let mut b = bytes_buf::Buf::default();
        let f = frame(b"hello").unwrap();
        b.push(&f[..3]);
        assert_eq!(b.next_message().unwrap(), None);
        b.push(&f[3..]);
        b.push(&frame(b"").unwrap());
        assert_eq!(b.next_message().unwrap().unwrap(), &b"hello"[..]);
        assert_eq!(b.next_message().unwrap().unwrap(), &b""[..]);
        assert!(b.is_empty());
    }
}
