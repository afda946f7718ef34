//! Human in the loop: a workflow that asks a person to approve an
//! extracted result, and the program that asks (`examples/human_approval.rs`).
//!
//! ```text
//! extract-result -> review --(approved)--> publish
//!                     |
//!                     +-- asks on the "approval" port, waits for the answer
//! ```
//!
//! `review` makes a request on [`APPROVAL`]; while it is open, the run's
//! live status lists it, and anyone with the instance id can answer it by
//! its request id ([`WorkflowClient::respond`]). An approved result goes
//! on to `publish`; a rejected one ends the run with the reviewer's
//! comment. Either way the run's output is an [`ApprovalOutcome`].
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use agent_workflows::prelude::*;
//! use durable_workspace::approval::{human_approval, ApprovalJob, ApprovalOutcome, Decision, APPROVAL};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await?);
//! let worker = Worker::start(store.clone(), durable_workspace::register(Registry::new()))?;
//! let client = WorkflowClient::new(Client::new(store));
//!
//! let id = client.start(human_approval, &ApprovalJob::new("invoice-2041")).await?;
//! let request = loop {
//!     if let Some(request) = client.pending_requests(&id).await?.pop() {
//!         break request;
//!     }
//!     tokio::time::sleep(Duration::from_millis(10)).await;
//! };
//! let decision = Decision::approve("ada").comment("totals match the order");
//! client.respond_on(&id, &APPROVAL, &request.request_id, &decision).await?;
//!
//! let result = client.wait_for_completion(&id, Duration::from_secs(30)).await?;
//! let outcome: Vec<ApprovalOutcome> = result.outputs_as()?;
//! assert!(outcome[0].approved);
//! assert_eq!(outcome[0].published_as.as_deref(), Some("records/invoice-2041"));
//! worker.shutdown().await?;
//! # Ok(())
//! # }
//! ```

use std::io::{BufRead, Write};
use std::time::Duration;

use agent_workflows::prelude::*;
use agent_workflows::{WorkflowClientError, WorkflowEvent};
use durable_core::{InstanceId, Payload, RuntimeStatus};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::cli::{Args, CliError, Command};
use crate::document_processing::{self, DocumentJob, ExtractedField};
use crate::render::describe;

/// The name runs of the workflow are started by.
pub const NAME: &str = "human-approval";

/// The port `review` asks on: the extracted result, answered with a
/// [`Decision`].
pub const APPROVAL: RequestPort<ExtractedResult, Decision> = RequestPort::new("approval");

/// The input of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalJob {
    /// The document whose extraction is reviewed.
    pub document_id: String,
}

impl ApprovalJob {
    /// A job for this document.
    pub fn new(document_id: impl Into<String>) -> Self {
        Self {
            document_id: document_id.into(),
        }
    }
}

/// What `extract-result` found, and what the reviewer is asked about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExtractedResult {
    /// The document.
    pub document_id: String,
    /// The document class.
    pub classification: String,
    /// The extracted fields.
    pub fields: Vec<ExtractedField>,
}

/// A reviewer's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// Whether the result is approved.
    pub approved: bool,
    /// Who decided.
    pub reviewer: String,
    /// Why, if they said.
    #[serde(default)]
    pub comment: Option<String>,
}

impl Decision {
    /// An approval by `reviewer`.
    pub fn approve(reviewer: impl Into<String>) -> Self {
        Self {
            approved: true,
            reviewer: reviewer.into(),
            comment: None,
        }
    }

    /// A rejection by `reviewer`.
    pub fn reject(reviewer: impl Into<String>) -> Self {
        Self {
            approved: false,
            ..Self::approve(reviewer)
        }
    }

    /// Adds a comment.
    pub fn comment(mut self, comment: impl Into<String>) -> Self {
        self.comment = Some(comment.into());
        self
    }
}

/// An approved result, on its way to `publish`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Approved {
    /// The result.
    pub result: ExtractedResult,
    /// The approval.
    pub decision: Decision,
}

