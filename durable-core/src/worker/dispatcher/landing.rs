//! Handing a batch to the store and taking what it wrote: the turns
//! written go on in memory, the others are given up and redone from the
//! store.

use chrono::{DateTime, Utc};
use futures::FutureExt;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::open_batch::{written_work, OpenBatch, OpenTurn};
use super::runner_cache::Cached;
use super::Dispatcher;
use crate::replay::{panic_message, state_after};
use crate::store::{ActivityCompletion, ActivityKey, CommitBatch, StoreResult, TurnOutcome};
use crate::{FailureDetails, InstanceId, StoreError};

/// A batch being written by a task of its own.
pub(super) type Flight = JoinHandle<Landing>;

/// What the dispatcher keeps of an instance's turn while it is written.
pub(super) struct Flying {
    /// The inbox messages the turn consumed: the store returns them until
    /// the turn is written.
    pub(super) consumed: Vec<i64>,
    /// The results handed over in memory that the turn took: to the inbox
    /// if the turn is not written.
    pub(super) taken: Vec<ActivityCompletion>,
}

/// What the dispatcher learns of a batch once it is written (or not). The
/// task that wrote the batch drops it: freeing its values takes long, and
/// the dispatcher has turns to run.
pub(super) struct Landing {
    pub(super) turns: Vec<LandedTurn>,
    /// A batch that failed: its results for instances not held and its
    /// releases, to be written with the next batch.
    pub(super) retry: Option<(Vec<ActivityCompletion>, Vec<InstanceId>)>,
    pub(super) error: Option<StoreError>,
    /// Whether the batch held only its turns (no results for other
    /// instances, no releases): a data error of a batch of one such turn
    /// is that turn's.
    pub(super) turns_only: bool,
}

/// A turn of a written batch.
pub(super) struct LandedTurn {
    pub(super) instance_id: InstanceId,
    pub(super) written: bool,
    /// When the earliest delayed message the turn wrote (a timer) is due.
    pub(super) due: Option<DateTime<Utc>>,
    /// For a turn not written: the activities it scheduled.
    pub(super) scheduled: Vec<ActivityKey>,
}

impl Landing {
    pub(super) fn new(batch: CommitBatch, written: StoreResult<Vec<TurnOutcome>>) -> Self {
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

impl Dispatcher {
    /// Hands the open batch to a task that writes it in one transaction,
    /// with the results for other instances and the releases waiting if
    /// `with_rest`. The orchestrations that go on stay in memory as of
    /// their turns in the batch, so that their next turns can run
    /// meanwhile.
    pub(super) fn hand_over(&mut self, open: OpenBatch, with_rest: bool) -> Flight {
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
    pub(super) fn landed(
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
    pub(super) fn give_up(
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
}
