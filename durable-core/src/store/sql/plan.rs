//! How a batch of turns becomes rows: the one place that decides which
//! turns a commit writes (the exactly-once rule), what each of them writes
//! to each table, and what the commit wakes. The SQL backends only encode
//! the rows ([`BatchRows`]) for their driver and write the tables in the
//! order its fields are listed: a result is delivered only for a work item
//! that exists once the batch's own work items are written, and before the
//! finished ones go.

use std::collections::{HashMap, HashSet};

use super::codec::{event_kind, fingerprint_column, i64_of, lease_end, ms, now_ms, to_json};
use crate::store::{
    ActivityKey, CommitBatch, CreateOutcome, NewInstance, NewMessage, NewStreamEvent, PurgeOutcome,
    StoreResult, TurnCommit, TurnOutcome,
};
use crate::{HistoryEvent, InstanceId, Payload, RuntimeStatus};

/// The row of an instance that a write depends on.
#[derive(Debug, Clone)]
pub(crate) struct InstanceRow {
    pub(crate) status: RuntimeStatus,
    pub(crate) version: u64,
    pub(crate) lock_owner: Option<String>,
    pub(crate) lock_expires: i64,
}

impl InstanceRow {
    /// The row of an instance just created.
    fn created() -> Self {
        Self {
            status: RuntimeStatus::Pending,
            version: 0,
            lock_owner: None,
            lock_expires: 0,
        }
    }
}

/// The instance rows a commit read (in its transaction, before writing),
/// by instance id. A plan updates them as it goes: a turn's row gets its
/// new version and status, a created instance its first row.
pub(crate) type InstanceRows = HashMap<String, InstanceRow>;

/// Who commits, and until when the leases it takes or keeps last.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Committer<'a> {
    /// The committing worker.
    pub(crate) owner: &'a str,
    /// When the leases of the turns that keep them end (Unix ms).
    pub(crate) lease_until: i64,
    /// The time of the commit (Unix ms).
    pub(crate) now: i64,
}

impl<'a> Committer<'a> {
    /// `owner` committing now, keeping leases for `lease`.
    pub(crate) fn now(owner: &'a str, lease: std::time::Duration) -> Self {
        Self {
            owner,
            lease_until: lease_end(lease),
            now: now_ms(),
        }
    }

    /// A client writing now: it takes no lease.
    pub(crate) fn client() -> Self {
        Self::now("", std::time::Duration::ZERO)
    }
}

/// An instance row after a turn.
#[derive(Debug)]
pub(crate) struct UpdateRow<'a> {
    pub(crate) instance_id: &'a str,
    /// The version the turn started from; the row gets the next one.
    pub(crate) version: i64,
    pub(crate) status: &'static str,
    pub(crate) execution_id: &'a str,
    /// A new input (continue-as-new); `None` keeps the stored one.
    pub(crate) input: Option<&'a str>,
    pub(crate) custom_status: Option<&'a str>,
    pub(crate) output: Option<&'a str>,
    pub(crate) failure: Option<String>,
    pub(crate) completed_at: Option<i64>,
    pub(crate) history_len: i64,
    pub(crate) stream_seq: i64,
    pub(crate) execution_emits: i64,
    pub(crate) lock_owner: Option<&'a str>,
    pub(crate) lock_expires: i64,
}

/// An instance to create, with the message that starts it.
#[derive(Debug)]
pub(crate) struct CreationRow<'a> {
    pub(crate) instance_id: &'a str,
    pub(crate) name: &'a str,
    pub(crate) execution_id: &'a str,
    pub(crate) input: &'a str,
    pub(crate) parent: Option<String>,
    pub(crate) created_at: i64,
    /// The `ExecutionStarted` message, written with the instance.
    pub(crate) start: MessageRow<'a>,
}

