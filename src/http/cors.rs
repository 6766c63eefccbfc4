//! CORS (the Fetch standard's cross-origin protocol) for gRPC-Web and
//! HTTP/JSON callers in browsers, hand-written: what authzd needs is small
//! (an exact list of origins, fixed methods and headers, and a refusal that
//! says why), and `tower-http`'s `CorsLayer` would add a crate for a tenth
//! of what it does while still answering refused preflights with a bare 200.
//!
//! - A request without `Origin` is not a CORS request: nothing is added.
//! - From an allowed origin, a preflight (`OPTIONS` with
//!   `Access-Control-Request-Method`) is answered `204` with the origin
//!   echoed, `Vary`, the methods, the request headers browsers' gRPC-Web,
//!   Connect and `EventSource` clients send, and a max age; every other
//!   answer gets the origin echoed, `Vary: Origin` and the response headers
//!   scripts may read (`grpc-status`, `grpc-message`,
//!   `grpc-status-details-bin`, `www-authenticate`).
//! - From any other origin nothing is added, and a preflight is refused with
//!   `403` and a JSON error (logged at debug), so the browser never sends the
//!   request. (Requests browsers send without a preflight — `text/plain`,
//!   forms — are refused with `415` whatever their origin: see `crate::http`.)

use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use tonic::body::Body;

/// Methods a cross-origin caller may use.
pub const ALLOW_METHODS: &str = "GET, POST, OPTIONS";
/// Request headers a cross-origin caller may send.
pub const ALLOW_HEADERS: &str = "authorization, content-type, x-grpc-web, x-user-agent, grpc-timeout, connect-protocol-version, connect-timeout-ms, last-event-id";
/// Response headers a cross-origin script may read. authzd sets no revision
/// header of its own (revisions are in the answers' bodies).
pub const EXPOSE_HEADERS: &str = "grpc-status, grpc-message, grpc-status-details-bin, www-authenticate";
/// How long a browser may cache a preflight's answer, in seconds (Chromium's cap).
pub const MAX_AGE_SECS: u32 = 7200;

/// The allowed origins.
#[derive(Debug, Clone, Default)]
pub struct Cors {
    any: bool,
    origins: Vec<String>,
}

/// What a request's `Origin` is to the policy.
#[derive(Debug)]
pub enum Verdict {
    /// No `Origin` header: not a CORS request.
    NotCors,
    /// An allowed origin, as the request gave it (echoed back).
    Allowed(HeaderValue),
    /// An origin that is not allowed.
    Refused,
}

/// Checks one configured origin: `*`, or `scheme://host[:port]` (http or
/// https, no path, query or user); the canonical (lowercase) form.
pub fn parse_origin(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s == "*" {
        return Ok(s.to_owned());
    }
    let bad = |why: &str| Err(format!("`{s}` is not an origin ({why}; write `https://host[:port]`, or `*` for any)"));
    let lower = s.to_ascii_lowercase();
    let Some((scheme, rest)) = lower.split_once("://") else { return bad("no scheme") };
    if scheme != "http" && scheme != "https" {
        return bad("the scheme must be http or https");
    }
    if rest.is_empty() {
        return bad("no host");
    }
    if rest.contains(['/', '?', '#', '@']) || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("an origin has no path, query, fragment or user, not even a trailing `/`");
    }
    let port = if rest.starts_with('[') {
        rest.split_once("]:").map(|(_, p)| p)
    } else {
        rest.split_once(':').map(|(_, p)| p)
    };
    if port.is_some_and(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_digit())) {
        return bad("the port must be a number");
    }
    Ok(lower)
}

impl Cors {
    /// A policy allowing `origins` (already checked by [`parse_origin`];
    /// `*` allows any origin but `null`).
    pub fn new(origins: &[String]) -> Self {
        Cors {
            any: origins.iter().any(|o| o == "*"),
            origins: origins.iter().filter(|o| *o != "*").map(|o| o.to_ascii_lowercase()).collect(),
        }
    }

    /// What the request's origin is to the policy; a refusal is logged at debug.
    pub fn verdict(&self, headers: &HeaderMap, path: &str) -> Verdict {
        let Some(origin) = headers.get(header::ORIGIN) else { return Verdict::NotCors };
        let text = origin.to_str().unwrap_or_default();
        let allowed = !text.is_empty()
            && text != "null"
            && (self.any || self.origins.iter().any(|o| o.eq_ignore_ascii_case(text)));
        if allowed {
            Verdict::Allowed(origin.clone())
        } else {
            tracing::debug!(origin = %text, path, "cross-origin request from an origin that is not allowed (--cors-allowed-origin): no CORS headers");
            Verdict::Refused
        }
    }
}

/// The answer to a preflight from the allowed `origin`.
pub fn preflight(origin: &HeaderValue) -> Response<Body> {
    let mut r = Response::new(super::full(hyper::body::Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    h.insert(
        header::VARY,
        HeaderValue::from_static("Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
    );
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(ALLOW_METHODS));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOW_HEADERS));
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(MAX_AGE_SECS));
    r
}

/// Adds the CORS headers of an actual response to the allowed `origin`.
pub fn decorate(h: &mut HeaderMap, origin: HeaderValue) {
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSE_HEADERS));
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked_and_lowercased() {
        assert_eq!(parse_origin("https://Desk.Example.com").unwrap(), "https://desk.example.com");
        assert_eq!(parse_origin("http://localhost:5173").unwrap(), "http://localhost:5173");
        assert_eq!(parse_origin("*").unwrap(), "*");
        for bad in [
            "desk.example.com",
            "https://desk.example.com/",
            "ftp://x",
            "https://",
            "https://x/app",
            "https://u@x",
            "https://x:80a",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn verdicts() {
        let cors = Cors::new(&["https://desk.example.com".into()]);
        let mut h = HeaderMap::new();
        assert!(matches!(cors.verdict(&h, "/"), Verdict::NotCors));
        h.insert(header::ORIGIN, HeaderValue::from_static("https://desk.example.com"));
        assert!(matches!(cors.verdict(&h, "/"), Verdict::Allowed(_)));
        h.insert(header::ORIGIN, HeaderValue::from_static("https://evil.example.com"));
        assert!(matches!(cors.verdict(&h, "/"), Verdict::Refused));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(matches!(Cors::new(&["*".into()]).verdict(&h, "/"), Verdict::Refused), "`*` never allows `null`");
        assert!(matches!(Cors::default().verdict(&h, "/"), Verdict::Refused));
    }
}
