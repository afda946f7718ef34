//! The futures orchestration code awaits: [`DurableFuture`], which
//! resolves only when the runner applies the history event that completes
//! it, and [`ContinueAsNew`].

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::de::DeserializeOwned;

use super::state::TaskKind;
use super::OrchestrationContext;
use crate::{OrchestrationError, Payload};

/// How an orchestration continues as new
/// ([`OrchestrationContext::continue_as_new_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContinueAsNewOptions {
    preserve_unprocessed_events: bool,
}

impl Default for ContinueAsNewOptions {
    fn default() -> Self {
        Self {
            preserve_unprocessed_events: true,
        }
    }
}

impl ContinueAsNewOptions {
    /// The defaults: unprocessed events are kept.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether events raised to the instance that the ending execution
    /// did not take go to the next execution (the default) or are
    /// dropped.
    pub fn preserve_unprocessed_events(mut self, keep: bool) -> Self {
        self.preserve_unprocessed_events = keep;
        self
    }

    pub(crate) fn preserves_unprocessed_events(self) -> bool {
        self.preserve_unprocessed_events
    }
}

/// The future returned by [`OrchestrationContext::continue_as_new`]. It
/// never resolves: the execution ends when the orchestration awaits it.
#[derive(Debug)]
#[must_use = "await it and return its result from the orchestration"]
pub struct ContinueAsNew<T>(pub(super) PhantomData<fn() -> T>);

impl<T> Future for ContinueAsNew<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<T> {
        Poll::Pending
    }
}

#[derive(Debug)]
pub(super) enum Source {
    Task {
        id: u64,
        kind: TaskKind,
    },
    External {
        waiter: u64,
        name: String,
    },
    Ready {
        result: Option<Result<Payload, OrchestrationError>>,
        what: String,
    },
}

/// A durable operation's result: an activity, a timer, an external event
/// or a sub-orchestration. Resolves to `Result<T, OrchestrationError>`.
#[derive(Debug)]
#[must_use = "durable futures do nothing visible unless awaited"]
pub struct DurableFuture<T> {
    pub(super) ctx: OrchestrationContext,
    pub(super) source: Source,
    pub(super) _marker: PhantomData<fn() -> T>,
}

impl<T> DurableFuture<T> {
    pub(super) fn task(ctx: OrchestrationContext, id: u64, kind: TaskKind) -> Self {
        Self {
            ctx,
            source: Source::Task { id, kind },
            _marker: PhantomData,
        }
    }

    pub(super) fn ready(ctx: OrchestrationContext, result: Result<Payload, OrchestrationError>) -> Self {
        Self {
            ctx,
            source: Source::Ready {
                result: Some(result),
                what: "value".into(),
            },
            _marker: PhantomData,
        }
    }

    pub(super) fn with_what(mut self, what: String) -> Self {
        if let Source::Ready { what: w, .. } = &mut self.source {
            *w = what;
        }
        self
    }
}

fn decode<T: DeserializeOwned>(value: Payload, what: &str) -> Result<T, OrchestrationError> {
    value.parse().map_err(|e| OrchestrationError::Deserialization {
        what: what.to_owned(),
        message: e.to_string(),
    })
}

impl<T: DeserializeOwned> Future for DurableFuture<T> {
    type Output = Result<T, OrchestrationError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match &mut this.source {
            Source::Ready { result, what } => match result.take() {
                Some(r) => Poll::Ready(r.and_then(|v| decode(v, what))),
                None => Poll::Pending,
            },
            Source::Task { id, kind } => {
                let mut state = this.ctx.lock();
                let Some(result) = state.results.remove(id) else {
                    state.wakers.insert(*id, cx.waker().clone());
                    return Poll::Pending;
                };
                drop(state);
                Poll::Ready(match (result, kind) {
                    (Ok(v), TaskKind::Activity(name)) => decode(v, &format!("result of activity '{name}'")),
                    (Ok(v), TaskKind::SubOrchestration(name, _)) => {
                        decode(v, &format!("output of sub-orchestration '{name}'"))
                    }
                    (Ok(v), TaskKind::Timer) => decode(v, "timer"),
                    (Err(failure), TaskKind::Activity(name)) => Err(OrchestrationError::ActivityFailed {
                        name: name.clone(),
                        failure,
                    }),
                    (Err(failure), TaskKind::SubOrchestration(name, instance_id)) => {
                        Err(OrchestrationError::SubOrchestrationFailed {
                            name: name.clone(),
                            instance_id: instance_id.clone(),
                            failure,
                        })
                    }
                    (Err(failure), TaskKind::Timer) => Err(OrchestrationError::Timeout(failure.message)),
                })
            }
            Source::External { waiter, name } => {
                let mut state = this.ctx.lock();
                let Some(w) = state.waiters.get_mut(waiter) else {
                    return Poll::Pending;
                };
                match w.delivered.take() {
                    Some(data) => {
                        state.waiters.remove(waiter);
                        drop(state);
                        let what = format!("external event '{name}'");
                        this.source = Source::Ready {
                            result: None,
                            what: what.clone(),
                        };
                        Poll::Ready(decode(data, &what))
                    }
                    None => {
                        w.waker = Some(cx.waker().clone());
                        Poll::Pending
                    }
                }
            }
        }
    }
}

impl<T> Drop for DurableFuture<T> {
    fn drop(&mut self) {
        if let Source::External { waiter, name } = &self.source {
            let mut state = self.ctx.lock();
            if let Some(w) = state.waiters.remove(waiter) {
                // An event delivered to a wait that was given up (a timeout
                // won the race) goes back for the next wait.
                if let Some(data) = w.delivered {
                    state.buffered_events.push_front((name.clone(), data));
                }
            }
        }
    }
}
