use agent_workflows::{executor, workflow, ExecutorError, Workflow, WorkflowBuilder};

#[executor]
async fn echo(text: String) -> Result<String, ExecutorError> {
    Ok(text)
}

#[workflow(name = "pipeline", version = 2)]
fn pipeline() -> Workflow<String> {
    WorkflowBuilder::start(echo).build()
}

fn main() {}
