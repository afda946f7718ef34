use agent_workflows::{executor, ExecutorError, WorkflowContext};

#[executor]
async fn parse(text: String, ctx: &mut WorkflowContext, extra: u32) -> Result<u32, ExecutorError> {
    let _ = (ctx, extra);
    text.parse().map_err(ExecutorError::terminal)
}

fn main() {}
