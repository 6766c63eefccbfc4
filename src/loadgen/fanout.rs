//! The `watch` workload: `--watchers` privilege subscriptions, then role
//! flips.
//!
//! It picks the role holding the most persons that grants privileges of the
//! followed application, and subscribes persons it affects first. Each flip
//! writes the role without the application's privileges, or back with them;
//! its latency is the time from sending the write until every affected
//! subscriber has received its difference at the write's revision. Each
//! difference is checked against the local views before and after (gained and
//! lost); a difference to a subscriber the flip does not affect is a
//! mismatch. The run always ends with the role restored.
//!
//! `watch-sse` is the same workload with the subscribers on Server-Sent
//! Events (HTTP/1.1, one connection each, or `--http2`), their events parsed
//! back into `WatchEvent`s ([`super::httpjson::sse_subscriber`]); the writes stay
//! gRPC.

use super::tally::{Live, Sample, Tally, WorkloadResult, progress};
use super::{BenchArgs, MAX_MESSAGE_BYTES, Target, Token};
use crate::engine::TenantView;
use crate::model::{FolderId, Mutation, PersonId, Role, RoleId, RoleMembers, folders};
use crate::proto::authzd::v1 as pb;
use crate::proto::authzd::v1::watch_service_client::WatchServiceClient;
use crate::service::convert;
use pb::watch_event::Event;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Longest wait for a flip's differences (and for the initial states).
const FLIP_TIMEOUT: Duration = Duration::from_secs(10);
/// Most streams per HTTP/2 connection (servers commonly allow 100–200).
const STREAMS_PER_CONNECTION: usize = 100;

type Received = (usize, Result<pb::WatchEvent, String>, Instant);

fn failed(name: &'static str, msg: String) -> WorkloadResult {
    let mut t = Tally::new();
    t.errors = 1;
    t.messages.push(format!("error: {msg}"));
    WorkloadResult::from_tally(name, t, Duration::ZERO)
}

/// The role `--watch-role-for-all` flips: assigned to every person, granting
/// the privilege of `app` that requires nothing and that the fewest persons
/// already have (so a flip changes nearly everyone's privileges; the run
/// reports how many it affects).
fn desk_role(t: &Target, app: &str) -> Result<Role, String> {
    let catalog = t.config.catalogs.get(app).ok_or_else(|| format!("unknown application `{app}`"))?;
    // How many persons hold each privilege (bit i of a row is the i-th privilege).
    let mut held = vec![0usize; catalog.privileges.len()];
    for p in t.config.persons.keys() {
        let row = t.view.privilege_row(p.as_str(), app).unwrap_or(&[]);
        for (i, n) in held.iter_mut().enumerate() {
            *n += usize::from(row.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0));
        }
    }
    let privilege = catalog
        .privileges
        .iter()
        .zip(&held)
        .filter(|(p, _)| p.requires.is_empty())
        .min_by_key(|(_, n)| **n)
        .map(|(p, _)| p)
        .ok_or_else(|| format!("every privilege of `{app}` requires another: none to flip for all"))?;
    Ok(Role {
        id: RoleId("authzd-bench-desk".into()),
        name: "authzd bench desk".into(),
        folder: FolderId(folders::ROLES.into()),
        privileges: BTreeMap::from([(app.to_owned(), BTreeSet::from([privilege.name.clone()]))]),
        members: RoleMembers { persons: t.config.persons.keys().cloned().collect(), groups: BTreeSet::new() },
    })
}

