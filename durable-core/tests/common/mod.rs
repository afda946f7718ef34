//! Helpers shared by the durable-core integration tests: a store, a worker
//! and a client wired together, and waits that fail loudly instead of
//! hanging.

#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use durable_core::prelude::*;
use durable_core::store::{InstanceUpdate, MessageSource, NewStreamEvent, OrchestrationWorkItem, TurnCommit};
use durable_core::{InstanceMetadata, Payload, StreamEvent};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Semaphore;

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// A private in-memory store.
pub async fn memory_store() -> Arc<dyn Store> {
    Arc::new(SqliteStore::in_memory().await.expect("in-memory store"))
}

/// A store, a worker on it and a client of it.
pub struct Rig {
    pub store: Arc<dyn Store>,
    pub client: Client,
    pub worker: Option<Worker>,
}

impl Rig {
    /// An in-memory store with a worker using default options.
    pub async fn new(registry: Registry) -> Self {
        Self::with_options(registry, WorkerOptions::new()).await
    }

    /// An in-memory store with a worker using `options`.
    pub async fn with_options(registry: Registry, options: WorkerOptions) -> Self {
        let store = memory_store().await;
        let worker = Worker::start_with(store.clone(), registry, options).expect("worker starts");
        Self {
            client: Client::new(store.clone()),
            store,
            worker: Some(worker),
        }
    }

    /// Starts `name` with `input` and waits until it is terminal.
    pub async fn run(&self, name: &str, input: &impl Serialize) -> InstanceMetadata {
        let id = self.client.start(name, input).await.expect("start");
        wait_done(&self.client, &id).await
    }

    /// Stops the worker gracefully.
    pub async fn shutdown(mut self) {
        if let Some(worker) = self.worker.take() {
            worker.shutdown().await.expect("worker shuts down");
        }
    }
}

/// An instance id from a literal.
pub fn iid(s: &str) -> InstanceId {
    InstanceId::new(s).expect("valid instance id")
}

/// Waits (at most [`WAIT`]) until the instance is terminal.
pub async fn wait_done(client: &Client, id: &InstanceId) -> InstanceMetadata {
    client
        .wait_for_completion(id, WAIT)
        .await
        .unwrap_or_else(|e| panic!("instance {id} did not finish: {e}"))
}

/// Waits until the instance completed and returns its output as `T`;
/// panics with the failure details otherwise.
pub async fn output_of<T: serde::de::DeserializeOwned>(client: &Client, id: &InstanceId) -> T {
    let meta = wait_done(client, id).await;
    assert_eq!(
        meta.status,
        RuntimeStatus::Completed,
        "instance {id} ended {:?} with failure {:?}",
        meta.status,
        meta.failure
    );
    meta.output_as().expect("output has the expected type")
}

/// Reads the whole stream of an instance, a page of `page` events at a time.
pub async fn read_all(client: &Client, id: &InstanceId, page: u32) -> Vec<StreamEvent> {
    let mut out = Vec::new();
    let mut cursor = 0;
    loop {
        let p = client.get_events(id, cursor, page).await.expect("get_events");
        if p.events.is_empty() {
            return out;
        }
        cursor = p.next_cursor;
        out.extend(p.events);
    }
}

/// Polls `check` every 10 ms until it returns `Some`, for at most [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the instance's custom status equals `expected`.
pub async fn wait_custom_status(client: &Client, id: &InstanceId, expected: Value) -> InstanceMetadata {
    eventually(&format!("custom status {expected} on {id}"), || async {
        let meta = client.get_instance(id).await.expect("get_instance")?;
        let status = meta.custom_status_as::<Value>().expect("a JSON custom status");
        assert!(
            !meta.status.is_terminal() || status.as_ref() == Some(&expected),
            "instance {id} ended {:?} ({:?}) before its custom status became {expected}",
            meta.status,
            meta.failure
        );
        (status.as_ref() == Some(&expected)).then_some(meta)
    })
    .await
}

/// Waits until the instance's stream holds at least `n` events.
pub async fn wait_stream_len(client: &Client, id: &InstanceId, n: u64) -> InstanceMetadata {
    eventually(&format!("{n} stream events on {id}"), || async {
        let meta = client.get_instance(id).await.expect("get_instance")?;
        (meta.stream_len >= n).then_some(meta)
    })
    .await
}

/// A gate activities wait on until the test opens it.
#[derive(Clone)]
pub struct Gate(Arc<Semaphore>);

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

impl Gate {
    pub fn new() -> Self {
        Self(Arc::new(Semaphore::new(0)))
    }

