//! Deterministic combinators over durable futures.
//!
//! A [`DurableFuture`](crate::DurableFuture) resolves only when the runtime
//! applies the history event that completes it, one event at a time and in
//! history order, waking exactly the futures that event completes. These
//! combinators therefore behave the same on every replay:
//!
//! * [`join_all`] / [`join`]: wait for all, results in argument order;
//! * [`select`] / [`select_all`]: the first to complete *in history order*
//!   wins; on a tie the earlier argument wins.
//!
//! ```no_run
//! use durable_core::{future, OrchestrationContext, OrchestrationError};
//!
//! async fn fan_out(ctx: OrchestrationContext, n: u32) -> Result<u32, OrchestrationError> {
//!     let calls = (0..n).map(|i| ctx.call_activity::<u32>("square", &i));
//!     let squares = future::join_all(calls).await;
//!     squares.into_iter().sum()
//! }
//! ```

pub use futures::future::{join, join_all, select, select_all, Either};
