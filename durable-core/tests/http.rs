//! The HTTP API over a real socket: a server on an ephemeral port of
//! 127.0.0.1 and a real HTTP client. Every route; the Server-Sent Events
//! stream (order, resuming with `Last-Event-ID` in the middle, the end after
//! a terminal instance's last event, keep-alive comments); bearer-token
//! auth on every route; each kind of bad input answered with the right 4xx
//! and a JSON error body, while unusual but valid instance ids work on
//! every route; store failures answered with 503; and the OpenAPI document
//! checked against the routes the router serves.

#![cfg(feature = "http")]

mod common;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use common::{iid, wait_done, wait_stream_len, WAIT};
use durable_core::http::{ApiError, HttpApi, JsonBody, ServeOptions};
use durable_core::prelude::*;
use durable_core::{InstanceQuery, Payload};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::sync::oneshot;

// ---------------------------------------------------------------------------
// Orchestrations
// ---------------------------------------------------------------------------

/// Emits `tick` events numbered 1..=`before`, one turn per event (an
/// activity between emits), then waits for the external event `go` with a
/// count and emits that many more; returns the number of events.
async fn gated(ctx: OrchestrationContext, before: u64) -> Result<u64, OrchestrationError> {
    let mut n = 0;
    for _ in 0..before {
        n += 1;
        ctx.emit_event("tick", &json!({ "n": n }))?;
        let _: u64 = ctx.call_activity("step", &n).await?;
    }
    let more: u64 = ctx.wait_for_external_event("go").await?;
    for _ in 0..more {
        n += 1;
        ctx.emit_event("tick", &json!({ "n": n }))?;
    }
    Ok(n)
}

/// Emits one event per name, with the index as payload, then returns the
/// input.
async fn emit_names(
    ctx: OrchestrationContext,
    names: Vec<String>,
) -> Result<Vec<String>, OrchestrationError> {
    for (i, name) in names.iter().enumerate() {
        ctx.emit_event(name, &i)?;
        if i % 7 == 6 {
            let _: u64 = ctx.call_activity("step", &(i as u64)).await?;
        }
    }
    Ok(names)
}

/// Returns its input.
async fn echo(_ctx: OrchestrationContext, input: Value) -> Result<Value, OrchestrationError> {
    Ok(input)
}

/// Fields that a map of sorted keys would reorder.
#[derive(serde::Serialize, serde::Deserialize)]
struct Unsorted {
    zebra: u64,
    apple: u64,
}

async fn unsorted(ctx: OrchestrationContext, input: Unsorted) -> Result<Unsorted, OrchestrationError> {
    ctx.set_custom_status(&Unsorted {
        zebra: input.zebra + 1,
        apple: input.apple,
    })?;
    Ok(Unsorted {
        zebra: input.zebra * 10,
        apple: input.apple,
    })
}

async fn step(_ctx: ActivityContext, n: u64) -> Result<u64, Infallible> {
    Ok(n)
}

fn registry() -> Registry {
    Registry::new()
        .orchestration("gated", gated)
        .orchestration("emit_names", emit_names)
        .orchestration("echo", echo)
        .orchestration("unsorted", unsorted)
        .activity("step", step)
}

// ---------------------------------------------------------------------------
// The server under test
// ---------------------------------------------------------------------------

/// A worker, the API served on an ephemeral port, and an HTTP client.
struct Server {
    base: String,
    http: reqwest::Client,
    client: Client,
    token: Option<String>,
    worker: Option<Worker>,
    stop: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Server {
    async fn start(options: ServeOptions) -> Self {
        Self::start_with(options, None, |api| api).await
    }

    async fn start_with(
        options: ServeOptions,
        token: Option<&str>,
        extend: impl FnOnce(HttpApi) -> HttpApi,
    ) -> Self {
        let store = common::memory_store().await;
        let worker = Worker::start(store.clone(), registry()).expect("worker starts");
        let client = Client::new(store.clone());
        let options = options.token_opt(token.map(str::to_owned));
        let api = extend(HttpApi::new(client.clone(), options));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(api.serve_with_shutdown(listener, async move {
            let _ = stopped.await;
        }));
        Self {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
            client,
            token: token.map(str::to_owned),
            worker: Some(worker),
            stop: Some(stop),
            served: Some(served),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request with the server's token, if it has one.
    fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let builder = self.http.request(method, self.url(path));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    async fn send(&self, builder: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let response = tokio::time::timeout(WAIT, builder.send())
            .await
            .expect("response in time")
            .expect("request sent");
        let status = response.status();
        let bytes = response.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{status}: body is not JSON ({e}): {:?}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        (status, body)
    }

    async fn call(&self, method: Method, path: &str) -> (StatusCode, Value) {
        self.send(self.req(method, path)).await
    }

    async fn post_json(&self, path: &str, body: &str) -> (StatusCode, Value) {
        self.send(self.req(Method::POST, path).body(body.to_owned()))
            .await
    }

    /// Starts `name` with `input` over HTTP and returns the 202 body.
    async fn start_instance(&self, name: &str, input: &Value) -> Value {
        let (status, body) = self
            .post_json(&format!("/api/orchestrations/{name}"), &input.to_string())
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        body
    }

    /// Opens the SSE stream of `id` with extra headers.
    async fn open_stream(&self, path: &str, last_event_id: Option<&str>) -> reqwest::Response {
        let mut builder = self.req(Method::GET, path);
        if let Some(id) = last_event_id {
            builder = builder.header("Last-Event-ID", id);
        }
        tokio::time::timeout(WAIT, builder.send())
            .await
            .expect("stream response in time")
            .expect("stream request sent")
    }

    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            tokio::time::timeout(WAIT, served)
                .await
                .expect("server stops in time")
                .expect("server task")
                .expect("server ran without an I/O error");
        }
        if let Some(worker) = self.worker.take() {
            worker.shutdown().await.expect("worker shuts down");
        }
    }
}

/// Asserts an error answer: the status and the JSON error body's code.
#[track_caller]
fn assert_error(answer: &(StatusCode, Value), status: StatusCode, code: &str) {
    let (got, body) = answer;
    assert_eq!(*got, status, "body: {body}");
    assert_eq!(body["error"]["code"], code, "body: {body}");
    assert!(
        body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error without a message: {body}"
    );
}

// ---------------------------------------------------------------------------
// Server-Sent Events
// ---------------------------------------------------------------------------

/// One SSE frame: the fields of one blank-line-terminated block.
#[derive(Debug, Default, Clone, PartialEq)]
struct Frame {
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
    comments: Vec<String>,
}

impl Frame {
    fn is_event(&self) -> bool {
        self.id.is_some() || self.event.is_some() || self.data.is_some()
    }

