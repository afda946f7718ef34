//! Chaos: 100 document-processing runs on two worker processes (this test
//! binary, re-run as `child_worker_process`), while a supervisor kills a
//! random worker with SIGKILL every few hundred milliseconds and starts a
//! new one in its place. Once on a SQLite file, once on PostgreSQL
//! (`DURABLE_TEST_POSTGRES_URL`, a schema of its own; skipped, saying so,
//! when the variable is not set).
//!
//! At the end:
//!
//! * every run completed, with the outputs of an undisturbed run of the
//!   same job;
//! * every stream is exactly the undisturbed run's stream: sequence numbers
//!   1..n without a gap, no event twice, the same order;
//! * no executor's completion is recorded twice (one `executor_completed`
//!   per executor and superstep, in the job's schedule);
//! * the live status, sampled all along, never held anything but the
//!   superstep and the (here empty) list of pending requests;
//! * every executor ran at least once (executors are at-least-once: one
//!   that was running in a killed worker runs again).
//!
//! The supervisor's choices come from a seed printed at the start; set
//! `DURABLE_CHAOS_SEED` to replay them. The test is bounded: killing stops
//! after `CHAOS_FOR`, and every wait fails after [`WAIT`].

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agent_workflows::{SequencedEvent, WorkflowClient, WorkflowEvent};
use durable_core::store::{PostgresStore, PostgresStoreOptions, SqliteStore, SqliteStoreOptions, Store};
use durable_core::{Client, InstanceId, Payload, Registry, RuntimeStatus, Worker, WorkerOptions};
use durable_workspace::document_processing::{
    register_with_hooks, DocumentJob, DocumentProcessing, DocumentResult, Hooks,
};
use futures::StreamExt;
use serde_json::Value;

const URL_ENV: &str = "DURABLE_TEST_POSTGRES_URL";
/// Tells `child_worker_process` which database to work on:
/// `sqlite:<path>` or `postgres:<schema>`.
const DB_ENV: &str = "DURABLE_WORKSPACE_CHAOS_DB";
/// Where the child appends its executor invocations.
const LOG_ENV: &str = "DURABLE_WORKSPACE_CHAOS_LOG";
const SEED_ENV: &str = "DURABLE_CHAOS_SEED";

const RUNS: usize = 100;
const WORKERS: usize = 2;
/// The lease of the workers that get killed: their work is taken over
/// this long after they die.
const CHILD_LEASE: Duration = Duration::from_millis(600);
/// How long the supervisor goes on killing at most.
const CHAOS_FOR: Duration = Duration::from_secs(40);
/// How long any single wait may take.
const WAIT: Duration = Duration::from_secs(60);

/// The jobs: six executors each, with 1 to 4 KiB outputs, each executor
/// working a little so that kills land in the middle of supersteps.
fn jobs() -> Vec<DocumentJob> {
    (0..RUNS)
        .map(|n| {
            DocumentJob::new(format!("chaos-doc-{n}"))
                .output_kb(n as u32 % 4 + 1)
                .work_ms(400 + (n as u32 % 3) * 50)
        })
        .collect()
}

fn run_id(n: usize) -> InstanceId {
    InstanceId::new(format!("chaos-run-{n}")).unwrap()
}

/// Hooks that append `pid instance executor step` to `log` for every
/// executor invocation.
fn logging_hooks(log: String) -> Hooks {
    Hooks::new().on_invocation(move |i| {
        // One write per line: appends of one write do not interleave.
        let line = format!(
            "{} {} {} {}\n",
            std::process::id(),
            i.instance_id,
            i.executor_id,
            i.step
        );
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut file| file.write_all(line.as_bytes()))
            .expect("the invocation log is written");
    })
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

/// Not a test of its own: the body of a child worker process. It does
/// nothing unless `DB_ENV` is set, and then runs a worker until it is
/// killed (or two minutes have passed, so that no child outlives a failed
/// test for long).
#[test]
fn child_worker_process() {
    let (Ok(db), Ok(log)) = (std::env::var(DB_ENV), std::env::var(LOG_ENV)) else {
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
            Some(("postgres", schema)) => open_postgres(&std::env::var(URL_ENV).unwrap(), schema).await,
            _ => panic!("unknown database {db}"),
        };
        let _worker = Worker::start_with(
            store,
            register_with_hooks(Registry::new(), logging_hooks(log)),
            WorkerOptions::new().lease(CHILD_LEASE),
        )
        .unwrap();
        tokio::time::sleep(Duration::from_secs(120)).await;
    });
}

