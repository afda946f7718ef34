//! The context an executor's handler gets: send messages, yield outputs,
//! add custom events, request information from a person, and read and
//! write shared state.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::time::Duration;

use durable_core::Payload;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use crate::message::{stored_tag, type_tag, Envelope, Message};
use crate::payload_fields::{field, present};
use crate::{ExecutorError, RequestTimedOut};

/// A typed port through which executors ask a person (or another system)
/// for information: requests of type `Req`, answered with `Resp`.
///
/// Declare one as a constant and pass it to
/// [`WorkflowContext::request_info`]. One port may have any number of
/// outstanding requests, each with its own id, answered in any order. The
/// answer comes back to the requesting executor as a
/// [`RequestResponse<Req, Resp>`] message, so the executor needs a handler
/// for that type.
///
/// ```
/// use agent_workflows::RequestPort;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Draft { text: String }
///
/// const APPROVAL: RequestPort<Draft, bool> = RequestPort::new("approval");
/// assert_eq!(APPROVAL.id(), "approval");
/// ```
#[derive(Debug)]
pub struct RequestPort<Req, Resp> {
    id: &'static str,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp> Clone for RequestPort<Req, Resp> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Req, Resp> Copy for RequestPort<Req, Resp> {}

impl<Req, Resp> RequestPort<Req, Resp> {
    /// A port with this id.
    pub const fn new(id: &'static str) -> Self {
        Self {
            id,
            _types: PhantomData,
        }
    }

    /// The port id.
    pub const fn id(&self) -> &'static str {
        self.id
    }
}

/// The answer to a request, delivered to the executor that made it.
///
/// `response` is `Err` if the request had a timeout and nobody answered in
/// time; `?` turns that into a terminal [`ExecutorError`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(serialize = "Req: Serialize, Resp: Serialize"))]
#[serde(bound(deserialize = "Req: serde::de::DeserializeOwned, Resp: serde::de::DeserializeOwned"))]
pub struct RequestResponse<Req, Resp> {
    /// The request id.
    pub request_id: String,
    /// The port the request was made on.
    pub port: String,
    /// The original request.
    pub request: Req,
    /// The answer, or the timeout.
    pub response: Result<Resp, RequestTimedOut>,
}

/// Something an executor did while handling one message, applied by the
/// orchestration at the end of the superstep.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Effect {
    Send {
        target: Option<String>,
        message: Envelope,
    },
    Output {
        value: Payload,
    },
    Event {
        name: String,
        data: Payload,
    },
    Request(NewRequest),
}

impl<'de> Deserialize<'de> for Effect {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        EffectFields::deserialize(deserializer)?.into_effect()
    }
}

/// The fields of every [`Effect`] variant, to read one by its tag (see
/// [`crate::tagged`]).
#[derive(Deserialize)]
struct EffectFields {
    kind: String,
    target: Option<String>,
    message: Option<Envelope>,
    #[serde(default, deserialize_with = "present")]
    value: Option<Payload>,
    name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    data: Option<Payload>,
    request_id: Option<String>,
    port: Option<String>,
    #[serde(default, deserialize_with = "present")]
    request: Option<Payload>,
    response_type: Option<String>,
    timeout_ms: Option<u64>,
}

impl EffectFields {
    fn into_effect<E: serde::de::Error>(self) -> Result<Effect, E> {
        Ok(match self.kind.as_str() {
            "send" => Effect::Send {
                target: self.target,
                message: field(self.message, "message")?,
            },
            "output" => Effect::Output {
                value: field(self.value, "value")?,
            },
            "event" => Effect::Event {
                name: field(self.name, "name")?,
                data: field(self.data, "data")?,
            },
            "request" => Effect::Request(NewRequest {
                request_id: field(self.request_id, "request_id")?,
                port: field(self.port, "port")?,
                request: field(self.request, "request")?,
                response_type: stored_tag(field(self.response_type, "response_type")?),
                timeout_ms: self.timeout_ms,
            }),
            other => return Err(E::unknown_variant(other, &["send", "output", "event", "request"])),
        })
    }
}

