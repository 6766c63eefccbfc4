//! The requests of each workload, made once before the run, each with the
//! answer the local view gives: many different persons, privileges and
//! objects (never one repeated request), cycled through during the run.

use super::{BenchArgs, Target};
use crate::engine::{CheckRequest, ListRequest, ObjectRef, TenantView};
use crate::model::{Perm, TenantConfig};
use crate::proto::authzd::v1 as pb;
use crate::service::convert;
use crate::synth::Rng;
use std::collections::BTreeMap;
use std::hash::Hasher as _;

/// The answer a check must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    /// Allowed or not.
    pub allowed: bool,
    /// The proto reason value.
    pub reason: i32,
}

impl Expect {
    /// Whether `allowed` and `reason` are the expected ones.
    pub fn matches(&self, allowed: bool, reason: i32) -> bool {
        self.allowed == allowed && self.reason == reason
    }
}

/// The listing a `ListVisible` (all pages) must return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListExpect {
    /// Objects listed.
    pub count: usize,
    /// Hash of the ids in order.
    pub hash: u64,
}

/// Hashes ids in order (for comparing listings without keeping them).
#[derive(Default)]
pub struct IdHash(rustc_hash::FxHasher, usize);

impl IdHash {
    /// Adds the next id.
    pub fn add(&mut self, id: &str) {
        self.0.write(id.as_bytes());
        self.0.write_u8(0xff);
        self.1 += 1;
    }
    /// The listing's fingerprint.
    pub fn finish(&self) -> ListExpect {
        ListExpect { count: self.1, hash: self.0.finish() }
    }
}

/// One question of a check workload.
#[derive(Debug, Clone)]
struct Question {
    application: Option<String>,
    privilege: Option<String>,
    permission: Option<Perm>,
    object: Option<(String, String)>,
}

impl Question {
    fn expect(&self, view: &TenantView, person: &str) -> Expect {
        let d = view.check(&CheckRequest {
            subject: person,
            application: self.application.as_deref(),
            permission: self.permission,
            object: self.object.as_ref().map(|(kind, id)| ObjectRef { kind, id, tenant: None }),
            privilege: self.privilege.as_deref(),
            property: None,
        });
        Expect { allowed: d.allowed(), reason: convert::reason(d.reason) as i32 }
    }

    fn permission_pb(&self) -> i32 {
        self.permission.map_or(pb::Permission::Unspecified as i32, |p| convert::permission_pb(p) as i32)
    }

    fn object_pb(&self) -> Option<pb::ObjectRef> {
        self.object.as_ref().map(|(kind, id)| pb::ObjectRef { r#type: kind.clone(), id: id.clone(), tenant: None })
    }

    fn check(&self, tenant: &str, person: &str) -> pb::CheckRequest {
        pb::CheckRequest {
            tenant: tenant.to_owned(),
            person: person.to_owned(),
            application: self.application.clone(),
            permission: self.permission_pb(),
            object: self.object_pb(),
            privilege: self.privilege.clone(),
            property: None,
            explain: false,
            at_least_revision: 0,
        }
    }

    fn item(&self) -> pb::CheckBatchItem {
        pb::CheckBatchItem {
            application: self.application.clone(),
            permission: self.permission_pb(),
            object: self.object_pb(),
            privilege: self.privilege.clone(),
            property: None,
        }
    }
}

/// Draws questions from a tenant.
struct Draw<'a> {
    rng: Rng,
    persons: Vec<&'a str>,
    /// (application, privilege) pairs.
    privileges: Vec<(&'a str, &'a str)>,
    applications: Vec<&'a str>,
    objects: Vec<(&'a str, &'a str)>,
}

/// Permissions of object questions: mostly Read, as readers dominate.
const PERMS: [Perm; 6] = [Perm::Read, Perm::Read, Perm::Read, Perm::Change, Perm::Execute, Perm::Delete];

impl<'a> Draw<'a> {
    fn new(c: &'a TenantConfig, seed: u64) -> Self {
        Draw {
            rng: Rng::new(seed ^ 0x6c6f_6164_6765_6e21),
            persons: c.persons.keys().map(|p| p.0.as_str()).collect(),
            privileges: c
                .catalogs
                .values()
                .flat_map(|cat| cat.privileges.iter().map(move |p| (cat.name.as_str(), p.name.as_str())))
                .collect(),
            applications: c.catalogs.keys().map(String::as_str).collect(),
            objects: c.objects.keys().map(|k| (k.kind.as_str(), k.id.0.as_str())).collect(),
        }
    }

    fn person(&mut self) -> &'a str {
        self.persons[self.rng.below(self.persons.len())]
    }

