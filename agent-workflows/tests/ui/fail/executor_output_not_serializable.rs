use agent_workflows::{executor, ExecutorError};

struct Summary {
    words: usize,
}

#[executor]
async fn summarize(text: String) -> Result<Summary, ExecutorError> {
    Ok(Summary { words: text.split_whitespace().count() })
}

fn main() {}
