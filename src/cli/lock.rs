//! `authzd lock acquire|renew|release`: Designer edit locks.

use super::client::Conn;
use super::render::{print_proto, time_text};
use super::{CliError, ClientArgs};
use crate::console::outln;
use crate::proto::authzd::v1 as pb;
use crate::service::convert;
use clap::{Args, Subcommand};
use std::process::ExitCode;

/// `authzd lock`.
#[derive(Debug, Clone, Args)]
pub struct LockArgs {
    /// What to do with the lock.
    #[command(subcommand)]
    pub action: LockAction,
}

/// The edit-lock operations.
#[derive(Debug, Clone, Subcommand)]
pub enum LockAction {
    /// Take the lock on an object for a person (or renew one's own); when
    /// another person holds it, print who and since when, exit code 3.
    Acquire(LockAcquireArgs),
    /// Extend a held lock's idle timeout from now.
    Renew(LockTokenArgs),
    /// Give a lock up.
    Release(LockTokenArgs),
}

/// Acquiring a lock.
#[derive(Debug, Clone, Args)]
pub struct LockAcquireArgs {
    /// Connection and output.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Tenant id.
    #[arg(long, env = "AUTHZD_TENANT")]
    pub tenant: String,
    /// Person id of the editor.
    #[arg(long)]
    pub person: String,
    /// The Application, SharedModule or DataTable as `<type>/<id>`.
    #[arg(long)]
    pub object: String,
    /// Idle timeout in seconds (default: the server's).
    #[arg(long)]
    pub idle_timeout_secs: Option<u64>,
    /// Application context whose type guards apply (normally `Designer`).
    #[arg(long = "app")]
    pub application: Option<String>,
}

/// Renewing or releasing a lock.
#[derive(Debug, Clone, Args)]
pub struct LockTokenArgs {
    /// Connection and output.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Tenant id.
    #[arg(long, env = "AUTHZD_TENANT")]
    pub tenant: String,
    /// The token `lock acquire` printed.
    #[arg(long)]
    pub lock_token: String,
    /// New idle timeout in seconds (`renew` only; default: the one given at acquire).
    #[arg(long)]
    pub idle_timeout_secs: Option<u64>,
}

fn duration_pb(flag: &str, secs: Option<u64>) -> Result<Option<prost_types::Duration>, CliError> {
    match secs {
        None => Ok(None),
        Some(0) => Err(CliError::Input(format!("--{flag}: must be at least 1"))),
        Some(s) => i64::try_from(s)
            .map(|seconds| Some(prost_types::Duration { seconds, nanos: 0 }))
            .map_err(|_| CliError::Input(format!("--{flag}: too large"))),
    }
}

/// `authzd lock acquire|renew|release`.
pub(super) async fn lock(a: LockArgs) -> Result<ExitCode, CliError> {
    match a.action {
        LockAction::Acquire(a) => {
            let (kind, id) = convert::parse_object_spec(&a.object)
                .ok_or_else(|| CliError::Input(format!("--object: `{}` is not `<type>/<id>`", a.object)))?;
            let req = pb::AcquireLockRequest {
                tenant: a.tenant.clone(),
                person: a.person.clone(),
                object: Some(pb::ObjectKey { r#type: kind.to_owned(), id: id.to_owned() }),
                idle_timeout: duration_pb("idle-timeout-secs", a.idle_timeout_secs)?,
                application: a.application.clone(),
            };
            let conn = Conn::open(&a.client).await?;
            let r = conn.admin().acquire_lock(req).await?.into_inner();
            let (since, expires) = (time_text(r.since.as_ref()), time_text(r.expires_at.as_ref()));
            if a.client.json {
                print_proto(&r, "AcquireLockResponse");
            } else if r.granted {
                outln!(
                    "granted: {} holds {} since {since}, until {expires} unless renewed (revision {})",
                    r.holder,
                    a.object,
                    r.revision
                );
                outln!("lock token: {}", r.lock_token);
            } else {
                outln!(
                    "refused: {} is held by {} since {since} (expires at {expires} unless renewed)",
                    a.object,
                    r.holder
                );
            }
            Ok(if r.granted { ExitCode::SUCCESS } else { ExitCode::from(3) })
        }
        LockAction::Renew(a) => {
            let req = pb::RenewLockRequest {
                tenant: a.tenant.clone(),
                lock_token: a.lock_token.clone(),
                idle_timeout: duration_pb("idle-timeout-secs", a.idle_timeout_secs)?,
            };
            let conn = Conn::open(&a.client).await?;
            let r = conn.admin().renew_lock(req).await?.into_inner();
            let expires = time_text(r.expires_at.as_ref());
            if a.client.json {
                print_proto(&r, "RenewLockResponse");
            } else {
                outln!("renewed: the lock expires at {expires} unless renewed");
            }
            Ok(ExitCode::SUCCESS)
        }
        LockAction::Release(a) => {
            if a.idle_timeout_secs.is_some() {
                return Err(CliError::Input(
                    "--idle-timeout-secs: only `lock acquire` and `lock renew` take it".into(),
                ));
            }
            let conn = Conn::open(&a.client).await?;
            let r = conn
                .admin()
                .release_lock(pb::ReleaseLockRequest { tenant: a.tenant.clone(), lock_token: a.lock_token.clone() })
                .await?
                .into_inner();
            if a.client.json {
                print_proto(&r, "ReleaseLockResponse");
            } else {
                outln!("released (revision {})", r.revision);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
