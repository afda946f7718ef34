//! The reads of the SQLite store, on its reading connections: work to
//! do, histories, instances and streams.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{Row, Sqlite};

use super::Inner;
use crate::store::sql::codec::{
    db, from_json, from_ms, i64_of, instance_id_of, list_page, list_query, message_event, metadata_of, ms,
    now_ms, state_of, stream_read_of,
};
use crate::store::sql::queries;
use crate::store::{InboxMessage, MessageSource, OrchestrationWorkItem, StoreResult, StreamRead};
use crate::{HistoryEvent, InstanceId, InstanceMetadata, InstancePage, InstanceQuery};

impl Inner {
    pub(super) async fn fetch_orchestrations(
        &self,
        owner: &str,
        max: usize,
    ) -> StoreResult<Vec<OrchestrationWorkItem>> {
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

    pub(super) async fn load_history(&self, instance_id: &InstanceId) -> StoreResult<Vec<HistoryEvent>> {
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

    pub(super) async fn next_wakeup(&self, after: DateTime<Utc>) -> StoreResult<Option<DateTime<Utc>>> {
        let mut conn = self.reader_conn().await?;
        let row: (Option<i64>, Option<i64>, Option<i64>) = queries::next_wakeup::<Sqlite>(ms(after))
            .build_query_as()
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?;
        conn.finish();
        Ok([row.0, row.1, row.2].into_iter().flatten().min().map(from_ms))
    }

    pub(super) async fn get_instance(
        &self,
        instance_id: &InstanceId,
    ) -> StoreResult<Option<InstanceMetadata>> {
        let mut conn = self.reader_conn().await?;
        let row = sqlx::query("SELECT * FROM instances WHERE instance_id = ?")
            .bind(instance_id.as_str())
            .fetch_optional(&mut *conn)
            .await
            .map_err(db)?;
        conn.finish();
        row.as_ref().map(metadata_of).transpose()
    }

    pub(super) async fn list_instances(&self, query: InstanceQuery) -> StoreResult<InstancePage> {
        let (mut sql, page_size) = list_query::<Sqlite>(&query)?;
        let mut conn = self.reader_conn().await?;
        let rows = sql.build().fetch_all(&mut *conn).await.map_err(db)?;
        conn.finish();
        let instances = rows.iter().map(metadata_of).collect::<StoreResult<Vec<_>>>()?;
        Ok(list_page(instances, page_size))
    }

    pub(super) async fn read_stream(
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
        stream_read_of(instance_id, &rows)
    }
}
