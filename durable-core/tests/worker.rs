//! Workers: graceful shutdown hands claimed work over at once, durable
//! timers and retries outlive the worker that created them, several workers
//! on one database share instances without running a turn twice, the
//! activity concurrency limit holds, and quick activities chain into one
//! commit while a slow one does not hold its turn back.

mod common;
mod faults;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{iid, output_of, read_all, summary, wait_done, wait_stream_len, Gate, Rig};
use durable_core::future::join_all;
use durable_core::prelude::*;
use durable_core::store::TurnOutcome;
use faults::FaultyStore;
use serde_json::{json, Value};

async fn chain(ctx: OrchestrationContext, steps: u64) -> Result<u64, OrchestrationError> {
    let mut sum = 0;
    for i in 0..steps {
        let r: u64 = ctx.call_activity("slow_square", &i).await?;
        ctx.emit_event("step", &json!([i, r]))?;
        sum += r;
    }
    Ok(sum)
}

async fn slow_square(_ctx: ActivityContext, i: u64) -> Result<u64, Infallible> {
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok(i * i)
}

fn registry() -> Registry {
    Registry::new()
        .orchestration("chain", chain)
        .activity("slow_square", slow_square)
}

fn chain_stream(steps: u64) -> Vec<(u64, String, Value)> {
    (0..steps)
        .map(|i| (i + 1, "step".to_owned(), json!([i, i * i])))
        .collect()
}

fn chain_sum(steps: u64) -> u64 {
    (0..steps).map(|i| i * i).sum()
}

