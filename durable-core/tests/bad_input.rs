//! Bad input gets a clear typed error and fails only the instance it
//! concerns: malformed JSON, unknown orchestration and activity names,
//! inputs and outputs of the wrong shape, invalid instance ids, and
//! panicking activities and orchestrations. The worker keeps serving other
//! instances throughout.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;

use common::{iid, output_of, wait_custom_status, wait_done, Rig};
use durable_core::prelude::*;
use durable_core::{InstanceQuery, InvalidInstanceId, MAX_INSTANCE_ID_LEN};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    id: u32,
    items: Vec<String>,
}

async fn take_order(ctx: OrchestrationContext, order: Order) -> Result<usize, OrchestrationError> {
    ctx.set_custom_status(&json!({ "order": order.id }))?;
    ctx.call_activity("count", &order.items).await
}

async fn count(_ctx: ActivityContext, items: Vec<String>) -> Result<usize, Infallible> {
    Ok(items.len())
}

async fn call_by_name(
    ctx: OrchestrationContext,
    (name, input): (String, Value),
) -> Result<String, OrchestrationError> {
    match ctx.call_activity::<Value>(name.as_str(), &input).await {
        Ok(v) => Ok(format!("ok:{v}")),
        Err(OrchestrationError::ActivityFailed { name, failure }) => Ok(format!(
            "failed:{name}:{}:{}",
            failure.error_type, failure.message
        )),
        Err(e) => Err(e),
    }
}

async fn panicky(_ctx: ActivityContext, message: String) -> Result<u32, Infallible> {
    if !message.is_empty() {
        panic!("{message}");
    }
    Ok(7)
}

async fn panics_midway(ctx: OrchestrationContext, message: String) -> Result<u32, OrchestrationError> {
    let _: usize = ctx.call_activity("count", &["a"]).await?;
    if !message.is_empty() {
        panic!("{message}");
    }
    Ok(1)
}

async fn unserializable_output(
    _ctx: OrchestrationContext,
    _: (),
) -> Result<HashMap<(u8, u8), u8>, OrchestrationError> {
    Ok(HashMap::from([((1, 2), 3)]))
}

async fn typed_event(ctx: OrchestrationContext, _: ()) -> Result<String, OrchestrationError> {
    ctx.set_custom_status(&"waiting")?;
    match ctx.wait_for_external_event::<u32>("n").await {
        Ok(n) => Ok(format!("number {n}")),
        Err(OrchestrationError::Deserialization { what, .. }) => Ok(format!("bad data for {what}")),
        Err(e) => Err(e),
    }
}

async fn sub_with_long_id(ctx: OrchestrationContext, _: ()) -> Result<String, OrchestrationError> {
    match ctx
        .call_sub_orchestration::<usize>("take_order", &json!({ "id": 1, "items": [] }))
        .await
    {
        Err(OrchestrationError::InvalidInstanceId(e)) => Ok(format!("invalid: {e}")),
        other => Ok(format!("unexpected: {other:?}")),
    }
}

fn registry() -> Registry {
    Registry::new()
        .orchestration("take_order", take_order)
        .orchestration("call_by_name", call_by_name)
        .orchestration("panics_midway", panics_midway)
        .orchestration("unserializable_output", unserializable_output)
        .orchestration("typed_event", typed_event)
        .orchestration("sub_with_long_id", sub_with_long_id)
        .activity("count", count)
        .activity("panicky", panicky)
}

/// Checks that the worker still runs instances normally.
async fn worker_still_works(rig: &Rig) {
    let id = rig
        .client
        .start(
            "take_order",
            &Order {
                id: 9,
                items: vec!["a".into(), "b".into()],
            },
        )
        .await
        .unwrap();
    let n: usize = output_of(&rig.client, &id).await;
    assert_eq!(n, 2);
}

