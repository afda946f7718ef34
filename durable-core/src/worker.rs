//! The worker: runs orchestration turns and activities.
//!
//! A worker runs four tasks on the current tokio runtime:
//!
//! * the **orchestration dispatcher** claims batches of instances with
//!   visible messages, runs one turn for each and commits the whole batch
//!   in one transaction (group commit). Orchestrations whose execution goes
//!   on stay in memory (an LRU cache), so the next turn continues where the
//!   last one stopped instead of replaying the history;
//! * the **activity dispatcher** claims activity work items and runs them
//!   concurrently, up to a limit;
//! * the **completer** writes finished activities' results in batches;
//! * the **lease keeper** extends the leases the worker holds.
//!
//! Nothing polls on the hot path: the store wakes the dispatchers of its
//! own process after each commit. Timers and writers in other processes
//! are noticed through the store's next wake-up time and polling with
//! backoff. A worker that dies loses its leases when they expire and
//! another worker takes the work over.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::FutureExt;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::context::Limits;
use crate::replay::{panic_message, run_turn, Runner};
use crate::store::{
    ActivityCompletion, ActivityWorkItem, NewMessage, OrchestrationWorkItem, Store, TurnOutcome,
};
use crate::{ActivityContext, FailureDetails, HistoryEvent, InstanceId, Registry, Result};

