//! The access explorer: a page served by authzd itself that answers "who can
//! see this, and why?" (README "Access explorer").
//!
//! The page is built from `clients/typescript/explorer/` by `npm run
//! bundle:explorer` into `src/http/explorer/` (committed; scripts/test-clients.sh
//! fails when the committed bundle is not what the sources give) and compiled
//! into the binary here: no files are read at run time, no CDN, no Node.js.
//! It talks gRPC-Web to the same origin, with the credentials typed into it.
//!
//! | request | answer |
//! |---|---|
//! | `GET /explorer` | `308` to `/explorer/` (the query kept) |
//! | `GET /explorer/`, `/explorer/index.html` | the page |
//! | `GET /explorer/app.js`, `/explorer/app.css` | its script and style sheet |
//! | another path under `/explorer/` | `404` |
//! | a method other than `GET` / `HEAD` | `405` |
//! | anything under `/explorer` with `--explorer` off | `404` saying how to turn it on |
//!
//! Every answer has `cache-control: no-cache` and a strong `ETag` (the
//! assets' names carry no hash, so a browser revalidates and gets `304` while
//! the binary is the same), `x-content-type-options: nosniff`, and the page a
//! strict `content-security-policy`: scripts, styles and connections from the
//! page's own origin only, no inline code, no frames, no forms posting away.

use super::{error, full};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use tonic::Code;
use tonic::body::Body;

/// Where the explorer lives.
pub const PREFIX: &str = "/explorer";

/// The page (`src/http/explorer/index.html`, built by `npm run bundle:explorer`).
pub const INDEX_HTML: &str = include_str!("explorer/index.html");
/// The page's script (bundled, minified).
pub const APP_JS: &str = include_str!("explorer/app.js");
/// The page's style sheet (minified).
pub const APP_CSS: &str = include_str!("explorer/app.css");

/// The content security policy of every explorer answer: only the page's own
/// origin, for scripts, styles, images and gRPC-Web calls.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: [Asset; 4] = [
    Asset { path: "/explorer/", content_type: "text/html; charset=utf-8", body: INDEX_HTML },
    Asset { path: "/explorer/index.html", content_type: "text/html; charset=utf-8", body: INDEX_HTML },
    Asset { path: "/explorer/app.js", content_type: "text/javascript; charset=utf-8", body: APP_JS },
    Asset { path: "/explorer/app.css", content_type: "text/css; charset=utf-8", body: APP_CSS },
];

/// Whether `path` is the explorer's (`/explorer` or below it).
pub fn is_explorer_path(path: &str) -> bool {
    path == PREFIX || path.strip_prefix(PREFIX).is_some_and(|rest| rest.starts_with('/'))
}

/// A strong entity tag of `body`: FNV-1a 64 of the bytes.
fn etag(body: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in body.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{h:016x}-{}\"", body.len())
}

/// Whether an `If-None-Match` header names `tag` (or is `*`).
fn matches(headers: &HeaderMap, tag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == tag || t == "*")
}

fn secure(headers: &mut HeaderMap) {
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
}

