//! The SQLite store: the embedded default, as a file (WAL) or in memory.
//!
//! Writes go through one connection (SQLite has one writer at a time) and
//! begin with `BEGIN IMMEDIATE`, so that a write transaction never fails
//! half-way for lack of the write lock; other processes writing the same
//! file wait for the lock (busy timeout). Reads use a small pool of their
//! own connections and never wait for the writer (WAL).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Connection, Row, Sqlite, SqliteConnection, Transaction};

use super::{
    detached, ActivityKey, ActivityWorkItem, ChangeFeed, CommitBatch, CreateOutcome, EnqueueOutcome,
    InboxMessage, InstanceState, MessageSource, NewInstance, NewMessage, OrchestrationWorkItem, PurgeOutcome,
    Store, StoreResult, StreamRead, TurnOutcome,
};
use crate::{HistoryEvent, InstanceId, InstanceMetadata, InstancePage, InstanceQuery, StoreError};

mod grouped_creations;
mod kept_connections;
mod one_trip_commit;
mod write;

use grouped_creations::{GroupedCreations, Waiting};
use kept_connections::{KeptConnection, KeptConnections};

use super::codec::{
    activity_input, db, event_kind, from_json, from_ms, i64_of, impl_columns, instance_id_of, lease_end,
    list_page, list_query, message_event, metadata_of, ms, now_ms, publish_turns, raised_name, refusal,
    state_of, status_of, stored_fingerprint, stream_event_of, to_json, u64_of, Columns,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// The page size of a new database file, in bytes.
const PAGE_SIZE: &str = "8192";

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
    inner: Arc<Inner>,
}

/// What the store's methods share, also with the tasks that write on
/// their behalf (see [`detached`]).
#[derive(Debug)]
struct Inner {
    /// The one connection that writes.
    writer: Arc<KeptConnections>,
    /// Whether the writer connection may be new or unable to write, and
    /// is to be checked before the next write (see `check_writer`).
    check_writer: AtomicBool,
    /// The connections that read (for a database in memory, the writer).
    reader: Arc<KeptConnections>,
    /// Instance creations waiting to be written together.
    creations: GroupedCreations,
    changes: ChangeFeed,
    poll_interval: Option<Duration>,
}

impl_columns!(SqliteRow);

/// Whether opening failed in a way another process opening the same file
/// at the same moment explains: the file was busy or locked, or the
/// migrations ran into each other.
fn is_transient(error: &StoreError) -> bool {
    match error {
        StoreError::Migration(_) => true,
        StoreError::Database(e) => e
            .downcast_ref::<sqlx::Error>()
            .and_then(|e| e.as_database_error())
            .and_then(|e| e.code())
            .is_some_and(|code| matches!(code.as_ref(), "5" | "6" | "261" | "517")),
        _ => false,
    }
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
        // Several processes may open a new file at once: one of them then
        // finds the file locked while it switches it to WAL, or the tables
        // half-made by another's migrations. Opening again, a moment
        // later, finds the work done.
        let mut attempt = 0;
        let (writer, reader) = loop {
            match Self::open_pools(&options).await {
                Ok(pools) => break pools,
                Err(e) if attempt < 8 && matches!(options.target, Target::File(_)) && is_transient(&e) => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "opening the database again");
                    tokio::time::sleep(Duration::from_millis(25 << attempt.min(4))).await;
                }
                Err(e) => return Err(e),
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                check_writer: AtomicBool::new(matches!(options.target, Target::File(_))),
                writer,
                reader,
                creations: GroupedCreations::default(),
                changes: ChangeFeed::new(),
                poll_interval: options.poll_interval,
            }),
        })
    }

    /// The writer and reader pools, with the migrations run.
    async fn open_pools(
        options: &SqliteStoreOptions,
    ) -> StoreResult<(Arc<KeptConnections>, Arc<KeptConnections>)> {
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
                    .test_before_acquire(false)
                    .max_connections(1)
                    .min_connections(1)
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .connect_with(connect)
                    .await
                    .map_err(db)?;
                let held = Arc::new(KeptConnections::new(pool, 1));
                (held.clone(), held)
            }
            Target::File(path) => {
                let connect = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(synchronous)
                    .busy_timeout(Duration::from_secs(30))
                    // A new file gets 8 KiB pages (an existing one keeps its
                    // size). History and stream rows of 1 to 3 KiB left 40% of
                    // 4 KiB pages empty; with 8 KiB pages the commits of 200
                    // concurrent document-processing runs wrote fewer pages
                    // and ran 10 to 18% faster (see BENCHMARKS.md).
                    .pragma("page_size", PAGE_SIZE)
                    .pragma("cache_size", "-16000")
                    .pragma("temp_store", "memory")
                    // Reads through the page cache of the operating system
                    // without a system call per page.
                    .pragma("mmap_size", "268435456");
                let writer = SqlitePoolOptions::new()
                    .test_before_acquire(false)
                    .max_connections(1)
                    // The writer connection is replaced only by the store,
                    // which checks that its successor can write.
                    .idle_timeout(None)
                    .max_lifetime(None)
                    .connect_with(connect.clone())
                    .await
                    .map_err(db)?;
                let reader = SqlitePoolOptions::new()
                    .test_before_acquire(false)
                    .max_connections(options.read_connections)
                    // Stream pages hold up to 1,000 rows: hand them over in
                    // one go rather than 50 at a time.
                    .connect_with(connect.read_only(true).row_buffer_size(1024))
                    .await
                    .map_err(db)?;
                let readers = options.read_connections as usize;
                (
                    Arc::new(KeptConnections::new(writer, 1)),
                    Arc::new(KeptConnections::new(reader, readers)),
                )
            }
        };
        {
            let mut conn = writer.get().await.map_err(db)?;
            MIGRATOR
                .run_direct(&mut *conn)
                .await
                .map_err(|e| StoreError::Migration(Box::new(e)))?;
            conn.finish();
        }
        Ok((writer, reader))
    }

    /// Closes the connections.
    pub async fn close(&self) {
        self.inner.writer.close().await;
        self.inner.reader.close().await;
    }
}

