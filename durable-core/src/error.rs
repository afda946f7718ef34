//! Error types.
//!
//! * [`Error`]: what the client and the worker return.
//! * [`OrchestrationError`]: what orchestration code gets back from the
//!   context (a failed activity, a timeout, a status that is too large).
//! * [`StoreError`]: what a storage backend returns; database errors stay
//!   inside the backend and surface only as a source.

use crate::{FailureDetails, InstanceId, InvalidInstanceId, RuntimeStatus};

/// A `Result` whose error defaults to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error returned by the [`Client`](crate::Client) or the
/// [`Worker`](crate::Worker).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The instance id is not valid.
    #[error(transparent)]
    InvalidInstanceId(#[from] InvalidInstanceId),
    /// No instance has this id.
    #[error("instance '{0}' not found")]
    InstanceNotFound(InstanceId),
    /// An instance with this id exists and is not terminal.
    #[error("instance '{0}' already exists and is not terminal")]
    InstanceAlreadyExists(InstanceId),
    /// The instance a watcher followed is gone and the id names another
    /// one now (it was purged, or ended, and the id started again): the
    /// watcher stops rather than go on with the other instance's stream.
    #[error("instance '{0}' was replaced by a new instance of the same id while it was watched")]
    InstanceReplaced(InstanceId),
    /// The operation does not apply to the instance in its current status.
    #[error("cannot {operation} instance '{instance_id}': it is {status}")]
    InvalidState {
        /// The instance.
        instance_id: InstanceId,
        /// Its status.
        status: RuntimeStatus,
        /// What was attempted.
        operation: &'static str,
    },
    /// An event of this name was already raised once to the instance's
    /// current execution ([`Client::raise_event_once`](crate::Client::raise_event_once)).
    #[error("event '{name}' was already raised once to instance '{instance_id}'")]
    EventAlreadyRaised {
        /// The instance.
        instance_id: InstanceId,
        /// The event name.
        name: String,
    },
    /// A value could not be serialized to or deserialized from JSON.
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// An argument is out of range or malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Two orchestrations or two activities were registered under one name.
    #[error("{kind} '{name}' is registered twice")]
    DuplicateRegistration {
        /// `"orchestration"` or `"activity"`.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// A wait did not finish in time.
    #[error("timed out waiting for instance '{0}'")]
    Timeout(InstanceId),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An error returned by a [`Store`](crate::store::Store).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database reported an error.
    #[error("database error: {0}")]
    Database(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Running the embedded migrations failed.
    #[error("migration failed: {0}")]
    Migration(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A write conflicted with data already stored (a uniqueness key).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database refused a value of the write as one it cannot store
    /// (a data error, such as a value over its size limit): the same
    /// write fails again however often it is tried, unlike a lost
    /// connection or a busy database.
    #[error("the database refused the data: {0}")]
    Rejected(String),
    /// Stored data could not be decoded.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The configuration of the store is invalid.
    #[error("invalid store configuration: {0}")]
    Config(String),
}

/// An error returned to orchestration code by the
/// [`OrchestrationContext`](crate::OrchestrationContext).
///
/// None of these errors fails the instance by itself: orchestration code
/// decides, usually by returning it with `?`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum OrchestrationError {
    /// An activity failed (after its retries, if it had a retry policy).
    #[error("activity '{name}' failed: {failure}")]
    ActivityFailed {
        /// The activity name.
        name: String,
        /// Why it failed.
        failure: FailureDetails,
    },
    /// A sub-orchestration failed.
    #[error("sub-orchestration '{name}' ({instance_id}) failed: {failure}")]
    SubOrchestrationFailed {
        /// The sub-orchestration name.
        name: String,
        /// Its instance id.
        instance_id: InstanceId,
        /// Why it failed.
        failure: FailureDetails,
    },
    /// A wait with a timeout timed out.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// The custom status is larger than the configured cap.
    #[error("custom status is too large: {size} bytes, the limit is {limit} bytes ({measure})")]
    CustomStatusTooLarge {
        /// The measured size.
        size: usize,
        /// The configured limit.
        limit: usize,
        /// How the size is measured, such as `"UTF-16"`.
        measure: &'static str,
    },
    /// A stream event's payload is larger than the configured cap.
    #[error("stream event '{name}' is too large: {size} bytes of JSON, the limit is {limit}")]
    EventTooLarge {
        /// The event name.
        name: String,
        /// The serialized size in bytes.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A name the code gave (of a stream event, an activity, a
    /// sub-orchestration or an external event) is empty, longer than
    /// [`MAX_NAME_LEN`](crate::MAX_NAME_LEN) bytes or holds a control
    /// character. Nothing was emitted or scheduled.
    #[error("invalid {what} name {name:?}: {reason}")]
    InvalidName {
        /// What the name names: `"stream event"`, `"activity"`,
        /// `"sub-orchestration"` or `"external event"`.
        what: &'static str,
        /// The rejected name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// A value could not be serialized to JSON.
    #[error("could not serialize {what}: {message}")]
    Serialization {
        /// What was serialized.
        what: String,
        /// The serializer's message.
        message: String,
    },
    /// A result could not be deserialized into the requested type.
    #[error("could not deserialize {what}: {message}")]
    Deserialization {
        /// What was deserialized.
        what: String,
        /// The deserializer's message.
        message: String,
    },
    /// The instance id given for a sub-orchestration is invalid.
    #[error(transparent)]
    InvalidInstanceId(#[from] InvalidInstanceId),
}

impl StoreError {
    /// Wraps a database error.
    pub fn database(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Database(Box::new(e))
    }
}