impl<'a> CreationRow<'a> {
    /// The rows of `instance`.
    pub(crate) fn of(instance: &'a NewInstance) -> StoreResult<Self> {
        Ok(Self {
            instance_id: instance.instance_id.as_str(),
            name: &instance.name,
            execution_id: &instance.execution_id,
            input: instance.input.as_str(),
            parent: instance.parent.as_ref().map(to_json).transpose()?,
            created_at: ms(instance.created_at),
            start: MessageRow {
                instance_id: instance.instance_id.as_str(),
                execution_id: Some(&instance.execution_id),
                kind: "ExecutionStarted",
                event: to_json(&instance.start_event())?,
                visible_at: ms(instance.start_at),
            },
        })
    }
}

/// A history event at its index.
#[derive(Debug)]
pub(crate) struct HistoryRow<'a> {
    pub(crate) instance_id: &'a str,
    pub(crate) idx: i64,
    pub(crate) event: String,
}

/// A work item's key: a task of an execution, of one call (the
/// fingerprint; an item stored without one matches any call).
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyRow<'a> {
    pub(crate) instance_id: &'a str,
    pub(crate) execution_id: &'a str,
    pub(crate) task_id: i64,
    pub(crate) fingerprint: i64,
}

impl<'a> KeyRow<'a> {
    pub(crate) fn of(key: &'a ActivityKey) -> Self {
        Self {
            instance_id: key.instance_id.as_str(),
            execution_id: &key.execution_id,
            task_id: i64_of(key.task_id),
            fingerprint: fingerprint_column(key.fingerprint),
        }
    }
}

/// A new activity work item.
#[derive(Debug)]
pub(crate) struct ActivityRow<'a> {
    pub(crate) key: KeyRow<'a>,
    pub(crate) name: &'a str,
    pub(crate) input: &'a str,
    /// The committing worker, if it runs the activity itself.
    pub(crate) lock_owner: Option<&'a str>,
    pub(crate) lock_expires: i64,
    pub(crate) attempt: i32,
}

/// The result of an activity whose orchestration the committing worker
/// does not hold, for the instance's inbox. It is delivered only if the
/// instance is there and not over, and the work item is still the call's
/// (another run's result was not taken first).
#[derive(Debug)]
pub(crate) struct ResultRow<'a> {
    pub(crate) key: KeyRow<'a>,
    pub(crate) event: String,
}

/// An inbox message.
#[derive(Debug)]
pub(crate) struct MessageRow<'a> {
    pub(crate) instance_id: &'a str,
    pub(crate) execution_id: Option<&'a str>,
    pub(crate) kind: &'static str,
    pub(crate) event: String,
    pub(crate) visible_at: i64,
}

impl<'a> MessageRow<'a> {
    pub(crate) fn of(message: &'a NewMessage) -> StoreResult<Self> {
        Ok(Self {
            instance_id: message.instance_id.as_str(),
            execution_id: message.execution_id.as_deref(),
            kind: event_kind(&message.event),
            event: to_json(&message.event)?,
            visible_at: ms(message.visible_at),
        })
    }
}

/// A stream event.
#[derive(Debug)]
pub(crate) struct StreamRow<'a> {
    pub(crate) instance_id: &'a str,
    pub(crate) seq: i64,
    pub(crate) execution_id: &'a str,
    pub(crate) emit_index: i64,
    pub(crate) name: &'a str,
    pub(crate) payload: &'a str,
    pub(crate) emitted_at: i64,
}

impl<'a> StreamRow<'a> {
    fn of(instance_id: &'a str, event: &'a NewStreamEvent) -> Self {
        Self {
            instance_id,
            seq: i64_of(event.seq),
            execution_id: &event.execution_id,
            emit_index: i64_of(event.emit_index),
            name: &event.name,
            payload: event.payload.as_str(),
            emitted_at: ms(event.emitted_at),
        }
    }
}

