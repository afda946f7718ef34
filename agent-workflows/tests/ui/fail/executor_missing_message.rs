use agent_workflows::{executor, ExecutorError};

#[executor]
async fn tick() -> Result<u32, ExecutorError> {
    Ok(1)
}

fn main() {}
