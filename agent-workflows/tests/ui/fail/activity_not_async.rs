use durable_core::ActivityContext;

#[durable_macros::activity]
fn say_hello(_ctx: ActivityContext, city: String) -> Result<String, std::convert::Infallible> {
    Ok(format!("Hello {city}!"))
}

fn main() {}
