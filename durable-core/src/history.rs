//! The event-sourced history of an orchestration execution.
//!
//! Every turn of an orchestration appends history events; replaying them
//! through the orchestration code rebuilds its state. Messages that reach an
//! instance (activity results, fired timers, raised events, control
//! operations) are history events too: a turn consumes them from the inbox
//! and appends them to the history it replays.
//!
//! Stream events are *not* history: they live in their own table so that a
//! long stream never slows replay.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::InstanceId;

/// Why an orchestration, an activity or a sub-orchestration failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureDetails {
    /// A short classification of the failure, such as the Rust type name of
    /// the error or `"NonDeterminism"`.
    pub error_type: String,
    /// The human-readable error message.
    pub message: String,
}

impl FailureDetails {
    /// Builds failure details from a type and a message.
    pub fn new(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error_type: error_type.into(),
            message: message.into(),
        }
    }

    /// Failure details for an error value, classified by its type name.
    pub fn from_error<E: std::fmt::Display>(error: &E) -> Self {
        let full = std::any::type_name::<E>();
        let short = full.rsplit("::").next().unwrap_or(full);
        Self::new(short, error.to_string())
    }
}

impl std::fmt::Display for FailureDetails {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error_type, self.message)
    }
}

/// The parent of a sub-orchestration, told its result when it ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentInstance {
    /// The parent's instance id.
    pub instance_id: InstanceId,
    /// The parent's execution that scheduled the sub-orchestration.
    pub execution_id: String,
    /// The task id of the sub-orchestration in the parent's history.
    pub task_id: u64,
}

/// One event of an orchestration's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
#[non_exhaustive]
pub enum HistoryEvent {
    /// An execution began with this input.
    ExecutionStarted {
        /// The orchestration name.
        name: String,
        /// The execution id (new for every continue-as-new).
        execution_id: String,
        /// The input as JSON.
        input: Value,
        /// The parent, for a sub-orchestration.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent: Option<ParentInstance>,
    },
    /// A turn began; its timestamp is the orchestration's current time.
    OrchestratorStarted {
        /// When the turn began.
        timestamp: DateTime<Utc>,
    },
    /// The orchestration scheduled an activity.
    ActivityScheduled {
        /// The task id.
        id: u64,
        /// The activity name.
        name: String,
        /// The input as JSON.
        input: Value,
    },
    /// An activity returned a result.
    ActivityCompleted {
        /// The task id of the activity.
        id: u64,
        /// The result as JSON.
        result: Value,
    },
    /// An activity returned an error.
    ActivityFailed {
        /// The task id of the activity.
        id: u64,
        /// What went wrong.
        failure: FailureDetails,
    },
    /// The orchestration created a durable timer.
    TimerCreated {
        /// The task id.
        id: u64,
        /// When the timer fires.
        fire_at: DateTime<Utc>,
    },
    /// A durable timer fired.
    TimerFired {
        /// The task id of the timer.
        id: u64,
        /// When the timer was due.
        fire_at: DateTime<Utc>,
    },
    /// The orchestration started a sub-orchestration.
    SubOrchestrationScheduled {
        /// The task id.
        id: u64,
        /// The sub-orchestration's name.
        name: String,
        /// The sub-orchestration's instance id.
        instance_id: InstanceId,
        /// The input as JSON.
        input: Value,
    },
    /// A sub-orchestration completed.
    SubOrchestrationCompleted {
        /// The task id of the sub-orchestration.
        id: u64,
        /// Its output as JSON.
        result: Value,
    },
    /// A sub-orchestration failed.
    SubOrchestrationFailed {
        /// The task id of the sub-orchestration.
        id: u64,
        /// What went wrong.
        failure: FailureDetails,
    },
    /// A client raised an external event.
    EventRaised {
        /// The event name.
        name: String,
        /// The event data as JSON.
        data: Value,
    },
    /// A client suspended the instance.
    ExecutionSuspended {
        /// Why.
        #[serde(default)]
        reason: Option<String>,
    },
    /// A client resumed the instance.
    ExecutionResumed {
        /// Why.
        #[serde(default)]
        reason: Option<String>,
    },
    /// A client terminated the instance.
    ExecutionTerminated {
        /// Why.
        #[serde(default)]
        reason: Option<String>,
    },
    /// The execution completed with an output.
    ExecutionCompleted {
        /// The output as JSON.
        output: Value,
    },
    /// The execution failed.
    ExecutionFailed {
        /// What went wrong.
        failure: FailureDetails,
    },
    /// The execution ended by continuing as new with this input.
    ContinuedAsNew {
        /// The input of the next execution.
        input: Value,
    },
}

impl HistoryEvent {
    /// The task id a scheduling or completion event refers to.
    pub fn task_id(&self) -> Option<u64> {
        match self {
            Self::ActivityScheduled { id, .. }
            | Self::ActivityCompleted { id, .. }
            | Self::ActivityFailed { id, .. }
            | Self::TimerCreated { id, .. }
            | Self::TimerFired { id, .. }
            | Self::SubOrchestrationScheduled { id, .. }
            | Self::SubOrchestrationCompleted { id, .. }
            | Self::SubOrchestrationFailed { id, .. } => Some(*id),
            _ => None,
        }
    }

    /// Whether the orchestration code produced this event by scheduling work
    /// (checked against the code on replay).
    pub fn is_scheduling(&self) -> bool {
        matches!(
            self,
            Self::ActivityScheduled { .. }
                | Self::TimerCreated { .. }
                | Self::SubOrchestrationScheduled { .. }
        )
    }

    /// A short description used in non-determinism errors.
    pub fn describe(&self) -> String {
        match self {
            Self::ActivityScheduled { id, name, .. } => format!("activity '{name}' (task {id})"),
            Self::TimerCreated { id, .. } => format!("timer (task {id})"),
            Self::SubOrchestrationScheduled { id, name, .. } => {
                format!("sub-orchestration '{name}' (task {id})")
            }
            other => {
                let json = serde_json::to_value(other).unwrap_or(Value::Null);
                json.get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("event")
                    .to_owned()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_events_round_trip_through_json() {
        let events = vec![
            HistoryEvent::ExecutionStarted {
                name: "hello".into(),
                execution_id: "e1".into(),
                input: serde_json::json!(["Tokyo"]),
                parent: None,
            },
            HistoryEvent::ActivityScheduled {
                id: 0,
                name: "say_hello".into(),
                input: serde_json::json!("Tokyo"),
            },
            HistoryEvent::ActivityFailed {
                id: 0,
                failure: FailureDetails::new("Boom", "it broke"),
            },
            HistoryEvent::ExecutionTerminated { reason: None },
        ];
        let json = serde_json::to_string(&events).unwrap();
        let back: Vec<HistoryEvent> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, events);
    }

    #[test]
    fn describe_names_the_step() {
        let ev = HistoryEvent::ActivityScheduled {
            id: 3,
            name: "charge".into(),
            input: Value::Null,
        };
        assert_eq!(ev.describe(), "activity 'charge' (task 3)");
        assert_eq!(
            HistoryEvent::EventRaised {
                name: "x".into(),
                data: Value::Null
            }
            .describe(),
            "EventRaised"
        );
    }
}
