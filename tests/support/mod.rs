//! What the test binaries and the replication benchmark share, through
//! `mod support;`: a fresh PostgreSQL database per test, dropped with its
//! connections when the test ends, and an in-process server ([`server`]).
//!
//! PostgreSQL defaults to `postgres://postgres@127.0.0.1:5432/test`; set
//! `AUTHZD_TEST_PG_URL` to use another server. When it cannot be reached the
//! tests FAIL with instructions (`scripts/test.sh` starts the local cluster
//! first); they never pass silently.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

pub mod server;

#[allow(unused_imports)] // not every includer starts a server
pub use server::{Serving, demo_config, serve, serve_on};
use sqlx::Connection;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// The server the tests use unless `AUTHZD_TEST_PG_URL` names another.
pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A database created for one test and dropped (with its connections) when the test ends.
pub struct PgDatabase {
    /// The server's URL the database was created through (`AUTHZD_TEST_PG_URL`).
    pub admin_url: String,
    /// The database's name.
    pub name: String,
    /// The URL of the database itself.
    pub url: String,
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime (or while unwinding): use a thread with its own.
        let result = std::thread::spawn(move || -> Result<(), String> {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            rt.block_on(async {
                let mut c = sqlx::PgConnection::connect(&admin_url).await.map_err(|e| e.to_string())?;
                sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut c)
                    .await
                    .map_err(|e| e.to_string())?;
                c.close().await.map_err(|e| e.to_string())
            })
        })
        .join();
        if !matches!(result, Ok(Ok(()))) {
            eprintln!("warning: could not drop test database `{}`: {result:?}", self.name);
        }
    }
}

/// The server the tests create their databases on.
pub fn pg_admin_url() -> String {
    std::env::var("AUTHZD_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned())
}

/// A database name no other test (of any binary, run or process) uses.
pub fn unique_db_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let h = std::collections::hash_map::RandomState::new().hash_one((std::process::id(), SystemTime::now(), n));
    format!("{prefix}_{h:016x}")
}

/// `url` pointing at database `name` instead (query string kept).
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[authority_start..].find('/') {
        Some(i) => &base[..authority_start + i],
        None => base,
    };
    format!("{host_part}/{name}{query}")
}

/// Fails the test, saying how to get a PostgreSQL for `suite`.
pub fn pg_unreachable(url: &str, why: &str, suite: &str) -> ! {
    panic!(
        "PostgreSQL is not reachable at `{url}`: {why}\n\
         {suite} need a real PostgreSQL (trust auth, database `test`); they are never skipped.\n\
         `scripts/test.sh` starts the machine's local cluster before running the tests. Or start one yourself:\n  \
         pg_ctlcluster --skip-systemctl-redirect <version> main start   (then: createdb -h 127.0.0.1 -U postgres test)\n  \
         docker run -d --name authzd-pg -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust -e POSTGRES_DB=test postgres:16\n\
         To use another server, set AUTHZD_TEST_PG_URL=postgres://user:password@host:port/database."
    )
}

/// Creates a fresh database named `<prefix>_<random>` for one test of
/// `suite` (named in the failure when PostgreSQL cannot be reached).
pub async fn fresh_database(prefix: &str, suite: &str) -> PgDatabase {
    let admin_url = pg_admin_url();
    let mut admin = match tokio::time::timeout(Duration::from_secs(10), sqlx::PgConnection::connect(&admin_url)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => pg_unreachable(&admin_url, &e.to_string(), suite),
        Err(_) => pg_unreachable(&admin_url, "connecting timed out after 10 s", suite),
    };
    let name = unique_db_name(prefix);
    sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("creating test database `{name}` on `{admin_url}`: {e}"));
    admin.close().await.unwrap();
    let url = with_database(&admin_url, &name);
    PgDatabase { admin_url, name, url }
}

/// A write of the YAML batch `yaml` (a list of mutations, as in tenant
/// files) to the demo tenant `acme`.
pub fn acme_write(yaml: &str) -> authzd::proto::authzd::v1::WriteRequest {
    authzd::proto::authzd::v1::WriteRequest {
        tenant: "acme".into(),
        mutations: authzd::model::yaml::from_str::<Vec<authzd::model::Mutation>>(yaml, "test batch")
            .unwrap()
            .into_iter()
            .map(authzd::service::convert::mutation_pb)
            .collect(),
        ..Default::default()
    }
}

/// Creates the generated tenant `params` describes as `tenant` (one admin write).
pub async fn load_synth(s: &Serving, tenant: &str, params: &authzd::synth::SynthParams) {
    let mutations = authzd::synth::mutations(params).into_iter().map(authzd::service::convert::mutation_pb).collect();
    let req = authzd::proto::authzd::v1::WriteRequest { tenant: tenant.into(), mutations, ..Default::default() };
    s.admin().await.write(req).await.unwrap();
}

/// A subscription to `person`'s effective privileges in `application` in the demo tenant `acme`.
pub fn acme_privileges_sub(person: &str, application: &str) -> authzd::proto::authzd::v1::WatchRequest {
    use authzd::proto::authzd::v1 as pb;
    pb::WatchRequest {
        subscription: Some(pb::watch_request::Subscription::Privileges(pb::PrivilegesSubscription {
            tenant: "acme".into(),
            person: person.into(),
            application: application.into(),
        })),
        at_least_revision: 0,
    }
}

/// seeds/001: the Web Callback privileges by the names the table's "Depends
/// on" notes and descriptions use (the demo's "Web Callback Agent" holds all).
pub const WEB_CALLBACK_PRIVILEGES: [&str; 9] = [
    "Web Callback - Can Cancel",
    "Web Callback - Can Use Web Callback Channel",
    "Web Callback - Can Decline",
    "Web Callback - Can Reject",
    "Web Callback - Can Reschedule",
    "Web Callback - Can Reschedule Before Call",
    "Web Callback - Can Reschedule On New Number",
    "Web Callback - Can Set Interaction Disposition",
    "Web Callback - Can Mark Done",
];

/// The demo tenant's "Web Callback Agent" role (held by `wcb-agent-full`
/// through the group `web-callback-agents`) without the privileges
/// `without`, as a one-mutation YAML batch.
pub fn web_callback_agent_role(without: &[&str]) -> String {
    let privileges: Vec<String> =
        WEB_CALLBACK_PRIVILEGES.iter().filter(|p| !without.contains(p)).map(|p| format!("'{p}'")).collect();
    format!(
        "- put_role: {{id: web-callback-agent, name: Web Callback Agent, privileges: {{WorkspaceWebCallback: [{}]}}, members: {{groups: [web-callback-agents]}}}}",
        privileges.join(", ")
    )
}
