//! The OpenAPI 3 document of the HTTP/JSON gateway, written by `build.rs`
//! from the compiled descriptor set (`src/http` serves it at
//! `GET /openapi.json`), so it can never drift from `proto/`.
//!
//! One path per RPC of package `authzd.v1`: `POST /authzd.v1.<Service>/<Method>`
//! with the request message as its JSON body and the response message (or,
//! for the server-streaming `Watch`, a `text/event-stream` of its events) as
//! its answer; `Watch` also gets a `GET` with the request in the `request`
//! query parameter. Schemas follow the proto3 JSON mapping (lowerCamelCase
//! names, 64-bit integers as strings, enums by name, `Timestamp` as RFC 3339)
//! and carry the `.proto` comments as descriptions. JSON is written by hand
//! (a few string escapes) to keep `serde_json` out of the build dependencies.

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorProto, FileDescriptorSet, SourceCodeInfo};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The package whose services the gateway serves.
const PACKAGE: &str = "authzd.v1";

/// A JSON value, just enough to write the document.
enum J {
    S(String),
    B(bool),
    A(Vec<J>),
    O(Vec<(String, J)>),
}

fn s(v: impl Into<String>) -> J {
    J::S(v.into())
}

fn o(pairs: Vec<(&str, J)>) -> J {
    J::O(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn write_str(out: &mut String, v: &str) {
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn write_json(out: &mut String, v: &J, indent: usize) {
    let pad = |out: &mut String, n: usize| {
        out.push('\n');
        for _ in 0..n {
            out.push_str("  ");
        }
    };
    match v {
        J::S(t) => write_str(out, t),
        J::B(b) => out.push_str(if *b { "true" } else { "false" }),
        J::A(items) if items.is_empty() => out.push_str("[]"),
        J::A(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                pad(out, indent + 1);
                write_json(out, item, indent + 1);
            }
            pad(out, indent);
            out.push(']');
        }
        J::O(pairs) if pairs.is_empty() => out.push_str("{}"),
        J::O(pairs) => {
            out.push('{');
            for (i, (k, item)) in pairs.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                pad(out, indent + 1);
                write_str(out, k);
                out.push_str(": ");
                write_json(out, item, indent + 1);
            }
            pad(out, indent);
            out.push('}');
        }
    }
}

/// The leading comments of every element of a file, by source path.
struct Comments(BTreeMap<Vec<i32>, String>);

impl Comments {
    fn new(info: Option<&SourceCodeInfo>) -> Self {
        let mut map = BTreeMap::new();
        for loc in info.map(|i| i.location.as_slice()).unwrap_or_default() {
            if let Some(c) = &loc.leading_comments {
                let text: Vec<&str> = c.lines().map(|l| l.strip_prefix(' ').unwrap_or(l).trim_end()).collect();
                let text = text.join("\n").trim().to_owned();
                if !text.is_empty() {
                    map.insert(loc.path.clone(), text);
                }
            }
        }
        Comments(map)
    }

    fn get(&self, path: &[i32]) -> Option<&str> {
        self.0.get(path).map(String::as_str)
    }
}

fn described(mut pairs: Vec<(&str, J)>, comment: Option<&str>) -> J {
    if let Some(c) = comment {
        pairs.push(("description", s(c)));
    }
    o(pairs)
}

/// `.authzd.v1.Foo.Bar` → the schema name `authzd.v1.Foo.Bar`.
fn schema_ref(type_name: &str) -> J {
    o(vec![("$ref", s(format!("#/components/schemas/{}", type_name.trim_start_matches('.'))))])
}

/// Map entry messages, by full name (`.authzd.v1.Object.PropertiesEntry`), with their value field.
type MapEntries = BTreeMap<String, prost_types::FieldDescriptorProto>;

fn field_type(f: &prost_types::FieldDescriptorProto, enums: &BTreeMap<String, Vec<String>>) -> J {
    let ty = f.r#type();
    match ty {
        Type::Double | Type::Float => {
            o(vec![("type", s("number")), ("format", s(if ty == Type::Double { "double" } else { "float" }))])
        }
        Type::Int32 | Type::Sint32 | Type::Sfixed32 => o(vec![("type", s("integer")), ("format", s("int32"))]),
        Type::Uint32 | Type::Fixed32 => o(vec![("type", s("integer")), ("format", s("uint32"))]),
        Type::Int64 | Type::Sint64 | Type::Sfixed64 => o(vec![("type", s("string")), ("format", s("int64"))]),
        Type::Uint64 | Type::Fixed64 => o(vec![("type", s("string")), ("format", s("uint64"))]),
        Type::Bool => o(vec![("type", s("boolean"))]),
        Type::String => o(vec![("type", s("string"))]),
        Type::Bytes => o(vec![("type", s("string")), ("format", s("byte"))]),
        Type::Enum => match enums.get(f.type_name()) {
            Some(values) => {
                o(vec![("type", s("string")), ("enum", J::A(values.iter().map(|v| s(v.clone())).collect()))])
            }
            None => o(vec![("type", s("string"))]),
        },
        Type::Message | Type::Group => match f.type_name() {
            ".google.protobuf.Timestamp" => o(vec![("type", s("string")), ("format", s("date-time"))]),
            ".google.protobuf.Duration" => o(vec![("type", s("string"))]),
            name => schema_ref(name),
        },
    }
}

fn message_schema(
    full: &str,
    m: &DescriptorProto,
    path: &[i32],
    comments: &Comments,
    enums: &BTreeMap<String, Vec<String>>,
    maps: &MapEntries,
    out: &mut Vec<(String, J)>,
) {
    let mut properties = Vec::new();
    for (i, f) in m.field.iter().enumerate() {
        let mut fpath = path.to_vec();
        fpath.extend([2, i as i32]);
        let value = if f.label() == Label::Repeated {
            match maps.get(f.type_name()) {
                Some(v) => o(vec![("type", s("object")), ("additionalProperties", field_type(v, enums))]),
                None => o(vec![("type", s("array")), ("items", field_type(f, enums))]),
            }
        } else {
            field_type(f, enums)
        };
        let mut comment = comments.get(&fpath).map(str::to_owned);
        if let Some(idx) = f.oneof_index.filter(|_| !f.proto3_optional()) {
            if let Some(oneof) = m.oneof_decl.get(idx as usize) {
                let note = format!("(one of `{}`: at most one of its fields is set)", oneof.name());
                comment = Some(match comment {
                    Some(c) => format!("{c}\n{note}"),
                    None => note,
                });
            }
        }
        // A `$ref` cannot carry siblings in OpenAPI 3.0: wrap it.
        let value = match (value, comment) {
            (J::O(pairs), Some(c)) if pairs.iter().any(|(k, _)| k == "$ref") => {
                o(vec![("allOf", J::A(vec![J::O(pairs)])), ("description", s(c))])
            }
            (J::O(mut pairs), Some(c)) => {
                pairs.push(("description".into(), s(c)));
                J::O(pairs)
            }
            (v, _) => v,
        };
        properties.push((f.json_name.clone().unwrap_or_else(|| f.name().to_owned()), value));
    }
    let schema = described(
        vec![("type", s("object")), ("properties", J::O(properties)), ("additionalProperties", J::B(false))],
        comments.get(path),
    );
    out.push((full.to_owned(), schema));
    for (i, n) in m.nested_type.iter().enumerate() {
        if n.options.as_ref().is_some_and(|o| o.map_entry()) {
            continue;
        }
        let mut npath = path.to_vec();
        npath.extend([3, i as i32]);
        message_schema(&format!("{full}.{}", n.name()), n, &npath, comments, enums, maps, out);
    }
    for (i, e) in m.enum_type.iter().enumerate() {
        let mut epath = path.to_vec();
        epath.extend([4, i as i32]);
        out.push((format!("{full}.{}", e.name()), enum_schema(e, &epath, comments)));
    }
}

fn enum_schema(e: &EnumDescriptorProto, path: &[i32], comments: &Comments) -> J {
    let mut text = comments.get(path).unwrap_or_default().to_owned();
    for (i, v) in e.value.iter().enumerate() {
        let mut vpath = path.to_vec();
        vpath.extend([2, i as i32]);
        if let Some(c) = comments.get(&vpath) {
            let _ = write!(text, "\n- `{}`: {}", v.name(), c.replace('\n', " "));
        }
    }
    let values = J::A(e.value.iter().map(|v| s(v.name())).collect());
    described(vec![("type", s("string")), ("enum", values)], Some(text.trim()).filter(|t| !t.is_empty()))
}

fn collect_types(
    prefix: &str,
    messages: &[DescriptorProto],
    enums_here: &[EnumDescriptorProto],
    enums: &mut BTreeMap<String, Vec<String>>,
    maps: &mut MapEntries,
) {
    for e in enums_here {
        enums.insert(format!("{prefix}.{}", e.name()), e.value.iter().map(|v| v.name().to_owned()).collect());
    }
    for m in messages {
        let full = format!("{prefix}.{}", m.name());
        if m.options.as_ref().is_some_and(|o| o.map_entry()) {
            if let Some(v) = m.field.iter().find(|f| f.number() == 2) {
                maps.insert(full.clone(), v.clone());
            }
        }
        collect_types(&full, &m.nested_type, &m.enum_type, enums, maps);
    }
}

fn json_body(schema: J) -> J {
    o(vec![("application/json", o(vec![("schema", schema)]))])
}

fn error_responses(pairs: &mut Vec<(String, J)>) {
    let error = || json_body(schema_ref("Error"));
    for (status, what) in [
        (
            "400",
            "INVALID_ARGUMENT, OUT_OF_RANGE: a malformed request (bad JSON, an unknown field, a wrong type, a bad value)",
        ),
        ("401", "UNAUTHENTICATED: the bearer token is missing or wrong"),
        ("403", "PERMISSION_DENIED: the credential may not do this"),
        ("404", "NOT_FOUND: an unknown tenant, person, application or folder"),
        ("409", "ALREADY_EXISTS, ABORTED, FAILED_PRECONDITION: the state is not what the request assumed"),
        ("413", "the body is larger than the server's message limit (--max-message-bytes)"),
        ("415", "the content type is not application/json"),
        ("503", "UNAVAILABLE: the replica cannot answer now (revision not reached, store down, shutting down): retry"),
    ] {
        pairs.push((status.into(), o(vec![("description", s(what)), ("content", error())])));
    }
    pairs.push(("default".into(), o(vec![("description", s("any other gRPC status, as JSON")), ("content", error())])));
}

/// The OpenAPI document (JSON text) of every service of package `authzd.v1` in `set`.
pub fn document(set: &FileDescriptorSet, version: &str) -> String {
    let mut enums = BTreeMap::new();
    let mut maps = MapEntries::new();
    for f in &set.file {
        collect_types(&format!(".{}", f.package()), &f.message_type, &f.enum_type, &mut enums, &mut maps);
    }
    let mut paths = Vec::new();
    let mut schemas = Vec::new();
    let mut tags = Vec::new();
    let ours: Vec<&FileDescriptorProto> = set.file.iter().filter(|f| f.package() == PACKAGE).collect();
    for f in &ours {
        let comments = Comments::new(f.source_code_info.as_ref());
        for (i, m) in f.message_type.iter().enumerate() {
            message_schema(
                &format!("{PACKAGE}.{}", m.name()),
                m,
                &[4, i as i32],
                &comments,
                &enums,
                &maps,
                &mut schemas,
            );
        }
        for (i, e) in f.enum_type.iter().enumerate() {
            schemas.push((format!("{PACKAGE}.{}", e.name()), enum_schema(e, &[5, i as i32], &comments)));
        }
        for (si, svc) in f.service.iter().enumerate() {
            tags.push(described(vec![("name", s(svc.name()))], comments.get(&[6, si as i32])));
            for (mi, m) in svc.method.iter().enumerate() {
                let comment = comments.get(&[6, si as i32, 2, mi as i32]).unwrap_or_default();
                let summary = comment.split("\n\n").next().unwrap_or_default().replace('\n', " ");
                let mut responses = Vec::new();
                let streaming = m.server_streaming();
                if streaming {
                    responses.push((
                        "200".to_owned(),
                        o(vec![
                            (
                                "description",
                                s(format!(
                                    "Server-Sent Events: one event per `{}` (proto3 JSON in `data:`, its revision in `id:`), \
                                     `: keep-alive` comments while idle, and a last `event: error` with the JSON error when the stream ends with a status",
                                    m.output_type().trim_start_matches('.')
                                )),
                            ),
                            ("content", o(vec![("text/event-stream", o(vec![("schema", schema_ref(m.output_type()))]))])),
                        ]),
                    ));
                } else {
                    responses.push((
                        "200".to_owned(),
                        o(vec![("description", s("the answer")), ("content", json_body(schema_ref(m.output_type())))]),
                    ));
                }
                error_responses(&mut responses);
                let last_event_id = || {
                    o(vec![
                        ("name", s("Last-Event-ID")),
                        ("in", s("header")),
                        ("required", J::B(false)),
                        (
                            "description",
                            s(
                                "Resume: a raw subscription continues after this revision (it replaces `raw.fromRevision`); a computed one starts again from its full state. Must be a number.",
                            ),
                        ),
                        ("schema", o(vec![("type", s("string"))])),
                    ])
                };
                let op = |method: &str, body: bool| {
                    let mut pairs = vec![
                        (
                            "operationId",
                            s(format!("{}_{}{}", svc.name(), m.name(), if method == "get" { "_get" } else { "" })),
                        ),
                        ("tags", J::A(vec![s(svc.name())])),
                        ("summary", s(summary.clone())),
                        ("description", s(comment)),
                    ];
                    if body {
                        pairs.push((
                            "requestBody",
                            o(vec![("required", J::B(true)), ("content", json_body(schema_ref(m.input_type())))]),
                        ));
                    }
                    let mut params = Vec::new();
                    if method == "get" {
                        params.push(o(vec![
                            ("name", s("request")),
                            ("in", s("query")),
                            ("required", J::B(true)),
                            ("description", s("the request as proto3 JSON (URL-encoded)")),
                            ("content", json_body(schema_ref(m.input_type()))),
                        ]));
                    }
                    if streaming {
                        params.push(last_event_id());
                    }
                    if !params.is_empty() {
                        pairs.push(("parameters", J::A(params)));
                    }
                    pairs.push(("responses", J::O(responses.iter().map(|(k, v)| (k.clone(), clone(v))).collect())));
                    o(pairs)
                };
                let mut item = vec![("post", op("post", true))];
                if streaming {
                    item.push(("get", op("get", false)));
                }
                paths.push((format!("/{PACKAGE}.{}/{}", svc.name(), m.name()), o(item)));
            }
        }
    }
    schemas.push((
        "Error".to_owned(),
        o(vec![
            ("type", s("object")),
            ("description", s("An error: the gRPC status code's name, its message (naming the field, as over gRPC), and the status details when the server sent any")),
            ("required", J::A(vec![s("code"), s("message"), s("details")])),
            (
                "properties",
                o(vec![
                    (
                        "code",
                        o(vec![
                            ("type", s("string")),
                            (
                                "enum",
                                J::A(
                                    [
                                        "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
                                        "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
                                        "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
                                    ]
                                    .into_iter()
                                    .map(s)
                                    .collect(),
                                ),
                            ),
                        ]),
                    ),
                    ("message", o(vec![("type", s("string"))])),
                    ("details", o(vec![("type", s("array")), ("items", o(vec![("type", s("object"))]))])),
                ]),
            ),
        ]),
    ));
    let doc = o(vec![
        ("openapi", s("3.0.3")),
        (
            "info",
            o(vec![
                ("title", s("authzd HTTP/JSON")),
                ("version", s(version)),
                (
                    "description",
                    s(
                        "Every unary RPC of authzd as `POST /authzd.v1.<Service>/<Method>` with a proto3 JSON body (`content-type: application/json`), \
                       answered by the same handlers as gRPC; `WatchService/Watch` as Server-Sent Events. Generated from `proto/` at build time.",
                    ),
                ),
            ]),
        ),
        ("tags", J::A(tags)),
        ("paths", J::O(paths)),
        (
            "components",
            o(vec![
                ("schemas", J::O(schemas)),
                ("securitySchemes", o(vec![("bearer", o(vec![("type", s("http")), ("scheme", s("bearer"))]))])),
            ]),
        ),
        ("security", J::A(vec![o(vec![]), o(vec![("bearer", J::A(vec![]))])])),
    ]);
    let mut out = String::new();
    write_json(&mut out, &doc, 0);
    out.push('\n');
    out
}

fn clone(v: &J) -> J {
    match v {
        J::S(t) => J::S(t.clone()),
        J::B(b) => J::B(*b),
        J::A(items) => J::A(items.iter().map(clone).collect()),
        J::O(pairs) => J::O(pairs.iter().map(|(k, v)| (k.clone(), clone(v))).collect()),
    }
}
