//! In-process change notifications.
//!
//! A store wakes the workers and the stream watchers of its own process
//! right after a commit, so that no loop polls on the hot path. Writers in
//! other processes are seen through polling with backoff (or, for Postgres,
//! LISTEN/NOTIFY feeding the same [`ChangeFeed`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{watch, Notify};

use crate::InstanceId;

/// Wakes waiting workers and watchers after commits.
///
/// Work signals are [`watch`] channels: a worker checks
/// [`watch::Receiver::has_changed`] without waiting while it is busy, and
/// awaits [`watch::Receiver::changed`] when it is idle; no signal is lost
/// in between.
#[derive(Debug)]
pub struct ChangeFeed {
    orchestration_work: watch::Sender<u64>,
    activity_work: watch::Sender<u64>,
    instances: Mutex<HashMap<InstanceId, Weak<Notify>>>,
}

impl Default for ChangeFeed {
    fn default() -> Self {
        Self {
            orchestration_work: watch::Sender::new(0),
            activity_work: watch::Sender::new(0),
            instances: Mutex::default(),
        }
    }
}

impl ChangeFeed {
    /// A feed with nobody waiting.
    pub fn new() -> Self {
        Self::default()
    }

    /// A receiver that changes when orchestration messages were enqueued.
    pub fn orchestration_work(&self) -> watch::Receiver<u64> {
        self.orchestration_work.subscribe()
    }

    /// A receiver that changes when unclaimed activity work items were
    /// enqueued or leases were released.
    pub fn activity_work(&self) -> watch::Receiver<u64> {
        self.activity_work.subscribe()
    }

    /// Signals the orchestration dispatchers.
    pub fn notify_orchestration_work(&self) {
        self.orchestration_work.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Signals the activity dispatchers.
    pub fn notify_activity_work(&self) {
        self.activity_work.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A handle notified whenever the instance's stream or status changes.
    /// Keep it alive for as long as the notifications are wanted.
    pub fn subscribe(&self, instance_id: &InstanceId) -> Arc<Notify> {
        let mut map = self.instances.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = map.get(instance_id).and_then(Weak::upgrade) {
            return existing;
        }
        map.retain(|_, weak| weak.strong_count() > 0);
        let notify = Arc::new(Notify::new());
        map.insert(instance_id.clone(), Arc::downgrade(&notify));
        notify
    }

    /// Wakes the watchers of an instance.
    pub fn notify_instance(&self, instance_id: &InstanceId) {
        let notify = {
            let map = self.instances.lock().unwrap_or_else(|e| e.into_inner());
            if map.is_empty() {
                return;
            }
            map.get(instance_id).and_then(Weak::upgrade)
        };
        if let Some(notify) = notify {
            notify.notify_waiters();
        }
    }

    /// Wakes every watcher of every instance (after notifications from
    /// other processes may have been missed).
    pub fn notify_all_instances(&self) {
        let all: Vec<Arc<Notify>> = {
            let map = self.instances.lock().unwrap_or_else(|e| e.into_inner());
            map.values().filter_map(Weak::upgrade).collect()
        };
        for notify in all {
            notify.notify_waiters();
        }
    }
}
