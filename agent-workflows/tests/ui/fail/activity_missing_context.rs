#[durable_macros::activity]
async fn say_hello(city: String) -> Result<String, std::convert::Infallible> {
    Ok(format!("Hello {city}!"))
}

fn main() {}
