//! Bad input on both stores, each case written once and run on a SQLite
//! file and on PostgreSQL (`DURABLE_TEST_POSTGRES_URL`, a schema of its
//! own; skipped, saying so, when the variable is not set):
//!
//! * unusual instance ids (the longest allowed, unicode, slashes, SQL
//!   metacharacters, quotes, `LIKE` wildcards, ids that differ only in case
//!   or a trailing space) work through every client operation;
//! * truncated and malformed JSON is refused before anything is stored;
//! * oversized payloads: an emit over the per-event cap is a typed error
//!   that appends nothing; a raised event and an input of megabytes are
//!   stored and delivered whole;
//! * records written by another version of the runtime (a golden fixture,
//!   `fixtures/other_version.json`, written into the store directly): a
//!   history event of an unknown type or missing a field fails its
//!   instance with `CorruptHistory` failure details (no loop, no panic),
//!   keeps its stream, and leaves other instances alone; an inbox message
//!   of an unknown type does not stop the worker from serving the others;
//!   an activity work item whose input is not JSON fails that activity
//!   and does not strand the items claimed with it.

mod common;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use common::{summary, wait_custom_status, wait_done, WAIT};
use durable_core::prelude::*;
use durable_core::store::{PostgresStoreOptions, SqliteStoreOptions};
use durable_core::{InstanceQuery, MAX_INSTANCE_ID_LEN};
use futures::StreamExt;
use serde_json::{json, Value};

const URL_ENV: &str = "DURABLE_TEST_POSTGRES_URL";

// ---------------------------------------------------------------------------
// The database of one test.

enum Db {
    Sqlite { _dir: tempfile::TempDir, path: String },
    Postgres { url: String, schema: String },
}

impl Db {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.db").to_str().unwrap().to_owned();
        Self::Sqlite { _dir: dir, path }
    }

    fn postgres() -> Option<Self> {
        let Ok(url) = std::env::var(URL_ENV) else {
            eprintln!("skipped: {URL_ENV} is not set, so this PostgreSQL test does not run");
            return None;
        };
        let schema = format!("bad_{}", uuid::Uuid::new_v4().simple());
        Some(Self::Postgres { url, schema })
    }

    async fn open(&self) -> Arc<dyn Store> {
        match self {
            Self::Sqlite { path, .. } => {
                let options =
                    SqliteStoreOptions::file(path.clone()).poll_interval(Some(Duration::from_millis(20)));
                Arc::new(SqliteStore::with_options(options).await.unwrap())
            }
            Self::Postgres { url, schema } => {
                let options = PostgresStoreOptions::new(url)
                    .schema(schema)
                    .max_connections(4)
                    .poll_interval(Some(Duration::from_millis(100)));
                Arc::new(PostgresStore::with_options(options).await.unwrap())
            }
        }
    }

    /// Runs `sql` on the database directly, as another program would.
    async fn execute(&self, sql: &str) -> u64 {
        use sqlx::Connection;
        match self {
            Self::Sqlite { path, .. } => {
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(path)
                    .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                    .busy_timeout(Duration::from_secs(10));
                let mut conn = sqlx::SqliteConnection::connect_with(&options).await.unwrap();
                let done = sqlx::query(sql).execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
                done.rows_affected()
            }
            Self::Postgres { url, schema } => {
                let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
                let options = options.options([("search_path", schema.as_str())]);
                let mut conn = sqlx::PgConnection::connect_with(&options).await.unwrap();
                let done = sqlx::query(sql).execute(&mut conn).await.unwrap();
                conn.close().await.unwrap();
                done.rows_affected()
            }
        }
    }

    /// The number a `SELECT COUNT(*)` gives, read directly.
    async fn count(&self, sql: &str) -> i64 {
        use sqlx::Connection;
        match self {
            Self::Sqlite { path, .. } => {
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(path)
                    .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
                let mut conn = sqlx::SqliteConnection::connect_with(&options).await.unwrap();
                let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&mut conn).await.unwrap();
                conn.close().await.unwrap();
                n
            }
            Self::Postgres { url, schema } => {
                let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
                let options = options.options([("search_path", schema.as_str())]);
                let mut conn = sqlx::PgConnection::connect_with(&options).await.unwrap();
                let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&mut conn).await.unwrap();
                conn.close().await.unwrap();
                n
            }
        }
    }

    async fn cleanup(&self) {
        if let Self::Postgres { url, schema } = self {
            let pool = sqlx::PgPool::connect(url).await.expect("connect for cleanup");
            sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .execute(&pool)
                .await
                .expect("drop the test schema");
        }
    }
}

