//! The tenant data commands: `tenants`, `import`, `export`, `write`.

use super::client::Conn;
use super::render::{print_changes, print_json, print_proto, proto_json};
use super::{CliError, ClientArgs, read_file};
use crate::console::{out, outln};
use crate::model::Mutation;
use crate::proto::authzd::v1 as pb;
use crate::service::convert;
use clap::Args;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

/// Loading a tenant file.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    /// Connection and output.
    #[command(flatten)]
    pub client: ClientArgs,
    /// The tenant file.
    pub file: PathBuf,
    /// Replace the tenant if it exists.
    #[arg(long)]
    pub replace: bool,
    /// Validate and report who gains and loses what; store nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Report per-person changes of a real import too.
    #[arg(long)]
    pub include_changes: bool,
}

/// Exporting a tenant.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// Connection and output.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Tenant id.
    pub tenant: String,
    /// Write to this file instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// A batch of mutations.
#[derive(Debug, Clone, Args)]
pub struct WriteArgs {
    /// Connection and output.
    #[command(flatten)]
    pub client: ClientArgs,
    /// YAML list of mutations (`- put_person: {id: x, username: x}`).
    pub file: PathBuf,
    /// Tenant id.
    #[arg(long, env = "AUTHZD_TENANT")]
    pub tenant: String,
    /// Person on whose behalf the batch is written.
    #[arg(long)]
    pub actor: Option<String>,
    /// Refuse if the tenant changed after this revision.
    #[arg(long)]
    pub expected_revision: Option<u64>,
    /// Validate and report who gains and loses what; store nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Report per-person changes of a real write too.
    #[arg(long)]
    pub include_changes: bool,
}

pub(super) async fn tenants(c: ClientArgs) -> Result<ExitCode, CliError> {
    let conn = Conn::open(&c).await?;
    let r = conn.admin().list_tenants(pb::ListTenantsRequest { at_least_revision: 0 }).await?.into_inner();
    if c.json {
        print_proto(&r, "ListTenantsResponse");
    } else {
        for t in &r.tenants {
            outln!(
                "{}\t{}\t{}\tchanged at revision {}{}",
                t.id,
                t.name,
                t.applications.join(", "),
                t.changed_at_revision,
                if t.restricted_mode { "\trestricted mode" } else { "" }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn import(a: ImportArgs) -> Result<ExitCode, CliError> {
    let yaml = read_file(&a.file)?;
    let conn = Conn::open(&a.client).await?;
    let r = conn
        .admin()
        .import(pb::ImportRequest { yaml, replace: a.replace, dry_run: a.dry_run, include_changes: a.include_changes })
        .await?
        .into_inner();
    if a.client.json {
        print_proto(&r, "ImportResponse");
    } else {
        if a.dry_run {
            outln!("dry run: tenant `{}` would be imported (evaluated at revision {})", r.tenant, r.revision);
        } else {
            outln!("imported tenant `{}` at revision {}", r.tenant, r.revision);
        }
        if a.dry_run || a.include_changes {
            print_changes(&r.changes, r.changes_truncated);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn export(a: ExportArgs) -> Result<ExitCode, CliError> {
    let conn = Conn::open(&a.client).await?;
    let r = conn.admin().export(pb::ExportRequest { tenant: a.tenant, at_least_revision: 0 }).await?.into_inner();
    match &a.output {
        Some(path) => {
            std::fs::write(path, &r.yaml)
                .map_err(|source| CliError::Io { path: path.display().to_string(), source })?;
            if a.client.json {
                // The answer without the text written to the file, and where it went.
                let mut v =
                    proto_json(&pb::ExportResponse { yaml: String::new(), revision: r.revision }, "ExportResponse");
                if let Some(o) = v.as_object_mut() {
                    o.remove("yaml");
                    o.insert("file".into(), json!(path.display().to_string()));
                }
                print_json(&v);
            } else {
                eprintln!("wrote {} (revision {})", path.display(), r.revision);
            }
        }
        None if a.client.json => print_proto(&r, "ExportResponse"),
        None => out!("{}", r.yaml),
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn write(a: WriteArgs) -> Result<ExitCode, CliError> {
    let text = read_file(&a.file)?;
    let batch: Vec<Mutation> = crate::model::yaml::from_str(&text, &a.file.display().to_string())
        .map_err(|e| CliError::Input(e.to_string()))?;
    let conn = Conn::open(&a.client).await?;
    let r = conn
        .admin()
        .write(pb::WriteRequest {
            tenant: a.tenant.clone(),
            mutations: batch.into_iter().map(convert::mutation_pb).collect(),
            expected_revision: a.expected_revision,
            preconditions: Vec::new(),
            actor: a.actor,
            dry_run: a.dry_run,
            include_changes: a.include_changes,
        })
        .await?
        .into_inner();
    if a.client.json {
        print_proto(&r, "WriteResponse");
    } else {
        if a.dry_run {
            outln!("dry run on tenant `{}` at revision {}: nothing was stored", a.tenant, r.revision);
        } else {
            outln!("written to tenant `{}` at revision {}", a.tenant, r.revision);
        }
        if a.dry_run || a.include_changes {
            print_changes(&r.changes, r.changes_truncated);
        }
    }
    Ok(ExitCode::SUCCESS)
}