    fn privilege(&mut self) -> Option<Question> {
        if self.privileges.is_empty() {
            return None;
        }
        let (app, p) = self.privileges[self.rng.below(self.privileges.len())];
        Some(Question { application: Some(app.into()), privilege: Some(p.into()), permission: None, object: None })
    }

    fn object(&mut self) -> Option<Question> {
        if self.objects.is_empty() {
            return None;
        }
        let (kind, id) = self.objects[self.rng.below(self.objects.len())];
        let permission = PERMS[self.rng.below(PERMS.len())];
        // A quarter of the questions in an application context (its guards apply).
        let application = if !self.applications.is_empty() && self.rng.below(4) == 0 {
            Some(self.applications[self.rng.below(self.applications.len())].to_owned())
        } else {
            None
        };
        Some(Question {
            application,
            privilege: None,
            permission: Some(permission),
            object: Some((kind.into(), id.into())),
        })
    }
}

/// Every workload's requests with their expected answers.
#[derive(Debug, Default)]
pub struct Pools {
    /// `check-privilege`.
    pub privilege: Vec<(pb::CheckRequest, Expect)>,
    /// `check-object`.
    pub object: Vec<(pb::CheckRequest, Expect)>,
    /// `check-batch`.
    pub batch: Vec<(pb::CheckBatchRequest, Vec<Expect>)>,
    /// `list-visible` (first page; the runner follows the tokens).
    pub list: Vec<(pb::ListVisibleRequest, ListExpect)>,
    /// `list-subjects` (first page; the runner follows the tokens).
    pub subjects: Vec<(pb::ListSubjectsRequest, ListExpect)>,
    /// `list-holders` (first page; the runner follows the tokens).
    pub holders: Vec<(pb::ListHoldersRequest, ListExpect)>,
    /// Why a pool is empty, by workload name.
    pub empty: BTreeMap<&'static str, String>,
}

/// Questions prepared for each reverse-lookup workload.
const REVERSE_QUESTIONS: usize = 64;
/// Page size of the reverse-lookup workloads (the server's maximum).
const REVERSE_PAGE: u32 = 1_000;

/// Persons whose listings are prepared for `list-visible`.
const LIST_PERSONS: usize = 512;

/// The object type with most objects.
pub fn most_common_type(c: &TenantConfig) -> Option<String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for k in c.objects.keys() {
        *counts.entry(k.kind.as_str()).or_default() += 1;
    }
    counts.into_iter().max_by_key(|(_, n)| *n).map(|(k, _)| k.to_owned())
}

impl Pools {
    /// Draws the pools for `t` (deterministic for `--seed`).
    pub fn build(a: &BenchArgs, t: &Target) -> Pools {
        let mut d = Draw::new(&t.config, a.seed);
        let mut pools = Pools::default();
        if d.persons.is_empty() {
            for w in ["check-privilege", "check-object", "check-batch", "list-visible", "list-subjects", "list-holders"]
            {
                pools.empty.insert(w, "the tenant has no persons".into());
            }
            return pools;
        }
        let view = &t.view;
        for _ in 0..a.pool {
            let person = d.person();
            if let Some(q) = d.privilege() {
                pools.privilege.push((q.check(&t.tenant, person), q.expect(view, person)));
            }
            let person = d.person();
            if let Some(q) = d.object() {
                pools.object.push((q.check(&t.tenant, person), q.expect(view, person)));
            }
        }
        if pools.privilege.is_empty() {
            pools.empty.insert("check-privilege", "the tenant's catalogs declare no privileges".into());
        }
        if pools.object.is_empty() {
            pools.empty.insert("check-object", "the tenant has no objects".into());
        }
        for _ in 0..(a.pool / a.batch_size).clamp(1, 4_096) {
            let person = d.person();
            let mut items = Vec::with_capacity(a.batch_size);
            let mut expects = Vec::with_capacity(a.batch_size);
            for i in 0..a.batch_size {
                let q = if i % 2 == 0 {
                    d.privilege().or_else(|| d.object())
                } else {
                    d.object().or_else(|| d.privilege())
                };
                if let Some(q) = q {
                    expects.push(q.expect(view, person));
                    items.push(q.item());
                }
            }
            if items.is_empty() {
                pools.empty.insert("check-batch", "the tenant has neither privileges nor objects".into());
                break;
            }
            pools.batch.push((
                pb::CheckBatchRequest {
                    tenant: t.tenant.clone(),
                    person: person.to_owned(),
                    items,
                    explain: false,
                    at_least_revision: 0,
                },
                expects,
            ));
        }
        match a.list_type.clone().or_else(|| most_common_type(&t.config)) {
            None => {
                pools.empty.insert("list-visible", "the tenant has no objects".into());
            }
            Some(kind) => {
                for _ in 0..LIST_PERSONS.min(a.pool) {
                    let person = d.person();
                    let req = ListRequest {
                        subject: person,
                        kind: &kind,
                        folder: None,
                        permission: Perm::Read,
                        application: None,
                        after: None,
                        limit: usize::MAX,
                    };
                    let mut h = IdHash::default();
                    // A disabled person sees nothing (the service answers an empty list).
                    if let Ok(ids) = view.visible_ids(&req) {
                        for id in ids {
                            h.add(id);
                        }
                    }
                    pools.list.push((
                        pb::ListVisibleRequest {
                            tenant: t.tenant.clone(),
                            person: person.to_owned(),
                            r#type: kind.clone(),
                            folder: None,
                            permission: pb::Permission::Read as i32,
                            application: None,
                            page_size: a.page_size,
                            page_token: String::new(),
                            at_least_revision: 0,
                            view: a.list_view.proto() as i32,
                        },
                        h.finish(),
                    ));
                }
            }
        }
        let kind = a.list_type.clone().or_else(|| most_common_type(&t.config));
        pools.reverse(&mut d, t, kind.as_deref(), REVERSE_PAGE);
        pools
    }

