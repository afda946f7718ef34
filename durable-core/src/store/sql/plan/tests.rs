//! The plan's rules, on rows read and batches made by hand.
use chrono::Utc;

use super::*;
use crate::store::sql::codec::from_ms;
use crate::store::{InstanceUpdate, NewActivity};

const BY: Committer<'static> = Committer {
    owner: "w1",
    lease_until: 2_000,
    now: 1_000,
};

fn turn(id: &str, version: u64, status: RuntimeStatus) -> TurnCommit {
    TurnCommit {
        instance_id: InstanceId::new(id).unwrap(),
        version,
        consumed: vec![7],
        completed_activities: Vec::new(),
        new_execution: false,
        history: Vec::new(),
        history_index: 0,
        update: Some(InstanceUpdate {
            status,
            execution_id: "e1".into(),
            input: None,
            custom_status: None,
            output: None,
            failure: None,
            history_len: 0,
            stream_seq: 0,
            execution_emits: 0,
        }),
        activities: Vec::new(),
        claim_activities: false,
        keep_lease: true,
        messages: Vec::new(),
        sub_orchestrations: Vec::new(),
        stream: Vec::new(),
    }
}

fn row(version: u64, lock_owner: Option<&str>, lock_expires: i64) -> InstanceRow {
    InstanceRow {
        status: RuntimeStatus::Running,
        version,
        lock_owner: lock_owner.map(str::to_owned),
        lock_expires,
    }
}

fn batch(turns: Vec<TurnCommit>) -> CommitBatch {
    CommitBatch {
        turns,
        ..CommitBatch::default()
    }
}

#[test]
fn a_turn_is_written_only_from_the_version_it_read_and_without_another_live_lease() {
    let b = batch(vec![
        turn("same", 3, RuntimeStatus::Running),
        turn("moved_on", 3, RuntimeStatus::Running),
        turn("leased_elsewhere", 3, RuntimeStatus::Running),
        turn("lease_ran_out", 3, RuntimeStatus::Running),
        turn("gone", 3, RuntimeStatus::Running),
    ]);
    let mut read = InstanceRows::from([
        ("same".to_owned(), row(3, Some("w1"), 5_000)),
        ("moved_on".to_owned(), row(4, Some("w1"), 5_000)),
        ("leased_elsewhere".to_owned(), row(3, Some("w2"), 5_000)),
        ("lease_ran_out".to_owned(), row(3, Some("w2"), 1_000)),
    ]);
    let rows = BatchRows::plan(&b, BY, Some(&mut read)).unwrap();
    use TurnOutcome::{Committed, Conflict};
    assert_eq!(
        rows.outcomes,
        [Committed, Conflict, Conflict, Committed, Conflict]
    );
    let updated: Vec<&str> = rows.updates.iter().map(|u| u.instance_id).collect();
    assert_eq!(updated, ["same", "lease_ran_out"]);
    assert_eq!(rows.consumed, [7, 7]);
    assert_eq!(read["same"].version, 4);
}

#[test]
fn a_second_turn_of_an_instance_in_one_batch_is_refused() {
    let b = batch(vec![
        turn("a", 3, RuntimeStatus::Running),
        turn("a", 4, RuntimeStatus::Running),
    ]);
    let mut read = InstanceRows::from([("a".to_owned(), row(3, None, 0))]);
    let rows = BatchRows::plan(&b, BY, Some(&mut read)).unwrap();
    assert_eq!(rows.outcomes, [TurnOutcome::Committed, TurnOutcome::Conflict]);
    let unread = BatchRows::plan(&b, BY, None).unwrap();
    assert_eq!(unread.outcomes, [TurnOutcome::Committed, TurnOutcome::Conflict]);
    assert_eq!(unread.updates.len(), 1);
}

#[test]
fn a_turn_dropping_late_messages_checks_the_version_alone() {
    let mut late = turn("a", 5, RuntimeStatus::Completed);
    late.update = None;
    let mut read = InstanceRows::from([("a".to_owned(), row(5, Some("w2"), 9_000))]);
    let b = batch(vec![late.clone()]);
    let rows = BatchRows::plan(&b, BY, Some(&mut read)).unwrap();
    assert_eq!(rows.outcomes, [TurnOutcome::Committed]);
    assert!(rows.updates.is_empty());
    assert_eq!(rows.consumed, [7]);
    // Replaced since: a new instance of the id starts at version 0.
    let mut read = InstanceRows::from([("a".to_owned(), row(0, None, 0))]);
    let rows = BatchRows::plan(&b, BY, Some(&mut read)).unwrap();
    assert_eq!(rows.outcomes, [TurnOutcome::Conflict]);
    assert!(rows.consumed.is_empty());
}