/// What a committed batch makes ready, for the workers and watchers.
#[derive(Debug, Default)]
pub(crate) struct Wake<'a> {
    /// Orchestration messages became visible.
    pub(crate) orchestrations: bool,
    /// Unclaimed activity work items were written.
    pub(crate) activities: bool,
    /// A message was written that becomes visible later (a timer).
    pub(crate) later: bool,
    /// The instances whose turns were written.
    pub(crate) instances: Vec<&'a InstanceId>,
}

/// Everything a batch writes, by table, in the order a backend writes
/// the tables; and which of its turns are written.
#[derive(Debug, Default)]
pub(crate) struct BatchRows<'a> {
    /// Per turn of the batch, in order.
    pub(crate) outcomes: Vec<TurnOutcome>,
    /// Terminal instances whose rows (every table) go before a new instance
    /// takes their id.
    pub(crate) replaced: Vec<&'a str>,
    /// Instances whose history goes before the turn's (a new execution).
    pub(crate) new_executions: Vec<&'a str>,
    /// Instances created (sub-orchestrations, or a client's).
    pub(crate) creations: Vec<CreationRow<'a>>,
    pub(crate) updates: Vec<UpdateRow<'a>>,
    pub(crate) history: Vec<HistoryRow<'a>>,
    /// Inbox messages consumed, by id.
    pub(crate) consumed: Vec<i64>,
    /// Instances that ended: their inbox and work items go.
    pub(crate) terminal: Vec<&'a str>,
    /// New work items.
    pub(crate) activities: Vec<ActivityRow<'a>>,
    /// Results for instances the worker does not hold, written after
    /// `activities`; each one's work item goes with `done`.
    pub(crate) results: Vec<ResultRow<'a>>,
    /// Work items whose results the turns took.
    pub(crate) done: Vec<KeyRow<'a>>,
    pub(crate) messages: Vec<MessageRow<'a>>,
    pub(crate) stream: Vec<StreamRow<'a>>,
    /// Instances whose lease the committing worker gives up.
    pub(crate) releases: Vec<&'a str>,
    pub(crate) wake: Wake<'a>,
}

impl<'a> BatchRows<'a> {
    /// The rows of `batch` committed by `by`. With `read`, the rows of the
    /// batch's instances (see [`batch_instance_ids`]) read in the commit's
    /// transaction, a turn is written only if [`may_commit`] allows it, and
    /// a sub-orchestration whose id is taken gets its parent told. Without,
    /// every turn is planned, and the backend's statement must check the
    /// versions and leases itself, writing every turn or none (a batch
    /// that creates instances or drops the late messages of a terminal
    /// one needs `read`).
    pub(crate) fn plan(
        batch: &'a CommitBatch,
        by: Committer<'a>,
        read: Option<&mut InstanceRows>,
    ) -> StoreResult<Self> {
        let check = read.is_some();
        let mut unread = InstanceRows::new();
        let read = read.unwrap_or(&mut unread);
        let mut rows = Self {
            outcomes: Vec::with_capacity(batch.turns.len()),
            ..Self::default()
        };
        let mut turned = HashSet::with_capacity(batch.turns.len());
        for turn in &batch.turns {
            // A batch holds one turn per instance; a second one is refused.
            let allowed = turned.insert(turn.instance_id.as_str()) && (!check || may_commit(turn, read, by));
            if !allowed {
                rows.outcomes.push(TurnOutcome::Conflict);
                continue;
            }
            rows.turn(turn, by, read)?;
            rows.outcomes.push(TurnOutcome::Committed);
        }
        for completion in &batch.completions {
            rows.results.push(ResultRow {
                key: KeyRow::of(&completion.key),
                event: to_json(&completion.event)?,
            });
            rows.wake.orchestrations = true;
        }
        let written: Vec<bool> = rows
            .outcomes
            .iter()
            .map(|o| *o == TurnOutcome::Committed)
            .collect();
        for id in releases(batch, &written) {
            rows.releases.push(id.as_str());
            rows.wake.orchestrations = true;
        }
        Ok(rows)
    }

