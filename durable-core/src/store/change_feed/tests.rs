//! The recent events a feed keeps, and what a watcher finds in them.
use chrono::Utc;

use super::*;
use crate::Payload;

fn event(seq: u64, execution_id: &str) -> StreamEvent {
    StreamEvent {
        instance_id: InstanceId::new("i").unwrap(),
        seq,
        name: "e".into(),
        payload: Payload::new(&seq).unwrap(),
        emitted_at: Utc::now(),
        execution_id: execution_id.into(),
    }
}

fn events(seqs: std::ops::RangeInclusive<u64>, execution_id: &str) -> Vec<StreamEvent> {
    seqs.map(|seq| event(seq, execution_id)).collect()
}

/// The events with the length of their payloads' JSON.
fn sized(events: Vec<StreamEvent>) -> Vec<(StreamEvent, usize)> {
    events
        .into_iter()
        .map(|e| {
            let bytes = e.payload.to_string().len();
            (e, bytes)
        })
        .collect()
}

fn seqs(found: &RecentEvents) -> Vec<u64> {
    found.events.iter().map(|e| e.seq).collect()
}

fn caught_up(cursor: u64, execution_id: &str, generation: u64) -> Position {
    Position::CaughtUp {
        cursor,
        execution_id: execution_id.into(),
        generation,
    }
}

#[test]
fn continues_after_the_last_event_it_holds() {
    let feed = InstanceFeed::default();
    feed.publish(sized(events(1..=3, "x")), RuntimeStatus::Running, 3);
    feed.publish(sized(events(4..=5, "x")), RuntimeStatus::Completed, 5);
    let found = feed.after(&Position::After(event(2, "x")), 10);
    assert_eq!(seqs(&found), [3, 4, 5]);
    assert!(!found.finished);
    assert!(feed.after(&Position::After(event(5, "x")), 10).finished);
    assert!(feed.after(&Position::After(event(5, "x")), 10).up_to_date);
    assert!(!feed.after(&Position::After(event(4, "x")), 10).up_to_date);
    // Not the same event (an earlier instance of the same id): no.
    assert!(seqs(&feed.after(&Position::After(event(2, "y")), 10)).is_empty());
    // The event right before the first one held, of the same
    // execution (the watcher read it from the database): yes.
    let feed = InstanceFeed::default();
    feed.publish(sized(events(4..=5, "x")), RuntimeStatus::Running, 5);
    assert_eq!(seqs(&feed.after(&Position::After(event(3, "x")), 10)), [4, 5]);
    assert!(seqs(&feed.after(&Position::After(event(3, "y")), 10)).is_empty());
    assert!(
        seqs(&feed.after(&Position::After(event(2, "x")), 10)).is_empty(),
        "a gap"
    );
    assert!(seqs(&feed.after(&Position::Unknown, 10)).is_empty());
}

#[test]
fn continues_after_a_read_only_with_events_published_since() {
    let feed = InstanceFeed::default();
    feed.publish(sized(events(1..=2, "x")), RuntimeStatus::Running, 2);
    // A read that began now found nothing after 2.
    let read_at = feed.generation();
    feed.publish(sized(events(3..=4, "x")), RuntimeStatus::Running, 4);
    assert_eq!(seqs(&feed.after(&caught_up(2, "x", read_at), 10)), [3, 4]);
    // Events published before the read began may be of an instance
    // that has been purged and replaced since: not trusted.
    assert!(seqs(&feed.after(&caught_up(0, "x", read_at), 10)).is_empty());
    // Nor events of another execution than the one the read saw.
    assert!(seqs(&feed.after(&caught_up(2, "y", read_at), 10)).is_empty());
    // Nor a gap.
    assert!(seqs(&feed.after(&caught_up(1, "x", read_at + 1), 10)).is_empty());
}

#[test]
fn keeps_a_bounded_number_of_events_and_bytes() {
    let feed = InstanceFeed::default();
    let count = BURST as u64 + 10;
    feed.publish(sized(events(1..=count, "x")), RuntimeStatus::Running, count);
    // The last BURST events are kept: 11 to the end.
    let kept = seqs(&feed.after(&Position::After(event(11, "x")), usize::MAX));
    assert_eq!(
        (kept.len(), kept.first(), kept.last()),
        (BURST - 1, Some(&12), Some(&count))
    );
    // Further behind: a gap, for the database to fill.
    assert!(seqs(&feed.after(&Position::After(event(9, "x")), 10)).is_empty());

    let feed = InstanceFeed::default();
    let big = |seq| StreamEvent {
        payload: Payload::new(&"x".repeat(1 << 20)).unwrap(),
        ..event(seq, "x")
    };
    feed.publish(sized((1..=40).map(big).collect()), RuntimeStatus::Running, 40);
    // Memory answers a watcher just before the oldest event it holds,
    // with all the events it holds.
    let before_oldest = (0..40u64)
        .find(|&k| {
            !feed
                .after(&Position::After(event(k, "x")), usize::MAX)
                .events
                .is_empty()
        })
        .expect("the newest event is held");
    let kept = feed
        .after(&Position::After(event(before_oldest, "x")), usize::MAX)
        .events
        .len();
    assert_eq!(kept as u64, 40 - before_oldest);
    assert!(
        (14..=16).contains(&kept),
        "about 16 MiB of 1 MiB payloads are kept, not {kept}"
    );
    assert_eq!(
        seqs(&feed.after(&Position::After(event(39, "x")), 10)),
        [40],
        "the newest are the ones kept"
    );
}

