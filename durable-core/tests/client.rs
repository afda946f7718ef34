//! The client API: starting (instance ids, start-at times, duplicates),
//! instance metadata, waiting, raising events, terminate, suspend and
//! resume, purge, and listing with filters and paging.

mod common;

use std::collections::HashSet;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{iid, output_of, read_all, wait_custom_status, wait_done, Gate, Rig};
use durable_core::prelude::*;
use durable_core::InstanceQuery;
use serde_json::{json, Value};

/// Emits its input, then waits for "go" and returns what came with it.
async fn waiter(ctx: OrchestrationContext, input: Value) -> Result<Value, OrchestrationError> {
    ctx.emit_event("input", &input)?;
    ctx.set_custom_status(&json!({ "waiting": input }))?;
    let go: Value = ctx.wait_for_external_event("go").await?;
    ctx.emit_event("go", &go)?;
    if go == json!("fail") {
        return Err(OrchestrationError::Timeout("told to fail".into()));
    }
    Ok(json!({ "input": input, "go": go }))
}

async fn starts_at(ctx: OrchestrationContext, _: ()) -> Result<DateTime<Utc>, OrchestrationError> {
    Ok(ctx.current_utc_datetime())
}

async fn event_then_activity(ctx: OrchestrationContext, _: ()) -> Result<String, OrchestrationError> {
    let ev: String = ctx.wait_for_external_event("early").await?;
    let echoed: String = ctx.call_activity("echo", &ev).await?;
    ctx.create_timer_in(Duration::from_millis(10)).await?;
    Ok(echoed)
}

async fn echo(_ctx: ActivityContext, v: String) -> Result<String, Infallible> {
    Ok(v)
}

fn registry() -> Registry {
    Registry::new()
        .orchestration("waiter", waiter)
        .orchestration("other", waiter)
        .orchestration("starts_at", starts_at)
        .orchestration("event_then_activity", event_then_activity)
        .activity("echo", echo)
}

async fn rig() -> Rig {
    Rig::new(registry()).await
}

fn is_not_found(e: &Error, id: &InstanceId) -> bool {
    matches!(e, Error::InstanceNotFound(i) if i == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_with_an_instance_id_and_reject_a_running_duplicate() {
    let rig = rig().await;
    let id = iid("order-42");
    let started = rig
        .client
        .start_with(StartOptions::new("waiter", &1).unwrap().instance_id(id.clone()))
        .await
        .unwrap();
    assert_eq!(started, id);
    let first = rig.client.wait_for_start(&id, common::WAIT).await.unwrap();
    assert_eq!(first.instance_id, id);
    assert_eq!(first.name, "waiter");

    let err = rig
        .client
        .start_with(StartOptions::new("waiter", &2).unwrap().instance_id(id.clone()))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InstanceAlreadyExists(i) if *i == id),
        "{err:?}"
    );
    // The running instance is untouched.
    let meta = rig.client.get_instance(&id).await.unwrap().unwrap();
    assert_eq!(
        (meta.input_as::<Value>().unwrap(), meta.execution_id),
        (json!(1), first.execution_id.clone())
    );

    // Once terminal, the id can be used again: a new instance with a new
    // stream.
    rig.client.raise_event(&id, "go", &"x").await.unwrap();
    wait_done(&rig.client, &id).await;
    assert_eq!(read_all(&rig.client, &id, 100).await.len(), 2);
    rig.client
        .start_with(StartOptions::new("waiter", &3).unwrap().instance_id(id.clone()))
        .await
        .unwrap();
    wait_custom_status(&rig.client, &id, json!({ "waiting": 3 })).await;
    let events = read_all(&rig.client, &id, 100).await;
    assert_eq!(common::summary(&events), [(1, "input".to_owned(), json!(3))]);
    let meta = rig.client.get_instance(&id).await.unwrap().unwrap();
    assert_ne!(meta.execution_id, first.execution_id);
    assert_eq!(
        (meta.status, meta.stream_len, meta.output),
        (RuntimeStatus::Running, 1, None)
    );
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_at_delays_the_first_turn() {
    let rig = rig().await;
    let start_at = Utc::now() + chrono::Duration::milliseconds(1500);
    let id = rig
        .client
        .start_with(StartOptions::new("starts_at", &()).unwrap().start_at(start_at))
        .await
        .unwrap();
    let meta = rig.client.get_instance(&id).await.unwrap().unwrap();
    assert_eq!(meta.status, RuntimeStatus::Pending);
    assert!(meta.created_at < start_at);

    let err = rig
        .client
        .wait_for_start(&id, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::Timeout(i) if *i == id), "{err:?}");
    assert_eq!(
        rig.client.get_instance(&id).await.unwrap().unwrap().status,
        RuntimeStatus::Pending
    );

    rig.client.wait_for_start(&id, common::WAIT).await.unwrap();
    let first_turn: DateTime<Utc> = output_of(&rig.client, &id).await;
    assert!(
        first_turn >= start_at,
        "first turn at {first_turn}, asked for {start_at}"
    );
    rig.shutdown().await;
}

