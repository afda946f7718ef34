//! Follows an existing instance's stream live: the events after
//! `--after N`, then new ones as they commit, until the instance has
//! finished. Works for any instance; document-processing runs show their
//! progress as `superstep k/n`.
//!
//! ```text
//! cargo run --example watch -- --db sqlite://document_processing.db --instance ID [--after N] [--json]
//! ```

use std::process::ExitCode;

use durable_workspace::cli::{exit_usage, print, Args, Command};
use durable_workspace::watch::{run, WatchOptions, USAGE};

#[tokio::main]
async fn main() -> ExitCode {
    let options = match WatchOptions::parse(Args::from_env()) {
        Ok(Command::Run(options)) => options,
        Ok(Command::Help) => {
            print(USAGE);
            return ExitCode::SUCCESS;
        }
        Err(error) => exit_usage("watch", &error),
    };
    match run(&options, std::io::stdout().lock()).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
