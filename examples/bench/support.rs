//! Helpers shared by the scenarios: stores, percentiles, memory, output.

use std::sync::Arc;
use std::time::Duration;

use durable_core::store::{SqliteStore, SqliteStoreOptions, Store, Synchronous};
use serde_json::{json, Map, Value};

use crate::Config;

/// A boxed error for scenario code.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A fresh store for one scenario, in a temporary directory that lives as
/// long as the returned guard.
pub(crate) async fn fresh_store(config: &Config) -> Result<(Arc<dyn Store>, tempfile::TempDir), BoxError> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bench.db");
    let options = SqliteStoreOptions::file(path.to_string_lossy().into_owned())
        .synchronous(config.synchronous)
        // Only this process writes: no polling.
        .poll_interval(None);
    let store: Arc<dyn Store> = Arc::new(SqliteStore::with_options(options).await?);
    Ok((store, dir))
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

/// The process's resident memory now and at its peak, in bytes (Linux).
pub(crate) fn rss_bytes() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
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
            "workers": 1,
            "durable_core": env!("CARGO_PKG_VERSION"),
            "cores": std::thread::available_parallelism().map_or(0, usize::from),
        }),
    );
    Value::Object(out)
}
