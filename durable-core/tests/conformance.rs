//! The store conformance suite: every test body is written once, takes the
//! store as a parameter, and runs against SQLite (a file) and PostgreSQL
//! (its own schema, so tests run in parallel). The PostgreSQL variants read
//! `DURABLE_TEST_POSTGRES_URL` and say so when they skip for lack of it.

mod common;

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use durable_core::prelude::*;
use durable_core::store::{
    ActivityCompletion, ActivityKey, CommitBatch, NewActivity, PostgresStore, PostgresStoreOptions,
    SqliteStore, Store, TurnCommit, TurnOutcome,
};
use durable_core::{HistoryEvent, InstanceQuery, Payload, StoreError};
use futures::StreamExt;
use serde_json::{json, Value};

use common::{summary, wait_done, WAIT};

/// A database for one test, and a way to open it again as if from another
/// process.
struct Backend {
    store: Arc<dyn Store>,
    kind: Kind,
}

enum Kind {
    Sqlite(tempfile::TempDir),
    Postgres { url: String, schema: String },
}

impl Backend {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open_sqlite(&dir).await;
        Self {
            store,
            kind: Kind::Sqlite(dir),
        }
    }

    async fn postgres() -> Option<Self> {
        let Ok(url) = std::env::var("DURABLE_TEST_POSTGRES_URL") else {
            eprintln!("skipped: DURABLE_TEST_POSTGRES_URL is not set, so this PostgreSQL test does not run");
            return None;
        };
        let schema = format!("test_{}", uuid::Uuid::new_v4().simple());
        let store = open_postgres(&url, &schema).await;
        Some(Self {
            store,
            kind: Kind::Postgres { url, schema },
        })
    }

    /// Another handle to the same database, with its own connections and
    /// notifications, as another process would have.
    async fn reopen(&self) -> Arc<dyn Store> {
        match &self.kind {
            Kind::Sqlite(dir) => open_sqlite(dir).await,
            Kind::Postgres { url, schema } => open_postgres(url, schema).await,
        }
    }

    async fn cleanup(self) {
        if let Kind::Postgres { url, schema } = &self.kind {
            drop(self.store);
            let pool = sqlx::PgPool::connect(url).await.expect("connect for cleanup");
            sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .execute(&pool)
                .await
                .expect("drop the test schema");
        }
    }
}

async fn open_sqlite(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    let path = dir.path().join("conformance.db");
    let options = durable_core::store::SqliteStoreOptions::file(path.to_string_lossy().into_owned())
        .poll_interval(Some(Duration::from_millis(20)));
    Arc::new(SqliteStore::with_options(options).await.expect("sqlite store"))
}

async fn open_postgres(url: &str, schema: &str) -> Arc<dyn Store> {
    let options = PostgresStoreOptions::new(url).schema(schema).max_connections(8);
    Arc::new(
        PostgresStore::with_options(options)
            .await
            .expect("postgres store"),
    )
}

/// Stamps each test body out once per backend.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let backend = super::Backend::sqlite().await;
                    super::$name(&backend).await;
                    backend.cleanup().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(backend) = super::Backend::postgres().await else {
                        return;
                    };
                    super::$name(&backend).await;
                    backend.cleanup().await;
                }
            )*
        }
    };
}

conformance!(
    activities_timers_and_stream,
    external_events_and_their_timeout,
    sub_orchestrations_and_continue_as_new,
    custom_status_and_its_cap,
    terminate_suspend_resume_and_purge,
    listing_with_filters_and_pages,
    thousands_of_events_in_order_with_every_cursor,
    forced_replay_appends_nothing_twice,
    watchers_are_live_and_end_after_the_last_event,
    another_process_sees_commits_live,
    two_workers_share_the_work_exactly_once,
    a_dead_workers_work_is_taken_over,
    a_stalled_workers_late_commit_is_rejected,
    the_store_refuses_a_duplicate_emit,
    bad_operations_get_typed_errors,
    a_reused_id_streams_its_new_events,
    many_turns_commit_together_whole,
    a_released_instance_is_free_for_other_workers,
    a_release_queued_before_a_redo_leaves_the_lease_the_redo_keeps,
    a_late_turn_of_a_replaced_instance_takes_nothing_of_the_new_one,
    a_watcher_of_a_replaced_instance_stops_without_the_new_ones_events,
    an_event_raised_once_is_taken_once,
    starts_at_once_create_each_instance_once,
    a_result_is_delivered_only_while_its_work_item_exists,
    payloads_come_back_as_written,
    a_created_instance_has_one_start_message,
);

// ---------------------------------------------------------------------------
// Orchestrations used by the bodies.

async fn steps(ctx: OrchestrationContext, n: u64) -> Result<u64, OrchestrationError> {
    let mut sum = 0;
    for i in 0..n {
        sum += ctx.call_activity::<u64>("double", &i).await?;
        ctx.emit_event("step", &i)?;
        if i == 0 {
            ctx.create_timer_in(Duration::from_millis(30)).await?;
        }
    }
    Ok(sum)
}

async fn double(_ctx: ActivityContext, i: u64) -> Result<u64, Infallible> {
    Ok(i * 2)
}

async fn waiter(ctx: OrchestrationContext, timeout_ms: u64) -> Result<String, OrchestrationError> {
    ctx.emit_event("waiting", &timeout_ms)?;
    match ctx
        .wait_for_external_event_with_timeout::<String>("go", Duration::from_millis(timeout_ms))
        .await
    {
        Ok(value) => Ok(value),
        Err(OrchestrationError::Timeout(_)) => Ok("timed out".into()),
        Err(e) => Err(e),
    }
}

async fn parent(ctx: OrchestrationContext, n: u64) -> Result<Value, OrchestrationError> {
    let child: u64 = ctx.call_sub_orchestration("steps", &n).await?;
    let failed = ctx.call_sub_orchestration::<()>("fails", &()).await.is_err();
    Ok(json!({ "child": child, "failed": failed }))
}

async fn fails(_ctx: OrchestrationContext, _: ()) -> Result<(), OrchestrationError> {
    Err(OrchestrationError::Timeout("deliberately".into()))
}

async fn counter(ctx: OrchestrationContext, (round, rounds): (u64, u64)) -> Result<u64, OrchestrationError> {
    ctx.emit_event("round", &round)?;
    if round + 1 < rounds {
        return ctx.continue_as_new(&(round + 1, rounds)).await;
    }
    Ok(round)
}