    fn seq(&self) -> u64 {
        self.id
            .as_deref()
            .expect("event has an id")
            .parse()
            .expect("id is a number")
    }

    fn data_json(&self) -> Value {
        serde_json::from_str(self.data.as_deref().expect("event has data")).expect("data is JSON")
    }
}

/// Reads SSE frames from a streaming response.
struct SseReader {
    response: reqwest::Response,
    buffer: String,
    ended: bool,
}

impl SseReader {
    fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
        Self {
            response,
            buffer: String::new(),
            ended: false,
        }
    }

    /// The next frame (events and comment-only frames), or `None` once the
    /// response has ended. Panics if nothing arrives within [`WAIT`].
    async fn next_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut frame = Frame::default();
                for line in block.lines().filter(|l| !l.is_empty()) {
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
                    match field {
                        "" => frame.comments.push(value),
                        "id" => frame.id = Some(value),
                        "event" => frame.event = Some(value),
                        "data" => {
                            assert!(frame.data.is_none(), "data on several lines: {block:?}");
                            frame.data = Some(value);
                        }
                        other => panic!("unexpected SSE field {other:?} in {block:?}"),
                    }
                }
                return Some(frame);
            }
            if self.ended {
                assert!(
                    self.buffer.is_empty(),
                    "stream ended inside a frame: {:?}",
                    self.buffer
                );
                return None;
            }
            let chunk = tokio::time::timeout(WAIT, self.response.chunk())
                .await
                .expect("SSE data or the end of the response in time")
                .expect("SSE body reads");
            match chunk {
                Some(bytes) => self.buffer.push_str(std::str::from_utf8(&bytes).expect("UTF-8")),
                None => self.ended = true,
            }
        }
    }

    /// The next frame that is an event (skipping keep-alive comments).
    async fn next_event(&mut self) -> Option<Frame> {
        loop {
            match self.next_frame().await {
                Some(frame) if frame.is_event() => return Some(frame),
                Some(_) => continue,
                None => return None,
            }
        }
    }

    /// Every remaining event, until the response ends.
    async fn rest(&mut self) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(frame) = self.next_event().await {
            out.push(frame);
        }
        out
    }
}

