//! The benchmark scenarios. Each returns its figures; `main` prints them.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use durable_core::prelude::*;
use durable_core::{InstanceQuery, Limits};
use futures::StreamExt;
use serde_json::{json, Map, Value};

use agent_workflows::WorkflowClient;
use durable_workspace::document_processing::{DocumentJob, DocumentProcessing};

use crate::support::{mean_ms, percentile_ms, round, rss_bytes, BoxError, Db, WorkerProcesses};
use crate::timing::TimingStore;
use crate::Config;

type Figures = Map<String, Value>;

/// Runs scenario `name`.
pub(crate) async fn run(name: &str, config: &Config) -> Result<Figures, BoxError> {
    match name {
        "pipeline" => pipeline(config, false).await,
        "pipeline_concurrent" => pipeline(config, true).await,
        "activities" => activities(config).await,
        "stream_append" => stream_append(config).await,
        "stream_live" => stream_live(config).await,
        "status_vs_stream" => status_vs_stream(config).await,
        "idle_instances" => idle_instances(config).await,
        "soak" => crate::soak::run(config).await,
        "commit_rate" => commit_rate(config).await,
        "simulate" => simulate(config).await,
        other => Err(format!("unknown scenario {other:?}").into()),
    }
}

/// Records the instant each call of an activity starts.
#[derive(Clone, Default)]
struct Clock(Arc<Mutex<Vec<Instant>>>);

impl Clock {
    fn tick(&self) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Instant::now());
    }

    /// The instants of the ticks, in order.
    fn instants(&self) -> Vec<Instant> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The time between consecutive ticks.
    fn steps(&self) -> Vec<Duration> {
        let ticks = self.0.lock().unwrap_or_else(|e| e.into_inner());
        ticks.windows(2).map(|w| w[1] - w[0]).collect()
    }
}

fn ticking_activity(registry: Registry, name: &str, clock: &Clock) -> Registry {
    let clock = clock.clone();
    registry.activity(name, move |_ctx: ActivityContext, step: u32| {
        let clock = clock.clone();
        async move {
            clock.tick();
            Ok::<u32, Infallible>(step)
        }
    })
}

async fn sequence(ctx: OrchestrationContext, steps: u32) -> Result<u32, OrchestrationError> {
    let mut sum = 0;
    for i in 0..steps {
        sum += ctx.call_activity::<u32>("step", &i).await?;
    }
    Ok(sum)
}

/// One orchestration of 1,000 sequential activities: the cost of a step at
/// the start against the end of a long history.
async fn activities(config: &Config) -> Result<Figures, BoxError> {
    const STEPS: u32 = 1_000;
    let db = Db::fresh(config).await?;
    let timing = Arc::new(TimingStore::new(db.store.clone()));
    let store: Arc<dyn Store> = timing.clone();
    let clock = Clock::default();
    let registry = ticking_activity(
        Registry::new().orchestration("sequence", sequence),
        "step",
        &clock,
    );
    let worker = Worker::start(store.clone(), registry)?;
    let client = Client::new(store);
    let started = Instant::now();
    let id = client.start("sequence", &STEPS).await?;
    let done = client.wait_for_completion(&id, Duration::from_secs(600)).await?;
    let seconds = started.elapsed().as_secs_f64();
    if done.output_as::<u32>()? != STEPS * (STEPS - 1) / 2 {
        return Err(format!("wrong output {:?}", done.output).into());
    }
    worker.shutdown().await?;
    let steps = clock.steps();
    let first = mean_ms(&steps[..100]);
    let last = mean_ms(&steps[steps.len() - 100..]);
    let mut f = Figures::new();
    f.insert("steps".into(), json!(STEPS));
    f.insert("first_100_ms".into(), round(first, 4));
    f.insert("last_100_ms".into(), round(last, 4));
    f.insert("ratio".into(), round(last / first, 3));
    f.insert("seconds".into(), round(seconds, 3));
    f.insert("commits".into(), json!(timing.commits()));
    db.cleanup().await?;
    Ok(f)
}

async fn burst(ctx: OrchestrationContext, (count, size): (u32, usize)) -> Result<u32, OrchestrationError> {
    // A JSON string of `size` bytes, quotes included.
    let payload = "x".repeat(size.saturating_sub(2));
    for _ in 0..count {
        ctx.emit_event("tick", &payload)?;
    }
    Ok(count)
}

