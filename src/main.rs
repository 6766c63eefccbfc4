//! The `authzd` binary: parses the command line and hands it to [`authzd::app::run`].

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    authzd::app::run(authzd::cli::Cli::parse())
}
