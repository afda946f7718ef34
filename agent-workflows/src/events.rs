//! The events a workflow run appends to its instance's stream, and its
//! live status.
//!
//! Every event is a [`WorkflowEvent`]: the stream event's name is the
//! variant's `type` tag and its payload the whole tagged JSON object, so
//! events round-trip through JSON. The live status (the instance's custom
//! status) is a [`LiveStatus`]: the superstep and the pending requests,
//! nothing else, so its size does not grow with the run.

use durable_core::{InstanceId, Payload, StreamEvent};
use serde::{Deserialize, Deserializer, Serialize};

use crate::payload_fields::{field, present};
use crate::WorkflowClientError;

/// One event of a workflow run's stream.
///
/// The values executors produce (outputs, requests, custom event data)
/// are [`Payload`]s: the JSON text as the executor's type serialized it,
/// read with [`Payload::parse`].
///
/// ```
/// use agent_workflows::WorkflowEvent;
///
/// let event = WorkflowEvent::SuperstepCompleted { superstep: 3 };
/// let json = serde_json::to_string(&event).unwrap();
/// assert_eq!(json, r#"{"type":"superstep_completed","superstep":3}"#);
/// assert_eq!(serde_json::from_str::<WorkflowEvent>(&json).unwrap(), event);
/// assert_eq!(event.name(), "superstep_completed");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum WorkflowEvent {
    /// The run began.
    WorkflowStarted {
        /// The workflow's registered name.
        workflow: String,
        /// The start executor.
        start_executor: String,
        /// The superstep limit.
        max_supersteps: u32,
    },
    /// A superstep began; these executors run in it, in parallel.
    SuperstepStarted {
        /// The superstep (1 for the first).
        superstep: u32,
        /// The executors that run in it.
        executors: Vec<String>,
    },
    /// An executor was invoked with one message.
    ExecutorInvoked {
        /// The superstep.
        superstep: u32,
        /// The executor.
        executor_id: String,
        /// The message's type.
        message_type: String,
        /// The sender (`"$start"` for the run's input, `"$response"` for
        /// an answer to a request).
        source: String,
    },
    /// An executor's handler returned, with its output.
    ExecutorCompleted {
        /// The superstep.
        superstep: u32,
        /// The executor.
        executor_id: String,
        /// What the handler returned (`null` for `()`).
        output: Payload,
    },
    /// An executor's attempt failed.
    ExecutorFailed {
        /// The superstep.
        superstep: u32,
        /// The executor.
        executor_id: String,
        /// The attempt that failed (1 for the first).
        attempt: u32,
        /// The error.
        error: String,
        /// Whether the retry policy retries it.
        will_retry: bool,
    },
    /// An executor yielded an output of the workflow.
    WorkflowOutput {
        /// The superstep.
        superstep: u32,
        /// The executor.
        executor_id: String,
        /// The output.
        output: Payload,
    },
    /// An executor asked for information; the request is pending until it
    /// is answered (or times out).
    RequestInfo {
        /// The superstep.
        superstep: u32,
        /// The request id, to answer it by.
        request_id: String,
        /// The executor that asked.
        executor_id: String,
        /// The request port.
        port: String,
        /// The request.
        request: Payload,
        /// The timeout in milliseconds, if any.
        timeout_ms: Option<u64>,
    },
    /// A request was answered; the answer goes to its executor in the next
    /// superstep.
    RequestAnswered {
        /// The request id.
        request_id: String,
        /// The executor that asked.
        executor_id: String,
    },
    /// An answer did not fit the request port's response type; the request
    /// stays pending.
    ResponseRejected {
        /// The request id.
        request_id: String,
        /// Why the answer was rejected.
        error: String,
    },
    /// A request timed out; its executor gets the timeout as its answer.
    RequestTimedOut {
        /// The request id.
        request_id: String,
        /// The executor that asked.
        executor_id: String,
    },
    /// A custom event added by an executor.
    CustomEvent {
        /// The superstep.
        superstep: u32,
        /// The executor.
        executor_id: String,
        /// The name the executor gave it.
        name: String,
        /// Its data.
        data: Payload,
    },
    /// A superstep ended.
    SuperstepCompleted {
        /// The superstep.
        superstep: u32,
    },
    /// A sub-workflow run started at a node.
    SubWorkflowStarted {
        /// The superstep.
        superstep: u32,
        /// The node running the sub-workflow.
        executor_id: String,
        /// The sub-workflow's instance id.
        instance_id: String,
    },
    /// An event of a sub-workflow run, tagged with its origin.
    SubWorkflowEvent {
        /// The node running the sub-workflow.
        executor_id: String,
        /// The sub-workflow's instance id.
        instance_id: String,
        /// The sub-workflow's event.
        event: Box<WorkflowEvent>,
    },
    /// The run completed: no message and no request is pending.
    WorkflowCompleted {
        /// The number of supersteps run.
        supersteps: u32,
        /// The number of workflow outputs.
        outputs: usize,
    },
    /// The run failed.
    WorkflowFailed {
        /// The superstep it failed in.
        superstep: u32,
        /// Why.
        error: String,
    },
}

