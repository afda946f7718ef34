//! The commit of the SQLite store: a batch's rows ([`BatchRows`]) as one
//! constant multi-statement query whose rows come as JSON arrays (one
//! parameter per table, read with `json_each`). Being constant, the query
//! is prepared once per connection and reused whatever the batch holds.
//!
//! The usual batch travels in one round trip, from `BEGIN IMMEDIATE` to
//! `COMMIT` ([`commit_in_one_trip`]): the instance rows are updated only
//! where the version and the lease still match, and if any turn's row did
//! not, a guard row turns the commit into a uniqueness violation and the
//! transaction rolls back. Then, or for a batch that creates instances,
//! the store reads the rows in a transaction, plans which turns may be
//! written, and sends the same query in it ([`write_in_transaction`]).
//!
//! A batch with many history or stream rows (a turn that emitted
//! thousands) sends them as bound parameters of multi-row inserts in the
//! same transaction, which SQLite reads much faster than fields extracted
//! from JSON.

use serde::Serialize;
use sqlx::{QueryBuilder, Sqlite, SqliteConnection};

use super::create::{push_instance, INSTANCE_COLUMNS};
use crate::store::sql::codec::{db, instance_row_of, json_list, Columns};
use crate::store::sql::plan::{BatchRows, Committer, HistoryRow, InstanceRows, KeyRow, StreamRow};
use crate::store::sql::queries;
use crate::store::{StoreError, StoreResult};

