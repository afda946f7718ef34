use agent_workflows::{executor, ExecutorError};

#[executor]
fn parse(text: String) -> Result<u32, ExecutorError> {
    text.parse().map_err(ExecutorError::terminal)
}

fn main() {}
