//! A seeded simulation of the whole runtime under faults.
//!
//! One seed drives a run: the workload (which instances, which steps each
//! orchestration takes, how many executions it continues into), the
//! client calls (starts, starts of an id used before, raised events,
//! events raised once, terminations, suspensions, resumptions, purges,
//! live watchers), which of those calls are dropped and after how many
//! polls, the faults the workers' store injects (commits that fail before
//! or after they are written, a database that is busy, slow commits,
//! failed reads), and when workers are killed and started again. Leases
//! are short, so that a killed worker's work is taken over within the run.
//!
//! After the faults stop, every instance is let finish, and the run is
//! checked against what the client was told ([`check`]): every event the
//! client was told it raised is received exactly once, across
//! continue-as-new; every activity result is the result of the call that
//! was scheduled; every stream holds exactly the steps of its executions,
//! in order, numbered without gap or repeat; no instance is left without a
//! way to wake; no watcher mixes two instances' streams, and a watcher of
//! an instance that finished saw exactly its stream; no worker wrote a
//! turn of an instance another held; no transaction is left open.
//!
//! What a seed fixes is everything the simulation decides. The threads of
//! the runtime and of the database are not under its control, so a seed
//! that found a violation finds it again most of the time, not every
//! time: run it a few times (`--seed S` of the benchmark program's
//! `simulate` scenario, or `DURABLE_SIM_SEED=S` for the test).

pub mod check;
pub mod faults;
pub mod rng;
pub mod workload;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use durable_core::store::{SqliteStore, SqliteStoreOptions, Store, Synchronous};
use durable_core::{Client, Error, InstanceId, Registry, StartOptions, StreamEvent, Worker, WorkerOptions};
use futures::StreamExt;

use faults::{FaultyStore, Leases};
use rng::Rng;
use workload::{MainInput, Step, EVENT, STOP};

/// Which store a run uses.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A SQLite file in a temporary directory, one store handle shared by
    /// the workers and the client, polling off.
    Sqlite,
    /// PostgreSQL at this URL, in a schema of the run's own; every worker
    /// and the client have a handle of their own (as processes would),
    /// polling every second for what a killed worker committed and did not
    /// announce.
    Postgres(String),
}

/// The size of a run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The store.
    pub backend: Backend,
    /// How many instance ids the client uses.
    pub instances: usize,
    /// How many client operations (calls, kills, pauses) the run makes
    /// while faults may be on.
    pub operations: usize,
    /// How many workers run at once.
    pub workers: usize,
    /// How long the instances may take to finish once the faults stop.
    pub settle: Duration,
}

impl Options {
    /// A run of the usual size on `backend`.
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            instances: 8,
            operations: 160,
            workers: 2,
            settle: Duration::from_secs(20),
        }
    }
}

/// What a run did and found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// The guarantees found broken, each a line that names it.
    pub violations: Vec<String>,
    /// Client calls made.
    pub calls: u64,
    /// Client calls dropped before they finished.
    pub dropped: u64,
    /// Instances started (incarnations of the ids).
    pub started: u64,
    /// Workers killed.
    pub kills: u64,
    /// Commits that failed on purpose.
    pub failed_commits: u64,
    /// Commits written and reported as failed.
    pub lost_answers: u64,
    /// Reads that failed on purpose.
    pub failed_reads: u64,
    /// How long the run took.
    pub elapsed: Duration,
}

/// Runs the simulation for `seed`. Must be called on a multi-threaded
/// tokio runtime; the workers run on runtimes of their own, so that
/// killing one drops its tasks wherever they are, as a crash would.
pub async fn run(seed: u64, options: &Options) -> Report {
    let began = Instant::now();
    let mut sim = match Sim::new(seed, options).await {
        Ok(sim) => sim,
        Err(e) => {
            return Report {
                seed,
                violations: vec![format!("setup: {e}")],
                ..Report::default()
            }
        }
    };
    sim.chaos().await;
    sim.settle().await;
    let mut report = sim.check().await;
    sim.teardown().await;
    report.elapsed = began.elapsed();
    report
}

/// A worker on a runtime of its own.
struct SimWorker {
    runtime: tokio::runtime::Runtime,
    worker: Worker,
}

