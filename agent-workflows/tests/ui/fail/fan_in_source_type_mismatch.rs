use agent_workflows::{executor, ExecutorError, FanIn, FanOut, Workflow, WorkflowBuilder};

#[executor]
async fn start(text: String) -> Result<String, ExecutorError> {
    Ok(text)
}

#[executor]
async fn length(text: String) -> Result<usize, ExecutorError> {
    Ok(text.len())
}

#[executor]
async fn upper(text: String) -> Result<String, ExecutorError> {
    Ok(text.to_uppercase())
}

#[executor]
async fn join(parts: Vec<String>) -> Result<String, ExecutorError> {
    Ok(parts.concat())
}

fn pipeline() -> Workflow<String> {
    WorkflowBuilder::start(start)
        .add_fan_out(start, FanOut::new().to(length).to(upper))
        .add_fan_in(FanIn::new().from(upper).from(length), join)
        .build()
}

fn main() {
    let _ = pipeline();
}
