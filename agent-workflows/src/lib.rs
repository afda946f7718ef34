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
mod message;
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

/// Attribute macros; see their documentation on the re-exports below.
pub use durable_macros::{executor, handler, workflow};

/// Used by the code the macros generate. Not public API.
#[doc(hidden)]
pub mod __private;
