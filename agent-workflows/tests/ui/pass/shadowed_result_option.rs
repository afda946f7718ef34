//! The generated code names `Result`, `Option`, `Box` and friends by full
//! path, so shadowing them in user code does not break it.

#![allow(dead_code)]

use agent_workflows::{executor, workflow, ExecutorError, Workflow, WorkflowBuilder, WorkflowContext, WorkflowDefinition};

type Result<T> = ::core::result::Result<T, ExecutorError>;
enum Option {
    Shadowed,
}
struct Box;
struct Vec;
struct String;
mod core {}
mod std {}

#[executor(id = "count")]
async fn count(text: ::std::string::String) -> Result<usize> {
    Ok(text.len())
}

#[executor(id = "double", max_attempts = 2, retry_interval = "1ms")]
async fn double(n: usize, ctx: &mut WorkflowContext) -> Result<()> {
    ctx.yield_output(&(n * 2))
}

struct Labeller;

#[executor]
impl Labeller {
    #[handler]
    async fn on_count(&self, n: usize) -> Result<()> {
        let _ = n;
        Ok(())
    }
}

#[workflow(name = "shadowed")]
fn shadowed() -> Workflow<::std::string::String> {
    WorkflowBuilder::start(count).then(double).add_edge(count, Labeller).build()
}

fn main() {
    let workflow = <shadowed as WorkflowDefinition>::build();
    assert_eq!(workflow.executor_ids(), ["count", "double", "Labeller"]);
    assert_eq!(<shadowed as WorkflowDefinition>::NAME, "shadowed");
}
