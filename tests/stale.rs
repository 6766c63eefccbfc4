//! Streams are never left stale (the bug: after a resync, a desktop could
//! keep a privilege it had lost, and a dashboard an object it no longer saw).
//!
//! Through the public gRPC API only. Agent desktops follow their Web Callback
//! privileges and dashboards their visible scripts, each on its own
//! connection with a tiny HTTP/2 window, while one writer flips "Can
//! Reschedule" on their role and a deny on one script. Each round:
//!
//! 1. the streams stop reading while the writer flips, so they fall behind;
//! 2. they read again, as fast as they can, while the writer goes on;
//! 3. the writer stops; every stream reads until it is sent a checkpoint at
//!    (or past) the last write's revision. A checkpoint at R promises that
//!    every change up to R has been sent.
//!
//! Then each stream's state must equal what the server answers to
//! `EffectivePrivileges` and `ListVisible` at that revision. A stream that
//! sent that checkpoint while holding another state is the bug.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod support;

use authzd::proto::authzd::v1 as pb;
use pb::watch_event::Event;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use support::web_callback_agent_role as agent_role;
use tokio::sync::watch;
use tonic::Streaming;

const TENANT: &str = "acme";
const WCB: &str = "WorkspaceWebCallback";
const RESCHEDULE: &str = "Web Callback - Can Reschedule";
/// Persons, each with a desktop and a dashboard.
const PERSONS: usize = 30;
/// Scripts every person sees (a dashboard's listing takes a while to compute).
const SCRIPTS: usize = 600;
const ROUNDS: usize = 25;
/// Flips while the streams do not read, then while they read again.
const FLIPS_PAUSED: usize = 8;
const FLIPS_READING: usize = 4;
/// How long a stream may take to reach a checkpoint past the last write.
const PATIENCE: Duration = Duration::from_secs(30);

fn dashboard_sub(person: &str) -> pb::WatchRequest {
    pb::WatchRequest {
        subscription: Some(pb::watch_request::Subscription::VisibleObjects(pb::VisibleObjectsSubscription {
            tenant: TENANT.into(),
            person: person.into(),
            r#type: "Script".into(),
            folder: Some("Scripts/Callback/Bulk".into()),
            ..Default::default()
        })),
        at_least_revision: 0,
    }
}

/// The batch of flip `k`: even flips take Can Reschedule away and deny the
/// agents one script; odd flips give both back.
fn flip(k: usize) -> String {
    let role = agent_role(if k % 2 == 0 { &[RESCHEDULE] } else { &[] });
    let ace = if k % 2 == 0 {
        "- put_ace: {target: {object: {type: Script, id: bulk-0000}}, subject: {group: web-callback-agents}, deny: [Read]}"
    } else {
        "- delete_ace: {target: {object: {type: Script, id: bulk-0000}}, subject: {group: web-callback-agents}}"
    };
    format!("{role}\n{ace}\n")
}

/// What a stream's client believes: the names it holds (privileges or
/// object ids), the last checkpoint, and how many full states it received.
#[derive(Debug, Default)]
struct Client {
    held: BTreeSet<String>,
    checkpoint: u64,
    full_states: usize,
    differences: usize,
    /// A split full state being received.
    partial: Option<BTreeSet<String>>,
}

impl Client {
    fn apply(&mut self, e: Event) {
        match e {
            Event::Snapshot(s) => {
                match s.state {
                    Some(pb::snapshot::State::Privileges(p)) => self.held = p.privileges.into_iter().collect(),
                    Some(pb::snapshot::State::Objects(o)) => {
                        let part = self.partial.get_or_insert_with(BTreeSet::new);
                        part.extend(o.objects.into_iter().map(|o| o.id));
                        if !s.complete {
                            return;
                        }
                        self.held = self.partial.take().unwrap_or_default();
                    }
                    None => panic!("a snapshot without a state"),
                }
                self.full_states += 1;
            }
            Event::PrivilegesChanged(c) => self.change(c.revision, c.gained, c.lost),
            Event::VisibleObjectsChanged(c) => self.change(
                c.revision,
                c.gained.into_iter().map(|o| o.id).collect(),
                c.lost.into_iter().map(|k| k.id).collect(),
            ),
            Event::Checkpoint(c) => self.checkpoint = c.revision,
            other => panic!("unexpected event on a computed stream: {other:?}"),
        }
    }

    fn change(&mut self, revision: u64, gained: Vec<String>, lost: Vec<String>) {
        self.differences += 1;
        for g in gained {
            assert!(self.held.insert(g.clone()), "gained `{g}` at {revision} but already held it");
        }
        for l in lost {
            assert!(self.held.remove(&l), "lost `{l}` at {revision} but did not hold it");
        }
    }
}

/// What the readers are told to do.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Read nothing.
    Paused,
    /// Read as fast as possible.
    Reading,
    /// Read until a checkpoint at or past this revision, then give the stream back.
    Until(u64),
}

type Stream = (Client, Streaming<pb::WatchEvent>);