#[test]
fn keeps_a_large_commit_whole_and_forgets_on_reset() {
    let feed = InstanceFeed::default();
    let count = RECENT as u64 * 2 + 1;
    feed.publish(sized(events(1..=count, "x")), RuntimeStatus::Running, count);
    let found = feed.after(&caught_up(0, "x", 0), usize::MAX);
    assert_eq!(seqs(&found), (1..=count).collect::<Vec<_>>());
    feed.publish(
        sized(events(count + 1..=count + 1, "x")),
        RuntimeStatus::Running,
        count + 1,
    );
    assert_eq!(
        feed.after(&Position::After(event(count, "x")), 10).events.len(),
        1,
        "the next commit continues the kept events"
    );
    feed.forget();
    let generation = feed.generation();
    assert!(generation >= 2, "forgetting does not rewind the generation");
    assert!(seqs(&feed.after(&Position::After(event(count, "x")), 10)).is_empty());
}

fn item(n: u64) -> OrchestrationWorkItem {
    OrchestrationWorkItem {
        instance_id: InstanceId::new(format!("offered-{n}")).unwrap(),
        state: crate::store::InstanceState::created("o".into(), "x".into()),
        messages: Vec::new(),
    }
}

fn ids(items: &[OrchestrationWorkItem]) -> Vec<String> {
    items.iter().map(|i| i.instance_id.to_string()).collect()
}

#[test]
fn offers_go_to_takers_in_order_and_only_while_there_are_takers() {
    let feed = ChangeFeed::new();
    assert!(!feed.offer(item(0)), "nobody takes offers: the store must signal");
    let first = feed.take_offers();
    let second = feed.take_offers();
    assert!(feed.offer(item(1)) && feed.offer(item(2)) && feed.offer(item(3)));
    // Shared by the takers, oldest first, at most as many as asked for.
    assert_eq!(ids(&first.take(2)), ["offered-1", "offered-2"]);
    assert_eq!(ids(&second.take(10)), ["offered-3"]);
    assert!(first.take(10).is_empty());
    // Items left when a taker goes stay for the others...
    assert!(feed.offer(item(4)));
    drop(first);
    assert_eq!(ids(&second.take(10)), ["offered-4"]);
    // ... and are forgotten with the last one (they are in the store);
    // from then on the store signals again.
    assert!(feed.offer(item(5)));
    drop(second);
    assert!(!feed.offer(item(6)));
    assert!(feed.take_offers().take(10).is_empty());
}

#[test]
fn offers_are_bounded() {
    let feed = ChangeFeed::new();
    let taker = feed.take_offers();
    for n in 0..MAX_OFFERS as u64 {
        assert!(feed.offer(item(n)));
    }
    assert!(
        !feed.offer(item(MAX_OFFERS as u64)),
        "beyond the bound the store signals"
    );
    assert_eq!(taker.take(usize::MAX).len(), MAX_OFFERS);
    assert!(feed.offer(item(0)));
}

#[tokio::test]
async fn an_offer_wakes_a_taker_that_waits_or_comes_later() {
    let feed = Arc::new(ChangeFeed::new());
    let taker = feed.take_offers();
    // Made before the taker waits: its next wait ends at once.
    assert!(feed.offer(item(1)));
    tokio::time::timeout(std::time::Duration::from_secs(5), taker.offered())
        .await
        .expect("the offer wakes the taker");
    assert_eq!(ids(&taker.take(1)), ["offered-1"]);
    // Made while it waits.
    let waiting = tokio::spawn({
        let feed = feed.clone();
        async move {
            let taker = feed.take_offers();
            taker.offered().await;
            ids(&taker.take(10))
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert!(feed.offer(item(2)));
    let taken = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
        .await
        .expect("the offer wakes the waiting taker")
        .unwrap();
    // One of the two takers has it.
    assert!(taken == ["offered-2"] || ids(&taker.take(10)) == ["offered-2"]);
}
