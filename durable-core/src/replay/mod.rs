//! Driving orchestration code from history, and turning one turn's work
//! into a [`TurnCommit`].
//!
//! A [`Runner`] owns an orchestration's future and its context. It applies
//! history events one at a time and polls the future after each one that
//! can wake it, so every run of the same history takes the same path. A
//! runner that survives a turn is kept by the worker (in memory) and
//! continues with the next turn's messages without replaying anything.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use futures::future::BoxFuture;

use crate::context::{ContinueAsNewOptions, Limits};
use crate::{
    FailureDetails, HistoryEvent, InstanceId, OrchestrationContext, ParentInstance, Payload, Registry,
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

mod merge;
mod turn;

pub(crate) use merge::merge_turns;
pub(crate) use turn::{run_turn, state_after, TurnResult};
