//! `authzd watch privileges|visible|raw`: following a change stream.

use super::client::Conn;
use super::render::{proto_json, time_text};
use super::{CliError, ClientArgs, permission_arg};
use crate::console::outln;
use crate::proto::authzd::v1 as pb;
use crate::service::convert;
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use std::process::ExitCode;

/// `authzd watch`.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// What to follow.
    #[command(subcommand)]
    pub subscription: WatchSubscription,
}

/// The kinds of change stream.
#[derive(Debug, Clone, Subcommand)]
pub enum WatchSubscription {
    /// A person's effective privileges in an application.
    Privileges(WatchPrivilegesArgs),
    /// The objects of a type a person may access.
    Visible(WatchVisibleArgs),
    /// Committed configuration batches (and edit locks).
    Raw(WatchRawArgs),
}

/// How a watch runs and prints.
#[derive(Debug, Clone, Args)]
pub struct WatchCommon {
    /// Connection and output (`--json`: one JSON object per line).
    #[command(flatten)]
    pub client: ClientArgs,
    /// Start at a snapshot revision at least this one.
    #[arg(long, default_value_t = 0)]
    pub at_least_revision: u64,
    /// Stop after this many events (default: until Ctrl-C or the server ends the stream).
    #[arg(long)]
    pub max_events: Option<u64>,
    /// Also print the periodic checkpoints.
    #[arg(long)]
    pub checkpoints: bool,
}

/// Following privileges.
#[derive(Debug, Clone, Args)]
pub struct WatchPrivilegesArgs {
    /// Connection, output, limits.
    #[command(flatten)]
    pub common: WatchCommon,
    /// Tenant id.
    #[arg(long, env = "AUTHZD_TENANT")]
    pub tenant: String,
    /// Person id.
    #[arg(long)]
    pub person: String,
    /// Application (catalog name).
    #[arg(long = "app")]
    pub application: String,
}

/// Following visible objects.
#[derive(Debug, Clone, Args)]
pub struct WatchVisibleArgs {
    /// Connection, output, limits.
    #[command(flatten)]
    pub common: WatchCommon,
    /// Tenant id.
    #[arg(long, env = "AUTHZD_TENANT")]
    pub tenant: String,
    /// Person id.
    #[arg(long)]
    pub person: String,
    /// Object type (`Metric`, `Script`, ...).
    #[arg(long = "type")]
    pub kind: String,
    /// Only under this folder id.
    #[arg(long)]
    pub folder: Option<String>,
    /// Permission needed (default `Read`).
    #[arg(long)]
    pub permission: Option<String>,
    /// Application context.
    #[arg(long = "app")]
    pub application: Option<String>,
}

/// Following raw changes.
#[derive(Debug, Clone, Args)]
pub struct WatchRawArgs {
    /// Connection, output, limits.
    #[command(flatten)]
    pub common: WatchCommon,
    /// Only this tenant (default: every tenant).
    #[arg(long, env = "AUTHZD_TENANT")]
    pub tenant: Option<String>,
    /// Only changes touching this object type (repeat for several).
    #[arg(long = "type")]
    pub types: Vec<String>,
    /// Start (or resume) after this revision: every retained batch after it,
    /// then live changes (0: from the beginning). Without it: live changes
    /// from now (the first line names the revision they start after).
    #[arg(long)]
    pub from_revision: Option<u64>,
}

impl WatchSubscription {
    /// Connection, output and limits of any subscription.
    pub fn common(&self) -> &WatchCommon {
        match self {
            WatchSubscription::Privileges(a) => &a.common,
            WatchSubscription::Visible(a) => &a.common,
            WatchSubscription::Raw(a) => &a.common,
        }
    }
}

/// How `watch` goes on after an event.
enum Next {
    /// Keep reading.
    Continue,
    /// The server ended the stream and asked to resume from this revision.
    Resume(u64),
    /// The server ended the stream for good (its event says why).
    End,
}