    /// Lets `n` waiters through.
    pub fn open(&self, n: usize) {
        self.0.add_permits(n);
    }

    /// Waits until the gate lets this caller through.
    pub async fn pass(&self) {
        self.0.acquire().await.expect("gate closed").forget();
    }
}

/// Sequence numbers, names and payloads of a stream, for exact comparisons.
pub fn summary(events: &[StreamEvent]) -> Vec<(u64, String, Value)> {
    events
        .iter()
        .map(|e| {
            (
                e.seq,
                e.name.clone(),
                e.payload.parse().expect("a payload is JSON"),
            )
        })
        .collect()
}

/// A hand-made turn of `item` that emits `stream`, given as (sequence
/// number, emit index) pairs, and consumes the item's inbox messages: for
/// tests of what the store itself accepts.
pub fn emitting_turn(item: &OrchestrationWorkItem, stream: Vec<(u64, u64)>) -> TurnCommit {
    let execution_id = item.state.execution_id.clone();
    TurnCommit {
        instance_id: item.instance_id.clone(),
        version: item.state.version,
        consumed: item
            .messages
            .iter()
            .filter_map(|m| match m.source {
                MessageSource::Inbox(id) => Some(id),
                MessageSource::Activity(_) => None,
            })
            .collect(),
        completed_activities: Vec::new(),
        new_execution: false,
        history: Vec::new(),
        history_index: item.state.history_len,
        update: Some(InstanceUpdate {
            status: RuntimeStatus::Running,
            execution_id: execution_id.clone(),
            input: None,
            custom_status: None,
            output: None,
            failure: None,
            history_len: item.state.history_len,
            stream_seq: item.state.stream_seq + stream.len() as u64,
            execution_emits: item.state.execution_emits + stream.len() as u64,
        }),
        activities: Vec::new(),
        claim_activities: false,
        keep_lease: false,
        messages: Vec::new(),
        sub_orchestrations: Vec::new(),
        stream: stream
            .into_iter()
            .map(|(seq, emit_index)| NewStreamEvent {
                seq,
                execution_id: execution_id.clone(),
                emit_index,
                name: "e".into(),
                payload: Payload::new(&emit_index).expect("a number is JSON"),
                emitted_at: chrono::Utc::now(),
            })
            .collect(),
    }
}

/// A small seeded random number generator (SplitMix64): the same seed
/// gives the same numbers on every machine and every version, so that a
/// failing seed can be run again.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 if `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }
}

/// The seed a randomized test runs with: `DURABLE_TEST_SEED` (decimal or
/// `0x` hexadecimal) if set, else `default`. The test prints it.
pub fn seed_from_env(default: u64) -> u64 {
    let seed = std::env::var("DURABLE_TEST_SEED")
        .ok()
        .and_then(|s| match s.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => s.parse().ok(),
        })
        .unwrap_or(default);
    eprintln!("seed {seed:#x} (set DURABLE_TEST_SEED to run another)");
    seed
}

/// A PostgreSQL store in a schema of its own, for a test that runs when
/// `DURABLE_TEST_POSTGRES_URL` is set (and says it skipped otherwise).
pub struct TestPostgres {
    pub store: Arc<dyn Store>,
    url: String,
    schema: String,
}

impl TestPostgres {
    /// `None` (printing that the test is skipped) without a URL.
    pub async fn open() -> Option<Self> {
        let Ok(url) = std::env::var("DURABLE_TEST_POSTGRES_URL") else {
            eprintln!("skipped: DURABLE_TEST_POSTGRES_URL is not set, so this PostgreSQL test does not run");
            return None;
        };
        let schema = format!("test_{}", uuid::Uuid::new_v4().simple());
        let store = Self::connect(&url, &schema).await;
        Some(Self { store, url, schema })
    }

    async fn connect(url: &str, schema: &str) -> Arc<dyn Store> {
        let options = durable_core::store::PostgresStoreOptions::new(url)
            .schema(schema)
            .max_connections(8);
        Arc::new(
            durable_core::store::PostgresStore::with_options(options)
                .await
                .expect("postgres store"),
        )
    }

    /// Another store on the same schema, as another process would have.
    pub async fn reopen(&self) -> Arc<dyn Store> {
        Self::connect(&self.url, &self.schema).await
    }

    /// Drops the schema.
    pub async fn cleanup(self) {
        drop(self.store);
        let pool = sqlx::PgPool::connect(&self.url)
            .await
            .expect("connect for cleanup");
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
            .execute(&pool)
            .await
            .expect("drop the test schema");
    }
}
