//! The worker: runs orchestration turns and activities.
//!
//! A worker runs four tasks on the current tokio runtime:
//!
//! * the **dispatcher** runs orchestration turns. It keeps the orchestrations
//!   it runs in memory between turns (an LRU cache) and holds a lease on
//!   each, so the next turn continues where the last one stopped instead of
//!   replaying the history. It collects the turns that are ready (activity
//!   results handed over in memory, and messages from the store) and
//!   commits them together in one transaction (group commit);
//! * the **activity runner** runs activities, up to a concurrency limit.
//!   Activities a turn schedules are claimed in the turn's own transaction
//!   and handed to the runner in memory; their results go back to the
//!   dispatcher in memory, so one step of an orchestration costs one
//!   transaction;
//! * the **activity fetcher** claims activities left in the store (by a
//!   worker that died, or scheduled while this one was busy);
//! * the **lease keeper** extends the leases the worker holds.
//!
//! Nothing polls on the hot path: the store signals the dispatcher and the
//! fetcher of its own process after each commit. Timers and writers in
//! other processes are noticed through the store's next wake-up time and
//! polling with backoff. A worker that dies loses its leases when they
//! expire and another worker takes the work over.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::FutureExt;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::context::Limits;
use crate::replay::{panic_message, run_turn, state_after, Runner, TurnResult};
use crate::store::{
    ActivityCompletion, ActivityKey, ActivityWorkItem, CommitBatch, InboxMessage, InstanceState,
    MessageSource, OrchestrationWorkItem, Store, TurnOutcome,
};
use crate::{ActivityContext, FailureDetails, HistoryEvent, InstanceId, Registry, Result, StoreError};

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
            cache_capacity: 1024,
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
    /// (default 1,024). Others are replayed from history when they next run.
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
        let activities = ActivityRunner {
            registry: Arc::new(registry.clone()),
            slots: Arc::new(Semaphore::new(options.activity_concurrency)),
            in_flight: Arc::new(AtomicUsize::new(0)),
            completions: completions_tx,
        };
        let dispatcher = Dispatcher {
            store: store.clone(),
            registry: Arc::new(registry),
            owner: id.clone(),
            cache: RunnerCache::new(options.cache_capacity),
            options: options.clone(),
            activities: activities.clone(),
            completions: completions_rx,
            foreign: Vec::new(),
            release: Vec::new(),
            unsure: HashSet::new(),
            shutting_down: false,
        };
        let dispatcher = tokio::spawn(dispatcher.run(shutdown_rx.clone()));
        let fetcher = tokio::spawn(fetch_activities(
            store.clone(),
            id.clone(),
            options.clone(),
            activities,
            shutdown_rx,
        ));
        let (keeper_stop, keeper_rx) = watch::channel(false);
        let lease_keeper = tokio::spawn(keep_leases(store.clone(), id.clone(), options.lease, keeper_rx));
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
/// wake-up time (a timer, a lease that expires) or the next poll, whichever
/// is first.
async fn next_look(store: &dyn Store, backoff: &mut Backoff) -> Instant {
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
    let wait = [poll, wakeup]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(Duration::from_secs(3600));
    Instant::now() + wait
}

/// An orchestration kept in memory between turns, with the state of its
/// instance as its last committed turn left it.
struct Cached {
    runner: Runner,
    state: InstanceState,
}

/// Running orchestrations kept in memory between turns, least recently used
/// evicted first.
struct RunnerCache {
    capacity: usize,
    tick: u64,
    entries: HashMap<InstanceId, (u64, Cached)>,
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

    fn get(&self, id: &InstanceId) -> Option<&Cached> {
        self.entries.get(id).map(|(_, cached)| cached)
    }

    fn take(&mut self, id: &InstanceId) -> Option<Cached> {
        let (tick, cached) = self.entries.remove(id)?;
        self.order.remove(&tick);
        Some(cached)
    }

