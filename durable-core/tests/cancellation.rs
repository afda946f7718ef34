//! Cancel safety of the client: a call whose future is dropped at any
//! await (a timeout, a lost `select!`, an HTTP handler whose client hung
//! up) leaves the store consistent and usable, and never undoes what
//! another call was told is done.
//!
//! Each test drives thousands of client calls, polls each one a random
//! number of times (giving the database threads a moment in between) and
//! drops it, with a worker running; then checks that the store still
//! works, that no write transaction was left open, and that every call
//! that was answered took effect.

mod common;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use common::{iid, Rng};
use durable_core::prelude::*;
use durable_core::store::SqliteStoreOptions;
use sqlx::{Connection, SqliteConnection};

/// The value of the "go" event that ends a `collect` instance.
const STOP: u64 = u64::MAX;

/// Takes events named "go" until one holds [`STOP`], doubling each value
/// with an activity and emitting it; completes with the values received.
async fn collect(ctx: OrchestrationContext, _: ()) -> Result<Vec<u64>, OrchestrationError> {
    let mut received = Vec::new();
    loop {
        let value: u64 = ctx.wait_for_external_event("go").await?;
        if value == STOP {
            return Ok(received);
        }
        let doubled: u64 = ctx.call_activity("double", &value).await?;
        ctx.emit_event("got", &doubled)?;
        received.push(value);
    }
}

async fn double(_ctx: ActivityContext, value: u64) -> Result<u64, std::convert::Infallible> {
    Ok(value.wrapping_mul(2))
}

fn registry() -> Registry {
    Registry::new()
        .orchestration("collect", collect)
        .activity("double", double)
}

/// What a call that was polled and dropped did, as far as its caller
/// knows.
enum Answer<T> {
    /// It finished with this result before it was dropped.
    Done(T),
    /// It was dropped before it finished.
    Dropped,
}

/// Polls `call` up to `polls` times, letting other threads run a little
/// between polls, and drops it if it has not finished by then.
async fn poll_then_drop<T>(rng: &mut Rng, call: impl Future<Output = T>, polls: u32) -> Answer<T> {
    let mut call: Pin<Box<_>> = Box::pin(call);
    for _ in 0..polls {
        if let Poll::Ready(value) = futures::poll!(call.as_mut()) {
            return Answer::Done(value);
        }
        for _ in 0..rng.below(4) {
            tokio::task::yield_now().await;
        }
        if rng.chance(0.3) {
            std::thread::sleep(Duration::from_micros(rng.below(300)));
        }
    }
    Answer::Dropped
}

/// Whether another connection to the file can take the write lock at
/// once: nobody left a write transaction open.
async fn write_lock_is_free(path: &Path) -> bool {
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("a second connection");
    sqlx::query("PRAGMA busy_timeout = 2000")
        .execute(&mut conn)
        .await
        .expect("busy timeout");
    let free = sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await.is_ok();
    if free {
        sqlx::query("ROLLBACK")
            .execute(&mut conn)
            .await
            .expect("rollback");
    }
    free
}

