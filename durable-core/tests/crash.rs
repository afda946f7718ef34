//! Crash tests: a worker runs in a child process (this test binary, re-run
//! as `child_worker_process`) and is killed with SIGKILL in the middle of
//! an orchestration; other workers take the instance over once the dead
//! worker's leases expire. The orchestration must complete with the right
//! result, and its stream must be exactly the expected list: no step lost,
//! none recorded twice, and a watcher in the parent process sees exactly
//! that stream. Activities may run again (at least once): those of the
//! turns the killed worker had run and not yet written, one chain of at
//! most 16 turns per kill, each step at most once more per kill.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{iid, summary, wait_done, WAIT};
use durable_core::prelude::*;
use serde_json::{json, Value};

/// Tells `child_worker_process` to act as a worker on this SQLite file.
const DB_ENV: &str = "DURABLE_CORE_CRASH_TEST_DB";

/// The lease of the workers that get killed: their work is taken over
/// this long after they die.
const CHILD_LEASE: Duration = Duration::from_millis(1000);

/// The most turns of one instance a worker runs before writing them
/// (quick activities chain their turns into one commit).
const MAX_CHAINED_TURNS: usize = 16;

fn effects_path(db: &str) -> String {
    format!("{db}.effects")
}

/// Each step: emit "step_started" and `burst` "progress" events, run the
/// `work` activity, emit "step_done" with its result.
async fn crashy(
    ctx: OrchestrationContext,
    (steps, burst): (u64, u64),
) -> Result<Vec<u64>, OrchestrationError> {
    let mut results = Vec::new();
    for i in 0..steps {
        ctx.emit_event("step_started", &i)?;
        for j in 0..burst {
            ctx.emit_event("progress", &json!([i, j]))?;
        }
        let r: u64 = ctx.call_activity("work", &i).await?;
        ctx.emit_event("step_done", &json!({ "i": i, "r": r }))?;
        results.push(r);
    }
    Ok(results)
}

fn expected_stream(steps: u64, burst: u64) -> Vec<(u64, String, Value)> {
    let mut out = Vec::new();
    for i in 0..steps {
        out.push(("step_started".to_owned(), json!(i)));
        for j in 0..burst {
            out.push(("progress".to_owned(), json!([i, j])));
        }
        out.push(("step_done".to_owned(), json!({ "i": i, "r": i * i + 1 })));
    }
    out.into_iter()
        .enumerate()
        .map(|(k, (name, payload))| (k as u64 + 1, name, payload))
        .collect()
}

/// The registry of every worker in these tests. The `work` activity
/// records each run (process id and step) in the effects file.
fn registry(effects: String) -> Registry {
    Registry::new()
        .orchestration("crashy", crashy)
        .activity("work", move |_ctx: ActivityContext, i: u64| {
            let effects = effects.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(15)).await;
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&effects)
                    .map_err(|e| e.to_string())?;
                // One write call, so that lines of several processes never interleave.
                let line = format!("{} {i}\n", std::process::id());
                file.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
                Ok::<_, String>(i * i + 1)
            }
        })
}

/// Not a test of its own: the body of the child process. It does nothing
/// unless `DB_ENV` names a database, and then runs a worker on it until it
/// is killed (or a minute has passed, so that no child outlives a failed
/// test for long).
#[test]
fn child_worker_process() {
    let Ok(db) = std::env::var(DB_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(db.clone()).await.unwrap());
        let _worker = Worker::start_with(
            store,
            registry(effects_path(&db)),
            WorkerOptions::new().lease(CHILD_LEASE),
        )
        .unwrap();
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
}

/// A worker in a child process, killed when dropped.
struct ChildWorker {
    child: Child,
    log: String,
}

impl ChildWorker {
    fn spawn(db: &str) -> Self {
        let log = format!(
            "{db}.child-{}.log",
            std::time::SystemTime::UNIX_EPOCH.elapsed().unwrap().as_nanos()
        );
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_worker_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DB_ENV, db)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("the test binary runs as a child");
        Self { child, log }
    }

    /// Fails the test with the child's log if it has exited by itself.
    fn check_alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            panic!("the child worker exited on its own ({status}):\n{log}");
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

