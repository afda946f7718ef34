//! Superstep semantics: fan-in barriers, parallelism, message order,
//! every queued message delivered, switches and conditional edges, loops
//! and the superstep bound.

mod common;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use agent_workflows::prelude::*;
use agent_workflows::WorkflowError;
use common::{invocations, names, Harness};
use serde::{Deserialize, Serialize};

// --- fan-in waits for all of its sources -------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Part(String);

#[executor(id = "fan-start")]
async fn fan_start(text: String) -> Result<String, ExecutorError> {
    Ok(text)
}

#[executor(id = "fast")]
async fn fast(text: String) -> Result<Part, ExecutorError> {
    Ok(Part(format!("fast:{text}")))
}

#[executor(id = "slow-1")]
async fn slow_1(text: String) -> Result<String, ExecutorError> {
    Ok(text)
}

#[executor(id = "slow-2")]
async fn slow_2(text: String) -> Result<Part, ExecutorError> {
    Ok(Part(format!("slow:{text}")))
}

#[executor(id = "join")]
async fn join(parts: Vec<Part>, ctx: &mut WorkflowContext) -> Result<(), ExecutorError> {
    ctx.yield_output(&parts)
}

#[workflow(name = "fan-in")]
fn fan_in() -> Workflow<String> {
    WorkflowBuilder::start(fan_start)
        .add_fan_out(fan_start, FanOut::new().to(fast).to(slow_1))
        .add_edge(slow_1, slow_2)
        .add_fan_in(FanIn::new().from(fast).from(slow_2), join)
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_in_waits_for_all_sources() {
    let h = Harness::new(Registry::new().workflow(fan_in)).await;
    let (result, events) = h.run(fan_in, &"doc".to_owned()).await;
    assert!(result.is_completed(), "{result:?}");
    // fast runs in superstep 2, slow-2 in 3: the join runs once, in 4.
    assert_eq!(invocations(&events, "fast"), [2]);
    assert_eq!(invocations(&events, "slow-2"), [3]);
    assert_eq!(invocations(&events, "join"), [4]);
    assert_eq!(
        result.outputs_as::<Vec<Part>>().unwrap(),
        [vec![Part("fast:doc".into()), Part("slow:doc".into())]]
    );
    h.shutdown().await;
}

// --- the executors of one superstep run in parallel ---------------------

fn barrier() -> &'static tokio::sync::Barrier {
    static BARRIER: OnceLock<tokio::sync::Barrier> = OnceLock::new();
    BARRIER.get_or_init(|| tokio::sync::Barrier::new(2))
}

async fn meet() -> Result<(), ExecutorError> {
    // Both executors must be running at once to pass the barrier.
    tokio::time::timeout(Duration::from_secs(10), barrier().wait())
        .await
        .map(drop)
        .map_err(|_| ExecutorError::terminal("the other executor of the superstep never ran alongside"))
}

#[executor(id = "split")]
async fn split(n: u32) -> Result<u32, ExecutorError> {
    Ok(n)
}

#[executor(id = "left")]
async fn left(n: u32, ctx: &mut WorkflowContext) -> Result<(), ExecutorError> {
    meet().await?;
    ctx.yield_output(&("left", n))
}

#[executor(id = "right")]
async fn right(n: u32, ctx: &mut WorkflowContext) -> Result<(), ExecutorError> {
    meet().await?;
    ctx.yield_output(&("right", n))
}