/// Writes one mutation.
pub(super) async fn write(admin: &mut super::Admin, tenant: &str, m: &Mutation) -> Result<u64, String> {
    admin
        .write(pb::WriteRequest {
            tenant: tenant.to_owned(),
            mutations: vec![convert::mutation_pb(m.clone())],
            expected_revision: None,
            preconditions: Vec::new(),
            actor: None,
            dry_run: false,
            include_changes: false,
        })
        .await
        .map(|r| r.into_inner().revision)
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

/// Runs the watch fan-out workload; with `sse`, its subscribers on
/// Server-Sent Events (`watch-sse`).
pub async fn run(a: &BenchArgs, t: &Target, token: &Token, sse: bool) -> WorkloadResult {
    let name = if sse { super::Workload::WatchSse.name() } else { super::Workload::Watch.name() };
    match run_inner(a, t, token, sse, name, None).await {
        Ok(r) => r,
        Err(msg) => failed(name, msg),
    }
}

/// The `watch-storm` fan-out: a flip every `--flip-every`, for the warm-up
/// and the measured time of the checks that run meanwhile; `flipping` is
/// sent when the subscribers are all in and the first flip begins.
pub async fn run_storm(
    a: &BenchArgs,
    t: &Target,
    token: &Token,
    flipping: tokio::sync::oneshot::Sender<()>,
) -> WorkloadResult {
    let name = super::Workload::WatchStorm.name();
    match run_inner(a, t, token, false, name, Some((a.flip_every, flipping))).await {
        Ok(r) => r,
        Err(msg) => failed(name, msg),
    }
}

/// The application the watch workloads follow and flip: `--watch-app`, or
/// the catalog with the most privileges.
pub(super) fn followed_app(a: &BenchArgs, t: &Target) -> Result<String, String> {
    match &a.watch_app {
        Some(app) => Ok(app.clone()),
        None => t
            .config
            .catalogs
            .values()
            .max_by_key(|c| c.privileges.len())
            .map(|c| c.name.clone())
            .ok_or_else(|| "the tenant has no application catalogs to follow".into()),
    }
}

/// The server's `process_cpu_seconds_total`.
async fn server_cpu(url: &super::scrape::MetricsUrl) -> Result<f64, String> {
    let body = super::scrape::scrape(url).await?;
    super::scrape::metric(&body, "process_cpu_seconds_total")
        .ok_or_else(|| format!("`http://{}{}` has no process_cpu_seconds_total", url.authority, url.path))
}

/// Persons holding `role` directly or through a group.
pub(super) fn holders(t: &Target, role: &Role) -> BTreeSet<PersonId> {
    let mut out = role.members.persons.clone();
    for g in &role.members.groups {
        if let Some(group) = t.config.groups.get(g) {
            out.extend(group.members.iter().cloned());
        }
    }
    out
}

fn privileges(v: &TenantView, person: &str, app: &str) -> Vec<String> {
    v.effective_privileges(person, app).map(|e| e.privileges).unwrap_or_default()
}

fn set(v: &[String]) -> BTreeSet<&str> {
    v.iter().map(String::as_str).collect()
}

/// What the watch workloads flip: `role` written as `on` (with its
/// privileges of `app`) and as `off` (without), and the views of both.
struct Flip {
    app: String,
    /// The role made for the run (`--watch-role-for-all`), deleted after it.
    desk: Option<Role>,
    role: Role,
    on: Mutation,
    off: Mutation,
    view_on: Arc<TenantView>,
    view_off: TenantView,
}

impl Flip {
    fn of(a: &BenchArgs, t: &Target) -> Result<Flip, String> {
        let app = followed_app(a, t)?;
        // With --watch-role-for-all, the flipped role is created for the run.
        let desk = if a.watch_role_for_all { Some(desk_role(t, &app)?) } else { None };
        let (config_on, view_on) = match &desk {
            Some(r) => {
                let c = t.config.apply_batch(&[Mutation::PutRole(r.clone())]).map_err(|e| e.to_string())?;
                let v = Arc::new(TenantView::build(&c, 0));
                (c, v)
            }
            None => (t.config.clone(), Arc::clone(&t.view)),
        };
        let role = match &desk {
            Some(r) => r.clone(),
            None => t
                .config
                .roles
                .values()
                .filter(|r| r.privileges.get(&app).is_some_and(|p| !p.is_empty()))
                .max_by_key(|r| holders(t, r).len())
                .ok_or_else(|| format!("no role grants privileges of `{app}`"))?
                .clone(),
        };
        let mut off_role = role.clone();
        off_role.privileges.remove(&app);
        let on = Mutation::PutRole(role.clone());
        let off = Mutation::PutRole(off_role);
        let config_off = config_on.apply_batch(std::slice::from_ref(&off)).map_err(|e| e.to_string())?;
        let view_off = TenantView::build(&config_off, 0);
        Ok(Flip { app, desk, role, on, off, view_on, view_off })
    }
}

/// The `watch-storm` checks: the privilege checks of `pools` whose answer
/// is the same with the flipped role on and off (the flipped privilege, and
/// those requiring it, change under the storm; every other answer must not,
/// so each is still verified).
pub(super) fn storm_pools(
    a: &BenchArgs,
    t: &Target,
    pools: &super::pools::Pools,
) -> Result<super::pools::Pools, String> {
    let flip = Flip::of(a, t)?;
    Ok(pools.privileges_where(
        |r| {
            let ask = |v: &TenantView| {
                let d = v.check(&crate::engine::CheckRequest {
                    subject: &r.person,
                    application: r.application.as_deref(),
                    privilege: r.privilege.as_deref(),
                    ..Default::default()
                });
                (d.allowed(), d.reason)
            };
            ask(&flip.view_on) == ask(&flip.view_off)
        },
        format!("every privilege check of the pool changes with the flipped role `{}`", flip.role.id),
    ))
}

async fn run_inner(
    a: &BenchArgs,
    t: &Target,
    token: &Token,
    sse: bool,
    name: &'static str,
    storm: Option<(Duration, tokio::sync::oneshot::Sender<()>)>,
) -> Result<WorkloadResult, String> {
    let Flip { app, desk, role, on, off, view_on, view_off } = Flip::of(a, t)?;

    // Subscribers: the persons a flip affects first, then the others.
    let persons: Vec<&str> = t.config.persons.keys().map(|p| p.0.as_str()).collect();
    if persons.is_empty() {
        return Err("the tenant has no persons".into());
    }
    let (mut affected, others): (Vec<&str>, Vec<&str>) =
        persons.iter().partition(|p| privileges(&view_on, p, &app) != privileges(&view_off, p, &app));
    if affected.is_empty() {
        return Err(format!("flipping role `{}` changes nobody's privileges in `{app}`", role.id));
    }
    affected.extend(others);
    let n = a.watchers.max(1);
    let subs: Vec<&str> = affected.iter().cycle().take(n).copied().collect();
    let on_state: Vec<Vec<String>> = subs.iter().map(|p| privileges(&view_on, p, &app)).collect();
    let off_state: Vec<Vec<String>> = subs.iter().map(|p| privileges(&view_off, p, &app)).collect();
    let moved: HashSet<usize> = (0..n).filter(|&i| on_state[i] != off_state[i]).collect();

    let channels = super::connect_many(a, a.connections.max(n.div_ceil(STREAMS_PER_CONNECTION)))
        .await
        .map_err(|e| e.to_string())?;
    let mut admin = super::admin(&channels[0], token);
    if desk.is_some() {
        write(&mut admin, &t.tenant, &on).await.map_err(|e| format!("creating the role for all: {e}"))?;
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<Received>();
    let mut tasks = Vec::with_capacity(n);
    let started = Instant::now();
    // `watch-sse`: one HTTP/1.1 connection per subscriber, or HTTP/2 connections of 100 streams.
    let mut http = Vec::new();
    let api = Arc::new(crate::http::gateway::Api::new()?);
    if sse {
        let conns = if a.http2 { a.connections.max(n.div_ceil(STREAMS_PER_CONNECTION)) } else { n };
        for _ in 0..conns {
            http.push(super::httpjson::connect(a, a.http2).await?);
        }
    }
    for (i, person) in subs.iter().enumerate() {
        if sse {
            let req = pb::WatchRequest {
                subscription: Some(pb::watch_request::Subscription::Privileges(pb::PrivilegesSubscription {
                    tenant: t.tenant.clone(),
                    person: (*person).to_owned(),
                    application: app.clone(),
                })),
                at_least_revision: 0,
            };
            let conn = http[i % http.len()].clone();
            tasks.push(tokio::spawn(super::httpjson::sse_subscriber(
                Arc::clone(&api),
                conn,
                req,
                a.token.clone(),
                i,
                tx.clone(),
            )));
            continue;
        }
        let mut client =
            WatchServiceClient::new(channels[i % channels.len()].clone()).max_decoding_message_size(MAX_MESSAGE_BYTES);
        let req = pb::WatchRequest {
            subscription: Some(pb::watch_request::Subscription::Privileges(pb::PrivilegesSubscription {
                tenant: t.tenant.clone(),
                person: (*person).to_owned(),
                application: app.clone(),
            })),
            at_least_revision: 0,
        };
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = match client.watch(req).await {
                Ok(r) => r.into_inner(),
                Err(s) => {
                    let _ = tx.send((i, Err(format!("{:?}: {}", s.code(), s.message())), Instant::now()));
                    return;
                }
            };
            loop {
                let item = match stream.message().await {
                    Ok(Some(ev)) => Ok(ev),
                    Ok(None) => Err("the server ended the stream".to_owned()),
                    Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
                };
                let end = item.is_err();
                if tx.send((i, item, Instant::now())).is_err() || end {
                    return;
                }
            }
        }));
    }
    drop(tx);
    let stop = |tasks: Vec<tokio::task::JoinHandle<()>>| {
        for task in tasks {
            task.abort();
        }
    };

    let live = Arc::new(Live::default());
    let mut tally = Tally::new();
    // The initial states.
    let mut initial = vec![false; n];
    let mut pending = n;
    let deadline = tokio::time::Instant::now() + FLIP_TIMEOUT;
    while pending > 0 {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((i, Ok(ev), _))) => {
                if let Some(Event::Snapshot(s)) = ev.event {
                    if !initial[i] {
                        initial[i] = true;
                        pending -= 1;
                        let got = match s.state {
                            Some(pb::snapshot::State::Privileges(p)) => p.privileges,
                            _ => Vec::new(),
                        };
                        if got != on_state[i] {
                            tally.record(
                                Sample::Mismatch(
                                    0,
                                    format!("initial state of `{}`: {got:?}, want {:?}", subs[i], on_state[i]),
                                ),
                                Duration::ZERO,
                                false,
                                &live,
                            );
                        }
                    }
                }
            }
            Ok(Some((_, Err(msg), _))) => {
                stop(tasks);
                return Err(format!("subscribing: {msg}"));
            }
            Ok(None) | Err(_) => {
                stop(tasks);
                return Err(format!("{pending} of {n} subscribers got no initial state within {FLIP_TIMEOUT:?}"));
            }
        }
    }
    let subscribed = started.elapsed();
    if !a.quiet {
        eprintln!(
            "bench: {name}: {n} subscribers ({} affected by each flip) in {:.0} ms",
            moved.len(),
            subscribed.as_secs_f64() * 1e3
        );
    }

    // The flips (a storm lasts as long as the checks beside it, warm-up included).
    let (pace, flipping) = match storm {
        Some((every, tx)) => (Some(every), Some(tx)),
        None => (None, None),
    };
    if let Some(tx) = flipping {
        let _ = tx.send(());
    }
    // The server's CPU time over the flips (with `--metrics-url`): what one
    // flip costs it, the floor of its latency on a server of one core.
    let metrics = match a.metrics_url.as_deref().map(super::scrape::parse_metrics_url).transpose()? {
        Some(url) => Some((server_cpu(&url).await?, url)),
        None => None,
    };
    let begin = Instant::now();
    let end = begin + a.duration() + if pace.is_some() { a.warmup() } else { Duration::ZERO };
    let ticker = progress(name, Arc::clone(&live), begin, end, a.quiet);
    let mut is_on = true;
    let mut flips = 0u64;
    let mut write_time = Duration::ZERO;
    let mut broken = false;
    while Instant::now() < end || !is_on {
        let (mutation, want, before) = if is_on { (&off, &off_state, &on_state) } else { (&on, &on_state, &off_state) };
        let w0 = Instant::now();
        let revision = match write(&mut admin, &t.tenant, mutation).await {
            Ok(r) => r,
            Err(e) => {
                tally.record(Sample::Error(format!("write: {e}")), Duration::ZERO, false, &live);
                broken = true;
                break;
            }
        };
        write_time += w0.elapsed();
        is_on = !is_on;
        flips += 1;
        let mut waiting = moved.clone();
        let mut last = w0;
        let mut mismatches = 0;
        let deadline = tokio::time::Instant::now() + FLIP_TIMEOUT;
        while !waiting.is_empty() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((i, Ok(ev), at))) => match ev.event {
                    Some(Event::PrivilegesChanged(c)) => {
                        let gained: BTreeSet<&str> = set(&want[i]).difference(&set(&before[i])).copied().collect();
                        let lost: BTreeSet<&str> = set(&before[i]).difference(&set(&want[i])).copied().collect();
                        let ok = c.revision == revision
                            && waiting.contains(&i)
                            && set(&c.gained) == gained
                            && set(&c.lost) == lost;
                        if !ok {
                            mismatches += 1;
                            tally.record(
                                Sample::Mismatch(
                                    0,
                                    format!(
                                        "`{}` at revision {} (flip at {revision}): gained {:?} lost {:?}, want gained {gained:?} lost {lost:?}",
                                        subs[i], c.revision, c.gained, c.lost
                                    ),
                                ),
                                Duration::ZERO,
                                false,
                                &live,
                            );
                        }
                        waiting.remove(&i);
                        last = last.max(at);
                    }
                    Some(Event::Snapshot(s)) if s.revision >= revision => {
                        // A resync replaces the difference: its state must be the new one.
                        let got = match s.state {
                            Some(pb::snapshot::State::Privileges(p)) => p.privileges,
                            _ => Vec::new(),
                        };
                        if got != want[i] {
                            mismatches += 1;
                            tally.record(
                                Sample::Mismatch(0, format!("resync of `{}`: {got:?}, want {:?}", subs[i], want[i])),
                                Duration::ZERO,
                                false,
                                &live,
                            );
                        }
                        waiting.remove(&i);
                        last = last.max(at);
                    }
                    _ => {}
                },
                Ok(Some((_, Err(msg), _))) => {
                    tally.record(Sample::Error(msg), Duration::ZERO, false, &live);
                    broken = true;
                    break;
                }
                Ok(None) | Err(_) => {
                    tally.record(
                        Sample::Error(format!(
                            "{} of {} affected subscribers did not get revision {revision} within {FLIP_TIMEOUT:?}",
                            waiting.len(),
                            moved.len()
                        )),
                        Duration::ZERO,
                        false,
                        &live,
                    );
                    broken = true;
                    break;
                }
            }
        }
        if broken {
            break;
        }
        if mismatches == 0 {
            tally.record(Sample::Ok(moved.len() as u64), last - w0, true, &live);
        }
        if let Some(every) = pace {
            tokio::time::sleep_until(tokio::time::Instant::from_std(w0 + every)).await;
        }
    }
    let measured = begin.elapsed();
    let cpu_per_flip_ms = match &metrics {
        Some((before, url)) if flips > 0 => Some((server_cpu(url).await? - before) * 1e3 / flips as f64),
        _ => None,
    };
    ticker.abort();
    // Late or unexpected differences.
    if !broken {
        let quiet_until = tokio::time::Instant::now() + Duration::from_millis(200);
        while let Ok(Some((i, Ok(ev), _))) = tokio::time::timeout_at(quiet_until, rx.recv()).await {
            if let Some(Event::PrivilegesChanged(c)) = ev.event {
                tally.record(
                    Sample::Mismatch(0, format!("unexpected difference to `{}` at revision {}", subs[i], c.revision)),
                    Duration::ZERO,
                    false,
                    &live,
                );
            }
        }
    }
    // Then the tenant is left as it was (the subscribers are stopped first).
    stop(tasks);
    if desk.is_some() {
        // Leave the tenant as it was: the role created for the run goes.
        let _ = write(&mut admin, &t.tenant, &Mutation::DeleteRole { id: role.id.clone() }).await;
    } else if !is_on {
        // Best effort: leave the tenant as it was.
        let _ = write(&mut admin, &t.tenant, &on).await;
    }
    let mut r = WorkloadResult::from_tally(name, tally, measured);
    r.extra = json!({
        "application": app,
        "role": role.id.0,
        "subscribers": n,
        "affected_per_flip": moved.len(),
        "flips": flips,
        "subscribe_all_ms": subscribed.as_secs_f64() * 1e3,
        "mean_write_ms": if flips > 0 { write_time.as_secs_f64() * 1e3 / flips as f64 } else { 0.0 },
        "transport": if !sse { "gRPC" } else if a.http2 { "SSE over HTTP/2" } else { "SSE over HTTP/1.1" },
        "flip_every_ms": pace.map(|p| p.as_secs_f64() * 1e3),
        "server_cpu_ms_per_flip": cpu_per_flip_ms,
        "server_cpu_us_per_affected_stream": cpu_per_flip_ms.map(|ms| ms * 1e3 / moved.len().max(1) as f64),
    });
    Ok(r)
}
