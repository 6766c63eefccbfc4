//! The modules of `src/` import each other in layers: no import cycle.
//!
//! This test reads `src/` at test time (std only) and builds the import graph
//! of the crate's top-level modules (`model`, `engine`, `cli`, `loadgen`, ...,
//! as declared in `src/lib.rs`), and of the submodules of each layer that
//! has several (`cli`, `engine`, `http`, `loadgen`, `model`, `service`). It
//! asserts that
//!
//! 1. `model` and `engine`, the decision core, import only `model` and `engine`;
//! 2. the top-level modules import each other without a cycle;
//! 3. within each of those layers, the submodules (`model`'s `config`,
//!    `validate`, `presets`, `apply`, ...; `loadgen`'s `pools`, `tally`,
//!    `runner`, `report`, ...) import each other without a cycle.
//!
//! On failure it prints each cycle with a `file:line` for each of its edges.
//!
//! What counts as an import (the rule):
//! - every path in code that starts with `crate::`, `$crate::` (a macro of
//!   the crate), `super::` or `self::`, resolved from the module it is written
//!   in (inline `mod x { ... }` blocks included) to the deepest module of
//!   `src/` it names: `use` lines, `use crate::{a::b, c::{d, e}}` groups
//!   (each item its own edge, at its own line) and inline paths
//!   (`crate::cli::outln!`, `super::soak::table(..)`) alike;
//! - comments and doc comments (`//`, `///`, `//!`, `/* */`, `/** */`) are not
//!   code: a doc link such as [`crate::cli::ServeFlags`] is no import; nor are
//!   string, byte string and character literals (`"crate::x"`);
//! - `#[cfg]` does not matter: every line of `src/` counts, whatever features
//!   build it;
//! - a module's use of its own items is no edge; a layer's `mod.rs` itself
//!   (`loadgen/mod.rs` with its shared types such as `BenchArgs` and the
//!   dispatch to every workload; `model/mod.rs` with its re-exports) is not a
//!   node of the submodule graph: that graph is of the submodules among
//!   themselves;
//! - `src/main.rs` is the binary, another crate: it is not read.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The decision core: it imports only itself.
const CORE: [&str; 2] = ["model", "engine"];

/// Top-level modules whose submodules must not import each other in a cycle.
const SUBMODULE_DAGS: [&str; 6] = ["cli", "engine", "http", "loadgen", "model", "service"];

/// One import: from the module path of the code to the module path it names.
#[derive(Debug, Clone)]
struct Import {
    /// Module of the code (the file's module; inline `mod` blocks within it included).
    from: Vec<String>,
    /// The file's own module (for grouping by file).
    file_module: Vec<String>,
    /// The deepest module of `src/` the path names.
    to: Vec<String>,
    /// `src/...`, relative to the package.
    file: String,
    line: usize,
    /// The path as written, e.g. `crate::cli::CliError`.
    path: String,
}

