//! The watch hub (SPEC §7) in process: computed subscriptions start with the
//! full state, then receive only differences tagged with their revision; a
//! subscriber that stops reading skips to the newest view (its next message
//! is the net difference since what it last received), is never buffered
//! without bound, and does not hold back the others.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests state their expectations by panicking

use authzd::model::*;
use authzd::snapshot::Snapshot;
use authzd::watch::{Hub, Resync, State, Update, WatchSpec};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

const WCB: &str = "WorkspaceWebCallback";
const CHANNEL: &str = "Web Callback - Can Use Web Callback Channel";
const RESCHEDULE: &str = "Web Callback - Can Reschedule";

fn person(id: &str) -> Mutation {
    Mutation::PutPerson(Person {
        id: PersonId(id.into()),
        username: id.into(),
        enabled: true,
        folder: FolderId(folders::PERSONS.into()),
        annex: BTreeMap::new(),
        properties: BTreeMap::new(),
    })
}

fn agents_role(privileges: &[&str]) -> Mutation {
    Mutation::PutRole(Role {
        id: RoleId("agents".into()),
        name: "Web Callback Agents".into(),
        folder: FolderId(folders::ROLES.into()),
        privileges: BTreeMap::from([(WCB.to_owned(), privileges.iter().map(|p| p.to_string()).collect())]),
        members: RoleMembers { persons: BTreeSet::new(), groups: BTreeSet::from([GroupId("agents".into())]) },
    })
}

fn setup(persons: usize) -> (Arc<Snapshot>, TenantId) {
    let snap = Arc::new(Snapshot::new());
    let t = TenantId("acme".into());
    let mut batch = vec![Mutation::CreateTenant {
        name: "ACME".into(),
        presets: vec!["workspace_web_callback".into()],
        defaults: true,
    }];
    let ids: Vec<String> = (0..persons).map(|i| format!("agent{i}")).collect();
    batch.extend(ids.iter().map(|i| person(i)));
    batch.push(Mutation::PutGroup(AccessGroup {
        id: GroupId("agents".into()),
        name: "Agents".into(),
        folder: FolderId(folders::ACCESS_GROUPS.into()),
        members: ids.iter().map(|i| PersonId(i.clone())).collect(),
    }));
    batch.push(agents_role(&[CHANNEL, RESCHEDULE]));
    snap.apply(&t, &batch, 1).expect("valid");
    snap.mark_loaded();
    (snap, t)
}

fn desktop(person: &str) -> WatchSpec {
    WatchSpec::Privileges { tenant: "acme".into(), person: person.into(), application: WCB.into() }
}

/// An Advisors dashboard: the person's visible metrics.
fn dashboard(person: &str) -> WatchSpec {
    WatchSpec::Objects {
        tenant: "acme".into(),
        person: person.into(),
        kind: "Metric".into(),
        folder: None,
        application: None,
        permission: Perm::Read,
    }
}

fn publish(hub: &Hub, snap: &Snapshot, t: &TenantId, batch: Vec<Mutation>, revision: u64) {
    let state = snap.apply(t, &batch, revision).expect("valid");
    hub.publish(&state.view, &batch);
}

