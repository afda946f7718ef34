//! The write path of the SQLite store.
//!
//! A write transaction costs a fixed number of round trips to the
//! connection's thread, whatever it holds: `BEGIN IMMEDIATE`, one query
//! reading what the writes depend on (instance versions, leases and
//! statuses), one multi-statement query with every write, and `COMMIT`.
//! sqlx runs a multi-statement query as one command and binds its
//! anonymous parameters in order across the statements.

use std::collections::HashMap;

use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection, Transaction};

use crate::store::codec::{
    batch_instance_ids, child_exists, db, event_kind, fingerprint_column, i64_of, json_list, may_commit,
    messages_of, ms, releases, status_of, to_json, u64_of, InstanceRow, INSTANCE_TABLES,
};
use crate::store::{
    ActivityCompletion, ActivityKey, CommitBatch, CreateOutcome, NewInstance, NewMessage, StoreResult,
    TurnCommit, TurnOutcome,
};
use crate::Payload;

/// Rows per multi-row `INSERT` statement.
const INSERT_CHUNK: usize = 200;

/// Reads the rows of `ids` inside the transaction.
pub(super) async fn instance_rows(
    tx: &mut Transaction<'_, Sqlite>,
    ids: &[&str],
) -> StoreResult<HashMap<String, InstanceRow>> {
    let rows = sqlx::query(
        "SELECT instance_id, status, version, lock_owner, lock_expires FROM instances \
         WHERE instance_id IN (SELECT value FROM json_each(?))",
    )
    .bind(json_list(ids))
    .fetch_all(&mut **tx)
    .await
    .map_err(db)?;
    rows.iter()
        .map(|row| {
            let status: &str = row.try_get("status").map_err(db)?;
            Ok((
                row.try_get("instance_id").map_err(db)?,
                InstanceRow {
                    status: status_of(status)?,
                    version: u64_of(row.try_get("version").map_err(db)?),
                    lock_owner: row.try_get("lock_owner").map_err(db)?,
                    lock_expires: row.try_get("lock_expires").map_err(db)?,
                },
            ))
        })
        .collect()
}

/// The writes of one transaction, as one multi-statement query.
pub(super) struct Sql<'a> {
    query: QueryBuilder<'a, Sqlite>,
    statements: usize,
}

impl<'a> Sql<'a> {
    pub(super) fn new() -> Self {
        Self {
            query: QueryBuilder::new(""),
            statements: 0,
        }
    }

