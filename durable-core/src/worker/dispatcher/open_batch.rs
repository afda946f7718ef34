//! The open batch: the turns run since the last hand-over, one entry per
//! instance, each merging the instance's turns, until the batch is
//! handed to the store.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::time::Instant;

use crate::replay::Runner;
use crate::store::{ActivityCompletion, TurnCommit};
use crate::InstanceId;

/// The turns that have run and are not handed to the store yet: one per
/// instance, holding every turn the instance took meanwhile, merged.
#[derive(Default)]
pub(super) struct OpenBatch {
    pub(super) turns: Vec<OpenTurn>,
    pub(super) index: HashMap<InstanceId, usize>,
    /// When the batch is to be written at the latest.
    pub(super) close_at: Option<Instant>,
}

/// Where each instance's turn is in `turns`.
pub(super) fn index_of(turns: &[OpenTurn]) -> HashMap<InstanceId, usize> {
    turns
        .iter()
        .enumerate()
        .map(|(i, t)| (t.commit.instance_id.clone(), i))
        .collect()
}

/// An instance's turn that is not handed to the store yet.
pub(super) struct OpenTurn {
    pub(super) commit: TurnCommit,
    /// The orchestration, if its execution goes on and the worker keeps it
    /// in memory.
    pub(super) runner: Option<Runner>,
    /// The orchestration name.
    pub(super) name: String,
    /// How many turns are merged into `commit`.
    pub(super) merged: usize,
    /// The results handed over in memory that the turns took: if the
    /// turn is not written, those of work items written before go to the
    /// inbox (see [`written_work`]).
    pub(super) taken: Vec<ActivityCompletion>,
    /// Results of activities the turn schedules that came back while it
    /// is open and its orchestration is not in memory: written with the
    /// turn, after its work items.
    pub(super) results: Vec<ActivityCompletion>,
}

/// Of the results a turn took from memory, those of work items written
/// before it (`commit.completed_activities`): if the turn is not written,
/// they go to the inbox for the instance's redone turn. The others are
/// results of activities scheduled in the same turn (merged), of which
/// the store holds no work item: the redone turn schedules them again.
pub(super) fn written_work(taken: Vec<ActivityCompletion>, commit: &TurnCommit) -> Vec<ActivityCompletion> {
    taken
        .into_iter()
        .filter(|c| commit.completed_activities.contains(&c.key))
        .collect()
}

/// The most turns of one instance a batch merges; the instance's next
/// turns wait for the batch to be handed over. This bounds how far an
/// orchestration whose activities return at once runs ahead of the store,
/// and how long it keeps the dispatcher from everything else.
pub(super) const MAX_MERGED: usize = 16;

impl OpenTurn {
    /// The execution the orchestration runs, if it goes on.
    pub(super) fn running_execution(&self) -> Option<&str> {
        self.runner.as_ref()?;
        self.commit.update.as_ref().map(|u| u.execution_id.as_str())
    }
}

impl OpenBatch {
    pub(super) fn is_empty(&self) -> bool {
        self.turns.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.turns.len()
    }

    pub(super) fn get(&self, id: &InstanceId) -> Option<&OpenTurn> {
        self.index.get(id).map(|&i| &self.turns[i])
    }

    pub(super) fn get_mut(&mut self, id: &InstanceId) -> Option<&mut OpenTurn> {
        self.index.get(id).map(|&i| &mut self.turns[i])
    }

    pub(super) fn push(&mut self, turn: OpenTurn, linger: Duration) {
        self.close_at.get_or_insert_with(|| Instant::now() + linger);
        self.index
            .insert(turn.commit.instance_id.clone(), self.turns.len());
        self.turns.push(turn);
    }

    /// Takes the first `n` turns (all if fewer) as a batch of their own;
    /// the rest stay open, with the batch's deadline.
    pub(super) fn split_off_first(&mut self, n: usize) -> OpenBatch {
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
    pub(super) fn take_any_of(&mut self, ids: &HashSet<InstanceId>) -> Option<OpenBatch> {
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

    pub(super) fn remove(&mut self, id: &InstanceId) -> Option<OpenTurn> {
        let i = self.index.remove(id)?;
        let turn = self.turns.swap_remove(i);
        if let Some(moved) = self.turns.get(i) {
            self.index.insert(moved.commit.instance_id.clone(), i);
        }
        Some(turn)
    }

    /// Whether a turn waits for an activity this worker started and runs,
    /// whose result may still be merged into it.
    pub(super) fn expects_results(&self) -> bool {
        self.turns.iter().any(|t| {
            t.runner.is_some()
                && t.merged < MAX_MERGED
                && t.commit.claim_activities
                && !t.commit.activities.is_empty()
        })
    }

    /// Whether the batch should be written now, if no other is being
    /// written.
    pub(super) fn is_ready(&self, max: usize) -> bool {
        !self.expects_results() || self.len() >= max || self.close_at.is_some_and(|at| Instant::now() >= at)
    }
}
