//! The typed builder: every method that makes an edge checks at compile
//! time that the target handles what the source sends.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use super::{
    typed_condition, Collected, Edge, FanIn, FanOut, Graph, NodeSpec, Switch, Workflow,
    DEFAULT_MAX_SUPERSTEPS,
};
use crate::message::{Message, MessageType};
use crate::{BuildError, Executor, Handles};

struct GraphBuilder {
    nodes: Vec<NodeSpec>,
    edges: Vec<Edge<String>>,
    /// The message types of the edges.
    edge_types: Vec<MessageType>,
    errors: Vec<BuildError>,
    max_supersteps: u32,
}

impl GraphBuilder {
    /// The routing tag of `T`, a message type of an edge.
    fn tag<T: 'static>(&mut self) -> &'static str {
        let message = MessageType::of::<T>();
        self.edge_types.push(message);
        message.tag
    }

    /// The routing tags of every message type of the graph, or the first
    /// two types that share one.
    fn message_types(&self) -> Result<HashSet<&'static str>, BuildError> {
        let mut types: HashMap<&'static str, &'static str> = HashMap::new();
        let nodes = self.nodes.iter().flat_map(|n| &n.message_types);
        for message in nodes.chain(&self.edge_types) {
            let first = *types.entry(message.tag).or_insert(message.rust_name);
            if first != message.rust_name {
                return Err(BuildError::MessageTypeClash {
                    tag: message.tag,
                    first,
                    second: message.rust_name,
                });
            }
        }
        Ok(types.into_keys().collect())
    }

    fn add_spec(&mut self, spec: NodeSpec) -> String {
        let id = spec.id.clone();
        match self.nodes.iter().find(|n| n.id == spec.id) {
            Some(existing) if existing.type_id == spec.type_id => {}
            Some(existing) => {
                let error = BuildError::DuplicateExecutorId {
                    id: spec.id.clone(),
                    first: existing.type_name,
                    second: spec.type_name,
                };
                if !self.errors.contains(&error) {
                    self.errors.push(error);
                }
            }
            None => {
                if spec.id.is_empty() {
                    self.errors.push(BuildError::InvalidExecutorId {
                        id: spec.id.clone(),
                        reason: "it is empty",
                    });
                } else if spec.id.contains('/') {
                    self.errors.push(BuildError::InvalidExecutorId {
                        id: spec.id.clone(),
                        reason: "it contains '/'",
                    });
                } else if spec.id.starts_with('$') {
                    self.errors.push(BuildError::InvalidExecutorId {
                        id: spec.id.clone(),
                        reason: "it starts with '$'",
                    });
                }
                self.nodes.push(spec);
            }
        }
        id
    }

    fn add<E: Executor>(&mut self, executor: E) -> String {
        self.add_spec(executor.__into_node())
    }

    fn absorb(&mut self, collected: Collected) {
        for spec in collected.nodes {
            self.add_spec(spec);
        }
    }
}

/// Builds a workflow graph, starting from its start executor.
///
/// `I` is the workflow's input type and `C` the executor the next
/// [`then`](Self::then) continues from. Every method that makes an edge
/// checks at compile time that the target handles what the source sends.
///
/// An executor may be passed to several methods (the same type with the
/// same id is one node); two different executor types with one id are an
/// error.
///
/// ```
/// use agent_workflows::prelude::*;
///
/// #[executor]
/// async fn parse(text: String) -> Result<u32, ExecutorError> {
///     text.trim().parse().map_err(ExecutorError::terminal)
/// }
///
/// #[executor]
/// async fn double(n: u32, ctx: &mut WorkflowContext) -> Result<(), ExecutorError> {
///     ctx.yield_output(&(n * 2))
/// }
///
/// let workflow = WorkflowBuilder::start(parse).then(double).max_supersteps(10).build();
/// assert_eq!(workflow.executor_ids(), ["parse", "double"]);
/// ```
pub struct WorkflowBuilder<I, C> {
    graph: GraphBuilder,
    start: String,
    cursor: String,
    _types: PhantomData<fn(I) -> C>,
}

