//! The orchestrations a dispatcher keeps in memory between turns, least
//! recently used first out.

use std::collections::{BTreeMap, HashMap};

use crate::replay::Runner;
use crate::store::InstanceState;
use crate::InstanceId;

/// An orchestration kept in memory between turns, with the state of its
/// instance as its last turn handed to the store leaves it.
pub(super) struct Cached {
    pub(super) runner: Runner,
    pub(super) state: InstanceState,
}

/// Running orchestrations kept in memory between turns, least recently used
/// evicted first.
pub(super) struct RunnerCache<T = Cached> {
    capacity: usize,
    tick: u64,
    entries: HashMap<InstanceId, (u64, T)>,
    order: BTreeMap<u64, InstanceId>,
}

impl<T> RunnerCache<T> {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            tick: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    pub(super) fn get(&self, id: &InstanceId) -> Option<&T> {
        self.entries.get(id).map(|(_, cached)| cached)
    }

    pub(super) fn take(&mut self, id: &InstanceId) -> Option<T> {
        let (tick, cached) = self.entries.remove(id)?;
        self.order.remove(&tick);
        Some(cached)
    }

    /// Keeps `cached`; returns the instances evicted to make room.
    pub(super) fn put(&mut self, id: InstanceId, cached: T) -> Vec<InstanceId> {
        self.tick += 1;
        self.order.insert(self.tick, id.clone());
        if let Some((old, _)) = self.entries.insert(id, (self.tick, cached)) {
            self.order.remove(&old);
        }
        let mut evicted = Vec::new();
        while self.entries.len() > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
            evicted.push(oldest);
        }
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> InstanceId {
        InstanceId::new(text).unwrap()
    }

    #[test]
    fn the_least_recently_kept_goes_first_and_keeping_again_makes_it_recent() {
        let mut cache = RunnerCache::new(2);
        assert!(cache.put(id("a"), 1).is_empty());
        assert!(cache.put(id("b"), 2).is_empty());
        // Kept again: now the most recent.
        assert!(cache.put(id("a"), 3).is_empty());
        assert_eq!(cache.put(id("c"), 4), [id("b")]);
        assert_eq!(cache.get(&id("a")), Some(&3));
        assert_eq!(cache.take(&id("a")), Some(3));
        assert_eq!(cache.get(&id("a")), None);
        // What is taken out no longer counts.
        assert!(cache.put(id("d"), 5).is_empty());
        assert_eq!(cache.put(id("e"), 6), [id("c")]);
    }
}
