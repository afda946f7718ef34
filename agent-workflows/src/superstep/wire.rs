//! What crosses from the superstep loop to the executor activities and
//! back, as stored in history: an invocation's input and outcome.

use std::collections::BTreeMap;

use durable_core::Payload;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::context::Effect;
use crate::events::WorkflowEvent;
use crate::message::Envelope;
use crate::payload_fields::field;

/// The input of one executor activity: one executor's messages of one
/// superstep, and the shared state at its start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct InvocationInput {
    pub(crate) superstep: u32,
    pub(crate) attempt: u32,
    pub(crate) messages: Vec<Envelope>,
    pub(crate) state: BTreeMap<String, Value>,
}

/// An [`InvocationInput`] as the orchestration sends it, serialized from
/// the run's own messages and state rather than from copies of them.
#[derive(Serialize)]
pub(super) struct InvocationInputRef<'a> {
    pub(super) superstep: u32,
    pub(super) attempt: u32,
    pub(super) messages: &'a [Envelope],
    pub(super) state: &'a BTreeMap<String, Value>,
}

/// What handling one message produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Handled {
    pub(crate) output: Payload,
    pub(crate) effects: Vec<Effect>,
}

/// The result of one executor activity.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub(crate) enum InvocationOutcome {
    Completed {
        handled: Vec<Handled>,
        writes: BTreeMap<String, Option<Value>>,
    },
    /// A terminal failure (retryable ones fail the activity).
    Terminal { error: String },
}

impl<'de> Deserialize<'de> for InvocationOutcome {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// The fields of both variants (see [`crate::tagged`]).
        #[derive(Deserialize)]
        struct Fields {
            outcome: String,
            handled: Option<Vec<Handled>>,
            writes: Option<BTreeMap<String, Option<Value>>>,
            error: Option<String>,
        }
        let fields = Fields::deserialize(deserializer)?;
        Ok(match fields.outcome.as_str() {
            "completed" => Self::Completed {
                handled: field(fields.handled, "handled")?,
                writes: field(fields.writes, "writes")?,
            },
            "terminal" => Self::Terminal {
                error: field(fields.error, "error")?,
            },
            other => {
                return Err(serde::de::Error::unknown_variant(
                    other,
                    &["completed", "terminal"],
                ))
            }
        })
    }
}

/// The output of a workflow run as a sub-workflow: its outputs and its
/// events, which the parent re-emits tagged with their origin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ChildOutput {
    pub(crate) outputs: Vec<Payload>,
    pub(crate) events: Vec<WorkflowEvent>,
}

/// How a run reports its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RunMode {
    /// A top-level run: its output is the list of workflow outputs.
    TopLevel,
    /// A sub-workflow: its output is a [`ChildOutput`].
    Child,
}

/// The external event name that carries the answer to a request, in the
/// round after `rejected` rejected answers (each round is answered once).
pub(crate) fn response_event_name(request_id: &str, rejected: u32) -> String {
    match rejected {
        0 => format!("workflow-response:{request_id}"),
        n => format!("workflow-response:{request_id}:{n}"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::context::NewRequest;
    use crate::message::START_SOURCE;

    #[test]
    fn an_outcome_with_every_effect_reads_back_as_written() {
        let payload = |text: &str| Payload::from_text(text).unwrap();
        let effects = vec![
            Effect::Send {
                target: Some("next".into()),
                message: Envelope {
                    type_name: "Doc".into(),
                    payload: payload(r#"{"z":0,"a":"\u00e9"}"#),
                    source: "a".into(),
                },
            },
            Effect::Send {
                target: None,
                message: Envelope {
                    type_name: "()".into(),
                    payload: Payload::null(),
                    source: "a".into(),
                },
            },
            Effect::Output {
                value: payload("[1,2]"),
            },
            Effect::Output {
                value: Payload::null(),
            },
            Effect::Event {
                name: "progress".into(),
                data: payload("40"),
            },
            Effect::Request(NewRequest {
                request_id: "a:1:0".into(),
                port: "approval".into(),
                request: payload(r#"{"title":"Q3"}"#),
                response_type: "Answer".into(),
                timeout_ms: Some(5),
            }),
            Effect::Request(NewRequest {
                request_id: "a:1:1".into(),
                port: "approval".into(),
                request: Payload::null(),
                response_type: "Answer".into(),
                timeout_ms: None,
            }),
        ];
        let outcome = InvocationOutcome::Completed {
            handled: vec![Handled {
                output: payload(r#"{"b":1,"a":2}"#),
                effects: effects.clone(),
            }],
            writes: BTreeMap::from([("k".to_owned(), Some(json!(1))), ("gone".to_owned(), None)]),
        };
        let text = serde_json::to_string(&outcome).unwrap();
        let InvocationOutcome::Completed { handled, writes } = serde_json::from_str(&text).unwrap() else {
            panic!("not completed: {text}");
        };
        assert_eq!(handled[0].effects, effects);
        assert_eq!(handled[0].output.as_str(), r#"{"b":1,"a":2}"#);
        assert_eq!(writes.len(), 2);
        let read = InvocationOutcome::Completed { handled, writes };
        assert_eq!(serde_json::to_string(&read).unwrap(), text);

        let terminal = serde_json::to_string(&InvocationOutcome::Terminal { error: "no".into() }).unwrap();
        assert_eq!(terminal, r#"{"outcome":"terminal","error":"no"}"#);
        assert!(matches!(
            serde_json::from_str(&terminal).unwrap(),
            InvocationOutcome::Terminal { error } if error == "no"
        ));
        for refused in [
            r#"{"outcome":"completed","writes":{}}"#,
            r#"{"outcome":"vanished"}"#,
            r#"{"outcome":"completed","handled":[{"output":1,"effects":[{"kind":"output"}]}],"writes":{}}"#,
        ] {
            assert!(
                serde_json::from_str::<InvocationOutcome>(refused).is_err(),
                "{refused}"
            );
        }
    }

    #[test]
    fn the_input_sent_is_the_input_the_executor_activity_reads() {
        let messages = vec![Envelope {
            type_name: "Doc".into(),
            payload: Payload::new(&json!({ "title": "t", "pages": [1, 2] })).unwrap(),
            source: START_SOURCE.into(),
        }];
        let state = BTreeMap::from([("k".to_owned(), json!([true]))]);
        let sent = serde_json::to_value(InvocationInputRef {
            superstep: 3,
            attempt: 2,
            messages: &messages,
            state: &state,
        })
        .unwrap();
        let read: InvocationInput = serde_json::from_value(sent.clone()).unwrap();
        assert_eq!((read.superstep, read.attempt), (3, 2));
        assert_eq!(read.messages, messages);
        assert_eq!(read.state, state);
        // Histories recorded before keep replaying: the same JSON as the
        // owned input gives.
        assert_eq!(sent, serde_json::to_value(read).unwrap());
    }
}