async fn status(ctx: OrchestrationContext, _: ()) -> Result<String, OrchestrationError> {
    ctx.set_custom_status(&"small")?;
    let big = "x".repeat(9_000); // 18,000 bytes of UTF-16
    let refused = matches!(
        ctx.set_custom_status(&big),
        Err(OrchestrationError::CustomStatusTooLarge { .. })
    );
    Ok(format!("refused: {refused}"))
}

async fn burst(ctx: OrchestrationContext, n: u64) -> Result<u64, OrchestrationError> {
    for i in 0..n {
        ctx.emit_event("e", &i)?;
    }
    Ok(n)
}

async fn forever(ctx: OrchestrationContext, _: ()) -> Result<(), OrchestrationError> {
    ctx.emit_event("started", &())?;
    ctx.wait_for_external_event::<()>("never").await
}

async fn answer_then_wait(ctx: OrchestrationContext, _: ()) -> Result<(), OrchestrationError> {
    let answer: String = ctx.wait_for_external_event("go").await?;
    ctx.emit_event("answer", &answer)?;
    ctx.wait_for_external_event::<()>("never").await
}

/// Emits its input, the input back from an activity and the data of an
/// event it waits for, and returns that data: every one a payload passed
/// through as it came.
async fn echo(ctx: OrchestrationContext, input: Payload) -> Result<Payload, OrchestrationError> {
    ctx.emit_event("input", &input)?;
    let back: Payload = ctx.call_activity("same", &input).await?;
    ctx.emit_event("activity", &back)?;
    let more: Payload = ctx.wait_for_external_event("more").await?;
    ctx.emit_event("raised", &more)?;
    Ok(more)
}

async fn same(_ctx: ActivityContext, input: Payload) -> Result<Payload, Infallible> {
    Ok(input)
}

fn registry() -> Registry {
    Registry::new()
        .orchestration("echo", echo)
        .activity("same", same)
        .orchestration("answer_then_wait", answer_then_wait)
        .orchestration("steps", steps)
        .orchestration("waiter", waiter)
        .orchestration("parent", parent)
        .orchestration("fails", fails)
        .orchestration("counter", counter)
        .orchestration("status", status)
        .orchestration("burst", burst)
        .orchestration("forever", forever)
        .activity("double", double)
}

fn start(store: &Arc<dyn Store>, options: WorkerOptions) -> Worker {
    Worker::start_with(store.clone(), registry(), options).expect("worker starts")
}

async fn output<T: serde::de::DeserializeOwned>(client: &Client, id: &InstanceId) -> T {
    common::output_of(client, id).await
}

fn steps_stream(n: u64) -> Vec<(u64, String, Value)> {
    (0..n).map(|i| (i + 1, "step".to_owned(), json!(i))).collect()
}

// ---------------------------------------------------------------------------
// The bodies.

async fn activities_timers_and_stream(b: &Backend) {
    let worker = start(&b.store, WorkerOptions::new());
    let client = Client::new(b.store.clone());
    let id = client.start("steps", &5u64).await.unwrap();
    assert_eq!(output::<u64>(&client, &id).await, 20);
    let events = common::read_all(&client, &id, 100).await;
    assert_eq!(summary(&events), steps_stream(5));
    assert_eq!(client.get_instance(&id).await.unwrap().unwrap().stream_len, 5);
    worker.shutdown().await.unwrap();
}

/// A payload's text is what every reader gets, as it was made: its
/// spacing, a number a float cannot hold exactly, an escape. Through the
/// start, an activity and a raised event, in the stream live and read
/// back, and after the orchestration was replayed from its stored
/// history (no cache: the wait for the event ends its turn).
async fn payloads_come_back_as_written(b: &Backend) {
    const INPUT: &str = r#"{ "big": 18446744073709551616, "x" : [1.0, -0.0, "\u00e9\n"] }"#;
    const RAISED: &str = r#"[ 1e300 , {"k":"v"} ]"#;
    let worker = start(&b.store, WorkerOptions::new().cache_capacity(0));
    let client = Client::new(b.store.clone());
    let id = client
        .start_with(StartOptions::from_json("echo", INPUT).unwrap())
        .await
        .unwrap();
    let mut live = Box::pin(client.watch_events(&id, 0));
    let mut texts = vec![next_text(&mut live).await, next_text(&mut live).await];
    client
        .raise_event(&id, "more", &Payload::from_text(RAISED).unwrap())
        .await
        .unwrap();
    texts.push(next_text(&mut live).await);
    let expected = [("input", INPUT), ("activity", INPUT), ("raised", RAISED)]
        .map(|(name, text)| (name.to_owned(), text.to_owned()));
    assert_eq!(texts, expected, "live");
    let meta = wait_done(&client, &id).await;
    assert_eq!(meta.status, RuntimeStatus::Completed, "{:?}", meta.failure);
    assert_eq!(meta.output_as::<Value>().unwrap(), json!([1e300, { "k": "v" }]));
    let stored: Vec<(String, String)> = common::read_all(&client, &id, 100)
        .await
        .into_iter()
        .map(|e| (e.name, e.payload.as_str().to_owned()))
        .collect();
    assert_eq!(stored, expected, "read back");
    worker.shutdown().await.unwrap();
}

/// The name and payload text of a watch's next event.
async fn next_text<S>(live: &mut S) -> (String, String)
where
    S: futures::Stream<Item = durable_core::Result<durable_core::StreamEvent>> + Unpin,
{
    let event = tokio::time::timeout(WAIT, live.next())
        .await
        .expect("an event in time")
        .expect("the watch goes on")
        .expect("the event reads");
    (event.name, event.payload.as_str().to_owned())
}

/// Sixty starts at once: fifty under ids of their own, nine under one id
/// and one under the id of a finished instance. Each id is created once
/// (eight starts under the shared id are refused), the finished instance is
/// replaced, and every instance created runs.
async fn starts_at_once_create_each_instance_once(b: &Backend) {
    let worker = start(&b.store, WorkerOptions::new());
    let client = Client::new(b.store.clone());
    let options = |id: &str, timeout_ms: u64| {
        StartOptions::new("waiter", &timeout_ms)
            .unwrap()
            .instance_id(common::iid(id))
    };
    let finished = client.start_with(options("finished", 0)).await.unwrap();
    wait_done(&client, &finished).await;
    let starts: Vec<_> = (0..60)
        .map(|i| {
            let id = match i {
                0..=8 => "shared".to_owned(),
                9 => "finished".to_owned(),
                i => format!("own-{i}"),
            };
            let client = client.clone();
            let options = options(&id, 60_000);
            tokio::spawn(async move { client.start_with(options).await })
        })
        .collect();
    let mut created = HashSet::new();
    let mut refused = 0;
    for start in starts {
        match start.await.unwrap() {
            Ok(id) => assert!(created.insert(id.clone()), "{id} created twice"),
            Err(Error::InstanceAlreadyExists(id)) => {
                assert_eq!(id.as_str(), "shared");
                refused += 1;
            }
            Err(e) => panic!("unexpected: {e:?}"),
        }
    }
    assert_eq!(refused, 8);
    assert_eq!(created.len(), 52);
    for id in &created {
        client.raise_event(id, "go", &id.to_string()).await.unwrap();
    }
    for id in &created {
        assert_eq!(output::<String>(&client, id).await, id.to_string());
    }
    worker.shutdown().await.unwrap();
}

