//! Creating instances whose ids are new, in one round trip: the
//! instances a client creates are written together, each insert skipped
//! if its id is taken and a guard turning the skip into a conflict that
//! rolls them all back (the store then creates them one by one, reading
//! the rows).

use std::sync::Arc;

use sqlx::query_builder::Separated;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use super::grouped_creations::{self, Waiting};
use super::kept_connections::KeptConnection;
use super::{commit, Inner};
use crate::store::sql::codec::{db, from_ms, ms, now_ms};
use crate::store::sql::plan::{BatchRows, Committer, CreationRow};
use crate::store::{
    CreateOutcome, InboxMessage, InstanceState, MessageSource, NewInstance, OrchestrationWorkItem,
    StoreResult,
};
use crate::StoreError;

/// The columns of `instances` that [`push_instance`] gives values.
pub(super) const INSTANCE_COLUMNS: &str =
    "instances (instance_id, name, execution_id, incarnation, status, input, parent, created_at, updated_at)";

/// The values of a new instance's row, in the order of
/// [`INSTANCE_COLUMNS`].
pub(super) fn push_instance<'a>(mut values: Separated<'_, 'a, Sqlite, &'static str>, c: &'a CreationRow<'a>) {
    values
        .push_bind(c.instance_id)
        .push_bind(c.name)
        .push_bind(c.execution_id)
        .push_bind(c.execution_id)
        .push_bind("Pending")
        .push_bind(c.input)
        .push_bind(c.parent.as_deref())
        .push_bind(c.created_at)
        .push_bind(c.created_at);
}

/// The creations of one transaction, as one multi-statement query from
/// `BEGIN IMMEDIATE` to `COMMIT`. sqlx runs a multi-statement query as one
/// command and binds its anonymous parameters in order across the
/// statements.
pub(super) struct NewInstances<'a> {
    query: QueryBuilder<'a, Sqlite>,
}

impl<'a> NewInstances<'a> {
    pub(super) fn new() -> Self {
        Self {
            query: QueryBuilder::new("BEGIN IMMEDIATE"),
        }
    }

    /// Creates an instance (with its start message, whose id the
    /// statement returns) unless its id is taken, which fails the
    /// transaction with a conflict.
    pub(super) fn push(&mut self, c: &'a CreationRow<'a>) {
        self.query
            .push(format!(";\nINSERT INTO {INSTANCE_COLUMNS} VALUES ("));
        push_instance(self.query.separated(", "), c);
        self.query
            .push(") ON CONFLICT (instance_id) DO NOTHING")
            .push(";\nINSERT INTO turn_guard (id) SELECT 1 WHERE changes() = 0")
            .push(";\nINSERT INTO messages (instance_id, execution_id, kind, event, visible_at) VALUES (")
            .separated(", ")
            .push_bind(c.start.instance_id)
            .push_bind(c.start.execution_id)
            .push_bind(c.start.kind)
            .push_bind(c.start.event.as_str())
            .push_bind(c.start.visible_at);
        self.query.push(") RETURNING id");
    }

    /// Commits the creations, returning the ids of their start messages in
    /// order; rolls them back on error.
    pub(super) async fn commit(mut self, conn: &mut SqliteConnection) -> StoreResult<Vec<i64>> {
        self.query.push(";\nCOMMIT");
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
}

impl Inner {
    /// Writes the creations queued in `creations` until none is left,
    /// answering each: the task that [`SqliteStore::create_instance`]
    /// starts when none runs. Whoever started a creation may stop waiting
    /// for its answer; the creation is written all the same, and so are
    /// the others written with it.
    pub(super) async fn write_creations(self: Arc<Self>) {
        let mut guard = grouped_creations::CreationWriter::new(&self.creations);
        while guard.any_waiting() {
            // GroupedCreations queue up while the writer is busy.
            let arrived = guard.arrivals();
            let conn = self.writer_conn().await;
            let mut waiting = guard.take();
            if waiting.is_empty() {
                if let Ok(conn) = conn {
                    conn.finish();
                }
                return;
            }
            match conn {
                Ok(conn) => self.create_together(conn, waiting).await,
                Err(e) => {
                    // Those that came while the writer was being got are
                    // tried again (the database may be writable by now).
                    guard.put_back_after(arrived, &mut waiting);
                    let message = e.to_string();
                    for w in waiting {
                        w.answer(Err(StoreError::Database(message.clone().into())));
                    }
                }
            }
        }
    }