impl WorkflowEvent {
    /// The event's `type` tag, also its stream event name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::WorkflowStarted { .. } => "workflow_started",
            Self::SuperstepStarted { .. } => "superstep_started",
            Self::ExecutorInvoked { .. } => "executor_invoked",
            Self::ExecutorCompleted { .. } => "executor_completed",
            Self::ExecutorFailed { .. } => "executor_failed",
            Self::WorkflowOutput { .. } => "workflow_output",
            Self::RequestInfo { .. } => "request_info",
            Self::RequestAnswered { .. } => "request_answered",
            Self::ResponseRejected { .. } => "response_rejected",
            Self::RequestTimedOut { .. } => "request_timed_out",
            Self::CustomEvent { .. } => "custom_event",
            Self::SuperstepCompleted { .. } => "superstep_completed",
            Self::SubWorkflowStarted { .. } => "sub_workflow_started",
            Self::SubWorkflowEvent { .. } => "sub_workflow_event",
            Self::WorkflowCompleted { .. } => "workflow_completed",
            Self::WorkflowFailed { .. } => "workflow_failed",
        }
    }
}

impl<'de> Deserialize<'de> for WorkflowEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        EventFields::deserialize(deserializer)?.into_event()
    }
}

/// The fields of every [`WorkflowEvent`] variant, to read one by its tag
/// (see [`crate::tagged`]).
#[derive(Deserialize)]
struct EventFields {
    #[serde(rename = "type")]
    kind: String,
    workflow: Option<String>,
    start_executor: Option<String>,
    max_supersteps: Option<u32>,
    superstep: Option<u32>,
    supersteps: Option<u32>,
    executors: Option<Vec<String>>,
    executor_id: Option<String>,
    message_type: Option<String>,
    source: Option<String>,
    #[serde(default, deserialize_with = "present")]
    output: Option<Payload>,
    outputs: Option<usize>,
    attempt: Option<u32>,
    error: Option<String>,
    will_retry: Option<bool>,
    request_id: Option<String>,
    port: Option<String>,
    #[serde(default, deserialize_with = "present")]
    request: Option<Payload>,
    timeout_ms: Option<u64>,
    name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    data: Option<Payload>,
    instance_id: Option<String>,
    event: Option<Box<WorkflowEvent>>,
}

