//! Human in the loop: a workflow extracts a result and asks a person to
//! approve it. This program prints the pending request and reads the
//! answer from standard input (or takes `--approve` / `--reject`); a
//! second terminal can answer instead with the `answer` command it prints,
//! which calls `WorkflowClient::respond_on` on the same database.
//!
//! ```text
//! cargo run --example human_approval -- [--db URL] [--approve | --reject] [--comment TEXT]
//! cargo run --example human_approval -- answer --db URL --instance ID (--approve | --reject)
//! ```

use std::process::ExitCode;

use durable_workspace::approval::{answer, run, ApprovalCommand, USAGE};
use durable_workspace::cli::{exit_usage, print, Args, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let command = match ApprovalCommand::parse(Args::from_env()) {
        Ok(Command::Run(command)) => command,
        Ok(Command::Help) => {
            print(USAGE);
            return ExitCode::SUCCESS;
        }
        Err(error) => exit_usage("human_approval", &error),
    };
    let result = match command {
        ApprovalCommand::Run(options) => {
            let stdin = Box::new(std::io::BufReader::new(std::io::stdin()));
            run(&options, stdin, std::io::stdout().lock())
                .await
                .map(|report| report.outcome.is_some())
        }
        ApprovalCommand::Answer(options) => answer(&options).await.map(|request_id| {
            print(&format!(
                "answered request {request_id} of instance {}: {}",
                options.instance_id,
                if options.approve { "approved" } else { "rejected" }
            ));
            true
        }),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
