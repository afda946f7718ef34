//! The custom-status sample from the Durable Functions documentation
//! (`E1_HelloSequence`), on durable-core: an orchestration greets three
//! cities through an activity and sets its custom status after each one.
//! The client prints the custom status each time it changes, then the
//! output. The same progress also goes to the instance's stream.
//!
//! ```text
//! cargo run --release --example hello_cities [-- --db sqlite://hello.db]
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use durable_core::prelude::*;
use durable_workspace::samples::{hello_sequence, say_hello};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut db = "sqlite://hello_cities.db".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--db" => {
                db = args
                    .next()
                    .ok_or("--db needs a value, such as sqlite://hello.db")?
            }
            "-h" | "--help" => {
                println!("usage: hello_cities [--db URL]");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?} (try --help)").into()),
        }
    }
    let store: Arc<dyn Store> = Arc::new(SqliteStore::connect(&db).await?);
    let registry = Registry::new()
        .orchestration("E1_HelloSequence", hello_sequence)
        .activity("E1_SayHello", say_hello)
        .activity("say_hello", say_hello);
    let worker = Worker::start(store.clone(), registry)?;
    let client = Client::new(store);

    let started = Instant::now();
    let id = client
        .start("E1_HelloSequence", &["Tokyo", "Seattle", "London"])
        .await?;
    println!("started instance {id} on {db}");

    let mut last_status = None;
    let done = loop {
        let meta = client.get_instance(&id).await?.ok_or("instance vanished")?;
        if meta.custom_status != last_status {
            println!(
                "[{:>6.3}s] {:<9} customStatus = {}",
                started.elapsed().as_secs_f64(),
                meta.status,
                meta.custom_status
                    .as_ref()
                    .map_or("null".to_owned(), ToString::to_string)
            );
            last_status = meta.custom_status.clone();
        }
        if meta.status.is_terminal() {
            break meta;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("runtimeStatus = {}", done.status);
    println!("output = {}", done.output.unwrap_or_default());
    let page = client.get_events(&id, 0, 100).await?;
    println!(
        "stream: {} events ({})",
        page.events.len(),
        page.events
            .iter()
            .map(|e| format!("{}={}", e.name, e.payload))
            .collect::<Vec<_>>()
            .join(", ")
    );
    worker.shutdown().await?;
    Ok(())
}