impl<I, C> fmt::Debug for WorkflowBuilder<I, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkflowBuilder")
            .field("nodes", &self.graph.nodes)
            .field("start", &self.start)
            .finish_non_exhaustive()
    }
}

impl<I: Message, C: Executor> WorkflowBuilder<I, C> {
    /// A workflow whose input goes to `executor`.
    pub fn start(executor: C) -> Self
    where
        C: Handles<I>,
    {
        let mut graph = GraphBuilder {
            nodes: Vec::new(),
            edges: Vec::new(),
            edge_types: Vec::new(),
            errors: Vec::new(),
            max_supersteps: DEFAULT_MAX_SUPERSTEPS,
        };
        let start = graph.add(executor);
        Self {
            graph,
            cursor: start.clone(),
            start,
            _types: PhantomData,
        }
    }

    fn with_cursor<N>(self, cursor: String) -> WorkflowBuilder<I, N> {
        WorkflowBuilder {
            graph: self.graph,
            start: self.start,
            cursor,
            _types: PhantomData,
        }
    }

    /// An edge from the current executor to `next`, which becomes current.
    pub fn then<N: Handles<C::Output>>(mut self, next: N) -> WorkflowBuilder<I, N> {
        let to = self.graph.add(next);
        self.graph.edges.push(Edge::Direct {
            from: self.cursor.clone(),
            to: to.clone(),
            condition: None,
        });
        self.with_cursor(to)
    }

    /// A conditional edge from the current executor to `next`, which
    /// becomes current: outputs for which `condition` holds go to `next`.
    pub fn then_if<N, F>(mut self, next: N, condition: F) -> WorkflowBuilder<I, N>
    where
        N: Handles<C::Output>,
        F: Fn(&C::Output) -> bool + Send + Sync + 'static,
    {
        let to = self.graph.add(next);
        let message_type = self.graph.tag::<C::Output>();
        self.graph.edges.push(Edge::Direct {
            from: self.cursor.clone(),
            to: to.clone(),
            condition: Some((message_type, typed_condition(condition))),
        });
        self.with_cursor(to)
    }

    /// An edge from `from` to `to` (loops are edges back to an earlier
    /// executor). The current executor does not change.
    pub fn add_edge<A, B>(mut self, from: A, to: B) -> Self
    where
        A: Executor,
        B: Handles<A::Output>,
    {
        let from = self.graph.add(from);
        let to = self.graph.add(to);
        self.graph.edges.push(Edge::Direct {
            from,
            to,
            condition: None,
        });
        self
    }

    /// A conditional edge: outputs of `from` for which `condition` holds go
    /// to `to`.
    pub fn add_edge_if<A, B, F>(mut self, from: A, to: B, condition: F) -> Self
    where
        A: Executor,
        B: Handles<A::Output>,
        F: Fn(&A::Output) -> bool + Send + Sync + 'static,
    {
        let from = self.graph.add(from);
        let to = self.graph.add(to);
        let message_type = self.graph.tag::<A::Output>();
        self.graph.edges.push(Edge::Direct {
            from,
            to,
            condition: Some((message_type, typed_condition(condition))),
        });
        self
    }

    /// An edge whose message types are checked when the workflow runs:
    /// every message `from` sends (with
    /// [`send_message`](crate::WorkflowContext::send_message)) whose type
    /// `to` handles goes to `to`. Use it for executors that send several
    /// types; prefer the typed methods otherwise.
    pub fn add_dynamic_edge<A: Executor, B: Executor>(mut self, from: A, to: B) -> Self {
        let from = self.graph.add(from);
        let to = self.graph.add(to);
        self.graph.edges.push(Edge::Direct {
            from,
            to,
            condition: None,
        });
        self
    }

