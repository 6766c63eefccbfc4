//! `proto_mutations`: bytes as a `WriteRequest` message, converted as the
//! `Write` RPC converts it (proto → model mutations and preconditions) and
//! applied to the base tenant (its id `fuzz`; another id: a new tenant), as
//! the writer applies a batch, then compiled and compared as a dry run does.
//! Asserts: no panic; a refused conversion names the field
//! (`mutations[3].put_person.id`); a refused batch names the field and says
//! why; an accepted batch gives a configuration that validates again (whole,
//! not only the changed parts), exports and re-imports to itself, compiles
//! incrementally to the view a whole compilation gives, and decides as the
//! reference evaluator; the actor check and the change report of the write
//! finish on it.

use super::Outcome;
use authzd::engine::TenantView;
use authzd::engine::{actor, changes};
use authzd::model::{TenantConfig, TenantFile, TenantId, validate};
use authzd::proto::authzd::v1 as pb;
use authzd::replica::Limits;
use authzd::service::{ServiceError, convert};
use prost::Message as _;

/// The target's body.
pub fn run(data: &[u8]) -> Outcome {
    let Ok(req) = pb::WriteRequest::decode(data) else { return Outcome::Refused };
    let limits = Limits::default();
    // The Write handler refuses larger batches before converting them.
    if req.mutations.len() > limits.max_batch || req.tenant.is_empty() {
        return Outcome::Refused;
    }
    let preconditions: Result<Vec<_>, _> =
        req.preconditions.into_iter().enumerate().map(|(i, p)| convert::precondition(i, p)).collect();
    if let Err(e) = &preconditions {
        assert_names_field(e, "preconditions[");
    }
    let mutations = match convert::mutations(req.mutations) {
        Ok(m) => m,
        Err(e) => {
            assert_names_field(&ServiceError::from(e), "mutations[");
            return Outcome::Refused;
        }
    };
    let base = super::base();
    let current = (req.tenant == base.config.id.as_str()).then_some(base);
    let start = current.map_or_else(|| TenantConfig::empty(TenantId(req.tenant.clone())), |s| (*s.config).clone());
    let next = match start.apply_batch(&mutations) {
        Ok(next) => next,
        Err(e) => {
            assert!(!e.field.is_empty() && !e.message.is_empty(), "a refused batch names no field: {e:?}");
            return Outcome::Refused;
        }
    };
    let whole = validate::validate(&next);
    assert!(whole.is_ok(), "an accepted batch leaves a configuration that does not validate: {whole:?}");
    let exported = TenantFile::from_config(&next).to_yaml();
    let reloaded = exported.as_ref().map_err(Clone::clone).and_then(|y| TenantFile::from_yaml(y)?.to_config());
    assert!(
        reloaded.as_ref() == Ok(&next),
        "export does not load back to the same configuration: {reloaded:?}\nexport:\n{}",
        exported.unwrap_or_default()
    );
    let view = TenantView::build_next(current.map(|s| (&*s.view, &*s.config)), &next, 2);
    let full = TenantView::build(&next, 2);
    let same = view.compare(&full);
    assert!(same.is_ok(), "incremental and whole compilation differ: {same:?}");
    super::probe(&next, &full);
    if let Some(a) = req.actor.as_deref().filter(|a| !a.is_empty()) {
        if let Err(e) = actor::authorize(current.map(|s| (&*s.config, &*s.view)), &next, &mutations, a) {
            assert!(!e.to_string().is_empty(), "an actor refusal without a message");
        }
    }
    let old = current.map(|s| changes::Side { config: &s.config, view: &s.view });
    changes::compute(old, changes::Side { config: &next, view: &full }, &mutations, limits.change_budget());
    Outcome::Accepted
}

/// A conversion error is `INVALID_ARGUMENT` naming the field under `prefix`.
fn assert_names_field(e: &ServiceError, prefix: &str) {
    assert!(
        matches!(e, ServiceError::InvalidArgument { field, message } if field.starts_with(prefix) && !message.is_empty()),
        "a refused conversion does not name the field: {e:?}"
    );
}
