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

/// An instance's status, as `GET /api/instances/{id}` returns it. The
/// input, output and custom status go out as they were stored, without
/// being parsed.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Instance<'a> {
    instance_id: &'a InstanceId,
    name: &'a str,
    execution_id: &'a str,
    runtime_status: &'static str,
    input: &'a Payload,
    output: Option<&'a Payload>,
    custom_status: Option<&'a Payload>,
    failure_details: Option<Value>,
    created_time: String,
    last_updated_time: String,
    completed_time: Option<String>,
    stream_length: u64,
}

impl<'a> Instance<'a> {
    pub(crate) fn new(meta: &'a InstanceMetadata) -> Self {
        Self {
            instance_id: &meta.instance_id,
            name: &meta.name,
            execution_id: &meta.execution_id,
            runtime_status: meta.status.as_str(),
            input: &meta.input,
            output: meta.output.as_ref(),
            custom_status: meta.custom_status.as_ref(),
            failure_details: meta.failure.as_ref().map(failure),
            created_time: time(meta.created_at),
            last_updated_time: time(meta.last_updated_at),
            completed_time: meta.completed_at.map(time),
            stream_length: meta.stream_len,
        }
    }
}

/// A page of instances, as `GET /api/instances` returns it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InstancesPage<'a> {
    pub(crate) instances: Vec<Instance<'a>>,
    pub(crate) continuation_token: Option<String>,
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
