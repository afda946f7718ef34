//! Running activities: the activity runner, and the fetcher that claims
//! activities waiting in the store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;

use super::{next_look, Backoff, WorkerOptions};
use crate::replay::panic_message;
use crate::store::{ActivityCompletion, ActivityKey, ActivityWorkItem, Store};
use crate::{ActivityContext, FailureDetails, HistoryEvent, Registry};

/// One run of an activity by this worker, told apart from other runs of
/// the same activity.
pub(super) type RunId = u64;

/// An activity's result, with the run that produced it.
pub(super) type Finished = (RunId, ActivityCompletion);

/// Runs activities on the worker's runtime, up to the concurrency limit,
/// and hands their results to the dispatcher.
#[derive(Clone)]
pub(super) struct ActivityRunner {
    registry: Arc<Registry>,
    slots: Arc<Semaphore>,
    /// Activities started by this worker and not yet finished.
    in_flight: Arc<AtomicUsize>,
    /// The last run id given out.
    runs: Arc<AtomicU64>,
    /// The work items of the activities started and not finished, with how
    /// many runs of each: the leases the worker renews.
    running: Arc<Mutex<HashMap<ActivityKey, usize>>>,
    completions: mpsc::UnboundedSender<Finished>,
}

/// Counts a run among the running until it is dropped.
struct Running {
    running: Arc<Mutex<HashMap<ActivityKey, usize>>>,
    key: ActivityKey,
}

impl Running {
    fn new(running: Arc<Mutex<HashMap<ActivityKey, usize>>>, key: ActivityKey) -> Self {
        *running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default() += 1;
        Self { running, key }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = running.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                running.remove(&self.key);
            }
        }
    }
}

impl ActivityRunner {
    pub(super) fn new(
        registry: Arc<Registry>,
        concurrency: usize,
        completions: mpsc::UnboundedSender<Finished>,
    ) -> Self {
        Self {
            registry,
            slots: Arc::new(Semaphore::new(concurrency)),
            in_flight: Arc::new(AtomicUsize::new(0)),
            runs: Arc::new(AtomicU64::new(0)),
            running: Arc::default(),
            completions,
        }
    }

    /// Activities started by this worker and not yet finished.
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// The work items of the activities started and not finished: the
    /// worker renews its leases on those alone, so that a work item it
    /// claimed and does not run (the answer to the claim was lost) runs
    /// again once its lease expires.
    pub(super) fn running(&self) -> Vec<ActivityKey> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.keys().cloned().collect()
    }

    /// Called by the dispatcher when it receives a result.
    pub(super) fn finished(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// Starts a claimed activity; it waits for a free slot. Returns the
    /// run's id, which comes back with its result.
    pub(super) fn run(&self, item: ActivityWorkItem) -> RunId {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let run = self.runs.fetch_add(1, Ordering::Relaxed) + 1;
        let this = self.clone();
        let running = Running::new(self.running.clone(), item.key.clone());
        tokio::spawn(async move {
            let _running = running;
            let Ok(_permit) = this.slots.clone().acquire_owned().await else {
                return;
            };
            let completion = execute_activity(&this.registry, item).await;
            let _ = this.completions.send((run, completion));
        });
        run
    }
}

/// The activity fetcher: claims activity work items left in the store (by a
/// worker that died, or scheduled while no worker had room) and runs them.
pub(super) async fn fetch_activities(
    store: Arc<dyn Store>,
    owner: String,
    options: WorkerOptions,
    activities: ActivityRunner,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut work = store.changes().activity_work();
    let mut backoff = Backoff::new(store.poll_interval());
    loop {
        if *shutdown.borrow() {
            break;
        }
        work.borrow_and_update();
        let room = options
            .activity_concurrency
            .saturating_sub(activities.in_flight());
        let mut found = false;
        if room > 0 {
            match store.fetch_activities(&owner, options.lease, room).await {
                Ok(items) => {
                    found = !items.is_empty();
                    for item in items {
                        activities.run(item);
                    }
                }
                Err(e) => tracing::warn!(worker = %owner, error = %e, "could not fetch activity work"),
            }
        }
        if found {
            backoff.reset();
            continue;
        }
        let look_at = if room > 0 {
            next_look(store.as_ref(), chrono::Utc::now(), backoff.next_delay()).await
        } else {
            Instant::now() + Duration::from_millis(50)
        };
        tokio::select! {
            _ = work.changed() => backoff.reset(),
            () = tokio::time::sleep_until(look_at) => {}
            _ = shutdown.changed() => {}
        }
    }
}

async fn execute_activity(registry: &Registry, item: ActivityWorkItem) -> ActivityCompletion {
    let ctx = ActivityContext {
        instance_id: item.key.instance_id.clone(),
        name: item.name.clone(),
        task_id: item.key.task_id,
        attempt: item.attempt,
    };
    let result = match (item.input_error, registry.activities.get(&item.name)) {
        (Some(reason), _) => Err(FailureDetails::new(
            "CorruptWorkItem",
            format!("activity '{}' cannot run: {reason}", item.name),
        )),
        (None, Some(f)) => match std::panic::AssertUnwindSafe(f(ctx, item.input))
            .catch_unwind()
            .await
        {
            Ok(result) => result,
            Err(panic) => Err(FailureDetails::new(
                "Panic",
                format!(
                    "activity '{}' panicked: {}",
                    item.name,
                    panic_message(panic.as_ref())
                ),
            )),
        },
        (None, None) => Err(FailureDetails::new(
            "UnknownActivity",
            format!("no activity named '{}' is registered with this worker", item.name),
        )),
    };
    let id = item.key.task_id;
    let event = match result {
        Ok(result) => HistoryEvent::ActivityCompleted { id, result },
        Err(failure) => HistoryEvent::ActivityFailed { id, failure },
    };
    ActivityCompletion { key: item.key, event }
}
