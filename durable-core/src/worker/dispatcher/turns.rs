//! Running turns: the next turn of each instance with messages, in
//! parallel, the activities turns start, and the results that come back.

use chrono::{DateTime, Utc};

use super::open_batch::{OpenBatch, OpenTurn, MAX_MERGED};
use super::pending::{consumed_by, sort_arrivals, Pending};
use super::Dispatcher;
use crate::replay::{merge_turns, run_turn, state_after, Runner, TurnResult};
use crate::store::{
    ActivityCompletion, ActivityWorkItem, InboxMessage, InstanceState, MessageSource, NewActivity,
    OrchestrationWorkItem,
};
use crate::worker::activities::Finished;
use crate::InstanceId;

/// A turn to run: the orchestration, and the messages it takes.
pub(super) struct NextTurn {
    pub(super) runner: Runner,
    pub(super) item: OrchestrationWorkItem,
    pub(super) now: DateTime<Utc>,
    /// The orchestration name for a turn that opens an instance's entry in
    /// the open batch; `None` for the next turn of an entry.
    pub(super) new: Option<String>,
}

impl NextTurn {
    pub(super) fn new(
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

    pub(super) fn run(self) -> TurnResult {
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
pub(super) async fn run_in_parallel(
    turns: Vec<NextTurn>,
) -> Vec<(InstanceId, Option<String>, Option<TurnResult>)> {
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

impl Dispatcher {
    pub(super) fn take_completions(&mut self, pending: &mut Pending, open: &mut OpenBatch) {
        while let Ok(c) = self.completions.try_recv() {
            self.push_completion(pending, open, c);
        }
    }

    /// Routes an activity result: to the orchestration in memory if this
    /// worker holds it (in the open batch or in the cache), else to the
    /// instance's inbox; a result of a run that a refused turn started is
    /// dropped.
    pub(super) fn push_completion(
        &mut self,
        pending: &mut Pending,
        open: &mut OpenBatch,
        (run, completion): Finished,
    ) {
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
    pub(super) fn route_to_inbox(&mut self, open: &mut OpenBatch, completion: ActivityCompletion) {
        if let Some(turn) = open.get_mut(&completion.key.instance_id) {
            if turn.commit.activities.iter().any(|a| a.key == completion.key) {
                turn.results.push(completion);
                return;
            }
        }
        self.foreign.push(completion);
    }

    /// Runs one turn per pending instance: the next turn of an instance in
    /// `open`, merged into its open turn, or a new turn, added to `open`.
    /// The turns of different instances run in parallel; the activities a
    /// turn claims start at once.
    pub(super) async fn run_turns(&mut self, open: &mut OpenBatch, mut pending: Pending) {
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
    pub(super) fn keeps(&self, result: &TurnResult) -> bool {
        result.runner.is_some() && self.options.cache_capacity > 0 && !self.shutting_down
    }

    /// Starts activities that a turn claims, before the turn commits: a
    /// result that comes back before the turn is written runs the next turn
    /// in the same batch. If the turn is never written, it is redone and
    /// schedules them again (activities are at least once).
    pub(super) fn start_activities(&mut self, activities: &[NewActivity]) {
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

    /// Leaves `messages` of an instance whose last turn is not written yet
    /// for later: results go to the inbox, and the store is looked at again
    /// once the batch being written lands, for the stored ones.
    pub(super) fn defer_until_written(&mut self, open: &mut OpenBatch, messages: Vec<InboxMessage>) {
        self.recheck |= messages
            .iter()
            .any(|m| matches!(m.source, MessageSource::Inbox(_)));
        self.defer(open, messages);
    }

    /// Sends handed-over activity results back to the inbox route.
    pub(super) fn defer(&mut self, open: &mut OpenBatch, messages: Vec<InboxMessage>) {
        for m in messages {
            if let MessageSource::Activity(key) = m.source {
                self.route_to_inbox(open, ActivityCompletion { key, event: m.event });
            }
        }
    }
}
