//! Workflow messages: any serde type, carried between executors as JSON
//! tagged with its Rust type name.

use durable_core::Payload;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A value that can travel between executors: serializable, deserializable
/// and sendable. Implemented for every such type.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a workflow message",
    label = "this type is not serializable",
    note = "workflow messages are stored as JSON: derive `serde::Serialize` and `serde::Deserialize` for `{Self}`"
)]
pub trait Message: Serialize + DeserializeOwned + Send + 'static {}

impl<T: Serialize + DeserializeOwned + Send + 'static> Message for T {}

/// The type tag of message type `T`, used to route messages to the
/// handlers that accept them.
pub(crate) fn type_tag<T: ?Sized>() -> &'static str {
    std::any::type_name::<T>()
}

/// A message in flight: its type tag, its JSON text and its sender.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Envelope {
    /// The type tag of the payload.
    #[serde(rename = "type")]
    pub(crate) type_name: String,
    /// The payload.
    pub(crate) payload: Payload,
    /// The id of the executor that sent it (`"$start"` for the start
    /// message, `"$response"` for a response to a request).
    pub(crate) source: String,
}

/// The source of the start message.
pub(crate) const START_SOURCE: &str = "$start";
/// The source of responses to requests.
pub(crate) const RESPONSE_SOURCE: &str = "$response";