/// Stamps each test body out once per store.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = super::Db::sqlite();
                    super::$name(&db).await;
                    db.cleanup().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = super::Db::postgres() else {
                        return;
                    };
                    super::$name(&db).await;
                    db.cleanup().await;
                }
            )*
        }
    };
}

on_both_stores!(
    unusual_instance_ids_work_through_every_operation,
    malformed_and_truncated_json_is_refused_before_anything_is_stored,
    oversized_payloads_are_typed_errors_or_delivered_whole,
    a_history_event_of_an_unknown_type_fails_its_instance_cleanly,
    a_history_event_missing_a_field_fails_its_instance_cleanly,
    an_inbox_message_of_an_unknown_type_does_not_stop_the_worker,
    names_with_control_characters_are_refused_where_they_are_made,
);

// An activity work item this version cannot read fails alone; see
// `an_unreadable_activity_work_item_strands_no_other`.
mod unreadable_activity {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        let db = super::Db::sqlite();
        super::an_unreadable_activity_work_item_strands_no_other(&db).await;
        db.cleanup().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        let Some(db) = super::Db::postgres() else {
            return;
        };
        super::an_unreadable_activity_work_item_strands_no_other(&db).await;
        db.cleanup().await;
    }
}

// ---------------------------------------------------------------------------
// Orchestrations.

/// Emits its input's `tag`, waits for "go", emits what came and returns it.
async fn tagged(ctx: OrchestrationContext, input: Value) -> Result<Value, OrchestrationError> {
    ctx.emit_event("tag", &input["tag"])?;
    ctx.set_custom_status(&"waiting")?;
    let got: Value = ctx.wait_for_external_event("go").await?;
    ctx.emit_event("got", &got)?;
    Ok(json!({ "tag": input["tag"], "got": got }))
}

/// Emits "started", runs `echo(1)`, emits "echoed", waits for "go",
/// emits "went".
async fn two_steps(ctx: OrchestrationContext, _: ()) -> Result<String, OrchestrationError> {
    ctx.emit_event("started", &())?;
    let n: u64 = ctx.call_activity("echo", &1u64).await?;
    ctx.emit_event("echoed", &n)?;
    ctx.set_custom_status(&"waiting")?;
    let go: String = ctx.wait_for_external_event("go").await?;
    ctx.emit_event("went", &go)?;
    Ok(go)
}

/// Tries to emit `size` bytes; reports what happened.
async fn oversized(ctx: OrchestrationContext, size: usize) -> Result<String, OrchestrationError> {
    ctx.emit_event("small", &"ok")?;
    let outcome = match ctx.emit_event("big", &"x".repeat(size)) {
        Ok(()) => "accepted".to_owned(),
        Err(OrchestrationError::EventTooLarge { size, limit, .. }) => format!("too large: {size} > {limit}"),
        Err(e) => return Err(e),
    };
    ctx.emit_event("after", &outcome)?;
    Ok(outcome)
}

/// Waits for "go" and returns its input and the event, emitting only their
/// sizes.
async fn keep(ctx: OrchestrationContext, input: Value) -> Result<Value, OrchestrationError> {
    ctx.set_custom_status(&"waiting")?;
    let got: Value = ctx.wait_for_external_event("go").await?;
    ctx.emit_event("sizes", &json!([input.to_string().len(), got.to_string().len()]))?;
    Ok(json!({ "input": input, "got": got }))
}

