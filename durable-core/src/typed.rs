//! Typed handles for activities and orchestrations.
//!
//! `#[durable_macros::activity]` and `#[durable_macros::orchestration]` turn
//! an async fn into a unit struct that implements [`Activity`] or
//! [`Orchestration`] (its name, input and output types) and [`Register`].
//! Calls through the handle are checked at compile time:
//!
//! * [`OrchestrationContext::call`] / [`OrchestrationContext::call_with_retry`]
//!   for activities, [`OrchestrationContext::call_sub`] for
//!   sub-orchestrations;
//! * [`Registry::register`] to register;
//! * [`Client::start_typed`] to start an instance.

use std::future::Future;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{
    Client, DurableFuture, InstanceId, OrchestrationContext, OrchestrationError, Registry, Result,
    RetryPolicy,
};

/// A typed handle of an activity.
pub trait Activity: Copy + Send + Sync + 'static {
    /// The input.
    type Input: Serialize + DeserializeOwned + Send + 'static;
    /// The output.
    type Output: Serialize + DeserializeOwned + Send + 'static;
    /// The registered name.
    const NAME: &'static str;
}

/// A typed handle of an orchestration.
pub trait Orchestration: Copy + Send + Sync + 'static {
    /// The input.
    type Input: Serialize + DeserializeOwned + Send + 'static;
    /// The output.
    type Output: Serialize + DeserializeOwned + Send + 'static;
    /// The registered name.
    const NAME: &'static str;
}

/// Something that registers itself in a [`Registry`].
pub trait Register {
    /// Adds it to `registry`.
    fn register(self, registry: Registry) -> Registry;
}

impl Registry {
    /// Registers a typed activity or orchestration handle.
    pub fn register(self, handle: impl Register) -> Self {
        handle.register(self)
    }
}

impl OrchestrationContext {
    /// Calls a typed activity.
    pub fn call<A: Activity>(&self, _activity: A, input: &A::Input) -> DurableFuture<A::Output> {
        self.call_activity(A::NAME, input)
    }

    /// Calls a typed activity, retrying failures as `policy` says.
    pub fn call_with_retry<A: Activity>(
        &self,
        _activity: A,
        input: &A::Input,
        policy: RetryPolicy,
    ) -> impl Future<Output = Result<A::Output, OrchestrationError>> + Send + 'static {
        self.call_activity_with_retry(A::NAME, input, policy)
    }

    /// Starts a typed sub-orchestration and returns a future of its output.
    pub fn call_sub<O: Orchestration>(
        &self,
        _orchestration: O,
        input: &O::Input,
    ) -> DurableFuture<O::Output> {
        self.call_sub_orchestration(O::NAME, input)
    }
}

impl Client {
    /// Starts a typed orchestration under a new random instance id.
    ///
    /// # Errors
    ///
    /// As [`Client::start`].
    pub async fn start_typed<O: Orchestration>(
        &self,
        _orchestration: O,
        input: &O::Input,
    ) -> Result<InstanceId> {
        self.start(O::NAME, input).await
    }
}

/// Items the macros' generated code refers to. Not public API.
#[doc(hidden)]
pub(crate) mod private {
    pub use super::{Activity, Orchestration, Register};

    /// What an activity or orchestration fn returns.
    #[diagnostic::on_unimplemented(
        message = "durable functions must return `Result<O, E>`, not `{Self}`",
        label = "return `Result<O, E>` here",
        note = "`E` must implement `Display`"
    )]
    pub trait FnReturn {
        /// The output type.
        type Ok;
    }

    impl<T, E: std::fmt::Display> FnReturn for std::result::Result<T, E> {
        type Ok = T;
    }

    /// A type that can be an input or output.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot be the input of a durable function",
        label = "not serializable",
        note = "inputs are stored as JSON: derive `serde::Serialize` and `serde::Deserialize` for `{Self}`"
    )]
    pub trait Payload: serde::Serialize + serde::de::DeserializeOwned + Send + 'static {}

    impl<T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static> Payload for T {}

    /// Checks that `T` is a payload.
    pub const fn assert_payload<T: Payload>() {}

    /// Proves that the first parameter has the context type.
    #[diagnostic::on_unimplemented(
        message = "the first parameter must be the context, `{C}`, not `{Self}`",
        label = "write `ctx: {C}` here"
    )]
    pub trait IsContext<C> {}

    impl<C> IsContext<C> for C {}

    /// Checks `T: IsContext<C>`.
    pub const fn assert_context<T: IsContext<C>, C>() {}
}
