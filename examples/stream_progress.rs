//! An orchestration streams its progress while a client watches live: the
//! durable-core stream without the workflow layer.
//!
//! The `report` orchestration summarizes a document chunk by chunk, one
//! activity per chunk; after each it emits a `progress` event and a
//! `chunk_summarized` event with the activity's result. A client follows
//! the instance's stream with `watch_events` and prints each event as its
//! turn commits; custom status holds only the latest percentage.
//!
//! ```text
//! cargo run --release --example stream_progress -- [--db sqlite://stream_progress.db] [--chunks N] [--work-ms MS]
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use durable_core::prelude::*;
use durable_workspace::cli::{exit_usage, print, Args, CliError, Command};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;

const USAGE: &str = "\
usage: stream_progress [--db URL] [--chunks N] [--work-ms MS]

  --db URL      the database (default sqlite://stream_progress.db)
  --chunks N    chunks to summarize, 1 to 10000 (default 8)
  --work-ms MS  how long each chunk's activity works, 0 to 10000 (default 150)";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Job {
    chunks: u32,
    work_ms: u32,
}

/// What a `progress` event says, as the watcher reads it.
#[derive(Debug, Deserialize)]
struct Progress {
    percent: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Summary {
    chunk: u32,
    words: u32,
    headline: String,
}

async fn report(ctx: OrchestrationContext, job: Job) -> Result<u32, OrchestrationError> {
    ctx.emit_event("started", &json!({ "chunks": job.chunks }))?;
    let mut words = 0;
    for chunk in 0..job.chunks {
        let summary: Summary = ctx.call_activity("summarize", &(chunk, job.work_ms)).await?;
        words += summary.words;
        let percent = (chunk + 1) * 100 / job.chunks;
        ctx.emit_event("chunk_summarized", &summary)?;
        ctx.emit_event(
            "progress",
            &json!({ "done": chunk + 1, "total": job.chunks, "percent": percent }),
        )?;
        ctx.set_custom_status(&json!({ "percent": percent }))?;
    }
    ctx.emit_event("finished", &json!({ "words": words }))?;
    Ok(words)
}

async fn summarize(
    _ctx: ActivityContext,
    (chunk, work_ms): (u32, u32),
) -> Result<Summary, std::convert::Infallible> {
    tokio::time::sleep(Duration::from_millis(u64::from(work_ms))).await;
    Ok(Summary {
        chunk,
        words: 180 + chunk * 7 % 90,
        headline: format!("chunk {chunk}: revenue up, costs flat"),
    })
}

fn parse(mut args: Args) -> Result<Command<(String, Job)>, CliError> {
    let mut db = "sqlite://stream_progress.db".to_owned();
    let mut job = Job {
        chunks: 8,
        work_ms: 150,
    };
    while let Some(flag) = args.next_flag() {
        match flag.as_str() {
            "--db" => db = args.value("--db", "a database URL")?,
            "--chunks" => job.chunks = args.number("--chunks", 1..=10_000)?,
            "--work-ms" => job.work_ms = args.number("--work-ms", 0..=10_000)?,
            "-h" | "--help" => return Ok(Command::Help),
            other => return Err(CliError::unknown(other)),
        }
    }
    Ok(Command::Run((db, job)))
}

#[tokio::main]
async fn main() -> ExitCode {
    let (db, job) = match parse(Args::from_env()) {
        Ok(Command::Run(options)) => options,
        Ok(Command::Help) => {
            print(USAGE);
            return ExitCode::SUCCESS;
        }
        Err(error) => exit_usage("stream_progress", &error),
    };
    match run(&db, job).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(db: &str, job: Job) -> Result<(), Box<dyn std::error::Error>> {
    let store = durable_workspace::open_store(db).await?;
    let registry = Registry::new()
        .orchestration("report", report)
        .activity("summarize", summarize);
    let worker = Worker::start(store.clone(), registry)?;
    let client = Client::new(store);
    let started = Instant::now();
    let id = client.start("report", &job).await?;
    println!(
        "started report {id} on {db}: {} chunks, watching its stream live",
        job.chunks
    );

    let mut events = client.watch_events(&id, 0);
    let mut count = 0;
    while let Some(event) = events.next().await {
        let event = event?;
        count += 1;
        let at = started.elapsed().as_secs_f64();
        match event.name.as_str() {
            "progress" => {
                let percent = event.payload_as::<Progress>()?.percent;
                let bar = "#".repeat(usize::try_from(percent / 5).unwrap_or(0));
                println!(
                    "[{at:>6.2}s] #{:<3} progress  [{bar:<20}] {percent:>3}%",
                    event.seq
                );
            }
            _ => println!("[{at:>6.2}s] #{:<3} {} {}", event.seq, event.name, event.payload),
        }
    }
    let done = client.wait_for_completion(&id, Duration::from_secs(60)).await?;
    println!(
        "{} with {} words; {count} events streamed; custom status {}",
        done.status,
        done.output.unwrap_or_default(),
        done.custom_status.unwrap_or_default()
    );
    worker.shutdown().await?;
    Ok(())
}
