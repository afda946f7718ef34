use agent_workflows::executor;

#[executor]
async fn length(text: String) -> usize {
    text.len()
}

fn main() {}
