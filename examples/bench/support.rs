//! Helpers shared by the scenarios: stores, percentiles, memory, output.

use std::sync::Arc;
use std::time::Duration;

use durable_core::store::{
    PostgresStore, PostgresStoreOptions, SqliteStore, SqliteStoreOptions, Store, Synchronous,
};
use serde_json::{json, Map, Value};

use crate::Config;

/// A boxed error for scenario code.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A fresh database for one scenario: a SQLite file in a temporary
/// directory, or a PostgreSQL schema of its own, dropped by
/// [`Db::cleanup`].
pub(crate) struct Db {
    /// The store on it.
    pub(crate) store: Arc<dyn Store>,
    /// How to open it again (for worker processes).
    pub(crate) target: Target,
    _dir: Option<tempfile::TempDir>,
}

/// Where a scenario's database is.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Sqlite { path: String, synchronous: Synchronous },
    Postgres { url: String, schema: String },
}

impl Target {
    /// Opens a store on it. Workers in other processes write to it, so
    /// SQLite polls (PostgreSQL is notified).
    pub(crate) async fn open(&self, shared: bool) -> Result<Arc<dyn Store>, BoxError> {
        Ok(match self {
            Self::Sqlite { path, synchronous } => {
                let poll = shared.then_some(Duration::from_millis(20));
                let options = SqliteStoreOptions::file(path.clone())
                    .synchronous(*synchronous)
                    .poll_interval(poll);
                Arc::new(SqliteStore::with_options(options).await?)
            }
            Self::Postgres { url, schema } => {
                let options = PostgresStoreOptions::new(url.clone()).schema(schema.clone());
                Arc::new(PostgresStore::with_options(options).await?)
            }
        })
    }

    /// The command-line arguments that name it, for a worker process.
    pub(crate) fn args(&self) -> Vec<String> {
        match self {
            Self::Sqlite { path, synchronous } => {
                let sync = match synchronous {
                    Synchronous::Full => "full",
                    Synchronous::Normal => "normal",
                };
                vec![
                    "--sqlite".into(),
                    path.clone(),
                    "--synchronous".into(),
                    sync.into(),
                ]
            }
            Self::Postgres { url, schema } => {
                vec![
                    "--postgres".into(),
                    url.clone(),
                    "--schema".into(),
                    schema.clone(),
                ]
            }
        }
    }
}

impl Db {
    /// A fresh database as `config` says.
    pub(crate) async fn fresh(config: &Config) -> Result<Self, BoxError> {
        let (target, dir) = match config.backend.as_str() {
            "postgres" => {
                let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
                (
                    Target::Postgres {
                        url: config.postgres_url.clone(),
                        schema,
                    },
                    None,
                )
            }
            _ => {
                let dir = tempfile::tempdir()?;
                let path = dir.path().join("bench.db").to_string_lossy().into_owned();
                (
                    Target::Sqlite {
                        path,
                        synchronous: config.synchronous,
                    },
                    Some(dir),
                )
            }
        };
        let store = target.open(config.workers > 1).await?;
        Ok(Self {
            store,
            target,
            _dir: dir,
        })
    }

    /// Drops the PostgreSQL schema (a SQLite file goes with its directory).
    pub(crate) async fn cleanup(self) -> Result<(), BoxError> {
        if let Target::Postgres { url, schema } = &self.target {
            drop(self.store);
            let pool = sqlx::PgPool::connect(url).await?;
            sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .execute(&pool)
                .await?;
        }
        Ok(())
    }
}

/// Worker processes (this program, run with `--worker-process`), killed
/// when dropped.
pub(crate) struct WorkerProcesses(Vec<std::process::Child>);

impl WorkerProcesses {
    /// Starts `n` worker processes on `target`.
    pub(crate) fn spawn(n: usize, target: &Target) -> Result<Self, BoxError> {
        let exe = std::env::current_exe()?;
        let mut children = Vec::with_capacity(n);
        for _ in 0..n {
            children.push(
                std::process::Command::new(&exe)
                    .arg("--worker-process")
                    .args(target.args())
                    .stdin(std::process::Stdio::null())
                    .spawn()?,
            );
        }
        Ok(Self(children))
    }
}

impl Drop for WorkerProcesses {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The `p`-th percentile (0..=100) of `samples` in milliseconds.
pub(crate) fn percentile_ms(samples: &mut [Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[rank.min(samples.len() - 1)].as_secs_f64() * 1e3
}

/// The mean of `samples` in milliseconds.
pub(crate) fn mean_ms(samples: &[Duration]) -> f64 {
    samples.iter().map(Duration::as_secs_f64).sum::<f64>() / samples.len().max(1) as f64 * 1e3
}

/// A field of `/proc/self/status` in bytes (Linux; 0 elsewhere).
fn status_bytes(name: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The process's resident memory now and at its peak, in bytes.
pub(crate) fn rss_bytes() -> (u64, u64) {
    (status_bytes("VmRSS:"), status_bytes("VmHWM:"))
}

/// The process's resident anonymous memory (its heap and stacks, not the
/// database file mapped into memory), in bytes.
pub(crate) fn rss_anon_bytes() -> u64 {
    status_bytes("RssAnon:")
}

/// Writes out what the system holds in memory for its disks (the `sync`
/// command) and returns how many KiB it held (`Dirty:` in
/// `/proc/meminfo`; 0 where there is none).
///
/// Every figure here is set by the commits' syncs, and a sync has to wait
/// for the file system's journal, which carries whatever else is waiting
/// to be written: right after a release build, gigabytes of its output.
/// Measured this way, `pipeline` read 659 runs/s with 2.3 GB waiting and
/// 790 after a `sync` (see BENCHMARKS.md). So each run begins with one.
pub(crate) fn settle_disk() -> u64 {
    let dirty = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("Dirty:"))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0);
    if let Err(e) = std::process::Command::new("sync").status() {
        eprintln!("could not run sync ({e}): figures may suffer from writes waiting for the disk");
    }
    dirty
}

/// Rounds a figure for printing.
pub(crate) fn round(value: f64, digits: i32) -> Value {
    let factor = 10f64.powi(digits);
    json!((value * factor).round() / factor)
}

/// The JSON line of one scenario: its name, its figures and the
/// configuration it ran with.
pub(crate) fn line(name: &str, config: &Config, figures: Map<String, Value>) -> Value {
    let mut out = Map::new();
    out.insert("scenario".into(), json!(name));
    out.extend(figures);
    out.insert(
        "config".into(),
        json!({
            "backend": config.backend,
            "synchronous": match config.synchronous { Synchronous::Full => "full", Synchronous::Normal => "normal" },
            "workers": config.workers,
            "durable_core": env!("CARGO_PKG_VERSION"),
            "cores": std::thread::available_parallelism().map_or(0, usize::from),
        }),
    );
    Value::Object(out)
}

/// The median of each numeric figure over several runs of a scenario
/// (other values from the first run), marked with `median_of`.
pub(crate) fn medians(runs: &[Map<String, Value>]) -> Map<String, Value> {
    let mut out = runs[0].clone();
    for (key, value) in out.iter_mut() {
        if !value.is_number() {
            continue;
        }
        let mut values: Vec<f64> = runs.iter().filter_map(|r| r.get(key)?.as_f64()).collect();
        values.sort_by(f64::total_cmp);
        let mid = values.len() / 2;
        let median = if values.len() % 2 == 1 {
            values[mid]
        } else {
            (values[mid - 1] + values[mid]) / 2.0
        };
        *value = round(median, 4);
    }
    out.insert("median_of".into(), json!(runs.len()));
    out
}
