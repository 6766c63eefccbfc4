//! Replacing a tenant's whole configuration (an `Import` with `replace`) as
//! one ordinary write batch.
//!
//! The changelog only knows mutations, so a replacement is expressed as the
//! batch that turns the current configuration into the new one: puts of every
//! entity that is new or differs, then removals of every entity the new
//! configuration lacks, in an order the model accepts (entries before their
//! targets, contents before their folders, deepest folders first). The caller
//! applies the batch and checks the result equals the file's configuration,
//! so a mistake here can only refuse an import, never store a wrong tenant.

use crate::model::{FolderId, Mutation, TenantConfig};
use std::collections::BTreeMap;

/// The batch that turns `current` into `target` (unchanged entities are left alone).
pub fn replace_batch(current: &TenantConfig, target: &TenantConfig) -> Vec<Mutation> {
    let mut out = Vec::new();
    if current.name != target.name {
        out.push(Mutation::RenameTenant { name: target.name.clone() });
    }
    if current.restricted_mode != target.restricted_mode {
        out.push(Mutation::SetRestrictedMode { on: target.restricted_mode });
    }

    // Puts: whatever is new or differs.
    fn changed<'a, K: Ord, V: PartialEq>(
        cur: &'a BTreeMap<K, V>,
        new: &'a BTreeMap<K, V>,
    ) -> impl Iterator<Item = &'a V> + 'a {
        new.iter().filter(move |(k, v)| cur.get(*k) != Some(*v)).map(|(_, v)| v)
    }
    out.extend(changed(&current.catalogs, &target.catalogs).cloned().map(Mutation::PutCatalog));
    out.extend(changed(&current.folders, &target.folders).cloned().map(Mutation::PutFolder));
    out.extend(changed(&current.partitions, &target.partitions).cloned().map(Mutation::PutPartition));
    out.extend(changed(&current.persons, &target.persons).cloned().map(Mutation::PutPerson));
    out.extend(changed(&current.groups, &target.groups).cloned().map(Mutation::PutGroup));
    out.extend(changed(&current.roles, &target.roles).cloned().map(Mutation::PutRole));
    out.extend(changed(&current.objects, &target.objects).cloned().map(Mutation::PutObject));
    out.extend(changed(&current.aces, &target.aces).cloned().map(Mutation::PutAce));

    // Removals: entries first (their targets may go next), then entities,
    // catalogs, and finally folders, deepest first (their contents are gone
    // or were moved by the puts above).
    fn gone<'a, K: Ord, V>(cur: &'a BTreeMap<K, V>, new: &'a BTreeMap<K, V>) -> impl Iterator<Item = &'a K> + 'a {
        cur.keys().filter(move |k| !new.contains_key(*k))
    }
    out.extend(
        gone(&current.aces, &target.aces).map(|(t, s)| Mutation::DeleteAce { target: t.clone(), subject: s.clone() }),
    );
    out.extend(gone(&current.objects, &target.objects).cloned().map(Mutation::DeleteObject));
    out.extend(gone(&current.roles, &target.roles).map(|id| Mutation::DeleteRole { id: id.clone() }));
    out.extend(gone(&current.groups, &target.groups).map(|id| Mutation::DeleteGroup { id: id.clone() }));
    out.extend(gone(&current.persons, &target.persons).map(|id| Mutation::DeletePerson { id: id.clone() }));
    out.extend(gone(&current.partitions, &target.partitions).map(|id| Mutation::DeletePartition { id: id.clone() }));
    out.extend(gone(&current.catalogs, &target.catalogs).map(|name| Mutation::DeleteCatalog { name: name.clone() }));
    let mut folders: Vec<(usize, &FolderId)> =
        gone(&current.folders, &target.folders).map(|id| (depth(current, id), id)).collect();
    folders.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    out.extend(folders.into_iter().map(|(_, id)| Mutation::DeleteFolder { id: id.clone() }));
    out
}

/// Depth of folder `id` in `c` (root 0; bounded on a cycle).
fn depth(c: &TenantConfig, id: &FolderId) -> usize {
    let mut d = 0;
    let mut cur = c.folders.get(id).and_then(|f| f.parent.as_ref());
    while let Some(p) = cur {
        d += 1;
        if d > c.folders.len() {
            break;
        }
        cur = c.folders.get(p).and_then(|f| f.parent.as_ref());
    }
    d
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::model::TenantFile;

    #[test]
    fn replacing_demo_with_a_trimmed_copy_and_back_is_exact() {
        let demo = TenantFile::from_yaml(include_str!("../../examples/acme.yaml")).unwrap();
        let full = demo.to_config().unwrap();
        let mut small_file = TenantFile::from_config(&full);
        small_file.tenant.name = "ACME Trimmed".into();
        small_file.objects.retain(|o| o.kind != "Metric");
        small_file.aces.retain(|a| !format!("{:?}", a.target).contains("Metric"));
        small_file.folders.push(crate::model::Folder {
            id: FolderId("Extra".into()),
            name: "Extra".into(),
            parent: Some(FolderId("root".into())),
        });
        let small = small_file.to_config().unwrap();
        let down = replace_batch(&full, &small);
        assert_eq!(full.apply_batch(&down).unwrap(), small);
        let up = replace_batch(&small, &full);
        assert_eq!(small.apply_batch(&up).unwrap(), full);
        assert!(replace_batch(&full, &full).is_empty());
    }
}