/// Runs `n` activities at once and sums their results.
async fn fan(ctx: OrchestrationContext, n: u64) -> Result<u64, OrchestrationError> {
    let calls = (0..n).map(|i| ctx.call_activity::<u64>("echo", &i));
    let mut sum = 0;
    for r in durable_core::future::join_all(calls).await {
        sum += r?;
    }
    Ok(sum)
}

async fn echo(_ctx: ActivityContext, v: Value) -> Result<Value, Infallible> {
    Ok(v)
}

/// Makes every kind of name with `bad` in it and reports what each
/// attempt gave; then calls `echo` as usual.
async fn bad_names(ctx: OrchestrationContext, bad: String) -> Result<Vec<String>, OrchestrationError> {
    fn outcome<T>(result: Result<T, OrchestrationError>) -> String {
        match result {
            Ok(_) => "accepted".into(),
            Err(OrchestrationError::InvalidName { what, .. }) => format!("refused {what}"),
            Err(e) => format!("other: {e}"),
        }
    }
    let mut report = vec![outcome(ctx.emit_event(&bad, &1))];
    report.push(outcome(ctx.call_activity::<Value>(bad.clone(), &1).await));
    report.push(outcome(
        ctx.call_sub_orchestration::<Value>(bad.clone(), &1).await,
    ));
    report.push(outcome(
        ctx.call_sub_orchestration_with_id::<Value>(bad.clone(), iid("bad-child"), &1)
            .await,
    ));
    report.push(outcome(ctx.wait_for_external_event::<Value>(bad.clone()).await));
    let echoed: Value = ctx.call_activity("echo", &json!("after")).await?;
    ctx.emit_event("echoed", &echoed)?;
    Ok(report)
}

fn registry() -> Registry {
    Registry::new()
        .orchestration("tagged", tagged)
        .orchestration("two_steps", two_steps)
        .orchestration("oversized", oversized)
        .orchestration("keep", keep)
        .orchestration("fan", fan)
        .orchestration("bad_names", bad_names)
        .activity("echo", echo)
}

fn worker(store: &Arc<dyn Store>) -> Worker {
    Worker::start_with(
        store.clone(),
        registry(),
        WorkerOptions::new().lease(Duration::from_millis(500)),
    )
    .unwrap()
}