/// A small deterministic random number generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    let seed = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            u64::try_from(
                std::time::SystemTime::UNIX_EPOCH.elapsed().unwrap().as_nanos() % u128::from(u64::MAX),
            )
            .unwrap()
        })
        .max(1);
    eprintln!("chaos seed {seed} (set {SEED_ENV}={seed} to replay the supervisor's choices)");
    seed
}

/// The database of one chaos run.
enum Db {
    Sqlite { _dir: tempfile::TempDir, path: String },
    Postgres { url: String, schema: String },
}

impl Db {
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

/// A worker process, killed when dropped.
struct ChildWorker {
    child: Child,
    stderr: String,
}

impl ChildWorker {
    fn spawn(db: &Db, log: &str, stderr: String) -> Self {
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_worker_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DB_ENV, db.child_db())
            .env(LOG_ENV, log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("the test binary runs as a child");
        Self { child, stderr }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Fails the test with the child's output if it has exited by itself.
    fn check_alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            let output = std::fs::read_to_string(&self.stderr).unwrap_or_default();
            panic!("a worker process exited on its own ({status}):\n{output}");
        }
    }

    /// SIGKILL: no graceful shutdown, no lease released.
    fn kill(mut self) {
        self.check_alive();
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        assert!(!status.success(), "killed, not exited: {status}");
    }
}

impl Drop for ChildWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The streams and outputs of the jobs run without any disturbance.
async fn undisturbed() -> Vec<(Vec<WorkflowEvent>, Vec<DocumentResult>)> {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
    let worker = Worker::start(store.clone(), durable_workspace::register(Registry::new())).unwrap();
    let client = WorkflowClient::new(Client::new(store));
    for (n, job) in jobs().iter().enumerate() {
        client
            .start_with_id(DocumentProcessing, run_id(n), job)
            .await
            .unwrap();
    }
    let mut out = Vec::new();
    for n in 0..RUNS {
        let id = run_id(n);
        let result = client.wait_for_completion(&id, WAIT).await.unwrap();
        assert!(result.is_completed(), "{result:?}");
        let events = client
            .events(&id, 0, 10_000)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event)
            .collect();
        out.push((events, result.outputs_as().unwrap()));
    }
    worker.shutdown().await.unwrap();
    out
}

/// `(executor, superstep)` of the executor_completed events.
fn completed(events: &[SequencedEvent]) -> Vec<(String, u32)> {
    events
        .iter()
        .filter_map(|e| match &e.event {
            WorkflowEvent::ExecutorCompleted {
                executor_id,
                superstep,
                ..
            } => Some((executor_id.clone(), *superstep)),
            _ => None,
        })
        .collect()
}

/// Why a live status is not `{ superstep, pending_requests: [] }`, if it
/// is not.
fn live_status_problem(status: &Payload) -> Option<String> {
    let status: Value = match status.parse() {
        Ok(status) => status,
        Err(e) => return Some(format!("not JSON ({e}): {status}")),
    };
    let Some(object) = status.as_object() else {
        return Some(format!("not an object: {status}"));
    };
    let keys: BTreeSet<&str> = object.keys().map(String::as_str).collect();
    if keys != BTreeSet::from(["pending_requests", "superstep"]) {
        return Some(format!("unexpected fields: {status}"));
    }
    if !object["superstep"].is_u64() {
        return Some(format!("superstep is not a number: {status}"));
    }
    if object["pending_requests"] != Value::Array(Vec::new()) {
        return Some(format!("pending requests in a run that makes none: {status}"));
    }
    None
}

