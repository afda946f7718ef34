//! The document-processing program: start runs, print their streams live,
//! sample their live status, and sum it all up.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_workflows::{WorkflowClient, WorkflowClientError};
use durable_core::store::Store;
use durable_core::{Client, InstanceId, Registry, RuntimeStatus, StreamEvent, Worker};
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc;

use super::{DocumentJob, DocumentProcessing, DocumentResult, MAX_EXECUTORS, MAX_OUTPUT_KB, MIN_EXECUTORS};
use crate::cli::{Args, CliError, Command};
use crate::render::{describe, human_bytes, JsonEvent};

/// The database used when `--db` is not given: a file in the working
/// directory.
pub const DEFAULT_DB: &str = "sqlite://document_processing.db";

/// The most runs one invocation starts.
pub const MAX_RUNS: u32 = 10_000;

/// The most simulated work per executor, in milliseconds.
pub const MAX_WORK_MS: u32 = 60_000;

/// The usage text of `examples/document_processing.rs`.
pub const USAGE: &str = "\
Runs the document-processing workflow (entry-unpack -> validate-inputs -> load-configuration ->
extract-layout -> analyse-document -> validate-outputs) and prints its stream live.

usage: document_processing [FLAGS]

  --db URL              the store (default sqlite://document_processing.db, a file here)
  --executors N         executor invocations per run, 6 to 1000 (default 6); more than 6
                        repeat extract-layout and analyse-document
  --output-kb K         KiB of JSON per executor output, 1 to 32 (default 2)
  --runs R              runs, started together (default 1)
  --work-ms MS          milliseconds each executor sleeps, standing in for work (default 0)
  --json                one JSON line per event {\"instance\",\"seq\",\"name\",\"payload\"},
                        then {\"summary\":{...}}
  --external-workers    start and watch the runs, but run no worker in this process
                        (workers run elsewhere on the same --db)
  -h, --help            this text";

/// What to run, as the command line says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    /// The store URL.
    pub db: String,
    /// Executor invocations per run.
    pub executors: u32,
    /// KiB per executor output.
    pub output_kb: u32,
    /// How many runs, started together.
    pub runs: u32,
    /// Simulated work per executor, in milliseconds.
    pub work_ms: u32,
    /// JSON lines instead of readable lines.
    pub json: bool,
    /// Run no worker in this process.
    pub external_workers: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            db: DEFAULT_DB.to_owned(),
            executors: MIN_EXECUTORS,
            output_kb: 2,
            runs: 1,
            work_ms: 0,
            json: false,
            external_workers: false,
        }
    }
}

impl RunOptions {
    /// Parses the command line (without the program name).
    ///
    /// ```
    /// use durable_workspace::cli::{Args, Command};
    /// use durable_workspace::document_processing::RunOptions;
    ///
    /// let Command::Run(options) = RunOptions::parse(Args::new(["--executors", "9", "--json"])).unwrap() else {
    ///     panic!()
    /// };
    /// assert_eq!((options.executors, options.output_kb, options.json), (9, 2, true));
    ///
    /// let error = RunOptions::parse(Args::new(["--executors", "3"])).unwrap_err();
    /// assert_eq!(error.to_string(), "--executors takes a whole number from 6 to 1000, not \"3\"");
    /// ```
    ///
    /// # Errors
    ///
    /// A [`CliError`] for an unknown flag or a bad value.
    pub fn parse(mut args: Args) -> Result<Command<Self>, CliError> {
        let mut options = Self::default();
        while let Some(flag) = args.next_flag() {
            match flag.as_str() {
                "--db" => options.db = args.value("--db", "a store URL such as sqlite://runs.db")?,
                "--executors" => {
                    options.executors = args.number("--executors", MIN_EXECUTORS..=MAX_EXECUTORS)?
                }
                "--output-kb" => options.output_kb = args.number("--output-kb", 1..=MAX_OUTPUT_KB)?,
                "--runs" => options.runs = args.number("--runs", 1..=MAX_RUNS)?,
                "--work-ms" => options.work_ms = args.number("--work-ms", 0..=MAX_WORK_MS)?,
                "--json" => {
                    args.no_value("--json")?;
                    options.json = true;
                }
                "--external-workers" => {
                    args.no_value("--external-workers")?;
                    options.external_workers = true;
                }
                "-h" | "--help" => return Ok(Command::Help),
                other => return Err(CliError::unknown(other)),
            }
        }
        if options.db.trim().is_empty() {
            return Err(CliError::new(
                "--db needs a value: a store URL such as sqlite://runs.db",
            ));
        }
        Ok(Command::Run(options))
    }

    /// The job of run number `n` (1-based).
    pub fn job(&self, n: u32) -> DocumentJob {
        DocumentJob::new(format!("document-{n}"))
            .executors(self.executors)
            .output_kb(self.output_kb)
            .work_ms(self.work_ms)
    }
}

