//! The workflow layer survives a killed worker process: a worker in a
//! child process (this test binary, re-run as `child_worker_process`) runs
//! document-processing runs and is killed with SIGKILL in the middle of a
//! superstep; a new worker with a short lease takes the runs over. Every
//! run must complete with the outputs of an undisturbed run, its stream
//! must be exactly the undisturbed stream (each executor completion once,
//! no duplicate, sequence numbers 1..n without gaps), a watcher following
//! it across the kill must see exactly that, and no executor whose
//! completion was recorded before the kill may run again. (Executors that
//! were running when the worker died run again: activities are
//! at-least-once.)

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use agent_workflows::{SequencedEvent, WorkflowClient, WorkflowEvent};
use common::{within, WAIT};
use durable_core::store::{SqliteStore, Store};
use durable_core::{Client, InstanceId, Registry, RuntimeStatus, Worker, WorkerOptions};
use durable_workspace::document_processing::{
    register_with_hooks, DocumentJob, DocumentProcessing, DocumentResult, Hooks,
};
use futures::StreamExt;

/// Tells `child_worker_process` to act as a worker on this SQLite file.
const DB_ENV: &str = "DURABLE_WORKSPACE_CRASH_TEST_DB";

/// The lease of the worker that gets killed: its work is taken over this
/// long after it dies.
const CHILD_LEASE: Duration = Duration::from_millis(1000);

/// The runs: two of six executors and one of eight, each executor working
/// 150 ms so that a kill lands in the middle of a superstep.
fn jobs() -> Vec<DocumentJob> {
    vec![
        DocumentJob::new("crash-a").work_ms(150),
        DocumentJob::new("crash-b").work_ms(150).output_kb(4),
        DocumentJob::new("crash-c").executors(8).work_ms(150),
    ]
}

fn log_path(db: &str) -> String {
    format!("{db}.invocations")
}

/// Hooks that append `pid instance executor step` to the log for every
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
            register_with_hooks(Registry::new(), logging_hooks(log_path(&db))),
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

    fn pid(&self) -> String {
        self.child.id().to_string()
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

/// One line of the invocation log.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Logged {
    pid: String,
    instance: String,
    executor: String,
    step: u32,
}

