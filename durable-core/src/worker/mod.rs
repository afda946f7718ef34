//! The worker: runs orchestration turns and activities.
//!
//! A worker runs four tasks on the current tokio runtime:
//!
//! * the **dispatcher** (`dispatcher.rs`) runs orchestration turns. It
//!   keeps the orchestrations it runs in memory between turns (an LRU cache)
//!   and holds a lease on each, so the next turn continues where the last
//!   one stopped instead of replaying the history. The activities a turn
//!   claims start at once; a quick activity's result runs the next turn
//!   before the first is written, and both commit as one. The turns that
//!   are ready commit together in one transaction (group commit), written
//!   by a task of their own while the dispatcher goes on running turns;
//! * the **activity runner** (`activities.rs`) runs activities, up to a
//!   concurrency limit, and hands their results to the dispatcher in
//!   memory, so a chain of steps of an orchestration costs one transaction,
//!   or one per step for activities that outlast the linger;
//! * the **activity fetcher** claims activities left in the store (by a
//!   worker that died, or scheduled while this one was busy);
//! * the **lease keeper** extends the leases the worker holds: on the
//!   instances it runs, and on the work items of the activities it runs
//!   (a work item it claimed without knowing, its claim's answer lost, is
//!   let expire and runs again).
//!
//! Nothing polls on the hot path: the store signals the dispatcher and the
//! fetcher of its own process after each commit. Timers and writers in
//! other processes are noticed through the store's next wake-up time and
//! polling with backoff. A worker that dies loses its leases when they
//! expire and another worker takes the work over.

mod activities;
mod dispatcher;
mod wake;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::context::Limits;
use crate::store::Store;
use crate::{Registry, Result};
use activities::{fetch_activities, ActivityRunner};
use dispatcher::Dispatcher;

/// Settings of a [`Worker`].
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    orchestration_batch: usize,
    activity_concurrency: usize,
    lease: Duration,
    cache_capacity: usize,
    shutdown_timeout: Duration,
    linger: Duration,
    limits: Limits,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            orchestration_batch: 24,
            activity_concurrency: 64,
            lease: Duration::from_secs(30),
            cache_capacity: 1024,
            shutdown_timeout: Duration::from_secs(30),
            linger: Duration::from_millis(2),
            limits: Limits::default(),
        }
    }
}

impl WorkerOptions {
    /// Default settings.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many instances one orchestration batch (one transaction) may
    /// hold (default 24).
    ///
    /// It also bounds how many instances have turns waiting to be written
    /// at once: more wait in the store. Under a burst of work, batches of
    /// this size keep the store writing one batch while the next one's
    /// turns run; larger batches leave the writer idle longer between
    /// them (200 workflow runs started at once finished about 15% sooner
    /// with 24 than with 64, on SQLite and on PostgreSQL; see
    /// BENCHMARKS.md).
    pub fn orchestration_batch(mut self, n: usize) -> Self {
        self.orchestration_batch = n.max(1);
        self
    }

    /// How many activities may run at once (default 64).
    pub fn activity_concurrency(mut self, n: usize) -> Self {
        self.activity_concurrency = n.max(1);
        self
    }

    /// How long claimed work stays reserved for this worker without being
    /// renewed (default 30 s). A dead worker's work is taken over after
    /// this long.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(100));
        self
    }

    /// How many running orchestrations stay in memory between turns
    /// (default 1,024). Others are replayed from history when they next run.
    /// With none, every turn replays the history and turns are not chained
    /// (see [`WorkerOptions::linger`]).
    pub fn cache_capacity(mut self, n: usize) -> Self {
        self.cache_capacity = n;
        self
    }

    /// How long a graceful shutdown waits for running activities (default
    /// 30 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// How long a batch of turns may stay open, uncommitted, for the
    /// results of the activities its turns started (default 2 ms).
    ///
    /// A turn's activities start as soon as the turn has run. While the
    /// batch is open, each result that comes back runs the next turn of its
    /// orchestration at once, and the turns an instance took commit
    /// together as one (up to 16; later results wait for the next batch):
    /// a chain of quick activities costs a transaction per 16 steps
    /// instead of one per step. The batch commits when none of its turns
    /// waits for a running activity any more, when it is full, or after
    /// this long, whichever is first; activities still running then are
    /// stored as claimed by this worker, as they would be without a window.
    /// While one batch is written, the next fills with the turns that
    /// follow.
    ///
    /// The price: stream events and status reach readers up to this much
    /// later (plus the commit before), and a crash loses the uncommitted
    /// steps, whose activities run again when the orchestration is resumed
    /// (activities are at least once in any case). `Duration::ZERO` writes
    /// each batch as soon as it has run and no other is being written.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Size limits for custom status and stream events.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}