fn child(id: &str, parent: &str) -> NewInstance {
    NewInstance {
        instance_id: InstanceId::new(id).unwrap(),
        name: "child".into(),
        execution_id: "c1".into(),
        input: Payload::null(),
        parent: Some(crate::ParentInstance {
            instance_id: InstanceId::new(parent).unwrap(),
            execution_id: "e1".into(),
            task_id: 4,
        }),
        start_at: Utc::now(),
        created_at: Utc::now(),
    }
}

#[test]
fn a_child_whose_id_is_live_is_not_created_and_its_parent_is_told() {
    let mut parent = turn("p", 1, RuntimeStatus::Running);
    parent.sub_orchestrations = vec![child("live", "p"), child("over", "p"), child("new", "p")];
    let mut read = InstanceRows::from([
        ("p".to_owned(), row(1, Some("w1"), 5_000)),
        ("live".to_owned(), row(2, None, 0)),
        (
            "over".to_owned(),
            InstanceRow {
                status: RuntimeStatus::Completed,
                ..row(9, None, 0)
            },
        ),
    ]);
    let b = batch(vec![parent]);
    let rows = BatchRows::plan(&b, BY, Some(&mut read)).unwrap();
    let created: Vec<&str> = rows.creations.iter().map(|c| c.instance_id).collect();
    assert_eq!(created, ["over", "new"]);
    assert_eq!(rows.replaced, ["over"]);
    assert_eq!(rows.messages.len(), 1);
    let told = &rows.messages[0];
    assert_eq!((told.instance_id, told.execution_id), ("p", Some("e1")));
    assert!(told.event.contains("InstanceAlreadyExists"), "{}", told.event);
    assert_eq!(read["new"].version, 0);
}

#[test]
fn an_ending_turn_writes_no_message_to_itself_and_no_work_item() {
    let mut end = turn("a", 1, RuntimeStatus::Completed);
    let timer = NewMessage {
        instance_id: end.instance_id.clone(),
        execution_id: Some("e1".into()),
        event: HistoryEvent::TimerFired {
            id: 1,
            fire_at: Utc::now(),
        },
        visible_at: from_ms(9_000),
    };
    let to_parent = NewMessage {
        instance_id: InstanceId::new("p").unwrap(),
        ..timer.clone()
    };
    end.messages = vec![timer, to_parent];
    end.activities = vec![NewActivity {
        key: ActivityKey {
            instance_id: end.instance_id.clone(),
            execution_id: "e1".into(),
            task_id: 2,
            fingerprint: 0,
        },
        name: "x".into(),
        input: Payload::null(),
    }];
    let b = batch(vec![end]);
    let rows = BatchRows::plan(&b, BY, None).unwrap();
    let to: Vec<&str> = rows.messages.iter().map(|m| m.instance_id).collect();
    assert_eq!(to, ["p"]);
    assert!(rows.activities.is_empty());
    assert_eq!(rows.terminal, ["a"]);
    assert!(
        rows.consumed.is_empty(),
        "the terminal instance's inbox goes as a whole"
    );
    assert_eq!(rows.updates[0].lock_owner, None);
    assert!(rows.wake.later && !rows.wake.orchestrations);
}

#[test]
fn a_release_of_an_instance_whose_turn_is_written_is_left_to_the_turn() {
    let mut b = batch(vec![
        turn("a", 1, RuntimeStatus::Running),
        turn("b", 1, RuntimeStatus::Running),
    ]);
    b.release = vec![
        InstanceId::new("a").unwrap(),
        InstanceId::new("b").unwrap(),
        InstanceId::new("c").unwrap(),
    ];
    let mut read = InstanceRows::from([
        ("a".to_owned(), row(1, Some("w1"), 5_000)),
        ("b".to_owned(), row(2, Some("w1"), 5_000)),
    ]);
    let rows = BatchRows::plan(&b, BY, Some(&mut read)).unwrap();
    assert_eq!(rows.releases, ["b", "c"]);
}
