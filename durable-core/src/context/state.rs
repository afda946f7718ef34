//! The state behind an orchestration context: the tasks it scheduled and
//! their results, the events it waits for, and what the code did in the
//! current turn.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::task::Waker;

use chrono::{DateTime, Utc};

use super::{ContinueAsNewOptions, Limits};
use crate::{FailureDetails, HistoryEvent, InstanceId, Payload};

/// Work the orchestration code asked for in this turn.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    Activity {
        id: u64,
        name: String,
        input: Payload,
        /// The call's fingerprint ([`call_fingerprint`](crate::store::call_fingerprint)).
        fingerprint: u64,
    },
    Timer {
        id: u64,
        fire_at: DateTime<Utc>,
    },
    SubOrchestration {
        id: u64,
        name: String,
        instance_id: InstanceId,
        input: Payload,
    },
}

impl Action {
    pub(crate) fn to_history(&self) -> HistoryEvent {
        match self.clone() {
            Self::Activity { id, name, input, .. } => HistoryEvent::ActivityScheduled { id, name, input },
            Self::Timer { id, fire_at } => HistoryEvent::TimerCreated { id, fire_at },
            Self::SubOrchestration {
                id,
                name,
                instance_id,
                input,
            } => HistoryEvent::SubOrchestrationScheduled {
                id,
                name,
                instance_id,
                input,
            },
        }
    }

    pub(super) fn set_id(&mut self, task_id: u64) {
        match self {
            Self::Activity { id, .. } | Self::Timer { id, .. } | Self::SubOrchestration { id, .. } => {
                *id = task_id
            }
        }
    }

    /// Whether replaying this action matches the scheduling event recorded
    /// in history.
    pub(super) fn matches(&self, recorded: &HistoryEvent) -> bool {
        match (self, recorded) {
            (Self::Activity { name, .. }, HistoryEvent::ActivityScheduled { name: n, .. }) => name == n,
            (Self::Timer { .. }, HistoryEvent::TimerCreated { .. }) => true,
            (
                Self::SubOrchestration { name, .. },
                HistoryEvent::SubOrchestrationScheduled { name: n, .. },
            ) => name == n,
            _ => false,
        }
    }
}

/// A stream event emitted in this turn, not yet stored.
#[derive(Debug, Clone)]
pub(crate) struct PendingEmit {
    pub(crate) emit_index: u64,
    pub(crate) name: String,
    pub(crate) payload: Payload,
    pub(crate) emitted_at: DateTime<Utc>,
}

/// What a scheduled task is, to build the right error when it fails.
#[derive(Debug, Clone)]
pub(super) enum TaskKind {
    Activity(String),
    Timer,
    SubOrchestration(String, InstanceId),
}

#[derive(Debug)]
pub(super) struct Waiter {
    pub(super) name: String,
    pub(super) delivered: Option<Payload>,
    pub(super) waker: Option<Waker>,
}

/// What orchestration code did in a turn ([`State::take_turn_output`]).
#[derive(Debug)]
pub(crate) struct TurnOutput {
    /// The work it scheduled, in order.
    pub(crate) actions: Vec<Action>,
    /// The stream events it emitted.
    pub(crate) emits: Vec<PendingEmit>,
    /// The stream events of the execution so far.
    pub(crate) execution_emits: u64,
    pub(crate) custom_status: Option<String>,
    /// The orchestration's name.
    pub(crate) name: String,
    pub(crate) execution_id: String,
}

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) instance_id: InstanceId,
    pub(crate) execution_id: String,
    pub(crate) name: String,
    pub(crate) now: DateTime<Utc>,
    pub(crate) replaying: bool,
    pub(super) limits: Limits,
    pub(super) next_task_id: u64,
    /// Scheduling events of the history not yet matched by the code.
    pub(crate) expected: BTreeMap<u64, HistoryEvent>,
    /// Tasks scheduled and not yet completed.
    pub(super) open_tasks: HashSet<u64>,
    /// The fingerprints of the activity calls among them
    /// ([`call_fingerprint`](crate::store::call_fingerprint)).
    pub(super) activity_calls: HashMap<u64, u64>,
    pub(super) results: HashMap<u64, Result<Payload, FailureDetails>>,
    pub(super) wakers: HashMap<u64, Waker>,
    /// Events raised before anyone waited for them, in arrival order.
    pub(super) buffered_events: VecDeque<(String, Payload)>,
    pub(super) waiters: BTreeMap<u64, Waiter>,
    pub(super) next_waiter_id: u64,
    pub(crate) actions: Vec<Action>,
    pub(crate) custom_status: Option<String>,
    pub(crate) custom_status_changed: bool,
    pub(super) next_emit_index: u64,
    pub(super) persisted_emits: u64,
    pub(crate) emits: Vec<PendingEmit>,
    pub(super) guid_counter: u64,
    /// The input of the next execution and its options, once the code
    /// continued as new.
    pub(crate) continue_as_new: Option<(Payload, ContinueAsNewOptions)>,
    pub(crate) fatal: Option<FailureDetails>,
}

