use agent_workflows::{executor, workflow, ExecutorError, Workflow, WorkflowBuilder};

#[executor(id = "step")]
async fn first(text: String) -> Result<String, ExecutorError> {
    Ok(text)
}

#[executor(id = "step")]
async fn second(text: String) -> Result<String, ExecutorError> {
    Ok(text)
}

#[workflow]
fn pipeline() -> Workflow<String> {
    WorkflowBuilder::start(first).then(second).build()
}

fn main() {}