impl Inner {
    /// The writer connection, checked first if it may be new or unable to
    /// write (see `check_writer`): SQLite opens a file it cannot write
    /// read-only, and such a connection would fail every write for as long
    /// as it lives, even once the file is writable again. It is refused,
    /// so that the next write opens a new one.
    async fn writer_conn(&self) -> StoreResult<KeptConnection<'_>> {
        let mut conn = self.writer.get().await.map_err(db)?;
        if conn.was_cleaned() {
            // A write stopped half-way (its runtime shut down) may have
            // committed without telling anyone; whatever it did is done
            // by now (the connection's thread runs one command at a time).
            self.changes.notify_everything();
        }
        if self.check_writer.load(Ordering::Acquire) {
            if let Err(e) = check_writable(&mut conn).await {
                conn.discard();
                return Err(db(e));
            }
            self.check_writer.store(false, Ordering::Release);
        }
        Ok(conn)
    }

    /// A connection for reading.
    async fn reader_conn(&self) -> StoreResult<KeptConnection<'_>> {
        self.reader.get().await.map_err(db)
    }

    /// Wakes the workers for a message just enqueued: at once if it is
    /// visible, else their next wake-up time may have come sooner.
    fn enqueued(&self, message: &NewMessage) -> EnqueueOutcome {
        if ms(message.visible_at) <= now_ms() {
            self.changes.notify_orchestration_work();
        } else {
            self.changes.notify_wakeup();
        }
        EnqueueOutcome::Enqueued
    }

    /// Begins a write transaction on the writer connection.
    async fn begin<'c>(&self, conn: &'c mut KeptConnection<'_>) -> StoreResult<Transaction<'c, Sqlite>> {
        let discard = conn.discard_switch();
        match SqliteConnection::begin_with(&mut **conn, "BEGIN IMMEDIATE").await {
            Ok(tx) => Ok(tx),
            // After a COMMIT that failed (an I/O error, a full disk) SQLite
            // has rolled the transaction back, but sqlx still counts it as
            // open and refuses every later BEGIN on the connection. Replace
            // the connection; the next write checks the new one.
            Err(e @ sqlx::Error::InvalidSavePointStatement) => {
                tracing::warn!("replacing the SQLite writer connection after a failed commit");
                discard.store(true, Ordering::Relaxed);
                self.check_writer.store(true, Ordering::Release);
                Err(db(e))
            }
            Err(e) => Err(db(e)),
        }
    }
}

/// Work item keys as a JSON array of `[instance, execution, task]` rows,
/// for `json_each`.
struct JsonKeys(String);

impl JsonKeys {
    fn of(keys: &[ActivityKey]) -> StoreResult<Self> {
        let rows: Vec<(&str, &str, i64)> = keys
            .iter()
            .map(|k| (k.instance_id.as_str(), k.execution_id.as_str(), i64_of(k.task_id)))
            .collect();
        Ok(Self(to_json(&rows)?))
    }
}

