//! No decision ever sees part of a write batch (ARCHITECTURE habit 9).
//!
//! A writer thread applies batches that each change TWO things at once: the
//! membership of person `u` in group `G` and the entry `G` has on object `O`.
//! Even revisions: `u` is not in `G`, and `G` is allowed Read on `O` (so `u` is
//! denied: NO_GRANT). Odd revisions: `u` is in `G`, and `G` is denied Read on
//! `O` (EXPLICIT_DENY). A torn read — membership of one batch with the entry
//! of the other — would answer ALLOWED (in `G`, `G` allowed) or NO_GRANT at an
//! odd revision. Reader threads check continuously and assert every decision
//! is exactly the one of the revision it reports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests state their expectations by panicking

use authzd::engine::{CheckRequest, ObjectRef, Reason};
use authzd::model::*;
use authzd::snapshot::Snapshot;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

fn ace(allow: bool) -> Mutation {
    let read = PermSet::EMPTY.with(Perm::Read);
    Mutation::PutAce(Ace {
        target: Target::Object(ObjectKey { kind: "Script".into(), id: ObjectId("o".into()) }),
        subject: Subject::Group(GroupId("g".into())),
        allow: if allow { read } else { PermSet::EMPTY },
        deny: if allow { PermSet::EMPTY } else { read },
        propagate: false,
    })
}

fn membership(member: bool) -> Mutation {
    let (g, p) = (GroupId("g".into()), PersonId("u".into()));
    if member {
        Mutation::AddGroupMember { group: g, person: p }
    } else {
        Mutation::RemoveGroupMember { group: g, person: p }
    }
}

#[test]
fn concurrent_batches_are_seen_whole() {
    let snap = Arc::new(Snapshot::new());
    let tenant = TenantId("t".into());
    let setup = vec![
        Mutation::CreateTenant { name: "T".into(), presets: vec![], defaults: true },
        Mutation::PutPerson(Person {
            id: PersonId("u".into()),
            username: "u".into(),
            enabled: true,
            folder: FolderId(folders::PERSONS.into()),
            annex: BTreeMap::new(),
            properties: BTreeMap::new(),
        }),
        Mutation::PutGroup(AccessGroup {
            id: GroupId("g".into()),
            name: "G".into(),
            folder: FolderId(folders::ACCESS_GROUPS.into()),
            members: BTreeSet::new(),
        }),
        Mutation::PutObject(Object {
            kind: "Script".into(),
            id: ObjectId("o".into()),
            name: "o".into(),
            folder: FolderId("Scripts".into()),
            partitions: BTreeSet::new(),
            properties: BTreeMap::new(),
        }),
        ace(true),
    ];
    snap.apply(&tenant, &setup, 2).expect("setup batch is valid");
    snap.mark_loaded();

    let stop = Arc::new(AtomicBool::new(false));
    let checks = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (snap, stop, checks) = (Arc::clone(&snap), Arc::clone(&stop), Arc::clone(&checks));
            std::thread::spawn(move || {
                let req = CheckRequest {
                    subject: "u",
                    permission: Some(Perm::Read),
                    object: Some(ObjectRef { kind: "Script", id: "o", tenant: None }),
                    ..Default::default()
                };
                let mut seen = BTreeSet::new();
                while !stop.load(Ordering::Relaxed) {
                    let d = snap.check("t", &req);
                    let expected = if d.revision % 2 == 0 { Reason::NoGrant } else { Reason::ExplicitDeny };
                    assert_eq!(d.reason, expected, "torn read at revision {}", d.revision);
                    assert!(!d.allowed());
                    seen.insert(d.revision);
                    checks.fetch_add(1, Ordering::Relaxed);
                }
                seen.len()
            })
        })
        .collect();

    let batches = 2_000u64;
    for rev in 3..3 + batches {
        let odd = rev % 2 == 1;
        // The two changes in opposite orders on alternate batches.
        let batch = if odd { vec![membership(true), ace(false)] } else { vec![ace(true), membership(false)] };
        snap.apply(&tenant, &batch, rev).expect("batch is valid");
    }
    stop.store(true, Ordering::Relaxed);
    let distinct: usize = readers.into_iter().map(|r| r.join().expect("reader panicked")).sum();
    assert_eq!(snap.revision(), 2 + batches);
    assert!(checks.load(Ordering::Relaxed) > 0, "readers ran");
    assert!(distinct > 1, "readers observed several revisions while writes were applied");
}

#[test]
fn unloaded_snapshot_and_unknown_tenant_deny() {
    let snap = Snapshot::new();
    let req = CheckRequest {
        subject: "u",
        object: Some(ObjectRef { kind: "Script", id: "o", tenant: None }),
        ..Default::default()
    };
    assert_eq!(snap.check("t", &req).reason, Reason::NotLoaded);
    snap.mark_loaded();
    let d = snap.check("t", &req);
    assert_eq!((d.allowed(), d.reason), (false, Reason::UnknownTenant));
}
