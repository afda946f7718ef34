//! Durable hosting: a workflow registers one orchestration (the superstep
//! loop) and one activity per executor; a run is one orchestration
//! instance and each executor invocation one activity, so a run resumes
//! after a crash without redoing finished executors.

use std::sync::Arc;

use durable_core::{ActivityContext, OrchestrationContext, Payload, Registry};

use crate::executor::ErasedExecutor;
use crate::graph::{Graph, NodeKind};
use crate::message::Message;
use crate::superstep::{run_workflow, Handled, InvocationInput, InvocationOutcome, RunMode};
use crate::{Workflow, WorkflowContext};

/// A workflow with a stable name, as [`#[workflow]`](crate::workflow)
/// generates it.
pub trait WorkflowDefinition: Send + Sync + 'static {
    /// The input of a run.
    type Input: Message;

    /// The name its orchestration is registered under; runs are started
    /// by it, so keep it stable.
    const NAME: &'static str;

    /// Builds the graph.
    fn build() -> Workflow<Self::Input>;
}

/// Registers workflows in a durable-core [`Registry`].
pub trait RegistryExt {
    /// Registers workflow `W`: its orchestration (under `W::NAME`) and
    /// every executor's activity, sub-workflows included.
    ///
    /// # Panics
    ///
    /// If `W`'s graph is invalid (see
    /// [`WorkflowBuilder::build`](crate::WorkflowBuilder::build)).
    fn workflow<W: WorkflowDefinition>(self, workflow: W) -> Registry;
}

impl RegistryExt for Registry {
    fn workflow<W: WorkflowDefinition>(self, _workflow: W) -> Registry {
        W::build().register(W::NAME, self)
    }
}

impl<I: Message> Workflow<I> {
    /// Registers this workflow under `name`: an orchestration named `name`
    /// and an activity named `"{name}/{executor id}"` per executor
    /// (sub-workflows are registered as `"{name}/{node id}"`).
    pub fn register(self, name: &str, registry: Registry) -> Registry {
        register_graph(registry, &self.graph, name, RunMode::TopLevel)
    }
}

fn register_graph(mut registry: Registry, graph: &Arc<Graph>, name: &str, mode: RunMode) -> Registry {
    let orchestration_name: Arc<str> = Arc::from(name);
    let orchestration_graph = graph.clone();
    registry = registry.orchestration(name, move |ctx: OrchestrationContext, input: Payload| {
        run_workflow(
            ctx,
            orchestration_graph.clone(),
            orchestration_name.clone(),
            input,
            mode,
        )
    });
    for node in &graph.nodes {
        let path = format!("{name}/{}", node.id);
        match &node.kind {
            NodeKind::Executor(executor) => {
                let executor = executor.clone();
                let executor_id: Arc<str> = Arc::from(node.id.as_str());
                registry = registry.activity(path, move |ctx: ActivityContext, input: InvocationInput| {
                    invoke_executor(executor.clone(), executor_id.clone(), ctx, input)
                });
            }
            NodeKind::SubWorkflow(sub) => {
                registry = register_graph(registry, sub, &path, RunMode::Child);
            }
        }
    }
    registry
}

/// A retryable executor failure: the activity fails, and the
/// orchestration retries it as the executor's policy says.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct RetryableFailure(String);

/// The executor activity: runs the handler for each message in order.
async fn invoke_executor(
    executor: Arc<dyn ErasedExecutor>,
    executor_id: Arc<str>,
    ctx: ActivityContext,
    input: InvocationInput,
) -> Result<InvocationOutcome, RetryableFailure> {
    let mut wctx = WorkflowContext::new(
        ctx.instance_id.to_string(),
        executor_id.to_string(),
        input.superstep,
        input.attempt,
        executor.accepts().to_vec(),
        input.state,
    );
    let mut handled = Vec::with_capacity(input.messages.len());
    for message in input.messages {
        let type_name = message.type_name;
        match executor.invoke(&type_name, message.payload, &mut wctx).await {
            Ok(output) => handled.push(Handled {
                output,
                effects: wctx.take_effects(),
            }),
            Err(e) if e.is_terminal() => return Ok(InvocationOutcome::Terminal { error: e.to_string() }),
            Err(e) => return Err(RetryableFailure(e.to_string())),
        }
    }
    Ok(InvocationOutcome::Completed {
        handled,
        writes: wctx.into_writes(),
    })
}
