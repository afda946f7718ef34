//! The JSON shapes of the API. Field names follow the Durable Functions
//! HTTP API where it has one (`instanceId`, `runtimeStatus`,
//! `customStatus`, `createdTime`, ...).

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::{FailureDetails, InstanceMetadata, StreamEvent};

/// A time as RFC 3339 in UTC with milliseconds, such as
/// `2026-01-02T03:04:05.678Z`.
pub(crate) fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn failure(details: &FailureDetails) -> Value {
    json!({ "errorType": details.error_type, "errorMessage": details.message })
}

/// An instance's status, as `GET /api/instances/{id}` returns it.
pub(crate) fn instance(meta: &InstanceMetadata) -> Value {
    json!({
        "instanceId": meta.instance_id,
        "name": meta.name,
        "executionId": meta.execution_id,
        "runtimeStatus": meta.status.as_str(),
        "input": meta.input,
        "output": meta.output,
        "customStatus": meta.custom_status,
        "failureDetails": meta.failure.as_ref().map(failure),
        "createdTime": time(meta.created_at),
        "lastUpdatedTime": time(meta.last_updated_at),
        "completedTime": meta.completed_at.map(time),
        "streamLength": meta.stream_len,
    })
}

/// A stream event, as the events page returns it.
pub(crate) fn event(event: &StreamEvent) -> Value {
    json!({
        "seq": event.seq,
        "name": event.name,
        "payload": event.payload,
        "emittedAt": time(event.emitted_at),
        "executionId": event.execution_id,
    })
}
