//! Graph workflows of executors run in supersteps, hosted on durable-core.
//!
//! An *executor* is an async function (or an impl block of handlers) with a
//! typed input; it sends messages along edges, yields workflow outputs,
//! adds custom events and asks people for information. A *workflow* is a
//! graph of executors: direct and conditional edges, switches, fan-out,
//! fan-in barriers and loops, bounded by a superstep limit.
//!
//! Runs are bulk-synchronous: in superstep `k` every executor with pending
//! messages runs, in parallel, with all of its messages; what they send is
//! delivered in superstep `k + 1`. A run completes when no message and no
//! request is pending.
//!
//! Hosted on durable-core, a run is one orchestration and each executor
//! invocation one activity: a crashed run resumes without redoing the
//! executors that finished. Progress goes to the instance's append-only
//! **stream** as [`WorkflowEvent`]s (`workflow_started`,
//! `superstep_started`, `executor_invoked`, `executor_completed` with the
//! output, `executor_failed`, `workflow_output`, `request_info`,
//! `custom_event`, `superstep_completed`, `workflow_completed` /
//! `workflow_failed`), never to the custom status: the live status holds
//! only the superstep and the pending requests ([`LiveStatus`]), so it does
//! not grow with the run, and the final output holds only the workflow
//! outputs.
//!
//! # Quickstart
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use agent_workflows::prelude::*;
//! use futures::StreamExt;
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Words(Vec<String>);
//!
//! #[executor(id = "split")]
//! async fn split(text: String) -> Result<Words, ExecutorError> {
//!     Ok(Words(text.split_whitespace().map(str::to_owned).collect()))
//! }
//!
//! #[executor(id = "count")]
//! async fn count(words: Words, ctx: &mut WorkflowContext) -> Result<(), ExecutorError> {
//!     ctx.add_event("counted", &words.0.len())?;
//!     ctx.yield_output(&words.0.len())
//! }
//!
//! #[workflow(name = "word-count")]
//! fn word_count() -> Workflow<String> {
//!     WorkflowBuilder::start(split).then(count).build()
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await?);
//! let worker = Worker::start(store.clone(), Registry::new().workflow(word_count))?;
//! let client = WorkflowClient::new(Client::new(store));
//!
//! let id = client.start(word_count, &"the quick brown fox".to_owned()).await?;
//! let names: Vec<&str> = client
//!     .watch(&id, 0)
//!     .map(|event| event.unwrap().event.name())
//!     .collect()
//!     .await;
//! assert_eq!(names.first(), Some(&"workflow_started"));
//! assert!(names.contains(&"executor_completed"));
//! assert_eq!(names.last(), Some(&"workflow_completed"));
//!
//! let result = client.wait_for_completion(&id, Duration::from_secs(10)).await?;
//! assert_eq!(result.outputs_as::<usize>()?, [4]);
//! worker.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Human in the loop
//!
//! An executor asks with [`WorkflowContext::request_info`] on a typed
//! [`RequestPort`]; the request is listed in the live status, a client
//! answers it by id with [`WorkflowClient::respond`], and the executor gets
//! the answer as a [`RequestResponse`] message in a `#[handler]`.

mod client;
mod context;
mod error;
mod events;
mod executor;
mod graph;
mod hosting;
#[cfg(feature = "http")]
pub mod http;
mod message;
mod payload_fields;
mod superstep;

pub use client::{ClientResult, WorkflowClient, WorkflowResult};
pub use context::{RequestPort, RequestResponse, WorkflowContext};
pub use error::{BuildError, ExecutorError, RequestTimedOut, WorkflowClientError, WorkflowError};
pub use events::{LiveStatus, PendingRequest, SequencedEvent, WorkflowEvent};
pub use executor::{
    Configured, Executor, ExecutorExt, HandlerFn, HandlerFuture, HandlerSet, Handles, StaticExecutorId,
};
pub use graph::{FanIn, FanOut, SubWorkflow, Switch, Workflow, WorkflowBuilder, DEFAULT_MAX_SUPERSTEPS};
pub use hosting::{RegistryExt, WorkflowDefinition};
pub use message::Message;

pub use durable_core;
pub use durable_core::Payload;

/// The names most workflow programs need.
pub mod prelude {
    pub use durable_core::store::{SqliteStore, Store};
    pub use durable_core::{Client, Registry, RetryPolicy, RuntimeStatus, Worker};

    pub use crate::{
        executor, handler, workflow, ExecutorError, ExecutorExt, FanIn, FanOut, RegistryExt, RequestPort,
        RequestResponse, SubWorkflow, Switch, Workflow, WorkflowBuilder, WorkflowClient, WorkflowContext,
        WorkflowDefinition, WorkflowEvent,
    };
}

