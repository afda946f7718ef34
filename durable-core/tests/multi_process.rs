//! Scale-out on PostgreSQL: three worker processes (this test binary, re-run
//! as `child_worker_process`) share one database; 200 orchestrations with
//! activities and stream events complete exactly once while one worker is
//! killed with SIGKILL mid-run and the others finish its work. Every stream
//! must be complete, ordered and without duplicates.
//!
//! Reads `DURABLE_TEST_POSTGRES_URL` and says so when it skips for lack of
//! it.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{summary, wait_done};
use durable_core::prelude::*;
use durable_core::store::PostgresStoreOptions;
use serde_json::{json, Value};

const URL_ENV: &str = "DURABLE_TEST_POSTGRES_URL";
/// Tells `child_worker_process` which schema to work on.
const SCHEMA_ENV: &str = "DURABLE_CORE_MULTI_PROCESS_SCHEMA";
/// Where the children record the activity runs.
const EFFECTS_ENV: &str = "DURABLE_CORE_MULTI_PROCESS_EFFECTS";

const LEASE: Duration = Duration::from_millis(1500);
const INSTANCES: usize = 200;
const STEPS: u64 = 3;

async fn job(ctx: OrchestrationContext, n: u64) -> Result<u64, OrchestrationError> {
    let mut sum = 0;
    for step in 0..STEPS {
        ctx.emit_event("step_started", &step)?;
        let r: u64 = ctx.call_activity("work", &(n, step)).await?;
        ctx.emit_event("step_done", &json!({ "step": step, "r": r }))?;
        sum += r;
    }
    Ok(sum)
}

fn expected_stream(n: u64) -> Vec<(u64, String, Value)> {
    let mut out = Vec::new();
    for step in 0..STEPS {
        out.push(("step_started".to_owned(), json!(step)));
        out.push((
            "step_done".to_owned(),
            json!({ "step": step, "r": n * 10 + step }),
        ));
    }
    out.into_iter()
        .enumerate()
        .map(|(k, (name, payload))| (k as u64 + 1, name, payload))
        .collect()
}

fn registry(effects: String) -> Registry {
    Registry::new().orchestration("job", job).activity(
        "work",
        move |ctx: ActivityContext, (n, step): (u64, u64)| {
            let effects = effects.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&effects)
                    .map_err(|e| e.to_string())?;
                // One write call, so that lines of several processes never interleave.
                // The attempt tells a run the scheduling turn started (1)
                // from one claimed from the store after a lease ran out.
                let line = format!("{} {n} {step} {}\n", std::process::id(), ctx.attempt);
                file.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
                Ok::<_, String>(n * 10 + step)
            }
        },
    )
}

async fn store(url: &str, schema: &str) -> Arc<dyn Store> {
    let options = PostgresStoreOptions::new(url).schema(schema);
    Arc::new(
        PostgresStore::with_options(options)
            .await
            .expect("postgres store"),
    )
}

/// Not a test of its own: the body of a child worker process. It does
/// nothing unless `SCHEMA_ENV` is set, and then runs a worker until it is
/// killed (or a minute has passed).
#[test]
fn child_worker_process() {
    let (Ok(url), Ok(schema), Ok(effects)) = (
        std::env::var(URL_ENV),
        std::env::var(SCHEMA_ENV),
        std::env::var(EFFECTS_ENV),
    ) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store = store(&url, &schema).await;
        let _worker =
            Worker::start_with(store, registry(effects), WorkerOptions::new().lease(LEASE)).unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
}

/// A worker process, killed when dropped.
struct ChildWorker(Child);

impl ChildWorker {
    fn spawn(url: &str, schema: &str, effects: &str) -> Self {
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_worker_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(URL_ENV, url)
            .env(SCHEMA_ENV, schema)
            .env(EFFECTS_ENV, effects)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("the test binary runs as a child");
        Self(child)
    }

    fn id(&self) -> u32 {
        self.0.id()
    }

    fn kill(&mut self) {
        let _ = self.0.kill(); // SIGKILL
        let _ = self.0.wait();
    }
}

impl Drop for ChildWorker {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_processes_share_the_work_and_survive_a_kill() {
    let Ok(url) = std::env::var(URL_ENV) else {
        eprintln!("skipped: {URL_ENV} is not set, so the multi-process PostgreSQL test does not run");
        return;
    };
    let schema = format!("test_{}", uuid::Uuid::new_v4().simple());
    let dir = tempfile::tempdir().unwrap();
    let effects = dir.path().join("effects").to_string_lossy().into_owned();
    let store = store(&url, &schema).await;
    let client = Client::new(store.clone());

    let mut workers: Vec<ChildWorker> = (0..3)
        .map(|_| ChildWorker::spawn(&url, &schema, &effects))
        .collect();
    let mut ids = Vec::new();
    for n in 0..INSTANCES as u64 {
        ids.push((n, client.start("job", &n).await.unwrap()));
    }
    // Kill one worker once the run is well under way.
    common::eventually("a third of the steps done", || async {
        let runs = std::fs::read_to_string(&effects).unwrap_or_default();
        (runs.lines().count() >= INSTANCES).then_some(())
    })
    .await;
    let killed = workers[0].id();
    workers[0].kill();

    for (n, id) in &ids {
        let meta = wait_done(&client, id).await;
        assert_eq!(meta.status, RuntimeStatus::Completed, "{id}: {:?}", meta.failure);
        assert_eq!(meta.output_as::<u64>().unwrap(), n * 10 * STEPS + 3, "{id}");
        let events = common::read_all(&client, id, 100).await;
        assert_eq!(summary(&events), expected_stream(*n), "the stream of {id}");
    }

    // Every step ran at least once; a step runs twice only if the killed
    // worker was running it.
    let runs = std::fs::read_to_string(&effects).unwrap();
    let mut by_step: BTreeMap<(u64, u64), Vec<(u32, u64)>> = BTreeMap::new();
    let mut by_process: BTreeMap<u32, usize> = BTreeMap::new();
    for line in runs.lines() {
        let parts: Vec<u64> = line.split(' ').map(|p| p.parse().unwrap()).collect();
        let pid = u32::try_from(parts[0]).unwrap();
        by_step
            .entry((parts[1], parts[2]))
            .or_default()
            .push((pid, parts[3]));
        *by_process.entry(pid).or_default() += 1;
    }
    assert_eq!(by_step.len(), INSTANCES * STEPS as usize, "every step ran");
    for (step, runs) in &by_step {
        if runs.len() > 1 {
            assert!(
                runs.iter().any(|(pid, _)| *pid == killed),
                "step {step:?} ran twice without a kill (process, attempt): {runs:?}; \
                 worker {killed} was killed"
            );
        }
    }
    assert_eq!(by_process.len(), 3, "all three workers took part: {by_process:?}");
    let survivors: usize = by_process
        .iter()
        .filter(|(pid, _)| **pid != killed)
        .map(|(_, n)| n)
        .sum();
    assert!(survivors > 0);

    drop(workers);
    drop(client);
    drop(store);
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&pool)
        .await
        .unwrap();
}
