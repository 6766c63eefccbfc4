//! `WatchService/Watch` as Server-Sent Events.
//!
//! `POST /authzd.v1.WatchService/Watch` with the `WatchRequest` as a JSON
//! body, or `GET` with it URL-encoded in the `request` query parameter (for
//! `EventSource`, which can only GET), answers `text/event-stream`: one
//! event per `WatchEvent`, its proto3 JSON in `data:` and its revision in
//! `id:`, until the stream ends. The subscription is made through the
//! server's own gRPC stack, so credentials and every rule of the gRPC stream
//! apply. A subscription the server refuses at once (unknown tenant,
//! missing credential, malformed) is a JSON error with its HTTP status, not a
//! stream; a stream that ends with a status (shutdown: `UNAVAILABLE`,
//! reconnect) ends with `event: error` and the JSON error in `data:`.
//!
//! - **Resuming.** A reconnecting `EventSource` sends `Last-Event-ID` with
//!   the last `id:` it saw. For a raw subscription it becomes
//!   `from_revision`: the stream goes on after that revision, with no gap and
//!   no duplicate (the server replays the changelog). A computed subscription
//!   starts again from its full state (a fresh `Snapshot`), which is what its
//!   client must do after any interruption. A `Last-Event-ID` that is not a
//!   number is refused with 400 naming the header.
//! - **Ids never go backwards.** An event's `id:` is its revision (a
//!   `ResumeRequired`'s resume revision, a `RevisionTooOld`'s requested one),
//!   or the stream's last id if that is higher — an edit-lock event can carry
//!   a revision below a raw stream's replayed batches, and resuming from it
//!   would send those batches twice.
//! - **Heartbeat.** After `--sse-heartbeat-ms` (default 15 s) without an
//!   event the stream gets a `: keep-alive` comment, so proxies do not cut an
//!   idle stream (the server's periodic checkpoints are events too).
//! - A client that goes away ends the subscription at once.

use super::gateway::{self, bytes_buf::Buf};
use super::{Shared, error};
use crate::proto::authzd::v1 as pb;
use crate::service::ServiceError;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt as _;
use hyper::body::{Bytes, Frame};
use prost::Message as _;
use prost_reflect::DynamicMessage;
use std::sync::Arc;
use tokio::sync::mpsc;
use tonic::body::Body;

/// Encoded events a stream may hold before its client reads them.
const BUFFER: usize = 8;

/// The revision an event's `id:` names (before keeping ids monotonic).
pub fn event_revision(e: &pb::WatchEvent) -> u64 {
    use pb::watch_event::Event;
    match &e.event {
        Some(Event::Snapshot(s)) => s.revision,
        Some(Event::PrivilegesChanged(c)) => c.revision,
        Some(Event::VisibleObjectsChanged(c)) => c.revision,
        Some(Event::RawChange(c)) => c.revision,
        Some(Event::Checkpoint(c)) => c.revision,
        Some(Event::Lock(l)) => l.revision,
        Some(Event::RestrictedModeChanged(r)) => r.revision,
        Some(Event::RevisionTooOld(r)) => r.requested_revision,
        Some(Event::ResumeRequired(r)) => r.resume_from_revision,
        None => 0,
    }
}

/// Decodes a `%`-encoded query value (`+` is a space).
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                let v =
                    hex.and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or("a `%` not followed by two hex digits")?;
                out.push(v);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "not UTF-8 once decoded".to_owned())
}

/// The `request` parameter of a query string.
fn query_request(query: Option<&str>) -> Result<String, String> {
    for pair in query.unwrap_or_default().split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == "request" {
            return percent_decode(v).map_err(|e| format!("query parameter `request`: {e}"));
        }
    }
    Err("query parameter `request` is missing: GET takes the WatchRequest as URL-encoded JSON in `?request=` (or POST it as the body)".into())
}

/// `Last-Event-ID`, when given (empty counts as not given).
fn last_event_id(headers: &http::HeaderMap) -> Result<Option<u64>, String> {
    let Some(v) = headers.get("last-event-id") else { return Ok(None) };
    let text = v.to_str().map_err(|_| "header `Last-Event-ID`: not text".to_owned())?.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<u64>().map(Some).map_err(|_| {
        let shown: String = text.chars().take(40).collect();
        format!(
            "header `Last-Event-ID`: `{shown}` is not a revision (a whole number, the `id:` of the last event received)"
        )
    })
}

