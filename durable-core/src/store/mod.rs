//! Storage: the [`Store`] trait and the data that crosses it.
//!
//! A store persists instances, their histories, the orchestration inbox
//! (messages, with a visible-at time for timers and delayed starts), activity
//! work items and stream events. Workers claim work with leases; a turn
//! commits in one transaction through [`Store::commit`], which may carry
//! several instances' turns at once (group commit).
//!
//! The store is used behind `Arc<dyn Store>`; [`SqliteStore`] is the embedded
//! backend.

mod change_feed;
#[cfg(feature = "postgres")]
mod postgres;
pub(crate) mod sql;
mod sqlite;

use std::fmt::Debug;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

pub use change_feed::{ChangeFeed, InstanceFeed, OfferTaker, Position, RecentEvents};
#[cfg(feature = "postgres")]
pub use postgres::{PostgresStore, PostgresStoreOptions};
pub use sqlite::{SqliteStore, SqliteStoreOptions, Synchronous};

use crate::{
    FailureDetails, HistoryEvent, InstanceId, InstanceMetadata, InstancePage, InstanceQuery, ParentInstance,
    Payload, RuntimeStatus, StoreError, StreamEvent,
};

/// Opens the store a URL names: `postgres://...` or `postgresql://...` for
/// [`PostgresStore`] (with the `postgres` feature), anything else for
/// [`SqliteStore::connect`] (`sqlite::memory:`, `sqlite://PATH`,
/// `sqlite:PATH` or a plain path).
///
/// # Errors
///
/// Fails if the database cannot be opened or its migrations fail.
pub async fn connect(url: &str) -> StoreResult<std::sync::Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        return Ok(std::sync::Arc::new(PostgresStore::connect(url).await?));
        #[cfg(not(feature = "postgres"))]
        return Err(StoreError::Config(
            "this build has no PostgreSQL support (the `postgres` feature of durable-core)".into(),
        ));
    }
    Ok(std::sync::Arc::new(SqliteStore::connect(url).await?))
}

/// A `Result` with a [`StoreError`].
pub type StoreResult<T> = Result<T, StoreError>;

/// Runs a client's write to its end in a task of its own, and waits for
/// its result.
///
/// A client's future may be dropped at any await: a timeout, a lost
/// `select!`, an HTTP handler whose client went away. Run in that future,
/// a write would stop where it was: in the middle of a transaction, or
/// written without the in-process signal that tells the workers and
/// watchers about it (which, with polling off, nothing else would send).
/// Detached, it is written (or refused) whole and signalled, whether or
/// not anyone still waits for the answer.
pub(crate) async fn detached<T, F>(write: F) -> StoreResult<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = StoreResult<T>> + Send + 'static,
{
    tokio::spawn(write).await.unwrap_or_else(|e| {
        Err(StoreError::Database(
            format!("the write did not finish: {e}").into(),
        ))
    })
}

/// A new instance to create (by a client start or a sub-orchestration).
#[derive(Debug, Clone)]
pub struct NewInstance {
    /// The instance id.
    pub instance_id: InstanceId,
    /// The orchestration name.
    pub name: String,
    /// The execution id of the first execution.
    pub execution_id: String,
    /// The input.
    pub input: Payload,
    /// The parent, for a sub-orchestration.
    pub parent: Option<ParentInstance>,
    /// When the first turn may run.
    pub start_at: DateTime<Utc>,
    /// When the instance was created.
    pub created_at: DateTime<Utc>,
}

impl NewInstance {
    /// The `ExecutionStarted` message that starts this instance.
    pub fn start_event(&self) -> HistoryEvent {
        HistoryEvent::ExecutionStarted {
            name: self.name.clone(),
            execution_id: self.execution_id.clone(),
            input: self.input.clone(),
            parent: self.parent.clone(),
        }
    }
}

/// What [`Store::create_instance`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOutcome {
    /// The instance was created (replacing a terminal one of the same id).
    Created,
    /// An instance with this id exists and is not terminal.
    AlreadyExists(RuntimeStatus),
}

