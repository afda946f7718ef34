//! JSON payloads kept as text.

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// A JSON value kept as its text, the way the runtime stores and sends it.
///
/// A payload is written once, when it is made, and travels as is from then
/// on: to the database, to every watcher of a stream (a clone shares the
/// text), and out over HTTP. It is parsed only where it is read, with
/// [`Payload::parse`] into your type (or into a
/// [`serde_json::Value`]).
///
/// Two payloads are equal when their texts are: the same value written
/// with other spacing or key order is a different payload. The runtime
/// writes compact JSON, in the order your type serializes its fields.
///
/// ```
/// use durable_core::Payload;
/// use serde_json::{json, Value};
///
/// let payload = Payload::new(&json!({ "percent": 40 }))?;
/// assert_eq!(payload.as_str(), r#"{"percent":40}"#);
/// let value: Value = payload.parse()?;
/// assert_eq!(value["percent"], 40);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone)]
pub struct Payload(Arc<RawValue>);

impl Payload {
    /// The payload of `value`, serialized as compact JSON.
    ///
    /// # Errors
    ///
    /// If `value` cannot be serialized as JSON (a map whose keys are not
    /// strings, say).
    pub fn new<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Self> {
        serde_json::value::to_raw_value(value).map(|raw| Self(Arc::from(raw)))
    }

    /// The payload written as `text`, which must be one JSON value.
    ///
    /// # Errors
    ///
    /// If `text` is not valid JSON.
    pub fn from_text(text: impl Into<String>) -> serde_json::Result<Self> {
        RawValue::from_string(text.into()).map(|raw| Self(Arc::from(raw)))
    }

    /// The payload `null`.
    pub fn null() -> Self {
        Self(Arc::from(RawValue::NULL.to_owned()))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// Deserializes the payload into `T`.
    ///
    /// # Errors
    ///
    /// If the payload does not fit `T`.
    pub fn parse<T: DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_str(self.as_str())
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Payload {}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Payload")
            .field(&format_args!("{}", self.as_str()))
            .finish()
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(|raw| Self(Arc::from(raw)))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    #[test]
    fn keeps_the_text_it_was_made_with() {
        let payload = Payload::new(&json!({ "b": [1, 2], "a": "x\ny" })).unwrap();
        assert_eq!(payload.as_str(), r#"{"a":"x\ny","b":[1,2]}"#);
        assert_eq!(payload.to_string(), payload.as_str());
        let read = Payload::from_text(r#"{"b": 1}"#).unwrap();
        assert_eq!(read.as_str(), r#"{"b": 1}"#);
        assert_ne!(read, Payload::new(&json!({ "b": 1 })).unwrap());
        // Whitespace around the value is not part of it.
        assert_eq!(Payload::from_text(" [1]\n").unwrap().as_str(), "[1]");
        assert_eq!(Payload::null().as_str(), "null");
    }

    #[test]
    fn refuses_text_that_is_not_one_json_value() {
        for text in ["", "{", "1 2", "nul", "\"unterminated"] {
            assert!(Payload::from_text(text).is_err(), "{text:?} was taken");
        }
    }

    #[test]
    fn goes_into_json_as_is_and_comes_back_whole() {
        let payload = Payload::new(&json!({ "n": 1, "s": "é\"" })).unwrap();
        let outer = serde_json::to_string(&json!({ "payload": payload })).unwrap();
        assert_eq!(outer, r#"{"payload":{"n":1,"s":"é\""}}"#);
        let direct = serde_json::to_string(&[&payload]).unwrap();
        assert_eq!(direct, r#"[{"n":1,"s":"é\""}]"#);
        let back: Vec<Payload> = serde_json::from_str(&direct).unwrap();
        assert_eq!(back, vec![payload.clone()]);
        let from_value: Payload = serde_json::from_value(json!([true, null])).unwrap();
        assert_eq!(from_value.as_str(), "[true,null]");
        let value: Value = payload.parse().unwrap();
        assert_eq!(value, json!({ "n": 1, "s": "é\"" }));
        assert!(payload.parse::<u32>().is_err());
    }
}
