//! The seeded simulation of the whole runtime under faults
//! (`durable_workspace::simulation`), a bounded number of seeds per store.
//!
//! `DURABLE_SIM_SEED=S` runs that one seed (decimal or `0x` hexadecimal);
//! `DURABLE_SIM_SEEDS=N` runs N seeds from 1. For longer runs:
//! `cargo run --release --example bench -- --scenario simulate --seconds N`.

use durable_workspace::simulation::{self, Backend, Options, Report};

/// The seeds to run: the one asked for, or `1..=default`.
fn seeds(default: u64) -> Vec<u64> {
    if let Ok(seed) = std::env::var("DURABLE_SIM_SEED") {
        let seed = match seed.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => seed.parse(),
        };
        return vec![seed.expect("DURABLE_SIM_SEED is a number")];
    }
    let n = std::env::var("DURABLE_SIM_SEEDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default);
    (1..=n).collect()
}

async fn run_seeds(backend: Backend, seeds: Vec<u64>) {
    let options = Options::new(backend);
    let mut failed: Vec<Report> = Vec::new();
    for seed in seeds {
        let report = simulation::run(seed, &options).await;
        eprintln!(
            "seed {seed}: {} violation(s), {} calls ({} dropped), {} instances, {} kills, {} failed commits, \
             {} lost answers, {:.1} s",
            report.violations.len(),
            report.calls,
            report.dropped,
            report.started,
            report.kills,
            report.failed_commits,
            report.lost_answers,
            report.elapsed.as_secs_f64()
        );
        for v in &report.violations {
            eprintln!("  seed {seed}: {v}");
        }
        if !report.violations.is_empty() {
            failed.push(report);
        }
    }
    assert!(
        failed.is_empty(),
        "violations found by seeds {:?} (run one again with DURABLE_SIM_SEED=S)",
        failed.iter().map(|r| r.seed).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_simulated_runs_keep_every_guarantee() {
    run_seeds(Backend::Sqlite, seeds(16)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_simulated_runs_keep_every_guarantee() {
    let Ok(url) = std::env::var("DURABLE_TEST_POSTGRES_URL") else {
        eprintln!("skipped: DURABLE_TEST_POSTGRES_URL is not set, so this PostgreSQL test does not run");
        return;
    };
    run_seeds(Backend::Postgres(url), seeds(8)).await;
}