async fn file_store(path: &str) -> Arc<dyn Store> {
    Arc::new(SqliteStore::open(path.to_owned()).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_hands_claimed_work_over_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("handoff.db").to_str().unwrap().to_owned();
    let first_store = file_store(&db).await;
    // The default lease is 30 s: the second worker finishing well within
    // that shows the first released what it held.
    let first = Worker::start(first_store.clone(), registry()).unwrap();
    let client = Client::new(first_store);
    let id = client.start("chain", &30u64).await.unwrap();
    wait_stream_len(&client, &id, 5).await;
    first.shutdown().await.unwrap();
    let meta = client.get_instance(&id).await.unwrap().unwrap();
    assert_eq!(meta.status, RuntimeStatus::Running, "stopped mid-run");

    let second_store = file_store(&db).await;
    let second = Worker::start(second_store.clone(), registry()).unwrap();
    let client = Client::new(second_store);
    let meta = client
        .wait_for_completion(&id, Duration::from_secs(15))
        .await
        .unwrap();
    assert_eq!(meta.status, RuntimeStatus::Completed, "{:?}", meta.failure);
    assert_eq!(meta.output_as::<Value>().unwrap(), json!(chain_sum(30)));
    assert_eq!(summary(&read_all(&client, &id, 100).await), chain_stream(30));
    second.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_sharing_a_database_run_each_turn_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shared.db").to_str().unwrap().to_owned();
    let stores = [
        file_store(&db).await,
        file_store(&db).await,
        file_store(&db).await,
    ];
    let workers: Vec<Worker> = stores[..2]
        .iter()
        .map(|s| {
            Worker::start_with(
                s.clone(),
                registry(),
                WorkerOptions::new().orchestration_batch(3).cache_capacity(4),
            )
            .unwrap()
        })
        .collect();
    let client = Client::new(stores[2].clone());
    let mut ids = Vec::new();
    for n in 0..12u64 {
        let id = iid(&format!("shared-{n}"));
        client
            .start_with(StartOptions::new("chain", &8u64).unwrap().instance_id(id.clone()))
            .await
            .unwrap();
        ids.push(id);
    }
    for id in &ids {
        let sum: u64 = output_of(&client, id).await;
        assert_eq!(sum, chain_sum(8));
        assert_eq!(
            summary(&read_all(&client, id, 100).await),
            chain_stream(8),
            "{id}"
        );
    }
    for worker in workers {
        worker.shutdown().await.unwrap();
    }
}

/// A registry whose `probe` activity records the most activities that ran
/// at once.
fn probe_registry(running: Arc<AtomicUsize>, most: Arc<AtomicUsize>) -> Registry {
    Registry::new()
        .orchestration("fan_out", |ctx: OrchestrationContext, n: u64| async move {
            let calls = (0..n).map(|i| ctx.call_activity::<u64>("probe", &i));
            join_all(calls).await.into_iter().collect::<Result<Vec<u64>, _>>()
        })
        .activity("probe", move |_ctx: ActivityContext, i: u64| {
            let (running, most) = (running.clone(), most.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, Infallible>(i)
            }
        })
}

async fn most_at_once(options: WorkerOptions) -> usize {
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let rig = Rig::with_options(probe_registry(running, most.clone()), options).await;
    let id = rig.client.start("fan_out", &6u64).await.unwrap();
    let out: Vec<u64> = output_of(&rig.client, &id).await;
    assert_eq!(out, [0, 1, 2, 3, 4, 5]);
    rig.shutdown().await;
    most.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_concurrency_is_limited() {
    assert_eq!(
        most_at_once(WorkerOptions::new().activity_concurrency(1)).await,
        1
    );
    let most = most_at_once(WorkerOptions::new().activity_concurrency(2)).await;
    assert!((1..=2).contains(&most), "{most}");
    // Without a tight limit the six calls run together.
    assert!(most_at_once(WorkerOptions::new()).await > 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_batches_and_a_tiny_cache_still_run_everything() {
    let rig = Rig::with_options(
        registry(),
        WorkerOptions::new().orchestration_batch(1).cache_capacity(1),
    )
    .await;
    let ids: Vec<InstanceId> = join_all((0..10).map(|_| rig.client.start("chain", &5u64)))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    for id in &ids {
        let meta = wait_done(&rig.client, id).await;
        assert_eq!(
            meta.output_as::<Value>().unwrap(),
            json!(chain_sum(5)),
            "{:?}",
            meta.failure
        );
        assert_eq!(summary(&read_all(&rig.client, id, 100).await), chain_stream(5));
    }
    rig.shutdown().await;
}

async fn sleeper(ctx: OrchestrationContext, _: ()) -> Result<Vec<String>, OrchestrationError> {
    let started = ctx.current_utc_datetime();
    ctx.set_custom_status(&"sleeping")?;
    ctx.create_timer_in(Duration::from_millis(800)).await?;
    let woke = ctx.current_utc_datetime();
    let policy = RetryPolicy::new(3, Duration::from_millis(600));
    let tries: u32 = ctx.call_activity_with_retry("fails_once", &(), policy).await?;
    Ok(vec![
        format!("slept {}", (woke - started).num_milliseconds() >= 800),
        format!("tries {tries}"),
    ])
}

fn sleeper_registry(calls: Arc<AtomicUsize>) -> Registry {
    Registry::new().orchestration("sleeper", sleeper).activity(
        "fails_once",
        move |_ctx: ActivityContext, (): ()| {
            let calls = calls.clone();
            async move {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                if n == 1 {
                    Err("first try fails".to_owned())
                } else {
                    Ok(n as u32)
                }
            }
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_and_retries_outlive_the_worker_that_created_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("timers.db").to_str().unwrap().to_owned();
    let calls = Arc::new(AtomicUsize::new(0));

    let store = file_store(&db).await;
    let first = Worker::start(store.clone(), sleeper_registry(calls.clone())).unwrap();
    let client = Client::new(store);
    let id = client.start("sleeper", &()).await.unwrap();
    common::wait_custom_status(&client, &id, json!("sleeping")).await;
    first.shutdown().await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 0);

    // A new worker (a new process, as far as the store can tell) fires the
    // timer and makes the first attempt, which fails; it stops during the
    // retry delay, and a third worker retries.
    let second = Worker::start(file_store(&db).await, sleeper_registry(calls.clone())).unwrap();
    common::eventually("the first attempt", || async {
        (calls.load(Ordering::SeqCst) >= 1).then_some(())
    })
    .await;
    second.shutdown().await.unwrap();
    let third = Worker::start(file_store(&db).await, sleeper_registry(calls.clone())).unwrap();
    let out: Vec<String> = output_of(&client, &id).await;
    assert_eq!(out, ["slept true", "tries 2"]);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    third.shutdown().await.unwrap();
}

// ------------------------------------------------------------- chained turns

/// Runs `chain` of five quick activities with `options` and returns how
/// many turns of the instance the store wrote.
async fn written_turns_of_a_quick_chain(options: WorkerOptions) -> usize {
    written_turns_of_quick_steps(5, options).await
}

/// Runs `chain` of `steps` quick activities with `options` and returns how
/// many turns of the instance the store wrote.
async fn written_turns_of_quick_steps(steps: u64, options: WorkerOptions) -> usize {
    let store = common::memory_store().await;
    let counting = Arc::new(FaultyStore::new(store.clone()));
    let registry = Registry::new()
        .orchestration("chain", chain)
        .activity("slow_square", |_ctx: ActivityContext, i: u64| async move {
            Ok::<_, Infallible>(i * i)
        });
    let worker = Worker::start_with(counting.clone(), registry, options).unwrap();
    let client = Client::new(store);
    let id = client.start("chain", &steps).await.unwrap();
    let meta = wait_done(&client, &id).await;
    assert_eq!(meta.status, RuntimeStatus::Completed, "{:?}", meta.failure);
    assert_eq!(meta.output_as::<Value>().unwrap(), json!(chain_sum(steps)));
    assert_eq!(summary(&read_all(&client, &id, 100).await), chain_stream(steps));
    worker.shutdown().await.unwrap();
    counting
        .outcomes()
        .iter()
        .filter(|(instance, _, outcome)| instance == id.as_str() && *outcome == TurnOutcome::Committed)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_activities_chain_into_one_commit() {
    // The batch closes as soon as no turn waits for an activity: a long
    // linger does not delay it, and the whole run is one written turn.
    let linger = WorkerOptions::new().linger(Duration::from_secs(10));
    assert_eq!(written_turns_of_a_quick_chain(linger).await, 1);
    // Without a linger the first turn is written at once; the rest chain
    // while it is being written.
    let none = WorkerOptions::new().linger(Duration::ZERO);
    assert!(written_turns_of_a_quick_chain(none).await >= 2);
    // Without a cache every turn replays and is written on its own.
    let uncached = WorkerOptions::new().cache_capacity(0);
    assert_eq!(written_turns_of_a_quick_chain(uncached).await, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_chain_of_quick_activities_is_written_a_few_turns_at_a_time() {
    // 41 turns: a batch merges at most 16 turns of one instance, however
    // long the linger, so the run is written in at least three commits.
    let linger = WorkerOptions::new().linger(Duration::from_secs(10));
    let written = written_turns_of_quick_steps(40, linger).await;
    assert!((3..=41).contains(&written), "{written} commits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_while_a_batch_is_written_does_not_rewind_a_chained_orchestration() {
    // Commits are slow: while the first batch is written, the chain of
    // quick activities fills its next batch to the bound and waits. An
    // event raised for another instance makes the worker fetch, and the
    // store still returns the first instance with its state before that
    // batch (and its start message, consumed by it). The chain must go on
    // from memory, not from that older state.
    let store = common::memory_store().await;
    let slow = Arc::new(FaultyStore::new(store.clone()));
    slow.delay_commits(Duration::from_millis(200));
    let registry = Registry::new()
        .orchestration("chain", chain)
        .activity("slow_square", |_ctx: ActivityContext, i: u64| async move {
            Ok::<_, Infallible>(i * i)
        });
    let worker = Worker::start(slow.clone(), registry).unwrap();
    let client = Client::new(store);
    let id = client.start("chain", &40u64).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let other = client.start("chain", &1u64).await.unwrap();
    // A start is handed to the worker in memory; an event is signalled.
    let fetches = slow.fetches();
    client.raise_event(&other, "poke", &json!(null)).await.unwrap();
    common::eventually("a fetch after the event", || async {
        (slow.fetches() > fetches).then_some(())
    })
    .await;
    let meta = wait_done(&client, &id).await;
    assert_eq!(meta.status, RuntimeStatus::Completed, "{:?}", meta.failure);
    assert_eq!(meta.output_as::<Value>().unwrap(), json!(chain_sum(40)));
    assert_eq!(summary(&read_all(&client, &id, 100).await), chain_stream(40));
    assert_eq!(
        wait_done(&client, &other).await.output_as::<Value>().unwrap(),
        json!(chain_sum(1))
    );
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_waiting_for_a_slow_activity_is_written_without_it() {
    let gate = Gate::new();
    let registry = Registry::new()
        .orchestration("chain", chain)
        .activity("slow_square", {
            let gate = gate.clone();
            move |_ctx: ActivityContext, i: u64| {
                let gate = gate.clone();
                async move {
                    if i == 1 {
                        gate.pass().await;
                    }
                    Ok::<_, Infallible>(i * i)
                }
            }
        });
    let rig = Rig::with_options(registry, WorkerOptions::new().linger(Duration::from_millis(50))).await;
    let id = rig.client.start("chain", &3u64).await.unwrap();
    // Step 0's event is written while step 1's activity waits at the gate.
    wait_stream_len(&rig.client, &id, 1).await;
    let meta = rig.client.get_instance(&id).await.unwrap().unwrap();
    assert_eq!(meta.status, RuntimeStatus::Running);
    assert_eq!(meta.stream_len, 1);
    gate.open(1);
    let meta = wait_done(&rig.client, &id).await;
    assert_eq!(meta.output_as::<Value>().unwrap(), json!(chain_sum(3)));
    assert_eq!(summary(&read_all(&rig.client, &id, 100).await), chain_stream(3));
    rig.shutdown().await;
}

fn quick_registry() -> Registry {
    Registry::new()
        .orchestration("chain", chain)
        .activity("slow_square", |_ctx: ActivityContext, i: u64| async move {
            Ok::<_, Infallible>(i * i)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_started_beside_a_worker_runs_without_being_read_back() {
    // The store hands the instance it has just created to the worker of
    // its process, which runs it without fetching it.
    let store = common::memory_store().await;
    let counting = Arc::new(FaultyStore::new(store.clone()));
    let worker = Worker::start(counting.clone(), quick_registry()).unwrap();
    // The worker looks at the store once as it starts, and takes offers
    // from then on.
    common::eventually("the worker's first look", || async {
        (counting.fetches() > 0).then_some(())
    })
    .await;
    let client = Client::new(store);
    let id = client.start("chain", &5u64).await.unwrap();
    let meta = wait_done(&client, &id).await;
    assert_eq!(meta.output_as::<Value>().unwrap(), json!(chain_sum(5)));
    assert_eq!(summary(&read_all(&client, &id, 100).await), chain_stream(5));
    assert_eq!(counting.fetched(), 0, "the instance was fetched");
    worker.shutdown().await.unwrap();

    // Without a worker in the process, a start is signalled and found by
    // the next worker's fetch.
    let late = client.start("chain", &2u64).await.unwrap();
    let worker = Worker::start(counting.clone(), quick_registry()).unwrap();
    assert_eq!(
        wait_done(&client, &late).await.output_as::<Value>().unwrap(),
        json!(chain_sum(2))
    );
    assert_eq!(counting.fetched(), 1);
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_in_one_process_share_the_instances_started_there() {
    // Starts offered to two workers at once, many at a time: each
    // instance runs once, its stream whole and in order.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("offers.db").to_str().unwrap().to_owned();
    let store = file_store(&db).await;
    let workers = [
        Worker::start_with(
            store.clone(),
            quick_registry(),
            WorkerOptions::new().orchestration_batch(4),
        )
        .unwrap(),
        Worker::start(store.clone(), quick_registry()).unwrap(),
    ];
    let client = Client::new(store.clone());
    let starts = (0..60u64).map(|n| {
        let client = client.clone();
        async move { client.start("chain", &(n % 5 + 1)).await.map(|id| (n, id)) }
    });
    let started = futures::future::join_all(starts).await;
    for started in started {
        let (n, id) = started.unwrap();
        let steps = n % 5 + 1;
        let meta = wait_done(&client, &id).await;
        assert_eq!(meta.status, RuntimeStatus::Completed, "{:?}", meta.failure);
        assert_eq!(meta.output_as::<Value>().unwrap(), json!(chain_sum(steps)));
        assert_eq!(summary(&read_all(&client, &id, 100).await), chain_stream(steps));
    }
    for worker in workers {
        worker.shutdown().await.unwrap();
    }
}

async fn started(_ctx: OrchestrationContext, _: ()) -> Result<&'static str, OrchestrationError> {
    Ok("started")
}

/// With polling off, an idle worker looks at the store again only when
/// signalled or at the store's next wake-up time, which it reads after a
/// fetch that found nothing. An instance whose start is delayed, created
/// while such a read is under way (the read saw the store before it),
/// must still start on time: the worker reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_start_written_while_the_next_wakeup_is_read_starts_on_time() {
    let store = common::memory_store().await;
    let faulty = Arc::new(FaultyStore::new(store.clone()));
    faulty.answer_wakeup_reads_late(Duration::from_millis(300));
    let worker = Worker::start(faulty.clone(), Registry::new().orchestration("started", started)).unwrap();
    let client = Client::new(store);
    // The worker's first look found nothing; its read of the next wake-up
    // time answers 300 ms later, with what it read now: nothing.
    tokio::time::sleep(Duration::from_millis(50)).await;
    for delay_ms in [100, 150] {
        let at = chrono::Utc::now() + chrono::Duration::milliseconds(delay_ms);
        let id = client
            .start_with(StartOptions::new("started", &()).unwrap().start_at(at))
            .await
            .unwrap();
        let meta = client
            .wait_for_completion(&id, Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("the start delayed by {delay_ms} ms did not run: {e}"));
        assert_eq!(meta.status, RuntimeStatus::Completed);
        // Let the worker go idle again, with a read under way.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.shutdown().await.unwrap();
}

async fn quick_chain(ctx: OrchestrationContext, steps: u64) -> Result<u64, OrchestrationError> {
    let mut sum = 0;
    for i in 0..steps {
        sum += ctx.call_activity::<u64>("quick_square", &i).await?;
    }
    Ok(sum)
}

/// Without a cache, no orchestration stays in memory: the result of an
/// activity its turn claimed goes to the instance's inbox. When it comes
/// back before that turn is handed over and the open batch is written in
/// parts (batches of one), it must be written with that turn, not in an
/// earlier batch (where no work item would take it yet, and the work
/// item, claimed by this worker, would wait for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_that_beats_its_turn_to_the_store_is_written_with_it() {
    let registry = Registry::new()
        .orchestration("quick_chain", quick_chain)
        .activity("quick_square", |_ctx: ActivityContext, i: u64| async move {
            Ok::<_, Infallible>(i * i)
        });
    let rig = Rig::with_options(
        registry,
        WorkerOptions::new().orchestration_batch(1).cache_capacity(0),
    )
    .await;
    let ids: Vec<InstanceId> = join_all((0..24).map(|_| rig.client.start("quick_chain", &4u64)))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    for id in &ids {
        let meta = rig
            .client
            .wait_for_completion(id, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{id} stalled: {e}"));
        assert_eq!(meta.output_as::<u64>().unwrap(), 1 + 4 + 9, "{:?}", meta.failure);
    }
    rig.shutdown().await;
}
