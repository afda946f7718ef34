//! Runs resume from history: with no orchestration cache every turn
//! replays the superstep loop from the start (so it must be
//! deterministic), and a run handed from one worker to another goes on
//! without re-running the executors that finished.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_workflows::prelude::*;
use agent_workflows::WorkflowResult;
use common::TIMEOUT;
use durable_core::WorkerOptions;
use serde::{Deserialize, Serialize};

static PREPARED: AtomicU32 = AtomicU32::new(0);
static FLAKY: AtomicU32 = AtomicU32::new(0);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Item(u32);

const CONFIRM: RequestPort<Vec<Item>, bool> = RequestPort::new("confirm");

#[executor(id = "prepare")]
async fn prepare(n: u32, ctx: &mut WorkflowContext) -> Result<u32, ExecutorError> {
    PREPARED.fetch_add(1, Ordering::SeqCst);
    ctx.set_state("n", &n)?;
    Ok(n)
}

#[executor(id = "square")]
async fn square(n: u32) -> Result<Item, ExecutorError> {
    Ok(Item(n * n))
}

#[executor(id = "flaky-half", max_attempts = 2, retry_interval = "20ms")]
async fn flaky_half(n: u32) -> Result<Item, ExecutorError> {
    if FLAKY.fetch_add(1, Ordering::SeqCst) == 0 {
        return Err(ExecutorError::retryable("first try fails"));
    }
    Ok(Item(n / 2))
}

struct Confirm;

#[executor(id = "confirm")]
impl Confirm {
    #[handler]
    async fn on_items(&self, items: Vec<Item>, ctx: &mut WorkflowContext) -> Result<(), ExecutorError> {
        ctx.request_info(&CONFIRM, &items)?;
        Ok(())
    }

    #[handler]
    async fn on_answer(
        &self,
        answer: RequestResponse<Vec<Item>, bool>,
        ctx: &mut WorkflowContext,
    ) -> Result<(), ExecutorError> {
        let n: u32 = ctx.get_state("n")?.unwrap_or_default();
        if answer.response? {
            ctx.yield_output(&(n, answer.request))?;
        }
        Ok(())
    }
}

#[workflow(name = "replayed")]
fn replayed() -> Workflow<u32> {
    WorkflowBuilder::start(prepare)
        .add_fan_out(prepare, FanOut::new().to(square).to(flaky_half))
        .add_fan_in(FanIn::new().from(square).from(flaky_half), Confirm)
        .build()
}