/// Client calls (starts, raised events, reads) on `store`, each dropped
/// after a random number of polls, with a worker running; then checks
/// that the store takes writes and that every answered call took effect.
async fn client_calls_dropped_at_any_poll(store: Arc<dyn Store>, seed: u64) {
    let worker = Worker::start(store.clone(), registry()).expect("worker");
    let client = Client::new(store.clone());
    let mut rng = Rng::new(seed);

    // The instances calls aim at, whether each one's start was answered,
    // and the values of the events raised to it that were answered Ok.
    const INSTANCES: usize = 40;
    let mut started = [false; INSTANCES];
    let mut acknowledged: Vec<Vec<u64>> = vec![Vec::new(); INSTANCES];
    let mut raised: Vec<Vec<u64>> = vec![Vec::new(); INSTANCES];
    for round in 0..3000u64 {
        let i = rng.below(INSTANCES as u64) as usize;
        let polls = rng.below(12) as u32;
        let id = iid(&format!("cancel-{i}"));
        let what = rng.below(4);
        if !started[i] {
            let options = StartOptions::new("collect", &()).unwrap().instance_id(id.clone());
            match poll_then_drop(&mut rng, client.start_with(options), polls).await {
                // A start dropped after it was written, then tried again,
                // finds its instance.
                Answer::Done(Ok(_) | Err(Error::InstanceAlreadyExists(_))) => started[i] = true,
                Answer::Done(Err(e)) => panic!("seed {seed:#x}, round {round}: start failed: {e}"),
                Answer::Dropped => {}
            }
            continue;
        }
        match what {
            0 | 1 => {
                raised[i].push(round);
                match poll_then_drop(&mut rng, client.raise_event(&id, "go", &round), polls).await {
                    Answer::Done(Ok(())) => acknowledged[i].push(round),
                    Answer::Done(Err(e)) => panic!("seed {seed:#x}, round {round}: raise failed: {e}"),
                    // Maybe written, maybe not.
                    Answer::Dropped => {}
                }
            }
            2 => {
                if let Answer::Done(Err(e)) = poll_then_drop(&mut rng, client.get_instance(&id), polls).await
                {
                    panic!("seed {seed:#x}, round {round}: read failed: {e}");
                }
            }
            _ => {
                if let Answer::Done(Err(e)) =
                    poll_then_drop(&mut rng, client.get_events(&id, 0, 100), polls).await
                {
                    panic!("seed {seed:#x}, round {round}: stream read failed: {e}");
                }
            }
        }
    }

    // The store still takes writes.
    let probe = client
        .start_with(
            StartOptions::new("collect", &())
                .unwrap()
                .instance_id(iid("probe")),
        )
        .await;
    assert!(
        probe.is_ok(),
        "seed {seed:#x}: a start after the cancelled calls failed: {probe:?}"
    );

    // Every acknowledged event was delivered, once, in the order raised;
    // an event whose call was dropped was delivered at most once.
    for i in (0..INSTANCES).filter(|&i| started[i]) {
        let id = iid(&format!("cancel-{i}"));
        client
            .raise_event(&id, "go", &STOP)
            .await
            .unwrap_or_else(|e| panic!("seed {seed:#x}: {id}: the last raise failed: {e}"));
        let done = client
            .wait_for_completion(&id, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("seed {seed:#x}: {id} did not complete: {e}"));
        assert_eq!(
            done.status,
            RuntimeStatus::Completed,
            "seed {seed:#x}: {id}: {:?}",
            done.failure
        );
        let received: Vec<u64> = done.output_as().expect("an output of values");
        let delivered_acknowledged: Vec<u64> = received
            .iter()
            .copied()
            .filter(|v| acknowledged[i].contains(v))
            .collect();
        assert_eq!(
            delivered_acknowledged, acknowledged[i],
            "seed {seed:#x}: {id}: the acknowledged events, in order"
        );
        let mut seen = received.clone();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(
            seen.len(),
            received.len(),
            "seed {seed:#x}: {id}: an event delivered twice"
        );
        assert!(
            received.iter().all(|v| raised[i].contains(v)),
            "seed {seed:#x}: {id}: an event nobody raised"
        );
        let stream = client.get_events(&id, 0, 1000).await.expect("stream");
        let doubled: Vec<u64> = stream.events.iter().map(|e| e.payload_as().unwrap()).collect();
        let expected: Vec<u64> = received.iter().map(|v| v.wrapping_mul(2)).collect();
        assert_eq!(doubled, expected, "seed {seed:#x}: {id}: the stream");
    }
    worker.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_client_calls_dropped_at_any_poll_leave_the_store_consistent_and_lose_nothing_answered() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cancel.db");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::with_options(SqliteStoreOptions::file(path.to_string_lossy()))
            .await
            .expect("open"),
    );
    client_calls_dropped_at_any_poll(store, common::seed_from_env(0x5eed_0001)).await;
    assert!(
        write_lock_is_free(&path).await,
        "a cancelled call left a write transaction open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_client_calls_dropped_at_any_poll_leave_the_store_consistent_and_lose_nothing_answered() {
    let Some(pg) = common::TestPostgres::open().await else {
        return;
    };
    client_calls_dropped_at_any_poll(pg.store.clone(), common::seed_from_env(0x5eed_0003)).await;
    pg.cleanup().await;
}

/// A file store with no worker, and a client of it.
async fn file_store(dir: &Path) -> (Arc<dyn Store>, Client, std::path::PathBuf) {
    let path = dir.join("store.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(path.to_string_lossy()).await.expect("open"));
    (store.clone(), Client::new(store), path)
}

/// Fetches the one instance with messages and commits a turn of it that
/// emits `events` more stream events; returns the instance's stream
/// length after it.
async fn emit(store: &Arc<dyn Store>, events: u64) -> u64 {
    let items = store
        .fetch_orchestrations("test", Duration::from_secs(30), 10)
        .await
        .expect("fetch");
    assert_eq!(items.len(), 1, "one instance has messages");
    let seq = items[0].state.stream_seq;
    let emits = items[0].state.execution_emits;
    let stream = (1..=events).map(|i| (seq + i, emits + i - 1)).collect();
    let batch = durable_core::store::CommitBatch {
        turns: vec![common::emitting_turn(&items[0], stream)],
        ..Default::default()
    };
    let outcomes = store
        .commit("test", Duration::from_secs(30), &batch)
        .await
        .expect("commit");
    assert_eq!(outcomes, [durable_core::store::TurnOutcome::Committed]);
    seq + events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_commit_dropped_at_any_poll_is_written_whole_or_not_at_all_and_leaves_no_transaction() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, client, path) = file_store(dir.path()).await;
    let id = client
        .start_with(
            StartOptions::new("any", &())
                .unwrap()
                .instance_id(iid("dropped-commits")),
        )
        .await
        .expect("start");
    let seed = common::seed_from_env(0x5eed_0002);
    let mut rng = Rng::new(seed);
    let mut len = 0;
    // A message for the first turn to take.
    client.raise_event(&id, "next", &0).await.expect("raise");
    for round in 0..200 {
        let items = store
            .fetch_orchestrations("test", Duration::from_secs(30), 10)
            .await
            .expect("fetch");
        let item = &items[0];
        // Large enough for the commit of many round trips (rows bound
        // after the first query), or small enough for one.
        let events = if rng.chance(0.5) { 100 } else { 3 };
        let stream = (1..=events)
            .map(|i| (len + i, item.state.execution_emits + i - 1))
            .collect();
        let batch = durable_core::store::CommitBatch {
            turns: vec![common::emitting_turn(item, stream)],
            ..Default::default()
        };
        let polls = rng.below(6) as u32;
        let answered = match poll_then_drop(
            &mut rng,
            store.commit("test", Duration::from_secs(30), &batch),
            polls,
        )
        .await
        {
            Answer::Done(result) => Some(result.expect("commit")),
            Answer::Dropped => None,
        };
        // A message for the next turn. The writer runs it after whatever
        // the dropped commit still did, which is then settled.
        client.raise_event(&id, "next", &round).await.expect("raise");
        // The commit is written whole or not at all, and the store is
        // consistent.
        let meta = client
            .get_instance(&id)
            .await
            .expect("read")
            .expect("the instance");
        let stored = client
            .get_events(&id, 0, 10_000)
            .await
            .expect("stream")
            .events
            .len() as u64;
        assert_eq!(
            meta.stream_len, stored,
            "seed {seed:#x}, round {round}: the row and the stream agree"
        );
        assert!(
            stored == len || stored == len + events,
            "seed {seed:#x}, round {round}: a commit half-written: {len} + {events} -> {stored}"
        );
        if answered.is_some() {
            assert_eq!(
                stored,
                len + events,
                "seed {seed:#x}, round {round}: an answered commit"
            );
        }
        len = stored;
    }
    assert!(
        write_lock_is_free(&path).await,
        "seed {seed:#x}: a dropped commit left its transaction open"
    );
}