/// The insert of `message` into its instance's inbox, if the instance
/// exists and is not terminal.
fn insert_message(
    message: &NewMessage,
) -> StoreResult<sqlx::query::Query<'_, Sqlite, sqlx::sqlite::SqliteArguments<'_>>> {
    Ok(sqlx::query(
        "INSERT INTO messages (instance_id, execution_id, kind, event, visible_at) \
         SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM instances WHERE instance_id = ?1 \
         AND status NOT IN ('Completed', 'Failed', 'Terminated'))",
    )
    .bind(message.instance_id.as_str())
    .bind(message.execution_id.as_deref())
    .bind(event_kind(&message.event))
    .bind(to_json(&message.event)?)
    .bind(ms(message.visible_at)))
}

/// The stored status of an instance, as text; `None` if there is none.
async fn instance_status(conn: &mut SqliteConnection, id: &InstanceId) -> StoreResult<Option<(String,)>> {
    sqlx::query_as("SELECT status FROM instances WHERE instance_id = ?")
        .bind(id.as_str())
        .fetch_optional(conn)
        .await
        .map_err(db)
}

/// Fails with `SQLITE_READONLY` if SQLite opened the file read-only.
async fn check_writable(conn: &mut sqlx::SqliteConnection) -> Result<(), sqlx::Error> {
    use sqlx::Connection;
    let (version,): (i64,) = sqlx::query_as("PRAGMA user_version")
        .fetch_one(&mut *conn)
        .await?;
    let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query(&format!("PRAGMA user_version = {version}"))
        .execute(&mut *tx)
        .await?;
    tx.rollback().await
}

impl Inner {
    /// Writes the creations queued in `creations` until none is left,
    /// answering each: the task that [`SqliteStore::create_instance`]
    /// starts when none runs. Whoever started a creation may stop waiting
    /// for its answer; the creation is written all the same, and so are
    /// the others written with it.
    async fn write_creations(self: Arc<Self>) {
        let mut guard = grouped_creations::CreationWriter::new(&self.creations);
        while guard.any_waiting() {
            // GroupedCreations queue up while the writer is busy.
            let arrived = guard.arrivals();
            let conn = self.writer_conn().await;
            let mut waiting = guard.take();
            if waiting.is_empty() {
                if let Ok(conn) = conn {
                    conn.finish();
                }
                return;
            }
            match conn {
                Ok(conn) => self.create_together(conn, waiting).await,
                Err(e) => {
                    // Those that came while the writer was being got are
                    // tried again (the database may be writable by now).
                    guard.put_back_after(arrived, &mut waiting);
                    let message = e.to_string();
                    for w in waiting {
                        w.answer(Err(StoreError::Database(message.clone().into())));
                    }
                }
            }
        }
    }

    /// Writes the creations in `waiting` and answers each: all in one
    /// transaction if their ids are new, else one by one.
    async fn create_together(&self, mut conn: KeptConnection<'_>, waiting: Vec<Waiting>) {
        if waiting.len() > 1 {
            let mut sql = write::Sql::transaction();
            let built = waiting
                .iter()
                .try_for_each(|w| sql.create_new_instance(&w.instance));
            if built.is_ok() {
                if let Ok(message_ids) = sql.commit(&mut conn).await {
                    let created: Vec<&NewInstance> = waiting.iter().map(|w| &w.instance).collect();
                    self.created(&created, &message_ids);
                    for w in waiting {
                        w.answer(Ok(CreateOutcome::Created));
                    }
                    conn.finish();
                    return;
                }
            }
            // A taken id (or any other failure): each on its own, with its
            // own outcome.
        }
        let mut clean = true;
        for w in waiting {
            let outcome = self.create_one(&mut conn, &w.instance).await;
            clean &= outcome.is_ok();
            w.answer(outcome);
        }
        if clean {
            conn.finish();
        }
    }

    /// Tells this process of instances just created as new, with the ids
    /// of their start messages: their watchers forget what they held of
    /// an earlier instance of the same id, and each one whose start is due
    /// is offered to a worker of this process, which runs it without
    /// reading it back; the workers are signalled for the others.
    fn created(&self, instances: &[&NewInstance], message_ids: &[i64]) {
        let mut signal = instances.len() != message_ids.len();
        let now = now_ms();
        for (i, instance) in instances.iter().enumerate() {
            self.changes.reset_instance(&instance.instance_id);
            let due = ms(instance.start_at) <= now;
            if !due {
                self.changes.notify_wakeup();
            }
            let offered = match message_ids.get(i) {
                Some(&id) if due && !signal => self.changes.offer(start_work_item(instance, id)),
                _ => false,
            };
            signal |= !offered;
        }
        if signal {
            self.changes.notify_orchestration_work();
        }
    }

