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

/// Parses `text`; a syntax or shape error gives its position, the field
/// path serde names (`persons[2]`, empty when none) and the message without
/// either.
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, (Option<Pos>, String, String)> {
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_yaml_ng::with::singleton_map_recursive::deserialize(de).map_err(|e| {
        let pos = e.location().map(|l| Pos { line: l.line(), column: l.column() });
        let mut message = e.to_string();
        if let Some(p) = pos {
            message = message.replacen(&format!(" at line {} column {}", p.line, p.column), "", 1);
        }
        // serde_yaml_ng starts the message with the path when it has one: `persons[2]: unknown field ...`.
        let path = match message.split_once(": ") {
            Some((p, m)) if !p.is_empty() && !p.contains(' ') => {
                let p = p.to_owned();
                message = m.to_owned();
                p
            }
            _ => String::new(),
        };
        (pos, path, message)
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

/// A position in a YAML text: line and column, both counted from 1 (as
/// serde_yaml_ng's error locations are).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub column: usize,
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// What a node of the document is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    /// A scalar, with its value.
    Scalar(String),
    /// A sequence of this many items.
    Sequence(usize),
    /// A mapping with these keys, in the order written.
    Mapping(Vec<String>),
    /// An alias (`*name`).
    Alias,
}

/// One node: where it is (a mapping entry: where its key is) and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Where the node starts (for a mapping value: its key).
    pub pos: Pos,
    /// What it is.
    pub kind: NodeKind,
}

/// A key written twice in one mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateKey {
    /// Path of the second occurrence (`persons[2].annex.ges`).
    pub path: String,
    /// Where the second occurrence is.
    pub at: Pos,
    /// Where the first one is.
    pub first: Pos,
}

/// The nodes of the first document of a YAML text by path: `persons[3]`,
/// `persons[3].folder`, `aces[12].subject.group` (mapping keys joined with
/// dots, sequence indexes in brackets, the root is the empty path).
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    nodes: std::collections::HashMap<String, Node>,
}

impl SourceMap {
    /// The node at `path`.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// The position of `path`, or of its nearest written ancestor (a field
    /// left to its default is reported where its item is); line 1 column 1
    /// when none is written.
    pub fn pos(&self, path: &str) -> Pos {
        let mut p = path;
        loop {
            if let Some(n) = self.nodes.get(p) {
                return n.pos;
            }
            match parent_path(p) {
                Some(up) => p = up,
                None => return self.nodes.get("").map_or(Pos { line: 1, column: 1 }, |n| n.pos),
            }
        }
    }
}

/// The path one step up (`a.b[2]` → `a.b`, `a.b` → `a`, `a` → ``), `None` at the root.
fn parent_path(p: &str) -> Option<&str> {
    if p.is_empty() {
        return None;
    }
    let cut = if p.ends_with(']') { p.rfind('[') } else { p.rfind('.') };
    Some(cut.map_or("", |i| &p[..i]))
}

/// Where the next node goes.
enum Frame {
    Mapping {
        path: String,
        keys: Vec<String>,
        seen: std::collections::HashMap<String, Pos>,
        key: Option<(String, Pos)>,
    },
    Sequence {
        path: String,
        len: usize,
    },
}

fn join_key(parent: &str, key: &str) -> String {
    if parent.is_empty() { key.to_owned() } else { format!("{parent}.{key}") }
}

/// Reads the structure of `text` (its first document): every node's position
/// by path when `record`, and every mapping key written twice. A syntax error
/// gives its position and message.
pub fn source_map(text: &str, record: bool) -> Result<(SourceMap, Vec<DuplicateKey>), (Pos, String)> {
    use saphyr_parser::{Event, Parser};
    let mut map = SourceMap::default();
    let mut dups = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut started = false;
    for ev in Parser::new_from_str(text) {
        let (ev, span) = ev.map_err(|e| {
            let m = e.marker();
            (Pos { line: m.line(), column: m.col() + 1 }, e.info().to_owned())
        })?;
        let pos = Pos { line: span.start.line(), column: span.start.col() + 1 };
        let (kind, opens) = match ev {
            Event::DocumentStart(_) if started => break,
            Event::DocumentStart(_) => {
                started = true;
                continue;
            }
            Event::DocumentEnd => break,
            Event::Scalar(v, ..) => (NodeKind::Scalar(v.into_owned()), false),
            Event::Alias(_) => (NodeKind::Alias, false),
            Event::SequenceStart(..) => (NodeKind::Sequence(0), true),
            Event::MappingStart(..) => (NodeKind::Mapping(Vec::new()), true),
            Event::SequenceEnd | Event::MappingEnd => {
                let (path, kind) = match stack.pop() {
                    Some(Frame::Sequence { path, len }) => (path, NodeKind::Sequence(len)),
                    Some(Frame::Mapping { path, keys, .. }) => (path, NodeKind::Mapping(keys)),
                    None => continue,
                };
                if let Some(n) = map.nodes.get_mut(&path).filter(|_| record) {
                    n.kind = kind;
                }
                continue;
            }
            _ => continue,
        };
        // Where this node sits: a key, a mapping value, a sequence item or the root.
        let (path, at) = match stack.last_mut() {
            None => (String::new(), pos),
            Some(Frame::Sequence { path, len }) => {
                *len += 1;
                (format!("{path}[{}]", *len - 1), pos)
            }
            Some(Frame::Mapping { path, keys, seen, key }) => match key.take() {
                None => {
                    // A key. Complex keys (a mapping or sequence as a key) are recorded as `?`.
                    let k = match &kind {
                        NodeKind::Scalar(s) => s.clone(),
                        _ => "?".to_owned(),
                    };
                    if let Some(first) = seen.get(&k) {
                        dups.push(DuplicateKey { path: join_key(path, &k), at: pos, first: *first });
                    } else {
                        seen.insert(k.clone(), pos);
                        if record {
                            keys.push(k.clone());
                        }
                    }
                    let child = join_key(path, &k);
                    *key = Some((k, pos));
                    if !opens {
                        continue;
                    }
                    (child, pos)
                }
                Some((k, kpos)) => (join_key(path, &k), kpos),
            },
        };
        if record {
            map.nodes.entry(path.clone()).or_insert(Node { pos: at, kind: kind.clone() });
        }
        if opens {
            stack.push(match kind {
                NodeKind::Sequence(_) => Frame::Sequence { path, len: 0 },
                _ => Frame::Mapping { path, keys: Vec::new(), seen: Default::default(), key: None },
            });
        }
    }
    Ok((map, dups))
}
