//! `page_token`: bytes as a listing's `page_token` (a proto string: UTF-8),
//! decoded as every listing decodes it, then used to continue listings of
//! the base tenant. Asserts: no panic; a refused token is `INVALID_ARGUMENT`
//! on `page_token`; the empty token is the first page and only it; a decoded
//! token re-encodes to a token that decodes to the same revision and id; a
//! page continued after the token's id holds exactly the visible objects
//! (and the allowed persons) after that id, at most the page size, in order.

use super::Outcome;
use authzd::engine::{CheckRequest, ListRequest, ObjectRef};
use authzd::model::Perm;
use authzd::service::{ServiceError, convert};

/// The target's body.
pub fn run(data: &[u8]) -> Outcome {
    let Ok(token) = std::str::from_utf8(data) else { return Outcome::Refused };
    let (revision, after) = match convert::decode_page_token(token) {
        Ok(Some(t)) => t,
        Ok(None) => {
            assert!(token.is_empty(), "a non-empty token decoded as the first page: {token:?}");
            return Outcome::Refused;
        }
        Err(e) => {
            assert!(
                matches!(&e, ServiceError::InvalidArgument { field, .. } if field == "page_token"),
                "a refused token does not name `page_token`: {e:?}"
            );
            return Outcome::Refused;
        }
    };
    let again = convert::encode_page_token(revision, &after);
    let decoded = convert::decode_page_token(&again);
    assert!(
        matches!(&decoded, Ok(Some((r, a))) if *r == revision && *a == after),
        "token {token:?} decodes to ({revision}, {after:?}), re-encoded as {again:?} it decodes to {decoded:?}"
    );
    let base = super::base();
    let view = &base.view;
    for subject in ["alice", "dave"] {
        for kind in ["Report", "Script"] {
            for limit in [1, 2] {
                let all = ListRequest {
                    subject,
                    kind,
                    folder: None,
                    permission: Perm::Read,
                    application: None,
                    after: None,
                    limit,
                };
                let every = view.visible_ids(&all).unwrap_or_default();
                let page = view.list_visible_refs(&ListRequest { after: Some(&after), ..all });
                let got: Vec<&str> = page.iter().flat_map(|p| p.items.iter().map(|v| v.id)).collect();
                let want: Vec<&str> = every.iter().copied().filter(|id| *id > after.as_str()).take(limit).collect();
                assert_eq!(got, want, "the page of {subject}'s {kind} objects after {after:?}");
            }
        }
    }
    let check = CheckRequest {
        object: Some(ObjectRef { kind: "Report", id: "daily", tenant: None }),
        permission: Some(Perm::Read),
        ..CheckRequest::default()
    };
    let page = view.allowed_subjects(&check, Some(&after), 2);
    for s in page.iter().flat_map(|p| &p.items) {
        assert!(s.person > after.as_str(), "allowed subject {} listed after {after:?}", s.person);
    }
    Outcome::Accepted
}