#[workflow(name = "parallel")]
fn parallel() -> Workflow<u32> {
    WorkflowBuilder::start(split)
        .add_fan_out(split, FanOut::new().to(left).to(right))
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executors_of_one_superstep_run_in_parallel() {
    let h = Harness::new(Registry::new().workflow(parallel)).await;
    let (result, events) = h.run(parallel, &7).await;
    assert!(result.is_completed(), "{result:?}");
    assert_eq!(invocations(&events, "left"), [2]);
    assert_eq!(invocations(&events, "right"), [2]);
    let started = events.iter().find_map(|e| match e {
        WorkflowEvent::SuperstepStarted {
            superstep: 2,
            executors,
        } => Some(executors.clone()),
        _ => None,
    });
    assert_eq!(started, Some(vec!["left".to_owned(), "right".to_owned()]));
    assert_eq!(result.outputs.len(), 2);
    h.shutdown().await;
}

// --- message order per edge; every queued message is delivered ----------

#[executor(id = "burst")]
async fn burst(n: u32, ctx: &mut WorkflowContext) -> Result<(), ExecutorError> {
    for i in 0..n {
        ctx.send_message(&i)?;
    }
    Ok(())
}

#[executor(id = "record")]
async fn record(i: u32, ctx: &mut WorkflowContext) -> Result<(), ExecutorError> {
    ctx.yield_output(&i)
}

#[workflow(name = "ordered")]
fn ordered() -> Workflow<u32> {
    WorkflowBuilder::start(burst)
        .add_dynamic_edge(burst, record)
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_keep_their_order_and_all_are_delivered_in_one_superstep() {
    let h = Harness::new(Registry::new().workflow(ordered)).await;
    let (result, events) = h.run(ordered, &8).await;
    assert!(result.is_completed(), "{result:?}");
    assert_eq!(result.outputs_as::<u32>().unwrap(), (0..8).collect::<Vec<_>>());
    // All eight messages reach `record` in superstep 2, in one activity.
    assert_eq!(invocations(&events, "record"), [2; 8]);
    let completed: Vec<u32> = events
        .iter()
        .filter(|e| matches!(e, WorkflowEvent::SuperstepCompleted { .. }))
        .map(|e| match e {
            WorkflowEvent::SuperstepCompleted { superstep } => *superstep,
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(completed, [1, 2]);
    h.shutdown().await;
}

// --- loops, conditional edges, switches, and the superstep bound --------

#[executor(id = "increment")]
async fn increment(n: u32) -> Result<u32, ExecutorError> {
    Ok(n + 1)
}

#[executor(id = "done")]
async fn done(n: u32, ctx: &mut WorkflowContext) -> Result<(), ExecutorError> {
    ctx.yield_output(&n)
}

#[executor(id = "small")]
async fn small(n: u32, ctx: &mut WorkflowContext) -> Result<(), ExecutorError> {
    ctx.yield_output(&format!("small {n}"))
}

#[executor(id = "large")]
async fn large(n: u32, ctx: &mut WorkflowContext) -> Result<(), ExecutorError> {
    ctx.yield_output(&format!("large {n}"))
}

#[workflow(name = "count-to-five")]
fn count_to_five() -> Workflow<u32> {
    WorkflowBuilder::start(increment)
        .add_edge_if(increment, increment, |n| *n < 5)
        .add_edge_if(increment, done, |n| *n >= 5)
        .build()
}

#[workflow(name = "endless")]
fn endless() -> Workflow<u32> {
    WorkflowBuilder::start(increment)
        .add_edge(increment, increment)
        .max_supersteps(4)
        .build()
}

#[workflow(name = "switch")]
fn switch() -> Workflow<u32> {
    WorkflowBuilder::start(increment)
        .add_switch(
            increment,
            Switch::new().case(|n| *n < 10, small).default_case(large),
        )
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_runs_until_its_condition_fails() {
    let h = Harness::new(Registry::new().workflow(count_to_five)).await;
    let (result, events) = h.run(count_to_five, &0).await;
    assert!(result.is_completed(), "{result:?}");
    assert_eq!(result.outputs_as::<u32>().unwrap(), [5]);
    assert_eq!(invocations(&events, "increment"), [1, 2, 3, 4, 5]);
    assert_eq!(invocations(&events, "done"), [6]);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceeding_the_superstep_bound_fails_the_run() {
    let h = Harness::new(Registry::new().workflow(endless)).await;
    let (result, events) = h.run(endless, &0).await;
    assert_eq!(result.status, RuntimeStatus::Failed);
    let expected = WorkflowError::MaxSuperstepsExceeded {
        workflow: "endless".into(),
        limit: 4,
        pending: vec!["increment".into()],
    }
    .to_string();
    assert_eq!(result.error.as_deref(), Some(expected.as_str()));
    assert_eq!(invocations(&events, "increment"), [1, 2, 3, 4]);
    assert_eq!(
        events.last(),
        Some(&WorkflowEvent::WorkflowFailed {
            superstep: 4,
            error: expected
        })
    );
    assert!(!names(&events).contains(&"workflow_completed"));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_takes_the_first_matching_case_or_the_default() {
    let h = Harness::new(Registry::new().workflow(switch)).await;
    let (result, _) = h.run(switch, &3).await;
    assert_eq!(result.outputs_as::<String>().unwrap(), ["small 4"]);
    let (result, _) = h.run(switch, &30).await;
    assert_eq!(result.outputs_as::<String>().unwrap(), ["large 31"]);
    h.shutdown().await;
}

#[test]
fn the_default_superstep_bound_is_100() {
    assert_eq!(count_to_five::build().max_supersteps(), 100);
    assert_eq!(agent_workflows::DEFAULT_MAX_SUPERSTEPS, 100);
}

// --- fan-out to selected targets, and a wide superstep -----------------

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Task {
    kind: String,
}

/// One executor type, configured into many nodes.
struct Worker2 {
    id: String,
    seen: Arc<Mutex<Vec<String>>>,
}

#[executor(id = "worker")]
impl Worker2 {
    #[handler]
    async fn on_task(&self, task: Task, ctx: &mut WorkflowContext) -> Result<(), ExecutorError> {
        self.seen.lock().unwrap().push(self.id.clone());
        ctx.yield_output(&format!("{}:{}", self.id, task.kind))
    }
}

#[executor(id = "dispatch")]
async fn dispatch(task: Task) -> Result<Task, ExecutorError> {
    Ok(task)
}

fn wide(n: usize, seen: &Arc<Mutex<Vec<String>>>, selected: bool) -> Workflow<Task> {
    let mut fan_out = FanOut::new();
    for i in 0..n {
        let id = format!("worker-{i}");
        fan_out = fan_out.to(Worker2 {
            id: id.clone(),
            seen: seen.clone(),
        }
        .with_id(id));
    }
    if selected {
        fan_out = fan_out.select(|task: &Task, ids| {
            ids.iter()
                .filter(|id| id.ends_with(&task.kind))
                .cloned()
                .collect()
        });
    }
    WorkflowBuilder::start(dispatch)
        .add_fan_out(dispatch, fan_out)
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_reaches_all_targets_even_when_many() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let registry = wide(40, &seen, false).register("wide", Registry::new());
    let h = Harness::new(registry).await;
    let id = h
        .client
        .client()
        .start("wide", &Task { kind: "x".into() })
        .await
        .unwrap();
    let result = h.client.wait_for_completion(&id, common::TIMEOUT).await.unwrap();
    assert!(result.is_completed(), "{result:?}");
    let outputs: Vec<String> = result.outputs_as().unwrap();
    let expected: Vec<String> = (0..40).map(|i| format!("worker-{i}:x")).collect();
    assert_eq!(outputs, expected);
    assert_eq!(seen.lock().unwrap().len(), 40);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_with_a_selector_reaches_only_the_selected_targets() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let registry = wide(12, &seen, true).register("selected", Registry::new());
    let h = Harness::new(registry).await;
    let id = h
        .client
        .client()
        .start("selected", &Task { kind: "1".into() })
        .await
        .unwrap();
    let result = h.client.wait_for_completion(&id, common::TIMEOUT).await.unwrap();
    let outputs: Vec<String> = result.outputs_as().unwrap();
    assert_eq!(outputs, ["worker-1:1", "worker-11:1"]);
    h.shutdown().await;
}
