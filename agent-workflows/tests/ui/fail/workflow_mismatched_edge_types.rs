use agent_workflows::{executor, workflow, ExecutorError, Workflow, WorkflowBuilder};

#[executor]
async fn parse(text: String) -> Result<u32, ExecutorError> {
    text.parse().map_err(ExecutorError::terminal)
}

#[executor]
async fn shout(text: String) -> Result<String, ExecutorError> {
    Ok(text.to_uppercase())
}

#[workflow]
fn pipeline() -> Workflow<String> {
    // `parse` outputs a u32, `shout` takes a String.
    WorkflowBuilder::start(parse).then(shout).build()
}

fn main() {}
