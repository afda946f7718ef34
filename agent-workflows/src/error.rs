//! Error types.
//!
//! * [`ExecutorError`]: what an executor's handler returns when it fails;
//!   retryable by default, or [terminal](ExecutorError::terminal).
//! * [`WorkflowError`]: why a workflow run failed (the failure of its
//!   orchestration instance).
//! * [`BuildError`]: why a graph is not a valid workflow.
//! * [`WorkflowClientError`]: what the [`WorkflowClient`](crate::WorkflowClient)
//!   returns.

use durable_core::InstanceId;
use serde::{Deserialize, Serialize};

/// An error returned by an executor's handler.
///
/// A [`Retryable`](ExecutorError::Retryable) error is retried as the
/// executor's retry policy says (no retries by default); a
/// [`Terminal`](ExecutorError::Terminal) one fails the run at once.
///
/// ```
/// use agent_workflows::ExecutorError;
///
/// let e = ExecutorError::retryable("the model timed out");
/// assert!(!e.is_terminal());
/// let e = ExecutorError::terminal("the document is empty");
/// assert!(e.is_terminal());
/// assert_eq!(e.to_string(), "the document is empty");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecutorError {
    /// A failure worth retrying.
    #[error("{0}")]
    Retryable(String),
    /// A failure that retrying cannot fix.
    #[error("{0}")]
    Terminal(String),
    /// A value could not be serialized or deserialized.
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A request for information was not answered in time.
    #[error(transparent)]
    RequestTimedOut(#[from] RequestTimedOut),
}

impl ExecutorError {
    /// A retryable error with this message.
    pub fn retryable(message: impl std::fmt::Display) -> Self {
        Self::Retryable(message.to_string())
    }

    /// A terminal error with this message: the run fails without retrying.
    pub fn terminal(message: impl std::fmt::Display) -> Self {
        Self::Terminal(message.to_string())
    }

    /// Whether retrying cannot help.
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Terminal(_) | Self::RequestTimedOut(_))
    }
}

impl From<String> for ExecutorError {
    fn from(message: String) -> Self {
        Self::Retryable(message)
    }
}

impl From<&str> for ExecutorError {
    fn from(message: &str) -> Self {
        Self::Retryable(message.to_owned())
    }
}

/// A request for information that timed out before anyone answered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("request '{request_id}' was not answered within {timeout_ms} ms")]
pub struct RequestTimedOut {
    /// The request id.
    pub request_id: String,
    /// The timeout, in milliseconds.
    pub timeout_ms: u64,
}

/// Why a workflow run failed. This is the failure of the run's
/// orchestration instance, and the `error` of its `workflow_failed` event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum WorkflowError {
    /// An executor failed after its retries.
    #[error("executor '{executor_id}' failed in superstep {superstep} after {attempts} attempt(s): {error}")]
    ExecutorFailed {
        /// The executor.
        executor_id: String,
        /// The superstep.
        superstep: u32,
        /// How many attempts were made.
        attempts: u32,
        /// The last error.
        error: String,
    },
    /// The run reached its superstep limit with work still pending.
    #[error(
        "workflow '{workflow}' reached its limit of {limit} supersteps with messages still pending for {pending:?}; \
         raise the limit with WorkflowBuilder::max_supersteps or make the loop end"
    )]
    MaxSuperstepsExceeded {
        /// The workflow name.
        workflow: String,
        /// The limit.
        limit: u32,
        /// The executors that still had messages.
        pending: Vec<String>,
    },
    /// Two executors wrote the same shared-state key in one superstep.
    #[error(
        "shared state key '{key}' was written by executors '{first}' and '{second}' in superstep {superstep}; \
         write each key from one executor per superstep"
    )]
    StateConflict {
        /// The key.
        key: String,
        /// The superstep.
        superstep: u32,
        /// The first writer.
        first: String,
        /// The second writer.
        second: String,
    },
    /// An executor sent a message to a target it has no edge to.
    #[error(
        "executor '{executor_id}' sent a message of type {message_type} to '{target}', but no edge from \
         '{executor_id}' leads to an executor of that id accepting that type"
    )]
    InvalidTarget {
        /// The sender.
        executor_id: String,
        /// The target id it named.
        target: String,
        /// The message type.
        message_type: String,
    },
    /// A message has a type no executor of the workflow handles: sent by
    /// an executor, or read back from a run stored by a build whose
    /// message types had other names.
    #[error(
        "executor '{executor_id}' sent a message of type `{message_type}`, which no executor of this workflow \
         handles; add an executor that handles it, or (for a run begun by another build) keep the type's name"
    )]
    UnknownMessageType {
        /// The sender.
        executor_id: String,
        /// The message's type name.
        message_type: String,
    },
    /// The orchestration runtime returned an error (such as a stream event
    /// or a live status over its size limit).
    #[error("runtime error: {0}")]
    Runtime(String),
}

impl From<durable_core::OrchestrationError> for WorkflowError {
    fn from(e: durable_core::OrchestrationError) -> Self {
        Self::Runtime(e.to_string())
    }
}

/// Why a graph is not a valid workflow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Two different executors have the same id.
    #[error(
        "two different executors have the id '{id}' ({first} and {second}); give one of them another id, \
         with #[executor(id = \"...\")] or ExecutorExt::with_id"
    )]
    DuplicateExecutorId {
        /// The id.
        id: String,
        /// The type of the first executor.
        first: &'static str,
        /// The type of the second executor.
        second: &'static str,
    },
    /// An executor id is empty or contains `/`.
    #[error("invalid executor id {id:?}: {reason}")]
    InvalidExecutorId {
        /// The id.
        id: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// A fan-in has no source.
    #[error("the fan-in into '{target}' has no source; add sources with FanIn::from")]
    EmptyFanIn {
        /// The fan-in's target.
        target: String,
    },
    /// The superstep limit is zero.
    #[error("max_supersteps must be at least 1")]
    ZeroSuperstepLimit,
    /// Two message types of the workflow have the same name. Messages are
    /// routed, and stored, by their type's name without its module path,
    /// so that moving a type to another module leaves stored runs
    /// readable; two types of one workflow must differ in it.
    #[error(
        "two message types of the workflow are both named `{tag}` ({first} and {second}); messages are routed \
         by the type's name without its module path: rename one of them"
    )]
    MessageTypeClash {
        /// The name they share.
        tag: &'static str,
        /// The first type, with its path.
        first: &'static str,
        /// The second type, with its path.
        second: &'static str,
    },
}

/// An error returned by the [`WorkflowClient`](crate::WorkflowClient).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkflowClientError {
    /// The durable-core client failed.
    #[error(transparent)]
    Core(#[from] durable_core::Error),
    /// No instance has this id.
    #[error("workflow instance '{0}' not found")]
    NotFound(InstanceId),
    /// The request is not pending: it was never made, or it has already
    /// been answered or timed out.
    #[error(
        "request '{request_id}' is not pending on workflow instance '{instance_id}'; \
         list the open requests with WorkflowClient::pending_requests"
    )]
    RequestNotPending {
        /// The instance.
        instance_id: InstanceId,
        /// The request id.
        request_id: String,
    },
    /// A value could not be serialized or deserialized.
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A stream event is not a workflow event.
    #[error("stream event {seq} of instance '{instance_id}' is not a workflow event: {message}")]
    InvalidEvent {
        /// The instance.
        instance_id: InstanceId,
        /// The sequence number.
        seq: u64,
        /// The decoding error.
        message: String,
    },
}
