//! The workflow graph and its typed builder.
//!
//! Edges are checked while compiling: the builder's methods require the
//! target to [`Handles`](crate::Handles) the source's output type, so a mismatch is a
//! compile error at the call that makes the edge.

use std::any::TypeId;
use std::collections::HashSet;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use durable_core::{Payload, RetryPolicy};

use crate::executor::{is_unit, ErasedExecutor, Node};
use crate::message::{Message, MessageType};
use crate::Executor;

mod builder;
mod routing;
mod shapes;

pub use builder::WorkflowBuilder;
pub(crate) use routing::Barriers;
pub use shapes::{FanIn, FanOut, SubWorkflow, Switch};

/// The default superstep limit.
pub const DEFAULT_MAX_SUPERSTEPS: u32 = 100;

pub(crate) type Condition = Arc<dyn Fn(&Payload) -> bool + Send + Sync>;
pub(crate) type Selector = Arc<dyn Fn(&Payload, &[String]) -> Vec<String> + Send + Sync>;

pub(super) fn typed_condition<T: Message>(f: impl Fn(&T) -> bool + Send + Sync + 'static) -> Condition {
    Arc::new(move |payload| payload.parse::<T>().map(|t| f(&t)).unwrap_or(false))
}

/// What runs at a node.
#[derive(Clone)]
pub(crate) enum NodeKind {
    Executor(Arc<dyn ErasedExecutor>),
    SubWorkflow(Arc<Graph>),
}

/// A node of the graph, before and after building.
#[doc(hidden)]
#[derive(Clone)]
pub struct NodeSpec {
    pub(crate) id: String,
    pub(crate) type_id: TypeId,
    /// The executor's Rust type name, for messages.
    pub(crate) type_name: &'static str,
    pub(crate) retry: RetryPolicy,
    /// The routing tag of the output, `None` for `()`.
    pub(crate) output_type: Option<&'static str>,
    /// The routing tags of the message types it handles.
    pub(crate) accepts: Vec<&'static str>,
    /// The message types it handles and sends as output.
    pub(crate) message_types: Vec<MessageType>,
    pub(crate) kind: NodeKind,
}

impl fmt::Debug for NodeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .field("type", &self.type_name)
            .field("accepts", &self.accepts)
            .finish_non_exhaustive()
    }
}

pub(super) fn no_retry() -> RetryPolicy {
    RetryPolicy::new(1, Duration::ZERO)
}

impl NodeSpec {
    pub(crate) fn executor<E: Executor>(executor: E) -> Self {
        let id = executor.id().to_owned();
        let retry = executor.retry_policy().unwrap_or_else(no_retry);
        let node = Node::new(executor);
        let mut message_types = node.message_types();
        message_types.extend(output_type::<E::Output>());
        Self {
            id,
            type_id: TypeId::of::<E>(),
            type_name: std::any::type_name::<E>(),
            retry,
            output_type: output_type::<E::Output>().map(|t| t.tag),
            accepts: node.accepts().to_vec(),
            message_types,
            kind: NodeKind::Executor(node),
        }
    }
}

pub(super) fn output_type<T: 'static>() -> Option<MessageType> {
    (!is_unit::<T>()).then(MessageType::of::<T>)
}

/// An edge, between node ids while building and node indices after.
#[derive(Clone)]
pub(crate) enum Edge<N> {
    Direct {
        from: N,
        to: N,
        /// Only messages of this type that pass the condition.
        condition: Option<(&'static str, Condition)>,
    },
    Switch {
        from: N,
        message_type: &'static str,
        cases: Vec<(Condition, N)>,
        default: Option<N>,
    },
    FanOut {
        from: N,
        targets: Vec<N>,
        selector: Option<(&'static str, Selector)>,
    },
    FanIn {
        sources: Vec<N>,
        to: N,
        message_type: &'static str,
        batch_type: &'static str,
    },
}

impl<N> Edge<N> {
    fn map<M>(self, mut f: impl FnMut(N) -> M) -> Edge<M> {
        match self {
            Edge::Direct { from, to, condition } => Edge::Direct {
                from: f(from),
                to: f(to),
                condition,
            },
            Edge::Switch {
                from,
                message_type,
                cases,
                default,
            } => Edge::Switch {
                from: f(from),
                message_type,
                cases: cases.into_iter().map(|(c, n)| (c, f(n))).collect(),
                default: default.map(&mut f),
            },
            Edge::FanOut {
                from,
                targets,
                selector,
            } => Edge::FanOut {
                from: f(from),
                targets: targets.into_iter().map(&mut f).collect(),
                selector,
            },
            Edge::FanIn {
                sources,
                to,
                message_type,
                batch_type,
            } => Edge::FanIn {
                sources: sources.into_iter().map(&mut f).collect(),
                to: f(to),
                message_type,
                batch_type,
            },
        }
    }
}

/// A built graph.
pub(crate) struct Graph {
    pub(crate) nodes: Vec<NodeSpec>,
    pub(crate) edges: Vec<Edge<usize>>,
    pub(crate) start: usize,
    pub(crate) start_type: &'static str,
    pub(crate) max_supersteps: u32,
    /// The routing tags of every message type the workflow handles: a
    /// message with another tag can reach no executor.
    pub(crate) message_types: HashSet<&'static str>,
}

/// Nodes collected by a [`Switch`], [`FanOut`] or [`FanIn`] before they
/// join a builder.
#[derive(Default)]
struct Collected {
    nodes: Vec<NodeSpec>,
}

impl Collected {
    fn add<E: Executor>(&mut self, executor: E) -> String {
        let spec = executor.__into_node();
        let id = spec.id.clone();
        self.nodes.push(spec);
        id
    }
}

/// A built workflow graph whose runs take an input of type `I`.
///
/// Register it with a name through [`#[workflow]`](crate::workflow) or
/// [`Workflow::register`]; run it with the
/// [`WorkflowClient`](crate::WorkflowClient).
pub struct Workflow<I> {
    pub(crate) graph: Arc<Graph>,
    _input: PhantomData<fn(I)>,
}

impl<I> Clone for Workflow<I> {
    fn clone(&self) -> Self {
        Self {
            graph: self.graph.clone(),
            _input: PhantomData,
        }
    }
}

impl<I> fmt::Debug for Workflow<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workflow")
            .field("executors", &self.executor_ids())
            .field("max_supersteps", &self.graph.max_supersteps)
            .finish()
    }
}

impl<I> Workflow<I> {
    /// The executor ids, in the order they joined the graph (the start
    /// executor first).
    pub fn executor_ids(&self) -> Vec<&str> {
        self.graph.nodes.iter().map(|n| n.id.as_str()).collect()
    }

    /// The superstep limit.
    pub fn max_supersteps(&self) -> u32 {
        self.graph.max_supersteps
    }
}

#[cfg(test)]
mod tests;
