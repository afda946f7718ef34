use agent_workflows::{handler, ExecutorError};

struct Reviewer;

impl Reviewer {
    #[handler]
    async fn review(&self, text: String) -> Result<bool, ExecutorError> {
        Ok(!text.is_empty())
    }
}

fn main() {}
