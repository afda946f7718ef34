//! Requests to people: opening one, waiting for its answer (or its
//! timeout), and delivering the answer as a message.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use durable_core::{DurableFuture, OrchestrationError, Payload};
use serde::Serialize;

use super::wire::response_event_name;
use super::{payload_of, Run};
use crate::context::NewRequest;
use crate::events::{PendingRequest, WorkflowEvent};
use crate::graph::NodeKind;
use crate::message::{Envelope, RESPONSE_SOURCE};
use crate::{RequestTimedOut, WorkflowError};

/// The answer to a request as its executor gets it: the JSON of a
/// [`RequestResponse`](crate::RequestResponse), whatever its types.
#[derive(Serialize)]
pub(super) struct ResponseMessage<'a> {
    pub(super) request_id: &'a str,
    pub(super) port: &'a str,
    pub(super) request: &'a Payload,
    pub(super) response: Result<Payload, RequestTimedOut>,
}

/// A pending request and the durable waits for its answer.
pub(super) struct OpenRequest {
    pub(super) pending: PendingRequest,
    pub(super) node: usize,
    pub(super) port: String,
    pub(super) response_type: String,
    pub(super) timeout_ms: Option<u64>,
    pub(super) answer: DurableFuture<Payload>,
    pub(super) timer: Option<DurableFuture<()>>,
}

pub(super) enum Answer {
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

impl Run {
    /// Takes the answers that have arrived; with `wait`, waits for at
    /// least one first.
    pub(super) async fn take_answers(&mut self, wait: bool) -> Result<(), WorkflowError> {
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
    pub(super) fn answer(&mut self, i: usize, answer: Answer) -> Result<bool, WorkflowError> {
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

    pub(super) fn open_request(&mut self, node: usize, request: NewRequest) -> Result<(), WorkflowError> {
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
}