    /// A switch after `from`: each output goes to the first matching case.
    pub fn add_switch<A: Executor>(mut self, from: A, switch: Switch<A::Output>) -> Self {
        let from = self.graph.add(from);
        self.graph.absorb(switch.collected);
        let message_type = self.graph.tag::<A::Output>();
        self.graph.edges.push(Edge::Switch {
            from,
            message_type,
            cases: switch.cases,
            default: switch.default,
        });
        self
    }

    /// A fan-out after `from`: each output goes to all targets, or to those
    /// the fan-out's selector picks.
    pub fn add_fan_out<A: Executor>(mut self, from: A, fan_out: FanOut<A::Output>) -> Self {
        let from = self.graph.add(from);
        self.graph.absorb(fan_out.collected);
        let message_type = self.graph.tag::<A::Output>();
        self.graph.edges.push(Edge::FanOut {
            from,
            targets: fan_out.targets,
            selector: fan_out.selector.map(|selector| (message_type, selector)),
        });
        self
    }

    /// A fan-in barrier: `to` runs once every source has sent a message,
    /// with all of them as a `Vec<T>`.
    pub fn add_fan_in<T: Message, B: Handles<Vec<T>>>(mut self, fan_in: FanIn<T>, to: B) -> Self {
        let to = self.graph.add(to);
        if fan_in.sources.is_empty() {
            self.graph
                .errors
                .push(BuildError::EmptyFanIn { target: to.clone() });
        }
        self.graph.absorb(fan_in.collected);
        let message_type = self.graph.tag::<T>();
        let batch_type = self.graph.tag::<Vec<T>>();
        self.graph.edges.push(Edge::FanIn {
            sources: fan_in.sources,
            to,
            message_type,
            batch_type,
        });
        self
    }

    /// Makes `executor` current, to continue a chain from it with
    /// [`then`](Self::then).
    pub fn from<N: Executor>(mut self, executor: N) -> WorkflowBuilder<I, N> {
        let id = self.graph.add(executor);
        self.with_cursor(id)
    }

    /// The most supersteps a run may take (default 100). A run that would
    /// need more fails with
    /// [`WorkflowError::MaxSuperstepsExceeded`](crate::WorkflowError::MaxSuperstepsExceeded).
    pub fn max_supersteps(mut self, limit: u32) -> Self {
        self.graph.max_supersteps = limit;
        self
    }

    /// Builds the workflow.
    ///
    /// # Panics
    ///
    /// If the graph is invalid (see [`try_build`](Self::try_build)); the
    /// message says what to change.
    pub fn build(self) -> Workflow<I> {
        match self.try_build() {
            Ok(workflow) => workflow,
            Err(e) => panic!("invalid workflow graph: {e}"),
        }
    }

    /// Builds the workflow.
    ///
    /// # Errors
    ///
    /// A [`BuildError`] for duplicate or invalid executor ids, an empty
    /// fan-in, a zero superstep limit or two message types with one name.
    pub fn try_build(self) -> Result<Workflow<I>, BuildError> {
        let mut graph = self.graph;
        if let Some(error) = graph.errors.first() {
            return Err(error.clone());
        }
        if graph.max_supersteps == 0 {
            return Err(BuildError::ZeroSuperstepLimit);
        }
        let start_type = graph.tag::<I>();
        let message_types = graph.message_types()?;
        let index: HashMap<String, usize> = graph
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.clone(), i))
            .collect();
        let edges = std::mem::take(&mut graph.edges)
            .into_iter()
            .map(|edge| edge.map(|id| index[&id]))
            .collect();
        Ok(Workflow {
            graph: Arc::new(Graph {
                start: index[&self.start],
                start_type,
                message_types,
                nodes: graph.nodes,
                edges,
                max_supersteps: graph.max_supersteps,
            }),
            _input: PhantomData,
        })
    }
}
