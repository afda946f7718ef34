use agent_workflows::{executor, ExecutorError};

struct Counter {
    seen: u32,
}

#[executor]
impl Counter {
    #[handler]
    async fn on_text(&mut self, _text: String) -> Result<u32, ExecutorError> {
        self.seen += 1;
        Ok(self.seen)
    }
}

fn main() {}