fn read_log(db: &str) -> Vec<Logged> {
    std::fs::read_to_string(log_path(db))
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

async fn all_events(client: &WorkflowClient, id: &InstanceId) -> Vec<SequencedEvent> {
    client.events(id, 0, 10_000).await.unwrap()
}

/// The streams and results of the jobs run without any disturbance.
async fn undisturbed() -> Vec<(Vec<WorkflowEvent>, Vec<DocumentResult>)> {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
    let worker = Worker::start(store.clone(), durable_workspace::register(Registry::new())).unwrap();
    let client = WorkflowClient::new(Client::new(store));
    let mut ids = Vec::new();
    for job in jobs() {
        ids.push(client.start(DocumentProcessing, &job).await.unwrap());
    }
    let mut out = Vec::new();
    for id in &ids {
        let result = client.wait_for_completion(id, WAIT).await.unwrap();
        assert!(result.is_completed(), "{result:?}");
        let events = all_events(&client, id)
            .await
            .into_iter()
            .map(|e| e.event)
            .collect();
        out.push((events, result.outputs_as().unwrap()));
    }
    worker.shutdown().await.unwrap();
    out
}

/// Waits until every run has at least `finished` executor completions in
/// its stream and an executor of `child` is running (logged, its
/// completion not yet in the stream).
async fn wait_for_mid_superstep(
    client: &WorkflowClient,
    ids: &[InstanceId],
    db: &str,
    child: &mut ChildWorker,
    finished: usize,
) {
    let child_pid = child.pid();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        child.check_alive();
        let mut done = BTreeSet::new();
        let mut enough = true;
        for id in ids {
            let completions = completed(&all_events(client, id).await);
            enough &= completions.len() >= finished;
            for (executor, step) in completions {
                done.insert((id.to_string(), executor, step));
            }
        }
        let running = read_log(db)
            .into_iter()
            .any(|l| l.pid == child_pid && !done.contains(&(l.instance, l.executor, l.step)));
        if enough && running {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the child made no progress to {finished} executors per run"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Runs the jobs on child workers, each killed once every run has
/// `finished` executors done (one child per entry of `kill_after`), then
/// on a worker of this process; checks outputs, streams and executor runs.
async fn run_with_kills(kill_after: &[usize]) {
    let expected = undisturbed().await;

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db").to_str().unwrap().to_owned();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(db.clone()).await.unwrap());
    let client = WorkflowClient::new(Client::new(store.clone()));
    let mut ids = Vec::new();
    for (n, job) in jobs().iter().enumerate() {
        let id = InstanceId::new(format!("crash-run-{n}")).unwrap();
        client
            .start_with_id(DocumentProcessing, id.clone(), job)
            .await
            .unwrap();
        ids.push(id);
    }

    // Watchers in this process follow the streams that the other
    // processes write, across the kills.
    let watchers: Vec<_> = ids
        .iter()
        .map(|id| {
            let client = client.clone();
            let id = id.clone();
            tokio::spawn(async move {
                let mut watch = Box::pin(client.watch(&id, 0));
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

    // Each child is killed mid-superstep; what was recorded before each
    // kill must never run again.
    let mut worker_pids = Vec::new();
    let mut recorded_before_kill = Vec::new();
    for &finished in kill_after {
        let mut child = ChildWorker::spawn(&db);
        worker_pids.push(child.pid());
        wait_for_mid_superstep(&client, &ids, &db, &mut child, finished).await;
        child.kill();
        let mut recorded = BTreeSet::new();
        for id in &ids {
            let meta = client.client().get_instance(id).await.unwrap().unwrap();
            assert!(!meta.status.is_terminal(), "the kill came mid-run: {meta:?}");
            for (executor, step) in completed(&all_events(&client, id).await) {
                recorded.insert((id.to_string(), executor, step));
            }
        }
        recorded_before_kill.push(recorded);
    }

    // A new worker, with a short lease, takes over once the last child's
    // leases have expired.
    worker_pids.push(std::process::id().to_string());
    let worker = Worker::start_with(
        store.clone(),
        register_with_hooks(Registry::new(), logging_hooks(log_path(&db))),
        WorkerOptions::new().lease(Duration::from_millis(500)),
    )
    .unwrap();
    let mut results = Vec::new();
    for id in &ids {
        results.push(
            within("the run", client.wait_for_completion(id, WAIT))
                .await
                .unwrap(),
        );
    }
    worker.shutdown().await.unwrap();

    for (n, (id, result)) in ids.iter().zip(&results).enumerate() {
        let (expected_events, expected_outputs) = &expected[n];
        assert_eq!(result.status, RuntimeStatus::Completed, "{result:?}");
        assert_eq!(
            &result.outputs_as::<DocumentResult>().unwrap(),
            expected_outputs,
            "the right outputs"
        );

        // The stream: 1..n without gaps, exactly the undisturbed stream.
        let events = all_events(&client, id).await;
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>(), "no gaps");
        let got: Vec<WorkflowEvent> = events.iter().map(|e| e.event.clone()).collect();
        assert_eq!(
            &got, expected_events,
            "the stream of {id} is the undisturbed stream"
        );

        // Each executor's completion exactly once: per executor id for the
        // six-executor runs, per (executor, superstep) for every run.
        let done = completed(&events);
        let unique: BTreeSet<_> = done.iter().cloned().collect();
        assert_eq!(unique.len(), done.len(), "no completion twice: {done:?}");
        let schedule = jobs()[n].schedule();
        assert_eq!(done.iter().map(|(e, _)| e.as_str()).collect::<Vec<_>>(), schedule);
        if schedule.len() == 6 {
            let executors: BTreeSet<&str> = done.iter().map(|(e, _)| e.as_str()).collect();
            assert_eq!(executors.len(), 6, "each executor id exactly once: {done:?}");
        }
    }
    // The watchers saw exactly the streams, across the kills.
    for (n, watcher) in watchers.into_iter().enumerate() {
        let watched = within("the watcher", watcher).await.unwrap();
        assert_eq!(
            watched,
            all_events(&client, &ids[n]).await,
            "the watcher saw the stream"
        );
    }

    // Executor runs: every step ran; no worker started after a kill ran a
    // step recorded before it; a step runs again only if a kill
    // interrupted it, and each run has at most one such step per kill.
    let log = read_log(&db);
    let mut runs: BTreeMap<(String, String, u32), Vec<String>> = BTreeMap::new();
    for l in &log {
        assert!(worker_pids.contains(&l.pid), "logged by a known worker: {l:?}");
        runs.entry((l.instance.clone(), l.executor.clone(), l.step))
            .or_default()
            .push(l.pid.clone());
    }
    let mut expected_steps = BTreeSet::new();
    for (n, id) in ids.iter().enumerate() {
        for (step, executor) in jobs()[n].schedule().into_iter().enumerate() {
            expected_steps.insert((id.to_string(), executor.to_owned(), step as u32 + 1));
        }
    }
    assert_eq!(
        runs.keys().cloned().collect::<BTreeSet<_>>(),
        expected_steps,
        "every step ran"
    );
    for (k, recorded) in recorded_before_kill.iter().enumerate() {
        let later = &worker_pids[k + 1..];
        for key in recorded {
            assert!(
                runs[key].iter().all(|pid| !later.contains(pid)),
                "{key:?} was recorded before kill {} and ran again: {:?}",
                k + 1,
                runs[key]
            );
        }
    }
    let mut redone_per_run: BTreeMap<&str, usize> = BTreeMap::new();
    for ((instance, _, _), pids) in &runs {
        *redone_per_run.entry(instance.as_str()).or_default() += pids.len() - 1;
    }
    assert!(
        redone_per_run.values().all(|n| *n <= kill_after.len()),
        "at most one redone executor per run and kill: {runs:?}"
    );
    let pids: BTreeSet<&String> = log.iter().map(|l| &l.pid).collect();
    assert_eq!(
        pids.len(),
        worker_pids.len(),
        "every worker did part of the work: {pids:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_killed_mid_superstep_loses_nothing_and_redoes_no_finished_executor() {
    run_with_kills(&[2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_killed_in_turn_lose_nothing_and_redo_no_finished_executor() {
    run_with_kills(&[1, 4]).await;
}