/// Sixty instances waiting when the worker starts: their turns commit in
/// large batches (in SQLite, hundreds of history, activity and stream rows
/// go in bound inserts rather than JSON), and every row must be there.
async fn many_turns_commit_together_whole(b: &Backend) {
    let client = Client::new(b.store.clone());
    let ids = futures::future::join_all((0..60).map(|_| client.start("steps", &4u64)))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect::<Vec<_>>();
    let worker = start(&b.store, WorkerOptions::new());
    for id in &ids {
        assert_eq!(output::<u64>(&client, id).await, 12, "{id}");
        let events = common::read_all(&client, id, 100).await;
        assert_eq!(summary(&events), steps_stream(4), "{id}");
        // The history is whole too: a replay would need every row.
        let history = b.store.load_history(id).await.unwrap();
        let count = |f: fn(&HistoryEvent) -> bool| history.iter().filter(|e| f(e)).count();
        let kinds = [
            count(|e| matches!(e, HistoryEvent::ExecutionStarted { .. })),
            count(|e| matches!(e, HistoryEvent::ActivityScheduled { .. })),
            count(|e| matches!(e, HistoryEvent::ActivityCompleted { .. })),
            count(|e| matches!(e, HistoryEvent::TimerCreated { .. })),
            count(|e| matches!(e, HistoryEvent::TimerFired { .. })),
            count(|e| matches!(e, HistoryEvent::ExecutionCompleted { .. })),
        ];
        assert_eq!(kinds, [1, 4, 4, 1, 1, 1], "{id}: {history:?}");
    }
    worker.shutdown().await.unwrap();
}

async fn external_events_and_their_timeout(b: &Backend) {
    let worker = start(&b.store, WorkerOptions::new());
    let client = Client::new(b.store.clone());
    let answered = client.start("waiter", &10_000u64).await.unwrap();
    common::wait_stream_len(&client, &answered, 1).await;
    client.raise_event(&answered, "go", &"hello").await.unwrap();
    assert_eq!(output::<String>(&client, &answered).await, "hello");
    let timed_out = client.start("waiter", &50u64).await.unwrap();
    assert_eq!(output::<String>(&client, &timed_out).await, "timed out");
    worker.shutdown().await.unwrap();
}

async fn sub_orchestrations_and_continue_as_new(b: &Backend) {
    let worker = start(&b.store, WorkerOptions::new());
    let client = Client::new(b.store.clone());
    let id = client.start("parent", &3u64).await.unwrap();
    assert_eq!(
        output::<Value>(&client, &id).await,
        json!({ "child": 6, "failed": true })
    );
    let id = client.start("counter", &(0u64, 4u64)).await.unwrap();
    assert_eq!(output::<u64>(&client, &id).await, 3);
    let events = common::read_all(&client, &id, 100).await;
    let expected: Vec<_> = (0..4u64).map(|r| (r + 1, "round".to_owned(), json!(r))).collect();
    assert_eq!(
        summary(&events),
        expected,
        "numbering continues across continue-as-new"
    );
    let executions: HashSet<&str> = events.iter().map(|e| e.execution_id.as_str()).collect();
    assert_eq!(executions.len(), 4, "one execution per round");
    worker.shutdown().await.unwrap();
}

async fn custom_status_and_its_cap(b: &Backend) {
    let worker = start(&b.store, WorkerOptions::new());
    let client = Client::new(b.store.clone());
    let id = client.start("status", &()).await.unwrap();
    assert_eq!(output::<String>(&client, &id).await, "refused: true");
    let meta = client.get_instance(&id).await.unwrap().unwrap();
    assert_eq!(meta.custom_status_as::<Value>().unwrap(), Some(json!("small")));
    worker.shutdown().await.unwrap();
}

async fn terminate_suspend_resume_and_purge(b: &Backend) {
    let worker = start(&b.store, WorkerOptions::new());
    let client = Client::new(b.store.clone());
    let id = client.start("waiter", &60_000u64).await.unwrap();
    common::wait_stream_len(&client, &id, 1).await;
    client.suspend(&id, None).await.unwrap();
    common::eventually("suspended", || async {
        let meta = client.get_instance(&id).await.unwrap().unwrap();
        (meta.status == RuntimeStatus::Suspended).then_some(())
    })
    .await;
    client.raise_event(&id, "go", &"after resume").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        client.get_instance(&id).await.unwrap().unwrap().status,
        RuntimeStatus::Suspended,
        "messages wait while suspended"
    );
    client.resume(&id, None).await.unwrap();
    assert_eq!(output::<String>(&client, &id).await, "after resume");

    let id = client.start("forever", &()).await.unwrap();
    common::wait_stream_len(&client, &id, 1).await;
    client.terminate(&id, Some("stop")).await.unwrap();
    let meta = wait_done(&client, &id).await;
    assert_eq!(meta.status, RuntimeStatus::Terminated);
    client.purge(&id).await.unwrap();
    assert!(client.get_instance(&id).await.unwrap().is_none());
    assert!(matches!(
        client.get_events(&id, 0, 10).await,
        Err(Error::InstanceNotFound(_))
    ));
    worker.shutdown().await.unwrap();
}

async fn listing_with_filters_and_pages(b: &Backend) {
    let worker = start(&b.store, WorkerOptions::new());
    let client = Client::new(b.store.clone());
    let mut done = Vec::new();
    for i in 0..5u64 {
        done.push(client.start("burst", &i).await.unwrap());
    }
    let running = client.start("forever", &()).await.unwrap();
    for id in &done {
        wait_done(&client, id).await;
    }
    common::wait_stream_len(&client, &running, 1).await;
    let completed = client
        .list_instances(
            InstanceQuery::new()
                .status(RuntimeStatus::Completed)
                .name("burst"),
        )
        .await
        .unwrap();
    assert_eq!(completed.instances.len(), 5);
    let mut seen = Vec::new();
    let mut query = InstanceQuery::new().page_size(2);
    loop {
        let page = client.list_instances(query.clone()).await.unwrap();
        seen.extend(page.instances.into_iter().map(|m| m.instance_id));
        match page.continuation {
            Some(token) => query = query.continuation(token),
            None => break,
        }
    }
    assert_eq!(seen.len(), 6, "paging visits every instance once: {seen:?}");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 6);
    client.terminate(&running, None).await.unwrap();
    worker.shutdown().await.unwrap();
}

