//! Every operation of the orchestration context, through the public API:
//! activities (results, failures, result types, retries), durable timers,
//! external events (buffering, order, timeouts), sub-orchestrations,
//! continue-as-new, custom status and its cap, deterministic time and ids,
//! `is_replaying`, and the deterministic combinators.

mod common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{iid, output_of, wait_custom_status, wait_done, Gate, Rig};
use durable_core::future::{join_all, select, select_all, Either};
use durable_core::prelude::*;
use durable_core::{HistoryEvent, Limits, StatusMeasure};
use serde::{Deserialize, Serialize};
use serde_json::json;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

async fn double(_ctx: ActivityContext, x: i64) -> Result<i64, Infallible> {
    Ok(x * 2)
}

async fn fail(_ctx: ActivityContext, message: String) -> Result<i64, String> {
    Err(message)
}

async fn sleep_then_echo(
    _ctx: ActivityContext,
    (sleep_ms, value): (u64, String),
) -> Result<String, Infallible> {
    tokio::time::sleep(ms(sleep_ms)).await;
    Ok(value)
}

fn basic_activities() -> Registry {
    Registry::new()
        .activity("double", double)
        .activity("fail", fail)
        .activity("sleep_then_echo", sleep_then_echo)
}

// ---------------------------------------------------------------- activities

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct ActivityOutcomes {
    doubled: i64,
    failed_name: String,
    failed_type: String,
    failed_message: String,
    wrong_type_what: String,
}

async fn activity_outcomes(
    ctx: OrchestrationContext,
    x: i64,
) -> Result<ActivityOutcomes, OrchestrationError> {
    let doubled: i64 = ctx.call_activity("double", &x).await?;
    let (failed_name, failed_type, failed_message) = match ctx.call_activity::<i64>("fail", &"boom").await {
        Err(OrchestrationError::ActivityFailed { name, failure }) => {
            (name, failure.error_type, failure.message)
        }
        other => panic!("expected ActivityFailed, got {other:?}"),
    };
    let wrong_type_what = match ctx.call_activity::<String>("double", &x).await {
        Err(OrchestrationError::Deserialization { what, .. }) => what,
        other => panic!("expected Deserialization, got {other:?}"),
    };
    Ok(ActivityOutcomes {
        doubled,
        failed_name,
        failed_type,
        failed_message,
        wrong_type_what,
    })
}