    /// Creates `instance` with its start message at `now`, unless a live
    /// instance has its id (in `read`); a terminal one is replaced. `read`
    /// learns the new row.
    pub(crate) fn create(
        &mut self,
        instance: &'a NewInstance,
        read: &mut InstanceRows,
        now: i64,
    ) -> StoreResult<CreateOutcome> {
        let id = instance.instance_id.as_str();
        if let Some(row) = read.get(id) {
            if !row.status.is_terminal() {
                return Ok(CreateOutcome::AlreadyExists(row.status));
            }
            self.replaced.push(id);
        }
        let creation = CreationRow::of(instance)?;
        if creation.start.visible_at <= now {
            self.wake.orchestrations = true;
        } else {
            self.wake.later = true;
        }
        self.creations.push(creation);
        self.wake.instances.push(&instance.instance_id);
        read.insert(id.to_owned(), InstanceRow::created());
        Ok(CreateOutcome::Created)
    }

    /// The rows of a turn that may be written; `read` learns the
    /// instance's new row.
    fn turn(&mut self, turn: &'a TurnCommit, by: Committer<'a>, read: &mut InstanceRows) -> StoreResult<()> {
        let id = turn.instance_id.as_str();
        self.wake.instances.push(&turn.instance_id);
        let Some(u) = &turn.update else {
            // Late messages of a terminal instance: drop them.
            self.consumed.extend(&turn.consumed);
            return Ok(());
        };
        let terminal = u.status.is_terminal();
        let keep = turn.keep_lease && !terminal;
        self.updates.push(UpdateRow {
            instance_id: id,
            version: i64_of(turn.version),
            status: u.status.as_str(),
            execution_id: &u.execution_id,
            input: u.input.as_ref().map(Payload::as_str),
            custom_status: u.custom_status.as_deref(),
            output: u.output.as_ref().map(Payload::as_str),
            failure: u.failure.as_ref().map(to_json).transpose()?,
            completed_at: terminal.then_some(by.now),
            history_len: i64_of(u.history_len),
            stream_seq: i64_of(u.stream_seq),
            execution_emits: i64_of(u.execution_emits),
            lock_owner: keep.then_some(by.owner),
            lock_expires: if keep { by.lease_until } else { 0 },
        });
        if let Some(row) = read.get_mut(id) {
            row.status = u.status;
            row.version += 1;
        }
        if turn.new_execution {
            self.new_executions.push(id);
        }
        for (i, event) in turn.history.iter().enumerate() {
            self.history.push(HistoryRow {
                instance_id: id,
                idx: i64_of(turn.history_index + i as u64),
                event: to_json(event)?,
            });
        }
        if terminal {
            // Nothing will consume them any more.
            self.terminal.push(id);
        } else {
            self.consumed.extend(&turn.consumed);
            self.done.extend(turn.completed_activities.iter().map(KeyRow::of));
            let (lock_owner, lock_expires, attempt) = if turn.claim_activities {
                (Some(by.owner), by.lease_until, 1)
            } else {
                (None, 0, 0)
            };
            for a in &turn.activities {
                self.activities.push(ActivityRow {
                    key: KeyRow::of(&a.key),
                    name: &a.name,
                    input: a.input.as_str(),
                    lock_owner,
                    lock_expires,
                    attempt,
                });
            }
            self.wake.activities |= !turn.claim_activities && !turn.activities.is_empty();
        }
        for m in messages_of(turn) {
            self.message(MessageRow::of(m)?, by.now);
        }
        for child in &turn.sub_orchestrations {
            if let CreateOutcome::AlreadyExists(status) = self.create(child, read, by.now)? {
                if let Some(message) = child_exists(child, status, by.now)? {
                    self.message(message, by.now);
                }
            }
        }
        self.stream
            .extend(turn.stream.iter().map(|e| StreamRow::of(id, e)));
        Ok(())
    }

