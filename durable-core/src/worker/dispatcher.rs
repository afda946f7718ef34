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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::activities::{ActivityRunner, Finished, RunId};
use super::wake::LookSchedule;
use super::{next_look, Backoff, WorkerOptions};
use crate::replay::{merge_turns, panic_message, run_turn, state_after, Runner, TurnResult};
use crate::store::{
    ActivityCompletion, ActivityKey, ActivityWorkItem, CommitBatch, InboxMessage, InstanceState,
    MessageSource, NewActivity, OrchestrationWorkItem, Store, StoreResult, TurnCommit, TurnOutcome,
};
use crate::{FailureDetails, InstanceId, Registry, StoreError};

/// An orchestration kept in memory between turns, with the state of its
/// instance as its last turn handed to the store leaves it.
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

/// The turns to run next, by instance, in arrival order.
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
        if entry.1.is_empty() {
            entry.1 = messages;
            return;
        }
        // A stored message may come both offered and fetched.
        let known: HashSet<i64> = entry.1.iter().filter_map(inbox_id).collect();
        entry.1.extend(
            messages
                .into_iter()
                .filter(|m| inbox_id(m).is_none_or(|id| !known.contains(&id))),
        );
    }
}

/// The id of a stored message.
fn inbox_id(message: &InboxMessage) -> Option<i64> {
    match message.source {
        MessageSource::Inbox(id) => Some(id),
        MessageSource::Activity(_) => None,
    }
}

/// Messages of a turn in the order they arrived: results handed over in
/// memory after the stored messages of the same millisecond.
fn sort_arrivals(messages: &mut [InboxMessage]) {
    messages.sort_by_key(|m| (m.visible_at, matches!(m.source, MessageSource::Activity(_))));
}

/// Whether `message` is an inbox row among `consumed`: a turn that is not
/// written yet consumed it, and the store still returns it.
fn consumed_by(message: &InboxMessage, consumed: &[i64]) -> bool {
    matches!(&message.source, MessageSource::Inbox(id) if consumed.contains(id))
}

/// The turns that have run and are not handed to the store yet: one per
/// instance, holding every turn the instance took meanwhile, merged.
#[derive(Default)]
struct OpenBatch {
    turns: Vec<OpenTurn>,
    index: HashMap<InstanceId, usize>,
    /// When the batch is to be written at the latest.
    close_at: Option<Instant>,
}

/// Where each instance's turn is in `turns`.
fn index_of(turns: &[OpenTurn]) -> HashMap<InstanceId, usize> {
    turns
        .iter()
        .enumerate()
        .map(|(i, t)| (t.commit.instance_id.clone(), i))
        .collect()
}

/// An instance's turn that is not handed to the store yet.
struct OpenTurn {
    commit: TurnCommit,
    /// The orchestration, if its execution goes on and the worker keeps it
    /// in memory.
    runner: Option<Runner>,
    /// The orchestration name.
    name: String,
    /// How many turns are merged into `commit`.
    merged: usize,
    /// The results handed over in memory that the turns took: if the
    /// turn is not written, those of work items written before go to the
    /// inbox (see [`written_work`]).
    taken: Vec<ActivityCompletion>,
    /// Results of activities the turn schedules that came back while it
    /// is open and its orchestration is not in memory: written with the
    /// turn, after its work items.
    results: Vec<ActivityCompletion>,
}

/// Of the results a turn took from memory, those of work items written
/// before it (`commit.completed_activities`): if the turn is not written,
/// they go to the inbox for the instance's redone turn. The others are
/// results of activities scheduled in the same turn (merged), of which
/// the store holds no work item: the redone turn schedules them again.
fn written_work(taken: Vec<ActivityCompletion>, commit: &TurnCommit) -> Vec<ActivityCompletion> {
    taken
        .into_iter()
        .filter(|c| commit.completed_activities.contains(&c.key))
        .collect()
}

/// The most turns of one instance a batch merges; the instance's next
/// turns wait for the batch to be handed over. This bounds how far an
/// orchestration whose activities return at once runs ahead of the store,
/// and how long it keeps the dispatcher from everything else.
const MAX_MERGED: usize = 16;

impl OpenTurn {
    /// The execution the orchestration runs, if it goes on.
    fn running_execution(&self) -> Option<&str> {
        self.runner.as_ref()?;
        self.commit.update.as_ref().map(|u| u.execution_id.as_str())
    }
}

