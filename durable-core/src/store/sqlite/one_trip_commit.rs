//! The one-round-trip commit of the SQLite store.
//!
//! A batch of turns travels as one constant multi-statement query, from
//! `BEGIN IMMEDIATE` to `COMMIT`, whose rows come as JSON arrays (one
//! parameter per table, read with `json_each`). Being constant, the query
//! is prepared once per connection and reused whatever the batch holds.
//!
//! A batch with many stream events (a turn that emitted thousands) sends
//! them as bound parameters of multi-row inserts in the same transaction,
//! which SQLite reads much faster than fields extracted from JSON.
//!
//! The instance rows are updated only where the version and the lease still
//! match; if any turn's row did not match, a guard row turns the commit into
//! a uniqueness violation, the transaction rolls back, and the store writes
//! the batch turn by turn after reading the rows (see `write.rs`).

use serde::Serialize;
use sqlx::SqliteConnection;

use super::write::Wake;
use crate::store::codec::{db, event_kind, fingerprint_column, i64_of, messages_of, ms, releases, to_json};
use crate::store::{ActivityKey, CommitBatch, NewStreamEvent, StoreError, StoreResult, TurnCommit};
use crate::Payload;

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
BEGIN IMMEDIATE;
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
const COMMIT: &str = concat!(writes!(), "COMMIT");

/// The batch but its bulk rows, leaving the transaction open for them.
const WRITES: &str = writes!();

/// History and stream rows of a batch above which they are
/// inserted with bound parameters after [`WRITES`] rather than extracted
/// from JSON: SQLite extracts the fields of 10,000 stream rows from JSON in
/// about 30 ms, and takes them as parameters in about 3. Below it, the one
/// round trip of [`COMMIT`] is cheaper.
const BULK_ROWS: usize = 64;

/// Rows per bulk `INSERT` (at most 8 parameters each, well under SQLite's
/// 32,766).
const BULK_CHUNK: usize = 500;

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

/// A history row: instance, index, event.
type HistoryRow<'a> = (&'a str, i64, String);

/// Rows inserted with bound parameters.
#[derive(Default)]
struct Bulk<'a> {
    history: Vec<HistoryRow<'a>>,
    stream: Vec<(&'a str, &'a NewStreamEvent)>,
}

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

    fn len(&self) -> usize {
        self.len
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

/// The rows of a batch, by table.
#[derive(Default)]
struct Rows<'a> {
    updates: JsonRows,
    new_executions: JsonRows,
    history: JsonRows,
    consumed: JsonRows,
    terminal: JsonRows,
    done: JsonRows,
    activities: JsonRows,
    messages: JsonRows,
    completions: JsonRows,
    stream: JsonRows,
    release: JsonRows,
    /// History and stream rows in bound inserts instead, for a
    /// large batch.
    bulk: Option<Bulk<'a>>,
}

impl<'a> Rows<'a> {
    fn turn(&mut self, owner: &'a str, lease_until: i64, now: i64, turn: &'a TurnCommit) -> StoreResult<()> {
        let id = turn.instance_id.as_str();
        let Some(u) = &turn.update else {
            // Late messages of a terminal instance: drop them.
            for m in &turn.consumed {
                self.consumed.push(m)?;
            }
            return Ok(());
        };
        let terminal = u.status.is_terminal();
        let keep = turn.keep_lease && !terminal;
        self.updates.push(&(
            id,
            i64_of(turn.version),
            u.status.as_str(),
            &u.execution_id,
            u.input.as_ref().map(Payload::as_str),
            &u.custom_status,
            u.output.as_ref().map(Payload::as_str),
            u.failure.as_ref().map(to_json).transpose()?,
            terminal.then_some(now),
            i64_of(u.history_len),
            i64_of(u.stream_seq),
            i64_of(u.execution_emits),
            keep.then_some(owner),
            if keep { lease_until } else { 0 },
        ))?;
        if turn.new_execution {
            self.new_executions.push(id)?;
        }
        for (i, event) in turn.history.iter().enumerate() {
            let idx = i64_of(turn.history_index + i as u64);
            match &mut self.bulk {
                Some(bulk) => bulk.history.push((id, idx, to_json(event)?)),
                None => self.history.push(&(id, idx, to_json(event)?))?,
            }
        }
        if terminal {
            // Nothing will consume them any more.
            self.terminal.push(id)?;
        } else {
            for m in &turn.consumed {
                self.consumed.push(m)?;
            }
            for key in &turn.completed_activities {
                self.done.push(&key_row(key))?;
            }
            let (claim_owner, claim_until, attempt) = if turn.claim_activities {
                (Some(owner), lease_until, 1)
            } else {
                (None, 0, 0)
            };
            // Always in the main query: a result in the same batch for
            // one of these activities needs its work item written first.
            for a in &turn.activities {
                self.activities.push(&(
                    a.key.instance_id.as_str(),
                    &a.key.execution_id,
                    i64_of(a.key.task_id),
                    &a.name,
                    a.input.as_str(),
                    claim_owner,
                    claim_until,
                    attempt,
                    fingerprint_column(a.key.fingerprint),
                ))?;
            }
        }
        for m in messages_of(turn) {
            self.messages.push(&(
                m.instance_id.as_str(),
                &m.execution_id,
                event_kind(&m.event),
                to_json(&m.event)?,
                ms(m.visible_at),
            ))?;
        }
        if let Some(bulk) = &mut self.bulk {
            bulk.stream.extend(turn.stream.iter().map(|e| (id, e)));
            return Ok(());
        }
        for e in &turn.stream {
            self.stream.push(&(
                id,
                i64_of(e.seq),
                &e.execution_id,
                i64_of(e.emit_index),
                &e.name,
                e.payload.as_str(),
                ms(e.emitted_at),
            ))?;
        }
        Ok(())
    }
}

