//! Bad input at the workflow level, on a SQLite file: each gets a typed
//! error or fails its run with a clear reason; nothing panics and nothing
//! stored is lost.
//!
//! * a request answered twice, one after the other while the run is
//!   stopped or both at once: the first answer is accepted and reaches
//!   the executor once, the second is refused;
//! * an executor renamed between deployments (its old name unknown to the
//!   new code): the run fails with the non-determinism error naming both,
//!   and its stream stays as it was;
//! * a run input of the wrong type for the document-processing workflow:
//!   the run fails saying so, other runs are not disturbed;
//! * an executor output over the stream's per-event cap: the stream
//!   carries a marker with the size instead, and the run's output keeps
//!   the whole value.

use std::sync::Arc;
use std::time::Duration;

use agent_workflows::prelude::*;
use agent_workflows::{PendingRequest, SequencedEvent, WorkflowResult};
use durable_core::store::SqliteStoreOptions;
use durable_core::{InstanceId, StartOptions};
use durable_workspace::document_processing::{DocumentJob, DocumentProcessing, DocumentResult};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);

/// A SQLite file that several workers (deployments) open in turn.
struct Db {
    _dir: tempfile::TempDir,
    path: String,
}

impl Db {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("workflows.db").to_str().unwrap().to_owned();
        Self { _dir: dir, path }
    }

    async fn open(&self) -> Arc<dyn Store> {
        let options =
            SqliteStoreOptions::file(self.path.clone()).poll_interval(Some(Duration::from_millis(20)));
        Arc::new(SqliteStore::with_options(options).await.unwrap())
    }
}