/// Reads the whole stream of `id` live and checks it is 1..=count in order.
async fn watch_all(client: &Client, id: &InstanceId, count: u64) -> Result<Vec<Instant>, BoxError> {
    let mut received = Vec::with_capacity(count as usize);
    let mut events = std::pin::pin!(client.watch_events(id, 0));
    while let Some(event) = events.next().await {
        let event = event?;
        if event.seq != received.len() as u64 + 1 {
            return Err(format!(
                "stream out of order: got seq {} after {}",
                event.seq,
                received.len()
            )
            .into());
        }
        received.push(Instant::now());
    }
    if received.len() as u64 != count {
        return Err(format!("stream has {} events, expected {count}", received.len()).into());
    }
    Ok(received)
}

/// 10,000 events of 200 B emitted in one turn, read by a live watcher.
async fn stream_append(config: &Config) -> Result<Figures, BoxError> {
    const COUNT: u32 = 10_000;
    const SIZE: usize = 200;
    let db = Db::fresh(config).await?;
    let store = db.store.clone();
    let worker = Worker::start(store.clone(), Registry::new().orchestration("burst", burst))?;
    let client = Client::new(store);
    let id = InstanceId::new("burst")?;
    let started = Instant::now();
    client
        .start_with(StartOptions::new("burst", &(COUNT, SIZE))?.instance_id(id.clone()))
        .await?;
    let watcher = {
        let client = client.clone();
        let id = id.clone();
        tokio::spawn(async move { watch_all(&client, &id, u64::from(COUNT)).await })
    };
    let received = watcher.await??;
    let seconds = (*received.last().ok_or("no events")? - started).as_secs_f64();
    worker.shutdown().await?;
    let mut f = Figures::new();
    f.insert("events".into(), json!(COUNT));
    f.insert("event_bytes".into(), json!(SIZE));
    f.insert("events_per_s".into(), round(f64::from(COUNT) / seconds, 0));
    f.insert("seconds".into(), round(seconds, 4));
    db.cleanup().await?;
    Ok(f)
}

async fn ticker(ctx: OrchestrationContext, count: u32) -> Result<u32, OrchestrationError> {
    for i in 0..count {
        ctx.call_activity::<u32>("tiny", &i).await?;
        ctx.emit_event("tick", &i)?;
    }
    Ok(count)
}

/// 1,000 events, one per turn, each turn waiting on a tiny activity: the
/// time from the commit of an emit to its arrival at a live watcher.
/// The registry of the `stream_live` scenario (also run by worker
/// processes).
pub(crate) fn ticker_registry(registry: Registry) -> Registry {
    ticker_registry_noting(registry, &Clock::default())
}

/// The `stream_live` registry whose `tiny` activity notes when each call
/// returns: event `i + 1` is emitted by the turn that takes that result.
fn ticker_registry_noting(registry: Registry, returned: &Clock) -> Registry {
    let returned = returned.clone();
    registry
        .orchestration("ticker", ticker)
        .activity("tiny", move |_ctx: ActivityContext, i: u32| {
            let returned = returned.clone();
            async move {
                returned.tick();
                Ok::<u32, Infallible>(i)
            }
        })
}