impl SimWorker {
    fn start(store: Arc<FaultyStore>, options: WorkerOptions) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let worker = {
            let _inside = runtime.enter();
            Worker::start_with(store.clone(), workload::register(Registry::new()), options)
                .map_err(|e| e.to_string())?
        };
        Ok(Self { runtime, worker })
    }

    /// Drops every task of the worker where it is, as a crash would.
    fn kill(self) {
        self.runtime.shutdown_background();
        drop(self.worker);
    }

    /// Stops the worker gracefully.
    async fn stop(self) {
        let handle = self.runtime.spawn(self.worker.shutdown());
        let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
        self.runtime.shutdown_background();
    }
}

/// One incarnation of an instance id: what the client started and was
/// told about it.
#[derive(Debug, Clone)]
pub struct Incarnation {
    /// The nonce in its input.
    pub nonce: u64,
    /// The input it started with.
    pub input: MainInput,
    /// Tokens of events the client was told it raised to it.
    pub acknowledged: Vec<u64>,
    /// Tokens of events raised to it whose calls were dropped.
    pub maybe: Vec<u64>,
    /// The client terminated it (was told so, or dropped the call).
    pub terminated: bool,
    /// The client was told it suspended it (and not since resumed it).
    pub suspended: bool,
}

/// An instance id and its incarnations, the last being current.
#[derive(Debug, Clone)]
pub struct Slot {
    /// The id.
    pub id: InstanceId,
    /// Its incarnations, oldest first.
    pub incarnations: Vec<Incarnation>,
    /// Whether the client purged the current one.
    pub purged: bool,
}

impl Slot {
    fn current(&mut self) -> Option<&mut Incarnation> {
        if self.purged {
            return None;
        }
        self.incarnations.last_mut()
    }
}

/// A live watcher of an instance.
pub struct Watcher {
    /// The slot it watches.
    pub slot: usize,
    /// The incarnation current when it began (if any).
    pub nonce: Option<u64>,
    /// How many incarnations the slot had when it began.
    pub incarnations_at_start: usize,
    task: tokio::task::JoinHandle<Watched>,
}

/// What a watcher saw.
#[derive(Debug, Default)]
pub struct Watched {
    /// The events it yielded.
    pub events: Vec<StreamEvent>,
    /// How it ended: `None` if the stream ended, else the error.
    pub error: Option<String>,
    /// Whether it was still going when the run ended.
    pub timed_out: bool,
}

/// What the client was told by a call, as far as the simulation cares.
enum Answer<T> {
    Done(T),
    Dropped,
}

struct Sim {
    rng: Rng,
    options: Options,
    /// The client's store (with no faults).
    client: Client,
    /// The workers' stores (one shared on SQLite, one each on PostgreSQL).
    worker_stores: Vec<Arc<FaultyStore>>,
    workers: Vec<Option<SimWorker>>,
    worker_options: WorkerOptions,
    leases: Arc<Leases>,
    slots: Vec<Slot>,
    watchers: Vec<Watcher>,
    report: Report,
    next_token: u64,
    cleanup: Cleanup,
}

enum Cleanup {
    Dir(std::path::PathBuf),
    Schema {
        url: String,
        schema: String,
        /// Every handle, closed at the end: a dropped pool lets its
        /// connections go only in its own time.
        stores: Vec<Arc<durable_core::store::PostgresStore>>,
    },
}