fn ticks(frames: &[Frame]) -> Vec<(u64, u64)> {
    frames
        .iter()
        .map(|f| {
            assert_eq!(f.event.as_deref(), Some("tick"), "{f:?}");
            (f.seq(), f.data_json()["n"].as_u64().expect("n"))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Every route, the happy path
// ---------------------------------------------------------------------------

#[tokio::test]
async fn start_returns_202_with_the_instance_id_and_links_that_work() {
    let server = Server::start(ServeOptions::new()).await;
    let (status, body) = server
        .post_json(
            "/api/orchestrations/echo?instanceId=order%2F42",
            r#"{"hello": ["world"]}"#,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["id"], "order/42");
    assert_eq!(body["instanceId"], "order/42");
    let instance = server.url("/api/instances/order%2F42");
    assert_eq!(body["statusQueryGetUri"], instance);
    assert_eq!(body["eventsUri"], format!("{instance}/events"));
    assert_eq!(body["streamUri"], format!("{instance}/events/stream"));
    assert_eq!(
        body["sendEventPostUri"],
        format!("{instance}/raiseEvent/{{eventName}}")
    );
    assert_eq!(
        body["raiseEventPostUri"],
        format!("{instance}/raiseEvent/{{eventName}}")
    );
    assert_eq!(
        body["terminatePostUri"],
        format!("{instance}/terminate?reason={{text}}")
    );
    assert_eq!(
        body["suspendPostUri"],
        format!("{instance}/suspend?reason={{text}}")
    );
    assert_eq!(
        body["resumePostUri"],
        format!("{instance}/resume?reason={{text}}")
    );
    assert_eq!(body["purgeHistoryDeleteUri"], instance);

    let done = wait_done(&server.client, &iid("order/42")).await;
    assert_eq!(done.status, RuntimeStatus::Completed);
    assert_eq!(done.output_as::<Value>().unwrap(), json!({"hello": ["world"]}));

    // The status link answers with the instance.
    let (status, got) = server
        .send(server.http.get(body["statusQueryGetUri"].as_str().unwrap()))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["instanceId"], "order/42");
    assert_eq!(got["runtimeStatus"], "Completed");

    // Without instanceId, a random id; an empty body is a null input.
    let response = server
        .req(Method::POST, "/api/orchestrations/echo")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(location, server.url(&format!("/api/instances/{id}")));
    let done = wait_done(&server.client, &iid(&id)).await;
    assert_eq!(done.output.as_ref().map(Payload::as_str), Some("null"));
    server.shutdown().await;
}

#[tokio::test]
async fn public_url_is_used_for_links() {
    let server = Server::start(ServeOptions::new().public_url("https://durable.example.com/")).await;
    let body = server.start_instance("echo", &json!(1)).await;
    let id = body["id"].as_str().unwrap();
    assert_eq!(
        body["statusQueryGetUri"],
        format!("https://durable.example.com/api/instances/{id}")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn status_has_the_durable_functions_fields() {
    let server = Server::start(ServeOptions::new()).await;
    server
        .post_json("/api/orchestrations/emit_names?instanceId=s1", r#"["a","b"]"#)
        .await;
    let meta = wait_done(&server.client, &iid("s1")).await;
    let (status, body) = server.call(Method::GET, "/api/instances/s1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["instanceId"], "s1");
    assert_eq!(body["name"], "emit_names");
    assert_eq!(body["executionId"], meta.execution_id);
    assert_eq!(body["runtimeStatus"], "Completed");
    assert_eq!(body["input"], json!(["a", "b"]));
    assert_eq!(body["output"], json!(["a", "b"]));
    assert_eq!(body["customStatus"], Value::Null);
    assert_eq!(body["failureDetails"], Value::Null);
    assert_eq!(body["streamLength"], 2);
    for field in ["createdTime", "lastUpdatedTime", "completedTime"] {
        let text = body[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} in {body}"));
        chrono::DateTime::parse_from_rfc3339(text).unwrap_or_else(|e| panic!("{field} = {text}: {e}"));
    }
    server.shutdown().await;
}

#[tokio::test]
async fn status_and_list_send_input_output_and_custom_status_as_written() {
    let server = Server::start(ServeOptions::new()).await;
    // Spaces in the start body: the input is kept as sent.
    server
        .post_json(
            "/api/orchestrations/unsorted?instanceId=u1",
            r#"{"zebra": 1, "apple": 2}"#,
        )
        .await;
    wait_done(&server.client, &iid("u1")).await;
    for path in ["/api/instances/u1", "/api/instances"] {
        let response = server.req(Method::GET, path).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let text = response.text().await.unwrap();
        for field in [
            r#""input":{"zebra": 1, "apple": 2}"#,
            r#""output":{"zebra":10,"apple":2}"#,
            r#""customStatus":{"zebra":2,"apple":2}"#,
        ] {
            assert!(text.contains(field), "{path}: {field} in {text}");
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn raise_event_reaches_the_orchestration() {
    let server = Server::start(ServeOptions::new()).await;
    let id = server.start_instance("gated", &json!(1)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_stream_len(&server.client, &iid(&id), 1).await;
    let (status, body) = server
        .post_json(&format!("/api/instances/{id}/raiseEvent/go"), "2")
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body, Value::Null);
    let done = wait_done(&server.client, &iid(&id)).await;
    assert_eq!(done.output_as::<Value>().unwrap(), json!(3));
    server.shutdown().await;
}

#[tokio::test]
async fn raise_event_once_refuses_a_second_raise_of_the_name() {
    let server = Server::start(ServeOptions::new()).await;
    let id = server.start_instance("gated", &json!(1)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_stream_len(&server.client, &iid(&id), 1).await;
    let route = format!("/api/instances/{id}/raiseEvent/note?once=true");
    let (status, body) = server.post_json(&route, "1").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let answer = server.post_json(&route, "2").await;
    assert_error(&answer, StatusCode::CONFLICT, "event_already_raised");
    let answer = server
        .post_json(&format!("/api/instances/{id}/raiseEvent/note?once=maybe"), "3")
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_parameter");
    // Without once, the name may be raised again.
    let (status, body) = server
        .post_json(&format!("/api/instances/{id}/raiseEvent/note"), "4")
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = server
        .post_json(&format!("/api/instances/{id}/raiseEvent/go?once=true"), "2")
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let done = wait_done(&server.client, &iid(&id)).await;
    assert_eq!(done.output_as::<Value>().unwrap(), json!(3));
    server.shutdown().await;
}

#[tokio::test]
async fn suspend_resume_terminate_and_purge() {
    let server = Server::start(ServeOptions::new()).await;
    server
        .post_json("/api/orchestrations/gated?instanceId=ctl", "0")
        .await;
    let id = iid("ctl");
    server.client.wait_for_start(&id, WAIT).await.unwrap();

    let (status, _) = server
        .call(Method::POST, "/api/instances/ctl/suspend?reason=maintenance")
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    common::eventually("suspended", || async {
        let meta = server.client.get_instance(&id).await.unwrap()?;
        (meta.status == RuntimeStatus::Suspended).then_some(())
    })
    .await;
    let (_, body) = server.call(Method::GET, "/api/instances/ctl").await;
    assert_eq!(body["runtimeStatus"], "Suspended");

    // A purge of an instance that is not terminal is refused.
    assert_error(
        &server.call(Method::DELETE, "/api/instances/ctl").await,
        StatusCode::CONFLICT,
        "instance_not_terminal",
    );

    let (status, _) = server.call(Method::POST, "/api/instances/ctl/resume").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    common::eventually("running again", || async {
        let meta = server.client.get_instance(&id).await.unwrap()?;
        (meta.status == RuntimeStatus::Running).then_some(())
    })
    .await;

    let (status, _) = server
        .call(
            Method::POST,
            "/api/instances/ctl/terminate?reason=no%20longer%20needed",
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let done = wait_done(&server.client, &id).await;
    assert_eq!(done.status, RuntimeStatus::Terminated);
    let (_, body) = server.call(Method::GET, "/api/instances/ctl").await;
    assert_eq!(body["runtimeStatus"], "Terminated");
    assert_eq!(body["output"], "no longer needed");

    let (status, body) = server.call(Method::DELETE, "/api/instances/ctl").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "instancesDeleted": 1 }));
    assert!(server.client.get_instance(&id).await.unwrap().is_none());
    assert_error(
        &server.call(Method::GET, "/api/instances/ctl").await,
        StatusCode::NOT_FOUND,
        "instance_not_found",
    );
    server.shutdown().await;
}

#[tokio::test]
async fn list_filters_and_pages() {
    let server = Server::start(ServeOptions::new()).await;
    for i in 0..5 {
        server
            .post_json(&format!("/api/orchestrations/echo?instanceId=e{i}"), "1")
            .await;
    }
    for i in 0..2 {
        server
            .post_json(&format!("/api/orchestrations/gated?instanceId=g{i}"), "0")
            .await;
    }
    for i in 0..5 {
        wait_done(&server.client, &iid(&format!("e{i}"))).await;
    }
    for i in 0..2 {
        server
            .client
            .wait_for_start(&iid(&format!("g{i}")), WAIT)
            .await
            .unwrap();
    }

    let ids = |body: &Value| -> BTreeSet<String> {
        body["instances"]
            .as_array()
            .expect("instances")
            .iter()
            .map(|i| i["instanceId"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, all) = server.call(Method::GET, "/api/instances").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&all).len(), 7);
    assert_eq!(all["continuationToken"], Value::Null);

    let (_, completed) = server
        .call(Method::GET, "/api/instances?runtimeStatus=Completed")
        .await;
    assert_eq!(ids(&completed), (0..5).map(|i| format!("e{i}")).collect());
    let (_, running) = server
        .call(Method::GET, "/api/instances?runtimeStatus=running")
        .await;
    assert_eq!(ids(&running), ["g0", "g1"].map(String::from).into());
    let (_, both) = server
        .call(Method::GET, "/api/instances?runtimeStatus=Completed,Running")
        .await;
    assert_eq!(ids(&both).len(), 7);
    let (_, both) = server
        .call(
            Method::GET,
            "/api/instances?runtimeStatus=Completed&runtimeStatus=Running",
        )
        .await;
    assert_eq!(ids(&both).len(), 7);
    let (_, failed) = server
        .call(Method::GET, "/api/instances?runtimeStatus=Failed")
        .await;
    assert!(ids(&failed).is_empty());
    let (_, named) = server.call(Method::GET, "/api/instances?name=gated").await;
    assert_eq!(ids(&named), ["g0", "g1"].map(String::from).into());

    let past = "2000-01-01T00:00:00Z";
    let future = "2999-01-01T00:00:00Z";
    let (_, in_range) = server
        .call(
            Method::GET,
            &format!("/api/instances?createdFrom={past}&createdTo={future}"),
        )
        .await;
    assert_eq!(ids(&in_range).len(), 7);
    let (_, none) = server
        .call(Method::GET, &format!("/api/instances?createdFrom={future}"))
        .await;
    assert!(ids(&none).is_empty());
    let (_, none) = server
        .call(Method::GET, &format!("/api/instances?createdTo={past}"))
        .await;
    assert!(ids(&none).is_empty());

    // Pages of 3: every instance exactly once.
    let mut seen = Vec::new();
    let mut path = "/api/instances?pageSize=3".to_owned();
    loop {
        let (status, page) = server.call(Method::GET, &path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let got = page["instances"].as_array().unwrap();
        assert!(got.len() <= 3);
        seen.extend(got.iter().map(|i| i["instanceId"].as_str().unwrap().to_owned()));
        match page["continuationToken"].as_str() {
            Some(token) => {
                assert!(
                    token.bytes().all(|b| b.is_ascii_hexdigit()),
                    "opaque token: {token}"
                );
                path = format!("/api/instances?pageSize=3&continuationToken={token}");
            }
            None => break,
        }
        assert!(seen.len() <= 7, "paging does not end: {seen:?}");
    }
    assert_eq!(seen.len(), 7, "{seen:?}");
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 7, "{seen:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn events_page_reads_after_a_cursor() {
    let server = Server::start(ServeOptions::new()).await;
    let names: Vec<String> = (0..20).map(|i| format!("ev{i}")).collect();
    server
        .post_json(
            "/api/orchestrations/emit_names?instanceId=p",
            &json!(names).to_string(),
        )
        .await;
    wait_done(&server.client, &iid("p")).await;

    let (status, page) = server
        .call(Method::GET, "/api/instances/p/events?after=5&limit=4")
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["instanceId"], "p");
    let events = page["events"].as_array().unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [6, 7, 8, 9]);
    assert_eq!(events[0]["name"], "ev5");
    assert_eq!(events[0]["payload"], 5);
    assert!(events[0]["emittedAt"].is_string());
    assert!(events[0]["executionId"].is_string());
    assert_eq!(page["nextCursor"], 9);
    assert_eq!(page["finished"], false);

    // The default page and the last page.
    let (_, page) = server.call(Method::GET, "/api/instances/p/events").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 20);
    assert_eq!(page["nextCursor"], 20);
    assert_eq!(page["finished"], true);
    let (_, page) = server.call(Method::GET, "/api/instances/p/events?after=20").await;
    assert_eq!(page["events"], json!([]));
    assert_eq!(page["nextCursor"], 20);
    assert_eq!(page["finished"], true);
    server.shutdown().await;
}

#[tokio::test]
async fn openapi_document_is_served() {
    let server = Server::start(ServeOptions::new()).await;
    let (status, doc) = server.call(Method::GET, "/api/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.0.3");
    assert!(doc["paths"]["/api/instances/{id}/events/stream"]["get"].is_object());
    assert!(doc.get("security").is_none(), "no token, no security requirement");
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// The live stream
// ---------------------------------------------------------------------------

#[tokio::test]
async fn stream_sends_every_event_in_order_and_ends_after_the_terminal_instance() {
    let server = Server::start(ServeOptions::new()).await;
    let names: Vec<String> = (0..50).map(|i| format!("name-{i}")).collect();
    let body = server.start_instance("emit_names", &json!(names)).await;
    let stream_uri = body["streamUri"].as_str().unwrap().to_owned();
    let id = iid(body["id"].as_str().unwrap());

    let response = tokio::time::timeout(WAIT, server.http.get(&stream_uri).send())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.headers()["cache-control"], "no-cache");
    let mut reader = SseReader::new(response);
    let frames = reader.rest().await;
    let seqs: Vec<u64> = frames.iter().map(Frame::seq).collect();
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
    for (i, frame) in frames.iter().enumerate() {
        assert_eq!(frame.event.as_deref(), Some(names[i].as_str()));
        assert_eq!(frame.data_json(), json!(i));
    }
    // The response ended because the instance is terminal, with every event.
    let meta = server.client.get_instance(&id).await.unwrap().unwrap();
    assert_eq!(meta.status, RuntimeStatus::Completed);
    assert_eq!(meta.stream_len, 50);
    server.shutdown().await;
}

#[tokio::test]
async fn stream_is_live_and_ends_right_after_the_last_event() {
    let server = Server::start(ServeOptions::new()).await;
    server
        .post_json("/api/orchestrations/gated?instanceId=live", "2")
        .await;
    let mut reader = SseReader::new(
        server
            .open_stream("/api/instances/live/events/stream", None)
            .await,
    );
    let first = vec![
        reader.next_event().await.unwrap(),
        reader.next_event().await.unwrap(),
    ];
    assert_eq!(ticks(&first), [(1, 1), (2, 2)]);

    // The instance waits for `go`; the stream stays open until it finishes.
    let (status, _) = server.post_json("/api/instances/live/raiseEvent/go", "3").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let rest = reader.rest().await;
    assert_eq!(ticks(&rest), [(3, 3), (4, 4), (5, 5)]);
    let meta = server.client.get_instance(&iid("live")).await.unwrap().unwrap();
    assert!(meta.status.is_terminal());
    assert_eq!(meta.stream_len, 5);
    server.shutdown().await;
}

#[tokio::test]
async fn last_event_id_resumes_in_the_middle() {
    let server = Server::start(ServeOptions::new()).await;
    server
        .post_json("/api/orchestrations/gated?instanceId=r", "4")
        .await;

    // A first connection reads two events and drops.
    let mut reader = SseReader::new(server.open_stream("/api/instances/r/events/stream", None).await);
    let first = vec![
        reader.next_event().await.unwrap(),
        reader.next_event().await.unwrap(),
    ];
    assert_eq!(ticks(&first), [(1, 1), (2, 2)]);
    let last_id = first[1].id.clone().unwrap();
    drop(reader);

    // Reconnect as an EventSource does: same URL (with its old `after`),
    // Last-Event-ID set. The header wins over the query.
    let mut reader = SseReader::new(
        server
            .open_stream("/api/instances/r/events/stream?after=0", Some(&last_id))
            .await,
    );
    let next = reader.next_event().await.unwrap();
    assert_eq!(ticks(&[next]), [(3, 3)]);
    let (status, _) = server.post_json("/api/instances/r/raiseEvent/go", "2").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(ticks(&reader.rest().await), [(4, 4), (5, 5), (6, 6)]);

    // On a finished instance: `?after=` and Last-Event-ID both resume in the
    // middle and end at the last event.
    let mut reader = SseReader::new(
        server
            .open_stream("/api/instances/r/events/stream?after=4", None)
            .await,
    );
    assert_eq!(ticks(&reader.rest().await), [(5, 5), (6, 6)]);
    let mut reader = SseReader::new(
        server
            .open_stream("/api/instances/r/events/stream", Some("5"))
            .await,
    );
    assert_eq!(ticks(&reader.rest().await), [(6, 6)]);
    server.shutdown().await;
}

#[tokio::test]
async fn a_finished_stream_answers_204_so_event_source_stops() {
    let server = Server::start(ServeOptions::new()).await;
    server
        .post_json("/api/orchestrations/emit_names?instanceId=f", r#"["x","y"]"#)
        .await;
    wait_done(&server.client, &iid("f")).await;
    let response = server
        .open_stream("/api/instances/f/events/stream", Some("2"))
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = server
        .open_stream("/api/instances/f/events/stream?after=2", None)
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    // A finished instance without events.
    server
        .post_json("/api/orchestrations/echo?instanceId=f0", "1")
        .await;
    wait_done(&server.client, &iid("f0")).await;
    let response = server.open_stream("/api/instances/f0/events/stream", None).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    server.shutdown().await;
}

#[tokio::test]
async fn idle_streams_get_keep_alive_comments() {
    let server = Server::start(ServeOptions::new().keep_alive(Duration::from_millis(50))).await;
    server
        .post_json("/api/orchestrations/gated?instanceId=k", "0")
        .await;
    let mut reader = SseReader::new(server.open_stream("/api/instances/k/events/stream", None).await);
    let frame = reader.next_frame().await.expect("a keep-alive comment");
    assert!(!frame.is_event(), "{frame:?}");
    assert_eq!(frame.comments, ["keep-alive"]);
    // An event after the comments still arrives.
    server.post_json("/api/instances/k/raiseEvent/go", "1").await;
    assert_eq!(ticks(&reader.rest().await), [(1, 1)]);
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_open_streams() {
    let server = Server::start(ServeOptions::new()).await;
    server
        .post_json("/api/orchestrations/gated?instanceId=sd", "1")
        .await;
    let mut reader = SseReader::new(server.open_stream("/api/instances/sd/events/stream", None).await);
    assert_eq!(ticks(&[reader.next_event().await.unwrap()]), [(1, 1)]);
    // The instance still waits; a graceful shutdown must not wait for it.
    server.shutdown().await;
    assert!(reader.next_event().await.is_none());
}

// ---------------------------------------------------------------------------
// Auth
// ---------------------------------------------------------------------------

/// A concrete path for a route template, on instance `id`.
fn concrete(path: &str, id: &str) -> String {
    path.replace("{name}", "echo")
        .replace("{id}", id)
        .replace("{event}", "go")
}

#[tokio::test]
async fn a_token_protects_every_route_including_the_stream() {
    let server = Server::start_with(ServeOptions::new(), Some("s3cret-token"), |api| api).await;
    server
        .post_json("/api/orchestrations/gated?instanceId=a", "1")
        .await;
    wait_stream_len(&server.client, &iid("a"), 1).await;

    for (method, path) in HttpApi::core_routes() {
        let url = server.url(&concrete(path, "a"));
        let missing = server.send(server.http.request(method.clone(), &url)).await;
        assert_error(&missing, StatusCode::UNAUTHORIZED, "unauthorized");
        let wrong = server
            .send(
                server
                    .http
                    .request(method.clone(), &url)
                    .bearer_auth("s3cret-tokeN"),
            )
            .await;
        assert_error(&wrong, StatusCode::UNAUTHORIZED, "unauthorized");
        let basic = server
            .send(
                server
                    .http
                    .request(method.clone(), &url)
                    .basic_auth("user", Some("s3cret-token")),
            )
            .await;
        assert_error(&basic, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    // The 401 says how to authenticate.
    let response = server
        .http
        .get(server.url("/api/instances"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    // Unknown routes too.
    let unknown = server.send(server.http.get(server.url("/nope"))).await;
    assert_error(&unknown, StatusCode::UNAUTHORIZED, "unauthorized");

    // Nothing happened: the instance was not started twice, raised, ended
    // or purged.
    let meta = server.client.get_instance(&iid("a")).await.unwrap().unwrap();
    assert_eq!(meta.status, RuntimeStatus::Running);

    // The right token opens the stream and the rest.
    let (status, body) = server.call(Method::GET, "/api/instances/a").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut reader = SseReader::new(server.open_stream("/api/instances/a/events/stream", None).await);
    assert_eq!(ticks(&[reader.next_event().await.unwrap()]), [(1, 1)]);
    let (status, _) = server.post_json("/api/instances/a/raiseEvent/go", "1").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(ticks(&reader.rest().await), [(2, 2)]);
    let (status, doc) = server.call(Method::GET, "/api/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["security"], json!([{ "bearer": [] }]));
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------

#[tokio::test]
async fn malformed_json_is_400() {
    let server = Server::start(ServeOptions::new()).await;
    // An object with a key twice would be read differently by different
    // readers: refused at the door too.
    for body in [
        "{not json",
        "[1, 2",
        "\"unterminated",
        "{} trailing",
        r#"{"a":1,"a":2}"#,
        "1e400",
    ] {
        let answer = server.post_json("/api/orchestrations/echo", body).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_json");
    }
    server
        .post_json("/api/orchestrations/gated?instanceId=j", "0")
        .await;
    for body in ["{oops", r#"{"x":{"k":1,"k":2}}"#] {
        let answer = server.post_json("/api/instances/j/raiseEvent/go", body).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_json");
    }
    // Nothing was started by the bad requests.
    let page = server.client.list_instances(InstanceQuery::new()).await.unwrap();
    assert_eq!(page.instances.len(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_orchestration_is_404_when_the_names_are_known() {
    let server =
        Server::start(ServeOptions::new().known_orchestrations(registry().orchestration_names())).await;
    let answer = server.post_json("/api/orchestrations/no_such_thing", "1").await;
    assert_error(&answer, StatusCode::NOT_FOUND, "orchestration_not_found");
    assert!(server
        .client
        .list_instances(InstanceQuery::new())
        .await
        .unwrap()
        .instances
        .is_empty());
    // Known names start.
    server.start_instance("echo", &json!(1)).await;
    // The document lists the known names.
    let (_, doc) = server.call(Method::GET, "/api/openapi.json").await;
    let names = &doc["paths"]["/api/orchestrations/{name}"]["post"]["parameters"][0]["schema"]["enum"];
    assert_eq!(names, &json!(["echo", "emit_names", "gated", "unsorted"]));
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_instance_is_404_on_every_instance_route() {
    let server = Server::start(ServeOptions::new()).await;
    for (method, path) in HttpApi::core_routes() {
        if !path.contains("{id}") {
            continue;
        }
        let answer = server.call(method.clone(), &concrete(path, "nobody")).await;
        assert_error(&answer, StatusCode::NOT_FOUND, "instance_not_found");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_404_and_405() {
    let server = Server::start(ServeOptions::new()).await;
    assert_error(
        &server.call(Method::GET, "/api/nothing").await,
        StatusCode::NOT_FOUND,
        "route_not_found",
    );
    assert_error(
        &server.call(Method::GET, "/api/instances/x/raiseEvent").await,
        StatusCode::NOT_FOUND,
        "route_not_found",
    );
    assert_error(
        &server.call(Method::PUT, "/api/instances/x").await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    assert_error(
        &server.call(Method::GET, "/api/orchestrations/echo").await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    // A 405 says which methods the route serves.
    let response = server.req(Method::PUT, "/api/instances/x").send().await.unwrap();
    let allow = response.headers()["allow"].to_str().unwrap().to_owned();
    let mut allowed: Vec<&str> = allow.split(',').map(str::trim).collect();
    allowed.sort_unstable();
    assert_eq!(allowed, ["DELETE", "GET", "HEAD"]);
    server.shutdown().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let server = Server::start(ServeOptions::new().body_limit(1024)).await;
    let big = json!("x".repeat(2048)).to_string();
    let answer = server.post_json("/api/orchestrations/echo", &big).await;
    assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    server
        .post_json("/api/orchestrations/gated?instanceId=big", "0")
        .await;
    let answer = server.post_json("/api/instances/big/raiseEvent/go", &big).await;
    assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    // Just under the limit is fine.
    let fits = json!("x".repeat(1000)).to_string();
    let (status, body) = server.post_json("/api/orchestrations/echo", &fits).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    // A chunked body (no Content-Length) is held to the limit as it
    // arrives.
    let head = raw_chunked_post(&server.base, "/api/orchestrations/echo", &big).await;
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.contains("payload_too_large"), "{head}");
    let head = raw_chunked_post(&server.base, "/api/orchestrations/echo", &fits).await;
    assert!(head.starts_with("HTTP/1.1 202"), "{head}");
    server.shutdown().await;
}

/// Sends a POST with a chunked body over a plain TCP connection and
/// returns the whole answer as text.
async fn raw_chunked_post(base: &str, path: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    for chunk in body.as_bytes().chunks(100) {
        request.push_str(&format!(
            "{:x}\r\n{}\r\n",
            chunk.len(),
            std::str::from_utf8(chunk).unwrap()
        ));
    }
    request.push_str("0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("answer in time")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn bad_cursors_are_400() {
    let server = Server::start(ServeOptions::new()).await;
    server
        .post_json("/api/orchestrations/emit_names?instanceId=c", r#"["a","b","c"]"#)
        .await;
    wait_done(&server.client, &iid("c")).await;
    for query in [
        "after=abc",
        "after=-1",
        "after=1.5",
        "after=",
        "after=99999999999999999999999",
    ] {
        let answer = server
            .call(Method::GET, &format!("/api/instances/c/events?{query}"))
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_parameter");
        let answer = server
            .call(Method::GET, &format!("/api/instances/c/events/stream?{query}"))
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_parameter");
    }
    // Past the end of the stream: never handed out for this instance.
    let answer = server.call(Method::GET, "/api/instances/c/events?after=4").await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "cursor_out_of_range");
    let answer = server
        .call(Method::GET, "/api/instances/c/events/stream?after=4")
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "cursor_out_of_range");
    let answer = server
        .send(
            server
                .req(Method::GET, "/api/instances/c/events/stream")
                .header("Last-Event-ID", "4"),
        )
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "cursor_out_of_range");
    for bad in ["abc", "-1", "1e3"] {
        let answer = server
            .send(
                server
                    .req(Method::GET, "/api/instances/c/events/stream")
                    .header("Last-Event-ID", bad),
            )
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_cursor");
    }
    for query in ["limit=0", "limit=10001", "limit=ten", "limit=1&limit=2"] {
        let answer = server
            .call(Method::GET, &format!("/api/instances/c/events?{query}"))
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_parameter");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn bad_query_values_are_400() {
    let server = Server::start(ServeOptions::new()).await;
    let cases = [
        ("/api/instances?runtimeStatus=Bogus", "invalid_parameter"),
        ("/api/instances?runtimeStatus=Completed,Nope", "invalid_parameter"),
        ("/api/instances?pageSize=0", "invalid_parameter"),
        ("/api/instances?pageSize=1001", "invalid_parameter"),
        ("/api/instances?pageSize=many", "invalid_parameter"),
        ("/api/instances?createdFrom=yesterday", "invalid_parameter"),
        (
            "/api/instances?createdTo=2026-13-01T00:00:00Z",
            "invalid_parameter",
        ),
        (
            "/api/instances?createdFrom=2026-02-01T00:00:00Z&createdTo=2026-01-01T00:00:00Z",
            "invalid_parameter",
        ),
        ("/api/instances?name=a&name=b", "invalid_parameter"),
        (
            "/api/instances?continuationToken=garbage",
            "invalid_continuation_token",
        ),
        (
            // Valid hex, but not a token the server made.
            "/api/instances?continuationToken=6e6f",
            "invalid_continuation_token",
        ),
        ("/api/instances?runtimestatus=Running", "unknown_parameter"),
        ("/api/instances/x?verbose=1", "unknown_parameter"),
        ("/api/instances/x/events?cursor=1", "unknown_parameter"),
    ];
    for (path, code) in cases {
        let answer = server.call(Method::GET, path).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, code);
    }
    let answer = server.post_json("/api/orchestrations/echo?instance=x", "1").await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "unknown_parameter");
    let answer = server
        .call(Method::POST, "/api/instances/x/terminate?why=x")
        .await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "unknown_parameter");
    server.shutdown().await;
}

#[tokio::test]
async fn invalid_instance_ids_are_400() {
    let server = Server::start(ServeOptions::new()).await;
    let too_long = "x".repeat(durable_core::MAX_INSTANCE_ID_LEN + 1);
    for query in [
        "instanceId=",
        "instanceId=a%0Ab",
        &format!("instanceId={too_long}"),
    ] {
        let answer = server
            .post_json(&format!("/api/orchestrations/echo?{query}"), "1")
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_instance_id");
    }
    for (method, path) in HttpApi::core_routes() {
        if !path.contains("{id}") {
            continue;
        }
        for id in ["a%0Ab", too_long.as_str(), "tab%09"] {
            let answer = server.call(method.clone(), &concrete(path, id)).await;
            assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_instance_id");
        }
        // Not UTF-8 at all.
        let answer = server.call(method.clone(), &concrete(path, "%FF%FE")).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_path");
    }
    assert!(server
        .client
        .list_instances(InstanceQuery::new())
        .await
        .unwrap()
        .instances
        .is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn an_instance_that_exists_is_409() {
    let server = Server::start(ServeOptions::new()).await;
    server
        .post_json("/api/orchestrations/gated?instanceId=dup", "0")
        .await;
    let answer = server
        .post_json("/api/orchestrations/gated?instanceId=dup", "0")
        .await;
    assert_error(&answer, StatusCode::CONFLICT, "instance_already_exists");
    server.shutdown().await;
}

#[tokio::test]
async fn operations_on_a_terminal_instance_are_409() {
    let server = Server::start(ServeOptions::new()).await;
    server
        .post_json("/api/orchestrations/echo?instanceId=t", "1")
        .await;
    wait_done(&server.client, &iid("t")).await;
    for path in [
        "/api/instances/t/raiseEvent/go",
        "/api/instances/t/terminate",
        "/api/instances/t/suspend",
        "/api/instances/t/resume",
    ] {
        let answer = server.call(Method::POST, path).await;
        assert_error(&answer, StatusCode::CONFLICT, "instance_terminal");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn store_failures_are_503() {
    let store = Arc::new(SqliteStore::in_memory().await.unwrap());
    let client = Client::new(store.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let served = tokio::spawn(HttpApi::new(client, ServeOptions::new()).serve(listener));
    store.close().await;
    let http = reqwest::Client::new();
    let requests = [
        http.get(format!("{base}/api/instances/x")),
        http.get(format!("{base}/api/instances")),
        http.get(format!("{base}/api/instances/x/events")),
        http.get(format!("{base}/api/instances/x/events/stream")),
        http.post(format!("{base}/api/orchestrations/echo")).body("1"),
        http.post(format!("{base}/api/instances/x/raiseEvent/go"))
            .body("1"),
        http.post(format!("{base}/api/instances/x/terminate")),
        http.delete(format!("{base}/api/instances/x")),
    ];
    for request in requests {
        let response = request.send().await.unwrap();
        let status = response.status();
        let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert_error(
            &(status, body),
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
        );
    }
    served.abort();
}

// ---------------------------------------------------------------------------
// The OpenAPI document against the router
// ---------------------------------------------------------------------------

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if METHODS.contains(&method.as_str()) {
                out.insert((method.clone(), path.clone()));
            }
        }
    }
    out
}

#[tokio::test]
async fn the_openapi_document_matches_the_router() {
    let server = Server::start(ServeOptions::new().known_orchestrations(["echo", "gated"])).await;
    let (_, doc) = server.call(Method::GET, "/api/openapi.json").await;

    // Every route the router serves is documented, and nothing else.
    let served: BTreeSet<(String, String)> = HttpApi::core_routes()
        .into_iter()
        .map(|(method, path)| (method.as_str().to_ascii_lowercase(), path.to_owned()))
        .collect();
    assert_eq!(documented(&doc), served);

    // Every documented path and method is really served: it answers
    // something other than 404 and 405 (on a real instance), and every
    // other method on the same path is 405.
    server
        .post_json("/api/orchestrations/gated?instanceId=doc", "1")
        .await;
    wait_stream_len(&server.client, &iid("doc"), 1).await;
    for (path, item) in doc["paths"].as_object().unwrap() {
        let url = concrete(path, "doc");
        for method in METHODS {
            let http_method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
            let response = tokio::time::timeout(WAIT, server.req(http_method.clone(), &url).send())
                .await
                .expect("headers in time")
                .unwrap();
            let status = response.status();
            if item.get(method).is_some() {
                assert!(
                    status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is documented but answers {status}"
                );
                // The documented responses include the one given.
                let responses = &item[method]["responses"];
                assert!(
                    responses.get(status.as_str()).is_some(),
                    "{method} {path} answered {status}, which is not documented: {responses}"
                );
            } else {
                assert_eq!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {path} is not documented but answers {status}"
                );
            }
        }
    }
    // Every $ref points at a schema that exists.
    let text = doc.to_string();
    for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = &piece[..piece.find('"').unwrap()];
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "missing schema {name}"
        );
    }
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// Extension routes
// ---------------------------------------------------------------------------

async fn echo_reply(JsonBody(body): JsonBody<Value>) -> Result<axum::Json<Value>, ApiError> {
    if body.is_null() {
        return Err(ApiError::new(
            axum::http::StatusCode::CONFLICT,
            "request_not_pending",
            "nothing to answer",
        ));
    }
    Ok(axum::Json(json!({ "echo": body })))
}

#[tokio::test]
async fn added_routes_share_auth_limits_errors_and_the_document() {
    let server = Server::start_with(ServeOptions::new().body_limit(256), Some("t0ken"), |api| {
        api.routes(
            axum::Router::new()
                .route("/api/extra/reply", axum::routing::post(echo_reply))
                .route(
                    "/api/extra/bug",
                    axum::routing::get(|| async {
                        if true {
                            panic!("a bug in a handler");
                        }
                        "unreachable"
                    }),
                ),
        )
        .document(
            "/api/extra/reply",
            json!({ "post": { "summary": "Echo", "responses": { "200": { "description": "the echo" } } } }),
        )
    })
    .await;
    let (status, body) = server.post_json("/api/extra/reply", r#"{"a":1}"#).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({ "echo": { "a": 1 } }));
    assert_error(
        &server.post_json("/api/extra/reply", "").await,
        StatusCode::CONFLICT,
        "request_not_pending",
    );
    assert_error(
        &server.post_json("/api/extra/reply", "{bad").await,
        StatusCode::BAD_REQUEST,
        "invalid_json",
    );
    assert_error(
        &server
            .post_json("/api/extra/reply", &json!("x".repeat(300)).to_string())
            .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );
    assert_error(
        &server.call(Method::GET, "/api/extra/reply").await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    let unauthenticated = server
        .send(server.http.post(server.url("/api/extra/reply")).body("{}"))
        .await;
    assert_error(&unauthenticated, StatusCode::UNAUTHORIZED, "unauthorized");
    // A handler that panics is a JSON 500, and the server goes on.
    assert_error(
        &server.call(Method::GET, "/api/extra/bug").await,
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
    );
    let (_, doc) = server.call(Method::GET, "/api/openapi.json").await;
    assert_eq!(doc["paths"]["/api/extra/reply"]["post"]["summary"], "Echo");
    assert!(doc["paths"]["/api/instances/{id}"]["get"].is_object());
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// Unusual but valid instance ids, and payloads of the wrong type
// ---------------------------------------------------------------------------

/// Percent-encodes every byte that is not unreserved in a URL.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn unusual_instance_ids_work_on_every_instance_route() {
    let server = Server::start(ServeOptions::new()).await;
    let ids = [
        "orders/2026/42",
        "/leading/and/trailing/",
        "ünïcødé 🚀",
        "'; DROP TABLE instances; --",
        "100% sure?#fragment&x=1",
        "back\\slash",
        "a+b c",
        "...",
        ".hidden",
    ];
    for id in ids {
        let enc = encode(id);
        let (status, body) = server
            .post_json(&format!("/api/orchestrations/gated?instanceId={enc}"), "0")
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{id:?}: {body}");
        assert_eq!(body["id"], id);
        let (status, body) = server.call(Method::GET, &format!("/api/instances/{enc}")).await;
        assert_eq!(status, StatusCode::OK, "{id:?}: {body}");
        assert_eq!(body["instanceId"], id);
        let (status, body) = server
            .post_json(&format!("/api/instances/{enc}/raiseEvent/go"), "1")
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{id:?}: {body}");
        let done = wait_done(&server.client, &iid(id)).await;
        assert_eq!(done.output_as::<Value>().unwrap(), json!(1), "{id:?}");
        let (status, body) = server
            .call(Method::GET, &format!("/api/instances/{enc}/events"))
            .await;
        assert_eq!(status, StatusCode::OK, "{id:?}: {body}");
        assert_eq!(body["events"][0]["name"], "tick", "{id:?}: {body}");
        let stream = server
            .open_stream(&format!("/api/instances/{enc}/events/stream"), None)
            .await;
        assert!(stream.status().is_success(), "{id:?}: {}", stream.status());
        let text = tokio::time::timeout(WAIT, stream.text())
            .await
            .expect("the stream of a finished instance ends")
            .unwrap();
        assert!(text.contains("event: tick"), "{id:?}: {text}");
    }
    let (status, body) = server.call(Method::GET, "/api/instances").await;
    assert_eq!(status, StatusCode::OK);
    let listed: BTreeSet<&str> = body["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instanceId"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ids.into_iter().collect());
    for id in ids {
        let enc = encode(id);
        let (status, body) = server
            .call(Method::DELETE, &format!("/api/instances/{enc}"))
            .await;
        assert!(status.is_success(), "{id:?}: {status} {body}");
        let answer = server.call(Method::GET, &format!("/api/instances/{enc}")).await;
        assert_error(&answer, StatusCode::NOT_FOUND, "instance_not_found");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn payloads_of_the_wrong_type_fail_the_instance_not_the_server() {
    let server = Server::start(ServeOptions::new()).await;
    // An input the orchestration cannot take: accepted (the API does not
    // know the type), and the instance fails saying why.
    let (status, _) = server
        .post_json("/api/orchestrations/gated?instanceId=wrong-input", r#""seven""#)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    wait_done(&server.client, &iid("wrong-input")).await;
    let (status, body) = server.call(Method::GET, "/api/instances/wrong-input").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["runtimeStatus"], "Failed", "{body}");
    assert_eq!(body["failureDetails"]["errorType"], "InvalidInput", "{body}");

    // An event of the wrong type: the orchestration gets a typed error
    // (here it gives up with it).
    let (status, _) = server
        .post_json("/api/orchestrations/gated?instanceId=wrong-event", "0")
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = server
        .post_json(
            "/api/instances/wrong-event/raiseEvent/go",
            r#"{"not": "a number"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let meta = wait_done(&server.client, &iid("wrong-event")).await;
    assert_eq!(meta.status, RuntimeStatus::Failed);
    let failure = meta.failure.unwrap();
    assert!(failure.message.contains("external event 'go'"), "{failure:?}");

    // An event nobody waits for is kept, and the instance goes on.
    let (status, _) = server
        .post_json("/api/orchestrations/gated?instanceId=other-event", "0")
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = server
        .post_json("/api/instances/other-event/raiseEvent/nobody-waits", "1")
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    server
        .post_json("/api/instances/other-event/raiseEvent/go", "2")
        .await;
    let meta = wait_done(&server.client, &iid("other-event")).await;
    assert_eq!(meta.output_as::<Value>().unwrap(), json!(2));
    server.shutdown().await;
}

#[tokio::test]
async fn ids_that_a_url_path_cannot_hold_are_400_at_start() {
    let server = Server::start(ServeOptions::new()).await;
    // "." and ".." are dot segments: clients remove them from a path (even
    // percent-encoded), so no route could ever reach such an instance.
    for id in [".", "..", "%2E", "%2e%2E"] {
        let answer = server
            .post_json(&format!("/api/orchestrations/echo?instanceId={id}"), "1")
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "invalid_instance_id");
    }
    assert!(server
        .client
        .list_instances(InstanceQuery::new())
        .await
        .unwrap()
        .instances
        .is_empty());
    server.shutdown().await;
}