async fn thousands_of_events_in_order_with_every_cursor(b: &Backend) {
    const N: u64 = 3_000;
    let worker = start(&b.store, WorkerOptions::new());
    let client = Client::new(b.store.clone());
    let id = client.start("burst", &N).await.unwrap();
    assert_eq!(output::<u64>(&client, &id).await, N);
    let all = common::read_all(&client, &id, 1_000).await;
    let expected: Vec<_> = (0..N).map(|i| (i + 1, "e".to_owned(), json!(i))).collect();
    assert_eq!(summary(&all), expected);
    for after in (0..=N).step_by(97).chain([N - 1, N]) {
        let page = client.get_events(&id, after, 50).await.unwrap();
        let want: Vec<u64> = (after + 1..=(after + 50).min(N)).collect();
        assert_eq!(
            page.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            want,
            "after {after}"
        );
        assert_eq!(page.finished, after + 50 >= N, "finished after {after}");
    }
    worker.shutdown().await.unwrap();
}

async fn forced_replay_appends_nothing_twice(b: &Backend) {
    let worker = start(&b.store, WorkerOptions::new().cache_capacity(0));
    let client = Client::new(b.store.clone());
    let id = client.start("steps", &8u64).await.unwrap();
    assert_eq!(output::<u64>(&client, &id).await, 56);
    let events = common::read_all(&client, &id, 100).await;
    assert_eq!(summary(&events), steps_stream(8));
    worker.shutdown().await.unwrap();
}

async fn watchers_are_live_and_end_after_the_last_event(b: &Backend) {
    let worker = start(&b.store, WorkerOptions::new());
    let client = Client::new(b.store.clone());
    let id = client.start("steps", &6u64).await.unwrap();
    let early = tokio::spawn(
        client
            .watch_events(&id, 0)
            .map(|e| e.unwrap())
            .collect::<Vec<_>>(),
    );
    let events = tokio::time::timeout(WAIT, early)
        .await
        .expect("watcher ends")
        .unwrap();
    assert_eq!(summary(&events), steps_stream(6));
    let late: Vec<_> = client.watch_events(&id, 3).map(|e| e.unwrap()).collect().await;
    assert_eq!(summary(&late), steps_stream(6)[3..].to_vec());
    worker.shutdown().await.unwrap();
}

async fn another_process_sees_commits_live(b: &Backend) {
    // The worker writes through one handle; the watcher reads through
    // another, which learns of commits by notification (PostgreSQL) or by
    // polling (SQLite).
    let other = b.reopen().await;
    let worker = start(&b.store, WorkerOptions::new());
    let writer = Client::new(b.store.clone());
    let reader = Client::new(other);
    let id = writer.start("waiter", &60_000u64).await.unwrap();
    let mut watch = Box::pin(reader.watch_events(&id, 0));
    let first = tokio::time::timeout(WAIT, watch.next())
        .await
        .expect("first event")
        .unwrap()
        .unwrap();
    assert_eq!(first.name, "waiting");
    reader
        .raise_event(&id, "go", &"from the other process")
        .await
        .unwrap();
    let rest: Vec<_> = tokio::time::timeout(WAIT, watch.collect::<Vec<_>>())
        .await
        .expect("the stream ends");
    assert!(rest.is_empty(), "nothing after the first event: {rest:?}");
    assert_eq!(output::<String>(&reader, &id).await, "from the other process");
    worker.shutdown().await.unwrap();
}

async fn two_workers_share_the_work_exactly_once(b: &Backend) {
    let other = b.reopen().await;
    let one = start(&b.store, WorkerOptions::new());
    let two = start(&other, WorkerOptions::new());
    let client = Client::new(b.store.clone());
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(client.start("steps", &4u64).await.unwrap());
    }
    for id in &ids {
        assert_eq!(output::<u64>(&client, id).await, 12);
        let events = common::read_all(&client, id, 100).await;
        assert_eq!(summary(&events), steps_stream(4), "instance {id}");
    }
    one.shutdown().await.unwrap();
    two.shutdown().await.unwrap();
}

async fn a_dead_workers_work_is_taken_over(b: &Backend) {
    let client = Client::new(b.store.clone());
    let id = client.start("steps", &3u64).await.unwrap();
    // A worker claims the instance and dies before it commits.
    let claimed = b
        .store
        .fetch_orchestrations("dead-worker", Duration::from_millis(300), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "the instance is ready");
    let worker = start(&b.store, WorkerOptions::new().lease(Duration::from_millis(300)));
    assert_eq!(output::<u64>(&client, &id).await, 6);
    assert_eq!(
        summary(&common::read_all(&client, &id, 100).await),
        steps_stream(3)
    );
    worker.shutdown().await.unwrap();
}

async fn a_stalled_workers_late_commit_is_rejected(b: &Backend) {
    let client = Client::new(b.store.clone());
    let id = client.start("forever", &()).await.unwrap();
    let lease = Duration::from_millis(200);
    let stalled = b.store.fetch_orchestrations("stalled", lease, 10).await.unwrap();
    assert_eq!(stalled.len(), 1);
    let item = stalled.into_iter().next().unwrap();
    tokio::time::sleep(lease * 2).await;
    // Another worker takes the instance over and runs its first turn.
    let worker = start(&b.store, WorkerOptions::new().lease(lease));
    common::wait_stream_len(&client, &id, 1).await;
    // The stalled worker wakes up and commits its stale turn.
    let outcome = b
        .store
        .commit(
            "stalled",
            lease,
            &batch(common::emitting_turn(&item, vec![(1, 0)])),
        )
        .await
        .unwrap();
    assert_eq!(outcome, [TurnOutcome::Conflict]);
    // A stale turn whose rows collide with no stored key is refused all
    // the same (by the version check, not by a uniqueness violation).
    let outcome = b
        .store
        .commit(
            "stalled",
            lease,
            &batch(common::emitting_turn(&item, vec![(50, 50)])),
        )
        .await
        .unwrap();
    assert_eq!(outcome, [TurnOutcome::Conflict]);
    let events = common::read_all(&client, &id, 100).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].name, "started", "the new owner's event stands");
    client.terminate(&id, None).await.unwrap();
    worker.shutdown().await.unwrap();
}

fn batch(turn: TurnCommit) -> CommitBatch {
    CommitBatch {
        turns: vec![turn],
        ..CommitBatch::default()
    }
}

