//! The closed loop: `--concurrency` tasks, each sending its next request as
//! soon as the previous one is answered, for `--warmup` (not measured) plus
//! `--duration`. Latencies go to one HDR histogram per task, merged at the
//! end; every answer is checked against its expected one.

use super::pools::{IdHash, ListExpect, Pools};
use super::tally::WorkloadResult;
use super::tally::{Live, Sample, Tally, progress};
use super::{BenchArgs, MAX_MESSAGE_BYTES, Workload};
use crate::proto::authzd::v1::decision_service_client::DecisionServiceClient;
use crate::proto::authzd::v1::read_service_client::ReadServiceClient;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;

struct Clients {
    decisions: DecisionServiceClient<Channel>,
    reads: ReadServiceClient<Channel>,
    health: HealthClient<Channel>,
}

/// Compares the persons of every page of a reverse lookup with the expected ones.
fn persons_sample(got: &IdHash, want: &ListExpect, what: String) -> Sample {
    let got = got.finish();
    if got == *want {
        Sample::Ok(got.count as u64)
    } else {
        Sample::Mismatch(
            got.count as u64,
            format!("{what}: listed {} persons, want {} (or others)", got.count, want.count),
        )
    }
}

fn status_text(s: &tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

async fn call(w: Workload, c: &mut Clients, p: &Pools, seq: usize) -> Sample {
    match w {
        Workload::Health => {
            match c.health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await {
                Ok(r)
                    if r.get_ref().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 =>
                {
                    Sample::Ok(0)
                }
                Ok(r) => Sample::Error(format!("health status {}", r.get_ref().status)),
                Err(s) => Sample::Error(status_text(&s)),
            }
        }
        Workload::CheckPrivilege | Workload::CheckObject => {
            let pool = if w == Workload::CheckPrivilege { &p.privilege } else { &p.object };
            let (req, want) = &pool[seq % pool.len()];
            match c.decisions.check(req.clone()).await {
                Ok(r) => {
                    let r = r.get_ref();
                    if want.matches(r.allowed, r.reason) {
                        Sample::Ok(1)
                    } else {
                        Sample::Mismatch(
                            1,
                            format!(
                                "person `{}` privilege {:?} object {:?}: got {} {}, want {} {}",
                                req.person,
                                req.privilege,
                                req.object.as_ref().map(|o| format!("{}/{}", o.r#type, o.id)),
                                r.allowed,
                                crate::service::convert::reason_code(r.reason),
                                want.allowed,
                                crate::service::convert::reason_code(want.reason)
                            ),
                        )
                    }
                }
                Err(s) => Sample::Error(status_text(&s)),
            }
        }
        Workload::CheckBatch => {
            let (req, want) = &p.batch[seq % p.batch.len()];
            match c.decisions.check_batch(req.clone()).await {
                Ok(r) => {
                    let r = r.get_ref();
                    let n = want.len() as u64;
                    if r.results.len() != want.len() {
                        return Sample::Mismatch(n, format!("{} results for {} items", r.results.len(), want.len()));
                    }
                    match r.results.iter().zip(want).position(|(got, w)| !w.matches(got.allowed, got.reason)) {
                        None => Sample::Ok(n),
                        Some(i) => Sample::Mismatch(
                            n,
                            format!(
                                "person `{}` item {i}: got {} {}, want {} {}",
                                req.person,
                                r.results[i].allowed,
                                crate::service::convert::reason_code(r.results[i].reason),
                                want[i].allowed,
                                crate::service::convert::reason_code(want[i].reason)
                            ),
                        ),
                    }
                }
                Err(s) => Sample::Error(status_text(&s)),
            }
        }
        Workload::ListVisible => {
            let (first, want) = &p.list[seq % p.list.len()];
            let mut req = first.clone();
            let mut h = IdHash::default();
            loop {
                match c.decisions.list_visible(req.clone()).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        for o in &r.objects {
                            h.add(&o.id);
                        }
                        if r.next_page_token.is_empty() {
                            break;
                        }
                        req.page_token = r.next_page_token;
                    }
                    Err(s) => return Sample::Error(status_text(&s)),
                }
            }
            let got = h.finish();
            if got == *want {
                Sample::Ok(got.count as u64)
            } else {
                Sample::Mismatch(
                    got.count as u64,
                    format!(
                        "person `{}`: listed {} objects, want {} (or different ids)",
                        first.person, got.count, want.count
                    ),
                )
            }
        }
        Workload::ListSubjects => {
            let (first, want) = &p.subjects[seq % p.subjects.len()];
            let mut req = first.clone();
            let mut h = IdHash::default();
            loop {
                match c.reads.list_subjects(req.clone()).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        r.subjects.iter().for_each(|s| h.add(&s.person));
                        if r.next_page_token.is_empty() {
                            break;
                        }
                        req.page_token = r.next_page_token;
                    }
                    Err(s) => return Sample::Error(status_text(&s)),
                }
            }
            persons_sample(&h, want, format!("subjects of {:?}", first.object.as_ref().map(|o| &o.id)))
        }
        Workload::ListHolders => {
            let (first, want) = &p.holders[seq % p.holders.len()];
            let mut req = first.clone();
            let mut h = IdHash::default();
            loop {
                match c.reads.list_holders(req.clone()).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        r.holders.iter().for_each(|x| h.add(&x.person));
                        if r.next_page_token.is_empty() {
                            break;
                        }
                        req.page_token = r.next_page_token;
                    }
                    Err(s) => return Sample::Error(status_text(&s)),
                }
            }
            persons_sample(&h, want, format!("holders of {}/{}", first.application, first.privilege))
        }
        Workload::Watch | Workload::WatchSse | Workload::WatchStorm => {
            Sample::Error("the watch workloads are not a closed loop".into())
        }
        Workload::CheckHttp => Sample::Error("check-http runs in loadgen::httpjson".into()),
        Workload::Soak => Sample::Error("the soak is not one closed loop".into()),
    }
}

