//! Instance metadata as clients see it.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{FailureDetails, InstanceId, Payload};

/// The runtime status of an orchestration instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum RuntimeStatus {
    /// Created, not yet started by a worker (or scheduled to start later).
    Pending,
    /// Started and not finished.
    Running,
    /// Suspended by a client; messages wait until it is resumed.
    Suspended,
    /// Finished with an output.
    Completed,
    /// Finished with a failure.
    Failed,
    /// Terminated by a client.
    Terminated,
}

impl RuntimeStatus {
    /// Every status, in declaration order.
    pub const ALL: [RuntimeStatus; 6] = [
        Self::Pending,
        Self::Running,
        Self::Suspended,
        Self::Completed,
        Self::Failed,
        Self::Terminated,
    ];

    /// Whether the instance has finished and will not change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Terminated)
    }

    /// The status as stored and shown, such as `"Running"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Running => "Running",
            Self::Suspended => "Suspended",
            Self::Completed => "Completed",
            Self::Failed => "Failed",
            Self::Terminated => "Terminated",
        }
    }
}

impl fmt::Display for RuntimeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text is not a [`RuntimeStatus`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown runtime status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for RuntimeStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// What a client can read about an instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InstanceMetadata {
    /// The instance id.
    pub instance_id: InstanceId,
    /// The orchestration name.
    pub name: String,
    /// The id of the current execution.
    pub execution_id: String,
    /// The runtime status.
    pub status: RuntimeStatus,
    /// The input of the current execution, as the JSON text it was given
    /// with ([`InstanceMetadata::input_as`] parses it).
    pub input: Payload,
    /// The output, once completed (or the reason, once terminated), as the
    /// orchestration's type wrote it ([`InstanceMetadata::output_as`]
    /// parses it).
    pub output: Option<Payload>,
    /// The custom status last set by the orchestration, as its type wrote
    /// it ([`InstanceMetadata::custom_status_as`] parses it).
    pub custom_status: Option<Payload>,
    /// Why the instance failed.
    pub failure: Option<FailureDetails>,
    /// When the instance was created.
    pub created_at: DateTime<Utc>,
    /// When the instance last changed.
    pub last_updated_at: DateTime<Utc>,
    /// When the instance reached a terminal status.
    pub completed_at: Option<DateTime<Utc>>,
    /// The number of events in the instance's stream (its last sequence
    /// number).
    pub stream_len: u64,
}

impl InstanceMetadata {
    /// Deserializes the output into `T`.
    ///
    /// # Errors
    ///
    /// Returns an error if there is no output or it does not match `T`.
    pub fn output_as<T: serde::de::DeserializeOwned>(&self) -> crate::Result<T> {
        match &self.output {
            Some(output) => Ok(output.parse()?),
            None => Ok(serde_json::from_value(Value::Null)?),
        }
    }

    /// Deserializes the input of the current execution into `T`.
    ///
    /// # Errors
    ///
    /// Returns an error if the input does not match `T`.
    pub fn input_as<T: serde::de::DeserializeOwned>(&self) -> crate::Result<T> {
        Ok(self.input.parse()?)
    }

    /// Deserializes the custom status into `T`, if the orchestration set one.
    ///
    /// # Errors
    ///
    /// Returns an error if the custom status does not match `T`.
    pub fn custom_status_as<T: serde::de::DeserializeOwned>(&self) -> crate::Result<Option<T>> {
        Ok(self.custom_status.as_ref().map(Payload::parse).transpose()?)
    }
}

/// Filters and paging for listing instances.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct InstanceQuery {
    /// Only instances with one of these statuses (all when empty).
    pub statuses: Vec<RuntimeStatus>,
    /// Only instances of this orchestration.
    pub name: Option<String>,
    /// Only instances created at or after this time.
    pub created_from: Option<DateTime<Utc>>,
    /// Only instances created before this time.
    pub created_to: Option<DateTime<Utc>>,
    /// The page size (default 100, at most 1,000).
    pub page_size: Option<u32>,
    /// The continuation token of the previous page.
    pub continuation: Option<String>,
}

impl InstanceQuery {
    /// A query for all instances.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only instances with this status (may be called several times).
    pub fn status(mut self, status: RuntimeStatus) -> Self {
        self.statuses.push(status);
        self
    }

    /// Only instances of this orchestration.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Only instances created in `[from, to)`.
    pub fn created_between(mut self, from: DateTime<Utc>, to: DateTime<Utc>) -> Self {
        self.created_from = Some(from);
        self.created_to = Some(to);
        self
    }

    /// The page size.
    pub fn page_size(mut self, size: u32) -> Self {
        self.page_size = Some(size);
        self
    }

    /// Continue after the page that returned this token.
    pub fn continuation(mut self, token: impl Into<String>) -> Self {
        self.continuation = Some(token.into());
        self
    }
}

/// One page of [`InstanceMetadata`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstancePage {
    /// The instances, oldest first.
    pub instances: Vec<InstanceMetadata>,
    /// Pass this to [`InstanceQuery::continuation`] for the next page;
    /// `None` on the last page.
    pub continuation: Option<String>,
}

/// The continuation token that resumes a listing after this instance.
pub(crate) fn continuation_of(created_at: DateTime<Utc>, instance_id: &InstanceId) -> String {
    format!("{}:{}", created_at.timestamp_millis(), instance_id)
}

/// Parses a token made by [`continuation_of`].
pub(crate) fn parse_continuation(token: &str) -> Option<(i64, String)> {
    let (created, id) = token.split_once(':')?;
    Some((created.parse().ok()?, id.to_owned()))
}
