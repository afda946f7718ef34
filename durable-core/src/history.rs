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
use serde::{de, Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::{InstanceId, Payload};

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
///
/// It is stored as a JSON object whose `type` names the variant, beside
/// the variant's fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
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
        input: Payload,
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
        input: Payload,
    },
    /// An activity returned a result.
    ActivityCompleted {
        /// The task id of the activity.
        id: u64,
        /// The result as JSON.
        result: Payload,
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
        input: Payload,
    },
    /// A sub-orchestration completed.
    SubOrchestrationCompleted {
        /// The task id of the sub-orchestration.
        id: u64,
        /// Its output as JSON.
        result: Payload,
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
        data: Payload,
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
        output: Payload,
    },
    /// The execution failed.
    ExecutionFailed {
        /// What went wrong.
        failure: FailureDetails,
    },
    /// The execution ended by continuing as new with this input.
    ContinuedAsNew {
        /// The input of the next execution.
        input: Payload,
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

impl<'de> Deserialize<'de> for HistoryEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Stored::deserialize(deserializer)?.into_event()
    }
}

/// A [`HistoryEvent`] as stored, read field by field. serde reads an
/// internally tagged enum by buffering its fields first, which a
/// [`Payload`] (raw JSON text) cannot be read from; a plain struct reads
/// each field straight from the JSON.
#[derive(Deserialize)]
struct Stored {
    #[serde(rename = "type")]
    kind: String,
    id: Option<u64>,
    name: Option<String>,
    execution_id: Option<String>,
    instance_id: Option<InstanceId>,
    #[serde(default, deserialize_with = "some_payload")]
    input: Option<Payload>,
    #[serde(default, deserialize_with = "some_payload")]
    result: Option<Payload>,
    #[serde(default, deserialize_with = "some_payload")]
    data: Option<Payload>,
    #[serde(default, deserialize_with = "some_payload")]
    output: Option<Payload>,
    parent: Option<ParentInstance>,
    timestamp: Option<DateTime<Utc>>,
    fire_at: Option<DateTime<Utc>>,
    failure: Option<FailureDetails>,
    reason: Option<String>,
}

/// A payload field that is present, `null` included. The runtime wrote
/// it, having checked it when it was made.
fn some_payload<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Payload>, D::Error> {
    Payload::deserialize_stored(deserializer).map(Some)
}

/// Field `name` of a stored event, which its variant requires.
fn field<T, E: de::Error>(value: Option<T>, name: &'static str) -> Result<T, E> {
    value.ok_or_else(|| E::missing_field(name))
}

