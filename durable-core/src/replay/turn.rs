//! One turn, in its phases: the messages it takes, applied to the runner
//! in arrival order; what the code did, as stream rows and scheduled work;
//! and how the execution closes (goes on, ends, or continues as new).

use std::collections::VecDeque;

use chrono::{DateTime, Utc};

use super::{is_control, Outcome, Runner};
use crate::context::{Action, PendingEmit};
use crate::store::{
    ActivityCompletion, ActivityKey, InboxMessage, InstanceState, InstanceUpdate, MessageSource, NewActivity,
    NewInstance, NewMessage, NewStreamEvent, OrchestrationWorkItem, TurnCommit,
};
use crate::{FailureDetails, HistoryEvent, InstanceId, ParentInstance, Payload, RuntimeStatus};

/// What a turn produced: the commit, the runner if its execution goes on,
/// the local activity results the turn could not consume (they go to the
/// instance's inbox instead), and those it took: if the turn is not
/// written, they go to the inbox too (the commit's history may not hold
/// them: a result for a task no code waits on any more, or a turn that
/// continued as new, records none).
#[derive(Debug)]
pub(crate) struct TurnResult {
    pub(crate) commit: TurnCommit,
    pub(crate) runner: Option<Runner>,
    pub(crate) deferred: Vec<ActivityCompletion>,
    pub(crate) taken: Vec<ActivityCompletion>,
}

/// The instance's state once `commit` is written.
pub(crate) fn state_after(commit: &TurnCommit, name: &str) -> Option<InstanceState> {
    let update = commit.update.as_ref()?;
    Some(InstanceState {
        name: name.to_owned(),
        execution_id: update.execution_id.clone(),
        status: update.status,
        version: commit.version + 1,
        history_len: update.history_len,
        stream_seq: update.stream_seq,
        execution_emits: update.execution_emits,
        custom_status: update.custom_status.clone(),
    })
}

/// Runs one turn of `item` on `runner` (already replayed, or new).
pub(crate) fn run_turn(mut runner: Runner, item: OrchestrationWorkItem, now: DateTime<Utc>) -> TurnResult {
    let OrchestrationWorkItem {
        instance_id,
        state,
        messages,
    } = item;
    let now = turn_time(&runner, now);
    let mut turn = Turn::new(instance_id, state, runner.history_len, now);
    if turn.status.is_terminal() {
        // Late messages for a finished instance: drop them.
        for message in &messages {
            turn.consume(message);
        }
        return turn.result(None);
    }
    turn.apply_messages(&mut runner, messages);
    let output = runner.ctx.lock().take_turn_output();
    turn.stream(output.emits, &output.execution_id);
    turn.schedule(&runner, output.actions, &output.execution_id);
    turn.close(
        runner,
        output.name,
        output.execution_id,
        output.execution_emits,
        output.custom_status,
    )
}

/// The turn's time: whole milliseconds (what stores keep), never before
/// the instance's last turn. Turns of one millisecond share it: forcing
/// each a new one would run an instance that takes more than one turn per
/// millisecond ahead of the clock, and its timers late.
fn turn_time(runner: &Runner, now: DateTime<Utc>) -> DateTime<Utc> {
    let last = runner.ctx.lock().now;
    DateTime::from_timestamp_millis(now.timestamp_millis())
        .unwrap_or(now)
        .max(last)
}

/// A turn being built.
struct Turn {
    instance_id: InstanceId,
    /// The instance as the turn found it.
    state: InstanceState,
    now: DateTime<Utc>,
    /// The status as the messages taken so far leave it.
    status: RuntimeStatus,
    commit: TurnCommit,
    /// The history events the turn appends.
    history: Vec<HistoryEvent>,
    /// Results handed over in memory that wait (they go to the inbox).
    deferred: Vec<ActivityCompletion>,
    /// Results handed over in memory that the turn took.
    taken: Vec<ActivityCompletion>,
}

