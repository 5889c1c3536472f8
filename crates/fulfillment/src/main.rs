//! `fulfillment`: one binary, several roles (contract section 2).
//!
//! The whole story: parse and validate the settings (`cli`, `config`), set
//! up logging (`telemetry`), then run the command (`commands`; the
//! long-running roles are built by `startup` and run until a signal stops
//! them). Any error ends the process with one line naming the setting or
//! the step that failed.

use std::process::ExitCode;

use fulfillment::cli::Cli;
use fulfillment::{commands, telemetry};

fn main() -> ExitCode {
    let cli = match Cli::parse_or_exit_code() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