/// The same source with comments, string and character literals blanked out
/// (newlines kept, so lines still count).
fn code_only(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let n = c.len();
    let mut out = String::with_capacity(src.len());
    let blank = |out: &mut String, s: &[char]| {
        for &ch in s {
            out.push(if ch == '\n' { '\n' } else { ' ' });
        }
    };
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < n {
        let starts = |s: &str| s.chars().enumerate().all(|(k, ch)| c.get(i + k) == Some(&ch));
        let after_ident = i > 0 && ident(c[i - 1]);
        if starts("//") {
            let j = (i..n).find(|&j| c[j] == '\n').unwrap_or(n);
            blank(&mut out, &c[i..j]);
            i = j;
        } else if starts("/*") {
            let (mut depth, mut j) = (0usize, i);
            while j < n {
                if c[j] == '/' && c.get(j + 1) == Some(&'*') {
                    depth += 1;
                    j += 2;
                } else if c[j] == '*' && c.get(j + 1) == Some(&'/') {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, &c[i..j.min(n)]);
            i = j.min(n);
        } else if let Some(len) = if after_ident { None } else { raw_string_len(&c[i..]) } {
            blank(&mut out, &c[i..i + len]);
            i += len;
        } else if c[i] == '"' || (!after_ident && matches!(c[i], 'b' | 'c') && c.get(i + 1) == Some(&'"')) {
            let mut j = if c[i] == '"' { i + 1 } else { i + 2 };
            while j < n && c[j] != '"' {
                j += if c[j] == '\\' { 2 } else { 1 };
            }
            let j = (j + 1).min(n);
            blank(&mut out, &c[i..j]);
            i = j;
        } else if c[i] == '\'' && c.get(i + 1) == Some(&'\\') {
            // An escaped character literal: '\n', '\'', '\u{..}'.
            let j = (i + 3..n).find(|&j| c[j] == '\'').map_or(n, |j| j + 1);
            blank(&mut out, &c[i..j]);
            i = j;
        } else if c[i] == '\'' && c.get(i + 2) == Some(&'\'') {
            // A character literal ('"', '{'); otherwise `'` starts a lifetime.
            blank(&mut out, &c[i..i + 3]);
            i += 3;
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// The length of a raw string literal (`r"..."`, `r#"..."#`, `br#"..."#`,
/// `cr"..."`) at the start of `c`, if one starts there.
fn raw_string_len(c: &[char]) -> Option<usize> {
    let mut i = usize::from(matches!(c.first(), Some('b' | 'c')));
    if c.get(i) != Some(&'r') {
        return None;
    }
    i += 1;
    let hashes = c[i..].iter().take_while(|&&ch| ch == '#').count();
    i += hashes;
    if c.get(i) != Some(&'"') {
        return None;
    }
    i += 1;
    while i < c.len() {
        if c[i] == '"' && c[i + 1..].iter().take(hashes).filter(|&&ch| ch == '#').count() == hashes {
            return Some(i + 1 + hashes);
        }
        i += 1;
    }
    Some(c.len())
}

/// Tokens of code (identifiers, `$crate`, `::`, single punctuation), each with its line.
fn tokens(code: &str) -> Vec<(String, usize)> {
    let c: Vec<char> = code.chars().collect();
    let (mut v, mut line, mut i) = (Vec::new(), 1, 0);
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch.is_alphabetic() || ch == '_' || (ch == '$' && c.get(i + 1).is_some_and(|x| x.is_alphabetic())) {
            let j = (i + 1..c.len()).find(|&j| !(c[j].is_alphanumeric() || c[j] == '_')).unwrap_or(c.len());
            v.push((c[i..j].iter().collect(), line));
            i = j;
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            v.push(("::".into(), line));
            i += 2;
        } else {
            v.push((ch.to_string(), line));
            i += 1;
        }
    }
    v
}

fn is_ident(t: &str) -> bool {
    t.starts_with(|ch: char| ch.is_alphabetic() || ch == '_' || ch == '$')
}

/// Parses the path (or `use` tree) at `toks[k]`: every leaf path as segments
/// with the line of its last group item, and the index after it.
fn parse_tree(toks: &[(String, usize)], mut k: usize) -> (Vec<(Vec<String>, usize)>, usize) {
    let mut segs = Vec::new();
    let line = toks.get(k).map_or(0, |t| t.1);
    while k < toks.len() {
        let t = toks[k].0.as_str();
        if t == "{" {
            k += 1;
            let mut leaves = Vec::new();
            while k < toks.len() && toks[k].0 != "}" {
                let (sub, next) = parse_tree(toks, k);
                leaves.extend(sub.into_iter().map(|(s, l)| ([segs.clone(), s].concat(), l)));
                k = next;
                // Past a rename (`a as b`) to the next item.
                while toks.get(k).is_some_and(|t| t.0 != "," && t.0 != "}") {
                    k += 1;
                }
                if toks.get(k).is_some_and(|t| t.0 == ",") {
                    k += 1;
                }
            }
            if leaves.is_empty() {
                leaves.push((segs, line));
            }
            return (leaves, k + 1);
        }
        if is_ident(t) {
            segs.push(t.to_owned());
            k += 1;
            if toks.get(k).is_some_and(|t| t.0 == "::") {
                k += 1;
                continue;
            }
        } else if t == "*" {
            k += 1;
        }
        break;
    }
    (vec![(segs, line)], k)
}

/// The module of a file: `src/lib.rs` → [], `src/a.rs` and `src/a/mod.rs` → [a], `src/a/b.rs` → [a, b].
fn file_module(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.strip_suffix(".rs").unwrap_or(&last).to_owned();
    if stem != "mod" && stem != "lib" {
        parts.push(stem);
    }
    parts
}

/// Every import in the files `(path under src/, source)`.
fn imports(files: &[(PathBuf, String)]) -> Vec<Import> {
    let mut modules: BTreeSet<Vec<String>> = BTreeSet::new();
    for (rel, _) in files {
        let m = file_module(rel);
        for k in 0..=m.len() {
            modules.insert(m[..k].to_vec());
        }
    }
    let mut found = Vec::new();
    for (rel, src) in files {
        let file = format!("src/{}", rel.display());
        let base = file_module(rel);
        let toks = tokens(&code_only(src));
        if toks.windows(3).any(|w| w[0].0 == "#" && w[1].0 == "[" && w[2].0 == "path") {
            panic!("{file}: a #[path] attribute: this test maps files to modules by their place in src/");
        }
        // Inline `mod name {` blocks: (brace depth at which the block closes, module).
        let (mut scopes, mut current, mut depth) = (Vec::<(usize, Vec<String>)>::new(), base.clone(), 0usize);
        let mut k = 0;
        while k < toks.len() {
            let t = toks[k].0.as_str();
            if t == "mod"
                && toks.get(k + 2).is_some_and(|t| t.0 == "{")
                && toks.get(k + 1).is_some_and(|t| is_ident(&t.0))
            {
                scopes.push((depth, current.clone()));
                current.push(toks[k + 1].0.clone());
                depth += 1;
                k += 3;
                continue;
            }
            if t == "{" {
                depth += 1;
            } else if t == "}" {
                depth = depth.saturating_sub(1);
                if scopes.last().is_some_and(|s| s.0 == depth) {
                    current = scopes.pop().map(|s| s.1).unwrap_or_default();
                }
            }
            let starts_path = matches!(t, "crate" | "$crate" | "super" | "self")
                && toks.get(k + 1).is_some_and(|t| t.0 == "::")
                && (k == 0 || toks[k - 1].0 != "::");
            if starts_path {
                let (leaves, _) = parse_tree(&toks, k);
                for (segs, line) in leaves {
                    let mut abs =
                        if matches!(segs[0].as_str(), "crate" | "$crate") { Vec::new() } else { current.clone() };
                    let mut rest = if matches!(segs[0].as_str(), "crate" | "$crate") { &segs[1..] } else { &segs[..] };
                    while let Some(first) = rest.first() {
                        match first.as_str() {
                            "super" => {
                                abs.pop();
                            }
                            "self" => {}
                            _ => break,
                        }
                        rest = &rest[1..];
                    }
                    abs.extend(rest.iter().cloned());
                    let to = (0..=abs.len())
                        .rev()
                        .map(|j| abs[..j].to_vec())
                        .find(|m| modules.contains(m))
                        .unwrap_or_default();
                    found.push(Import {
                        from: current.clone(),
                        file_module: base.clone(),
                        to,
                        file: file.clone(),
                        line,
                        path: segs.join("::"),
                    });
                }
            }
            k += 1;
        }
    }
    found
}

/// Every `.rs` file under `src/` but `main.rs`, as (path under src/, source).
fn sources() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(&root).unwrap().to_path_buf();
                if rel != Path::new("main.rs") {
                    let src = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                    files.push((rel, src));
                }
            }
        }
    }
    files.sort();
    files
}