impl Turn {
    fn new(instance_id: InstanceId, state: InstanceState, history_len: u64, now: DateTime<Utc>) -> Self {
        let commit = TurnCommit {
            instance_id: instance_id.clone(),
            version: state.version,
            consumed: Vec::new(),
            completed_activities: Vec::new(),
            new_execution: false,
            history: Vec::new(),
            history_index: history_len,
            update: None,
            activities: Vec::new(),
            claim_activities: false,
            keep_lease: false,
            messages: Vec::new(),
            sub_orchestrations: Vec::new(),
            stream: Vec::new(),
        };
        Self {
            instance_id,
            status: state.status,
            state,
            now,
            commit,
            history: Vec::new(),
            deferred: Vec::new(),
            taken: Vec::new(),
        }
    }

    /// Records `message` as taken by the turn: an inbox row to delete, or
    /// a result handed over in memory (its work item to delete), kept
    /// whole in `taken` for the case that the turn is not written.
    fn consume(&mut self, message: &InboxMessage) {
        match &message.source {
            MessageSource::Inbox(id) => self.commit.consumed.push(*id),
            MessageSource::Activity(key) => {
                self.commit.completed_activities.push(key.clone());
                self.taken.push(ActivityCompletion {
                    key: key.clone(),
                    event: message.event.clone(),
                });
            }
        }
    }

    fn result(self, runner: Option<Runner>) -> TurnResult {
        TurnResult {
            commit: self.commit,
            runner,
            deferred: self.deferred,
            taken: self.taken,
        }
    }

    /// Applies `messages` to the runner in arrival order: control
    /// operations change the status, what waits (for a resume, or for the
    /// next execution) stays in the inbox, and the rest reaches the code.
    fn apply_messages(&mut self, runner: &mut Runner, mut messages: Vec<InboxMessage>) {
        if !runner.is_started() {
            // Control operations first (a suspended instance does not start
            // until it is resumed), then the start, then what the execution
            // receives.
            messages.sort_by_key(|m| match m.event {
                HistoryEvent::ExecutionSuspended { .. }
                | HistoryEvent::ExecutionResumed { .. }
                | HistoryEvent::ExecutionTerminated { .. } => 0,
                HistoryEvent::ExecutionStarted { .. } => 1,
                _ => 2,
            });
        }
        let mut queue: VecDeque<InboxMessage> = messages.into();
        // Messages that wait (for a resume, or for the next execution).
        let mut waiting: Vec<InboxMessage> = Vec::new();
        while let Some(message) = queue.pop_front() {
            if let MessageSource::Activity(key) = &message.source {
                if runner
                    .ctx
                    .lock()
                    .waits_for_other_call(key.task_id, key.fingerprint)
                {
                    // The result of a call a turn that was not written made;
                    // the task was scheduled again, for another call, by the
                    // redo. Its work item was never written: nothing to delete.
                    tracing::debug!(instance = %self.instance_id, task = key.task_id, "dropped the result of another call of the task");
                    continue;
                }
            }
            let waits = (self.status == RuntimeStatus::Suspended && !is_control(&message.event))
                // Raised events wait for the next execution after continue-as-new.
                || (matches!(runner.outcome, Some(Outcome::ContinuedAsNew(..)))
                    && matches!(message.event, HistoryEvent::EventRaised { .. }));
            if waits {
                waiting.push(message);
                continue;
            }
            self.consume(&message);
            if runner.outcome.is_some() {
                continue;
            }
            if message
                .execution_id
                .as_ref()
                .is_some_and(|e| *e != self.state.execution_id)
            {
                continue; // addressed to an earlier execution
            }
            match &message.event {
                HistoryEvent::ExecutionStarted { .. } if runner.is_started() => continue,
                HistoryEvent::ExecutionStarted { .. } => {
                    self.commit.new_execution = true;
                    self.status = RuntimeStatus::Running;
                }
                HistoryEvent::ExecutionSuspended { .. }
                    if matches!(self.status, RuntimeStatus::Running | RuntimeStatus::Pending) =>
                {
                    self.status = RuntimeStatus::Suspended;
                }
                HistoryEvent::ExecutionResumed { .. } if self.status == RuntimeStatus::Suspended => {
                    self.status = RuntimeStatus::Running;
                    // What arrived while suspended comes next, in its order.
                    for waited in waiting.drain(..).rev() {
                        queue.push_front(waited);
                    }
                }
                HistoryEvent::ExecutionSuspended { .. } | HistoryEvent::ExecutionResumed { .. } => continue,
                _ => {}
            }
            if !runner.is_started()
                && matches!(
                    message.event,
                    HistoryEvent::ExecutionSuspended { .. } | HistoryEvent::ExecutionResumed { .. }
                )
            {
                // No execution yet to record it in: the status says it all.
                continue;
            }
            if self.history.is_empty() {
                let started = HistoryEvent::OrchestratorStarted { timestamp: self.now };
                runner.apply(&started);
                self.history.push(started);
            }
            if runner.apply(&message.event) {
                self.history.push(message.event);
            }
        }
        for message in waiting {
            // It stays in the inbox (a local activity result goes there).
            if let MessageSource::Activity(key) = message.source {
                self.deferred.push(ActivityCompletion {
                    key,
                    event: message.event,
                });
            }
        }
    }