async fn wait_for_requests(client: &WorkflowClient, id: &InstanceId, n: usize) -> Vec<PendingRequest> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let pending = client.pending_requests(id).await.unwrap();
        if pending.len() == n {
            return pending;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} requests never became pending: {pending:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn events(client: &WorkflowClient, id: &InstanceId) -> Vec<SequencedEvent> {
    client.events(id, 0, 10_000).await.unwrap()
}

fn names(events: &[SequencedEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.event.name()).collect()
}

async fn finish(client: &WorkflowClient, id: &InstanceId) -> WorkflowResult {
    client.wait_for_completion(id, WAIT).await.unwrap()
}

// ---------------------------------------------------------------------------
// A request answered twice.

const APPROVAL: RequestPort<String, bool> = RequestPort::new("approval");

struct Approver;

#[executor(id = "approver")]
impl Approver {
    /// Asks whether to publish the document.
    #[handler]
    async fn on_document(&self, document: String, ctx: &mut WorkflowContext) -> Result<(), ExecutorError> {
        ctx.request_info(&APPROVAL, &document)?;
        Ok(())
    }

    /// Publishes or not.
    #[handler]
    async fn on_answer(
        &self,
        answer: RequestResponse<String, bool>,
        ctx: &mut WorkflowContext,
    ) -> Result<(), ExecutorError> {
        let approved = answer.response?;
        ctx.yield_output(&json!({ "document": answer.request, "approved": approved }))
    }
}

#[workflow(name = "approve")]
fn approve() -> Workflow<String> {
    WorkflowBuilder::start(Approver).build()
}

/// Checks that the run got exactly one answer to its one request.
async fn answered_once(client: &WorkflowClient, id: &InstanceId) -> bool {
    let result = finish(client, id).await;
    assert!(result.is_completed(), "{result:?}");
    assert_eq!(result.outputs.len(), 1, "one output: {result:?}");
    let events = events(client, id).await;
    let names = names(&events);
    assert_eq!(names.iter().filter(|n| **n == "request_info").count(), 1);
    assert_eq!(
        names.iter().filter(|n| **n == "request_answered").count(),
        1,
        "{names:?}"
    );
    let responses = events
        .iter()
        .filter(
            |e| matches!(&e.event, WorkflowEvent::ExecutorInvoked { source, .. } if source == "$response"),
        )
        .count();
    assert_eq!(responses, 1, "the answer reached the executor once: {names:?}");
    assert!(client.pending_requests(id).await.unwrap().is_empty());
    result.outputs_as::<Value>().unwrap()[0]["approved"]
        .as_bool()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_answered_twice_takes_the_first_answer_and_refuses_the_second() {
    let db = Db::new();
    let store = db.open().await;
    let client = WorkflowClient::new(Client::new(store.clone()));

    // With no worker running, both answers arrive before the run can take
    // either: the first one counts, the second is refused.
    let worker = Worker::start(store.clone(), Registry::new().workflow(approve)).unwrap();
    let id = client.start(approve, &"report.pdf".to_owned()).await.unwrap();
    let pending = wait_for_requests(&client, &id, 1).await;
    worker.shutdown().await.unwrap();
    client.respond(&id, &pending[0].request_id, &true).await.unwrap();
    let second = client.respond(&id, &pending[0].request_id, &false).await;
    assert!(
        matches!(
            second,
            Err(agent_workflows::WorkflowClientError::RequestNotPending { .. })
        ),
        "{second:?}"
    );
    let worker = Worker::start(store.clone(), Registry::new().workflow(approve)).unwrap();
    assert!(answered_once(&client, &id).await, "the first answer counts");

    // Two answers at once, with the worker running: one of them counts.
    let id = client.start(approve, &"memo.txt".to_owned()).await.unwrap();
    let pending = wait_for_requests(&client, &id, 1).await;
    let request = &pending[0].request_id;
    let (a, b) = tokio::join!(
        client.respond(&id, request, &true),
        client.respond(&id, request, &false)
    );
    assert!(a.is_ok() != b.is_ok(), "exactly one answer accepted: {a:?} {b:?}");
    assert_eq!(
        answered_once(&client, &id).await,
        a.is_ok(),
        "the accepted answer counts"
    );
    // Answered: no longer pending.
    assert!(matches!(
        client.respond(&id, request, &true).await,
        Err(agent_workflows::WorkflowClientError::RequestNotPending { .. })
    ));
    worker.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------
// An executor renamed between deployments.

#[executor(id = "extract")]
async fn extract(document: String, ctx: &mut WorkflowContext) -> Result<String, ExecutorError> {
    ctx.add_event("extracted", &document.len())?;
    Ok(document.to_uppercase())
}

struct Reviewer;

#[executor(id = "review")]
impl Reviewer {
    /// Asks for a review of the extracted text.
    #[handler]
    async fn on_text(&self, text: String, ctx: &mut WorkflowContext) -> Result<(), ExecutorError> {
        ctx.request_info(&APPROVAL, &text)?;
        Ok(())
    }

    /// Yields the verdict.
    #[handler]
    async fn on_answer(
        &self,
        answer: RequestResponse<String, bool>,
        ctx: &mut WorkflowContext,
    ) -> Result<(), ExecutorError> {
        ctx.yield_output(&answer.response?)
    }
}

/// Version 1 of the pipeline, and version 2 with `extract` renamed.
fn pipeline(version: u8) -> Registry {
    let id = if version == 1 { "extract" } else { "extract-text" };
    WorkflowBuilder::start(extract.with_id(id))
        .then(Reviewer)
        .build()
        .register("pipeline", Registry::new())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_renamed_between_deployments_fails_the_run_with_non_determinism() {
    let db = Db::new();
    let store = db.open().await;
    let worker = Worker::start(store.clone(), pipeline(1)).unwrap();
    let client = WorkflowClient::new(Client::new(store));
    let id = client
        .client()
        .start_with(
            StartOptions::new("pipeline", &"draft")
                .unwrap()
                .instance_id(InstanceId::new("renamed").unwrap()),
        )
        .await
        .unwrap();
    let pending = wait_for_requests(&client, &id, 1).await;
    worker.shutdown().await.unwrap();
    let before = events(&client, &id).await;
    assert!(names(&before).contains(&"executor_completed"));

    // The new deployment knows "extract" as "extract-text" only.
    let store = db.open().await;
    let worker = Worker::start(store.clone(), pipeline(2)).unwrap();
    let client = WorkflowClient::new(Client::new(store));
    client.respond(&id, &pending[0].request_id, &true).await.unwrap();
    let result = finish(&client, &id).await;
    assert_eq!(result.status, RuntimeStatus::Failed, "{result:?}");
    let error = result.error.unwrap();
    assert!(
        error.contains("non-deterministic orchestration 'pipeline'")
            && error.contains("'pipeline/extract'")
            && error.contains("'pipeline/extract-text'"),
        "{error}"
    );
    let meta = client.client().get_instance(&id).await.unwrap().unwrap();
    assert_eq!(meta.failure.unwrap().error_type, "NonDeterminism");
    assert_eq!(
        events(&client, &id).await,
        before,
        "the stream stays as the first deployment left it"
    );
    // The new deployment runs new runs.
    let other = client.client().start("pipeline", &"second draft").await.unwrap();
    let pending = wait_for_requests(&client, &other, 1).await;
    client
        .respond(&other, &pending[0].request_id, &false)
        .await
        .unwrap();
    let result = finish(&client, &other).await;
    assert!(result.is_completed(), "{result:?}");
    assert_eq!(result.outputs_as::<Value>().unwrap(), [json!(false)]);
    worker.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------
// Inputs of the wrong type, outputs over the cap.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_input_of_the_wrong_type_fails_the_run_saying_so() {
    let db = Db::new();
    let store = db.open().await;
    let worker = Worker::start(store.clone(), durable_workspace::register(Registry::new())).unwrap();
    let client = WorkflowClient::new(Client::new(store));
    let mut bad = Vec::new();
    for input in [
        json!("just a string"),
        json!({ "document_id": 7 }),
        json!({ "document_id": "d", "executors": -1 }),
        json!(null),
    ] {
        bad.push((
            input.clone(),
            client
                .client()
                .start(DocumentProcessing::NAME, &input)
                .await
                .unwrap(),
        ));
    }
    let good = client
        .start(DocumentProcessing, &DocumentJob::new("fine"))
        .await
        .unwrap();
    for (input, id) in &bad {
        let result = finish(&client, id).await;
        assert_eq!(result.status, RuntimeStatus::Failed, "{input}: {result:?}");
        let error = result.error.unwrap();
        assert!(
            error.contains("entry-unpack") && error.contains("DocumentJob"),
            "{input}: {error}"
        );
        let names = names(&events(&client, id).await);
        assert_eq!(names.last(), Some(&"workflow_failed"), "{input}: {names:?}");
    }
    let result = finish(&client, &good).await;
    assert!(result.is_completed(), "{result:?}");
    let outputs: Vec<DocumentResult> = result.outputs_as().unwrap();
    assert_eq!(outputs[0].document_id, "fine");
    worker.shutdown().await.unwrap();
}

#[executor(id = "small")]
async fn small(n: usize) -> Result<usize, ExecutorError> {
    Ok(n)
}

#[executor(id = "huge")]
async fn huge(n: usize, ctx: &mut WorkflowContext) -> Result<String, ExecutorError> {
    let text = "h".repeat(n);
    ctx.yield_output(&text)?;
    Ok(text)
}

#[workflow(name = "oversized")]
fn oversized() -> Workflow<usize> {
    WorkflowBuilder::start(small).then(huge).build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_output_over_the_event_cap_is_marked_in_the_stream_and_kept_whole_in_the_output() {
    let db = Db::new();
    let store = db.open().await;
    let worker = Worker::start(store.clone(), Registry::new().workflow(oversized)).unwrap();
    let client = WorkflowClient::new(Client::new(store));
    let n = 100 * 1024;
    let id = client.start(oversized, &n).await.unwrap();
    let result = finish(&client, &id).await;
    assert!(result.is_completed(), "{result:?}");
    assert_eq!(
        result.outputs_as::<String>().unwrap(),
        ["h".repeat(n)],
        "the output is whole"
    );
    let events = events(&client, &id).await;
    let mut marked = 0;
    for e in &events {
        let output = match &e.event {
            WorkflowEvent::ExecutorCompleted {
                executor_id, output, ..
            }
            | WorkflowEvent::WorkflowOutput {
                executor_id, output, ..
            } if executor_id == "huge" => output,
            _ => continue,
        };
        marked += 1;
        let output: Value = output.parse().unwrap();
        let omitted = &output["$omitted"];
        assert!(
            omitted["event_bytes"].as_u64().unwrap() > n as u64 && omitted["limit"] == json!(64 * 1024),
            "{output}"
        );
    }
    assert_eq!(marked, 2, "the completion and the output are marked");
    assert_eq!(names(&events).last(), Some(&"workflow_completed"));
    worker.shutdown().await.unwrap();
}
