//! Fault-injection helpers shared by the reliability tests:
//!
//! * [`FaultyStore`] wraps a real store, passes every call through, and
//!   records what the worker sees: the outcome of each turn it commits
//!   (optionally into a file, for a worker in a child process), the typed
//!   errors the store returned, and, on demand, a commit that is written
//!   but reported as failed (the answer to `COMMIT` lost with the
//!   connection);
//! * [`LogCapture`] is a minimal `tracing` subscriber that keeps the
//!   warnings and errors the runtime logs, so that a test can check that a
//!   fault was reported clearly;
//! * [`stop`], [`resume`] and [`kill`] send signals to a child process with
//!   the `kill` command (the tests use no `unsafe` code).

#![allow(dead_code, unreachable_pub)]

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use durable_core::store::{
    ActivityKey, ActivityWorkItem, ChangeFeed, CommitBatch, CreateOutcome, EnqueueOutcome, NewInstance,
    NewMessage, OrchestrationWorkItem, PurgeOutcome, Store, StoreResult, StreamRead, TurnOutcome,
};
use durable_core::{HistoryEvent, InstanceId, InstanceMetadata, InstancePage, InstanceQuery, StoreError};
use futures::future::BoxFuture;
use futures::FutureExt;

/// A store that passes every call to `inner` and records what happens.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn Store>,
    /// Where to append one line per committed or conflicting turn.
    outcome_log: Option<PathBuf>,
    /// Every error the inner store returned, as `"Variant: message"`.
    errors: Mutex<Vec<String>>,
    /// Turn outcomes, as `(instance, version, outcome)`.
    outcomes: Mutex<Vec<(String, u64, TurnOutcome)>>,
    /// How many commits that claim activities are still to be written and
    /// then reported as failed.
    lose_acks: AtomicUsize,
    /// How many acknowledgements were lost so far.
    lost: AtomicUsize,
    /// How many commits that take activity results are still to fail
    /// before anything is written.
    fail_takers: AtomicUsize,
    /// How many commits (of turns) are still to fail before anything is
    /// written.
    fail_next: AtomicUsize,
    /// How many activity fetches are still to claim their work items and
    /// then fail, as if the answer were lost.
    lose_fetches: AtomicUsize,
    /// How long each commit waits before it is written.
    commit_delay: Mutex<Duration>,
    /// How many fetches there were, and how many work items they returned.
    fetches: AtomicUsize,
    fetched: AtomicUsize,
    /// An instance whose turns make any commit fail with a data error, as
    /// a value the database cannot store would.
    refused: Mutex<Option<String>>,
    /// How long the answer to a read of the next wake-up time is held
    /// back after the read.
    wakeup_answer_delay: Mutex<Duration>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            outcome_log: None,
            errors: Mutex::new(Vec::new()),
            outcomes: Mutex::new(Vec::new()),
            lose_acks: AtomicUsize::new(0),
            lost: AtomicUsize::new(0),
            fail_takers: AtomicUsize::new(0),
            fail_next: AtomicUsize::new(0),
            lose_fetches: AtomicUsize::new(0),
            commit_delay: Mutex::new(Duration::ZERO),
            fetches: AtomicUsize::new(0),
            fetched: AtomicUsize::new(0),
            refused: Mutex::new(None),
            wakeup_answer_delay: Mutex::new(Duration::ZERO),
        }
    }

    /// Every read of the next wake-up time answers `delay` after it read
    /// the store: what is written meanwhile is missing from its answer.
    pub fn answer_wakeup_reads_late(&self, delay: Duration) {
        *self.wakeup_answer_delay.lock().unwrap() = delay;
    }

    /// Every commit that holds a turn of `instance` (other than one that
    /// fails it) fails with [`StoreError::Rejected`], writing nothing, as
    /// a value the database cannot store in its turns would make it.
    pub fn refuse_turns_of(&self, instance: &str) {
        *self.refused.lock().unwrap() = Some(instance.to_owned());
    }

    /// How many orchestration fetches there were so far.
    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    /// How many orchestration work items fetches have returned so far.
    pub fn fetched(&self) -> usize {
        self.fetched.load(Ordering::SeqCst)
    }

    /// Every commit waits `delay` before it is written (a slow disk).
    pub fn delay_commits(&self, delay: Duration) {
        *self.commit_delay.lock().unwrap() = delay;
    }

    /// Appends `"<outcome> <instance> <version>"` to `path` for every turn
    /// committed through this store.
    pub fn log_outcomes_to(mut self, path: impl Into<PathBuf>) -> Self {
        self.outcome_log = Some(path.into());
        self
    }

    /// The next `n` commits that schedule activities for this worker are
    /// written, then reported as failed with a database error.
    pub fn lose_commit_acks(&self, n: usize) {
        self.lose_acks.store(n, Ordering::SeqCst);
    }

    /// The next `n` commits that take activity results handed over in
    /// memory fail with a database error before anything is written.
    pub fn fail_commits_taking_results(&self, n: usize) {
        self.fail_takers.store(n, Ordering::SeqCst);
    }

    /// The next `n` commits of turns fail with a database error before
    /// anything is written.
    pub fn fail_next_commits(&self, n: usize) {
        self.fail_next.store(n, Ordering::SeqCst);
    }

    /// The next `n` activity fetches that claim work items fail after
    /// claiming them, as if the connection dropped with the answer.
    pub fn lose_activity_fetch_answers(&self, n: usize) {
        self.lose_fetches.store(n, Ordering::SeqCst);
    }

    /// How many commit acknowledgements were lost.
    pub fn lost_acks(&self) -> usize {
        self.lost.load(Ordering::SeqCst)
    }

    /// The errors the inner store returned so far.
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().unwrap().clone()
    }

    /// The turn outcomes so far.
    pub fn outcomes(&self) -> Vec<(String, u64, TurnOutcome)> {
        self.outcomes.lock().unwrap().clone()
    }

    fn record<T>(&self, result: StoreResult<T>) -> StoreResult<T> {
        if let Err(e) = &result {
            let kind = match e {
                StoreError::Database(_) => "Database",
                StoreError::Migration(_) => "Migration",
                StoreError::Conflict(_) => "Conflict",
                StoreError::Corrupt(_) => "Corrupt",
                StoreError::Config(_) => "Config",
                StoreError::Rejected(_) => "Rejected",
                _ => "Other",
            };
            self.errors.lock().unwrap().push(format!("{kind}: {e}"));
        }
        result
    }

    async fn commit_inner(
        &self,
        owner: &str,
        lease: Duration,
        batch: &CommitBatch,
    ) -> StoreResult<Vec<TurnOutcome>> {
        let turns: Vec<(String, u64)> = batch
            .turns
            .iter()
            .map(|t| (t.instance_id.to_string(), t.version))
            .collect();
        let claims = batch
            .turns
            .iter()
            .any(|t| t.claim_activities && !t.activities.is_empty());
        let delay = *self.commit_delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let takes = batch.turns.iter().any(|t| !t.completed_activities.is_empty());
        let take_one = |n: &AtomicUsize| {
            n.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        };
        let fail =
            (takes && take_one(&self.fail_takers)) || (!batch.turns.is_empty() && take_one(&self.fail_next));
        if fail {
            let e = StoreError::database(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection reset before the commit",
            ));
            return self.record(Err(e));
        }
        let refused = self.refused.lock().unwrap().clone();
        if let Some(refused) = refused {
            let refuses = |t: &durable_core::store::TurnCommit| {
                t.instance_id.as_str() == refused
                    && t.update
                        .as_ref()
                        .is_none_or(|u| u.status != durable_core::RuntimeStatus::Failed)
            };
            if batch.turns.iter().any(refuses) {
                let e = StoreError::Rejected(format!("a value of {refused} cannot be stored"));
                return self.record(Err(e));
            }
        }
        let outcomes = self.record(self.inner.commit(owner, lease, batch).await)?;
        let mut line = String::new();
        for ((instance, version), outcome) in turns.into_iter().zip(&outcomes) {
            let word = match outcome {
                TurnOutcome::Committed => "committed",
                TurnOutcome::Conflict => "conflict",
            };
            let _ = writeln!(line, "{word} {instance} {version}");
            self.outcomes.lock().unwrap().push((instance, version, *outcome));
        }
        if let (Some(path), false) = (&self.outcome_log, line.is_empty()) {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("outcome log");
            file.write_all(line.as_bytes()).expect("outcome log");
        }
        let lose = claims
            && self
                .lose_acks
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if lose {
            self.lost.fetch_add(1, Ordering::SeqCst);
            let e = StoreError::database(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "connection reset while waiting for the answer to COMMIT",
            ));
            return self.record(Err(e));
        }
        Ok(outcomes)
    }
}

