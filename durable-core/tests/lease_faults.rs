//! Lease faults: a worker process that stalls past its lease must not
//! commit over the worker that took its work.
//!
//! A worker runs in a child process (this test binary, re-run as
//! `child_worker_process`) and is paused with SIGSTOP while one of its
//! activities runs and it holds the instance's lease. Its leases expire; a
//! worker in this process takes the instance over, runs the activity again
//! (activities are at-least-once) and goes on. Then the child is resumed
//! with SIGCONT: its activity finishes and it tries to commit the turn it
//! prepared from the stale state. That commit must be rejected (a
//! `TurnOutcome::Conflict`, recorded by the child into a file), the stream
//! must stay exactly the expected list (no event twice, none lost), and the
//! output must be right. Each scenario runs on a SQLite file and on
//! PostgreSQL (`DURABLE_TEST_POSTGRES_URL`, a schema of its own).
//!
//! The child is paused only outside a database transaction: a process
//! stopped while it holds SQLite's write lock (or open row locks on
//! PostgreSQL) blocks every other writer until it runs again; no lease can
//! help with that, so the tests check and pause again a moment later.

mod common;
mod faults;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{summary, Gate, WAIT};
use durable_core::prelude::*;
use durable_core::store::{PostgresStoreOptions, SqliteStoreOptions};
use faults::FaultyStore;
use futures::StreamExt;
use serde_json::{json, Value};

const URL_ENV: &str = "DURABLE_TEST_POSTGRES_URL";
/// Tells `child_worker_process` which database to work on:
/// `sqlite:<path>` or `postgres:<schema>`.
const CHILD_DB_ENV: &str = "DURABLE_CORE_LEASE_CHILD_DB";
/// Where the child appends its activity runs.
const CHILD_EFFECTS_ENV: &str = "DURABLE_CORE_LEASE_CHILD_EFFECTS";
/// Where the child appends the outcome of every turn it commits.
const CHILD_OUTCOMES_ENV: &str = "DURABLE_CORE_LEASE_CHILD_OUTCOMES";

const LEASE: Duration = Duration::from_millis(1000);
const STEPS: u64 = 6;
/// The step whose activity is running when the child is paused.
const STALL_STEP: u64 = 2;
/// In the mid-run scenario, the new owner's activity of this step waits
/// until the stalled worker has tried its late commit.
const HELD_STEP: u64 = 4;

/// Each step: emit "step_started", run `work`, emit "step_done".
async fn stalling(ctx: OrchestrationContext, steps: u64) -> Result<Vec<u64>, OrchestrationError> {
    let mut results = Vec::new();
    for i in 0..steps {
        ctx.emit_event("step_started", &i)?;
        let r: u64 = ctx.call_activity("work", &i).await?;
        ctx.emit_event("step_done", &json!({ "i": i, "r": r }))?;
        results.push(r);
    }
    Ok(results)
}

fn expected_stream() -> Vec<(u64, String, Value)> {
    let mut out = Vec::new();
    for i in 0..STEPS {
        out.push(("step_started".to_owned(), json!(i)));
        out.push(("step_done".to_owned(), json!({ "i": i, "r": i * i + 1 })));
    }
    out.into_iter()
        .enumerate()
        .map(|(k, (name, payload))| (k as u64 + 1, name, payload))
        .collect()
}

fn append(path: &str, line: &str) -> Result<(), String> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| e.to_string())?;
    // One write call, so that lines of several processes never interleave.
    file.write_all(format!("{line}\n").as_bytes())
        .map_err(|e| e.to_string())
}

/// The `work` activity records `"<pid> start <i>"` and `"<pid> end <i>"`;
/// the stalled step takes a moment, and `hold` makes one step wait for a
/// gate.
fn registry(effects: String, hold: Option<(u64, Gate)>) -> Registry {
    Registry::new().orchestration("stalling", stalling).activity(
        "work",
        move |_ctx: ActivityContext, i: u64| {
            let effects = effects.clone();
            let hold = hold.clone();
            async move {
                let pid = std::process::id();
                append(&effects, &format!("{pid} start {i}"))?;
                if i == STALL_STEP {
                    tokio::time::sleep(Duration::from_millis(400)).await;
                }
                if let Some((step, gate)) = hold {
                    if step == i {
                        gate.pass().await;
                    }
                }
                append(&effects, &format!("{pid} end {i}"))?;
                Ok::<_, String>(i * i + 1)
            }
        },
    )
}

