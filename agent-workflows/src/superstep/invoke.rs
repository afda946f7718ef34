//! Invoking the executors of a superstep: one activity each (a child
//! workflow for a sub-workflow), retried as the executor's policy says.

use std::collections::BTreeMap;

use durable_core::{InstanceId, OrchestrationError, Payload};
use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::Value;

use super::wire::{ChildOutput, Handled, InvocationInputRef, InvocationOutcome};
use super::{payload_of, report, Run};
use crate::context::Effect;
use crate::events::WorkflowEvent;
use crate::graph::NodeKind;
use crate::message::Envelope;
use crate::WorkflowError;

/// The result of one node's work in a superstep.
pub(super) struct Invocation {
    pub(super) handled: Vec<Handled>,
    pub(super) writes: BTreeMap<String, Option<Value>>,
}

impl Run {
    /// The work of one node in this superstep: an activity for an
    /// executor (retried as its policy says), a sub-orchestration per
    /// message for a sub-workflow.
    pub(super) fn invoke(
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
}