/// What [`Store::enqueue_message`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnqueueOutcome {
    /// The message is in the instance's inbox.
    Enqueued,
    /// No instance has this id.
    NotFound,
    /// The instance is terminal; the message was dropped.
    Terminal(RuntimeStatus),
    /// An event of this name was already raised once to the instance's
    /// current execution ([`Store::enqueue_event_once`]); this one was
    /// dropped.
    AlreadyRaised,
}

/// What [`Store::purge_instance`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeOutcome {
    /// The instance, its history and its stream were deleted.
    Purged,
    /// No instance has this id.
    NotFound,
    /// The instance is not terminal and was left alone.
    NotTerminal(RuntimeStatus),
}

/// Where a message of a turn came from, so that the commit can remove it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageSource {
    /// A row of the instance's inbox, deleted when the turn commits.
    Inbox(i64),
    /// The result of an activity run by this worker, handed over in memory;
    /// its work item is deleted when the turn commits.
    Activity(ActivityKey),
}

/// A message for an instance's turn.
#[derive(Debug, Clone)]
pub struct InboxMessage {
    /// Where the message came from.
    pub source: MessageSource,
    /// When it became visible (arrived, or its timer became due); a turn
    /// applies its messages in this order.
    pub visible_at: DateTime<Utc>,
    /// The execution the message is addressed to; `None` for messages to
    /// whatever execution is current (raised events, control operations).
    pub execution_id: Option<String>,
    /// The event.
    pub event: HistoryEvent,
}

/// A message to put into an instance's inbox.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// The target instance.
    pub instance_id: InstanceId,
    /// The execution it is addressed to, if any.
    pub execution_id: Option<String>,
    /// The event.
    pub event: HistoryEvent,
    /// When it becomes visible to workers.
    pub visible_at: DateTime<Utc>,
}

/// The stored state of an instance that a turn starts from.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceState {
    /// The orchestration name.
    pub name: String,
    /// The current execution id.
    pub execution_id: String,
    /// The runtime status.
    pub status: RuntimeStatus,
    /// Incremented by every committed turn; a turn commits only if the
    /// instance still has the version it started from.
    pub version: u64,
    /// The number of history events of the current execution.
    pub history_len: u64,
    /// The last stream sequence number of the instance.
    pub stream_seq: u64,
    /// The number of stream events the current execution has emitted.
    pub execution_emits: u64,
    /// The custom status as JSON text.
    pub custom_status: Option<String>,
}

impl InstanceState {
    /// The state of an instance just created, before its first turn.
    pub(crate) fn created(name: String, execution_id: String) -> Self {
        Self {
            name,
            execution_id,
            status: RuntimeStatus::Pending,
            version: 0,
            history_len: 0,
            stream_seq: 0,
            execution_emits: 0,
            custom_status: None,
        }
    }
}

/// An instance with visible messages, fetched for a turn.
#[derive(Debug, Clone)]
pub struct OrchestrationWorkItem {
    /// The instance id.
    pub instance_id: InstanceId,
    /// Its stored state.
    pub state: InstanceState,
    /// The visible messages, oldest first.
    pub messages: Vec<InboxMessage>,
}

/// The instance row as a turn leaves it.
#[derive(Debug, Clone)]
pub struct InstanceUpdate {
    /// The runtime status.
    pub status: RuntimeStatus,
    /// The current execution id.
    pub execution_id: String,
    /// The input of the current execution (set when an execution starts).
    pub input: Option<Payload>,
    /// The custom status as JSON text.
    pub custom_status: Option<String>,
    /// The output, once terminal.
    pub output: Option<Payload>,
    /// The failure, once failed.
    pub failure: Option<FailureDetails>,
    /// The number of history events after the turn.
    pub history_len: u64,
    /// The last stream sequence number after the turn.
    pub stream_seq: u64,
    /// The number of stream events the current execution has emitted.
    pub execution_emits: u64,
}