impl OpenBatch {
    fn is_empty(&self) -> bool {
        self.turns.is_empty()
    }

    fn len(&self) -> usize {
        self.turns.len()
    }

    fn get(&self, id: &InstanceId) -> Option<&OpenTurn> {
        self.index.get(id).map(|&i| &self.turns[i])
    }

    fn get_mut(&mut self, id: &InstanceId) -> Option<&mut OpenTurn> {
        self.index.get(id).map(|&i| &mut self.turns[i])
    }

    fn push(&mut self, turn: OpenTurn, linger: Duration) {
        self.close_at.get_or_insert_with(|| Instant::now() + linger);
        self.index
            .insert(turn.commit.instance_id.clone(), self.turns.len());
        self.turns.push(turn);
    }

    /// Takes the first `n` turns (all if fewer) as a batch of their own;
    /// the rest stay open, with the batch's deadline.
    fn split_off_first(&mut self, n: usize) -> OpenBatch {
        if self.turns.len() <= n {
            return std::mem::take(self);
        }
        let rest = self.turns.split_off(n);
        let first = std::mem::replace(&mut self.turns, rest);
        self.index = index_of(&self.turns);
        OpenBatch {
            index: index_of(&first),
            turns: first,
            close_at: self.close_at,
        }
    }

    /// The turn of one of `ids`, if there is one, as a batch of its own.
    fn take_any_of(&mut self, ids: &HashSet<InstanceId>) -> Option<OpenBatch> {
        if ids.is_empty() {
            return None;
        }
        let id = self
            .turns
            .iter()
            .map(|t| &t.commit.instance_id)
            .find(|id| ids.contains(*id))?
            .clone();
        let turn = self.remove(&id)?;
        let mut alone = OpenBatch {
            close_at: self.close_at,
            ..OpenBatch::default()
        };
        alone.index.insert(id, 0);
        alone.turns.push(turn);
        if self.turns.is_empty() {
            self.close_at = None;
        }
        Some(alone)
    }

    fn remove(&mut self, id: &InstanceId) -> Option<OpenTurn> {
        let i = self.index.remove(id)?;
        let turn = self.turns.swap_remove(i);
        if let Some(moved) = self.turns.get(i) {
            self.index.insert(moved.commit.instance_id.clone(), i);
        }
        Some(turn)
    }

    /// Whether a turn waits for an activity this worker started and runs,
    /// whose result may still be merged into it.
    fn expects_results(&self) -> bool {
        self.turns.iter().any(|t| {
            t.runner.is_some()
                && t.merged < MAX_MERGED
                && t.commit.claim_activities
                && !t.commit.activities.is_empty()
        })
    }

    /// Whether the batch should be written now, if no other is being
    /// written.
    fn is_ready(&self, max: usize) -> bool {
        !self.expects_results() || self.len() >= max || self.close_at.is_some_and(|at| Instant::now() >= at)
    }
}

/// A turn to run: the orchestration, and the messages it takes.
struct NextTurn {
    runner: Runner,
    item: OrchestrationWorkItem,
    now: DateTime<Utc>,
    /// The orchestration name for a turn that opens an instance's entry in
    /// the open batch; `None` for the next turn of an entry.
    new: Option<String>,
}

impl NextTurn {
    fn new(
        runner: Runner,
        instance_id: InstanceId,
        state: InstanceState,
        mut messages: Vec<InboxMessage>,
        new: Option<String>,
    ) -> Self {
        sort_arrivals(&mut messages);
        Self {
            runner,
            item: OrchestrationWorkItem {
                instance_id,
                state,
                messages,
            },
            now: Utc::now(),
            new,
        }
    }

    fn run(self) -> TurnResult {
        run_turn(self.runner, self.item, self.now)
    }
}

