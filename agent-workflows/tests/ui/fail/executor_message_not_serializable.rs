use agent_workflows::{executor, ExecutorError};

struct Document {
    text: String,
}

#[executor]
async fn measure(doc: Document) -> Result<usize, ExecutorError> {
    Ok(doc.text.len())
}

fn main() {}
