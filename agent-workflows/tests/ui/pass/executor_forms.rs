//! Every executor form, a workflow over them, and the handles of
//! `#[activity]` and `#[orchestration]`.

use agent_workflows::prelude::*;
use agent_workflows::{Executor, Handles, StaticExecutorId};
use durable_core::{ActivityContext, OrchestrationContext, OrchestrationError};

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Doc {
    pub text: String,
}

/// Documented executors keep their docs.
#[executor(id = "load")]
pub async fn load(path: String) -> Result<Doc, ExecutorError> {
    Ok(Doc { text: path })
}

#[executor]
async fn r#measure(doc: Doc, ctx: &mut WorkflowContext) -> Result<usize, ExecutorError> {
    ctx.add_event("measured", &doc.text.len())?;
    Ok(doc.text.len())
}

struct Threshold {
    limit: usize,
}

#[executor(id = "threshold", max_attempts = 3, retry_interval = "250ms", backoff = 2, max_retry_interval = "1s")]
impl Threshold {
    #[handler]
    async fn on_size(&self, size: usize, ctx: &mut WorkflowContext) -> Result<bool, ExecutorError> {
        ctx.yield_output(&(size > self.limit))?;
        Ok(size > self.limit)
    }

    #[agent_workflows::handler]
    async fn on_doc(&self, doc: Doc) -> Result<bool, ExecutorError> {
        Ok(doc.text.len() > self.limit)
    }

    fn helper(&self) -> usize {
        self.limit
    }
}

#[workflow]
fn sizes() -> Workflow<String> {
    let threshold = Threshold { limit: 3 };
    WorkflowBuilder::start(load).then(measure).then(threshold).build()
}

#[durable_macros::activity(name = "say-hello")]
async fn say_hello(_ctx: ActivityContext, city: String) -> Result<String, std::convert::Infallible> {
    Ok(format!("Hello {city}!"))
}

#[durable_macros::orchestration]
async fn hello(ctx: OrchestrationContext, city: String) -> Result<String, OrchestrationError> {
    ctx.call(say_hello, &city).await
}

fn handles<E: Handles<M>, M>(_: &E) {}

fn main() {
    assert_eq!(load.id(), "load");
    assert_eq!(<measure as StaticExecutorId>::ID, "measure");
    let threshold = Threshold { limit: 1 };
    assert_eq!(threshold.helper(), 1);
    handles::<_, usize>(&threshold);
    handles::<_, Doc>(&threshold);
    let policy = threshold.retry_policy().unwrap();
    assert_eq!(policy.max_attempts, 3);
    assert_eq!(policy.delay_before_retry(2), Some(std::time::Duration::from_millis(500)));
    assert_eq!(policy.delay_before_retry(1), Some(std::time::Duration::from_millis(250)));
    assert_eq!(<sizes as WorkflowDefinition>::build().executor_ids(), ["load", "measure", "threshold"]);
    let registry = Registry::new().workflow(sizes).register(say_hello).register(hello);
    assert!(registry.has_orchestration("sizes") && registry.has_activity("sizes/threshold"));
    assert!(registry.has_activity("say-hello") && registry.has_orchestration("hello"));
}
