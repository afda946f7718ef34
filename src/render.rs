//! How the examples print stream events: one readable line per event, or
//! one JSON line `{"instance","seq","name","payload"}`.

use durable_core::{Payload, StreamEvent};
use serde::Serialize;

use agent_workflows::WorkflowEvent;

/// A stream event as one JSON line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JsonEvent<'a> {
    /// The instance id.
    pub instance: &'a str,
    /// The sequence number.
    pub seq: u64,
    /// The event name.
    pub name: &'a str,
    /// The payload.
    pub payload: &'a Payload,
}

impl<'a> JsonEvent<'a> {
    /// The JSON line of `event`.
    pub fn of(event: &'a StreamEvent) -> Self {
        Self {
            instance: event.instance_id.as_str(),
            seq: event.seq,
            name: &event.name,
            payload: &event.payload,
        }
    }

    /// The line, without a newline.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// A byte count for people: `512 B`, `2.1 KiB`, `1.4 MiB`.
///
/// ```
/// use durable_workspace::render::human_bytes;
///
/// assert_eq!(human_bytes(512), "512 B");
/// assert_eq!(human_bytes(2150), "2.1 KiB");
/// assert_eq!(human_bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
/// ```
pub fn human_bytes(bytes: usize) -> String {
    if bytes < 1024 {
        format!("{bytes} B")
    } else if bytes < 1024 * 1024 {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    }
}

fn superstep(n: u32, total: Option<u32>) -> String {
    format!("superstep {}", of(n, total))
}

fn of(n: u32, total: Option<u32>) -> String {
    match total {
        Some(total) => format!("{n}/{total}"),
        None => n.to_string(),
    }
}

/// One readable line for a stream event: `#5 executor_completed
/// analyse-document (2.1 KiB) superstep 5/6`. `total` is the number of
/// supersteps the run will take, if known. Events that are not workflow
/// events are shown by name and size.
pub fn describe(event: &StreamEvent, total: Option<u32>) -> String {
    let size = human_bytes(event.payload.as_str().len());
    let what = match event.payload.parse::<WorkflowEvent>() {
        Ok(workflow_event) => describe_workflow_event(&workflow_event, &size, total),
        Err(_) => format!("{} ({size})", event.name),
    };
    format!("#{} {what}", event.seq)
}

fn describe_workflow_event(event: &WorkflowEvent, size: &str, total: Option<u32>) -> String {
    let name = event.name();
    match event {
        WorkflowEvent::WorkflowStarted {
            workflow,
            start_executor,
            ..
        } => format!("{name} {workflow} (starts at {start_executor})"),
        WorkflowEvent::SuperstepStarted {
            superstep: n,
            executors,
        } => format!("{name} {}: {}", of(*n, total), executors.join(", ")),
        WorkflowEvent::ExecutorInvoked {
            superstep: n,
            executor_id,
            source,
            ..
        } => format!("{name} {executor_id} (from {source}) {}", superstep(*n, total)),
        WorkflowEvent::ExecutorCompleted {
            superstep: n,
            executor_id,
            ..
        } => format!("{name} {executor_id} ({size}) {}", superstep(*n, total)),
        WorkflowEvent::ExecutorFailed {
            superstep: n,
            executor_id,
            attempt,
            error,
            will_retry,
        } => format!(
            "{name} {executor_id} attempt {attempt}{}: {error} {}",
            if *will_retry { " (will retry)" } else { "" },
            superstep(*n, total)
        ),
        WorkflowEvent::WorkflowOutput {
            superstep: n,
            executor_id,
            ..
        } => format!("{name} from {executor_id} ({size}) {}", superstep(*n, total)),
        WorkflowEvent::RequestInfo {
            superstep: n,
            request_id,
            executor_id,
            port,
            ..
        } => format!(
            "{name} {request_id} on port {port} from {executor_id} ({size}) {}",
            superstep(*n, total)
        ),
        WorkflowEvent::RequestAnswered { request_id, .. } => format!("{name} {request_id}"),
        WorkflowEvent::ResponseRejected { request_id, error } => format!("{name} {request_id}: {error}"),
        WorkflowEvent::RequestTimedOut { request_id, .. } => format!("{name} {request_id}"),
        WorkflowEvent::CustomEvent {
            superstep: n,
            executor_id,
            name: custom,
            ..
        } => format!(
            "{name} {custom} from {executor_id} ({size}) {}",
            superstep(*n, total)
        ),
        WorkflowEvent::SuperstepCompleted { superstep: n } => format!("{name} {}", of(*n, total)),
        WorkflowEvent::SubWorkflowStarted {
            executor_id,
            instance_id,
            ..
        } => format!("{name} {instance_id} at {executor_id}"),
        WorkflowEvent::SubWorkflowEvent {
            executor_id, event, ..
        } => format!("{name} from {executor_id}: {}", event.name()),
        WorkflowEvent::WorkflowCompleted { supersteps, outputs } => {
            format!("{name} after {supersteps} superstep(s), {outputs} output(s)")
        }
        WorkflowEvent::WorkflowFailed { superstep: n, error } => {
            format!("{name} in superstep {n}: {error}")
        }
        _ => format!("{name} ({size})"),
    }
}

#[cfg(test)]
mod tests {
    use durable_core::InstanceId;
    use serde_json::{json, Value};

    use super::*;

    fn event(seq: u64, payload: Value) -> StreamEvent {
        StreamEvent {
            instance_id: InstanceId::new("run-1").unwrap(),
            seq,
            name: payload["type"].as_str().unwrap_or("greeted").to_owned(),
            payload: Payload::new(&payload).unwrap(),
            emitted_at: chrono::Utc::now(),
            execution_id: "e".into(),
        }
    }

    #[test]
    fn workflow_events_read_as_progress() {
        let completed = event(
            5,
            json!({
                "type": "executor_completed",
                "superstep": 5,
                "executor_id": "analyse-document",
                "output": "x".repeat(2000),
            }),
        );
        assert_eq!(
            describe(&completed, Some(6)),
            "#5 executor_completed analyse-document (2.0 KiB) superstep 5/6"
        );
        let started = event(
            2,
            json!({ "type": "superstep_started", "superstep": 1, "executors": ["a", "b"] }),
        );
        assert_eq!(describe(&started, None), "#2 superstep_started 1: a, b");
    }

    #[test]
    fn other_events_show_name_and_size() {
        assert_eq!(
            describe(&event(1, json!("Hello Tokyo!")), None),
            "#1 greeted (14 B)"
        );
    }

    #[test]
    fn json_lines_have_the_four_keys_in_order() {
        let e = event(3, json!({ "type": "superstep_completed", "superstep": 1 }));
        assert_eq!(
            JsonEvent::of(&e).to_line(),
            r#"{"instance":"run-1","seq":3,"name":"superstep_completed","payload":{"superstep":1,"type":"superstep_completed"}}"#
        );
    }
}