impl Store for FaultyStore {
    fn create_instance(&self, instance: NewInstance) -> BoxFuture<'_, StoreResult<CreateOutcome>> {
        async move { self.record(self.inner.create_instance(instance).await) }.boxed()
    }

    fn enqueue_message(&self, message: NewMessage) -> BoxFuture<'_, StoreResult<EnqueueOutcome>> {
        async move { self.record(self.inner.enqueue_message(message).await) }.boxed()
    }

    fn enqueue_event_once(&self, message: NewMessage) -> BoxFuture<'_, StoreResult<EnqueueOutcome>> {
        async move { self.record(self.inner.enqueue_event_once(message).await) }.boxed()
    }

    fn fetch_orchestrations<'a>(
        &'a self,
        owner: &'a str,
        lease: Duration,
        max: usize,
    ) -> BoxFuture<'a, StoreResult<Vec<OrchestrationWorkItem>>> {
        async move {
            let items = self.record(self.inner.fetch_orchestrations(owner, lease, max).await)?;
            self.fetches.fetch_add(1, Ordering::SeqCst);
            self.fetched.fetch_add(items.len(), Ordering::SeqCst);
            Ok(items)
        }
        .boxed()
    }

    fn load_history<'a>(
        &'a self,
        instance_id: &'a InstanceId,
    ) -> BoxFuture<'a, StoreResult<Vec<HistoryEvent>>> {
        async move { self.record(self.inner.load_history(instance_id).await) }.boxed()
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
        async move {
            self.record(
                self.inner
                    .abandon_orchestration(owner, instance_id, retry_after)
                    .await,
            )
        }
        .boxed()
    }

    fn fetch_activities<'a>(
        &'a self,
        owner: &'a str,
        lease: Duration,
        max: usize,
    ) -> BoxFuture<'a, StoreResult<Vec<ActivityWorkItem>>> {
        async move {
            let items = self.record(self.inner.fetch_activities(owner, lease, max).await)?;
            let lose = !items.is_empty()
                && self
                    .lose_fetches
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
            if lose {
                let e = StoreError::database(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "connection reset while reading the claimed work items",
                ));
                return self.record(Err(e));
            }
            Ok(items)
        }
        .boxed()
    }

    fn renew_leases<'a>(
        &'a self,
        owner: &'a str,
        lease: Duration,
        activities: &'a [ActivityKey],
    ) -> BoxFuture<'a, StoreResult<()>> {
        async move { self.record(self.inner.renew_leases(owner, lease, activities).await) }.boxed()
    }

    fn release_leases<'a>(&'a self, owner: &'a str) -> BoxFuture<'a, StoreResult<()>> {
        async move { self.record(self.inner.release_leases(owner).await) }.boxed()
    }

    fn next_wakeup(&self, after: DateTime<Utc>) -> BoxFuture<'_, StoreResult<Option<DateTime<Utc>>>> {
        async move {
            let answer = self.record(self.inner.next_wakeup(after).await);
            let delay = *self.wakeup_answer_delay.lock().unwrap();
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            answer
        }
        .boxed()
    }

    fn get_instance<'a>(
        &'a self,
        instance_id: &'a InstanceId,
    ) -> BoxFuture<'a, StoreResult<Option<InstanceMetadata>>> {
        async move { self.record(self.inner.get_instance(instance_id).await) }.boxed()
    }

    fn list_instances(&self, query: InstanceQuery) -> BoxFuture<'_, StoreResult<InstancePage>> {
        async move { self.record(self.inner.list_instances(query).await) }.boxed()
    }

    fn purge_instance<'a>(&'a self, instance_id: &'a InstanceId) -> BoxFuture<'a, StoreResult<PurgeOutcome>> {
        async move { self.record(self.inner.purge_instance(instance_id).await) }.boxed()
    }

    fn read_stream<'a>(
        &'a self,
        instance_id: &'a InstanceId,
        after: u64,
        limit: u32,
    ) -> BoxFuture<'a, StoreResult<Option<StreamRead>>> {
        async move { self.record(self.inner.read_stream(instance_id, after, limit).await) }.boxed()
    }

    fn changes(&self) -> &ChangeFeed {
        self.inner.changes()
    }

    fn poll_interval(&self) -> Option<Duration> {
        self.inner.poll_interval()
    }
}