    /// Creates one instance on the writer connection.
    async fn create_one(
        &self,
        conn: &mut KeptConnection<'_>,
        instance: &NewInstance,
    ) -> StoreResult<CreateOutcome> {
        // Most ids are new: one round trip. A taken id (maybe of a
        // terminal instance to replace) is looked at row by row.
        let mut sql = write::Sql::transaction();
        sql.create_new_instance(instance)?;
        match sql.commit(conn).await {
            Ok(message_ids) => {
                self.created(&[instance], &message_ids);
                return Ok(CreateOutcome::Created);
            }
            Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
        let mut tx = self.begin(conn).await?;
        let mut rows = write::instance_rows(&mut tx, &[instance.instance_id.as_str()]).await?;
        let mut sql = write::Sql::new();
        let outcome = sql.create_instance(instance, &mut rows)?;
        sql.execute(&mut tx).await?;
        tx.commit().await.map_err(db)?;
        if outcome == CreateOutcome::Created {
            self.changes.notify_orchestration_work();
            if ms(instance.start_at) > now_ms() {
                self.changes.notify_wakeup();
            }
            self.changes.reset_instance(&instance.instance_id);
        }
        Ok(outcome)
    }

    async fn enqueue_message(&self, message: NewMessage) -> StoreResult<EnqueueOutcome> {
        // One statement in its own transaction: the message goes in only
        // if the instance exists and is not terminal.
        let mut conn = self.writer_conn().await?;
        let inserted = insert_message(&message)?
            .execute(&mut *conn)
            .await
            .map_err(db)?
            .rows_affected();
        conn.finish();
        if inserted == 1 {
            return Ok(self.enqueued(&message));
        }
        let mut conn = self.reader_conn().await?;
        let status = instance_status(&mut conn, &message.instance_id).await?;
        conn.finish();
        refusal(status, false)
    }

    async fn enqueue_event_once(&self, message: NewMessage) -> StoreResult<EnqueueOutcome> {
        let name = raised_name(&message)?;
        let mut conn = self.writer_conn().await?;
        let mut tx = self.begin(&mut conn).await?;
        // The name is taken for the current execution only if the
        // instance exists and is not terminal; then the message goes in.
        let taken = sqlx::query(
            "INSERT OR IGNORE INTO events_raised_once (instance_id, execution_id, name) \
             SELECT instance_id, execution_id, ?2 FROM instances WHERE instance_id = ?1 \
             AND status NOT IN ('Completed', 'Failed', 'Terminated')",
        )
        .bind(message.instance_id.as_str())
        .bind(name)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        if taken == 1 {
            insert_message(&message)?.execute(&mut *tx).await.map_err(db)?;
            tx.commit().await.map_err(db)?;
            conn.finish();
            return Ok(self.enqueued(&message));
        }
        let status = instance_status(&mut tx, &message.instance_id).await?;
        tx.commit().await.map_err(db)?;
        conn.finish();
        refusal(status, true)
    }

    async fn purge_instance(&self, instance_id: &InstanceId) -> StoreResult<PurgeOutcome> {
        let mut conn = self.writer_conn().await?;
        let mut tx = self.begin(&mut conn).await?;
        let rows = write::instance_rows(&mut tx, &[instance_id.as_str()]).await?;
        let outcome = match rows.get(instance_id.as_str()) {
            None => PurgeOutcome::NotFound,
            Some(row) if !row.status.is_terminal() => PurgeOutcome::NotTerminal(row.status),
            Some(_) => {
                let mut sql = write::Sql::new();
                sql.delete_instance_rows(instance_id.as_str());
                sql.execute(&mut tx).await?;
                PurgeOutcome::Purged
            }
        };
        tx.commit().await.map_err(db)?;
        conn.finish();
        if outcome == PurgeOutcome::Purged {
            self.changes.reset_instance(instance_id);
        }
        Ok(outcome)
    }

    async fn commit(
        &self,
        owner: &str,
        lease: Duration,
        batch: &CommitBatch,
    ) -> StoreResult<Vec<TurnOutcome>> {
        let now = now_ms();
        let lease_until = lease_end(lease);
        let fast = if one_trip_commit::applies_to(batch) {
            let mut conn = self.writer_conn().await?;
            match one_trip_commit::commit(&mut conn, owner, lease_until, now, batch).await {
                Ok(wake) => {
                    conn.finish();
                    Some(wake)
                }
                // A turn's instance changed: check turn by turn.
                Err(StoreError::Conflict(_)) => {
                    conn.finish();
                    None
                }
                Err(e) => {
                    // The connection may be one that cannot write.
                    self.check_writer.store(true, Ordering::Release);
                    return Err(e);
                }
            }
        } else {
            None
        };
        let (outcomes, wake) = match fast {
            Some(wake) => (vec![TurnOutcome::Committed; batch.turns.len()], wake),
            None => {
                let mut conn = self.writer_conn().await?;
                let mut tx = self.begin(&mut conn).await?;
                let written = write::commit_batch(&mut tx, owner, lease_until, now, batch).await?;
                tx.commit().await.map_err(db)?;
                conn.finish();
                written
            }
        };
        if wake.orchestrations {
            self.changes.notify_orchestration_work();
        }
        if wake.activities {
            self.changes.notify_activity_work();
        }
        if wake.later {
            self.changes.notify_wakeup();
        }
        publish_turns(&self.changes, &batch.turns, &outcomes);
        Ok(outcomes)
    }

    async fn fetch_orchestrations(&self, owner: &str, max: usize) -> StoreResult<Vec<OrchestrationWorkItem>> {
        // Optimistic: nothing is claimed here. SQLite has one writer at a
        // time, and the version check of the commit makes sure that only one
        // worker's turn of an instance is written. One statement reads the
        // instances and their messages from one snapshot.
        let mut conn = self.reader_conn().await?;
        let rows = sqlx::query(
            "WITH ready AS (SELECT instance_id, name, execution_id, status, version, history_len, \
             stream_seq, execution_emits, custom_status FROM instances i \
             WHERE instance_id IN (SELECT instance_id FROM messages WHERE visible_at <= ?1) \
             AND (lock_owner = ?2 OR lock_expires <= ?1) \
             AND (status NOT IN ('Pending', 'Suspended') OR EXISTS (SELECT 1 FROM messages m \
                  WHERE m.instance_id = i.instance_id AND m.visible_at <= ?1 AND (m.kind = 'ExecutionTerminated' \
                  OR (i.status = 'Pending' AND m.kind = 'ExecutionStarted') \
                  OR (i.status = 'Suspended' AND m.kind = 'ExecutionResumed')))) \
             LIMIT ?3) \
             SELECT ready.*, m.id AS message_id, m.execution_id AS message_execution_id, m.event, m.visible_at \
             FROM ready JOIN messages m ON m.instance_id = ready.instance_id AND m.visible_at <= ?1 \
             ORDER BY m.visible_at, m.id",
        )
        .bind(now_ms())
        .bind(owner)
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
        conn.finish();
        let mut items: Vec<OrchestrationWorkItem> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for row in &rows {
            let id: String = row.try_get("instance_id").map_err(db)?;
            let i = match index.get(&id) {
                Some(&i) => i,
                None => {
                    index.insert(id.clone(), items.len());
                    items.push(OrchestrationWorkItem {
                        instance_id: instance_id_of(id)?,
                        state: state_of(row)?,
                        messages: Vec::new(),
                    });
                    items.len() - 1
                }
            };
            let id = row.try_get("message_id").map_err(db)?;
            items[i].messages.push(InboxMessage {
                source: MessageSource::Inbox(id),
                visible_at: from_ms(row.try_get("visible_at").map_err(db)?),
                execution_id: row.try_get("message_execution_id").map_err(db)?,
                event: message_event(row.try_get::<&str, _>("event").map_err(db)?, id),
            });
        }
        Ok(items)
    }

    async fn load_history(&self, instance_id: &InstanceId) -> StoreResult<Vec<HistoryEvent>> {
        let mut conn = self.reader_conn().await?;
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT event FROM history WHERE instance_id = ? ORDER BY idx")
                .bind(instance_id.as_str())
                .fetch_all(&mut *conn)
                .await
                .map_err(db)?;
        conn.finish();
        rows.iter()
            .map(|(text,)| from_json(text, "history event"))
            .collect()
    }

    async fn abandon_orchestration(
        &self,
        owner: &str,
        instance_id: &InstanceId,
        retry_after: Duration,
    ) -> StoreResult<()> {
        let now = now_ms();
        let mut conn = self.writer_conn().await?;
        let mut tx = self.begin(&mut conn).await?;
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
        conn.finish();
        Ok(())
    }

    async fn fetch_activities(
        &self,
        owner: &str,
        lease: Duration,
        max: usize,
    ) -> StoreResult<Vec<ActivityWorkItem>> {
        let now = now_ms();
        // A cheap read first: most polls find nothing and need no write lock.
        let mut conn = self.reader_conn().await?;
        let any: Option<(i64,)> = sqlx::query_as("SELECT 1 FROM activities WHERE lock_expires <= ? LIMIT 1")
            .bind(now)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db)?;
        conn.finish();
        if any.is_none() {
            return Ok(Vec::new());
        }
        let mut conn = self.writer_conn().await?;
        let mut tx = self.begin(&mut conn).await?;
        let rows = sqlx::query(
            "UPDATE activities SET lock_owner = ?, lock_expires = ?, attempt = attempt + 1 \
             WHERE rowid IN (SELECT rowid FROM activities WHERE lock_expires <= ? ORDER BY rowid LIMIT ?) \
             RETURNING instance_id, execution_id, task_id, name, input, attempt, fingerprint",
        )
        .bind(owner)
        .bind(lease_end(lease))
        .bind(now)
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        conn.finish();
        rows.iter()
            .map(|row| {
                let (input, input_error) = activity_input(row.try_get::<&str, _>("input").map_err(db)?);
                let name: String = row.try_get("name").map_err(db)?;
                Ok(ActivityWorkItem {
                    key: ActivityKey {
                        instance_id: instance_id_of(row.try_get("instance_id").map_err(db)?)?,
                        execution_id: row.try_get("execution_id").map_err(db)?,
                        task_id: u64_of(row.try_get("task_id").map_err(db)?),
                        fingerprint: stored_fingerprint(row.opt_int("fingerprint")?, &name, &input),
                    },
                    name,
                    input,
                    attempt: u32::try_from(row.try_get::<i64, _>("attempt").map_err(db)?).unwrap_or(u32::MAX),
                    input_error,
                })
            })
            .collect()
    }

