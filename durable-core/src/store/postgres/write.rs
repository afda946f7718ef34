//! The write path of the PostgreSQL store: a batch's rows ([`BatchRows`])
//! as column arrays (`UNNEST`), written by one statement of
//! data-modifying `WITH` queries ([`ONE_STATEMENT`]).
//!
//! The usual batch (turns that create no instances and start no new
//! execution) goes as that one statement in its own implicit transaction
//! ([`commit_in_one_statement`]): the instance rows are updated only where
//! the version and the lease still match, and a guard row turns any
//! mismatch into a uniqueness violation that undoes the statement. Then,
//! or for the other batches, the store reads the rows its writes depend on
//! with `FOR UPDATE`, plans which turns may be written, and writes them in
//! a transaction ([`write_in_transaction`]): what sibling `WITH` queries
//! cannot order (an instance's rows deleted before a new instance takes
//! its id, an old history before a new execution's) goes first, then the
//! statement, then the same statement again with the results for
//! instances the worker does not hold, which must see the turns' writes.

use sqlx::{Postgres, Row};

use crate::store::sql::codec::{db, instance_row_of};
use crate::store::sql::plan::{BatchRows, Committer, InstanceRows, KeyRow};
use crate::store::sql::queries;
use crate::store::{CommitBatch, StoreResult};

/// A statement being bound.
type PgQuery<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

/// Reads and locks the rows of `ids`.
pub(super) async fn instance_rows(tx: &mut sqlx::PgConnection, ids: &[&str]) -> StoreResult<InstanceRows> {
    if ids.is_empty() {
        return Ok(InstanceRows::new());
    }
    let rows = sqlx::query(
        "SELECT instance_id, status, version, lock_owner, lock_expires FROM instances \
         WHERE instance_id = ANY($1) ORDER BY instance_id FOR UPDATE",
    )
    .bind(ids)
    .fetch_all(&mut *tx)
    .await
    .map_err(db)?;
    rows.iter()
        .map(|row| Ok((row.try_get("instance_id").map_err(db)?, instance_row_of(row)?)))
        .collect()
}

/// Work item keys, by column.
#[derive(Debug, Default)]
struct Keys<'a> {
    instance_id: Vec<&'a str>,
    execution_id: Vec<&'a str>,
    task_id: Vec<i64>,
    fingerprint: Vec<i64>,
}

impl<'a> Keys<'a> {
    fn push(&mut self, key: &KeyRow<'a>) {
        self.instance_id.push(key.instance_id);
        self.execution_id.push(key.execution_id);
        self.task_id.push(key.task_id);
        self.fingerprint.push(key.fingerprint);
    }

    fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        query
            .bind(&self.instance_id)
            .bind(&self.execution_id)
            .bind(&self.task_id)
            .bind(&self.fingerprint)
    }
}

/// The parameters of [`ONE_STATEMENT`] but the first three, by column, in
/// the order they are bound.
#[derive(Debug, Default)]
struct Arrays<'a> {
    // $4..$17: instance updates.
    u_instance_id: Vec<&'a str>,
    u_status: Vec<&'a str>,
    u_execution_id: Vec<&'a str>,
    u_input: Vec<Option<&'a str>>,
    u_custom_status: Vec<Option<&'a str>>,
    u_output: Vec<Option<&'a str>>,
    u_failure: Vec<Option<&'a str>>,
    u_completed_at: Vec<Option<i64>>,
    u_history_len: Vec<i64>,
    u_stream_seq: Vec<i64>,
    u_execution_emits: Vec<i64>,
    u_lock_owner: Vec<Option<&'a str>>,
    u_lock_expires: Vec<i64>,
    u_version: Vec<i64>,
    // $18..$20: history.
    h_instance_id: Vec<&'a str>,
    h_idx: Vec<i64>,
    h_event: Vec<&'a str>,
    // $21, $22: consumed messages, ended instances.
    consumed: Vec<i64>,
    terminal: Vec<&'a str>,
    // $23..$26: finished work items.
    done: Keys<'a>,
    // $27..$35: new work items.
    a_instance_id: Vec<&'a str>,
    a_execution_id: Vec<&'a str>,
    a_task_id: Vec<i64>,
    a_name: Vec<&'a str>,
    a_input: Vec<&'a str>,
    a_lock_owner: Vec<Option<&'a str>>,
    a_lock_expires: Vec<i64>,
    a_attempt: Vec<i32>,
    a_fingerprint: Vec<i64>,
    // $36..$40: messages.
    m_instance_id: Vec<&'a str>,
    m_execution_id: Vec<Option<&'a str>>,
    m_kind: Vec<&'a str>,
    m_event: Vec<&'a str>,
    m_visible_at: Vec<i64>,
    // $41..$45: results.
    r_key: Keys<'a>,
    r_event: Vec<&'a str>,
    // $46..$52: stream events.
    s_instance_id: Vec<&'a str>,
    s_seq: Vec<i64>,
    s_execution_id: Vec<&'a str>,
    s_emit_index: Vec<i64>,
    s_name: Vec<&'a str>,
    s_payload: Vec<&'a str>,
    s_emitted_at: Vec<i64>,
    // $53: released instances.
    releases: Vec<&'a str>,
}

