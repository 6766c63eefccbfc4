//! What the client commands (`crate::cli`) and `authzd bench`
//! (`crate::loadgen`) share, in a module below both: their standard output
//! ([`output`], `outln!` and `out!`), their error ([`CliError`], a refused
//! call printed by `rpc_message`) and the Unix socket form of a server URL
//! ([`unix_socket_path`]). `crate::cli` re-exports the public ones at their
//! old paths.

use thiserror::Error;

/// The client commands' standard output. Every line they print goes through
/// here: when the reader has gone (`authzd tenants --json | head -1`), the
/// process ends at once, quietly, with exit code 141 (128 + SIGPIPE, what a
/// shell reports for a writer killed by a closed pipe) instead of a panic.
/// Any other write error ends it with exit code 1 and a message.
pub mod output {
    use std::io::Write as _;

    /// Exit code of a client whose standard output was closed.
    pub const CLOSED_PIPE: i32 = 141;

    /// Writes `args` (and a newline) to standard output, or ends the process.
    pub fn write(args: std::fmt::Arguments<'_>, newline: bool) {
        let mut out = std::io::stdout().lock();
        let result = out.write_fmt(args).and_then(|()| if newline { out.write_all(b"\n") } else { Ok(()) });
        // Lines reach a pipe as they are printed (`watch` output is read live).
        if let Err(e) = result.and_then(|()| out.flush()) {
            end(&e);
        }
    }

    fn end(e: &std::io::Error) -> ! {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(CLOSED_PIPE);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// `println!` for client output (see [`output`]).
macro_rules! outln {
    ($($arg:tt)*) => { $crate::console::output::write(format_args!($($arg)*), true) };
}
/// `print!` for client output (see [`output`]).
macro_rules! out {
    ($($arg:tt)*) => { $crate::console::output::write(format_args!($($arg)*), false) };
}
pub(crate) use out;
pub(crate) use outln;

/// Why a client command failed.
#[derive(Debug, Error)]
pub enum CliError {
    /// Bad input on the command line or in a file.
    #[error("{0}")]
    Input(String),
    /// The server cannot be reached.
    #[error("cannot connect to `{server}`: {message}")]
    Connect {
        /// The server URL.
        server: String,
        /// Why.
        message: String,
    },
    /// The server refused the call (or the connection failed under it: a
    /// TLS refusal is then explained in words).
    #[error("{}", rpc_message(.0))]
    Rpc(#[from] tonic::Status),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// A refused call as printed: the code and message, and when a TLS problem
/// is among its causes (TLS 1.3 reports a refused client certificate on the
/// first call, not at the handshake), that problem in words.
pub(crate) fn rpc_message(s: &tonic::Status) -> String {
    match crate::tls::explain_chain(s, crate::tls::Side::Client) {
        Some(words) => format!("{:?}: {}: {words}", s.code(), s.message()),
        None => format!("{:?}: {}", s.code(), s.message()),
    }
}

/// The socket path of a `unix:///path` or `unix:/path` server, if it is one.
pub fn unix_socket_path(server: &str) -> Option<&str> {
    let rest = server.strip_prefix("unix:")?;
    // `unix:///path` (URL form, empty authority) or `unix:/path`; `unix:path` is relative.
    Some(rest.strip_prefix("//").unwrap_or(rest))
}

#[cfg(test)]
mod tests {
    use super::unix_socket_path;

    #[test]
    fn unix_server_urls() {
        assert_eq!(unix_socket_path("unix:///run/authzd/authzd.sock"), Some("/run/authzd/authzd.sock"));
        assert_eq!(unix_socket_path("unix:/run/authzd/authzd.sock"), Some("/run/authzd/authzd.sock"));
        assert_eq!(unix_socket_path("unix:authzd.sock"), Some("authzd.sock"));
        assert_eq!(unix_socket_path("http://127.0.0.1:50051"), None);
        assert_eq!(unix_socket_path("https://unix:443"), None);
    }
}
