//! The shapes an edge can take besides one executor after another:
//! switches, fan-outs, fan-ins, and workflows run as executors.

use std::any::TypeId;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use durable_core::RetryPolicy;

use super::{
    no_retry, output_type, typed_condition, Collected, Condition, NodeKind, NodeSpec, Selector, Workflow,
};
use crate::message::{type_tag, Message, MessageType};
use crate::{Executor, HandlerSet, Handles};

/// The cases of a switch: a message of type `T` goes to the first case
/// whose condition holds, or else to the default.
///
/// ```
/// use agent_workflows::Switch;
/// # use agent_workflows::{executor, ExecutorError};
/// # #[executor] async fn small(n: u32) -> Result<(), ExecutorError> { Ok(()) }
/// # #[executor] async fn large(n: u32) -> Result<(), ExecutorError> { Ok(()) }
///
/// let switch = Switch::<u32>::new()
///     .case(|n| *n < 10, small)
///     .default_case(large);
/// ```
pub struct Switch<T> {
    pub(super) collected: Collected,
    pub(super) cases: Vec<(Condition, String)>,
    pub(super) default: Option<String>,
    pub(super) _type: PhantomData<fn(T)>,
}

impl<T> fmt::Debug for Switch<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Switch")
            .field("cases", &self.cases.iter().map(|c| &c.1).collect::<Vec<_>>())
            .field("default", &self.default)
            .finish()
    }
}

impl<T: Message> Default for Switch<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Message> Switch<T> {
    /// A switch without cases.
    pub fn new() -> Self {
        Self {
            collected: Collected::default(),
            cases: Vec::new(),
            default: None,
            _type: PhantomData,
        }
    }

    /// Adds a case: messages for which `condition` holds (and no earlier
    /// case's did) go to `target`.
    pub fn case<B, F>(mut self, condition: F, target: B) -> Self
    where
        B: Handles<T>,
        F: Fn(&T) -> bool + Send + Sync + 'static,
    {
        let id = self.collected.add(target);
        self.cases.push((typed_condition(condition), id));
        self
    }

    /// Where messages go when no case matches (by default, nowhere).
    pub fn default_case<B: Handles<T>>(mut self, target: B) -> Self {
        let id = self.collected.add(target);
        self.default = Some(id);
        self
    }
}

/// The targets of a fan-out: a message goes to all of them, or to those a
/// selector picks.
pub struct FanOut<T> {
    pub(super) collected: Collected,
    pub(super) targets: Vec<String>,
    pub(super) selector: Option<Selector>,
    pub(super) _type: PhantomData<fn(T)>,
}

impl<T> fmt::Debug for FanOut<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FanOut")
            .field("targets", &self.targets)
            .field("selector", &self.selector.is_some())
            .finish()
    }
}

impl<T: Message> Default for FanOut<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Message> FanOut<T> {
    /// A fan-out without targets.
    pub fn new() -> Self {
        Self {
            collected: Collected::default(),
            targets: Vec::new(),
            selector: None,
            _type: PhantomData,
        }
    }

    /// Adds a target.
    pub fn to<B: Handles<T>>(mut self, target: B) -> Self {
        let id = self.collected.add(target);
        self.targets.push(id);
        self
    }

    /// Picks the targets of each message of type `T`: the selector gets the
    /// message and the target ids, and returns the ids to send to. Ids it
    /// returns that are not targets are ignored.
    pub fn select<F>(mut self, selector: F) -> Self
    where
        F: Fn(&T, &[String]) -> Vec<String> + Send + Sync + 'static,
    {
        self.selector = Some(Arc::new(move |payload, targets| match payload.parse::<T>() {
            Ok(message) => selector(&message, targets),
            Err(_) => Vec::new(),
        }));
        self
    }
}

/// The sources of a fan-in barrier: the target runs once every source has
/// sent a message of type `T`, and gets them as a `Vec<T>` in source order.
pub struct FanIn<T> {
    pub(super) collected: Collected,
    pub(super) sources: Vec<String>,
    pub(super) _type: PhantomData<fn(T)>,
}

impl<T> fmt::Debug for FanIn<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FanIn").field("sources", &self.sources).finish()
    }
}

impl<T: Message> Default for FanIn<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Message> FanIn<T> {
    /// A fan-in without sources.
    pub fn new() -> Self {
        Self {
            collected: Collected::default(),
            sources: Vec::new(),
            _type: PhantomData,
        }
    }

    /// Adds a source, whose output must be `T`.
    pub fn from<A: Executor<Output = T>>(mut self, source: A) -> Self {
        let id = self.collected.add(source);
        self.sources.push(id);
        self
    }
}

/// A workflow run as a sub-orchestration at one node of another workflow.
/// It takes messages of type `I` (each starts one run of the sub-workflow)
/// and sends each output of the sub-workflow on as a message of type `O`.
/// The sub-workflow's events reach the parent's stream as
/// `sub_workflow_event`s tagged with their origin.
pub struct SubWorkflow<I, O> {
    pub(super) id: String,
    pub(super) workflow: Workflow<I>,
    pub(super) retry: Option<RetryPolicy>,
    pub(super) _output: PhantomData<fn() -> O>,
}

impl<I, O> fmt::Debug for SubWorkflow<I, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubWorkflow")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl<I: Message, O: Message> SubWorkflow<I, O> {
    /// Runs `workflow` at the node `id`.
    pub fn new(id: impl Into<String>, workflow: Workflow<I>) -> Self {
        Self {
            id: id.into(),
            workflow,
            retry: None,
            _output: PhantomData,
        }
    }
}

impl<I: Message, O: Message> Executor for SubWorkflow<I, O> {
    type Output = O;

    fn id(&self) -> &str {
        &self.id
    }

    fn retry_policy(&self) -> Option<RetryPolicy> {
        self.retry.clone()
    }

    fn handlers() -> HandlerSet<Self> {
        HandlerSet::new()
    }

    fn __into_node(self) -> NodeSpec {
        NodeSpec {
            retry: self.retry.unwrap_or_else(no_retry),
            type_id: TypeId::of::<Self>(),
            type_name: std::any::type_name::<Self>(),
            output_type: output_type::<O>().map(|t| t.tag),
            accepts: vec![type_tag::<I>()],
            message_types: [Some(MessageType::of::<I>()), output_type::<O>()]
                .into_iter()
                .flatten()
                .collect(),
            kind: NodeKind::SubWorkflow(self.workflow.graph),
            id: self.id,
        }
    }
}

impl<I: Message, O: Message> Handles<I> for SubWorkflow<I, O> {}