impl<'a> Arrays<'a> {
    /// The turns of `rows` and their releases, without the results.
    fn turns(rows: &'a BatchRows<'a>) -> Self {
        let mut a = Self::default();
        for u in &rows.updates {
            a.u_instance_id.push(u.instance_id);
            a.u_status.push(u.status);
            a.u_execution_id.push(u.execution_id);
            a.u_input.push(u.input);
            a.u_custom_status.push(u.custom_status);
            a.u_output.push(u.output);
            a.u_failure.push(u.failure.as_deref());
            a.u_completed_at.push(u.completed_at);
            a.u_history_len.push(u.history_len);
            a.u_stream_seq.push(u.stream_seq);
            a.u_execution_emits.push(u.execution_emits);
            a.u_lock_owner.push(u.lock_owner);
            a.u_lock_expires.push(u.lock_expires);
            a.u_version.push(u.version);
        }
        for h in &rows.history {
            a.h_instance_id.push(h.instance_id);
            a.h_idx.push(h.idx);
            a.h_event.push(&h.event);
        }
        a.consumed.clone_from(&rows.consumed);
        a.terminal.clone_from(&rows.terminal);
        rows.done.iter().for_each(|k| a.done.push(k));
        for act in &rows.activities {
            a.a_instance_id.push(act.key.instance_id);
            a.a_execution_id.push(act.key.execution_id);
            a.a_task_id.push(act.key.task_id);
            a.a_name.push(act.name);
            a.a_input.push(act.input);
            a.a_lock_owner.push(act.lock_owner);
            a.a_lock_expires.push(act.lock_expires);
            a.a_attempt.push(act.attempt);
            a.a_fingerprint.push(act.key.fingerprint);
        }
        for m in &rows.messages {
            a.m_instance_id.push(m.instance_id);
            a.m_execution_id.push(m.execution_id);
            a.m_kind.push(m.kind);
            a.m_event.push(&m.event);
            a.m_visible_at.push(m.visible_at);
        }
        for e in &rows.stream {
            a.s_instance_id.push(e.instance_id);
            a.s_seq.push(e.seq);
            a.s_execution_id.push(e.execution_id);
            a.s_emit_index.push(e.emit_index);
            a.s_name.push(e.name);
            a.s_payload.push(e.payload);
            a.s_emitted_at.push(e.emitted_at);
        }
        a.releases.clone_from(&rows.releases);
        a
    }

    /// Whether there is nothing to write.
    fn is_empty(&self) -> bool {
        self.u_instance_id.is_empty()
            && self.h_instance_id.is_empty()
            && self.consumed.is_empty()
            && self.terminal.is_empty()
            && self.done.instance_id.is_empty()
            && self.a_instance_id.is_empty()
            && self.m_instance_id.is_empty()
            && self.r_key.instance_id.is_empty()
            && self.s_instance_id.is_empty()
            && self.releases.is_empty()
    }

    /// Adds the results of `rows`: each delivered, and its work item gone.
    fn with_results(mut self, rows: &'a BatchRows<'a>) -> Self {
        for r in &rows.results {
            self.r_key.push(&r.key);
            self.r_event.push(&r.event);
            self.done.push(&r.key);
        }
        self
    }

