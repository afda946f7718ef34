use agent_workflows::{executor, ExecutorError};

#[executor(max_attempts = 3, retry_interval = "half a second")]
async fn parse(text: String) -> Result<u32, ExecutorError> {
    text.parse().map_err(ExecutorError::terminal)
}

fn main() {}