    /// Starts a statement with `text`.
    fn statement(&mut self, text: &str) -> &mut QueryBuilder<'a, Sqlite> {
        if self.statements > 0 {
            self.query.push(";\n");
        }
        self.statements += 1;
        self.query.push(text)
    }

    /// Runs every statement.
    pub(super) async fn execute(mut self, tx: &mut Transaction<'_, Sqlite>) -> StoreResult<()> {
        if self.statements > 0 {
            self.query.build().execute(&mut **tx).await.map_err(db)?;
        }
        Ok(())
    }

    /// A transaction that travels in one round trip: it begins with
    /// `BEGIN IMMEDIATE`, and [`Sql::commit`] appends `COMMIT`.
    pub(super) fn transaction() -> Self {
        let mut sql = Self::new();
        sql.statement("BEGIN IMMEDIATE");
        sql
    }

    /// Fails the transaction with a uniqueness violation (which the store
    /// reads as [`StoreError::Conflict`](crate::StoreError::Conflict)) if
    /// the statement before changed no row.
    fn require_change(&mut self) {
        self.statement("INSERT INTO turn_guard (id) SELECT 1 WHERE changes() = 0");
    }

    /// Runs a [`Sql::transaction`] and commits it, returning the `id`
    /// column of every row its statements returned, in order; rolls it
    /// back on error.
    pub(super) async fn commit(mut self, conn: &mut SqliteConnection) -> StoreResult<Vec<i64>> {
        self.statement("COMMIT");
        let result = self.query.build().fetch_all(&mut *conn).await.map_err(db);
        match result {
            Ok(rows) => rows.iter().map(|row| row.try_get("id").map_err(db)).collect(),
            Err(e) => {
                // Ends the transaction if it began (an error when it did not).
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                Err(e)
            }
        }
    }

    /// Creates a new instance (with its start message, whose id the
    /// statement returns) unless its id is taken, which fails the
    /// transaction with a conflict.
    pub(super) fn create_new_instance(&mut self, instance: &'a NewInstance) -> StoreResult<()> {
        self.insert_instance(instance)?;
        self.query.push(" ON CONFLICT (instance_id) DO NOTHING");
        self.require_change();
        self.insert_start_message(instance)?;
        self.query.push(" RETURNING id");
        Ok(())
    }

    pub(super) fn delete_instance_rows(&mut self, instance_id: &'a str) {
        for table in INSTANCE_TABLES {
            self.statement(&format!("DELETE FROM {table} WHERE instance_id = "))
                .push_bind(instance_id);
        }
    }

    /// Creates `instance` (with its start message), replacing a terminal
    /// instance of the same id; `rows` holds the current rows and learns
    /// the new one.
    pub(super) fn create_instance(
        &mut self,
        instance: &'a NewInstance,
        rows: &mut HashMap<String, InstanceRow>,
    ) -> StoreResult<CreateOutcome> {
        let id = instance.instance_id.as_str();
        if let Some(row) = rows.get(id) {
            if !row.status.is_terminal() {
                return Ok(CreateOutcome::AlreadyExists(row.status));
            }
            self.delete_instance_rows(id);
        }
        self.insert_instance(instance)?;
        self.insert_start_message(instance)?;
        rows.insert(id.to_owned(), InstanceRow::created());
        Ok(CreateOutcome::Created)
    }

    fn insert_instance(&mut self, instance: &'a NewInstance) -> StoreResult<()> {
        let created = ms(instance.created_at);
        let query = self.statement(
            "INSERT INTO instances (instance_id, name, execution_id, incarnation, status, input, parent, \
             created_at, updated_at) VALUES (",
        );
        query
            .separated(", ")
            .push_bind(instance.instance_id.as_str())
            .push_bind(instance.name.as_str())
            .push_bind(instance.execution_id.as_str())
            .push_bind(instance.execution_id.as_str())
            .push_bind("Pending")
            .push_bind(instance.input.as_str())
            .push_bind(instance.parent.as_ref().map(to_json).transpose()?)
            .push_bind(created)
            .push_bind(created);
        query.push(")");
        Ok(())
    }

    fn insert_start_message(&mut self, instance: &NewInstance) -> StoreResult<()> {
        self.insert_messages(&[NewMessage {
            instance_id: instance.instance_id.clone(),
            execution_id: Some(instance.execution_id.clone()),
            event: instance.start_event(),
            visible_at: instance.start_at,
        }])
    }

    pub(super) fn insert_messages(&mut self, messages: &[NewMessage]) -> StoreResult<()> {
        for chunk in messages.chunks(INSERT_CHUNK) {
            let mut rows = Vec::with_capacity(chunk.len());
            for m in chunk {
                rows.push((
                    m.instance_id.as_str().to_owned(),
                    m.execution_id.clone(),
                    event_kind(&m.event),
                    to_json(&m.event)?,
                    ms(m.visible_at),
                ));
            }
            self.statement("INSERT INTO messages (instance_id, execution_id, kind, event, visible_at) ")
                .push_values(rows, |mut b, (id, execution, kind, event, visible)| {
                    b.push_bind(id)
                        .push_bind(execution)
                        .push_bind(kind)
                        .push_bind(event)
                        .push_bind(visible);
                });
        }
        Ok(())
    }

    fn delete_messages(&mut self, ids: &[i64]) {
        if !ids.is_empty() {
            self.statement("DELETE FROM messages WHERE id IN (SELECT value FROM json_each(")
                .push_bind(json_list(ids))
                .push("))");
        }
    }

    /// Deletes the work item of `key`, if it is of the same call.
    fn delete_activity(&mut self, key: &'a ActivityKey) {
        self.statement("DELETE FROM activities WHERE ");
        self.push_key(key);
    }

    /// The condition that a work item is `key`'s: the same task, of the
    /// same call (or written before calls had fingerprints).
    fn push_key(&mut self, key: &'a ActivityKey) {
        self.query
            .push("instance_id = ")
            .push_bind(key.instance_id.as_str())
            .push(" AND execution_id = ")
            .push_bind(key.execution_id.as_str())
            .push(" AND task_id = ")
            .push_bind(i64_of(key.task_id))
            .push(" AND (fingerprint IS NULL OR fingerprint = ")
            .push_bind(fingerprint_column(key.fingerprint))
            .push(")");
    }

    /// Delivers the result of an activity whose orchestration the writer
    /// does not hold to the instance's inbox (unless it is gone or over, or
    /// the activity has no work item: a turn that was never written
    /// scheduled it, or another run's result was taken already), and
    /// deletes the work item.
    pub(super) fn completion(&mut self, completion: &'a ActivityCompletion, now: i64) -> StoreResult<()> {
        let key = &completion.key;
        self.statement("INSERT INTO messages (instance_id, execution_id, kind, event, visible_at) SELECT ")
            .separated(", ")
            .push_bind(key.instance_id.as_str())
            .push_bind(key.execution_id.as_str())
            .push_bind("Result")
            .push_bind(to_json(&completion.event)?)
            .push_bind(now);
        self.query
            .push(" WHERE EXISTS (SELECT 1 FROM instances WHERE instance_id = ")
            .push_bind(key.instance_id.as_str())
            .push(" AND status NOT IN ('Completed', 'Failed', 'Terminated'))")
            .push(" AND EXISTS (SELECT 1 FROM activities WHERE ");
        self.push_key(key);
        self.query.push(")");
        self.delete_activity(key);
        Ok(())
    }

    /// Gives up `owner`'s lease on an instance.
    pub(super) fn release(&mut self, instance_id: &'a str, owner: &'a str) {
        self.statement("UPDATE instances SET lock_owner = NULL, lock_expires = 0 WHERE instance_id = ")
            .push_bind(instance_id)
            .push(" AND lock_owner = ")
            .push_bind(owner);
    }

    /// Writes one turn whose version check passed; `rows` learns the new
    /// versions.
    pub(super) fn turn(
        &mut self,
        owner: &'a str,
        lease_until: i64,
        now: i64,
        turn: &'a TurnCommit,
        rows: &mut HashMap<String, InstanceRow>,
    ) -> StoreResult<()> {
        let id = turn.instance_id.as_str();
        let Some(u) = &turn.update else {
            // Late messages of a terminal instance: drop them.
            self.delete_messages(&turn.consumed);
            return Ok(());
        };
        let terminal = u.status.is_terminal();
        let (lock_owner, lock_expires) = if turn.keep_lease && !terminal {
            (Some(owner), lease_until)
        } else {
            (None, 0)
        };
        let query = self.statement("UPDATE instances SET status = ");
        query
            .push_bind(u.status.as_str())
            .push(", execution_id = ")
            .push_bind(u.execution_id.as_str())
            .push(", input = COALESCE(")
            .push_bind(u.input.as_ref().map(Payload::as_str))
            .push(", input), custom_status = ")
            .push_bind(u.custom_status.as_deref())
            .push(", output = ")
            .push_bind(u.output.as_ref().map(Payload::as_str))
            .push(", failure = ")
            .push_bind(u.failure.as_ref().map(to_json).transpose()?)
            .push(", updated_at = ")
            .push_bind(now)
            .push(", completed_at = ")
            .push_bind(terminal.then_some(now))
            .push(", history_len = ")
            .push_bind(i64_of(u.history_len))
            .push(", stream_seq = ")
            .push_bind(i64_of(u.stream_seq))
            .push(", execution_emits = ")
            .push_bind(i64_of(u.execution_emits))
            .push(", version = version + 1, lock_owner = ")
            .push_bind(lock_owner)
            .push(", lock_expires = ")
            .push_bind(lock_expires)
            .push(" WHERE instance_id = ")
            .push_bind(id);
        if let Some(row) = rows.get_mut(id) {
            row.status = u.status;
            row.version += 1;
        }
        if turn.new_execution {
            self.statement("DELETE FROM history WHERE instance_id = ")
                .push_bind(id);
        }
        for (chunk_no, chunk) in turn.history.chunks(INSERT_CHUNK).enumerate() {
            let mut values = Vec::with_capacity(chunk.len());
            for (i, event) in chunk.iter().enumerate() {
                let idx = turn.history_index + (chunk_no * INSERT_CHUNK + i) as u64;
                values.push((i64_of(idx), to_json(event)?));
            }
            self.statement("INSERT INTO history (instance_id, idx, event) ")
                .push_values(values, |mut b, (idx, event)| {
                    b.push_bind(id).push_bind(idx).push_bind(event);
                });
        }
        if terminal {
            // Nothing will consume them any more.
            for table in ["messages", "activities"] {
                self.statement(&format!("DELETE FROM {table} WHERE instance_id = "))
                    .push_bind(id);
            }
        } else {
            self.delete_messages(&turn.consumed);
            for key in &turn.completed_activities {
                self.delete_activity(key);
            }
            let (claim_owner, claim_until, attempt) = if turn.claim_activities {
                (Some(owner), lease_until, 1)
            } else {
                (None, 0, 0)
            };
            for chunk in turn.activities.chunks(INSERT_CHUNK) {
                let mut values = Vec::with_capacity(chunk.len());
                for a in chunk {
                    values.push((a, a.input.as_str()));
                }
                self.statement(
                    "INSERT INTO activities (instance_id, execution_id, task_id, name, input, lock_owner, \
                     lock_expires, attempt, fingerprint) ",
                )
                .push_values(values, |mut b, (a, input)| {
                    b.push_bind(a.key.instance_id.as_str())
                        .push_bind(a.key.execution_id.as_str())
                        .push_bind(i64_of(a.key.task_id))
                        .push_bind(a.name.as_str())
                        .push_bind(input)
                        .push_bind(claim_owner)
                        .push_bind(claim_until)
                        .push_bind(attempt)
                        .push_bind(fingerprint_column(a.key.fingerprint));
                });
            }
        }
        let messages: Vec<NewMessage> = messages_of(turn).cloned().collect();
        self.insert_messages(&messages)?;
        for child in &turn.sub_orchestrations {
            if let CreateOutcome::AlreadyExists(status) = self.create_instance(child, rows)? {
                if let Some(message) = child_exists(child, status, now) {
                    self.insert_messages(&[message])?;
                }
            }
        }
        for chunk in turn.stream.chunks(INSERT_CHUNK) {
            self.statement(
                "INSERT INTO stream_events (instance_id, seq, execution_id, emit_index, name, payload, \
                 emitted_at) ",
            )
            .push_values(chunk, |mut b, e| {
                b.push_bind(id)
                    .push_bind(i64_of(e.seq))
                    .push_bind(e.execution_id.as_str())
                    .push_bind(i64_of(e.emit_index))
                    .push_bind(e.name.as_str())
                    .push_bind(e.payload.as_str())
                    .push_bind(ms(e.emitted_at));
            });
        }
        Ok(())
    }
}