impl State {
    pub(super) fn schedule(&mut self, mut action: Action) -> u64 {
        let id = self.next_task_id;
        self.next_task_id += 1;
        action.set_id(id);
        self.open_tasks.insert(id);
        if let Action::Activity { fingerprint, .. } = &action {
            self.activity_calls.insert(id, *fingerprint);
        }
        match self.expected.remove(&id) {
            Some(recorded) if action.matches(&recorded) => {}
            Some(recorded) => {
                self.fail_non_determinism(format!(
                    "history has {} but the code scheduled {}",
                    recorded.describe(),
                    action.to_history().describe()
                ));
            }
            None => self.actions.push(action),
        }
        id
    }

    pub(crate) fn fail_non_determinism(&mut self, message: String) {
        if self.fatal.is_none() {
            self.fatal = Some(FailureDetails::new(
                "NonDeterminism",
                format!("non-deterministic orchestration '{}': {message}", self.name),
            ));
        }
    }

    /// Delivers a task result; false if no open task has this id.
    pub(crate) fn complete_task(&mut self, id: u64, result: Result<Payload, FailureDetails>) -> bool {
        if !self.open_tasks.remove(&id) {
            return false;
        }
        self.activity_calls.remove(&id);
        self.results.insert(id, result);
        if let Some(waker) = self.wakers.remove(&id) {
            waker.wake();
        }
        true
    }

    pub(crate) fn raise_event(&mut self, name: String, data: Payload) {
        let waiter = self
            .waiters
            .values_mut()
            .find(|w| w.name == name && w.delivered.is_none());
        match waiter {
            Some(w) => {
                w.delivered = Some(data);
                if let Some(waker) = w.waker.take() {
                    waker.wake();
                }
            }
            None => self.buffered_events.push_back((name, data)),
        }
    }

    /// Whether task `id` waits for an activity call other than the one of
    /// `fingerprint`: a result of that other call is not this task's.
    pub(crate) fn waits_for_other_call(&self, id: u64, fingerprint: u64) -> bool {
        self.activity_calls.get(&id).is_some_and(|f| *f != fingerprint)
    }

    /// Marks every emit so far as stored (after a commit).
    pub(super) fn emits_persisted(&mut self) {
        self.persisted_emits = self.next_emit_index;
    }

    /// At the end of a replay: the code must have emitted as many stream
    /// events as the stored stream holds for this execution. Otherwise it
    /// changed, and going on would store new events shifted against the
    /// stored ones (an event twice) or take new events for stored ones
    /// (an event lost): fail with the non-determinism error instead, and
    /// append nothing.
    pub(crate) fn check_replayed_emits(&mut self) {
        if self.next_emit_index != self.persisted_emits {
            let message = format!(
                "the stream holds {} event(s) of this execution but the code emitted {} on replay",
                self.persisted_emits, self.next_emit_index
            );
            self.emits.clear();
            self.next_emit_index = self.persisted_emits;
            self.fail_non_determinism(message);
        }
    }

    /// Takes what the code did since the last turn: the work it scheduled
    /// and the stream events it emitted (counted as stored from now on),
    /// with the names the turn's rows carry.
    pub(crate) fn take_turn_output(&mut self) -> TurnOutput {
        let output = TurnOutput {
            actions: std::mem::take(&mut self.actions),
            emits: std::mem::take(&mut self.emits),
            execution_emits: self.next_emit_index,
            custom_status: self.custom_status.clone(),
            name: self.name.clone(),
            execution_id: self.execution_id.clone(),
        };
        self.emits_persisted();
        output
    }

    /// The turn's time truncated to the millisecond, the precision stores
    /// keep (see [`OrchestrationContext::current_utc_datetime`]).
    pub(super) fn orchestration_time(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.now.timestamp_millis()).unwrap_or(self.now)
    }
}
