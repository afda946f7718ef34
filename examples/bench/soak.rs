//! The soak scenario: a steady load for `--seconds N` of document-processing
//! runs and human-approval runs (answered by a client once their request is
//! pending), with watchers that attach, read a few events, detach and
//! attach again from their cursor. Every five seconds it notes the runs
//! completed, the errors, the p99 time of the runs completed in that window,
//! the slowest commit of the store in it, and the resident memory (all of
//! it, and the anonymous part: the heap, without the database file mapped
//! into memory); memory must not grow without bound.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_workflows::WorkflowClient;
use durable_core::prelude::*;
use durable_workspace::approval::{human_approval, ApprovalJob, Decision};
use durable_workspace::document_processing::{DocumentJob, DocumentProcessing};
use futures::StreamExt;
use serde_json::{json, Map, Value};

use crate::support::{percentile_ms, round, rss_anon_bytes, rss_bytes, BoxError, Db};
use crate::timing::TimingStore;
use crate::Config;

/// The length of a reporting window.
const WINDOW: Duration = Duration::from_secs(5);
/// Runs started per second (document processing; one approval in five).
const RATE: u64 = 40;

#[derive(Default)]
struct Tally {
    completed: AtomicU64,
    errors: AtomicU64,
    latencies: Mutex<Vec<Duration>>,
}

impl Tally {
    fn done(&self, started: Instant) {
        self.completed.fetch_add(1, Ordering::Relaxed);
        self.latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(started.elapsed());
    }

    fn error(&self, what: &str, error: &dyn std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        eprintln!("soak: {what}: {error}");
    }
}

/// Follows a run's stream in pieces: reads a few events, lets go, and
/// comes back after its cursor, until the stream ends; checks that the
/// sequence numbers have no gap and no repeat.
async fn restless_watcher(client: Client, id: InstanceId) -> Result<u64, BoxError> {
    let mut cursor = 0;
    loop {
        let mut events = client.watch_events(&id, cursor).take(4);
        let mut got = 0;
        while let Some(event) = events.next().await {
            let event = event?;
            if event.seq != cursor + 1 {
                return Err(format!("stream of {id}: seq {} after {cursor}", event.seq).into());
            }
            cursor = event.seq;
            got += 1;
        }
        if got < 4 {
            return Ok(cursor); // the stream ended
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn document_run(workflows: WorkflowClient, n: u64, tally: Arc<Tally>) {
    let started = Instant::now();
    let id = match workflows
        .start(DocumentProcessing, &DocumentJob::new(format!("soak-{n}")))
        .await
    {
        Ok(id) => id,
        Err(e) => return tally.error("start", &e),
    };
    match restless_watcher(workflows.client().clone(), id.clone()).await {
        Ok(27) => {}
        Ok(n) => return tally.error("stream", &format!("{id} streamed {n} events, expected 27")),
        Err(e) => return tally.error("watch", &e),
    }
    match workflows.wait_for_completion(&id, Duration::from_secs(120)).await {
        Ok(result) if result.is_completed() => tally.done(started),
        Ok(result) => tally.error("run", &format!("{id} ended {:?}", result.status)),
        Err(e) => tally.error("wait", &e),
    }
}

async fn approval_run(workflows: WorkflowClient, n: u64, tally: Arc<Tally>) {
    let started = Instant::now();
    let id = match workflows
        .start(human_approval, &ApprovalJob::new(format!("soak-approval-{n}")))
        .await
    {
        Ok(id) => id,
        Err(e) => return tally.error("start approval", &e),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let request = loop {
        match workflows.pending_requests(&id).await {
            Ok(pending) if !pending.is_empty() => break pending[0].request_id.clone(),
            Ok(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            Ok(_) => return tally.error("approval", &format!("{id}: no request within a minute")),
            Err(e) => return tally.error("pending requests", &e),
        }
    };
    let decision = if n.is_multiple_of(2) {
        Decision::approve("soak")
    } else {
        Decision::reject("soak")
    };
    if let Err(e) = workflows.respond(&id, &request, &decision).await {
        return tally.error("respond", &e);
    }
    match workflows.wait_for_completion(&id, Duration::from_secs(120)).await {
        Ok(result) if result.is_completed() => tally.done(started),
        Ok(result) => tally.error("approval run", &format!("{id} ended {:?}", result.status)),
        Err(e) => tally.error("wait approval", &e),
    }
}

/// Runs the soak for `config.seconds`.
pub(crate) async fn run(config: &Config) -> Result<Map<String, Value>, BoxError> {
    let db = Db::fresh(config).await?;
    let timing = Arc::new(TimingStore::commits_only(db.store.clone()));
    let store: Arc<dyn Store> = timing.clone();
    let worker = Worker::start(store.clone(), durable_workspace::register(Registry::new()))?;
    let workflows = WorkflowClient::new(Client::new(store));
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let end = started + Duration::from_secs(config.seconds);
    let mut windows = Vec::new();
    let mut window_start = Instant::now();
    let mut window_completed = 0;
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    let mut tasks = tokio::task::JoinSet::new();
    let mut n = 0u64;
    while Instant::now() < end {
        ticker.tick().await;
        n += 1;
        if n.is_multiple_of(5) {
            tasks.spawn(approval_run(workflows.clone(), n, tally.clone()));
        } else {
            tasks.spawn(document_run(workflows.clone(), n, tally.clone()));
        }
        while tasks.try_join_next().is_some() {}
        if window_start.elapsed() >= WINDOW {
            let completed = tally.completed.load(Ordering::Relaxed);
            let mut latencies =
                std::mem::take(&mut *tally.latencies.lock().unwrap_or_else(|e| e.into_inner()));
            let (rss, _) = rss_bytes();
            windows.push(json!({
                "t_s": round(started.elapsed().as_secs_f64(), 1),
                "completed": completed - window_completed,
                "errors": tally.errors.load(Ordering::Relaxed),
                "p99_ms": round(percentile_ms(&mut latencies, 99.0), 1),
                "slowest_commit_ms": round(timing.take_slowest_commit().as_secs_f64() * 1000.0, 1),
                "rss_bytes": rss,
                "rss_anon_bytes": rss_anon_bytes(),
                "in_flight": tasks.len(),
            }));
            eprintln!(
                "soak: {}",
                windows.last().map(Value::to_string).unwrap_or_default()
            );
            window_completed = completed;
            window_start = Instant::now();
        }
    }
    // Let the runs in flight finish.
    while tasks.join_next().await.is_some() {}
    let seconds = started.elapsed().as_secs_f64();
    worker.shutdown().await?;
    db.cleanup().await?;
    let rss: Vec<u64> = windows
        .iter()
        .filter_map(|w| w["rss_anon_bytes"].as_u64())
        .collect();
    let mut f = Map::new();
    f.insert("started".into(), json!(n));
    f.insert("completed".into(), json!(tally.completed.load(Ordering::Relaxed)));
    f.insert("errors".into(), json!(tally.errors.load(Ordering::Relaxed)));
    f.insert(
        "runs_per_s".into(),
        round(tally.completed.load(Ordering::Relaxed) as f64 / seconds, 1),
    );
    if let (Some(first), Some(last)) = (rss.get(1).or(rss.first()), rss.last()) {
        // From the second window on (the first includes start-up). The
        // anonymous memory: the database file mapped into memory grows
        // with the database, up to the mmap size.
        f.insert("rss_anon_first_bytes".into(), json!(first));
        f.insert("rss_anon_last_bytes".into(), json!(last));
    }
    f.insert("windows".into(), Value::Array(windows));
    f.insert("seconds".into(), round(seconds, 1));
    Ok(f)
}