/// The figures of a whole invocation; with `--json`, the last line is
/// `{"summary": <this>}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Runs started.
    pub runs: u32,
    /// Runs that completed.
    pub completed: u32,
    /// Runs that failed (or were terminated).
    pub failed: u32,
    /// Stream events received, over all runs.
    pub events: u64,
    /// Bytes of event payload JSON received, over all runs.
    pub stream_bytes: u64,
    /// The largest live status (custom status JSON) seen in bytes; it is
    /// sampled after each event received.
    pub max_live_status_bytes: u64,
    /// Seconds from the first start to the last event.
    pub seconds: f64,
}

/// How one run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    /// The run's instance.
    pub instance_id: InstanceId,
    /// Its final status.
    pub status: RuntimeStatus,
    /// Stream events received.
    pub events: u64,
    /// Bytes of event payload JSON received.
    pub stream_bytes: u64,
    /// The largest live status seen, in bytes.
    pub max_live_status_bytes: u64,
    /// The workflow output, if the run completed.
    pub result: Option<DocumentResult>,
    /// Why it failed.
    pub error: Option<String>,
}

/// What [`run`] returns: the summary and each run's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// The figures.
    pub summary: Summary,
    /// The runs, in start order.
    pub runs: Vec<RunOutcome>,
}

impl RunSummary {
    /// Whether every run completed.
    pub fn all_completed(&self) -> bool {
        self.summary.completed == self.summary.runs
    }
}

/// Why the program could not do its work (a failed run is not an error:
/// it is counted in the summary).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The store could not be opened.
    #[error("cannot open the store {url:?}: {source}")]
    Open {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: durable_core::StoreError,
    },
    /// The runtime failed.
    #[error(transparent)]
    Core(#[from] durable_core::Error),
    /// The workflow client failed.
    #[error(transparent)]
    Client(#[from] WorkflowClientError),
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Io(#[from] std::io::Error),
}

enum Report {
    Event {
        run: usize,
        event: StreamEvent,
        live_status_bytes: Option<u64>,
    },
    End {
        run: usize,
        error: Option<String>,
    },
}

/// Runs the program: opens the store, starts a worker (unless
/// `external_workers`), starts the runs, prints every stream event to
/// `out` as it arrives, then the summary.
///
/// # Errors
///
/// A [`RunError`] if the store cannot be opened, a run cannot be started,
/// or `out` cannot be written. Runs that fail are counted, not errors.
pub async fn run<W: Write>(options: &RunOptions, mut out: W) -> Result<RunSummary, RunError> {
    let store = crate::open_store(&options.db)
        .await
        .map_err(|source| RunError::Open {
            url: options.db.clone(),
            source,
        })?;
    let worker = if options.external_workers {
        None
    } else {
        Some(Worker::start(store.clone(), crate::register(Registry::new()))?)
    };
    let result = run_on(store, options, &mut out).await;
    if let Some(worker) = worker {
        worker.shutdown().await?;
    }
    let summary = result?;
    print_summary(options, &summary, &mut out)?;
    Ok(summary)
}

async fn run_on<W: Write>(
    store: Arc<dyn Store>,
    options: &RunOptions,
    out: &mut W,
) -> Result<RunSummary, RunError> {
    let client = WorkflowClient::new(Client::new(store));
    let runs = options.runs as usize;
    if !options.json {
        writeln!(
            out,
            "document-processing: {} run{} of {} executors with {} KiB outputs on {}{}",
            runs,
            if runs == 1 { "" } else { "s" },
            options.executors,
            options.output_kb,
            options.db,
            if options.external_workers {
                " (no worker here: waiting for external workers)"
            } else {
                ""
            }
        )?;
    }

    let started = Instant::now();
    let mut ids = Vec::with_capacity(runs);
    for n in 1..=options.runs {
        let id = client.start(DocumentProcessing, &options.job(n)).await?;
        if !options.json {
            writeln!(out, "{} started instance {id}", label(n as usize - 1, runs))?;
        }
        ids.push(id);
    }

    let (reports, mut inbox) = mpsc::unbounded_channel();
    for (run, id) in ids.iter().enumerate() {
        tokio::spawn(watch_run(
            client.client().clone(),
            id.clone(),
            run,
            reports.clone(),
        ));
    }
    drop(reports);

    let mut outcomes: Vec<RunOutcome> = ids
        .iter()
        .map(|id| RunOutcome {
            instance_id: id.clone(),
            status: RuntimeStatus::Pending,
            events: 0,
            stream_bytes: 0,
            max_live_status_bytes: 0,
            result: None,
            error: None,
        })
        .collect();
    let mut watch_errors = vec![None; runs];
    while let Some(report) = inbox.recv().await {
        match report {
            Report::Event {
                run,
                event,
                live_status_bytes,
            } => {
                let outcome = &mut outcomes[run];
                outcome.events += 1;
                outcome.stream_bytes += event.payload.as_str().len() as u64;
                if let Some(bytes) = live_status_bytes {
                    outcome.max_live_status_bytes = outcome.max_live_status_bytes.max(bytes);
                }
                if options.json {
                    writeln!(out, "{}", JsonEvent::of(&event).to_line())?;
                } else {
                    writeln!(
                        out,
                        "{} {}",
                        label(run, runs),
                        describe(&event, Some(options.executors))
                    )?;
                }
            }
            Report::End { run, error } => watch_errors[run] = error,
        }
    }
    let seconds = started.elapsed().as_secs_f64();

    for (outcome, watch_error) in outcomes.iter_mut().zip(watch_errors) {
        if let Some(error) = watch_error {
            outcome.error = Some(format!("watching the stream failed: {error}"));
            outcome.status = client
                .client()
                .get_instance(&outcome.instance_id)
                .await?
                .map_or(RuntimeStatus::Pending, |m| m.status);
            continue;
        }
        // The stream ended: the run is finished.
        let result = client
            .wait_for_completion(&outcome.instance_id, Duration::from_secs(30))
            .await?;
        outcome.status = result.status;
        outcome.error = result.error.clone();
        if result.is_completed() {
            match result.outputs_as::<DocumentResult>() {
                Ok(mut outputs) if outputs.len() == 1 => outcome.result = outputs.pop(),
                Ok(outputs) => outcome.error = Some(format!("expected one output, got {}", outputs.len())),
                Err(e) => outcome.error = Some(format!("unexpected output: {e}")),
            }
        }
    }

    let completed = outcomes
        .iter()
        .filter(|o| o.status == RuntimeStatus::Completed && o.error.is_none())
        .count() as u32;
    let summary = Summary {
        runs: options.runs,
        completed,
        failed: options.runs - completed,
        events: outcomes.iter().map(|o| o.events).sum(),
        stream_bytes: outcomes.iter().map(|o| o.stream_bytes).sum(),
        max_live_status_bytes: outcomes
            .iter()
            .map(|o| o.max_live_status_bytes)
            .max()
            .unwrap_or(0),
        seconds,
    };
    Ok(RunSummary {
        summary,
        runs: outcomes,
    })
}

fn label(run: usize, runs: usize) -> String {
    format!("[run {}/{runs}]", run + 1)
}

/// Follows one run's stream; after each event, samples the live status.
async fn watch_run(client: Client, id: InstanceId, run: usize, reports: mpsc::UnboundedSender<Report>) {
    let mut stream = Box::pin(client.watch_events(&id, 0));
    let mut error = None;
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        };
        let live_status_bytes = match client.get_instance(&id).await {
            Ok(Some(meta)) => meta.custom_status.as_ref().map(|s| s.as_str().len() as u64),
            _ => None,
        };
        if reports
            .send(Report::Event {
                run,
                event,
                live_status_bytes,
            })
            .is_err()
        {
            return;
        }
    }
    let _ = reports.send(Report::End { run, error });
}

