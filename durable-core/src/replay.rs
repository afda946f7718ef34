//! Driving orchestration code from history, and turning one turn's work
//! into a [`TurnCommit`].
//!
//! A [`Runner`] owns an orchestration's future and its context. It applies
//! history events one at a time and polls the future after each one that
//! can wake it, so every run of the same history takes the same path. A
//! runner that survives a turn is kept by the worker (in memory) and
//! continues with the next turn's messages without replaying anything.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use crate::context::{Action, ContinueAsNewOptions, Limits};
use crate::store::{
    ActivityCompletion, ActivityKey, InboxMessage, InstanceState, InstanceUpdate, MessageSource, NewActivity,
    NewInstance, NewMessage, NewStreamEvent, OrchestrationWorkItem, TurnCommit,
};
use crate::{
    FailureDetails, HistoryEvent, InstanceId, OrchestrationContext, ParentInstance, Payload, Registry,
    RuntimeStatus,
};

/// How an execution ended.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    Completed(Payload),
    Failed(FailureDetails),
    ContinuedAsNew(Payload, ContinueAsNewOptions),
    Terminated(Option<String>),
}

/// An orchestration execution in memory.
pub(crate) struct Runner {
    registry: Arc<Registry>,
    ctx: OrchestrationContext,
    future: Option<BoxFuture<'static, Result<Payload, FailureDetails>>>,
    started: bool,
    parent: Option<ParentInstance>,
    pub(crate) outcome: Option<Outcome>,
    /// The number of history events this runner has applied and stored.
    pub(crate) history_len: u64,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("started", &self.started)
            .field("outcome", &self.outcome)
            .field("history_len", &self.history_len)
            .finish_non_exhaustive()
    }
}

impl Runner {
    /// A runner for an instance whose execution has not started yet.
    pub(crate) fn new(
        registry: Arc<Registry>,
        limits: Limits,
        instance_id: InstanceId,
        name: String,
        execution_id: String,
        persisted_emits: u64,
    ) -> Self {
        Self {
            registry,
            ctx: OrchestrationContext::new(instance_id, execution_id, name, limits, persisted_emits),
            future: None,
            started: false,
            parent: None,
            outcome: None,
            history_len: 0,
        }
    }

    /// Replays a stored history.
    pub(crate) fn replay(&mut self, history: Vec<HistoryEvent>) {
        {
            let mut state = self.ctx.lock();
            state.replaying = true;
            state.expected = history
                .iter()
                .filter(|e| e.is_scheduling())
                .filter_map(|e| Some((e.task_id()?, e.clone())))
                .collect();
        }
        self.history_len = history.len() as u64;
        for event in &history {
            if self.outcome.is_some() {
                break;
            }
            self.apply(event);
        }
        let mut state = self.ctx.lock();
        state.replaying = false;
        if self.outcome.is_none() {
            if let Some(missing) = state.expected.values().next().map(HistoryEvent::describe) {
                state.fail_non_determinism(format!("history has {missing} but the code did not schedule it"));
            }
            state.check_replayed_emits();
        }
        drop(state);
        self.check_fatal();
    }

    /// Ends the execution with a failure the runtime found, such as a
    /// history it cannot read, after `history_len` stored events.
    pub(crate) fn fail(&mut self, failure: FailureDetails, history_len: u64) {
        self.future = None;
        self.outcome = Some(Outcome::Failed(failure));
        self.history_len = history_len;
    }

    pub(crate) fn is_started(&self) -> bool {
        self.started
    }

