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

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use durable_core::{OrchestrationContext, OrchestrationError, Payload};
use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::{json, Value};

use crate::context::Effect;
use crate::events::{LiveStatus, WorkflowEvent};
use crate::graph::{Barriers, Graph, NodeKind};
use crate::message::{Envelope, START_SOURCE};
use crate::WorkflowError;

mod invoke;
mod requests;
mod wire;

use invoke::Invocation;
use requests::OpenRequest;
pub(crate) use wire::{
    response_event_name, ChildOutput, Handled, InvocationInput, InvocationOutcome, RunMode,
};

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
pub(crate) fn payload_of<T: Serialize + ?Sized>(value: &T) -> Result<Payload, WorkflowError> {
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

/// One workflow run, inside its orchestration.
pub(crate) struct Run {
    ctx: OrchestrationContext,
    emitter: Emitter,
    graph: Arc<Graph>,
    /// The orchestration name; activities are `"{name}/{executor id}"`.
    name: Arc<str>,
    superstep: u32,
    queues: BTreeMap<usize, Vec<Envelope>>,
    barriers: Barriers,
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

    /// Routes a message sent by `from` along its outgoing edges (see
    /// [`Graph::route`]) and delivers it where it goes.
    fn route(&mut self, from: usize, target: Option<&str>, message: Envelope) -> Result<(), WorkflowError> {
        let graph = self.graph.clone();
        for (to, message) in graph.route(from, target, message, &mut self.barriers)? {
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
