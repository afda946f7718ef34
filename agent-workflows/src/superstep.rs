//! The superstep loop: the orchestration that runs a workflow.
//!
//! Bulk-synchronous: in superstep `k` every executor with pending messages
//! runs, all of them in parallel (one activity each, joined), with every
//! message queued for it. What they send is routed along the edges and
//! delivered in superstep `k + 1`; their shared-state writes are merged
//! (two writers of one key are a conflict) and their requests become
//! pending. The run completes when no message and no request is pending.
//!
//! Everything here runs inside an orchestration, so it is deterministic:
//! ordered maps only, node order for ties, durable futures only.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use durable_core::{DurableFuture, InstanceId, OrchestrationContext, OrchestrationError, Payload};
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};

use crate::context::{Effect, NewRequest};
use crate::events::{LiveStatus, PendingRequest, WorkflowEvent};
use crate::graph::{Edge, Graph, NodeKind};
use crate::message::{Envelope, RESPONSE_SOURCE, START_SOURCE};
use crate::payload_fields::field;
use crate::{RequestTimedOut, WorkflowError};

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
struct InvocationInputRef<'a> {
    superstep: u32,
    attempt: u32,
    messages: &'a [Envelope],
    state: &'a BTreeMap<String, Value>,
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

/// Appends workflow events to the stream (and, for a sub-workflow, keeps
/// them for the parent).
#[derive(Clone)]
struct Emitter {
    ctx: OrchestrationContext,
    sink: Option<Arc<Mutex<Vec<WorkflowEvent>>>>,
}

impl Emitter {
    fn emit(&self, event: WorkflowEvent) -> Result<(), WorkflowError> {
        let event = match self.ctx.emit_event(event.name(), &event) {
            Ok(()) => event,
            Err(OrchestrationError::EventTooLarge { size, limit, .. }) => {
                // The stream keeps a marker; the value itself stays in the
                // history and in the final output.
                let marker = payload_of(&json!({ "$omitted": { "event_bytes": size, "limit": limit } }))?;
                let slim = omit_values(event, &marker);
                self.ctx.emit_event(slim.name(), &slim)?;
                slim
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(sink) = &self.sink {
            sink.lock().unwrap_or_else(|e| e.into_inner()).push(event);
        }
        Ok(())
    }
}

/// The payload of a value the run made itself (a failure to serialize it
/// is the runtime's, not an executor's).
fn payload_of<T: Serialize + ?Sized>(value: &T) -> Result<Payload, WorkflowError> {
    Payload::new(value).map_err(|e| WorkflowError::Runtime(e.to_string()))
}

/// `event` with each value replaced by `marker`, for a value too large
/// for the stream.
fn omit_values(event: WorkflowEvent, marker: &Payload) -> WorkflowEvent {
    match event {
        WorkflowEvent::ExecutorCompleted {
            superstep,
            executor_id,
            ..
        } => WorkflowEvent::ExecutorCompleted {
            superstep,
            executor_id,
            output: marker.clone(),
        },
        WorkflowEvent::WorkflowOutput {
            superstep,
            executor_id,
            ..
        } => WorkflowEvent::WorkflowOutput {
            superstep,
            executor_id,
            output: marker.clone(),
        },
        WorkflowEvent::CustomEvent {
            superstep,
            executor_id,
            name,
            ..
        } => WorkflowEvent::CustomEvent {
            superstep,
            executor_id,
            name,
            data: marker.clone(),
        },
        WorkflowEvent::SubWorkflowEvent {
            executor_id,
            instance_id,
            event,
        } => WorkflowEvent::SubWorkflowEvent {
            executor_id,
            instance_id,
            event: Box::new(omit_values(*event, marker)),
        },
        other => other,
    }
}

/// The answer to a request as its executor gets it: the JSON of a
/// [`RequestResponse`](crate::RequestResponse), whatever its types.
#[derive(Serialize)]
struct ResponseMessage<'a> {
    request_id: &'a str,
    port: &'a str,
    request: &'a Payload,
    response: Result<Payload, RequestTimedOut>,
}

/// A pending request and the durable waits for its answer.
struct OpenRequest {
    pending: PendingRequest,
    node: usize,
    port: String,
    response_type: String,
    timeout_ms: Option<u64>,
    answer: DurableFuture<Payload>,
    timer: Option<DurableFuture<()>>,
}

enum Answer {
    Response(Result<Payload, OrchestrationError>),
    TimedOut(Result<(), OrchestrationError>),
}

impl OpenRequest {
    fn poll_answer(&mut self, cx: &mut Context<'_>) -> Poll<Answer> {
        if let Poll::Ready(r) = Pin::new(&mut self.answer).poll(cx) {
            return Poll::Ready(Answer::Response(r));
        }
        if let Some(timer) = &mut self.timer {
            if let Poll::Ready(r) = Pin::new(timer).poll(cx) {
                return Poll::Ready(Answer::TimedOut(r));
            }
        }
        Poll::Pending
    }
}

/// The result of one node's work in a superstep.
struct Invocation {
    handled: Vec<Handled>,
    writes: BTreeMap<String, Option<Value>>,
}

/// One workflow run, inside its orchestration.
pub(crate) struct Run {
    ctx: OrchestrationContext,
    emitter: Emitter,
    graph: Arc<Graph>,
    /// The orchestration name; activities are `"{name}/{executor id}"`.
    name: Arc<str>,
    superstep: u32,
    queues: BTreeMap<usize, Vec<Envelope>>,
    barriers: BTreeMap<usize, Vec<VecDeque<Payload>>>,
    state: BTreeMap<String, Value>,
    outputs: Vec<Payload>,
    requests: Vec<OpenRequest>,
}

/// Runs a workflow in an orchestration.
pub(crate) async fn run_workflow(
    ctx: OrchestrationContext,
    graph: Arc<Graph>,
    name: Arc<str>,
    input: Payload,
    mode: RunMode,
) -> Result<Payload, WorkflowError> {
    let sink = (mode == RunMode::Child).then(|| Arc::new(Mutex::new(Vec::new())));
    let mut run = Run {
        emitter: Emitter {
            ctx: ctx.clone(),
            sink: sink.clone(),
        },
        ctx,
        graph,
        name,
        superstep: 0,
        queues: BTreeMap::new(),
        barriers: BTreeMap::new(),
        state: BTreeMap::new(),
        outputs: Vec::new(),
        requests: Vec::new(),
    };
    let result = run.execute(input).await;
    let result = match result {
        Ok(()) => run.finish(),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => {
            let outputs = std::mem::take(&mut run.outputs);
            match sink {
                None => payload_of(&outputs),
                Some(sink) => {
                    let events = std::mem::take(&mut *sink.lock().unwrap_or_else(|e| e.into_inner()));
                    payload_of(&ChildOutput { outputs, events })
                }
            }
        }
        Err(error) => {
            // Best effort: the failure itself is what matters.
            let _ = run.emitter.emit(WorkflowEvent::WorkflowFailed {
                superstep: run.superstep,
                error: error.to_string(),
            });
            Err(error)
        }
    }
}

impl Run {
    fn emit(&self, event: WorkflowEvent) -> Result<(), WorkflowError> {
        self.emitter.emit(event)
    }