fn failure_of(meta: &durable_core::InstanceMetadata) -> durable_core::FailureDetails {
    assert_eq!(meta.status, RuntimeStatus::Failed, "output {:?}", meta.output);
    meta.failure.clone().expect("failure details")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_input_is_rejected_before_anything_is_stored() {
    let rig = Rig::new(registry()).await;
    let err = StartOptions::from_json("take_order", "{not json").unwrap_err();
    assert!(matches!(err, Error::Json(_)), "{err:?}");
    let err = StartOptions::from_json("take_order", "").unwrap_err();
    assert!(matches!(err, Error::Json(_)), "{err:?}");
    // Input that cannot become JSON at all (a map with non-string keys).
    let err = rig
        .client
        .start("take_order", &HashMap::from([((1, 2), 3)]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Json(_)), "{err:?}");
    let err = rig
        .client
        .raise_event(&iid("whoever"), "e", &HashMap::from([((1, 2), 3)]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Json(_)), "{err:?}");
    let listed = rig.client.list_instances(InstanceQuery::new()).await.unwrap();
    assert!(listed.instances.is_empty(), "nothing was created");

    // Well-formed JSON text is taken as it is.
    let id = rig
        .client
        .start_with(StartOptions::from_json("take_order", r#"{"id": 1, "items": ["x", "y", "z"]}"#).unwrap())
        .await
        .unwrap();
    let n: usize = output_of(&rig.client, &id).await;
    assert_eq!(n, 3);
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_orchestration_fails_its_instance_only() {
    let rig = Rig::new(registry()).await;
    let bad = rig.client.start("no_such_orchestration", &1).await.unwrap();
    let meta = wait_done(&rig.client, &bad).await;
    let failure = failure_of(&meta);
    assert_eq!(failure.error_type, "UnknownOrchestration");
    assert!(failure.message.contains("'no_such_orchestration'"), "{failure:?}");
    assert_eq!(meta.name, "no_such_orchestration");
    worker_still_works(&rig).await;
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_activity_is_an_activity_failure() {
    let rig = Rig::new(registry()).await;
    let id = rig
        .client
        .start("call_by_name", &("no_such_activity", 1))
        .await
        .unwrap();
    let out: String = output_of(&rig.client, &id).await;
    assert!(
        out.starts_with("failed:no_such_activity:UnknownActivity:") && out.contains("'no_such_activity'"),
        "{out}"
    );
    worker_still_works(&rig).await;
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_and_outputs_of_the_wrong_type_fail_cleanly() {
    let rig = Rig::new(registry()).await;

    // The orchestration's input does not fit its type.
    let bad = rig
        .client
        .start("take_order", &json!({ "id": "seven" }))
        .await
        .unwrap();
    let failure = failure_of(&wait_done(&rig.client, &bad).await);
    assert_eq!(failure.error_type, "InvalidInput");
    assert!(
        failure
            .message
            .starts_with("invalid input for orchestration 'take_order':"),
        "{failure:?}"
    );

    // The activity's input does not fit its type.
    let id = rig.client.start("call_by_name", &("count", 42)).await.unwrap();
    let out: String = output_of(&rig.client, &id).await;
    assert!(
        out.starts_with("failed:count:InvalidInput:invalid input for activity 'count':"),
        "{out}"
    );

    // The orchestration's output cannot be serialized.
    let bad = rig.client.start("unserializable_output", &()).await.unwrap();
    let failure = failure_of(&wait_done(&rig.client, &bad).await);
    assert_eq!(failure.error_type, "InvalidOutput");

    // An event whose data does not fit the type the code waits for.
    let id = rig.client.start("typed_event", &()).await.unwrap();
    wait_custom_status(&rig.client, &id, json!("waiting")).await;
    rig.client.raise_event(&id, "n", &"not a number").await.unwrap();
    let out: String = output_of(&rig.client, &id).await;
    assert_eq!(out, "bad data for external event 'n'");

    worker_still_works(&rig).await;
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_ids_are_validated() {
    assert_eq!(InstanceId::new(""), Err(InvalidInstanceId::Empty));
    let too_long = "x".repeat(MAX_INSTANCE_ID_LEN + 1);
    assert_eq!(
        InstanceId::new(too_long.clone()),
        Err(InvalidInstanceId::TooLong {
            len: MAX_INSTANCE_ID_LEN + 1
        })
    );
    // Length is counted in bytes: 129 two-byte characters are too long.
    assert!(InstanceId::new("é".repeat(129)).is_err());
    assert!(InstanceId::try_from("").is_err());
    assert!(InstanceId::try_from("tab\there").is_err());
    assert!(serde_json::from_value::<InstanceId>(json!(too_long)).is_err());
    assert!(serde_json::from_value::<InstanceId>(json!("")).is_err());

    // Valid but unusual ids work end to end.
    let rig = Rig::new(registry()).await;
    let longest = "L".repeat(MAX_INSTANCE_ID_LEN);
    for id in [
        longest.as_str(),
        "orders/2026/42",
        "ünïcødé-🚀",
        "'; DROP TABLE instances; --",
        "a:b:c",
    ] {
        let id = iid(id);
        let order = Order {
            id: 1,
            items: vec![id.to_string()],
        };
        rig.client
            .start_with(
                StartOptions::new("take_order", &order)
                    .unwrap()
                    .instance_id(id.clone()),
            )
            .await
            .unwrap();
        let n: usize = output_of(&rig.client, &id).await;
        assert_eq!(n, 1, "{id}");
    }

    // A sub-orchestration id derived from a long parent id would be too
    // long: the orchestration code gets a typed error.
    let parent = iid(&"p".repeat(MAX_INSTANCE_ID_LEN));
    rig.client
        .start_with(
            StartOptions::new("sub_with_long_id", &())
                .unwrap()
                .instance_id(parent.clone()),
        )
        .await
        .unwrap();
    let out: String = output_of(&rig.client, &parent).await;
    assert_eq!(
        out,
        format!(
            "invalid: instance id is {} bytes long; the limit is 256",
            // The parent's id, its execution id (32 hex digits), the task
            // id and two colons.
            MAX_INSTANCE_ID_LEN + 32 + 1 + 2
        )
    );
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_activity_fails_only_its_call() {
    let rig = Rig::new(registry()).await;
    let id = rig
        .client
        .start("call_by_name", &("panicky", "activity exploded"))
        .await
        .unwrap();
    let out: String = output_of(&rig.client, &id).await;
    assert!(out.starts_with("failed:panicky:Panic:"), "{out}");
    assert!(out.contains("activity exploded"), "{out}");
    // The same activity still works for other calls.
    let id = rig.client.start("call_by_name", &("panicky", "")).await.unwrap();
    let out: String = output_of(&rig.client, &id).await;
    assert_eq!(out, "ok:7");
    worker_still_works(&rig).await;
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_orchestration_fails_only_its_instance() {
    for options in [WorkerOptions::new(), WorkerOptions::new().cache_capacity(0)] {
        let rig = Rig::with_options(registry(), options).await;
        let bad = rig
            .client
            .start("panics_midway", &"orchestration exploded")
            .await
            .unwrap();
        let good = rig.client.start("panics_midway", &"").await.unwrap();
        let failure = failure_of(&wait_done(&rig.client, &bad).await);
        assert_eq!(failure.error_type, "Panic");
        assert!(failure.message.contains("orchestration exploded"), "{failure:?}");
        let out: u32 = output_of(&rig.client, &good).await;
        assert_eq!(out, 1);
        worker_still_works(&rig).await;
        rig.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_registered_twice_is_refused() {
    let store = common::memory_store().await;
    let err = Worker::start(store.clone(), registry().activity("count", count)).unwrap_err();
    assert!(
        matches!(&err, Error::DuplicateRegistration { kind: "activity", name } if name == "count"),
        "{err:?}"
    );
    let err = Worker::start(
        store,
        registry().merge(Registry::new().orchestration("take_order", take_order)),
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::DuplicateRegistration { kind: "orchestration", name } if name == "take_order"),
        "{err:?}"
    );
}
