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

use chrono::DateTime;

use super::{OrchestrationWorkItem, TurnCommit, TurnOutcome};
use crate::{InstanceId, RuntimeStatus, StreamEvent};

/// The most recent committed events an instance's feed keeps for its
/// watchers; a watcher further behind reads from the database.
const RECENT: usize = 4096;

/// The most events of one commit an instance's feed keeps, when that is
/// more than [`RECENT`]: a commit's watchers are about to read them.
const BURST: usize = 16_384;

/// The most payload bytes an instance's feed keeps.
const MAX_KEPT_BYTES: usize = 16 << 20;

/// The most offered work items waiting for a worker; beyond them, a
/// creation signals the workers instead, who find it in the store.
const MAX_OFFERS: usize = 4096;

/// What a process knows about one instance while someone watches it: a
/// wake-up signal, and the stream events committed lately by this process.
#[derive(Debug, Default)]
pub struct InstanceFeed {
    notify: Notify,
    recent: Mutex<Recent>,
}

#[derive(Debug, Default)]
struct Recent {
    /// Events with consecutive sequence numbers, each with the publish
    /// that brought it.
    events: VecDeque<Kept>,
    /// The instance's status and stream length after the last publish.
    status: Option<(RuntimeStatus, u64)>,
    /// How many publishes there have been: never goes back, not even when
    /// the events are forgotten.
    generation: u64,
    /// The payload bytes of `events`.
    bytes: usize,
}

#[derive(Debug)]
struct Kept {
    generation: u64,
    event: StreamEvent,
    bytes: usize,
}

/// Where a watcher stands in a stream, as far as the in-memory hand-over
/// of [`InstanceFeed::after`] is concerned.
#[derive(Debug, Clone, Default)]
pub enum Position {
    /// Nothing known: the watcher must read the database.
    #[default]
    Unknown,
    /// The last event the watcher got. Memory continues after it only if
    /// it holds that very event (same sequence number and execution), or
    /// begins with the next one in the same execution: it may hold the
    /// stream of an earlier instance of the same id.
    After(StreamEvent),
    /// A database read begun at feed `generation` found no event after
    /// `cursor`, the instance being in execution `execution_id`. Memory
    /// continues after it with an event `cursor + 1` of that execution
    /// published after the read began.
    CaughtUp {
        /// The last sequence number read.
        cursor: u64,
        /// The instance's execution at the read.
        execution_id: String,
        /// [`InstanceFeed::generation`] when the read began.
        generation: u64,
    },
}

/// What [`InstanceFeed::after`] found in memory.
#[derive(Debug, Default)]
pub struct RecentEvents {
    /// Events after the watcher's position, in order.
    pub events: Vec<StreamEvent>,
    /// Whether the stream is known to be over after the watcher's last
    /// event: the instance is terminal and that event is its last.
    pub finished: bool,
    /// Whether the last commit this process published left the stream at
    /// the watcher's last event (another process may have appended since).
    pub up_to_date: bool,
}

impl InstanceFeed {
    /// The signal that something changed.
    pub fn notify(&self) -> &Notify {
        &self.notify
    }

    /// How many commits have been published to this feed so far: take it
    /// before a database read to place the read among the publishes (see
    /// [`Position::CaughtUp`]).
    pub fn generation(&self) -> u64 {
        self.recent.lock().unwrap_or_else(|e| e.into_inner()).generation
    }