    /// The stream events the code emitted, numbered after the instance's.
    fn stream(&mut self, emits: Vec<PendingEmit>, execution_id: &str) {
        let first = self.state.stream_seq + 1;
        self.commit.stream = emits
            .into_iter()
            .enumerate()
            .map(|(i, e)| NewStreamEvent {
                seq: first + i as u64,
                execution_id: execution_id.to_owned(),
                emit_index: e.emit_index,
                name: e.name,
                payload: e.payload,
                emitted_at: e.emitted_at,
            })
            .collect();
    }

    /// Records the work the code scheduled in history and, unless the
    /// execution has ended, as work items, timers and sub-orchestrations.
    fn schedule(&mut self, runner: &Runner, actions: Vec<Action>, execution_id: &str) {
        self.history.extend(actions.iter().map(Action::to_history));
        if runner.outcome.is_some() {
            return;
        }
        let (instance_id, now) = (&self.instance_id, self.now);
        for action in actions {
            match action {
                Action::Activity {
                    id,
                    name,
                    input,
                    fingerprint,
                } => self.commit.activities.push(NewActivity {
                    key: ActivityKey {
                        instance_id: instance_id.clone(),
                        execution_id: execution_id.to_owned(),
                        task_id: id,
                        fingerprint,
                    },
                    name,
                    input,
                }),
                Action::Timer { id, fire_at } => self.commit.messages.push(NewMessage {
                    instance_id: instance_id.clone(),
                    execution_id: Some(execution_id.to_owned()),
                    event: HistoryEvent::TimerFired { id, fire_at },
                    visible_at: fire_at,
                }),
                Action::SubOrchestration {
                    id,
                    name,
                    instance_id: child,
                    input,
                } => self.commit.sub_orchestrations.push(NewInstance {
                    instance_id: child,
                    name,
                    execution_id: uuid::Uuid::new_v4().simple().to_string(),
                    input,
                    parent: Some(ParentInstance {
                        instance_id: instance_id.clone(),
                        execution_id: execution_id.to_owned(),
                        task_id: id,
                    }),
                    start_at: now,
                    created_at: now,
                }),
            }
        }
    }

