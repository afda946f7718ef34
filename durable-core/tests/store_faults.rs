//! Store faults: the database stops taking writes, or the connection drops,
//! in the middle of a run.
//!
//! * A SQLite file that becomes read-only while a worker runs (made
//!   immutable with `chattr +i`, which refuses writes even through the
//!   connections already open, as a file system remounted read-only does):
//!   commits fail with a typed `StoreError::Database` that the worker logs,
//!   a client call fails with the same typed error, reads go on, and once
//!   the file is writable again the turn is retried and the run completes
//!   with its exact stream. A store opened while the file is read-only
//!   gives the same clear errors and recovers too.
//! * PostgreSQL connections of a worker terminated again and again by the
//!   server (`pg_terminate_backend`) while runs go on: errors are typed and
//!   logged, turns are retried, and every run completes exactly once.
//! * A commit that reached the database but whose answer was lost (the
//!   connection dropped while waiting for the answer to `COMMIT`): the
//!   worker cannot know whether the turn was written, and the run must
//!   neither stall nor record anything twice. On both stores.
//!
//! The chattr tests need root (or CAP_LINUX_IMMUTABLE) and a file system
//! with file attributes; they say they were skipped otherwise.

mod common;
mod faults;

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{summary, Gate};
use durable_core::prelude::*;
use durable_core::store::{PostgresStoreOptions, SqliteStoreOptions};
use durable_core::StoreError;
use faults::{FaultyStore, LogCapture};
use serde_json::{json, Value};

const URL_ENV: &str = "DURABLE_TEST_POSTGRES_URL";

/// Each step: emit "step_started", run `work`, emit "step_done".
async fn steps(ctx: OrchestrationContext, n: u64) -> Result<Vec<u64>, OrchestrationError> {
    let mut results = Vec::new();
    for i in 0..n {
        ctx.emit_event("step_started", &i)?;
        let r: u64 = ctx.call_activity("work", &i).await?;
        ctx.emit_event("step_done", &json!({ "i": i, "r": r }))?;
        results.push(r);
    }
    Ok(results)
}

fn expected_stream(n: u64) -> Vec<(u64, String, Value)> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(("step_started".to_owned(), json!(i)));
        out.push(("step_done".to_owned(), json!({ "i": i, "r": i * 3 })));
    }
    out.into_iter()
        .enumerate()
        .map(|(k, (name, payload))| (k as u64 + 1, name, payload))
        .collect()
}

/// `work(i)` returns `3 i`, after `delay`; the step `hold.0` waits for
/// the gate `hold.1` first.
fn registry(delay: Duration, hold: Option<(u64, Gate)>) -> Registry {
    Registry::new()
        .orchestration("steps", steps)
        .activity("work", move |_ctx: ActivityContext, i: u64| {
            let hold = hold.clone();
            async move {
                if let Some((step, gate)) = hold {
                    if step == i {
                        gate.pass().await;
                    }
                }
                tokio::time::sleep(delay).await;
                Ok::<_, Infallible>(i * 3)
            }
        })
}

/// Checks that `id` completed with the right output and exactly the
/// expected stream.
async fn assert_complete(client: &Client, id: &InstanceId, n: u64) {
    let meta = common::wait_done(client, id).await;
    assert_eq!(meta.status, RuntimeStatus::Completed, "{id}: {:?}", meta.failure);
    let results: Vec<u64> = meta.output_as().unwrap();
    assert_eq!(results, (0..n).map(|i| i * 3).collect::<Vec<_>>(), "{id}");
    let events = common::read_all(client, id, 1000).await;
    assert_eq!(summary(&events), expected_stream(n), "the stream of {id}");
    assert_eq!(meta.stream_len, 2 * n);
}

fn is_database_error(e: &Error) -> bool {
    matches!(e, Error::Store(StoreError::Database(_)))
}

// ---------------------------------------------------------------- SQLite

/// Files made immutable (`chattr +i`) until dropped.
struct ReadOnly(Vec<PathBuf>);