/// A worker keeps the lease of an instance it holds in memory between
/// turns, and gives it up with a later commit (when it evicts the instance
/// or stops): only then may another worker take it.
async fn a_released_instance_is_free_for_other_workers(b: &Backend) {
    let client = Client::new(b.store.clone());
    let id = client.start("forever", &()).await.unwrap();
    let lease = Duration::from_secs(30);
    let mut items = b.store.fetch_orchestrations("keeper", lease, 10).await.unwrap();
    assert_eq!(items.len(), 1);
    let mut kept = common::emitting_turn(&items.pop().unwrap(), vec![(1, 0)]);
    kept.keep_lease = true;
    let outcome = b.store.commit("keeper", lease, &batch(kept)).await;
    assert_eq!(outcome.unwrap(), [TurnOutcome::Committed]);

    client.raise_event(&id, "poke", &()).await.unwrap();
    let taken = b.store.fetch_orchestrations("other", lease, 10).await.unwrap();
    assert!(taken.is_empty(), "the instance is leased to its keeper");

    let release = CommitBatch {
        release: vec![id.clone()],
        ..CommitBatch::default()
    };
    b.store.commit("keeper", lease, &release).await.unwrap();
    let taken = b.store.fetch_orchestrations("other", lease, 10).await.unwrap();
    assert_eq!(taken.len(), 1, "released, the instance is free");
    assert_eq!(taken[0].instance_id, id);
}

/// A worker that gave an instance up (a turn not written) queues its
/// release; the instance's redone turn may be written in the same batch,
/// keeping the lease. The turn says what the lease is: the release does
/// not clear the lease the turn keeps.
async fn a_release_queued_before_a_redo_leaves_the_lease_the_redo_keeps(b: &Backend) {
    let client = Client::new(b.store.clone());
    let id = client.start("forever", &()).await.unwrap();
    let lease = Duration::from_secs(30);
    let mut items = b.store.fetch_orchestrations("keeper", lease, 10).await.unwrap();
    assert_eq!(items.len(), 1);
    let mut kept = common::emitting_turn(&items.pop().unwrap(), vec![(1, 0)]);
    kept.keep_lease = true;
    let redo = CommitBatch {
        turns: vec![kept],
        release: vec![id.clone()],
        ..CommitBatch::default()
    };
    let outcome = b.store.commit("keeper", lease, &redo).await;
    assert_eq!(outcome.unwrap(), [TurnOutcome::Committed]);

    client.raise_event(&id, "poke", &()).await.unwrap();
    let taken = b.store.fetch_orchestrations("other", lease, 10).await.unwrap();
    assert!(taken.is_empty(), "the instance is still leased to its keeper");
    let own = b.store.fetch_orchestrations("keeper", lease, 10).await.unwrap();
    assert_eq!(own.len(), 1, "and its keeper goes on with it");
}

/// The one item a fetch by `owner` returns for `id`.
async fn fetch_one(
    b: &Backend,
    owner: &str,
    lease: Duration,
    id: &InstanceId,
) -> durable_core::store::OrchestrationWorkItem {
    let items = b.store.fetch_orchestrations(owner, lease, 10).await.unwrap();
    items
        .into_iter()
        .find(|i| i.instance_id == *id)
        .unwrap_or_else(|| panic!("{owner} fetched no work of {id}"))
}

/// A turn that drops the late messages of a terminal instance is written
/// only if the instance is still the one the turn read: once the id is
/// started again, the messages it read may be the new instance's (its
/// start), which must stay. And a turn that ends its instance leaves no
/// message to it (a timer merged from an earlier turn), which would make
/// such late turns.
async fn a_late_turn_of_a_replaced_instance_takes_nothing_of_the_new_one(b: &Backend) {
    let client = Client::new(b.store.clone());
    let lease = Duration::from_secs(30);
    let id = InstanceId::new("replaced-late").unwrap();
    let forever = |id: &InstanceId| StartOptions::new("forever", &()).unwrap().instance_id(id.clone());
    client.start_with(forever(&id)).await.unwrap();
    // The first instance ends, with a timer of an earlier turn merged in.
    let item = fetch_one(b, "w1", lease, &id).await;
    let mut ended = common::emitting_turn(&item, Vec::new());
    let update = ended.update.as_mut().unwrap();
    update.status = RuntimeStatus::Completed;
    update.output = Some(Payload::null());
    let in_an_hour = chrono::Utc::now() + chrono::Duration::hours(1);
    ended.messages.push(durable_core::store::NewMessage {
        instance_id: id.clone(),
        execution_id: Some(item.state.execution_id.clone()),
        event: HistoryEvent::TimerFired {
            id: 0,
            fire_at: in_an_hour,
        },
        visible_at: in_an_hour,
    });
    assert_eq!(
        b.store.commit("w1", lease, &batch(ended)).await.unwrap(),
        [TurnOutcome::Committed]
    );
    assert_eq!(
        b.store.next_wakeup(chrono::Utc::now()).await.unwrap(),
        None,
        "the ended instance keeps no timer"
    );
    // A message reaches it late (a child's result, say), written by
    // another instance's turn.
    let other = client.start("forever", &()).await.unwrap();
    let mut late = common::emitting_turn(&fetch_one(b, "w1", lease, &other).await, Vec::new());
    late.messages.push(durable_core::store::NewMessage {
        instance_id: id.clone(),
        execution_id: None,
        event: HistoryEvent::EventRaised {
            name: "late".into(),
            data: Payload::null(),
        },
        visible_at: chrono::Utc::now(),
    });
    assert_eq!(
        b.store.commit("w1", lease, &batch(late)).await.unwrap(),
        [TurnOutcome::Committed]
    );
    // w1 reads the terminal instance with its late message; meanwhile the
    // id is started again.
    let old = fetch_one(b, "w1", lease, &id).await;
    assert!(old.state.status.is_terminal());
    client.start_with(forever(&id)).await.unwrap();
    let new = fetch_one(b, "w2", Duration::from_millis(1), &id).await;
    assert_eq!(new.state.status, RuntimeStatus::Pending);
    // w1's turn, as if it had read the new instance's start message.
    let mut dropping = common::emitting_turn(&old, Vec::new());
    dropping.update = None;
    dropping.consumed = common::emitting_turn(&new, Vec::new()).consumed;
    assert_eq!(
        b.store.commit("w1", lease, &batch(dropping)).await.unwrap(),
        [TurnOutcome::Conflict],
        "the instance is not the one the turn read"
    );
    // The new instance starts.
    let worker = start(&b.store, WorkerOptions::new());
    let mut events = client.watch_events(&id, 0);
    let first = tokio::time::timeout(WAIT, events.next())
        .await
        .expect("the new instance starts");
    assert_eq!(first.unwrap().unwrap().name, "started");
    client.terminate(&id, None).await.unwrap();
    client.terminate(&other, None).await.unwrap();
    worker.shutdown().await.unwrap();
}