/// A request for information made by an executor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct NewRequest {
    pub(crate) request_id: String,
    pub(crate) port: String,
    pub(crate) request: Payload,
    /// The routing tag of the `RequestResponse` the answer is delivered as.
    #[serde(deserialize_with = "crate::message::deserialize_tag")]
    pub(crate) response_type: String,
    pub(crate) timeout_ms: Option<u64>,
}

/// What an executor's handler can do besides returning its output.
///
/// Everything done through the context takes effect at the end of the
/// superstep: messages are delivered in the next superstep, shared-state
/// writes become visible to other executors in the next superstep, and
/// requests become pending. Reads of shared state see the state at the
/// start of the superstep plus this executor's own writes.
#[derive(Debug)]
pub struct WorkflowContext {
    instance_id: String,
    executor_id: String,
    superstep: u32,
    attempt: u32,
    accepts: Vec<&'static str>,
    state: BTreeMap<String, Value>,
    writes: BTreeMap<String, Option<Value>>,
    effects: Vec<Effect>,
    next_request: u32,
}

impl WorkflowContext {
    pub(crate) fn new(
        instance_id: String,
        executor_id: String,
        superstep: u32,
        attempt: u32,
        accepts: Vec<&'static str>,
        state: BTreeMap<String, Value>,
    ) -> Self {
        Self {
            instance_id,
            executor_id,
            superstep,
            attempt,
            accepts,
            state,
            writes: BTreeMap::new(),
            effects: Vec::new(),
            next_request: 0,
        }
    }

    /// A context for calling a handler directly in a unit test: instance
    /// `"test"`, superstep 1, empty shared state, no request ports.
    pub fn for_test(executor_id: impl Into<String>) -> Self {
        Self::new(
            "test".into(),
            executor_id.into(),
            1,
            1,
            Vec::new(),
            BTreeMap::new(),
        )
    }

    /// The workflow run's instance id.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// The id of the executor being run.
    pub fn executor_id(&self) -> &str {
        &self.executor_id
    }

    /// The current superstep (1 for the first).
    pub fn superstep(&self) -> u32 {
        self.superstep
    }

    /// Which attempt this is (1 on the first try).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Sends a message along this executor's outgoing edges, in the next
    /// superstep, to every successor that accepts its type.
    ///
    /// # Errors
    ///
    /// [`ExecutorError::Json`] if the message cannot be serialized.
    pub fn send_message<M: Message>(&mut self, message: &M) -> Result<(), ExecutorError> {
        self.send(None, message)
    }

    /// Sends a message to one successor only. The run fails if no edge
    /// from this executor leads to `target`.
    ///
    /// # Errors
    ///
    /// [`ExecutorError::Json`] if the message cannot be serialized.
    pub fn send_message_to<M: Message>(
        &mut self,
        target: impl Into<String>,
        message: &M,
    ) -> Result<(), ExecutorError> {
        self.send(Some(target.into()), message)
    }

    fn send<M: Message>(&mut self, target: Option<String>, message: &M) -> Result<(), ExecutorError> {
        let payload = Payload::new(message)?;
        self.effects.push(Effect::Send {
            target,
            message: Envelope {
                type_name: type_tag::<M>().to_owned(),
                payload,
                source: self.executor_id.clone(),
            },
        });
        Ok(())
    }

    /// Yields an output of the workflow: a `workflow_output` event now,
    /// and a place in the run's final output.
    ///
    /// # Errors
    ///
    /// [`ExecutorError::Json`] if the value cannot be serialized.
    pub fn yield_output<T: Serialize + ?Sized>(&mut self, output: &T) -> Result<(), ExecutorError> {
        let value = Payload::new(output)?;
        self.effects.push(Effect::Output { value });
        Ok(())
    }