#[tokio::test]
async fn desktop_receives_full_state_then_the_loss_of_can_reschedule() {
    let (snap, t) = setup(3);
    let hub = Arc::new(Hub::new());
    let mut sub = hub.subscribe(desktop("agent1"), &snap).expect("subscribed");
    match sub.next().await {
        Some(Update::Full { revision: 1, reason: Resync::Initial, state: State::Privileges(p) }) => {
            assert_eq!(p.privileges, vec![CHANNEL.to_owned(), RESCHEDULE.to_owned()]);
        }
        other => panic!("expected the initial state, got {other:?}"),
    }
    publish(&hub, &snap, &t, vec![agents_role(&[CHANNEL])], 2);
    assert_eq!(
        sub.next().await,
        Some(Update::Privileges { revision: 2, gained: vec![], lost: vec![RESCHEDULE.to_owned()] })
    );
    // A batch that changes nothing for this person sends nothing; the next one that does, does.
    publish(&hub, &snap, &t, vec![person("someone-else")], 3);
    publish(&hub, &snap, &t, vec![agents_role(&[CHANNEL, RESCHEDULE])], 4);
    assert_eq!(
        sub.next().await,
        Some(Update::Privileges { revision: 4, gained: vec![RESCHEDULE.to_owned()], lost: vec![] })
    );
    // Removing the person: every privilege is lost.
    publish(&hub, &snap, &t, vec![Mutation::DeletePerson { id: PersonId("agent1".into()) }], 5);
    assert_eq!(
        sub.next().await,
        Some(Update::Privileges { revision: 5, gained: vec![], lost: vec![CHANNEL.to_owned(), RESCHEDULE.to_owned()] })
    );
    drop(sub);
    assert!(hub.is_empty(), "dropping a subscriber unsubscribes it");
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_gets_the_net_difference_and_does_not_slow_the_others() {
    let (snap, t) = setup(50);
    let hub = Arc::new(Hub::new());
    let mut slow = hub.subscribe(desktop("agent0"), &snap).expect("subscribed");
    assert!(matches!(slow.next().await, Some(Update::Full { revision: 1, .. })));
    let mut fast: Vec<_> =
        (1..50).map(|i| hub.subscribe(desktop(&format!("agent{i}")), &snap).expect("subscribed")).collect();
    for f in &mut fast {
        assert!(matches!(f.next().await, Some(Update::Full { .. })));
    }
    let coalesced = || hub.stats.coalesced.load(std::sync::atomic::Ordering::Relaxed);
    // 100 flips; the fast subscribers read every one, the slow one reads nothing.
    let flips = 100u64;
    let flip = |k: u64| -> &'static [&'static str] { if k % 2 == 0 { &[CHANNEL] } else { &[CHANNEL, RESCHEDULE] } };
    for k in 0..flips {
        publish(&hub, &snap, &t, vec![agents_role(flip(k))], 2 + k);
        for f in &mut fast {
            match f.next().await {
                Some(Update::Privileges { revision, .. }) => assert_eq!(revision, 2 + k),
                other => panic!("fast subscriber got {other:?}"),
            }
        }
    }
    assert_eq!(coalesced(), 0, "the fast subscribers looked at every view");
    // After an even number of flips the slow one's privileges are what it
    // was last sent: it has no difference to report, only the checkpoint.
    hub.checkpoint(1 + flips);
    assert_eq!(slow.next().await, Some(Update::Checkpoint { revision: 1 + flips }));
    assert_eq!(coalesced(), flips - 1, "it skipped every view but the newest");
    // One more flip: the net difference from what it was last sent.
    publish(&hub, &snap, &t, vec![agents_role(flip(flips))], 2 + flips);
    assert_eq!(
        slow.next().await,
        Some(Update::Privileges { revision: 2 + flips, gained: vec![], lost: vec![RESCHEDULE.to_owned()] })
    );
    // Three more while it does not read (lose, gain, lose): one difference,
    // at the newest revision, and the checkpoint only after it.
    for k in 1..=3 {
        publish(&hub, &snap, &t, vec![agents_role(flip(flips + k))], 2 + flips + k);
    }
    hub.checkpoint(5 + flips);
    assert_eq!(
        slow.next().await,
        Some(Update::Privileges { revision: 5 + flips, gained: vec![RESCHEDULE.to_owned()], lost: vec![] })
    );
    assert_eq!(slow.next().await, Some(Update::Checkpoint { revision: 5 + flips }));
}

/// A subscriber asked for its next update and dropped before the answer
/// (as `tokio::select!` does) loses nothing: the next call reports it.
#[tokio::test]
async fn a_cancelled_next_loses_nothing() {
    let (snap, t) = setup(2);
    let hub = Arc::new(Hub::new());
    let mut sub = hub.subscribe(desktop("agent1"), &snap).expect("subscribed");
    assert!(matches!(sub.next().await, Some(Update::Full { .. })));
    // Nothing yet: the call is pending, and dropped.
    assert!(tokio::time::timeout(std::time::Duration::from_millis(20), sub.next()).await.is_err());
    publish(&hub, &snap, &t, vec![agents_role(&[CHANNEL])], 2);
    assert_eq!(
        sub.next().await,
        Some(Update::Privileges { revision: 2, gained: vec![], lost: vec![RESCHEDULE.to_owned()] })
    );
}

