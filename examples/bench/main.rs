//! The benchmark program: one JSON line per scenario with its figures and
//! its configuration.
//!
//! ```text
//! cargo run --release --example bench -- [--backend sqlite] [--scenario NAME]... \
//!     [--synchronous full|normal]
//! ```
//!
//! Scenarios: `pipeline`, `pipeline_concurrent`, `activities`,
//! `stream_append`, `stream_live`, `status_vs_stream`, `idle_instances`
//! (all of them when none is given). Figures are named with their unit
//! (`runs_per_s`, `p50_ms`, `p99_ms`, `events_per_s`, `ratio`,
//! `bytes_per_instance`, `seconds`); see BENCHMARKS.md for the recorded
//! figures and how they were produced.

mod scenarios;
mod support;
mod timing;

use std::process::ExitCode;

use durable_core::store::Synchronous;

/// What the command line asked for.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    backend: String,
    synchronous: Synchronous,
    scenarios: Vec<String>,
}

const ALL: [&str; 7] = [
    "pipeline",
    "pipeline_concurrent",
    "activities",
    "stream_append",
    "stream_live",
    "status_vs_stream",
    "idle_instances",
];

fn parse_args() -> Result<Config, String> {
    let mut config = Config {
        backend: "sqlite".into(),
        synchronous: Synchronous::Full,
        scenarios: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().ok_or_else(|| format!("{flag} needs a value"));
        match arg.as_str() {
            "--backend" => {
                config.backend = value("--backend")?;
                if config.backend != "sqlite" {
                    return Err(format!("unknown backend {:?} (expected sqlite)", config.backend));
                }
            }
            "--synchronous" => {
                config.synchronous = value("--synchronous")?.parse().map_err(|e| format!("{e}"))?;
            }
            "--scenario" => {
                let name = value("--scenario")?;
                if !ALL.contains(&name.as_str()) {
                    return Err(format!(
                        "unknown scenario {name:?} (expected one of {})",
                        ALL.join(", ")
                    ));
                }
                config.scenarios.push(name);
            }
            "-h" | "--help" => {
                return Err(format!(
                    "usage: bench [--backend sqlite] [--synchronous full|normal] [--scenario NAME]...\n\
                     scenarios: {}",
                    ALL.join(", ")
                ))
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if config.scenarios.is_empty() {
        config.scenarios = ALL.iter().map(|s| (*s).to_owned()).collect();
    }
    Ok(config)
}

#[tokio::main]
async fn main() -> ExitCode {
    let config = match parse_args() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    for name in &config.scenarios {
        eprintln!("running {name} ...");
        match scenarios::run(name, &config).await {
            Ok(figures) => println!("{}", support::line(name, &config, figures)),
            Err(e) => {
                eprintln!("scenario {name} failed: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