/// An instance starts with one message, its start, whether a client
/// created it (a new id, or a terminal one's) or a turn did (a
/// sub-orchestration, written with the rows the commit read).
async fn a_created_instance_has_one_start_message(b: &Backend) {
    let client = Client::new(b.store.clone());
    let lease = Duration::from_secs(30);
    let started = |id: &str| {
        StartOptions::new("forever", &())
            .unwrap()
            .instance_id(InstanceId::new(id).unwrap())
    };
    client.start_with(started("one-start")).await.unwrap();
    client.start_with(started("one-start-replaced")).await.unwrap();
    let items = b.store.fetch_orchestrations("w1", lease, 10).await.unwrap();
    let item = |id: &str| {
        items
            .iter()
            .find(|i| i.instance_id.as_str() == id)
            .unwrap()
            .clone()
    };
    let parent = item("one-start");
    let mut ended = common::emitting_turn(&item("one-start-replaced"), Vec::new());
    ended.update.as_mut().unwrap().status = RuntimeStatus::Completed;
    assert_eq!(
        b.store.commit("w1", lease, &batch(ended)).await.unwrap(),
        [TurnOutcome::Committed]
    );
    client.start_with(started("one-start-replaced")).await.unwrap();
    let mut turn = common::emitting_turn(&parent, Vec::new());
    let child = |id: &str| durable_core::store::NewInstance {
        instance_id: InstanceId::new(id).unwrap(),
        name: "forever".into(),
        execution_id: format!("{id}-e1"),
        input: Payload::null(),
        parent: Some(durable_core::ParentInstance {
            instance_id: parent.instance_id.clone(),
            execution_id: parent.state.execution_id.clone(),
            task_id: 0,
        }),
        start_at: chrono::Utc::now(),
        created_at: chrono::Utc::now(),
    };
    turn.sub_orchestrations = vec![child("one-start-child-a"), child("one-start-child-b")];
    assert_eq!(
        b.store.commit("w1", lease, &batch(turn)).await.unwrap(),
        [TurnOutcome::Committed]
    );
    let items = b.store.fetch_orchestrations("w2", lease, 10).await.unwrap();
    let mut starts: Vec<(String, usize)> = items
        .iter()
        .map(|i| (i.instance_id.to_string(), i.messages.len()))
        .collect();
    starts.sort();
    assert_eq!(
        starts,
        [
            ("one-start-child-a".to_owned(), 1),
            ("one-start-child-b".to_owned(), 1),
            ("one-start-replaced".to_owned(), 1),
        ]
    );
}

/// `raise_event_once`: of eight clients raising one name at once, one
/// gets through, whether the event still waits in the inbox or the
/// orchestration has taken it; other names are free; the rows go with the
/// instance, so a new instance of the same id takes the name again.
async fn an_event_raised_once_is_taken_once(b: &Backend) {
    let client = Client::new(b.store.clone());
    let id = client.start("answer_then_wait", &()).await.unwrap();
    // No worker yet: every answer would wait in the inbox.
    let results = futures::future::join_all((0..8).map(|i| {
        let client = client.clone();
        let id = id.clone();
        async move {
            (
                i,
                client.raise_event_once(&id, "go", &format!("answer {i}")).await,
            )
        }
    }))
    .await;
    let winners: Vec<_> = results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for (_, result) in &results {
        assert!(
            match result {
                Ok(()) => true,
                Err(Error::EventAlreadyRaised { name, .. }) => name == "go",
                Err(_) => false,
            },
            "{result:?}"
        );
    }
    client.raise_event_once(&id, "other", &()).await.unwrap();

    let worker = start(&b.store, WorkerOptions::new());
    common::wait_stream_len(&client, &id, 1).await;
    let events = common::read_all(&client, &id, 10).await;
    assert_eq!(
        summary(&events),
        [(1, "answer".to_owned(), json!(format!("answer {}", winners[0])))]
    );
    // Taken by the orchestration: still refused.
    assert!(matches!(
        client.raise_event_once(&id, "go", &"late").await,
        Err(Error::EventAlreadyRaised { .. })
    ));

    client.terminate(&id, None).await.unwrap();
    wait_done(&client, &id).await;
    assert!(matches!(
        client.raise_event_once(&id, "never", &()).await,
        Err(Error::InvalidState { .. })
    ));
    let unknown = InstanceId::new("no-such-instance").unwrap();
    assert!(matches!(
        client.raise_event_once(&unknown, "go", &()).await,
        Err(Error::InstanceNotFound(_))
    ));

    // A new instance of the id starts with no names taken.
    let again = client
        .start_with(
            StartOptions::new("answer_then_wait", &())
                .unwrap()
                .instance_id(id.clone()),
        )
        .await
        .unwrap();
    assert_eq!(again, id);
    client.raise_event_once(&id, "go", &"second life").await.unwrap();
    common::wait_stream_len(&client, &id, 1).await;
    let events = common::read_all(&client, &id, 10).await;
    assert_eq!(summary(&events), [(1, "answer".to_owned(), json!("second life"))]);
    client.terminate(&id, None).await.unwrap();
    wait_done(&client, &id).await;
    worker.shutdown().await.unwrap();
}

