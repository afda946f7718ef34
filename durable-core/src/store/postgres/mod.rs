//! The PostgreSQL store: several worker processes, on several machines,
//! share one database.
//!
//! Work is claimed pessimistically: a worker leases the instances it fetches
//! with `FOR UPDATE SKIP LOCKED`, so one instance's turn runs on one worker
//! at a time, and a worker that dies gives its work up when its leases
//! expire. A commit checks the instance version and the lease again under
//! `FOR UPDATE`. Writes of a batch travel as a few statements whatever the
//! batch holds (arrays bound with `UNNEST`).
//!
//! Watchers and workers in other processes learn of commits through
//! `LISTEN`/`NOTIFY` ([`listen`]): each process sends its notifications
//! from one task, coalescing what committed meanwhile into one `pg_notify`,
//! so that writers never queue behind the notification lock.

mod fetch;
mod listen;
mod write;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::Connection;
use sqlx::Postgres;

use super::sql::codec::{
    db, event_kind, from_json, from_ms, i64_of, impl_columns, lease_end, list_page, list_query, metadata_of,
    ms, now_ms, raised_name, refusal, stream_read_of, to_json,
};
use super::sql::plan::{batch_instance_ids, purge_outcome, BatchRows, Committer};
use super::sql::queries;
use super::{
    detached, ActivityKey, ActivityWorkItem, ChangeFeed, CommitBatch, CreateOutcome, EnqueueOutcome,
    NewInstance, NewMessage, OrchestrationWorkItem, PurgeOutcome, Store, StoreResult, StreamRead,
    TurnOutcome,
};
use crate::{HistoryEvent, InstanceId, InstanceMetadata, InstancePage, InstanceQuery, StoreError};
use listen::{Change, Notifier};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl_columns!(PgRow);

/// Options for [`PostgresStore`].
#[derive(Debug, Clone)]
pub struct PostgresStoreOptions {
    url: String,
    schema: Option<String>,
    max_connections: u32,
    poll_interval: Option<Duration>,
}

impl PostgresStoreOptions {
    /// Connects to `url`, such as `postgres://user@host:5432/db`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: None,
            max_connections: 10,
            poll_interval: Some(Duration::from_secs(2)),
        }
    }

    /// Keeps the tables in this schema (created if missing) instead of the
    /// connection's default schema; several deployments, or tests, can
    /// share one database this way. The name may hold ASCII letters, digits
    /// and underscores.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// The size of the connection pool (default 10).
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n.max(2);
        self
    }

    /// How often idle workers and watchers look for changes when no
    /// notification arrives (default 2 s): a safety net, since commits in
    /// other processes are announced with `NOTIFY`.
    pub fn poll_interval(mut self, interval: Option<Duration>) -> Self {
        self.poll_interval = interval;
        self
    }
}

/// The PostgreSQL store.
///
/// ```no_run
/// # async fn open() -> Result<(), durable_core::StoreError> {
/// use durable_core::store::PostgresStore;
///
/// let store = PostgresStore::connect("postgres://postgres@127.0.0.1:5432/app").await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct PostgresStore {
    inner: Arc<Inner>,
    listener: tokio::task::JoinHandle<()>,
}

/// What the store's methods share, also with the tasks that write on
/// their behalf (see `store::detached`).
#[derive(Debug)]
struct Inner {
    pool: PgPool,
    changes: Arc<ChangeFeed>,
    notifier: Notifier,
    poll_interval: Option<Duration>,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

fn valid_schema(schema: &str) -> StoreResult<()> {
    let ok = !schema.is_empty()
        && schema.len() <= 48
        && schema.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !schema.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(StoreError::Config(format!(
            "invalid schema name {schema:?}: use 1 to 48 ASCII letters, digits and underscores, \
             not starting with a digit"
        )))
    }
}

impl Inner {
    /// Creates `instance` in one transaction, unless a non-terminal
    /// instance has its id. Fails with a conflict if a concurrent
    /// transaction created the id meanwhile.
    async fn create_once(&self, instance: &NewInstance) -> StoreResult<(CreateOutcome, Change)> {
        let by = Committer::client();
        let mut tx = self.begin().await?;
        let mut read = write::instance_rows(&mut tx, &[instance.instance_id.as_str()]).await?;
        let mut rows = BatchRows::default();
        let outcome = rows.create(instance, &mut read, by.now)?;
        write::write_in_transaction(&mut tx, &rows, by).await?;
        tx.commit().await.map_err(db)?;
        Ok((outcome, Change::of(&rows.wake)))
    }