/// Samples the live status of every run until `stop`; returns how many
/// statuses it looked at and what was wrong with any of them.
fn sample_live_status(
    client: Client,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    tokio::spawn(async move {
        let mut samples = 0;
        let mut problems = Vec::new();
        while !stop.load(Ordering::Acquire) {
            for n in 0..RUNS {
                let Ok(Some(meta)) = client.get_instance(&run_id(n)).await else {
                    continue;
                };
                if let Some(status) = &meta.custom_status {
                    samples += 1;
                    if let Some(problem) = live_status_problem(status) {
                        problems.push(format!("{}: {problem}", meta.instance_id));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        (samples, problems)
    })
}

/// One line of the invocation log.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Logged {
    pid: String,
    instance: String,
    executor: String,
    step: u32,
}

fn read_log(path: &str) -> Vec<Logged> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let parts: Vec<&str> = line.split(' ').collect();
            assert_eq!(parts.len(), 4, "a log line: {line}");
            Logged {
                pid: parts[0].to_owned(),
                instance: parts[1].to_owned(),
                executor: parts[2].to_owned(),
                step: parts[3].parse().unwrap(),
            }
        })
        .collect()
}

/// The two chaos runs take turns: each wants the machine to itself.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn chaos(db: Db) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let expected = undisturbed().await;
    let mut rng = Rng(seed());
    let files = tempfile::tempdir().unwrap();
    let log = files.path().join("invocations").to_str().unwrap().to_owned();
    let stderr = |k: usize| {
        files
            .path()
            .join(format!("worker-{k}.log"))
            .to_str()
            .unwrap()
            .to_owned()
    };

    let store = db.open().await;
    let client = WorkflowClient::new(Client::new(store.clone()));
    for (n, job) in jobs().iter().enumerate() {
        client
            .start_with_id(DocumentProcessing, run_id(n), job)
            .await
            .unwrap();
    }

    // Watchers in this process follow a few streams across the kills.
    let watched: Vec<usize> = (0..RUNS).step_by(20).collect();
    let watchers: Vec<_> = watched
        .iter()
        .map(|&n| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut watch = Box::pin(client.watch(&run_id(n), 0));
                let mut got = Vec::new();
                while let Some(event) = tokio::time::timeout(WAIT, watch.next())
                    .await
                    .expect("the watch stalled")
                {
                    got.push(event.expect("watch yields events"));
                }
                got
            })
        })
        .collect();
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let sampler = sample_live_status(client.client().clone(), stop_sampling.clone());

    // The supervisor: two workers; every 150 to 400 ms one of them, at
    // random, is killed and replaced. An undisturbed run takes at least
    // six supersteps of 400 ms, so at least five kills land before the
    // runs end, however quick the machine.
    let mut spawned = 0;
    let mut pids = Vec::new();
    let mut workers: Vec<ChildWorker> = (0..WORKERS)
        .map(|_| {
            spawned += 1;
            let w = ChildWorker::spawn(&db, &log, stderr(spawned));
            pids.push(w.pid());
            w
        })
        .collect();
    let mut finished = BTreeSet::new();
    let started = tokio::time::Instant::now();
    let mut kills = 0;
    while started.elapsed() < CHAOS_FOR {
        tokio::time::sleep(Duration::from_millis(150 + rng.below(250))).await;
        for w in &mut workers {
            w.check_alive();
        }
        // Stop once every run is over.
        for n in 0..RUNS {
            if finished.contains(&n) {
                continue;
            }
            let meta = client.client().get_instance(&run_id(n)).await.unwrap().unwrap();
            if meta.status.is_terminal() {
                finished.insert(n);
            }
        }
        if finished.len() == RUNS {
            break;
        }
        let victim = usize::try_from(rng.below(WORKERS as u64)).unwrap();
        spawned += 1;
        let fresh = ChildWorker::spawn(&db, &log, stderr(spawned));
        pids.push(fresh.pid());
        std::mem::replace(&mut workers[victim], fresh).kill();
        kills += 1;
    }
    let chaos_time = started.elapsed();

    // The last two workers finish whatever is left.
    let mut results = Vec::new();
    for n in 0..RUNS {
        let result = tokio::time::timeout(WAIT, client.wait_for_completion(&run_id(n), WAIT))
            .await
            .expect("the run ends")
            .unwrap();
        results.push(result);
    }
    for w in &mut workers {
        w.check_alive();
    }
    stop_sampling.store(true, Ordering::Release);
    let (samples, problems) = sampler.await.unwrap();
    eprintln!(
        "chaos: {kills} kills in {chaos_time:?}, {spawned} worker processes, {samples} live statuses sampled"
    );
    assert!(kills >= 5, "the supervisor killed workers mid-run: {kills} kills");

    for (n, result) in results.iter().enumerate() {
        let id = run_id(n);
        let (expected_events, expected_outputs) = &expected[n];
        assert_eq!(result.status, RuntimeStatus::Completed, "{id}: {result:?}");
        assert_eq!(
            &result.outputs_as::<DocumentResult>().unwrap(),
            expected_outputs,
            "the outputs of {id}"
        );
        let events = client.events(&id, 0, 10_000).await.unwrap();
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            (1..=events.len() as u64).collect::<Vec<_>>(),
            "{id}: no gaps"
        );
        let got: Vec<WorkflowEvent> = events.iter().map(|e| e.event.clone()).collect();
        assert_eq!(
            &got, expected_events,
            "the stream of {id} is the undisturbed stream"
        );
        let done = completed(&events);
        let unique: BTreeSet<_> = done.iter().cloned().collect();
        assert_eq!(unique.len(), done.len(), "{id}: no completion twice: {done:?}");
        assert_eq!(
            done.iter().map(|(e, _)| e.as_str()).collect::<Vec<_>>(),
            jobs()[n].schedule(),
            "{id}: one completion per step of the schedule"
        );
        let meta = client.client().get_instance(&id).await.unwrap().unwrap();
        assert_eq!(meta.stream_len, events.len() as u64);
        if let Some(problem) = meta.custom_status.as_ref().and_then(live_status_problem) {
            panic!("{id}: final live status: {problem}");
        }
    }
    assert!(samples > 0, "the live status was sampled");
    assert!(problems.is_empty(), "live statuses: {problems:?}");
    for (watcher, n) in watchers.into_iter().zip(watched) {
        let seen = tokio::time::timeout(WAIT, watcher)
            .await
            .expect("the watcher ends")
            .unwrap();
        assert_eq!(
            seen,
            client.events(&run_id(n), 0, 10_000).await.unwrap(),
            "the watcher of run {n} saw exactly the stream"
        );
    }

    // Every executor step ran, in one of the workers; some more than once.
    let logged = read_log(&log);
    let mut runs: BTreeMap<(String, String, u32), usize> = BTreeMap::new();
    for l in &logged {
        assert!(pids.contains(&l.pid), "logged by a worker of this test: {l:?}");
        *runs
            .entry((l.instance.clone(), l.executor.clone(), l.step))
            .or_default() += 1;
    }
    let mut expected_steps = BTreeSet::new();
    for (n, job) in jobs().iter().enumerate() {
        for (step, executor) in job.schedule().into_iter().enumerate() {
            expected_steps.insert((run_id(n).to_string(), executor.to_owned(), step as u32 + 1));
        }
    }
    assert_eq!(
        runs.keys().cloned().collect::<BTreeSet<_>>(),
        expected_steps,
        "every executor step ran"
    );
    let redone: usize = runs.values().map(|n| n - 1).sum();
    let by_pid: BTreeSet<&String> = logged.iter().map(|l| &l.pid).collect();
    eprintln!(
        "chaos: {} executor runs for {} steps ({redone} repeated), by {} worker processes",
        logged.len(),
        expected_steps.len(),
        by_pid.len()
    );
    assert!(by_pid.len() > WORKERS, "replacement workers did part of the work");

    drop(workers);
    drop(client);
    drop(store);
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_100_runs_survive_workers_killed_every_few_hundred_milliseconds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chaos.db").to_str().unwrap().to_owned();
    chaos(Db::Sqlite { _dir: dir, path }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_100_runs_survive_workers_killed_every_few_hundred_milliseconds() {
    let Ok(url) = std::env::var(URL_ENV) else {
        eprintln!("skipped: {URL_ENV} is not set, so the PostgreSQL chaos test does not run");
        return;
    };
    let nanos = std::time::SystemTime::UNIX_EPOCH.elapsed().unwrap().as_nanos();
    let schema = format!("chaos_{}_{nanos}", std::process::id());
    chaos(Db::Postgres { url, schema }).await;
}
