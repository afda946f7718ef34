//! A durable orchestration runtime with an append-only, replay-safe event
//! stream per instance.
//!
//! Orchestrations are async functions whose progress is recorded as an
//! event-sourced history: after a crash they are replayed from it and go on
//! where they stopped. They call *activities* (ordinary async functions, run
//! at least once), wait on durable timers and external events, start
//! sub-orchestrations and continue as new. Besides the small, last-write-wins
//! *custom status* that Durable Task offers, every instance has a **stream**:
//! events appended with [`OrchestrationContext::emit_event`], numbered
//! 1, 2, 3, ..., stored exactly once in the transaction of the turn that
//! emitted them, and read by clients after a cursor
//! ([`Client::get_events`]) or live ([`Client::watch_events`]).
//!
//! # Quickstart
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use durable_core::prelude::*;
//! use futures::StreamExt;
//!
//! async fn hello_cities(ctx: OrchestrationContext, cities: Vec<String>) -> Result<Vec<String>, OrchestrationError> {
//!     let mut greetings = Vec::new();
//!     for city in cities {
//!         let greeting: String = ctx.call_activity("say_hello", &city).await?;
//!         ctx.emit_event("greeted", &greeting)?; // append-only, replay-safe
//!         ctx.set_custom_status(&city)?; // a small snapshot
//!         greetings.push(greeting);
//!     }
//!     Ok(greetings)
//! }
//!
//! async fn say_hello(_ctx: ActivityContext, city: String) -> Result<String, std::convert::Infallible> {
//!     Ok(format!("Hello {city}!"))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await?);
//! let registry = Registry::new()
//!     .orchestration("hello_cities", hello_cities)
//!     .activity("say_hello", say_hello);
//! let worker = Worker::start(store.clone(), registry)?;
//! let client = Client::new(store);
//!
//! let id = client.start("hello_cities", &["Tokyo", "Seattle", "London"]).await?;
//! let names: Vec<String> = client
//!     .watch_events(&id, 0)
//!     .map(|event| event.unwrap().payload_as::<String>().unwrap())
//!     .collect()
//!     .await;
//! assert_eq!(names, ["Hello Tokyo!", "Hello Seattle!", "Hello London!"]);
//!
//! let done = client.wait_for_completion(&id, Duration::from_secs(10)).await?;
//! assert_eq!(done.status, RuntimeStatus::Completed);
//! assert_eq!(done.stream_len, 3);
//! worker.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Guarantees
//!
//! * Orchestration turns and stream events are exactly-once: a turn's new
//!   history, instance row, scheduled work, consumed messages and stream
//!   events commit in one transaction.
//! * Activities are at-least-once: a worker that dies while running one
//!   loses its lease, and another worker runs it again. Make activities
//!   idempotent.
//! * Orchestration code must be deterministic; a change that makes replay
//!   take another path fails the instance with a `NonDeterminism` failure
//!   that names the step recorded in history and the step the code took.

mod client;
mod context;
mod error;
pub mod future;
mod history;
#[cfg(feature = "http")]
pub mod http;
mod ids;
mod instance;
mod payload;
mod registry;
mod replay;
mod retry;
pub mod store;
mod stream;
mod typed;
mod worker;

pub use client::{Client, StartOptions};
pub use context::{
    ContinueAsNew, ContinueAsNewOptions, DurableFuture, Limits, OrchestrationContext, StatusMeasure,
};
pub use error::{Error, OrchestrationError, Result, StoreError};
pub use history::{FailureDetails, HistoryEvent, ParentInstance};
pub use ids::{InstanceId, InvalidInstanceId, MAX_INSTANCE_ID_LEN, MAX_NAME_LEN};
pub use instance::{InstanceMetadata, InstancePage, InstanceQuery, RuntimeStatus, UnknownStatus};
pub use payload::Payload;
pub use registry::{ActivityContext, Registry};
pub use retry::RetryPolicy;
pub use stream::{EventPage, StreamEvent, MAX_PAGE};
pub use typed::{Activity, Orchestration, Register};
pub use worker::{Worker, WorkerOptions};

/// The names most programs need.
pub mod prelude {
    #[cfg(feature = "postgres")]
    pub use crate::store::PostgresStore;
    pub use crate::store::{SqliteStore, Store};
    pub use crate::{
        ActivityContext, Client, Error, EventPage, InstanceId, OrchestrationContext, OrchestrationError,
        Registry, RetryPolicy, RuntimeStatus, StartOptions, StreamEvent, Worker, WorkerOptions,
    };
}

/// Used by the code `durable-macros` generates. Not public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::typed::private::*;
}
