//! A store wrapper that records when each stream event's turn committed,
//! for the emit-to-receive latency of `stream_live`, counts commits, and
//! keeps the slowest commit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use durable_core::store::{
    ActivityWorkItem, ChangeFeed, CommitBatch, CreateOutcome, EnqueueOutcome, NewInstance, NewMessage,
    OrchestrationWorkItem, PurgeOutcome, Store, StoreResult, StreamRead, TurnOutcome,
};
use durable_core::{HistoryEvent, InstanceId, InstanceMetadata, InstancePage, InstanceQuery};
use futures::future::BoxFuture;
use futures::FutureExt;

/// Delegates to a store and notes the instant each commit returned, per
/// stream event, how many commits wrote orchestration turns, and the
/// slowest commit.
#[derive(Debug)]
pub(crate) struct TimingStore {
    inner: Arc<dyn Store>,
    /// Whether to note each stream event's commit instant (which keeps one
    /// entry per event for the life of the store).
    per_event: bool,
    committed: Mutex<HashMap<(InstanceId, u64), Instant>>,
    commits: AtomicUsize,
    slowest: Mutex<Duration>,
}

impl TimingStore {
    /// Wraps `inner`.
    pub(crate) fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            per_event: true,
            committed: Mutex::default(),
            commits: AtomicUsize::new(0),
            slowest: Mutex::default(),
        }
    }

    /// Wraps `inner` for a long run: commits are counted and timed, stream
    /// events are not noted.
    pub(crate) fn commits_only(inner: Arc<dyn Store>) -> Self {
        Self {
            per_event: false,
            ..Self::new(inner)
        }
    }

    /// The slowest commit since the last call.
    pub(crate) fn take_slowest_commit(&self) -> Duration {
        std::mem::take(&mut *self.slowest.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// How many commits that wrote at least one turn have returned.
    pub(crate) fn commits(&self) -> usize {
        self.commits.load(Ordering::Relaxed)
    }

    /// When the turn of each stream event of `instance_id` committed, by
    /// sequence number.
    pub(crate) fn commit_times(&self, instance_id: &InstanceId) -> HashMap<u64, Instant> {
        let committed = self.committed.lock().unwrap_or_else(|e| e.into_inner());
        committed
            .iter()
            .filter(|((id, _), _)| id == instance_id)
            .map(|((_, seq), at)| (*seq, *at))
            .collect()
    }
}

impl Store for TimingStore {
    fn create_instance(&self, instance: NewInstance) -> BoxFuture<'_, StoreResult<CreateOutcome>> {
        self.inner.create_instance(instance)
    }

    fn enqueue_message(&self, message: NewMessage) -> BoxFuture<'_, StoreResult<EnqueueOutcome>> {
        self.inner.enqueue_message(message)
    }

    fn enqueue_event_once(&self, message: NewMessage) -> BoxFuture<'_, StoreResult<EnqueueOutcome>> {
        self.inner.enqueue_event_once(message)
    }

    fn fetch_orchestrations<'a>(
        &'a self,
        owner: &'a str,
        lease: Duration,
        max: usize,
    ) -> BoxFuture<'a, StoreResult<Vec<OrchestrationWorkItem>>> {
        self.inner.fetch_orchestrations(owner, lease, max)
    }

    fn load_history<'a>(
        &'a self,
        instance_id: &'a InstanceId,
    ) -> BoxFuture<'a, StoreResult<Vec<HistoryEvent>>> {
        self.inner.load_history(instance_id)
    }

    fn commit<'a>(
        &'a self,
        owner: &'a str,
        lease: Duration,
        batch: &'a CommitBatch,
    ) -> BoxFuture<'a, StoreResult<Vec<TurnOutcome>>> {
        async move {
            let started = Instant::now();
            let outcomes = self.inner.commit(owner, lease, batch).await;
            let at = Instant::now();
            {
                // A commit that stalled and then failed counts too.
                let mut slowest = self.slowest.lock().unwrap_or_else(|e| e.into_inner());
                *slowest = (*slowest).max(at - started);
            }
            let outcomes = outcomes?;
            if !batch.turns.is_empty() {
                self.commits.fetch_add(1, Ordering::Relaxed);
            }
            if !self.per_event {
                return Ok(outcomes);
            }
            let seqs = batch
                .turns
                .iter()
                .map(|t| (&t.instance_id, t.stream.iter().map(|e| e.seq)));
            let mut committed = self.committed.lock().unwrap_or_else(|e| e.into_inner());
            for ((id, seqs), outcome) in seqs.zip(&outcomes) {
                if *outcome == TurnOutcome::Committed {
                    for seq in seqs {
                        committed.insert((id.clone(), seq), at);
                    }
                }
            }
            Ok(outcomes)
        }
        .boxed()
    }

    fn abandon_orchestration<'a>(
        &'a self,
        owner: &'a str,
        instance_id: &'a InstanceId,
        retry_after: Duration,
    ) -> BoxFuture<'a, StoreResult<()>> {
        self.inner.abandon_orchestration(owner, instance_id, retry_after)
    }

    fn fetch_activities<'a>(
        &'a self,
        owner: &'a str,
        lease: Duration,
        max: usize,
    ) -> BoxFuture<'a, StoreResult<Vec<ActivityWorkItem>>> {
        self.inner.fetch_activities(owner, lease, max)
    }

    fn renew_leases<'a>(
        &'a self,
        owner: &'a str,
        lease: Duration,
        activities: &'a [durable_core::store::ActivityKey],
    ) -> BoxFuture<'a, StoreResult<()>> {
        self.inner.renew_leases(owner, lease, activities)
    }

    fn release_leases<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, StoreResult<()>> {
        self.inner.release_leases(owner)
    }

    fn next_wakeup(&self, after: DateTime<Utc>) -> BoxFuture<'_, StoreResult<Option<DateTime<Utc>>>> {
        self.inner.next_wakeup(after)
    }

    fn get_instance<'a>(
        &'a self,
        instance_id: &'a InstanceId,
    ) -> BoxFuture<'a, StoreResult<Option<InstanceMetadata>>> {
        self.inner.get_instance(instance_id)
    }

    fn list_instances(&self, query: InstanceQuery) -> BoxFuture<'_, StoreResult<InstancePage>> {
        self.inner.list_instances(query)
    }

    fn purge_instance<'a>(&'a self, instance_id: &'a InstanceId) -> BoxFuture<'a, StoreResult<PurgeOutcome>> {
        self.inner.purge_instance(instance_id)
    }

    fn read_stream<'a>(
        &'a self,
        instance_id: &'a InstanceId,
        after: u64,
        limit: u32,
    ) -> BoxFuture<'a, StoreResult<Option<StreamRead>>> {
        self.inner.read_stream(instance_id, after, limit)
    }

    fn changes(&self) -> &ChangeFeed {
        self.inner.changes()
    }

    fn poll_interval(&self) -> Option<Duration> {
        self.inner.poll_interval()
    }
}
