//! Helpers shared by the examples' tests: a database file in a temporary
//! directory, and waits that fail loudly instead of hanging.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::time::Duration;

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(60);

/// A SQLite database file in a fresh temporary directory (kept alive by
/// the returned guard).
pub fn temp_db(name: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join(name);
    let url = format!("sqlite://{}", path.to_str().expect("a UTF-8 path"));
    (dir, url)
}

/// Runs `f` to its end, failing the test after [`WAIT`].
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {WAIT:?}"))
}

/// Polls `check` until it returns `Some`, failing the test after [`WAIT`].
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The text written to an output buffer.
pub fn text(out: &[u8]) -> String {
    String::from_utf8(out.to_vec()).expect("the output is UTF-8")
}