    /// Keeps `cached`; returns the instances evicted to make room.
    fn put(&mut self, id: InstanceId, cached: Cached) -> Vec<InstanceId> {
        self.tick += 1;
        self.order.insert(self.tick, id.clone());
        if let Some((old, _)) = self.entries.insert(id, (self.tick, cached)) {
            self.order.remove(&old);
        }
        let mut evicted = Vec::new();
        while self.entries.len() > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
            evicted.push(oldest);
        }
        evicted
    }
}

/// Runs activities on the worker's runtime, up to the concurrency limit,
/// and hands their results to the dispatcher.
#[derive(Clone)]
struct ActivityRunner {
    registry: Arc<Registry>,
    slots: Arc<Semaphore>,
    /// Activities claimed by this worker and not yet finished.
    in_flight: Arc<AtomicUsize>,
    completions: mpsc::UnboundedSender<ActivityCompletion>,
}

impl ActivityRunner {
    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Called by the dispatcher when it receives a result.
    fn finished(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// Starts a claimed activity; it waits for a free slot.
    fn run(&self, item: ActivityWorkItem) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let this = self.clone();
        tokio::spawn(async move {
            let Ok(_permit) = this.slots.clone().acquire_owned().await else {
                return;
            };
            let completion = execute_activity(&this.registry, item).await;
            let _ = this.completions.send(completion);
        });
    }
}

struct Dispatcher {
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    owner: String,
    options: WorkerOptions,
    cache: RunnerCache,
    activities: ActivityRunner,
    completions: mpsc::UnboundedReceiver<ActivityCompletion>,
    /// Activity results for instances not held here: they go to the inbox.
    foreign: Vec<ActivityCompletion>,
    /// Instances whose lease to give up with the next commit.
    release: Vec<InstanceId>,
    /// Activities claimed by commits that failed since the last commit
    /// that succeeded, already started once (see `Dispatcher::process`).
    unsure: HashSet<ActivityKey>,
    shutting_down: bool,
}

/// The turns to run in one batch, by instance, in arrival order.
#[derive(Default)]
struct Pending {
    order: Vec<InstanceId>,
    items: HashMap<InstanceId, (Option<InstanceState>, Vec<InboxMessage>)>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    fn add(&mut self, id: &InstanceId, state: Option<InstanceState>, messages: Vec<InboxMessage>) {
        if !self.items.contains_key(id) {
            self.order.push(id.clone());
        }
        let entry = self.items.entry(id.clone()).or_insert((None, Vec::new()));
        if state.is_some() {
            entry.0 = state;
        }
        entry.1.extend(messages);
    }
}

