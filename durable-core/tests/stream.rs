//! The stream guarantees, each with a test that fails if it breaks: order
//! without gaps (10,000 events), no duplicates under forced replay, resume
//! from every cursor, late, slow and many watchers, watchers that end
//! exactly after the last event of a terminal instance, numbering across
//! continue-as-new, the per-event cap, stream length, purge, and
//! deterministic `emitted_at` and `execution_id`, and the store's
//! uniqueness keys that refuse a duplicate even from a buggy turn.
//! (Duplicates after a killed worker process are tested in `crash.rs`.)

mod common;

use std::convert::Infallible;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{iid, output_of, read_all, summary, wait_done, Gate, Rig, WAIT};
use durable_core::prelude::*;
use durable_core::{Limits, StreamEvent, MAX_NAME_LEN};
use futures::{Stream, StreamExt};
use serde_json::{json, Value};

/// Emits `per_turn` events numbered from 0, then calls the `tick` activity
/// (ending the turn), `turns` times; then emits "done" and returns the
/// number of events emitted.
async fn emitter(
    ctx: OrchestrationContext,
    (turns, per_turn): (u64, u64),
) -> Result<u64, OrchestrationError> {
    let mut i = 0;
    for t in 0..turns {
        for _ in 0..per_turn {
            ctx.emit_event("e", &i)?;
            i += 1;
        }
        let _: u64 = ctx.call_activity("tick", &t).await?;
    }
    ctx.emit_event("done", &i)?;
    Ok(i)
}

async fn tick(_ctx: ActivityContext, t: u64) -> Result<u64, Infallible> {
    Ok(t)
}

fn registry() -> Registry {
    Registry::new()
        .orchestration("emitter", emitter)
        .activity("tick", tick)
}

/// A registry whose `tick` waits at `gate`.
fn gated_registry(gate: &Gate) -> Registry {
    let gate = gate.clone();
    Registry::new().orchestration("emitter", emitter).activity(
        "tick",
        move |_ctx: ActivityContext, t: u64| {
            let gate = gate.clone();
            async move {
                gate.pass().await;
                Ok::<_, Infallible>(t)
            }
        },
    )
}

/// What `emitter` with `n` events in total must leave in the stream.
fn expected(n: u64) -> Vec<(u64, String, Value)> {
    let mut out: Vec<(u64, String, Value)> = (0..n).map(|i| (i + 1, "e".to_owned(), json!(i))).collect();
    out.push((n + 1, "done".to_owned(), json!(n)));
    out
}

/// Reads a watch to its end, failing if it stalls.
async fn drain(watch: impl Stream<Item = durable_core::Result<StreamEvent>>) -> Vec<StreamEvent> {
    let mut watch = Box::pin(watch);
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, watch.next()).await {
            Ok(Some(event)) => out.push(event.expect("watch yields events")),
            Ok(None) => return out,
            Err(_) => panic!("the watch stalled after {} events", out.len()),
        }
    }
}

/// The next item of a watch, failing if it stalls.
async fn next_event<S>(watch: &mut S) -> Option<StreamEvent>
where
    S: Stream<Item = durable_core::Result<StreamEvent>> + Unpin,
{
    tokio::time::timeout(WAIT, watch.next())
        .await
        .expect("the watch stalled")
        .map(|r| r.expect("watch yields events"))
}

