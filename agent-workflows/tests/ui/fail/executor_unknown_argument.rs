use agent_workflows::{executor, ExecutorError};

#[executor(name = "parse")]
async fn parse(text: String) -> Result<u32, ExecutorError> {
    text.parse().map_err(ExecutorError::terminal)
}

fn main() {}
