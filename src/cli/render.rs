//! How the client commands print: JSON (the proto3 mapping), decisions' evidence, reported changes, errors.

use crate::console::outln;
use crate::proto::authzd::v1 as pb;
use crate::service::convert;
use serde_json::{Value, json};

/// An error and its causes on one line (a TLS refusal is a cause of a cause),
/// a TLS problem explained in words.
pub(super) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        source = s.source();
    }
    match crate::tls::explain_chain(e, crate::tls::Side::Client) {
        Some(words) => format!("{words}; {message}"),
        None => message,
    }
}

pub(super) fn print_json(v: &Value) {
    outln!("{}", serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()));
}

/// `m`, the `authzd.v1.<name>` message, in the proto3 JSON mapping: the shape
/// the HTTP API answers with (default values written out, enums by name,
/// 64-bit numbers as strings), so a script needs one schema for both.
pub(super) fn proto_json(m: &impl prost::Message, name: &str) -> Value {
    static POOL: std::sync::LazyLock<Option<prost_reflect::DescriptorPool>> =
        std::sync::LazyLock::new(|| prost_reflect::DescriptorPool::decode(crate::proto::FILE_DESCRIPTOR_SET).ok());
    let full = format!("authzd.v1.{name}");
    let Some(desc) = POOL.as_ref().and_then(|p| p.get_message_by_name(&full)) else {
        return json!({"error": format!("no message `{full}` in the API's descriptor set")});
    };
    match prost_reflect::DynamicMessage::decode(desc, m.encode_to_vec().as_slice()) {
        Ok(d) => d
            .serialize_with_options(serde_json::value::Serializer, &crate::http::gateway::serialize_options())
            .unwrap_or_else(|e| json!({"error": e.to_string()})),
        Err(e) => json!({"error": e.to_string()}),
    }
}

pub(super) fn print_proto(m: &impl prost::Message, name: &str) {
    print_json(&proto_json(m, name));
}

fn perms_text(v: &[i32]) -> Vec<&'static str> {
    v.iter().filter_map(|p| convert::permission_of(*p)).map(crate::model::Perm::name).collect()
}

fn subject_text(s: Option<&pb::Subject>) -> String {
    match s.and_then(|s| s.kind.as_ref()) {
        Some(pb::subject::Kind::Everyone(_)) | None => "everyone".into(),
        Some(pb::subject::Kind::Person(p)) => format!("person {p}"),
        Some(pb::subject::Kind::Group(g)) => format!("group {g}"),
    }
}

fn target_text(t: Option<&pb::Target>) -> String {
    match t.and_then(|t| t.kind.as_ref()) {
        None => String::new(),
        Some(pb::target::Kind::Folder(f)) => format!("folder {f}"),
        Some(pb::target::Kind::Person(p)) => format!("Person {p}"),
        Some(pb::target::Kind::Group(g)) => format!("AccessGroup {g}"),
        Some(pb::target::Kind::Role(r)) => format!("Role {r}"),
        Some(pb::target::Kind::Object(k)) => format!("{} {}", k.r#type, k.id),
    }
}

fn need_text(v: i32) -> &'static str {
    match pb::PrivilegeNeed::try_from(v) {
        Ok(pb::PrivilegeNeed::TypeGuard) => "type guard",
        Ok(pb::PrivilegeNeed::PropertyGuard) => "property guard",
        Ok(pb::PrivilegeNeed::Requested) => "requested",
        _ => "",
    }
}

pub(super) fn source_text(v: i32) -> &'static str {
    pb::PrivilegeSource::try_from(v)
        .map(|s| s.as_str_name().strip_prefix("PRIVILEGE_SOURCE_").unwrap_or("UNSPECIFIED"))
        .unwrap_or("UNSPECIFIED")
}

pub(super) fn print_evidence(e: &pb::Evidence) {
    outln!("  groups: {}", if e.groups.is_empty() { "-".into() } else { e.groups.join(", ") });
    if !e.roles.is_empty() {
        outln!("  roles: {} (source {})", e.roles.join(", "), source_text(e.privilege_source));
    }
    if e.aces.is_empty() {
        outln!("  entries: none for this person's principals");
    }
    for a in &e.aces {
        let from =
            if a.inherited_from.is_empty() { String::new() } else { format!(" (inherited from {})", a.inherited_from) };
        outln!(
            "  entry: {} on {}{from}: allow [{}] deny [{}]{}",
            subject_text(a.principal.as_ref()),
            target_text(a.target.as_ref()),
            perms_text(&a.allow).join(", "),
            perms_text(&a.deny).join(", "),
            if a.propagate { " propagate" } else { "" }
        );
    }
    for p in &e.privileges {
        let missing = if p.missing_requires.is_empty() {
            String::new()
        } else {
            format!(", missing {}", p.missing_requires.join(", "))
        };
        outln!(
            "  privilege: {} ({}): {}{missing}",
            p.name,
            need_text(p.need),
            if p.effective { "effective" } else { "not effective" }
        );
    }
}

pub(super) fn print_changes(changes: &[pb::PersonChange], truncated: bool) {
    if changes.is_empty() {
        outln!("nobody gains or loses anything");
    }
    for c in changes {
        outln!("{}:", c.person);
        for p in &c.privileges {
            for g in &p.gained {
                outln!("  + {}: {g}", p.application);
            }
            for l in &p.lost {
                outln!("  - {}: {l}", p.application);
            }
        }
        for k in &c.visible_gained {
            outln!("  + sees {} {}", k.r#type, k.id);
        }
        for k in &c.visible_lost {
            outln!("  - no longer sees {} {}", k.r#type, k.id);
        }
    }
    if truncated {
        outln!("(report truncated at the server's limit)");
    }
}

pub(super) fn time_text(t: Option<&prost_types::Timestamp>) -> String {
    t.map_or_else(|| "-".into(), ToString::to_string)
}
