//! The events a workflow run appends to its instance's stream, and its
//! live status.
//!
//! Every event is a [`WorkflowEvent`]: the stream event's name is the
//! variant's `type` tag and its payload the whole tagged JSON object, so
//! events round-trip through JSON. The live status (the instance's custom
//! status) is a [`LiveStatus`]: the superstep and the pending requests,
//! nothing else, so its size does not grow with the run.

use durable_core::{InstanceId, StreamEvent};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::WorkflowClientError;

/// One event of a workflow run's stream.
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
        output: Value,
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
        output: Value,
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
        request: Value,
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
        data: Value,
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
    /// The request.
    pub request: Value,
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