/// Whether the client accepts an event stream (`text/event-stream`, `*/*`, or no `Accept`).
fn accepts_events(headers: &http::HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else { return true };
    accept.split(',').any(|m| {
        let m = m.split(';').next().unwrap_or_default().trim();
        m.eq_ignore_ascii_case("text/event-stream") || m == "*/*" || m.eq_ignore_ascii_case("text/*")
    })
}

/// Serves one Watch as an event stream.
pub(crate) async fn watch<S>(svc: S, req: Request<Body>, shared: Arc<Shared>) -> Response<Body>
where
    S: tower::Service<Request<Body>, Response = Response<Body>> + Send + 'static,
    S::Future: Send,
    S::Error: Into<tower::BoxError>,
{
    let path = super::WATCH_PATH;
    let Some(rpc) = shared.api.method(path).cloned() else { return error::not_found(path) };
    if !accepts_events(req.headers()) {
        return error::http_error(
            StatusCode::NOT_ACCEPTABLE,
            tonic::Code::InvalidArgument,
            "Watch is a stream: it answers `text/event-stream` (send `Accept: text/event-stream`)",
        );
    }
    let resume = match last_event_id(req.headers()) {
        Ok(r) => r,
        Err(e) => return error::bad_request(e),
    };
    let (parts, body) = req.into_parts();
    let json = if parts.method == http::Method::GET {
        match query_request(parts.uri.query()) {
            Ok(j) => Bytes::from(j),
            Err(e) => return error::bad_request(e),
        }
    } else {
        match gateway::read_body(&parts.headers, body, shared.limit).await {
            Ok(b) => b,
            Err(r) => return r,
        }
    };
    if json.len() > shared.limit {
        return error::too_large(shared.limit);
    }
    let mut request: pb::WatchRequest = match gateway::parse(&rpc.input, &json).and_then(|m| {
        m.transcode_to().map_err(|e| format!("cannot read the request as a `authzd.v1.WatchRequest`: {e}"))
    }) {
        Ok(r) => r,
        Err(e) => return error::bad_request(e),
    };
    let mut first_id = 0;
    if let Some(revision) = resume {
        // Raw: go on after the last event received. Computed: a fresh full
        // state, so the request is sent as it is.
        if let Some(pb::watch_request::Subscription::Raw(raw)) = &mut request.subscription {
            raw.from_revision = revision;
            raw.from_now = false;
            first_id = revision;
        }
    }
    let grpc = match gateway::frame(&request.encode_to_vec()).and_then(|b| gateway::grpc_request(parts, path, b)) {
        Ok(r) => r,
        Err(e) => return error::internal(e),
    };
    let resp = match tower::ServiceExt::oneshot(svc, grpc).await {
        Ok(r) => r,
        Err(e) => return error::internal(format!("the gRPC service failed: {}", e.into())),
    };
    let (rparts, rbody) = resp.into_parts();
    if let Some(status) = gateway::failed(&rparts.headers) {
        return error::from_status(&status);
    }
    if rparts.status != StatusCode::OK {
        return error::internal(format!("the gRPC service answered HTTP {}", rparts.status));
    }
    let (tx, rx) = mpsc::channel::<Bytes>(BUFFER);
    tokio::spawn(pump(rbody, rpc.output, tx, shared.heartbeat, first_id));
    let stream = tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), |b| {
        Ok::<_, std::convert::Infallible>(Frame::data(b))
    });
    let mut r = Response::new(Body::new(http_body_util::StreamBody::new(stream)));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // nginx and similar proxies: do not buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