/// A work item's key as a row: instance, execution, task, fingerprint.
fn key_row(key: &ActivityKey) -> (&str, &str, i64, i64) {
    (
        key.instance_id.as_str(),
        &key.execution_id,
        i64_of(key.task_id),
        fingerprint_column(key.fingerprint),
    )
}

/// Whether [`commit`] can write `batch`: a batch that creates instances
/// (sub-orchestrations) needs their rows read first, and one with a turn
/// that drops the late messages of a terminal instance needs its version
/// checked (see `may_commit`).
pub(super) fn applies_to(batch: &CommitBatch) -> bool {
    batch
        .turns
        .iter()
        .all(|t| t.sub_orchestrations.is_empty() && t.update.is_some())
}

/// Writes `batch` in one round trip. Fails with
/// [`StoreError::Conflict`](crate::StoreError::Conflict), writing nothing,
/// if a turn's instance changed since the turn read it.
pub(super) async fn commit(
    conn: &mut SqliteConnection,
    owner: &str,
    lease_until: i64,
    now: i64,
    batch: &CommitBatch,
) -> StoreResult<Wake> {
    let bulk_rows: usize = batch.turns.iter().map(|t| t.history.len() + t.stream.len()).sum();
    let mut rows = Rows {
        bulk: (bulk_rows > BULK_ROWS).then(Bulk::default),
        ..Rows::default()
    };
    let mut wake = Wake::default();
    for turn in &batch.turns {
        rows.turn(owner, lease_until, now, turn)?;
        wake.turn(turn, now);
    }
    for c in &batch.completions {
        let key = key_row(&c.key);
        rows.done.push(&key)?;
        rows.completions
            .push(&(key.0, key.1, to_json(&c.event)?, key.2, key.3))?;
        wake.orchestrations = true;
    }
    // Every turn is written, or none.
    for id in releases(batch, &vec![true; batch.turns.len()]) {
        rows.release.push(id.as_str())?;
        wake.orchestrations = true;
    }
    let turns = i64::try_from(rows.updates.len()).unwrap_or(i64::MAX);
    let terminal = rows.terminal.finish()?;
    let bulk = rows.bulk.take();
    let updates = rows.updates.finish()?;
    // A lease still held until then is not extended.
    let fresh_until = now + (lease_until - now) * 2 / 3;
    let result = sqlx::query(if bulk.is_some() { WRITES } else { COMMIT })
        .bind(now)
        .bind(updates.as_str())
        .bind(owner)
        .bind(now)
        .bind(turns)
        .bind(updates.as_str())
        .bind(fresh_until)
        .bind(rows.new_executions.finish()?)
        .bind(rows.history.finish()?)
        .bind(rows.consumed.finish()?)
        .bind(terminal.clone())
        .bind(terminal)
        .bind(rows.activities.finish()?)
        .bind(now)
        .bind(rows.completions.finish()?)
        .bind(rows.done.finish()?)
        .bind(rows.messages.finish()?)
        .bind(rows.stream.finish()?)
        .bind(rows.release.finish()?)
        .bind(owner)
        .execute(&mut *conn)
        .await
        .map_err(db);
    let result = match (result, bulk) {
        (Ok(_), Some(bulk)) => insert_bulk(conn, &bulk).await,
        (result, _) => result.map(drop),
    };
    if let Err(e) = result {
        // Ends the transaction if it began (an error when it did not).
        let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
        return Err(e);
    }
    Ok(wake)
}

/// Inserts the bulk rows with bound parameters and commits the transaction
/// [`WRITES`] left open.
async fn insert_bulk(conn: &mut SqliteConnection, bulk: &Bulk<'_>) -> StoreResult<()> {
    insert_rows(
        conn,
        "INSERT INTO history (instance_id, idx, event) VALUES ",
        3,
        &bulk.history,
        |q, (id, idx, event)| q.bind(*id).bind(*idx).bind(event.as_str()),
    )
    .await?;
    insert_rows(
        conn,
        "INSERT INTO stream_events (instance_id, seq, execution_id, emit_index, name, payload, \
         emitted_at) VALUES ",
        7,
        &bulk.stream,
        |q, (id, e)| {
            q.bind(*id)
                .bind(i64_of(e.seq))
                .bind(e.execution_id.as_str())
                .bind(i64_of(e.emit_index))
                .bind(e.name.as_str())
                .bind(e.payload.as_str())
                .bind(ms(e.emitted_at))
        },
    )
    .await?;
    sqlx::query("COMMIT").execute(&mut *conn).await.map_err(db)?;
    Ok(())
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