async fn ten_thousand(options: WorkerOptions) {
    let rig = Rig::with_options(registry(), options).await;
    let id = rig.client.start("emitter", &(10u64, 1000u64)).await.unwrap();
    let n: u64 = output_of(&rig.client, &id).await;
    assert_eq!(n, 10_000);
    let expected = expected(10_000);

    let one_page = rig.client.get_events(&id, 0, 10_000).await.unwrap();
    assert_eq!(one_page.events.len(), 10_000);
    assert!(!one_page.finished, "the 10,001st event is still to read");
    assert_eq!(one_page.next_cursor, 10_000);
    assert_eq!(summary(&read_all(&rig.client, &id, 10_000).await), expected);
    assert_eq!(summary(&read_all(&rig.client, &id, 999).await), expected);
    assert_eq!(summary(&drain(rig.client.watch_events(&id, 0)).await), expected);
    let meta = rig.client.get_instance(&id).await.unwrap().unwrap();
    assert_eq!(meta.stream_len, 10_001);
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_in_order_without_gaps() {
    ten_thousand(WorkerOptions::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_replay_at_every_turn_appends_nothing_twice() {
    ten_thousand(WorkerOptions::new().cache_capacity(0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_from_every_cursor() {
    let rig = Rig::new(registry()).await;
    let id = rig.client.start("emitter", &(6u64, 20u64)).await.unwrap();
    output_of::<u64>(&rig.client, &id).await;
    let expected = expected(120);
    let n = expected.len() as u64;
    for k in 0..=n + 2 {
        let rest: Vec<_> = expected.iter().filter(|(seq, ..)| *seq > k).cloned().collect();
        let page = rig.client.get_events(&id, k, 10_000).await.unwrap();
        assert_eq!(summary(&page.events), rest, "after {k}");
        assert_eq!(page.next_cursor, k.max(n));
        assert!(page.finished);

        // Small pages from k on.
        let mut cursor = k;
        let mut got = Vec::new();
        loop {
            let page = rig.client.get_events(&id, cursor, 7).await.unwrap();
            assert!(page.events.len() <= 7);
            got.extend(page.events);
            if page.finished {
                break;
            }
            assert!(
                page.next_cursor > cursor,
                "a page that is not the last moves the cursor"
            );
            cursor = page.next_cursor;
        }
        assert_eq!(summary(&got), rest, "paging after {k}");

        assert_eq!(
            summary(&drain(rig.client.watch_events(&id, k)).await),
            rest,
            "watch after {k}"
        );
    }
    // A limit of 0 still reads one event.
    assert_eq!(rig.client.get_events(&id, 0, 0).await.unwrap().events.len(), 1);
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_polls_during_the_run_gets_everything_once() {
    let rig = Rig::new(registry()).await;
    let id = rig.client.start("emitter", &(40u64, 25u64)).await.unwrap();
    let mut cursor = 0;
    let mut got = Vec::new();
    loop {
        let page = rig.client.get_events(&id, cursor, 37).await.unwrap();
        cursor = page.next_cursor;
        got.extend(page.events);
        if page.finished {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(summary(&got), expected(1000));
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_watcher_sees_everything() {
    let rig = Rig::new(registry()).await;
    let id = rig.client.start("emitter", &(5u64, 30u64)).await.unwrap();
    wait_done(&rig.client, &id).await;
    assert_eq!(
        summary(&drain(rig.client.watch_events(&id, 0)).await),
        expected(150)
    );
    // A watcher already at the end of a finished stream ends at once.
    assert!(drain(rig.client.watch_events(&id, 151)).await.is_empty());
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_is_live_and_ends_right_after_the_last_event() {
    let gate = Gate::new();
    let rig = Rig::new(gated_registry(&gate)).await;
    let id = rig.client.start("emitter", &(3u64, 2u64)).await.unwrap();
    let mut watch = Box::pin(rig.client.watch_events(&id, 0));
    let expected = expected(6);
    for turn in 0..3 {
        // Two events arrive while the orchestration waits at the gate.
        for i in 0..2 {
            let event = next_event(&mut watch).await.expect("an event");
            let (seq, name, payload) = &expected[turn * 2 + i];
            let got: Value = event.payload.parse().unwrap();
            assert_eq!((&event.seq, &event.name, &got), (seq, name, payload));
        }
        let meta = rig.client.get_instance(&id).await.unwrap().unwrap();
        assert_eq!(meta.status, RuntimeStatus::Running);
        // Nothing more can come before the gate opens.
        assert!(tokio::time::timeout(Duration::from_millis(100), watch.next())
            .await
            .is_err());
        gate.open(1);
    }
    let last = next_event(&mut watch).await.expect("the last event");
    assert_eq!(
        (last.seq, last.name.as_str(), last.payload.as_str()),
        (7, "done", "6")
    );
    assert!(
        next_event(&mut watch).await.is_none(),
        "the watch ends after the last event"
    );
    assert_eq!(wait_done(&rig.client, &id).await.status, RuntimeStatus::Completed);
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_end_when_the_instance_fails_or_is_terminated() {
    let gate = Gate::new();
    let rig = Rig::new(gated_registry(&gate).orchestration(
        "fails",
        |ctx: OrchestrationContext, (): ()| async move {
            ctx.emit_event("before", &1)?;
            let _: u64 = ctx.call_activity("tick", &0u64).await?;
            ctx.emit_event("last words", &2)?;
            Err::<(), _>(OrchestrationError::Timeout("deliberate".into()))
        },
    ))
    .await;
    let failing = rig.client.start("fails", &()).await.unwrap();
    let terminated = rig.client.start("emitter", &(3u64, 2u64)).await.unwrap();
    let watch_failing = tokio::spawn(drain(rig.client.watch_events(&failing, 0)));
    let watch_terminated = tokio::spawn(drain(rig.client.watch_events(&terminated, 0)));
    common::wait_stream_len(&rig.client, &terminated, 2).await;
    rig.client.terminate(&terminated, Some("stop")).await.unwrap();
    gate.open(1); // for "fails" (or the terminated one, which drops it)
    gate.open(1);

    let events = watch_failing.await.unwrap();
    assert_eq!(
        summary(&events),
        [
            (1, "before".to_owned(), json!(1)),
            (2, "last words".to_owned(), json!(2))
        ]
    );
    assert_eq!(
        wait_done(&rig.client, &failing).await.status,
        RuntimeStatus::Failed
    );
    let events = watch_terminated.await.unwrap();
    assert_eq!(summary(&events), expected(2)[..2].to_vec());
    assert_eq!(
        wait_done(&rig.client, &terminated).await.status,
        RuntimeStatus::Terminated
    );
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_watchers_of_one_instance_see_the_same_stream() {
    let gate = Gate::new();
    let rig = Rig::new(gated_registry(&gate)).await;
    let id = rig.client.start("emitter", &(10u64, 30u64)).await.unwrap();
    let watchers: Vec<_> = (0..16)
        .map(|i| tokio::spawn(drain(rig.client.watch_events(&id, i * 10))))
        .collect();
    gate.open(10);
    let expected = expected(300);
    for (i, w) in watchers.into_iter().enumerate() {
        let got = w.await.unwrap();
        assert_eq!(summary(&got), expected[i * 10..].to_vec(), "watcher {i}");
    }
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_loses_nothing() {
    let rig = Rig::new(registry()).await;
    let id = rig.client.start("emitter", &(30u64, 100u64)).await.unwrap();
    let client = rig.client.clone();
    let slow = tokio::spawn({
        let id = id.clone();
        async move {
            let mut watch = Box::pin(client.watch_events(&id, 0));
            let mut got = Vec::new();
            while let Some(event) = watch.next().await {
                got.push(event.unwrap());
                if got.len() % 100 == 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            got
        }
    });
    // Another takes one event, then stalls until the instance is done.
    let mut stalled = Box::pin(rig.client.watch_events(&id, 0));
    let first = stalled.next().await.unwrap().unwrap();
    wait_done(&rig.client, &id).await;
    let mut rest = drain(stalled).await;
    rest.insert(0, first);

    let expected = expected(3000);
    assert_eq!(summary(&slow.await.unwrap()), expected);
    assert_eq!(summary(&rest), expected);
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_instances_have_separate_streams() {
    let rig = Rig::new(registry()).await;
    let ids: Vec<InstanceId> =
        futures::future::join_all((0..4).map(|_| rig.client.start("emitter", &(5u64, 40u64))))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    for id in &ids {
        wait_done(&rig.client, id).await;
        let events = read_all(&rig.client, id, 1000).await;
        assert!(events.iter().all(|e| e.instance_id == *id));
        assert_eq!(summary(&events), expected(200));
    }
    rig.shutdown().await;
}

async fn looping(ctx: OrchestrationContext, (round, rounds): (u64, u64)) -> Result<u64, OrchestrationError> {
    for i in 0..5u64 {
        ctx.emit_event("round", &json!([round, i]))?;
    }
    let _: u64 = ctx.call_activity("tick", &round).await?;
    if round + 1 < rounds {
        return ctx.continue_as_new(&(round + 1, rounds)).await;
    }
    Ok(round)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbering_continues_across_continue_as_new() {
    for options in [WorkerOptions::new(), WorkerOptions::new().cache_capacity(0)] {
        let rig = Rig::with_options(registry().orchestration("looping", looping), options).await;
        let id = rig.client.start("looping", &(0u64, 3u64)).await.unwrap();
        let watched = tokio::spawn(drain(rig.client.watch_events(&id, 0)));
        let meta = wait_done(&rig.client, &id).await;
        assert_eq!(meta.status, RuntimeStatus::Completed, "{:?}", meta.failure);
        assert_eq!(meta.stream_len, 15);
        let events = read_all(&rig.client, &id, 4).await;
        let want: Vec<(u64, String, Value)> = (0..15u64)
            .map(|k| (k + 1, "round".to_owned(), json!([k / 5, k % 5])))
            .collect();
        assert_eq!(summary(&events), want);
        assert_eq!(
            summary(&watched.await.unwrap()),
            want,
            "a watcher follows across executions"
        );
        for chunk in events.chunks(5) {
            assert!(chunk.iter().all(|e| e.execution_id == chunk[0].execution_id));
        }
        assert_ne!(events[0].execution_id, events[5].execution_id);
        assert_ne!(events[5].execution_id, events[10].execution_id);
        assert_eq!(events[14].execution_id, meta.execution_id);
        rig.shutdown().await;
    }
}

/// Emits a payload of each size (a string of that many characters, two
/// bytes more as JSON) and reports what happened to each.
async fn sized(ctx: OrchestrationContext, sizes: Vec<usize>) -> Result<Vec<String>, OrchestrationError> {
    let mut report = Vec::new();
    for n in sizes {
        match ctx.emit_event("sized", &"x".repeat(n)) {
            Ok(()) => report.push(format!("ok:{n}")),
            Err(OrchestrationError::EventTooLarge { name, size, limit }) => {
                report.push(format!("too large:{name}:{size}:{limit}"));
            }
            Err(e) => return Err(e),
        }
    }
    for name in [
        String::new(),
        "n".repeat(MAX_NAME_LEN + 1),
        "n".repeat(MAX_NAME_LEN),
    ] {
        match ctx.emit_event(&name, &"named") {
            Ok(()) => report.push(format!("name ok:{}", name.len())),
            Err(OrchestrationError::InvalidName { name, .. }) => {
                report.push(format!("bad name:{}", name.len()))
            }
            Err(e) => return Err(e),
        }
    }
    // The orchestration goes on after the errors.
    let _: u64 = ctx.call_activity("tick", &0u64).await?;
    ctx.emit_event("after", &report.len())?;
    Ok(report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_event_cap_is_a_typed_error_and_appends_nothing() {
    let rig = Rig::new(registry().orchestration("sized", sized)).await;
    let limit = 64 * 1024;
    let id = rig
        .client
        .start("sized", &vec![10, limit - 2, limit - 1, 5 * limit, 3])
        .await
        .unwrap();
    let report: Vec<String> = output_of(&rig.client, &id).await;
    assert_eq!(
        report,
        [
            "ok:10".to_owned(),
            format!("ok:{}", limit - 2),
            format!("too large:sized:{}:{limit}", limit + 1),
            format!("too large:sized:{}:{limit}", 5 * limit + 2),
            "ok:3".to_owned(),
            "bad name:0".to_owned(),
            format!("bad name:{}", MAX_NAME_LEN + 1),
            format!("name ok:{MAX_NAME_LEN}"),
        ]
    );
    let events = read_all(&rig.client, &id, 100).await;
    let sizes: Vec<(u64, usize)> = events
        .iter()
        .map(|e| (e.seq, e.payload.parse::<String>().map_or(0, |s| s.len())))
        .collect();
    assert_eq!(sizes, [(1, 10), (2, limit - 2), (3, 3), (4, 5), (5, 0)]);
    assert_eq!(events[3].name, "n".repeat(MAX_NAME_LEN));
    assert_eq!(events[4].name, "after");
    assert_eq!(rig.client.get_instance(&id).await.unwrap().unwrap().stream_len, 5);
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_event_cap_is_configurable() {
    let limits = Limits {
        stream_event_max_bytes: 100,
        ..Limits::default()
    };
    let rig = Rig::with_options(
        registry().orchestration("sized", sized),
        WorkerOptions::new().limits(limits).cache_capacity(0),
    )
    .await;
    let id = rig.client.start("sized", &vec![98, 99, 1000]).await.unwrap();
    let report: Vec<String> = output_of(&rig.client, &id).await;
    assert_eq!(
        report[..3],
        ["ok:98", "too large:sized:101:100", "too large:sized:1002:100"]
    );
    let events = read_all(&rig.client, &id, 100).await;
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_len_is_reported_while_running_and_after() {
    let gate = Gate::new();
    let rig = Rig::new(gated_registry(&gate)).await;
    let id = rig.client.start("emitter", &(3u64, 4u64)).await.unwrap();
    for turn in 1..=3u64 {
        let meta = common::wait_stream_len(&rig.client, &id, turn * 4).await;
        assert_eq!(meta.stream_len, turn * 4, "no more than the committed turns");
        assert_eq!(meta.status, RuntimeStatus::Running);
        gate.open(1);
    }
    assert_eq!(wait_done(&rig.client, &id).await.stream_len, 13);
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_deletes_the_stream() {
    let rig = Rig::new(registry()).await;
    let id = iid("purged");
    let start = |input: (u64, u64)| {
        rig.client.start_with(
            StartOptions::new("emitter", &input)
                .unwrap()
                .instance_id(id.clone()),
        )
    };
    start((2, 10)).await.unwrap();
    wait_done(&rig.client, &id).await;
    assert_eq!(read_all(&rig.client, &id, 100).await.len(), 21);
    rig.client.purge(&id).await.unwrap();
    let err = rig.client.get_events(&id, 0, 100).await.unwrap_err();
    assert!(matches!(&err, Error::InstanceNotFound(i) if *i == id), "{err:?}");
    let mut watch = Box::pin(rig.client.watch_events(&id, 0));
    let first = tokio::time::timeout(WAIT, watch.next()).await.unwrap();
    assert!(
        matches!(first, Some(Err(Error::InstanceNotFound(_)))),
        "{first:?}"
    );
    assert!(tokio::time::timeout(WAIT, watch.next()).await.unwrap().is_none());

    // A new instance under the same id starts a new stream at 1.
    start((1, 3)).await.unwrap();
    wait_done(&rig.client, &id).await;
    assert_eq!(summary(&read_all(&rig.client, &id, 100).await), expected(3));
    rig.shutdown().await;
}

async fn clock(ctx: OrchestrationContext, turns: u64) -> Result<(), OrchestrationError> {
    for t in 0..turns {
        ctx.emit_event("now", &ctx.current_utc_datetime())?;
        ctx.emit_event("execution", &ctx.execution_id())?;
        let _: u64 = ctx.call_activity("pause", &t).await?;
    }
    Ok(())
}

/// Takes a few milliseconds, so that each turn of `clock` falls in a
/// millisecond of its own (turns within one millisecond share it).
async fn pause(_ctx: ActivityContext, t: u64) -> Result<u64, Infallible> {
    tokio::time::sleep(Duration::from_millis(3)).await;
    Ok(t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emitted_at_is_the_orchestration_time_and_execution_id_is_set() {
    for options in [WorkerOptions::new(), WorkerOptions::new().cache_capacity(0)] {
        let registry = registry().orchestration("clock", clock).activity("pause", pause);
        let rig = Rig::with_options(registry, options).await;
        let id = rig.client.start("clock", &4u64).await.unwrap();
        let meta = wait_done(&rig.client, &id).await;
        let events = read_all(&rig.client, &id, 100).await;
        assert_eq!(events.len(), 8);
        for pair in events.chunks(2) {
            let now: DateTime<Utc> = pair[0].payload_as().unwrap();
            assert_eq!(
                pair[0].emitted_at, now,
                "emitted_at is the orchestration time of the turn"
            );
            assert_eq!(pair[1].emitted_at, now);
            let execution: String = pair[1].payload_as().unwrap();
            assert_eq!(pair[0].execution_id, execution);
            assert_eq!(pair[1].execution_id, meta.execution_id);
        }
        assert!(events.windows(2).all(|w| w[0].emitted_at <= w[1].emitted_at));
        assert!(
            events[0].emitted_at < events[2].emitted_at,
            "each turn has its own time"
        );
        rig.shutdown().await;
    }
}

/// The backstop of exactly-once: even if replay logic had a bug and a turn
/// carried an emit again, the store refuses it (the key execution + emit
/// index), and refuses a sequence number used twice; the whole turn is
/// rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_refuses_an_emit_or_a_sequence_number_stored_twice() {
    use durable_core::store::{CommitBatch, TurnCommit, TurnOutcome};
    use durable_core::StoreError;

    let store = common::memory_store().await;
    let client = Client::new(store.clone());
    let id = client.start("emitter", &()).await.unwrap();
    let lease = Duration::from_secs(30);

    let claim = || async {
        let mut items = store.fetch_orchestrations("tester", lease, 10).await.unwrap();
        assert_eq!(items.len(), 1);
        items.pop().unwrap()
    };

    let item = claim().await;
    let commit = |turn: TurnCommit| async {
        let batch = CommitBatch {
            turns: vec![turn],
            ..CommitBatch::default()
        };
        store.commit("tester", lease, &batch).await
    };
    let outcome = commit(common::emitting_turn(&item, vec![(1, 0), (2, 1)]))
        .await
        .unwrap();
    assert_eq!(outcome, [TurnOutcome::Committed]);

    for (what, stream) in [
        ("emit index 1 again", vec![(3, 1)]),
        ("seq 2 again", vec![(2, 2)]),
    ] {
        client.raise_event(&id, "poke", &()).await.unwrap();
        let item = claim().await;
        let err = commit(common::emitting_turn(&item, stream))
            .await
            .expect_err(what);
        assert!(matches!(err, StoreError::Conflict(_)), "{what}: {err:?}");
        store
            .abandon_orchestration("tester", &id, Duration::ZERO)
            .await
            .unwrap();
        // Nothing of the refused turn was written.
        let meta = client.get_instance(&id).await.unwrap().unwrap();
        assert_eq!(meta.stream_len, 2, "{what}");
        let events = read_all(&client, &id, 100).await;
        assert_eq!(
            events
                .iter()
                .map(|e| (e.seq, e.payload.as_str()))
                .collect::<Vec<_>>(),
            [(1, "0"), (2, "1")],
            "{what}"
        );
    }
}
