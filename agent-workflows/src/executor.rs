//! Executors: units of work with typed inputs, run as durable activities.
//!
//! Write them with [`#[executor]`](crate::executor) on an async fn or on an
//! impl block with `#[handler]` methods. The traits here are what the
//! macro implements; implementing them by hand works too.

use std::any::TypeId;
use std::sync::Arc;

use durable_core::{Payload, RetryPolicy};
use futures::future::BoxFuture;

use crate::message::{type_tag, Message, MessageType};
use crate::{ExecutorError, WorkflowContext};

/// The future a handler returns.
pub type HandlerFuture<'a, O> = BoxFuture<'a, Result<O, ExecutorError>>;

/// A handler of messages of type `M` for executor `E`.
pub type HandlerFn<E, M> =
    for<'a> fn(&'a E, M, &'a mut WorkflowContext) -> HandlerFuture<'a, <E as Executor>::Output>;

/// An executor: an id, the message types it handles (see [`Handles`]) and
/// the output its handlers return, which is sent along its outgoing edges.
///
/// An output of type `()` sends nothing; such executors send with
/// [`WorkflowContext::send_message`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a workflow executor",
    note = "make it one with #[executor] on an async fn, or on an impl block with #[handler] methods"
)]
pub trait Executor: Send + Sync + Sized + 'static {
    /// What the handlers return, sent to the successors.
    type Output: Message;

    /// The executor id, unique in a workflow (no `/`).
    fn id(&self) -> &str;

    /// How failed invocations are retried (by default they are not).
    fn retry_policy(&self) -> Option<RetryPolicy> {
        None
    }

    /// The handlers, one per message type.
    fn handlers() -> HandlerSet<Self>;

    /// Turns the executor into a graph node. Executors do not override
    /// this; sub-workflows do.
    #[doc(hidden)]
    fn __into_node(self) -> crate::graph::NodeSpec {
        crate::graph::NodeSpec::executor(self)
    }
}

/// Marks that executor `Self` has a handler for messages of type `M`, so an
/// edge may carry `M` to it.
#[diagnostic::on_unimplemented(
    message = "executor `{Self}` cannot receive messages of type `{M}`",
    label = "this executor has no handler for `{M}`",
    note = "an edge's target must handle its source's output type: change the handler's input type, \
            or add a #[handler] taking `{M}`"
)]
pub trait Handles<M>: Executor {}

/// An executor whose id is known at compile time (what `#[executor]`
/// generates), so `#[workflow]` can reject duplicate ids while compiling.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no compile-time executor id",
    label = "#[workflow] checks the ids of executors passed by path",
    note = "implement `StaticExecutorId` for `{Self}`, or bind the executor to a local (`let e = ...;`) and pass that"
)]
pub trait StaticExecutorId {
    /// The id.
    const ID: &'static str;
}

/// Executor methods for use in the builder and in tests.
pub trait ExecutorExt: Executor {
    /// Runs the handler of `message` directly, as a workflow would (with
    /// the message and the output going through JSON). For unit tests of
    /// executors, with [`WorkflowContext::for_test`].
    ///
    /// ```
    /// use agent_workflows::prelude::*;
    ///
    /// #[executor]
    /// async fn double(n: u32) -> Result<u32, ExecutorError> {
    ///     Ok(n * 2)
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut ctx = WorkflowContext::for_test("double");
    /// assert_eq!(double.handle(21, &mut ctx).await.unwrap(), 42);
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// The handler's error, or [`ExecutorError::Json`] if the message or
    /// the output does not survive JSON.
    fn handle<'a, M: Message>(
        &'a self,
        message: M,
        ctx: &'a mut WorkflowContext,
    ) -> HandlerFuture<'a, Self::Output>
    where
        Self: Handles<M>,
    {
        Box::pin(async move {
            let handlers = Self::handlers();
            let type_name = type_tag::<M>();
            let entry = handlers
                .entries
                .iter()
                .find(|e| e.message.tag == type_name)
                .ok_or_else(|| ExecutorError::terminal(format!("no handler for {type_name}")))?;
            let output = entry.handler.call(self, Payload::new(&message)?, ctx).await?;
            Ok(output.parse()?)
        })
    }

    /// The same executor under another id (to use one executor type twice
    /// in a workflow).
    fn with_id(self, id: impl Into<String>) -> Configured<Self> {
        Configured {
            inner: self,
            id: Some(id.into()),
            retry: None,
        }
    }

    /// The same executor with another retry policy.
    fn with_retry(self, policy: RetryPolicy) -> Configured<Self> {
        Configured {
            inner: self,
            id: None,
            retry: Some(policy),
        }
    }
}

impl<E: Executor> ExecutorExt for E {}

/// An executor with another id or retry policy; see [`ExecutorExt`].
#[derive(Debug, Clone)]
pub struct Configured<E> {
    inner: E,
    id: Option<String>,
    retry: Option<RetryPolicy>,
}

impl<E: Executor> Configured<E> {
    /// Sets the id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets the retry policy.
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }
}

impl<E: Executor> Executor for Configured<E> {
    type Output = E::Output;

    fn id(&self) -> &str {
        self.id.as_deref().unwrap_or_else(|| self.inner.id())
    }

    fn retry_policy(&self) -> Option<RetryPolicy> {
        self.retry.clone().or_else(|| self.inner.retry_policy())
    }

    fn handlers() -> HandlerSet<Self> {
        let inner = E::handlers();
        HandlerSet {
            entries: inner
                .entries
                .into_iter()
                .map(|entry| HandlerEntry {
                    message: entry.message,
                    handler: Box::new(Unwrap(entry.handler)) as Box<dyn ErasedHandler<Self>>,
                })
                .collect(),
        }
    }
}

