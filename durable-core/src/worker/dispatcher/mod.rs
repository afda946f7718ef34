//! The dispatcher: runs orchestration turns and commits them.
//!
//! Turns that have run wait in the **open batch**, one entry per instance.
//! The activities a turn claims start at once, before the turn commits, and
//! a result that comes back while the turn is still open runs the
//! instance's next turn at once, merged into the open one: a chain of quick
//! activities commits as one turn.
//!
//! The open batch goes to the store as one transaction (group commit) when
//! no other batch is being written and it is ready: none of its turns waits
//! for a running activity, it is full, or its linger has passed
//! ([`WorkerOptions::linger`]). While a batch is being written (by a task
//! of its own), the dispatcher goes on running turns, also of the instances
//! in that batch, whose orchestrations stay in memory: their next turns go
//! into the next batch. A turn that is not written takes the instance's
//! later turns in the open batch with it, and the orchestration leaves
//! memory; the instance is given up and its turns are redone from the
//! store.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::activities::{ActivityRunner, Finished, RunId};
use super::wake::LookSchedule;
use super::{next_look, Backoff, WorkerOptions};
use crate::replay::Runner;
use crate::store::{ActivityCompletion, ActivityKey, InstanceState, Store};
use crate::{FailureDetails, InstanceId, Registry, StoreError};

mod landing;
mod open_batch;
mod pending;
mod runner_cache;
mod turns;

use landing::{Flight, Flying};
use open_batch::OpenBatch;
use pending::Pending;
use runner_cache::RunnerCache;

pub(super) struct Dispatcher {
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    owner: String,
    options: WorkerOptions,
    /// Orchestrations in memory, each as of its last turn handed to the
    /// store (which may still be being written).
    cache: RunnerCache,
    activities: ActivityRunner,
    completions: mpsc::UnboundedReceiver<Finished>,
    /// The runs of the activities that turns started, by activity.
    running: HashMap<ActivityKey, RunId>,
    /// Runs started by turns that were refused: their results are dropped.
    /// Another worker now runs the instance, whose activity of the same
    /// task may have another input.
    orphans: HashSet<RunId>,
    /// Activity results for instances not held here: they go to the inbox.
    foreign: Vec<ActivityCompletion>,
    /// Instances whose lease to give up with the next commit.
    release: Vec<InstanceId>,
    /// The instances of the batch being written, with the inbox messages it
    /// consumes: the store returns them until the batch is written.
    flying: HashMap<InstanceId, Flying>,
    /// Stored messages were left for later because their instance's last
    /// turn was not written yet: look at the store again once it is.
    recheck: bool,
    /// Messages of instances whose open turn merges the most turns a batch
    /// may: they run once the batch is handed over.
    later: Pending,
    /// Instances of a batch the store refused for its data: each one's
    /// turns are written in a batch of their own until one is written, so
    /// that the turn whose data the store cannot keep fails alone.
    suspects: HashSet<InstanceId>,
    /// Instances whose turn the store refused for its data when written
    /// alone: the next turn of each fails the instance with the reason.
    poisoned: HashMap<InstanceId, FailureDetails>,
    shutting_down: bool,
}

impl Dispatcher {
    pub(super) fn new(
        store: Arc<dyn Store>,
        registry: Arc<Registry>,
        owner: String,
        options: WorkerOptions,
        activities: ActivityRunner,
        completions: mpsc::UnboundedReceiver<Finished>,
    ) -> Self {
        Self {
            store,
            registry,
            owner,
            cache: RunnerCache::new(options.cache_capacity),
            options,
            activities,
            completions,
            running: HashMap::new(),
            orphans: HashSet::new(),
            foreign: Vec::new(),
            release: Vec::new(),
            flying: HashMap::new(),
            recheck: false,
            later: Pending::default(),
            suspects: HashSet::new(),
            poisoned: HashMap::new(),
            shutting_down: false,
        }
    }