impl Sim {
    async fn new(seed: u64, options: &Options) -> Result<Self, String> {
        let mut rng = Rng::new(seed);
        let leases = Arc::new(Leases::default());
        // Some runs meet a fault at one commit in twenty, some at one in three.
        let commit_faults = [0.05, 0.15, 0.35][rng.below(3) as usize];
        let unique = format!(
            "{seed:x}_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let (client_store, worker_stores, cleanup): (Arc<dyn Store>, Vec<Arc<FaultyStore>>, Cleanup) =
            match &options.backend {
                Backend::Sqlite => {
                    let dir = std::env::temp_dir().join(format!("durable-sim-{unique}"));
                    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                    let path = dir.join("sim.db");
                    let store: Arc<dyn Store> = Arc::new(
                        SqliteStore::with_options(
                            SqliteStoreOptions::file(path.to_string_lossy().into_owned())
                                .synchronous(Synchronous::Normal)
                                .poll_interval(None),
                        )
                        .await
                        .map_err(|e| e.to_string())?,
                    );
                    let faulty = Arc::new(FaultyStore::new(
                        store.clone(),
                        rng.next_u64(),
                        commit_faults,
                        leases.clone(),
                    ));
                    (store, vec![faulty; options.workers], Cleanup::Dir(dir))
                }
                Backend::Postgres(url) => {
                    let schema = format!("sim_{unique}");
                    let mut handles = Vec::new();
                    for _ in 0..=options.workers {
                        let store = durable_core::store::PostgresStore::with_options(
                            durable_core::store::PostgresStoreOptions::new(url.clone())
                                .schema(&schema)
                                .max_connections(4)
                                // A killed worker (a process that died) may
                                // have committed without announcing it: the
                                // safety net of every deployment of several
                                // processes.
                                .poll_interval(Some(Duration::from_secs(1))),
                        )
                        .await
                        .map_err(|e| e.to_string())?;
                        handles.push(Arc::new(store));
                    }
                    let client_store: Arc<dyn Store> = handles[0].clone();
                    let stores = handles[1..]
                        .iter()
                        .map(|h| {
                            Arc::new(FaultyStore::new(
                                h.clone(),
                                rng.next_u64(),
                                commit_faults,
                                leases.clone(),
                            ))
                        })
                        .collect();
                    (
                        client_store,
                        stores,
                        Cleanup::Schema {
                            url: url.clone(),
                            schema,
                            stores: handles,
                        },
                    )
                }
            };
        let worker_options = WorkerOptions::new()
            .lease(Duration::from_millis(600))
            .orchestration_batch(1 + rng.below(24) as usize)
            .cache_capacity([0, 2, 1024][rng.below(3) as usize])
            .linger(Duration::from_millis(rng.below(4)))
            .shutdown_timeout(Duration::from_secs(2));
        let slots = (0..options.instances)
            .map(|i| Slot {
                id: InstanceId::new(format!("sim-{seed:x}-{i}")).expect("a valid id"),
                incarnations: Vec::new(),
                purged: false,
            })
            .collect();
        let mut sim = Self {
            rng,
            options: options.clone(),
            client: Client::new(client_store),
            worker_stores,
            workers: Vec::new(),
            worker_options,
            leases,
            slots,
            watchers: Vec::new(),
            report: Report {
                seed,
                ..Report::default()
            },
            next_token: 1,
            cleanup,
        };
        for i in 0..options.workers {
            let worker = SimWorker::start(sim.worker_stores[i].clone(), sim.worker_options.clone())?;
            sim.workers.push(Some(worker));
        }
        Ok(sim)
    }

    fn violation(&mut self, line: String) {
        self.report.violations.push(line);
    }

    /// Polls `call` a random number of times (and then drops it) or to its
    /// end.
    async fn call<T>(&mut self, call: impl Future<Output = T>) -> Answer<T> {
        self.report.calls += 1;
        let mut call: Pin<Box<_>> = Box::pin(call);
        if !self.rng.chance(0.2) {
            return Answer::Done(call.await);
        }
        let polls = self.rng.below(6);
        for _ in 0..polls {
            if let Poll::Ready(value) = futures::poll!(call.as_mut()) {
                return Answer::Done(value);
            }
            for _ in 0..self.rng.below(3) {
                tokio::task::yield_now().await;
            }
        }
        drop(call);
        self.report.dropped += 1;
        // What the dropped call still does is done by the next operation.
        tokio::time::sleep(Duration::from_millis(20)).await;
        Answer::Dropped
    }

    fn plan(&mut self) -> MainInput {
        const STEPS: [Step; 9] = [
            Step::Activity,
            Step::RaceEvent,
            Step::RaceEvent,
            Step::RaceTimer,
            Step::WaitEvent,
            Step::Child,
            Step::Emit,
            Step::BadNames,
            Step::Activity,
        ];
        let steps = (0..2 + self.rng.below(5))
            .map(|_| STEPS[self.rng.below(STEPS.len() as u64) as usize])
            .collect();
        MainInput {
            nonce: self.rng.next_u64() >> 12,
            round: 0,
            rounds: 1 + self.rng.below(3) as u32,
            steps,
            received: Vec::new(),
            timer_ms: 2 + self.rng.below(30),
        }
    }

    /// The client's operations, with faults, kills and drops.
    async fn chaos(&mut self) {
        for store in &self.worker_stores {
            store.set_faults(true);
        }
        for _ in 0..self.options.operations {
            let slot = self.rng.below(self.slots.len() as u64) as usize;
            match self.rng.below(100) {
                0..=19 => self.start(slot).await,
                20..=34 => self.raise(slot, false).await,
                // An event for an instance whose turns are being redone
                // after a failed commit: the redo may take another branch.
                35..=49 => {
                    let redone: Vec<String> =
                        self.worker_stores.iter().flat_map(|s| s.take_redone()).collect();
                    let target = redone
                        .iter()
                        .rev()
                        .find_map(|id| self.slots.iter().position(|s| s.id.as_str() == id))
                        .unwrap_or(slot);
                    self.raise(target, false).await;
                }
                50..=56 => self.raise(slot, true).await,
                57..=61 => self.terminate(slot).await,
                62..=67 => self.suspend_or_resume(slot, true).await,
                68..=75 => self.suspend_or_resume(slot, false).await,
                76..=78 => self.purge(slot).await,
                79..=80 => self.replace(slot).await,
                81..=85 => self.watch(slot),
                86..=88 => self.kill_or_restart(),
                89..=90 => {
                    let on = self.rng.chance(0.6);
                    for store in &self.worker_stores {
                        store.set_faults(on);
                    }
                }
                _ => tokio::time::sleep(Duration::from_millis(self.rng.below(25))).await,
            }
            tokio::time::sleep(Duration::from_millis(self.rng.below(6))).await;
        }
    }

    async fn start(&mut self, slot: usize) {
        let client = self.client.clone();
        let mut input = self.plan();
        let id = self.slots[slot].id.clone();
        let mut options = StartOptions::new("sim.main", &input)
            .expect("a serializable input")
            .instance_id(id.clone());
        if self.rng.chance(0.15) {
            let delay = chrono::Duration::milliseconds(5 + self.rng.below(60) as i64);
            options = options.start_at(chrono::Utc::now() + delay);
        }
        let answer = self.call(client.start_with(options)).await;
        let started = match answer {
            Answer::Done(Ok(_)) => true,
            Answer::Done(Err(Error::InstanceAlreadyExists(_))) => false,
            Answer::Done(Err(e)) => {
                self.violation(format!("client: starting {id} failed: {e}"));
                false
            }
            // Whether it was written, the instance tells.
            Answer::Dropped => match self.client.get_instance(&id).await {
                Ok(Some(meta)) => meta.input_as::<MainInput>().is_ok_and(|i| i.nonce == input.nonce),
                Ok(None) => false,
                Err(e) => {
                    self.violation(format!("client: reading {id} failed: {e}"));
                    false
                }
            },
        };
        if started {
            input.received.clear();
            self.report.started += 1;
            let slot = &mut self.slots[slot];
            slot.purged = false;
            slot.incarnations.push(Incarnation {
                nonce: input.nonce,
                input,
                acknowledged: Vec::new(),
                maybe: Vec::new(),
                terminated: false,
                suspended: false,
            });
        }
    }

    async fn raise(&mut self, slot: usize, once: bool) {
        let client = self.client.clone();
        if self.slots[slot].current().is_none() {
            return;
        }
        let id = self.slots[slot].id.clone();
        let token = self.next_token;
        self.next_token += 1;
        let answer = if once {
            self.call(client.raise_event_once(&id, EVENT, &token)).await
        } else {
            self.call(client.raise_event(&id, EVENT, &token)).await
        };
        let current = self.slots[slot].current().expect("checked above");
        match answer {
            Answer::Done(Ok(())) => current.acknowledged.push(token),
            Answer::Done(Err(
                Error::InvalidState { .. } | Error::InstanceNotFound(_) | Error::EventAlreadyRaised { .. },
            )) => {}
            Answer::Done(Err(e)) => self.violation(format!("client: raising an event to {id} failed: {e}")),
            Answer::Dropped => current.maybe.push(token),
        }
    }

    async fn terminate(&mut self, slot: usize) {
        let client = self.client.clone();
        if self.slots[slot].current().is_none() {
            return;
        }
        let id = self.slots[slot].id.clone();
        let answer = self.call(client.terminate(&id, Some("simulated"))).await;
        match answer {
            // A dropped one may have been written.
            Answer::Done(Ok(())) | Answer::Dropped => {
                self.slots[slot].current().expect("checked").terminated = true;
            }
            Answer::Done(Err(Error::InvalidState { .. } | Error::InstanceNotFound(_))) => {}
            Answer::Done(Err(e)) => self.violation(format!("client: terminating {id} failed: {e}")),
        }
    }

    async fn suspend_or_resume(&mut self, slot: usize, suspend: bool) {
        let client = self.client.clone();
        if self.slots[slot].current().is_none() {
            return;
        }
        let id = self.slots[slot].id.clone();
        let answer = if suspend {
            self.call(client.suspend(&id, None)).await
        } else {
            self.call(client.resume(&id, None)).await
        };
        match answer {
            Answer::Done(Ok(())) => self.slots[slot].current().expect("checked").suspended = suspend,
            // Maybe written: the end resumes it anyway.
            Answer::Dropped => {
                if suspend {
                    self.slots[slot].current().expect("checked").suspended = true;
                }
            }
            Answer::Done(Err(Error::InvalidState { .. } | Error::InstanceNotFound(_))) => {}
            Answer::Done(Err(e)) => {
                self.violation(format!("client: suspending or resuming {id} failed: {e}"))
            }
        }
    }

    async fn purge(&mut self, slot: usize) {
        let client = self.client.clone();
        if self.slots[slot].current().is_none() {
            return;
        }
        let id = self.slots[slot].id.clone();
        let answer = self.call(client.purge(&id)).await;
        let purged = match answer {
            Answer::Done(Ok(())) => true,
            Answer::Done(Err(Error::InvalidState { .. } | Error::InstanceNotFound(_))) => false,
            Answer::Done(Err(e)) => {
                self.violation(format!("client: purging {id} failed: {e}"));
                false
            }
            Answer::Dropped => matches!(self.client.get_instance(&id).await, Ok(None)),
        };
        if purged {
            self.slots[slot].purged = true;
        }
    }

    /// Ends the current instance of `slot` (terminating it if it runs),
    /// purges it and starts the id again at once: what a watcher that is
    /// behind still reads must not come from the new instance.
    async fn replace(&mut self, slot: usize) {
        if self.slots[slot].current().is_none() {
            return self.start(slot).await;
        }
        let id = self.slots[slot].id.clone();
        for _ in 0..40 {
            match self.client.get_instance(&id).await {
                Ok(Some(meta)) if !meta.status.is_terminal() => {
                    if !self.slots[slot].current().is_some_and(|c| c.terminated) {
                        self.terminate(slot).await;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                _ => break,
            }
        }
        self.purge(slot).await;
        if self.slots[slot].purged {
            self.start(slot).await;
        }
    }

    fn watch(&mut self, slot: usize) {
        let nonce = self.slots[slot].current().map(|c| c.nonce);
        let incarnations_at_start = self.slots[slot].incarnations.len();
        let mut events = self.client.watch_events(&self.slots[slot].id, 0);
        // Some watchers read slowly, and fall behind.
        let pause = Duration::from_millis(if self.rng.chance(0.5) {
            2 + self.rng.below(8)
        } else {
            0
        });
        let task = tokio::spawn(async move {
            let mut watched = Watched::default();
            while let Some(event) = events.next().await {
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
                match event {
                    Ok(event) => watched.events.push(event),
                    Err(e) => {
                        watched.error = Some(e.to_string());
                        break;
                    }
                }
            }
            watched
        });
        self.watchers.push(Watcher {
            slot,
            nonce,
            incarnations_at_start,
            task,
        });
    }

    fn kill_or_restart(&mut self) {
        let i = self.rng.below(self.workers.len() as u64) as usize;
        match self.workers[i].take() {
            Some(worker) => {
                worker.kill();
                self.report.kills += 1;
            }
            None => match SimWorker::start(self.worker_stores[i].clone(), self.worker_options.clone()) {
                Ok(worker) => self.workers[i] = Some(worker),
                Err(e) => self.violation(format!("setup: a worker did not start: {e}")),
            },
        }
    }

    /// Stops the faults, starts every worker, resumes what is suspended,
    /// sends each live instance its `stop`, and waits until every instance
    /// is terminal.
    async fn settle(&mut self) {
        for store in &self.worker_stores {
            store.set_faults(false);
        }
        for i in 0..self.workers.len() {
            if self.workers[i].is_none() {
                match SimWorker::start(self.worker_stores[i].clone(), self.worker_options.clone()) {
                    Ok(worker) => self.workers[i] = Some(worker),
                    Err(e) => self.violation(format!("setup: a worker did not start: {e}")),
                }
            }
        }
        let deadline = tokio::time::Instant::now() + self.options.settle;
        for slot in 0..self.slots.len() {
            let Some(current) = self.slots[slot].current() else {
                continue;
            };
            let acknowledged = current.acknowledged.clone();
            let id = self.slots[slot].id.clone();
            // A suspend the client made may still be on its way: resume
            // until it stays resumed.
            for _ in 0..5 {
                match self.client.get_instance(&id).await {
                    Ok(Some(meta)) if meta.status == durable_core::RuntimeStatus::Suspended => {
                        let _ = self.client.resume(&id, Some("the simulation ends")).await;
                        tokio::time::sleep(Duration::from_millis(30)).await;
                    }
                    _ => break,
                }
            }
            match self.client.raise_event(&id, STOP, &acknowledged).await {
                Ok(()) | Err(Error::InvalidState { .. } | Error::InstanceNotFound(_)) => {}
                Err(e) => self.violation(format!("client: the stop event to {id} failed: {e}")),
            }
        }
        loop {
            let mut live = 0;
            for slot in &self.slots {
                if let Ok(Some(meta)) = self.client.get_instance(&slot.id).await {
                    if meta.status == durable_core::RuntimeStatus::Suspended {
                        let _ = self.client.resume(&slot.id, Some("the simulation ends")).await;
                    }
                    live += usize::from(!meta.status.is_terminal());
                }
            }
            if live == 0 || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn check(&mut self) -> Report {
        let mut violations = std::mem::take(&mut self.report.violations);
        violations.extend(self.leases.violations());
        let watchers = std::mem::take(&mut self.watchers);
        let mut watched = Vec::new();
        for watcher in watchers {
            let outcome = match tokio::time::timeout(Duration::from_secs(5), watcher.task).await {
                Ok(Ok(w)) => w,
                Ok(Err(e)) => Watched {
                    error: Some(format!("the watcher panicked: {e}")),
                    ..Watched::default()
                },
                Err(_) => Watched {
                    timed_out: true,
                    ..Watched::default()
                },
            };
            watched.push((
                watcher.slot,
                watcher.nonce,
                watcher.incarnations_at_start,
                outcome,
            ));
        }
        let found = check::check(&self.client, &self.slots, &watched).await;
        // What the store holds of an instance left without a way to wake.
        for line in found {
            let stuck = line
                .strip_prefix("stuck: ")
                .and_then(|rest| rest.split(' ').next())
                .and_then(|id| InstanceId::new(id).ok());
            match stuck {
                Some(id) => {
                    let held = self.store_rows(&id).await;
                    violations.push(format!("{line}; the store holds: {held}"));
                }
                None => violations.push(line),
            }
        }
        violations.extend(self.open_transactions().await);
        let mut report = std::mem::take(&mut self.report);
        for store in &self.worker_stores {
            use std::sync::atomic::Ordering::Relaxed;
            report.failed_commits += store.counts.failed_before.load(Relaxed);
            report.lost_answers += store.counts.failed_after.load(Relaxed);
            report.failed_reads += store.counts.failed_reads.load(Relaxed);
        }
        if matches!(self.options.backend, Backend::Sqlite) {
            // One store shared by the workers: counted once per worker.
            let n = self.worker_stores.len().max(1) as u64;
            report.failed_commits /= n;
            report.lost_answers /= n;
            report.failed_reads /= n;
        }
        report.violations = violations;
        report
    }

    /// The inbox messages and activity work items the store holds for
    /// `id`, read directly, to tell what a stuck instance waits for.
    async fn store_rows(&self, id: &InstanceId) -> String {
        let messages = "SELECT id || ' ' || kind || ' ' || visible_at || ' ' || substr(event, 1, 80) FROM messages WHERE instance_id = $1 ORDER BY id";
        let activities = "SELECT task_id || ' ' || name || ' owner ' || coalesce(lock_owner, '-') || ' until ' || lock_expires || ' attempt ' || attempt || ' ' || substr(input, 1, 60) FROM activities WHERE instance_id = $1";
        let instance = "SELECT status || ' version ' || version || ' owner ' || coalesce(lock_owner, '-') || ' until ' || lock_expires FROM instances WHERE instance_id = $1";
        let children = "SELECT instance_id || ' ' || status || ' version ' || version || ' owner ' || coalesce(lock_owner, '-') || ' until ' || lock_expires || ' messages ' || (SELECT count(*) FROM messages m WHERE m.instance_id = i.instance_id) || ' activities ' || (SELECT count(*) FROM activities a WHERE a.instance_id = i.instance_id) FROM instances i WHERE instance_id LIKE $1 || ':%'";
        let read = |sql: &'static str| async move {
            let rows: Result<Vec<(String,)>, sqlx::Error> = match &self.cleanup {
                Cleanup::Dir(dir) => {
                    use sqlx::Connection;
                    let url = format!("sqlite://{}", dir.join("sim.db").display());
                    match sqlx::SqliteConnection::connect(&url).await {
                        Ok(mut conn) => {
                            sqlx::query_as(&sql.replace("$1", "?"))
                                .bind(id.as_str())
                                .fetch_all(&mut conn)
                                .await
                        }
                        Err(e) => Err(e),
                    }
                }
                Cleanup::Schema { url, schema, .. } => {
                    use sqlx::Connection;
                    match sqlx::PgConnection::connect(url).await {
                        Ok(mut conn) => {
                            let sql = sql.replace(" FROM ", &format!(" FROM {schema}."));
                            sqlx::query_as(&sql).bind(id.as_str()).fetch_all(&mut conn).await
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            match rows {
                Ok(rows) => rows.into_iter().map(|(r,)| r).collect::<Vec<_>>().join(" | "),
                Err(e) => format!("(unreadable: {e})"),
            }
        };
        format!(
            "instance [{}], messages [{}], activities [{}], children [{}]",
            read(instance).await,
            read(messages).await,
            read(activities).await,
            read(children).await
        )
    }

    /// Whether a transaction was left open, once everything stopped.
    async fn open_transactions(&mut self) -> Vec<String> {
        for worker in self.workers.iter_mut().filter_map(Option::take) {
            worker.stop().await;
        }
        match &self.cleanup {
            Cleanup::Dir(dir) => {
                let path = dir.join("sim.db");
                match sqlite_write_lock_is_free(&path).await {
                    Ok(true) => Vec::new(),
                    Ok(false) => vec!["open transaction: the SQLite write lock is held after the run".into()],
                    Err(e) => vec![format!("setup: could not check the write lock: {e}")],
                }
            }
            Cleanup::Schema { url, .. } => match postgres_idle_in_transaction(url).await {
                Ok(0) => Vec::new(),
                Ok(n) => vec![format!(
                    "open transaction: {n} PostgreSQL connection(s) idle in a transaction after the run"
                )],
                Err(e) => vec![format!("setup: could not check PostgreSQL: {e}")],
            },
        }
    }

    async fn teardown(self) {
        let store = self.client.store().clone();
        drop(self.client);
        drop(self.worker_stores);
        drop(store);
        match self.cleanup {
            Cleanup::Dir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Schema { url, schema, stores } => {
                for store in stores {
                    store.close().await;
                }
                if let Ok(pool) = sqlx::PgPool::connect(&url).await {
                    let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                        .execute(&pool)
                        .await;
                    pool.close().await;
                }
            }
        }
    }
}

async fn sqlite_write_lock_is_free(path: &std::path::Path) -> Result<bool, sqlx::Error> {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await?;
    sqlx::query("PRAGMA busy_timeout = 3000")
        .execute(&mut conn)
        .await?;
    let free = sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await.is_ok();
    if free {
        sqlx::query("ROLLBACK").execute(&mut conn).await?;
    }
    conn.close().await?;
    Ok(free)
}

async fn postgres_idle_in_transaction(url: &str) -> Result<i64, sqlx::Error> {
    let pool = sqlx::PgPool::connect(url).await?;
    // Idle in a transaction for a while: not a statement between two.
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND state LIKE 'idle in transaction%' AND state_change < now() - interval '2 seconds'",
    )
    .fetch_one(&pool)
    .await?;
    pool.close().await;
    Ok(n)
}