    /// Closes the turn: the instance row after it, and, if the execution
    /// ended, its last history event, the parent's result and, for a
    /// continue-as-new, the next execution's start. The runner goes on
    /// only with its execution.
    fn close(
        mut self,
        mut runner: Runner,
        name: String,
        execution_id: String,
        execution_emits: u64,
        custom_status: Option<String>,
    ) -> TurnResult {
        let mut update = InstanceUpdate {
            status: self.status,
            execution_id,
            input: None,
            custom_status: custom_status.or(self.state.custom_status.take()),
            output: None,
            failure: None,
            history_len: 0,
            stream_seq: self.state.stream_seq + self.commit.stream.len() as u64,
            execution_emits,
        };
        if self.commit.new_execution {
            update.input = self.history.iter().find_map(|e| match e {
                HistoryEvent::ExecutionStarted { input, .. } => Some(input.clone()),
                _ => None,
            });
        }
        let keep_runner = match runner.outcome.clone() {
            None => true,
            Some(Outcome::Completed(output)) => {
                self.history.push(HistoryEvent::ExecutionCompleted {
                    output: output.clone(),
                });
                update.status = RuntimeStatus::Completed;
                update.output = Some(output.clone());
                self.tell_parent(&runner.parent, |id| HistoryEvent::SubOrchestrationCompleted {
                    id,
                    result: output,
                });
                false
            }
            Some(Outcome::Failed(failure)) => {
                self.history.push(HistoryEvent::ExecutionFailed {
                    failure: failure.clone(),
                });
                update.status = RuntimeStatus::Failed;
                update.failure = Some(failure.clone());
                self.tell_parent(&runner.parent, |id| HistoryEvent::SubOrchestrationFailed {
                    id,
                    failure,
                });
                false
            }
            Some(Outcome::Terminated(reason)) => {
                update.status = RuntimeStatus::Terminated;
                // The reason as a JSON string, or null (neither can fail).
                update.output = Some(Payload::new(&reason).unwrap_or_else(|_| Payload::null()));
                let failure = FailureDetails::new(
                    "Terminated",
                    reason.unwrap_or_else(|| "the instance was terminated".into()),
                );
                self.tell_parent(&runner.parent, |id| HistoryEvent::SubOrchestrationFailed {
                    id,
                    failure,
                });
                false
            }
            Some(Outcome::ContinuedAsNew(input, options)) => {
                let next = uuid::Uuid::new_v4().simple().to_string();
                self.commit.messages.push(NewMessage {
                    instance_id: self.instance_id.clone(),
                    execution_id: Some(next.clone()),
                    event: HistoryEvent::ExecutionStarted {
                        name,
                        execution_id: next.clone(),
                        input: input.clone(),
                        parent: runner.parent.clone(),
                    },
                    visible_at: self.now,
                });
                if options.preserves_unprocessed_events() {
                    // Raised events the execution took but no wait did: back
                    // to the inbox for the next execution, in their order and
                    // before any still there, which arrived after them (a
                    // message is taken in the order of its visible time). The
                    // next execution starts before it takes them.
                    for (name, data) in runner.ctx.take_unprocessed_events() {
                        self.commit.messages.push(NewMessage {
                            instance_id: self.instance_id.clone(),
                            execution_id: None,
                            event: HistoryEvent::EventRaised { name, data },
                            visible_at: DateTime::<Utc>::default(),
                        });
                    }
                }
                // The old execution's history is dropped; the stream goes on.
                self.commit.new_execution = true;
                self.commit.history_index = 0;
                self.history.clear();
                update.execution_id = next;
                update.input = Some(input);
                update.status = RuntimeStatus::Running;
                update.execution_emits = 0;
                false
            }
        };
        update.history_len = self.commit.history_index + self.history.len() as u64;
        runner.history_len = update.history_len;
        self.commit.history = std::mem::take(&mut self.history);
        self.commit.update = Some(update);
        self.result(keep_runner.then_some(runner))
    }

    /// Sends a sub-orchestration's parent (if any) the event `event` makes
    /// of the parent's task id.
    fn tell_parent(&mut self, parent: &Option<ParentInstance>, event: impl FnOnce(u64) -> HistoryEvent) {
        if let Some(p) = parent {
            self.commit.messages.push(NewMessage {
                instance_id: p.instance_id.clone(),
                execution_id: Some(p.execution_id.clone()),
                event: event(p.task_id),
                visible_at: self.now,
            });
        }
    }
}
