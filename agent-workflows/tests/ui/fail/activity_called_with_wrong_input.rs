use durable_core::{ActivityContext, OrchestrationContext, OrchestrationError};

#[durable_macros::activity]
async fn say_hello(_ctx: ActivityContext, city: String) -> Result<String, std::convert::Infallible> {
    Ok(format!("Hello {city}!"))
}

#[durable_macros::orchestration]
async fn hello(ctx: OrchestrationContext, zip: u32) -> Result<String, OrchestrationError> {
    ctx.call(say_hello, &zip).await
}

fn main() {}
