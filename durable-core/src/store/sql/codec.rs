//! What the SQL backends share: how values are stored (times as Unix
//! milliseconds, JSON as text) and how rows become the runtime's types.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::plan::InstanceRow;
use crate::instance::{continuation_of, parse_continuation};
use crate::store::{EnqueueOutcome, InstanceState, NewMessage, StoreResult, StreamRead};
use crate::{
    FailureDetails, HistoryEvent, InstanceId, InstanceMetadata, InstancePage, InstanceQuery, Payload,
    RuntimeStatus, StoreError, StreamEvent,
};

/// Maps a database error, turning a uniqueness violation into
/// [`StoreError::Conflict`] and a data error into
/// [`StoreError::Rejected`].
pub(crate) fn db(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict(d.to_string()),
        sqlx::Error::Database(d) if d.code().is_some_and(|code| is_data_error(&code)) => {
            StoreError::Rejected(d.to_string())
        }
        _ => StoreError::database(e),
    }
}

/// Whether a database error code says that a value cannot be stored, as
/// opposed to the connection, a lock or the disk: PostgreSQL's classes
/// 22 (data exception: a NUL in text, a value out of range) and 54
/// (program limit exceeded: a row too large), as five-character
/// SQLSTATEs; SQLite's `SQLITE_TOOBIG` (18), `SQLITE_MISMATCH` (20) and
/// `SQLITE_RANGE` (25), as numbers. sqlx gives no kind for these (only
/// for constraint violations), so the codes are read.
fn is_data_error(code: &str) -> bool {
    let sqlstate = code.len() == 5 && (code.starts_with("22") || code.starts_with("54"));
    sqlstate || matches!(code, "18" | "20" | "25")
}

pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_ms(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

pub(crate) fn now_ms() -> i64 {
    ms(Utc::now())
}

/// When a lease taken now for `lease` ends.
pub(crate) fn lease_end(lease: Duration) -> i64 {
    now_ms().saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2))
}

pub(crate) fn to_json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> StoreResult<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// A payload the runtime wrote, read back from column `what`.
pub(crate) fn stored_payload(text: String, what: &str) -> StoreResult<Payload> {
    Payload::stored(text).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// The event of inbox message `id`. A message this version cannot read
/// (written by another version, or damaged) becomes an `ExecutionFailed`
/// that fails its instance with the reason and the text, instead of an
/// error that would fail every fetch coming across it.
pub(crate) fn message_event(text: &str, id: i64) -> HistoryEvent {
    serde_json::from_str(text).unwrap_or_else(|e| {
        let shown: String = text.chars().take(500).collect();
        HistoryEvent::ExecutionFailed {
            failure: FailureDetails::new(
                "CorruptMessage",
                format!("inbox message {id} cannot be read: {e}; it holds {shown}"),
            ),
        }
    })
}

/// The input of a stored activity work item, or why it cannot be read
/// (the item then fails instead of stranding the items fetched with it).
pub(crate) fn activity_input(text: &str) -> (Payload, Option<String>) {
    match Payload::stored(text.to_owned()) {
        Ok(input) => (input, None),
        Err(e) => {
            let shown: String = text.chars().take(500).collect();
            (
                Payload::null(),
                Some(format!("the stored input cannot be read: {e}; it holds {shown}")),
            )
        }
    }
}

/// A JSON array of `items`, for `IN (SELECT value FROM json_each(?))`.
pub(crate) fn json_list<T: serde::Serialize>(items: &[T]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".to_owned())
}

/// The `kind` column of a message: what may wake a pending or suspended
/// instance, or `Result`.
pub(crate) fn event_kind(event: &HistoryEvent) -> &'static str {
    match event {
        HistoryEvent::ExecutionStarted { .. } => "ExecutionStarted",
        HistoryEvent::ExecutionResumed { .. } => "ExecutionResumed",
        HistoryEvent::ExecutionTerminated { .. } => "ExecutionTerminated",
        HistoryEvent::ExecutionSuspended { .. } => "ExecutionSuspended",
        HistoryEvent::EventRaised { .. } => "EventRaised",
        _ => "Result",
    }
}

/// Every table with rows of an instance, the instance row last: what a
/// purge, or a new instance in a terminal one's place, deletes.
pub(crate) const INSTANCE_TABLES: [&str; 6] = [
    "history",
    "messages",
    "activities",
    "stream_events",
    "events_raised_once",
    "instances",
];