/// The output of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalOutcome {
    /// The document.
    pub document_id: String,
    /// Whether it was approved.
    pub approved: bool,
    /// Who decided.
    pub reviewer: String,
    /// Their comment.
    pub comment: Option<String>,
    /// Where the approved result was published.
    pub published_as: Option<String>,
}

/// Extracts the fields of the document (as the pipeline's first analysis
/// would).
#[executor(id = "extract-result")]
async fn extract_result(job: ApprovalJob) -> Result<ExtractedResult, ExecutorError> {
    if job.document_id.trim().is_empty() {
        return Err(ExecutorError::terminal("the document id is empty"));
    }
    let analysis = document_processing::first_analysis(&DocumentJob::new(job.document_id.clone()));
    Ok(ExtractedResult {
        document_id: job.document_id,
        classification: analysis.classification,
        fields: analysis.fields,
    })
}

/// Asks for approval, and acts on the answer.
#[derive(Debug, Clone, Copy)]
pub struct Review;

#[executor(id = "review")]
impl Review {
    /// Asks a person to approve the result.
    #[handler]
    async fn on_result(
        &self,
        result: ExtractedResult,
        ctx: &mut WorkflowContext,
    ) -> Result<(), ExecutorError> {
        ctx.request_info(&APPROVAL, &result)?;
        Ok(())
    }

    /// Sends an approved result on; ends the run with a rejected one.
    #[handler]
    async fn on_decision(
        &self,
        answer: RequestResponse<ExtractedResult, Decision>,
        ctx: &mut WorkflowContext,
    ) -> Result<(), ExecutorError> {
        let decision = answer.response?;
        if decision.approved {
            ctx.send_message(&Approved {
                result: answer.request,
                decision,
            })
        } else {
            ctx.yield_output(&ApprovalOutcome {
                document_id: answer.request.document_id,
                approved: false,
                reviewer: decision.reviewer,
                comment: decision.comment,
                published_as: None,
            })
        }
    }
}

/// Publishes an approved result.
#[executor(id = "publish")]
async fn publish(approved: Approved, ctx: &mut WorkflowContext) -> Result<(), ExecutorError> {
    let document_id = approved.result.document_id;
    ctx.yield_output(&ApprovalOutcome {
        published_as: Some(format!("records/{document_id}")),
        document_id,
        approved: true,
        reviewer: approved.decision.reviewer,
        comment: approved.decision.comment,
    })
}

/// The approval workflow.
#[workflow(name = "human-approval")]
pub fn human_approval() -> Workflow<ApprovalJob> {
    WorkflowBuilder::start(extract_result)
        .then(Review)
        .add_dynamic_edge(Review, publish)
        .build()
}

/// The database used when `--db` is not given.
pub const DEFAULT_DB: &str = "sqlite://human_approval.db";

/// The usage text of `examples/human_approval.rs`.
pub const USAGE: &str = "\
Runs a workflow that asks you to approve an extracted result, and waits for your answer.

