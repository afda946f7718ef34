//! The seed's scenario (the Agent Framework's durable workflow host): a
//! run of six or more executor steps, each producing a 1-4 KB output.
//! Accumulated in custom status, as the seed's host does, the outputs hit
//! the 16 KiB cap within the first six steps and the run fails with
//! `CustomStatusTooLarge`; sent to the stream instead, the same run
//! completes with hundreds of KB streamed while custom status stays small.

mod common;

use std::convert::Infallible;

use common::{output_of, read_all, wait_done, Rig};
use durable_core::prelude::*;
use durable_core::Payload;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The output size of step `i`: 1 to 4 KB, varying from step to step.
fn output_size(i: u64) -> usize {
    1024 + (i.wrapping_mul(2_654_435_761) % 3073) as usize
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct ExecutorOutput {
    executor_id: String,
    text: String,
}

/// What executor `i` produces.
fn executor_output(i: u64) -> ExecutorOutput {
    let executor_id = format!("executor-{i}");
    let overhead = serde_json::to_string(&ExecutorOutput {
        executor_id: executor_id.clone(),
        text: String::new(),
    })
    .unwrap()
    .len();
    let word = format!("step{i} ");
    let text: String = word.repeat(output_size(i) / word.len() + 1)[..output_size(i) - overhead].to_owned();
    ExecutorOutput { executor_id, text }
}

async fn run_executor(_ctx: ActivityContext, i: u64) -> Result<ExecutorOutput, Infallible> {
    Ok(executor_output(i))
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
enum Progress {
    /// The seed's workaround: the growing list of outputs in custom status.
    CustomStatus,
    /// Each output as one stream event; custom status holds only the step.
    Stream,
}

async fn workflow(
    ctx: OrchestrationContext,
    (steps, progress): (u64, Progress),
) -> Result<usize, OrchestrationError> {
    let mut accumulated: Vec<ExecutorOutput> = Vec::new();
    for i in 0..steps {
        let output: ExecutorOutput = ctx.call_activity("executor", &i).await?;
        match progress {
            Progress::CustomStatus => {
                accumulated.push(output);
                if let Err(e) = ctx.set_custom_status(&accumulated) {
                    if let OrchestrationError::CustomStatusTooLarge { size, limit, measure } = &e {
                        ctx.emit_event(
                            "status_too_large",
                            &json!({ "step": i, "size": size, "limit": limit, "measure": measure }),
                        )?;
                    }
                    return Err(e);
                }
            }
            Progress::Stream => {
                ctx.emit_event("executor_completed", &output)?;
                ctx.set_custom_status(&json!({ "step": i + 1, "of": steps }))?;
                accumulated.push(output);
            }
        }
    }
    Ok(accumulated.len())
}

fn registry() -> Registry {
    Registry::new()
        .orchestration("workflow", workflow)
        .activity("executor", run_executor)
}

#[test]
fn outputs_are_one_to_four_kb() {
    for i in 0..200 {
        let size = serde_json::to_string(&executor_output(i)).unwrap().len();
        assert!((1024..=4096).contains(&size), "step {i}: {size} bytes");
        assert_eq!(size, output_size(i));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accumulating_outputs_in_custom_status_fails_at_the_16_kib_cap() {
    let rig = Rig::new(registry()).await;
    let id = rig
        .client
        .start("workflow", &(6u64, Progress::CustomStatus))
        .await
        .unwrap();
    let meta = wait_done(&rig.client, &id).await;
    assert_eq!(
        meta.status,
        RuntimeStatus::Failed,
        "six 1-4 KB outputs overflow 16 KiB"
    );

    // The first step whose accumulated list is over 16 KiB of UTF-16.
    let utf16 = |n: u64| {
        let list: Vec<ExecutorOutput> = (0..n).map(executor_output).collect();
        serde_json::to_string(&list).unwrap().encode_utf16().count() * 2
    };
    let failing_step = (0..6)
        .find(|&i| utf16(i + 1) > 16 * 1024)
        .expect("overflows within six steps");
    let size = utf16(failing_step + 1);
    let failure = meta.failure.expect("failure details");
    assert_eq!(
        failure.message,
        format!("custom status is too large: {size} bytes, the limit is 16384 bytes (UTF-16)")
    );
    // The code got the typed error.
    let events = read_all(&rig.client, &id, 10).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].name, "status_too_large");
    assert_eq!(
        events[0].payload.parse::<serde_json::Value>().unwrap(),
        json!({ "step": failing_step, "size": size, "limit": 16384, "measure": "UTF-16" })
    );
    // The last status that fitted is what clients saw.
    let last_fitting: Vec<ExecutorOutput> = (0..failing_step).map(executor_output).collect();
    assert_eq!(
        meta.custom_status,
        Some(Payload::new(&last_fitting).unwrap()),
        "the status as the orchestration wrote it"
    );
    rig.shutdown().await;
}

async fn streamed_run(steps: u64) -> usize {
    let rig = Rig::new(registry()).await;
    let id = rig
        .client
        .start("workflow", &(steps, Progress::Stream))
        .await
        .unwrap();
    let watched = tokio::spawn({
        let client = rig.client.clone();
        let id = id.clone();
        async move {
            use futures::StreamExt;
            client
                .watch_events(&id, 0)
                .map(|e| e.unwrap())
                .collect::<Vec<_>>()
                .await
        }
    });
    let count: usize = output_of(&rig.client, &id).await;
    assert_eq!(count as u64, steps);
    let meta = wait_done(&rig.client, &id).await;
    assert_eq!(
        meta.custom_status_as::<serde_json::Value>().unwrap(),
        Some(json!({ "step": steps, "of": steps }))
    );
    assert_eq!(meta.stream_len, steps);

    let events = read_all(&rig.client, &id, 50).await;
    assert_eq!(
        watched.await.unwrap(),
        events,
        "the watcher saw exactly the stored stream"
    );
    let mut total = 0;
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.seq, i as u64 + 1);
        assert_eq!(event.name, "executor_completed");
        let output: ExecutorOutput = event.payload_as().unwrap();
        assert_eq!(output, executor_output(i as u64));
        total += event.payload.as_str().len();
    }
    rig.shutdown().await;
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_six_steps_complete_when_outputs_go_to_the_stream() {
    let total = streamed_run(6).await;
    assert!(
        total > 16 * 1024,
        "more than the custom status cap was streamed: {total} bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_run_streams_hundreds_of_kb() {
    let total = streamed_run(150).await;
    assert!(total >= 300 * 1024, "{total} bytes streamed");
}
