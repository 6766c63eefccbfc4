//! Watch fan-out: one role change that affects every one of 10,000 subscribed
//! desktops, measured from the start of the write (validate, compile the new
//! view, install it) until the last desktop has received its difference.
//!
//! Run: `cargo bench --bench fanout` (prints p50 / p99 / max over the rounds).
//! The tenant is the benchmark tenant plus a group of all persons holding a
//! role whose privileges each round flips.

/// The allocator the server binary uses.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use authzd::model::*;
use authzd::snapshot::Snapshot;
use authzd::synth::{self, SynthParams};
use authzd::watch::{Hub, Update, WatchSpec};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The desktop application: its privileges are granted by the desk role only,
/// so every flip changes every subscriber's effective set.
const DESK: &str = "Desk";

fn desk_catalog() -> Mutation {
    let privilege = |name: &str| PrivilegeDef {
        name: name.into(),
        description: String::new(),
        requires: vec![],
        aliases: vec![],
        permission: None,
    };
    Mutation::PutCatalog(Catalog {
        name: DESK.into(),
        description: "Agent desktop".into(),
        name_pattern: None,
        privileges: vec![privilege("Desk - Can Use"), privilege("Desk - Can Reschedule")],
        type_guards: vec![],
        property_guards: vec![],
        open_when_unconfigured: false,
        legacy_annex_sections: vec![],
        restricted_types: vec![],
        role_rank: vec![],
        roles: vec![],
    })
}

fn desk_role(with_second: bool) -> Mutation {
    let mut privs: BTreeSet<String> = BTreeSet::from(["Desk - Can Use".to_owned()]);
    if with_second {
        privs.insert("Desk - Can Reschedule".to_owned());
    }
    Mutation::PutRole(Role {
        id: RoleId("desk".into()),
        name: "Desktop".into(),
        folder: FolderId(folders::ROLES.into()),
        privileges: BTreeMap::from([(DESK.to_owned(), privs)]),
        members: RoleMembers { persons: BTreeSet::new(), groups: BTreeSet::from([GroupId("all".into())]) },
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn main() {
    let subscribers: usize =
        std::env::var("AUTHZD_FANOUT_SUBSCRIBERS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let rounds: usize = std::env::var("AUTHZD_FANOUT_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(30);
    let p = SynthParams { persons: subscribers.max(10_000), ..SynthParams::default() };
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("no runtime: {e}");
            return;
        }
    };
    let snap = Arc::new(Snapshot::new());
    let tenant = TenantId("bench".into());
    let mut batch = synth::mutations(&p);
    batch.push(Mutation::PutGroup(AccessGroup {
        id: GroupId("all".into()),
        name: "All".into(),
        folder: FolderId(folders::ACCESS_GROUPS.into()),
        members: (0..p.persons).map(|i| PersonId(synth::person_id(i))).collect(),
    }));
    batch.push(desk_catalog());
    batch.push(desk_role(false));
    if let Err(e) = snap.apply(&tenant, &batch, 1) {
        eprintln!("benchmark tenant rejected: {e}");
        return;
    }
    snap.mark_loaded();
    let hub = Arc::new(Hub::default());
    let mut subs = Vec::with_capacity(subscribers);
    for i in 0..subscribers {
        let spec =
            WatchSpec::Privileges { tenant: "bench".into(), person: synth::person_id(i), application: DESK.into() };
        match hub.subscribe(spec, &snap) {
            Ok(s) => subs.push(s),
            Err(e) => {
                eprintln!("subscribe failed: {e:?}");
                return;
            }
        }
    }
    // Each desktop task drains its initial state, then reports every difference.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    for mut s in subs {
        let done = done_tx.clone();
        rt.spawn(async move {
            while let Some(u) = s.next().await {
                if let Update::Privileges { revision, .. } = u {
                    let _ = done.send(revision);
                }
            }
        });
    }
    let mut times = Vec::with_capacity(rounds);
    let mut write_only = Vec::with_capacity(rounds);
    let mut validate_only = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let revision = 2 + round as u64;
        let change = vec![desk_role(round % 2 == 0)];
        let start = Instant::now();
        let state = {
            let _w = snap.write_lock();
            let next = match snap.prepare(&tenant, &change) {
                Ok(n) => n,
                Err(e) => {
                    eprintln!("role change rejected: {e}");
                    return;
                }
            };
            validate_only.push(start.elapsed());
            snap.install(next, revision)
        };
        write_only.push(start.elapsed());
        hub.publish(&state.view, &change);
        // Count this round's notifications in one pass on the runtime.
        let all = rt.block_on(async {
            let mut received = 0;
            while received < subscribers {
                match done_rx.recv().await {
                    Some(r) if r == revision => received += 1,
                    Some(_) => {}
                    None => return false,
                }
            }
            true
        });
        if !all {
            return;
        }
        times.push(start.elapsed());
    }
    times.sort();
    write_only.sort();
    validate_only.sort();
    println!(
        "fanout: {subscribers} desktops, {rounds} role changes: all notified p50 {:?}, p99 {:?}, max {:?} \
         (of which validate+compile+install p50 {:?}, validate alone p50 {:?}); views coalesced {}",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.last().copied().unwrap_or_default(),
        percentile(&write_only, 0.5),
        percentile(&validate_only, 0.5),
        hub.stats.coalesced.load(std::sync::atomic::Ordering::Relaxed),
    );
}