    fn set_status(&self) -> Result<(), WorkflowError> {
        let status = LiveStatus {
            superstep: self.superstep,
            pending_requests: self.requests.iter().map(|r| r.pending.clone()).collect(),
        };
        self.ctx.set_custom_status(&status).map_err(|e| {
            WorkflowError::Runtime(format!(
                "the live status with {} pending request(s) does not fit: {e}; make the requests smaller",
                status.pending_requests.len()
            ))
        })
    }

    async fn execute(&mut self, input: Payload) -> Result<(), WorkflowError> {
        let graph = self.graph.clone();
        self.emit(WorkflowEvent::WorkflowStarted {
            workflow: self.name.to_string(),
            start_executor: graph.nodes[graph.start].id.clone(),
            max_supersteps: graph.max_supersteps,
        })?;
        self.set_status()?;
        self.deliver(
            graph.start,
            Envelope {
                type_name: graph.start_type.to_owned(),
                payload: input,
                source: START_SOURCE.to_owned(),
            },
        );
        loop {
            self.take_answers(false).await?;
            if self.queues.is_empty() {
                if self.requests.is_empty() {
                    return Ok(());
                }
                self.take_answers(true).await?;
                continue;
            }
            if self.superstep >= graph.max_supersteps {
                return Err(WorkflowError::MaxSuperstepsExceeded {
                    workflow: self.name.to_string(),
                    limit: graph.max_supersteps,
                    pending: self.queues.keys().map(|&i| graph.nodes[i].id.clone()).collect(),
                });
            }
            self.superstep += 1;
            self.run_superstep().await?;
        }
    }

