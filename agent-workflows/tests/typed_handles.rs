//! `#[activity]` and `#[orchestration]` on plain durable-core code: typed
//! handles that register themselves and are called with checked inputs.

use std::sync::Arc;
use std::time::Duration;

use durable_core::prelude::*;
use durable_core::RetryPolicy;
use durable_macros::{activity, orchestration};

#[activity]
async fn say_hello(_ctx: ActivityContext, city: String) -> Result<String, std::convert::Infallible> {
    Ok(format!("Hello {city}!"))
}

#[activity(name = "count-letters")]
async fn count_letters(_ctx: ActivityContext, text: String) -> Result<usize, String> {
    if text.is_empty() {
        return Err("nothing to count".into());
    }
    Ok(text.chars().filter(|c| c.is_alphabetic()).count())
}

/// Greets one city and counts the letters of the greeting.
#[orchestration(name = "greet-one")]
async fn greet_one(ctx: OrchestrationContext, city: String) -> Result<(String, usize), OrchestrationError> {
    let greeting = ctx.call(say_hello, &city).await?;
    let policy = RetryPolicy::new(2, Duration::from_millis(1));
    let letters = ctx.call_with_retry(count_letters, &greeting, policy).await?;
    Ok((greeting, letters))
}

#[orchestration]
async fn greet_all(
    ctx: OrchestrationContext,
    cities: Vec<String>,
) -> Result<Vec<(String, usize)>, OrchestrationError> {
    let calls = cities.iter().map(|city| ctx.call_sub(greet_one, city));
    durable_core::future::join_all(calls).await.into_iter().collect()
}

#[test]
fn handles_carry_their_names_and_types() {
    use durable_core::{Activity, Orchestration};
    fn input_of<A: Activity>(_: A) -> &'static str {
        std::any::type_name::<A::Input>()
    }
    assert_eq!(<say_hello as Activity>::NAME, "say_hello");
    assert_eq!(<count_letters as Activity>::NAME, "count-letters");
    assert_eq!(<greet_one as Orchestration>::NAME, "greet-one");
    assert_eq!(input_of(say_hello), std::any::type_name::<String>());
    let registry = Registry::new()
        .register(say_hello)
        .register(count_letters)
        .register(greet_one)
        .register(greet_all);
    assert!(registry.has_activity("say_hello") && registry.has_activity("count-letters"));
    assert!(registry.has_orchestration("greet-one") && registry.has_orchestration("greet_all"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_handles_run_on_the_runtime() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
    let registry = Registry::new()
        .register(say_hello)
        .register(count_letters)
        .register(greet_one)
        .register(greet_all);
    let worker = Worker::start(store.clone(), registry).unwrap();
    let client = Client::new(store);
    let id = client
        .start_typed(greet_all, &vec!["Tokyo".to_owned(), "Lima".to_owned()])
        .await
        .unwrap();
    let done = client
        .wait_for_completion(&id, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(done.status, RuntimeStatus::Completed, "{:?}", done.failure);
    let output: Vec<(String, usize)> = done.output_as().unwrap();
    assert_eq!(
        output,
        [("Hello Tokyo!".to_owned(), 10), ("Hello Lima!".to_owned(), 9)]
    );
    worker.shutdown().await.unwrap();
}