/// The child's connections to PostgreSQL carry this application name, so
/// that the test can see whether it is inside a transaction.
fn child_application_name(schema: &str) -> String {
    format!("lease_child_{schema}")
}

fn with_application_name(url: &str, name: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}application_name={name}")
}

async fn open_sqlite(path: &str) -> Arc<dyn Store> {
    let options = SqliteStoreOptions::file(path).poll_interval(Some(Duration::from_millis(50)));
    Arc::new(SqliteStore::with_options(options).await.expect("sqlite store"))
}

async fn open_postgres(url: &str, schema: &str) -> Arc<dyn Store> {
    let options = PostgresStoreOptions::new(url)
        .schema(schema)
        .max_connections(4)
        .poll_interval(Some(Duration::from_millis(200)));
    Arc::new(
        PostgresStore::with_options(options)
            .await
            .expect("postgres store"),
    )
}

/// Not a test of its own: the body of the child worker process. It does
/// nothing unless `CHILD_DB_ENV` is set, and then runs a worker until it is
/// killed (or a minute has passed, so that no child outlives a failed test
/// for long).
#[test]
fn child_worker_process() {
    let (Ok(db), Ok(effects), Ok(outcomes)) = (
        std::env::var(CHILD_DB_ENV),
        std::env::var(CHILD_EFFECTS_ENV),
        std::env::var(CHILD_OUTCOMES_ENV),
    ) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store = match db.split_once(':') {
            Some(("sqlite", path)) => open_sqlite(path).await,
            Some(("postgres", schema)) => {
                let url = std::env::var(URL_ENV).unwrap();
                let url = with_application_name(&url, &child_application_name(schema));
                open_postgres(&url, schema).await
            }
            _ => panic!("unknown database {db}"),
        };
        let store: Arc<dyn Store> = Arc::new(FaultyStore::new(store).log_outcomes_to(outcomes));
        let _worker =
            Worker::start_with(store, registry(effects, None), WorkerOptions::new().lease(LEASE)).unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
}

/// The database of one test.
enum Db {
    Sqlite { _dir: tempfile::TempDir, path: String },
    Postgres { url: String, schema: String },
}

impl Db {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lease.db").to_str().unwrap().to_owned();
        Self::Sqlite { _dir: dir, path }
    }

    fn postgres() -> Option<Self> {
        let Ok(url) = std::env::var(URL_ENV) else {
            eprintln!("skipped: {URL_ENV} is not set, so this PostgreSQL lease test does not run");
            return None;
        };
        let schema = format!("lease_{}", uuid::Uuid::new_v4().simple());
        Some(Self::Postgres { url, schema })
    }

    async fn open(&self) -> Arc<dyn Store> {
        match self {
            Self::Sqlite { path, .. } => open_sqlite(path).await,
            Self::Postgres { url, schema } => open_postgres(url, schema).await,
        }
    }

    fn child_db(&self) -> String {
        match self {
            Self::Sqlite { path, .. } => format!("sqlite:{path}"),
            Self::Postgres { schema, .. } => format!("postgres:{schema}"),
        }
    }

    /// Whether the stopped child holds no transaction open, so that other
    /// writers are not blocked by it.
    async fn child_holds_no_transaction(&self) -> bool {
        match self {
            Self::Sqlite { path, .. } => {
                use sqlx::Connection;
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(path)
                    .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                    .busy_timeout(Duration::from_millis(100));
                let mut probe = sqlx::SqliteConnection::connect_with(&options)
                    .await
                    .expect("probe connection");
                let free = sqlx::query("BEGIN IMMEDIATE").execute(&mut probe).await.is_ok();
                if free {
                    sqlx::query("ROLLBACK").execute(&mut probe).await.unwrap();
                }
                let _ = probe.close().await;
                free
            }
            Self::Postgres { url, schema } => {
                use sqlx::Connection;
                let mut probe = sqlx::PgConnection::connect(url).await.expect("probe connection");
                let (busy,): (i64,) = sqlx::query_as(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
                     AND state IS DISTINCT FROM 'idle'",
                )
                .bind(child_application_name(schema))
                .fetch_one(&mut probe)
                .await
                .unwrap();
                let _ = probe.close().await;
                busy == 0
            }
        }
    }

    async fn cleanup(&self) {
        if let Self::Postgres { url, schema } = self {
            let pool = sqlx::PgPool::connect(url).await.expect("connect for cleanup");
            sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .execute(&pool)
                .await
                .expect("drop the test schema");
        }
    }
}

