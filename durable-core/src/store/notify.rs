//! In-process change notifications.
//!
//! A store wakes the workers and the stream watchers of its own process
//! right after a commit, so that no loop polls on the hot path. Writers in
//! other processes are seen through polling with backoff (or, for Postgres,
//! LISTEN/NOTIFY feeding the same [`ChangeFeed`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

use crate::InstanceId;

/// Wakes waiting workers and watchers after commits.
#[derive(Debug, Default)]
pub struct ChangeFeed {
    orchestration_work: Notify,
    activity_work: Notify,
    instances: Mutex<HashMap<InstanceId, Weak<Notify>>>,
}

impl ChangeFeed {
    /// A feed with nobody waiting.
    pub fn new() -> Self {
        Self::default()
    }

    /// Notified when orchestration messages were enqueued.
    pub fn orchestration_work(&self) -> &Notify {
        &self.orchestration_work
    }

    /// Notified when activity work items were enqueued.
    pub fn activity_work(&self) -> &Notify {
        &self.activity_work
    }

    /// Wakes the orchestration dispatchers.
    pub fn notify_orchestration_work(&self) {
        self.orchestration_work.notify_waiters();
    }

    /// Wakes the activity dispatchers.
    pub fn notify_activity_work(&self) {
        self.activity_work.notify_waiters();
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
}