    /// Tells this process's waiters and the other processes what changed.
    fn announce(&self, change: Change) {
        for id in &change.instances {
            self.changes.notify_instance(id);
        }
        self.announce_work(change);
    }

    /// Like [`announce`](Self::announce), but the instances' watchers in
    /// this process were told already.
    fn announce_work(&self, change: Change) {
        if change.orchestration_work {
            self.changes.notify_orchestration_work();
        }
        if change.activity_work {
            self.changes.notify_activity_work();
        }
        if change.later {
            self.changes.notify_wakeup();
        }
        self.notifier.send(change);
    }

    async fn begin(&self) -> StoreResult<sqlx::Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(db)
    }

    /// Wakes the workers for a message just enqueued: at once if it is
    /// visible, else their next wake-up time may have come sooner.
    fn enqueued(&self, message: &NewMessage) -> EnqueueOutcome {
        if ms(message.visible_at) <= now_ms() {
            self.announce(Change::work(None));
        } else {
            self.announce(Change {
                later: true,
                ..Change::default()
            });
        }
        EnqueueOutcome::Enqueued
    }

    async fn commit_inner(
        &self,
        owner: &str,
        lease: Duration,
        batch: &CommitBatch,
    ) -> StoreResult<Vec<TurnOutcome>> {
        let by = Committer::now(owner, lease);
        let mut written = None;
        if write::applies_to(batch) {
            let rows = BatchRows::plan(batch, by, None)?;
            let mut conn = self.pool.acquire().await.map_err(db)?;
            match write::commit_in_one_statement(&mut conn, &rows, by).await {
                Ok(()) => written = Some(rows),
                // The guard (or another key): nothing was written; check
                // turn by turn.
                Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let rows = match written {
            Some(rows) => rows,
            None => {
                let mut tx = self.begin().await?;
                let mut read = write::instance_rows(&mut tx, &batch_instance_ids(batch)).await?;
                let rows = BatchRows::plan(batch, by, Some(&mut read))?;
                write::write_in_transaction(&mut tx, &rows, by).await?;
                tx.commit().await.map_err(db)?;
                rows
            }
        };
        self.changes.publish_turns(&batch.turns, &rows.outcomes);
        self.announce_work(Change::of(&rows.wake));
        Ok(rows.outcomes)
    }

    async fn read_stream_inner(
        &self,
        instance_id: &InstanceId,
        after: u64,
        limit: u32,
    ) -> StoreResult<Option<StreamRead>> {
        // One statement: the status and stream length come from the same
        // snapshot as the events.
        let rows = sqlx::query(
            "SELECT i.status, i.stream_seq, i.execution_id AS current_execution, i.incarnation, e.seq, e.execution_id, e.name, e.payload, e.emitted_at \
             FROM instances i LEFT JOIN LATERAL (SELECT * FROM stream_events s \
             WHERE s.instance_id = i.instance_id AND s.seq > $2 ORDER BY s.seq LIMIT $3) e ON TRUE \
             WHERE i.instance_id = $1 ORDER BY e.seq",
        )
        .bind(instance_id.as_str())
        .bind(i64_of(after))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        stream_read_of(instance_id, &rows)
    }
}

impl PostgresStore {
    /// Connects with default options and runs the migrations.
    ///
    /// # Errors
    ///
    /// Fails if the database cannot be reached or the migrations fail.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        Self::with_options(PostgresStoreOptions::new(url)).await
    }

    /// Connects with explicit options and runs the migrations.
    ///
    /// # Errors
    ///
    /// Fails if the URL or the schema name is invalid, the database cannot
    /// be reached or the migrations fail.
    pub async fn with_options(options: PostgresStoreOptions) -> StoreResult<Self> {
        let mut connect: PgConnectOptions = options
            .url
            .parse()
            .map_err(|e| StoreError::Config(format!("invalid PostgreSQL URL: {e}")))?;
        // One connection first: a wrong URL or a server that is not there
        // fails here at once (a pool would retry until its timeout).
        let mut first = PgConnection::connect_with(&connect).await.map_err(db)?;
        let channel = match &options.schema {
            Some(schema) => {
                valid_schema(schema)?;
                sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                    .execute(&mut first)
                    .await
                    .map_err(db)?;
                connect = connect.options([("search_path", schema.as_str())]);
                format!("durable_{schema}")
            }
            None => "durable_changes".to_owned(),
        };
        let _ = first.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .test_before_acquire(false)
            .connect_with(connect)
            .await
            .map_err(db)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Migration(Box::new(e)))?;
        let changes = Arc::new(ChangeFeed::new());
        let origin = uuid::Uuid::new_v4().simple().to_string();
        let notifier = Notifier::start(pool.clone(), channel.clone(), origin.clone());
        let listener = tokio::spawn(listen::run(
            pool.clone(),
            channel,
            origin,
            Arc::downgrade(&changes),
        ));
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                changes,
                notifier,
                poll_interval: options.poll_interval,
            }),
            listener,
        })
    }

    /// Closes the connections.
    pub async fn close(&self) {
        self.listener.abort();
        self.inner.pool.close().await;
    }
}