impl EventFields {
    const KINDS: &'static [&'static str] = &[
        "workflow_started",
        "superstep_started",
        "executor_invoked",
        "executor_completed",
        "executor_failed",
        "workflow_output",
        "request_info",
        "request_answered",
        "response_rejected",
        "request_timed_out",
        "custom_event",
        "superstep_completed",
        "sub_workflow_started",
        "sub_workflow_event",
        "workflow_completed",
        "workflow_failed",
    ];

    fn into_event<E: serde::de::Error>(self) -> Result<WorkflowEvent, E> {
        use WorkflowEvent as W;
        let Self {
            kind,
            workflow,
            start_executor,
            max_supersteps,
            superstep,
            supersteps,
            executors,
            executor_id,
            message_type,
            source,
            output,
            outputs,
            attempt,
            error,
            will_retry,
            request_id,
            port,
            request,
            timeout_ms,
            name,
            data,
            instance_id,
            event,
        } = self;
        Ok(match kind.as_str() {
            "workflow_started" => W::WorkflowStarted {
                workflow: field(workflow, "workflow")?,
                start_executor: field(start_executor, "start_executor")?,
                max_supersteps: field(max_supersteps, "max_supersteps")?,
            },
            "superstep_started" => W::SuperstepStarted {
                superstep: field(superstep, "superstep")?,
                executors: field(executors, "executors")?,
            },
            "executor_invoked" => W::ExecutorInvoked {
                superstep: field(superstep, "superstep")?,
                executor_id: field(executor_id, "executor_id")?,
                message_type: field(message_type, "message_type")?,
                source: field(source, "source")?,
            },
            "executor_completed" => W::ExecutorCompleted {
                superstep: field(superstep, "superstep")?,
                executor_id: field(executor_id, "executor_id")?,
                output: field(output, "output")?,
            },
            "executor_failed" => W::ExecutorFailed {
                superstep: field(superstep, "superstep")?,
                executor_id: field(executor_id, "executor_id")?,
                attempt: field(attempt, "attempt")?,
                error: field(error, "error")?,
                will_retry: field(will_retry, "will_retry")?,
            },
            "workflow_output" => W::WorkflowOutput {
                superstep: field(superstep, "superstep")?,
                executor_id: field(executor_id, "executor_id")?,
                output: field(output, "output")?,
            },
            "request_info" => W::RequestInfo {
                superstep: field(superstep, "superstep")?,
                request_id: field(request_id, "request_id")?,
                executor_id: field(executor_id, "executor_id")?,
                port: field(port, "port")?,
                request: field(request, "request")?,
                timeout_ms,
            },
            "request_answered" => W::RequestAnswered {
                request_id: field(request_id, "request_id")?,
                executor_id: field(executor_id, "executor_id")?,
            },
            "response_rejected" => W::ResponseRejected {
                request_id: field(request_id, "request_id")?,
                error: field(error, "error")?,
            },
            "request_timed_out" => W::RequestTimedOut {
                request_id: field(request_id, "request_id")?,
                executor_id: field(executor_id, "executor_id")?,
            },
            "custom_event" => W::CustomEvent {
                superstep: field(superstep, "superstep")?,
                executor_id: field(executor_id, "executor_id")?,
                name: field(name, "name")?,
                data: field(data, "data")?,
            },
            "superstep_completed" => W::SuperstepCompleted {
                superstep: field(superstep, "superstep")?,
            },
            "sub_workflow_started" => W::SubWorkflowStarted {
                superstep: field(superstep, "superstep")?,
                executor_id: field(executor_id, "executor_id")?,
                instance_id: field(instance_id, "instance_id")?,
            },
            "sub_workflow_event" => W::SubWorkflowEvent {
                executor_id: field(executor_id, "executor_id")?,
                instance_id: field(instance_id, "instance_id")?,
                event: field(event, "event")?,
            },
            "workflow_completed" => W::WorkflowCompleted {
                supersteps: field(supersteps, "supersteps")?,
                outputs: field(outputs, "outputs")?,
            },
            "workflow_failed" => W::WorkflowFailed {
                superstep: field(superstep, "superstep")?,
                error: field(error, "error")?,
            },
            other => return Err(E::unknown_variant(other, Self::KINDS)),
        })
    }
}

/// A [`WorkflowEvent`] read from the stream, with its place in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequencedEvent {
    /// The instance.
    pub instance_id: InstanceId,
    /// The sequence number (1 for the first event).
    pub seq: u64,
    /// The event.
    pub event: WorkflowEvent,
}

impl SequencedEvent {
    /// Decodes a stream event.
    ///
    /// # Errors
    ///
    /// [`WorkflowClientError::InvalidEvent`] if it is not a workflow event.
    pub fn from_stream(event: &StreamEvent) -> Result<Self, WorkflowClientError> {
        let decoded =
            event
                .payload
                .parse::<WorkflowEvent>()
                .map_err(|e| WorkflowClientError::InvalidEvent {
                    instance_id: event.instance_id.clone(),
                    seq: event.seq,
                    message: e.to_string(),
                })?;
        Ok(Self {
            instance_id: event.instance_id.clone(),
            seq: event.seq,
            event: decoded,
        })
    }
}

/// A request waiting for an answer, as the live status lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingRequest {
    /// The request id, to answer it by.
    pub request_id: String,
    /// The executor that asked.
    pub executor_id: String,
    /// The request, as the live status (the instance's custom status,
    /// held as a parsed `serde_json::Value`) gives it back: the same value
    /// as the `request_info` event's, but its text may order object keys
    /// differently, so compare the two parsed, not by text.
    pub request: Payload,
    /// How many answers the run has rejected so far for not fitting the
    /// response type. A request takes one answer at a time: the next one
    /// goes to this round ([`WorkflowClient::respond`](crate::WorkflowClient::respond)
    /// reads it here).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub rejected_answers: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The live status of a run (its instance's custom status): the superstep