    /// Adds a custom event to the run's stream (a `custom_event` with this
    /// name and data).
    ///
    /// # Errors
    ///
    /// [`ExecutorError::Json`] if the data cannot be serialized.
    pub fn add_event<T: Serialize + ?Sized>(
        &mut self,
        name: impl Into<String>,
        data: &T,
    ) -> Result<(), ExecutorError> {
        let data = Payload::new(data)?;
        self.effects.push(Effect::Event {
            name: name.into(),
            data,
        });
        Ok(())
    }

    /// Asks for information on `port`; returns the request id. The request
    /// is pending from the end of this superstep until a client answers it
    /// ([`WorkflowClient::respond`](crate::WorkflowClient::respond)); the
    /// answer is delivered to this executor as a
    /// [`RequestResponse<Req, Resp>`] message.
    ///
    /// # Errors
    ///
    /// A terminal error if this executor has no handler for
    /// `RequestResponse<Req, Resp>`, [`ExecutorError::Json`] if the request
    /// cannot be serialized.
    pub fn request_info<Req: Message, Resp: Message>(
        &mut self,
        port: &RequestPort<Req, Resp>,
        request: &Req,
    ) -> Result<String, ExecutorError> {
        self.request(port, request, None)
    }

    /// Like [`request_info`](Self::request_info), but if nobody answers
    /// within `timeout`, the executor gets a [`RequestResponse`] whose
    /// `response` is `Err(RequestTimedOut)`.
    ///
    /// # Errors
    ///
    /// As [`request_info`](Self::request_info).
    pub fn request_info_with_timeout<Req: Message, Resp: Message>(
        &mut self,
        port: &RequestPort<Req, Resp>,
        request: &Req,
        timeout: Duration,
    ) -> Result<String, ExecutorError> {
        self.request(port, request, Some(timeout))
    }

    fn request<Req: Message, Resp: Message>(
        &mut self,
        port: &RequestPort<Req, Resp>,
        request: &Req,
        timeout: Option<Duration>,
    ) -> Result<String, ExecutorError> {
        let response_type = type_tag::<RequestResponse<Req, Resp>>();
        if !self.accepts.contains(&response_type) {
            return Err(ExecutorError::terminal(format!(
                "executor '{}' made a request on port '{}' but has no handler for its answers: add a \
                 #[handler] method taking `{response_type}`",
                self.executor_id, port.id
            )));
        }
        let request = Payload::new(request)?;
        let request_id = format!("{}:{}:{}", self.executor_id, self.superstep, self.next_request);
        self.next_request += 1;
        self.effects.push(Effect::Request(NewRequest {
            request_id: request_id.clone(),
            port: port.id.to_owned(),
            request,
            response_type: response_type.to_owned(),
            timeout_ms: timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        }));
        Ok(request_id)
    }

    /// Reads a shared-state value.
    ///
    /// # Errors
    ///
    /// [`ExecutorError::Json`] if the stored value does not fit `T`.
    pub fn get_state<T: Message>(&self, key: &str) -> Result<Option<T>, ExecutorError> {
        let value = match self.writes.get(key) {
            Some(written) => written.as_ref(),
            None => self.state.get(key),
        };
        match value {
            Some(v) => Ok(Some(T::deserialize(v)?)),
            None => Ok(None),
        }
    }

    /// Writes a shared-state value. Other executors see it from the next
    /// superstep on. Two executors writing one key in the same superstep
    /// fail the run with [`WorkflowError::StateConflict`](crate::WorkflowError::StateConflict).
    ///
    /// # Errors
    ///
    /// [`ExecutorError::Json`] if the value cannot be serialized.
    pub fn set_state<T: Serialize + ?Sized>(
        &mut self,
        key: impl Into<String>,
        value: &T,
    ) -> Result<(), ExecutorError> {
        let value = serde_json::to_value(value)?;
        self.writes.insert(key.into(), Some(value));
        Ok(())
    }

    /// Removes a shared-state value (a write, for conflict detection).
    pub fn remove_state(&mut self, key: impl Into<String>) {
        self.writes.insert(key.into(), None);
    }

    pub(crate) fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    pub(crate) fn into_writes(self) -> BTreeMap<String, Option<Value>> {
        self.writes
    }
}