    /// Writes the creations in `waiting` and answers each: all in one
    /// transaction if their ids are new, else one by one.
    pub(super) async fn create_together(&self, mut conn: KeptConnection<'_>, waiting: Vec<Waiting>) {
        if waiting.len() > 1 {
            let creations: StoreResult<Vec<CreationRow<'_>>> =
                waiting.iter().map(|w| CreationRow::of(&w.instance)).collect();
            if let Ok(creations) = creations {
                let mut new = NewInstances::new();
                creations.iter().for_each(|c| new.push(c));
                if let Ok(message_ids) = new.commit(&mut conn).await {
                    let created: Vec<&NewInstance> = waiting.iter().map(|w| &w.instance).collect();
                    self.created(&created, &message_ids);
                    for w in waiting {
                        w.answer(Ok(CreateOutcome::Created));
                    }
                    conn.finish();
                    return;
                }
            }
            // A taken id (or any other failure): each on its own, with its
            // own outcome.
        }
        let mut clean = true;
        for w in waiting {
            let outcome = self.create_one(&mut conn, &w.instance).await;
            clean &= outcome.is_ok();
            w.answer(outcome);
        }
        if clean {
            conn.finish();
        }
    }

    /// Tells this process of instances just created as new, with the ids
    /// of their start messages: their watchers forget what they held of
    /// an earlier instance of the same id, and each one whose start is due
    /// is offered to a worker of this process, which runs it without
    /// reading it back; the workers are signalled for the others.
    fn created(&self, instances: &[&NewInstance], message_ids: &[i64]) {
        let mut signal = instances.len() != message_ids.len();
        let now = now_ms();
        for (i, instance) in instances.iter().enumerate() {
            self.changes.reset_instance(&instance.instance_id);
            let due = ms(instance.start_at) <= now;
            if !due {
                self.changes.notify_wakeup();
            }
            let offered = match message_ids.get(i) {
                Some(&id) if due && !signal => self.changes.offer(start_work_item(instance, id)),
                _ => false,
            };
            signal |= !offered;
        }
        if signal {
            self.changes.notify_orchestration_work();
        }
    }

    /// Creates one instance on the writer connection.
    pub(super) async fn create_one(
        &self,
        conn: &mut KeptConnection<'_>,
        instance: &NewInstance,
    ) -> StoreResult<CreateOutcome> {
        // Most ids are new: one round trip. A taken id (maybe of a
        // terminal instance to replace) is looked at row by row.
        let creation = CreationRow::of(instance)?;
        let mut new = NewInstances::new();
        new.push(&creation);
        match new.commit(conn).await {
            Ok(message_ids) => {
                self.created(&[instance], &message_ids);
                return Ok(CreateOutcome::Created);
            }
            Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
        let by = Committer::client();
        let mut tx = self.begin(conn).await?;
        let mut read = commit::instance_rows(&mut tx, &[instance.instance_id.as_str()]).await?;
        let mut rows = BatchRows::default();
        let outcome = rows.create(instance, &mut read, by.now)?;
        commit::write_in_transaction(&mut tx, &rows, by).await?;
        tx.commit().await.map_err(db)?;
        if outcome == CreateOutcome::Created {
            self.changes.reset_instance(&instance.instance_id);
            self.wake(&rows.wake);
        }
        Ok(outcome)
    }
}

/// The work item a fetch would return for `instance`, just created as new
/// with the start message `message_id`.
fn start_work_item(instance: &NewInstance, message_id: i64) -> OrchestrationWorkItem {
    OrchestrationWorkItem {
        instance_id: instance.instance_id.clone(),
        state: InstanceState::created(instance.name.clone(), instance.execution_id.clone()),
        messages: vec![InboxMessage {
            source: MessageSource::Inbox(message_id),
            visible_at: from_ms(ms(instance.start_at)),
            execution_id: Some(instance.execution_id.clone()),
            event: instance.start_event(),
        }],
    }
}