async fn answer_when_pending(client: &WorkflowClient, id: &durable_core::InstanceId) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let pending = client.pending_requests(id).await.unwrap();
        if let Some(request) = pending.first() {
            client.respond(id, &request.request_id, &true).await.unwrap();
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no request became pending"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn check(result: &WorkflowResult, events: &[WorkflowEvent]) {
    assert!(result.is_completed(), "{result:?}");
    assert_eq!(
        result.outputs_as::<(u32, Vec<Item>)>().unwrap(),
        [(10, vec![Item(100), Item(5)])]
    );
    let names: Vec<&str> = events.iter().map(WorkflowEvent::name).collect();
    assert_eq!(names.iter().filter(|n| **n == "workflow_started").count(), 1);
    assert_eq!(names.iter().filter(|n| **n == "executor_failed").count(), 1);
    assert_eq!(names.iter().filter(|n| **n == "request_info").count(), 1);
    assert_eq!(names.last(), Some(&"workflow_completed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_replayed_from_history_every_turn_takes_the_same_path() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
    let options = WorkerOptions::new().cache_capacity(0);
    let worker = Worker::start_with(store.clone(), Registry::new().workflow(replayed), options).unwrap();
    let client = WorkflowClient::new(Client::new(store));

    let id = client.start(replayed, &10).await.unwrap();
    answer_when_pending(&client, &id).await;
    let result = client.wait_for_completion(&id, TIMEOUT).await.unwrap();
    let events: Vec<WorkflowEvent> = client
        .events(&id, 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect();
    check(&result, &events);
    assert_eq!(PREPARED.load(Ordering::SeqCst), 1, "replay ran `prepare` again");
    worker.shutdown().await.unwrap();
}

static HANDED_OVER: AtomicU32 = AtomicU32::new(0);

#[executor(id = "once")]
async fn once(n: u32) -> Result<u32, ExecutorError> {
    HANDED_OVER.fetch_add(1, Ordering::SeqCst);
    Ok(n)
}

const GO_ON: RequestPort<u32, u32> = RequestPort::new("go-on");

struct Pause;

#[executor(id = "pause")]
impl Pause {
    #[handler]
    async fn on_number(&self, n: u32, ctx: &mut WorkflowContext) -> Result<(), ExecutorError> {
        ctx.request_info(&GO_ON, &n)?;
        Ok(())
    }

    #[handler]
    async fn on_answer(
        &self,
        answer: RequestResponse<u32, u32>,
        ctx: &mut WorkflowContext,
    ) -> Result<(), ExecutorError> {
        ctx.yield_output(&(answer.request + answer.response?))
    }
}

#[workflow(name = "handed-over")]
fn handed_over() -> Workflow<u32> {
    WorkflowBuilder::start(once).then(Pause).build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_goes_on_in_another_worker_without_rerunning_finished_executors() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
    let first = Worker::start(store.clone(), Registry::new().workflow(handed_over)).unwrap();
    let client = WorkflowClient::new(Client::new(store.clone()));
    let id = client.start(handed_over, &40).await.unwrap();

    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let request = loop {
        if let Some(request) = client.pending_requests(&id).await.unwrap().pop() {
            break request;
        }
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    first.shutdown().await.unwrap();

    // A new worker, with nothing in memory, replays the run and goes on.
    let second = Worker::start(store, Registry::new().workflow(handed_over)).unwrap();
    client.respond(&id, &request.request_id, &2).await.unwrap();
    let result = client.wait_for_completion(&id, TIMEOUT).await.unwrap();
    assert!(result.is_completed(), "{result:?}");
    assert_eq!(result.outputs_as::<u32>().unwrap(), [42]);
    assert_eq!(HANDED_OVER.load(Ordering::SeqCst), 1, "`once` ran again");

    let events = client.events(&id, 0, 1000).await.unwrap();
    assert!(events.iter().enumerate().all(|(i, e)| e.seq == i as u64 + 1));
    let invoked = events
        .iter()
        .filter(|e| matches!(&e.event, WorkflowEvent::ExecutorInvoked { executor_id, .. } if executor_id == "once"))
        .count();
    assert_eq!(invoked, 1, "no duplicate events after the hand-over");
    second.shutdown().await.unwrap();
}

#[executor(id = "inner")]
async fn inner(n: u32, ctx: &mut WorkflowContext) -> Result<(), ExecutorError> {
    ctx.add_event("inner", &n)?;
    ctx.yield_output(&(n + 1))
}

fn inner_workflow() -> Workflow<u32> {
    WorkflowBuilder::start(inner).build()
}

#[executor(id = "outer-end")]
async fn outer_end(n: u32, ctx: &mut WorkflowContext) -> Result<(), ExecutorError> {
    ctx.yield_output(&(n * 10))
}

#[workflow(name = "nested")]
fn nested() -> Workflow<u32> {
    WorkflowBuilder::start(SubWorkflow::new("inner-run", inner_workflow()))
        .then(outer_end)
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_workflow_replays_the_same_way() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
    let options = WorkerOptions::new().cache_capacity(0);
    let worker = Worker::start_with(store.clone(), Registry::new().workflow(nested), options).unwrap();
    let client = WorkflowClient::new(Client::new(store));
    let id = client.start(nested, &4).await.unwrap();
    let result = client.wait_for_completion(&id, TIMEOUT).await.unwrap();
    assert!(result.is_completed(), "{result:?}");
    assert_eq!(result.outputs_as::<u32>().unwrap(), [50]);
    let events = client.events(&id, 0, 1000).await.unwrap();
    let forwarded = events
        .iter()
        .filter(|e| matches!(&e.event, WorkflowEvent::SubWorkflowEvent { executor_id, .. } if executor_id == "inner-run"))
        .count();
    assert!(forwarded >= 6, "{forwarded}");
    worker.shutdown().await.unwrap();
}
