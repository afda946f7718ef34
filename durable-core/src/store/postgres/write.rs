//! The write path of the PostgreSQL store.
//!
//! A commit collects every row to write in column arrays (`UNNEST`). The
//! usual batch (turns that create no instances and start no new
//! execution) goes as one statement of data-modifying `WITH` queries in
//! its own implicit transaction: the instance rows are updated only where
//! the version and the lease still match, and a guard row turns any
//! mismatch into a uniqueness violation that undoes the statement. Then,
//! or for the other batches, the commit reads the rows its writes depend
//! on with `FOR UPDATE`, decides which turns may be written, and writes
//! each table with one statement, about a dozen round trips.

use std::collections::HashMap;

use sqlx::{Postgres, Row, Transaction};

use super::listen::Change;
use crate::store::codec::{
    batch_instance_ids, child_exists, db, event_kind, fingerprint_column, i64_of, may_commit, messages_of,
    ms, releases, status_of, to_json, u64_of, InstanceRow, INSTANCE_TABLES,
};
use crate::store::{
    ActivityCompletion, ActivityKey, CommitBatch, CreateOutcome, NewInstance, NewMessage, StoreResult,
    TurnCommit, TurnOutcome,
};

/// Reads and locks the rows of `ids`.
pub(super) async fn instance_rows(
    tx: &mut Transaction<'static, Postgres>,
    ids: &[&str],
) -> StoreResult<HashMap<String, InstanceRow>> {
    let ids: Vec<String> = ids.iter().map(|id| (*id).to_owned()).collect();
    let rows = sqlx::query(
        "SELECT instance_id, status, version, lock_owner, lock_expires FROM instances \
         WHERE instance_id = ANY($1) ORDER BY instance_id FOR UPDATE",
    )
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await
    .map_err(db)?;
    rows.iter()
        .map(|row| {
            let status: String = row.try_get("status").map_err(db)?;
            Ok((
                row.try_get("instance_id").map_err(db)?,
                InstanceRow {
                    status: status_of(&status)?,
                    version: u64_of(row.try_get("version").map_err(db)?),
                    lock_owner: row.try_get("lock_owner").map_err(db)?,
                    lock_expires: row.try_get("lock_expires").map_err(db)?,
                },
            ))
        })
        .collect()
}

/// Deletes everything of the instances `ids`.
pub(super) async fn delete_instance_rows(conn: &mut sqlx::PgConnection, ids: &[String]) -> StoreResult<()> {
    for table in INSTANCE_TABLES {
        sqlx::query(&format!("DELETE FROM {table} WHERE instance_id = ANY($1)"))
            .bind(ids)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
    }
    Ok(())
}

/// A statement being bound.
type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

/// Instance rows to update after turns, by column.
#[derive(Debug, Default)]
struct Updates {
    instance_id: Vec<String>,
    status: Vec<String>,
    execution_id: Vec<String>,
    input: Vec<Option<String>>,
    custom_status: Vec<Option<String>>,
    output: Vec<Option<String>>,
    failure: Vec<Option<String>>,
    completed_at: Vec<Option<i64>>,
    history_len: Vec<i64>,
    stream_seq: Vec<i64>,
    execution_emits: Vec<i64>,
    lock_owner: Vec<Option<String>>,
    lock_expires: Vec<i64>,
    /// The version each turn started from (checked by the one-statement
    /// commit).
    version: Vec<i64>,
}

impl Updates {
    /// Binds the columns the update sets, from `instance_id` to
    /// `lock_expires`, in order.
    fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        query
            .bind(&self.instance_id)
            .bind(&self.status)
            .bind(&self.execution_id)
            .bind(&self.input)
            .bind(&self.custom_status)
            .bind(&self.output)
            .bind(&self.failure)
            .bind(&self.completed_at)
            .bind(&self.history_len)
            .bind(&self.stream_seq)
            .bind(&self.execution_emits)
            .bind(&self.lock_owner)
            .bind(&self.lock_expires)
    }
}