    /// Applies one event; returns whether it belongs in the history.
    pub(crate) fn apply(&mut self, event: &HistoryEvent) -> bool {
        if self.outcome.is_some() {
            return false;
        }
        let delivered = match event {
            HistoryEvent::OrchestratorStarted { timestamp } => {
                self.ctx.lock().now = *timestamp;
                return true;
            }
            HistoryEvent::ExecutionStarted {
                name,
                execution_id,
                input,
                parent,
            } => {
                if self.started {
                    return false;
                }
                self.start(name.clone(), execution_id.clone(), input.clone(), parent.clone());
                true
            }
            HistoryEvent::ActivityCompleted { id, result }
            | HistoryEvent::SubOrchestrationCompleted { id, result } => {
                self.ctx.lock().complete_task(*id, Ok(result.clone()))
            }
            HistoryEvent::ActivityFailed { id, failure }
            | HistoryEvent::SubOrchestrationFailed { id, failure } => {
                self.ctx.lock().complete_task(*id, Err(failure.clone()))
            }
            HistoryEvent::TimerFired { id, .. } => self.ctx.lock().complete_task(*id, Ok(Payload::null())),
            HistoryEvent::EventRaised { name, data } => {
                self.ctx.lock().raise_event(name.clone(), data.clone());
                true
            }
            HistoryEvent::ExecutionTerminated { reason } => {
                self.future = None;
                self.outcome = Some(Outcome::Terminated(reason.clone()));
                return true;
            }
            // Only an inbox message the store could not read arrives as
            // this (see `store::sql::codec::message_event`); the turn records
            // the failure as the end of the execution.
            HistoryEvent::ExecutionFailed { failure } => {
                self.future = None;
                self.outcome = Some(Outcome::Failed(failure.clone()));
                return false;
            }
            // Recorded by the code itself (checked on replay), by the turn,
            // or by the end of an execution.
            _ => return true,
        };
        if delivered {
            self.poll();
        }
        delivered
    }

    fn start(&mut self, name: String, execution_id: String, input: Payload, parent: Option<ParentInstance>) {
        {
            let mut state = self.ctx.lock();
            state.name = name.clone();
            state.execution_id = execution_id;
        }
        self.started = true;
        self.parent = parent;
        match self.registry.orchestrations.get(&name) {
            Some(f) => self.future = Some(f(self.ctx.clone(), input)),
            None => {
                self.outcome = Some(Outcome::Failed(FailureDetails::new(
                    "UnknownOrchestration",
                    format!("no orchestration named '{name}' is registered with this worker"),
                )));
            }
        }
    }

    fn poll(&mut self) {
        let Some(future) = self.future.as_mut() else {
            return;
        };
        let mut cx = Context::from_waker(Waker::noop());
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx)));
        let result = match polled {
            Ok(Poll::Pending) => None,
            Ok(Poll::Ready(result)) => Some(result),
            Err(panic) => Some(Err(FailureDetails::new(
                "Panic",
                format!("orchestration panicked: {}", panic_message(panic.as_ref())),
            ))),
        };
        let continue_as_new = self.ctx.lock().continue_as_new.take();
        match (result, continue_as_new) {
            (Some(Err(failure)), _) => self.finish(Outcome::Failed(failure)),
            (_, Some((input, options))) => self.finish(Outcome::ContinuedAsNew(input, options)),
            (Some(Ok(output)), None) => self.finish(Outcome::Completed(output)),
            (None, None) => {}
        }
        self.check_fatal();
    }

    fn finish(&mut self, outcome: Outcome) {
        self.future = None;
        if self.outcome.is_none() {
            self.outcome = Some(outcome);
        }
    }

    fn check_fatal(&mut self) {
        let fatal = self.ctx.lock().fatal.take();
        if let Some(failure) = fatal {
            self.future = None;
            self.outcome = Some(Outcome::Failed(failure));
        }
    }
}

pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_owned()
    }
}