usage: human_approval [--db URL] [--document ID] [--approve | --reject] [--comment TEXT] [--reviewer NAME]
       human_approval answer --db URL --instance ID [--request ID] (--approve | --reject)
                             [--comment TEXT] [--reviewer NAME]

  --db URL          the store (default sqlite://human_approval.db, a file here)
  --document ID     the document to review (default invoice-2041)
  --approve         answer yes without asking
  --reject          answer no without asking
  --comment TEXT    a comment to go with the answer
  --reviewer NAME   who answers (default: $USER)
  --instance ID     (answer) the run to answer
  --request ID      (answer) the request to answer (default: the run's only pending request)

Without --approve or --reject it reads the answer from standard input (y or n,
optionally followed by a comment). Another terminal can answer instead with the
`answer` command it prints.";

/// The options of a run of the program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalOptions {
    /// The store URL.
    pub db: String,
    /// The document to review.
    pub document_id: String,
    /// The answer given on the command line, if any.
    pub decision: Option<bool>,
    /// The comment to answer with.
    pub comment: Option<String>,
    /// Who answers.
    pub reviewer: String,
}

impl Default for ApprovalOptions {
    fn default() -> Self {
        Self {
            db: DEFAULT_DB.into(),
            document_id: "invoice-2041".into(),
            decision: None,
            comment: None,
            reviewer: default_reviewer(),
        }
    }
}

/// The options of `human_approval answer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerOptions {
    /// The store URL.
    pub db: String,
    /// The run.
    pub instance_id: String,
    /// The request (default: the only pending one).
    pub request_id: Option<String>,
    /// Approve or reject.
    pub approve: bool,
    /// The comment.
    pub comment: Option<String>,
    /// Who answers.
    pub reviewer: String,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApprovalCommand {
    /// Start a run and ask.
    Run(ApprovalOptions),
    /// Answer a run's request.
    Answer(AnswerOptions),
}

fn default_reviewer() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| "reviewer".into())
}

impl ApprovalCommand {
    /// Parses the command line (without the program name).
    ///
    /// ```
    /// use durable_workspace::approval::ApprovalCommand;
    /// use durable_workspace::cli::{Args, Command};
    ///
    /// let parsed = ApprovalCommand::parse(Args::new(["--approve", "--reviewer", "ada"])).unwrap();
    /// let Command::Run(ApprovalCommand::Run(options)) = parsed else { panic!() };
    /// assert_eq!((options.decision, options.reviewer.as_str()), (Some(true), "ada"));
    ///
    /// let error = ApprovalCommand::parse(Args::new(["--approve", "--reject"])).unwrap_err();
    /// assert_eq!(error.to_string(), "give --approve or --reject, not both");
    /// ```
    ///
    /// # Errors
    ///
    /// A [`CliError`] for an unknown flag, a missing value, or both
    /// `--approve` and `--reject`.
    pub fn parse(mut args: Args) -> Result<Command<Self>, CliError> {
        let mut answer = false;
        let mut run = ApprovalOptions::default();
        let mut instance = None;
        let mut request = None;
        let mut first = true;
        while let Some(flag) = args.next_flag() {
            if first && flag == "answer" {
                answer = true;
                first = false;
                continue;
            }
            first = false;
            match flag.as_str() {
                "--db" => run.db = args.value("--db", "a store URL such as sqlite://approval.db")?,
                "--document" if !answer => run.document_id = args.value("--document", "a document id")?,
                "--instance" if answer => instance = Some(args.value("--instance", "an instance id")?),
                "--request" if answer => request = Some(args.value("--request", "a request id")?),
                "--comment" => run.comment = Some(args.value("--comment", "some text")?),
                "--reviewer" => run.reviewer = args.value("--reviewer", "a name")?,
                "--approve" | "--reject" => {
                    args.no_value(&flag)?;
                    let approve = flag == "--approve";
                    if run.decision.is_some_and(|d| d != approve) {
                        return Err(CliError::new("give --approve or --reject, not both"));
                    }
                    run.decision = Some(approve);
                }
                "-h" | "--help" => return Ok(Command::Help),
                other => return Err(CliError::unknown(other)),
            }
        }
        if run.document_id.trim().is_empty() {
            return Err(CliError::new("--document needs a value: a document id"));
        }
        if !answer {
            return Ok(Command::Run(Self::Run(run)));
        }
        let instance_id =
            instance.ok_or_else(|| CliError::new("answer needs --instance ID (the run to answer)"))?;
        let approve = run
            .decision
            .ok_or_else(|| CliError::new("answer needs --approve or --reject"))?;
        Ok(Command::Run(Self::Answer(AnswerOptions {
            db: run.db,
            instance_id,
            request_id: request,
            approve,
            comment: run.comment,
            reviewer: run.reviewer,
        })))
    }
}

