//! The command line: `authzd serve` and the client commands of the same binary.
//!
//! Client commands talk to a running server (`--server`, default
//! `http://127.0.0.1:50051`; `https://` with `--ca`, and `--cert`/`--key` for
//! mTLS; `unix:///path` or `unix:/path` for the server's Unix socket; admin commands and `watch raw` send `--token` as `authorization:
//! Bearer <token>`, decision commands and the other watches
//! `--decision-token`, else `--token`; `watch raw` without `--token` sends
//! `--decision-token`), print
//! human-readable answers, or JSON with `--json`. `validate` works offline.
//! Exit codes: 0 success (for `check`: allowed), 3 `check` denied or `lock
//! acquire` refused, 1 any error, 2 usage, 141 standard output closed
//! (`| head`: the command ends quietly, see [`output`]).

use crate::console::rpc_message;
use crate::proto::authzd::v1 as pb;
use crate::service::convert;
use admin::{export, import, tenants, write};
use check::{check, list, privileges};
use clap::{Parser, Subcommand};
use client::{connection_failed, tls_problem};
use lock::lock;
use render::print_json;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;
use watch::watch;

mod admin;
mod check;
mod client;
mod lock;
mod offline;
mod render;
mod watch;

pub use crate::config::{ServeArgs, ServeFlags};
// The client commands' output and error live below `cli` and `loadgen`, which share them.
pub use crate::console::{CliError, output, unix_socket_path};
pub use admin::{ExportArgs, ImportArgs, WriteArgs};
pub use check::{CheckArgs, ListArgs, PrivilegesArgs};
pub use client::{BearerToken, ClientArgs};
pub use lock::{LockAcquireArgs, LockAction, LockArgs, LockTokenArgs};
pub use offline::{TestArgs, ValidateArgs, test, validate};
pub use watch::{WatchArgs, WatchCommon, WatchPrivilegesArgs, WatchRawArgs, WatchSubscription, WatchVisibleArgs};

/// `authzd`: an authorization sidecar for contact-center software.
#[derive(Debug, Parser)]
#[command(name = "authzd", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (gRPC, gRPC-Web, HTTP/JSON, health, reflection).
    Serve(Box<ServeArgs>),
    /// May a person do something? Exit code 0 when allowed, 3 when denied.
    Check(CheckArgs),
    /// The same question as `check`, with the evidence that decided it.
    Explain(CheckArgs),
    /// The objects of a type a person may access (every page).
    List(ListArgs),
    /// A person's effective privileges in an application.
    Privileges(PrivilegesArgs),
    /// The tenants the server knows.
    Tenants(ClientArgs),
    /// Load a tenant file (YAML) into the server.
    Import(ImportArgs),
    /// Print a tenant's configuration as a tenant file (YAML).
    Export(ExportArgs),
    /// Check a tenant file offline: parse and validate, print errors with their field path.
    Validate(ValidateArgs),
    /// Run assertion files offline on the engine: checks, listings, privileges, who may, who holds.
    Test(TestArgs),
    /// Apply a YAML list of mutations to a tenant as one atomic batch.
    Write(WriteArgs),
    /// Load-test a running server, verifying every answer (see README "Load tests").
    Bench(Box<crate::loadgen::BenchArgs>),
    /// Acquire, renew or release a Designer edit lock (SPEC §4.4).
    Lock(LockArgs),
    /// Follow a change stream and print each event as a line, until Ctrl-C.
    Watch(WatchArgs),
}

fn read_file(path: &PathBuf) -> Result<String, CliError> {
    std::fs::read_to_string(path).map_err(|source| CliError::Io { path: path.display().to_string(), source })
}

fn permission_arg(flag: &str, p: Option<&str>) -> Result<i32, CliError> {
    match p {
        None => Ok(pb::Permission::Unspecified as i32),
        Some(s) => convert::parse_permission(s).map(|p| convert::permission_pb(p) as i32).ok_or_else(|| {
            CliError::Input(format!(
                "--{flag}: unknown permission `{s}` (expected Read, Create, Change, Execute, Delete, ReadPermissions or ChangePermissions)"
            ))
        }),
    }
}

/// The connection settings of a client command.
fn client_args(command: &Command) -> Option<&ClientArgs> {
    Some(match command {
        Command::Check(a) | Command::Explain(a) => &a.client,
        Command::List(a) => &a.client,
        Command::Privileges(a) => &a.client,
        Command::Tenants(a) => a,
        Command::Import(a) => &a.client,
        Command::Export(a) => &a.client,
        Command::Write(a) => &a.client,
        Command::Lock(a) => match &a.action {
            LockAction::Acquire(a) => &a.client,
            LockAction::Renew(a) | LockAction::Release(a) => &a.client,
        },
        Command::Watch(a) => &a.subscription.common().client,
        Command::Validate(_) | Command::Test(_) | Command::Bench(_) | Command::Serve(_) => return None,
    })
}

/// Runs a client command (everything but `serve` and `validate`).
pub async fn run_client(command: Command) -> ExitCode {
    let json = match &command {
        Command::Validate(a) => a.json,
        Command::Test(a) => a.json,
        Command::Bench(a) => a.json,
        other => client_args(other).is_some_and(|c| c.json),
    };
    let client = client_args(&command).cloned();
    let client = client.as_ref();
    let result = match command {
        Command::Check(a) => check(a, false).await,
        Command::Explain(a) => check(a, true).await,
        Command::List(a) => list(a).await,
        Command::Privileges(a) => privileges(a).await,
        Command::Tenants(a) => tenants(a).await,
        Command::Import(a) => import(a).await,
        Command::Export(a) => export(a).await,
        Command::Write(a) => write(a).await,
        Command::Validate(a) => Ok(validate(&a)),
        Command::Test(a) => Ok(test(&a)),
        Command::Bench(a) => crate::loadgen::run(*a).await,
        Command::Lock(a) => lock(a).await,
        Command::Watch(a) => watch(a).await,
        Command::Serve(_) => Err(CliError::Input("`serve` is not a client command".into())),
    };
    let result = match result {
        Err(CliError::Rpc(s)) if client.is_some_and(|c| c.ca.is_some()) && connection_failed(&s) => {
            match client.map(tls_problem) {
                Some(problem) => match problem.await {
                    Some(words) => Err(CliError::Connect {
                        server: client.map(|c| c.server.clone()).unwrap_or_default(),
                        message: format!("{words}; {}", rpc_message(&s)),
                    }),
                    None => Err(CliError::Rpc(s)),
                },
                None => Err(CliError::Rpc(s)),
            }
        }
        other => other,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if json {
                let code = match &e {
                    CliError::Rpc(s) => format!("{:?}", s.code()),
                    _ => "ERROR".into(),
                };
                print_json(&json!({"error": e.to_string(), "code": code}));
            } else {
                eprintln!("error: {e}");
            }
            ExitCode::FAILURE
        }
    }
}