/// A running worker. Stop it with [`Worker::shutdown`]; dropping it stops
/// it too, without waiting (its leases then expire).
#[derive(Debug)]
pub struct Worker {
    id: String,
    store: Arc<dyn Store>,
    shutdown: watch::Sender<bool>,
    keeper_stop: watch::Sender<bool>,
    dispatcher: Option<JoinHandle<()>>,
    fetcher: Option<JoinHandle<()>>,
    lease_keeper: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts a worker with default options.
    ///
    /// # Errors
    ///
    /// [`Error::DuplicateRegistration`](crate::Error::DuplicateRegistration)
    /// if the registry holds a name twice.
    pub fn start(store: Arc<dyn Store>, registry: Registry) -> Result<Self> {
        Self::start_with(store, registry, WorkerOptions::default())
    }

    /// Starts a worker. Must be called within a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`Error::DuplicateRegistration`](crate::Error::DuplicateRegistration)
    /// if the registry holds a name twice.
    pub fn start_with(store: Arc<dyn Store>, registry: Registry, options: WorkerOptions) -> Result<Self> {
        registry.validate()?;
        let id = format!(
            "{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (completions_tx, completions_rx) = mpsc::unbounded_channel();
        let activities = ActivityRunner::new(
            Arc::new(registry.clone()),
            options.activity_concurrency,
            completions_tx,
        );
        let dispatcher = Dispatcher::new(
            store.clone(),
            Arc::new(registry),
            id.clone(),
            options.clone(),
            activities.clone(),
            completions_rx,
        );
        let dispatcher = tokio::spawn(dispatcher.run(shutdown_rx.clone()));
        let fetcher = tokio::spawn(fetch_activities(
            store.clone(),
            id.clone(),
            options.clone(),
            activities.clone(),
            shutdown_rx,
        ));
        let (keeper_stop, keeper_rx) = watch::channel(false);
        let lease_keeper = tokio::spawn(keep_leases(
            store.clone(),
            id.clone(),
            options.lease,
            activities,
            keeper_rx,
        ));
        tracing::debug!(worker = %id, "worker started");
        Ok(Self {
            id,
            store,
            shutdown,
            keeper_stop,
            dispatcher: Some(dispatcher),
            fetcher: Some(fetcher),
            lease_keeper: Some(lease_keeper),
        })
    }

    /// The worker's id, which owns its leases in the store.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Stops gracefully: stops taking new work, waits for running
    /// activities (up to the shutdown timeout) and commits their results,
    /// then releases every lease so that other workers can take the rest at
    /// once.
    ///
    /// # Errors
    ///
    /// Returns a store error if the leases could not be released (they then
    /// expire on their own).
    pub async fn shutdown(mut self) -> Result<()> {
        let _ = self.shutdown.send(true);
        for handle in [self.fetcher.take(), self.dispatcher.take()]
            .into_iter()
            .flatten()
        {
            if let Err(e) = handle.await {
                tracing::error!(worker = %self.id, error = %e, "worker task ended abnormally");
            }
        }
        let _ = self.keeper_stop.send(true);
        if let Some(keeper) = self.lease_keeper.take() {
            let _ = keeper.await;
        }
        self.store.release_leases(&self.id).await?;
        tracing::debug!(worker = %self.id, "worker stopped");
        Ok(())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        let _ = self.keeper_stop.send(true);
    }
}

/// Grows the idle wait from a few milliseconds up to the store's poll
/// interval; reset whenever work is found.
#[derive(Debug)]
pub(crate) struct Backoff {
    current: Duration,
    max: Option<Duration>,
}

impl Backoff {
    const START: Duration = Duration::from_millis(5);

    pub(crate) fn new(max: Option<Duration>) -> Self {
        Self {
            current: Self::START,
            max,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.current = Self::START;
    }

    /// The next poll delay, or `None` if polling is off.
    pub(crate) fn next_delay(&mut self) -> Option<Duration> {
        let max = self.max?;
        let delay = self.current.min(max);
        self.current = (self.current * 2).min(max);
        Some(delay)
    }
}

/// When an idle loop should look at the store again: at the store's next
/// wake-up time after `after` (a timer, a lease that expires; a time
/// already past: at once) or after `poll` (the next poll delay, if the
/// store is polled), whichever is first.
async fn next_look(store: &dyn Store, after: DateTime<Utc>, poll: Option<Duration>) -> Instant {
    let wakeup = match store.next_wakeup(after).await {
        Ok(Some(at)) => Some(
            (at - Utc::now())
                .to_std()
                .unwrap_or_default()
                .max(Duration::from_millis(1)),
        ),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(error = %e, "could not read the next wake-up time");
            Some(Duration::from_secs(1))
        }
    };
    let wait = [poll, wakeup]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(Duration::from_secs(3600));
    Instant::now() + wait
}

/// Extends the worker's leases every third of their length: on the
/// instances it holds, and on the work items of the activities it runs.
async fn keep_leases(
    store: Arc<dyn Store>,
    owner: String,
    lease: Duration,
    activities: ActivityRunner,
    mut shutdown: watch::Receiver<bool>,
) {
    let period = lease / 3;
    loop {
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            _ = shutdown.changed() => break,
        }
        if *shutdown.borrow() {
            break;
        }
        if let Err(e) = store.renew_leases(&owner, lease, &activities.running()).await {
            tracing::warn!(worker = %owner, error = %e, "could not renew leases");
        }
    }
}