async fn read(mut s: Stream, mut phase: watch::Receiver<Phase>) -> Stream {
    loop {
        let now = *phase.borrow_and_update();
        match now {
            Phase::Until(r) if s.0.checkpoint >= r => return s,
            Phase::Paused => {
                phase.changed().await.unwrap();
                continue;
            }
            _ => {}
        }
        tokio::select! {
            m = s.1.message() => s.0.apply(m.expect("the stream fails").expect("the stream ended").event.expect("an event")),
            _ = phase.changed() => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lagging_streams_end_at_the_servers_answers() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::demo_config(&dir.path().join("authzd.db"));
    // A small stream buffer and frequent checkpoints: streams fall behind quickly, and
    // say soon which revision they have sent everything up to.
    config.watch.stream_buffer = 1;
    config.watch.checkpoint_interval = Duration::from_millis(20);
    let node = support::serve(config).await;
    let mut admin = node.admin().await;
    // PERSONS agents in the demo's web-callback-agents group (whose role
    // holds every Web Callback privilege), and SCRIPTS scripts everyone reads.
    let mut batch = String::from("- put_folder: {id: Scripts/Callback/Bulk, name: Bulk, parent: Scripts/Callback}\n");
    for i in 0..PERSONS {
        batch.push_str(&format!(
            "- put_person: {{id: p-{i}, username: p.{i}}}\n- add_group_member: {{group: web-callback-agents, person: p-{i}}}\n"
        ));
    }
    for i in 0..SCRIPTS {
        batch.push_str(&format!(
            "- put_object: {{type: Script, id: bulk-{i:04}, name: Bulk {i:04}, folder: Scripts/Callback/Bulk}}\n"
        ));
    }
    admin.write(support::acme_write(&batch)).await.unwrap();

    // Each stream on its own connection with a 256-byte HTTP/2 window: a
    // client that does not read stops the server's sends to it at once.
    let mut streams: Vec<Option<Stream>> = Vec::new();
    for i in 0..PERSONS {
        for sub in [support::acme_privileges_sub(&format!("p-{i}"), WCB), dashboard_sub(&format!("p-{i}"))] {
            let channel = node.channel_with_window(256).await;
            let mut w = pb::watch_service_client::WatchServiceClient::new(channel);
            streams.push(Some((Client::default(), w.watch(sub).await.unwrap().into_inner())));
        }
    }
    let mut decisions = node.decisions().await;
    let mut stale = 0;
    let mut k = 0;
    for round in 0..ROUNDS {
        let (phase, phase_rx) = watch::channel(Phase::Paused);
        let readers: Vec<_> =
            streams.iter_mut().map(|s| tokio::spawn(read(s.take().unwrap(), phase_rx.clone()))).collect();
        let mut last = 0;
        for i in 0..FLIPS_PAUSED + FLIPS_READING {
            if i == FLIPS_PAUSED {
                phase.send_replace(Phase::Reading);
            }
            last = admin.write(support::acme_write(&flip(k))).await.unwrap().into_inner().revision;
            k += 1;
        }
        phase.send_replace(Phase::Until(last));
        let started = Instant::now();
        for (i, reader) in readers.into_iter().enumerate() {
            let s = tokio::time::timeout(PATIENCE.saturating_sub(started.elapsed()), reader)
                .await
                .unwrap_or_else(|_| panic!("stream {i} got no checkpoint past revision {last} within {PATIENCE:?}"))
                .unwrap();
            streams[i] = Some(s);
        }
        for (i, s) in streams.iter().enumerate() {
            let (client, person) = (&s.as_ref().unwrap().0, format!("p-{}", i / 2));
            let truth: BTreeSet<String> = if i % 2 == 0 {
                let r = decisions
                    .effective_privileges(pb::EffectivePrivilegesRequest {
                        tenant: TENANT.into(),
                        person: person.clone(),
                        application: WCB.into(),
                        at_least_revision: last,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert!(r.revision >= last);
                r.effective.unwrap_or_default().privileges.into_iter().collect()
            } else {
                let r = decisions
                    .list_visible(pb::ListVisibleRequest {
                        tenant: TENANT.into(),
                        person: person.clone(),
                        r#type: "Script".into(),
                        folder: Some("Scripts/Callback/Bulk".into()),
                        at_least_revision: last,
                        page_size: SCRIPTS as u32,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert!(r.next_page_token.is_empty(), "one page holds every script");
                r.objects.into_iter().map(|o| o.id).collect()
            };
            if client.held != truth {
                stale += 1;
                let what = if i % 2 == 0 { "desktop" } else { "dashboard" };
                eprintln!(
                    "round {round}: the {what} of {person} is stale after a checkpoint at {} (last write {last}): differs in {:?}",
                    client.checkpoint,
                    client.held.symmetric_difference(&truth).collect::<Vec<_>>(),
                );
            }
        }
    }
    let full: usize = streams.iter().map(|s| s.as_ref().unwrap().0.full_states).sum();
    let differences: usize = streams.iter().map(|s| s.as_ref().unwrap().0.differences).sum();
    let flips = ROUNDS * (FLIPS_PAUSED + FLIPS_READING);
    eprintln!(
        "{ROUNDS} rounds of {} flips, {} streams: {stale} stale; {} full states after the first ones; \
         {differences} differences received for {} that changed a stream",
        FLIPS_PAUSED + FLIPS_READING,
        streams.len(),
        full - streams.len(),
        flips * streams.len()
    );
    assert_eq!(stale, 0, "streams left stale after a checkpoint promised every change");
    // Every flip changes every stream: a stream that received fewer
    // differences (or full states) than that fell behind, which is what
    // this test is about.
    assert!(
        differences + full - streams.len() < flips * streams.len(),
        "no stream fell behind: the test did not exercise lagging"
    );
    drop(streams);
    node.stop().await;
}
