use durable_core::{OrchestrationContext, OrchestrationError};

#[durable_macros::orchestration(timeout = "5s")]
async fn hello(_ctx: OrchestrationContext, city: String) -> Result<String, OrchestrationError> {
    Ok(city)
}

fn main() {}
