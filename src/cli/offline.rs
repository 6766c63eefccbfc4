//! The offline commands: `validate` (tenant files) and `test` (assertion files).

use super::read_file;
use super::render::print_json;
use crate::console::outln;
use crate::model::TenantFile;
use clap::Args;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::ExitCode;

/// Offline validation.
#[derive(Debug, Clone, Args)]
pub struct ValidateArgs {
    /// The tenant files.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Offline assertion files.
#[derive(Debug, Clone, Args)]
pub struct TestArgs {
    /// The assertion files (YAML; see README "authzd test").
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `authzd validate FILE...`: parses and validates tenant files offline and
/// reports every problem of each, as `file:line:column: field.path: message`
/// on standard error (a valid file gets its summary line on standard output).
/// Exit code 1 when any file has a problem.
pub fn validate(a: &ValidateArgs) -> ExitCode {
    let mut reports = Vec::new();
    let mut failed = false;
    for file in &a.files {
        let path = file.display().to_string();
        let check = match read_file(file) {
            Ok(text) => TenantFile::check_text(&text),
            Err(e) => crate::model::file::FileCheck {
                config: None,
                problems: vec![crate::model::file::FileProblem {
                    pos: crate::model::yaml::Pos { line: 0, column: 0 },
                    path: String::new(),
                    message: e.to_string(),
                    first: None,
                }],
            },
        };
        let errors: Vec<Value> = check
            .problems
            .iter()
            .map(|p| {
                json!({"file": path, "line": p.pos.line, "column": p.pos.column, "path": p.path,
                       "message": problem_message(&path, p)})
            })
            .collect();
        match &check.config {
            Some(c) => {
                if a.json {
                    reports.push(json!({
                        "file": path, "valid": true, "tenant": c.id.0, "name": c.name,
                        "persons": c.persons.len(), "groups": c.groups.len(), "roles": c.roles.len(),
                        "folders": c.folders.len(), "objects": c.objects.len(), "aces": c.aces.len(),
                        "applications": c.catalogs.keys().collect::<Vec<_>>(),
                        "errors": errors,
                    }));
                } else {
                    outln!(
                        "{path}: valid tenant `{}` ({}): {} persons, {} groups, {} roles, {} folders, {} objects, {} entries; applications: {}",
                        c.id,
                        c.name,
                        c.persons.len(),
                        c.groups.len(),
                        c.roles.len(),
                        c.folders.len(),
                        c.objects.len(),
                        c.aces.len(),
                        c.catalogs.keys().cloned().collect::<Vec<_>>().join(", ")
                    );
                }
            }
            None => {
                failed = true;
                if a.json {
                    let first = check.problems.first().map(|p| problem_line(&path, p)).unwrap_or_default();
                    reports.push(json!({"file": path, "valid": false, "error": first, "errors": errors}));
                } else {
                    for p in &check.problems {
                        eprintln!("{}", problem_line(&path, p));
                    }
                    let n = check.problems.len();
                    eprintln!("{path}: invalid: {n} error{}", if n == 1 { "" } else { "s" });
                }
            }
        }
    }
    if a.json {
        match reports.as_slice() {
            [one] => print_json(one),
            _ => print_json(&Value::Array(reports)),
        }
    }
    if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// `authzd test FILE...`: runs assertion files offline. One line per file
/// (`PASS file: N assertions`, or `FAIL ...` followed by each difference as
/// `file:line: checks[1]: expected deny (NO_GRANT), got allow (ALLOWED)`);
/// exit code 1 when any assertion fails or any file cannot run.
pub fn test(a: &TestArgs) -> ExitCode {
    let mut all_passed = true;
    let mut reports = Vec::new();
    for file in &a.files {
        let path = file.display().to_string();
        let o = crate::policytest::run_file(file);
        all_passed &= o.passed();
        let at = |f: &crate::policytest::Failure| {
            let pos = if f.pos.line == 0 { path.clone() } else { format!("{path}:{}", f.pos.line) };
            if f.path.is_empty() {
                format!("{pos}: {}", f.message)
            } else {
                format!("{pos}: {}: {}", f.path, f.message)
            }
        };
        if a.json {
            let items = |fs: &[crate::policytest::Failure]| -> Vec<Value> {
                fs.iter()
                    .map(|f| json!({"line": f.pos.line, "column": f.pos.column, "path": f.path, "message": f.message}))
                    .collect()
            };
            reports.push(json!({
                "file": path, "passed": o.passed(), "assertions": o.assertions,
                "failures": items(&o.failures), "errors": items(&o.errors),
            }));
            continue;
        }
        if !o.errors.is_empty() {
            outln!("ERROR {path}: the file cannot run");
            for f in &o.errors {
                outln!("  {}", at(f));
            }
        } else if o.failures.is_empty() {
            outln!("PASS {path}: {} assertion{}", o.assertions, if o.assertions == 1 { "" } else { "s" });
        } else {
            outln!("FAIL {path}: {} of {} assertions failed", o.failures.len(), o.assertions);
            for f in &o.failures {
                outln!("  {}", at(f));
            }
        }
    }
    if a.json {
        print_json(&json!({"passed": all_passed, "files": reports}));
    }
    if all_passed { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// A problem's message; a duplicate's names where the first item is.
fn problem_message(file: &str, p: &crate::model::file::FileProblem) -> String {
    match &p.first {
        Some((pos, first)) => format!("{} (first defined at {file}:{pos}, {first})", p.message),
        None => p.message.clone(),
    }
}

/// `file:line:column: field.path: message`.
fn problem_line(file: &str, p: &crate::model::file::FileProblem) -> String {
    let at = if p.pos.line == 0 { file.to_owned() } else { format!("{file}:{}", p.pos) };
    if p.path.is_empty() {
        format!("{at}: {}", problem_message(file, p))
    } else {
        format!("{at}: {}: {}", p.path, problem_message(file, p))
    }
}