/// Settings of a [`Worker`].
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    orchestration_batch: usize,
    activity_concurrency: usize,
    lease: Duration,
    cache_capacity: usize,
    shutdown_timeout: Duration,
    limits: Limits,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            orchestration_batch: 64,
            activity_concurrency: 64,
            lease: Duration::from_secs(30),
            cache_capacity: 4096,
            shutdown_timeout: Duration::from_secs(30),
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
    /// hold (default 64).
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
    /// (default 4,096). Others are replayed from history when they next run.
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
    shutdown_timeout: Duration,
    orchestrations: Option<JoinHandle<()>>,
    activities: Option<JoinHandle<()>>,
    completer: Option<JoinHandle<()>>,
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
        let registry = Arc::new(registry);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (completions_tx, completions_rx) = mpsc::unbounded_channel();

        let dispatcher = OrchestrationDispatcher {
            store: store.clone(),
            registry: registry.clone(),
            owner: id.clone(),
            options: options.clone(),
            cache: RunnerCache::new(options.cache_capacity),
        };
        let orchestrations = tokio::spawn(dispatcher.run(shutdown_rx.clone()));
        let activities = tokio::spawn(run_activities(
            store.clone(),
            registry,
            id.clone(),
            options.clone(),
            shutdown_rx.clone(),
            completions_tx,
        ));
        let completer = tokio::spawn(run_completer(store.clone(), id.clone(), completions_rx));
        let (keeper_stop, keeper_rx) = watch::channel(false);
        let lease_keeper = tokio::spawn(keep_leases(store.clone(), id.clone(), options.lease, keeper_rx));
        tracing::debug!(worker = %id, "worker started");
        Ok(Self {
            id,
            store,
            shutdown,
            keeper_stop,
            shutdown_timeout: options.shutdown_timeout,
            orchestrations: Some(orchestrations),
            activities: Some(activities),
            completer: Some(completer),
            lease_keeper: Some(lease_keeper),
        })
    }

    /// The worker's id, which owns its leases in the store.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Stops gracefully: stops claiming work, commits the orchestration
    /// batch in progress, waits for running activities (up to the shutdown
    /// timeout) and writes their results, then releases every lease so that
    /// other workers can take the rest at once.
    ///
    /// # Errors
    ///
    /// Returns a store error if the leases could not be released (they then
    /// expire on their own).
    pub async fn shutdown(mut self) -> Result<()> {
        let _ = self.shutdown.send(true);
        for handle in [self.orchestrations.take(), self.activities.take()]
            .into_iter()
            .flatten()
        {
            if let Err(e) = handle.await {
                tracing::error!(worker = %self.id, error = %e, "worker task ended abnormally");
            }
        }
        if let Some(completer) = self.completer.take() {
            // Results of activities still running past the timeout are lost;
            // those activities run again once their leases expire.
            if tokio::time::timeout(self.shutdown_timeout, completer)
                .await
                .is_err()
            {
                tracing::warn!(worker = %self.id, "activity results still pending at shutdown");
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

/// How long an idle loop may sleep: until the store's next wake-up time or
/// the next poll, whichever is first.
async fn idle_wait(store: &dyn Store, backoff: &mut Backoff) -> Duration {
    let poll = backoff.next_delay();
    let wakeup = match store.next_wakeup().await {
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
    [poll, wakeup]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(Duration::from_secs(3600))
}

/// Running orchestrations kept in memory between turns, least recently used
/// evicted first.
struct RunnerCache {
    capacity: usize,
    tick: u64,
    entries: HashMap<InstanceId, (u64, Runner)>,
    order: BTreeMap<u64, InstanceId>,
}

impl RunnerCache {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            tick: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    fn take(&mut self, id: &InstanceId) -> Option<Runner> {
        let (tick, runner) = self.entries.remove(id)?;
        self.order.remove(&tick);
        Some(runner)
    }

    fn put(&mut self, id: InstanceId, runner: Runner) {
        if self.capacity == 0 {
            return;
        }
        self.tick += 1;
        self.order.insert(self.tick, id.clone());
        if let Some((old, _)) = self.entries.insert(id, (self.tick, runner)) {
            self.order.remove(&old);
        }
        while self.entries.len() > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
    }
}

struct OrchestrationDispatcher {
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    owner: String,
    options: WorkerOptions,
    cache: RunnerCache,
}

impl OrchestrationDispatcher {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let store = self.store.clone();
        let mut backoff = Backoff::new(store.poll_interval());
        loop {
            if *shutdown.borrow() {
                break;
            }
            let notified = store.changes().orchestration_work().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match store
                .fetch_orchestrations(&self.owner, self.options.lease, self.options.orchestration_batch)
                .await
            {
                Ok(items) if !items.is_empty() => {
                    backoff.reset();
                    self.process(items).await;
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(worker = %self.owner, error = %e, "could not fetch orchestration work");
                    backoff.reset();
                }
            }
            let wait = idle_wait(store.as_ref(), &mut backoff).await;
            tokio::select! {
                () = &mut notified => backoff.reset(),
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    async fn runner_for(&mut self, item: &OrchestrationWorkItem) -> Result<Runner, crate::StoreError> {
        let state = &item.state;
        if let Some(runner) = self.cache.take(&item.instance_id) {
            if runner.history_len == state.history_len && runner.execution_id() == state.execution_id {
                return Ok(runner);
            }
        }
        let mut runner = Runner::new(
            self.registry.clone(),
            self.options.limits,
            item.instance_id.clone(),
            state.name.clone(),
            state.execution_id.clone(),
            state.execution_emits,
        );
        if state.history_len > 0 && !state.status.is_terminal() {
            let history = self.store.load_history(&item.instance_id).await?;
            tracing::debug!(instance = %item.instance_id, events = history.len(), "replaying");
            runner.replay(history);
        }
        Ok(runner)
    }

    async fn process(&mut self, items: Vec<OrchestrationWorkItem>) {
        let now = Utc::now();
        let mut turns = Vec::with_capacity(items.len());
        let mut runners = Vec::with_capacity(items.len());
        for item in items {
            let runner = match self.runner_for(&item).await {
                Ok(runner) => runner,
                Err(e) => {
                    tracing::warn!(instance = %item.instance_id, error = %e, "could not load history");
                    abandon(self.store.as_ref(), &self.owner, &item.instance_id).await;
                    continue;
                }
            };
            let (commit, runner) = run_turn(runner, item, now);
            runners.push(runner);
            turns.push(commit);
        }
        if turns.is_empty() {
            return;
        }
        let ids: Vec<InstanceId> = turns.iter().map(|t| t.instance_id.clone()).collect();
        match self.store.commit_turns(&self.owner, turns).await {
            Ok(outcomes) => {
                for ((id, outcome), runner) in ids.into_iter().zip(outcomes).zip(runners) {
                    match (outcome, runner) {
                        (TurnOutcome::Committed, Some(runner)) => self.cache.put(id, runner),
                        (TurnOutcome::LeaseLost, _) => {
                            tracing::warn!(instance = %id, worker = %self.owner, "lease lost; turn discarded");
                        }
                        _ => {}
                    }
                }
            }
            Err(e) => {
                tracing::error!(worker = %self.owner, error = %e, "could not commit orchestration turns");
                for id in &ids {
                    abandon(self.store.as_ref(), &self.owner, id).await;
                }
            }
        }
    }
}

/// Releases an instance's lease after a failed turn; it is retried after
/// a second.
async fn abandon(store: &dyn Store, owner: &str, id: &InstanceId) {
    if let Err(e) = store
        .abandon_orchestration(owner, id, Duration::from_secs(1))
        .await
    {
        tracing::warn!(instance = %id, error = %e, "could not release the lease");
    }
}

async fn run_activities(
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    owner: String,
    options: WorkerOptions,
    mut shutdown: watch::Receiver<bool>,
    completions: mpsc::UnboundedSender<ActivityCompletion>,
) {
    let slots = Arc::new(Semaphore::new(options.activity_concurrency));
    let mut backoff = Backoff::new(store.poll_interval());
    loop {
        if *shutdown.borrow() {
            break;
        }
        let first = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.changed() => break,
        };
        let notified = store.changes().activity_work().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let free = slots.available_permits() + 1;
        let items = match store.fetch_activities(&owner, options.lease, free).await {
            Ok(items) => items,
            Err(e) => {
                tracing::warn!(worker = %owner, error = %e, "could not fetch activity work");
                Vec::new()
            }
        };
        if items.is_empty() {
            drop(first);
            let wait = idle_wait(store.as_ref(), &mut backoff).await;
            tokio::select! {
                () = &mut notified => backoff.reset(),
                () = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        backoff.reset();
        let mut first = Some(first);
        for item in items {
            let permit = match first.take() {
                Some(p) => p,
                None => match slots.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => match slots.clone().acquire_owned().await {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                },
            };
            let registry = registry.clone();
            let completions = completions.clone();
            tokio::spawn(async move {
                let completion = execute_activity(&registry, item).await;
                let _ = completions.send(completion);
                drop(permit);
            });
        }
    }
    // Graceful shutdown: wait for the activities still running.
    let all = u32::try_from(options.activity_concurrency).unwrap_or(u32::MAX);
    if tokio::time::timeout(options.shutdown_timeout, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(worker = %owner, "activities still running at shutdown; their leases will expire");
    }
}

async fn execute_activity(registry: &Registry, item: ActivityWorkItem) -> ActivityCompletion {
    let ctx = ActivityContext {
        instance_id: item.instance_id.clone(),
        name: item.name.clone(),
        task_id: item.task_id,
        attempt: item.dequeue_count,
    };
    let result = match registry.activities.get(&item.name) {
        Some(f) => match std::panic::AssertUnwindSafe(f(ctx, item.input))
            .catch_unwind()
            .await
        {
            Ok(result) => result,
            Err(panic) => Err(FailureDetails::new(
                "Panic",
                format!(
                    "activity '{}' panicked: {}",
                    item.name,
                    panic_message(panic.as_ref())
                ),
            )),
        },
        None => Err(FailureDetails::new(
            "UnknownActivity",
            format!("no activity named '{}' is registered with this worker", item.name),
        )),
    };
    let event = match result {
        Ok(result) => HistoryEvent::ActivityCompleted {
            id: item.task_id,
            result,
        },
        Err(failure) => HistoryEvent::ActivityFailed {
            id: item.task_id,
            failure,
        },
    };
    ActivityCompletion {
        work_id: item.id,
        message: NewMessage {
            instance_id: item.instance_id,
            execution_id: Some(item.execution_id),
            event,
            visible_at: Utc::now(),
        },
    }
}

async fn run_completer(
    store: Arc<dyn Store>,
    owner: String,
    mut completions: mpsc::UnboundedReceiver<ActivityCompletion>,
) {
    const MAX_BATCH: usize = 512;
    const ATTEMPTS: u32 = 20;
    while let Some(first) = completions.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match completions.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        for attempt in 1..=ATTEMPTS {
            match store.complete_activities(&owner, batch.clone()).await {
                Ok(delivered) => {
                    let lost = delivered.iter().filter(|d| !**d).count();
                    if lost > 0 {
                        tracing::warn!(worker = %owner, lost, "activity results dropped: leases lost");
                    }
                    break;
                }
                Err(e) if attempt < ATTEMPTS => {
                    tracing::warn!(worker = %owner, error = %e, attempt, "could not store activity results; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => {
                    tracing::error!(
                        worker = %owner, error = %e,
                        "giving up on activity results; they will run again when their leases expire"
                    );
                }
            }
        }
    }
}

async fn keep_leases(
    store: Arc<dyn Store>,
    owner: String,
    lease: Duration,
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
        if let Err(e) = store.renew_leases(&owner, lease).await {
            tracing::warn!(worker = %owner, error = %e, "could not renew leases");
        }
    }
}
