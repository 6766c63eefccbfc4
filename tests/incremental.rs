//! Incremental validation gives exactly the answer of full validation (the
//! same first problem, or none), on random batches — valid and invalid —
//! applied to the demo tenant: renamed metric folders, removed privileges
//! still used by roles, dangling references, duplicates, bad names, deletes
//! that cascade, groups and partitions beside existing ones, role
//! assignments, moves. Both incremental checks are held to it:
//! `validate_change` (re-checks the collections a batch replaced and those
//! that depend on them) and `validate_batch` (the write path's: only the
//! entities a batch put or edited, when it removed nothing).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests state their expectations by panicking

use authzd::model::validate::{validate, validate_batch, validate_change};
use authzd::model::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

static ACME: LazyLock<TenantConfig> = LazyLock::new(|| {
    TenantFile::from_yaml(include_str!("../examples/acme.yaml")).and_then(|f| f.to_config()).expect("demo loads")
});

fn pick<T: Clone>(v: &[T], i: usize) -> T {
    v[i % v.len()].clone()
}

/// A mutation built from random choices over the demo tenant's own entities
/// (and a few names that exist nowhere).
fn mutation(c: &TenantConfig, op: u8, a: usize, b: usize, flag: bool) -> Mutation {
    let folders: Vec<FolderId> = c.folders.keys().cloned().chain([FolderId("nowhere".into())]).collect();
    let persons: Vec<PersonId> = c.persons.keys().cloned().chain([PersonId("ghost".into())]).collect();
    let groups: Vec<GroupId> = c.groups.keys().cloned().chain([GroupId("no-group".into())]).collect();
    let roles: Vec<RoleId> = c.roles.keys().cloned().collect();
    let objects: Vec<ObjectKey> = c.objects.keys().cloned().collect();
    let partitions: Vec<PartitionId> = c.partitions.keys().cloned().chain([PartitionId("no-part".into())]).collect();
    let catalogs: Vec<String> = c.catalogs.keys().cloned().collect();
    let names = ["Agent", "Team", "Sales", "x", " padded", "", "Callback", "Voice"];
    match op % 20 {
        0 => {
            // Rename or move a folder (may break metric paths or sibling names).
            let mut f = c.folders.get(&pick(&folders[..folders.len() - 1], a)).cloned().unwrap();
            if flag {
                f.name = pick(&names, b).to_owned();
            } else if f.parent.is_some() {
                f.parent = Some(pick(&folders, b));
            }
            Mutation::PutFolder(f)
        }
        1 => Mutation::DeleteFolder { id: pick(&folders, a) },
        2 => {
            // A catalog with one privilege removed (roles may still use it).
            let mut cat = c.catalogs.get(&pick(&catalogs, a)).cloned().unwrap();
            if !cat.privileges.is_empty() {
                let i = b % cat.privileges.len();
                let removed = cat.privileges.remove(i).name;
                if flag {
                    for p in &mut cat.privileges {
                        p.requires.retain(|r| *r != removed);
                    }
                    cat.type_guards.retain(|g| g.privilege != removed);
                    cat.property_guards.retain(|g| g.privilege != removed);
                    for r in &mut cat.roles {
                        r.privileges.retain(|p| *p != removed);
                    }
                }
            }
            Mutation::PutCatalog(cat)
        }
        3 => Mutation::DeleteCatalog { name: pick(&catalogs, a) },
        4 => Mutation::PutPerson(Person {
            id: PersonId(format!("p{}", a % 5)),
            username: if flag { pick(&names, b).to_owned() } else { format!("user{b}") },
            enabled: flag,
            folder: pick(&folders, b),
            annex: BTreeMap::new(),
            properties: BTreeMap::new(),
        }),
        5 => Mutation::DeletePerson { id: pick(&persons, a) },
        6 => Mutation::AddGroupMember { group: pick(&groups, a), person: pick(&persons, b) },
        7 => Mutation::DeleteGroup { id: pick(&groups, a) },
        8 => {
            let mut r = c.roles.get(&pick(&roles, a)).cloned().unwrap();
            r.members.groups.insert(pick(&groups, b));
            if flag {
                r.privileges.entry(pick(&catalogs, b)).or_default().insert("No Such Privilege".into());
            }
            Mutation::PutRole(r)
        }
        9 => Mutation::DeleteRole { id: pick(&roles, a) },
        10 => {
            let mut o = c.objects.get(&pick(&objects, a)).cloned().unwrap();
            if flag {
                o.folder = pick(&folders, b);
            } else {
                o.partitions = BTreeSet::from([pick(&partitions, b)]);
            }
            Mutation::PutObject(o)
        }
        11 => {
            // A second object with an existing object's name (a duplicate) or a fresh one.
            let mut o = c.objects.get(&pick(&objects, a)).cloned().unwrap();
            o.id = ObjectId(format!("copy{b}"));
            if flag {
                o.name = format!("{}x{b}", o.name);
            }
            Mutation::PutObject(o)
        }
        12 => Mutation::DeletePartition { id: pick(&partitions, a) },
        14 => {
            // A group beside an existing one: its name (a duplicate) or a fresh one,
            // maybe a member who exists nowhere.
            let mut g = c.groups.get(&pick(&groups[..groups.len() - 1], a)).cloned().unwrap();
            g.id = GroupId(format!("gcopy{}", b % 3));
            if !flag {
                g.name = format!("{} copy {b}", g.name);
            }
            g.members.insert(pick(&persons, b));
            Mutation::PutGroup(g)
        }
        15 => Mutation::AssignRole {
            role: pick(&roles, a),
            to: if flag { Subject::Group(pick(&groups, b)) } else { Subject::Person(pick(&persons, b)) },
        },
        16 => {
            let r = c.roles.get(&pick(&roles, a)).cloned().unwrap();
            let from = match r.members.persons.iter().next() {
                Some(p) if flag => Subject::Person(p.clone()),
                _ => Subject::Group(pick(&groups, b)),
            };
            Mutation::UnassignRole { role: r.id, from }
        }
        17 => Mutation::MoveObject {
            target: if flag { Target::Object(pick(&objects, a)) } else { Target::Group(pick(&groups, a)) },
            folder: pick(&folders, b),
        },
        18 => Mutation::RemoveGroupMember { group: pick(&groups, a), person: pick(&persons, b) },
        19 => {
            let mut p = c.partitions.get(&pick(&partitions[..partitions.len() - 1], a)).cloned().unwrap();
            p.id = PartitionId(format!("pcopy{}", b % 3));
            if !flag {
                p.name = format!("{} copy {b}", p.name);
            }
            p.members.insert(pick(&persons, b));
            Mutation::PutPartition(p)
        }
        _ => Mutation::PutAce(Ace {
            target: if flag { Target::Folder(pick(&folders, a)) } else { Target::Object(pick(&objects, a)) },
            subject: Subject::Group(pick(&groups, b)),
            allow: PermSet::EMPTY.with(Perm::Read),
            deny: PermSet::EMPTY,
            propagate: flag,
        }),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3_000, max_global_rejects: 20_000, ..ProptestConfig::default() })]

    #[test]
    fn incremental_validation_agrees_with_full_validation(
        choices in proptest::collection::vec((any::<u8>(), any::<usize>(), any::<usize>(), any::<bool>()), 1..4)
    ) {
        let old = &*ACME;
        let batch: Vec<Mutation> = choices.iter().map(|&(op, a, b, f)| mutation(old, op, a, b, f)).collect();
        let mut next = old.clone();
        let mut applied = true;
        for m in &batch {
            if next.apply(m).is_err() {
                applied = false;
                break;
            }
        }
        prop_assume!(applied);
        prop_assert_eq!(validate_change(old, &next), validate(&next), "batch {:?}", batch);
        // The write path's own entity-by-entity check: the same first problem.
        prop_assert_eq!(validate_batch(old, &next, &batch), validate(&next), "batch {:?}", batch);
        // And through the public write path.
        prop_assert_eq!(old.apply_batch(&batch).is_ok(), validate(&next).is_ok());
    }
}

