//! YAML reading and writing for tenant files and presets.
//!
//! Enums are written as single-key maps (`put_folder: {...}`,
//! `target: {folder: root}`, `subject: everyone`), the form people write by
//! hand, rather than YAML tags; every YAML path of the crate goes through here.

use super::error::{ModelError, ModelResult};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Parses `text`; syntax and shape errors name the line and column.
pub fn from_str<T: DeserializeOwned>(text: &str, what: &str) -> ModelResult<T> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_yaml_ng::with::singleton_map_recursive::deserialize(de).map_err(|e| {
        let at = e.location().map(|l| format!("line {} column {}", l.line(), l.column())).unwrap_or_default();
        ModelError::invalid(if at.is_empty() { what.to_owned() } else { format!("{what} {at}") }, "", e.to_string())
    })
}

/// Writes `value` as YAML.
pub fn to_string<T: Serialize>(value: &T) -> ModelResult<String> {
    let mut out = Vec::new();
    let mut ser = serde_yaml_ng::Serializer::new(&mut out);
    serde_yaml_ng::with::singleton_map_recursive::serialize(value, &mut ser)
        .map_err(|e| ModelError::invalid("", "", format!("cannot write yaml: {e}")))?;
    String::from_utf8(out).map_err(|e| ModelError::invalid("", "", format!("cannot write yaml: {e}")))
}
