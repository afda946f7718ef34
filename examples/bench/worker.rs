//! The worker processes of the benchmark (`bench --worker-process ...`):
//! a worker with the examples' registry (and the `stream_live` scenario's
//! orchestration) on the scenario's database, until killed.

use std::process::ExitCode;
use std::time::Duration;

use durable_core::{Registry, Worker};

use crate::support::Target;

/// Runs a worker on the database `args` name (`--sqlite PATH --synchronous
/// MODE` or `--postgres URL --schema NAME`).
pub(crate) async fn run(args: Vec<String>) -> ExitCode {
    let target = match args.as_slice() {
        [flag, path, sync_flag, sync] if flag == "--sqlite" && sync_flag == "--synchronous" => {
            match sync.parse() {
                Ok(synchronous) => Target::Sqlite {
                    path: path.clone(),
                    synchronous,
                },
                Err(e) => return fail(&e),
            }
        }
        [flag, url, schema_flag, schema] if flag == "--postgres" && schema_flag == "--schema" => {
            Target::Postgres {
                url: url.clone(),
                schema: schema.clone(),
            }
        }
        _ => return fail(&"expected --sqlite PATH --synchronous MODE or --postgres URL --schema NAME"),
    };
    let store = match target.open(true).await {
        Ok(store) => store,
        Err(e) => return fail(&e),
    };
    let registry = crate::scenarios::ticker_registry(durable_workspace::register(Registry::new()));
    let _worker = match Worker::start(store, registry) {
        Ok(worker) => worker,
        Err(e) => return fail(&e),
    };
    // Killed by the benchmark when the scenario is over.
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("bench worker process: {error}");
    ExitCode::FAILURE
}