    /// Up to `limit` events after `position`, from memory, or none if
    /// memory cannot prove that they follow it without a gap.
    pub fn after(&self, position: &Position, limit: usize) -> RecentEvents {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let Some(first) = recent.events.front() else {
            return RecentEvents::default();
        };
        let index_of = |seq: u64| {
            seq.checked_sub(first.event.seq)
                .and_then(|i| usize::try_from(i).ok())
        };
        let (start, finished) = match position {
            Position::Unknown => return RecentEvents::default(),
            Position::After(last) => {
                let start = match index_of(last.seq) {
                    Some(index) => match recent.events.get(index) {
                        Some(kept)
                            if kept.event.seq == last.seq && kept.event.execution_id == last.execution_id =>
                        {
                            index + 1
                        }
                        _ => return RecentEvents::default(),
                    },
                    // Memory begins with the event right after the
                    // watcher's last one (read from the database), in the
                    // same execution: an instance replaced since would have
                    // another.
                    None if first.event.seq == last.seq + 1
                        && first.event.execution_id == last.execution_id =>
                    {
                        0
                    }
                    None => return RecentEvents::default(),
                };
                let finished = matches!(recent.status,
                    Some((status, len)) if status.is_terminal() && last.seq >= len);
                if start == recent.events.len() {
                    let up_to_date = matches!(recent.status, Some((_, len)) if last.seq >= len);
                    return RecentEvents {
                        events: Vec::new(),
                        finished,
                        up_to_date,
                    };
                }
                (start, finished)
            }
            Position::CaughtUp {
                cursor,
                execution_id,
                generation,
            } => {
                let Some(index) = index_of(cursor + 1) else {
                    return RecentEvents::default();
                };
                match recent.events.get(index) {
                    Some(kept)
                        if kept.event.seq == cursor + 1
                            && kept.generation > *generation
                            && kept.event.execution_id == *execution_id => {}
                    _ => return RecentEvents::default(),
                }
                (index, false)
            }
        };
        RecentEvents {
            events: recent
                .events
                .iter()
                .skip(start)
                .take(limit)
                .map(|kept| kept.event.clone())
                .collect(),
            finished,
            up_to_date: false,
        }
    }

    fn publish(&self, events: Vec<(StreamEvent, usize)>, status: RuntimeStatus, stream_len: u64) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.generation += 1;
        let generation = recent.generation;
        let continues = match (recent.events.back(), events.first()) {
            (Some(last), Some((first, _))) => last.event.seq + 1 == first.seq,
            _ => true,
        };
        if !continues {
            recent.events.clear();
            recent.bytes = 0;
        }
        // A commit's events are kept whole up to a bound: its watchers are
        // about to read them. Watchers further behind read the database.
        let keep = RECENT.max(events.len().min(BURST));
        for (event, bytes) in events {
            recent.bytes += bytes;
            recent.events.push_back(Kept {
                generation,
                event,
                bytes,
            });
        }
        while recent.events.len() > keep || (recent.bytes > MAX_KEPT_BYTES && recent.events.len() > 1) {
            if let Some(dropped) = recent.events.pop_front() {
                recent.bytes -= dropped.bytes;
            }
        }
        recent.status = Some((status, stream_len));
    }

    fn forget(&self) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.events.clear();
        recent.bytes = 0;
        recent.status = None;
    }
}

/// Wakes waiting workers and watchers after commits.
///
/// Work signals are [`watch`] channels: a worker checks
/// [`watch::Receiver::has_changed`] without waiting while it is busy, and
/// awaits [`watch::Receiver::changed`] when it is idle; no signal is lost
/// in between.
///
/// A store may also hand the work item of an instance it has just created
/// to a worker of its own process ([`ChangeFeed::offer`]), which then runs
/// the first turn without reading the instance back.
#[derive(Debug)]
pub struct ChangeFeed {
    orchestration_work: watch::Sender<u64>,
    activity_work: watch::Sender<u64>,
    wakeups: watch::Sender<u64>,
    instances: Mutex<HashMap<InstanceId, Weak<InstanceFeed>>>,
    offers: Arc<Offers>,
}

impl Default for ChangeFeed {
    fn default() -> Self {
        Self {
            orchestration_work: watch::Sender::new(0),
            activity_work: watch::Sender::new(0),
            wakeups: watch::Sender::new(0),
            instances: Mutex::default(),
            offers: Arc::default(),
        }
    }
}

/// Work items offered to the workers of this process.
#[derive(Debug, Default)]
struct Offers {
    queue: Mutex<OfferQueue>,
    ready: Notify,
}

#[derive(Debug, Default)]
struct OfferQueue {
    /// How many [`OfferTaker`]s there are.
    takers: usize,
    items: VecDeque<OrchestrationWorkItem>,
}

impl Offers {
    fn lock(&self) -> std::sync::MutexGuard<'_, OfferQueue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A worker's share of the work items offered to the workers of its
/// process ([`ChangeFeed::take_offers`]). While one exists, the store
/// offers creations instead of signalling them; when the last one is
/// dropped, the items nobody took are forgotten (they are in the store,
/// where the next worker finds them).
#[derive(Debug)]
pub struct OfferTaker {
    offers: Arc<Offers>,
}

impl OfferTaker {
    /// Takes up to `max` offered work items, oldest first.
    pub fn take(&self, max: usize) -> Vec<OrchestrationWorkItem> {
        let mut queue = self.offers.lock();
        let n = max.min(queue.items.len());
        let taken: Vec<_> = queue.items.drain(..n).collect();
        if !queue.items.is_empty() {
            // For another taker, or for this one's next look.
            self.offers.ready.notify_one();
        }
        taken
    }