/// The name of the external event `message` raises, for
/// [`Store::enqueue_event_once`](crate::store::Store::enqueue_event_once).
pub(crate) fn raised_name(message: &NewMessage) -> StoreResult<&str> {
    match &message.event {
        HistoryEvent::EventRaised { name, .. } => Ok(name),
        other => Err(StoreError::Config(format!(
            "enqueue_event_once takes an EventRaised message, not {}",
            other.describe()
        ))),
    }
}

/// Why a message was not enqueued, from the instance's status read after
/// (`None`: no such instance): the instance is missing or terminal, or,
/// for an event raised once (`once`) to a live instance, its name was taken.
pub(crate) fn refusal(status: Option<(String,)>, once: bool) -> StoreResult<EnqueueOutcome> {
    let Some((status,)) = status else {
        return Ok(EnqueueOutcome::NotFound);
    };
    let status = status_of(&status)?;
    Ok(if once && !status.is_terminal() {
        EnqueueOutcome::AlreadyRaised
    } else {
        EnqueueOutcome::Terminal(status)
    })
}

pub(crate) fn status_of(text: &str) -> StoreResult<RuntimeStatus> {
    text.parse()
        .map_err(|e: crate::instance::UnknownStatus| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn instance_id_of(text: String) -> StoreResult<InstanceId> {
    InstanceId::new(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A fingerprint as the `fingerprint` column keeps it: the same 64 bits,
/// read as a signed integer.
pub(crate) fn fingerprint_column(fingerprint: u64) -> i64 {
    i64::from_ne_bytes(fingerprint.to_ne_bytes())
}

/// The fingerprint of a stored work item: its column, or (for an item
/// written before the column was) the digest of its name and input.
pub(crate) fn stored_fingerprint(column: Option<i64>, name: &str, input: &Payload) -> u64 {
    match column {
        Some(v) => u64::from_ne_bytes(v.to_ne_bytes()),
        None => crate::store::call_fingerprint(name, input),
    }
}

pub(crate) fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Typed access to the columns of a row, whatever the backend.
pub(crate) trait Columns {
    fn text(&self, column: &str) -> StoreResult<String>;
    fn opt_text(&self, column: &str) -> StoreResult<Option<String>>;
    fn int(&self, column: &str) -> StoreResult<i64>;
    fn opt_int(&self, column: &str) -> StoreResult<Option<i64>>;

    fn opt_json<T: serde::de::DeserializeOwned>(&self, column: &str) -> StoreResult<Option<T>> {
        self.opt_text(column)?.map(|t| from_json(&t, column)).transpose()
    }

    /// A nullable column holding a payload the runtime wrote.
    fn opt_payload(&self, column: &str) -> StoreResult<Option<Payload>> {
        self.opt_text(column)?
            .map(|t| stored_payload(t, column))
            .transpose()
    }
}

/// Implements [`Columns`] for a backend's row type.
macro_rules! impl_columns {
    ($row:ty) => {
        impl $crate::store::sql::codec::Columns for $row {
            fn text(&self, column: &str) -> $crate::store::StoreResult<String> {
                sqlx::Row::try_get(self, column).map_err($crate::store::sql::codec::db)
            }
            fn opt_text(&self, column: &str) -> $crate::store::StoreResult<Option<String>> {
                sqlx::Row::try_get(self, column).map_err($crate::store::sql::codec::db)
            }
            fn int(&self, column: &str) -> $crate::store::StoreResult<i64> {
                sqlx::Row::try_get(self, column).map_err($crate::store::sql::codec::db)
            }
            fn opt_int(&self, column: &str) -> $crate::store::StoreResult<Option<i64>> {
                sqlx::Row::try_get(self, column).map_err($crate::store::sql::codec::db)
            }
        }
    };
}
pub(crate) use impl_columns;

/// An instance row as clients see it.
pub(crate) fn metadata_of(row: &impl Columns) -> StoreResult<InstanceMetadata> {
    Ok(InstanceMetadata {
        instance_id: instance_id_of(row.text("instance_id")?)?,
        name: row.text("name")?,
        execution_id: row.text("execution_id")?,
        status: status_of(&row.text("status")?)?,
        input: stored_payload(row.text("input")?, "input")?,
        output: row.opt_payload("output")?,
        custom_status: row.opt_payload("custom_status")?,
        failure: row.opt_json("failure")?,
        created_at: from_ms(row.int("created_at")?),
        last_updated_at: from_ms(row.int("updated_at")?),
        completed_at: row.opt_int("completed_at")?.map(from_ms),
        stream_len: u64_of(row.int("stream_seq")?),
    })
}

/// An instance row as a turn starts from it.
pub(crate) fn state_of(row: &impl Columns) -> StoreResult<InstanceState> {
    Ok(InstanceState {
        name: row.text("name")?,
        execution_id: row.text("execution_id")?,
        status: status_of(&row.text("status")?)?,
        version: u64_of(row.int("version")?),
        history_len: u64_of(row.int("history_len")?),
        stream_seq: u64_of(row.int("stream_seq")?),
        execution_emits: u64_of(row.int("execution_emits")?),
        custom_status: row.opt_text("custom_status")?,
    })
}

/// A page of an instance's stream, from the rows of a query joining the
/// instance (`status`, `stream_seq`, `current_execution`, `incarnation`)
/// to its events after the cursor (`seq` and the rest, `NULL` where there
/// is none); `None` if there is no instance.
pub(crate) fn stream_read_of(
    instance_id: &InstanceId,
    rows: &[impl Columns],
) -> StoreResult<Option<StreamRead>> {
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        if row.opt_int("seq")?.is_some() {
            events.push(stream_event_of(instance_id, row)?);
        }
    }
    Ok(Some(StreamRead {
        events,
        status: status_of(&first.text("status")?)?,
        stream_len: u64_of(first.int("stream_seq")?),
        execution_id: first.text("current_execution")?,
        incarnation: first.text("incarnation")?,
    }))
}

/// An instance row as a commit checks it.
pub(crate) fn instance_row_of(row: &impl Columns) -> StoreResult<InstanceRow> {
    Ok(InstanceRow {
        status: status_of(&row.text("status")?)?,
        version: u64_of(row.int("version")?),
        lock_owner: row.opt_text("lock_owner")?,
        lock_expires: row.int("lock_expires")?,
    })
}

/// A stream event row (columns `seq`, `execution_id`, `name`, `payload`,
/// `emitted_at`) of `instance_id`.
pub(crate) fn stream_event_of(instance_id: &InstanceId, row: &impl Columns) -> StoreResult<StreamEvent> {
    Ok(StreamEvent {
        instance_id: instance_id.clone(),
        seq: u64_of(row.int("seq")?),
        name: row.text("name")?,
        payload: Payload::stored(row.text("payload")?)
            .map_err(|e| StoreError::Corrupt(format!("payload: {e}")))?,
        emitted_at: from_ms(row.int("emitted_at")?),
        execution_id: row.text("execution_id")?,
    })
}

/// The query of [`Store::list_instances`](crate::store::Store::list_instances):
/// one row more than the page size, to know whether a next page exists.
/// Returns the query and the page size.
pub(crate) fn list_query<'a, DB>(query: &InstanceQuery) -> StoreResult<(sqlx::QueryBuilder<'a, DB>, i64)>
where
    DB: sqlx::Database,
    String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let page_size = i64::from(query.page_size.unwrap_or(100).clamp(1, 1000));
    let mut sql = sqlx::QueryBuilder::new("SELECT * FROM instances WHERE 1 = 1");
    if !query.statuses.is_empty() {
        sql.push(" AND status IN (");
        let mut list = sql.separated(", ");
        for status in &query.statuses {
            list.push_bind(status.as_str().to_owned());
        }
        sql.push(")");
    }
    if let Some(name) = &query.name {
        sql.push(" AND name = ").push_bind(name.clone());
    }
    if let Some(from) = query.created_from {
        sql.push(" AND created_at >= ").push_bind(ms(from));
    }
    if let Some(to) = query.created_to {
        sql.push(" AND created_at < ").push_bind(ms(to));
    }
    if let Some(token) = &query.continuation {
        let (created, id) = parse_continuation(token)
            .ok_or_else(|| StoreError::Config(format!("invalid continuation {token:?}")))?;
        sql.push(" AND (created_at > ")
            .push_bind(created)
            .push(" OR (created_at = ")
            .push_bind(created)
            .push(" AND instance_id > ")
            .push_bind(id)
            .push("))");
    }
    sql.push(" ORDER BY created_at, instance_id LIMIT ")
        .push_bind(page_size + 1);
    Ok((sql, page_size))
}

/// A page of a listing read with [`list_query`].
pub(crate) fn list_page(mut instances: Vec<InstanceMetadata>, page_size: i64) -> InstancePage {
    let size = usize::try_from(page_size).unwrap_or(usize::MAX);
    let continuation = if instances.len() > size {
        instances.truncate(size);
        instances
            .last()
            .map(|m| continuation_of(m.created_at, &m.instance_id))
    } else {
        None
    };
    InstancePage {
        instances,
        continuation,
    }
}
