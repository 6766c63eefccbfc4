//! Incremental validation (`validate_change`, which re-checks only what a
//! batch changed and what depends on it) gives exactly the answer of full
//! validation, on random batches — valid and invalid — applied to the demo
//! tenant: renamed metric folders, removed privileges still used by roles,
//! dangling references, duplicates, bad names, deletes that cascade.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests state their expectations by panicking

use authzd::model::validate::{validate, validate_change};
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
    match op % 14 {
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
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

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