fn is_control(event: &HistoryEvent) -> bool {
    matches!(
        event,
        HistoryEvent::ExecutionResumed { .. } | HistoryEvent::ExecutionTerminated { .. }
    )
}

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
    let mut status = state.status;
    let base_len = runner.history_len;
    // Turn times are whole milliseconds (what stores keep) and never go
    // back from turn to turn of an instance. Turns of one millisecond share
    // it: forcing each a new one would run an instance that takes more than
    // one turn per millisecond ahead of the clock, and its timers late.
    let last = runner.ctx.lock().now;
    let now = DateTime::from_timestamp_millis(now.timestamp_millis())
        .unwrap_or(now)
        .max(last);
    let mut commit = TurnCommit {
        instance_id: instance_id.clone(),
        version: state.version,
        consumed: Vec::new(),
        completed_activities: Vec::new(),
        new_execution: false,
        history: Vec::new(),
        history_index: base_len,
        update: None,
        activities: Vec::new(),
        claim_activities: false,
        keep_lease: false,
        messages: Vec::new(),
        sub_orchestrations: Vec::new(),
        stream: Vec::new(),
    };
    let mut deferred = Vec::new();
    let mut taken = Vec::new();
    // Records a message as taken by the turn: an inbox row to delete, or a
    // result handed over in memory (its work item to delete), kept whole
    // in `taken` for the case that the turn is not written.
    let consume =
        |commit: &mut TurnCommit, taken: &mut Vec<ActivityCompletion>, message: &InboxMessage| match &message
            .source
        {
            MessageSource::Inbox(id) => commit.consumed.push(*id),
            MessageSource::Activity(key) => {
                commit.completed_activities.push(key.clone());
                taken.push(ActivityCompletion {
                    key: key.clone(),
                    event: message.event.clone(),
                });
            }
        };

    if status.is_terminal() {
        // Late messages for a finished instance: drop them.
        for message in &messages {
            consume(&mut commit, &mut taken, message);
        }
        return TurnResult {
            commit,
            runner: None,
            deferred,
            taken,
        };
    }

    let mut messages = messages;
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
    let mut history = Vec::new();
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
                tracing::debug!(instance = %instance_id, task = key.task_id, "dropped the result of another call of the task");
                continue;
            }
        }
        let waits = (status == RuntimeStatus::Suspended && !is_control(&message.event))
            // Raised events wait for the next execution after continue-as-new.
            || (matches!(runner.outcome, Some(Outcome::ContinuedAsNew(..)))
                && matches!(message.event, HistoryEvent::EventRaised { .. }));
        if waits {
            waiting.push(message);
            continue;
        }
        consume(&mut commit, &mut taken, &message);
        if runner.outcome.is_some() {
            continue;
        }
        if message
            .execution_id
            .as_ref()
            .is_some_and(|e| *e != state.execution_id)
        {
            continue; // addressed to an earlier execution
        }
        match &message.event {
            HistoryEvent::ExecutionStarted { .. } if runner.is_started() => continue,
            HistoryEvent::ExecutionStarted { .. } => {
                commit.new_execution = true;
                status = RuntimeStatus::Running;
            }
            HistoryEvent::ExecutionSuspended { .. }
                if matches!(status, RuntimeStatus::Running | RuntimeStatus::Pending) =>
            {
                status = RuntimeStatus::Suspended;
            }
            HistoryEvent::ExecutionResumed { .. } if status == RuntimeStatus::Suspended => {
                status = RuntimeStatus::Running;
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
        if history.is_empty() {
            let started = HistoryEvent::OrchestratorStarted { timestamp: now };
            runner.apply(&started);
            history.push(started);
        }
        if runner.apply(&message.event) {
            history.push(message.event);
        }
    }
    for message in waiting {
        // It stays in the inbox (a local activity result goes there).
        if let MessageSource::Activity(key) = message.source {
            deferred.push(ActivityCompletion {
                key,
                event: message.event,
            });
        }
    }

    let ctx = runner.ctx.clone();
    let mut cs = ctx.lock();
    let actions = std::mem::take(&mut cs.actions);
    let emits = std::mem::take(&mut cs.emits);
    cs.emits_persisted();
    let execution_emits = cs.emit_count();
    let custom_status = cs.custom_status.clone().or(state.custom_status);
    let name = cs.name.clone();
    let execution_id = cs.execution_id.clone();
    drop(cs);
    let parent = runner.parent.clone();

    commit.stream = emits
        .into_iter()
        .enumerate()
        .map(|(i, e)| NewStreamEvent {
            seq: state.stream_seq + 1 + i as u64,
            execution_id: execution_id.clone(),
            emit_index: e.emit_index,
            name: e.name,
            payload: e.payload,
            emitted_at: e.emitted_at,
        })
        .collect();
    let stream_seq = state.stream_seq + commit.stream.len() as u64;

    history.extend(actions.iter().map(Action::to_history));
    let terminal = runner.outcome.is_some();
    for action in actions {
        match action {
            Action::Activity {
                id,
                name,
                input,
                fingerprint,
            } if !terminal => commit.activities.push(NewActivity {
                key: ActivityKey {
                    instance_id: instance_id.clone(),
                    execution_id: execution_id.clone(),
                    task_id: id,
                    fingerprint,
                },
                name,
                input,
            }),
            Action::Timer { id, fire_at } if !terminal => commit.messages.push(NewMessage {
                instance_id: instance_id.clone(),
                execution_id: Some(execution_id.clone()),
                event: HistoryEvent::TimerFired { id, fire_at },
                visible_at: fire_at,
            }),
            Action::SubOrchestration {
                id,
                name,
                instance_id: child,
                input,
            } if !terminal => commit.sub_orchestrations.push(NewInstance {
                instance_id: child,
                name,
                execution_id: uuid::Uuid::new_v4().simple().to_string(),
                input,
                parent: Some(ParentInstance {
                    instance_id: instance_id.clone(),
                    execution_id: execution_id.clone(),
                    task_id: id,
                }),
                start_at: now,
                created_at: now,
            }),
            _ => {}
        }
    }

    let mut update = InstanceUpdate {
        status,
        execution_id: execution_id.clone(),
        input: None,
        custom_status,
        output: None,
        failure: None,
        history_len: 0,
        stream_seq,
        execution_emits,
    };
    if commit.new_execution {
        update.input = history.iter().find_map(|e| match e {
            HistoryEvent::ExecutionStarted { input, .. } => Some(input.clone()),
            _ => None,
        });
    }
    let parent_result = |event: HistoryEvent| -> Option<NewMessage> {
        parent.as_ref().map(|p| NewMessage {
            instance_id: p.instance_id.clone(),
            execution_id: Some(p.execution_id.clone()),
            event,
            visible_at: now,
        })
    };
    let parent_task = parent.as_ref().map_or(0, |p| p.task_id);
    let keep_runner = match runner.outcome.clone() {
        None => true,
        Some(Outcome::Completed(output)) => {
            history.push(HistoryEvent::ExecutionCompleted {
                output: output.clone(),
            });
            update.status = RuntimeStatus::Completed;
            update.output = Some(output.clone());
            commit
                .messages
                .extend(parent_result(HistoryEvent::SubOrchestrationCompleted {
                    id: parent_task,
                    result: output,
                }));
            false
        }
        Some(Outcome::Failed(failure)) => {
            history.push(HistoryEvent::ExecutionFailed {
                failure: failure.clone(),
            });
            update.status = RuntimeStatus::Failed;
            update.failure = Some(failure.clone());
            commit
                .messages
                .extend(parent_result(HistoryEvent::SubOrchestrationFailed {
                    id: parent_task,
                    failure,
                }));
            false
        }
        Some(Outcome::Terminated(reason)) => {
            update.status = RuntimeStatus::Terminated;
            // The reason as a JSON string, or null (neither can fail).
            update.output = Some(Payload::new(&reason).unwrap_or_else(|_| Payload::null()));
            commit
                .messages
                .extend(parent_result(HistoryEvent::SubOrchestrationFailed {
                    id: parent_task,
                    failure: FailureDetails::new(
                        "Terminated",
                        reason.unwrap_or_else(|| "the instance was terminated".into()),
                    ),
                }));
            false
        }
        Some(Outcome::ContinuedAsNew(input, options)) => {
            let next = uuid::Uuid::new_v4().simple().to_string();
            commit.messages.push(NewMessage {
                instance_id: instance_id.clone(),
                execution_id: Some(next.clone()),
                event: HistoryEvent::ExecutionStarted {
                    name: name.clone(),
                    execution_id: next.clone(),
                    input: input.clone(),
                    parent: parent.clone(),
                },
                visible_at: now,
            });
            if options.preserves_unprocessed_events() {
                // Raised events the execution took but no wait did: back
                // to the inbox for the next execution, in their order and
                // before any still there, which arrived after them (a
                // message is taken in the order of its visible time). The
                // next execution starts before it takes them.
                for (name, data) in runner.ctx.take_unprocessed_events() {
                    commit.messages.push(NewMessage {
                        instance_id: instance_id.clone(),
                        execution_id: None,
                        event: HistoryEvent::EventRaised { name, data },
                        visible_at: DateTime::<Utc>::default(),
                    });
                }
            }
            // The old execution's history is dropped; the stream goes on.
            commit.new_execution = true;
            commit.history_index = 0;
            history.clear();
            update.execution_id = next;
            update.input = Some(input);
            update.status = RuntimeStatus::Running;
            update.execution_emits = 0;
            false
        }
    };
    update.history_len = commit.history_index + history.len() as u64;
    runner.history_len = update.history_len;
    commit.history = history;
    commit.update = Some(update);
    TurnResult {
        commit,
        runner: keep_runner.then_some(runner),
        deferred,
        taken,
    }
}

