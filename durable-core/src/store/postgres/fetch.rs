//! Fetching work in the PostgreSQL store: instances with visible messages
//! and activity work items, each claimed with a lease (`FOR UPDATE SKIP
//! LOCKED`), so that workers of many processes share them.

use std::collections::HashMap;
use std::time::Duration;

use sqlx::Row;

use super::Inner;
use crate::store::sql::codec::{
    activity_input, db, from_ms, i64_of, instance_id_of, lease_end, message_event, now_ms, state_of,
    stored_fingerprint, Columns,
};
use crate::store::{
    ActivityKey, ActivityWorkItem, InboxMessage, MessageSource, OrchestrationWorkItem, StoreResult,
};

impl Inner {
    pub(super) async fn fetch_orchestrations_inner(
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

    pub(super) async fn fetch_activities_inner(
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
}
