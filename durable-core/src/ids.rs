//! Identifiers: validated instance ids and names.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest instance id accepted, in bytes of UTF-8.
pub const MAX_INSTANCE_ID_LEN: usize = 256;

/// The longest name accepted, in bytes of UTF-8: of an orchestration, an
/// activity, a stream event or an external event.
pub const MAX_NAME_LEN: usize = 256;

/// Why `name` is not a valid name of an orchestration, an activity, a
/// stream event or an external event, if it is not.
///
/// A name is 1 to [`MAX_NAME_LEN`] bytes without control characters. The
/// rule is checked where a name is made (by the orchestration code, by a
/// client, when registering), so that no store is asked to keep one that
/// it cannot: PostgreSQL refuses a NUL in text, and would fail the whole
/// batch of turns with it; a newline would break the frame of a
/// Server-Sent Event.
pub(crate) fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("the name is empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("the name is longer than 256 bytes")
    } else if name.chars().any(char::is_control) {
        Some("the name contains a control character")
    } else {
        None
    }
}

/// The id of an orchestration instance.
///
/// An instance id is 1 to [`MAX_INSTANCE_ID_LEN`] bytes of UTF-8 without
/// control characters. Any other text (unicode, slashes, quotes, SQL
/// metacharacters) is allowed: ids are always bound as query parameters.
///
/// ```
/// use durable_core::InstanceId;
///
/// let id = InstanceId::new("order-42").unwrap();
/// assert_eq!(id.as_str(), "order-42");
/// assert!(InstanceId::new("").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InstanceId(String);

/// Why a string is not a valid [`InstanceId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidInstanceId {
    /// The id is the empty string.
    #[error("instance id is empty")]
    Empty,
    /// The id is longer than [`MAX_INSTANCE_ID_LEN`] bytes.
    #[error("instance id is {len} bytes long; the limit is {MAX_INSTANCE_ID_LEN}")]
    TooLong {
        /// The length of the rejected id in bytes.
        len: usize,
    },
    /// The id contains a control character such as a newline or NUL.
    #[error("instance id contains the control character {0:?}")]
    ControlCharacter(char),
}

impl InstanceId {
    /// Validates `id` and wraps it.
    ///
    /// # Errors
    ///
    /// Returns [`InvalidInstanceId`] if the id is empty, too long or contains
    /// a control character.
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidInstanceId> {
        let id = id.into();
        if id.is_empty() {
            return Err(InvalidInstanceId::Empty);
        }
        if id.len() > MAX_INSTANCE_ID_LEN {
            return Err(InvalidInstanceId::TooLong { len: id.len() });
        }
        if let Some(c) = id.chars().find(|c| c.is_control()) {
            return Err(InvalidInstanceId::ControlCharacter(c));
        }
        Ok(Self(id))
    }

    /// A new unique id: a UUID v7 in simple form (32 hex digits), which
    /// begins with its creation time in milliseconds and goes on with
    /// random bits. Ids made one after another sort in that order, so the
    /// rows of instances started together sit side by side in the store's
    /// indexes, and a commit of their turns writes fewer index pages.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().simple().to_string())
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for InstanceId {
    type Error = InvalidInstanceId;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl TryFrom<&str> for InstanceId {
    type Error = InvalidInstanceId;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<InstanceId> for String {
    fn from(id: InstanceId) -> Self {
        id.0
    }
}

impl AsRef<str> for InstanceId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_unusual_but_printable_ids() {
        for id in ["a", "orders/2026/42", "ünïcødé-🚀", "'; DROP TABLE instances; --"] {
            assert_eq!(InstanceId::new(id).unwrap().as_str(), id);
        }
        assert!(InstanceId::new("x".repeat(MAX_INSTANCE_ID_LEN)).is_ok());
    }

    #[test]
    fn rejects_empty_long_and_control_characters() {
        assert_eq!(InstanceId::new(""), Err(InvalidInstanceId::Empty));
        assert_eq!(
            InstanceId::new("x".repeat(MAX_INSTANCE_ID_LEN + 1)),
            Err(InvalidInstanceId::TooLong {
                len: MAX_INSTANCE_ID_LEN + 1
            })
        );
        assert_eq!(
            InstanceId::new("a\nb"),
            Err(InvalidInstanceId::ControlCharacter('\n'))
        );
    }

    #[test]
    fn generated_ids_are_32_hex_digits_in_the_order_they_were_made() {
        let ids: Vec<InstanceId> = (0..1000).map(|_| InstanceId::generate()).collect();
        for id in &ids {
            assert_eq!(id.as_str().len(), 32, "{id}");
            assert!(id.as_str().bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        }
        assert!(
            ids.windows(2).all(|w| w[0].as_str() < w[1].as_str()),
            "sorted and unique"
        );
    }

    #[test]
    fn deserializing_validates() {
        assert!(serde_json::from_str::<InstanceId>("\"\"").is_err());
        let id: InstanceId = serde_json::from_str("\"ok\"").unwrap();
        assert_eq!(id.as_str(), "ok");
    }
}