    /// Extends `owner`'s leases on instances and on the work items of
    /// `activities` until `until`.
    async fn renew_leases(&self, owner: &str, until: i64, activities: &[ActivityKey]) -> StoreResult<()> {
        let keys = JsonKeys::of(activities)?;
        let mut conn = self.writer_conn().await?;
        let mut tx = self.begin(&mut conn).await?;
        sqlx::query("UPDATE instances SET lock_expires = ? WHERE lock_owner = ?")
            .bind(until)
            .bind(owner)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query(
            "UPDATE activities SET lock_expires = ? WHERE rowid IN (SELECT a.rowid FROM json_each(?) AS k \
             JOIN activities AS a ON a.instance_id = k.value->>0 AND a.execution_id = k.value->>1 \
             AND a.task_id = k.value->>2) AND lock_owner = ?",
        )
        .bind(until)
        .bind(keys.0)
        .bind(owner)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        conn.finish();
        Ok(())
    }

    /// Gives up every lease `owner` holds.
    async fn release_leases(&self, owner: &str) -> StoreResult<()> {
        let mut conn = self.writer_conn().await?;
        let mut tx = self.begin(&mut conn).await?;
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
        conn.finish();
        self.changes.notify_orchestration_work();
        self.changes.notify_activity_work();
        Ok(())
    }