/// Makes an executor of an async fn, or of an impl block with
/// `#[handler]` methods.
///
/// On an async fn `name(message: T, ctx: &mut WorkflowContext) -> Result<O, E>`
/// (the context parameter is optional; `E` converts into
/// [`ExecutorError`]), it generates a unit struct `name` implementing
/// [`Executor`] with `Output = O` and [`Handles<T>`]. On an impl block, each
/// `#[handler] async fn(&self, message: X, ...)` adds a [`Handles<X>`];
/// all handlers return the same output type. Answers to requests arrive in
/// a handler taking [`RequestResponse<Req, Resp>`].
///
/// Arguments (all optional):
///
/// | argument | meaning |
/// |---|---|
/// | `id = "extract-layout"` | the executor id (default: the fn or type name) |
/// | `max_attempts = 3` | retry failed invocations, this many attempts in all |
/// | `retry_interval = "500ms"` | the first delay between attempts (`ms`, `s`, `m`, `h`) |
/// | `backoff = 2.0` | the factor applied to the delay after each retry |
/// | `max_retry_interval = "10s"` | the longest delay |
/// | `crate = "path"` | where `agent_workflows` is, for crates that re-export it |
///
/// ```
/// use agent_workflows::prelude::*;
/// use agent_workflows::{Executor, Handles};
///
/// /// A function executor, retried on failure.
/// #[executor(id = "parse", max_attempts = 3, retry_interval = "100ms")]
/// async fn parse(text: String) -> Result<u32, ExecutorError> {
///     text.trim().parse().map_err(ExecutorError::terminal)
/// }
///
/// /// An executor with configuration and two message types.
/// struct Threshold {
///     limit: u32,
/// }
///
/// #[executor(id = "threshold")]
/// impl Threshold {
///     #[handler]
///     async fn on_number(&self, n: u32, ctx: &mut WorkflowContext) -> Result<bool, ExecutorError> {
///         ctx.add_event("checked", &n)?;
///         Ok(n > self.limit)
///     }
///
///     #[handler]
///     async fn on_text(&self, text: String) -> Result<bool, ExecutorError> {
///         Ok(text.len() as u32 > self.limit)
///     }
/// }
///
/// fn handles<E: Handles<M>, M>(_: &E) {}
///
/// assert_eq!(parse.id(), "parse");
/// assert_eq!(parse.retry_policy().unwrap().max_attempts, 3);
/// let threshold = Threshold { limit: 10 };
/// handles::<_, u32>(&threshold);
/// handles::<_, String>(&threshold);
/// let workflow = WorkflowBuilder::start(parse).then(threshold).build();
/// assert_eq!(workflow.executor_ids(), ["parse", "threshold"]);
/// ```
pub use durable_macros::executor;

/// Marks a handler method in an [`#[executor]`](macro@executor) impl block.
/// Anywhere else it is a compile error.
pub use durable_macros::handler;

/// Makes a workflow type of a fn that builds a [`Workflow<Input>`].
///
/// Generates a unit struct with the fn's name that implements
/// [`WorkflowDefinition`]: the stable name runs are started by
/// (`name = "..."`, default: the fn name), the input type, and `build`.
/// `Registry::new().workflow(name)` ([`RegistryExt`]) registers its
/// orchestration and every executor's activity in one call, and
/// [`WorkflowClient::start`] starts a run with a typed input.
///
/// While compiling, it checks that the executors passed to the builder by
/// path (`.then(validate)`) have distinct ids; executors built in the
/// body (`Threshold { limit: 3 }`, `.with_id(...)`) are checked when the
/// graph is built.
///
/// ```
/// use agent_workflows::prelude::*;
///
/// #[executor]
/// async fn validate(text: String) -> Result<String, ExecutorError> {
///     Ok(text)
/// }
///
/// #[executor]
/// async fn publish(text: String, ctx: &mut WorkflowContext) -> Result<(), ExecutorError> {
///     ctx.yield_output(&text)
/// }
///
/// #[workflow(name = "publishing")]
/// fn publishing() -> Workflow<String> {
///     WorkflowBuilder::start(validate).then(publish).build()
/// }
///
/// assert_eq!(<publishing as WorkflowDefinition>::NAME, "publishing");
/// let registry = Registry::new().workflow(publishing);
/// assert!(registry.has_orchestration("publishing"));
/// assert!(registry.has_activity("publishing/validate") && registry.has_activity("publishing/publish"));
/// ```
pub use durable_macros::workflow;

/// Used by the code the macros generate. Not public API.
#[doc(hidden)]
pub mod __private;
