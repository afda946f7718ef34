//! Reading internally tagged enums whose variants hold payloads.
//!
//! serde reads an internally tagged enum (`#[serde(tag = "...")]`) by
//! buffering the object's fields before it knows the variant, and a
//! [`Payload`] (raw JSON text) cannot be read from that buffer. The enums
//! of this crate that hold payloads are therefore read through a plain
//! struct of all their variants' fields, which serde reads straight from
//! the JSON, and built from it by their tag. They are written by serde's
//! derive, so the JSON is the same both ways.

use durable_core::Payload;
use serde::de::Error;
use serde::{Deserialize, Deserializer};

/// A payload field that is present, `null` included (a plain
/// `Option<Payload>` would read `null` as absent).
pub(crate) fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Payload>, D::Error> {
    Payload::deserialize(deserializer).map(Some)
}

/// Field `name`, which the variant read requires.
pub(crate) fn field<T, E: Error>(value: Option<T>, name: &'static str) -> Result<T, E> {
    value.ok_or_else(|| E::missing_field(name))
}
