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

mod listen;
mod write;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::FutureExt;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::Connection;
use sqlx::{Postgres, Row};

use super::codec::{
    activity_input, db, event_kind, from_json, from_ms, i64_of, impl_columns, instance_id_of, lease_end,
    list_page, list_query, message_event, metadata_of, ms, now_ms, publish_turns, raised_name, refusal,
    state_of, status_of, stored_fingerprint, stream_event_of, to_json, Columns,
};
use super::{
    detached, ActivityKey, ActivityWorkItem, ChangeFeed, CommitBatch, CreateOutcome, EnqueueOutcome,
    InboxMessage, MessageSource, NewInstance, NewMessage, OrchestrationWorkItem, PurgeOutcome, Store,
    StoreResult, StreamRead, TurnOutcome,
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
/// their behalf (see [`detached`]).
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
    async fn create_once(&self, instance: &NewInstance) -> StoreResult<CreateOutcome> {
        let mut tx = self.begin().await?;
        let mut rows = write::instance_rows(&mut tx, &[instance.instance_id.as_str()]).await?;
        let mut writes = write::Writes::default();
        let outcome = writes.create_instance(instance, &mut rows)?;
        writes.execute(&mut tx, now_ms()).await?;
        tx.commit().await.map_err(db)?;
        Ok(outcome)
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

    async fn fetch_orchestrations_inner(
        &self,
        owner: &str,
        lease: Duration,
        max: usize,
    ) -> StoreResult<Vec<OrchestrationWorkItem>> {
        let now = now_ms();
        let claimed = sqlx::query(
            "WITH ready AS (SELECT i.instance_id FROM instances i \
             WHERE i.instance_id IN (SELECT m.instance_id FROM messages m WHERE m.visible_at <= $1) \
             AND (i.lock_owner = $2 OR i.lock_expires <= $1) \
             AND (i.status NOT IN ('Pending', 'Suspended') OR EXISTS (SELECT 1 FROM messages m \
                  WHERE m.instance_id = i.instance_id AND m.visible_at <= $1 AND (m.kind = 'ExecutionTerminated' \
                  OR (i.status = 'Pending' AND m.kind = 'ExecutionStarted') \
                  OR (i.status = 'Suspended' AND m.kind = 'ExecutionResumed')))) \
             LIMIT $3 FOR UPDATE OF i SKIP LOCKED) \
             UPDATE instances SET lock_owner = $2, lock_expires = $4 FROM ready \
             WHERE instances.instance_id = ready.instance_id \
             RETURNING instances.instance_id, instances.name, instances.execution_id, instances.status, \
             instances.version, instances.history_len, instances.stream_seq, instances.execution_emits, \
             instances.custom_status",
        )
        .bind(now)
        .bind(owner)
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .bind(lease_end(lease))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let mut items = Vec::with_capacity(claimed.len());
        let mut index = HashMap::with_capacity(claimed.len());
        let mut versions = Vec::with_capacity(claimed.len());
        for row in &claimed {
            let id = row.text("instance_id")?;
            index.insert(id.clone(), items.len());
            let state = state_of(row)?;
            versions.push(i64_of(state.version));
            items.push(OrchestrationWorkItem {
                instance_id: instance_id_of(id)?,
                state,
                messages: Vec::new(),
            });
        }
        let ids: Vec<String> = claimed
            .iter()
            .map(|row| row.text("instance_id"))
            .collect::<StoreResult<_>>()?;
        // The messages of the instances as claimed: an instance replaced in
        // between (a new one of the same id, after a terminal one) is not
        // the one claimed, and its messages are not for this claim's turn.
        let rows = sqlx::query(
            "SELECT m.id, m.instance_id, m.execution_id, m.event, m.visible_at FROM messages m \
             JOIN UNNEST($1::text[], $2::int8[]) AS c(instance_id, version) ON c.instance_id = m.instance_id \
             JOIN instances i ON i.instance_id = c.instance_id AND i.version = c.version AND i.lock_owner = $4 \
             WHERE m.visible_at <= $3 ORDER BY m.visible_at, m.id",
        )
        .bind(&ids)
        .bind(&versions)
        .bind(now)
        .bind(owner)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        for row in &rows {
            let Some(&i) = index.get(&row.text("instance_id")?) else {
                continue;
            };
            let id = row.int("id")?;
            items[i].messages.push(InboxMessage {
                source: MessageSource::Inbox(id),
                visible_at: from_ms(row.int("visible_at")?),
                execution_id: row.opt_text("execution_id")?,
                event: message_event(&row.text("event")?, id),
            });
        }
        items.retain(|item| !item.messages.is_empty());
        Ok(items)
    }

    async fn commit_inner(
        &self,
        owner: &str,
        lease: Duration,
        batch: &CommitBatch,
    ) -> StoreResult<Vec<TurnOutcome>> {
        let now = now_ms();
        let lease_until = lease_end(lease);
        let fast = {
            let mut conn = self.pool.acquire().await.map_err(db)?;
            write::commit_in_one_statement(&mut conn, owner, lease_until, now, batch).await?
        };
        let (outcomes, change) = match fast {
            Some(written) => written,
            None => {
                let mut tx = self.begin().await?;
                let written = write::commit_batch(&mut tx, owner, lease_until, now, batch).await?;
                tx.commit().await.map_err(db)?;
                written
            }
        };
        publish_turns(&self.changes, &batch.turns, &outcomes);
        self.announce_work(change);
        Ok(outcomes)
    }

    async fn fetch_activities_inner(
        &self,
        owner: &str,
        lease: Duration,
        max: usize,
    ) -> StoreResult<Vec<ActivityWorkItem>> {
        let rows = sqlx::query(
            "UPDATE activities SET lock_owner = $1, lock_expires = $2, attempt = attempt + 1 \
             WHERE (instance_id, execution_id, task_id) IN (SELECT instance_id, execution_id, task_id \
             FROM activities WHERE lock_expires <= $3 ORDER BY lock_expires LIMIT $4 FOR UPDATE SKIP LOCKED) \
             RETURNING instance_id, execution_id, task_id, name, input, attempt, fingerprint",
        )
        .bind(owner)
        .bind(lease_end(lease))
        .bind(now_ms())
        .bind(i64::try_from(max).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|row| {
                let (input, input_error) = activity_input(&row.text("input")?);
                let name = row.text("name")?;
                Ok(ActivityWorkItem {
                    key: ActivityKey {
                        instance_id: instance_id_of(row.text("instance_id")?)?,
                        execution_id: row.text("execution_id")?,
                        task_id: u64::try_from(row.int("task_id")?).unwrap_or(0),
                        fingerprint: stored_fingerprint(row.opt_int("fingerprint")?, &name, &input),
                    },
                    name,
                    input,
                    attempt: u32::try_from(row.try_get::<i32, _>("attempt").map_err(db)?).unwrap_or(0),
                    input_error,
                })
            })
            .collect()
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
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let status = status_of(&first.text("status")?)?;
        let stream_len = u64::try_from(first.int("stream_seq")?).unwrap_or(0);
        let execution_id = first.text("current_execution")?;
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            if row.opt_int("seq")?.is_some() {
                events.push(stream_event_of(instance_id, row)?);
            }
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
                let outcome = match this.create_once(&instance).await {
                    // Another transaction created the id after this one
                    // found it free: look again, to find it taken.
                    Err(StoreError::Conflict(_)) if attempt < 3 => continue,
                    outcome => outcome?,
                };
                if outcome == CreateOutcome::Created {
                    this.changes.reset_instance(&instance.instance_id);
                    let mut change = Change::work(Some(instance.instance_id.clone()));
                    change.later = ms(instance.start_at) > now_ms();
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
            sqlx::query(
                "UPDATE instances SET lock_owner = NULL, lock_expires = $1 \
                 WHERE instance_id = $2 AND (lock_owner = $3 OR lock_expires <= $4)",
            )
            .bind(lease_end(retry_after))
            .bind(instance_id.as_str())
            .bind(owner)
            .bind(now_ms())
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
            let until = lease_end(lease);
            let ids: Vec<&str> = activities.iter().map(|k| k.instance_id.as_str()).collect();
            let executions: Vec<&str> = activities.iter().map(|k| k.execution_id.as_str()).collect();
            let tasks: Vec<i64> = activities.iter().map(|k| i64_of(k.task_id)).collect();
            let mut tx = self.inner.begin().await?;
            sqlx::query("UPDATE instances SET lock_expires = $1 WHERE lock_owner = $2")
                .bind(until)
                .bind(owner)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            sqlx::query(
                "UPDATE activities a SET lock_expires = $1 FROM UNNEST($3::text[], $4::text[], $5::int8[]) \
                 AS k(instance_id, execution_id, task_id) WHERE a.instance_id = k.instance_id \
                 AND a.execution_id = k.execution_id AND a.task_id = k.task_id AND a.lock_owner = $2",
            )
            .bind(until)
            .bind(owner)
            .bind(&ids)
            .bind(&executions)
            .bind(&tasks)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            tx.commit().await.map_err(db)?;
            Ok(())
        }
        .boxed()
    }

    fn release_leases<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, StoreResult<()>> {
        async move {
            let mut tx = self.inner.begin().await?;
            for table in ["instances", "activities"] {
                sqlx::query(&format!(
                    "UPDATE {table} SET lock_owner = NULL, lock_expires = 0 WHERE lock_owner = $1"
                ))
                .bind(owner)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
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
            let row: (Option<i64>, Option<i64>, Option<i64>) = sqlx::query_as(
                "SELECT (SELECT MIN(visible_at) FROM messages WHERE visible_at > $1), \
                 (SELECT MIN(lock_expires) FROM instances WHERE lock_expires > $1), \
                 (SELECT MIN(lock_expires) FROM activities WHERE lock_expires > $1)",
            )
            .bind(ms(after))
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
            let rows = write::instance_rows(&mut tx, &[instance_id.as_str()]).await?;
            let outcome = match rows.get(instance_id.as_str()) {
                None => PurgeOutcome::NotFound,
                Some(row) if !row.status.is_terminal() => PurgeOutcome::NotTerminal(row.status),
                Some(_) => {
                    write::delete_instance_rows(&mut tx, &[instance_id.as_str().to_owned()]).await?;
                    PurgeOutcome::Purged
                }
            };
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
