//! Workflow messages: any serde type, carried between executors as JSON
//! tagged with its type's name.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

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

/// The routing tag of message type `T`: its name without module paths,
/// at every level (`Vec<Doc>` for `alloc::vec::Vec<app::Doc>`). Messages
/// are stored with it, so it must outlive a rebuild: moving a type to
/// another module, or a compiler that spells paths differently, leaves it
/// as it was. Two types of one workflow with the same tag are refused
/// when it is built ([`BuildError::MessageTypeClash`]).
///
/// [`BuildError::MessageTypeClash`]: crate::BuildError::MessageTypeClash
pub(crate) fn type_tag<T: ?Sized + 'static>() -> &'static str {
    static TAGS: OnceLock<RwLock<HashMap<TypeId, &'static str>>> = OnceLock::new();
    let tags = TAGS.get_or_init(RwLock::default);
    let id = TypeId::of::<T>();
    if let Some(tag) = tags.read().unwrap_or_else(|e| e.into_inner()).get(&id) {
        return tag;
    }
    let mut tags = tags.write().unwrap_or_else(|e| e.into_inner());
    // Each type's tag is made once and kept for the life of the process.
    tags.entry(id)
        .or_insert_with(|| Box::leak(short_name(std::any::type_name::<T>()).into_boxed_str()))
}

/// `name` with every path reduced to its last segment.
fn short_name(name: &str) -> String {
    let mut short = String::with_capacity(name.len());
    let mut path_start = 0;
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            short.truncate(path_start);
        } else {
            short.push(c);
            if !(c.is_alphanumeric() || c == '_') {
                path_start = short.len();
            }
        }
    }
    short
}

/// A routing tag read back from the store. Runs stored before tags were
/// names without module paths hold full paths, which read as the tag of
/// their type today.
pub(crate) fn stored_tag(tag: String) -> String {
    if tag.contains("::") {
        short_name(&tag)
    } else {
        tag
    }
}

/// Deserializes a routing tag (see [`stored_tag`]).
pub(crate) fn deserialize_tag<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    String::deserialize(deserializer).map(stored_tag)
}

/// A message type as a workflow knows it: its routing tag and its full
/// Rust name (to tell two types with one tag apart when it is built).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MessageType {
    pub(crate) tag: &'static str,
    pub(crate) rust_name: &'static str,
}

impl MessageType {
    pub(crate) fn of<T: ?Sized + 'static>() -> Self {
        Self {
            tag: type_tag::<T>(),
            rust_name: std::any::type_name::<T>(),
        }
    }
}

/// A message in flight: its type tag, its JSON text and its sender.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Envelope {
    /// The routing tag of the payload's type.
    #[serde(rename = "type", deserialize_with = "deserialize_tag")]
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

#[cfg(test)]
mod tests {
    use super::*;

    mod app {
        pub(super) struct Doc;
        pub(super) mod inner {
            pub(in super::super) struct Doc;
        }
    }

    #[test]
    fn a_tag_is_the_name_without_module_paths_at_every_level() {
        assert_eq!(type_tag::<app::Doc>(), "Doc");
        assert_eq!(type_tag::<Vec<app::Doc>>(), "Vec<Doc>");
        assert_eq!(
            type_tag::<(app::Doc, Option<String>, [u8; 2], &'static str)>(),
            "(Doc, Option<String>, [u8; 2], &str)"
        );
        assert_eq!(
            type_tag::<HashMap<String, Vec<app::inner::Doc>>>(),
            "HashMap<String, Vec<Doc>>"
        );
        assert_eq!(type_tag::<u32>(), "u32");
    }

    #[test]
    fn a_tag_stored_with_module_paths_reads_as_the_tag_of_its_type() {
        let stored = r#"{"type":"alloc::vec::Vec<app::Doc>","payload":[],"source":"a"}"#;
        let envelope: Envelope = serde_json::from_str(stored).unwrap();
        assert_eq!(envelope.type_name, "Vec<Doc>");
        assert_eq!(stored_tag("Doc".to_owned()), "Doc");
    }

    #[test]
    fn types_moved_between_modules_keep_their_tag_and_keep_their_rust_names_apart() {
        let (a, b) = (
            MessageType::of::<app::Doc>(),
            MessageType::of::<app::inner::Doc>(),
        );
        assert_eq!(a.tag, b.tag);
        assert_ne!(a.rust_name, b.rust_name);
    }
}
