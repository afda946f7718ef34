//! Attribute macros for durable-core and agent-workflows.
//!
//! * [`macro@executor`] and [`macro@workflow`] (with the [`macro@handler`]
//!   marker) for agent-workflows, which re-exports them and documents them
//!   with examples that run;
//! * [`macro@activity`] and [`macro@orchestration`] for plain durable-core
//!   code: typed handles, so that `ctx.call(say_hello, &city)` and
//!   `Registry::new().register(say_hello)` are checked at compile time.
//!
//! Each macro parses its input into typed structs that keep the syntax
//! nodes, validates them (collecting every error, each at the offending
//! tokens, saying what to do), and then expands. On an error the user's
//! item is emitted unchanged next to the errors.

mod attr;
mod durable;
mod executor;
mod workflow;

use proc_macro::TokenStream;

/// Makes an executor of an async fn or of an impl block with `#[handler]`
/// methods.
///
/// On `async fn name(message: T, ctx: &mut WorkflowContext) -> Result<O, E>`
/// (the context is optional), generates a unit struct `name` that
/// implements `Executor` with output `O` and `Handles<T>`. On
/// `impl Type { #[handler] async fn on_x(&self, message: X, ctx: &mut WorkflowContext) -> Result<O, E> ... }`
/// it implements them for `Type`, with one `Handles<X>` per handler.
///
/// Arguments: `id = "..."` (default: the fn or type name),
/// `max_attempts = 3`, `retry_interval = "500ms"`, `backoff = 2.0`,
/// `max_retry_interval = "10s"`, `crate = "path::to::agent_workflows"`.
#[proc_macro_attribute]
pub fn executor(attr: TokenStream, item: TokenStream) -> TokenStream {
    executor::expand(attr.into(), item.into()).into()
}

/// Marks a handler method inside an `#[executor]` impl block.
#[proc_macro_attribute]
pub fn handler(_attr: TokenStream, item: TokenStream) -> TokenStream {
    executor::expand_handler(item.into()).into()
}

/// Makes a workflow type of a fn that builds a `Workflow<Input>`.
///
/// Generates a unit struct with the fn's name implementing
/// `WorkflowDefinition` under a stable name (`name = "..."`, default: the
/// fn name), and checks while compiling that the executors passed to the
/// builder by path have distinct ids.
#[proc_macro_attribute]
pub fn workflow(attr: TokenStream, item: TokenStream) -> TokenStream {
    workflow::expand(attr.into(), item.into()).into()
}

/// Makes a typed activity handle of `async fn name(ctx: ActivityContext, input: I) -> Result<O, E>`.
///
/// Generates a unit struct `name` implementing `durable_core::Activity`
/// (name, input and output types) and `durable_core::Register`. Arguments:
/// `name = "..."` (default: the fn name), `crate = "path::to::durable_core"`.
///
/// ```
/// use durable_core::{ActivityContext, OrchestrationContext, OrchestrationError, Registry};
///
/// #[durable_macros::activity]
/// async fn say_hello(_ctx: ActivityContext, city: String) -> Result<String, std::convert::Infallible> {
///     Ok(format!("Hello {city}!"))
/// }
///
/// #[durable_macros::orchestration(name = "hello")]
/// async fn hello(ctx: OrchestrationContext, city: String) -> Result<String, OrchestrationError> {
///     ctx.call(say_hello, &city).await // checked: say_hello takes a String
/// }
///
/// let registry = Registry::new().register(say_hello).register(hello);
/// assert!(registry.has_activity("say_hello") && registry.has_orchestration("hello"));
/// ```
#[proc_macro_attribute]
pub fn activity(attr: TokenStream, item: TokenStream) -> TokenStream {
    durable::expand(durable::Kind::Activity, attr.into(), item.into()).into()
}

/// Makes a typed orchestration handle of
/// `async fn name(ctx: OrchestrationContext, input: I) -> Result<O, E>`;
/// see [`macro@activity`].
#[proc_macro_attribute]
pub fn orchestration(attr: TokenStream, item: TokenStream) -> TokenStream {
    durable::expand(durable::Kind::Orchestration, attr.into(), item.into()).into()
}