/// Runs one closed-loop workload.
pub async fn run(a: &BenchArgs, w: Workload, channels: &[Channel], pools: &Arc<Pools>) -> WorkloadResult {
    let name = w.name();
    let empty = match w {
        Workload::CheckPrivilege if pools.privilege.is_empty() => true,
        Workload::CheckObject if pools.object.is_empty() => true,
        Workload::CheckBatch if pools.batch.is_empty() => true,
        Workload::ListVisible if pools.list.is_empty() => true,
        Workload::ListSubjects if pools.subjects.is_empty() => true,
        Workload::ListHolders if pools.holders.is_empty() => true,
        _ => false,
    };
    if empty {
        let why = pools.empty.get(name).cloned().unwrap_or_else(|| "nothing to ask".into());
        let mut t = Tally::new();
        t.errors = 1;
        t.note(format!("error: no requests: {why}"));
        return WorkloadResult::from_tally(name, t, Duration::ZERO);
    }
    let start = Instant::now();
    let warm_end = start + a.warmup();
    let end = warm_end + a.duration();
    let live = Arc::new(Live::default());
    let seq = Arc::new(AtomicU64::new(0));
    let ticker = progress(name, Arc::clone(&live), start, end, a.quiet);
    let mut tasks = Vec::with_capacity(a.concurrency);
    for i in 0..a.concurrency {
        let channel = channels[i % channels.len()].clone();
        let (pools, live, seq) = (Arc::clone(pools), Arc::clone(&live), Arc::clone(&seq));
        tasks.push(tokio::spawn(async move {
            let mut c = Clients {
                decisions: DecisionServiceClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES),
                reads: ReadServiceClient::new(channel.clone()).max_decoding_message_size(MAX_MESSAGE_BYTES),
                health: HealthClient::new(channel),
            };
            let mut t = Tally::new();
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let n = usize::try_from(seq.fetch_add(1, Ordering::Relaxed)).unwrap_or(0);
                let s = call(w, &mut c, &pools, n).await;
                let t1 = Instant::now();
                t.record(s, t1 - t0, t0 >= warm_end && t1 <= end, &live);
            }
            t
        }));
    }
    let mut total = Tally::new();
    for task in tasks {
        match task.await {
            Ok(t) => total.merge(t),
            Err(e) => {
                total.errors += 1;
                total.note(format!("error: a load task failed: {e}"));
            }
        }
    }
    ticker.abort();
    let mut r = WorkloadResult::from_tally(name, total, a.duration());
    if w == Workload::ListVisible {
        r.extra = serde_json::json!({ "mean_objects": pools.mean_listed(), "page_size": a.page_size });
    }
    if w == Workload::ListSubjects {
        r.extra = serde_json::json!({ "mean_persons": Pools::mean_persons(&pools.subjects) });
    }
    if w == Workload::ListHolders {
        r.extra = serde_json::json!({ "mean_persons": Pools::mean_persons(&pools.holders) });
    }
    r
}