/// Waits until the instance's stream holds at least `n` events, while the
/// child worker is alive.
async fn wait_for_progress(client: &Client, id: &InstanceId, n: u64, child: &mut ChildWorker) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        child.check_alive();
        let meta = client.get_instance(id).await.unwrap().unwrap();
        assert!(!meta.status.is_terminal(), "finished before the kill: {meta:?}");
        if meta.stream_len >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no progress to {n} events: {meta:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs `crashy(steps, burst)` on child workers killed when the stream
/// reaches each of `kill_at`, then on a worker of this process, and checks
/// the result, the stream and the activity runs.
async fn run_with_kills(steps: u64, burst: u64, kill_at: &[u64]) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db").to_str().unwrap().to_owned();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(db.clone()).await.unwrap());
    let client = Client::new(store.clone());
    let id = iid("crashy-1");
    client
        .start_with(
            StartOptions::new("crashy", &(steps, burst))
                .unwrap()
                .instance_id(id.clone()),
        )
        .await
        .unwrap();

    // A watcher in this process follows the stream that other processes
    // write, across the kills.
    let watcher = tokio::spawn({
        let client = client.clone();
        let id = id.clone();
        async move {
            use futures::StreamExt;
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

    for &n in kill_at {
        let mut child = ChildWorker::spawn(&db);
        wait_for_progress(&client, &id, n, &mut child).await;
        child.kill();
        let meta = client.get_instance(&id).await.unwrap().unwrap();
        assert!(!meta.status.is_terminal(), "the kill came mid-run: {meta:?}");
    }

    let worker = Worker::start_with(
        store.clone(),
        registry(effects_path(&db)),
        WorkerOptions::new().lease(Duration::from_millis(500)),
    )
    .unwrap();
    let meta = wait_done(&client, &id).await;
    worker.shutdown().await.unwrap();

    assert_eq!(meta.status, RuntimeStatus::Completed, "{:?}", meta.failure);
    let results: Vec<u64> = meta.output_as().unwrap();
    assert_eq!(results, (0..steps).map(|i| i * i + 1).collect::<Vec<_>>());

    let expected = expected_stream(steps, burst);
    let events = common::read_all(&client, &id, 1000).await;
    assert_eq!(
        summary(&events),
        expected,
        "the stream is exactly the expected list"
    );
    assert_eq!(meta.stream_len, expected.len() as u64);
    assert_eq!(
        summary(&watcher.await.unwrap()),
        expected,
        "the watcher saw exactly the stream"
    );

    // Every step's activity ran. A kill redoes the turns the worker had
    // run and not yet written, and their activities run again: up to 16
    // chained turns of the instance (docs/guarantees.md, "At least once").
    let effects = std::fs::read_to_string(effects_path(&db)).unwrap();
    let mut runs: BTreeMap<u64, usize> = BTreeMap::new();
    let mut pids = BTreeSet::new();
    for line in effects.lines() {
        let (pid, step) = line.split_once(' ').expect("pid and step");
        pids.insert(pid.to_owned());
        *runs.entry(step.parse().unwrap()).or_default() += 1;
    }
    assert_eq!(
        runs.keys().copied().collect::<Vec<_>>(),
        (0..steps).collect::<Vec<_>>()
    );
    let extra: usize = runs.values().map(|n| n - 1).sum();
    assert!(
        extra <= kill_at.len() * MAX_CHAINED_TURNS,
        "at most one chain of turns redone per kill: {runs:?}"
    );
    assert!(
        runs.values().all(|&n| n <= 1 + kill_at.len()),
        "no step ran more often than once and once per kill: {runs:?}"
    );
    assert_eq!(
        pids.len(),
        kill_at.len() + 1,
        "every worker did part of the work: {pids:?}"
    );
    assert!(pids.contains(&std::process::id().to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_process_loses_no_step_and_records_none_twice() {
    // Two events per step; killed after steps 5 and 20 or so.
    run_with_kills(40, 0, &[10, 40]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_has_no_duplicates_after_a_worker_process_is_killed() {
    // 52 events per step, killed at several points.
    run_with_kills(24, 50, &[200, 600, 900]).await;
}