/// The insert of `message` into its instance's inbox, if the instance
/// exists and is not terminal.
fn insert_message(
    message: &NewMessage,
) -> StoreResult<sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments>> {
    Ok(sqlx::query(
        "INSERT INTO messages (instance_id, execution_id, kind, event, visible_at) \
         SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM instances WHERE instance_id = $1 \
         AND status NOT IN ('Completed', 'Failed', 'Terminated'))",
    )
    .bind(message.instance_id.as_str())
    .bind(message.execution_id.as_deref())
    .bind(event_kind(&message.event))
    .bind(to_json(&message.event)?)
    .bind(ms(message.visible_at)))
}

/// The stored status of an instance, as text; `None` if there is none.
async fn instance_status<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    id: &InstanceId,
) -> StoreResult<Option<(String,)>> {
    sqlx::query_as("SELECT status FROM instances WHERE instance_id = $1")
        .bind(id.as_str())
        .fetch_optional(executor)
        .await
        .map_err(db)
}

impl Store for PostgresStore {
    fn create_instance(&self, instance: NewInstance) -> BoxFuture<'_, StoreResult<CreateOutcome>> {
        let this = self.inner.clone();
        detached(async move {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let (outcome, change) = match this.create_once(&instance).await {
                    // Another transaction created the id after this one
                    // found it free: look again, to find it taken.
                    Err(StoreError::Conflict(_)) if attempt < 3 => continue,
                    outcome => outcome?,
                };
                if outcome == CreateOutcome::Created {
                    this.changes.reset_instance(&instance.instance_id);
                    this.announce(change);
                }
                return Ok(outcome);
            }
        })
        .boxed()
    }

    fn enqueue_message(&self, message: NewMessage) -> BoxFuture<'_, StoreResult<EnqueueOutcome>> {
        let this = self.inner.clone();
        detached(async move {
            let inserted = insert_message(&message)?
                .execute(&this.pool)
                .await
                .map_err(db)?
                .rows_affected();
            if inserted == 1 {
                return Ok(this.enqueued(&message));
            }
            let status = instance_status(&this.pool, &message.instance_id).await?;
            refusal(status, false)
        })
        .boxed()
    }

    fn enqueue_event_once(&self, message: NewMessage) -> BoxFuture<'_, StoreResult<EnqueueOutcome>> {
        let this = self.inner.clone();
        detached(async move {
            let name = raised_name(&message)?;
            let mut tx = this.begin().await?;
            // The primary key makes a concurrent transaction taking the same
            // name wait for this one, and then take nothing.
            let taken = sqlx::query(
                "INSERT INTO events_raised_once (instance_id, execution_id, name) \
                 SELECT instance_id, execution_id, $2 FROM instances WHERE instance_id = $1 \
                 AND status NOT IN ('Completed', 'Failed', 'Terminated') ON CONFLICT DO NOTHING",
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
                return Ok(this.enqueued(&message));
            }
            let status = instance_status(&mut *tx, &message.instance_id).await?;
            tx.commit().await.map_err(db)?;
            refusal(status, true)
        })
        .boxed()
    }

    fn fetch_orchestrations<'a>(
        &'a self,
        owner: &'a str,
        lease: Duration,
        max: usize,
    ) -> BoxFuture<'a, StoreResult<Vec<OrchestrationWorkItem>>> {
        self.inner.fetch_orchestrations_inner(owner, lease, max).boxed()
    }

    fn load_history<'a>(
        &'a self,
        instance_id: &'a InstanceId,
    ) -> BoxFuture<'a, StoreResult<Vec<HistoryEvent>>> {
        async move {
            let rows: Vec<(String,)> =
                sqlx::query_as("SELECT event FROM history WHERE instance_id = $1 ORDER BY idx")
                    .bind(instance_id.as_str())
                    .fetch_all(&self.inner.pool)
                    .await
                    .map_err(db)?;
            rows.iter()
                .map(|(text,)| from_json(text, "history event"))
                .collect()
        }
        .boxed()
    }

    fn commit<'a>(
        &'a self,
        owner: &'a str,
        lease: Duration,
        batch: &'a CommitBatch,
    ) -> BoxFuture<'a, StoreResult<Vec<TurnOutcome>>> {
        self.inner.commit_inner(owner, lease, batch).boxed()
    }

    fn abandon_orchestration<'a>(
        &'a self,
        owner: &'a str,
        instance_id: &'a InstanceId,
        retry_after: Duration,
    ) -> BoxFuture<'a, StoreResult<()>> {
        async move {
            queries::abandon_orchestration::<Postgres>(
                owner,
                instance_id.as_str(),
                lease_end(retry_after),
                now_ms(),
            )
            .build()
            .execute(&self.inner.pool)
            .await
            .map_err(db)?;
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
        self.inner.fetch_activities_inner(owner, lease, max).boxed()
    }

    fn renew_leases<'a>(
        &'a self,
        owner: &'a str,
        lease: Duration,
        activities: &'a [ActivityKey],
    ) -> BoxFuture<'a, StoreResult<()>> {
        async move {
            let mut tx = self.inner.begin().await?;
            for mut query in queries::renew_leases::<Postgres>(owner, lease_end(lease), activities) {
                // The text varies with the number of keys: not kept prepared.
                query
                    .build()
                    .persistent(false)
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
            let mut tx = self.inner.begin().await?;
            for mut query in queries::release_leases::<Postgres>(owner) {
                query.build().execute(&mut *tx).await.map_err(db)?;
            }
            tx.commit().await.map_err(db)?;
            let mut change = Change::work(None);
            change.activity_work = true;
            self.inner.announce(change);
            Ok(())
        }
        .boxed()
    }

    fn next_wakeup(&self, after: DateTime<Utc>) -> BoxFuture<'_, StoreResult<Option<DateTime<Utc>>>> {
        async move {
            let row: (Option<i64>, Option<i64>, Option<i64>) = queries::next_wakeup::<Postgres>(ms(after))
                .build_query_as()
                .fetch_one(&self.inner.pool)
                .await
                .map_err(db)?;
            Ok([row.0, row.1, row.2].into_iter().flatten().min().map(from_ms))
        }
        .boxed()
    }

    fn get_instance<'a>(
        &'a self,
        instance_id: &'a InstanceId,
    ) -> BoxFuture<'a, StoreResult<Option<InstanceMetadata>>> {
        async move {
            let row = sqlx::query("SELECT * FROM instances WHERE instance_id = $1")
                .bind(instance_id.as_str())
                .fetch_optional(&self.inner.pool)
                .await
                .map_err(db)?;
            row.as_ref().map(metadata_of).transpose()
        }
        .boxed()
    }

    fn list_instances(&self, query: InstanceQuery) -> BoxFuture<'_, StoreResult<InstancePage>> {
        async move {
            let (mut sql, page_size) = list_query::<Postgres>(&query)?;
            let rows = sql.build().fetch_all(&self.inner.pool).await.map_err(db)?;
            let instances = rows.iter().map(metadata_of).collect::<StoreResult<Vec<_>>>()?;
            Ok(list_page(instances, page_size))
        }
        .boxed()
    }

    fn purge_instance<'a>(&'a self, instance_id: &'a InstanceId) -> BoxFuture<'a, StoreResult<PurgeOutcome>> {
        let this = self.inner.clone();
        let instance_id = instance_id.clone();
        detached(async move {
            let instance_id = &instance_id;
            let mut tx = this.begin().await?;
            let ids = [instance_id.as_str()];
            let rows = write::instance_rows(&mut tx, &ids).await?;
            let outcome = purge_outcome(&rows, instance_id.as_str());
            if outcome == PurgeOutcome::Purged {
                for mut query in queries::delete_instances::<Postgres>(&ids) {
                    query.build().execute(&mut *tx).await.map_err(db)?;
                }
            }
            tx.commit().await.map_err(db)?;
            if outcome == PurgeOutcome::Purged {
                this.changes.reset_instance(instance_id);
                this.announce(Change::instance(instance_id.clone()));
            }
            Ok(outcome)
        })
        .boxed()
    }

    fn read_stream<'a>(
        &'a self,
        instance_id: &'a InstanceId,
        after: u64,
        limit: u32,
    ) -> BoxFuture<'a, StoreResult<Option<StreamRead>>> {
        self.inner.read_stream_inner(instance_id, after, limit).boxed()
    }

    fn changes(&self) -> &ChangeFeed {
        &self.inner.changes
    }

    fn poll_interval(&self) -> Option<Duration> {
        self.inner.poll_interval
    }
}