async fn stream_live(config: &Config) -> Result<Figures, BoxError> {
    const COUNT: u32 = 1_000;
    if config.workers > 1 {
        return stream_live_across_processes(config, COUNT).await;
    }
    let db = Db::fresh(config).await?;
    let inner = db.store.clone();
    let timing = Arc::new(TimingStore::new(inner));
    let store: Arc<dyn Store> = timing.clone();
    let returned = Clock::default();
    let worker = Worker::start(store.clone(), ticker_registry_noting(Registry::new(), &returned))?;
    let client = Client::new(store);
    let id = InstanceId::new("ticker")?;
    client
        .start_with(StartOptions::new("ticker", &COUNT)?.instance_id(id.clone()))
        .await?;
    let watcher = {
        let client = client.clone();
        let id = id.clone();
        tokio::spawn(async move { watch_all(&client, &id, u64::from(COUNT)).await })
    };
    let received = watcher.await??;
    worker.shutdown().await?;
    let committed = timing.commit_times(&id);
    let mut latencies: Vec<Duration> = received
        .iter()
        .enumerate()
        .filter_map(|(i, at)| {
            committed
                .get(&(i as u64 + 1))
                .map(|c| at.saturating_duration_since(*c))
        })
        .collect();
    if latencies.len() != COUNT as usize {
        return Err(format!("commit times known for {} of {COUNT} events", latencies.len()).into());
    }
    // From the return of the activity whose result the emitting turn took:
    // what a reader waits for an event, turn and commit included.
    let returns = returned.instants();
    if returns.len() != COUNT as usize {
        return Err(format!("the activity ran {} times for {COUNT} events", returns.len()).into());
    }
    let mut from_return: Vec<Duration> = received
        .iter()
        .zip(&returns)
        .map(|(at, back)| at.saturating_duration_since(*back))
        .collect();
    let mut f = Figures::new();
    f.insert("events".into(), json!(COUNT));
    f.insert("p50_ms".into(), round(percentile_ms(&mut latencies, 50.0), 4));
    f.insert("p99_ms".into(), round(percentile_ms(&mut latencies, 99.0), 4));
    f.insert(
        "from_activity_p50_ms".into(),
        round(percentile_ms(&mut from_return, 50.0), 4),
    );
    f.insert(
        "from_activity_p99_ms".into(),
        round(percentile_ms(&mut from_return, 99.0), 4),
    );
    f.insert("commits".into(), json!(timing.commits()));
    db.cleanup().await?;
    Ok(f)
}

/// `stream_live` with the worker in other processes: the time from an
/// event's `emitted_at` (the start of the turn that emitted it, to the
/// millisecond) to its arrival at a watcher in this process. Both clocks are
/// this machine's.
async fn stream_live_across_processes(config: &Config, count: u32) -> Result<Figures, BoxError> {
    let db = Db::fresh(config).await?;
    let _workers = WorkerProcesses::spawn(config.workers, &db.target)?;
    let client = Client::new(db.store.clone());
    let id = InstanceId::new("ticker")?;
    client
        .start_with(StartOptions::new("ticker", &count)?.instance_id(id.clone()))
        .await?;
    let mut latencies = Vec::with_capacity(count as usize);
    let mut events = client.watch_events(&id, 0);
    while let Some(event) = events.next().await {
        let event = event?;
        let now = chrono::Utc::now();
        latencies.push((now - event.emitted_at).to_std().unwrap_or_default());
    }
    if latencies.len() != count as usize {
        return Err(format!("the watcher got {} of {count} events", latencies.len()).into());
    }
    let mut f = Figures::new();
    f.insert("events".into(), json!(count));
    f.insert(
        "measured_from".into(),
        json!("emitted_at (turn start, ms), across processes"),
    );
    f.insert("p50_ms".into(), round(percentile_ms(&mut latencies, 50.0), 4));
    f.insert("p99_ms".into(), round(percentile_ms(&mut latencies, 99.0), 4));
    db.cleanup().await?;
    Ok(f)
}

/// The seeds' workaround: every step re-serializes the growing event list
/// into custom status. Returns the step at which the status write failed,
/// or the step count.
async fn status_workaround(ctx: OrchestrationContext, steps: u32) -> Result<u32, OrchestrationError> {
    let mut events = Vec::new();
    for i in 0..steps {
        ctx.call_activity::<u32>("step", &i).await?;
        events.push(step_event(i));
        if let Err(e @ OrchestrationError::CustomStatusTooLarge { .. }) = ctx.set_custom_status(&events) {
            ctx.emit_event("cap_hit", &e.to_string())?;
            return Ok(i + 1);
        }
    }
    Ok(steps)
}

/// The same events appended to the stream.
async fn stream_steps(ctx: OrchestrationContext, steps: u32) -> Result<u32, OrchestrationError> {
    for i in 0..steps {
        ctx.call_activity::<u32>("step", &i).await?;
        ctx.emit_event("step", &step_event(i))?;
    }
    Ok(steps)
}

fn step_event(step: u32) -> Value {
    json!({ "step": step, "executor": "analyse-document", "output": "x".repeat(180) })
}