fn object_key_text(k: &pb::ObjectKey) -> String {
    format!("{}/{}", k.r#type, k.id)
}

fn resync_text(v: i32) -> &'static str {
    match pb::ResyncReason::try_from(v) {
        Ok(pb::ResyncReason::Initial) => "initial",
        Ok(pb::ResyncReason::Lagged) => "lagged",
        Ok(pb::ResyncReason::Reloaded) => "reloaded",
        _ => "unspecified",
    }
}

fn lock_kind_text(v: i32) -> &'static str {
    match pb::LockEventKind::try_from(v) {
        Ok(pb::LockEventKind::Acquired) => "acquired",
        Ok(pb::LockEventKind::Released) => "released",
        Ok(pb::LockEventKind::Expired) => "expired",
        _ => "unspecified",
    }
}

/// A raw change's mutations as the model's JSON (`{"put_person": {...}}`);
/// one the client cannot read is shown as its protobuf debug text.
fn mutations_json(ms: &[pb::Mutation]) -> Vec<Value> {
    ms.iter()
        .enumerate()
        .map(|(i, m)| match convert::mutation(i, m.clone()) {
            Ok(m) => serde_json::to_value(&m).unwrap_or_else(|e| json!({"unreadable": e.to_string()})),
            Err(e) => json!({"unreadable": e.to_string(), "debug": format!("{m:?}")}),
        })
        .collect()
}