/// Identifies an activity work item: one call of one task of one
/// execution.
///
/// The task id alone does not say which call it is: a turn that is not
/// written is redone from the store, and the redo may take another branch
/// (an event raised meanwhile wins a race), scheduling another activity
/// under the same task id while the first run's activity still runs. The
/// fingerprint of the call (its name and input) tells them apart, so that
/// a result is taken only for the call that produced it: where it is
/// stored (the work item must be of the same call) and where it is
/// applied (the task must be waiting on the same call).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ActivityKey {
    /// The orchestration instance.
    pub instance_id: InstanceId,
    /// Its execution.
    pub execution_id: String,
    /// The task id in the orchestration's history.
    pub task_id: u64,
    /// A digest of the call: see [`call_fingerprint`].
    pub fingerprint: u64,
}

/// The fingerprint of an activity call: a 64-bit digest of its name and
/// its input's JSON text, eight bytes at a time (the mixing of FxHash,
/// with the name's length between the two and a final avalanche). The
/// same on every machine and in every version, since work items keep it.
/// It tells apart the calls of one task of one execution, not a
/// cryptographic digest.
pub fn call_fingerprint(name: &str, input: &Payload) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    fn add(hash: u64, word: u64) -> u64 {
        (hash.rotate_left(5) ^ word).wrapping_mul(K)
    }
    fn add_bytes(mut hash: u64, bytes: &[u8]) -> u64 {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            hash = add(hash, u64::from_le_bytes(word.try_into().unwrap_or([0; 8])));
        }
        let rest = words.remainder();
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        add(hash, u64::from_le_bytes(last))
    }
    let hash = add_bytes(0, name.as_bytes());
    let hash = add(hash, name.len() as u64);
    let mut hash = add_bytes(hash, input.as_str().as_bytes());
    hash = add(hash, input.as_str().len() as u64);
    // fmix64 of MurmurHash3: every bit of the input moves every bit out.
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

/// An activity to schedule.
#[derive(Debug, Clone)]
pub struct NewActivity {
    /// Which task it is.
    pub key: ActivityKey,
    /// The activity name.
    pub name: String,
    /// The input.
    pub input: Payload,
}

/// An activity claimed by a worker.
#[derive(Debug, Clone)]
pub struct ActivityWorkItem {
    /// Which task it is.
    pub key: ActivityKey,
    /// The activity name.
    pub name: String,
    /// The input.
    pub input: Payload,
    /// How many times the item has been claimed, this claim included.
    pub attempt: u32,
    /// Why the stored input could not be read (written by another version,
    /// or damaged): the activity then fails with this reason instead of
    /// running, and the orchestration decides what to do.
    pub input_error: Option<String>,
}

/// The result of an activity whose orchestration the committing worker does
/// not hold: it goes to the orchestration's inbox.
#[derive(Debug, Clone)]
pub struct ActivityCompletion {
    /// The finished work item, deleted by the commit.
    pub key: ActivityKey,
    /// The result (`ActivityCompleted` or `ActivityFailed`).
    pub event: HistoryEvent,
}

/// A stream event to append.
#[derive(Debug, Clone)]
pub struct NewStreamEvent {
    /// The sequence number (per instance, from 1, without gaps).
    pub seq: u64,
    /// The execution that emitted it.
    pub execution_id: String,
    /// Its index among the emits of that execution (the uniqueness key).
    pub emit_index: u64,
    /// The event name.
    pub name: String,
    /// The payload.
    pub payload: Payload,
    /// The orchestration time of the emit.
    pub emitted_at: DateTime<Utc>,
}

/// Everything one orchestration turn writes, committed atomically.
#[derive(Debug, Clone)]
pub struct TurnCommit {
    /// The instance.
    pub instance_id: InstanceId,
    /// The instance version the turn started from (optimistic concurrency).
    pub version: u64,
    /// The inbox messages the turn consumed.
    pub consumed: Vec<i64>,
    /// The activity work items whose results the turn consumed.
    pub completed_activities: Vec<ActivityKey>,
    /// Whether the turn started a new execution: the old history is
    /// deleted before `history` is appended.
    pub new_execution: bool,
    /// The history events to append, starting at `history_index`.
    pub history: Vec<HistoryEvent>,
    /// The index of the first appended history event.
    pub history_index: u64,
    /// The instance row after the turn; `None` for a turn that only dropped
    /// late messages of a terminal instance.
    pub update: Option<InstanceUpdate>,
    /// Activities to schedule.
    pub activities: Vec<NewActivity>,
    /// Whether the new activities are leased to the committing worker (which
    /// runs them itself) instead of waiting for any worker to claim them.
    pub claim_activities: bool,
    /// Whether the committing worker keeps the instance leased after the
    /// turn (it keeps the orchestration in memory); otherwise the lease is
    /// released.
    pub keep_lease: bool,
    /// Messages to send (timers, sub-orchestration results, continue-as-new).
    pub messages: Vec<NewMessage>,
    /// Sub-orchestrations to create.
    pub sub_orchestrations: Vec<NewInstance>,
    /// Stream events to append.
    pub stream: Vec<NewStreamEvent>,
}