    /// Draws the reverse lookups: who may read an object of the listed type,
    /// who holds a privilege; each with the persons every page must list.
    fn reverse(&mut self, d: &mut Draw<'_>, t: &Target, kind: Option<&str>, page_size: u32) {
        let view = &t.view;
        let objects: Vec<&(&str, &str)> = d.objects.iter().filter(|(k, _)| kind.is_none_or(|x| x == *k)).collect();
        for _ in 0..REVERSE_QUESTIONS {
            let Some(&&(kind, id)) = objects.get(d.rng.below(objects.len().max(1))) else { break };
            let r = CheckRequest {
                permission: Some(Perm::Read),
                object: Some(ObjectRef { kind, id, tenant: None }),
                ..Default::default()
            };
            let Ok(page) = view.allowed_subjects(&r, None, usize::MAX) else { continue };
            let mut h = IdHash::default();
            page.items.iter().for_each(|s| h.add(s.person));
            self.subjects.push((
                pb::ListSubjectsRequest {
                    tenant: t.tenant.clone(),
                    object: Some(pb::ObjectRef { r#type: kind.into(), id: id.into(), tenant: None }),
                    permission: pb::Permission::Read as i32,
                    page_size,
                    ..Default::default()
                },
                h.finish(),
            ));
        }
        for _ in 0..REVERSE_QUESTIONS {
            let Some(&(app, privilege)) = d.privileges.get(d.rng.below(d.privileges.len().max(1))) else { break };
            let Ok(page) = view.privilege_holders(app, privilege, None, usize::MAX) else { continue };
            let mut h = IdHash::default();
            page.items.iter().for_each(|x| h.add(x.person));
            self.holders.push((
                pb::ListHoldersRequest {
                    tenant: t.tenant.clone(),
                    application: app.into(),
                    privilege: privilege.into(),
                    page_size,
                    ..Default::default()
                },
                h.finish(),
            ));
        }
        if self.subjects.is_empty() {
            self.empty.insert("list-subjects", "the tenant has no objects".into());
        }
        if self.holders.is_empty() {
            self.empty.insert("list-holders", "the tenant's catalogs declare no privileges".into());
        }
    }

    /// The privilege checks that `keep` keeps (the other pools left empty);
    /// `why` is the reason given when none is left.
    pub fn privileges_where(&self, keep: impl Fn(&pb::CheckRequest) -> bool, why: String) -> Pools {
        let privilege: Vec<_> = self.privilege.iter().filter(|(r, _)| keep(r)).cloned().collect();
        let mut empty = BTreeMap::new();
        if privilege.is_empty() {
            empty.insert("check-privilege", why);
        }
        Pools { privilege, empty, ..Pools::default() }
    }

    /// Mean persons per prepared reverse lookup (`list-subjects` or `list-holders`).
    pub fn mean_persons(list: &[(impl Sized, ListExpect)]) -> f64 {
        if list.is_empty() {
            return 0.0;
        }
        list.iter().map(|(_, e)| e.count as f64).sum::<f64>() / list.len() as f64
    }

    /// Mean objects per prepared listing.
    pub fn mean_listed(&self) -> f64 {
        if self.list.is_empty() {
            return 0.0;
        }
        self.list.iter().map(|(_, e)| e.count as f64).sum::<f64>() / self.list.len() as f64
    }
}
