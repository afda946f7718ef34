use agent_workflows::{executor, ExecutorError};

struct Reviewer;

#[executor]
impl Reviewer {
    #[handler]
    async fn on_text(&self, text: String) -> Result<bool, ExecutorError> {
        Ok(!text.is_empty())
    }

    #[handler]
    async fn on_number(&self, n: u32) -> Result<String, ExecutorError> {
        Ok(n.to_string())
    }
}

fn main() {}