/// What one call of [`Store::commit`] writes, in one transaction.
#[derive(Debug, Clone, Default)]
pub struct CommitBatch {
    /// Orchestration turns (of different instances).
    pub turns: Vec<TurnCommit>,
    /// Results of activities for orchestrations the worker does not hold.
    pub completions: Vec<ActivityCompletion>,
    /// Instances whose lease the worker gives up.
    pub release: Vec<InstanceId>,
}

impl CommitBatch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.turns.is_empty() && self.completions.is_empty() && self.release.is_empty()
    }
}

/// Whether a turn of a [`Store::commit`] batch was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnOutcome {
    /// Written.
    Committed,
    /// The instance changed since the turn read it (another worker committed
    /// a turn) or another worker holds its lease; nothing of the turn was
    /// written.
    Conflict,
}

/// A page of stream events with the instance's state at the time of reading.
#[derive(Debug, Clone)]
pub struct StreamRead {
    /// The events after the cursor, in order.
    pub events: Vec<StreamEvent>,
    /// The instance's status, read before the events.
    pub status: RuntimeStatus,
    /// The instance's stream length, read before the events.
    pub stream_len: u64,
    /// The instance's current execution, read before the events.
    pub execution_id: String,
    /// Which instance the id names (the id of its first execution): another
    /// one than at an earlier read if the instance was purged or ended and
    /// the id started again since.
    pub incarnation: String,
}

