//! The main job: the document-processing workflow of Agent Framework
//! issue #5745 (six executors with kilobytes of typed output each), run on
//! an embedded SQLite file. Prints the stream live, one line per event,
//! then a summary: run status, events and bytes streamed, the largest live
//! status seen, and the time.
//!
//! ```text
//! cargo run --release --example document_processing -- [--db URL] [--executors N] [--output-kb K]
//!     [--runs R] [--work-ms MS] [--json] [--external-workers]
//! ```
//!
//! The workflow and the program live in the `durable_workspace` library
//! (`src/document_processing/`), where the tests run them too.

use std::process::ExitCode;

use durable_workspace::cli::{exit_usage, print, Args, Command};
use durable_workspace::document_processing::{run, RunOptions, USAGE};

#[tokio::main]
async fn main() -> ExitCode {
    let options = match RunOptions::parse(Args::from_env()) {
        Ok(Command::Run(options)) => options,
        Ok(Command::Help) => {
            print(USAGE);
            return ExitCode::SUCCESS;
        }
        Err(error) => exit_usage("document_processing", &error),
    };
    match run(&options, std::io::stdout().lock()).await {
        Ok(summary) if summary.all_completed() => ExitCode::SUCCESS,
        Ok(summary) => {
            eprintln!(
                "error: {} of {} runs did not complete",
                summary.summary.failed, summary.summary.runs
            );
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