    async fn next_wakeup(&self, after: DateTime<Utc>) -> StoreResult<Option<DateTime<Utc>>> {
        let after = ms(after);
        // `lock_expires > 0` lets SQLite read the partial index of leases.
        let mut conn = self.reader_conn().await?;
        let row: (Option<i64>, Option<i64>, Option<i64>) = sqlx::query_as(
            "SELECT (SELECT MIN(visible_at) FROM messages WHERE visible_at > ?1), \
             (SELECT MIN(lock_expires) FROM instances WHERE lock_expires > ?1 AND lock_expires > 0), \
             (SELECT MIN(lock_expires) FROM activities WHERE lock_expires > ?1)",
        )
        .bind(after)
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
        conn.finish();
        Ok([row.0, row.1, row.2].into_iter().flatten().min().map(from_ms))
    }

    async fn get_instance(&self, instance_id: &InstanceId) -> StoreResult<Option<InstanceMetadata>> {
        let mut conn = self.reader_conn().await?;
        let row = sqlx::query("SELECT * FROM instances WHERE instance_id = ?")
            .bind(instance_id.as_str())
            .fetch_optional(&mut *conn)
            .await
            .map_err(db)?;
        conn.finish();
        row.as_ref().map(metadata_of).transpose()
    }

    async fn list_instances(&self, query: InstanceQuery) -> StoreResult<InstancePage> {
        let (mut sql, page_size) = list_query::<Sqlite>(&query)?;
        let mut conn = self.reader_conn().await?;
        let rows = sql.build().fetch_all(&mut *conn).await.map_err(db)?;
        conn.finish();
        let instances = rows.iter().map(metadata_of).collect::<StoreResult<Vec<_>>>()?;
        Ok(list_page(instances, page_size))
    }