/// A storage backend.
///
/// Methods return boxed futures so that the trait can be used as
/// `Arc<dyn Store>`. Every backend passes the same conformance suite.
pub trait Store: Send + Sync + Debug + 'static {
    /// Creates an instance and enqueues its `ExecutionStarted` message,
    /// unless a non-terminal instance with the same id exists. A terminal
    /// instance of the same id is replaced: its history and stream are
    /// deleted.
    fn create_instance(&self, instance: NewInstance) -> BoxFuture<'_, StoreResult<CreateOutcome>>;

    /// Puts a message into a non-terminal instance's inbox.
    fn enqueue_message(&self, message: NewMessage) -> BoxFuture<'_, StoreResult<EnqueueOutcome>>;

    /// Puts an external event (`message` holds a
    /// [`HistoryEvent::EventRaised`]) into
    /// a non-terminal instance's inbox unless an event of the same name was
    /// raised this way to the instance's current execution before, whether
    /// or not the orchestration has taken it yet:
    /// [`EnqueueOutcome::AlreadyRaised`]. Of concurrent calls with one name,
    /// exactly one enqueues. Fails with
    /// [`StoreError::Config`] for any other kind
    /// of message.
    fn enqueue_event_once(&self, message: NewMessage) -> BoxFuture<'_, StoreResult<EnqueueOutcome>>;

    /// Fetches up to `max` instances with visible messages that `owner` may
    /// run a turn of: instances it holds, and instances no live lease holds.
    /// A backend may lease them to `owner` for `lease` (pessimistic) or rely
    /// on the version check of [`Store::commit`] (optimistic).
    fn fetch_orchestrations<'a>(
        &'a self,
        owner: &'a str,
        lease: Duration,
        max: usize,
    ) -> BoxFuture<'a, StoreResult<Vec<OrchestrationWorkItem>>>;

    /// Loads the history of the instance's current execution.
    fn load_history<'a>(
        &'a self,
        instance_id: &'a InstanceId,
    ) -> BoxFuture<'a, StoreResult<Vec<HistoryEvent>>>;

    /// Writes a batch in one transaction (group commit). A turn is written
    /// only if the instance still has the turn's version and no other
    /// worker holds a live lease on it; otherwise it is skipped with
    /// [`TurnOutcome::Conflict`]. Kept instances stay leased to `owner` for
    /// `lease`. Returns one outcome per turn.
    fn commit<'a>(
        &'a self,
        owner: &'a str,
        lease: Duration,
        batch: &'a CommitBatch,
    ) -> BoxFuture<'a, StoreResult<Vec<TurnOutcome>>>;

    /// Holds an instance back for `retry_after` after a turn could not be
    /// run or written, and releases `owner`'s lease on it.
    fn abandon_orchestration<'a>(
        &'a self,
        owner: &'a str,
        instance_id: &'a InstanceId,
        retry_after: Duration,
    ) -> BoxFuture<'a, StoreResult<()>>;

    /// Claims up to `max` activity work items that no live lease holds.
    fn fetch_activities<'a>(
        &'a self,
        owner: &'a str,
        lease: Duration,
        max: usize,
    ) -> BoxFuture<'a, StoreResult<Vec<ActivityWorkItem>>>;

    /// Extends the leases `owner` holds on instances, and on the activity
    /// work items of `activities` (those it runs). An activity work item
    /// it holds and does not run (claimed by a fetch whose answer was lost)
    /// is let expire, so that it runs again.
    fn renew_leases<'a>(
        &'a self,
        owner: &'a str,
        lease: Duration,
        activities: &'a [ActivityKey],
    ) -> BoxFuture<'a, StoreResult<()>>;

    /// Releases every lease `owner` holds (graceful shutdown).
    fn release_leases<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, StoreResult<()>>;

    /// The earliest time after `after` at which a message becomes visible
    /// or a lease expires: when a waiting worker should look again. A
    /// worker passes the time its last look at the work began, so that
    /// what became visible since (and the look could not see) is in the
    /// answer too, even if it is visible by now.
    fn next_wakeup(&self, after: DateTime<Utc>) -> BoxFuture<'_, StoreResult<Option<DateTime<Utc>>>>;

    /// Reads an instance's metadata.
    fn get_instance<'a>(
        &'a self,
        instance_id: &'a InstanceId,
    ) -> BoxFuture<'a, StoreResult<Option<InstanceMetadata>>>;

    /// Lists instances.
    fn list_instances(&self, query: InstanceQuery) -> BoxFuture<'_, StoreResult<InstancePage>>;

    /// Deletes a terminal instance with its history, inbox, work items and
    /// stream.
    fn purge_instance<'a>(&'a self, instance_id: &'a InstanceId) -> BoxFuture<'a, StoreResult<PurgeOutcome>>;

    /// Reads up to `limit` stream events after sequence number `after`.
    /// `None` if the instance does not exist.
    fn read_stream<'a>(
        &'a self,
        instance_id: &'a InstanceId,
        after: u64,
        limit: u32,
    ) -> BoxFuture<'a, StoreResult<Option<StreamRead>>>;

    /// The in-process change notifications of this store.
    fn changes(&self) -> &ChangeFeed;

    /// How often waiting loops poll when no notification arrives, for
    /// writers in other processes. `None` means every writer notifies.
    fn poll_interval(&self) -> Option<Duration>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_fingerprints_are_stable_and_tell_calls_apart() {
        let payload = |text: &str| Payload::from_text(text).unwrap();
        // Work items keep fingerprints: the function may never change.
        assert_eq!(call_fingerprint("echo", &payload("1")), 0x8e23_867a_cc71_3bff);
        assert_eq!(
            call_fingerprint("analyse", &payload(r#"{"document":"report.pdf","pages":12}"#)),
            0xb97c_7fac_5bc7_3c77
        );
        let all = [
            call_fingerprint("echo", &payload("1")),
            call_fingerprint("echo", &payload("2")),
            call_fingerprint("ech", &payload("1")),
            call_fingerprint("echo1", &payload("1")),
            call_fingerprint("", &payload(r#""echo1""#)),
            call_fingerprint("echo", &payload(r#""1""#)),
        ];
        let mut distinct = all.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), all.len(), "{all:x?}");
    }
}
