//! Serves the runtime over HTTP: a worker running the example workflows
//! (document processing, human approval) and the sample orchestrations,
//! and the HTTP API (with the live stream as Server-Sent Events, and the
//! workflows' pending requests) on 127.0.0.1:8080. See docs/http.md for
//! curl commands.
//!
//! ```text
//! cargo run --release --example serve -- [--db URL] [--bind ADDR] [--token TOKEN]
//! ```
//!
//! The token may also come from the environment variable
//! `DURABLE_HTTP_TOKEN`; with one, every request needs
//! `Authorization: Bearer TOKEN`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use durable_core::http::{HttpApi, ServeOptions, DEFAULT_ADDR};
use durable_core::prelude::*;
use durable_workspace::samples;

const USAGE: &str = "usage: serve [--db URL] [--bind ADDR] [--token TOKEN]

  --db URL       the database (default sqlite://serve.db)
  --bind ADDR    the address to listen on (default 127.0.0.1:8080)
  --token TOKEN  require 'Authorization: Bearer TOKEN' on every request
                 (default: the environment variable DURABLE_HTTP_TOKEN)
  -h, --help     this text";

/// The orchestrations this server runs: the example workflows (document
/// processing, human approval) and the plain samples. A new one is one
/// line here.
fn registry() -> Registry {
    durable_workspace::register(Registry::new())
        .merge(samples::hello_cities())
        .merge(samples::approval_flow())
}

#[derive(Debug)]
struct Args {
    db: String,
    bind: SocketAddr,
    token: Option<String>,
}

/// Parses the command line; `Ok(None)` for `--help`.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut parsed = Args {
        db: "sqlite://serve.db".to_owned(),
        bind: DEFAULT_ADDR,
        token: None,
    };
    let mut token_flag = None;
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |what: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value: {what}"))
        };
        match flag.as_str() {
            "--db" => parsed.db = value("a database URL such as sqlite://serve.db")?,
            "--bind" => {
                let text = value("an address such as 127.0.0.1:8080")?;
                parsed.bind = text
                    .parse()
                    .map_err(|_| format!("--bind {text:?} is not an address such as 127.0.0.1:8080"))?;
            }
            "--token" => token_flag = Some(value("the bearer token clients must send")?),
            "-h" | "--help" => return Ok(None),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let token = token_flag.or_else(|| std::env::var("DURABLE_HTTP_TOKEN").ok());
    if token.as_deref().is_some_and(|t| t.trim().is_empty()) {
        return Err("the token is empty: give a non-empty --token or DURABLE_HTTP_TOKEN".to_owned());
    }
    parsed.token = token;
    Ok(Some(parsed))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("serve: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("serve: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let store: Arc<dyn Store> = durable_workspace::open_store(&args.db)
        .await
        .map_err(|e| format!("cannot open {}: {e}", args.db))?;
    let registry = registry();
    let names: Vec<String> = registry
        .orchestration_names()
        .into_iter()
        .map(str::to_owned)
        .collect();
    let worker = Worker::start(store.clone(), registry)?;
    let client = Client::new(store);

    let options = ServeOptions::new()
        .token_opt(args.token.clone())
        .known_orchestrations(names.clone());
    // The workflow layer's routes: live status, pending requests, answers.
    let api = agent_workflows::http::add_routes(
        HttpApi::new(client.clone(), options),
        agent_workflows::WorkflowClient::new(client),
    );

    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.bind))?;
    let addr = listener.local_addr()?;
    println!("serving {} on http://{addr}", args.db);
    println!("orchestrations: {}", names.join(", "));
    match &args.token {
        Some(_) => println!("every request needs 'Authorization: Bearer <token>'"),
        None if !addr.ip().is_loopback() => {
            eprintln!("warning: listening on {addr} without a token: anyone who can reach it can start and stop instances");
        }
        None => println!("no token: reachable from this machine only"),
    }
    println!("API description: http://{addr}/api/openapi.json (Ctrl-C stops)");

    api.serve_with_shutdown(listener, async {
        let _ = tokio::signal::ctrl_c().await;
        println!("stopping");
    })
    .await?;
    worker.shutdown().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<Args>, String> {
        parse_args(args.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn flags_parse_and_bad_flags_say_why() {
        let args = parse(&["--db", "sqlite://x.db", "--bind=127.0.0.1:9000", "--token", "t"])
            .unwrap()
            .unwrap();
        assert_eq!(args.db, "sqlite://x.db");
        assert_eq!(args.bind, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(args.token.as_deref(), Some("t"));
        assert!(parse(&["--help"]).unwrap().is_none());
        assert!(parse(&["--bind", "localhost"]).unwrap_err().contains("--bind"));
        assert!(parse(&["--db"]).unwrap_err().contains("needs a value"));
        assert!(parse(&["--port", "1"]).unwrap_err().contains("unknown argument"));
        assert!(parse(&["--token", " "]).unwrap_err().contains("empty"));
    }
}
