use agent_workflows::executor;

#[executor]
async fn log(text: String) {
    println!("{text}");
}

fn main() {}
