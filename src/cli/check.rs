//! The decision commands: `check`, `explain`, `list`, `privileges`.

use super::client::Conn;
use super::render::{print_evidence, print_proto, source_text};
use super::{CliError, ClientArgs, permission_arg};
use crate::console::outln;
use crate::proto::authzd::v1 as pb;
use crate::service::convert;
use clap::Args;
use std::process::ExitCode;

/// A decision question.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Connection and output.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Tenant id.
    #[arg(long, env = "AUTHZD_TENANT")]
    pub tenant: String,
    /// Person id.
    #[arg(long)]
    pub person: String,
    /// Application context (catalog name, e.g. `Callback`).
    #[arg(long = "app")]
    pub application: Option<String>,
    /// Permission (`Read`, `Create`, `Change`, `Execute`, `Delete`, `ReadPermissions`, `ChangePermissions`).
    #[arg(long)]
    pub permission: Option<String>,
    /// Object as `<type>/<id>`, e.g. `Script/ges_Sales_VQ`.
    #[arg(long)]
    pub object: Option<String>,
    /// Privilege that must be effective (needs `--app`).
    #[arg(long)]
    pub privilege: Option<String>,
    /// Property touched (needs `--object`).
    #[arg(long)]
    pub property: Option<String>,
    /// Also print the evidence (always on for `explain`).
    #[arg(long)]
    pub explain: bool,
}

/// A listing.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Connection and output.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Tenant id.
    #[arg(long, env = "AUTHZD_TENANT")]
    pub tenant: String,
    /// Person id.
    #[arg(long)]
    pub person: String,
    /// Object type (`Script`, `Metric`, `Person`, ...).
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
    /// Objects per request.
    #[arg(long, default_value_t = 1_000)]
    pub page_size: u32,
}

/// A privileges question.
#[derive(Debug, Clone, Args)]
pub struct PrivilegesArgs {
    /// Connection and output.
    #[command(flatten)]
    pub client: ClientArgs,
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

pub(super) async fn check(a: CheckArgs, always_explain: bool) -> Result<ExitCode, CliError> {
    let object = match a.object.as_deref() {
        Some(spec) => {
            let (kind, id) = convert::parse_object_spec(spec)
                .ok_or_else(|| CliError::Input(format!("--object: `{spec}` is not `<type>/<id>`")))?;
            Some(pb::ObjectRef { r#type: kind.to_owned(), id: id.to_owned(), tenant: None })
        }
        None => None,
    };
    let explain = always_explain || a.explain;
    let req = pb::CheckRequest {
        tenant: a.tenant,
        person: a.person,
        application: a.application,
        permission: permission_arg("permission", a.permission.as_deref())?,
        object,
        privilege: a.privilege,
        property: a.property,
        explain,
        at_least_revision: 0,
    };
    let conn = Conn::open(&a.client).await?;
    let r = conn.decisions().check(req).await?.into_inner();
    let code = convert::reason_code(r.reason);
    if a.client.json {
        print_proto(&r, "CheckResponse");
    } else {
        outln!("{} ({code}, revision {})", if r.allowed { "ALLOWED" } else { "DENIED" }, r.revision);
        if let Some(e) = &r.evidence {
            print_evidence(e);
        }
    }
    Ok(if r.allowed { ExitCode::SUCCESS } else { ExitCode::from(3) })
}

pub(super) async fn list(a: ListArgs) -> Result<ExitCode, CliError> {
    let conn = Conn::open(&a.client).await?;
    let mut client = conn.decisions();
    let permission = permission_arg("permission", a.permission.as_deref())?;
    let mut token = String::new();
    let mut objects = Vec::new();
    let revision = loop {
        let page = client
            .list_visible(pb::ListVisibleRequest {
                tenant: a.tenant.clone(),
                person: a.person.clone(),
                r#type: a.kind.clone(),
                folder: a.folder.clone(),
                permission,
                application: a.application.clone(),
                page_size: a.page_size,
                page_token: token,
                at_least_revision: 0,
                view: pb::ListView::Full as i32,
            })
            .await?
            .into_inner();
        objects.extend(page.objects);
        if page.next_page_token.is_empty() {
            break page.revision;
        }
        token = page.next_page_token;
    };
    if a.client.json {
        // Every page in one answer, as if the page size were unlimited.
        print_proto(
            &pb::ListVisibleResponse { objects, next_page_token: String::new(), revision },
            "ListVisibleResponse",
        );
    } else {
        for o in &objects {
            outln!("{}\t{}\t{}", o.id, o.name, o.folder);
        }
        outln!("{} {} object(s) at revision {revision}", objects.len(), a.kind);
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn privileges(a: PrivilegesArgs) -> Result<ExitCode, CliError> {
    let conn = Conn::open(&a.client).await?;
    let r = conn
        .decisions()
        .effective_privileges(pb::EffectivePrivilegesRequest {
            tenant: a.tenant,
            person: a.person,
            application: a.application,
            at_least_revision: 0,
        })
        .await?
        .into_inner();
    if a.client.json {
        print_proto(&r, "EffectivePrivilegesResponse");
        return Ok(ExitCode::SUCCESS);
    }
    let e = r.effective.unwrap_or_default();
    {
        let legacy = match (&e.legacy_section, &e.legacy_role) {
            (Some(s), Some(r)) => format!(" ({s}.role = {r})"),
            _ => String::new(),
        };
        outln!("{} at revision {}: source {}{legacy}", e.application, r.revision, source_text(e.source));
        if let Some(p) = &e.primary_role {
            outln!("primary role: {p}");
        }
        if !e.roles.is_empty() {
            outln!("roles: {}", e.roles.join(", "));
        }
        if !e.unreadable_roles.is_empty() {
            outln!("roles not applied (not readable): {}", e.unreadable_roles.join(", "));
        }
        for p in &e.privileges {
            outln!("  {p}");
        }
        for p in &e.unmet {
            outln!("  {p} (granted, but a required privilege is missing)");
        }
    }
    Ok(ExitCode::SUCCESS)
}