/// and the pending requests, nothing else.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LiveStatus {
    /// The current superstep (0 before the first).
    pub superstep: u32,
    /// The requests waiting for an answer.
    pub pending_requests: Vec<PendingRequest>,
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn payload(text: &str) -> Payload {
        Payload::from_text(text).unwrap()
    }

    fn every_kind() -> Vec<WorkflowEvent> {
        let step = |n| WorkflowEvent::SuperstepCompleted { superstep: n };
        vec![
            WorkflowEvent::WorkflowStarted {
                workflow: "docs".into(),
                start_executor: "unpack".into(),
                max_supersteps: 100,
            },
            WorkflowEvent::SuperstepStarted {
                superstep: 1,
                executors: vec!["a".into(), "b".into()],
            },
            WorkflowEvent::ExecutorInvoked {
                superstep: 1,
                executor_id: "a".into(),
                message_type: "app::Doc".into(),
                source: "$start".into(),
            },
            WorkflowEvent::ExecutorCompleted {
                superstep: 1,
                executor_id: "a".into(),
                output: payload(r#"{"z":1,"a":[true,null,2.5],"big":18446744073709551616}"#),
            },
            WorkflowEvent::ExecutorCompleted {
                superstep: 1,
                executor_id: "b".into(),
                output: Payload::null(),
            },
            WorkflowEvent::ExecutorFailed {
                superstep: 2,
                executor_id: "a".into(),
                attempt: 1,
                error: "boom".into(),
                will_retry: true,
            },
            WorkflowEvent::WorkflowOutput {
                superstep: 2,
                executor_id: "a".into(),
                output: payload(r#""done \u00e9""#),
            },
            WorkflowEvent::RequestInfo {
                superstep: 2,
                request_id: "a:2:0".into(),
                executor_id: "a".into(),
                port: "approval".into(),
                request: payload(r#"{"title":"Q3"}"#),
                timeout_ms: Some(500),
            },
            WorkflowEvent::RequestInfo {
                superstep: 2,
                request_id: "a:2:1".into(),
                executor_id: "a".into(),
                port: "approval".into(),
                request: Payload::null(),
                timeout_ms: None,
            },
            WorkflowEvent::RequestAnswered {
                request_id: "a:2:0".into(),
                executor_id: "a".into(),
            },
            WorkflowEvent::ResponseRejected {
                request_id: "a:2:0".into(),
                error: "not a bool".into(),
            },
            WorkflowEvent::RequestTimedOut {
                request_id: "a:2:1".into(),
                executor_id: "a".into(),
            },
            WorkflowEvent::CustomEvent {
                superstep: 3,
                executor_id: "a".into(),
                name: "progress".into(),
                data: payload("[1,2]"),
            },
            step(3),
            WorkflowEvent::SubWorkflowStarted {
                superstep: 3,
                executor_id: "child".into(),
                instance_id: "run:child:3:0".into(),
            },
            WorkflowEvent::SubWorkflowEvent {
                executor_id: "child".into(),
                instance_id: "run:child:3:0".into(),
                event: Box::new(WorkflowEvent::WorkflowOutput {
                    superstep: 1,
                    executor_id: "inner".into(),
                    output: payload(r#"{"k":"v"}"#),
                }),
            },
            WorkflowEvent::WorkflowCompleted {
                supersteps: 3,
                outputs: 1,
            },
            WorkflowEvent::WorkflowFailed {
                superstep: 3,
                error: "max supersteps".into(),
            },
        ]
    }

    #[test]
    fn every_kind_reads_back_from_text_and_from_a_value() {
        let events = every_kind();
        let named: std::collections::BTreeSet<_> = events.iter().map(WorkflowEvent::name).collect();
        assert_eq!(named.len(), EventFields::KINDS.len(), "every kind is listed");
        for event in events {
            let text = serde_json::to_string(&event).unwrap();
            let read: WorkflowEvent = serde_json::from_str(&text).unwrap();
            assert_eq!(read, event, "{text}");
            assert_eq!(
                serde_json::to_string(&read).unwrap(),
                text,
                "the payloads keep their text"
            );
            let value: Value = serde_json::from_str(&text).unwrap();
            let from_value: WorkflowEvent = serde_json::from_value(value.clone()).unwrap();
            assert_eq!(serde_json::to_value(&from_value).unwrap(), value, "{text}");
            assert_eq!(value["type"], event.name());
        }
    }

    #[test]
    fn an_event_without_a_field_of_its_kind_or_of_an_unknown_kind_is_refused() {
        let missing = json!({ "type": "executor_completed", "superstep": 1, "executor_id": "a" });
        let error = serde_json::from_value::<WorkflowEvent>(missing).unwrap_err();
        assert!(error.to_string().contains("missing field `output`"), "{error}");
        let unknown = json!({ "type": "executor_exploded", "superstep": 1 });
        let error = serde_json::from_value::<WorkflowEvent>(unknown).unwrap_err();
        assert!(
            error.to_string().contains("unknown variant `executor_exploded`"),
            "{error}"
        );
        let error = serde_json::from_str::<WorkflowEvent>(r#"{"superstep":1}"#).unwrap_err();
        assert!(error.to_string().contains("missing field `type`"), "{error}");
    }

    #[test]
    fn a_payload_a_value_cannot_hold_is_refused() {
        let text = r#"{"type":"workflow_output","superstep":1,"executor_id":"a","output":1e400}"#;
        assert!(serde_json::from_str::<WorkflowEvent>(text).is_err());
    }
}