/// Runs `orchestration` for `steps` steps and returns the time of each step.
async fn timed_steps(
    config: &Config,
    orchestration: &str,
    steps: u32,
    limits: Limits,
) -> Result<(Vec<Duration>, u32), BoxError> {
    let db = Db::fresh(config).await?;
    let store = db.store.clone();
    let clock = Clock::default();
    let registry = Registry::new()
        .orchestration("status_workaround", status_workaround)
        .orchestration("stream_steps", stream_steps);
    let registry = ticking_activity(registry, "step", &clock);
    let worker = Worker::start_with(store.clone(), registry, WorkerOptions::new().limits(limits))?;
    let client = Client::new(store);
    let id = client.start(orchestration, &steps).await?;
    let done = client.wait_for_completion(&id, Duration::from_secs(600)).await?;
    worker.shutdown().await?;
    if done.status != RuntimeStatus::Completed {
        return Err(format!("{orchestration} ended {:?}: {:?}", done.status, done.failure).into());
    }
    db.cleanup().await?;
    Ok((clock.steps(), done.output_as()?))
}

/// Steps over which the cost of a step is averaged: two of the worker's
/// batches. With quick activities a batch merges up to 16 turns of an
/// instance, so most steps cost no commit and one in sixteen waits for
/// one; a window of ten steps held one such wait or none.
const COST_WINDOW: usize = 32;

/// Mean step time around step `at`: the [`COST_WINDOW`] steps from
/// `at - COST_WINDOW / 2` (from the first step, near the start).
fn cost_at(steps: &[Duration], at: usize) -> f64 {
    let start = at.saturating_sub(COST_WINDOW / 2);
    mean_ms(&steps[start..(start + COST_WINDOW).min(steps.len())])
}

/// emit_event against the custom-status workaround: cost per step at steps
/// 10, 100 and 1,000, and the step at which the workaround hits the cap.
async fn status_vs_stream(config: &Config) -> Result<Figures, BoxError> {
    const STEPS: u32 = 1_020;
    let (stream, _) = timed_steps(config, "stream_steps", STEPS, Limits::default()).await?;
    let unbounded = Limits {
        custom_status_max_bytes: usize::MAX,
        ..Limits::default()
    };
    let (status, _) = timed_steps(config, "status_workaround", STEPS, unbounded).await?;
    let (_, cap_step) = timed_steps(config, "status_workaround", STEPS, Limits::default()).await?;
    let mut f = Figures::new();
    for (label, steps) in [("stream", &stream), ("status", &status)] {
        let (s10, s100, s1000) = (cost_at(steps, 10), cost_at(steps, 100), cost_at(steps, 1000));
        f.insert(format!("{label}_step_10_ms"), round(s10, 4));
        f.insert(format!("{label}_step_100_ms"), round(s100, 4));
        f.insert(format!("{label}_step_1000_ms"), round(s1000, 4));
        f.insert(format!("{label}_ratio"), round(s100 / s10, 3));
    }
    f.insert("ratio".into(), f["stream_ratio"].clone());
    f.insert("status_cap_step".into(), json!(cap_step));
    Ok(f)
}

async fn idle(ctx: OrchestrationContext, _: ()) -> Result<u32, OrchestrationError> {
    ctx.wait_for_external_event::<u32>("go").await
}