#[test]
fn renaming_a_metric_folder_is_caught_although_only_folders_changed() {
    let old = &*ACME;
    let mut f = old.folders.get(&FolderId("Advisors Metrics/FrontlineAdvisor/Agent".into())).cloned().unwrap();
    f.name = "Agents".into();
    let err = old.apply_batch(&[Mutation::PutFolder(f)]).expect_err("metrics now live in the wrong folder");
    assert!(err.to_string().contains("must live in folder"), "{err}");
}

#[test]
fn removing_a_privilege_a_role_uses_is_caught_although_only_the_catalog_changed() {
    let old = &*ACME;
    let mut cat = old.catalogs.get("Callback").cloned().unwrap();
    cat.privileges.retain(|p| p.name != "Callback - Export Reports");
    for r in &mut cat.roles {
        r.privileges.retain(|p| p != "Callback - Export Reports");
    }
    let err = old.apply_batch(&[Mutation::PutCatalog(cat)]).expect_err("roles still grant it");
    assert!(err.to_string().contains("Callback - Export Reports"), "{err}");
}

// ---------------------------------------------------------------------------
// Incremental view compilation: a view compiled from the previous one equals
// the view compiled from scratch, after every batch of a random sequence.

/// A change of the kind writes make every day (memberships, role privileges,
/// entries, persons' flags and annexes) or, now and then, one that changes
/// the graph (names, objects) and so recompiles the whole tenant.
fn everyday(c: &TenantConfig, op: u8, a: usize, b: usize, flag: bool) -> Mutation {
    let persons: Vec<PersonId> = c.persons.keys().cloned().collect();
    let groups: Vec<GroupId> = c.groups.keys().cloned().collect();
    let roles: Vec<RoleId> = c.roles.keys().cloned().collect();
    let folders: Vec<FolderId> = c.folders.keys().cloned().collect();
    let subject = |i: usize| match i % 3 {
        0 => Subject::Person(pick(&persons, i / 3)),
        1 => Subject::Group(pick(&groups, i / 3)),
        _ => Subject::Everyone,
    };
    match op % 15 {
        0 => Mutation::AssignRole {
            role: pick(&roles, a),
            to: if flag { Subject::Person(pick(&persons, b)) } else { Subject::Group(pick(&groups, b)) },
        },
        1 => {
            // Unassign an existing assignment when there is one.
            let r = c.roles.get(&pick(&roles, a)).cloned().unwrap();
            let from =
                match (r.members.persons.iter().nth(b % r.members.persons.len().max(1)), r.members.groups.first()) {
                    (Some(p), _) if flag => Subject::Person(p.clone()),
                    (_, Some(g)) => Subject::Group(g.clone()),
                    (Some(p), None) => Subject::Person(p.clone()),
                    (None, None) => Subject::Person(pick(&persons, b)),
                };
            Mutation::UnassignRole { role: r.id, from }
        }
        2 => Mutation::AddGroupMember { group: pick(&groups, a), person: pick(&persons, b) },
        3 => {
            let g = c.groups.get(&pick(&groups, a)).cloned().unwrap();
            let person = g.members.iter().nth(b % g.members.len().max(1)).cloned().unwrap_or_else(|| pick(&persons, b));
            Mutation::RemoveGroupMember { group: g.id, person }
        }
        4 => {
            // A role gains or loses one privilege of one catalog.
            let mut r = c.roles.get(&pick(&roles, a)).cloned().unwrap();
            let catalogs: Vec<&Catalog> = c.catalogs.values().collect();
            let cat = catalogs[b % catalogs.len()];
            let privilege = cat.privileges[(b / 7) % cat.privileges.len()].name.clone();
            let set = r.privileges.entry(cat.name.clone()).or_default();
            if !set.remove(&privilege) {
                set.insert(privilege);
            }
            Mutation::PutRole(r)
        }
        5 => Mutation::PutAce(Ace {
            // Entries on a role decide whether its holders can read it.
            target: Target::Role(pick(&roles, a)),
            subject: subject(b),
            allow: if flag { PermSet::EMPTY.with(Perm::Read) } else { PermSet::EMPTY },
            deny: if flag { PermSet::EMPTY } else { PermSet::EMPTY.with(Perm::Read) },
            propagate: false,
        }),
        6 => {
            let (t, s) = c.aces.keys().nth(a % c.aces.len()).cloned().unwrap();
            Mutation::DeleteAce { target: t, subject: s }
        }
        7 => {
            let mut p = c.persons.get(&pick(&persons, a)).cloned().unwrap();
            if flag {
                p.enabled = !p.enabled;
            } else if p.annex.remove("ges").is_none() {
                let role = ["Administrator", "Supervisor", "Monitor", "Developer", "Nobody"][b % 5];
                p.annex.insert("ges".into(), BTreeMap::from([("role".to_owned(), role.to_owned())]));
            }
            Mutation::PutPerson(p)
        }
        8 => {
            let parts: Vec<&Partition> = c.partitions.values().collect();
            let mut part = parts[a % parts.len()].clone();
            let person = pick(&persons, b);
            if !part.members.remove(&person) {
                part.members.insert(person);
            }
            Mutation::PutPartition(part)
        }
        9 => Mutation::SetRestrictedMode { on: flag },
        10 => Mutation::PutAce(Ace {
            target: Target::Folder(pick(&folders, a)),
            subject: subject(b),
            allow: PermSet(((a ^ b) % 128) as u8),
            deny: if flag { PermSet::EMPTY } else { PermSet::EMPTY.with(Perm::Read) },
            propagate: flag,
        }),
        11 => {
            let mut r = c.roles.get(&pick(&roles, a)).cloned().unwrap();
            r.name = format!("{} {b}", r.name);
            Mutation::PutRole(r)
        }
        12 => {
            let mut o = c.objects.values().nth(a % c.objects.len()).cloned().unwrap();
            o.id = ObjectId(format!("{}-copy{}", o.id, b % 3));
            o.name = format!("{} copy {}", o.name, b % 3);
            Mutation::PutObject(o)
        }
        13 => Mutation::DeletePerson { id: pick(&persons, a) },
        _ => Mutation::PutGroup({
            let mut g = c.groups.get(&pick(&groups, a)).cloned().unwrap();
            if flag {
                g.members.clear();
            } else {
                g.members.extend(persons.iter().skip(b % 7).step_by(3).cloned());
            }
            g
        }),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn a_view_compiled_from_the_previous_one_equals_a_view_compiled_whole(
        batches in proptest::collection::vec(
            proptest::collection::vec((any::<u8>(), any::<usize>(), any::<usize>(), any::<bool>()), 1..4),
            1..8,
        )
    ) {
        let mut config = ACME.clone();
        let mut view = authzd::engine::TenantView::build(&config, 1);
        for (i, choices) in batches.iter().enumerate() {
            let batch: Vec<Mutation> = choices.iter().map(|&(op, a, b, f)| everyday(&config, op, a, b, f)).collect();
            let Ok(next) = config.apply_batch(&batch) else { continue };
            let revision = 2 + i as u64;
            let incremental = authzd::engine::TenantView::build_next(Some((&view, &config)), &next, revision);
            let whole = authzd::engine::TenantView::build(&next, revision);
            if let Err(diff) = incremental.compare(&whole) {
                prop_assert!(false, "after batch {i} {batch:?}: {diff}");
            }
            // The `Inputs` contract: a person whose inputs did not change gets
            // the same privileges and listings in both views.
            for p in next.persons.keys() {
                let p = p.as_str();
                if view.inputs(p).is_none() || view.inputs(p) != incremental.inputs(p) {
                    continue;
                }
                for app in next.catalogs.keys() {
                    prop_assert_eq!(view.effective_privileges(p, app), incremental.effective_privileges(p, app));
                }
                for kind in ["Metric", "Script", "Skill", "Application"] {
                    for permission in [Perm::Read, Perm::Change] {
                        let r = authzd::engine::ListRequest {
                            subject: p, kind, folder: None, permission, application: None, after: None, limit: usize::MAX,
                        };
                        let (a, b) = (view.list_visible(&r), incremental.list_visible(&r));
                        prop_assert_eq!(a.map(|x| x.items), b.map(|x| x.items), "person {} kind {}", p, kind);
                    }
                }
            }
            view = incremental;
            config = next;
        }
    }
}

/// The persons holding `role` (directly or through a group).
fn holders(c: &TenantConfig, role: &str) -> BTreeSet<PersonId> {
    let r = c.roles.get(&RoleId(role.into())).unwrap();
    let via = r.members.groups.iter().flat_map(|g| c.groups.get(g).unwrap().members.iter().cloned());
    r.members.persons.iter().cloned().chain(via).collect()
}

#[test]
fn a_role_edit_recomputes_only_that_roles_holders() {
    let old = &*ACME;
    let view = authzd::engine::TenantView::build(old, 1);
    assert!(view.compiled().whole);
    // The role with the most holders that does not hold everyone.
    let role = old
        .roles
        .keys()
        .map(|r| (holders(old, r.as_str()).len(), r.clone()))
        .filter(|(n, _)| *n > 1 && *n < old.persons.len())
        .max()
        .map(|(_, r)| r)
        .unwrap();
    let mut r = old.roles.get(&role).cloned().unwrap();
    let (app, privs) = r.privileges.iter_mut().find(|(_, p)| !p.is_empty()).unwrap();
    let (app, dropped) = (app.clone(), privs.pop_first().unwrap());
    let next = old.apply_batch(&[Mutation::PutRole(r.clone())]).unwrap();
    let v2 = authzd::engine::TenantView::build_next(Some((&view, old)), &next, 2);
    let expected = holders(&next, role.as_str()).len();
    assert_eq!(
        v2.compiled(),
        authzd::engine::Compiled { whole: false, acls: false, persons: expected },
        "role `{role}` lost `{dropped}` in {app}: only its {expected} holders are recomputed, of {}",
        old.persons.len()
    );
    v2.compare(&authzd::engine::TenantView::build(&next, 2)).unwrap();

    // A membership change recomputes the person who joined, nobody else.
    let group = old.groups.values().find(|g| g.members.len() < old.persons.len()).unwrap();
    let newcomer = old.persons.keys().find(|p| !group.members.contains(*p)).unwrap();
    let batch = [Mutation::AddGroupMember { group: group.id.clone(), person: newcomer.clone() }];
    let next = old.apply_batch(&batch).unwrap();
    let v3 = authzd::engine::TenantView::build_next(Some((&view, old)), &next, 2);
    assert_eq!(v3.compiled(), authzd::engine::Compiled { whole: false, acls: false, persons: 1 });

    // An entry on a folder of objects recompiles the ACLs, but no person's
    // privileges unless it is on a role.
    let batch = [Mutation::PutAce(Ace {
        target: Target::Folder(FolderId("Scripts".into())),
        subject: Subject::Everyone,
        allow: PermSet::EMPTY.with(Perm::Read),
        deny: PermSet::EMPTY,
        propagate: true,
    })];
    let next = old.apply_batch(&batch).unwrap();
    let v4 = authzd::engine::TenantView::build_next(Some((&view, old)), &next, 2);
    assert_eq!(v4.compiled(), authzd::engine::Compiled { whole: false, acls: true, persons: 0 });
    v4.compare(&authzd::engine::TenantView::build(&next, 2)).unwrap();
}