/// One SSE event carrying `data` (one line of JSON).
fn sse_event(event: Option<&str>, id: Option<u64>, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + 32);
    if let Some(e) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(e.as_bytes());
        out.push(b'\n');
    }
    if let Some(id) = id {
        out.extend_from_slice(format!("id: {id}\n").as_bytes());
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

fn error_event(status: &tonic::Status) -> Bytes {
    let body = error::body(status.code(), status.message(), status.details());
    sse_event(Some("error"), None, body.to_string().as_bytes())
}

/// The JSON of one encoded `WatchEvent`, and its revision.
fn convert(desc: prost_reflect::MessageDescriptor, message: Bytes) -> Result<(u64, Vec<u8>), String> {
    let revision = pb::WatchEvent::decode(message.clone()).map(|e| event_revision(&e)).map_err(|e| e.to_string())?;
    let m = DynamicMessage::decode(desc, message).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::new(&mut out);
    m.serialize_with_options(&mut ser, &gateway::serialize_options()).map_err(|e| e.to_string())?;
    Ok((revision, out))
}

/// Reads the gRPC stream's body and writes SSE events into `tx` until the
/// stream ends or the client goes away.
async fn pump(
    mut body: Body,
    desc: prost_reflect::MessageDescriptor,
    tx: mpsc::Sender<Bytes>,
    heartbeat: std::time::Duration,
    mut last_id: u64,
) {
    let mut buf = Buf::default();
    loop {
        let idle = async {
            if heartbeat.is_zero() {
                std::future::pending::<()>().await;
            } else {
                tokio::time::sleep(heartbeat).await;
            }
        };
        let frame = tokio::select! {
            () = tx.closed() => return,
            () = idle => {
                if tx.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() {
                    return;
                }
                continue;
            }
            frame = body.frame() => frame,
        };
        let frame = match frame {
            None => return,
            Some(Err(e)) => {
                let _ = tx.send(error_event(&ServiceError::Internal(format!("the stream failed: {e}")).into())).await;
                return;
            }
            Some(Ok(f)) => f,
        };
        let frame = match frame.into_data() {
            Ok(data) => {
                buf.push(&data);
                loop {
                    let message = match buf.next_message() {
                        Ok(Some(m)) => m,
                        Ok(None) => break,
                        Err(e) => {
                            let _ = tx.send(error_event(&ServiceError::Internal(e.to_string()).into())).await;
                            return;
                        }
                    };
                    let d = desc.clone();
                    let converted = gateway::offload(message.len(), move || convert(d, message)).await;
                    let (revision, json) = match converted {
                        Ok(Ok(c)) => c,
                        Ok(Err(e)) | Err(e) => {
                            let _ = tx
                                .send(error_event(
                                    &ServiceError::Internal(format!("cannot convert an event: {e}")).into(),
                                ))
                                .await;
                            return;
                        }
                    };
                    last_id = last_id.max(revision);
                    if tx.send(sse_event(None, Some(last_id), &json)).await.is_err() {
                        return;
                    }
                }
                continue;
            }
            Err(f) => f,
        };
        if let Ok(trailers) = frame.into_trailers() {
            if let Some(status) = gateway::failed(&trailers) {
                let _ = tx.send(error_event(&status)).await;
            }
            return;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn query_and_headers() {
        assert_eq!(query_request(Some("x=1&request=%7B%22raw%22%3A%7B%7D%7D")).unwrap(), r#"{"raw":{}}"#);
        assert_eq!(percent_decode("a+b%20c").unwrap(), "a b c");
        assert!(percent_decode("%zz").is_err());
        assert!(percent_decode("%4").is_err());
        assert!(query_request(None).unwrap_err().contains("`request`"));
        let mut h = http::HeaderMap::new();
        assert_eq!(last_event_id(&h).unwrap(), None);
        h.insert("last-event-id", HeaderValue::from_static("42"));
        assert_eq!(last_event_id(&h).unwrap(), Some(42));
        h.insert("last-event-id", HeaderValue::from_static("x1"));
        assert!(last_event_id(&h).unwrap_err().contains("Last-Event-ID"));
        assert!(accepts_events(&http::HeaderMap::new()));
        h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert!(!accepts_events(&h));
    }

    #[test]
    fn events_are_framed() {
        assert_eq!(&sse_event(None, Some(3), b"{}")[..], b"id: 3\ndata: {}\n\n");
        assert_eq!(&sse_event(Some("error"), None, b"{}")[..], b"event: error\ndata: {}\n\n");
    }
}
