//! The SQLite store: the embedded default, as a file (WAL) or in memory.
//!
//! Writes go through one connection (SQLite has one writer at a time) and
//! begin with `BEGIN IMMEDIATE`, so that a write transaction never fails
//! half-way for lack of the write lock; other processes writing the same
//! file wait for the lock (busy timeout). Reads use a small pool of their
//! own connections and never wait for the writer (WAL).

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
use sqlx::{Connection, Sqlite, SqliteConnection, Transaction};

use super::sql::codec::{db, impl_columns, lease_end, ms, now_ms};
use super::{
    detached, ActivityKey, ActivityWorkItem, ChangeFeed, CommitBatch, CreateOutcome, EnqueueOutcome,
    NewInstance, NewMessage, OrchestrationWorkItem, PurgeOutcome, Store, StoreResult, StreamRead,
    TurnOutcome,
};
use crate::{HistoryEvent, InstanceId, InstanceMetadata, InstancePage, InstanceQuery, StoreError};

mod commit;
mod create;
mod grouped_creations;
mod kept_connections;
mod read;
mod write;

use grouped_creations::GroupedCreations;
use kept_connections::{KeptConnection, KeptConnections};

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
/// their behalf (see `store::detached`).
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

/// The store's methods, as the runtime calls them. Reads run in the
/// caller's future: dropped, they leave nothing behind (their connection
/// is cleaned for its next user). Writes that clients make run to their
/// end in a task of their own (`store::detached`), with the signals that tell
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