    fn finish(&mut self) -> Result<(), WorkflowError> {
        self.set_status()?;
        self.emit(WorkflowEvent::WorkflowCompleted {
            supersteps: self.superstep,
            outputs: self.outputs.len(),
        })
    }

    fn deliver(&mut self, node: usize, envelope: Envelope) {
        self.queues.entry(node).or_default().push(envelope);
    }

    /// Takes the answers that have arrived; with `wait`, waits for at
    /// least one first.
    async fn take_answers(&mut self, wait: bool) -> Result<(), WorkflowError> {
        if self.requests.is_empty() {
            return Ok(());
        }
        let ready = {
            let requests = &mut self.requests;
            let mut poll_all = |cx: &mut Context<'_>| {
                let ready: Vec<(usize, Answer)> = requests
                    .iter_mut()
                    .enumerate()
                    .filter_map(|(i, r)| match r.poll_answer(cx) {
                        Poll::Ready(answer) => Some((i, answer)),
                        Poll::Pending => None,
                    })
                    .collect();
                ready
            };
            if wait {
                futures::future::poll_fn(|cx| {
                    let ready = poll_all(cx);
                    if ready.is_empty() {
                        Poll::Pending
                    } else {
                        Poll::Ready(ready)
                    }
                })
                .await
            } else {
                poll_all(&mut Context::from_waker(futures::task::noop_waker_ref()))
            }
        };
        if ready.is_empty() {
            return Ok(());
        }
        let mut done = Vec::new();
        for (i, answer) in ready {
            if self.answer(i, answer)? {
                done.push(i);
            }
        }
        for i in done.into_iter().rev() {
            self.requests.remove(i);
        }
        self.set_status()
    }

    /// Applies an answer; returns whether the request is finished.
    fn answer(&mut self, i: usize, answer: Answer) -> Result<bool, WorkflowError> {
        let request = &self.requests[i];
        let request_id = request.pending.request_id.clone();
        let executor_id = request.pending.executor_id.clone();
        let response = match answer {
            Answer::Response(Ok(value)) => Ok(value),
            Answer::Response(Err(e)) => return Err(e.into()),
            Answer::TimedOut(fired) => {
                fired?;
                Err(RequestTimedOut {
                    request_id: request_id.clone(),
                    timeout_ms: request.timeout_ms.unwrap_or(0),
                })
            }
        };
        let timed_out = response.is_err();
        let payload = payload_of(&ResponseMessage {
            request_id: &request_id,
            port: &request.port,
            request: &request.pending.request,
            response,
        })?;
        let node = request.node;
        let response_type = request.response_type.clone();
        if let NodeKind::Executor(executor) = &self.graph.nodes[node].kind {
            if let Err(error) = executor.check(&response_type, &payload) {
                self.emit(WorkflowEvent::ResponseRejected {
                    request_id: request_id.clone(),
                    error: format!("the answer does not fit {response_type}: {error}"),
                })?;
                let open = &mut self.requests[i];
                open.pending.rejected_answers += 1;
                open.answer = self.ctx.wait_for_external_event::<Payload>(response_event_name(
                    &request_id,
                    open.pending.rejected_answers,
                ));
                return Ok(false);
            }
        }
        self.emit(if timed_out {
            WorkflowEvent::RequestTimedOut {
                request_id,
                executor_id,
            }
        } else {
            WorkflowEvent::RequestAnswered {
                request_id,
                executor_id,
            }
        })?;
        self.deliver(
            node,
            Envelope {
                type_name: response_type,
                payload,
                source: RESPONSE_SOURCE.to_owned(),
            },
        );
        Ok(true)
    }

    fn open_request(&mut self, node: usize, request: NewRequest) -> Result<(), WorkflowError> {
        let executor_id = self.graph.nodes[node].id.clone();
        self.emit(WorkflowEvent::RequestInfo {
            superstep: self.superstep,
            request_id: request.request_id.clone(),
            executor_id: executor_id.clone(),
            port: request.port.clone(),
            request: request.request.clone(),
            timeout_ms: request.timeout_ms,
        })?;
        let answer = self
            .ctx
            .wait_for_external_event::<Payload>(response_event_name(&request.request_id, 0));
        let timer = request
            .timeout_ms
            .map(|ms| self.ctx.create_timer_in(Duration::from_millis(ms)));
        self.requests.push(OpenRequest {
            pending: PendingRequest {
                request_id: request.request_id,
                executor_id,
                request: request.request,
                rejected_answers: 0,
            },
            node,
            port: request.port,
            response_type: request.response_type,
            timeout_ms: request.timeout_ms,
            answer,
            timer,
        });
        Ok(())
    }