/// Why the program could not do its work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApprovalError {
    /// The store could not be opened.
    #[error("cannot open the store {url:?}: {source}")]
    Open {
        /// The URL.
        url: String,
        /// Why.
        #[source]
        source: durable_core::StoreError,
    },
    /// The instance id is not valid.
    #[error(transparent)]
    InvalidInstanceId(#[from] durable_core::InvalidInstanceId),
    /// No instance has this id.
    #[error("no instance {0:?} in this store")]
    NotFound(String),
    /// The run has no request to answer, or several and none was chosen.
    #[error("{0}")]
    NoRequest(String),
    /// The runtime failed.
    #[error(transparent)]
    Core(#[from] durable_core::Error),
    /// The workflow client failed.
    #[error(transparent)]
    Client(#[from] WorkflowClientError),
    /// Reading or writing failed.
    #[error("cannot write the output: {0}")]
    Io(#[from] std::io::Error),
}

/// How a run of the program ended.
#[derive(Debug, Clone, PartialEq)]
pub struct ApprovalReport {
    /// The run.
    pub instance_id: InstanceId,
    /// Its final status.
    pub status: RuntimeStatus,
    /// Its outcome, if it completed.
    pub outcome: Option<ApprovalOutcome>,
    /// Whether this program answered (rather than another terminal).
    pub answered_here: bool,
    /// The names of the stream events, in order.
    pub events: Vec<String>,
}

/// Reads a y/n answer: `y`, `yes`, `approve` or `n`, `no`, `reject`,
/// optionally followed by a comment.
///
/// ```
/// use durable_workspace::approval::parse_answer;
///
/// assert_eq!(parse_answer("y"), Some((true, None)));
/// assert_eq!(parse_answer("No  totals differ "), Some((false, Some("totals differ".into()))));
/// assert_eq!(parse_answer("maybe"), None);
/// ```
pub fn parse_answer(line: &str) -> Option<(bool, Option<String>)> {
    let line = line.trim();
    let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let approved = match word.to_ascii_lowercase().as_str() {
        "y" | "yes" | "approve" => true,
        "n" | "no" | "reject" => false,
        _ => return None,
    };
    let rest = rest.trim();
    Some((approved, (!rest.is_empty()).then(|| rest.to_owned())))
}

/// Runs the program: starts a run, prints its stream, and when `review`
/// asks, prints the request and answers it with `options.decision`, or
/// with a line read from `answers` (standard input in the example). If
/// `answers` ends first, it waits for an answer from elsewhere (the
/// `answer` command). Then prints the outcome.
///
/// # Errors
///
/// An [`ApprovalError`] if the store cannot be opened or written, or the
/// output cannot be written.
pub async fn run<W: Write>(
    options: &ApprovalOptions,
    answers: Box<dyn BufRead + Send>,
    mut out: W,
) -> Result<ApprovalReport, ApprovalError> {
    let store = crate::open_store(&options.db)
        .await
        .map_err(|source| ApprovalError::Open {
            url: options.db.clone(),
            source,
        })?;
    let worker = Worker::start(store.clone(), crate::register(Registry::new()))?;
    let client = WorkflowClient::new(Client::new(store));
    let result = ask(&client, options, answers, &mut out).await;
    worker.shutdown().await?;
    result
}

async fn ask<W: Write>(
    client: &WorkflowClient,
    options: &ApprovalOptions,
    answers: Box<dyn BufRead + Send>,
    out: &mut W,
) -> Result<ApprovalReport, ApprovalError> {
    let id = client
        .start(human_approval, &ApprovalJob::new(options.document_id.clone()))
        .await?;
    writeln!(out, "started instance {id} on {}", options.db)?;

    let mut answers = Some(answers);
    let mut lines: Option<mpsc::UnboundedReceiver<String>> = None;
    let mut open_request: Option<String> = None;
    let mut prompt_due = false;
    let mut answered_here = false;
    let mut names = Vec::new();
    let mut stream = Box::pin(client.client().watch_events(&id, 0));
    loop {
        tokio::select! {
            event = stream.next() => {
                let Some(event) = event else { break };
                let event = event?;
                writeln!(out, "{}", describe(&event, None))?;
                names.push(event.name.clone());
                let Ok(workflow_event) = event.payload.parse::<WorkflowEvent>() else { continue };
                match workflow_event {
                    WorkflowEvent::RequestInfo { request_id, request, .. } => {
                        print_request(out, &request_id, &request)?;
                        match options.decision {
                            Some(approved) => {
                                writeln!(
                                    out,
                                    "answering {} (from the command line)",
                                    if approved { "approve" } else { "reject" }
                                )?;
                                answered_here |= respond(client, &id, &request_id, options, approved, options.comment.clone(), out).await?;
                            }
                            None => {
                                // Asked once the superstep has ended and the
                                // request is pending.
                                open_request = Some(request_id);
                                prompt_due = true;
                            }
                        }
                    }
                    WorkflowEvent::SuperstepCompleted { .. } if prompt_due => {
                        prompt_due = false;
                        if let Some(request_id) = &open_request {
                            print_prompt(out, options, &id, request_id)?;
                            if let Some(reader) = answers.take() {
                                lines = Some(read_lines(reader));
                            }
                        }
                    }
                    WorkflowEvent::RequestAnswered { request_id, .. }
                    | WorkflowEvent::RequestTimedOut { request_id, .. }
                        if open_request.as_deref() == Some(request_id.as_str()) =>
                    {
                        open_request = None;
                    }
                    _ => {}
                }
            }
            line = next_line(&mut lines), if open_request.is_some() && !prompt_due && lines.is_some() => {
                let Some(line) = line else {
                    lines = None;
                    writeln!(out, "(no more input here: waiting for an answer from another terminal)")?;
                    continue;
                };
                match parse_answer(&line) {
                    Some((approved, comment)) => {
                        let request_id = open_request.clone().unwrap_or_default();
                        let comment = comment.or_else(|| options.comment.clone());
                        writeln!(
                            out,
                            "answering {}{}",
                            if approved { "approve" } else { "reject" },
                            comment.as_deref().map(|c| format!(" ({c})")).unwrap_or_default()
                        )?;
                        if respond(client, &id, &request_id, options, approved, comment, out).await? {
                            answered_here = true;
                            open_request = None;
                        }
                    }
                    None => {
                        writeln!(out, "{line:?} is not an answer: type y or n, optionally followed by a comment")?;
                        out.flush()?;
                    }
                }
            }
        }
    }

    let result = client.wait_for_completion(&id, Duration::from_secs(30)).await?;
    let outcome = result.outputs_as::<ApprovalOutcome>()?.pop();
    match &outcome {
        Some(o) if o.approved => writeln!(
            out,
            "\napproved by {}{}; published as {}",
            o.reviewer,
            o.comment
                .as_deref()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default(),
            o.published_as.as_deref().unwrap_or("-")
        )?,
        Some(o) => writeln!(
            out,
            "\nrejected by {}{}; nothing published",
            o.reviewer,
            o.comment
                .as_deref()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default()
        )?,
        None => writeln!(
            out,
            "\nthe run ended {}{}",
            result.status,
            result
                .error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        )?,
    }
    Ok(ApprovalReport {
        instance_id: id,
        status: result.status,
        outcome,
        answered_here,
        events: names,
    })
}

/// Answers; `false` if the request was no longer pending (answered
/// elsewhere first).
async fn respond<W: Write>(
    client: &WorkflowClient,
    id: &InstanceId,
    request_id: &str,
    options: &ApprovalOptions,
    approved: bool,
    comment: Option<String>,
    out: &mut W,
) -> Result<bool, ApprovalError> {
    let decision = Decision {
        approved,
        reviewer: options.reviewer.clone(),
        comment,
    };
    match client.respond_on(id, &APPROVAL, request_id, &decision).await {
        Ok(()) => Ok(true),
        Err(WorkflowClientError::RequestNotPending { .. }) => {
            writeln!(out, "(request {request_id} was already answered elsewhere)")?;
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

fn print_request<W: Write>(out: &mut W, request_id: &str, request: &Payload) -> std::io::Result<()> {
    writeln!(out)?;
    writeln!(
        out,
        "pending request {request_id}: please review this extracted result"
    )?;
    match request.parse::<ExtractedResult>() {
        Ok(result) => {
            writeln!(
                out,
                "  document        {} ({})",
                result.document_id, result.classification
            )?;
            for field in &result.fields {
                writeln!(
                    out,
                    "  {:<15} {:<24} confidence {:.2}",
                    field.name, field.value, field.confidence
                )?;
            }
        }
        Err(_) => writeln!(out, "  {request}")?,
    }
    Ok(())
}

fn print_prompt<W: Write>(
    out: &mut W,
    options: &ApprovalOptions,
    id: &InstanceId,
    request_id: &str,
) -> std::io::Result<()> {
    writeln!(out)?;
    writeln!(
        out,
        "approve? type y or n, optionally followed by a comment, and press Enter"
    )?;
    writeln!(out, "(or answer from another terminal, with the same database:")?;
    writeln!(
        out,
        "  cargo run --example human_approval -- answer --db {} --instance {id} --request {request_id} --approve)",
        options.db
    )?;
    out.flush()
}

/// Reads lines on a thread of its own (a blocked read must not hold up
/// the runtime or its shutdown).
fn read_lines(reader: Box<dyn BufRead + Send>) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in reader.lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

async fn next_line(lines: &mut Option<mpsc::UnboundedReceiver<String>>) -> Option<String> {
    match lines {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// `human_approval answer`: answers a run's request (its only pending one
/// unless `request_id` is given), from any process that can open the
/// store. Returns the request id answered.
///
/// # Errors
///
/// [`ApprovalError::NotFound`] for an unknown instance,
/// [`ApprovalError::NoRequest`] if there is nothing (or no single thing)
/// to answer, or a store error.
pub async fn answer(options: &AnswerOptions) -> Result<String, ApprovalError> {
    let store = crate::open_store(&options.db)
        .await
        .map_err(|source| ApprovalError::Open {
            url: options.db.clone(),
            source,
        })?;
    let client = WorkflowClient::new(Client::new(store));
    let id = InstanceId::new(options.instance_id.clone())?;
    let pending = match client.pending_requests(&id).await {
        Ok(pending) => pending,
        Err(WorkflowClientError::NotFound(_)) => {
            return Err(ApprovalError::NotFound(options.instance_id.clone()))
        }
        Err(e) => return Err(e.into()),
    };
    let request_id = match (&options.request_id, pending.as_slice()) {
        (Some(request_id), _) => request_id.clone(),
        (None, [only]) => only.request_id.clone(),
        (None, []) => {
            return Err(ApprovalError::NoRequest(format!(
                "instance {id} has no pending request"
            )))
        }
        (None, several) => {
            let ids: Vec<&str> = several.iter().map(|r| r.request_id.as_str()).collect();
            return Err(ApprovalError::NoRequest(format!(
                "instance {id} has {} pending requests ({}): choose one with --request",
                ids.len(),
                ids.join(", ")
            )));
        }
    };
    let decision = Decision {
        approved: options.approve,
        reviewer: options.reviewer.clone(),
        comment: options.comment.clone(),
    };
    match client.respond_on(&id, &APPROVAL, &request_id, &decision).await {
        Ok(()) => Ok(request_id),
        Err(WorkflowClientError::RequestNotPending { .. }) => Err(ApprovalError::NoRequest(format!(
            "request {request_id} of instance {id} is not pending (answered already?)"
        ))),
        Err(e) => Err(e.into()),
    }
}
