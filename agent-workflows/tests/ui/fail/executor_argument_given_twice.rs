use agent_workflows::{executor, ExecutorError};

#[executor(id = "parse", id = "parse-again")]
async fn parse(text: String) -> Result<u32, ExecutorError> {
    text.parse().map_err(ExecutorError::terminal)
}

fn main() {}
