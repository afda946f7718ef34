//! The in-process semantics the durable host keeps: targeted messages,
//! shared state and its conflicts, executor failures with retry policies,
//! multi-handler executors, and sub-workflows.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};

use agent_workflows::prelude::*;
use agent_workflows::WorkflowError;
use common::{invocations, names, Harness};
use serde::{Deserialize, Serialize};

// --- send_message to a target id reaches only that target ---------------

#[executor(id = "router")]
async fn router(target: String, ctx: &mut WorkflowContext) -> Result<(), ExecutorError> {
    ctx.send_message_to(target, &"hello".to_owned())
}

#[executor(id = "to-a")]
async fn to_a(text: String, ctx: &mut WorkflowContext) -> Result<(), ExecutorError> {
    ctx.yield_output(&format!("a got {text}"))
}

#[executor(id = "to-b")]
async fn to_b(text: String, ctx: &mut WorkflowContext) -> Result<(), ExecutorError> {
    ctx.yield_output(&format!("b got {text}"))
}

#[executor(id = "unconnected")]
async fn unconnected(text: String) -> Result<(), ExecutorError> {
    drop(text);
    Ok(())
}

#[workflow(name = "targeted")]
fn targeted() -> Workflow<String> {
    WorkflowBuilder::start(router)
        .add_dynamic_edge(router, to_a)
        .add_dynamic_edge(router, to_b)
        .add_dynamic_edge(to_a, unconnected)
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_message_to_a_target_reaches_only_it() {
    let h = Harness::new(Registry::new().workflow(targeted)).await;
    let (result, events) = h.run(targeted, &"to-b".to_owned()).await;
    assert!(result.is_completed(), "{result:?}");
    assert_eq!(result.outputs_as::<String>().unwrap(), ["b got hello"]);
    assert!(invocations(&events, "to-a").is_empty());
    assert_eq!(invocations(&events, "to-b"), [2]);

    // A target with no edge from the sender fails the run, saying why.
    let (result, _) = h.run(targeted, &"unconnected".to_owned()).await;
    assert_eq!(result.status, RuntimeStatus::Failed);
    let expected = WorkflowError::InvalidTarget {
        executor_id: "router".into(),
        target: "unconnected".into(),
        message_type: "String".into(),
    };
    assert_eq!(result.error.as_deref(), Some(expected.to_string().as_str()));
    h.shutdown().await;
}

// --- a message no executor handles fails the run, naming its type -------

#[derive(Serialize, Deserialize)]
struct Unrouted {
    n: u32,
}

#[executor(id = "sends-unrouted")]
async fn sends_unrouted(n: u32, ctx: &mut WorkflowContext) -> Result<(), ExecutorError> {
    ctx.send_message(&Unrouted { n })
}

#[workflow(name = "unrouted")]
fn unrouted() -> Workflow<u32> {
    WorkflowBuilder::start(sends_unrouted)
        .add_dynamic_edge(sends_unrouted, to_a)
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_no_executor_handles_fails_the_run_instead_of_vanishing() {
    // The same failure meets a stored message whose type another build
    // named differently: routing reads the tag from the stored outcome.
    let h = Harness::new(Registry::new().workflow(unrouted)).await;
    let (result, _) = h.run(unrouted, &7).await;
    assert_eq!(result.status, RuntimeStatus::Failed);
    let expected = WorkflowError::UnknownMessageType {
        executor_id: "sends-unrouted".into(),
        message_type: "Unrouted".into(),
    };
    assert_eq!(result.error.as_deref(), Some(expected.to_string().as_str()));
    h.shutdown().await;
}

// --- shared state: visible next superstep; conflicts are reported -------

#[executor(id = "seed")]
async fn seed(n: u32, ctx: &mut WorkflowContext) -> Result<u32, ExecutorError> {
    ctx.set_state("total", &n)?;
    // An executor sees its own writes at once.
    assert_eq!(ctx.get_state::<u32>("total")?, Some(n));
    Ok(n)
}

#[executor(id = "add-one")]
async fn add_one(n: u32, ctx: &mut WorkflowContext) -> Result<u32, ExecutorError> {
    let total: u32 = ctx.get_state("total")?.unwrap_or_default();
    ctx.set_state("total", &(total + 1))?;
    Ok(n)
}

#[executor(id = "add-two")]
async fn add_two(n: u32, ctx: &mut WorkflowContext) -> Result<u32, ExecutorError> {
    let total: u32 = ctx.get_state("total")?.unwrap_or_default();
    ctx.set_state("total", &(total + 2))?;
    Ok(n)
}

#[executor(id = "report")]
async fn report(n: u32, ctx: &mut WorkflowContext) -> Result<(), ExecutorError> {
    let total: Option<u32> = ctx.get_state("total")?;
    ctx.yield_output(&(n, total))
}

#[workflow(name = "state-chain")]
fn state_chain() -> Workflow<u32> {
    WorkflowBuilder::start(seed).then(add_one).then(report).build()
}

#[workflow(name = "state-conflict")]
fn state_conflict() -> Workflow<u32> {
    WorkflowBuilder::start(seed)
        .add_fan_out(seed, FanOut::new().to(add_one).to(add_two))
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_state_is_visible_in_the_next_superstep() {
    let h = Harness::new(Registry::new().workflow(state_chain)).await;
    let (result, _) = h.run(state_chain, &10).await;
    assert_eq!(
        result.outputs_as::<(u32, Option<u32>)>().unwrap(),
        [(10, Some(11))]
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_writers_of_one_key_in_a_superstep_are_a_reported_conflict() {
    let h = Harness::new(Registry::new().workflow(state_conflict)).await;
    let (result, events) = h.run(state_conflict, &10).await;
    assert_eq!(result.status, RuntimeStatus::Failed);
    let expected = WorkflowError::StateConflict {
        key: "total".into(),
        superstep: 2,
        first: "add-one".into(),
        second: "add-two".into(),
    }
    .to_string();
    assert_eq!(result.error.as_deref(), Some(expected.as_str()));
    assert_eq!(
        events.last(),
        Some(&WorkflowEvent::WorkflowFailed {
            superstep: 2,
            error: expected
        })
    );
    h.shutdown().await;
}

// --- executor failures: executor_failed events and retry policies -------

static FLAKY_CALLS: AtomicU32 = AtomicU32::new(0);

#[executor(id = "flaky", max_attempts = 3, retry_interval = "10ms", backoff = 2.0)]
async fn flaky(n: u32, ctx: &mut WorkflowContext) -> Result<(), ExecutorError> {
    let call = FLAKY_CALLS.fetch_add(1, Ordering::SeqCst) + 1;
    assert_eq!(ctx.attempt(), call);
    if call < 3 {
        return Err(ExecutorError::retryable(format!("flaky failure {call}")));
    }
    ctx.yield_output(&n)
}

#[executor(id = "broken", max_attempts = 2, retry_interval = "5ms")]
async fn broken(n: u32) -> Result<(), ExecutorError> {
    Err(ExecutorError::retryable(format!("cannot handle {n}")))
}

#[executor(id = "hopeless", max_attempts = 5)]
async fn hopeless(n: u32) -> Result<(), ExecutorError> {
    Err(ExecutorError::terminal(format!("{n} is not a document")))
}

#[workflow(name = "flaky")]
fn flaky_workflow() -> Workflow<u32> {
    WorkflowBuilder::start(flaky).build()
}

#[workflow(name = "broken")]
fn broken_workflow() -> Workflow<u32> {
    WorkflowBuilder::start(broken).build()
}

#[workflow(name = "hopeless")]
fn hopeless_workflow() -> Workflow<u32> {
    WorkflowBuilder::start(hopeless).build()
}

fn failures(events: &[WorkflowEvent]) -> Vec<(u32, String, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            WorkflowEvent::ExecutorFailed {
                attempt,
                error,
                will_retry,
                ..
            } => Some((*attempt, error.clone(), *will_retry)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_executor_is_retried_as_its_policy_says() {
    let h = Harness::new(
        Registry::new()
            .workflow(flaky_workflow)
            .workflow(broken_workflow)
            .workflow(hopeless_workflow),
    )
    .await;

    let (result, events) = h.run(flaky_workflow, &7).await;
    assert!(result.is_completed(), "{result:?}");
    assert_eq!(result.outputs_as::<u32>().unwrap(), [7]);
    assert_eq!(
        failures(&events),
        [
            (1, "flaky failure 1".to_owned(), true),
            (2, "flaky failure 2".to_owned(), true)
        ]
    );
    assert_eq!(
        names(&events)
            .iter()
            .filter(|n| **n == "executor_completed")
            .count(),
        1
    );

    let (result, events) = h.run(broken_workflow, &7).await;
    assert_eq!(result.status, RuntimeStatus::Failed);
    assert_eq!(
        failures(&events),
        [
            (1, "cannot handle 7".to_owned(), true),
            (2, "cannot handle 7".to_owned(), false)
        ]
    );
    assert_eq!(
        result.error.unwrap(),
        "executor 'broken' failed in superstep 1 after 2 attempt(s): cannot handle 7"
    );

    // A terminal error is not retried, whatever the policy.
    let (result, events) = h.run(hopeless_workflow, &7).await;
    assert_eq!(result.status, RuntimeStatus::Failed);
    assert_eq!(failures(&events), [(1, "7 is not a document".to_owned(), false)]);
    h.shutdown().await;
}

// --- an executor with several handlers and configuration ----------------

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Text(String);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Number(i64);

struct Formatter {
    prefix: String,
}

#[executor(id = "formatter")]
impl Formatter {
    #[handler]
    async fn on_text(&self, text: Text) -> Result<String, ExecutorError> {
        Ok(format!("{}text {}", self.prefix, text.0))
    }

    #[handler]
    async fn on_number(&self, number: Number, ctx: &mut WorkflowContext) -> Result<String, ExecutorError> {
        ctx.add_event("number_seen", &number.0)?;
        Ok(format!("{}number {}", self.prefix, number.0))
    }
}

#[executor(id = "mixed-source")]
async fn mixed_source(n: i64, ctx: &mut WorkflowContext) -> Result<(), ExecutorError> {
    ctx.send_message(&Text(format!("#{n}")))?;
    ctx.send_message(&Number(n))
}

#[executor(id = "sink")]
async fn sink(line: String, ctx: &mut WorkflowContext) -> Result<(), ExecutorError> {
    ctx.yield_output(&line)
}

#[workflow(name = "formatting")]
fn formatting() -> Workflow<i64> {
    WorkflowBuilder::start(mixed_source)
        .add_dynamic_edge(mixed_source, Formatter { prefix: "> ".into() })
        .from(Formatter {
            prefix: "unused: the first value added under an id runs".into(),
        })
        .then(sink)
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_with_several_handlers_gets_each_type() {
    let h = Harness::new(Registry::new().workflow(formatting)).await;
    let (result, events) = h.run(formatting, &5).await;
    assert!(result.is_completed(), "{result:?}");
    assert_eq!(
        result.outputs_as::<String>().unwrap(),
        ["> text #5", "> number 5"]
    );
    assert!(events.iter().any(|e| matches!(
        e,
        WorkflowEvent::CustomEvent { executor_id, name, data, .. }
            if executor_id == "formatter" && name == "number_seen" && data.as_str() == "5"
    )));
    h.shutdown().await;
}

// --- sub-workflows ------------------------------------------------------

#[executor(id = "shout")]
async fn shout(text: String, ctx: &mut WorkflowContext) -> Result<(), ExecutorError> {
    ctx.add_event("shouting", &text)?;
    ctx.yield_output(&text.to_uppercase())
}

fn shouting() -> Workflow<String> {
    WorkflowBuilder::start(shout).build()
}

#[executor(id = "prepare")]
async fn prepare(text: String) -> Result<String, ExecutorError> {
    Ok(format!("{text}!"))
}

#[executor(id = "collect")]
async fn collect(text: String, ctx: &mut WorkflowContext) -> Result<(), ExecutorError> {
    ctx.yield_output(&format!("collected {text}"))
}

#[workflow(name = "with-sub-workflow")]
fn with_sub_workflow() -> Workflow<String> {
    WorkflowBuilder::start(prepare)
        .then(SubWorkflow::new("shouting", shouting()))
        .then(collect)
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_workflow_runs_as_a_sub_orchestration_and_its_events_reach_the_parent() {
    let h = Harness::new(Registry::new().workflow(with_sub_workflow)).await;
    let (result, events) = h.run(with_sub_workflow, &"hi".to_owned()).await;
    assert!(result.is_completed(), "{result:?}");
    assert_eq!(result.outputs_as::<String>().unwrap(), ["collected HI!"]);

    let started = events.iter().find_map(|e| match e {
        WorkflowEvent::SubWorkflowStarted {
            executor_id,
            instance_id,
            ..
        } => Some((executor_id.clone(), instance_id.clone())),
        _ => None,
    });
    let (node, child) = started.expect("sub_workflow_started");
    assert_eq!(node, "shouting");
    // The child's events, in the parent's stream, tagged with their origin.
    let forwarded: Vec<&WorkflowEvent> = events
        .iter()
        .filter_map(|e| match e {
            WorkflowEvent::SubWorkflowEvent {
                executor_id,
                instance_id,
                event,
            } => {
                assert_eq!((executor_id, instance_id), (&node, &child));
                Some(&**event)
            }
            _ => None,
        })
        .collect();
    assert_eq!(forwarded.first().map(|e| e.name()), Some("workflow_started"));
    assert_eq!(forwarded.last().map(|e| e.name()), Some("workflow_completed"));
    assert!(forwarded.iter().any(|e| matches!(
        e,
        WorkflowEvent::CustomEvent { name, data, .. } if name == "shouting" && data.as_str() == r#""hi!""#
    )));
    // The child is an instance of its own, with its own stream.
    let child_id = durable_core::InstanceId::new(child).unwrap();
    let child_events = h.events(&child_id).await;
    assert_eq!(child_events.len(), forwarded.len());
    h.shutdown().await;
}
