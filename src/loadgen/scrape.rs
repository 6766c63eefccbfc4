//! The server's Prometheus metrics as the load generator reads them
//! (`--metrics-url`): the endpoint, one `GET` over HTTP/1.1, and sample
//! values. Used by `soak`, the `watch` workloads (the server's CPU time per
//! flip) and `--decision-log-cost`.

use std::time::Duration;

/// The metrics endpoint: `host:port` and path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsUrl {
    /// `host:port`.
    pub authority: String,
    /// The path (`/metrics`).
    pub path: String,
}

/// Parses `--metrics-url`: `http://host:port[/path]` or `host:port`.
pub fn parse_metrics_url(s: &str) -> Result<MetricsUrl, String> {
    let rest = s.strip_prefix("http://").unwrap_or(s);
    if rest.contains("://") {
        return Err(format!("--metrics-url: `{s}` is not an http:// URL (the metrics port speaks plain HTTP)"));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    };
    let path = if path == "/" { "/metrics" } else { path };
    let port_ok = authority.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
    if !port_ok {
        return Err(format!("--metrics-url: `{s}` has no host:port (`http://127.0.0.1:9090`)"));
    }
    Ok(MetricsUrl { authority: authority.to_owned(), path: path.to_owned() })
}

/// `GET` of the metrics endpoint over HTTP/1.1: the body.
pub async fn scrape(url: &MetricsUrl) -> Result<String, String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(&url.authority).await.map_err(|e| e.to_string())?;
        let req = format!("GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", url.path, url.authority);
        s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&buf);
        let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP response")?;
        let status = head.split_whitespace().nth(1).unwrap_or("");
        if status != "200" {
            return Err(format!("HTTP status {status}"));
        }
        Ok(body.to_owned())
    };
    match tokio::time::timeout(Duration::from_secs(10), fetch).await {
        Ok(r) => r.map_err(|e| format!("metrics at http://{}{}: {e}", url.authority, url.path)),
        Err(_) => Err(format!("metrics at http://{}{}: no answer within 10 s", url.authority, url.path)),
    }
}

/// The value of a sample line `name value` (no labels), if present.
pub fn metric(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// The sum of every sample of `name` (any labels).
pub fn metric_sum(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|r| r.starts_with(' ') || r.starts_with('{')))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn metrics_urls() {
        let u = parse_metrics_url("http://127.0.0.1:9090").unwrap();
        assert_eq!((u.authority.as_str(), u.path.as_str()), ("127.0.0.1:9090", "/metrics"));
        let u = parse_metrics_url("localhost:9/m").unwrap();
        assert_eq!((u.authority.as_str(), u.path.as_str()), ("localhost:9", "/m"));
        assert!(parse_metrics_url("https://x:1").unwrap_err().starts_with("--metrics-url"));
        assert!(parse_metrics_url("http://nohost").unwrap_err().starts_with("--metrics-url"));
    }

    #[test]
    fn metric_lines() {
        let body =
            "# TYPE process_open_fds gauge\nprocess_open_fds 12\nx_total{a=\"1\"} 2\nx_total{a=\"2\"} 3\nx_totally 9\n";
        assert_eq!(metric(body, "process_open_fds"), Some(12.0));
        assert_eq!(metric(body, "process_open"), None);
        assert_eq!(metric_sum(body, "x_total"), 5.0);
    }
}
