//! In-process change notifications.
//!
//! A store wakes the workers and the stream watchers of its own process
//! right after a commit, so that no loop polls on the hot path, and hands
//! the stream events it committed to the watchers of their instance, so
//! that a live watcher need not read them back from the database. Writers
//! in other processes are seen through polling with backoff (or, for
//! Postgres, LISTEN/NOTIFY feeding the same [`ChangeFeed`]); their events
//! are read from the database.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::{watch, Notify};

use crate::{InstanceId, RuntimeStatus, StreamEvent};

/// The most recent committed events an instance's feed keeps for its
/// watchers; a watcher further behind reads from the database.
const RECENT: usize = 4096;

/// What a process knows about one instance while someone watches it: a
/// wake-up signal, and the stream events committed lately by this process.
#[derive(Debug, Default)]
pub struct InstanceFeed {
    notify: Notify,
    recent: Mutex<Recent>,
}

#[derive(Debug, Default)]
struct Recent {
    /// Events with consecutive sequence numbers.
    events: VecDeque<StreamEvent>,
    /// The instance's status and stream length after the last publish.
    status: Option<(RuntimeStatus, u64)>,
}

/// What [`InstanceFeed::after`] found in memory.
#[derive(Debug, Default)]
pub struct Recently {
    /// Events after the watcher's last event, in order.
    pub events: Vec<StreamEvent>,
    /// Whether the stream is known to be over after the watcher's last
    /// event: the instance is terminal and that event is its last.
    pub finished: bool,
}

impl InstanceFeed {
    /// The signal that something changed.
    pub fn notify(&self) -> &Notify {
        &self.notify
    }

    /// Up to `limit` events after `last`, the last event a watcher got,
    /// from memory. Memory answers only if it holds that very event (same
    /// sequence number and execution): it may hold the stream of an earlier
    /// instance of the same id, purged since.
    pub fn after(&self, last: &StreamEvent, limit: usize) -> Recently {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let Some(first) = recent.events.front() else {
            return Recently::default();
        };
        let Some(index) = last
            .seq
            .checked_sub(first.seq)
            .and_then(|i| usize::try_from(i).ok())
        else {
            return Recently::default();
        };
        match recent.events.get(index) {
            Some(known) if known.seq == last.seq && known.execution_id == last.execution_id => {}
            _ => return Recently::default(),
        }
        Recently {
            events: recent
                .events
                .iter()
                .skip(index + 1)
                .take(limit)
                .cloned()
                .collect(),
            finished: matches!(recent.status, Some((status, len)) if status.is_terminal() && last.seq >= len),
        }
    }

    fn publish(&self, events: Vec<StreamEvent>, status: RuntimeStatus, stream_len: u64) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let continues = match (recent.events.back(), events.first()) {
            (Some(last), Some(first)) => last.seq + 1 == first.seq,
            _ => true,
        };
        if !continues {
            recent.events.clear();
        }
        recent.events.extend(events);
        let excess = recent.events.len().saturating_sub(RECENT);
        recent.events.drain(..excess);
        recent.status = Some((status, stream_len));
    }
}

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
    instances: Mutex<HashMap<InstanceId, Weak<InstanceFeed>>>,
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

    /// The feed of an instance: notified whenever its stream or status
    /// changes, with the events this process committed lately. Keep it
    /// alive for as long as the notifications are wanted.
    pub fn subscribe(&self, instance_id: &InstanceId) -> Arc<InstanceFeed> {
        let mut map = self.instances.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = map.get(instance_id).and_then(Weak::upgrade) {
            return existing;
        }
        map.retain(|_, weak| weak.strong_count() > 0);
        let feed = Arc::new(InstanceFeed::default());
        map.insert(instance_id.clone(), Arc::downgrade(&feed));
        feed
    }

    fn feed(&self, instance_id: &InstanceId) -> Option<Arc<InstanceFeed>> {
        let map = self.instances.lock().unwrap_or_else(|e| e.into_inner());
        if map.is_empty() {
            return None;
        }
        map.get(instance_id).and_then(Weak::upgrade)
    }

    /// Forgets the events kept for an instance (it was purged or
    /// replaced) and wakes its watchers.
    pub fn reset_instance(&self, instance_id: &InstanceId) {
        if let Some(feed) = self.feed(instance_id) {
            *feed.recent.lock().unwrap_or_else(|e| e.into_inner()) = Recent::default();
            feed.notify.notify_waiters();
        }
    }

    /// Wakes the watchers of an instance.
    pub fn notify_instance(&self, instance_id: &InstanceId) {
        if let Some(feed) = self.feed(instance_id) {
            feed.notify.notify_waiters();
        }
    }

    /// Hands the stream events a commit wrote to the watchers of their
    /// instance (if it has any: `events` is called only then) and wakes
    /// them; `status` and `stream_len` are the instance's after the commit.
    pub fn publish(
        &self,
        instance_id: &InstanceId,
        status: RuntimeStatus,
        stream_len: u64,
        events: impl FnOnce() -> Vec<StreamEvent>,
    ) {
        if let Some(feed) = self.feed(instance_id) {
            feed.publish(events(), status, stream_len);
            feed.notify.notify_waiters();
        }
    }

    /// Wakes every watcher of every instance (after notifications from
    /// other processes may have been missed).
    pub fn notify_all_instances(&self) {
        let all: Vec<Arc<InstanceFeed>> = {
            let map = self.instances.lock().unwrap_or_else(|e| e.into_inner());
            map.values().filter_map(Weak::upgrade).collect()
        };
        for feed in all {
            feed.notify.notify_waiters();
        }
    }
}