/// Runs `turns` (of different instances) as tasks of their own when there
/// are several, so that the runtime's threads share them. Returns each
/// instance with its turn's `new` and result; `None` if the turn panicked,
/// which the orchestration code cannot cause (its panics fail the
/// instance), only a bug of the runtime. (The results handed over in
/// memory that such a turn was given are lost with it; their work items,
/// no longer run, are not renewed, and run again once their leases
/// expire.)
async fn run_in_parallel(turns: Vec<NextTurn>) -> Vec<(InstanceId, Option<String>, Option<TurnResult>)> {
    if turns.len() < 2 {
        return turns
            .into_iter()
            .map(|t| (t.item.instance_id.clone(), t.new.clone(), Some(t.run())))
            .collect();
    }
    let running: Vec<_> = turns
        .into_iter()
        .map(|t| {
            let id = t.item.instance_id.clone();
            let new = t.new.clone();
            (id, new, tokio::spawn(async move { t.run() }))
        })
        .collect();
    let mut done = Vec::with_capacity(running.len());
    for (id, new, task) in running {
        let result = match task.await {
            Ok(result) => Some(result),
            Err(e) => {
                tracing::error!(instance = %id, error = %e, "an orchestration turn did not finish");
                None
            }
        };
        done.push((id, new, result));
    }
    done
}

/// A batch being written by a task of its own.
type Flight = JoinHandle<Landing>;

/// What the dispatcher keeps of an instance's turn while it is written.
struct Flying {
    /// The inbox messages the turn consumed: the store returns them until
    /// the turn is written.
    consumed: Vec<i64>,
    /// The results handed over in memory that the turn took: to the inbox
    /// if the turn is not written.
    taken: Vec<ActivityCompletion>,
}

/// What the dispatcher learns of a batch once it is written (or not). The
/// task that wrote the batch drops it: freeing its values takes long, and
/// the dispatcher has turns to run.
struct Landing {
    turns: Vec<LandedTurn>,
    /// A batch that failed: its results for instances not held and its
    /// releases, to be written with the next batch.
    retry: Option<(Vec<ActivityCompletion>, Vec<InstanceId>)>,
    error: Option<StoreError>,
    /// Whether the batch held only its turns (no results for other
    /// instances, no releases): a data error of a batch of one such turn
    /// is that turn's.
    turns_only: bool,
}

/// A turn of a written batch.
struct LandedTurn {
    instance_id: InstanceId,
    written: bool,
    /// When the earliest delayed message the turn wrote (a timer) is due.
    due: Option<DateTime<Utc>>,
    /// For a turn not written: the activities it scheduled.
    scheduled: Vec<ActivityKey>,
}