/// Edges between nodes, each with where it is written (`file:line (path)`).
type Graph = BTreeMap<String, BTreeMap<String, Vec<String>>>;

/// The graph of nodes given by `node` (None: not a node); no self-edges.
fn graph(imports: &[Import], node: impl Fn(&[String]) -> Option<String>) -> Graph {
    let mut g = Graph::new();
    for i in imports {
        if let (Some(a), Some(b)) = (node(&i.file_module), node(&i.to)) {
            if a == b {
                continue;
            }
            g.entry(a).or_default().entry(b).or_default().push(format!("{}:{} ({})", i.file, i.line, i.path));
        }
    }
    g
}

/// The top-level module of a module path (the crate root is none).
fn top(m: &[String]) -> Option<String> {
    m.first().cloned()
}

/// Cycles of `g`: for each strongly connected part with more than one node
/// (modules that all reach each other), shortest cycles that together go
/// through every node of the part; each as its nodes in order (the first not
/// repeated at the end).
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&String> = g.keys().chain(g.values().flat_map(BTreeMap::keys)).collect();
    let next = |n: &String| g.get(n).into_iter().flat_map(BTreeMap::keys);
    let reach = |from: &String| {
        let (mut seen, mut todo) = (BTreeSet::new(), vec![from.clone()]);
        while let Some(n) = todo.pop() {
            for m in next(&n) {
                if seen.insert(m.clone()) {
                    todo.push(m.clone());
                }
            }
        }
        seen
    };
    let reachable: BTreeMap<&String, BTreeSet<String>> = nodes.iter().map(|&n| (n, reach(n))).collect();
    let mut covered = BTreeSet::new();
    let mut found = Vec::new();
    for &n in &nodes {
        if covered.contains(n) || !reachable[n].contains(n) {
            continue;
        }
        // Its part: the nodes it reaches that reach it back.
        let part: BTreeSet<&String> =
            nodes.iter().copied().filter(|m| reachable[n].contains(*m) && reachable[*m].contains(n)).collect();
        // The shortest way from n back to n within the part (breadth first).
        let mut prev: BTreeMap<String, String> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([n.clone()]);
        'search: while let Some(a) = queue.pop_front() {
            for b in next(&a).filter(|b| part.contains(b)) {
                if b == n {
                    prev.insert(n.clone(), a.clone());
                    break 'search;
                }
                if !prev.contains_key(b) {
                    prev.insert(b.clone(), a.clone());
                    queue.push_back(b.clone());
                }
            }
        }
        let mut cycle = vec![n.clone()];
        let mut at = prev[n].clone();
        while &at != n {
            cycle.push(at.clone());
            at = prev[&at].clone();
        }
        cycle[1..].reverse();
        covered.extend(cycle.iter().cloned());
        found.push(cycle);
    }
    found
}

