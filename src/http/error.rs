//! Errors over HTTP: a JSON body with the gRPC code's name and the status
//! message, and an HTTP status fitting the code.
//!
//! ```json
//! {"code": "INVALID_ARGUMENT", "message": "mutations[0].put_person.id: must not be empty", "details": []}
//! ```
//!
//! The message is the gRPC status message itself (field paths and all), so a
//! client sees the same text over HTTP as over gRPC; `details` is always
//! there, empty unless the status carried `grpc-status-details-bin` (then
//! each detail's `@type` and its base64 `value`). The mapping (that of Google's HTTP APIs, but
//! `FAILED_PRECONDITION`, which authzd uses for `expected_revision`,
//! preconditions and lock tokens — the state is not what the caller assumed —
//! is 409 like `ABORTED`):
//!
//! | gRPC code | HTTP |
//! |---|---|
//! | `INVALID_ARGUMENT`, `OUT_OF_RANGE` | 400 |
//! | `UNAUTHENTICATED` | 401 (with `WWW-Authenticate: Bearer`) |
//! | `PERMISSION_DENIED` | 403 |
//! | `NOT_FOUND` | 404 |
//! | `ALREADY_EXISTS`, `ABORTED`, `FAILED_PRECONDITION` | 409 |
//! | `RESOURCE_EXHAUSTED` | 429 |
//! | `CANCELLED` | 499 |
//! | `UNIMPLEMENTED` | 501 |
//! | `UNAVAILABLE` | 503 |
//! | `DEADLINE_EXCEEDED` | 504 |
//! | `UNKNOWN`, `INTERNAL`, `DATA_LOSS` | 500 |
//!
//! Errors of the HTTP layer itself use the same body: a body over the message
//! limit is 413 (`RESOURCE_EXHAUSTED`), a content type that is not JSON 415
//! (`INVALID_ARGUMENT`), an unknown path 404 (`NOT_FOUND`), a wrong method
//! 405 (`UNIMPLEMENTED`), a refused CORS preflight 403 (`PERMISSION_DENIED`).

use super::full;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use serde_json::{Value, json};
use tonic::Code;
use tonic::body::Body;

/// The name of a gRPC code (`NOT_FOUND`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The HTTP status of a gRPC code (see the module documentation).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `google.rpc.Status`, as `grpc-status-details-bin` carries it.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

/// The JSON body of an error.
pub fn body(code: Code, message: &str, details: &[u8]) -> Value {
    let mut v = json!({ "code": code_name(code), "message": message, "details": [] });
    if !details.is_empty() {
        use base64::Engine as _;
        use prost::Message as _;
        let items: Vec<Value> = match RpcStatus::decode(details) {
            Ok(s) => s
                .details
                .iter()
                .map(|a| json!({"@type": a.type_url, "value": base64::engine::general_purpose::STANDARD.encode(&a.value)}))
                .collect(),
            Err(_) => vec![json!({"value": base64::engine::general_purpose::STANDARD.encode(details)})],
        };
        v["details"] = Value::Array(items);
    }
    v
}

/// A JSON response with `status`.
pub fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut r = Response::new(full(value.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// The HTTP answer of a gRPC status.
pub fn from_status(status: &tonic::Status) -> Response<Body> {
    let code = status.code();
    let mut r = json_response(http_status(code), &body(code, status.message(), status.details()));
    if code == Code::Unauthenticated {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    r
}

/// An error of the HTTP layer: `status`, with `code` and `message` in the body.
pub fn http_error(status: StatusCode, code: Code, message: impl AsRef<str>) -> Response<Body> {
    tracing::debug!(
        status = status.as_u16(),
        code = code_name(code),
        message = message.as_ref(),
        "HTTP request refused"
    );
    json_response(status, &body(code, message.as_ref(), &[]))
}

/// `400 INVALID_ARGUMENT`.
pub fn bad_request(message: impl AsRef<str>) -> Response<Body> {
    http_error(StatusCode::BAD_REQUEST, Code::InvalidArgument, message)
}

/// `500 INTERNAL`.
pub fn internal(message: impl AsRef<str>) -> Response<Body> {
    tracing::error!(message = message.as_ref(), "HTTP gateway failed");
    json_response(StatusCode::INTERNAL_SERVER_ERROR, &body(Code::Internal, message.as_ref(), &[]))
}

/// `413`: a body over the server's message limit.
pub fn too_large(limit: usize) -> Response<Body> {
    http_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        Code::ResourceExhausted,
        format!("the request body is larger than the server's limit of {limit} bytes (--max-message-bytes)"),
    )
}

/// `415`: a request that is neither gRPC nor JSON.
pub fn unsupported_media_type(content_type: Option<&str>) -> Response<Body> {
    let given = match content_type {
        Some(t) => format!("content type `{t}`"),
        None => "no content type".to_owned(),
    };
    let mut r = http_error(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Code::InvalidArgument,
        format!("{given}: send `application/json` (HTTP/JSON), or `application/grpc` / `application/grpc-web` (gRPC)"),
    );
    r.headers_mut()
        .insert(header::ACCEPT, HeaderValue::from_static("application/json, application/grpc, application/grpc-web"));
    r
}

/// `404`: no such path.
pub fn not_found(path: &str) -> Response<Body> {
    let shown: String = path.chars().take(200).collect();
    http_error(
        StatusCode::NOT_FOUND,
        Code::NotFound,
        format!("no such path `{shown}`: the RPCs are `POST /authzd.v1.<Service>/<Method>` (see GET /openapi.json)"),
    )
}

/// `405`: the path exists for `allowed` only.
pub fn method_not_allowed(allowed: &'static str) -> Response<Body> {
    let mut r =
        http_error(StatusCode::METHOD_NOT_ALLOWED, Code::Unimplemented, format!("this path answers {allowed} only"));
    r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allowed));
    r
}

/// `403`: a preflight from an origin that is not allowed.
pub fn refused_origin(headers: &HeaderMap) -> Response<Body> {
    let origin: String = headers
        .get(header::ORIGIN)
        .map(|o| o.to_str().unwrap_or("(not text)").chars().take(200).collect())
        .unwrap_or_else(|| "(none)".to_owned());
    http_error(
        StatusCode::FORBIDDEN,
        Code::PermissionDenied,
        format!("cross-origin requests from origin `{origin}` are not allowed (the server's --cors-allowed-origin)"),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_name_and_a_status() {
        for n in 0..=16 {
            let code = Code::from_i32(n);
            assert_ne!(code_name(code), "", "{n}");
            let s = http_status(code);
            assert!(n == 0 || s.as_u16() >= 400, "{n} → {s}");
        }
        assert_eq!(http_status(Code::InvalidArgument), StatusCode::BAD_REQUEST);
        assert_eq!(http_status(Code::Unauthenticated), StatusCode::UNAUTHORIZED);
        assert_eq!(http_status(Code::Unavailable), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn details_are_decoded() {
        use prost::Message as _;
        let s = RpcStatus {
            code: 3,
            message: "m".into(),
            details: vec![prost_types::Any { type_url: "type.googleapis.com/x.Y".into(), value: vec![1, 2] }],
        };
        let v = body(Code::InvalidArgument, "m", &s.encode_to_vec());
        assert_eq!(v["details"][0]["@type"], "type.googleapis.com/x.Y");
        assert_eq!(v["details"][0]["value"], "AQI=");
        assert_eq!(body(Code::InvalidArgument, "m", &[])["details"], json!([]), "always there");
    }
}