impl Dispatcher {
    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let store = self.store.clone();
        let mut work = store.changes().orchestration_work();
        let mut backoff = Backoff::new(store.poll_interval());
        // When to look at the store next even without a signal: a timer
        // becomes due, a lease expires, or it is time to poll.
        let mut look_at = Instant::now();
        let mut error_backoff = Duration::from_millis(10);
        let mut deadline = Instant::now();
        let mut carried = None;
        loop {
            if *shutdown.borrow() && !self.shutting_down {
                self.shutting_down = true;
                // Let the activities this worker runs finish in time.
                deadline = Instant::now() + self.options.shutdown_timeout;
            }
            let mut pending = Pending::default();
            if let Some(c) = carried.take() {
                self.push_completion(&mut pending, c);
            }
            self.take_completions(&mut pending);
            // Look at the store when signalled or due, also when results
            // are at hand, so that a turn sees messages that arrived before
            // them (a terminate before an activity result).
            let look =
                !self.shutting_down && (work.has_changed().unwrap_or(false) || Instant::now() >= look_at);
            if look {
                work.borrow_and_update();
                match self.fetch(&mut pending).await {
                    Ok(more) => {
                        look_at = if more {
                            Instant::now()
                        } else {
                            next_look(store.as_ref(), &mut backoff).await
                        };
                    }
                    Err(e) => {
                        tracing::warn!(worker = %self.owner, error = %e, "could not fetch orchestration work");
                        look_at = Instant::now() + Duration::from_secs(1);
                    }
                }
            }
            if pending.is_empty() && self.foreign.is_empty() && self.release.is_empty() {
                if self.shutting_down {
                    if self.activities.in_flight() == 0 || Instant::now() >= deadline {
                        break;
                    }
                    tokio::select! {
                        Some(c) = self.completions.recv() => carried = Some(c),
                        () = tokio::time::sleep_until(deadline) => {}
                    }
                } else {
                    tokio::select! {
                        Some(c) = self.completions.recv() => carried = Some(c),
                        _ = work.changed() => {
                            backoff.reset();
                            look_at = Instant::now();
                        }
                        () = tokio::time::sleep_until(look_at) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                continue;
            }
            match self.process(pending).await {
                Ok(due) => {
                    error_backoff = Duration::from_millis(10);
                    // A timer (or a delayed message) it just wrote.
                    if let Some(due) = due {
                        look_at = look_at.min(due);
                    }
                }
                Err(e) => {
                    tracing::error!(worker = %self.owner, error = %e, "could not commit orchestration turns");
                    tokio::time::sleep(error_backoff).await;
                    error_backoff = (error_backoff * 2).min(Duration::from_secs(5));
                    look_at = Instant::now();
                }
            }
        }
        // Write what is left; the worker releases all its leases next.
        let batch = CommitBatch {
            turns: Vec::new(),
            completions: std::mem::take(&mut self.foreign),
            release: Vec::new(),
        };
        if !batch.is_empty() {
            if let Err(e) = store.commit(&self.owner, self.options.lease, &batch).await {
                tracing::warn!(worker = %self.owner, error = %e, "could not store activity results at shutdown");
            }
        }
    }

    fn take_completions(&mut self, pending: &mut Pending) {
        while let Ok(c) = self.completions.try_recv() {
            self.push_completion(pending, c);
        }
    }

    /// Routes an activity result: to the orchestration in memory if this
    /// worker holds it, else to the instance's inbox.
    fn push_completion(&mut self, pending: &mut Pending, completion: ActivityCompletion) {
        self.activities.finished();
        let key = &completion.key;
        let held = self
            .cache
            .get(&key.instance_id)
            .is_some_and(|c| c.state.execution_id == key.execution_id);
        if held {
            let id = key.instance_id.clone();
            let message = InboxMessage {
                visible_at: Utc::now(),
                execution_id: Some(key.execution_id.clone()),
                source: MessageSource::Activity(completion.key),
                event: completion.event,
            };
            pending.add(&id, None, vec![message]);
        } else {
            self.foreign.push(completion);
        }
    }

    /// Fetches instances with messages in the store; true if there may be
    /// more than one batch.
    async fn fetch(&mut self, pending: &mut Pending) -> Result<bool, StoreError> {
        let max = self.options.orchestration_batch;
        let items = self
            .store
            .fetch_orchestrations(&self.owner, self.options.lease, max)
            .await?;
        let more = items.len() >= max;
        for item in items {
            pending.add(&item.instance_id, Some(item.state), item.messages);
        }
        Ok(more)
    }

    /// The runner for a turn of `id`: the one in memory if it is current,
    /// else one replayed from the stored history. `None` if the history
    /// could not be read for now (the instance is held back and retried).
    async fn runner_for(&mut self, id: &InstanceId, state: &InstanceState) -> Option<Runner> {
        if let Some(cached) = self.cache.take(id) {
            if cached.state == *state {
                return Some(cached.runner);
            }
        }
        let mut runner = Runner::new(
            self.registry.clone(),
            self.options.limits,
            id.clone(),
            state.name.clone(),
            state.execution_id.clone(),
            state.execution_emits,
        );
        if state.history_len > 0 && !state.status.is_terminal() {
            match self.store.load_history(id).await {
                Ok(history) => {
                    tracing::debug!(instance = %id, events = history.len(), "replaying");
                    runner.replay(history);
                }
                Err(StoreError::Corrupt(reason)) => runner.fail(
                    FailureDetails::new(
                        "CorruptHistory",
                        format!("the stored history cannot be read: {reason}"),
                    ),
                    state.history_len,
                ),
                Err(e) => {
                    // Not a failure of the instance: hold it back and retry.
                    tracing::warn!(instance = %id, error = %e, "could not load history");
                    if let Err(e) = self
                        .store
                        .abandon_orchestration(&self.owner, id, Duration::from_secs(1))
                        .await
                    {
                        tracing::warn!(instance = %id, error = %e, "could not release the instance");
                    }
                    return None;
                }
            }
        }
        Some(runner)
    }

    /// Runs one turn per pending instance and commits them together.
    /// Returns when the earliest delayed message it wrote (a timer) is due.
    async fn process(&mut self, mut pending: Pending) -> Result<Option<Instant>, StoreError> {
        let now = Utc::now();
        let mut results: Vec<(TurnResult, String)> = Vec::with_capacity(pending.order.len());
        let claim_room = (self.options.activity_concurrency * 2).saturating_sub(self.activities.in_flight());
        let mut claimed = 0;
        for id in std::mem::take(&mut pending.order) {
            let Some((state, mut messages)) = pending.items.remove(&id) else {
                continue;
            };
            // In the order they arrived: results handed over in memory
            // after the stored messages of the same millisecond.
            messages.sort_by_key(|m| (m.visible_at, matches!(m.source, MessageSource::Activity(_))));
            let state = match state.or_else(|| self.cache.get(&id).map(|c| c.state.clone())) {
                Some(state) => state,
                None => {
                    // Handed-over results of an instance no longer in memory.
                    self.defer(messages);
                    continue;
                }
            };
            let Some(runner) = self.runner_for(&id, &state).await else {
                // The history could not be loaded; the instance was held back.
                self.defer(messages);
                continue;
            };
            let name = state.name.clone();
            let mut result = run_turn(
                runner,
                OrchestrationWorkItem {
                    instance_id: id,
                    state,
                    messages,
                },
                now,
            );
            self.foreign.append(&mut result.deferred);
            let commit = &mut result.commit;
            commit.keep_lease =
                result.runner.is_some() && self.options.cache_capacity > 0 && !self.shutting_down;
            commit.claim_activities = !self.shutting_down && claimed + commit.activities.len() <= claim_room;
            if commit.claim_activities {
                claimed += commit.activities.len();
            }
            results.push((result, name));
        }
        let mut kept = Vec::with_capacity(results.len());
        let mut turns = Vec::with_capacity(results.len());
        for (result, name) in results {
            turns.push(result.commit);
            kept.push((result.runner, name));
        }
        let batch = CommitBatch {
            turns,
            completions: std::mem::take(&mut self.foreign),
            release: std::mem::take(&mut self.release),
        };
        if batch.is_empty() {
            return Ok(None);
        }
        let outcomes = match self.store.commit(&self.owner, self.options.lease, &batch).await {
            Ok(outcomes) => outcomes,
            Err(e) => {
                // Usually nothing was written, but the commit may also have
                // been written with its answer lost (the connection dropped
                // during COMMIT). Then the activities it claimed are leased
                // to this worker, which renews their leases, so no one else
                // would ever run them: run them now, once. If they were not
                // written, the turn is redone and schedules them again, and
                // a result that arrives first is taken or ignored like any
                // repeated run (activities are at-least-once).
                for commit in &batch.turns {
                    if !commit.claim_activities {
                        continue;
                    }
                    for activity in &commit.activities {
                        if self.unsure.insert(activity.key.clone()) {
                            self.activities.run(ActivityWorkItem {
                                key: activity.key.clone(),
                                name: activity.name.clone(),
                                input: activity.input.clone(),
                                attempt: 1,
                                input_error: None,
                            });
                        }
                    }
                }
                // Deliver the handed-over results through the store next
                // time, and give up the instances.
                let CommitBatch {
                    turns,
                    completions,
                    release,
                } = batch;
                self.foreign = completions;
                self.release = release;
                for commit in turns {
                    self.requeue_local(&commit);
                    self.release.push(commit.instance_id);
                }
                return Err(e);
            }
        };
        self.unsure.clear();
        let mut due = None;
        for ((commit, (runner, name)), outcome) in batch.turns.into_iter().zip(kept).zip(outcomes) {
            match outcome {
                TurnOutcome::Committed => {
                    if let Some(at) = commit.messages.iter().map(|m| m.visible_at).min() {
                        let at = Instant::now() + (at - now).to_std().unwrap_or_default();
                        due = Some(due.map_or(at, |d: Instant| d.min(at)));
                    }
                    let state = state_after(&commit, &name);
                    if commit.claim_activities {
                        for activity in commit.activities {
                            self.activities.run(ActivityWorkItem {
                                key: activity.key,
                                name: activity.name,
                                input: activity.input,
                                attempt: 1,
                                input_error: None,
                            });
                        }
                    }
                    if let (Some(runner), Some(state), true) =
                        (runner, state, self.options.cache_capacity > 0)
                    {
                        let evicted = self.cache.put(commit.instance_id, Cached { runner, state });
                        self.release.extend(evicted);
                    }
                }
                TurnOutcome::Conflict => {
                    tracing::debug!(instance = %commit.instance_id, worker = %self.owner, "turn conflicted; discarded");
                    self.requeue_local(&commit);
                    self.release.push(commit.instance_id);
                }
            }
        }
        Ok(due)
    }

    /// Sends handed-over activity results back to the inbox route.
    fn defer(&mut self, messages: Vec<InboxMessage>) {
        for m in messages {
            if let MessageSource::Activity(key) = m.source {
                self.foreign.push(ActivityCompletion { key, event: m.event });
            }
        }
    }

    /// After a turn was not written, its handed-over activity results go to
    /// the inbox instead.
    fn requeue_local(&mut self, commit: &crate::store::TurnCommit) {
        // The results themselves are in the turn's history; find them there.
        for key in &commit.completed_activities {
            let event = commit.history.iter().find(|e| {
                matches!(e, HistoryEvent::ActivityCompleted { id, .. } | HistoryEvent::ActivityFailed { id, .. } if *id == key.task_id)
            });
            if let Some(event) = event {
                self.foreign.push(ActivityCompletion {
                    key: key.clone(),
                    event: event.clone(),
                });
            }
        }
    }
}

async fn fetch_activities(
    store: Arc<dyn Store>,
    owner: String,
    options: WorkerOptions,
    activities: ActivityRunner,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut work = store.changes().activity_work();
    let mut backoff = Backoff::new(store.poll_interval());
    loop {
        if *shutdown.borrow() {
            break;
        }
        work.borrow_and_update();
        let room = options
            .activity_concurrency
            .saturating_sub(activities.in_flight());
        let mut found = false;
        if room > 0 {
            match store.fetch_activities(&owner, options.lease, room).await {
                Ok(items) => {
                    found = !items.is_empty();
                    for item in items {
                        activities.run(item);
                    }
                }
                Err(e) => tracing::warn!(worker = %owner, error = %e, "could not fetch activity work"),
            }
        }
        if found {
            backoff.reset();
            continue;
        }
        let look_at = if room > 0 {
            next_look(store.as_ref(), &mut backoff).await
        } else {
            Instant::now() + Duration::from_millis(50)
        };
        tokio::select! {
            _ = work.changed() => backoff.reset(),
            () = tokio::time::sleep_until(look_at) => {}
            _ = shutdown.changed() => {}
        }
    }
}

async fn execute_activity(registry: &Registry, item: ActivityWorkItem) -> ActivityCompletion {
    let ctx = ActivityContext {
        instance_id: item.key.instance_id.clone(),
        name: item.name.clone(),
        task_id: item.key.task_id,
        attempt: item.attempt,
    };
    let result = match (item.input_error, registry.activities.get(&item.name)) {
        (Some(reason), _) => Err(FailureDetails::new(
            "CorruptWorkItem",
            format!("activity '{}' cannot run: {reason}", item.name),
        )),
        (None, Some(f)) => match std::panic::AssertUnwindSafe(f(ctx, item.input))
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
        (None, None) => Err(FailureDetails::new(
            "UnknownActivity",
            format!("no activity named '{}' is registered with this worker", item.name),
        )),
    };
    let id = item.key.task_id;
    let event = match result {
        Ok(result) => HistoryEvent::ActivityCompleted { id, result },
        Err(failure) => HistoryEvent::ActivityFailed { id, failure },
    };
    ActivityCompletion { key: item.key, event }
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