async fn the_store_refuses_a_duplicate_emit(b: &Backend) {
    let client = Client::new(b.store.clone());
    let id = client.start("forever", &()).await.unwrap();
    let lease = Duration::from_secs(30);
    let claim = || async {
        let mut items = b.store.fetch_orchestrations("tester", lease, 10).await.unwrap();
        assert_eq!(items.len(), 1);
        items.pop().unwrap()
    };
    let item = claim().await;
    let outcome = b
        .store
        .commit(
            "tester",
            lease,
            &batch(common::emitting_turn(&item, vec![(1, 0), (2, 1)])),
        )
        .await;
    assert_eq!(outcome.unwrap(), [TurnOutcome::Committed]);
    // A long stream goes another way into SQLite (bound inserts): the keys
    // must hold there too, even for the last row.
    let long_ending_with = |duplicate: (u64, u64)| {
        let mut stream: Vec<(u64, u64)> = (3..=200).map(|seq| (seq, seq - 1)).collect();
        stream.push(duplicate);
        stream
    };
    for (what, stream) in [
        ("emit index 1 again", vec![(3, 1)]),
        ("seq 2 again", vec![(2, 2)]),
        ("emit index 1 again after 198 new", long_ending_with((201, 1))),
        ("seq 2 again after 198 new", long_ending_with((2, 200))),
    ] {
        client.raise_event(&id, "poke", &()).await.unwrap();
        let item = claim().await;
        let err = b
            .store
            .commit("tester", lease, &batch(common::emitting_turn(&item, stream)))
            .await
            .expect_err(what);
        assert!(matches!(err, StoreError::Conflict(_)), "{what}: {err:?}");
        b.store
            .abandon_orchestration("tester", &id, Duration::ZERO)
            .await
            .unwrap();
        let events = common::read_all(&client, &id, 100).await;
        assert_eq!(
            events
                .iter()
                .map(|e| (e.seq, e.payload.as_str()))
                .collect::<Vec<_>>(),
            [(1, "0"), (2, "1")],
            "{what}: nothing of the refused turn was written"
        );
    }
    client.raise_event(&id, "poke", &()).await.unwrap();
    let item = claim().await;
    let long: Vec<(u64, u64)> = (3..=1_200).map(|seq| (seq, seq - 1)).collect();
    let outcome = b
        .store
        .commit("tester", lease, &batch(common::emitting_turn(&item, long)))
        .await;
    assert_eq!(outcome.unwrap(), [TurnOutcome::Committed]);
    let events = common::read_all(&client, &id, 1_000).await;
    assert_eq!(
        events
            .iter()
            .map(|e| (e.seq, e.payload.as_str().to_owned()))
            .collect::<Vec<_>>(),
        (1..=1_200u64)
            .map(|seq| (seq, (seq - 1).to_string()))
            .collect::<Vec<_>>(),
        "a long stream is written whole and in order"
    );
}

/// A result handed to the inbox counts only for an activity with a work
/// item: one that a written turn scheduled (in an earlier batch or in the
/// same one) and that no result has completed yet. The result of an
/// activity scheduled by a turn that was never written (a worker ran it
/// before its turn was refused) is dropped, and so is a second result of
/// one activity, and a result of another call of the task (one a turn
/// never written made, whose redo scheduled another call under the same
/// task id).
async fn a_result_is_delivered_only_while_its_work_item_exists(b: &Backend) {
    let client = Client::new(b.store.clone());
    let id = client.start("forever", &()).await.unwrap();
    let lease = Duration::from_secs(30);
    let item = b
        .store
        .fetch_orchestrations("tester", lease, 10)
        .await
        .unwrap()
        .pop()
        .unwrap();
    // The key of a call of `double` with input `task_id`.
    let key = |task_id: u64| ActivityKey {
        instance_id: id.clone(),
        execution_id: item.state.execution_id.clone(),
        task_id,
        fingerprint: durable_core::store::call_fingerprint("double", &Payload::new(&task_id).unwrap()),
    };
    // A turn of `item` that schedules task `task_id`, claimed by the tester.
    let scheduling = |item: &durable_core::store::OrchestrationWorkItem, task_id: u64| {
        let mut turn = common::emitting_turn(item, Vec::new());
        turn.activities.push(NewActivity {
            key: key(task_id),
            name: "double".into(),
            input: Payload::new(&task_id).unwrap(),
        });
        turn.claim_activities = true;
        turn
    };
    // A written turn schedules task 1.
    let written = b
        .store
        .commit("tester", lease, &batch(scheduling(&item, 1)))
        .await
        .unwrap();
    assert_eq!(written, [TurnOutcome::Committed]);
    let result = |task_id| ActivityCompletion {
        key: key(task_id),
        event: HistoryEvent::ActivityCompleted {
            id: task_id,
            result: Payload::new(&(task_id * 10)).unwrap(),
        },
    };
    let results = |completions| CommitBatch {
        completions,
        ..CommitBatch::default()
    };
    // Task 1's result from another call (of input 7), then task 2's,
    // scheduled by no written turn, then task 1's own.
    let other_call = ActivityCompletion {
        key: ActivityKey {
            fingerprint: durable_core::store::call_fingerprint("double", &Payload::new(&7).unwrap()),
            ..key(1)
        },
        event: HistoryEvent::ActivityCompleted {
            id: 1,
            result: Payload::new(&70).unwrap(),
        },
    };
    b.store
        .commit("tester", lease, &results(vec![other_call]))
        .await
        .unwrap();
    b.store
        .commit("tester", lease, &results(vec![result(2), result(1)]))
        .await
        .unwrap();
    // A second result of task 1.
    b.store
        .commit("tester", lease, &results(vec![result(1)]))
        .await
        .unwrap();
    let delivered = || async {
        let items = b.store.fetch_orchestrations("tester", lease, 10).await.unwrap();
        assert_eq!(items.len(), 1);
        let item = items.into_iter().next().unwrap();
        let ids: Vec<u64> = item
            .messages
            .iter()
            .filter_map(|m| match m.event {
                HistoryEvent::ActivityCompleted { id, .. } => Some(id),
                _ => None,
            })
            .collect();
        (item, ids)
    };
    let (item, ids) = delivered().await;
    assert_eq!(ids, [1], "task 1's own first result only");
    let task_1 = item.messages.iter().find_map(|m| match &m.event {
        HistoryEvent::ActivityCompleted { id: 1, result } => Some(result.as_str().to_owned()),
        _ => None,
    });
    assert_eq!(task_1.as_deref(), Some("10"), "not the other call's");
    // A turn that schedules task 3, and its result, in one batch.
    let both = CommitBatch {
        turns: vec![scheduling(&item, 3)],
        completions: vec![result(3)],
        ..CommitBatch::default()
    };
    let written = b.store.commit("tester", lease, &both).await.unwrap();
    assert_eq!(written, [TurnOutcome::Committed]);
    assert_eq!(delivered().await.1, [3]);
}