// The lease columns are set by a statement of their own, and only where
// they change: a column in an UPDATE's SET rewrites its index entries even
// to the same value, a page of the log each. A lease held with at least
// two thirds of its time left (the lease keeper renews every third) is
// left as it is, and so is an instance without one that the turn does not
// keep.
//
// Parameters are anonymous and bound in the order they appear: sqlx binds
// numbered parameters of a multi-statement query wrongly when a statement
// does not use every number below its highest. `+i.lock_owner` keeps
// SQLite from looking the released instances up through the index of lease
// owners, which visits every instance the worker holds, even for an empty
// release list (30 us per commit for 200 leases), instead of by their ids.
macro_rules! writes {
    () => { "\
UPDATE instances AS i SET status = u.value->>2, execution_id = u.value->>3, \
  input = COALESCE(u.value->>4, i.input), custom_status = u.value->>5, output = u.value->>6, \
  failure = u.value->>7, updated_at = ?, completed_at = u.value->>8, history_len = u.value->>9, \
  stream_seq = u.value->>10, execution_emits = u.value->>11, version = i.version + 1 \
  FROM json_each(?) AS u \
  WHERE i.instance_id = u.value->>0 AND i.version = u.value->>1 AND (i.lock_owner = ? OR i.lock_expires <= ?);
INSERT INTO turn_guard (id) SELECT 1 WHERE changes() <> ?;
UPDATE instances AS i SET lock_owner = u.value->>12, lock_expires = u.value->>13 \
  FROM json_each(?) AS u \
  WHERE i.instance_id = u.value->>0 AND NOT (i.lock_owner IS u.value->>12 AND i.lock_expires >= MIN(u.value->>13, ?));
DELETE FROM history WHERE instance_id IN (SELECT value FROM json_each(?));
INSERT INTO history (instance_id, idx, event) SELECT value->>0, value->>1, value->>2 FROM json_each(?);
DELETE FROM messages WHERE id IN (SELECT value FROM json_each(?));
DELETE FROM messages WHERE instance_id IN (SELECT value FROM json_each(?));
DELETE FROM activities WHERE instance_id IN (SELECT value FROM json_each(?));
INSERT INTO activities (instance_id, execution_id, task_id, name, input, lock_owner, lock_expires, attempt, \
  fingerprint) \
  SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>7, value->>8 \
  FROM json_each(?);
INSERT INTO messages (instance_id, execution_id, kind, event, visible_at) \
  SELECT u.value->>0, u.value->>1, 'Result', u.value->>2, ? FROM json_each(?) AS u \
  WHERE EXISTS (SELECT 1 FROM instances WHERE instance_id = u.value->>0 \
  AND status NOT IN ('Completed', 'Failed', 'Terminated')) \
  AND EXISTS (SELECT 1 FROM activities WHERE instance_id = u.value->>0 AND execution_id = u.value->>1 \
  AND task_id = u.value->>3 AND (fingerprint IS NULL OR fingerprint = u.value->>4));
DELETE FROM activities WHERE rowid IN (SELECT a.rowid FROM json_each(?) AS k JOIN activities AS a \
  ON a.instance_id = k.value->>0 AND a.execution_id = k.value->>1 AND a.task_id = k.value->>2 \
  AND (a.fingerprint IS NULL OR a.fingerprint = k.value->>3));
INSERT INTO messages (instance_id, execution_id, kind, event, visible_at) \
  SELECT value->>0, value->>1, value->>2, value->>3, value->>4 FROM json_each(?);
INSERT INTO stream_events (instance_id, seq, execution_id, emit_index, name, payload, emitted_at) \
  SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6 FROM json_each(?);
UPDATE instances AS i SET lock_owner = NULL, lock_expires = 0 \
  FROM json_each(?) AS r WHERE i.instance_id = r.value AND +i.lock_owner = ?;
" };
}

/// The batch in one round trip.
const COMMIT: &str = concat!("BEGIN IMMEDIATE;\n", writes!(), "COMMIT");

/// The batch but its bulk rows, beginning the transaction and leaving it
/// open for them.
const BEGIN_AND_WRITE: &str = concat!("BEGIN IMMEDIATE;\n", writes!());

/// The batch in a transaction begun already.
const WRITE: &str = writes!();

/// History and stream rows of a batch above which they are
/// inserted with bound parameters after the query rather than extracted
/// from JSON: SQLite extracts the fields of 10,000 stream rows from JSON in
/// about 30 ms, and takes them as parameters in about 3. Below it, the one
/// round trip of [`COMMIT`] is cheaper.
const BULK_ROWS: usize = 64;

/// Rows per bulk `INSERT` (at most 8 parameters each, well under SQLite's
/// 32,766).
const BULK_CHUNK: usize = 500;

/// Instances per `INSERT` of created instances (8 parameters each).
const CREATIONS_CHUNK: usize = 200;

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

/// A JSON array of rows (the parameter a statement reads with
/// `json_each`), each row serialized straight from its fields.
#[derive(Default)]
struct JsonRows {
    text: Vec<u8>,
    len: usize,
}

impl JsonRows {
    fn push<T: Serialize + ?Sized>(&mut self, row: &T) -> StoreResult<()> {
        self.text.push(if self.len == 0 { b'[' } else { b',' });
        self.len += 1;
        serde_json::to_writer(&mut self.text, row).map_err(|e| StoreError::Corrupt(e.to_string()))
    }

    /// An array of `rows`, each written as `row` says.
    fn of<'r, R, T: Serialize>(rows: &'r [R], row: impl Fn(&'r R) -> T) -> StoreResult<String> {
        let mut json = Self::default();
        for r in rows {
            json.push(&row(r))?;
        }
        json.finish()
    }

    /// The array's text.
    fn finish(mut self) -> StoreResult<String> {
        if self.len == 0 {
            return Ok("[]".to_owned());
        }
        self.text.push(b']');
        String::from_utf8(self.text).map_err(|e| StoreError::Corrupt(e.to_string()))
    }
}

/// A work item's key as a JSON row: instance, execution, task, fingerprint.
fn key_json<'a>(key: &KeyRow<'a>) -> (&'a str, &'a str, i64, i64) {
    (key.instance_id, key.execution_id, key.task_id, key.fingerprint)
}

/// The query's parameters, but the owner and times.
struct Encoded<'r> {
    updates: String,
    turns: i64,
    new_executions: String,
    history: String,
    consumed: String,
    terminal: String,
    activities: String,
    results: String,
    done: String,
    messages: String,
    stream: String,
    releases: String,
    /// History and stream rows in bound inserts instead, for a batch with
    /// many.
    bulk: Option<(&'r [HistoryRow<'r>], &'r [StreamRow<'r>])>,
}