    async fn run_superstep(&mut self) -> Result<(), WorkflowError> {
        let superstep = self.superstep;
        let graph = self.graph.clone();
        let batches: Vec<(usize, Vec<Envelope>)> = std::mem::take(&mut self.queues).into_iter().collect();
        self.set_status()?;
        self.emit(WorkflowEvent::SuperstepStarted {
            superstep,
            executors: batches.iter().map(|(i, _)| graph.nodes[*i].id.clone()).collect(),
        })?;
        for (node, messages) in &batches {
            for message in messages {
                self.emit(WorkflowEvent::ExecutorInvoked {
                    superstep,
                    executor_id: graph.nodes[*node].id.clone(),
                    message_type: message.type_name.clone(),
                    source: message.source.clone(),
                })?;
            }
        }
        let nodes: Vec<usize> = batches.iter().map(|(node, _)| *node).collect();
        let invocations: Vec<BoxFuture<'static, Result<Invocation, WorkflowError>>> = batches
            .into_iter()
            .map(|(node, messages)| self.invoke(node, messages))
            .collect();
        let results = durable_core::future::join_all(invocations).await;

        let mut failure = None;
        let mut conflict = None;
        let mut writers: BTreeMap<String, usize> = BTreeMap::new();
        let mut writes = Vec::new();
        let mut requests = Vec::new();
        for (node, result) in nodes.iter().zip(results) {
            let invocation = match result {
                Ok(invocation) => invocation,
                Err(e) => {
                    failure.get_or_insert(e);
                    continue;
                }
            };
            for handled in invocation.handled {
                for effect in handled.effects {
                    match effect {
                        Effect::Send { target, message } => self.route(*node, target.as_deref(), message)?,
                        Effect::Output { value } => self.outputs.push(value),
                        Effect::Request(request) => requests.push((*node, request)),
                        Effect::Event { .. } => {}
                    }
                }
                let spec = &graph.nodes[*node];
                if let (NodeKind::Executor(_), Some(output_type)) = (&spec.kind, spec.output_type) {
                    let message = Envelope {
                        type_name: output_type.to_owned(),
                        payload: handled.output,
                        source: spec.id.clone(),
                    };
                    self.route(*node, None, message)?;
                }
            }
            for (key, value) in invocation.writes {
                match writers.get(&key) {
                    Some(&first) if first != *node => {
                        conflict.get_or_insert_with(|| WorkflowError::StateConflict {
                            key: key.clone(),
                            superstep,
                            first: graph.nodes[first].id.clone(),
                            second: graph.nodes[*node].id.clone(),
                        });
                    }
                    _ => {
                        writers.insert(key.clone(), *node);
                        writes.push((key, value));
                    }
                }
            }
        }
        if let Some(e) = failure.or(conflict) {
            return Err(e);
        }
        for (key, value) in writes {
            match value {
                Some(v) => self.state.insert(key, v),
                None => self.state.remove(&key),
            };
        }
        for (node, request) in requests {
            self.open_request(node, request)?;
        }
        self.set_status()?;
        self.emit(WorkflowEvent::SuperstepCompleted { superstep })
    }

