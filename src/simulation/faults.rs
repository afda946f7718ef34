//! The store the simulation's workers use: it passes every call to the
//! real store, fails some of them on purpose while faults are on, and
//! keeps the account of leases that lets the simulation check that no
//! worker writes a turn of an instance another worker holds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use durable_core::store::{
    ActivityKey, ActivityWorkItem, ChangeFeed, CommitBatch, CreateOutcome, EnqueueOutcome, NewInstance,
    NewMessage, OrchestrationWorkItem, PurgeOutcome, Store, StoreResult, StreamRead, TurnOutcome,
};
use durable_core::{HistoryEvent, InstanceId, InstanceMetadata, InstancePage, InstanceQuery, StoreError};
use futures::future::BoxFuture;
use futures::FutureExt;

use super::rng::Rng;

/// What the faults did, counted.
#[derive(Debug, Default)]
pub struct FaultCounts {
    /// Commits failed before anything was written.
    pub failed_before: AtomicU64,
    /// Commits written, then reported as failed (the answer lost).
    pub failed_after: AtomicU64,
    /// Commits delayed.
    pub slowed: AtomicU64,
    /// Reads failed (fetches, histories, wake-up times, lease renewals).
    pub failed_reads: AtomicU64,
}

/// A store whose calls fail at random while faults are on.
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    on: AtomicBool,
    /// How likely a commit is to meet a fault, while faults are on.
    commit_faults: f64,
    rng: Mutex<Rng>,
    /// The injected faults so far.
    pub counts: FaultCounts,
    leases: Arc<Leases>,
    /// Instances whose turns a failed commit held: their turns are redone
    /// from the store, and an event raised to them now may make the redo
    /// take another branch than the first run.
    redone: Mutex<Vec<String>>,
}

impl std::fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultyStore")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

/// Who holds which instance's lease, as the commits and releases the
/// workers made say, and what broke that.
#[derive(Debug, Default)]
pub struct Leases {
    /// Instance -> (owner, lease end in Unix ms), kept short of the
    /// store's own lease end.
    held: Mutex<HashMap<String, (String, i64)>>,
    violations: Mutex<Vec<String>>,
}

impl Leases {
    /// What the account found: turns written by one worker while
    /// another held the instance's lease.
    pub fn violations(&self) -> Vec<String> {
        self.violations.lock().unwrap().clone()
    }

    /// Before a commit: what it may give up, given up at once (a commit
    /// that is then dropped may have been written).
    fn before_commit(&self, owner: &str, batch: &CommitBatch) {
        let mut held = self.held.lock().unwrap();
        let mut drop_if_owner = |id: &str| {
            if held.get(id).is_some_and(|(o, _)| o == owner) {
                held.remove(id);
            }
        };
        for id in &batch.release {
            drop_if_owner(id.as_str());
        }
        for turn in &batch.turns {
            let kept = turn.keep_lease && turn.update.as_ref().is_some_and(|u| !u.status.is_terminal());
            if !kept {
                drop_if_owner(turn.instance_id.as_str());
            }
        }
    }

    /// After a commit that began at `started` (ms): checks the turns
    /// written against the leases of other workers, and takes the leases
    /// the written turns keep.
    fn after_commit(
        &self,
        owner: &str,
        lease: Duration,
        started: i64,
        batch: &CommitBatch,
        outcomes: &[TurnOutcome],
    ) {
        let now = Utc::now().timestamp_millis();
        let mut held = self.held.lock().unwrap();
        for (turn, outcome) in batch.turns.iter().zip(outcomes) {
            if *outcome != TurnOutcome::Committed || turn.update.is_none() {
                continue;
            }
            let id = turn.instance_id.as_str();
            if let Some((other, until)) = held.get(id) {
                // The store's clock read `now` or less when it checked.
                if other != owner && now < *until {
                    self.violations.lock().unwrap().push(format!(
                        "lease: worker {owner} wrote a turn of {id} while worker {other} held its lease for {} ms more",
                        until - now
                    ));
                }
            }
            let kept = turn.keep_lease && turn.update.as_ref().is_some_and(|u| !u.status.is_terminal());
            if kept {
                // A store may leave a lease with two thirds of its time or
                // more as it is (the SQLite store does, to spare a write):
                // what a kept turn promises is that much.
                let until = started + lease_ms(lease) * 2 / 3;
                let entry = held.entry(id.to_owned()).or_insert((owner.to_owned(), until));
                if entry.0 != owner {
                    *entry = (owner.to_owned(), until);
                }
            }
        }
    }

    fn drop_instance(&self, owner: &str, id: &str) {
        let mut held = self.held.lock().unwrap();
        if held.get(id).is_some_and(|(o, _)| o == owner) {
            held.remove(id);
        }
    }

    fn drop_owner(&self, owner: &str) {
        self.held.lock().unwrap().retain(|_, (o, _)| o != owner);
    }

    fn renewed(&self, owner: &str, until: i64) {
        for (o, u) in self.held.lock().unwrap().values_mut() {
            if o == owner {
                *u = (*u).max(until);
            }
        }
    }
}

fn lease_ms(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2)
}

impl FaultyStore {
    /// Wraps `inner`; faults are off until [`FaultyStore::set_faults`].
    /// While on, a commit meets a fault with probability `commit_faults`.
    pub fn new(inner: Arc<dyn Store>, seed: u64, commit_faults: f64, leases: Arc<Leases>) -> Self {
        Self {
            inner,
            on: AtomicBool::new(false),
            commit_faults,
            rng: Mutex::new(Rng::new(seed)),
            counts: FaultCounts::default(),
            leases,
            redone: Mutex::new(Vec::new()),
        }
    }