    async fn read_stream(
        &self,
        instance_id: &InstanceId,
        after: u64,
        limit: u32,
    ) -> StoreResult<Option<StreamRead>> {
        // One statement: the instance's status and stream length come from
        // the same snapshot as the events.
        let mut conn = self.reader_conn().await?;
        let rows = sqlx::query(
            "SELECT i.status, i.stream_seq, i.execution_id AS current_execution, i.incarnation, e.seq, e.execution_id, e.name, e.payload, e.emitted_at \
             FROM instances i LEFT JOIN (SELECT * FROM stream_events WHERE instance_id = ?1 AND seq > ?2 \
             ORDER BY seq LIMIT ?3) e ON 1 = 1 WHERE i.instance_id = ?1 ORDER BY e.seq",
        )
        .bind(instance_id.as_str())
        .bind(i64_of(after))
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
        conn.finish();
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let status = status_of(first.try_get::<&str, _>("status").map_err(db)?)?;
        let stream_len = u64_of(first.try_get("stream_seq").map_err(db)?);
        let execution_id = first.text("current_execution")?;
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            if row.opt_int("seq")?.is_none() {
                continue;
            }
            events.push(stream_event_of(instance_id, row)?);
        }
        Ok(Some(StreamRead {
            events,
            status,
            stream_len,
            execution_id,
            incarnation: first.text("incarnation")?,
        }))
    }
}