    /// The work of one node in this superstep: an activity for an
    /// executor (retried as its policy says), a sub-orchestration per
    /// message for a sub-workflow.
    fn invoke(
        &self,
        node: usize,
        messages: Vec<Envelope>,
    ) -> BoxFuture<'static, Result<Invocation, WorkflowError>> {
        let spec = self.graph.nodes[node].clone();
        let ctx = self.ctx.clone();
        let emitter = self.emitter.clone();
        let superstep = self.superstep;
        let path = format!("{}/{}", self.name, spec.id);
        match spec.kind {
            NodeKind::Executor(_) => {
                let state = self.state.clone();
                let policy = spec.retry.clone();
                let executor_id = spec.id.clone();
                async move {
                    let started = ctx.current_utc_datetime();
                    let mut attempt = 1;
                    loop {
                        let input = InvocationInputRef {
                            superstep,
                            attempt,
                            messages: &messages,
                            state: &state,
                        };
                        let (error, retryable) =
                            match ctx.call_activity::<InvocationOutcome>(path.clone(), &input).await {
                                Ok(InvocationOutcome::Completed { handled, writes }) => {
                                    report(&emitter, superstep, &executor_id, &handled)?;
                                    return Ok(Invocation { handled, writes });
                                }
                                Ok(InvocationOutcome::Terminal { error }) => (error, false),
                                Err(OrchestrationError::ActivityFailed { failure, .. }) => {
                                    (failure.message, true)
                                }
                                Err(e) => (e.to_string(), false),
                            };
                        let delay = policy.delay_before_retry(attempt).filter(|delay| {
                            retryable
                                && policy.total_timeout.is_none_or(|total| {
                                    let elapsed = (ctx.current_utc_datetime() - started)
                                        .to_std()
                                        .unwrap_or_default();
                                    elapsed + *delay <= total
                                })
                        });
                        emitter.emit(WorkflowEvent::ExecutorFailed {
                            superstep,
                            executor_id: executor_id.clone(),
                            attempt,
                            error: error.clone(),
                            will_retry: delay.is_some(),
                        })?;
                        match delay {
                            None => {
                                return Err(WorkflowError::ExecutorFailed {
                                    executor_id,
                                    superstep,
                                    attempts: attempt,
                                    error,
                                })
                            }
                            Some(delay) => {
                                if !delay.is_zero() {
                                    ctx.create_timer_in(delay).await?;
                                }
                                attempt += 1;
                            }
                        }
                    }
                }
                .boxed()
            }
            NodeKind::SubWorkflow(_) => {
                let output_type = spec.output_type.map(str::to_owned);
                let executor_id = spec.id.clone();
                async move {
                    let mut handled = Vec::new();
                    for (i, message) in messages.into_iter().enumerate() {
                        let child = format!("{}:{executor_id}:{superstep}:{i}", ctx.instance_id());
                        let child =
                            InstanceId::new(child).map_err(|e| WorkflowError::Runtime(e.to_string()))?;
                        emitter.emit(WorkflowEvent::SubWorkflowStarted {
                            superstep,
                            executor_id: executor_id.clone(),
                            instance_id: child.to_string(),
                        })?;
                        let result = ctx
                            .call_sub_orchestration_with_id::<ChildOutput>(
                                path.clone(),
                                child.clone(),
                                &message.payload,
                            )
                            .await;
                        let output = match result {
                            Ok(output) => output,
                            Err(e) => {
                                let error = match e {
                                    OrchestrationError::SubOrchestrationFailed { failure, .. } => {
                                        failure.message
                                    }
                                    other => other.to_string(),
                                };
                                emitter.emit(WorkflowEvent::ExecutorFailed {
                                    superstep,
                                    executor_id: executor_id.clone(),
                                    attempt: 1,
                                    error: error.clone(),
                                    will_retry: false,
                                })?;
                                return Err(WorkflowError::ExecutorFailed {
                                    executor_id,
                                    superstep,
                                    attempts: 1,
                                    error,
                                });
                            }
                        };
                        for event in output.events {
                            emitter.emit(WorkflowEvent::SubWorkflowEvent {
                                executor_id: executor_id.clone(),
                                instance_id: child.to_string(),
                                event: Box::new(event),
                            })?;
                        }
                        let outputs = payload_of(&output.outputs)?;
                        emitter.emit(WorkflowEvent::ExecutorCompleted {
                            superstep,
                            executor_id: executor_id.clone(),
                            output: outputs,
                        })?;
                        let effects = match &output_type {
                            Some(output_type) => output
                                .outputs
                                .into_iter()
                                .map(|payload| Effect::Send {
                                    target: None,
                                    message: Envelope {
                                        type_name: output_type.clone(),
                                        payload,
                                        source: executor_id.clone(),
                                    },
                                })
                                .collect(),
                            None => Vec::new(),
                        };
                        handled.push(Handled {
                            output: Payload::null(),
                            effects,
                        });
                    }
                    Ok(Invocation {
                        handled,
                        writes: BTreeMap::new(),
                    })
                }
                .boxed()
            }
        }
    }

    /// Routes a message sent by `from` along its outgoing edges.
    fn route(&mut self, from: usize, target: Option<&str>, message: Envelope) -> Result<(), WorkflowError> {
        let graph = self.graph.clone();
        if !graph.message_types.contains(message.type_name.as_str()) {
            return Err(WorkflowError::UnknownMessageType {
                executor_id: graph.nodes[from].id.clone(),
                message_type: message.type_name,
            });
        }
        let accepts = |node: usize| graph.nodes[node].accepts.iter().any(|t| *t == message.type_name);
        let wanted = |node: usize| target.is_none_or(|t| graph.nodes[node].id == t);
        let mut reached = false;
        let mut deliveries = Vec::new();
        for (edge_index, edge) in graph.edges.iter().enumerate() {
            match edge {
                Edge::Direct {
                    from: f,
                    to,
                    condition,
                } if *f == from => {
                    if !wanted(*to) || !accepts(*to) {
                        continue;
                    }
                    reached = true;
                    let passes = match condition {
                        Some((message_type, condition)) => {
                            *message_type == message.type_name && condition(&message.payload)
                        }
                        None => true,
                    };
                    if passes {
                        deliveries.push((*to, message.clone()));
                    }
                }
                Edge::Switch {
                    from: f,
                    message_type,
                    cases,
                    default,
                } if *f == from && *message_type == message.type_name => {
                    reached |= cases.iter().any(|(_, n)| wanted(*n)) || default.is_some_and(wanted);
                    let chosen = cases
                        .iter()
                        .find(|(condition, _)| condition(&message.payload))
                        .map(|(_, n)| *n)
                        .or(*default);
                    if let Some(to) = chosen.filter(|n| wanted(*n)) {
                        deliveries.push((to, message.clone()));
                    }
                }
                Edge::FanOut {
                    from: f,
                    targets,
                    selector,
                } if *f == from => {
                    reached |= targets.iter().any(|n| wanted(*n) && accepts(*n));
                    let chosen: Vec<usize> = match selector {
                        Some((message_type, selector)) if *message_type == message.type_name => {
                            let ids: Vec<String> =
                                targets.iter().map(|n| graph.nodes[*n].id.clone()).collect();
                            let picked = selector(&message.payload, &ids);
                            targets
                                .iter()
                                .copied()
                                .filter(|n| picked.iter().any(|id| *id == graph.nodes[*n].id))
                                .collect()
                        }
                        _ => targets.clone(),
                    };
                    for to in chosen {
                        if wanted(to) && accepts(to) {
                            deliveries.push((to, message.clone()));
                        }
                    }
                }
                Edge::FanIn {
                    sources,
                    to,
                    message_type,
                    batch_type,
                } if *message_type == message.type_name && wanted(*to) => {
                    let Some(slot) = sources.iter().position(|s| *s == from) else {
                        continue;
                    };
                    reached = true;
                    let slots = self
                        .barriers
                        .entry(edge_index)
                        .or_insert_with(|| vec![VecDeque::new(); sources.len()]);
                    slots[slot].push_back(message.payload.clone());
                    if slots.iter().all(|s| !s.is_empty()) {
                        let batch: Vec<Payload> = slots.iter_mut().filter_map(VecDeque::pop_front).collect();
                        let batch = payload_of(&batch)?;
                        deliveries.push((
                            *to,
                            Envelope {
                                type_name: (*batch_type).to_owned(),
                                payload: batch,
                                source: message.source.clone(),
                            },
                        ));
                    }
                }
                _ => {}
            }
        }
        if let (Some(target), false) = (target, reached) {
            return Err(WorkflowError::InvalidTarget {
                executor_id: graph.nodes[from].id.clone(),
                target: target.to_owned(),
                message_type: message.type_name,
            });
        }
        for (to, message) in deliveries {
            self.deliver(to, message);
        }
        Ok(())
    }
}

/// Emits the events of a completed invocation: per handled message, the
/// custom events and outputs in the order the handler made them, then
/// `executor_completed` with its output.
fn report(
    emitter: &Emitter,
    superstep: u32,
    executor_id: &str,
    handled: &[Handled],
) -> Result<(), WorkflowError> {
    for h in handled {
        for effect in &h.effects {
            match effect {
                Effect::Output { value } => emitter.emit(WorkflowEvent::WorkflowOutput {
                    superstep,
                    executor_id: executor_id.to_owned(),
                    output: value.clone(),
                })?,
                Effect::Event { name, data } => emitter.emit(WorkflowEvent::CustomEvent {
                    superstep,
                    executor_id: executor_id.to_owned(),
                    name: name.clone(),
                    data: data.clone(),
                })?,
                Effect::Send { .. } | Effect::Request(_) => {}
            }
        }
        emitter.emit(WorkflowEvent::ExecutorCompleted {
            superstep,
            executor_id: executor_id.to_owned(),
            output: h.output.clone(),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