    /// Completes when work items may have been offered since the last
    /// call.
    pub async fn offered(&self) {
        self.offers.ready.notified().await;
    }
}

impl Drop for OfferTaker {
    fn drop(&mut self) {
        let mut queue = self.offers.lock();
        queue.takers -= 1;
        if queue.takers == 0 {
            queue.items.clear();
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

    /// A receiver that changes when a message was written that becomes
    /// visible later (a timer, a delayed start): a waiting worker's next
    /// wake-up time may have come sooner.
    pub fn wakeups(&self) -> watch::Receiver<u64> {
        self.wakeups.subscribe()
    }

    /// Signals that a message becomes visible later
    /// ([`ChangeFeed::wakeups`]).
    pub fn notify_wakeup(&self) {
        self.wakeups.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Signals the orchestration dispatchers.
    pub fn notify_orchestration_work(&self) {
        self.orchestration_work.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Signals the activity dispatchers.
    pub fn notify_activity_work(&self) {
        self.activity_work.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Registers a worker that takes the work items offered in this
    /// process; it should look at them as often as it would look at the
    /// store after a signal.
    pub fn take_offers(&self) -> OfferTaker {
        self.offers.lock().takers += 1;
        OfferTaker {
            offers: self.offers.clone(),
        }
    }

    /// Offers the work item of an instance the store has just created
    /// (its state and its visible start message exactly as a fetch would
    /// return them) to the workers of this process. False if no worker
    /// takes offers or too many wait: the store then signals
    /// ([`ChangeFeed::notify_orchestration_work`]), and a worker fetches
    /// the instance.
    ///
    /// An offer is a hint like a signal, not a claim: the worker's turn
    /// commits only if the instance is still as the item says.
    pub fn offer(&self, item: OrchestrationWorkItem) -> bool {
        let mut queue = self.offers.lock();
        if queue.takers == 0 || queue.items.len() >= MAX_OFFERS {
            return false;
        }
        queue.items.push_back(item);
        drop(queue);
        self.offers.ready.notify_one();
        true
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
            feed.forget();
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
    /// Each event comes with the length of its payload's JSON, which bounds
    /// what the feed keeps.
    pub fn publish(
        &self,
        instance_id: &InstanceId,
        status: RuntimeStatus,
        stream_len: u64,
        events: impl FnOnce() -> Vec<(StreamEvent, usize)>,
    ) {
        if let Some(feed) = self.feed(instance_id) {
            feed.publish(events(), status, stream_len);
            feed.notify.notify_waiters();
        }
    }

    /// Tells the watchers in this process what the committed turns of a
    /// batch did (`outcomes[i]` for turn `i`): their new stream events,
    /// handed over in memory, and status.
    pub(crate) fn publish_turns(&self, turns: &[TurnCommit], outcomes: &[TurnOutcome]) {
        for (turn, outcome) in turns.iter().zip(outcomes) {
            if *outcome != TurnOutcome::Committed {
                continue;
            }
            let Some(update) = &turn.update else {
                self.notify_instance(&turn.instance_id);
                continue;
            };
            self.publish(&turn.instance_id, update.status, update.stream_seq, || {
                turn.stream
                    .iter()
                    .map(|e| {
                        let event = StreamEvent {
                            instance_id: turn.instance_id.clone(),
                            seq: e.seq,
                            name: e.name.clone(),
                            payload: e.payload.clone(),
                            // As stored: to the millisecond.
                            emitted_at: DateTime::from_timestamp_millis(e.emitted_at.timestamp_millis())
                                .unwrap_or_default(),
                            execution_id: e.execution_id.clone(),
                        };
                        (event, e.payload.as_str().len())
                    })
                    .collect()
            });
        }
    }

    /// Signals every worker and watcher of this process: something was
    /// written that may not have been announced.
    pub fn notify_everything(&self) {
        self.notify_orchestration_work();
        self.notify_activity_work();
        self.notify_wakeup();
        self.notify_all_instances();
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

#[cfg(test)]
mod tests;
