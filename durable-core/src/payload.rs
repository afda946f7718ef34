//! JSON payloads kept as text.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, DeserializeOwned, MapAccess, SeqAccess, Visitor};
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

    /// The payload written as `text`, which must be one JSON value that a
    /// [`serde_json::Value`] can hold: numbers within the range of `f64`
    /// (`1e400` is refused), nesting within serde_json's limit of 128, and
    /// no object with the same key twice.
    ///
    /// # Errors
    ///
    /// If `text` is not such a JSON value.
    pub fn from_text(text: impl Into<String>) -> serde_json::Result<Self> {
        let text = text.into();
        check(&text)?;
        Self::stored(text)
    }

    /// A payload the runtime wrote itself (read back from its database),
    /// checked when it was made: only its syntax is checked again.
    pub(crate) fn stored(text: String) -> serde_json::Result<Self> {
        RawValue::from_string(text).map(Self::from_raw)
    }

    fn from_raw(raw: Box<RawValue>) -> Self {
        Self(Arc::from(raw))
    }

    /// Reads a payload the runtime wrote itself, as [`Payload::stored`].
    pub(crate) fn deserialize_stored<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(deserializer).map(Self::from_raw)
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

/// `null`, as `serde_json::Value::default()`.
impl Default for Payload {
    fn default() -> Self {
        Self::null()
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

/// Read as [`Payload::from_text`] reads its text.
impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        check(raw.get()).map_err(de::Error::custom)?;
        Ok(Self::from_raw(raw))
    }
}

/// Checks that `text` is one JSON value that a [`serde_json::Value`] can
/// hold, without building one. A payload that could not be read back
/// into a `Value` would fail every later read of what holds it (an
/// instance's input or output, say).
fn check(text: &str) -> serde_json::Result<()> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    deserializer.deserialize_any(Readable)?;
    deserializer.end()
}

/// Visits a JSON value as [`serde_json::Value`] reads it, keeping nothing.
struct Readable;

impl<'de> Visitor<'de> for Readable {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(ReadableSeed)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        // A key given twice would be read differently by different readers
        // (a `Value` keeps the last, a derived struct refuses it).
        let mut keys = std::collections::HashSet::new();
        while let Some(key) = map.next_key_seed(Key)? {
            if !keys.insert(key) {
                return Err(de::Error::custom("an object has the same key twice"));
            }
            map.next_value_seed(ReadableSeed)?;
        }
        Ok(())
    }
}

/// An object's key: borrowed from the text unless it holds an escape.
struct Key;

impl<'de> de::DeserializeSeed<'de> for Key {
    type Value = std::borrow::Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = std::borrow::Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Self::Value, E> {
        Ok(key.into())
    }

    fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
        Ok(key.to_owned().into())
    }
}

/// [`Readable`] as a seed, for the elements of arrays and objects.
struct ReadableSeed;

impl<'de> de::DeserializeSeed<'de> for ReadableSeed {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(Readable)
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
    fn refuses_text_a_value_cannot_hold_which_raw_json_would_take() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        for text in ["1e400", r#"{"a":[1,-1e999]}"#, deep.as_str()] {
            // serde_json's raw text takes it; a Value does not.
            assert!(serde_json::from_str::<Box<RawValue>>(text).is_ok(), "{text:?}");
            assert!(serde_json::from_str::<Value>(text).is_err(), "{text:?}");
            assert!(Payload::from_text(text).is_err(), "{text:?} was taken");
            let inside = format!(r#"{{"p":{text}}}"#);
            let read = serde_json::from_str::<std::collections::HashMap<String, Payload>>(&inside);
            assert!(read.is_err(), "{text:?} was read");
        }
        // What a Value holds is taken, big integers (read as f64) included.
        for text in [
            "18446744073709551616",
            "-0.0",
            r#"{"a":{"b":[null,true,"\u00e9"]}}"#,
        ] {
            assert_eq!(Payload::from_text(text).unwrap().as_str(), text);
        }
    }

    #[test]
    fn refuses_an_object_with_the_same_key_twice() {
        for text in [r#"{"a":1,"a":2}"#, r#"[{"x":{"k":1,"\u006b":2}}]"#] {
            let err = Payload::from_text(text).unwrap_err();
            assert!(err.to_string().contains("same key twice"), "{text:?}: {err}");
        }
        // The same key in different objects is fine.
        let text = r#"{"a":{"a":1},"b":[{"a":2},{"a":3}]}"#;
        assert_eq!(Payload::from_text(text).unwrap().as_str(), text);
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
