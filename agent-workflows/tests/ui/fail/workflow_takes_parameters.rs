use agent_workflows::{executor, workflow, ExecutorError, Workflow, WorkflowBuilder};

#[executor]
async fn echo(text: String) -> Result<String, ExecutorError> {
    Ok(text)
}

#[workflow]
fn pipeline(limit: u32) -> Workflow<String> {
    WorkflowBuilder::start(echo).max_supersteps(limit).build()
}

fn main() {}