/// Instances to create, by column.
#[derive(Debug, Default)]
struct Creations {
    instance_id: Vec<String>,
    name: Vec<String>,
    execution_id: Vec<String>,
    input: Vec<String>,
    parent: Vec<Option<String>>,
    created_at: Vec<i64>,
}

/// Messages to insert, by column.
#[derive(Debug, Default)]
struct Messages {
    instance_id: Vec<String>,
    execution_id: Vec<Option<String>>,
    kind: Vec<String>,
    event: Vec<String>,
    visible_at: Vec<i64>,
}

impl Messages {
    /// Binds the columns in order.
    fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        query
            .bind(&self.instance_id)
            .bind(&self.execution_id)
            .bind(&self.kind)
            .bind(&self.event)
            .bind(&self.visible_at)
    }

    fn push(&mut self, m: &NewMessage) -> StoreResult<()> {
        self.instance_id.push(m.instance_id.as_str().to_owned());
        self.execution_id.push(m.execution_id.clone());
        self.kind.push(event_kind(&m.event).to_owned());
        self.event.push(to_json(&m.event)?);
        self.visible_at.push(ms(m.visible_at));
        Ok(())
    }
}

/// Activity work items to insert, by column.
#[derive(Debug, Default)]
struct Activities {
    instance_id: Vec<String>,
    execution_id: Vec<String>,
    task_id: Vec<i64>,
    name: Vec<String>,
    input: Vec<String>,
    lock_owner: Vec<Option<String>>,
    lock_expires: Vec<i64>,
    attempt: Vec<i32>,
    fingerprint: Vec<i64>,
}

impl Activities {
    /// Binds the columns in order.
    fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        query
            .bind(&self.instance_id)
            .bind(&self.execution_id)
            .bind(&self.task_id)
            .bind(&self.name)
            .bind(&self.input)
            .bind(&self.lock_owner)
            .bind(&self.lock_expires)
            .bind(&self.attempt)
            .bind(&self.fingerprint)
    }
}

/// Activity work items, by key column: to delete, or to deliver a result
/// to.
#[derive(Debug, Default)]
struct ActivityKeys {
    instance_id: Vec<String>,
    execution_id: Vec<String>,
    task_id: Vec<i64>,
    fingerprint: Vec<i64>,
}

impl ActivityKeys {
    fn push(&mut self, key: &ActivityKey) {
        self.instance_id.push(key.instance_id.as_str().to_owned());
        self.execution_id.push(key.execution_id.clone());
        self.task_id.push(i64_of(key.task_id));
        self.fingerprint.push(fingerprint_column(key.fingerprint));
    }

    /// Binds the key columns in order.
    fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        query
            .bind(&self.instance_id)
            .bind(&self.execution_id)
            .bind(&self.task_id)
            .bind(&self.fingerprint)
    }
}

/// Stream events to insert, by column.
#[derive(Debug, Default)]
struct Stream {
    instance_id: Vec<String>,
    seq: Vec<i64>,
    execution_id: Vec<String>,
    emit_index: Vec<i64>,
    name: Vec<String>,
    payload: Vec<String>,
    emitted_at: Vec<i64>,
}

impl Stream {
    /// Binds the columns in order.
    fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        query
            .bind(&self.instance_id)
            .bind(&self.seq)
            .bind(&self.execution_id)
            .bind(&self.emit_index)
            .bind(&self.name)
            .bind(&self.payload)
            .bind(&self.emitted_at)
    }
}

/// Everything one transaction writes, by table.
#[derive(Debug, Default)]
pub(super) struct Writes {
    replaced: Vec<String>,
    new_executions: Vec<String>,
    creations: Creations,
    updates: Updates,
    history: (Vec<String>, Vec<i64>, Vec<String>),
    consumed: Vec<i64>,
    terminal: Vec<String>,
    done: ActivityKeys,
    activities: Activities,
    messages: Messages,
    /// Results for instances the worker does not hold: their work items'
    /// keys and their events.
    completions: (ActivityKeys, Vec<String>),
    stream: Stream,
    release: Vec<String>,
    release_owner: String,
}