impl Stored {
    const KINDS: &'static [&'static str] = &[
        "ExecutionStarted",
        "OrchestratorStarted",
        "ActivityScheduled",
        "ActivityCompleted",
        "ActivityFailed",
        "TimerCreated",
        "TimerFired",
        "SubOrchestrationScheduled",
        "SubOrchestrationCompleted",
        "SubOrchestrationFailed",
        "EventRaised",
        "ExecutionSuspended",
        "ExecutionResumed",
        "ExecutionTerminated",
        "ExecutionCompleted",
        "ExecutionFailed",
        "ContinuedAsNew",
    ];

    fn into_event<E: de::Error>(self) -> Result<HistoryEvent, E> {
        use HistoryEvent as H;
        let Self {
            kind,
            id,
            name,
            execution_id,
            instance_id,
            input,
            result,
            data,
            output,
            parent,
            timestamp,
            fire_at,
            failure,
            reason,
        } = self;
        Ok(match kind.as_str() {
            "ExecutionStarted" => H::ExecutionStarted {
                name: field(name, "name")?,
                execution_id: field(execution_id, "execution_id")?,
                input: field(input, "input")?,
                parent,
            },
            "OrchestratorStarted" => H::OrchestratorStarted {
                timestamp: field(timestamp, "timestamp")?,
            },
            "ActivityScheduled" => H::ActivityScheduled {
                id: field(id, "id")?,
                name: field(name, "name")?,
                input: field(input, "input")?,
            },
            "ActivityCompleted" => H::ActivityCompleted {
                id: field(id, "id")?,
                result: field(result, "result")?,
            },
            "ActivityFailed" => H::ActivityFailed {
                id: field(id, "id")?,
                failure: field(failure, "failure")?,
            },
            "TimerCreated" => H::TimerCreated {
                id: field(id, "id")?,
                fire_at: field(fire_at, "fire_at")?,
            },
            "TimerFired" => H::TimerFired {
                id: field(id, "id")?,
                fire_at: field(fire_at, "fire_at")?,
            },
            "SubOrchestrationScheduled" => H::SubOrchestrationScheduled {
                id: field(id, "id")?,
                name: field(name, "name")?,
                instance_id: field(instance_id, "instance_id")?,
                input: field(input, "input")?,
            },
            "SubOrchestrationCompleted" => H::SubOrchestrationCompleted {
                id: field(id, "id")?,
                result: field(result, "result")?,
            },
            "SubOrchestrationFailed" => H::SubOrchestrationFailed {
                id: field(id, "id")?,
                failure: field(failure, "failure")?,
            },
            "EventRaised" => H::EventRaised {
                name: field(name, "name")?,
                data: field(data, "data")?,
            },
            "ExecutionSuspended" => H::ExecutionSuspended { reason },
            "ExecutionResumed" => H::ExecutionResumed { reason },
            "ExecutionTerminated" => H::ExecutionTerminated { reason },
            "ExecutionCompleted" => H::ExecutionCompleted {
                output: field(output, "output")?,
            },
            "ExecutionFailed" => H::ExecutionFailed {
                failure: field(failure, "failure")?,
            },
            "ContinuedAsNew" => H::ContinuedAsNew {
                input: field(input, "input")?,
            },
            other => return Err(E::unknown_variant(other, Self::KINDS)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kind() -> Vec<HistoryEvent> {
        let at = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.678Z")
            .unwrap()
            .with_timezone(&Utc);
        let payload = |text: &str| Payload::from_text(text).unwrap();
        let failure = FailureDetails::new("Boom", "it broke");
        vec![
            HistoryEvent::ExecutionStarted {
                name: "hello".into(),
                execution_id: "e1".into(),
                input: payload(r#"["Tokyo"]"#),
                parent: Some(ParentInstance {
                    instance_id: InstanceId::new("parent").unwrap(),
                    execution_id: "p1".into(),
                    task_id: 4,
                }),
            },
            HistoryEvent::ExecutionStarted {
                name: "hello".into(),
                execution_id: "e1".into(),
                input: payload("null"),
                parent: None,
            },
            HistoryEvent::OrchestratorStarted { timestamp: at },
            HistoryEvent::ActivityScheduled {
                id: 0,
                name: "say_hello".into(),
                input: payload(r#"{"city":"Tokyo","n":[1,2.5,null]}"#),
            },
            HistoryEvent::ActivityCompleted {
                id: 0,
                result: payload(r#""Hello, Tokyo!""#),
            },
            HistoryEvent::ActivityFailed {
                id: 1,
                failure: failure.clone(),
            },
            HistoryEvent::TimerCreated { id: 2, fire_at: at },
            HistoryEvent::TimerFired { id: 2, fire_at: at },
            HistoryEvent::SubOrchestrationScheduled {
                id: 3,
                name: "child".into(),
                instance_id: InstanceId::new("child-1").unwrap(),
                input: payload("7"),
            },
            HistoryEvent::SubOrchestrationCompleted {
                id: 3,
                result: payload("true"),
            },
            HistoryEvent::SubOrchestrationFailed {
                id: 4,
                failure: failure.clone(),
            },
            HistoryEvent::EventRaised {
                name: "approval".into(),
                data: payload(r#"{"ok":false}"#),
            },
            HistoryEvent::ExecutionSuspended {
                reason: Some("pause".into()),
            },
            HistoryEvent::ExecutionResumed { reason: None },
            HistoryEvent::ExecutionTerminated { reason: None },
            HistoryEvent::ExecutionCompleted {
                output: payload("[]"),
            },
            HistoryEvent::ExecutionFailed { failure },
            HistoryEvent::ContinuedAsNew { input: payload("{}") },
        ]
    }

    #[test]
    fn history_events_round_trip_through_json() {
        let events = every_kind();
        let json = serde_json::to_string(&events).unwrap();
        let back: Vec<HistoryEvent> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, events);
        // Read from a parsed value too, payloads and all.
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let back: Vec<HistoryEvent> = serde_json::from_value(value).unwrap();
        assert_eq!(back, events);
    }

    #[test]
    fn a_stored_event_is_read_as_written() {
        let text = r#"{"type":"ActivityScheduled","id":5,"name":"a","input":{"b": [1, 2]}}"#;
        let event: HistoryEvent = serde_json::from_str(text).unwrap();
        let HistoryEvent::ActivityScheduled { id, name, input } = &event else {
            panic!("read as {event:?}");
        };
        assert_eq!((*id, name.as_str(), input.as_str()), (5, "a", r#"{"b": [1, 2]}"#));
        // Fields the variant does not have are ignored, as before.
        let text = r#"{"extra":1,"type":"ExecutionResumed"}"#;
        let event: HistoryEvent = serde_json::from_str(text).unwrap();
        assert_eq!(event, HistoryEvent::ExecutionResumed { reason: None });
    }

    #[test]
    fn a_stored_event_without_its_fields_or_of_an_unknown_type_is_refused() {
        for (text, error) in [
            (
                r#"{"type":"ActivityScheduled","id":5,"name":"a"}"#,
                "missing field `input`",
            ),
            (r#"{"type":"ActivityCompleted","result":1}"#, "missing field `id`"),
            (r#"{"type":"TimerFired","id":1}"#, "missing field `fire_at`"),
            (r#"{"type":"Exploded","id":1}"#, "unknown variant `Exploded`"),
            (r#"{"id":1,"result":2}"#, "missing field `type`"),
            (
                r#"{"type":"ActivityCompleted","id":1,"result":}"#,
                "expected value",
            ),
        ] {
            let err = serde_json::from_str::<HistoryEvent>(text)
                .unwrap_err()
                .to_string();
            assert!(err.contains(error), "{text}: {err}");
        }
    }

    #[test]
    fn describe_names_the_step() {
        let ev = HistoryEvent::ActivityScheduled {
            id: 3,
            name: "charge".into(),
            input: Payload::null(),
        };
        assert_eq!(ev.describe(), "activity 'charge' (task 3)");
        assert_eq!(
            HistoryEvent::EventRaised {
                name: "x".into(),
                data: Payload::null()
            }
            .describe(),
            "EventRaised"
        );
    }
}
