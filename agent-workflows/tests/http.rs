//! The workflow routes over HTTP, with a real client against a server on an
//! ephemeral port: live status, pending requests, answering by request id,
//! the errors (unknown instance, not pending, bad body, bad id), the token,
//! and the OpenAPI description.

use std::sync::Arc;
use std::time::Duration;

use agent_workflows::prelude::*;
use durable_core::http::{HttpApi, ServeOptions};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Draft {
    title: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Verdict {
    approved: bool,
}

const APPROVAL: RequestPort<Draft, Verdict> = RequestPort::new("approval");

struct Reviewer;

#[executor(id = "reviewer")]
impl Reviewer {
    /// Asks for one approval per draft.
    #[handler]
    async fn on_drafts(&self, drafts: Vec<Draft>, ctx: &mut WorkflowContext) -> Result<(), ExecutorError> {
        for draft in &drafts {
            ctx.request_info(&APPROVAL, draft)?;
        }
        Ok(())
    }

    /// Yields each verdict.
    #[handler]
    async fn on_verdict(
        &self,
        answer: RequestResponse<Draft, Verdict>,
        ctx: &mut WorkflowContext,
    ) -> Result<(), ExecutorError> {
        let verdict = answer.response?;
        ctx.yield_output(&(answer.request.title, verdict.approved))
    }
}

#[workflow(name = "review")]
fn review() -> Workflow<Vec<Draft>> {
    WorkflowBuilder::start(Reviewer).build()
}

const TOKEN: &str = "s3cret";

struct Server {
    base: String,
    http: reqwest::Client,
    client: WorkflowClient,
    worker: Option<Worker>,
}

impl Server {
    async fn start() -> Self {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.unwrap());
        let worker = Worker::start(store.clone(), Registry::new().workflow(review)).unwrap();
        let core = Client::new(store);
        let client = WorkflowClient::new(core.clone());
        let api = agent_workflows::http::add_routes(
            HttpApi::new(core, ServeOptions::new().token(TOKEN)),
            client.clone(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(api.serve(listener));
        Self {
            base,
            http: reqwest::Client::new(),
            client,
            worker: Some(worker),
        }
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(format!("{}{path}", self.base)).bearer_auth(TOKEN)
    }

    fn post(&self, path: &str, body: &str) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .body(body.to_owned())
    }

    async fn stop(mut self) {
        if let Some(worker) = self.worker.take() {
            worker.shutdown().await.unwrap();
        }
    }
}

async fn json_of(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status);
    response.json().await.expect("a JSON body")
}

async fn pending(server: &Server, id: &str, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let body = json_of(
            server
                .get(&format!("/api/workflows/{id}/requests"))
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        let requests = body.as_array().unwrap().clone();
        if requests.len() == n {
            return requests;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "requests never became pending: {body}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_listed_and_answered_by_id() {
    let server = Server::start().await;
    let drafts = vec![
        Draft {
            title: "first".into(),
        },
        Draft {
            title: "second".into(),
        },
    ];
    let id = server.client.start(review, &drafts).await.unwrap();
    let requests = pending(&server, id.as_str(), 2).await;
    assert_eq!(requests[0]["executor_id"], "reviewer");
    assert_eq!(requests[0]["request"], json!({ "title": "first" }));

    let status = json_of(
        server
            .get(&format!("/api/workflows/{id}/status"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(status["pending_requests"].as_array().unwrap().len(), 2);

    // Answer the second first.
    let second = requests[1]["request_id"].as_str().unwrap();
    let answered = server
        .post(
            &format!("/api/workflows/{id}/requests/{second}"),
            r#"{"approved": false}"#,
        )
        .send()
        .await
        .unwrap();
    let body = json_of(answered, 202).await;
    assert_eq!(body["requestId"], second);

    // The same request again is no longer pending.
    pending(&server, id.as_str(), 1).await;
    let again = server
        .post(
            &format!("/api/workflows/{id}/requests/{second}"),
            r#"{"approved": true}"#,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(again, 409).await["error"]["code"], "request_not_pending");

    let first = requests[0]["request_id"].as_str().unwrap();
    let answered = server
        .post(
            &format!("/api/workflows/{id}/requests/{first}"),
            r#"{"approved": true}"#,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status().as_u16(), 202);
    let result = server
        .client
        .wait_for_completion(&id, Duration::from_secs(30))
        .await
        .unwrap();
    let outputs: Vec<(String, bool)> = result.outputs_as().unwrap();
    assert_eq!(
        outputs,
        [("second".to_owned(), false), ("first".to_owned(), true)]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_json_errors() {
    let server = Server::start().await;
    let missing = json_of(
        server.get("/api/workflows/nobody/requests").send().await.unwrap(),
        404,
    )
    .await;
    assert_eq!(missing["error"]["code"], "instance_not_found");
    let missing = server
        .post("/api/workflows/nobody/requests/r1", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(missing, 404).await["error"]["code"], "instance_not_found");

    let id = server
        .client
        .start(review, &vec![Draft { title: "x".into() }])
        .await
        .unwrap();
    pending(&server, id.as_str(), 1).await;
    let bad_body = server
        .post(&format!("/api/workflows/{id}/requests/whatever"), "{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(bad_body, 400).await["error"]["code"], "invalid_json");
    let never_made = server
        .post(&format!("/api/workflows/{id}/requests/never-made"), "true")
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_of(never_made, 409).await["error"]["code"],
        "request_not_pending"
    );
    let too_long = "x".repeat(300);
    let bad_id = server
        .get(&format!("/api/workflows/{too_long}/requests"))
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(bad_id, 400).await["error"]["code"], "invalid_instance_id");

    let no_token = server
        .http
        .get(format!("{}/api/workflows/{id}/requests", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(json_of(no_token, 401).await["error"]["code"], "unauthorized");
    // Nothing was answered by the bad requests.
    assert_eq!(pending(&server, id.as_str(), 1).await.len(), 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routes_are_in_the_openapi_description() {
    let server = Server::start().await;
    let doc = json_of(server.get("/api/openapi.json").send().await.unwrap(), 200).await;
    for (method, path) in agent_workflows::http::ROUTES {
        let operation = &doc["paths"][path][method.to_lowercase()];
        assert!(operation.is_object(), "{method} {path} is documented");
    }
    server.stop().await;
}
