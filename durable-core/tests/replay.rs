//! Deterministic replay: code that replays differently from its history
//! fails the instance with a `NonDeterminism` failure naming the recorded
//! and the actual step (after a code change between turns, simulated with a
//! flag and with two workers of different code over one SQLite file), and
//! forced replay at every turn (`cache_capacity(0)`) gives exactly the
//! results of a run that never replays. On a SQLite file and on PostgreSQL,
//! a deployment with changed code fails the instance with the
//! non-determinism error and leaves the stream exactly as the old code
//! emitted it, also when the change adds or removes a stream event.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{iid, output_of, read_all, summary, wait_custom_status, wait_done, Rig};
use durable_core::future::{join_all, select, Either};
use durable_core::prelude::*;
use durable_core::store::PostgresStore;
use durable_core::{InstanceMetadata, Payload};
use serde_json::{json, Value};

async fn echo(_ctx: ActivityContext, v: Value) -> Result<Value, Infallible> {
    Ok(v)
}

/// The versions of one orchestration's code: 0 is the original; the
/// others change what it does after its first turn.
fn versioned_registry(version: Arc<AtomicU8>) -> Registry {
    Registry::new()
        .activity("a", echo)
        .activity("b", echo)
        .activity("c", echo)
        .orchestration("versioned", move |ctx: OrchestrationContext, (): ()| {
            let version = version.load(Ordering::SeqCst);
            async move {
                match version {
                    // Original: activity a, then activity c after "go".
                    0 => {
                        ctx.call_activity::<Value>("a", &1).await?;
                    }
                    // Renamed the first activity.
                    1 => {
                        ctx.call_activity::<Value>("b", &1).await?;
                    }
                    // Removed the first activity.
                    2 => {}
                    // Replaced the first activity with a timer.
                    _ => ctx.create_timer_in(Duration::from_millis(1)).await?,
                }
                ctx.set_custom_status(&"waiting")?;
                let _: () = ctx.wait_for_external_event("go").await?;
                ctx.call_activity::<Value>("c", &2).await?;
                Ok::<_, OrchestrationError>("done")
            }
        })
}

/// Runs version 0 until it waits for "go", switches the code to `version`,
/// lets the instance go on and returns how it ended.
async fn run_changed_code(version: u8) -> InstanceMetadata {
    let v = Arc::new(AtomicU8::new(0));
    let rig = Rig::with_options(
        versioned_registry(v.clone()),
        WorkerOptions::new().cache_capacity(0),
    )
    .await;
    let id = rig.client.start("versioned", &()).await.unwrap();
    wait_custom_status(&rig.client, &id, json!("waiting")).await;
    v.store(version, Ordering::SeqCst);
    rig.client.raise_event(&id, "go", &()).await.unwrap();
    let meta = wait_done(&rig.client, &id).await;

    // The worker goes on serving other instances.
    v.store(0, Ordering::SeqCst);
    let other = rig.client.start("versioned", &()).await.unwrap();
    wait_custom_status(&rig.client, &other, json!("waiting")).await;
    rig.client.raise_event(&other, "go", &()).await.unwrap();
    let out: String = output_of(&rig.client, &other).await;
    assert_eq!(out, "done");
    rig.shutdown().await;
    meta
}

