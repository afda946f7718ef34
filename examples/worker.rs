//! A worker process for the example workflows (document processing and
//! human approval): it runs their orchestration turns and executors against
//! a database until it is stopped. Start as many as you like, on as many
//! machines as share the database; Ctrl-C stops one gracefully (it finishes
//! or hands back its work at once).
//!
//! ```text
//! cargo run --release --example worker -- --db postgres://postgres@127.0.0.1:5432/test \
//!     [--concurrency 64] [--lease-ms 30000]
//! ```
//!
//! Runs are started and watched elsewhere, for example with
//! `cargo run --release --example document_processing -- --db URL --external-workers`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use durable_core::{Worker, WorkerOptions};
use durable_workspace::cli::{exit_usage, print, Args, CliError, Command};

const USAGE: &str = "\
usage: worker [--db URL] [--concurrency N] [--lease-ms MS]

  --db URL           the database: postgres://USER@HOST/DB, or a SQLite file
                     (sqlite://PATH; default sqlite://document_processing.db)
  --concurrency N    activities (executors) run at once, 1 to 10000 (default 64)
  --lease-ms MS      how long claimed work stays reserved without renewal,
                     100 to 600000 (default 30000); another worker takes a
                     dead worker's work over after this long

Ctrl-C stops the worker gracefully.";

struct Options {
    db: String,
    concurrency: u32,
    lease_ms: u32,
}

fn parse(mut args: Args) -> Result<Command<Options>, CliError> {
    let mut options = Options {
        db: "sqlite://document_processing.db".into(),
        concurrency: 64,
        lease_ms: 30_000,
    };
    while let Some(flag) = args.next_flag() {
        match flag.as_str() {
            "--db" => options.db = args.value("--db", "a database URL")?,
            "--concurrency" => options.concurrency = args.number("--concurrency", 1..=10_000)?,
            "--lease-ms" => options.lease_ms = args.number("--lease-ms", 100..=600_000)?,
            "-h" | "--help" => return Ok(Command::Help),
            other => return Err(CliError::unknown(other)),
        }
    }
    Ok(Command::Run(options))
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match parse(Args::from_env()) {
        Ok(Command::Run(options)) => options,
        Ok(Command::Help) => {
            print(USAGE);
            return ExitCode::SUCCESS;
        }
        Err(error) => exit_usage("worker", &error),
    };
    let store = match durable_workspace::open_store(&options.db).await {
        Ok(store) => store,
        Err(error) => {
            eprintln!("error: cannot open {}: {error}", options.db);
            return ExitCode::FAILURE;
        }
    };
    let worker_options = WorkerOptions::new()
        .activity_concurrency(options.concurrency as usize)
        .lease(Duration::from_millis(u64::from(options.lease_ms)));
    let registry = durable_workspace::register(durable_core::Registry::new());
    let worker = match Worker::start_with(store, registry, worker_options) {
        Ok(worker) => worker,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "worker {} running document-processing and human-approval on {} (Ctrl-C stops)",
        worker.id(),
        options.db
    );
    let started = Instant::now();
    if let Err(error) = tokio::signal::ctrl_c().await {
        eprintln!("error: cannot wait for Ctrl-C: {error}");
    }
    println!("stopping: finishing running executors and handing back the rest ...");
    match worker.shutdown().await {
        Ok(()) => {
            println!("stopped after {:.1} s", started.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: the worker stopped, but its leases could not be released: {error}");
            ExitCode::FAILURE
        }
    }
}