/// The cycles of `g` in words, each edge with where it is written.
fn describe(what: &str, g: &Graph, cycles: &[Vec<String>]) -> String {
    let mut s = String::new();
    for c in cycles {
        let names: Vec<&str> = c.iter().chain(c.first()).map(String::as_str).collect();
        let _ = writeln!(s, "import cycle among {what}: {}", names.join(" -> "));
        for w in names.windows(2) {
            let at = &g[w[0]][w[1]];
            let more = if at.len() > 3 { format!(" and {} more", at.len() - 3) } else { String::new() };
            let _ = writeln!(s, "  {} -> {}: {}{more}", w[0], w[1], at[..at.len().min(3)].join("; "));
        }
    }
    s
}

#[test]
fn the_decision_core_imports_only_itself() {
    let all = imports(&sources());
    let wrong: Vec<String> = all
        .iter()
        .filter(|i| top(&i.file_module).is_some_and(|m| CORE.contains(&m.as_str())))
        .filter(|i| !top(&i.to).is_some_and(|m| CORE.contains(&m.as_str())))
        .map(|i| format!("  {}:{}: {}", i.file, i.line, i.path))
        .collect();
    assert!(wrong.is_empty(), "model and engine may import only model and engine:\n{}", wrong.join("\n"));
}

#[test]
fn the_top_level_modules_import_each_other_without_a_cycle() {
    let g = graph(&imports(&sources()), top);
    let found = cycles(&g);
    assert!(found.is_empty(), "{}", describe("the top-level modules", &g, &found));
}