    pub(super) async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        let store = self.store.clone();
        let mut work = store.changes().orchestration_work();
        // Instances this process has just created, handed over in memory
        // instead of signalled: their first turns need no fetch.
        let offers = store.changes().take_offers();
        let mut wakeups = store.changes().wakeups();
        let mut backoff = Backoff::new(store.poll_interval());
        let max = self.options.orchestration_batch;
        // When to look at the store next even without a signal: a timer
        // becomes due, a lease expires, or it is time to poll (or now, after
        // a full page).
        let mut schedule = LookSchedule::new(Instant::now());
        // The store's next wake-up time, read by a task of its own after a
        // fetch that emptied the store, so that the turns it found do not
        // wait for the read. Until it answers, only signals, results and
        // the batch wake the loop.
        let mut lookup: Option<JoinHandle<Instant>> = None;
        let read_next_look = |after: DateTime<Utc>, backoff: &mut Backoff| {
            let store = store.clone();
            let poll = backoff.next_delay();
            tokio::spawn(async move { next_look(store.as_ref(), after, poll).await })
        };
        let mut error_backoff = Duration::from_millis(10);
        let mut deadline = Instant::now();
        let mut open = OpenBatch::default();
        let mut flight: Option<Flight> = None;
        let mut carried = None;
        loop {
            if *shutdown.borrow() && !self.shutting_down {
                self.shutting_down = true;
                // Let the activities this worker runs finish in time.
                deadline = Instant::now() + self.options.shutdown_timeout;
            }
            let mut pending = std::mem::take(&mut self.later);
            if let Some(c) = carried.take() {
                self.push_completion(&mut pending, &mut open, c);
            }
            self.take_completions(&mut pending, &mut open);
            // Look at the store when signalled or due, also when results
            // are at hand, so that a turn sees messages that arrived before
            // them (a terminate before an activity result).
            let can_look = !self.shutting_down && open.len() < max;
            if can_look {
                for item in offers.take(max - open.len()) {
                    pending.add(&item.instance_id, Some(item.state), item.messages);
                }
            }
            if can_look && (work.has_changed().unwrap_or(false) || schedule.is_due(Instant::now())) {
                work.borrow_and_update();
                let began = Utc::now();
                match self.fetch(&mut pending, open.len()).await {
                    Ok(true) => schedule.look_again_at(Instant::now()),
                    Ok(false) => {
                        if let Some(after) = schedule.found_nothing(Instant::now(), began) {
                            lookup = Some(read_next_look(after, &mut backoff));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(worker = %self.owner, error = %e, "could not fetch orchestration work");
                        schedule.look_again_at(Instant::now() + Duration::from_secs(1));
                    }
                }
            }
            if !pending.is_empty() {
                self.run_turns(&mut open, pending).await;
                // Results of quick activities keep the dispatcher busy:
                // let the batch being written, and the watchers it wakes,
                // have the thread between passes.
                tokio::task::yield_now().await;
            }
            if flight.is_none() {
                if let Some(alone) = open.take_any_of(&self.suspects) {
                    flight = Some(self.hand_over(alone, false));
                } else {
                    let anything = !open.is_empty() || !self.foreign.is_empty() || !self.release.is_empty();
                    if anything && open.is_ready(max) {
                        flight = Some(self.hand_over(open.split_off_first(max), true));
                    }
                }
            }
            if self.shutting_down
                && flight.is_none()
                && ((open.is_empty()
                    && self.foreign.is_empty()
                    && self.release.is_empty()
                    && self.activities.in_flight() == 0)
                    || Instant::now() >= deadline)
            {
                break;
            }
            // The batch may have been handed over: room to look again.
            let can_look = !self.shutting_down && open.len() < max;
            let mut wake_at = if can_look {
                schedule.look_at()
            } else {
                Instant::now() + Duration::from_secs(3600)
            };
            if let (None, Some(close_at)) = (&flight, open.close_at) {
                wake_at = wake_at.min(close_at);
            }
            if self.shutting_down {
                wake_at = wake_at.min(deadline);
            }
            tokio::select! {
                Some(c) = self.completions.recv() => carried = Some(c),
                next = async { lookup.as_mut().expect("checked by the guard").await }, if lookup.is_some() => {
                    lookup = None;
                    let next = next.unwrap_or_else(|_| Instant::now() + Duration::from_secs(1));
                    // A delayed message written since may be missing from
                    // what it read: read again.
                    if let Some(after) = schedule.read_answered(next) {
                        lookup = Some(read_next_look(after, &mut backoff));
                    }
                }
                Ok(()) = wakeups.changed() => {
                    if let Some(after) = schedule.wakeup_written() {
                        lookup = Some(read_next_look(after, &mut backoff));
                    }
                }
                landed = async { flight.as_mut().expect("checked by the guard").await }, if flight.is_some() => {
                    flight = None;
                    match self.landed(landed, &mut open) {
                        Ok(due) => {
                            error_backoff = Duration::from_millis(10);
                            // A timer (or a delayed message) it just wrote.
                            if let Some(due) = due {
                                schedule.look_by(due);
                            }
                        }
                        // Not the store's trouble but one turn's data, which
                        // the next batches find out: no reason to wait.
                        Err(e @ StoreError::Rejected(_)) => {
                            tracing::error!(worker = %self.owner, error = %e, "could not commit orchestration turns");
                            schedule.look_again_at(Instant::now());
                        }
                        Err(e) => {
                            tracing::error!(worker = %self.owner, error = %e, "could not commit orchestration turns");
                            tokio::time::sleep(error_backoff).await;
                            error_backoff = (error_backoff * 2).min(Duration::from_secs(5));
                            schedule.look_again_at(Instant::now());
                        }
                    }
                    if std::mem::take(&mut self.recheck) {
                        schedule.look_again_at(Instant::now());
                    }
                }
                () = offers.offered(), if can_look => {}
                Ok(()) = work.changed(), if can_look => {
                    backoff.reset();
                    schedule.look_again_at(Instant::now());
                }
                () = tokio::time::sleep_until(wake_at) => {}
                _ = shutdown.changed(), if !self.shutting_down => {}
            }
        }
    }

    /// Fetches instances with messages in the store, as many as the open
    /// batch (of `open` instances) has room for; true if the page was
    /// full, so that there may be more. The store also returns the
    /// instances whose turns are not written yet (with the messages they
    /// consumed): the page is larger by their number, so that they do not
    /// crowd the others out.
    async fn fetch(&mut self, pending: &mut Pending, open: usize) -> Result<bool, StoreError> {
        let max = self.options.orchestration_batch.max(open) + self.flying.len();
        let items = self
            .store
            .fetch_orchestrations(&self.owner, self.options.lease, max)
            .await?;
        let full = items.len() >= max;
        for item in items {
            pending.add(&item.instance_id, Some(item.state), item.messages);
        }
        Ok(full)
    }

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
}