impl Writes {
    /// Creates `instance` with its start message, replacing a terminal
    /// instance of the same id; `rows` learns the new row.
    pub(super) fn create_instance(
        &mut self,
        instance: &NewInstance,
        rows: &mut HashMap<String, InstanceRow>,
    ) -> StoreResult<CreateOutcome> {
        let id = instance.instance_id.as_str();
        if let Some(row) = rows.get(id) {
            if !row.status.is_terminal() {
                return Ok(CreateOutcome::AlreadyExists(row.status));
            }
            self.replaced.push(id.to_owned());
        }
        let c = &mut self.creations;
        c.instance_id.push(id.to_owned());
        c.name.push(instance.name.clone());
        c.execution_id.push(instance.execution_id.clone());
        c.input.push(instance.input.as_str().to_owned());
        c.parent.push(instance.parent.as_ref().map(to_json).transpose()?);
        c.created_at.push(ms(instance.created_at));
        self.messages.push(&NewMessage {
            instance_id: instance.instance_id.clone(),
            execution_id: Some(instance.execution_id.clone()),
            event: instance.start_event(),
            visible_at: instance.start_at,
        })?;
        rows.insert(id.to_owned(), InstanceRow::created());
        Ok(CreateOutcome::Created)
    }

    /// Writes one turn whose version check passed.
    fn turn(
        &mut self,
        owner: &str,
        lease_until: i64,
        now: i64,
        turn: &TurnCommit,
        rows: &mut HashMap<String, InstanceRow>,
    ) -> StoreResult<()> {
        let id = turn.instance_id.as_str();
        let Some(u) = &turn.update else {
            // Late messages of a terminal instance: drop them.
            self.consumed.extend(&turn.consumed);
            return Ok(());
        };
        let terminal = u.status.is_terminal();
        let keep = turn.keep_lease && !terminal;
        let up = &mut self.updates;
        up.instance_id.push(id.to_owned());
        up.status.push(u.status.as_str().to_owned());
        up.execution_id.push(u.execution_id.clone());
        up.input.push(u.input.as_ref().map(|p| p.as_str().to_owned()));
        up.custom_status.push(u.custom_status.clone());
        up.output.push(u.output.as_ref().map(|p| p.as_str().to_owned()));
        up.failure.push(u.failure.as_ref().map(to_json).transpose()?);
        up.completed_at.push(terminal.then_some(now));
        up.history_len.push(i64_of(u.history_len));
        up.stream_seq.push(i64_of(u.stream_seq));
        up.execution_emits.push(i64_of(u.execution_emits));
        up.lock_owner.push(keep.then(|| owner.to_owned()));
        up.lock_expires.push(if keep { lease_until } else { 0 });
        up.version.push(i64_of(turn.version));
        if let Some(row) = rows.get_mut(id) {
            row.status = u.status;
            row.version += 1;
        }
        if turn.new_execution {
            self.new_executions.push(id.to_owned());
        }
        for (i, event) in turn.history.iter().enumerate() {
            self.history.0.push(id.to_owned());
            self.history.1.push(i64_of(turn.history_index + i as u64));
            self.history.2.push(to_json(event)?);
        }
        if terminal {
            // Nothing will consume them any more.
            self.terminal.push(id.to_owned());
        } else {
            self.consumed.extend(&turn.consumed);
            for key in &turn.completed_activities {
                self.done.push(key);
            }
            for a in &turn.activities {
                let act = &mut self.activities;
                act.instance_id.push(a.key.instance_id.as_str().to_owned());
                act.execution_id.push(a.key.execution_id.clone());
                act.task_id.push(i64_of(a.key.task_id));
                act.name.push(a.name.clone());
                act.input.push(a.input.as_str().to_owned());
                act.lock_owner
                    .push(turn.claim_activities.then(|| owner.to_owned()));
                act.lock_expires
                    .push(if turn.claim_activities { lease_until } else { 0 });
                act.attempt.push(i32::from(turn.claim_activities));
                act.fingerprint.push(fingerprint_column(a.key.fingerprint));
            }
        }
        for m in messages_of(turn) {
            self.messages.push(m)?;
        }
        for child in &turn.sub_orchestrations {
            if let CreateOutcome::AlreadyExists(status) = self.create_instance(child, rows)? {
                if let Some(message) = child_exists(child, status, now) {
                    self.messages.push(&message)?;
                }
            }
        }
        for e in &turn.stream {
            let s = &mut self.stream;
            s.instance_id.push(id.to_owned());
            s.seq.push(i64_of(e.seq));
            s.execution_id.push(e.execution_id.clone());
            s.emit_index.push(i64_of(e.emit_index));
            s.name.push(e.name.clone());
            s.payload.push(e.payload.as_str().to_owned());
            s.emitted_at.push(ms(e.emitted_at));
        }
        Ok(())
    }

