//! The `flaggit-loadtester` binary: parses the command line (Flagger's single-dash flags
//! too) and hands over to `flaggit::loadtester`.

use std::process::ExitCode;

use clap::Parser;
use flaggit::loadtester::{Config, go_style_args, run};

fn main() -> ExitCode {
    let config = Config::parse_from(go_style_args(std::env::args()));
    flaggit::telemetry::init_tracing(config.log_format, &config.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, category = e.category(), "flaggit-loadtester stopped");
            ExitCode::FAILURE
        }
    }
}