#[tokio::test]
async fn dashboard_follows_visible_metrics() {
    let (snap, t) = setup(1);
    let hub = Arc::new(Hub::default());
    let mut sub = hub.subscribe(dashboard("agent0"), &snap).expect("subscribed");
    assert!(matches!(sub.next().await, Some(Update::Full { state: State::Objects(o), .. }) if o.is_empty()));
    let folder = "Advisors Metrics/FrontlineAdvisor/Agent";
    let metric = |id: &str, name: &str| {
        Mutation::PutObject(Object {
            kind: "Metric".into(),
            id: ObjectId(id.into()),
            name: name.into(),
            folder: FolderId(folder.into()),
            partitions: BTreeSet::new(),
            properties: BTreeMap::new(),
        })
    };
    publish(
        &hub,
        &snap,
        &t,
        vec![
            metric("m1", "FrontlineAdvisor.Agent.Voice.nch"),
            metric("m2", "FrontlineAdvisor.Agent.Voice.aht"),
            Mutation::PutAce(Ace {
                target: Target::Folder(FolderId(folder.into())),
                subject: Subject::Group(GroupId("agents".into())),
                allow: PermSet::EMPTY.with(Perm::Read),
                deny: PermSet::EMPTY,
                propagate: true,
            }),
        ],
        2,
    );
    match sub.next().await {
        Some(Update::Objects { revision: 2, gained, lost }) => {
            assert_eq!(gained.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(), ["m1", "m2"]);
            assert!(lost.is_empty());
        }
        other => panic!("expected gained metrics, got {other:?}"),
    }
    publish(
        &hub,
        &snap,
        &t,
        vec![Mutation::PutAce(Ace {
            target: Target::Object(ObjectKey { kind: "Metric".into(), id: ObjectId("m2".into()) }),
            subject: Subject::Person(PersonId("agent0".into())),
            allow: PermSet::EMPTY,
            deny: PermSet::EMPTY.with(Perm::Read),
            propagate: false,
        })],
        3,
    );
    assert_eq!(sub.next().await, Some(Update::Objects { revision: 3, gained: vec![], lost: vec!["m2".into()] }));
}

/// A catalog change renumbers the privileges: the desktop's difference is by
/// name (not by bit), so nothing is reported gained or lost that was not.
#[tokio::test]
async fn a_catalog_change_that_renumbers_privileges_reports_only_real_changes() {
    let (snap, t) = setup(2);
    let hub = Arc::new(Hub::new());
    let mut sub = hub.subscribe(desktop("agent0"), &snap).expect("subscribed");
    assert!(matches!(sub.next().await, Some(Update::Full { .. })));
    let mut catalog = snap.state("acme").unwrap().config.catalogs.get(WCB).cloned().unwrap();
    // A new privilege first: every other privilege moves one bit up.
    catalog.privileges.insert(
        0,
        PrivilegeDef {
            name: "Web Callback - Brand New".into(),
            description: String::new(),
            requires: vec![],
            aliases: vec![],
            permission: None,
        },
    );
    publish(&hub, &snap, &t, vec![Mutation::PutCatalog(catalog.clone())], 2);
    // Same names held: nothing to report. Then the role grants the new one too.
    publish(&hub, &snap, &t, vec![agents_role(&[CHANNEL, RESCHEDULE, "Web Callback - Brand New"])], 3);
    assert_eq!(
        sub.next().await,
        Some(Update::Privileges { revision: 3, gained: vec!["Web Callback - Brand New".to_owned()], lost: vec![] })
    );
    // Removing Can Reschedule from the catalog (and the role) renumbers again and loses it.
    catalog.privileges.retain(|p| p.name != RESCHEDULE);
    for p in &mut catalog.privileges {
        p.requires.retain(|r| r != RESCHEDULE);
    }
    for r in &mut catalog.roles {
        r.privileges.retain(|p| p != RESCHEDULE);
    }
    catalog.type_guards.retain(|g| g.privilege != RESCHEDULE);
    catalog.property_guards.retain(|g| g.privilege != RESCHEDULE);
    publish(
        &hub,
        &snap,
        &t,
        vec![agents_role(&[CHANNEL, "Web Callback - Brand New"]), Mutation::PutCatalog(catalog)],
        4,
    );
    assert_eq!(
        sub.next().await,
        Some(Update::Privileges { revision: 4, gained: vec![], lost: vec![RESCHEDULE.to_owned()] })
    );
}