/// One event as a line of text, and what follows it (`--json` prints the
/// event itself, in the proto3 JSON mapping).
fn watch_event(e: pb::watch_event::Event) -> (String, Next) {
    use pb::watch_event::Event;
    match e {
        Event::Snapshot(s) => {
            let part = if s.complete { "" } else { " (part; more follows)" };
            let reason = resync_text(s.reason);
            match s.state {
                Some(pb::snapshot::State::Privileges(p)) => (
                    format!(
                        "revision {} snapshot ({reason}){part}: {} privilege(s) in {}: {}",
                        s.revision,
                        p.privileges.len(),
                        p.application,
                        p.privileges.join(", ")
                    ),
                    Next::Continue,
                ),
                Some(pb::snapshot::State::Objects(o)) => (
                    format!(
                        "revision {} snapshot ({reason}){part}: {} object(s): {}",
                        s.revision,
                        o.objects.len(),
                        o.objects.iter().map(|o| o.id.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                    Next::Continue,
                ),
                None => (format!("revision {} snapshot ({reason}){part}: empty", s.revision), Next::Continue),
            }
        }
        Event::PrivilegesChanged(c) => {
            let mut parts: Vec<String> = c.gained.iter().map(|p| format!("+{p}")).collect();
            parts.extend(c.lost.iter().map(|p| format!("-{p}")));
            (format!("revision {} privileges: {}", c.revision, parts.join(", ")), Next::Continue)
        }
        Event::VisibleObjectsChanged(c) => {
            let mut parts: Vec<String> = c.gained.iter().map(|o| format!("+{}", o.id)).collect();
            parts.extend(c.lost.iter().map(|k| format!("-{}", object_key_text(k))));
            (format!("revision {} visible objects: {}", c.revision, parts.join(", ")), Next::Continue)
        }
        Event::RawChange(r) => {
            let mutations = mutations_json(&r.mutations);
            let actor = r.actor.as_deref().map(|a| format!(" by {a}")).unwrap_or_default();
            let text: Vec<String> = mutations.iter().map(|m| m.to_string()).collect();
            (
                format!(
                    "revision {} tenant {}{actor} at {}: {}",
                    r.revision,
                    r.tenant,
                    time_text(r.committed_at.as_ref()),
                    text.join("; ")
                ),
                Next::Continue,
            )
        }
        Event::Checkpoint(c) => {
            (format!("revision {} checkpoint at {}", c.revision, time_text(c.time.as_ref())), Next::Continue)
        }
        Event::Lock(l) => {
            let object = l.object.as_ref().map(object_key_text).unwrap_or_default();
            let kind = lock_kind_text(l.kind);
            (
                format!(
                    "revision {} lock {kind}: {object} in tenant {} by {} at {}",
                    l.revision,
                    l.tenant,
                    l.holder,
                    time_text(l.at.as_ref())
                ),
                Next::Continue,
            )
        }
        Event::RestrictedModeChanged(m) => (
            format!(
                "revision {} restricted mode {} in tenant {}",
                m.revision,
                if m.on { "on" } else { "off" },
                m.tenant
            ),
            Next::Continue,
        ),
        Event::RevisionTooOld(t) => (
            format!(
                "revision {} too old: revision {} is no longer in the changelog (oldest resumable: {}); reload with `export` and watch from its revision",
                t.revision, t.requested_revision, t.oldest_available_revision
            ),
            Next::End,
        ),
        Event::ResumeRequired(r) => (
            format!(
                "revision {} resume required: fell behind; resuming from revision {}",
                r.revision, r.resume_from_revision
            ),
            Next::Resume(r.resume_from_revision),
        ),
    }
}

/// `authzd watch privileges|visible|raw`: prints every event as a line
/// (JSON lines with `--json`) until Ctrl-C, `--max-events`, or the server
/// ends the stream. A raw stream the server ends with `ResumeRequired` is
/// resumed from the revision it names, so nothing is skipped.
pub(super) async fn watch(a: WatchArgs) -> Result<ExitCode, CliError> {
    let common = a.subscription.common().clone();
    let mut request = pb::WatchRequest {
        at_least_revision: common.at_least_revision,
        subscription: Some(match a.subscription {
            WatchSubscription::Privileges(p) => {
                pb::watch_request::Subscription::Privileges(pb::PrivilegesSubscription {
                    tenant: p.tenant,
                    person: p.person,
                    application: p.application,
                })
            }
            WatchSubscription::Visible(v) => {
                pb::watch_request::Subscription::VisibleObjects(pb::VisibleObjectsSubscription {
                    permission: permission_arg("permission", v.permission.as_deref())?,
                    tenant: v.tenant,
                    person: v.person,
                    r#type: v.kind,
                    folder: v.folder,
                    application: v.application,
                })
            }
            WatchSubscription::Raw(r) => pb::watch_request::Subscription::Raw(pb::RawSubscription {
                tenant: r.tenant,
                types: r.types,
                from_revision: r.from_revision.unwrap_or(0),
                from_now: r.from_revision.is_none(),
            }),
        }),
    };
    let conn = Conn::open(&common.client).await?;
    let raw = matches!(request.subscription, Some(pb::watch_request::Subscription::Raw(_)));
    let mut client = conn.watch(raw);
    let mut printed = 0u64;
    let run = async {
        loop {
            let mut stream = client.watch(request.clone()).await?.into_inner();
            loop {
                let Some(event) = stream.message().await? else {
                    if !common.client.json {
                        eprintln!("the server ended the stream");
                    }
                    return Ok(ExitCode::SUCCESS);
                };
                let Some(event) = event.event else { continue };
                if matches!(event, pb::watch_event::Event::Checkpoint(_)) && !common.checkpoints {
                    continue;
                }
                let json = common
                    .client
                    .json
                    .then(|| proto_json(&pb::WatchEvent { event: Some(event.clone()) }, "WatchEvent"));
                let (text, next) = watch_event(event);
                match json {
                    Some(v) => outln!("{v}"),
                    None => outln!("{text}"),
                }
                printed += 1;
                if common.max_events.is_some_and(|max| printed >= max) {
                    return Ok(ExitCode::SUCCESS);
                }
                match next {
                    Next::Continue => {}
                    Next::End => return Ok(ExitCode::FAILURE),
                    Next::Resume(from) => {
                        if let Some(pb::watch_request::Subscription::Raw(r)) = &mut request.subscription {
                            r.from_revision = from;
                            r.from_now = false;
                        }
                        request.at_least_revision = 0;
                        break;
                    }
                }
            }
        }
    };
    tokio::select! {
        r = run => r,
        _ = tokio::signal::ctrl_c() => Ok(ExitCode::SUCCESS),
    }
}
