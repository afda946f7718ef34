//! The writes of the SQLite store on its writer connection, but
//! creations: messages, commits, purges, and the leases of work items.

use std::sync::atomic::Ordering;
use std::time::Duration;

use sqlx::{Row, Sqlite, SqliteConnection};

use super::{commit, Inner};
use crate::store::sql::codec::{
    activity_input, db, event_kind, instance_id_of, lease_end, ms, now_ms, raised_name, refusal,
    stored_fingerprint, to_json, u64_of, Columns,
};
use crate::store::sql::plan::{batch_instance_ids, purge_outcome, BatchRows, Committer, Wake};
use crate::store::sql::queries;
use crate::store::{
    ActivityKey, ActivityWorkItem, CommitBatch, EnqueueOutcome, NewMessage, PurgeOutcome, StoreResult,
    TurnOutcome,
};
use crate::{InstanceId, StoreError};

impl Inner {
    pub(super) async fn enqueue_message(&self, message: NewMessage) -> StoreResult<EnqueueOutcome> {
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

    pub(super) async fn enqueue_event_once(&self, message: NewMessage) -> StoreResult<EnqueueOutcome> {
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

    pub(super) async fn purge_instance(&self, instance_id: &InstanceId) -> StoreResult<PurgeOutcome> {
        let mut conn = self.writer_conn().await?;
        let mut tx = self.begin(&mut conn).await?;
        let ids = [instance_id.as_str()];
        let rows = commit::instance_rows(&mut tx, &ids).await?;
        let outcome = purge_outcome(&rows, instance_id.as_str());
        if outcome == PurgeOutcome::Purged {
            for mut query in queries::delete_instances::<Sqlite>(&ids) {
                query.build().execute(&mut *tx).await.map_err(db)?;
            }
        }
        tx.commit().await.map_err(db)?;
        conn.finish();
        if outcome == PurgeOutcome::Purged {
            self.changes.reset_instance(instance_id);
        }
        Ok(outcome)
    }

    pub(super) async fn commit(
        &self,
        owner: &str,
        lease: Duration,
        batch: &CommitBatch,
    ) -> StoreResult<Vec<TurnOutcome>> {
        let by = Committer::now(owner, lease);
        let mut written = None;
        if commit::applies_to(batch) {
            let rows = BatchRows::plan(batch, by, None)?;
            let mut conn = self.writer_conn().await?;
            match commit::commit_in_one_trip(&mut conn, &rows, by).await {
                Ok(()) => {
                    conn.finish();
                    written = Some(rows);
                }
                // A turn's instance changed: check turn by turn.
                Err(StoreError::Conflict(_)) => conn.finish(),
                Err(e) => {
                    // The connection may be one that cannot write.
                    self.check_writer.store(true, Ordering::Release);
                    return Err(e);
                }
            }
        }
        let rows = match written {
            Some(rows) => rows,
            None => {
                let mut conn = self.writer_conn().await?;
                let mut tx = self.begin(&mut conn).await?;
                let mut read = commit::instance_rows(&mut tx, &batch_instance_ids(batch)).await?;
                let rows = BatchRows::plan(batch, by, Some(&mut read))?;
                commit::write_in_transaction(&mut tx, &rows, by).await?;
                tx.commit().await.map_err(db)?;
                conn.finish();
                rows
            }
        };
        self.wake(&rows.wake);
        self.changes.publish_turns(&batch.turns, &rows.outcomes);
        Ok(rows.outcomes)
    }

    /// Wakes the workers for what a commit made ready.
    pub(super) fn wake(&self, wake: &Wake<'_>) {
        if wake.orchestrations {
            self.changes.notify_orchestration_work();
        }
        if wake.activities {
            self.changes.notify_activity_work();
        }
        if wake.later {
            self.changes.notify_wakeup();
        }
    }

    pub(super) async fn abandon_orchestration(
        &self,
        owner: &str,
        instance_id: &InstanceId,
        retry_after: Duration,
    ) -> StoreResult<()> {
        let now = now_ms();
        let mut conn = self.writer_conn().await?;
        let mut tx = self.begin(&mut conn).await?;
        queries::abandon_orchestration::<Sqlite>(owner, instance_id.as_str(), lease_end(retry_after), now)
            .build()
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        conn.finish();
        Ok(())
    }

    pub(super) async fn fetch_activities(
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
    pub(super) async fn renew_leases(
        &self,
        owner: &str,
        until: i64,
        activities: &[ActivityKey],
    ) -> StoreResult<()> {
        let mut conn = self.writer_conn().await?;
        let mut tx = self.begin(&mut conn).await?;
        for mut query in queries::renew_leases::<Sqlite>(owner, until, activities) {
            // The text varies with the number of keys: not kept prepared.
            query
                .build()
                .persistent(false)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        conn.finish();
        Ok(())
    }

    /// Gives up every lease `owner` holds.
    pub(super) async fn release_leases(&self, owner: &str) -> StoreResult<()> {
        let mut conn = self.writer_conn().await?;
        let mut tx = self.begin(&mut conn).await?;
        for mut query in queries::release_leases::<Sqlite>(owner) {
            query.build().execute(&mut *tx).await.map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        conn.finish();
        self.changes.notify_orchestration_work();
        self.changes.notify_activity_work();
        Ok(())
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