fn iid(s: &str) -> InstanceId {
    InstanceId::new(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
}

async fn all_instances(client: &Client) -> BTreeSet<InstanceId> {
    let mut seen = BTreeSet::new();
    let mut query = InstanceQuery::new().page_size(7);
    loop {
        let page = client.list_instances(query.clone()).await.unwrap();
        seen.extend(page.instances.into_iter().map(|m| m.instance_id));
        match page.continuation {
            Some(token) => query = query.continuation(token),
            None => return seen,
        }
    }
}

// ---------------------------------------------------------------------------
// Unusual instance ids.

fn unusual_ids() -> Vec<String> {
    vec![
        "L".repeat(MAX_INSTANCE_ID_LEN),
        // 64 four-byte characters: exactly the limit in bytes.
        "💥".repeat(MAX_INSTANCE_ID_LEN / 4),
        "orders/2026/42".into(),
        "/leading/and/trailing/".into(),
        "ünïcødé-🚀-日本語".into(),
        "'; DROP TABLE instances; --".into(),
        "\"double\" and 'single' quotes".into(),
        "back\\slash\\".into(),
        "100% LIKE_this".into(),
        "$1 ?1 :name @p".into(),
        "Case".into(),
        "case".into(),
        "trailing ".into(),
        "trailing".into(),
        " leading".into(),
        "a:b:c".into(),
        "null".into(),
        "?query=1&x#fragment".into(),
    ]
}

async fn unusual_instance_ids_work_through_every_operation(db: &Db) {
    let store = db.open().await;
    let worker = worker(&store);
    let client = Client::new(store.clone());
    let ids: Vec<InstanceId> = unusual_ids().iter().map(|s| iid(s)).collect();
    for id in &ids {
        let started = client
            .start_with(
                StartOptions::new("tagged", &json!({ "tag": id }))
                    .unwrap()
                    .instance_id(id.clone()),
            )
            .await
            .unwrap();
        assert_eq!(&started, id);
    }
    // Each is its own instance: none replaced another, even those that
    // differ only in case or a trailing space.
    assert_eq!(all_instances(&client).await, ids.iter().cloned().collect());
    for id in &ids {
        wait_custom_status(&client, id, json!("waiting")).await;
        client.raise_event(id, "go", &format!("to {id}")).await.unwrap();
    }
    for id in &ids {
        let meta = wait_done(&client, id).await;
        assert_eq!(
            meta.status,
            RuntimeStatus::Completed,
            "{id:?}: {:?}",
            meta.failure
        );
        assert_eq!(&meta.instance_id, id);
        assert_eq!(
            meta.output_as::<Value>().unwrap(),
            json!({ "tag": id, "got": format!("to {id}") }),
            "{id:?}"
        );
        let expected = vec![
            (1, "tag".to_owned(), json!(id)),
            (2, "got".to_owned(), json!(format!("to {id}"))),
        ];
        assert_eq!(
            summary(&common::read_all(&client, id, 1).await),
            expected,
            "{id:?}"
        );
        let watched: Vec<_> = tokio::time::timeout(WAIT, client.watch_events(id, 1).collect::<Vec<_>>())
            .await
            .expect("the watch ends");
        assert_eq!(watched.len(), 1, "{id:?}");
        assert!(matches!(
            client.raise_event(id, "go", &1).await,
            Err(Error::InvalidState {
                status: RuntimeStatus::Completed,
                ..
            })
        ));
    }
    // Purging one leaves the look-alikes.
    client.purge(&iid("Case")).await.unwrap();
    client.purge(&iid("trailing ")).await.unwrap();
    assert!(client.get_instance(&iid("Case")).await.unwrap().is_none());
    assert!(client.get_instance(&iid("case")).await.unwrap().is_some());
    assert!(client.get_instance(&iid("trailing")).await.unwrap().is_some());
    assert!(matches!(
        client.get_events(&iid("Case"), 0, 10).await,
        Err(Error::InstanceNotFound(_))
    ));
    assert_eq!(
        client.get_events(&iid("case"), 0, 10).await.unwrap().events.len(),
        2
    );
    assert_eq!(all_instances(&client).await.len(), ids.len() - 2);
    worker.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------
// Malformed JSON.

async fn malformed_and_truncated_json_is_refused_before_anything_is_stored(db: &Db) {
    let store = db.open().await;
    let client = Client::new(store.clone());
    let whole = r#"{"tag": "t", "items": [1, 2, {"deep": [true, null]}]}"#;
    for cut in 1..whole.len() {
        let err = StartOptions::from_json("tagged", &whole[..cut]).unwrap_err();
        assert!(matches!(err, Error::Json(_)), "{cut}: {err:?}");
    }
    for bad in [
        "",
        " ",
        "{",
        "}",
        "[1,]",
        "{'single': 1}",
        "NaN",
        "01",
        "{\"a\" 1}",
        "\u{feff}{}",
    ] {
        let err = StartOptions::from_json("tagged", bad).unwrap_err();
        assert!(matches!(err, Error::Json(_)), "{bad:?}: {err:?}");
    }
    assert!(all_instances(&client).await.is_empty(), "nothing was stored");
    // The whole text is taken.
    let worker = worker(&store);
    let id = client
        .start_with(StartOptions::from_json("tagged", whole).unwrap())
        .await
        .unwrap();
    wait_custom_status(&client, &id, json!("waiting")).await;
    client.raise_event(&id, "go", &0).await.unwrap();
    let meta = wait_done(&client, &id).await;
    assert_eq!(
        meta.input_as::<Value>().unwrap(),
        serde_json::from_str::<Value>(whole).unwrap()
    );
    worker.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------
// Oversized payloads.

async fn oversized_payloads_are_typed_errors_or_delivered_whole(db: &Db) {
    let store = db.open().await;
    let worker = worker(&store);
    let client = Client::new(store.clone());

    // An emit over the 64 KiB cap: a typed error, nothing appended.
    let id = client.start("oversized", &(70 * 1024usize)).await.unwrap();
    let meta = wait_done(&client, &id).await;
    assert_eq!(meta.status, RuntimeStatus::Completed, "{:?}", meta.failure);
    let outcome: String = meta.output_as().unwrap();
    assert!(outcome.starts_with("too large: "), "{outcome}");
    let names: Vec<String> = common::read_all(&client, &id, 10)
        .await
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["small", "after"]);

    // Megabytes of input and of a raised event are stored and delivered
    // whole (only the HTTP API caps request bodies).
    let big_input = "i".repeat(3 << 20);
    let big_event = "e".repeat(5 << 20);
    let id = client.start("keep", &big_input).await.unwrap();
    wait_custom_status(&client, &id, json!("waiting")).await;
    client.raise_event(&id, "go", &big_event).await.unwrap();
    let meta = wait_done(&client, &id).await;
    assert_eq!(meta.status, RuntimeStatus::Completed, "{:?}", meta.failure);
    assert_eq!(meta.input_as::<Value>().unwrap(), json!(big_input));
    assert_eq!(
        meta.output_as::<Value>().unwrap(),
        json!({ "input": big_input, "got": big_event })
    );
    let sizes = common::read_all(&client, &id, 10).await;
    assert_eq!(
        sizes[0].payload.parse::<serde_json::Value>().unwrap(),
        json!([big_input.len() + 2, big_event.len() + 2])
    );
    // Megabytes are over the per-event cap: the orchestration got a typed
    // error for its first emit and failed.
    let id2 = client.start("tagged", &json!({ "tag": "small" })).await.unwrap();
    wait_custom_status(&client, &id2, json!("waiting")).await;
    client.raise_event(&id2, "go", &big_event).await.unwrap();
    let meta = wait_done(&client, &id2).await;
    assert_eq!(meta.status, RuntimeStatus::Failed);
    let failure = meta.failure.unwrap();
    assert!(failure.message.contains("too large"), "{failure:?}");
    assert_eq!(client.get_events(&id2, 0, 10).await.unwrap().events.len(), 1);
    worker.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------
// Records of another version.

fn fixture(key: &str) -> String {
    let text = include_str!("fixtures/other_version.json");
    let all: Value = serde_json::from_str(text).unwrap();
    all[key].to_string()
}

fn sql_text(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Runs `two_steps` instances `bad` and `good` until both wait for "go",
/// and stops the worker.
async fn two_waiting(store: &Arc<dyn Store>, bad: &InstanceId, good: &InstanceId) {
    let worker = worker(store);
    let client = Client::new(store.clone());
    for id in [bad, good] {
        client
            .start_with(
                StartOptions::new("two_steps", &())
                    .unwrap()
                    .instance_id(id.clone()),
            )
            .await
            .unwrap();
    }
    for id in [bad, good] {
        wait_custom_status(&client, id, json!("waiting")).await;
    }
    worker.shutdown().await.unwrap();
}

/// Replaces `bad`'s history event of type `kind` with `event`, then runs a
/// new worker and raises "go" to both instances: `bad` must fail with
/// `CorruptHistory` naming `reason`, keeping its stream; `good` must
/// complete.
async fn corrupt_history_fails_cleanly(db: &Db, kind: &str, event: &str, reason: &str) {
    let store = db.open().await;
    let (bad, good) = (iid("older-bad"), iid("older-good"));
    two_waiting(&store, &bad, &good).await;
    let client = Client::new(store.clone());
    let stream_before = summary(&common::read_all(&client, &bad, 10).await);
    assert_eq!(stream_before.len(), 2);

    let changed = db
        .execute(&format!(
            "UPDATE history SET event = {} WHERE instance_id = 'older-bad' AND event LIKE {}",
            sql_text(event),
            sql_text(&format!("{{\"type\":\"{kind}\"%"))
        ))
        .await;
    assert_eq!(changed, 1, "one {kind} event replaced");

    let worker = worker(&store);
    client.raise_event(&bad, "go", &"now").await.unwrap();
    client.raise_event(&good, "go", &"now").await.unwrap();
    let meta = wait_done(&client, &bad).await;
    assert_eq!(meta.status, RuntimeStatus::Failed, "{meta:?}");
    let failure = meta.failure.expect("failure details");
    assert_eq!(failure.error_type, "CorruptHistory", "{failure:?}");
    assert!(failure.message.contains(reason), "{failure:?}");
    assert_eq!(
        summary(&common::read_all(&client, &bad, 10).await),
        stream_before,
        "the stream is kept"
    );
    let meta = wait_done(&client, &good).await;
    assert_eq!(meta.status, RuntimeStatus::Completed, "{:?}", meta.failure);
    assert_eq!(meta.output_as::<Value>().unwrap(), json!("now"));
    assert_eq!(meta.stream_len, 3);
    // Nothing else changed: the failed instance can be purged and started
    // again under its id.
    client.purge(&bad).await.unwrap();
    client
        .start_with(
            StartOptions::new("two_steps", &())
                .unwrap()
                .instance_id(bad.clone()),
        )
        .await
        .unwrap();
    wait_custom_status(&client, &bad, json!("waiting")).await;
    client.raise_event(&bad, "go", &"again").await.unwrap();
    assert_eq!(
        wait_done(&client, &bad).await.output_as::<Value>().unwrap(),
        json!("again")
    );
    worker.shutdown().await.unwrap();
}

async fn a_history_event_of_an_unknown_type_fails_its_instance_cleanly(db: &Db) {
    corrupt_history_fails_cleanly(
        db,
        "ActivityCompleted",
        &fixture("history_unknown_event"),
        "unknown variant `ActivityRetried`",
    )
    .await;
}

async fn a_history_event_missing_a_field_fails_its_instance_cleanly(db: &Db) {
    corrupt_history_fails_cleanly(
        db,
        "ActivityScheduled",
        &fixture("history_missing_field"),
        "missing field `name`",
    )
    .await;
}

async fn an_inbox_message_of_an_unknown_type_does_not_stop_the_worker(db: &Db) {
    let store = db.open().await;
    let (bad, good) = (iid("poisoned"), iid("healthy"));
    two_waiting(&store, &bad, &good).await;
    let client = Client::new(store.clone());
    let now = chrono::Utc::now().timestamp_millis();
    db.execute(&format!(
        "INSERT INTO messages (instance_id, execution_id, kind, event, visible_at) \
         VALUES ('poisoned', NULL, 'EventRaised', {}, {now})",
        sql_text(&fixture("message_unknown_event"))
    ))
    .await;

    let worker = worker(&store);
    // The worker goes on serving the other instances.
    client.raise_event(&good, "go", &"served").await.unwrap();
    let meta = wait_done(&client, &good).await;
    assert_eq!(meta.status, RuntimeStatus::Completed, "{:?}", meta.failure);
    assert_eq!(meta.output_as::<Value>().unwrap(), json!("served"));
    let fresh = client.start("two_steps", &()).await.unwrap();
    wait_custom_status(&client, &fresh, json!("waiting")).await;
    client.raise_event(&fresh, "go", &"fresh").await.unwrap();
    assert_eq!(
        wait_done(&client, &fresh).await.output_as::<Value>().unwrap(),
        json!("fresh")
    );

    // The instance with the unreadable message ends with failure details
    // that say why, and keeps its stream.
    let meta = wait_done(&client, &bad).await;
    assert_eq!(meta.status, RuntimeStatus::Failed, "{meta:?}");
    let failure = meta.failure.expect("failure details");
    assert!(failure.message.contains("EventRaisedWithHeaders"), "{failure:?}");
    assert_eq!(meta.stream_len, 2);
    worker.shutdown().await.unwrap();
}

async fn an_unreadable_activity_work_item_strands_no_other(db: &Db) {
    let store = db.open().await;
    let client = Client::new(store.clone());
    // Worker A runs at most 3 activities at once, so a fan-out of 8 is left
    // in the store; its fetcher claims 3, which wait for a gate.
    let gate = common::Gate::new();
    let gated = Registry::new().orchestration("fan", fan).activity("echo", {
        let gate = gate.clone();
        move |_ctx: ActivityContext, v: u64| {
            let gate = gate.clone();
            async move {
                gate.pass().await;
                Ok::<_, Infallible>(v)
            }
        }
    });
    let a = Worker::start_with(
        store.clone(),
        gated,
        WorkerOptions::new()
            .activity_concurrency(3)
            .lease(Duration::from_millis(500)),
    )
    .unwrap();
    let id = client.start("fan", &8u64).await.unwrap();
    common::eventually("five unclaimed work items", || async {
        (db.count("SELECT COUNT(*) FROM activities WHERE lock_owner IS NULL")
            .await
            == 5)
            .then_some(())
    })
    .await;
    // A work item another version wrote, whose input this one cannot read,
    // first in line.
    db.execute(
        "INSERT INTO activities (instance_id, execution_id, task_id, name, input, lock_owner, \
         lock_expires, attempt) VALUES ('ghost', 'x', 0, 'echo', 'not json', NULL, -1, 0)",
    )
    .await;
    // Worker B claims the next three: the unreadable one and two others.
    let b = Worker::start_with(
        store.clone(),
        registry(),
        WorkerOptions::new()
            .activity_concurrency(3)
            .lease(Duration::from_millis(500)),
    )
    .unwrap();
    // Enough permits for every item worker A may claim from now on: after
    // its first three it may claim more before B does.
    gate.open(8);
    let meta = wait_done(&client, &id).await;
    assert_eq!(meta.status, RuntimeStatus::Completed, "{:?}", meta.failure);
    assert_eq!(meta.output_as::<Value>().unwrap(), json!(28));
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------
// Names PostgreSQL cannot store (a NUL) or a Server-Sent Event cannot carry
// (a newline).

async fn names_with_control_characters_are_refused_where_they_are_made(db: &Db) {
    let store = db.open().await;
    let worker = worker(&store);
    let client = Client::new(store.clone());
    // Started together, so that their turns share batches with the
    // instances that try the bad names.
    let mut bad = Vec::new();
    let mut good = Vec::new();
    for (i, name) in ["nul\0inside", "line\nbreak", "\0"].iter().enumerate() {
        bad.push(client.start("bad_names", name).await.unwrap());
        good.push(client.start("fan", &(i as u64 + 2)).await.unwrap());
    }
    for id in &bad {
        let meta = wait_done(&client, id).await;
        assert_eq!(meta.status, RuntimeStatus::Completed, "{id}: {:?}", meta.failure);
        assert_eq!(
            meta.output_as::<Vec<String>>().unwrap(),
            [
                "refused stream event",
                "refused activity",
                "refused sub-orchestration",
                "refused sub-orchestration",
                "refused external event"
            ]
        );
        let events: Vec<_> = client.get_events(id, 0, 100).await.unwrap().events;
        let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["echoed"], "{id}: nothing with a bad name was stored");
    }
    for id in &good {
        let meta = wait_done(&client, id).await;
        assert_eq!(meta.status, RuntimeStatus::Completed, "{id}: {:?}", meta.failure);
    }
    // A client cannot make them either.
    for name in ["nul\0inside", "line\nbreak", "", &"n".repeat(300)] {
        let started = client.start(name, &()).await;
        assert!(
            matches!(started, Err(Error::InvalidArgument(_))),
            "{name:?}: {started:?}"
        );
        let raised = client.raise_event(&good[0], name, &1).await;
        assert!(
            matches!(raised, Err(Error::InvalidArgument(_))),
            "{name:?}: {raised:?}"
        );
        let once = client.raise_event_once(&good[0], name, &1).await;
        assert!(
            matches!(once, Err(Error::InvalidArgument(_))),
            "{name:?}: {once:?}"
        );
    }
    // Nor a registry: a worker does not start with such a name.
    let registry = Registry::new().activity("tab\there", echo);
    assert!(matches!(
        Worker::start(store.clone(), registry),
        Err(Error::InvalidArgument(_))
    ));
    worker.shutdown().await.unwrap();
}