impl ReadOnly {
    /// Makes `files` immutable; `None` if this machine does not allow it.
    fn make(files: &[PathBuf]) -> Option<Self> {
        let mut done = Self(Vec::new());
        for file in files {
            let ok = Command::new("chattr")
                .arg("+i")
                .arg(file)
                .output()
                .is_ok_and(|o| o.status.success());
            if !ok {
                return None;
            }
            done.0.push(file.clone());
        }
        Some(done)
    }

    /// Makes the files writable again.
    fn clear(mut self) {
        self.release();
    }

    fn release(&mut self) {
        for file in self.0.drain(..) {
            let status = Command::new("chattr").arg("-i").arg(&file).status();
            assert!(status.is_ok_and(|s| s.success()), "chattr -i {}", file.display());
        }
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        self.release();
    }
}

fn skipped_without_chattr() {
    eprintln!(
        "skipped: chattr +i is not permitted here (it needs root or CAP_LINUX_IMMUTABLE and a file \
         system with file attributes), so the read-only SQLite test does not run"
    );
}

fn database_files(db: &Path) -> Vec<PathBuf> {
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    vec![db.to_owned(), wal]
}

async fn open_sqlite(path: &Path) -> Arc<dyn Store> {
    let options =
        SqliteStoreOptions::file(path.to_str().unwrap()).poll_interval(Some(Duration::from_millis(50)));
    Arc::new(SqliteStore::with_options(options).await.expect("sqlite store"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_file_that_becomes_read_only_fails_turns_clearly_and_they_are_retried_once_it_is_writable() {
    let logs = LogCapture::install();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("faults.db");
    let faulty = Arc::new(FaultyStore::new(open_sqlite(&path).await));
    let store: Arc<dyn Store> = faulty.clone();
    let gate = Gate::new();
    let worker = Worker::start(store.clone(), registry(Duration::ZERO, Some((2, gate.clone())))).unwrap();
    let client = Client::new(store.clone());

    // A run that finishes before the fault, and one that is in step 2 when
    // the file becomes read-only.
    let done = client.start("steps", &3u64).await.unwrap();
    gate.open(1);
    assert_complete(&client, &done, 3).await;
    let id = client.start("steps", &5u64).await.unwrap();
    common::wait_stream_len(&client, &id, 5).await;

    let Some(read_only) = ReadOnly::make(&database_files(&path)) else {
        skipped_without_chattr();
        gate.open(1);
        worker.shutdown().await.unwrap();
        return;
    };
    let errors_before = faulty.errors().len();

    // A client write fails with a typed error; reads go on.
    let err = client.start("steps", &1u64).await.unwrap_err();
    assert!(is_database_error(&err), "{err:?}");
    assert!(
        err.to_string().starts_with("database error: "),
        "a clear message: {err}"
    );
    assert_eq!(client.get_instance(&id).await.unwrap().unwrap().stream_len, 5);

    // The activity of step 2 ends; the turn with its result cannot be
    // written, is logged, and is tried again.
    gate.open(1);
    common::eventually("failed commits retried", || {
        let failed = faulty.errors()[errors_before..]
            .iter()
            .filter(|e| e.starts_with("Database: "))
            .count();
        async move { (failed >= 3).then_some(()) }
    })
    .await;
    let logged = logs.matching(&["could not commit orchestration turns", "database error"]);
    assert!(
        !logged.is_empty(),
        "the failed commit is logged: {:?}",
        logs.lines()
    );
    let meta = client.get_instance(&id).await.unwrap().unwrap();
    assert_eq!(meta.status, RuntimeStatus::Running);
    assert_eq!(meta.stream_len, 5, "nothing of the failed turns is visible");

    // Writable again: the turn is retried and the run completes; nothing
    // written before the fault is lost.
    read_only.clear();
    assert_complete(&client, &id, 5).await;
    assert_complete(&client, &done, 3).await;
    let later = client.start("steps", &2u64).await.unwrap();
    assert_complete(&client, &later, 2).await;
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_store_opened_on_a_read_only_file_gives_typed_errors_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("opened-read-only.db");
    // A database with one finished run, closed.
    {
        let store = open_sqlite(&path).await;
        let worker = Worker::start(store.clone(), registry(Duration::ZERO, None)).unwrap();
        let client = Client::new(store.clone());
        let id = client
            .start_with(
                StartOptions::new("steps", &2u64)
                    .unwrap()
                    .instance_id(common::iid("before")),
            )
            .await
            .unwrap();
        assert_complete(&client, &id, 2).await;
        worker.shutdown().await.unwrap();
    }
    let Some(read_only) = ReadOnly::make(&database_files(&path)) else {
        skipped_without_chattr();
        return;
    };

    // Opening may fail, with a typed error; or succeed, and then writes
    // fail with a typed error while reads work.
    let options =
        SqliteStoreOptions::file(path.to_str().unwrap()).poll_interval(Some(Duration::from_millis(50)));
    let store: Arc<dyn Store> = match SqliteStore::with_options(options).await {
        Err(e) => {
            assert!(
                matches!(e, StoreError::Database(_) | StoreError::Migration(_)),
                "{e:?}"
            );
            read_only.clear();
            open_sqlite(&path).await
        }
        Ok(store) => {
            let store: Arc<dyn Store> = Arc::new(store);
            let client = Client::new(store.clone());
            let before = client
                .get_instance(&common::iid("before"))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(before.status, RuntimeStatus::Completed);
            let err = client.start("steps", &1u64).await.unwrap_err();
            assert!(is_database_error(&err), "{err:?}");
            read_only.clear();
            store
        }
    };
    // Writable again: the same store works, and nothing was lost.
    let worker = Worker::start(store.clone(), registry(Duration::ZERO, None)).unwrap();
    let client = Client::new(store.clone());
    let id = client.start("steps", &3u64).await.unwrap();
    assert_complete(&client, &id, 3).await;
    assert_complete(&client, &common::iid("before"), 2).await;
    worker.shutdown().await.unwrap();
}

// ------------------------------------------------------------ PostgreSQL

struct Postgres {
    url: String,
    schema: String,
}

impl Postgres {
    fn new(prefix: &str) -> Option<Self> {
        let Ok(url) = std::env::var(URL_ENV) else {
            eprintln!("skipped: {URL_ENV} is not set, so this PostgreSQL fault test does not run");
            return None;
        };
        let schema = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        Some(Self { url, schema })
    }

    /// A store whose connections carry `application_name`, if given.
    async fn open(&self, application_name: Option<&str>) -> Arc<dyn Store> {
        let url = match application_name {
            Some(name) => {
                let sep = if self.url.contains('?') { '&' } else { '?' };
                format!("{}{sep}application_name={name}", self.url)
            }
            None => self.url.clone(),
        };
        let options = PostgresStoreOptions::new(url)
            .schema(&self.schema)
            .max_connections(6)
            .poll_interval(Some(Duration::from_millis(200)));
        Arc::new(
            PostgresStore::with_options(options)
                .await
                .expect("postgres store"),
        )
    }

    async fn cleanup(self) {
        let pool = sqlx::PgPool::connect(&self.url)
            .await
            .expect("connect for cleanup");
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
            .execute(&pool)
            .await
            .expect("drop the test schema");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_dropped_mid_turn_give_typed_errors_and_every_run_completes_once() {
    let Some(pg) = Postgres::new("drop") else { return };
    let logs = LogCapture::install();
    let name = format!("worker_{}", pg.schema);
    let faulty = Arc::new(FaultyStore::new(pg.open(Some(&name)).await));
    let worker_store: Arc<dyn Store> = faulty.clone();
    let worker = Worker::start_with(
        worker_store,
        registry(Duration::from_millis(10), None),
        WorkerOptions::new().lease(Duration::from_secs(2)),
    )
    .unwrap();
    // The client and the checks use connections of their own.
    let store = pg.open(None).await;
    let client = Client::new(store.clone());
    const RUNS: u64 = 20;
    const STEPS: u64 = 8;
    let mut ids = Vec::new();
    for _ in 0..RUNS {
        ids.push(client.start("steps", &STEPS).await.unwrap());
    }

    // Terminate the worker's connections again and again for a while.
    let killer = sqlx::PgPool::connect(&pg.url).await.unwrap();
    let mut terminated = 0;
    let until = tokio::time::Instant::now() + Duration::from_millis(2500);
    while tokio::time::Instant::now() < until {
        let rows: Vec<(bool,)> = sqlx::query_as(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&name)
        .fetch_all(&killer)
        .await
        .unwrap();
        terminated += rows.iter().filter(|(done,)| *done).count();
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    assert!(terminated > 0, "the worker's connections were terminated");

    for id in &ids {
        assert_complete(&client, id, STEPS).await;
    }
    let errors = faulty.errors();
    assert!(
        errors.iter().any(|e| e.starts_with("Database: ")),
        "the worker saw typed database errors: {errors:?}"
    );
    assert!(
        errors.iter().all(|e| e.starts_with("Database: ")),
        "only database errors: {errors:?}"
    );
    assert!(
        !logs.matching(&["worker", "database error"]).is_empty(),
        "the errors were logged: {:?}",
        logs.lines()
    );
    // The worker still takes new work.
    let late = client.start("steps", &2u64).await.unwrap();
    assert_complete(&client, &late, 2).await;

    worker.shutdown().await.unwrap();
    drop(client);
    drop(store);
    killer.close().await;
    pg.cleanup().await;
}

// ------------------------------------------------ lost commit answers

/// Three commits that schedule activities are written but reported as
/// failed; every run must still complete exactly once.
async fn lost_commit_answers(store: Arc<dyn Store>) {
    let faulty = Arc::new(FaultyStore::new(store.clone()));
    let worker_store: Arc<dyn Store> = faulty.clone();
    faulty.lose_commit_acks(3);
    let worker = Worker::start_with(
        worker_store,
        // Activities that outlast the worker's linger, so that each step
        // commits while its activity runs: the commits whose answers are
        // lost claim activities.
        registry(Duration::from_millis(20), None),
        WorkerOptions::new().lease(Duration::from_secs(1)),
    )
    .unwrap();
    let client = Client::new(store);
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(client.start("steps", &4u64).await.unwrap());
    }
    for id in &ids {
        assert_complete(&client, id, 4).await;
    }
    assert_eq!(faulty.lost_acks(), 3, "three answers were lost");
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_commit_whose_answer_is_lost_neither_stalls_nor_doubles_the_run() {
    let dir = tempfile::tempdir().unwrap();
    lost_commit_answers(open_sqlite(&dir.path().join("lost.db")).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_commit_whose_answer_is_lost_neither_stalls_nor_doubles_the_run() {
    let Some(pg) = Postgres::new("lost") else { return };
    lost_commit_answers(pg.open(None).await).await;
    pg.cleanup().await;
}

// --------------------------------------------- data the store refuses

/// A turn whose data the database refuses (here, every turn of one
/// instance) is found out and fails its instance alone: the instances
/// whose turns were written in the same batches complete.
async fn refused_data_fails_its_instance_alone(store: Arc<dyn Store>) {
    let faulty = Arc::new(FaultyStore::new(store.clone()));
    faulty.refuse_turns_of("refused");
    let worker = Worker::start_with(
        faulty.clone(),
        registry(Duration::ZERO, None),
        WorkerOptions::new().lease(Duration::from_secs(1)),
    )
    .unwrap();
    let client = Client::new(store);
    let mut ids = Vec::new();
    // Started together, so that they share batches.
    for i in 0..6 {
        let id = InstanceId::new(if i == 3 {
            "refused".to_owned()
        } else {
            format!("fine-{i}")
        })
        .unwrap();
        client
            .start_with(StartOptions::new("steps", &3u64).unwrap().instance_id(id.clone()))
            .await
            .unwrap();
        ids.push(id);
    }
    for id in &ids {
        let meta = common::wait_done(&client, id).await;
        if id.as_str() == "refused" {
            assert_eq!(meta.status, RuntimeStatus::Failed);
            let failure = meta.failure.unwrap();
            assert_eq!(failure.error_type, "StoreRejected");
            assert!(
                failure.message.contains("cannot be stored"),
                "{}",
                failure.message
            );
        } else {
            assert_complete(&client, id, 3).await;
        }
    }
    assert!(
        faulty.errors().iter().any(|e| e.starts_with("Rejected")),
        "the commits were refused"
    );
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_turn_whose_data_the_database_refuses_fails_its_instance_alone() {
    let dir = tempfile::tempdir().unwrap();
    refused_data_fails_its_instance_alone(open_sqlite(&dir.path().join("refused.db")).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_turn_whose_data_the_database_refuses_fails_its_instance_alone() {
    let Some(pg) = Postgres::new("refused") else {
        return;
    };
    refused_data_fails_its_instance_alone(pg.open(None).await).await;
    pg.cleanup().await;
}

/// PostgreSQL cannot store a NUL in text: a turn that holds one (made by
/// hand here, since the runtime refuses such names where they are made)
/// is refused with the typed data error the dispatcher isolates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refuses_a_nul_in_text_with_a_typed_data_error() {
    let Some(pg) = Postgres::new("nul") else { return };
    let store = pg.open(None).await;
    let client = Client::new(store.clone());
    client.start("steps", &1u64).await.unwrap();
    let items = store
        .fetch_orchestrations("test", Duration::from_secs(30), 10)
        .await
        .unwrap();
    let mut turn = common::emitting_turn(&items[0], vec![(1, 0)]);
    turn.stream[0].name = "nul\0inside".into();
    let batch = durable_core::store::CommitBatch {
        turns: vec![turn],
        ..Default::default()
    };
    let refused = store.commit("test", Duration::from_secs(30), &batch).await;
    assert!(matches!(refused, Err(StoreError::Rejected(_))), "{refused:?}");
    drop(client);
    drop(store);
    pg.cleanup().await;
}

// ------------------------------ a result taken by a turn that is not written

/// Calls a slow activity, then continues as new, `rounds` times.
async fn slow_rounds(
    ctx: OrchestrationContext,
    (round, rounds): (u64, u64),
) -> Result<u64, OrchestrationError> {
    let r: u64 = ctx.call_activity("work", &round).await?;
    ctx.emit_event("round", &r)?;
    if round + 1 < rounds {
        return ctx.continue_as_new(&(round + 1, rounds)).await;
    }
    Ok(r)
}

/// An activity outlasts the worker's linger, so that its work item is
/// written; its result, handed over in memory, is taken by a turn that
/// continues as new (whose history therefore records no result), and that
/// turn's commit fails. The result goes back to the inbox for the redone
/// turn: the run neither stalls nor repeats a round.
async fn a_result_taken_by_a_turn_whose_commit_fails_is_kept(store: Arc<dyn Store>) {
    let faulty = Arc::new(FaultyStore::new(store.clone()));
    faulty.fail_commits_taking_results(2);
    let registry = registry(Duration::from_millis(30), None).orchestration("slow_rounds", slow_rounds);
    let worker = Worker::start_with(
        faulty.clone(),
        registry,
        WorkerOptions::new().lease(Duration::from_secs(1)),
    )
    .unwrap();
    let client = Client::new(store);
    let id = client.start("slow_rounds", &(0u64, 3u64)).await.unwrap();
    let meta = common::wait_done(&client, &id).await;
    assert_eq!(meta.status, RuntimeStatus::Completed, "{:?}", meta.failure);
    assert_eq!(meta.output_as::<u64>().unwrap(), 6);
    let events = common::read_all(&client, &id, 100).await;
    assert_eq!(
        summary(&events),
        [
            (1, "round".to_owned(), json!(0)),
            (2, "round".to_owned(), json!(3)),
            (3, "round".to_owned(), json!(6))
        ]
    );
    assert!(
        faulty.errors().len() >= 2,
        "the commits failed: {:?}",
        faulty.errors()
    );
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_result_taken_by_a_turn_whose_commit_fails_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    a_result_taken_by_a_turn_whose_commit_fails_is_kept(open_sqlite(&dir.path().join("taken.db")).await)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_result_taken_by_a_turn_whose_commit_fails_is_kept() {
    let Some(pg) = Postgres::new("taken") else { return };
    a_result_taken_by_a_turn_whose_commit_fails_is_kept(pg.open(None).await).await;
    pg.cleanup().await;
}

// -------------------------- a result of another call of the same task

/// Races an activity against an event; whichever wins, calls the activity
/// again with the name of the branch, and checks the result is its own.
async fn branches(ctx: OrchestrationContext, _: ()) -> Result<String, String> {
    let race = ctx.call_activity::<String>("echo_after", &("race", 0u64));
    let event = ctx.wait_for_external_event::<()>("ev");
    let branch = match durable_core::future::select(race, event).await {
        futures::future::Either::Left(_) => "after-activity",
        futures::future::Either::Right(_) => "after-event",
    };
    // The first run's call of this task takes 150 ms, the redo's 400:
    // the first run's result comes back first.
    let pause = if branch == "after-activity" { 150u64 } else { 400 };
    let got: String = ctx
        .call_activity("echo_after", &(branch, pause))
        .await
        .map_err(|e| e.to_string())?;
    if got != branch {
        return Err(format!("the call of {branch} got the result of {got}"));
    }
    Ok(got)
}

/// A batch fails; the redone turn takes the other branch (an event raised
/// meanwhile wins the race), and schedules another call under the same
/// task id while the first run's call still runs. The first run's result,
/// handed over in memory, must not complete the redo's call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_of_another_call_of_the_task_is_not_taken() {
    let store = common::memory_store().await;
    let faulty = Arc::new(FaultyStore::new(store.clone()));
    // The first batch (the race and the first branch's call) is slow, then
    // fails: the event is raised meanwhile.
    faulty.delay_commits(Duration::from_millis(60));
    faulty.fail_next_commits(1);
    let registry = Registry::new().orchestration("branches", branches).activity(
        "echo_after",
        |_ctx: ActivityContext, (text, pause): (String, u64)| async move {
            tokio::time::sleep(Duration::from_millis(pause)).await;
            Ok::<_, Infallible>(text)
        },
    );
    let worker = Worker::start(faulty.clone(), registry).unwrap();
    let client = Client::new(store);
    let id = client.start("branches", &()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    client.raise_event(&id, "ev", &()).await.unwrap();
    let meta = common::wait_done(&client, &id).await;
    assert_eq!(meta.status, RuntimeStatus::Completed, "{:?}", meta.failure);
    assert_eq!(meta.output_as::<String>().unwrap(), "after-event");
    assert!(!faulty.errors().is_empty(), "the first batch failed");
    worker.shutdown().await.unwrap();
}

// ------------------------------ a claim whose answer was lost

/// Runs `n` activities at once.
async fn fan_out(ctx: OrchestrationContext, n: u64) -> Result<Vec<u64>, OrchestrationError> {
    let calls = (0..n).map(|i| ctx.call_activity::<u64>("work", &i));
    durable_core::future::join_all(calls).await.into_iter().collect()
}

/// The work items the activity fetcher claimed are lost with the answer
/// (the connection dropped after the database ran the claim). The worker
/// does not know it holds them; it renews only the leases of what it
/// runs, so they expire and are fetched again, and the run completes.
async fn work_claimed_by_a_lost_answer_runs_again(store: Arc<dyn Store>) {
    let faulty = Arc::new(FaultyStore::new(store.clone()));
    faulty.lose_activity_fetch_answers(1);
    let registry = registry(Duration::ZERO, None).orchestration("fan_out", fan_out);
    // One activity at a time: a turn claims at most two, the others wait
    // in the store for the fetcher.
    let options = WorkerOptions::new()
        .activity_concurrency(1)
        .lease(Duration::from_millis(300));
    let worker = Worker::start_with(faulty.clone(), registry, options).unwrap();
    let client = Client::new(store);
    let id = client.start("fan_out", &6u64).await.unwrap();
    let meta = client
        .wait_for_completion(&id, Duration::from_secs(10))
        .await
        .expect("the run completes once the lost claims expire");
    assert_eq!(meta.output_as::<Vec<u64>>().unwrap(), [0, 3, 6, 9, 12, 15]);
    assert!(
        faulty.errors().iter().any(|e| e.contains("claimed work items")),
        "an answer was lost: {:?}",
        faulty.errors()
    );
    worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_work_claimed_by_a_lost_answer_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    work_claimed_by_a_lost_answer_runs_again(open_sqlite(&dir.path().join("claims.db")).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_work_claimed_by_a_lost_answer_runs_again() {
    let Some(pg) = Postgres::new("claims") else { return };
    work_claimed_by_a_lost_answer_runs_again(pg.open(None).await).await;
    pg.cleanup().await;
}
