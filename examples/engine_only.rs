//! The decision core alone (`default-features = false`): a tenant file,
//! compiled, asked in process. No server, no network, no tokio.
//!
//! ```text
//! cargo run --no-default-features --example engine_only -- examples/acme.yaml wcb-agent-full WorkspaceWebCallback "Web Callback - Can Reschedule"
//! ```

use authzd::engine::{CheckRequest, TenantView};
use authzd::model::TenantFile;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [file, person, application, privilege] = args.as_slice() else {
        eprintln!("usage: engine_only TENANT.yaml PERSON APPLICATION PRIVILEGE");
        return ExitCode::from(2);
    };
    let config = match std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read `{file}`: {e}"))
        .and_then(|text| TenantFile::from_yaml(&text).and_then(|f| f.to_config()).map_err(|e| format!("`{file}`: {e}")))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let view = TenantView::build(&config, 1);
    let request = CheckRequest {
        subject: person,
        application: Some(application),
        privilege: Some(privilege),
        ..Default::default()
    };
    let decision = view.check(&request);
    println!("{} ({})", if decision.allowed() { "ALLOWED" } else { "DENIED" }, decision.reason.code());
    ExitCode::SUCCESS
}