/// The warnings and errors logged through `tracing` in this process.
#[derive(Debug, Default)]
pub struct LogCapture {
    lines: Mutex<Vec<String>>,
    next_span: AtomicUsize,
}

impl LogCapture {
    /// Installs the capture as the global subscriber (once per process).
    pub fn install() -> &'static LogCapture {
        static CAPTURE: OnceLock<&'static LogCapture> = OnceLock::new();
        CAPTURE.get_or_init(|| {
            let capture: &'static LogCapture = Box::leak(Box::default());
            tracing::subscriber::set_global_default(Forward(capture))
                .expect("no other global subscriber is set");
            capture
        })
    }

    /// Every captured line so far, as `"LEVEL message key=value ..."`.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// The captured lines that contain every one of `words`.
    pub fn matching(&self, words: &[&str]) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| words.iter().all(|w| l.contains(w)))
            .collect()
    }
}

/// The subscriber: keeps WARN and ERROR events, ignores spans.
struct Forward(&'static LogCapture);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, " {value}");
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

impl tracing::Subscriber for Forward {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= tracing::Level::WARN
    }

    fn new_span(&self, _span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let n = self.0.next_span.fetch_add(1, Ordering::Relaxed) as u64;
        tracing::span::Id::from_u64(n + 1)
    }

    fn record(&self, _span: &tracing::span::Id, _values: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _span: &tracing::span::Id, _follows: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields(event.metadata().level().to_string());
        event.record(&mut fields);
        self.0.lines.lock().unwrap().push(fields.0);
    }

    fn enter(&self, _span: &tracing::span::Id) {}

    fn exit(&self, _span: &tracing::span::Id) {}
}

fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("the kill command runs");
    assert!(status.success(), "kill {signal} {pid}: {status}");
}

/// SIGSTOP: the process stops where it is, holding what it holds.
pub fn stop(pid: u32) {
    signal(pid, "-STOP");
}

/// SIGCONT: a stopped process goes on.
pub fn resume(pid: u32) {
    signal(pid, "-CONT");
}

/// SIGKILL.
pub fn kill(pid: u32) {
    signal(pid, "-KILL");
}
