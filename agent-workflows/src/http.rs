//! HTTP routes of the workflow layer (feature `http`), served next to
//! durable-core's API ([`durable_core::http::HttpApi`]) behind the same
//! token, body limit and JSON errors:
//!
//! | method | path | answer |
//! |---|---|---|
//! | `GET` | `/api/workflows/{id}/status` | 200: the live status `{superstep, pending_requests}` |
//! | `GET` | `/api/workflows/{id}/requests` | 200: the pending requests `[{request_id, executor_id, request}]` (and `rejected_answers` once an answer was rejected) |
//! | `POST` | `/api/workflows/{id}/requests/{requestId}` | 202: the body (JSON) answers the request |
//!
//! Errors: 400 for an invalid instance id or a body that is not JSON, 404
//! for an unknown instance, 409 `request_not_pending` for a request that
//! was never made or is already answered (also when another answer to it,
//! sent at the same moment, was accepted).
//!
//! ```no_run
//! # async fn serve(client: durable_core::Client) -> std::io::Result<()> {
//! use agent_workflows::WorkflowClient;
//! use durable_core::http::{HttpApi, ServeOptions};
//!
//! let api = agent_workflows::http::add_routes(
//!     HttpApi::new(client.clone(), ServeOptions::new()),
//!     WorkflowClient::new(client),
//! );
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! api.serve(listener).await
//! # }
//! ```

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use durable_core::http::{ApiError, HttpApi, JsonBody};
use durable_core::{InstanceId, Payload};
use serde_json::{json, Value};

use crate::{LiveStatus, PendingRequest, WorkflowClient, WorkflowClientError};

/// The method and path template of every workflow route.
pub const ROUTES: [(&str, &str); 3] = [
    ("GET", "/api/workflows/{id}/status"),
    ("GET", "/api/workflows/{id}/requests"),
    ("POST", "/api/workflows/{id}/requests/{requestId}"),
];

/// Adds the workflow routes and their OpenAPI description to `api`.
pub fn add_routes(api: HttpApi, client: WorkflowClient) -> HttpApi {
    let routes = Router::new()
        .route(ROUTES[0].1, get(live_status))
        .route(ROUTES[1].1, get(pending_requests))
        .route(ROUTES[2].1, post(respond))
        .with_state(client);
    let (status, requests, respond) = openapi();
    api.routes(routes)
        .document(ROUTES[0].1, status)
        .document(ROUTES[1].1, requests)
        .document(ROUTES[2].1, respond)
}

fn api_error(error: WorkflowClientError) -> ApiError {
    let message = error.to_string();
    match error {
        WorkflowClientError::Core(e) => ApiError::from(e),
        WorkflowClientError::NotFound(_) => ApiError::not_found("instance_not_found", message),
        WorkflowClientError::RequestNotPending { .. } => {
            ApiError::new(StatusCode::CONFLICT, "request_not_pending", message)
        }
        WorkflowClientError::Json(_) => ApiError::bad_request("invalid_json", message),
        _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "workflow_error", message),
    }
}

fn instance_id(id: String) -> Result<InstanceId, ApiError> {
    InstanceId::new(id).map_err(|e| ApiError::from(durable_core::Error::from(e)))
}

async fn live_status(
    State(client): State<WorkflowClient>,
    Path(id): Path<String>,
) -> Result<Json<LiveStatus>, ApiError> {
    let id = instance_id(id)?;
    Ok(Json(client.live_status(&id).await.map_err(api_error)?))
}

async fn pending_requests(
    State(client): State<WorkflowClient>,
    Path(id): Path<String>,
) -> Result<Json<Vec<PendingRequest>>, ApiError> {
    let id = instance_id(id)?;
    Ok(Json(client.pending_requests(&id).await.map_err(api_error)?))
}

async fn respond(
    State(client): State<WorkflowClient>,
    Path((id, request_id)): Path<(String, String)>,
    JsonBody(response): JsonBody<Payload>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = instance_id(id)?;
    client
        .respond(&id, &request_id, &response)
        .await
        .map_err(api_error)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "instanceId": id, "requestId": request_id })),
    ))
}

fn error(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
    })
}

fn id_param() -> Value {
    json!({ "name": "id", "in": "path", "required": true, "description": "The workflow run's instance id.",
            "schema": { "type": "string" } })
}

fn openapi() -> (Value, Value, Value) {
    let request = json!({
        "type": "object",
        "properties": {
            "request_id": { "type": "string" },
            "executor_id": { "type": "string" },
            "request": {},
            "rejected_answers": { "type": "integer", "minimum": 1,
                "description": "Answers the run rejected for not fitting the response type; absent when none." }
        },
        "required": ["request_id", "executor_id", "request"]
    });
    let status = json!({ "get": {
        "summary": "The live status of a workflow run: its superstep and its pending requests",
        "operationId": "getWorkflowStatus",
        "parameters": [id_param()],
        "responses": {
            "200": { "description": "The live status", "content": { "application/json": { "schema": {
                "type": "object",
                "properties": { "superstep": { "type": "integer" }, "pending_requests": { "type": "array", "items": request } }
            } } } },
            "400": error("Invalid instance id"),
            "401": error("Missing or wrong bearer token"),
            "404": error("Unknown instance")
        }
    } });
    let requests = json!({ "get": {
        "summary": "The pending human-in-the-loop requests of a workflow run",
        "operationId": "listPendingRequests",
        "parameters": [id_param()],
        "responses": {
            "200": { "description": "The pending requests", "content": { "application/json": { "schema": {
                "type": "array", "items": request
            } } } },
            "400": error("Invalid instance id"),
            "401": error("Missing or wrong bearer token"),
            "404": error("Unknown instance")
        }
    } });
    let respond = json!({ "post": {
        "summary": "Answers a pending request; the answer reaches the requesting executor",
        "operationId": "answerRequest",
        "parameters": [id_param(), { "name": "requestId", "in": "path", "required": true,
            "description": "The request id.", "schema": { "type": "string" } }],
        "requestBody": { "required": true, "description": "The answer, as JSON.",
            "content": { "application/json": { "schema": {} } } },
        "responses": {
            "202": { "description": "Accepted", "content": { "application/json": { "schema": {
                "type": "object", "properties": { "instanceId": { "type": "string" }, "requestId": { "type": "string" } }
            } } } },
            "400": error("Invalid instance id or body"),
            "401": error("Missing or wrong bearer token"),
            "404": error("Unknown instance"),
            "409": error("The request is not pending, or another answer to it was accepted"),
            "413": error("Body over the limit")
        }
    } });
    (status, requests, respond)
}