/// 10,000 instances waiting on an external event: worker memory per idle
/// instance, then the time to wake and finish them all.
async fn idle_instances(config: &Config) -> Result<Figures, BoxError> {
    const COUNT: usize = 10_000;
    let db = Db::fresh(config).await?;
    let store = db.store.clone();
    let worker = Worker::start(store.clone(), Registry::new().orchestration("idle", idle))?;
    let client = Client::new(store);
    // Reset the peak so that earlier scenarios do not count.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let (baseline, _) = rss_bytes();
    let mut ids = Vec::with_capacity(COUNT);
    for _ in 0..COUNT {
        ids.push(client.start("idle", &()).await?);
    }
    // Wait until every instance has run its first turn and waits.
    loop {
        let pending = client
            .list_instances(InstanceQuery::new().status(RuntimeStatus::Pending).page_size(1))
            .await?;
        if pending.instances.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (settled, peak) = rss_bytes();
    let started = Instant::now();
    for id in &ids {
        client.raise_event(id, "go", &1u32).await?;
    }
    for id in &ids {
        let done = client.wait_for_completion(id, Duration::from_secs(600)).await?;
        if done.status != RuntimeStatus::Completed {
            return Err(format!("instance {id} ended {:?}", done.status).into());
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    worker.shutdown().await?;
    let mut f = Figures::new();
    f.insert("instances".into(), json!(COUNT));
    f.insert("baseline_rss_bytes".into(), json!(baseline));
    f.insert("idle_rss_bytes".into(), json!(settled));
    f.insert("peak_rss_bytes".into(), json!(peak));
    f.insert(
        "bytes_per_instance".into(),
        json!(peak.saturating_sub(baseline) / COUNT as u64),
    );
    f.insert("seconds".into(), round(seconds, 3));
    db.cleanup().await?;
    Ok(f)
}

/// 200 runs of the document-processing pipeline, one after another (each
/// watched live until it ends) or all at once.
async fn pipeline(config: &Config, concurrent: bool) -> Result<Figures, BoxError> {
    const RUNS: usize = 200;
    let db = Db::fresh(config).await?;
    let timing = Arc::new(TimingStore::new(db.store.clone()));
    let store: Arc<dyn Store> = timing.clone();
    // One worker in this process, or several worker processes.
    let (worker, _processes) = if config.workers > 1 {
        (None, Some(WorkerProcesses::spawn(config.workers, &db.target)?))
    } else {
        let registry = durable_workspace::register(Registry::new());
        (Some(Worker::start(store.clone(), registry)?), None)
    };
    let client = Client::new(store);
    let workflows = WorkflowClient::new(client.clone());
    // A run of six executors streams 27 events: the workflow's start and
    // end, and per superstep its start and end and the executor's
    // invocation and completion, and the final output.
    let expected_events = 27;
    let started = Instant::now();
    let mut per_run = Vec::with_capacity(RUNS);
    let mut bytes = 0usize;
    if concurrent {
        let mut watchers = Vec::with_capacity(RUNS);
        for run in 0..RUNS {
            let client = client.clone();
            let workflows = workflows.clone();
            watchers.push(tokio::spawn(async move {
                let id = workflows
                    .start(DocumentProcessing, &DocumentJob::new(format!("doc-{run}")))
                    .await?;
                watch_all(&client, &id, expected_events).await
            }));
        }
        for watcher in watchers {
            watcher.await??;
        }
    } else {
        for run in 0..RUNS {
            let run_started = Instant::now();
            let id = workflows
                .start(DocumentProcessing, &DocumentJob::new(format!("doc-{run}")))
                .await?;
            let mut events = std::pin::pin!(client.watch_events(&id, 0));
            let mut count = 0;
            while let Some(event) = events.next().await {
                bytes += event?.payload.as_str().len();
                count += 1;
            }
            if count != expected_events {
                return Err(format!("run {run} streamed {count} events").into());
            }
            per_run.push(run_started.elapsed());
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    if let Some(worker) = worker {
        worker.shutdown().await?;
    }
    let mut f = Figures::new();
    f.insert(
        "workload".into(),
        json!("document-processing workflow, 6 executors, 2 KiB outputs"),
    );
    f.insert("runs".into(), json!(RUNS));
    f.insert("runs_per_s".into(), round(RUNS as f64 / seconds, 1));
    if !concurrent {
        f.insert("p50_ms".into(), round(percentile_ms(&mut per_run, 50.0), 3));
        f.insert("p99_ms".into(), round(percentile_ms(&mut per_run, 99.0), 3));
        f.insert("events".into(), json!(expected_events * RUNS as u64));
        f.insert("stream_bytes".into(), json!(bytes));
    }
    f.insert("seconds".into(), round(seconds, 3));
    if config.workers == 1 {
        f.insert("commits".into(), json!(timing.commits()));
    }
    db.cleanup().await?;
    Ok(f)
}

/// The floor under every figure above: transactions per second of the
/// bare database through sqlx on this machine, one 2 KiB row each (SQLite
/// in WAL mode with the configured synchronous setting, or PostgreSQL).
async fn commit_rate(config: &Config) -> Result<Figures, BoxError> {
    const COMMITS: u32 = 2_000;
    let row = "x".repeat(2048);
    let (seconds, backend) = match config.backend.as_str() {
        "postgres" => {
            let pool = sqlx::PgPool::connect(&config.postgres_url).await?;
            let table = format!("bench_commit_rate_{}", uuid::Uuid::new_v4().simple());
            sqlx::query(&format!(
                "CREATE TABLE {table} (id BIGSERIAL PRIMARY KEY, body TEXT)"
            ))
            .execute(&pool)
            .await?;
            // One connection throughout: a pool checks each connection it
            // gets back with a round trip of its own.
            let mut conn = pool.acquire().await?;
            let insert = format!("INSERT INTO {table} (body) VALUES ($1)");
            let started = Instant::now();
            for _ in 0..COMMITS {
                sqlx::query(&insert).bind(&row).execute(&mut *conn).await?;
            }
            let seconds = started.elapsed().as_secs_f64();
            drop(conn);
            sqlx::query(&format!("DROP TABLE {table}")).execute(&pool).await?;
            (seconds, "postgres")
        }
        _ => {
            use sqlx::ConnectOptions;
            let dir = tempfile::tempdir()?;
            let sync = match config.synchronous {
                durable_core::store::Synchronous::Full => sqlx::sqlite::SqliteSynchronous::Full,
                durable_core::store::Synchronous::Normal => sqlx::sqlite::SqliteSynchronous::Normal,
            };
            let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(dir.path().join("rate.db"))
                .create_if_missing(true)
                .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sync)
                .connect()
                .await?;
            sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
                .execute(&mut conn)
                .await?;
            let started = Instant::now();
            for _ in 0..COMMITS {
                sqlx::query("BEGIN IMMEDIATE; INSERT INTO t (body) VALUES (?); COMMIT")
                    .bind(&row)
                    .execute(&mut conn)
                    .await?;
            }
            (started.elapsed().as_secs_f64(), "sqlite")
        }
    };
    let mut f = Figures::new();
    f.insert("database".into(), json!(backend));
    f.insert("commits".into(), json!(COMMITS));
    f.insert("commits_per_s".into(), round(f64::from(COMMITS) / seconds, 0));
    f.insert(
        "ms_per_commit".into(),
        round(seconds * 1e3 / f64::from(COMMITS), 4),
    );
    Ok(f)
}

/// The seeded simulation under faults (`durable_workspace::simulation`),
/// seed after seed from `--seed` for `--seconds`, on the backend asked
/// for. Each violation is printed with its seed on stderr.
async fn simulate(config: &Config) -> Result<Figures, BoxError> {
    use durable_workspace::simulation::{self, Backend, Options};
    let backend = match config.backend.as_str() {
        "postgres" => Backend::Postgres(config.postgres_url.clone()),
        _ => Backend::Sqlite,
    };
    let options = Options::new(backend);
    let began = Instant::now();
    let deadline = began + Duration::from_secs(config.seconds);
    let (mut seeds, mut violations, mut failing) = (0u64, 0u64, Vec::new());
    let (mut calls, mut dropped, mut kills, mut failed_commits, mut lost_answers) = (0, 0, 0, 0, 0);
    let mut seed = config.seed;
    while seeds == 0 || Instant::now() < deadline {
        let report = simulation::run(seed, &options).await;
        seeds += 1;
        calls += report.calls;
        dropped += report.dropped;
        kills += report.kills;
        failed_commits += report.failed_commits;
        lost_answers += report.lost_answers;
        if !report.violations.is_empty() {
            violations += report.violations.len() as u64;
            failing.push(seed);
            for v in &report.violations {
                eprintln!("seed {seed}: {v}");
            }
        }
        seed = seed.wrapping_add(1);
    }
    let mut figures = Figures::new();
    figures.insert("seeds".into(), json!(seeds));
    figures.insert("first_seed".into(), json!(config.seed));
    figures.insert("violations".into(), json!(violations));
    figures.insert("failing_seeds".into(), json!(failing));
    figures.insert("calls".into(), json!(calls));
    figures.insert("dropped_calls".into(), json!(dropped));
    figures.insert("worker_kills".into(), json!(kills));
    figures.insert("failed_commits".into(), json!(failed_commits));
    figures.insert("lost_commit_answers".into(), json!(lost_answers));
    figures.insert("seconds".into(), json!(began.elapsed().as_secs_f64()));
    Ok(figures)
}
