//! `config_file`: bytes as the configuration file of `authzd serve --config`
//! (YAML, its keys the flags' long names), read into its settings and merged
//! and validated as start-up does, with no flag given. Asserts: no panic;
//! every refusal has a message and names the file, or the flag it is about;
//! the settings are known flags, each given once; a file whose settings are
//! refused is refused at start-up too.

use super::Outcome;
use authzd::config::{ConfigError, ServerConfig, file_settings};
use std::path::{Component, Path};

/// The file as named in errors.
const SHOWN: &str = "fuzz.yaml";

/// The settings whose values are files start-up reads.
const READS: [&str; 6] = ["tls-cert", "tls-key", "tls-client-ca", "upstream-ca", "upstream-cert", "upstream-key"];

/// The target's body.
pub fn run(data: &[u8]) -> Outcome {
    // The server reads the file as text: one that is not UTF-8 is refused before parsing.
    let Ok(text) = std::str::from_utf8(data) else { return Outcome::Refused };
    let settings = file_settings(text);
    match &settings {
        Err(m) => assert!(!m.is_empty(), "a refused configuration file without a message"),
        Ok(s) => {
            for (i, (name, _)) in s.iter().enumerate() {
                assert!(!name.is_empty() && !name.contains('_'), "setting {name:?} is not a flag's long name");
                assert!(s[..i].iter().all(|(n, _)| n != name), "setting {name:?} given twice");
            }
            // Start-up reads the files these settings name; the target reads none outside the
            // working directory (a fuzzed `/dev/stdin` would wait for ever).
            let outside = s.iter().filter(|(n, _)| READS.contains(&n.as_str())).flat_map(|(_, v)| v).any(|v| {
                let path = v.to_str().and_then(|a| a.split_once('=')).map_or("/", |(_, p)| p);
                Path::new(path).components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
            });
            if outside {
                return Outcome::Refused;
            }
        }
    }
    match ServerConfig::from_file_text(SHOWN, text) {
        Ok(c) => {
            assert!(settings.is_ok(), "start-up accepts a file whose settings are refused: {settings:?}");
            c.security_warnings();
            c.client_cert_admin();
            return Outcome::Accepted;
        }
        Err(ConfigError::File { path, message }) => {
            assert!(path == SHOWN && !message.is_empty(), "a refusal naming no file or saying nothing: {message:?}");
        }
        Err(ConfigError::Invalid { flag, message }) => {
            assert!(!flag.is_empty() && !message.is_empty(), "a refusal naming no flag: --{flag}: {message:?}");
        }
    }
    Outcome::Refused
}
