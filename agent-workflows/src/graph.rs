//! The workflow graph and its typed builder.
//!
//! Edges are checked while compiling: the builder's methods require the
//! target to [`Handles`] the source's output type, so a mismatch is a
//! compile error at the call that makes the edge.

use std::any::TypeId;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use durable_core::{Payload, RetryPolicy};

use crate::executor::{is_unit, ErasedExecutor, Node};
use crate::message::{type_tag, Message, MessageType};
use crate::{BuildError, Executor, HandlerSet, Handles};

/// The default superstep limit.
pub const DEFAULT_MAX_SUPERSTEPS: u32 = 100;

pub(crate) type Condition = Arc<dyn Fn(&Payload) -> bool + Send + Sync>;
pub(crate) type Selector = Arc<dyn Fn(&Payload, &[String]) -> Vec<String> + Send + Sync>;

fn condition<T: Message>(f: impl Fn(&T) -> bool + Send + Sync + 'static) -> Condition {
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

fn no_retry() -> RetryPolicy {
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

fn output_type<T: 'static>() -> Option<MessageType> {
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
    collected: Collected,
    cases: Vec<(Condition, String)>,
    default: Option<String>,
    _type: PhantomData<fn(T)>,
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
        self.cases.push((self::condition(condition), id));
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
    collected: Collected,
    targets: Vec<String>,
    selector: Option<Selector>,
    _type: PhantomData<fn(T)>,
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
    collected: Collected,
    sources: Vec<String>,
    _type: PhantomData<fn(T)>,
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
    id: String,
    workflow: Workflow<I>,
    retry: Option<RetryPolicy>,
    _output: PhantomData<fn() -> O>,
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
            condition: Some((message_type, self::condition(condition))),
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
            condition: Some((message_type, self::condition(condition))),
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
mod tests {
    use super::*;
    use crate::{ExecutorError, ExecutorExt, HandlerFuture, WorkflowContext};

    /// A hand-written executor (no macro), configurable id.
    struct Echo(&'static str);

    fn echo<'a>(_: &'a Echo, n: u32, _: &'a mut WorkflowContext) -> HandlerFuture<'a, u32> {
        Box::pin(async move { Ok(n) })
    }

    impl Executor for Echo {
        type Output = u32;

        fn id(&self) -> &str {
            self.0
        }

        fn handlers() -> HandlerSet<Self> {
            HandlerSet::new().on::<u32>(echo)
        }
    }

    impl Handles<u32> for Echo {}

    struct Other;

    fn other<'a>(_: &'a Other, _: u32, _: &'a mut WorkflowContext) -> HandlerFuture<'a, ()> {
        Box::pin(async { Err(ExecutorError::terminal("unused")) })
    }

    impl Executor for Other {
        type Output = ();

        fn id(&self) -> &str {
            "a"
        }

        fn handlers() -> HandlerSet<Self> {
            HandlerSet::new().on::<u32>(other)
        }
    }

    impl Handles<u32> for Other {}

    struct Sum;

    fn sum<'a>(_: &'a Sum, ns: Vec<u32>, _: &'a mut WorkflowContext) -> HandlerFuture<'a, u32> {
        Box::pin(async move { Ok(ns.iter().sum()) })
    }

    impl Executor for Sum {
        type Output = u32;

        fn id(&self) -> &str {
            "sum"
        }

        fn handlers() -> HandlerSet<Self> {
            HandlerSet::new().on::<Vec<u32>>(sum)
        }
    }

    impl Handles<Vec<u32>> for Sum {}

    #[test]
    fn the_same_executor_twice_is_one_node() {
        let workflow = WorkflowBuilder::start(Echo("a"))
            .then(Echo("b"))
            .add_edge(Echo("b"), Echo("a"))
            .build();
        assert_eq!(workflow.executor_ids(), ["a", "b"]);
        assert_eq!(workflow.graph.edges.len(), 2);
        assert_eq!(workflow.graph.start_type, type_tag::<u32>());
    }

    #[test]
    fn two_executor_types_with_one_id_are_rejected() {
        let error = WorkflowBuilder::start(Echo("a"))
            .then(Other)
            .try_build()
            .unwrap_err();
        assert!(
            matches!(&error, BuildError::DuplicateExecutorId { id, .. } if id == "a"),
            "{error}"
        );
        assert!(error.to_string().contains("give one of them another id"));
        // Renaming one of them fixes it.
        let workflow = WorkflowBuilder::start(Echo("a"))
            .then(Other.with_id("other"))
            .build();
        assert_eq!(workflow.executor_ids(), ["a", "other"]);
    }

    #[test]
    fn invalid_graphs_say_what_is_wrong() {
        let error = WorkflowBuilder::start(Echo("a/b")).try_build().unwrap_err();
        assert_eq!(error.to_string(), "invalid executor id \"a/b\": it contains '/'");
        let error = WorkflowBuilder::start(Echo("")).try_build().unwrap_err();
        assert_eq!(error.to_string(), "invalid executor id \"\": it is empty");
        let error = WorkflowBuilder::start(Echo("a"))
            .add_fan_in(FanIn::<u32>::new(), Sum)
            .try_build()
            .unwrap_err();
        assert_eq!(error, BuildError::EmptyFanIn { target: "sum".into() });
        let error = WorkflowBuilder::start(Echo("a"))
            .max_supersteps(0)
            .try_build()
            .unwrap_err();
        assert_eq!(error, BuildError::ZeroSuperstepLimit);
    }

    #[test]
    #[should_panic(expected = "invalid workflow graph: two different executors have the id 'a'")]
    fn build_panics_with_the_reason() {
        let _ = WorkflowBuilder::start(Echo("a")).then(Other).build();
    }

    mod v1 {
        #[derive(serde::Serialize, serde::Deserialize)]
        pub(super) struct Doc;
    }

    mod v2 {
        #[derive(serde::Serialize, serde::Deserialize)]
        pub(super) struct Doc;
    }

    struct Convert;

    fn convert<'a>(_: &'a Convert, _: u32, _: &'a mut WorkflowContext) -> HandlerFuture<'a, v1::Doc> {
        Box::pin(async { Ok(v1::Doc) })
    }

    fn convert_v2<'a>(_: &'a Convert, _: v2::Doc, _: &'a mut WorkflowContext) -> HandlerFuture<'a, v1::Doc> {
        Box::pin(async { Ok(v1::Doc) })
    }

    impl Executor for Convert {
        type Output = v1::Doc;

        fn id(&self) -> &str {
            "convert"
        }

        fn handlers() -> HandlerSet<Self> {
            HandlerSet::new().on::<u32>(convert).on::<v2::Doc>(convert_v2)
        }
    }

    impl Handles<u32> for Convert {}

    #[test]
    fn two_message_types_with_one_name_are_refused() {
        let error = WorkflowBuilder::start(Convert).try_build().unwrap_err();
        assert_eq!(
            error,
            BuildError::MessageTypeClash {
                tag: "Doc",
                first: std::any::type_name::<v2::Doc>(),
                second: std::any::type_name::<v1::Doc>(),
            }
        );
        assert!(error.to_string().contains("rename one of them"), "{error}");
    }

    #[test]
    fn a_workflow_knows_the_names_of_its_message_types() {
        let workflow = WorkflowBuilder::start(Echo("a"))
            .add_fan_in(FanIn::<u32>::new().from(Echo("a")), Sum)
            .build();
        let mut known: Vec<&str> = workflow.graph.message_types.iter().copied().collect();
        known.sort_unstable();
        assert_eq!(known, ["Vec<u32>", "u32"]);
    }
}