fn print_summary<W: Write>(options: &RunOptions, summary: &RunSummary, out: &mut W) -> std::io::Result<()> {
    let s = &summary.summary;
    if options.json {
        #[derive(Serialize)]
        struct Line<'a> {
            summary: &'a Summary,
        }
        let line = serde_json::to_string(&Line { summary: s }).map_err(std::io::Error::other)?;
        return writeln!(out, "{line}");
    }
    writeln!(out)?;
    writeln!(out, "summary")?;
    let runs = summary.runs.len();
    for (n, outcome) in summary.runs.iter().enumerate() {
        // Every run when there are few; only the failures otherwise.
        if runs > 20 && outcome.error.is_none() && outcome.status == RuntimeStatus::Completed {
            continue;
        }
        let detail = match (&outcome.result, &outcome.error) {
            (_, Some(error)) => format!(": {error}"),
            (Some(result), None) => format!(
                ": {} {} with {} fields, {}",
                result.document_id,
                result.classification,
                result.fields.len(),
                if result.valid { "valid" } else { "not valid" }
            ),
            (None, None) => String::new(),
        };
        writeln!(
            out,
            "  {} {} {}, {} events, {}{detail}",
            label(n, runs),
            outcome.instance_id,
            outcome.status,
            outcome.events,
            human_bytes(outcome.stream_bytes as usize),
        )?;
    }
    writeln!(
        out,
        "  runs:                {} completed, {} failed (of {})",
        s.completed, s.failed, s.runs
    )?;
    writeln!(out, "  events streamed:     {}", s.events)?;
    writeln!(
        out,
        "  bytes streamed:      {} ({} bytes)",
        human_bytes(s.stream_bytes as usize),
        s.stream_bytes
    )?;
    writeln!(
        out,
        "  largest live status: {} bytes (sampled after every event)",
        s.max_live_status_bytes
    )?;
    writeln!(out, "  time:                {:.2} s", s.seconds)
}