/// Folds `later`, a turn of the same instance run after `earlier` and not
/// yet committed either, into `earlier`, so that both commit as one turn.
///
/// The result writes what the two turns would have written one after the
/// other, except that an activity scheduled by `earlier` whose result
/// `later` took never gets a work item: it is neither inserted nor deleted.
/// The version checked at commit is `earlier`'s; the instance row is
/// `later`'s.
pub(crate) fn merge_turns(earlier: &mut TurnCommit, later: TurnCommit) {
    let TurnCommit {
        instance_id: _,
        version: _,
        consumed,
        completed_activities,
        new_execution,
        history,
        history_index,
        update,
        activities,
        claim_activities: _,
        keep_lease,
        messages,
        sub_orchestrations,
        stream,
    } = later;
    earlier.consumed.extend(consumed);
    for key in completed_activities {
        let before = earlier.activities.len();
        earlier.activities.retain(|a| a.key != key);
        if earlier.activities.len() == before {
            // Its work item was written by an earlier commit.
            earlier.completed_activities.push(key);
        }
    }
    if new_execution {
        // Continue-as-new: the execution's history, `earlier`'s included,
        // is replaced.
        earlier.new_execution = true;
        earlier.history = history;
        earlier.history_index = history_index;
    } else {
        debug_assert_eq!(
            history_index,
            earlier.history_index + earlier.history.len() as u64,
            "turns merged out of order"
        );
        earlier.history.extend(history);
    }
    if update.is_some() {
        earlier.update = update;
    }
    earlier.activities.extend(activities);
    earlier.keep_lease = keep_lease;
    earlier.messages.extend(messages);
    earlier.sub_orchestrations.extend(sub_orchestrations);
    earlier.stream.extend(stream);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::call_fingerprint;

    fn key(task_id: u64) -> ActivityKey {
        ActivityKey {
            instance_id: InstanceId::new("merged").unwrap(),
            execution_id: "e1".into(),
            task_id,
            fingerprint: call_fingerprint("work", &Payload::new(&task_id).unwrap()),
        }
    }

    fn activity(task_id: u64) -> NewActivity {
        NewActivity {
            key: key(task_id),
            name: "work".into(),
            input: Payload::new(&task_id).unwrap(),
        }
    }

    fn completed(task_id: u64) -> HistoryEvent {
        HistoryEvent::ActivityCompleted {
            id: task_id,
            result: Payload::new(&task_id).unwrap(),
        }
    }

    fn turn(version: u64, history_index: u64, history: Vec<HistoryEvent>) -> TurnCommit {
        TurnCommit {
            instance_id: InstanceId::new("merged").unwrap(),
            version,
            consumed: Vec::new(),
            completed_activities: Vec::new(),
            new_execution: false,
            history,
            history_index,
            update: None,
            activities: Vec::new(),
            claim_activities: true,
            keep_lease: true,
            messages: Vec::new(),
            sub_orchestrations: Vec::new(),
            stream: Vec::new(),
        }
    }

    #[test]
    fn an_activity_scheduled_and_completed_in_one_merged_turn_leaves_no_work_item() {
        // The first turn took the result of task 0 (written earlier) and
        // scheduled task 1; the second took task 1's result and scheduled 2.
        let mut first = turn(3, 4, vec![completed(0)]);
        first.completed_activities.push(key(0));
        first.activities.push(activity(1));
        first.consumed.push(7);
        let mut second = turn(4, 5, vec![completed(1)]);
        second.completed_activities.push(key(1));
        second.activities.push(activity(2));
        second.consumed.push(8);
        second.keep_lease = false;
        merge_turns(&mut first, second);
        assert_eq!(first.version, 3, "the version checked is the first turn's");
        assert_eq!(first.history_index, 4);
        assert_eq!(first.history, vec![completed(0), completed(1)]);
        assert_eq!(
            first.completed_activities,
            vec![key(0)],
            "task 1 has no work item to delete"
        );
        let scheduled: Vec<u64> = first.activities.iter().map(|a| a.key.task_id).collect();
        assert_eq!(scheduled, [2], "task 1 gets no work item");
        assert_eq!(first.consumed, [7, 8]);
        assert!(!first.keep_lease, "the lease follows the last turn");
    }

    #[test]
    fn continue_as_new_in_a_merged_turn_replaces_the_history() {
        let mut first = turn(1, 0, vec![completed(0)]);
        first.new_execution = true;
        let mut second = turn(2, 0, Vec::new());
        second.new_execution = true;
        merge_turns(&mut first, second);
        assert!(first.new_execution);
        assert_eq!(first.history_index, 0);
        assert!(first.history.is_empty(), "the next execution starts from nothing");
    }
}
