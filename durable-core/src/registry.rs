//! The registry of orchestrations and activities, by name.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::ids::name_problem;
use crate::{Error, FailureDetails, InstanceId, OrchestrationContext, Payload};

pub(crate) type OrchestrationFn = Arc<
    dyn Fn(OrchestrationContext, Payload) -> BoxFuture<'static, Result<Payload, FailureDetails>>
        + Send
        + Sync,
>;
pub(crate) type ActivityFn = Arc<
    dyn Fn(ActivityContext, Payload) -> BoxFuture<'static, Result<Payload, FailureDetails>> + Send + Sync,
>;

/// What an activity knows about the call it serves.
#[derive(Debug, Clone)]
pub struct ActivityContext {
    /// The orchestration instance that called the activity.
    pub instance_id: InstanceId,
    /// The activity name.
    pub name: String,
    /// The task id of the call in the orchestration's history.
    pub task_id: u64,
    /// How many times this call has been handed to a worker (1 on the first
    /// try; more after a worker died while running it).
    pub attempt: u32,
}

/// Orchestrations and activities by name, with serde-typed inputs and
/// outputs.
///
/// ```
/// use durable_core::{ActivityContext, OrchestrationContext, OrchestrationError, Registry};
///
/// async fn hello(ctx: OrchestrationContext, city: String) -> Result<String, OrchestrationError> {
///     ctx.call_activity("say_hello", &city).await
/// }
///
/// async fn say_hello(_ctx: ActivityContext, city: String) -> Result<String, std::convert::Infallible> {
///     Ok(format!("Hello {city}!"))
/// }
///
/// let registry = Registry::new()
///     .orchestration("hello", hello)
///     .activity("say_hello", say_hello);
/// assert!(registry.has_orchestration("hello"));
/// ```
#[derive(Clone, Default)]
pub struct Registry {
    pub(crate) orchestrations: HashMap<String, OrchestrationFn>,
    pub(crate) activities: HashMap<String, ActivityFn>,
    duplicates: Vec<(&'static str, String)>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut orchestrations: Vec<_> = self.orchestrations.keys().collect();
        let mut activities: Vec<_> = self.activities.keys().collect();
        orchestrations.sort();
        activities.sort();
        f.debug_struct("Registry")
            .field("orchestrations", &orchestrations)
            .field("activities", &activities)
            .finish()
    }
}

fn invalid_input(kind: &str, name: &str, e: serde_json::Error) -> FailureDetails {
    FailureDetails::new("InvalidInput", format!("invalid input for {kind} '{name}': {e}"))
}

fn invalid_output(kind: &str, name: &str, e: serde_json::Error) -> FailureDetails {
    FailureDetails::new(
        "InvalidOutput",
        format!("could not serialize the output of {kind} '{name}': {e}"),
    )
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers an orchestration: an async function of the context and a
    /// deserializable input that returns a serializable output or an error.
    pub fn orchestration<F, Fut, I, O, E>(mut self, name: impl Into<String>, f: F) -> Self
    where
        F: Fn(OrchestrationContext, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, E>> + Send + 'static,
        I: DeserializeOwned + Send + 'static,
        O: Serialize + 'static,
        E: fmt::Display + 'static,
    {
        let name = name.into();
        let label = name.clone();
        let f = Arc::new(f);
        let wrapped: OrchestrationFn = Arc::new(move |ctx, input| {
            let f = f.clone();
            let name = label.clone();
            async move {
                let input: I = input
                    .parse()
                    .map_err(|e| invalid_input("orchestration", &name, e))?;
                let output = f(ctx, input).await.map_err(|e| FailureDetails::from_error(&e))?;
                Payload::new(&output).map_err(|e| invalid_output("orchestration", &name, e))
            }
            .boxed()
        });
        if self.orchestrations.insert(name.clone(), wrapped).is_some() {
            self.duplicates.push(("orchestration", name));
        }
        self
    }

    /// Registers an activity: an async function of an [`ActivityContext`]
    /// and a deserializable input.
    pub fn activity<F, Fut, I, O, E>(mut self, name: impl Into<String>, f: F) -> Self
    where
        F: Fn(ActivityContext, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, E>> + Send + 'static,
        I: DeserializeOwned + Send + 'static,
        O: Serialize + 'static,
        E: fmt::Display + 'static,
    {
        let name = name.into();
        let label = name.clone();
        let f = Arc::new(f);
        let wrapped: ActivityFn = Arc::new(move |ctx, input| {
            let f = f.clone();
            let name = label.clone();
            async move {
                let input: I = input.parse().map_err(|e| invalid_input("activity", &name, e))?;
                let output = f(ctx, input).await.map_err(|e| FailureDetails::from_error(&e))?;
                Payload::new(&output).map_err(|e| invalid_output("activity", &name, e))
            }
            .boxed()
        });
        if self.activities.insert(name.clone(), wrapped).is_some() {
            self.duplicates.push(("activity", name));
        }
        self
    }

    /// Adds everything another registry holds.
    pub fn merge(mut self, other: Registry) -> Self {
        for (name, f) in other.orchestrations {
            if self.orchestrations.insert(name.clone(), f).is_some() {
                self.duplicates.push(("orchestration", name));
            }
        }
        for (name, f) in other.activities {
            if self.activities.insert(name.clone(), f).is_some() {
                self.duplicates.push(("activity", name));
            }
        }
        self.duplicates.extend(other.duplicates);
        self
    }

    /// Whether an orchestration of this name is registered.
    pub fn has_orchestration(&self, name: &str) -> bool {
        self.orchestrations.contains_key(name)
    }

    /// The names of the registered orchestrations, sorted.
    pub fn orchestration_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.orchestrations.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// Whether an activity of this name is registered.
    pub fn has_activity(&self, name: &str) -> bool {
        self.activities.contains_key(name)
    }

    /// Checks that no name was registered twice and that every name is
    /// one the runtime takes (see [`MAX_NAME_LEN`](crate::MAX_NAME_LEN)).
    ///
    /// # Errors
    ///
    /// [`Error::DuplicateRegistration`] for the first name registered
    /// twice, [`Error::InvalidArgument`] for an invalid name.
    pub fn validate(&self) -> Result<(), Error> {
        if let Some((kind, name)) = self.duplicates.first() {
            return Err(Error::DuplicateRegistration {
                kind,
                name: name.clone(),
            });
        }
        let orchestrations = self.orchestrations.keys().map(|n| ("orchestration", n));
        let activities = self.activities.keys().map(|n| ("activity", n));
        for (kind, name) in orchestrations.chain(activities) {
            if let Some(reason) = name_problem(name) {
                return Err(Error::InvalidArgument(format!(
                    "invalid {kind} name {name:?}: {reason}"
                )));
            }
        }
        Ok(())
    }
}
