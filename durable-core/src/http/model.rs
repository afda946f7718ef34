//! The JSON shapes of the API. Field names follow the Durable Functions
//! HTTP API where it has one (`instanceId`, `runtimeStatus`,
//! `customStatus`, `createdTime`, ...).

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{json, Value};

use crate::{EventPage, FailureDetails, InstanceId, InstanceMetadata, Payload, StreamEvent};

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

/// A page of stream events, as `GET /api/instances/{id}/events` returns
/// it. The payloads go out as they were stored, without being parsed.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventsPage<'a> {
    instance_id: &'a InstanceId,
    events: Vec<Event<'a>>,
    next_cursor: u64,
    finished: bool,
}

impl<'a> EventsPage<'a> {
    pub(crate) fn new(instance_id: &'a InstanceId, page: &'a EventPage) -> Self {
        Self {
            instance_id,
            events: page.events.iter().map(Event::new).collect(),
            next_cursor: page.next_cursor,
            finished: page.finished,
        }
    }
}

/// A stream event of an [`EventsPage`].
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Event<'a> {
    seq: u64,
    name: &'a str,
    payload: &'a Payload,
    emitted_at: String,
    execution_id: &'a str,
}

impl<'a> Event<'a> {
    fn new(event: &'a StreamEvent) -> Self {
        Self {
            seq: event.seq,
            name: &event.name,
            payload: &event.payload,
            emitted_at: time(event.emitted_at),
            execution_id: &event.execution_id,
        }
    }
}
