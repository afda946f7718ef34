//! The messages of the instances a dispatcher runs next, in arrival order.

use std::collections::{HashMap, HashSet};

use crate::store::{InboxMessage, InstanceState, MessageSource};
use crate::InstanceId;

/// The turns to run next, by instance, in arrival order.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) order: Vec<InstanceId>,
    pub(super) items: HashMap<InstanceId, (Option<InstanceState>, Vec<InboxMessage>)>,
}

impl Pending {
    pub(super) fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub(super) fn add(&mut self, id: &InstanceId, state: Option<InstanceState>, messages: Vec<InboxMessage>) {
        if !self.items.contains_key(id) {
            self.order.push(id.clone());
        }
        let entry = self.items.entry(id.clone()).or_insert((None, Vec::new()));
        if state.is_some() {
            entry.0 = state;
        }
        if entry.1.is_empty() {
            entry.1 = messages;
            return;
        }
        // A stored message may come both offered and fetched.
        let known: HashSet<i64> = entry.1.iter().filter_map(inbox_id).collect();
        entry.1.extend(
            messages
                .into_iter()
                .filter(|m| inbox_id(m).is_none_or(|id| !known.contains(&id))),
        );
    }
}

/// The id of a stored message.
pub(super) fn inbox_id(message: &InboxMessage) -> Option<i64> {
    match message.source {
        MessageSource::Inbox(id) => Some(id),
        MessageSource::Activity(_) => None,
    }
}

/// Messages of a turn in the order they arrived: results handed over in
/// memory after the stored messages of the same millisecond.
pub(super) fn sort_arrivals(messages: &mut [InboxMessage]) {
    messages.sort_by_key(|m| (m.visible_at, matches!(m.source, MessageSource::Activity(_))));
}

/// Whether `message` is an inbox row among `consumed`: a turn that is not
/// written yet consumed it, and the store still returns it.
pub(super) fn consumed_by(message: &InboxMessage, consumed: &[i64]) -> bool {
    matches!(&message.source, MessageSource::Inbox(id) if consumed.contains(id))
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::store::ActivityKey;
    use crate::HistoryEvent;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }

    fn stored(id: i64, ms: i64) -> InboxMessage {
        InboxMessage {
            source: MessageSource::Inbox(id),
            visible_at: at(ms),
            execution_id: None,
            event: HistoryEvent::ExecutionResumed { reason: None },
        }
    }

    fn result(task_id: u64, ms: i64) -> InboxMessage {
        InboxMessage {
            source: MessageSource::Activity(ActivityKey {
                instance_id: InstanceId::new("a").unwrap(),
                execution_id: "e".into(),
                task_id,
                fingerprint: 0,
            }),
            ..stored(0, ms)
        }
    }

    fn sources(messages: &[InboxMessage]) -> Vec<String> {
        messages.iter().map(|m| format!("{:?}", m.source)).collect()
    }

    #[test]
    fn a_stored_message_offered_and_fetched_is_run_once_in_the_order_instances_came() {
        let (a, b) = (InstanceId::new("a").unwrap(), InstanceId::new("b").unwrap());
        let mut pending = Pending::default();
        pending.add(&b, None, vec![stored(1, 10)]);
        pending.add(&a, None, vec![stored(2, 10), result(7, 11)]);
        pending.add(&b, None, vec![stored(1, 10), stored(3, 12), result(8, 12)]);
        assert_eq!(pending.order, [b.clone(), a]);
        assert_eq!(
            sources(&pending.items[&b].1),
            sources(&[stored(1, 10), stored(3, 12), result(8, 12)])
        );
    }

    #[test]
    fn results_in_memory_come_after_the_stored_messages_of_their_millisecond() {
        let mut messages = vec![result(7, 10), stored(5, 10), stored(4, 9), result(8, 11)];
        sort_arrivals(&mut messages);
        assert_eq!(
            sources(&messages),
            sources(&[stored(4, 9), stored(5, 10), result(7, 10), result(8, 11)])
        );
        assert!(consumed_by(&stored(5, 10), &[4, 5]));
        assert!(!consumed_by(&result(5, 10), &[5]));
    }
}