    /// Takes the instances whose turns a failed commit held since the
    /// last call.
    pub fn take_redone(&self) -> Vec<String> {
        std::mem::take(&mut *self.redone.lock().unwrap())
    }

    fn note_redone(&self, batch: &CommitBatch) {
        let mut redone = self.redone.lock().unwrap();
        redone.extend(batch.turns.iter().map(|t| t.instance_id.to_string()));
        let excess = redone.len().saturating_sub(64);
        redone.drain(..excess);
    }

    /// Turns the faults on or off.
    pub fn set_faults(&self, on: bool) {
        self.on.store(on, Ordering::SeqCst);
    }

    /// A number in `0..n` if faults are on and the dice say so with
    /// probability `p`.
    fn roll(&self, p: f64, n: u64) -> Option<u64> {
        if !self.on.load(Ordering::SeqCst) {
            return None;
        }
        let mut rng = self.rng.lock().unwrap();
        rng.chance(p).then(|| rng.below(n))
    }

    fn read_fault(&self) -> StoreResult<()> {
        if self.roll(0.03, 1).is_some() {
            self.counts.failed_reads.fetch_add(1, Ordering::Relaxed);
            return Err(injected("the connection dropped during a read"));
        }
        Ok(())
    }

    async fn commit_inner(
        &self,
        owner: &str,
        lease: Duration,
        batch: &CommitBatch,
    ) -> StoreResult<Vec<TurnOutcome>> {
        self.leases.before_commit(owner, batch);
        match self.roll(self.commit_faults, 4) {
            Some(0) => {
                self.counts.failed_before.fetch_add(1, Ordering::Relaxed);
                self.note_redone(batch);
                return Err(injected("the connection dropped before the commit"));
            }
            Some(1) => {
                self.counts.slowed.fetch_add(1, Ordering::Relaxed);
                let pause = self.rng.lock().unwrap().below(10);
                tokio::time::sleep(Duration::from_millis(pause)).await;
                self.counts.failed_before.fetch_add(1, Ordering::Relaxed);
                self.note_redone(batch);
                return Err(injected("the database is busy"));
            }
            Some(2) => {
                self.counts.slowed.fetch_add(1, Ordering::Relaxed);
                let pause = self.rng.lock().unwrap().below(15);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            _ => {}
        }
        let lose_answer = self.roll(self.commit_faults / 3.0, 1).is_some();
        let started = Utc::now().timestamp_millis();
        let outcomes = self.inner.commit(owner, lease, batch).await?;
        self.leases.after_commit(owner, lease, started, batch, &outcomes);
        if lose_answer {
            self.counts.failed_after.fetch_add(1, Ordering::Relaxed);
            return Err(injected(
                "the connection dropped while waiting for the answer to COMMIT",
            ));
        }
        Ok(outcomes)
    }
}

fn injected(what: &str) -> StoreError {
    StoreError::database(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        format!("injected fault: {what}"),
    ))
}

impl Store for FaultyStore {
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
        async move {
            self.read_fault()?;
            self.inner.fetch_orchestrations(owner, lease, max).await
        }
        .boxed()
    }

    fn load_history<'a>(
        &'a self,
        instance_id: &'a InstanceId,
    ) -> BoxFuture<'a, StoreResult<Vec<HistoryEvent>>> {
        async move {
            self.read_fault()?;
            self.inner.load_history(instance_id).await
        }
        .boxed()
    }

    fn commit<'a>(
        &'a self,
        owner: &'a str,
        lease: Duration,
        batch: &'a CommitBatch,
    ) -> BoxFuture<'a, StoreResult<Vec<TurnOutcome>>> {
        self.commit_inner(owner, lease, batch).boxed()
    }

    fn abandon_orchestration<'a>(
        &'a self,
        owner: &'a str,
        instance_id: &'a InstanceId,
        retry_after: Duration,
    ) -> BoxFuture<'a, StoreResult<()>> {
        self.leases.drop_instance(owner, instance_id.as_str());
        self.inner.abandon_orchestration(owner, instance_id, retry_after)
    }

    fn fetch_activities<'a>(
        &'a self,
        owner: &'a str,
        lease: Duration,
        max: usize,
    ) -> BoxFuture<'a, StoreResult<Vec<ActivityWorkItem>>> {
        async move {
            self.read_fault()?;
            self.inner.fetch_activities(owner, lease, max).await
        }
        .boxed()
    }

    fn renew_leases<'a>(
        &'a self,
        owner: &'a str,
        lease: Duration,
        activities: &'a [ActivityKey],
    ) -> BoxFuture<'a, StoreResult<()>> {
        async move {
            self.read_fault()?;
            let started = Utc::now().timestamp_millis();
            self.inner.renew_leases(owner, lease, activities).await?;
            self.leases.renewed(owner, started + lease_ms(lease));
            Ok(())
        }
        .boxed()
    }

    fn release_leases<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, StoreResult<()>> {
        self.leases.drop_owner(owner);
        self.inner.release_leases(owner)
    }

    fn next_wakeup(&self, after: DateTime<Utc>) -> BoxFuture<'_, StoreResult<Option<DateTime<Utc>>>> {
        async move {
            self.read_fault()?;
            self.inner.next_wakeup(after).await
        }
        .boxed()
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
