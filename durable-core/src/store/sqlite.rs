//! The SQLite store: the embedded default, as a file (WAL) or in memory.
//!
//! Writes go through one connection (SQLite has one writer at a time) and
//! begin with `BEGIN IMMEDIATE`, so that a write transaction never fails
//! half-way for lack of the write lock; other processes writing the same
//! file wait for the lock (busy timeout). Reads use a small pool of their
//! own connections and never wait for the writer (WAL).

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, Transaction};

use super::{
    ActivityKey, ActivityWorkItem, ChangeFeed, CommitBatch, CreateOutcome, EnqueueOutcome, InboxMessage,
    InstanceState, MessageSource, NewInstance, NewMessage, OrchestrationWorkItem, PurgeOutcome, Store,
    StoreResult, StreamRead, TurnCommit, TurnOutcome,
};
use crate::instance::parse_continuation;
use crate::{
    FailureDetails, HistoryEvent, InstanceId, InstanceMetadata, InstancePage, InstanceQuery, RuntimeStatus, StoreError,
    StreamEvent,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Rows per multi-row `INSERT` statement.
const INSERT_CHUNK: usize = 200;

/// SQLite's `synchronous` setting: how hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// Every commit is on disk before it returns (the default).
    #[default]
    Full,
    /// In WAL mode, a commit survives a process crash but may be lost on a
    /// power failure or an operating-system crash.
    Normal,
}

impl FromStr for Synchronous {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "full" => Ok(Self::Full),
            "normal" => Ok(Self::Normal),
            other => Err(StoreError::Config(format!(
                "unknown synchronous mode {other:?} (expected full or normal)"
            ))),
        }
    }
}

/// Options for [`SqliteStore`].
#[derive(Debug, Clone)]
pub struct SqliteStoreOptions {
    target: Target,
    synchronous: Synchronous,
    poll_interval: Option<Duration>,
    read_connections: u32,
}

#[derive(Debug, Clone)]
enum Target {
    Memory,
    File(String),
}

impl SqliteStoreOptions {
    /// A database file at `path`, created if missing.
    pub fn file(path: impl Into<String>) -> Self {
        Self::with_target(Target::File(path.into()))
    }

    /// A private in-memory database, gone when the store is dropped.
    pub fn in_memory() -> Self {
        Self::with_target(Target::Memory).poll_interval(None)
    }

    fn with_target(target: Target) -> Self {
        Self {
            target,
            synchronous: Synchronous::Full,
            poll_interval: Some(Duration::from_millis(250)),
            read_connections: 4,
        }
    }

    /// The `synchronous` setting (default [`Synchronous::Full`]).
    pub fn synchronous(mut self, synchronous: Synchronous) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// How often waiting workers and watchers look for changes written by
    /// other processes (default 250 ms for a file; `None` turns polling off,
    /// for a database that only this process writes).
    pub fn poll_interval(mut self, interval: Option<Duration>) -> Self {
        self.poll_interval = interval;
        self
    }

    /// The number of read connections (default 4).
    pub fn read_connections(mut self, n: u32) -> Self {
        self.read_connections = n.max(1);
        self
    }
}

/// The SQLite store.
///
/// ```
/// # tokio_test_block_on(async {
/// use durable_core::store::SqliteStore;
///
/// let store = SqliteStore::in_memory().await.unwrap();
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Runtime::new().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    changes: ChangeFeed,
    poll_interval: Option<Duration>,
}

fn db(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict(d.to_string()),
        _ => StoreError::database(e),
    }
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn now_ms() -> i64 {
    ms(Utc::now())
}

fn lease_end(lease: Duration) -> i64 {
    now_ms().saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2))
}

fn to_json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

fn event_kind(event: &HistoryEvent) -> &'static str {
    match event {
        HistoryEvent::ExecutionStarted { .. } => "ExecutionStarted",
        HistoryEvent::ExecutionResumed { .. } => "ExecutionResumed",
        HistoryEvent::ExecutionTerminated { .. } => "ExecutionTerminated",
        HistoryEvent::ExecutionSuspended { .. } => "ExecutionSuspended",
        HistoryEvent::EventRaised { .. } => "EventRaised",
        _ => "Result",
    }
}

fn status_of(text: &str) -> StoreResult<RuntimeStatus> {
    text.parse()
        .map_err(|e: crate::instance::UnknownStatus| StoreError::Corrupt(e.to_string()))
}