/// A worker in a child process, killed when dropped.
struct ChildWorker {
    child: Child,
    log: String,
}

impl ChildWorker {
    fn spawn(db: &Db, effects: &str, outcomes: &str, log: String) -> Self {
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_worker_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DB_ENV, db.child_db())
            .env(CHILD_EFFECTS_ENV, effects)
            .env(CHILD_OUTCOMES_ENV, outcomes)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("the test binary runs as a child");
        Self { child, log }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails the test with the child's log if it has exited by itself.
    fn check_alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            panic!("the child worker exited on its own ({status}):\n{log}");
        }
    }

    /// Pauses the child at a moment it holds no transaction open.
    async fn stop_outside_a_transaction(&mut self, db: &Db) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            self.check_alive();
            faults::stop(self.pid());
            if db.child_holds_no_transaction().await {
                return;
            }
            faults::resume(self.pid());
            assert!(
                tokio::time::Instant::now() < deadline,
                "the child never paused outside a transaction"
            );
            tokio::time::sleep(Duration::from_millis(7)).await;
        }
    }
}

impl Drop for ChildWorker {
    fn drop(&mut self) {
        // A stopped process dies of SIGKILL too.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(path: &str) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Waits until `path` holds the line `line`.
async fn wait_for_line(path: &str, line: &str, child: &mut ChildWorker) {
    common::eventually(&format!("{line:?} in {path}"), || {
        child.check_alive();
        let found = lines(path).iter().any(|l| l == line);
        async move { found.then_some(()) }
    })
    .await;
}

/// Waits until the turn that scheduled step `step`'s activity is written:
/// an activity may start before that turn commits.
async fn wait_for_step_written(client: &Client, id: &InstanceId, step: u64) {
    common::eventually(&format!("the turn of step {step} written"), || async move {
        let meta = client.get_instance(id).await.unwrap().unwrap();
        (meta.stream_len == 2 * step + 1).then_some(())
    })
    .await;
}

/// When the stalled worker is resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResumeWhen {
    /// The new owner has finished the instance.
    Completed,
    /// The new owner holds the instance, two steps further, with an
    /// activity running.
    MidRun,
}

async fn stalled_worker_is_rejected(db: Db, when: ResumeWhen) {
    let files = tempfile::tempdir().unwrap();
    let file = |name: &str| files.path().join(name).to_str().unwrap().to_owned();
    let (effects, outcomes) = (file("effects"), file("outcomes"));
    let store = db.open().await;
    let client = Client::new(store.clone());
    let id = client.start("stalling", &STEPS).await.unwrap();

    // A watcher in this process follows the stream across the stall.
    let watcher = tokio::spawn({
        let client = client.clone();
        let id = id.clone();
        async move {
            let mut watch = Box::pin(client.watch_events(&id, 0));
            let mut got = Vec::new();
            while let Some(event) = tokio::time::timeout(WAIT, watch.next())
                .await
                .expect("the watch stalled")
            {
                got.push(event.expect("watch yields events"));
            }
            got
        }
    });

    // The child runs the first steps and is paused in the stalled step's
    // activity, holding the instance's lease.
    let mut child = ChildWorker::spawn(&db, &effects, &outcomes, file("child.log"));
    let child_pid = child.pid();
    wait_for_line(&effects, &format!("{child_pid} start {STALL_STEP}"), &mut child).await;
    // The stalled step's activity runs on long after its turn is written.
    wait_for_step_written(&client, &id, STALL_STEP).await;
    child.stop_outside_a_transaction(&db).await;
    let meta = client.get_instance(&id).await.unwrap().unwrap();
    assert_eq!(meta.status, RuntimeStatus::Running);
    assert_eq!(meta.stream_len, 2 * STALL_STEP + 1, "paused in the stalled step");

    // A worker here takes the instance over once the leases expire.
    let gate = Gate::new();
    let hold = (when == ResumeWhen::MidRun).then(|| (HELD_STEP, gate.clone()));
    let worker = Worker::start_with(
        store.clone(),
        registry(effects.clone(), hold),
        WorkerOptions::new().lease(LEASE),
    )
    .unwrap();
    let here = std::process::id();
    match when {
        ResumeWhen::Completed => {
            let meta = common::wait_done(&client, &id).await;
            assert_eq!(meta.status, RuntimeStatus::Completed, "{:?}", meta.failure);
        }
        ResumeWhen::MidRun => {
            wait_for_line(&effects, &format!("{here} start {HELD_STEP}"), &mut child).await;
            wait_for_step_written(&client, &id, HELD_STEP).await;
        }
    }
    let before = client.get_instance(&id).await.unwrap().unwrap();
    let stream_before = summary(&common::read_all(&client, &id, 100).await);
    let seen_before = lines(&outcomes).len();

    // The stalled worker goes on: its activity ends and it commits the
    // turn it prepared from the state it read before the pause.
    faults::resume(child_pid);
    wait_for_line(&effects, &format!("{child_pid} end {STALL_STEP}"), &mut child).await;
    let id_field = format!(" {id} ");
    let conflict = common::eventually("the stalled worker's late commit", || {
        child.check_alive();
        let late: Vec<String> = lines(&outcomes)[seen_before..].to_vec();
        let found = late
            .iter()
            .any(|l| l.starts_with("conflict ") && l.contains(&id_field));
        async move { found.then_some(late) }
    })
    .await;
    // Give it a moment to write anything else it would write.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let late: Vec<String> = lines(&outcomes)[seen_before..].to_vec();
    assert!(
        late.iter()
            .filter(|l| l.contains(&id_field))
            .all(|l| l.starts_with("conflict ")),
        "after the stall, no turn of the stalled worker was written: {late:?} (first seen {conflict:?})"
    );
    let after = client.get_instance(&id).await.unwrap().unwrap();
    assert_eq!(
        (
            after.status,
            &after.output,
            after.stream_len,
            &after.custom_status
        ),
        (
            before.status,
            &before.output,
            before.stream_len,
            &before.custom_status
        ),
        "the late commit changed nothing"
    );
    assert_eq!(
        summary(&common::read_all(&client, &id, 100).await),
        stream_before,
        "the late commit appended nothing"
    );

    // The new owner finishes.
    gate.open(1);
    let meta = common::wait_done(&client, &id).await;
    assert_eq!(meta.status, RuntimeStatus::Completed, "{:?}", meta.failure);
    let results: Vec<u64> = meta.output_as().unwrap();
    assert_eq!(results, (0..STEPS).map(|i| i * i + 1).collect::<Vec<_>>());
    let expected = expected_stream();
    assert_eq!(
        summary(&common::read_all(&client, &id, 100).await),
        expected,
        "the stream is exactly the expected list"
    );
    assert_eq!(meta.stream_len, expected.len() as u64);
    assert_eq!(
        summary(&watcher.await.unwrap()),
        expected,
        "the watcher saw exactly the stream"
    );

    // Every step ran; the stalled one ran in both processes
    // (at-least-once), the child's run ending after the takeover.
    let mut ends: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    for line in lines(&effects) {
        let parts: Vec<&str> = line.split(' ').collect();
        if parts[1] == "end" {
            ends.entry(parts[2].parse().unwrap())
                .or_default()
                .push(parts[0].parse().unwrap());
        }
    }
    assert_eq!(
        ends.keys().copied().collect::<Vec<_>>(),
        (0..STEPS).collect::<Vec<_>>()
    );
    let stalled = &ends[&STALL_STEP];
    assert!(
        stalled.contains(&child_pid) && stalled.contains(&here),
        "{stalled:?}"
    );

    worker.shutdown().await.unwrap();
    drop(child);
    drop(client);
    drop(store);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_stalled_worker_resumed_after_the_takeover_commits_nothing() {
    stalled_worker_is_rejected(Db::sqlite(), ResumeWhen::Completed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_stalled_worker_resumed_mid_run_does_not_commit_over_the_new_owner() {
    stalled_worker_is_rejected(Db::sqlite(), ResumeWhen::MidRun).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_stalled_worker_resumed_after_the_takeover_commits_nothing() {
    let Some(db) = Db::postgres() else { return };
    stalled_worker_is_rejected(db, ResumeWhen::Completed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_stalled_worker_resumed_mid_run_does_not_commit_over_the_new_owner() {
    let Some(db) = Db::postgres() else { return };
    stalled_worker_is_rejected(db, ResumeWhen::MidRun).await;
}