async fn bad_operations_get_typed_errors(b: &Backend) {
    static STARTED: AtomicU64 = AtomicU64::new(0);
    let worker = start(&b.store, WorkerOptions::new());
    let client = Client::new(b.store.clone());
    let missing = InstanceId::new(format!("missing-{}", STARTED.fetch_add(1, Ordering::Relaxed))).unwrap();
    assert!(matches!(
        client.raise_event(&missing, "go", &1).await,
        Err(Error::InstanceNotFound(_))
    ));
    assert!(matches!(
        client.terminate(&missing, None).await,
        Err(Error::InstanceNotFound(_))
    ));
    assert!(matches!(
        client.purge(&missing).await,
        Err(Error::InstanceNotFound(_))
    ));
    let odd = InstanceId::new("orders/2026/'; DROP TABLE instances; --/ünï").unwrap();
    let id = client
        .start_with(
            StartOptions::new("burst", &2u64)
                .unwrap()
                .instance_id(odd.clone()),
        )
        .await
        .unwrap();
    assert_eq!(id, odd);
    assert_eq!(output::<u64>(&client, &id).await, 2);
    assert!(matches!(
        client.raise_event(&id, "go", &1).await,
        Err(Error::InvalidState {
            status: RuntimeStatus::Completed,
            ..
        })
    ));
    let running = client.start("forever", &()).await.unwrap();
    assert!(matches!(
        client
            .start_with(
                StartOptions::new("forever", &())
                    .unwrap()
                    .instance_id(running.clone())
            )
            .await,
        Err(Error::InstanceAlreadyExists(_))
    ));
    assert!(matches!(
        client.purge(&running).await,
        Err(Error::InvalidState { .. })
    ));
    let unknown = client.start("no-such-orchestration", &()).await.unwrap();
    let meta = wait_done(&client, &unknown).await;
    assert_eq!(meta.status, RuntimeStatus::Failed);
    assert_eq!(meta.failure.unwrap().error_type, "UnknownOrchestration");
    client.terminate(&running, None).await.unwrap();
    worker.shutdown().await.unwrap();
}

async fn named_burst(ctx: OrchestrationContext, (name, n): (String, u64)) -> Result<u64, OrchestrationError> {
    for i in 0..n {
        ctx.emit_event(&name, &i)?;
        if name == "new" && i == 0 {
            ctx.wait_for_external_event::<()>("go").await?;
        }
    }
    Ok(n)
}

/// Watchers of an id whose instance was purged and started again get the
/// new instance's events, whatever this process remembers of the old one:
/// here the old events were handed over in memory by this process, and the
/// new instance was made by another.
async fn a_reused_id_streams_its_new_events(b: &Backend) {
    let with_burst = || registry().orchestration("named_burst", named_burst);
    let id = InstanceId::new("reused").unwrap();
    let start = |name: &str, n: u64| {
        StartOptions::new("named_burst", &(name.to_owned(), n))
            .unwrap()
            .instance_id(id.clone())
    };
    // This process keeps what it commits for the id's watchers.
    let _remembered = b.store.changes().subscribe(&id);
    let worker = Worker::start(b.store.clone(), with_burst()).unwrap();
    let client = Client::new(b.store.clone());
    client.start_with(start("old", 5)).await.unwrap();
    let old: Vec<_> = client.watch_events(&id, 0).map(|e| e.unwrap()).collect().await;
    assert_eq!(old.len(), 5);
    worker.shutdown().await.unwrap();

    // Another process purges the id and starts it again.
    let other = b.reopen().await;
    let other_worker = Worker::start(other.clone(), with_burst()).unwrap();
    let other_client = Client::new(other);
    other_client.purge(&id).await.unwrap();
    other_client.start_with(start("new", 3)).await.unwrap();

    let mut watch = client.watch_events(&id, 0);
    let first = tokio::time::timeout(WAIT, watch.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!((first.seq, first.name.as_str()), (1, "new"));
    other_client.raise_event(&id, "go", &()).await.unwrap();
    let rest: Vec<_> = tokio::time::timeout(WAIT, watch.map(|e| e.unwrap()).collect::<Vec<_>>())
        .await
        .unwrap();
    let expected: Vec<_> = (1..3u64).map(|i| (i + 1, "new".to_owned(), json!(i))).collect();
    assert_eq!(summary(&rest), expected);
    other_worker.shutdown().await.unwrap();
}

/// Emits `first` events named `name`, waits for "go", emits `then` more.
async fn emits_in_two_parts(
    ctx: OrchestrationContext,
    (name, first, then): (String, u64, u64),
) -> Result<u64, OrchestrationError> {
    for i in 0..first {
        ctx.emit_event(&name, &i)?;
    }
    ctx.wait_for_external_event::<()>("go").await?;
    for i in first..first + then {
        ctx.emit_event(&name, &i)?;
    }
    Ok(first + then)
}

/// A watcher that falls behind an instance which ends, is purged and is
/// started again under the same id (in this process and from another)
/// stops with a typed error: it never goes on with the new instance's
/// events as if they followed the old one's.
async fn a_watcher_of_a_replaced_instance_stops_without_the_new_ones_events(b: &Backend) {
    let registry = || registry().orchestration("emits_in_two_parts", emits_in_two_parts);
    let id = InstanceId::new("replaced-while-watched").unwrap();
    let start = |name: &str, first: u64, then: u64| {
        StartOptions::new("emits_in_two_parts", &(name.to_owned(), first, then))
            .unwrap()
            .instance_id(id.clone())
    };
    for replaced_by_another_process in [false, true] {
        let worker = Worker::start(b.store.clone(), registry()).unwrap();
        let client = Client::new(b.store.clone());
        client.start_with(start("old", 3, 2)).await.unwrap();
        let mut watch = client.watch_events(&id, 0);
        for seq in 1..=3 {
            let event = tokio::time::timeout(WAIT, watch.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!((event.seq, event.name.as_str()), (seq, "old"));
        }
        // While the watcher is not read: the old instance ends (run by
        // the other process, which this process then hears nothing of) and
        // is purged, and a new one runs under the id, with more events.
        let (other_worker, replacer) = if replaced_by_another_process {
            worker.shutdown().await.unwrap();
            let other = b.reopen().await;
            (
                Worker::start(other.clone(), registry()).unwrap(),
                Client::new(other),
            )
        } else {
            (worker, client.clone())
        };
        replacer.raise_event(&id, "go", &()).await.unwrap();
        wait_done(&replacer, &id).await;
        replacer.purge(&id).await.unwrap();
        replacer.start_with(start("new", 8, 0)).await.unwrap();
        replacer.raise_event(&id, "go", &()).await.unwrap();
        wait_done(&replacer, &id).await;

        let rest: Vec<_> = tokio::time::timeout(WAIT, watch.collect::<Vec<_>>())
            .await
            .unwrap();
        // The old instance's events the watcher could still get, then the
        // typed error: never an event of the new instance.
        let (events, end) = rest.split_at(rest.len().saturating_sub(1));
        for event in events {
            let event = event.as_ref().unwrap();
            assert_eq!(
                event.name, "old",
                "the watcher went on with the new instance: {event:?}"
            );
        }
        assert!(
            matches!(end, [Err(durable_core::Error::InstanceReplaced(_))]),
            "the watcher ends with the typed error: {end:?}"
        );
        replacer.purge(&id).await.unwrap();
        other_worker.shutdown().await.unwrap();
    }
}