fn non_determinism_message(meta: &InstanceMetadata) -> String {
    assert_eq!(meta.status, RuntimeStatus::Failed, "output {:?}", meta.output);
    let failure = meta.failure.clone().expect("failure details");
    assert_eq!(failure.error_type, "NonDeterminism", "{failure:?}");
    failure.message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_code_replays_to_completion() {
    let meta = run_changed_code(0).await;
    assert_eq!(meta.status, RuntimeStatus::Completed, "{:?}", meta.failure);
    assert_eq!(meta.output_as::<Value>().unwrap(), json!("done"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_step_fails_with_non_determinism_naming_both_steps() {
    let message = non_determinism_message(&run_changed_code(1).await);
    assert!(
        message.contains("history has activity 'a' (task 0) but the code scheduled activity 'b' (task 0)"),
        "{message}"
    );
    assert!(
        message.contains("'versioned'"),
        "names the orchestration: {message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_step_fails_with_non_determinism() {
    let message = non_determinism_message(&run_changed_code(2).await);
    assert!(
        message.contains("history has activity 'a' (task 0) but the code did not schedule it"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_of_another_kind_fails_with_non_determinism() {
    let message = non_determinism_message(&run_changed_code(3).await);
    assert!(
        message.contains("history has activity 'a' (task 0) but the code scheduled timer (task 0)"),
        "{message}"
    );
}

/// A new deployment: the first worker runs version 0 and stops; a second
/// worker, with other code and its own connection to the same file, takes
/// the instance over.
async fn redeploy(version: u8) -> InstanceMetadata {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("redeploy.db").to_str().unwrap().to_owned();

    let store_v0: Arc<dyn Store> = Arc::new(SqliteStore::open(path.clone()).await.unwrap());
    let v0 = Worker::start(store_v0.clone(), versioned_registry(Arc::new(AtomicU8::new(0)))).unwrap();
    let client = Client::new(store_v0.clone());
    let id = client
        .start_with(
            StartOptions::new("versioned", &())
                .unwrap()
                .instance_id(iid("deployed")),
        )
        .await
        .unwrap();
    wait_custom_status(&client, &id, json!("waiting")).await;
    v0.shutdown().await.unwrap();

    let store_v1: Arc<dyn Store> = Arc::new(SqliteStore::open(path).await.unwrap());
    let v1 = Worker::start(
        store_v1.clone(),
        versioned_registry(Arc::new(AtomicU8::new(version))),
    )
    .unwrap();
    let client = Client::new(store_v1);
    client.raise_event(&id, "go", &()).await.unwrap();
    let meta = wait_done(&client, &id).await;
    v1.shutdown().await.unwrap();
    meta
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_worker_with_the_same_code_continues_from_the_file() {
    let meta = redeploy(0).await;
    assert_eq!(meta.status, RuntimeStatus::Completed, "{:?}", meta.failure);
    assert_eq!(meta.output_as::<Value>().unwrap(), json!("done"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_worker_with_changed_code_fails_the_instance_with_non_determinism() {
    let message = non_determinism_message(&redeploy(1).await);
    assert!(
        message.contains("history has activity 'a' (task 0) but the code scheduled activity 'b' (task 0)"),
        "{message}"
    );
}

// --------------------------------------------------------------- forced replay

async fn child(ctx: OrchestrationContext, n: u64) -> Result<u64, OrchestrationError> {
    ctx.emit_event("child", &n)?;
    let v: Value = ctx.call_activity("a", &(n * 3)).await?;
    Ok(v.as_u64().unwrap_or_default())
}

/// Something of everything: activities, fan-out, a race, a timer, an
/// external event, a sub-orchestration, emits, custom status and one
/// continue-as-new.
async fn everything(ctx: OrchestrationContext, round: u64) -> Result<Value, OrchestrationError> {
    let mut log = Vec::new();
    ctx.emit_event("round", &round)?;
    let first: Value = ctx.call_activity("a", &json!({ "round": round })).await?;
    log.push(first);
    let fan = (0..4u64).map(|i| ctx.call_activity::<Value>("b", &(round * 10 + i)));
    for v in join_all(fan).await {
        let v = v?;
        ctx.emit_event("fan", &v)?;
        log.push(v);
    }
    ctx.set_custom_status(&json!({ "round": round, "stage": "race" }))?;
    let slow_timer = ctx.create_timer_in(Duration::from_secs(3600));
    let act = ctx.call_activity::<Value>("c", &"race");
    match select(slow_timer, act).await {
        Either::Left(_) => log.push(json!("timer won")),
        Either::Right((v, _)) => log.push(v?),
    }
    ctx.create_timer_in(Duration::from_millis(20)).await?;
    ctx.set_custom_status(&json!({ "round": round, "stage": "waiting" }))?;
    let ev: Value = ctx.wait_for_external_event("ev").await?;
    ctx.emit_event("got", &ev)?;
    log.push(ev);
    let sub: u64 = ctx.call_sub_orchestration("child", &(round + 1)).await?;
    log.push(json!(sub));
    for i in 0..25u64 {
        ctx.emit_event("burst", &i)?;
    }
    if round == 0 {
        return ctx.continue_as_new(&1).await;
    }
    ctx.set_custom_status(&json!({ "round": round, "stage": "done" }))?;
    Ok(json!(log))
}

async fn run_everything(options: WorkerOptions) -> (Payload, Option<Payload>, Vec<(u64, String, Value)>) {
    let rig = Rig::with_options(
        Registry::new()
            .activity("a", echo)
            .activity("b", echo)
            .activity("c", echo)
            .orchestration("everything", everything)
            .orchestration("child", child),
        options,
    )
    .await;
    let id = rig.client.start("everything", &0u64).await.unwrap();
    for round in 0..2 {
        wait_custom_status(&rig.client, &id, json!({ "round": round, "stage": "waiting" })).await;
        rig.client
            .raise_event(&id, "ev", &json!({ "ev": round }))
            .await
            .unwrap();
    }
    let meta = wait_done(&rig.client, &id).await;
    assert_eq!(meta.status, RuntimeStatus::Completed, "{:?}", meta.failure);
    let events = read_all(&rig.client, &id, 7).await;
    assert_eq!(meta.stream_len, events.len() as u64);
    rig.shutdown().await;
    (meta.output.unwrap(), meta.custom_status, summary(&events))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_replay_at_every_turn_gives_identical_results() {
    let cached = run_everything(WorkerOptions::new()).await;
    let replayed = run_everything(WorkerOptions::new().cache_capacity(0)).await;
    assert_eq!(cached, replayed);

    // And the results are the ones the code means.
    let (output, custom_status, stream) = cached;
    assert_eq!(
        output.parse::<Value>().unwrap(),
        json!([{ "round": 1 }, 10, 11, 12, 13, "race", { "ev": 1 }, 6])
    );
    assert_eq!(
        custom_status.map(|status| status.parse::<Value>().unwrap()),
        Some(json!({ "round": 1, "stage": "done" }))
    );
    let mut expected = Vec::new();
    for round in 0..2u64 {
        expected.push(("round".to_owned(), json!(round)));
        for i in 0..4 {
            expected.push(("fan".to_owned(), json!(round * 10 + i)));
        }
        expected.push(("got".to_owned(), json!({ "ev": round })));
        expected.extend((0..25).map(|i| ("burst".to_owned(), json!(i))));
    }
    let expected: Vec<(u64, String, Value)> = expected
        .into_iter()
        .enumerate()
        .map(|(i, (n, p))| (i as u64 + 1, n, p))
        .collect();
    assert_eq!(stream, expected);
}

// ------------------------------------------ non-determinism on both stores
//
// A deployment with changed code takes over a running instance from the
// database, on a SQLite file and on PostgreSQL (`DURABLE_TEST_POSTGRES_URL`,
// a schema of its own; skipped, saying so, when it is not set). The
// instance fails with the non-determinism error, and its stream stays
// exactly what the old code emitted: nothing lost, nothing appended twice
// by the replay.

/// A database opened twice, by two deployments.
enum Db {
    Sqlite(tempfile::TempDir),
    Postgres { url: String, schema: String },
}

impl Db {
    fn sqlite() -> Self {
        Self::Sqlite(tempfile::tempdir().unwrap())
    }

    fn postgres() -> Option<Self> {
        let Ok(url) = std::env::var("DURABLE_TEST_POSTGRES_URL") else {
            eprintln!("skipped: DURABLE_TEST_POSTGRES_URL is not set, so this PostgreSQL test does not run");
            return None;
        };
        let schema = format!("replay_{}", uuid::Uuid::new_v4().simple());
        Some(Self::Postgres { url, schema })
    }

    async fn open(&self) -> Arc<dyn Store> {
        match self {
            Self::Sqlite(dir) => {
                let path = dir.path().join("deploy.db").to_str().unwrap().to_owned();
                Arc::new(SqliteStore::open(path).await.unwrap())
            }
            Self::Postgres { url, schema } => {
                let options = durable_core::store::PostgresStoreOptions::new(url)
                    .schema(schema)
                    .max_connections(4);
                Arc::new(PostgresStore::with_options(options).await.unwrap())
            }
        }
    }

    async fn cleanup(&self) {
        if let Self::Postgres { url, schema } = self {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .execute(&pool)
                .await
                .unwrap();
        }
    }
}

/// The deployed versions of `streaming`: each emits as it goes and waits
/// for "go" after its first step. 0 is the original; 1 renames the first
/// activity; 2 emits one event more before the wait; 3 one event fewer.
fn streaming_registry(version: u8) -> Registry {
    Registry::new()
        .activity("a", echo)
        .activity("b", echo)
        .activity("c", echo)
        .orchestration("streaming", move |ctx: OrchestrationContext, (): ()| async move {
            ctx.emit_event("begin", &0)?;
            let first = if version == 1 { "b" } else { "a" };
            ctx.call_activity::<Value>(first, &1).await?;
            if version == 2 {
                ctx.emit_event("extra", &"new in version 2")?;
            }
            if version != 3 {
                ctx.emit_event("first_done", &1)?;
            }
            ctx.set_custom_status(&"waiting")?;
            let go: Value = ctx.wait_for_external_event("go").await?;
            ctx.emit_event("went", &go)?;
            ctx.call_activity::<Value>("c", &2).await?;
            ctx.emit_event("done", &3)?;
            Ok::<_, OrchestrationError>("done")
        })
}

/// Runs version 0 until it waits, then lets a deployment of `version`
/// take the instance over; returns how it ended, the stream it ended with
/// and what a watcher that followed it across the deployments saw.
async fn redeploy_streaming(
    db: &Db,
    version: u8,
) -> (
    InstanceMetadata,
    Vec<(u64, String, Value)>,
    Vec<(u64, String, Value)>,
) {
    let old = db.open().await;
    let worker = Worker::start(old.clone(), streaming_registry(0)).unwrap();
    let client = Client::new(old.clone());
    let id = client
        .start_with(
            StartOptions::new("streaming", &())
                .unwrap()
                .instance_id(iid("deployed")),
        )
        .await
        .unwrap();
    wait_custom_status(&client, &id, json!("waiting")).await;
    worker.shutdown().await.unwrap();
    let watcher = tokio::spawn({
        let client = client.clone();
        let id = id.clone();
        async move {
            use futures::StreamExt;
            let events: Vec<_> = tokio::time::timeout(common::WAIT, client.watch_events(&id, 0).collect())
                .await
                .expect("the watch ends");
            events.into_iter().map(|e| e.unwrap()).collect::<Vec<_>>()
        }
    });

    let new = db.open().await;
    let worker = Worker::start(new.clone(), streaming_registry(version)).unwrap();
    let client = Client::new(new);
    client.raise_event(&id, "go", &"go").await.unwrap();
    let meta = wait_done(&client, &id).await;
    worker.shutdown().await.unwrap();
    let stream = summary(&read_all(&client, &id, 3).await);
    let watched = summary(&watcher.await.unwrap());
    (meta, stream, watched)
}

fn stream_of(names: &[(&str, Value)]) -> Vec<(u64, String, Value)> {
    names
        .iter()
        .enumerate()
        .map(|(i, (n, p))| (i as u64 + 1, (*n).to_owned(), p.clone()))
        .collect()
}

async fn unchanged_code_completes_with_the_whole_stream(db: &Db) {
    let (meta, stream, watched) = redeploy_streaming(db, 0).await;
    assert_eq!(meta.status, RuntimeStatus::Completed, "{:?}", meta.failure);
    let expected = stream_of(&[
        ("begin", json!(0)),
        ("first_done", json!(1)),
        ("went", json!("go")),
        ("done", json!(3)),
    ]);
    assert_eq!(stream, expected);
    assert_eq!(watched, expected);
}

async fn a_changed_step_fails_with_non_determinism_and_keeps_the_stream(db: &Db) {
    let (meta, stream, watched) = redeploy_streaming(db, 1).await;
    let message = non_determinism_message(&meta);
    assert!(
        message.contains("history has activity 'a' (task 0) but the code scheduled activity 'b' (task 0)"),
        "{message}"
    );
    // Exactly what the old code emitted; the replay appended nothing.
    let expected = stream_of(&[("begin", json!(0)), ("first_done", json!(1))]);
    assert_eq!(stream, expected);
    assert_eq!(meta.stream_len, 2);
    assert_eq!(watched, expected, "a watcher saw the stream end there");
}

async fn an_emit_added_before_the_wait_is_non_determinism(db: &Db) {
    let (meta, stream, _) = redeploy_streaming(db, 2).await;
    let expected = stream_of(&[("begin", json!(0)), ("first_done", json!(1))]);
    assert_eq!(
        stream, expected,
        "the stream is not extended with events shifted by the new emit"
    );
    non_determinism_message(&meta);
}

async fn an_emit_removed_before_the_wait_is_non_determinism(db: &Db) {
    let (meta, stream, _) = redeploy_streaming(db, 3).await;
    let expected = stream_of(&[("begin", json!(0)), ("first_done", json!(1))]);
    assert_eq!(
        stream, expected,
        "no later event is taken for one already stored and dropped"
    );
    non_determinism_message(&meta);
}

/// Stamps each test body out once per store.
macro_rules! on_both_stores {
    ($(#[$attr:meta])* $name:ident) => {
        mod $name {
            $(#[$attr])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = super::Db::sqlite();
                super::$name(&db).await;
                db.cleanup().await;
            }

            $(#[$attr])*
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(db) = super::Db::postgres() else {
                    return;
                };
                super::$name(&db).await;
                db.cleanup().await;
            }
        }
    };
}

on_both_stores!(unchanged_code_completes_with_the_whole_stream);
on_both_stores!(a_changed_step_fails_with_non_determinism_and_keeps_the_stream);
on_both_stores!(an_emit_added_before_the_wait_is_non_determinism);
on_both_stores!(an_emit_removed_before_the_wait_is_non_determinism);
