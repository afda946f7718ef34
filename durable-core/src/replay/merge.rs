//! Merging a turn into the open turn of the same instance before either
//! is written.

use crate::store::TurnCommit;

/// Folds `later`, a turn of the same instance run after `earlier` and not
/// yet committed either, into `earlier`, so that both commit as one turn.
///
/// The result writes what the two turns would have written one after the
/// other, except that an activity scheduled by `earlier` whose result
/// `later` took never gets a work item: it is neither inserted nor deleted.
/// The version checked at commit is `earlier`'s; the instance row is
/// `later`'s.
pub(crate) fn merge_turns(earlier: &mut TurnCommit, later: TurnCommit) {
    let TurnCommit {
        instance_id: _,
        version: _,
        consumed,
        completed_activities,
        new_execution,
        history,
        history_index,
        update,
        activities,
        claim_activities: _,
        keep_lease,
        messages,
        sub_orchestrations,
        stream,
    } = later;
    earlier.consumed.extend(consumed);
    for key in completed_activities {
        let before = earlier.activities.len();
        earlier.activities.retain(|a| a.key != key);
        if earlier.activities.len() == before {
            // Its work item was written by an earlier commit.
            earlier.completed_activities.push(key);
        }
    }
    if new_execution {
        // Continue-as-new: the execution's history, `earlier`'s included,
        // is replaced.
        earlier.new_execution = true;
        earlier.history = history;
        earlier.history_index = history_index;
    } else {
        debug_assert_eq!(
            history_index,
            earlier.history_index + earlier.history.len() as u64,
            "turns merged out of order"
        );
        earlier.history.extend(history);
    }
    if update.is_some() {
        earlier.update = update;
    }
    earlier.activities.extend(activities);
    earlier.keep_lease = keep_lease;
    earlier.messages.extend(messages);
    earlier.sub_orchestrations.extend(sub_orchestrations);
    earlier.stream.extend(stream);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{call_fingerprint, ActivityKey, NewActivity};
    use crate::{HistoryEvent, InstanceId, Payload};

    fn key(task_id: u64) -> ActivityKey {
        ActivityKey {
            instance_id: InstanceId::new("merged").unwrap(),
            execution_id: "e1".into(),
            task_id,
            fingerprint: call_fingerprint("work", &Payload::new(&task_id).unwrap()),
        }
    }

    fn activity(task_id: u64) -> NewActivity {
        NewActivity {
            key: key(task_id),
            name: "work".into(),
            input: Payload::new(&task_id).unwrap(),
        }
    }

    fn completed(task_id: u64) -> HistoryEvent {
        HistoryEvent::ActivityCompleted {
            id: task_id,
            result: Payload::new(&task_id).unwrap(),
        }
    }

    fn turn(version: u64, history_index: u64, history: Vec<HistoryEvent>) -> TurnCommit {
        TurnCommit {
            instance_id: InstanceId::new("merged").unwrap(),
            version,
            consumed: Vec::new(),
            completed_activities: Vec::new(),
            new_execution: false,
            history,
            history_index,
            update: None,
            activities: Vec::new(),
            claim_activities: true,
            keep_lease: true,
            messages: Vec::new(),
            sub_orchestrations: Vec::new(),
            stream: Vec::new(),
        }
    }

    #[test]
    fn an_activity_scheduled_and_completed_in_one_merged_turn_leaves_no_work_item() {
        // The first turn took the result of task 0 (written earlier) and
        // scheduled task 1; the second took task 1's result and scheduled 2.
        let mut first = turn(3, 4, vec![completed(0)]);
        first.completed_activities.push(key(0));
        first.activities.push(activity(1));
        first.consumed.push(7);
        let mut second = turn(4, 5, vec![completed(1)]);
        second.completed_activities.push(key(1));
        second.activities.push(activity(2));
        second.consumed.push(8);
        second.keep_lease = false;
        merge_turns(&mut first, second);
        assert_eq!(first.version, 3, "the version checked is the first turn's");
        assert_eq!(first.history_index, 4);
        assert_eq!(first.history, vec![completed(0), completed(1)]);
        assert_eq!(
            first.completed_activities,
            vec![key(0)],
            "task 1 has no work item to delete"
        );
        let scheduled: Vec<u64> = first.activities.iter().map(|a| a.key.task_id).collect();
        assert_eq!(scheduled, [2], "task 1 gets no work item");
        assert_eq!(first.consumed, [7, 8]);
        assert!(!first.keep_lease, "the lease follows the last turn");
    }

    #[test]
    fn continue_as_new_in_a_merged_turn_replaces_the_history() {
        let mut first = turn(1, 0, vec![completed(0)]);
        first.new_execution = true;
        let mut second = turn(2, 0, Vec::new());
        second.new_execution = true;
        merge_turns(&mut first, second);
        assert!(first.new_execution);
        assert_eq!(first.history_index, 0);
        assert!(first.history.is_empty(), "the next execution starts from nothing");
    }
}
