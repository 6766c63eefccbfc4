//! `authzd validate` and `authzd test` as a user runs them: the real binary
//! on the example assertion files (which must pass) and on fixtures that must
//! fail with exactly the differences and positions written below.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output};

fn authzd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_authzd"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run authzd: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The example assertion files, as `examples/tests/<name>.yaml`.
fn example_files() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/tests");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap_or_else(|e| panic!("{e}")).file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .map(|n| format!("examples/tests/{n}"))
        .collect();
    files.sort();
    files
}

#[test]
fn the_example_assertion_files_pass() {
    let files = example_files();
    assert!(files.len() >= 2, "{files:?}");
    let args: Vec<&str> = std::iter::once("test").chain(files.iter().map(String::as_str)).collect();
    let out = authzd(&args);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    for f in &files {
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("PASS {f}: ")) && l.ends_with(" assertions")),
            "{f}: {stdout}"
        );
    }
    assert!(!stdout.contains("FAIL"), "{stdout}");
}

#[test]
fn a_failing_assertion_file_shows_each_difference_and_exits_1() {
    let f = "tests/fixtures/policy_failing.yaml";
    let out = authzd(&["test", f]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let expected = [
        format!("FAIL {f}: 5 of 6 assertions failed"),
        format!("  {f}:16: checks[1]: expected deny (NO_GRANT), got allow (ALLOWED)"),
        format!("  {f}:17: checks[2]: expected deny (EXPLICIT_DENY), got deny (NO_GRANT)"),
        format!("  {f}:19: listings[0]: missing: [d3], unexpected: [d2]"),
        format!("  {f}:21: subjects[0]: missing: [ben], unexpected: [ann]"),
        format!("  {f}:23: holders[0]: the lookup failed: UNKNOWN_APPLICATION"),
    ];
    assert_eq!(stdout.lines().collect::<Vec<_>>(), expected, "{stdout}");

    // One failing file among passing ones still fails the run; the others still report.
    let examples = example_files();
    let mut args = vec!["test", f];
    args.extend(examples.iter().map(String::as_str));
    let out = authzd(&args);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    for e in &examples {
        assert!(stdout.contains(&format!("PASS {e}: ")), "{stdout}");
    }

    // --json: the same failures.
    let out = authzd(&["test", "--json", f]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["passed"], false);
    assert_eq!(v["files"][0]["assertions"], 6);
    let failures = v["files"][0]["failures"].as_array().cloned().unwrap_or_default();
    let got: Vec<(u64, &str)> =
        failures.iter().map(|f| (f["line"].as_u64().unwrap_or(0), f["path"].as_str().unwrap_or(""))).collect();
    assert_eq!(
        got,
        [(16, "checks[1]"), (17, "checks[2]"), (19, "listings[0]"), (21, "subjects[0]"), (23, "holders[0]")]
    );
}

#[test]
fn a_bad_assertion_file_is_an_error_naming_the_field_and_item() {
    let out = authzd(&["test", "tests/fixtures/policy_bad.yaml"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("ERROR tests/fixtures/policy_bad.yaml: the file cannot run"), "{stdout}");
    assert!(stdout.contains("policy_bad.yaml:4: checks[0]: unknown field `permision`"), "{stdout}");
}

#[test]
fn assertion_file_problems_are_reported_not_run() {
    let dir = std::env::temp_dir().join(format!("authzd-policy-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let cases = [
        // A reason code that does not exist, and one that contradicts `expect`.
        (
            "tenant_inline: {tenant: {id: t, name: T}, persons: [{id: a, username: a}]}\nchecks:\n  - {person: a, object: {type: Folder, id: root}, permission: Read, expect: deny, reason: NOPE}\n  - {person: a, object: {type: Folder, id: root}, permission: Read, expect: deny, reason: ALLOWED}\n",
            vec![
                ":3: checks[0].reason: unknown reason `NOPE`",
                ":4: checks[1].reason: reason `ALLOWED` is an allow, but `expect` is deny",
            ],
        ),
        // Edits that do not apply name the edit.
        (
            "tenant_inline: {tenant: {id: t, name: T}}\nedits:\n  - add_group_member: {group: nope, person: a}\nchecks:\n  - {person: a, object: {type: Folder, id: root}, expect: deny}\n",
            vec![":3: edits[0].add_group_member.group: unknown access group `nope`"],
        ),
        // A tenant file that does not exist, and no tenant at all.
        ("tenant: missing.yaml\nchecks: []\n", vec![":1: tenant: cannot read tenant file"]),
        ("checks: []\n", vec![": tenant: missing the tenant"]),
    ];
    for (i, (yaml, needles)) in cases.iter().enumerate() {
        let f = dir.join(format!("case{i}.yaml"));
        std::fs::write(&f, yaml).unwrap_or_else(|e| panic!("{e}"));
        let out = authzd(&["test", &f.display().to_string()]);
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "case {i}: {stdout}");
        assert!(stdout.contains("the file cannot run"), "case {i}: {stdout}");
        for n in needles {
            assert!(stdout.contains(n), "case {i}: {n:?} not in {stdout}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn validate_lists_every_error_at_its_line_and_column() {
    let f = "tests/fixtures/tenant_errors.yaml";
    let out = authzd(&["validate", f]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let expected = [
        format!("{f}:6:28: persons[1].folder: unknown folder `Nowhere`"),
        format!("{f}:8:38: access_groups[0].members[1]: unknown person `ghost`"),
        format!(
            "{f}:13:35: roles[0].privileges.Callback[1]: unknown privilege of application `Callback` `Callback - Fly`"
        ),
        format!("{f}:16:15: aces[0].subject.group: unknown subject `access group g2`"),
        format!("{f}: invalid: 4 errors"),
    ];
    assert_eq!(stderr.lines().collect::<Vec<_>>(), expected, "{stderr}");
    assert!(out.stdout.is_empty());

    let out = authzd(&["validate", "--json", f]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["valid"], false);
    let errors = v["errors"].as_array().cloned().unwrap_or_default();
    let got: Vec<(u64, u64, &str)> = errors
        .iter()
        .map(|e| (e["line"].as_u64().unwrap_or(0), e["column"].as_u64().unwrap_or(0), e["path"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(
        got,
        [
            (6, 28, "persons[1].folder"),
            (8, 38, "access_groups[0].members[1]"),
            (13, 35, "roles[0].privileges.Callback[1]"),
            (16, 15, "aces[0].subject.group")
        ]
    );
    assert!(errors.iter().all(|e| e["file"] == f));
}

#[test]
fn validate_names_both_places_of_a_duplicate() {
    let f = "tests/fixtures/tenant_duplicates.yaml";
    let out = authzd(&["validate", f]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let expected = [
        format!(
            "{f}:4:50: persons[1].properties.team: duplicate key `team` (first defined at {f}:4:41, persons[1].properties.team)"
        ),
        format!("{f}:5:6: persons[2].id: duplicate person id `p1` (first defined at {f}:3:5, persons[0])"),
        format!("{f}:8:17: objects[1].id: duplicate Doc object id `d1` (first defined at {f}:7:5, objects[0])"),
        format!(
            "{f}:12:5: aces[1]: duplicate entry for `folder root and everyone` (first defined at {f}:11:5, aces[0])"
        ),
        format!("{f}: invalid: 4 errors"),
    ];
    assert_eq!(stderr.lines().collect::<Vec<_>>(), expected, "{stderr}");
}

#[test]
fn validate_reports_syntax_errors_and_accepts_the_demo_tenant() {
    let out = authzd(&["validate", "examples/acme.yaml", "tests/fixtures/tenant_errors.yaml"]);
    assert_eq!(out.status.code(), Some(1), "one invalid file fails the run");
    assert!(text(&out.stdout).starts_with("examples/acme.yaml: valid tenant `acme` (ACME): "));

    let out = authzd(&["validate", "examples/acme.yaml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = authzd(&["validate", "--json", "examples/acme.yaml"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["valid"], true);
    assert_eq!(v["errors"], serde_json::json!([]));

    let dir = std::env::temp_dir().join(format!("authzd-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let f = dir.join("syntax.yaml");
    std::fs::write(&f, "tenant: {id: t, name: T}\npersons:\n  - {id: p1, username: u1, colour: red}\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let out = authzd(&["validate", &f.display().to_string()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("syntax.yaml:3:28: persons[0]: unknown field `colour`"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