impl<E: Handles<M>, M> Handles<M> for Configured<E> {}

struct Unwrap<E>(Box<dyn ErasedHandler<E>>);

impl<E: Executor> ErasedHandler<Configured<E>> for Unwrap<E> {
    fn call<'a>(
        &'a self,
        executor: &'a Configured<E>,
        message: Payload,
        ctx: &'a mut WorkflowContext,
    ) -> BoxFuture<'a, Result<Payload, ExecutorError>> {
        self.0.call(&executor.inner, message, ctx)
    }

    fn check(&self, message: &Payload) -> Result<(), serde_json::Error> {
        self.0.check(message)
    }
}

/// The handlers of an executor, by message type.
pub struct HandlerSet<E> {
    entries: Vec<HandlerEntry<E>>,
}

struct HandlerEntry<E> {
    message: MessageType,
    handler: Box<dyn ErasedHandler<E>>,
}

impl<E> std::fmt::Debug for HandlerSet<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| e.message.tag))
            .finish()
    }
}

impl<E: Executor> Default for HandlerSet<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E: Executor> HandlerSet<E> {
    /// No handlers.
    pub fn new() -> Self {
        Self { entries: Vec::new() }
    }

    /// Adds the handler of messages of type `M`.
    pub fn on<M: Message>(mut self, handler: HandlerFn<E, M>) -> Self {
        let message = MessageType::of::<M>();
        self.entries.retain(|e| e.message.tag != message.tag);
        self.entries.push(HandlerEntry {
            message,
            handler: Box::new(Typed::<E, M> { handler }),
        });
        self
    }

    /// The handled message types.
    pub(crate) fn message_types(&self) -> Vec<MessageType> {
        self.entries.iter().map(|e| e.message).collect()
    }
}

trait ErasedHandler<E>: Send + Sync {
    fn call<'a>(
        &'a self,
        executor: &'a E,
        message: Payload,
        ctx: &'a mut WorkflowContext,
    ) -> BoxFuture<'a, Result<Payload, ExecutorError>>;

    fn check(&self, message: &Payload) -> Result<(), serde_json::Error>;
}

struct Typed<E: Executor, M> {
    handler: HandlerFn<E, M>,
}

impl<E: Executor, M: Message> ErasedHandler<E> for Typed<E, M> {
    fn call<'a>(
        &'a self,
        executor: &'a E,
        message: Payload,
        ctx: &'a mut WorkflowContext,
    ) -> BoxFuture<'a, Result<Payload, ExecutorError>> {
        let handler = self.handler;
        Box::pin(async move {
            let message: M = message.parse().map_err(|e| {
                ExecutorError::terminal(format!(
                    "executor '{}' got a message that is not a valid {}: {e}",
                    ctx.executor_id(),
                    type_tag::<M>()
                ))
            })?;
            let output = handler(executor, message, ctx).await?;
            Ok(Payload::new(&output)?)
        })
    }

    fn check(&self, message: &Payload) -> Result<(), serde_json::Error> {
        message.parse::<M>().map(drop)
    }
}

/// An executor with its handlers, behind `dyn`.
pub(crate) trait ErasedExecutor: Send + Sync {
    /// The routing tags of the handled message types.
    fn accepts(&self) -> &[&'static str];

    /// The handled message types.
    fn message_types(&self) -> Vec<MessageType>;

    fn check(&self, type_name: &str, message: &Payload) -> Result<(), String>;

    fn invoke<'a>(
        &'a self,
        type_name: &'a str,
        message: Payload,
        ctx: &'a mut WorkflowContext,
    ) -> BoxFuture<'a, Result<Payload, ExecutorError>>;
}

pub(crate) struct Node<E: Executor> {
    pub(crate) executor: E,
    pub(crate) handlers: HandlerSet<E>,
    pub(crate) accepts: Vec<&'static str>,
}

impl<E: Executor> Node<E> {
    pub(crate) fn new(executor: E) -> Arc<Self> {
        let handlers = E::handlers();
        let accepts = handlers.message_types().iter().map(|m| m.tag).collect();
        Arc::new(Self {
            executor,
            handlers,
            accepts,
        })
    }
}

impl<E: Executor> ErasedExecutor for Node<E> {
    fn accepts(&self) -> &[&'static str] {
        &self.accepts
    }

    fn message_types(&self) -> Vec<MessageType> {
        self.handlers.message_types()
    }

    fn check(&self, type_name: &str, message: &Payload) -> Result<(), String> {
        match self.handlers.entries.iter().find(|e| e.message.tag == type_name) {
            Some(entry) => entry.handler.check(message).map_err(|e| e.to_string()),
            None => Err(format!("no handler for {type_name}")),
        }
    }

    fn invoke<'a>(
        &'a self,
        type_name: &'a str,
        message: Payload,
        ctx: &'a mut WorkflowContext,
    ) -> BoxFuture<'a, Result<Payload, ExecutorError>> {
        match self.handlers.entries.iter().find(|e| e.message.tag == type_name) {
            Some(entry) => entry.handler.call(&self.executor, message, ctx),
            None => Box::pin(async move {
                Err(ExecutorError::terminal(format!(
                    "executor '{}' has no handler for messages of type {type_name}",
                    self.executor.id()
                )))
            }),
        }
    }
}

/// Whether `T` is `()` (an output that sends nothing).
pub(crate) fn is_unit<T: 'static>() -> bool {
    TypeId::of::<T>() == TypeId::of::<()>()
}