#[test]
fn the_submodules_of_each_layer_import_each_other_without_a_cycle() {
    let all = imports(&sources());
    for parent in SUBMODULE_DAGS {
        let g = graph(&all, |m| match m {
            [p, sub, ..] if p == parent => Some(sub.clone()),
            _ => None,
        });
        assert!(g.len() > 1, "{parent}: fewer than two submodules import each other: is the scan broken?");
        let found = cycles(&g);
        assert!(found.is_empty(), "{}", describe(&format!("the submodules of {parent}"), &g, &found));
    }
}

/// The scanner itself, on made-up sources: what counts as an import and what does not.
#[test]
fn the_scanner_finds_imports_and_only_imports() {
    let files = vec![
        (
            PathBuf::from("a/mod.rs"),
            r##"//! See [`crate::x::Doc`] and `crate::x::Also`.
/// Links to [`crate::x::AlsoNot`].
/* a block /* nested crate::x::Nested */ crate::x::Block */
use crate::{
    b::One as Renamed,
    c::{self, Two},
};
use super::d::Three;
mod inner {
    use super::super::e::Four;
    use super::*;
}
fn f() {
    let s = "crate::x::InString";
    let r = r#"crate::x::InRaw "quoted""#;
    let q = '"';
    let t = crate::b::inline::<u8>();
    let l: &'static str = "";
    outln!("{}", crate::c::Five);
}
macro_rules! m { () => { $crate::e::write() }; }
"##
            .to_owned(),
        ),
        (PathBuf::from("a/sub.rs"), "use super::Six;\nuse super::sibling::Seven;\n".to_owned()),
        (PathBuf::from("a/sibling.rs"), String::new()),
        (PathBuf::from("b.rs"), String::new()),
        (PathBuf::from("c.rs"), String::new()),
        (PathBuf::from("d.rs"), String::new()),
        (PathBuf::from("e.rs"), String::new()),
        (PathBuf::from("x.rs"), String::new()),
    ];
    let found: Vec<(String, usize, String)> = imports(&files)
        .into_iter()
        .map(|i| (format!("{} -> {}", i.from.join("::"), i.to.join("::")), i.line, i.path))
        .collect();
    let want: Vec<(String, usize, String)> = [
        ("a -> b", 5, "crate::b::One"),
        ("a -> c", 6, "crate::c::self"),
        ("a -> c", 6, "crate::c::Two"),
        ("a -> d", 8, "super::d::Three"),
        ("a::inner -> e", 10, "super::super::e::Four"),
        ("a::inner -> a", 11, "super"),
        ("a -> b", 17, "crate::b::inline"),
        ("a -> c", 19, "crate::c::Five"),
        ("a -> e", 21, "$crate::e::write"),
        ("a::sub -> a", 1, "super::Six"),
        ("a::sub -> a::sibling", 2, "super::sibling::Seven"),
    ]
    .into_iter()
    .map(|(e, l, p)| (e.to_owned(), l, p.to_owned()))
    .collect();
    assert_eq!(found, want);
}

/// The cycle finder on a made-up graph: it names the cycle and where each edge is written.
#[test]
fn a_cycle_is_reported_with_its_edges() {
    let imports: Vec<Import> =
        [("app", "cli", 3), ("cli", "loadgen", 5), ("loadgen", "app", 7), ("loadgen", "model", 9)]
            .into_iter()
            .map(|(a, b, line)| Import {
                from: vec![a.to_owned()],
                file_module: vec![a.to_owned()],
                to: vec![b.to_owned()],
                file: format!("src/{a}.rs"),
                line,
                path: format!("crate::{b}::X"),
            })
            .collect();
    let g = graph(&imports, top);
    let found = cycles(&g);
    assert_eq!(found, vec![vec!["app".to_owned(), "cli".to_owned(), "loadgen".to_owned()]]);
    assert_eq!(
        describe("the top-level modules", &g, &found),
        "import cycle among the top-level modules: app -> cli -> loadgen -> app\n  \
         app -> cli: src/app.rs:3 (crate::cli::X)\n  \
         cli -> loadgen: src/cli.rs:5 (crate::loadgen::X)\n  \
         loadgen -> app: src/loadgen.rs:7 (crate::app::X)\n"
    );
}