    fn completion(&mut self, completion: &ActivityCompletion) -> StoreResult<()> {
        self.done.push(&completion.key);
        self.completions.0.push(&completion.key);
        self.completions.1.push(to_json(&completion.event)?);
        Ok(())
    }

    /// Runs the writes, one statement per table.
    pub(super) async fn execute(self, tx: &mut Transaction<'static, Postgres>, now: i64) -> StoreResult<()> {
        let tx = &mut **tx;
        if !self.replaced.is_empty() {
            delete_instance_rows(tx, &self.replaced).await?;
        }
        if !self.new_executions.is_empty() {
            sqlx::query("DELETE FROM history WHERE instance_id = ANY($1)")
                .bind(&self.new_executions)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        let c = &self.creations;
        if !c.instance_id.is_empty() {
            sqlx::query(
                "INSERT INTO instances (instance_id, name, execution_id, incarnation, status, input, parent, \
                 created_at, updated_at) SELECT u.instance_id, u.name, u.execution_id, u.execution_id, 'Pending', \
                 u.input, u.parent, \
                 u.created_at, u.created_at FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], \
                 $5::text[], $6::int8[]) AS u(instance_id, name, execution_id, input, parent, created_at)",
            )
            .bind(&c.instance_id)
            .bind(&c.name)
            .bind(&c.execution_id)
            .bind(&c.input)
            .bind(&c.parent)
            .bind(&c.created_at)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        let up = &self.updates;
        if !up.instance_id.is_empty() {
            let query = sqlx::query(
                "UPDATE instances AS i SET status = u.status, execution_id = u.execution_id, \
                 input = COALESCE(u.input, i.input), custom_status = u.custom_status, output = u.output, \
                 failure = u.failure, updated_at = $1, completed_at = u.completed_at, \
                 history_len = u.history_len, stream_seq = u.stream_seq, execution_emits = u.execution_emits, \
                 version = i.version + 1, lock_owner = u.lock_owner, lock_expires = u.lock_expires \
                 FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
                 $8::text[], $9::int8[], $10::int8[], $11::int8[], $12::int8[], $13::text[], $14::int8[]) \
                 AS u(instance_id, status, execution_id, input, custom_status, output, failure, completed_at, \
                 history_len, stream_seq, execution_emits, lock_owner, lock_expires) \
                 WHERE i.instance_id = u.instance_id",
            )
            .bind(now);
            up.bind(query).execute(&mut *tx).await.map_err(db)?;
        }
        if !self.history.0.is_empty() {
            sqlx::query(
                "INSERT INTO history (instance_id, idx, event) \
                 SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[])",
            )
            .bind(&self.history.0)
            .bind(&self.history.1)
            .bind(&self.history.2)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        if !self.consumed.is_empty() {
            sqlx::query("DELETE FROM messages WHERE id = ANY($1)")
                .bind(&self.consumed)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        if !self.terminal.is_empty() {
            for table in ["messages", "activities"] {
                sqlx::query(&format!("DELETE FROM {table} WHERE instance_id = ANY($1)"))
                    .bind(&self.terminal)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
            }
        }
        let a = &self.activities;
        if !a.instance_id.is_empty() {
            let query = sqlx::query(
                "INSERT INTO activities (instance_id, execution_id, task_id, name, input, lock_owner, \
                 lock_expires, attempt, fingerprint) SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], \
                 $4::text[], $5::text[], $6::text[], $7::int8[], $8::int4[], $9::int8[])",
            );
            a.bind(query).execute(&mut *tx).await.map_err(db)?;
        }
        // After the new work items, before the finished ones go: a result
        // is delivered only for an activity that has one.
        if !self.completions.1.is_empty() {
            let query = sqlx::query(
                "INSERT INTO messages (instance_id, execution_id, kind, event, visible_at) \
                 SELECT u.instance_id, u.execution_id, 'Result', u.event, $6 \
                 FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[], $5::text[]) \
                 AS u(instance_id, execution_id, task_id, fingerprint, event) \
                 WHERE EXISTS (SELECT 1 FROM instances i WHERE i.instance_id = u.instance_id \
                 AND i.status NOT IN ('Completed', 'Failed', 'Terminated')) \
                 AND EXISTS (SELECT 1 FROM activities a WHERE a.instance_id = u.instance_id \
                 AND a.execution_id = u.execution_id AND a.task_id = u.task_id \
                 AND (a.fingerprint IS NULL OR a.fingerprint = u.fingerprint))",
            );
            self.completions
                .0
                .bind(query)
                .bind(&self.completions.1)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        let d = &self.done;
        if !d.instance_id.is_empty() {
            let query = sqlx::query(
                "DELETE FROM activities a USING UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[]) \
                 AS k(instance_id, execution_id, task_id, fingerprint) WHERE a.instance_id = k.instance_id \
                 AND a.execution_id = k.execution_id AND a.task_id = k.task_id \
                 AND (a.fingerprint IS NULL OR a.fingerprint = k.fingerprint)",
            );
            d.bind(query).execute(&mut *tx).await.map_err(db)?;
        }
        let m = &self.messages;
        if !m.instance_id.is_empty() {
            let query = sqlx::query(
                "INSERT INTO messages (instance_id, execution_id, kind, event, visible_at) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[])",
            );
            m.bind(query).execute(&mut *tx).await.map_err(db)?;
        }
        let s = &self.stream;
        if !s.instance_id.is_empty() {
            let query = sqlx::query(
                "INSERT INTO stream_events (instance_id, seq, execution_id, emit_index, name, payload, emitted_at) \
                 SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::int8[], $5::text[], $6::text[], \
                 $7::int8[])",
            );
            s.bind(query).execute(&mut *tx).await.map_err(db)?;
        }
        if !self.release.is_empty() {
            sqlx::query(
                "UPDATE instances SET lock_owner = NULL, lock_expires = 0 \
                 WHERE instance_id = ANY($1) AND lock_owner = $2",
            )
            .bind(&self.release)
            .bind(&self.release_owner)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        Ok(())
    }
}

/// The batch in one statement: every table's writes as a data-modifying
/// `WITH` query, and a guard insert that fails when an instance row did not
/// match its turn's version and lease. Parameters: `$1` now, `$2` the
/// owner, `$3` the number of instance updates expected.
const ONE_STATEMENT: &str = "\
WITH up AS (UPDATE instances AS i SET status = u.status, execution_id = u.execution_id, \
  input = COALESCE(u.input, i.input), custom_status = u.custom_status, output = u.output, \
  failure = u.failure, updated_at = $1, completed_at = u.completed_at, history_len = u.history_len, \
  stream_seq = u.stream_seq, execution_emits = u.execution_emits, version = i.version + 1, \
  lock_owner = u.lock_owner, lock_expires = u.lock_expires \
  FROM UNNEST($4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], \
  $11::int8[], $12::int8[], $13::int8[], $14::int8[], $15::text[], $16::int8[], $17::int8[]) \
  AS u(instance_id, status, execution_id, input, custom_status, output, failure, completed_at, \
  history_len, stream_seq, execution_emits, lock_owner, lock_expires, version) \
  WHERE i.instance_id = u.instance_id AND i.version = u.version \
  AND (i.lock_owner = $2 OR i.lock_expires <= $1) RETURNING 1), \
h AS (INSERT INTO history (instance_id, idx, event) \
  SELECT * FROM UNNEST($18::text[], $19::int8[], $20::text[])), \
consumed AS (DELETE FROM messages WHERE id = ANY($21::int8[])), \
terminal_messages AS (DELETE FROM messages WHERE instance_id = ANY($22::text[])), \
terminal_activities AS (DELETE FROM activities WHERE instance_id = ANY($22::text[])), \
done AS (DELETE FROM activities a USING UNNEST($23::text[], $24::text[], $25::int8[], $26::int8[]) \
  AS k(instance_id, execution_id, task_id, fingerprint) WHERE a.instance_id = k.instance_id \
  AND a.execution_id = k.execution_id AND a.task_id = k.task_id \
  AND (a.fingerprint IS NULL OR a.fingerprint = k.fingerprint)), \
act AS (INSERT INTO activities (instance_id, execution_id, task_id, name, input, lock_owner, \
  lock_expires, attempt, fingerprint) SELECT * FROM UNNEST($27::text[], $28::text[], $29::int8[], \
  $30::text[], $31::text[], $32::text[], $33::int8[], $34::int4[], $35::int8[])), \
msg AS (INSERT INTO messages (instance_id, execution_id, kind, event, visible_at) \
  SELECT * FROM UNNEST($36::text[], $37::text[], $38::text[], $39::text[], $40::int8[])), \
results AS (INSERT INTO messages (instance_id, execution_id, kind, event, visible_at) \
  SELECT r.instance_id, r.execution_id, 'Result', r.event, $1 \
  FROM UNNEST($41::text[], $42::text[], $43::int8[], $44::int8[], $45::text[]) \
  AS r(instance_id, execution_id, task_id, fingerprint, event) \
  WHERE EXISTS (SELECT 1 FROM instances i WHERE i.instance_id = r.instance_id \
  AND i.status NOT IN ('Completed', 'Failed', 'Terminated')) \
  AND EXISTS (SELECT 1 FROM activities a WHERE a.instance_id = r.instance_id \
  AND a.execution_id = r.execution_id AND a.task_id = r.task_id \
  AND (a.fingerprint IS NULL OR a.fingerprint = r.fingerprint))), \
stream AS (INSERT INTO stream_events (instance_id, seq, execution_id, emit_index, name, payload, \
  emitted_at) SELECT * FROM UNNEST($46::text[], $47::int8[], $48::text[], $49::int8[], $50::text[], \
  $51::text[], $52::int8[])), \
released AS (UPDATE instances SET lock_owner = NULL, lock_expires = 0 \
  WHERE instance_id = ANY($53::text[]) AND lock_owner = $2) \
INSERT INTO turn_guard (id) SELECT 1 WHERE (SELECT count(*) FROM up) <> $3";

/// Writes `batch` in one statement (see [`ONE_STATEMENT`]), if it is a
/// batch that can go that way: `None` if not, or if a turn's instance
/// changed since the turn read it (then nothing was written).
pub(super) async fn commit_in_one_statement(
    conn: &mut sqlx::PgConnection,
    owner: &str,
    lease_until: i64,
    now: i64,
    batch: &CommitBatch,
) -> StoreResult<Option<(Vec<TurnOutcome>, Change)>> {
    // Instances created, executions replaced and turns that drop the late
    // messages of a terminal instance need their rows read (see
    // `may_commit`); a result for an instance whose turn is in the batch
    // must see that turn's status, which a sibling `WITH` query would not.
    let turning: Vec<&str> = batch.turns.iter().map(|t| t.instance_id.as_str()).collect();
    let applies = batch
        .turns
        .iter()
        .all(|t| t.sub_orchestrations.is_empty() && !t.new_execution && t.update.is_some())
        && !batch
            .completions
            .iter()
            .any(|c| turning.contains(&c.key.instance_id.as_str()));
    if !applies {
        return Ok(None);
    }
    let (writes, outcomes, change) = plan(batch, owner, lease_until, now, &mut HashMap::new(), false)?;
    let expected = i64::try_from(writes.updates.instance_id.len()).unwrap_or(i64::MAX);
    let up = &writes.updates;
    let (d, a, m, st) = (&writes.done, &writes.activities, &writes.messages, &writes.stream);
    let query = sqlx::query(ONE_STATEMENT).bind(now).bind(owner).bind(expected);
    let query = up.bind(query).bind(&up.version);
    let query = query
        .bind(&writes.history.0)
        .bind(&writes.history.1)
        .bind(&writes.history.2)
        .bind(&writes.consumed)
        .bind(&writes.terminal);
    let query = a.bind(d.bind(query));
    let query = writes
        .completions
        .0
        .bind(m.bind(query))
        .bind(&writes.completions.1);
    let result = st
        .bind(query)
        .bind(&writes.release)
        .execute(&mut *conn)
        .await
        .map_err(db);
    match result {
        Ok(_) => Ok(Some((outcomes, change))),
        // The guard (or another key): nothing was written; check turn by
        // turn.
        Err(crate::StoreError::Conflict(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes `batch` in the open transaction; returns the turn outcomes and
/// what to announce once it commits.
pub(super) async fn commit_batch(
    tx: &mut Transaction<'static, Postgres>,
    owner: &str,
    lease_until: i64,
    now: i64,
    batch: &CommitBatch,
) -> StoreResult<(Vec<TurnOutcome>, Change)> {
    let ids = batch_instance_ids(batch);
    let mut rows = if ids.is_empty() {
        HashMap::new()
    } else {
        instance_rows(tx, &ids).await?
    };
    let (writes, outcomes, change) = plan(batch, owner, lease_until, now, &mut rows, true)?;
    writes.execute(tx, now).await?;
    Ok((outcomes, change))
}

/// What `batch` writes, which turns are written, and what to announce once
/// it commits. With `check`, a turn is written only if `rows` (the
/// instance rows read) allow it; without, every turn is.
fn plan(
    batch: &CommitBatch,
    owner: &str,
    lease_until: i64,
    now: i64,
    rows: &mut HashMap<String, InstanceRow>,
    check: bool,
) -> StoreResult<(Writes, Vec<TurnOutcome>, Change)> {
    let mut writes = Writes {
        release_owner: owner.to_owned(),
        ..Writes::default()
    };
    let mut outcomes = Vec::with_capacity(batch.turns.len());
    let mut change = Change::default();
    for turn in &batch.turns {
        if check && !may_commit(turn, rows, owner, now) {
            outcomes.push(TurnOutcome::Conflict);
            continue;
        }
        writes.turn(owner, lease_until, now, turn, rows)?;
        change.orchestration_work |=
            turn.messages.iter().any(|m| ms(m.visible_at) <= now) || !turn.sub_orchestrations.is_empty();
        change.later |= turn.messages.iter().any(|m| ms(m.visible_at) > now);
        change.activity_work |= !turn.claim_activities && !turn.activities.is_empty();
        change.instances.push(turn.instance_id.clone());
        outcomes.push(TurnOutcome::Committed);
    }
    for completion in &batch.completions {
        writes.completion(completion)?;
        change.orchestration_work = true;
    }
    let written: Vec<bool> = outcomes.iter().map(|o| *o == TurnOutcome::Committed).collect();
    for id in releases(batch, &written) {
        writes.release.push(id.as_str().to_owned());
        change.orchestration_work = true;
    }
    Ok((writes, outcomes, change))
}