impl<'r> Encoded<'r> {
    fn of(rows: &'r BatchRows<'r>) -> StoreResult<Self> {
        let bulk = rows.history.len() + rows.stream.len() > BULK_ROWS;
        let (history, stream) = if bulk {
            ("[]".to_owned(), "[]".to_owned())
        } else {
            (
                JsonRows::of(&rows.history, |h| (h.instance_id, h.idx, &h.event))?,
                JsonRows::of(&rows.stream, |e| {
                    (
                        e.instance_id,
                        e.seq,
                        e.execution_id,
                        e.emit_index,
                        e.name,
                        e.payload,
                        e.emitted_at,
                    )
                })?,
            )
        };
        let mut messages = JsonRows::default();
        let created = rows.creations.iter().map(|c| &c.start);
        for m in rows.messages.iter().chain(created) {
            messages.push(&(m.instance_id, m.execution_id, m.kind, &m.event, m.visible_at))?;
        }
        Ok(Self {
            updates: JsonRows::of(&rows.updates, |u| {
                (
                    u.instance_id,
                    u.version,
                    u.status,
                    u.execution_id,
                    u.input,
                    u.custom_status,
                    u.output,
                    &u.failure,
                    u.completed_at,
                    u.history_len,
                    u.stream_seq,
                    u.execution_emits,
                    u.lock_owner,
                    u.lock_expires,
                )
            })?,
            turns: i64::try_from(rows.updates.len()).unwrap_or(i64::MAX),
            new_executions: JsonRows::of(&rows.new_executions, |id| *id)?,
            history,
            consumed: JsonRows::of(&rows.consumed, |id| *id)?,
            terminal: JsonRows::of(&rows.terminal, |id| *id)?,
            activities: JsonRows::of(&rows.activities, |a| {
                let k = &a.key;
                (
                    k.instance_id,
                    k.execution_id,
                    k.task_id,
                    a.name,
                    a.input,
                    a.lock_owner,
                    a.lock_expires,
                    a.attempt,
                    k.fingerprint,
                )
            })?,
            results: JsonRows::of(&rows.results, |r| {
                let k = &r.key;
                (k.instance_id, k.execution_id, &r.event, k.task_id, k.fingerprint)
            })?,
            done: {
                let mut done = JsonRows::default();
                for key in rows.done.iter().chain(rows.results.iter().map(|r| &r.key)) {
                    done.push(&key_json(key))?;
                }
                done.finish()?
            },
            messages: messages.finish()?,
            stream,
            releases: JsonRows::of(&rows.releases, |id| *id)?,
            bulk: bulk.then_some((&rows.history[..], &rows.stream[..])),
        })
    }

    /// `sql` (one of [`COMMIT`], [`BEGIN_AND_WRITE`], [`WRITE`]) with the
    /// parameters bound.
    fn query<'q>(&'q self, sql: &'static str, by: Committer<'q>) -> SqliteQuery<'q> {
        // A lease still held until then is not extended.
        let fresh_until = by.now + (by.lease_until - by.now) * 2 / 3;
        sqlx::query(sql)
            .bind(by.now)
            .bind(self.updates.as_str())
            .bind(by.owner)
            .bind(by.now)
            .bind(self.turns)
            .bind(self.updates.as_str())
            .bind(fresh_until)
            .bind(self.new_executions.as_str())
            .bind(self.history.as_str())
            .bind(self.consumed.as_str())
            .bind(self.terminal.as_str())
            .bind(self.terminal.as_str())
            .bind(self.activities.as_str())
            .bind(by.now)
            .bind(self.results.as_str())
            .bind(self.done.as_str())
            .bind(self.messages.as_str())
            .bind(self.stream.as_str())
            .bind(self.releases.as_str())
            .bind(by.owner)
    }
}

/// Reads the rows of `ids` (see [`batch_instance_ids`]) in the open
/// transaction.
///
/// [`batch_instance_ids`]: crate::store::sql::plan::batch_instance_ids
pub(super) async fn instance_rows(tx: &mut SqliteConnection, ids: &[&str]) -> StoreResult<InstanceRows> {
    if ids.is_empty() {
        return Ok(InstanceRows::new());
    }
    let rows = sqlx::query(
        "SELECT instance_id, status, version, lock_owner, lock_expires FROM instances \
         WHERE instance_id IN (SELECT value FROM json_each(?))",
    )
    .bind(json_list(ids))
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?;
    rows.iter()
        .map(|row| Ok((row.text("instance_id")?, instance_row_of(row)?)))
        .collect()
}

/// Whether [`commit_in_one_trip`] can write `batch`: a batch that creates
/// instances (sub-orchestrations) needs their rows read first, and one
/// with a turn that drops the late messages of a terminal instance needs
/// its version checked (see `plan.rs`).
pub(super) fn applies_to(batch: &crate::store::CommitBatch) -> bool {
    batch
        .turns
        .iter()
        .all(|t| t.sub_orchestrations.is_empty() && t.update.is_some())
}