/// The store's methods, as the runtime calls them. Reads run in the
/// caller's future: dropped, they leave nothing behind (their connection
/// is cleaned for its next user). Writes that clients make run to their
/// end in a task of their own ([`detached`]), with the signals that tell
/// the workers and watchers of this process about them: a caller that
/// stops waiting does not stop them half-way. The commit and the other
/// writes of workers run in the caller's future; dropped, they leave the
/// store as it was or as they wrote it, never half-written (see
/// `kept_connections.rs`).
impl Store for SqliteStore {
    fn create_instance(&self, instance: NewInstance) -> BoxFuture<'_, StoreResult<CreateOutcome>> {
        async move {
            let (answered, start_writing) = self.inner.creations.push(instance);
            if start_writing {
                tokio::spawn(self.inner.clone().write_creations());
            }
            answered
                .await
                .unwrap_or_else(|_| Err(StoreError::Database("the creation was dropped unanswered".into())))
        }
        .boxed()
    }

    fn enqueue_message(&self, message: NewMessage) -> BoxFuture<'_, StoreResult<EnqueueOutcome>> {
        let inner = self.inner.clone();
        detached(async move { inner.enqueue_message(message).await }).boxed()
    }

    fn enqueue_event_once(&self, message: NewMessage) -> BoxFuture<'_, StoreResult<EnqueueOutcome>> {
        let inner = self.inner.clone();
        detached(async move { inner.enqueue_event_once(message).await }).boxed()
    }

    fn fetch_orchestrations<'a>(
        &'a self,
        owner: &'a str,
        _lease: Duration,
        max: usize,
    ) -> BoxFuture<'a, StoreResult<Vec<OrchestrationWorkItem>>> {
        self.inner.fetch_orchestrations(owner, max).boxed()
    }

    fn load_history<'a>(
        &'a self,
        instance_id: &'a InstanceId,
    ) -> BoxFuture<'a, StoreResult<Vec<HistoryEvent>>> {
        self.inner.load_history(instance_id).boxed()
    }

    fn commit<'a>(
        &'a self,
        owner: &'a str,
        lease: Duration,
        batch: &'a CommitBatch,
    ) -> BoxFuture<'a, StoreResult<Vec<TurnOutcome>>> {
        self.inner.commit(owner, lease, batch).boxed()
    }

    fn abandon_orchestration<'a>(
        &'a self,
        owner: &'a str,
        instance_id: &'a InstanceId,
        retry_after: Duration,
    ) -> BoxFuture<'a, StoreResult<()>> {
        self.inner
            .abandon_orchestration(owner, instance_id, retry_after)
            .boxed()
    }

    fn fetch_activities<'a>(
        &'a self,
        owner: &'a str,
        lease: Duration,
        max: usize,
    ) -> BoxFuture<'a, StoreResult<Vec<ActivityWorkItem>>> {
        self.inner.fetch_activities(owner, lease, max).boxed()
    }

    fn renew_leases<'a>(
        &'a self,
        owner: &'a str,
        lease: Duration,
        activities: &'a [ActivityKey],
    ) -> BoxFuture<'a, StoreResult<()>> {
        async move { self.inner.renew_leases(owner, lease_end(lease), activities).await }.boxed()
    }

    fn release_leases<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, StoreResult<()>> {
        self.inner.release_leases(owner).boxed()
    }

    fn next_wakeup(&self, after: DateTime<Utc>) -> BoxFuture<'_, StoreResult<Option<DateTime<Utc>>>> {
        self.inner.next_wakeup(after).boxed()
    }

    fn get_instance<'a>(
        &'a self,
        instance_id: &'a InstanceId,
    ) -> BoxFuture<'a, StoreResult<Option<InstanceMetadata>>> {
        self.inner.get_instance(instance_id).boxed()
    }

    fn list_instances(&self, query: InstanceQuery) -> BoxFuture<'_, StoreResult<InstancePage>> {
        self.inner.list_instances(query).boxed()
    }

    fn purge_instance<'a>(&'a self, instance_id: &'a InstanceId) -> BoxFuture<'a, StoreResult<PurgeOutcome>> {
        let inner = self.inner.clone();
        let instance_id = instance_id.clone();
        detached(async move { inner.purge_instance(&instance_id).await }).boxed()
    }

    fn read_stream<'a>(
        &'a self,
        instance_id: &'a InstanceId,
        after: u64,
        limit: u32,
    ) -> BoxFuture<'a, StoreResult<Option<StreamRead>>> {
        self.inner.read_stream(instance_id, after, limit).boxed()
    }

    fn changes(&self) -> &ChangeFeed {
        &self.inner.changes
    }

    fn poll_interval(&self) -> Option<Duration> {
        self.inner.poll_interval
    }
}

/// The work item a fetch would return for `instance`, just created as new
/// with the start message `message_id`.
fn start_work_item(instance: &NewInstance, message_id: i64) -> OrchestrationWorkItem {
    OrchestrationWorkItem {
        instance_id: instance.instance_id.clone(),
        state: InstanceState::created(instance.name.clone(), instance.execution_id.clone()),
        messages: vec![InboxMessage {
            source: MessageSource::Inbox(message_id),
            visible_at: from_ms(ms(instance.start_at)),
            execution_id: Some(instance.execution_id.clone()),
            event: instance.start_event(),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn page_size(store: &SqliteStore) -> i64 {
        let mut conn = store.inner.reader_conn().await.expect("a reader");
        let (size,): (i64,) = sqlx::query_as("PRAGMA page_size")
            .fetch_one(&mut *conn)
            .await
            .expect("page size");
        size
    }

    #[tokio::test]
    async fn a_new_file_gets_8_kib_pages() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("new.db");
        let store = SqliteStore::open(path.to_string_lossy()).await.expect("open");
        assert_eq!(page_size(&store).await, 8192);
        store.close().await;
    }

    #[tokio::test]
    async fn a_file_with_4_kib_pages_keeps_them_and_works() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("old.db");
        {
            // A file as an earlier version made it: 4 KiB pages, WAL.
            let options = SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true)
                .pragma("page_size", "4096")
                .journal_mode(SqliteJournalMode::Wal);
            let mut conn = SqliteConnection::connect_with(&options).await.expect("connect");
            sqlx::query("CREATE TABLE earlier (x INTEGER)")
                .execute(&mut conn)
                .await
                .expect("create");
            conn.close().await.expect("close");
        }
        let store = SqliteStore::open(path.to_string_lossy()).await.expect("open");
        assert_eq!(page_size(&store).await, 4096);
        let store = Arc::new(store);
        let client = crate::Client::new(store.clone());
        let id = client
            .start("orchestration", &1)
            .await
            .expect("start an instance");
        assert!(client.get_instance(&id).await.expect("read").is_some());
        store.close().await;
    }
}