    fn message(&mut self, message: MessageRow<'a>, now: i64) {
        if message.visible_at <= now {
            self.wake.orchestrations = true;
        } else {
            self.wake.later = true;
        }
        self.messages.push(message);
    }
}

/// What a purge of `instance_id` does, given its row (in `read`): only a
/// terminal instance is purged.
pub(crate) fn purge_outcome(read: &InstanceRows, instance_id: &str) -> PurgeOutcome {
    match read.get(instance_id) {
        None => PurgeOutcome::NotFound,
        Some(row) if !row.status.is_terminal() => PurgeOutcome::NotTerminal(row.status),
        Some(_) => PurgeOutcome::Purged,
    }
}

/// Whether `turn` may be written: the instance still has the version the
/// turn started from, and no other worker holds a live lease on it. A turn
/// that only drops the late messages of a terminal instance checks the
/// version alone: the instance may have been replaced since (a new
/// instance of the id starts again at version 0), and the messages the
/// turn read may be the new instance's.
fn may_commit(turn: &TurnCommit, read: &InstanceRows, by: Committer<'_>) -> bool {
    read.get(turn.instance_id.as_str()).is_some_and(|row| {
        row.version == turn.version
            && (turn.update.is_none()
                || row.lock_owner.as_deref() == Some(by.owner)
                || row.lock_expires <= by.now)
    })
}

/// The messages a turn writes. A turn that ends its instance (completed,
/// failed, terminated) writes none to the instance itself: nothing would
/// take them, and a timer merged into the turn from an earlier one would
/// outlive the instance and make a turn of whatever has its id later.
fn messages_of(turn: &TurnCommit) -> impl Iterator<Item = &NewMessage> {
    let terminal = turn.update.as_ref().is_some_and(|u| u.status.is_terminal());
    turn.messages
        .iter()
        .filter(move |m| !(terminal && m.instance_id == turn.instance_id))
}

/// The instances whose lease a batch gives up: those of its release list
/// without a turn it writes (`written[i]` for its turn `i`). A written
/// turn leaves the lease as it says (kept by the committing worker, or
/// given up), whatever was queued for release before the instance's turn
/// was redone.
fn releases<'a>(batch: &'a CommitBatch, written: &[bool]) -> Vec<&'a InstanceId> {
    let turned: HashSet<&InstanceId> = batch
        .turns
        .iter()
        .zip(written)
        .filter(|(_, w)| **w)
        .map(|(t, _)| &t.instance_id)
        .collect();
    batch.release.iter().filter(|id| !turned.contains(id)).collect()
}

/// The ids of the instances a batch's writes depend on: its turns' and the
/// sub-orchestrations they create.
pub(crate) fn batch_instance_ids(batch: &CommitBatch) -> Vec<&str> {
    let mut ids = Vec::new();
    for turn in &batch.turns {
        ids.push(turn.instance_id.as_str());
        ids.extend(turn.sub_orchestrations.iter().map(|c| c.instance_id.as_str()));
    }
    ids
}

/// The message that tells a parent its sub-orchestration could not start,
/// because an instance with its id exists and is `status`.
fn child_exists(child: &NewInstance, status: RuntimeStatus, now: i64) -> StoreResult<Option<MessageRow<'_>>> {
    let Some(parent) = &child.parent else {
        return Ok(None);
    };
    let event = HistoryEvent::SubOrchestrationFailed {
        id: parent.task_id,
        failure: crate::FailureDetails::new(
            "InstanceAlreadyExists",
            format!("instance '{}' already exists and is {status}", child.instance_id),
        ),
    };
    Ok(Some(MessageRow {
        instance_id: parent.instance_id.as_str(),
        execution_id: Some(&parent.execution_id),
        kind: event_kind(&event),
        event: to_json(&event)?,
        visible_at: now,
    }))
}

#[cfg(test)]
mod tests;