fn instance_id_of(text: String) -> StoreResult<InstanceId> {
    InstanceId::new(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn json_list<T: serde::Serialize>(items: &[T]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".to_owned())
}

fn metadata_of(row: &SqliteRow) -> StoreResult<InstanceMetadata> {
    let opt_json = |col: &str| -> StoreResult<Option<Value>> {
        row.try_get::<Option<String>, _>(col)
            .map_err(db)?
            .map(|t| from_json(&t, col))
            .transpose()
    };
    Ok(InstanceMetadata {
        instance_id: instance_id_of(row.try_get("instance_id").map_err(db)?)?,
        name: row.try_get("name").map_err(db)?,
        execution_id: row.try_get("execution_id").map_err(db)?,
        status: status_of(row.try_get::<&str, _>("status").map_err(db)?)?,
        input: from_json(row.try_get::<&str, _>("input").map_err(db)?, "input")?,
        output: opt_json("output")?,
        custom_status: opt_json("custom_status")?,
        failure: row
            .try_get::<Option<String>, _>("failure")
            .map_err(db)?
            .map(|t| from_json(&t, "failure"))
            .transpose()?,
        created_at: from_ms(row.try_get("created_at").map_err(db)?),
        last_updated_at: from_ms(row.try_get("updated_at").map_err(db)?),
        completed_at: row
            .try_get::<Option<i64>, _>("completed_at")
            .map_err(db)?
            .map(from_ms),
        stream_len: u64_of(row.try_get("stream_seq").map_err(db)?),
    })
}

impl SqliteStore {
    /// Opens (and creates, if missing) a database file, with default options.
    ///
    /// # Errors
    ///
    /// Fails if the file cannot be opened or the migrations fail.
    pub async fn open(path: impl Into<String>) -> StoreResult<Self> {
        Self::with_options(SqliteStoreOptions::file(path)).await
    }

    /// Opens a private in-memory database.
    ///
    /// # Errors
    ///
    /// Fails if the migrations fail.
    pub async fn in_memory() -> StoreResult<Self> {
        Self::with_options(SqliteStoreOptions::in_memory()).await
    }

    /// Opens a database from a URL: `sqlite::memory:`, `sqlite://PATH`,
    /// `sqlite:PATH` or a plain path.
    ///
    /// # Errors
    ///
    /// Fails if the file cannot be opened or the migrations fail.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        if url == "sqlite::memory:" || url == ":memory:" {
            return Self::in_memory().await;
        }
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        let path = path.split('?').next().unwrap_or(path);
        if path.is_empty() {
            return Err(StoreError::Config(format!("no database path in {url:?}")));
        }
        Self::open(path).await
    }

    /// Opens a database with explicit options.
    ///
    /// # Errors
    ///
    /// Fails if the file cannot be opened or the migrations fail.
    pub async fn with_options(options: SqliteStoreOptions) -> StoreResult<Self> {
        let synchronous = match options.synchronous {
            Synchronous::Full => SqliteSynchronous::Full,
            Synchronous::Normal => SqliteSynchronous::Normal,
        };
        let (writer, reader) = match &options.target {
            Target::Memory => {
                let connect = SqliteConnectOptions::from_str("sqlite::memory:")
                    .map_err(db)?
                    .synchronous(synchronous);
                // One connection that never closes: the database lives in it.
                let pool = SqlitePoolOptions::new()
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .connect_with(connect)
                    .await
                    .map_err(db)?;
                (pool.clone(), pool)
            }
            Target::File(path) => {
                let connect = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(synchronous)
                    .busy_timeout(Duration::from_secs(30))
                    .pragma("cache_size", "-16000");
                let writer = SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(connect.clone())
                    .await
                    .map_err(db)?;
                let reader = SqlitePoolOptions::new()
                    .max_connections(options.read_connections)
                    .connect_with(connect.read_only(true))
                    .await
                    .map_err(db)?;
                (writer, reader)
            }
        };
        MIGRATOR
            .run(&writer)
            .await
            .map_err(|e| StoreError::Migration(Box::new(e)))?;
        Ok(Self {
            writer,
            reader,
            changes: ChangeFeed::new(),
            poll_interval: options.poll_interval,
        })
    }

    async fn begin(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(db)
    }

    /// Closes the connections.
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

async fn instance_status(
    tx: &mut Transaction<'static, Sqlite>,
    instance_id: &InstanceId,
) -> StoreResult<Option<RuntimeStatus>> {
    let row: Option<(String,)> = sqlx::query_as("SELECT status FROM instances WHERE instance_id = ?")
        .bind(instance_id.as_str())
        .fetch_optional(&mut **tx)
        .await
        .map_err(db)?;
    row.map(|(s,)| status_of(&s)).transpose()
}

async fn delete_instance_rows(
    tx: &mut Transaction<'static, Sqlite>,
    instance_id: &InstanceId,
) -> StoreResult<()> {
    for table in ["history", "messages", "activities", "stream_events", "instances"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE instance_id = ?"))
            .bind(instance_id.as_str())
            .execute(&mut **tx)
            .await
            .map_err(db)?;
    }
    Ok(())
}

/// Creates the instance unless a non-terminal one exists.
async fn insert_instance(
    tx: &mut Transaction<'static, Sqlite>,
    instance: &NewInstance,
) -> StoreResult<CreateOutcome> {
    if let Some(status) = instance_status(tx, &instance.instance_id).await? {
        if !status.is_terminal() {
            return Ok(CreateOutcome::AlreadyExists(status));
        }
        delete_instance_rows(tx, &instance.instance_id).await?;
    }
    let created = ms(instance.created_at);
    sqlx::query(
        "INSERT INTO instances (instance_id, name, execution_id, status, input, parent, \
         created_at, updated_at) VALUES (?, ?, ?, 'Pending', ?, ?, ?, ?)",
    )
    .bind(instance.instance_id.as_str())
    .bind(&instance.name)
    .bind(&instance.execution_id)
    .bind(to_json(&instance.input)?)
    .bind(instance.parent.as_ref().map(to_json).transpose()?)
    .bind(created)
    .bind(created)
    .execute(&mut **tx)
    .await
    .map_err(db)?;
    insert_messages(
        tx,
        &[NewMessage {
            instance_id: instance.instance_id.clone(),
            execution_id: Some(instance.execution_id.clone()),
            event: instance.start_event(),
            visible_at: instance.start_at,
        }],
    )
    .await?;
    Ok(CreateOutcome::Created)
}

async fn insert_messages(tx: &mut Transaction<'static, Sqlite>, messages: &[NewMessage]) -> StoreResult<()> {
    for chunk in messages.chunks(INSERT_CHUNK) {
        let mut rows = Vec::with_capacity(chunk.len());
        for m in chunk {
            rows.push((m, to_json(&m.event)?));
        }
        let mut qb: QueryBuilder<'_, Sqlite> =
            QueryBuilder::new("INSERT INTO messages (instance_id, execution_id, kind, event, visible_at) ");
        qb.push_values(rows, |mut b, (m, event)| {
            b.push_bind(m.instance_id.as_str().to_owned())
                .push_bind(m.execution_id.clone())
                .push_bind(event_kind(&m.event))
                .push_bind(event)
                .push_bind(ms(m.visible_at));
        });
        qb.build().execute(&mut **tx).await.map_err(db)?;
    }
    Ok(())
}

fn state_of(row: &SqliteRow) -> StoreResult<InstanceState> {
    Ok(InstanceState {
        name: row.try_get("name").map_err(db)?,
        execution_id: row.try_get("execution_id").map_err(db)?,
        status: status_of(row.try_get::<&str, _>("status").map_err(db)?)?,
        version: u64_of(row.try_get("version").map_err(db)?),
        history_len: u64_of(row.try_get("history_len").map_err(db)?),
        stream_seq: u64_of(row.try_get("stream_seq").map_err(db)?),
        execution_emits: u64_of(row.try_get("execution_emits").map_err(db)?),
        custom_status: row.try_get("custom_status").map_err(db)?,
    })
}

async fn delete_activity(tx: &mut Transaction<'static, Sqlite>, key: &ActivityKey) -> StoreResult<()> {
    sqlx::query("DELETE FROM activities WHERE instance_id = ? AND execution_id = ? AND task_id = ?")
        .bind(key.instance_id.as_str())
        .bind(key.execution_id.as_str())
        .bind(i64_of(key.task_id))
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    Ok(())
}

async fn delete_by_ids(tx: &mut Transaction<'static, Sqlite>, table: &str, ids: &[i64]) -> StoreResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(&format!("DELETE FROM {table} WHERE id IN (SELECT value FROM json_each(?))"))
        .bind(json_list(ids))
        .execute(&mut **tx)
        .await
        .map_err(db)?;
    Ok(())
}

/// Writes one turn; false (and nothing written) if the instance changed
/// since the turn read it or another worker holds its lease.
async fn write_turn(
    tx: &mut Transaction<'static, Sqlite>,
    owner: &str,
    lease_until: i64,
    turn: &TurnCommit,
    now: i64,
) -> StoreResult<bool> {
    let id = turn.instance_id.as_str();
    let Some(u) = &turn.update else {
        // Late messages of a terminal instance: drop them.
        delete_by_ids(tx, "messages", &turn.consumed).await?;
        return Ok(true);
    };
    let terminal = u.status.is_terminal();
    let (lock_owner, lock_expires) = if turn.keep_lease && !terminal {
        (Some(owner), lease_until)
    } else {
        (None, 0)
    };
    let updated = sqlx::query(
        "UPDATE instances SET status = ?, execution_id = ?, input = COALESCE(?, input), \
         custom_status = ?, output = ?, failure = ?, updated_at = ?, completed_at = ?, \
         history_len = ?, stream_seq = ?, execution_emits = ?, version = version + 1, \
         lock_owner = ?, lock_expires = ? \
         WHERE instance_id = ? AND version = ? AND (lock_owner = ? OR lock_expires <= ?)",
    )
    .bind(u.status.as_str())
    .bind(&u.execution_id)
    .bind(u.input.as_ref().map(to_json).transpose()?)
    .bind(&u.custom_status)
    .bind(u.output.as_ref().map(to_json).transpose()?)
    .bind(u.failure.as_ref().map(to_json).transpose()?)
    .bind(now)
    .bind(terminal.then_some(now))
    .bind(i64_of(u.history_len))
    .bind(i64_of(u.stream_seq))
    .bind(i64_of(u.execution_emits))
    .bind(lock_owner)
    .bind(lock_expires)
    .bind(id)
    .bind(i64_of(turn.version))
    .bind(owner)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(db)?
    .rows_affected();
    if updated == 0 {
        return Ok(false);
    }
    if turn.new_execution {
        sqlx::query("DELETE FROM history WHERE instance_id = ?")
            .bind(id)
            .execute(&mut **tx)
            .await
            .map_err(db)?;
    }
    for (chunk_no, chunk) in turn.history.chunks(INSERT_CHUNK).enumerate() {
        let mut rows = Vec::with_capacity(chunk.len());
        for (i, event) in chunk.iter().enumerate() {
            let idx = turn.history_index + (chunk_no * INSERT_CHUNK + i) as u64;
            rows.push((i64_of(idx), to_json(event)?));
        }
        let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new("INSERT INTO history (instance_id, idx, event) ");
        qb.push_values(rows, |mut b, (idx, event)| {
            b.push_bind(id).push_bind(idx).push_bind(event);
        });
        qb.build().execute(&mut **tx).await.map_err(db)?;
    }
    if terminal {
        // Nothing will consume them any more.
        for table in ["messages", "activities"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE instance_id = ?"))
                .bind(id)
                .execute(&mut **tx)
                .await
                .map_err(db)?;
        }
    } else {
        delete_by_ids(tx, "messages", &turn.consumed).await?;
        for key in &turn.completed_activities {
            delete_activity(tx, key).await?;
        }
        for chunk in turn.activities.chunks(INSERT_CHUNK) {
            let mut rows = Vec::with_capacity(chunk.len());
            for a in chunk {
                rows.push((a, to_json(&a.input)?));
            }
            let (claim_owner, claim_until, attempt) = if turn.claim_activities {
                (Some(owner), lease_until, 1)
            } else {
                (None, 0, 0)
            };
            let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new(
                "INSERT INTO activities (instance_id, execution_id, task_id, name, input, lock_owner, \
                 lock_expires, attempt) ",
            );
            qb.push_values(rows, |mut b, (a, input)| {
                b.push_bind(a.key.instance_id.as_str())
                    .push_bind(a.key.execution_id.as_str())
                    .push_bind(i64_of(a.key.task_id))
                    .push_bind(a.name.as_str())
                    .push_bind(input)
                    .push_bind(claim_owner)
                    .push_bind(claim_until)
                    .push_bind(attempt);
            });
            qb.build().execute(&mut **tx).await.map_err(db)?;
        }
    }
    insert_messages(tx, &turn.messages).await?;
    for child in &turn.sub_orchestrations {
        if let CreateOutcome::AlreadyExists(status) = insert_instance(tx, child).await? {
            if let Some(parent) = &child.parent {
                let failure = FailureDetails::new(
                    "InstanceAlreadyExists",
                    format!("instance '{}' already exists and is {status}", child.instance_id),
                );
                let message = NewMessage {
                    instance_id: parent.instance_id.clone(),
                    execution_id: Some(parent.execution_id.clone()),
                    event: HistoryEvent::SubOrchestrationFailed {
                        id: parent.task_id,
                        failure,
                    },
                    visible_at: from_ms(now),
                };
                insert_messages(tx, &[message]).await?;
            }
        }
    }
    for chunk in turn.stream.chunks(INSERT_CHUNK) {
        let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new(
            "INSERT INTO stream_events (instance_id, seq, execution_id, emit_index, name, payload, emitted_at) ",
        );
        qb.push_values(chunk, |mut b, e| {
            b.push_bind(id)
                .push_bind(i64_of(e.seq))
                .push_bind(e.execution_id.as_str())
                .push_bind(i64_of(e.emit_index))
                .push_bind(e.name.as_str())
                .push_bind(e.payload.as_str())
                .push_bind(ms(e.emitted_at));
        });
        qb.build().execute(&mut **tx).await.map_err(db)?;
    }
    Ok(true)
}

impl SqliteStore {
    async fn commit_inner(&self, owner: &str, lease: Duration, batch: CommitBatch) -> StoreResult<Vec<TurnOutcome>> {
        let now = now_ms();
        let lease_until = lease_end(lease);
        let mut tx = self.begin().await?;
        let mut outcomes = Vec::with_capacity(batch.turns.len());
        let (mut wake_orchestrations, mut wake_activities) = (false, false);
        for turn in &batch.turns {
            let committed = write_turn(&mut tx, owner, lease_until, turn, now).await?;
            if committed {
                wake_orchestrations |= turn.messages.iter().any(|m| ms(m.visible_at) <= now)
                    || !turn.sub_orchestrations.is_empty();
                wake_activities |= !turn.claim_activities && !turn.activities.is_empty();
            }
            outcomes.push(if committed { TurnOutcome::Committed } else { TurnOutcome::Conflict });
        }
        for completion in &batch.completions {
            delete_activity(&mut tx, &completion.key).await?;
            let key = &completion.key;
            let delivered = sqlx::query(
                "INSERT INTO messages (instance_id, execution_id, kind, event, visible_at) \
                 SELECT ?, ?, 'Result', ?, ? WHERE EXISTS (SELECT 1 FROM instances \
                 WHERE instance_id = ? AND status NOT IN ('Completed', 'Failed', 'Terminated'))",
            )
            .bind(key.instance_id.as_str())
            .bind(key.execution_id.as_str())
            .bind(to_json(&completion.event)?)
            .bind(now)
            .bind(key.instance_id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
            wake_orchestrations |= delivered > 0;
        }
        for instance_id in &batch.release {
            sqlx::query(
                "UPDATE instances SET lock_owner = NULL, lock_expires = 0 \
                 WHERE instance_id = ? AND lock_owner = ?",
            )
            .bind(instance_id.as_str())
            .bind(owner)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            wake_orchestrations = true;
        }
        tx.commit().await.map_err(db)?;
        if wake_orchestrations {
            self.changes.notify_orchestration_work();
        }
        if wake_activities {
            self.changes.notify_activity_work();
        }
        for (turn, outcome) in batch.turns.iter().zip(&outcomes) {
            if *outcome == TurnOutcome::Committed {
                self.changes.notify_instance(&turn.instance_id);
            }
        }
        Ok(outcomes)
    }

    async fn fetch_orchestrations_inner(
        &self,
        owner: &str,
        max: usize,
    ) -> StoreResult<Vec<OrchestrationWorkItem>> {
        let now = now_ms();
        // Optimistic: nothing is claimed here. SQLite has one writer at a
        // time, and the version check of the commit makes sure only one
        // worker's turn of an instance is written.
        let mut tx = self.reader.begin().await.map_err(db)?;
        let rows = sqlx::query(
            "SELECT instance_id, name, execution_id, status, version, history_len, stream_seq, \
             execution_emits, custom_status FROM instances i \
             WHERE instance_id IN (SELECT instance_id FROM messages WHERE visible_at <= ?1) \
             AND (lock_owner = ?2 OR lock_expires <= ?1) \
             AND (status <> 'Suspended' OR EXISTS (SELECT 1 FROM messages m \
                  WHERE m.instance_id = i.instance_id AND m.visible_at <= ?1 \
                  AND m.kind IN ('ExecutionResumed', 'ExecutionTerminated'))) \
             LIMIT ?3",
        )
        .bind(now)
        .bind(owner)
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut items = Vec::with_capacity(rows.len());
        let mut index = HashMap::with_capacity(rows.len());
        for row in &rows {
            let instance_id = instance_id_of(row.try_get("instance_id").map_err(db)?)?;
            index.insert(instance_id.as_str().to_owned(), items.len());
            items.push(OrchestrationWorkItem {
                instance_id,
                state: state_of(row)?,
                messages: Vec::new(),
            });
        }
        let ids: Vec<&str> = index.keys().map(String::as_str).collect();
        let rows = sqlx::query(
            "SELECT id, instance_id, execution_id, event FROM messages \
             WHERE instance_id IN (SELECT value FROM json_each(?)) AND visible_at <= ? ORDER BY id",
        )
        .bind(json_list(&ids))
        .bind(now)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        for row in rows {
            let instance: &str = row.try_get("instance_id").map_err(db)?;
            let Some(&i) = index.get(instance) else {
                continue;
            };
            items[i].messages.push(InboxMessage {
                source: MessageSource::Inbox(row.try_get("id").map_err(db)?),
                execution_id: row.try_get("execution_id").map_err(db)?,
                event: from_json(row.try_get::<&str, _>("event").map_err(db)?, "message")?,
            });
        }
        Ok(items)
    }

    async fn fetch_activities_inner(
        &self,
        owner: &str,
        lease: Duration,
        max: usize,
    ) -> StoreResult<Vec<ActivityWorkItem>> {
        let now = now_ms();
        // A cheap read first: most polls find nothing and need no write lock.
        let any: Option<(i64,)> = sqlx::query_as("SELECT 1 FROM activities WHERE lock_expires <= ? LIMIT 1")
            .bind(now)
            .fetch_optional(&self.reader)
            .await
            .map_err(db)?;
        if any.is_none() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin().await?;
        let rows = sqlx::query(
            "UPDATE activities SET lock_owner = ?, lock_expires = ?, attempt = attempt + 1 \
             WHERE rowid IN (SELECT rowid FROM activities WHERE lock_expires <= ? ORDER BY rowid LIMIT ?) \
             RETURNING instance_id, execution_id, task_id, name, input, attempt",
        )
        .bind(owner)
        .bind(lease_end(lease))
        .bind(now)
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        rows.iter()
            .map(|row| {
                Ok(ActivityWorkItem {
                    key: ActivityKey {
                        instance_id: instance_id_of(row.try_get("instance_id").map_err(db)?)?,
                        execution_id: row.try_get("execution_id").map_err(db)?,
                        task_id: u64_of(row.try_get("task_id").map_err(db)?),
                    },
                    name: row.try_get("name").map_err(db)?,
                    input: from_json(row.try_get::<&str, _>("input").map_err(db)?, "input")?,
                    attempt: u32::try_from(row.try_get::<i64, _>("attempt").map_err(db)?).unwrap_or(u32::MAX),
                })
            })
            .collect()
    }

    async fn next_wakeup_inner(&self) -> StoreResult<Option<DateTime<Utc>>> {
        let now = now_ms();
        let row: (Option<i64>, Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT (SELECT MIN(visible_at) FROM messages WHERE visible_at > ?1), \
             (SELECT MIN(lock_expires) FROM instances WHERE lock_expires > ?1), \
             (SELECT MIN(lock_expires) FROM activities WHERE lock_expires > ?1)",
        )
        .bind(now)
        .fetch_one(&self.reader)
        .await
        .map_err(db)?;
        Ok([row.0, row.1, row.2].into_iter().flatten().min().map(from_ms))
    }

    async fn list_instances_inner(&self, query: InstanceQuery) -> StoreResult<InstancePage> {
        let page_size = i64::from(query.page_size.unwrap_or(100).clamp(1, 1000));
        let mut qb: QueryBuilder<'_, Sqlite> = QueryBuilder::new("SELECT * FROM instances WHERE 1 = 1");
        if !query.statuses.is_empty() {
            qb.push(" AND status IN (");
            let mut sep = qb.separated(", ");
            for s in &query.statuses {
                sep.push_bind(s.as_str());
            }
            qb.push(")");
        }
        if let Some(name) = &query.name {
            qb.push(" AND name = ").push_bind(name.clone());
        }
        if let Some(from) = query.created_from {
            qb.push(" AND created_at >= ").push_bind(ms(from));
        }
        if let Some(to) = query.created_to {
            qb.push(" AND created_at < ").push_bind(ms(to));
        }
        if let Some(token) = &query.continuation {
            let (created, id) = parse_continuation(token)
                .ok_or_else(|| StoreError::Config(format!("invalid continuation {token:?}")))?;
            qb.push(" AND (created_at > ")
                .push_bind(created)
                .push(" OR (created_at = ")
                .push_bind(created)
                .push(" AND instance_id > ")
                .push_bind(id)
                .push("))");
        }
        qb.push(" ORDER BY created_at, instance_id LIMIT ")
            .push_bind(page_size + 1);
        let rows = qb.build().fetch_all(&self.reader).await.map_err(db)?;
        let mut instances = rows.iter().map(metadata_of).collect::<StoreResult<Vec<_>>>()?;
        let continuation = if instances.len() as i64 > page_size {
            instances.truncate(page_size as usize);
            instances
                .last()
                .map(|m| crate::instance::continuation_of(m.created_at, &m.instance_id))
        } else {
            None
        };
        Ok(InstancePage {
            instances,
            continuation,
        })
    }

    async fn read_stream_inner(
        &self,
        instance_id: &InstanceId,
        after: u64,
        limit: u32,
    ) -> StoreResult<Option<StreamRead>> {
        let row: Option<(String, i64)> =
            sqlx::query_as("SELECT status, stream_seq FROM instances WHERE instance_id = ?")
                .bind(instance_id.as_str())
                .fetch_optional(&self.reader)
                .await
                .map_err(db)?;
        let Some((status, stream_len)) = row else {
            return Ok(None);
        };
        let rows = sqlx::query(
            "SELECT seq, execution_id, name, payload, emitted_at FROM stream_events \
             WHERE instance_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(instance_id.as_str())
        .bind(i64_of(after))
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(db)?;
        let events = rows
            .iter()
            .map(|row| {
                Ok(StreamEvent {
                    instance_id: instance_id.clone(),
                    seq: u64_of(row.try_get("seq").map_err(db)?),
                    name: row.try_get("name").map_err(db)?,
                    payload: from_json(row.try_get::<&str, _>("payload").map_err(db)?, "payload")?,
                    emitted_at: from_ms(row.try_get("emitted_at").map_err(db)?),
                    execution_id: row.try_get("execution_id").map_err(db)?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Some(StreamRead {
            events,
            status: status_of(&status)?,
            stream_len: u64_of(stream_len),
        }))
    }
}

impl Store for SqliteStore {
    fn create_instance(&self, instance: NewInstance) -> BoxFuture<'_, StoreResult<CreateOutcome>> {
        async move {
            let mut tx = self.begin().await?;
            let outcome = insert_instance(&mut tx, &instance).await?;
            tx.commit().await.map_err(db)?;
            if outcome == CreateOutcome::Created {
                self.changes.notify_orchestration_work();
                self.changes.notify_instance(&instance.instance_id);
            }
            Ok(outcome)
        }
        .boxed()
    }

    fn enqueue_message(&self, message: NewMessage) -> BoxFuture<'_, StoreResult<EnqueueOutcome>> {
        async move {
            let mut tx = self.begin().await?;
            let outcome = match instance_status(&mut tx, &message.instance_id).await? {
                None => EnqueueOutcome::NotFound,
                Some(status) if status.is_terminal() => EnqueueOutcome::Terminal(status),
                Some(_) => {
                    insert_messages(&mut tx, std::slice::from_ref(&message)).await?;
                    EnqueueOutcome::Enqueued
                }
            };
            tx.commit().await.map_err(db)?;
            if outcome == EnqueueOutcome::Enqueued {
                self.changes.notify_orchestration_work();
            }
            Ok(outcome)
        }
        .boxed()
    }

    fn fetch_orchestrations<'a>(
        &'a self,
        owner: &'a str,
        _lease: Duration,
        max: usize,
    ) -> BoxFuture<'a, StoreResult<Vec<OrchestrationWorkItem>>> {
        self.fetch_orchestrations_inner(owner, max).boxed()
    }

    fn load_history<'a>(&'a self, instance_id: &'a InstanceId) -> BoxFuture<'a, StoreResult<Vec<HistoryEvent>>> {
        async move {
            let rows: Vec<(String,)> = sqlx::query_as("SELECT event FROM history WHERE instance_id = ? ORDER BY idx")
                .bind(instance_id.as_str())
                .fetch_all(&self.reader)
                .await
                .map_err(db)?;
            rows.iter().map(|(text,)| from_json(text, "history event")).collect()
        }
        .boxed()
    }

    fn commit<'a>(
        &'a self,
        owner: &'a str,
        lease: Duration,
        batch: CommitBatch,
    ) -> BoxFuture<'a, StoreResult<Vec<TurnOutcome>>> {
        self.commit_inner(owner, lease, batch).boxed()
    }

    fn abandon_orchestration<'a>(
        &'a self,
        owner: &'a str,
        instance_id: &'a InstanceId,
        retry_after: Duration,
    ) -> BoxFuture<'a, StoreResult<()>> {
        async move {
            let now = now_ms();
            let mut tx = self.begin().await?;
            sqlx::query(
                "UPDATE instances SET lock_owner = NULL, lock_expires = ? \
                 WHERE instance_id = ? AND (lock_owner = ? OR lock_expires <= ?)",
            )
            .bind(lease_end(retry_after))
            .bind(instance_id.as_str())
            .bind(owner)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            tx.commit().await.map_err(db)?;
            Ok(())
        }
        .boxed()
    }

    fn fetch_activities<'a>(
        &'a self,
        owner: &'a str,
        lease: Duration,
        max: usize,
    ) -> BoxFuture<'a, StoreResult<Vec<ActivityWorkItem>>> {
        self.fetch_activities_inner(owner, lease, max).boxed()
    }

    fn renew_leases<'a>(&'a self, owner: &'a str, lease: Duration) -> BoxFuture<'a, StoreResult<()>> {
        async move {
            let until = lease_end(lease);
            let mut tx = self.begin().await?;
            for table in ["instances", "activities"] {
                sqlx::query(&format!("UPDATE {table} SET lock_expires = ? WHERE lock_owner = ?"))
                    .bind(until)
                    .bind(owner)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
            }
            tx.commit().await.map_err(db)?;
            Ok(())
        }
        .boxed()
    }

    fn release_leases<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, StoreResult<()>> {
        async move {
            let mut tx = self.begin().await?;
            for table in ["instances", "activities"] {
                sqlx::query(&format!(
                    "UPDATE {table} SET lock_owner = NULL, lock_expires = 0 WHERE lock_owner = ?"
                ))
                .bind(owner)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            }
            tx.commit().await.map_err(db)?;
            self.changes.notify_orchestration_work();
            self.changes.notify_activity_work();
            Ok(())
        }
        .boxed()
    }

    fn next_wakeup(&self) -> BoxFuture<'_, StoreResult<Option<DateTime<Utc>>>> {
        self.next_wakeup_inner().boxed()
    }

    fn get_instance<'a>(
        &'a self,
        instance_id: &'a InstanceId,
    ) -> BoxFuture<'a, StoreResult<Option<InstanceMetadata>>> {
        async move {
            let row = sqlx::query("SELECT * FROM instances WHERE instance_id = ?")
                .bind(instance_id.as_str())
                .fetch_optional(&self.reader)
                .await
                .map_err(db)?;
            row.as_ref().map(metadata_of).transpose()
        }
        .boxed()
    }

    fn list_instances(&self, query: InstanceQuery) -> BoxFuture<'_, StoreResult<InstancePage>> {
        self.list_instances_inner(query).boxed()
    }

    fn purge_instance<'a>(&'a self, instance_id: &'a InstanceId) -> BoxFuture<'a, StoreResult<PurgeOutcome>> {
        async move {
            let mut tx = self.begin().await?;
            let outcome = match instance_status(&mut tx, instance_id).await? {
                None => PurgeOutcome::NotFound,
                Some(status) if !status.is_terminal() => PurgeOutcome::NotTerminal(status),
                Some(_) => {
                    delete_instance_rows(&mut tx, instance_id).await?;
                    PurgeOutcome::Purged
                }
            };
            tx.commit().await.map_err(db)?;
            if outcome == PurgeOutcome::Purged {
                self.changes.notify_instance(instance_id);
            }
            Ok(outcome)
        }
        .boxed()
    }

    fn read_stream<'a>(
        &'a self,
        instance_id: &'a InstanceId,
        after: u64,
        limit: u32,
    ) -> BoxFuture<'a, StoreResult<Option<StreamRead>>> {
        self.read_stream_inner(instance_id, after, limit).boxed()
    }

    fn changes(&self) -> &ChangeFeed {
        &self.changes
    }

    fn poll_interval(&self) -> Option<Duration> {
        self.poll_interval
    }
}