/// Writes `rows` (planned without reading) in one round trip. Fails with
/// [`StoreError::Conflict`], writing nothing, if a turn's instance changed
/// since the turn read it.
pub(super) async fn commit_in_one_trip(
    conn: &mut SqliteConnection,
    rows: &BatchRows<'_>,
    by: Committer<'_>,
) -> StoreResult<()> {
    let encoded = Encoded::of(rows)?;
    let sql = if encoded.bulk.is_some() {
        BEGIN_AND_WRITE
    } else {
        COMMIT
    };
    let mut result = encoded
        .query(sql, by)
        .execute(&mut *conn)
        .await
        .map_err(db)
        .map(drop);
    if let (Ok(()), Some((history, stream))) = (&result, encoded.bulk) {
        result = match insert_bulk(conn, history, stream).await {
            Ok(()) => sqlx::query("COMMIT")
                .execute(&mut *conn)
                .await
                .map_err(db)
                .map(drop),
            Err(e) => Err(e),
        };
    }
    if result.is_err() {
        // Ends the transaction if it began (an error when it did not).
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
    }
    result
}

/// Writes `rows` (planned from the instance rows read in the transaction)
/// in the transaction; the caller commits.
pub(super) async fn write_in_transaction(
    tx: &mut SqliteConnection,
    rows: &BatchRows<'_>,
    by: Committer<'_>,
) -> StoreResult<()> {
    if !rows.replaced.is_empty() {
        for mut query in queries::delete_instances::<Sqlite>(&rows.replaced) {
            query
                .build()
                .persistent(false)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
    }
    for chunk in rows.creations.chunks(CREATIONS_CHUNK) {
        let mut query = QueryBuilder::<Sqlite>::new(format!("INSERT INTO {INSTANCE_COLUMNS} "));
        query.push_values(chunk, push_instance);
        query
            .build()
            .persistent(false)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
    }
    let encoded = Encoded::of(rows)?;
    encoded.query(WRITE, by).execute(&mut *tx).await.map_err(db)?;
    if let Some((history, stream)) = encoded.bulk {
        insert_bulk(tx, history, stream).await?;
    }
    Ok(())
}

/// Inserts the bulk rows with bound parameters.
async fn insert_bulk(
    conn: &mut SqliteConnection,
    history: &[HistoryRow<'_>],
    stream: &[StreamRow<'_>],
) -> StoreResult<()> {
    insert_rows(
        conn,
        "INSERT INTO history (instance_id, idx, event) VALUES ",
        3,
        history,
        |q, h| q.bind(h.instance_id).bind(h.idx).bind(h.event.as_str()),
    )
    .await?;
    insert_rows(
        conn,
        "INSERT INTO stream_events (instance_id, seq, execution_id, emit_index, name, payload, \
         emitted_at) VALUES ",
        7,
        stream,
        |q, e| {
            q.bind(e.instance_id)
                .bind(e.seq)
                .bind(e.execution_id)
                .bind(e.emit_index)
                .bind(e.name)
                .bind(e.payload)
                .bind(e.emitted_at)
        },
    )
    .await
}

/// Inserts `rows` with multi-row `INSERT`s of [`BULK_CHUNK`] rows: `head`
/// up to `VALUES`, `columns` parameters per row, bound by `bind`.
async fn insert_rows<R>(
    conn: &mut SqliteConnection,
    head: &str,
    columns: usize,
    rows: &[R],
    bind: for<'q> fn(SqliteQuery<'q>, &'q R) -> SqliteQuery<'q>,
) -> StoreResult<()> {
    let values = |rows: usize| {
        let row = format!("({})", vec!["?"; columns].join(", "));
        format!("{head}{}", vec![row; rows].join(", "))
    };
    let full = (rows.len() >= BULK_CHUNK).then(|| values(BULK_CHUNK));
    for chunk in rows.chunks(BULK_CHUNK) {
        let partial;
        // Full chunks share one prepared statement; the last, shorter one
        // is prepared for once.
        let query = if let (Some(full), BULK_CHUNK) = (&full, chunk.len()) {
            sqlx::query(full)
        } else {
            partial = values(chunk.len());
            sqlx::query(&partial).persistent(false)
        };
        chunk
            .iter()
            .fold(query, bind)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
    }
    Ok(())
}
