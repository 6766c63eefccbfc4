//! The embedded follower (`--no-default-features --features follower`):
//! every tenant of an upstream authzd, kept current in this process, checked
//! with a function call. Start an upstream first (`authzd serve --demo`),
//! then:
//!
//! ```text
//! cargo run --no-default-features --features follower --example embedded_follower -- \
//!     http://127.0.0.1:50051 acme wcb-agent-full WorkspaceWebCallback "Web Callback - Can Reschedule"
//! ```
//!
//! It prints the answer and then every change of it as writes arrive
//! (checked whenever the follower's revision moves), until interrupted.

use authzd::engine::CheckRequest;
use authzd::follow::{Follower, FollowerError, UpstreamSettings};
use std::process::ExitCode;
use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, tenant, person, application, privilege] = args.as_slice() else {
        eprintln!("usage: embedded_follower UPSTREAM_URL TENANT PERSON APPLICATION PRIVILEGE");
        return ExitCode::from(2);
    };
    let mut settings = UpstreamSettings::new(url.clone());
    // The upstream's admin token, when it has one (Export and the raw Watch need it).
    settings.token = std::env::var("AUTHZD_UPSTREAM_TOKEN").ok();
    let follower = match Follower::start(settings) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = follower.ready(Duration::from_secs(30)).await {
        eprintln!("{e}");
        return ExitCode::from(1);
    }
    let request = CheckRequest {
        subject: person,
        application: Some(application),
        privilege: Some(privilege),
        ..Default::default()
    };
    let mut last = None;
    loop {
        let d = follower.check(tenant, &request);
        if last != Some(d.reason) {
            let verdict = if d.allowed() { "ALLOWED" } else { "DENIED" };
            println!("revision {}: {verdict} ({})", d.revision, d.reason.code());
            last = Some(d.reason);
        }
        // Wake when the next revision has arrived (an hour without one: ask again).
        match follower.wait_for(follower.revision() + 1, Duration::from_secs(3600)).await {
            Ok(()) | Err(FollowerError::NotYet { .. }) => {}
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(1);
            }
        }
    }
}