    /// [`ONE_STATEMENT`] with these rows, expecting them all written.
    fn query<'q>(&'q self, by: Committer<'q>) -> PgQuery<'q> {
        let expected = i64::try_from(self.u_instance_id.len()).unwrap_or(i64::MAX);
        let query = sqlx::query(ONE_STATEMENT)
            .bind(by.now)
            .bind(by.owner)
            .bind(expected)
            .bind(&self.u_instance_id)
            .bind(&self.u_status)
            .bind(&self.u_execution_id)
            .bind(&self.u_input)
            .bind(&self.u_custom_status)
            .bind(&self.u_output)
            .bind(&self.u_failure)
            .bind(&self.u_completed_at)
            .bind(&self.u_history_len)
            .bind(&self.u_stream_seq)
            .bind(&self.u_execution_emits)
            .bind(&self.u_lock_owner)
            .bind(&self.u_lock_expires)
            .bind(&self.u_version)
            .bind(&self.h_instance_id)
            .bind(&self.h_idx)
            .bind(&self.h_event)
            .bind(&self.consumed)
            .bind(&self.terminal);
        let query = self
            .done
            .bind(query)
            .bind(&self.a_instance_id)
            .bind(&self.a_execution_id)
            .bind(&self.a_task_id)
            .bind(&self.a_name)
            .bind(&self.a_input)
            .bind(&self.a_lock_owner)
            .bind(&self.a_lock_expires)
            .bind(&self.a_attempt)
            .bind(&self.a_fingerprint)
            .bind(&self.m_instance_id)
            .bind(&self.m_execution_id)
            .bind(&self.m_kind)
            .bind(&self.m_event)
            .bind(&self.m_visible_at);
        self.r_key
            .bind(query)
            .bind(&self.r_event)
            .bind(&self.s_instance_id)
            .bind(&self.s_seq)
            .bind(&self.s_execution_id)
            .bind(&self.s_emit_index)
            .bind(&self.s_name)
            .bind(&self.s_payload)
            .bind(&self.s_emitted_at)
            .bind(&self.releases)
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

/// Whether [`commit_in_one_statement`] can write `batch`: instances
/// created, executions replaced and turns that drop the late messages of a
/// terminal instance need their rows read (see `plan.rs`) and an order
/// sibling `WITH` queries do not have; a result for an instance whose turn
/// is in the batch must see that turn's writes (its status, its new work
/// items), which a sibling `WITH` query would not.
pub(super) fn applies_to(batch: &CommitBatch) -> bool {
    let turning: Vec<&str> = batch.turns.iter().map(|t| t.instance_id.as_str()).collect();
    batch
        .turns
        .iter()
        .all(|t| t.sub_orchestrations.is_empty() && !t.new_execution && t.update.is_some())
        && !batch
            .completions
            .iter()
            .any(|c| turning.contains(&c.key.instance_id.as_str()))
}

/// Writes `rows` (planned without reading) in one statement. Fails with
/// [`StoreError::Conflict`], writing nothing, if a turn's instance changed
/// since the turn read it.
pub(super) async fn commit_in_one_statement(
    conn: &mut sqlx::PgConnection,
    rows: &BatchRows<'_>,
    by: Committer<'_>,
) -> StoreResult<()> {
    let arrays = Arrays::turns(rows).with_results(rows);
    arrays.query(by).execute(&mut *conn).await.map_err(db)?;
    Ok(())
}

/// Writes `rows` (planned from the instance rows read and locked in the
/// transaction) in the transaction; the caller commits.
pub(super) async fn write_in_transaction(
    tx: &mut sqlx::PgConnection,
    rows: &BatchRows<'_>,
    by: Committer<'_>,
) -> StoreResult<()> {
    if !rows.replaced.is_empty() {
        for mut query in queries::delete_instances::<Postgres>(&rows.replaced) {
            query
                .build()
                .persistent(false)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
    }
    if !rows.new_executions.is_empty() {
        sqlx::query("DELETE FROM history WHERE instance_id = ANY($1)")
            .bind(&rows.new_executions)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
    }
    if !rows.creations.is_empty() {
        let c = &rows.creations;
        let column = |f: fn(&_) -> &str| c.iter().map(f).collect::<Vec<&str>>();
        let starts = c.iter().map(|c| &c.start);
        sqlx::query(
            "WITH created AS (INSERT INTO instances (instance_id, name, execution_id, incarnation, status, input, \
             parent, created_at, updated_at) SELECT u.instance_id, u.name, u.execution_id, u.execution_id, \
             'Pending', u.input, u.parent, u.created_at, u.created_at FROM UNNEST($1::text[], $2::text[], \
             $3::text[], $4::text[], $5::text[], $6::int8[]) AS u(instance_id, name, execution_id, input, parent, \
             created_at)) \
             INSERT INTO messages (instance_id, execution_id, kind, event, visible_at) \
             SELECT * FROM UNNEST($7::text[], $8::text[], $9::text[], $10::text[], $11::int8[])",
        )
        .bind(column(|c| c.instance_id))
        .bind(column(|c| c.name))
        .bind(column(|c| c.execution_id))
        .bind(column(|c| c.input))
        .bind(c.iter().map(|c| c.parent.as_deref()).collect::<Vec<_>>())
        .bind(c.iter().map(|c| c.created_at).collect::<Vec<_>>())
        .bind(starts.clone().map(|m| m.instance_id).collect::<Vec<_>>())
        .bind(starts.clone().map(|m| m.execution_id).collect::<Vec<_>>())
        .bind(starts.clone().map(|m| m.kind).collect::<Vec<_>>())
        .bind(starts.clone().map(|m| m.event.as_str()).collect::<Vec<_>>())
        .bind(starts.map(|m| m.visible_at).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
    }
    let turns = Arrays::turns(rows);
    if !turns.is_empty() {
        turns.query(by).execute(&mut *tx).await.map_err(db)?;
    }
    if !rows.results.is_empty() {
        let results = Arrays::default().with_results(rows);
        results.query(by).execute(&mut *tx).await.map_err(db)?;
    }
    Ok(())
}