/// A dashboard's visible set is recomputed only when something its person's
/// listing reads changed: a membership change of someone else costs the
/// dashboard nothing; an entry on the metrics' folder is recomputed. (Adding
/// or removing a person changes the graph: every listing is recomputed.)
#[tokio::test]
async fn dashboards_are_recomputed_only_when_their_inputs_change() {
    let (snap, t) = setup(3);
    let folder = "Advisors Metrics/FrontlineAdvisor/Agent";
    let metric = Mutation::PutObject(Object {
        kind: "Metric".into(),
        id: ObjectId("m1".into()),
        name: "FrontlineAdvisor.Agent.Voice.nch".into(),
        folder: FolderId(folder.into()),
        partitions: BTreeSet::new(),
        properties: BTreeMap::new(),
    });
    let hub = Arc::new(Hub::default());
    publish(&hub, &snap, &t, vec![metric], 2);
    let mut sub = hub.subscribe(dashboard("agent0"), &snap).expect("subscribed");
    assert!(matches!(sub.next().await, Some(Update::Full { state: State::Objects(o), .. }) if o.is_empty()));
    let recomputed = || hub.stats.recomputed.load(std::sync::atomic::Ordering::Relaxed);

    // The subscriber looks at each view as it comes (a checkpoint after each
    // publish: it answers once it has diffed the newest view).
    let look = async |sub: &mut authzd::watch::Subscriber, revision: u64| {
        hub.checkpoint(revision);
        assert_eq!(sub.next().await, Some(Update::Checkpoint { revision }), "no difference for the dashboard");
    };
    // A role edit: agent0 holds the role, so its entry (privileges) changes and its listing is recomputed once.
    publish(&hub, &snap, &t, vec![agents_role(&[CHANNEL])], 3);
    look(&mut sub, 3).await;
    let after_role = recomputed();
    assert_eq!(after_role, 1);
    // Someone else leaves and rejoins a group: agent0's inputs are untouched.
    let (agents, agent2) = (GroupId("agents".into()), PersonId("agent2".into()));
    publish(&hub, &snap, &t, vec![Mutation::RemoveGroupMember { group: agents.clone(), person: agent2.clone() }], 4);
    look(&mut sub, 4).await;
    publish(&hub, &snap, &t, vec![Mutation::AddGroupMember { group: agents, person: agent2 }], 5);
    look(&mut sub, 5).await;
    assert_eq!(recomputed(), after_role, "batches that leave agent0's inputs alone recompute nothing");
    // Objects of another type: the graph changes (so do the inputs), but a
    // Metric listing cannot, and is not recomputed.
    publish(
        &hub,
        &snap,
        &t,
        vec![Mutation::PutObject(Object {
            kind: "Script".into(),
            id: ObjectId("s1".into()),
            name: "s1".into(),
            folder: FolderId("Scripts/Callback".into()),
            partitions: BTreeSet::new(),
            properties: BTreeMap::new(),
        })],
        6,
    );
    look(&mut sub, 6).await;
    assert_eq!(recomputed(), after_role, "a batch of Script objects does not recompute a Metric listing");

    // An entry on the folder changes the ACLs: recomputed, and the metric is gained.
    publish(
        &hub,
        &snap,
        &t,
        vec![Mutation::PutAce(Ace {
            target: Target::Folder(FolderId(folder.into())),
            subject: Subject::Person(PersonId("agent0".into())),
            allow: PermSet::EMPTY.with(Perm::Read),
            deny: PermSet::EMPTY,
            propagate: true,
        })],
        7,
    );
    match sub.next().await {
        Some(Update::Objects { revision: 7, gained, lost }) => {
            assert_eq!(gained.iter().map(|o| o.id.as_str()).collect::<Vec<_>>(), ["m1"]);
            assert!(lost.is_empty());
        }
        other => panic!("expected the gained metric, got {other:?}"),
    }
    assert_eq!(recomputed(), after_role + 1);
}