impl Landing {
    fn new(batch: CommitBatch, written: StoreResult<Vec<TurnOutcome>>) -> Self {
        let (outcomes, error) = match written {
            Ok(outcomes) => (outcomes, None),
            Err(e) => (vec![TurnOutcome::Conflict; batch.turns.len()], Some(e)),
        };
        let turns = batch
            .turns
            .iter()
            .zip(outcomes)
            .map(|(commit, outcome)| {
                let written = outcome == TurnOutcome::Committed;
                LandedTurn {
                    instance_id: commit.instance_id.clone(),
                    written,
                    due: commit
                        .messages
                        .iter()
                        .map(|m| m.visible_at)
                        .min()
                        .filter(|_| written),
                    scheduled: if written {
                        Vec::new()
                    } else {
                        commit.activities.iter().map(|a| a.key.clone()).collect()
                    },
                }
            })
            .collect();
        let turns_only = batch.release.is_empty()
            && batch
                .completions
                .iter()
                .all(|c| batch.turns.iter().any(|t| t.instance_id == c.key.instance_id));
        let retry = error.is_some().then_some((batch.completions, batch.release));
        Self {
            turns,
            retry,
            error,
            turns_only,
        }
    }
}

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

    fn take_completions(&mut self, pending: &mut Pending, open: &mut OpenBatch) {
        while let Ok(c) = self.completions.try_recv() {
            self.push_completion(pending, open, c);
        }
    }

    /// Routes an activity result: to the orchestration in memory if this
    /// worker holds it (in the open batch or in the cache), else to the
    /// instance's inbox; a result of a run that a refused turn started is
    /// dropped.
    fn push_completion(&mut self, pending: &mut Pending, open: &mut OpenBatch, (run, completion): Finished) {
        self.activities.finished();
        if self.running.get(&completion.key) == Some(&run) {
            self.running.remove(&completion.key);
        }
        if self.orphans.remove(&run) {
            tracing::debug!(
                instance = %completion.key.instance_id,
                task = completion.key.task_id,
                "dropped the result of an activity whose turn was refused"
            );
            return;
        }
        let key = &completion.key;
        let held = match open.get(&key.instance_id) {
            Some(turn) => turn.running_execution() == Some(key.execution_id.as_str()),
            None => self
                .cache
                .get(&key.instance_id)
                .is_some_and(|c| c.state.execution_id == key.execution_id),
        };
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
            self.route_to_inbox(open, completion);
        }
    }

    /// Sends a result to its instance's inbox: with the open turn that
    /// schedules its activity, if there is one (a result written before
    /// its work item would be dropped, and the work item, claimed by this
    /// worker, would wait for ever), else with the next batch.
    fn route_to_inbox(&mut self, open: &mut OpenBatch, completion: ActivityCompletion) {
        if let Some(turn) = open.get_mut(&completion.key.instance_id) {
            if turn.commit.activities.iter().any(|a| a.key == completion.key) {
                turn.results.push(completion);
                return;
            }
        }
        self.foreign.push(completion);
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

    /// Runs one turn per pending instance: the next turn of an instance in
    /// `open`, merged into its open turn, or a new turn, added to `open`.
    /// The turns of different instances run in parallel; the activities a
    /// turn claims start at once.
    async fn run_turns(&mut self, open: &mut OpenBatch, mut pending: Pending) {
        let mut turns = Vec::with_capacity(pending.order.len());
        for id in std::mem::take(&mut pending.order) {
            let Some((state, mut messages)) = pending.items.remove(&id) else {
                continue;
            };
            let flying = self.flying.get(&id);
            if let Some(flying) = flying {
                messages.retain(|m| !consumed_by(m, &flying.consumed));
            }
            if let Some(turn) = open.get_mut(&id) {
                messages.retain(|m| !consumed_by(m, &turn.commit.consumed));
                if messages.is_empty() {
                    continue;
                }
                if turn.merged >= MAX_MERGED {
                    // Without the stored state a fetch gave: it is older
                    // than the open turn's.
                    self.later.add(&id, None, messages);
                    continue;
                }
                let state = state_after(&turn.commit, &turn.name);
                let (Some(runner), Some(state)) = (turn.runner.take(), state) else {
                    // The orchestration is not in memory (its execution
                    // ended in this batch, or nothing is cached): results go
                    // to the inbox, stored messages wait until the batch is
                    // written.
                    self.defer_until_written(open, messages);
                    continue;
                };
                turns.push(NextTurn::new(runner, id, state, messages, None));
                continue;
            }
            if messages.is_empty() {
                continue;
            }
            // While the instance's last turn is being written, the store's
            // state is behind: the orchestration in memory is current. A
            // stored state read before a batch landed may be older than the
            // one in memory too; one newer (another worker wrote a turn)
            // makes the worker replay.
            let cached = self.cache.get(&id).map(|c| &c.state);
            let state = match (state, cached) {
                (_, Some(cached)) if flying.is_some() => Some(cached.clone()),
                (Some(stored), Some(cached)) if cached.version >= stored.version => Some(cached.clone()),
                (None, Some(cached)) => Some(cached.clone()),
                (stored, _) if flying.is_none() => stored,
                _ => None,
            };
            let Some(state) = state else {
                // Results for an orchestration no longer in memory, or
                // stored messages of one whose last turn is being written
                // without it staying in memory: they wait until it is.
                self.defer_until_written(open, messages);
                continue;
            };
            let Some(mut runner) = self.runner_for(&id, &state).await else {
                // The history could not be loaded; the instance was held back.
                self.defer(open, messages);
                continue;
            };
            if let Some(failure) = self.poisoned.get(&id) {
                runner.fail(failure.clone(), state.history_len);
            }
            let name = state.name.clone();
            turns.push(NextTurn::new(runner, id, state, messages, Some(name)));
        }
        for (id, new, result) in run_in_parallel(turns).await {
            let Some(mut result) = result else {
                // The turn's code could not be run to its end (a bug of the
                // runtime, logged): the instance is redone from the store.
                self.give_up(id, Vec::new(), None, open);
                continue;
            };
            self.foreign.append(&mut result.deferred);
            let keep = self.keeps(&result);
            result.commit.keep_lease = keep;
            let name = match (new, open.get_mut(&id)) {
                (None, Some(turn)) => {
                    if turn.commit.claim_activities {
                        self.start_activities(&result.commit.activities);
                    }
                    merge_turns(&mut turn.commit, result.commit);
                    turn.merged += 1;
                    turn.runner = result.runner.filter(|_| keep);
                    turn.taken.append(&mut result.taken);
                    continue;
                }
                (Some(name), _) => name,
                // Only `landed` removes entries, never while turns run.
                (None, None) => continue,
            };
            // Claimed activities run here; beyond twice the concurrency
            // they wait in the store for any worker.
            let room = (self.options.activity_concurrency * 2).saturating_sub(self.activities.in_flight());
            let commit = &mut result.commit;
            commit.claim_activities = !self.shutting_down && commit.activities.len() <= room;
            if commit.claim_activities {
                self.start_activities(&commit.activities);
            }
            open.push(
                OpenTurn {
                    commit: result.commit,
                    runner: result.runner.filter(|_| keep),
                    name,
                    merged: 1,
                    taken: result.taken,
                    results: Vec::new(),
                },
                self.options.linger,
            );
        }
    }

    /// Whether the worker keeps the orchestration of `result` in memory
    /// (and its instance leased) after the turn, for its next turns in the
    /// open batch and in later ones. Without a cache, every turn replays.
    fn keeps(&self, result: &TurnResult) -> bool {
        result.runner.is_some() && self.options.cache_capacity > 0 && !self.shutting_down
    }

    /// Starts activities that a turn claims, before the turn commits: a
    /// result that comes back before the turn is written runs the next turn
    /// in the same batch. If the turn is never written, it is redone and
    /// schedules them again (activities are at least once).
    fn start_activities(&mut self, activities: &[NewActivity]) {
        for activity in activities {
            let run = self.activities.run(ActivityWorkItem {
                key: activity.key.clone(),
                name: activity.name.clone(),
                input: activity.input.clone(),
                attempt: 1,
                input_error: None,
            });
            self.running.insert(activity.key.clone(), run);
        }
    }

    /// Hands the open batch to a task that writes it in one transaction,
    /// with the results for other instances and the releases waiting if
    /// `with_rest`. The orchestrations that go on stay in memory as of
    /// their turns in the batch, so that their next turns can run
    /// meanwhile.
    fn hand_over(&mut self, open: OpenBatch, with_rest: bool) -> Flight {
        let mut turns = Vec::with_capacity(open.turns.len());
        let mut results = Vec::new();
        for OpenTurn {
            commit,
            runner,
            name,
            taken,
            results: mut turn_results,
            ..
        } in open.turns
        {
            results.append(&mut turn_results);
            let flying = Flying {
                consumed: commit.consumed.clone(),
                taken: written_work(taken, &commit),
            };
            self.flying.insert(commit.instance_id.clone(), flying);
            if let (true, Some(runner), Some(state)) =
                (commit.keep_lease, runner, state_after(&commit, &name))
            {
                let evicted = self
                    .cache
                    .put(commit.instance_id.clone(), Cached { runner, state });
                self.release.extend(evicted);
            }
            turns.push(commit);
        }
        let (mut completions, release) = if with_rest {
            (
                std::mem::take(&mut self.foreign),
                std::mem::take(&mut self.release),
            )
        } else {
            (Vec::new(), Vec::new())
        };
        // After the work items of the batch's turns, in the same batch.
        completions.append(&mut results);
        let batch = CommitBatch {
            turns,
            completions,
            release,
        };
        let store = self.store.clone();
        let owner = self.owner.clone();
        let lease = self.options.lease;
        tokio::spawn(async move {
            let written = std::panic::AssertUnwindSafe(store.commit(&owner, lease, &batch))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| {
                    Err(StoreError::Database(
                        format!("the commit panicked: {}", panic_message(panic.as_ref())).into(),
                    ))
                });
            Landing::new(batch, written)
        })
    }

    /// Takes the outcome of the batch written by a flight. Returns when the
    /// earliest delayed message it wrote (a timer) is due.
    fn landed(
        &mut self,
        landed: Result<Landing, tokio::task::JoinError>,
        open: &mut OpenBatch,
    ) -> Result<Option<Instant>, StoreError> {
        let mut flying = std::mem::take(&mut self.flying);
        let landing = match landed {
            Ok(landing) => landing,
            Err(e) => {
                // The task did not finish (the runtime is shutting down):
                // whether the batch was written is unknown.
                for (id, turn) in flying {
                    self.give_up(id, turn.taken, None, open);
                }
                return Err(StoreError::Database(Box::new(e)));
            }
        };
        if let Some((completions, release)) = landing.retry {
            // Usually nothing was written, but the commit may also have
            // been written with its answer lost (the connection dropped
            // during COMMIT). Either way the activities the batch started
            // are running, and their results go to the inbox once the
            // instances are given up: after a redone turn that scheduled
            // them again, a result that arrives first is taken or ignored
            // like any repeated run (at least once).
            self.foreign.extend(completions);
            self.release.extend(release);
        }
        if let Some(StoreError::Rejected(reason)) = &landing.error {
            // The data of one of the turns (or of a result written with
            // them): each instance is written alone until the culprit is
            // found, and a turn refused alone fails its instance.
            match landing.turns.as_slice() {
                [turn] if landing.turns_only => {
                    tracing::error!(instance = %turn.instance_id, error = %reason, "the store refused the data of a turn; the instance fails");
                    let failure = FailureDetails::new(
                        "StoreRejected",
                        format!("the store refused to write a turn of this instance: {reason}"),
                    );
                    self.suspects.remove(&turn.instance_id);
                    self.poisoned.insert(turn.instance_id.clone(), failure);
                }
                turns => self.suspects.extend(turns.iter().map(|t| t.instance_id.clone())),
            }
        }
        let now = Utc::now();
        let mut due = None;
        for turn in landing.turns {
            if turn.written {
                self.suspects.remove(&turn.instance_id);
                self.poisoned.remove(&turn.instance_id);
            }
            if !turn.written {
                if landing.error.is_none() {
                    tracing::debug!(instance = %turn.instance_id, worker = %self.owner, "turn conflicted; discarded");
                }
                // A refused turn's activities were never scheduled; after a
                // failed commit, whether they were is unknown.
                let refused = landing.error.is_none().then_some(turn.scheduled);
                let taken = flying
                    .remove(&turn.instance_id)
                    .map(|f| f.taken)
                    .unwrap_or_default();
                self.give_up(turn.instance_id, taken, refused, open);
                continue;
            }
            if let Some(at) = turn.due {
                let at = Instant::now() + (at - now).to_std().unwrap_or_default();
                due = Some(due.map_or(at, |d: Instant| d.min(at)));
            }
        }
        match landing.error {
            Some(e) => Err(e),
            None => Ok(due),
        }
    }

    /// After a turn of `id` was not written: the orchestration, which went
    /// on from it in memory, leaves memory with its later turn in `open`;
    /// the results those turns took from this worker for activities that
    /// written turns scheduled (`taken`, and the later turn's) go to the
    /// inbox; and the instance is given up to be redone from the store.
    /// `refused` holds the activities of a turn that was refused (not of
    /// one whose commit failed, which may have been written): they, and
    /// the later turn's, were never scheduled, and their runs' results are
    /// dropped.
    fn give_up(
        &mut self,
        id: InstanceId,
        taken: Vec<ActivityCompletion>,
        refused: Option<Vec<ActivityKey>>,
        open: &mut OpenBatch,
    ) {
        self.foreign.extend(taken);
        self.cache.take(&id);
        let mut unscheduled = refused.clone().unwrap_or_default();
        if let Some(later) = open.remove(&id) {
            let by_refused = |c: &ActivityCompletion| refused.as_ref().is_some_and(|r| r.contains(&c.key));
            let taken = written_work(later.taken, &later.commit);
            self.foreign.extend(taken.into_iter().filter(|c| !by_refused(c)));
            // Results that waited for the later turn: to the inbox, where
            // they count only for a work item of their call written before
            // (a run the fetcher found), not for the later turn's.
            self.foreign.extend(later.results);
            unscheduled.extend(later.commit.activities.iter().map(|a| a.key.clone()));
        }
        for key in unscheduled {
            if let Some(run) = self.running.remove(&key) {
                self.orphans.insert(run);
            }
        }
        self.release.push(id);
    }

    /// Leaves `messages` of an instance whose last turn is not written yet
    /// for later: results go to the inbox, and the store is looked at again
    /// once the batch being written lands, for the stored ones.
    fn defer_until_written(&mut self, open: &mut OpenBatch, messages: Vec<InboxMessage>) {
        self.recheck |= messages
            .iter()
            .any(|m| matches!(m.source, MessageSource::Inbox(_)));
        self.defer(open, messages);
    }

    /// Sends handed-over activity results back to the inbox route.
    fn defer(&mut self, open: &mut OpenBatch, messages: Vec<InboxMessage>) {
        for m in messages {
            if let MessageSource::Activity(key) = m.source {
                self.route_to_inbox(open, ActivityCompletion { key, event: m.event });
            }
        }
    }
}