/// sqlx resets a statement whose reader went away, which ends the
/// snapshot it read; the store relies on that (a connection in the middle
/// of a read is given back as it is).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_read_dropped_between_rows_does_not_leave_its_connection_reading_an_old_snapshot() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, client, _path) = file_store(dir.path()).await;
    let id = client
        .start_with(
            StartOptions::new("any", &())
                .unwrap()
                .instance_id(iid("dropped-read")),
        )
        .await
        .expect("start");
    // More rows than a read connection buffers, so that its thread waits
    // between rows for the reader.
    let len = emit(&store, 3000).await;
    for round in 0..20u64 {
        let mut read = Box::pin(store.read_stream(&id, 0, 3000));
        assert!(futures::poll!(read.as_mut()).is_pending());
        tokio::time::sleep(Duration::from_millis(5)).await;
        drop(read);
        client.raise_event(&id, "next", &round).await.expect("raise");
        let len = emit(&store, 1).await.max(len);
        // The next read takes the connection the dropped one gave back,
        // with another statement (the same one would be reset first).
        let meta = client
            .get_instance(&id)
            .await
            .expect("read")
            .expect("the instance");
        assert_eq!(meta.stream_len, len, "round {round}: a read saw an old snapshot");
    }
}

/// A commit dropped after it reached the database (its runtime shut down
/// between the `COMMIT` and the signals that follow it) wrote events that
/// nobody announced. With polling off, the watchers of this process would
/// wait for ever: the next write, which finds the connection left behind,
/// tells them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_what_a_dropped_commit_wrote_reaches_the_watchers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("unannounced.db");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::with_options(SqliteStoreOptions::file(path.to_string_lossy()).poll_interval(None))
            .await
            .expect("open"),
    );
    let client = Client::new(store.clone());
    let id = client
        .start_with(
            StartOptions::new("any", &())
                .unwrap()
                .instance_id(iid("unannounced")),
        )
        .await
        .expect("start");
    let other = client.start("any", &()).await.expect("start another");
    let watcher = tokio::spawn({
        let mut events = client.watch_events(&id, 0);
        async move {
            use futures::StreamExt;
            events.next().await
        }
    });
    // The watcher read the empty stream and waits.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let items = store
        .fetch_orchestrations("test", Duration::from_secs(30), 10)
        .await
        .expect("fetch");
    let item = items.iter().find(|i| i.instance_id == id).expect("the instance");
    let batch = durable_core::store::CommitBatch {
        turns: vec![common::emitting_turn(item, vec![(1, 0)])],
        ..Default::default()
    };
    {
        // Sent, then left: the database thread writes it whole.
        let mut commit = Box::pin(store.commit("test", Duration::from_secs(30), &batch));
        assert!(futures::poll!(commit.as_mut()).is_pending());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        client.get_instance(&id).await.unwrap().unwrap().stream_len,
        1,
        "written"
    );
    assert!(!watcher.is_finished(), "and not announced");
    // Any write next (here a raised event to another instance).
    client.raise_event(&other, "poke", &()).await.expect("raise");
    let event = tokio::time::timeout(Duration::from_secs(5), watcher)
        .await
        .expect("the watcher was told")
        .expect("the watcher ran");
    assert_eq!(event.expect("an event").expect("no error").seq, 1);
}
