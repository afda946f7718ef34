//! The failure this layer makes impossible (Agent Framework #5745): many
//! executors with kilobytes of typed output each. The stream carries all
//! of it; the live status stays small; the final output holds the
//! workflow outputs only. And the events are typed values that round-trip
//! through JSON.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_workflows::prelude::*;
use agent_workflows::{LiveStatus, SequencedEvent};
use common::{Harness, TIMEOUT};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

/// A typed output of about 4 KB: several fields and a long text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Analysis {
    stage: u32,
    confidence: f64,
    labels: Vec<String>,
    text: String,
}

struct Stage {
    number: u32,
}

#[executor(id = "stage")]
impl Stage {
    #[handler]
    async fn on_analysis(
        &self,
        previous: Analysis,
        ctx: &mut WorkflowContext,
    ) -> Result<Analysis, ExecutorError> {
        let next = Analysis {
            stage: self.number,
            confidence: 0.5 + f64::from(previous.stage) / 1000.0,
            labels: vec![format!("stage-{}", self.number), "analysed".into()],
            text: format!("{:04}", self.number).repeat(1000),
        };
        if self.number == STAGES - 1 {
            ctx.yield_output(&next.stage)?;
        }
        Ok(next)
    }
}

const STAGES: u32 = 50;

fn pipeline() -> Workflow<Analysis> {
    let stage = |number: u32| Stage { number }.with_id(format!("stage-{number}"));
    let mut builder = WorkflowBuilder::start(stage(0));
    for number in 1..STAGES {
        builder = builder.then(stage(number));
    }
    builder.build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_status_stays_small_while_the_stream_carries_every_output() {
    let h = Harness::new(pipeline().register("pipeline", Registry::new())).await;
    let core = h.client.client().clone();
    let input = Analysis {
        stage: 0,
        confidence: 0.0,
        labels: Vec::new(),
        text: String::new(),
    };
    let id = core.start("pipeline", &input).await.unwrap();

    // Sample the live status while the run goes on.
    let largest = Arc::new(AtomicUsize::new(0));
    let samples = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (core, id, largest, samples) = (core.clone(), id.clone(), largest.clone(), samples.clone());
        tokio::spawn(async move {
            loop {
                let metadata = core.get_instance(&id).await.unwrap().unwrap();
                if let Some(status) = &metadata.custom_status {
                    let size = status.as_str().len();
                    largest.fetch_max(size, Ordering::SeqCst);
                    samples.fetch_add(1, Ordering::SeqCst);
                    status
                        .parse::<LiveStatus>()
                        .expect("the live status is a LiveStatus");
                }
                if metadata.status.is_terminal() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    // Watch the stream live, as typed events.
    let events: Vec<SequencedEvent> = h.client.watch(&id, 0).map(Result::unwrap).collect().await;
    sampler.await.unwrap();
    let result = h.client.wait_for_completion(&id, TIMEOUT).await.unwrap();
    assert!(result.is_completed(), "{result:?}");

    assert!(samples.load(Ordering::SeqCst) > 0);
    let largest = largest.load(Ordering::SeqCst);
    assert!(largest < 1024, "the live status reached {largest} bytes");

    // Every executor's 4 KB output is in the stream.
    let outputs: Vec<Analysis> = events
        .iter()
        .filter_map(|e| match &e.event {
            WorkflowEvent::ExecutorCompleted { output, .. } => Some(output.parse::<Analysis>().unwrap()),
            _ => None,
        })
        .collect();
    assert_eq!(outputs.len(), STAGES as usize);
    assert!(outputs
        .iter()
        .enumerate()
        .all(|(i, a)| a.stage == i as u32 && a.text.len() == 4000));
    // Each output is the text its type serialized to, in the type's field
    // order (a `serde_json::Value` on the way would have sorted the keys).
    for e in &events {
        if let WorkflowEvent::ExecutorCompleted { output, .. } = &e.event {
            let typed: Analysis = output.parse().unwrap();
            assert_eq!(output.as_str(), serde_json::to_string(&typed).unwrap());
            assert!(output.as_str().starts_with(r#"{"stage":"#), "{output}");
        }
    }
    let stream_bytes: usize = events
        .iter()
        .map(|e| serde_json::to_string(&e.event).unwrap().len())
        .sum();
    assert!(stream_bytes > 50 * 4000, "{stream_bytes}");
    // Sequence numbers 1, 2, 3, ... without gaps.
    assert!(events.iter().enumerate().all(|(i, e)| e.seq == i as u64 + 1));

    // The final output holds the workflow outputs, not the event log.
    assert_eq!(result.outputs_as::<u32>().unwrap(), [STAGES - 1]);
    let metadata = core.get_instance(&id).await.unwrap().unwrap();
    assert_eq!(
        metadata.output_as::<serde_json::Value>().unwrap(),
        serde_json::json!([STAGES - 1])
    );
    assert_eq!(
        metadata.custom_status_as::<serde_json::Value>().unwrap(),
        Some(serde_json::json!({ "superstep": STAGES, "pending_requests": [] }))
    );
    h.shutdown().await;
}

#[executor(id = "chatty")]
async fn chatty(n: u32, ctx: &mut WorkflowContext) -> Result<u32, ExecutorError> {
    ctx.add_event("progress", &serde_json::json!({ "done": n, "of": 3 }))?;
    ctx.yield_output(&format!("output {n}"))?;
    Ok(n + 1)
}

#[executor(id = "failing")]
async fn failing(n: u32) -> Result<(), ExecutorError> {
    Err(ExecutorError::terminal(format!("no {n}")))
}

#[workflow(name = "chatty")]
fn chatty_workflow() -> Workflow<u32> {
    WorkflowBuilder::start(chatty).then(failing).build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_a_typed_value_that_round_trips_through_json() {
    let h = Harness::new(Registry::new().workflow(chatty_workflow)).await;
    let id = h.client.start(chatty_workflow, &1).await.unwrap();
    h.client.wait_for_completion(&id, TIMEOUT).await.unwrap();
    let page = h.client.client().get_events(&id, 0, 1000).await.unwrap();
    let mut kinds = Vec::new();
    for stored in &page.events {
        let typed = SequencedEvent::from_stream(stored).unwrap();
        // The stream event's name is the event's type tag.
        assert_eq!(stored.name, typed.event.name());
        let json = serde_json::to_string(&typed).unwrap();
        assert_eq!(serde_json::from_str::<SequencedEvent>(&json).unwrap(), typed);
        let json = serde_json::to_value(&typed.event).unwrap();
        assert_eq!(json["type"], typed.event.name());
        assert_eq!(json, stored.payload.parse::<serde_json::Value>().unwrap());
        kinds.push(typed.event.name());
    }
    assert_eq!(
        kinds,
        [
            "workflow_started",
            "superstep_started",
            "executor_invoked",
            "custom_event",
            "workflow_output",
            "executor_completed",
            "superstep_completed",
            "superstep_started",
            "executor_invoked",
            "executor_failed",
            "workflow_failed",
        ]
    );
    h.shutdown().await;
}