async fn propagate_failure(ctx: OrchestrationContext, _: ()) -> Result<i64, OrchestrationError> {
    ctx.call_activity("fail", &"kaput").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_activity_result_failure_and_wrong_type() {
    let rig = Rig::new(
        basic_activities()
            .orchestration("outcomes", activity_outcomes)
            .orchestration("propagate", propagate_failure),
    )
    .await;
    let id = rig.client.start("outcomes", &21).await.unwrap();
    let out: ActivityOutcomes = output_of(&rig.client, &id).await;
    assert_eq!(
        out,
        ActivityOutcomes {
            doubled: 42,
            failed_name: "fail".into(),
            failed_type: "String".into(),
            failed_message: "boom".into(),
            wrong_type_what: "result of activity 'double'".into(),
        }
    );

    // An activity error returned with `?` fails the instance with details.
    let meta = rig.run("propagate", &()).await;
    assert_eq!(meta.status, RuntimeStatus::Failed);
    let failure = meta.failure.expect("failure details");
    assert!(
        failure.message.contains("activity 'fail' failed") && failure.message.contains("kaput"),
        "{failure:?}"
    );
    assert_eq!(meta.output, None);
    rig.shutdown().await;
}

// ------------------------------------------------------------------- retries

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RetryInput {
    succeed_on: u32,
    max_attempts: u32,
    first_ms: u64,
    coefficient: f64,
    max_interval_ms: u64,
    total_timeout_ms: Option<u64>,
}

async fn retrying(ctx: OrchestrationContext, input: RetryInput) -> Result<u32, OrchestrationError> {
    let mut policy = RetryPolicy::new(input.max_attempts, ms(input.first_ms))
        .backoff_coefficient(input.coefficient)
        .max_interval(ms(input.max_interval_ms));
    if let Some(total) = input.total_timeout_ms {
        policy = policy.total_timeout(ms(total));
    }
    ctx.call_activity_with_retry("flaky", &input.succeed_on, policy)
        .await
}

/// A registry whose `flaky` activity fails until its `succeed_on`-th call,
/// recording when each call started.
fn flaky_registry(calls: Arc<Mutex<Vec<Instant>>>) -> Registry {
    Registry::new().orchestration("retrying", retrying).activity(
        "flaky",
        move |_ctx: ActivityContext, succeed_on: u32| {
            let calls = calls.clone();
            async move {
                let n = {
                    let mut calls = calls.lock().unwrap();
                    calls.push(Instant::now());
                    calls.len() as u32
                };
                if n >= succeed_on {
                    Ok(n)
                } else {
                    Err(format!("attempt {n} failed"))
                }
            }
        },
    )
}

/// The delays of the durable timers in the instance's history: each
/// timer's fire time minus the orchestration time of the turn that made it.
async fn timer_delays(store: &Arc<dyn Store>, id: &InstanceId) -> Vec<Duration> {
    let mut turn_time = None;
    let mut delays = Vec::new();
    for event in store.load_history(id).await.unwrap() {
        match event {
            // The code sees the turn's time to the millisecond.
            HistoryEvent::OrchestratorStarted { timestamp } => {
                turn_time = DateTime::from_timestamp_millis(timestamp.timestamp_millis());
            }
            HistoryEvent::TimerCreated { fire_at, .. } => {
                delays.push((fire_at - turn_time.expect("a turn started")).to_std().unwrap());
            }
            _ => {}
        }
    }
    delays
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_succeeds_after_failures_with_backoff_on_durable_timers() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let rig = Rig::new(flaky_registry(calls.clone())).await;
    let input = RetryInput {
        succeed_on: 3,
        max_attempts: 5,
        first_ms: 100,
        coefficient: 2.0,
        max_interval_ms: 10_000,
        total_timeout_ms: None,
    };
    let id = rig.client.start("retrying", &input).await.unwrap();
    let attempt: u32 = output_of(&rig.client, &id).await;
    assert_eq!(attempt, 3, "succeeds on the third attempt");
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 3);
    // The waits are durable timers of 100 ms, then 200 ms.
    assert_eq!(timer_delays(&rig.store, &id).await, [ms(100), ms(200)]);
    assert!(calls[1] - calls[0] >= ms(100), "{:?}", calls[1] - calls[0]);
    assert!(calls[2] - calls[1] >= ms(200), "{:?}", calls[2] - calls[1]);
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_gives_up_after_max_attempts_with_capped_backoff() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let rig = Rig::new(flaky_registry(calls.clone())).await;
    let input = RetryInput {
        succeed_on: u32::MAX,
        max_attempts: 4,
        first_ms: 50,
        coefficient: 3.0,
        max_interval_ms: 120,
        total_timeout_ms: None,
    };
    let id = rig.client.start("retrying", &input).await.unwrap();
    let meta = wait_done(&rig.client, &id).await;
    assert_eq!(meta.status, RuntimeStatus::Failed);
    assert_eq!(calls.lock().unwrap().len(), 4, "exactly max_attempts calls");
    let failure = meta.failure.unwrap();
    assert!(
        failure.message.contains("attempt 4 failed"),
        "the last failure is reported: {failure:?}"
    );
    // 50 ms, then 150 ms capped at 120 ms, then 450 ms capped at 120 ms.
    assert_eq!(timer_delays(&rig.store, &id).await, [ms(50), ms(120), ms(120)]);
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_stops_at_the_total_timeout() {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let rig = Rig::new(flaky_registry(calls.clone())).await;
    // Attempts at about 0 s, 1 s and 2 s; a fourth would start after 3 s,
    // past the 2.5 s budget, so it is not made.
    let input = RetryInput {
        succeed_on: u32::MAX,
        max_attempts: 10,
        first_ms: 1000,
        coefficient: 1.0,
        max_interval_ms: 1000,
        total_timeout_ms: Some(2500),
    };
    let id = rig.client.start("retrying", &input).await.unwrap();
    let meta = wait_done(&rig.client, &id).await;
    assert_eq!(meta.status, RuntimeStatus::Failed);
    assert_eq!(calls.lock().unwrap().len(), 3);
    assert!(meta.failure.unwrap().message.contains("attempt 3 failed"));
    rig.shutdown().await;
}

// -------------------------------------------------------------------- timers

#[derive(Debug, Serialize, Deserialize)]
struct TimerTimes {
    start: DateTime<Utc>,
    after_delay: DateTime<Utc>,
    fire_at: DateTime<Utc>,
    after_fire_at: DateTime<Utc>,
    after_past_timer: DateTime<Utc>,
}

async fn timers(ctx: OrchestrationContext, delay_ms: u64) -> Result<TimerTimes, OrchestrationError> {
    let start = ctx.current_utc_datetime();
    ctx.create_timer_in(ms(delay_ms)).await?;
    let after_delay = ctx.current_utc_datetime();
    let fire_at = after_delay + chrono::Duration::milliseconds(delay_ms as i64);
    ctx.create_timer(fire_at).await?;
    let after_fire_at = ctx.current_utc_datetime();
    // A timer already due fires at once.
    ctx.create_timer(start).await?;
    let after_past_timer = ctx.current_utc_datetime();
    Ok(TimerTimes {
        start,
        after_delay,
        fire_at,
        after_fire_at,
        after_past_timer,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_timers_fire_and_orchestration_time_advances() {
    let rig = Rig::new(Registry::new().orchestration("timers", timers)).await;
    let began = Instant::now();
    let id = rig.client.start("timers", &300u64).await.unwrap();
    let t: TimerTimes = output_of(&rig.client, &id).await;
    assert!(
        began.elapsed() >= ms(600),
        "two 300 ms timers took {:?}",
        began.elapsed()
    );
    assert!(
        t.after_delay - t.start >= chrono::Duration::milliseconds(300),
        "time after create_timer_in(300 ms) advanced only {:?}",
        t.after_delay - t.start
    );
    assert!(
        t.after_fire_at >= t.fire_at,
        "the turn after a timer runs before its fire time: {} < {}",
        t.after_fire_at,
        t.fire_at
    );
    assert!(t.after_past_timer >= t.after_fire_at);
    rig.shutdown().await;
}

/// Runs `steps` quick activities and returns how far the orchestration's
/// time is ahead of the clock at the end (negative: behind), in ms.
async fn quick_steps(ctx: OrchestrationContext, steps: u32) -> Result<i64, OrchestrationError> {
    for i in 0..steps {
        ctx.call_activity::<i64>("double", &i64::from(i)).await?;
    }
    // Read when the last turn runs: not deterministic, and only returned.
    let ahead = ctx.current_utc_datetime() - Utc::now();
    Ok(ahead.num_milliseconds())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orchestration_time_does_not_run_ahead_of_the_clock() {
    let rig = Rig::new(
        Registry::new()
            .orchestration("quick_steps", quick_steps)
            .activity("double", double),
    )
    .await;
    let began = Instant::now();
    let id = rig.client.start("quick_steps", &400u32).await.unwrap();
    let ahead: i64 = output_of(&rig.client, &id).await;
    // 400 turns in far less than 400 ms: a new millisecond forced on every
    // turn would leave the orchestration's time hundreds of ms ahead.
    assert!(
        ahead <= 0,
        "400 turns in {:?} left the orchestration's time {ahead} ms ahead of the clock",
        began.elapsed()
    );
    let history = rig.store.load_history(&id).await.unwrap();
    let times: Vec<_> = history
        .iter()
        .filter_map(|e| match e {
            HistoryEvent::OrchestratorStarted { timestamp } => Some(*timestamp),
            _ => None,
        })
        .collect();
    assert!(times.len() > 400, "{} turns", times.len());
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "turn times go back");
    rig.shutdown().await;
}

// ----------------------------------------------------------- external events

async fn buffered_events(ctx: OrchestrationContext, _: ()) -> Result<Vec<String>, OrchestrationError> {
    ctx.call_activity::<()>("gate", &()).await?;
    let a1: String = ctx.wait_for_external_event("a").await?;
    let b1: String = ctx.wait_for_external_event("b").await?;
    let a2: String = ctx.wait_for_external_event("a").await?;
    let a3: String = ctx.wait_for_external_event("a").await?;
    Ok(vec![a1, b1, a2, a3])
}

async fn events_buffered_before_the_wait(options: WorkerOptions) {
    let gate = Gate::new();
    let g = gate.clone();
    let rig = Rig::with_options(
        Registry::new()
            .orchestration("buffered", buffered_events)
            .activity("gate", move |_ctx: ActivityContext, (): ()| {
                let g = g.clone();
                async move {
                    g.pass().await;
                    Ok::<_, Infallible>(())
                }
            }),
        options,
    )
    .await;
    let id = rig.client.start("buffered", &()).await.unwrap();
    rig.client.wait_for_start(&id, common::WAIT).await.unwrap();
    // Raised while the orchestration still waits for its activity.
    for (name, data) in [("a", "a1"), ("b", "b1"), ("a", "a2"), ("a", "a3")] {
        rig.client.raise_event(&id, name, &data).await.unwrap();
    }
    gate.open(1);
    let got: Vec<String> = output_of(&rig.client, &id).await;
    assert_eq!(got, ["a1", "b1", "a2", "a3"]);
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_events_raised_before_the_wait_are_buffered_in_order() {
    events_buffered_before_the_wait(WorkerOptions::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_events_buffered_survive_forced_replay() {
    events_buffered_before_the_wait(WorkerOptions::new().cache_capacity(0)).await;
}

async fn wait_three(ctx: OrchestrationContext, _: ()) -> Result<Vec<u32>, OrchestrationError> {
    ctx.set_custom_status(&"waiting")?;
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(ctx.wait_for_external_event::<u32>("n").await?);
    }
    Ok(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_events_are_delivered_in_order_one_per_wait() {
    let rig = Rig::new(Registry::new().orchestration("wait_three", wait_three)).await;
    let id = rig.client.start("wait_three", &()).await.unwrap();
    wait_custom_status(&rig.client, &id, json!("waiting")).await;
    for n in [7u32, 8, 9] {
        rig.client.raise_event(&id, "n", &n).await.unwrap();
    }
    let got: Vec<u32> = output_of(&rig.client, &id).await;
    assert_eq!(got, [7, 8, 9]);
    rig.shutdown().await;
}

async fn with_timeout(ctx: OrchestrationContext, timeout_ms: u64) -> Result<String, OrchestrationError> {
    ctx.set_custom_status(&"waiting")?;
    match ctx
        .wait_for_external_event_with_timeout::<String>("answer", ms(timeout_ms))
        .await
    {
        Ok(v) => Ok(format!("event:{v}")),
        Err(OrchestrationError::Timeout(what)) => {
            ctx.set_custom_status(&"timed out")?;
            // An event that comes after the timeout waits for the next wait.
            let late: String = ctx.wait_for_external_event("answer").await?;
            Ok(format!("timeout:{what};late:{late}"))
        }
        Err(e) => Err(e),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_with_timeout_event_wins() {
    let rig = Rig::new(Registry::new().orchestration("with_timeout", with_timeout)).await;
    // The timer is far away: the instance must complete on the event alone.
    let id = rig.client.start("with_timeout", &600_000u64).await.unwrap();
    wait_custom_status(&rig.client, &id, json!("waiting")).await;
    rig.client.raise_event(&id, "answer", &"42").await.unwrap();
    let out: String = output_of(&rig.client, &id).await;
    assert_eq!(out, "event:42");
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_with_timeout_timeout_wins_and_a_late_event_is_kept() {
    let rig = Rig::new(Registry::new().orchestration("with_timeout", with_timeout)).await;
    let id = rig.client.start("with_timeout", &200u64).await.unwrap();
    wait_custom_status(&rig.client, &id, json!("timed out")).await;
    rig.client.raise_event(&id, "answer", &"late").await.unwrap();
    let out: String = output_of(&rig.client, &id).await;
    assert_eq!(out, "timeout:external event 'answer';late:late");
    rig.shutdown().await;
}

/// The worker is down while an event is raised in time and the timeout
/// then passes: when a worker comes back, the event, which came first,
/// must win the race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_with_timeout_an_event_raised_in_time_wins_after_downtime() {
    let registry = || Registry::new().orchestration("with_timeout", with_timeout);
    let mut rig = Rig::new(registry()).await;
    let id = rig.client.start("with_timeout", &1000u64).await.unwrap();
    wait_custom_status(&rig.client, &id, json!("waiting")).await;
    rig.worker.take().unwrap().shutdown().await.unwrap();
    rig.client.raise_event(&id, "answer", &"in time").await.unwrap();
    tokio::time::sleep(ms(1300)).await;
    rig.worker = Some(Worker::start(rig.store.clone(), registry()).unwrap());
    let out: String = output_of(&rig.client, &id).await;
    assert_eq!(out, "event:in time");
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_at_the_end_of_time_do_not_break_the_worker() {
    let rig = Rig::new(basic_activities().orchestration(
        "far",
        |ctx: OrchestrationContext, (): ()| async move {
            let forever = ctx.create_timer_in(Duration::MAX);
            let end = ctx.create_timer(DateTime::<Utc>::MAX_UTC);
            let quick = ctx.call_activity::<i64>("double", &4);
            let v = match select(select(forever, end), quick).await {
                Either::Left(_) => -1,
                Either::Right((v, _)) => v?,
            };
            Ok::<_, OrchestrationError>(v)
        },
    ))
    .await;
    for _ in 0..2 {
        let id = rig.client.start("far", &()).await.unwrap();
        let v: i64 = output_of(&rig.client, &id).await;
        assert_eq!(v, 8);
    }
    rig.shutdown().await;
}

// -------------------------------------------------------- sub-orchestrations

async fn child(ctx: OrchestrationContext, n: i64) -> Result<i64, String> {
    if n < 0 {
        return Err(format!("negative input {n}"));
    }
    ctx.call_activity("double", &n).await.map_err(|e| e.to_string())
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct ParentOut {
    doubled: i64,
    with_id: i64,
    failed_name: String,
    failed_instance: String,
    failed_message: String,
}

async fn parent(ctx: OrchestrationContext, n: i64) -> Result<ParentOut, OrchestrationError> {
    let doubled: i64 = ctx.call_sub_orchestration("child", &n).await?;
    let with_id: i64 = ctx
        .call_sub_orchestration_with_id("child", iid("explicit-child"), &(n + 1))
        .await?;
    match ctx.call_sub_orchestration::<i64>("child", &-1).await {
        Err(OrchestrationError::SubOrchestrationFailed {
            name,
            instance_id,
            failure,
        }) => Ok(ParentOut {
            doubled,
            with_id,
            failed_name: name,
            failed_instance: instance_id.to_string(),
            failed_message: failure.message,
        }),
        other => panic!("expected SubOrchestrationFailed, got {other:?}"),
    }
}

async fn parent_propagates(ctx: OrchestrationContext, _: ()) -> Result<i64, OrchestrationError> {
    ctx.call_sub_orchestration("child", &-5).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_orchestrations_return_results_and_failures() {
    let rig = Rig::new(
        basic_activities()
            .orchestration("child", child)
            .orchestration("parent", parent)
            .orchestration("parent_propagates", parent_propagates),
    )
    .await;
    let id = rig
        .client
        .start_with(StartOptions::new("parent", &10).unwrap().instance_id(iid("p")))
        .await
        .unwrap();
    let out: ParentOut = output_of(&rig.client, &id).await;
    let execution = rig.client.get_instance(&id).await.unwrap().unwrap().execution_id;
    assert_eq!(
        out,
        ParentOut {
            doubled: 20,
            with_id: 22,
            failed_name: "child".into(),
            failed_instance: format!("p:{execution}:2"),
            failed_message: "negative input -1".into(),
        }
    );
    // The children are instances of their own, with derived or given ids.
    let first = rig
        .client
        .get_instance(&iid(&format!("p:{execution}:0")))
        .await
        .unwrap()
        .expect("child p:0");
    assert_eq!(
        (first.status, first.output_as::<serde_json::Value>().unwrap()),
        (RuntimeStatus::Completed, json!(20))
    );
    assert_eq!(first.input_as::<serde_json::Value>().unwrap(), json!(10));
    let explicit = rig
        .client
        .get_instance(&iid("explicit-child"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(explicit.output_as::<serde_json::Value>().unwrap(), json!(22));
    let failed = rig
        .client
        .get_instance(&iid(&format!("p:{execution}:2")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.status, RuntimeStatus::Failed);
    assert_eq!(failed.failure.unwrap().message, "negative input -1");

    // Returned with `?`, the child's failure fails the parent.
    let meta = rig.run("parent_propagates", &()).await;
    assert_eq!(meta.status, RuntimeStatus::Failed);
    let failure = meta.failure.unwrap();
    assert!(
        failure.message.contains("sub-orchestration 'child'")
            && failure.message.contains("negative input -5"),
        "{failure:?}"
    );
    rig.shutdown().await;
}

async fn looping_child(
    ctx: OrchestrationContext,
    (n, target): (i64, i64),
) -> Result<i64, OrchestrationError> {
    if n < target {
        let next: i64 = ctx.call_activity("double", &n).await?;
        return ctx.continue_as_new(&(next.max(n + 1), target)).await;
    }
    Ok(n)
}

async fn waiting_child(ctx: OrchestrationContext, _: ()) -> Result<String, OrchestrationError> {
    ctx.set_custom_status(&"child waiting")?;
    ctx.wait_for_external_event("never").await
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct SubEdgeCases {
    looped: i64,
    conflict_type: String,
    terminated_type: String,
}

async fn sub_edge_cases(ctx: OrchestrationContext, _: ()) -> Result<SubEdgeCases, OrchestrationError> {
    // A child that continues as new reports its final output.
    let looped: i64 = ctx.call_sub_orchestration("looping_child", &(1, 20)).await?;
    // A child id that a running instance already holds.
    let conflict_type = match ctx
        .call_sub_orchestration_with_id::<String>("waiting_child", iid("busy"), &())
        .await
    {
        Err(OrchestrationError::SubOrchestrationFailed { failure, .. }) => failure.error_type,
        other => format!("unexpected {other:?}"),
    };
    // A child terminated by a client.
    ctx.set_custom_status(&"calling the child to terminate")?;
    let terminated_type = match ctx
        .call_sub_orchestration_with_id::<String>("waiting_child", iid("doomed"), &())
        .await
    {
        Err(OrchestrationError::SubOrchestrationFailed { failure, .. }) => failure.error_type,
        other => format!("unexpected {other:?}"),
    };
    Ok(SubEdgeCases {
        looped,
        conflict_type,
        terminated_type,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_orchestrations_that_continue_as_new_conflict_or_are_terminated() {
    let rig = Rig::new(
        basic_activities()
            .orchestration("looping_child", looping_child)
            .orchestration("waiting_child", waiting_child)
            .orchestration("sub_edge_cases", sub_edge_cases),
    )
    .await;
    let busy = rig
        .client
        .start_with(
            StartOptions::new("waiting_child", &())
                .unwrap()
                .instance_id(iid("busy")),
        )
        .await
        .unwrap();
    wait_custom_status(&rig.client, &busy, json!("child waiting")).await;
    let id = rig.client.start("sub_edge_cases", &()).await.unwrap();
    wait_custom_status(&rig.client, &iid("doomed"), json!("child waiting")).await;
    rig.client
        .terminate(&iid("doomed"), Some("no longer needed"))
        .await
        .unwrap();
    let out: SubEdgeCases = output_of(&rig.client, &id).await;
    assert_eq!(
        out,
        SubEdgeCases {
            looped: 32,
            conflict_type: "InstanceAlreadyExists".into(),
            terminated_type: "Terminated".into(),
        }
    );
    // The running instance that held the id was left alone.
    let meta = rig.client.get_instance(&busy).await.unwrap().unwrap();
    assert_eq!(meta.status, RuntimeStatus::Running);
    rig.shutdown().await;
}

// ----------------------------------------------------------- continue-as-new

/// Calls a child with the default id in each of `rounds` executions, and
/// completes with the children's ids and outputs.
async fn child_each_round(
    ctx: OrchestrationContext,
    (round, rounds, mut seen): (i64, i64, Vec<(String, i64)>),
) -> Result<Vec<(String, i64)>, OrchestrationError> {
    let doubled: i64 = ctx.call_sub_orchestration("child", &round).await?;
    let execution = ctx.execution_id();
    seen.push((format!("{}:{execution}:0", ctx.instance_id()), doubled));
    if round + 1 < rounds {
        return ctx.continue_as_new(&(round + 1, rounds, seen)).await;
    }
    Ok(seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_sub_orchestration_ids_differ_across_continue_as_new() {
    let rig = Rig::new(
        basic_activities()
            .orchestration("child", child)
            .orchestration("child_each_round", child_each_round),
    )
    .await;
    let id = rig
        .client
        .start_with(
            StartOptions::new("child_each_round", &(0, 3, Vec::<(String, i64)>::new()))
                .unwrap()
                .instance_id(iid("rounds")),
        )
        .await
        .unwrap();
    let children: Vec<(String, i64)> = output_of(&rig.client, &id).await;
    assert_eq!(children.iter().map(|c| c.1).collect::<Vec<_>>(), [0, 2, 4]);
    // Each execution's child is an instance of its own, still there with
    // its own output: none replaced another.
    for (child_id, doubled) in &children {
        let meta = rig
            .client
            .get_instance(&iid(child_id))
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("child {child_id} is gone"));
        assert_eq!(
            meta.status,
            RuntimeStatus::Completed,
            "{child_id}: {:?}",
            meta.failure
        );
        assert_eq!(meta.output_as::<i64>().unwrap(), *doubled, "{child_id}");
    }
    let mut ids: Vec<&String> = children.iter().map(|c| &c.0).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3, "one child id per execution: {ids:?}");
    rig.shutdown().await;
}

async fn counter(ctx: OrchestrationContext, (n, target): (i64, i64)) -> Result<i64, OrchestrationError> {
    let doubled: i64 = ctx.call_activity("double", &n).await?;
    ctx.emit_event("iteration", &json!({ "n": n, "doubled": doubled }))?;
    if n < target {
        return ctx.continue_as_new(&(n + 1, target)).await;
    }
    Ok(n)
}

async fn continue_as_new_loops(options: WorkerOptions) {
    let rig = Rig::with_options(basic_activities().orchestration("counter", counter), options).await;
    let id = rig.client.start("counter", &(0, 5)).await.unwrap();
    let first = rig.client.wait_for_start(&id, common::WAIT).await.unwrap();
    let meta = wait_done(&rig.client, &id).await;
    assert_eq!(meta.status, RuntimeStatus::Completed, "{:?}", meta.failure);
    assert_eq!(meta.output_as::<serde_json::Value>().unwrap(), json!(5));
    assert_eq!(
        meta.input_as::<serde_json::Value>().unwrap(),
        json!([5, 5]),
        "the input of the last execution"
    );
    assert_ne!(meta.execution_id, first.execution_id, "a new execution");

    let events = common::read_all(&rig.client, &id, 100).await;
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=6).collect::<Vec<_>>());
    for (n, e) in events.iter().enumerate() {
        assert_eq!(
            e.payload.parse::<serde_json::Value>().unwrap(),
            json!({ "n": n, "doubled": 2 * n })
        );
    }
    let mut executions: Vec<&str> = events.iter().map(|e| e.execution_id.as_str()).collect();
    // The instance may have continued as new before wait_for_start read
    // it: the execution it saw is one of the stream's.
    assert!(
        executions.contains(&first.execution_id.as_str()),
        "{} is one of {executions:?}",
        first.execution_id
    );
    assert_eq!(executions[5], meta.execution_id);
    executions.dedup();
    assert_eq!(executions.len(), 6, "one execution per iteration");
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_as_new_starts_new_executions_with_new_input() {
    continue_as_new_loops(WorkerOptions::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_as_new_with_forced_replay() {
    continue_as_new_loops(WorkerOptions::new().cache_capacity(0)).await;
}

async fn accumulate(ctx: OrchestrationContext, total: u32) -> Result<u32, OrchestrationError> {
    ctx.set_custom_status(&"waiting")?;
    let inc: u32 = ctx.wait_for_external_event("inc").await?;
    let total = total + inc;
    if total >= 15 {
        return Ok(total);
    }
    ctx.continue_as_new(&total).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_raised_during_continue_as_new_reach_the_next_execution() {
    let rig = Rig::new(Registry::new().orchestration("accumulate", accumulate)).await;
    let id = rig.client.start("accumulate", &0u32).await.unwrap();
    wait_custom_status(&rig.client, &id, json!("waiting")).await;
    for inc in 1..=5u32 {
        rig.client.raise_event(&id, "inc", &inc).await.unwrap();
    }
    let total: u32 = output_of(&rig.client, &id).await;
    assert_eq!(total, 15, "no raised event was lost across executions");
    rig.shutdown().await;
}

/// Round 0 takes "go" while events "x" wait unread; it continues as new
/// (keeping them or not, as its input says), and round 1 takes up to three
/// "x", or stops waiting after a timer.
async fn carry_events(
    ctx: OrchestrationContext,
    (round, keep): (u32, bool),
) -> Result<Vec<u32>, OrchestrationError> {
    if round == 0 {
        ctx.set_custom_status(&"waiting")?;
        let _: () = ctx.wait_for_external_event("go").await?;
        let options = durable_core::ContinueAsNewOptions::new().preserve_unprocessed_events(keep);
        return ctx.continue_as_new_with(&(1, keep), options).await;
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        let x = ctx.wait_for_external_event::<u32>("x");
        let timer = ctx.create_timer_in(Duration::from_millis(300));
        match durable_core::future::select(x, timer).await {
            durable_core::future::Either::Left((x, _)) => got.push(x?),
            durable_core::future::Either::Right(_) => break,
        }
    }
    Ok(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_no_wait_took_go_to_the_next_execution_in_order_unless_dropped() {
    let rig = Rig::new(Registry::new().orchestration("carry_events", carry_events)).await;
    for keep in [true, false] {
        let id = rig.client.start("carry_events", &(0, keep)).await.unwrap();
        wait_custom_status(&rig.client, &id, json!("waiting")).await;
        for x in [1u32, 2] {
            rig.client.raise_event(&id, "x", &x).await.unwrap();
        }
        rig.client.raise_event(&id, "go", &()).await.unwrap();
        // Raised as the execution ends or after: after the kept ones.
        rig.client.raise_event(&id, "x", &3u32).await.unwrap();
        let got: Vec<u32> = output_of(&rig.client, &id).await;
        if keep {
            assert_eq!(got, [1, 2, 3], "kept, in the order they were raised");
        } else {
            assert!(
                got.is_empty() || got == [3],
                "dropped: only an event raised after the execution ended remains, got {got:?}"
            );
        }
    }
    rig.shutdown().await;
}

// ------------------------------------------------------------- custom status

async fn status_steps(
    ctx: OrchestrationContext,
    big_chars: usize,
) -> Result<Vec<String>, OrchestrationError> {
    let mut report = Vec::new();
    ctx.set_custom_status(&json!({ "step": 1 }))?;
    match ctx.set_custom_status(&"x".repeat(big_chars)) {
        Ok(()) => report.push("accepted".to_owned()),
        Err(OrchestrationError::CustomStatusTooLarge { size, limit, measure }) => {
            report.push(format!("too large:{size}:{limit}:{measure}"));
        }
        Err(e) => return Err(e),
    }
    // The instance keeps running; a client sees the last accepted status.
    ctx.set_custom_status(&json!({ "step": 2, "report": report }))?;
    let _: () = ctx.wait_for_external_event("go").await?;
    Ok(report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_status_is_visible_and_the_cap_is_a_typed_error() {
    let rig = Rig::new(Registry::new().orchestration("status", status_steps)).await;

    // 8,191 characters + 2 quotes = 8,193 UTF-16 units = 16,386 bytes.
    let id = rig.client.start("status", &8191usize).await.unwrap();
    let expected = json!({ "step": 2, "report": ["too large:16386:16384:UTF-16"] });
    let meta = wait_custom_status(&rig.client, &id, expected).await;
    assert_eq!(meta.status, RuntimeStatus::Running);
    rig.client.raise_event(&id, "go", &()).await.unwrap();
    let report: Vec<String> = output_of(&rig.client, &id).await;
    assert_eq!(report, ["too large:16386:16384:UTF-16"]);

    // 8,190 characters is exactly 16 KiB of UTF-16: accepted.
    let id = rig.client.start("status", &8190usize).await.unwrap();
    wait_custom_status(&rig.client, &id, json!({ "step": 2, "report": ["accepted"] })).await;
    rig.client.raise_event(&id, "go", &()).await.unwrap();
    let report: Vec<String> = output_of(&rig.client, &id).await;
    assert_eq!(report, ["accepted"]);
    rig.shutdown().await;
}

async fn big_status_is_readable(ctx: OrchestrationContext, chars: usize) -> Result<(), OrchestrationError> {
    ctx.set_custom_status(&"y".repeat(chars))?;
    let _: () = ctx.wait_for_external_event("go").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_status_at_the_cap_is_stored_whole() {
    let rig = Rig::new(Registry::new().orchestration("big", big_status_is_readable)).await;
    let id = rig.client.start("big", &8190usize).await.unwrap();
    wait_custom_status(&rig.client, &id, json!("y".repeat(8190))).await;
    rig.client.raise_event(&id, "go", &()).await.unwrap();
    let meta = wait_done(&rig.client, &id).await;
    assert_eq!(meta.status, RuntimeStatus::Completed);
    assert_eq!(
        meta.custom_status_as::<serde_json::Value>().unwrap(),
        Some(json!("y".repeat(8190))),
        "kept after completion"
    );
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_status_cap_is_configurable() {
    let limits = Limits {
        custom_status_max_bytes: 100,
        ..Limits::default()
    };
    let rig = Rig::with_options(
        Registry::new().orchestration("status", status_steps),
        WorkerOptions::new().limits(limits),
    )
    .await;
    // 49 + 2 = 51 UTF-16 units = 102 bytes > 100.
    let id = rig.client.start("status", &49usize).await.unwrap();
    wait_custom_status(
        &rig.client,
        &id,
        json!({ "step": 2, "report": ["too large:102:100:UTF-16"] }),
    )
    .await;
    rig.client.raise_event(&id, "go", &()).await.unwrap();
    wait_done(&rig.client, &id).await;
    rig.shutdown().await;

    // Measured as UTF-8, the same status is 51 bytes and fits.
    let limits = Limits {
        custom_status_max_bytes: 100,
        custom_status_measure: StatusMeasure::Utf8,
        ..Limits::default()
    };
    let rig = Rig::with_options(
        Registry::new().orchestration("status", status_steps),
        WorkerOptions::new().limits(limits),
    )
    .await;
    let id = rig.client.start("status", &49usize).await.unwrap();
    wait_custom_status(&rig.client, &id, json!({ "step": 2, "report": ["accepted"] })).await;
    rig.client.raise_event(&id, "go", &()).await.unwrap();
    wait_done(&rig.client, &id).await;
    rig.shutdown().await;
}

// ------------------------------------- deterministic time, ids, is_replaying

#[derive(Debug, Clone, PartialEq)]
struct Observation {
    instance: String,
    step: u32,
    guid: uuid::Uuid,
    now: DateTime<Utc>,
    replaying: bool,
}

type Observations = Arc<Mutex<Vec<Observation>>>;

fn observing_registry(seen: Observations) -> Registry {
    basic_activities().orchestration("observe", move |ctx: OrchestrationContext, steps: u32| {
        let seen = seen.clone();
        async move {
            let mut out = Vec::new();
            for step in 0..=steps {
                let obs = Observation {
                    instance: ctx.instance_id().to_string(),
                    step,
                    guid: ctx.new_guid(),
                    now: ctx.current_utc_datetime(),
                    replaying: ctx.is_replaying(),
                };
                out.push((obs.guid.to_string(), obs.now));
                seen.lock().unwrap().push(obs);
                if step < steps {
                    ctx.call_activity::<i64>("double", &i64::from(step)).await?;
                }
            }
            Ok::<_, OrchestrationError>(out)
        }
    })
}

/// Runs `observe` and checks that every step saw one guid and one time
/// however often it ran, that only its first run was live, and returns how
/// many times each step ran.
async fn check_observations(options: WorkerOptions) -> Vec<usize> {
    let seen: Observations = Arc::default();
    let rig = Rig::with_options(observing_registry(seen.clone()), options).await;
    let steps = 4;
    let id = rig.client.start("observe", &steps).await.unwrap();
    let out: Vec<(String, DateTime<Utc>)> = output_of(&rig.client, &id).await;
    let other = rig.client.start("observe", &0u32).await.unwrap();
    let other_out: Vec<(String, DateTime<Utc>)> = output_of(&rig.client, &other).await;
    rig.shutdown().await;

    let seen = seen.lock().unwrap().clone();
    let mut runs = Vec::new();
    for step in 0..=steps {
        let obs: Vec<&Observation> = seen
            .iter()
            .filter(|o| o.step == step && o.instance == id.as_str())
            .collect();
        assert!(!obs.is_empty(), "step {step} never ran");
        assert!(!obs[0].replaying, "the first run of step {step} is live");
        for o in &obs[1..] {
            assert!(o.replaying, "later runs of step {step} replay");
            assert_eq!(o.guid, obs[0].guid, "new_guid is stable across replay");
            assert_eq!(o.now, obs[0].now, "current_utc_datetime is stable across replay");
        }
        assert_eq!(out[step as usize], (obs[0].guid.to_string(), obs[0].now));
        runs.push(obs.len());
    }
    let mut guids: Vec<&String> = out.iter().map(|(g, _)| g).collect();
    guids.sort();
    guids.dedup();
    assert_eq!(guids.len(), out.len(), "new_guid differs from call to call");
    // Turns within one millisecond share it (see
    // `orchestration_time_does_not_run_ahead_of_the_clock`).
    assert!(out.windows(2).all(|w| w[0].1 <= w[1].1), "time never goes back");
    assert!(
        !guids.contains(&&other_out[0].0),
        "another instance gets other guids"
    );
    runs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_and_guids_are_stable_and_is_replaying_is_set_under_forced_replay() {
    let runs = check_observations(WorkerOptions::new().cache_capacity(0)).await;
    // Step k runs live in turn k and is replayed in every later turn.
    assert_eq!(runs, [5, 4, 3, 2, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_orchestration_is_not_replayed_between_turns() {
    let runs = check_observations(WorkerOptions::new()).await;
    assert_eq!(runs, [1, 1, 1, 1, 1]);
}

// ----------------------------------------------------------------- combinators

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Combined {
    select_winner: String,
    select_all_winner: (String, usize),
    timer_race: String,
    joined: Vec<String>,
}

async fn combinators(ctx: OrchestrationContext, _: ()) -> Result<Combined, OrchestrationError> {
    let slow = ctx.call_activity::<String>("sleep_then_echo", &(600u64, "slow"));
    let fast = ctx.call_activity::<String>("sleep_then_echo", &(0u64, "fast"));
    let select_winner = match select(slow, fast).await {
        Either::Left((v, _)) | Either::Right((v, _)) => v?,
    };
    // The next step depends on the winner: a replay that picked another
    // winner would schedule a different activity and fail.
    let echoed: String = ctx
        .call_activity("sleep_then_echo", &(0u64, format!("after {select_winner}")))
        .await?;

    let racers =
        [400u64, 0, 200].map(|d| ctx.call_activity::<String>("sleep_then_echo", &(d, format!("r{d}"))));
    let (first, index, _rest) = select_all(racers).await;
    let select_all_winner = (first?, index);

    let timer = ctx.create_timer_in(Duration::from_secs(3600));
    let quick = ctx.call_activity::<String>("sleep_then_echo", &(0u64, "activity"));
    let timer_race = match select(timer, quick).await {
        Either::Left(_) => "timer".to_owned(),
        Either::Right((v, _)) => v?,
    };

    // Completion order is the reverse of argument order.
    let calls =
        (0..5u64).map(|i| ctx.call_activity::<String>("sleep_then_echo", &(50 * (5 - i), format!("j{i}"))));
    let mut joined = join_all(calls).await.into_iter().collect::<Result<Vec<_>, _>>()?;
    joined.push(echoed);
    Ok(Combined {
        select_winner,
        select_all_winner,
        timer_race,
        joined,
    })
}

async fn check_combinators(options: WorkerOptions) {
    let rig = Rig::with_options(
        basic_activities().orchestration("combinators", combinators),
        options,
    )
    .await;
    let id = rig.client.start("combinators", &()).await.unwrap();
    let out: Combined = output_of(&rig.client, &id).await;
    assert_eq!(
        out,
        Combined {
            select_winner: "fast".into(),
            select_all_winner: ("r0".into(), 1),
            timer_race: "activity".into(),
            joined: vec![
                "j0".into(),
                "j1".into(),
                "j2".into(),
                "j3".into(),
                "j4".into(),
                "after fast".into()
            ],
        }
    );
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_all_and_select_are_deterministic() {
    check_combinators(WorkerOptions::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_all_and_select_are_deterministic_under_forced_replay() {
    check_combinators(WorkerOptions::new().cache_capacity(0)).await;
}