/// The answer to a request for an explorer path (see the module
/// documentation); `enabled` is `--explorer`.
pub fn serve(enabled: bool, method: &Method, path: &str, query: Option<&str>, headers: &HeaderMap) -> Response<Body> {
    if !enabled {
        return error::http_error(
            StatusCode::NOT_FOUND,
            Code::NotFound,
            "the access explorer is off: start the server with --explorer (or AUTHZD_EXPLORER=true, \
             or `explorer: true` in the configuration file)",
        );
    }
    if method != Method::GET && method != Method::HEAD {
        return error::method_not_allowed("GET, HEAD");
    }
    if path == PREFIX {
        let location = match query {
            Some(q) if !q.is_empty() => format!("{PREFIX}/?{q}"),
            _ => format!("{PREFIX}/"),
        };
        let mut r = Response::new(full(hyper::body::Bytes::new()));
        *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
        match HeaderValue::from_str(&location) {
            Ok(v) => r.headers_mut().insert(header::LOCATION, v),
            Err(_) => r.headers_mut().insert(header::LOCATION, HeaderValue::from_static("/explorer/")),
        };
        secure(r.headers_mut());
        return r;
    }
    let Some(asset) = ASSETS.iter().find(|a| a.path == path) else {
        let shown: String = path.chars().take(200).collect();
        return error::http_error(
            StatusCode::NOT_FOUND,
            Code::NotFound,
            format!("no such explorer file `{shown}`: the page is at /explorer/"),
        );
    };
    let tag = etag(asset.body);
    let not_modified = matches(headers, &tag);
    let mut r = if not_modified || method == Method::HEAD {
        Response::new(full(hyper::body::Bytes::new()))
    } else {
        Response::new(full(asset.body))
    };
    if not_modified {
        *r.status_mut() = StatusCode::NOT_MODIFIED;
    }
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    if let Ok(v) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, v);
    }
    if method == Method::HEAD && !not_modified {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(asset.body.len()));
    }
    secure(h);
    r
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    async fn text(r: Response<Body>) -> String {
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn get(path: &str) -> Response<Body> {
        serve(true, &Method::GET, path, None, &HeaderMap::new())
    }

    #[test]
    fn explorer_paths() {
        assert!(is_explorer_path("/explorer"));
        assert!(is_explorer_path("/explorer/"));
        assert!(is_explorer_path("/explorer/app.js"));
        assert!(!is_explorer_path("/explorers"));
        assert!(!is_explorer_path("/explorer.js"));
        assert!(!is_explorer_path("/authzd.v1.ReadService/GetEntity"));
    }

    #[tokio::test]
    async fn the_page_and_its_assets_are_served_with_their_types_and_a_strict_policy() {
        for (path, ty, body) in [
            ("/explorer/", "text/html; charset=utf-8", INDEX_HTML),
            ("/explorer/index.html", "text/html; charset=utf-8", INDEX_HTML),
            ("/explorer/app.js", "text/javascript; charset=utf-8", APP_JS),
            ("/explorer/app.css", "text/css; charset=utf-8", APP_CSS),
        ] {
            let r = get(path);
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            let h = r.headers();
            assert_eq!(h[header::CONTENT_TYPE], ty, "{path}");
            assert_eq!(h[header::CACHE_CONTROL], "no-cache", "{path}");
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
            let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(csp.starts_with("default-src 'none';"), "{csp}");
            assert!(csp.contains("script-src 'self';") && csp.contains("connect-src 'self';"), "{csp}");
            assert!(!csp.contains("unsafe") && !csp.contains("http"), "self only: {csp}");
            assert!(h.contains_key(header::ETAG), "{path}");
            assert_eq!(text(r).await, body, "{path}");
        }
    }

    #[test]
    fn the_embedded_page_loads_its_own_bundle_and_nothing_else() {
        assert!(INDEX_HTML.contains(r#"src="app.js""#), "the page loads app.js");
        assert!(INDEX_HTML.contains(r#"href="app.css""#), "the page loads app.css");
        assert!(
            !INDEX_HTML.contains("<script>") && !INDEX_HTML.contains("style="),
            "no inline code (the CSP forbids it)"
        );
        for a in [INDEX_HTML, APP_JS, APP_CSS] {
            assert!(!a.contains("sourceMappingURL"), "no source map reference");
            assert!(!a.contains("//cdn.") && !a.contains("https://unpkg"), "no CDN");
        }
    }

    #[tokio::test]
    async fn a_matching_etag_gives_304_and_head_no_body() {
        let tag = get("/explorer/app.js").headers()[header::ETAG].clone();
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, tag.clone());
        let r = serve(true, &Method::GET, "/explorer/app.js", None, &h);
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(r.headers()[header::ETAG], tag);
        assert_eq!(text(r).await, "");
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert_eq!(serve(true, &Method::GET, "/explorer/app.js", None, &h).status(), StatusCode::OK);
        let r = serve(true, &Method::HEAD, "/explorer/app.css", None, &HeaderMap::new());
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_LENGTH], APP_CSS.len().to_string().as_str());
        assert_eq!(text(r).await, "");
    }

    #[test]
    fn the_bare_prefix_redirects_and_keeps_the_query() {
        let r = get("/explorer");
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(r.headers()[header::LOCATION], "/explorer/");
        let r = serve(true, &Method::GET, "/explorer", Some("tenant=acme"), &HeaderMap::new());
        assert_eq!(r.headers()[header::LOCATION], "/explorer/?tenant=acme");
    }

    #[tokio::test]
    async fn unknown_files_and_methods_are_refused() {
        let r = get("/explorer/secret.txt");
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert!(text(r).await.contains("no such explorer file `/explorer/secret.txt`"));
        assert_eq!(get("/explorer/../Cargo.toml").status(), StatusCode::NOT_FOUND);
        let r = serve(true, &Method::POST, "/explorer/", None, &HeaderMap::new());
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[header::ALLOW], "GET, HEAD");
    }

    #[tokio::test]
    async fn off_by_default_it_is_404_saying_how_to_turn_it_on() {
        for path in ["/explorer", "/explorer/", "/explorer/app.js"] {
            let r = serve(false, &Method::GET, path, None, &HeaderMap::new());
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
            assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
            let v: serde_json::Value = serde_json::from_str(&text(r).await).unwrap();
            assert_eq!(v["code"], "NOT_FOUND");
            assert!(v["message"].as_str().unwrap().contains("--explorer"), "{v}");
        }
    }
}