/// What a committed batch should wake.
#[derive(Debug, Default)]
pub(super) struct Wake {
    pub(super) orchestrations: bool,
    pub(super) activities: bool,
    /// A message becomes visible later (a timer).
    pub(super) later: bool,
}

impl Wake {
    /// What a committed `turn` makes ready.
    pub(super) fn turn(&mut self, turn: &TurnCommit, now: i64) {
        self.orchestrations |=
            turn.messages.iter().any(|m| ms(m.visible_at) <= now) || !turn.sub_orchestrations.is_empty();
        self.later |= turn.messages.iter().any(|m| ms(m.visible_at) > now);
        self.activities |= !turn.claim_activities && !turn.activities.is_empty();
    }
}

/// Writes `batch` in the open transaction; returns the turn outcomes.
pub(super) async fn commit_batch(
    tx: &mut Transaction<'_, Sqlite>,
    owner: &str,
    lease_until: i64,
    now: i64,
    batch: &CommitBatch,
) -> StoreResult<(Vec<TurnOutcome>, Wake)> {
    let ids = batch_instance_ids(batch);
    let mut rows = if ids.is_empty() {
        HashMap::new()
    } else {
        instance_rows(tx, &ids).await?
    };
    let mut sql = Sql::new();
    let mut outcomes = Vec::with_capacity(batch.turns.len());
    let mut wake = Wake::default();
    for turn in &batch.turns {
        if !may_commit(turn, &rows, owner, now) {
            outcomes.push(TurnOutcome::Conflict);
            continue;
        }
        sql.turn(owner, lease_until, now, turn, &mut rows)?;
        wake.turn(turn, now);
        outcomes.push(TurnOutcome::Committed);
    }
    let written: Vec<bool> = outcomes.iter().map(|o| *o == TurnOutcome::Committed).collect();
    sql.rest(owner, now, batch, &written, &mut wake)?;
    sql.execute(tx).await?;
    Ok((outcomes, wake))
}

impl<'a> Sql<'a> {
    /// The completions and releases of a batch whose turns were written
    /// as `written` says.
    fn rest(
        &mut self,
        owner: &'a str,
        now: i64,
        batch: &'a CommitBatch,
        written: &[bool],
        wake: &mut Wake,
    ) -> StoreResult<()> {
        for completion in &batch.completions {
            self.completion(completion, now)?;
            wake.orchestrations = true;
        }
        for instance_id in releases(batch, written) {
            self.release(instance_id.as_str(), owner);
            wake.orchestrations = true;
        }
        Ok(())
    }
}