/// An event raised to an instance that has not started yet (start-at in
/// the future) waits for it.
async fn event_before_a_delayed_start(options: WorkerOptions) {
    let rig = Rig::with_options(registry(), options).await;
    let start_at = Utc::now() + chrono::Duration::milliseconds(500);
    let id = rig
        .client
        .start_with(
            StartOptions::new("event_then_activity", &())
                .unwrap()
                .start_at(start_at),
        )
        .await
        .unwrap();
    rig.client.raise_event(&id, "early", &"bird").await.unwrap();
    let out: String = output_of(&rig.client, &id).await;
    assert_eq!(out, "bird");
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_raised_before_a_delayed_start_is_delivered() {
    event_before_a_delayed_start(WorkerOptions::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_raised_before_a_delayed_start_survives_replay() {
    event_before_a_delayed_start(WorkerOptions::new().cache_capacity(0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_reports_every_field() {
    let rig = rig().await;
    let before = Utc::now();
    let id = rig.client.start("waiter", &json!({ "x": 1 })).await.unwrap();
    let running = wait_custom_status(&rig.client, &id, json!({ "waiting": { "x": 1 } })).await;
    assert_eq!(running.instance_id, id);
    assert_eq!(running.name, "waiter");
    assert_eq!(running.status, RuntimeStatus::Running);
    assert_eq!(running.input_as::<Value>().unwrap(), json!({ "x": 1 }));
    assert_eq!(running.output, None);
    assert_eq!(running.failure, None);
    assert_eq!(running.completed_at, None);
    assert_eq!(running.stream_len, 1);
    assert!(!running.execution_id.is_empty());
    // Stored at millisecond precision.
    assert!(running.created_at.timestamp_millis() >= before.timestamp_millis());
    assert!(running.last_updated_at >= running.created_at);

    rig.client.raise_event(&id, "go", &"now").await.unwrap();
    let done = wait_done(&rig.client, &id).await;
    assert_eq!(done.status, RuntimeStatus::Completed);
    assert_eq!(
        done.output_as::<Value>().unwrap(),
        json!({ "input": { "x": 1 }, "go": "now" })
    );
    assert_eq!(
        done.custom_status_as::<Value>().unwrap(),
        Some(json!({ "waiting": { "x": 1 } }))
    );
    assert_eq!(done.failure, None);
    assert_eq!(done.stream_len, 2);
    assert_eq!(done.created_at, running.created_at);
    let completed = done.completed_at.expect("completed_at");
    assert!(completed >= running.last_updated_at);
    assert!(done.last_updated_at >= running.last_updated_at);
    assert!(completed <= Utc::now());

    // A failure is reported with its details and no output.
    let id = rig.client.start("waiter", &2).await.unwrap();
    wait_custom_status(&rig.client, &id, json!({ "waiting": 2 })).await;
    rig.client.raise_event(&id, "go", &"fail").await.unwrap();
    let failed = wait_done(&rig.client, &id).await;
    assert_eq!(failed.status, RuntimeStatus::Failed);
    assert_eq!(failed.output, None);
    let failure = failed.failure.expect("failure details");
    assert_eq!(failure.error_type, "OrchestrationError");
    assert_eq!(failure.message, "timed out waiting for told to fail");
    assert!(failed.completed_at.is_some());
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_time_out_and_report_missing_instances() {
    let rig = rig().await;
    let id = rig.client.start("waiter", &1).await.unwrap();
    let began = Instant::now();
    let err = rig
        .client
        .wait_for_completion(&id, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::Timeout(i) if *i == id), "{err:?}");
    assert!(began.elapsed() >= Duration::from_millis(300));
    let started = rig.client.wait_for_start(&id, common::WAIT).await.unwrap();
    assert_ne!(started.status, RuntimeStatus::Pending);

    let missing = iid("nobody");
    let err = rig
        .client
        .wait_for_completion(&missing, common::WAIT)
        .await
        .unwrap_err();
    assert!(is_not_found(&err, &missing), "{err:?}");
    let err = rig
        .client
        .wait_for_start(&missing, common::WAIT)
        .await
        .unwrap_err();
    assert!(is_not_found(&err, &missing), "{err:?}");
    assert!(rig.client.get_instance(&missing).await.unwrap().is_none());
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_on_missing_or_terminal_instances_are_typed_errors() {
    let rig = rig().await;
    let missing = iid("missing");
    let err = rig.client.raise_event(&missing, "go", &1).await.unwrap_err();
    assert!(is_not_found(&err, &missing), "{err:?}");
    let err = rig.client.terminate(&missing, None).await.unwrap_err();
    assert!(is_not_found(&err, &missing), "{err:?}");
    let err = rig.client.suspend(&missing, None).await.unwrap_err();
    assert!(is_not_found(&err, &missing), "{err:?}");
    let err = rig.client.resume(&missing, None).await.unwrap_err();
    assert!(is_not_found(&err, &missing), "{err:?}");
    let err = rig.client.purge(&missing).await.unwrap_err();
    assert!(is_not_found(&err, &missing), "{err:?}");
    let err = rig.client.get_events(&missing, 0, 10).await.unwrap_err();
    assert!(is_not_found(&err, &missing), "{err:?}");

    let id = rig.client.start("waiter", &1).await.unwrap();
    wait_custom_status(&rig.client, &id, json!({ "waiting": 1 })).await;
    rig.client.raise_event(&id, "go", &1).await.unwrap();
    wait_done(&rig.client, &id).await;
    let terminal = |e: &Error, op: &str| {
        matches!(e, Error::InvalidState { instance_id, status: RuntimeStatus::Completed, operation }
            if *instance_id == id && *operation == op)
    };
    let err = rig.client.raise_event(&id, "go", &2).await.unwrap_err();
    assert!(terminal(&err, "raise an event to"), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("cannot raise an event to instance '{id}': it is Completed")
    );
    let err = rig.client.terminate(&id, Some("late")).await.unwrap_err();
    assert!(terminal(&err, "terminate"), "{err:?}");
    let err = rig.client.suspend(&id, None).await.unwrap_err();
    assert!(terminal(&err, "suspend"), "{err:?}");
    let err = rig.client.resume(&id, None).await.unwrap_err();
    assert!(terminal(&err, "resume"), "{err:?}");
    // Nothing changed.
    let meta = rig.client.get_instance(&id).await.unwrap().unwrap();
    assert_eq!(meta.status, RuntimeStatus::Completed);
    assert_eq!(meta.output_as::<Value>().unwrap(), json!({ "input": 1, "go": 1 }));
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_ends_a_running_instance() {
    let rig = rig().await;
    let id = rig.client.start("waiter", &1).await.unwrap();
    wait_custom_status(&rig.client, &id, json!({ "waiting": 1 })).await;
    rig.client.terminate(&id, Some("enough")).await.unwrap();
    let meta = wait_done(&rig.client, &id).await;
    assert_eq!(meta.status, RuntimeStatus::Terminated);
    assert_eq!(meta.output_as::<Value>().unwrap(), json!("enough"));
    assert_eq!(meta.failure, None);
    assert!(meta.completed_at.is_some());
    // The stream is finished after the events emitted before.
    let page = rig.client.get_events(&id, 0, 100).await.unwrap();
    assert_eq!(page.events.len(), 1);
    assert!(page.finished);
    let err = rig.client.raise_event(&id, "go", &1).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidState {
                status: RuntimeStatus::Terminated,
                ..
            }
        ),
        "{err:?}"
    );
    rig.shutdown().await;
}

async fn gated(ctx: OrchestrationContext, _: ()) -> Result<String, OrchestrationError> {
    ctx.set_custom_status(&"calling")?;
    let v: String = ctx.call_activity("gate", &()).await?;
    ctx.emit_event("after_activity", &v)?;
    ctx.set_custom_status(&"waiting")?;
    let e: String = ctx.wait_for_external_event("e").await?;
    ctx.emit_event("after_event", &e)?;
    Ok(format!("{v}+{e}"))
}

async fn wait_status(client: &Client, id: &InstanceId, status: RuntimeStatus) {
    common::eventually(&format!("status {status}"), || async {
        let meta = client.get_instance(id).await.unwrap()?;
        (meta.status == status).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspended_instances_keep_their_messages_until_resumed() {
    let gate = Gate::new();
    let g = gate.clone();
    let rig = Rig::new(Registry::new().orchestration("gated", gated).activity(
        "gate",
        move |_ctx: ActivityContext, (): ()| {
            let g = g.clone();
            async move {
                g.pass().await;
                Ok::<_, Infallible>("activity".to_owned())
            }
        },
    ))
    .await;
    let id = rig.client.start("gated", &()).await.unwrap();
    wait_custom_status(&rig.client, &id, json!("calling")).await;
    rig.client.suspend(&id, Some("maintenance")).await.unwrap();
    wait_status(&rig.client, &id, RuntimeStatus::Suspended).await;

    // The activity result and an event arrive while suspended: both wait.
    gate.open(1);
    rig.client.raise_event(&id, "e", &"event").await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let meta = rig.client.get_instance(&id).await.unwrap().unwrap();
    assert_eq!(meta.status, RuntimeStatus::Suspended);
    assert_eq!(meta.stream_len, 0, "nothing ran while suspended");
    assert_eq!(meta.custom_status_as::<Value>().unwrap(), Some(json!("calling")));
    // Suspending again is harmless.
    rig.client.suspend(&id, None).await.unwrap();

    rig.client.resume(&id, Some("done")).await.unwrap();
    let out: String = output_of(&rig.client, &id).await;
    assert_eq!(out, "activity+event");
    let events = read_all(&rig.client, &id, 100).await;
    assert_eq!(
        common::summary(&events),
        [
            (1, "after_activity".to_owned(), json!("activity")),
            (2, "after_event".to_owned(), json!("event")),
        ]
    );
    rig.shutdown().await;
}

/// An event raised while an instance is suspended, and the resume after it,
/// reach the worker in one turn (no worker ran in between): the event is
/// delivered right after the resume, not left waiting in the inbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_and_the_resume_after_it_arrive_in_one_turn() {
    let registry = || Registry::new().orchestration("waiter", waiter);
    let mut rig = Rig::new(registry()).await;
    let id = rig.client.start("waiter", &json!(1)).await.unwrap();
    wait_custom_status(&rig.client, &id, json!({ "waiting": 1 })).await;
    rig.client.suspend(&id, None).await.unwrap();
    wait_status(&rig.client, &id, RuntimeStatus::Suspended).await;
    let worker = rig.worker.take().unwrap();
    worker.shutdown().await.unwrap();

    rig.client.raise_event(&id, "go", &"now").await.unwrap();
    rig.client.resume(&id, None).await.unwrap();
    let worker = Worker::start(rig.store.clone(), registry()).unwrap();
    // Well within the lease (30 s) after which a forgotten message would
    // be looked at again anyway.
    let meta = rig
        .client
        .wait_for_completion(&id, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(meta.status, RuntimeStatus::Completed, "{:?}", meta.failure);
    assert_eq!(
        meta.output_as::<Value>().unwrap(),
        json!({ "input": 1, "go": "now" })
    );
    worker.shutdown().await.unwrap();
}

/// Suspending an instance that has not started yet either is refused with
/// a typed error or holds the instance until it is resumed; it is never
/// accepted and then ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_suspended_before_it_starts_waits_for_resume() {
    let rig = rig().await;
    let start_at = Utc::now() + chrono::Duration::milliseconds(300);
    let id = rig
        .client
        .start_with(StartOptions::new("starts_at", &()).unwrap().start_at(start_at))
        .await
        .unwrap();
    if let Err(err) = rig.client.suspend(&id, Some("not yet")).await {
        assert!(
            matches!(
                err,
                Error::InvalidState {
                    status: RuntimeStatus::Pending,
                    ..
                }
            ),
            "{err:?}"
        );
        return;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let meta = rig.client.get_instance(&id).await.unwrap().unwrap();
    assert!(
        !meta.status.is_terminal(),
        "a suspend the client accepted was ignored: the instance ran to {:?}",
        meta.status
    );
    rig.client.resume(&id, None).await.unwrap();
    let _: DateTime<Utc> = output_of(&rig.client, &id).await;
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_instance_can_be_terminated() {
    let rig = rig().await;
    let id = rig.client.start("waiter", &1).await.unwrap();
    wait_custom_status(&rig.client, &id, json!({ "waiting": 1 })).await;
    rig.client.suspend(&id, None).await.unwrap();
    wait_status(&rig.client, &id, RuntimeStatus::Suspended).await;
    rig.client.terminate(&id, Some("stop")).await.unwrap();
    let meta = wait_done(&rig.client, &id).await;
    assert_eq!(meta.status, RuntimeStatus::Terminated);
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_deletes_a_terminal_instance_with_its_stream() {
    let rig = rig().await;
    let id = rig.client.start("waiter", &1).await.unwrap();
    wait_custom_status(&rig.client, &id, json!({ "waiting": 1 })).await;
    let err = rig.client.purge(&id).await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::InvalidState {
                status: RuntimeStatus::Running,
                operation: "purge",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        read_all(&rig.client, &id, 10).await.len(),
        1,
        "a failed purge deletes nothing"
    );

    rig.client.raise_event(&id, "go", &1).await.unwrap();
    wait_done(&rig.client, &id).await;
    rig.client.purge(&id).await.unwrap();
    assert!(rig.client.get_instance(&id).await.unwrap().is_none());
    let err = rig.client.get_events(&id, 0, 10).await.unwrap_err();
    assert!(is_not_found(&err, &id), "{err:?}");
    let listed = rig.client.list_instances(InstanceQuery::new()).await.unwrap();
    assert!(listed.instances.iter().all(|m| m.instance_id != id));
    let err = rig.client.purge(&id).await.unwrap_err();
    assert!(is_not_found(&err, &id), "{err:?}");
    rig.shutdown().await;
}

async fn list_all(client: &Client, query: InstanceQuery) -> HashSet<InstanceId> {
    let page = client.list_instances(query.page_size(1000)).await.unwrap();
    assert!(page.continuation.is_none());
    page.instances.into_iter().map(|m| m.instance_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_instances_filters_and_pages() {
    let rig = rig().await;
    let mut early = HashSet::new();
    for i in 0..6 {
        let name = if i % 2 == 0 { "waiter" } else { "other" };
        early.insert(rig.client.start(name, &i).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let middle = Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut late = HashSet::new();
    for i in 6..11 {
        late.insert(rig.client.start("waiter", &i).await.unwrap());
    }
    let all: HashSet<InstanceId> = early.union(&late).cloned().collect();

    // Complete three, fail two, leave the rest running.
    let mut completed = HashSet::new();
    let mut failed = HashSet::new();
    for id in &all {
        let meta = rig.client.wait_for_start(id, common::WAIT).await.unwrap();
        let input = meta.input.clone();
        wait_custom_status(&rig.client, id, json!({ "waiting": input })).await;
    }
    for (n, id) in all.iter().enumerate().take(5) {
        let (go, set) = if n < 3 {
            ("ok", &mut completed)
        } else {
            ("fail", &mut failed)
        };
        rig.client.raise_event(id, "go", &go).await.unwrap();
        wait_done(&rig.client, id).await;
        set.insert(id.clone());
    }
    let running: HashSet<InstanceId> = all
        .iter()
        .filter(|id| !completed.contains(*id) && !failed.contains(*id))
        .cloned()
        .collect();

    assert_eq!(list_all(&rig.client, InstanceQuery::new()).await, all);
    assert_eq!(
        list_all(&rig.client, InstanceQuery::new().status(RuntimeStatus::Completed)).await,
        completed
    );
    let running_or_failed = list_all(
        &rig.client,
        InstanceQuery::new()
            .status(RuntimeStatus::Running)
            .status(RuntimeStatus::Failed),
    )
    .await;
    assert_eq!(running_or_failed, running.union(&failed).cloned().collect());
    let others = list_all(&rig.client, InstanceQuery::new().name("other")).await;
    assert_eq!(others.len(), 3);
    for id in &others {
        assert_eq!(rig.client.get_instance(id).await.unwrap().unwrap().name, "other");
    }
    let far = Utc::now() + chrono::Duration::hours(1);
    let epoch = DateTime::<Utc>::UNIX_EPOCH;
    assert_eq!(
        list_all(&rig.client, InstanceQuery::new().created_between(middle, far)).await,
        late
    );
    assert_eq!(
        list_all(&rig.client, InstanceQuery::new().created_between(epoch, middle)).await,
        early
    );
    let late_waiters = list_all(
        &rig.client,
        InstanceQuery::new().name("waiter").created_between(middle, far),
    )
    .await;
    assert_eq!(late_waiters, late);

    // Pages of 4: 4 + 4 + 3, oldest first, each instance once.
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut query = InstanceQuery::new().page_size(4);
    loop {
        let page = rig.client.list_instances(query.clone()).await.unwrap();
        pages += 1;
        assert!(page.instances.len() <= 4);
        seen.extend(page.instances);
        match page.continuation {
            Some(token) => query = InstanceQuery::new().page_size(4).continuation(token),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let ids: Vec<InstanceId> = seen.iter().map(|m| m.instance_id.clone()).collect();
    assert_eq!(ids.iter().cloned().collect::<HashSet<_>>(), all);
    assert_eq!(ids.len(), all.len(), "no instance twice");
    assert!(
        seen.windows(2)
            .all(|w| (w[0].created_at, &w[0].instance_id) < (w[1].created_at, &w[1].instance_id)),
        "oldest first"
    );

    // Paging combines with filters.
    let mut filtered = HashSet::new();
    let mut query = InstanceQuery::new().name("waiter").page_size(2);
    loop {
        let page = rig.client.list_instances(query).await.unwrap();
        filtered.extend(page.instances.into_iter().map(|m| m.instance_id));
        match page.continuation {
            Some(token) => {
                query = InstanceQuery::new()
                    .name("waiter")
                    .page_size(2)
                    .continuation(token)
            }
            None => break,
        }
    }
    assert_eq!(filtered.len(), 8);

    let err = rig
        .client
        .list_instances(InstanceQuery::new().continuation("garbage"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    rig.shutdown().await;
}
