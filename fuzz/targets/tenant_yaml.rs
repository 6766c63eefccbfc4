//! `tenant_yaml`: bytes as a tenant file, checked as `authzd validate`
//! checks it (every problem with its position) and loaded as an import loads
//! it. Asserts: no panic; a file is valid exactly when the write path accepts
//! it, with the same configuration; every problem has a position and a
//! message; a valid configuration validates again, exports and re-imports to
//! itself, and compiles to a view whose decisions agree with the reference
//! evaluator.

use super::Outcome;
use authzd::engine::TenantView;
use authzd::model::{TenantFile, validate};

/// The target's body.
pub fn run(data: &[u8]) -> Outcome {
    // `authzd validate` and Import read text: a file that is not UTF-8 is refused before parsing.
    let Ok(text) = std::str::from_utf8(data) else { return Outcome::Refused };
    let check = TenantFile::check_text(text);
    for p in &check.problems {
        assert!(p.pos.line >= 1 && p.pos.column >= 1, "problem without a position: {p:?}");
        assert!(!p.message.is_empty(), "problem without a message: {p:?}");
    }
    // The write path (Import, `--demo`): the first problem only, and the same verdict.
    let loaded = TenantFile::from_yaml(text).and_then(|f| f.to_config());
    if let Err(e) = &loaded {
        assert!(!e.message.is_empty(), "error without a message: {e:?}");
    }
    let Some(config) = check.config else {
        assert!(!check.problems.is_empty(), "invalid without a problem");
        assert!(loaded.is_err(), "`authzd validate` refuses a file the write path loads: {:?}", check.problems);
        return Outcome::Refused;
    };
    assert!(check.problems.is_empty(), "valid with problems: {:?}", check.problems);
    assert!(
        loaded.as_ref().is_ok_and(|c| *c == config),
        "the write path does not load what `authzd validate` accepts: {:?}",
        loaded.err()
    );
    let again = validate::validate(&config);
    assert!(again.is_ok(), "a loaded configuration does not validate again: {again:?}");
    // Export, then load the export: the same configuration (file.rs: load → export → load).
    let exported = TenantFile::from_config(&config).to_yaml();
    let reloaded = exported.as_ref().map_err(Clone::clone).and_then(|y| TenantFile::from_yaml(y)?.to_config());
    assert!(
        reloaded.as_ref() == Ok(&config),
        "export does not load back to the same configuration: {reloaded:?}\nexport:\n{}",
        exported.unwrap_or_default()
    );
    let view = TenantView::build(&config, 1);
    super::probe(&config, &view);
    Outcome::Accepted
}
