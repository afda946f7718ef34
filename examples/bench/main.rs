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
//! (all of them when none is given); and, only when named, `soak`,
//! `commit_rate` and `simulate` (the seeded simulation under faults, seed
//! after seed for `--seconds`, from `--seed`; each violation is printed
//! with its seed, and the program fails if there is one). Figures are named with their unit
//! (`runs_per_s`, `p50_ms`, `p99_ms`, `events_per_s`, `ratio`,
//! `bytes_per_instance`, `seconds`); see BENCHMARKS.md for the recorded
//! figures and how they were produced.

mod scenarios;
mod soak;
mod support;
mod timing;
mod worker;

use std::process::ExitCode;

use durable_core::store::Synchronous;

/// What the command line asked for.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    backend: String,
    postgres_url: String,
    synchronous: Synchronous,
    scenarios: Vec<String>,
    /// Worker processes for the pipeline scenarios (1: a worker in this
    /// process).
    workers: usize,
    repeat: usize,
    /// How long the soak and simulate scenarios run.
    seconds: u64,
    /// The first seed the simulate scenario runs.
    seed: u64,
}

/// Scenarios that run only when named: the soak, the bare database's
/// commit rate, and the simulation.
const EXTRA: [&str; 3] = ["soak", "commit_rate", "simulate"];

/// The scenarios run when none is named.
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
        postgres_url: std::env::var("DURABLE_BENCH_POSTGRES_URL")
            .or_else(|_| std::env::var("DURABLE_TEST_POSTGRES_URL"))
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
        synchronous: Synchronous::Full,
        scenarios: Vec::new(),
        workers: 1,
        repeat: 1,
        seconds: 60,
        seed: 1,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().ok_or_else(|| format!("{flag} needs a value"));
        match arg.as_str() {
            "--backend" => {
                config.backend = value("--backend")?;
                if !matches!(config.backend.as_str(), "sqlite" | "postgres") {
                    return Err(format!(
                        "unknown backend {:?} (expected sqlite or postgres)",
                        config.backend
                    ));
                }
            }
            "--postgres-url" => config.postgres_url = value("--postgres-url")?,
            "--workers" => config.workers = count(&value("--workers")?, "--workers", 16)?,
            "--repeat" => config.repeat = count(&value("--repeat")?, "--repeat", 100)?,
            "--seconds" => config.seconds = count(&value("--seconds")?, "--seconds", 86_400)? as u64,
            "--seed" => {
                let text = value("--seed")?;
                let parsed = match text.strip_prefix("0x") {
                    Some(hex) => u64::from_str_radix(hex, 16),
                    None => text.parse(),
                };
                config.seed = parsed.map_err(|_| format!("--seed takes a number, not {text:?}"))?;
            }
            "--synchronous" => {
                config.synchronous = value("--synchronous")?.parse().map_err(|e| format!("{e}"))?;
            }
            "--scenario" => {
                let name = value("--scenario")?;
                if !ALL.contains(&name.as_str()) && !EXTRA.contains(&name.as_str()) {
                    return Err(format!(
                        "unknown scenario {name:?} (expected one of {}, {})",
                        ALL.join(", "),
                        EXTRA.join(", ")
                    ));
                }
                config.scenarios.push(name);
            }
            "-h" | "--help" => {
                return Err(format!(
                    "usage: bench [--backend sqlite|postgres] [--postgres-url URL] [--synchronous full|normal]\n\
                     \x20            [--workers N] [--repeat N] [--seconds N] [--seed S] [--scenario NAME]...\n\
                     --workers N runs the pipeline scenarios on N worker processes (default 1: in this process);\n\
                     --repeat N runs each scenario N times and adds a line of the medians;\n\
                     --seconds N is how long soak and simulate run (default 60);\n\
                     --seed S is the first seed simulate runs (default 1).\n\
                     scenarios: {} (all by default), and {}",
                    ALL.join(", "),
                    EXTRA.join(", ")
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

/// A whole number from 1 to `max`.
fn count(text: &str, flag: &str, max: usize) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "{flag} takes a whole number from 1 to {max}, not {text:?}"
        )),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("--worker-process") {
        return worker::run(std::env::args().skip(2).collect()).await;
    }
    let config = match parse_args() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    for name in &config.scenarios {
        let mut runs = Vec::with_capacity(config.repeat);
        for run in 1..=config.repeat {
            eprintln!("running {name} ({run}/{}) ...", config.repeat);
            let dirty = support::settle_disk();
            match scenarios::run(name, &config).await {
                Ok(mut figures) => {
                    figures.insert("synced_dirty_kib".into(), serde_json::json!(dirty));
                    println!("{}", support::line(name, &config, figures.clone()));
                    let violated = figures
                        .get("violations")
                        .and_then(serde_json::Value::as_u64)
                        .unwrap_or(0);
                    if name == "simulate" && violated > 0 {
                        eprintln!("the simulation found {violated} violation(s); see above for their seeds");
                        return ExitCode::FAILURE;
                    }
                    runs.push(figures);
                }
                Err(e) => {
                    eprintln!("scenario {name} failed: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        if runs.len() > 1 {
            println!("{}", support::line(name, &config, support::medians(&runs)));
        }
    }
    ExitCode::SUCCESS
}
