//! The core routes: start, status, list, control, purge and the events
//! page. The live stream is in [`super::sse`].

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Json;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::extract::{parse_u64, JsonBody, Params};
use super::{model, sse, ApiError, ApiState};
use crate::{Error, InstanceId, InstanceQuery, Payload, RuntimeStatus, StartOptions, MAX_PAGE};

/// The largest `pageSize` of `GET /api/instances`.
pub(crate) const MAX_LIST_PAGE: u32 = 1_000;
/// The `limit` of the events page when none is given.
pub(crate) const DEFAULT_EVENTS_LIMIT: u32 = 100;

type Handler = MethodRouter<ApiState>;

fn route(method: Method, path: &'static str, handler: Handler) -> (Method, &'static str, Handler) {
    (method, path, handler)
}

/// Every core route: method, path template (axum syntax) and handler. The
/// router is built from this table, and the OpenAPI test compares it with
/// the document.
pub(crate) fn table() -> Vec<(Method, &'static str, Handler)> {
    vec![
        route(
            Method::POST,
            "/api/orchestrations/{name}",
            on(MethodFilter::POST, start),
        ),
        route(Method::GET, "/api/instances", on(MethodFilter::GET, list)),
        route(Method::GET, "/api/instances/{id}", on(MethodFilter::GET, status)),
        route(
            Method::DELETE,
            "/api/instances/{id}",
            on(MethodFilter::DELETE, purge),
        ),
        route(
            Method::POST,
            "/api/instances/{id}/raiseEvent/{event}",
            on(MethodFilter::POST, raise_event),
        ),
        route(
            Method::POST,
            "/api/instances/{id}/terminate",
            on(MethodFilter::POST, terminate),
        ),
        route(
            Method::POST,
            "/api/instances/{id}/suspend",
            on(MethodFilter::POST, suspend),
        ),
        route(
            Method::POST,
            "/api/instances/{id}/resume",
            on(MethodFilter::POST, resume),
        ),
        route(
            Method::GET,
            "/api/instances/{id}/events",
            on(MethodFilter::GET, events),
        ),
        route(
            Method::GET,
            "/api/instances/{id}/events/stream",
            on(MethodFilter::GET, sse::stream),
        ),
        route(Method::GET, "/api/openapi.json", on(MethodFilter::GET, openapi)),
    ]
}

/// Validates an instance id taken from a path or a query.
pub(crate) fn instance_id(text: &str) -> Result<InstanceId, ApiError> {
    InstanceId::new(text).map_err(|e| ApiError::from(Error::from(e)))
}

/// Percent-encodes one path segment or query value (everything but the
/// unreserved characters of RFC 3986).
pub(crate) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The scheme and authority the links in answers start with.
fn base_url(state: &ApiState, headers: &HeaderMap) -> String {
    if let Some(base) = &state.public_url {
        return base.to_string();
    }
    match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        Some(host) => format!("http://{host}"),
        None => String::new(),
    }
}

/// `POST /api/orchestrations/{name}[?instanceId=ID]`: starts an instance
/// with the body as input; 202 with its id and links.
async fn start(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
    JsonBody(input): JsonBody<Payload>,
) -> Result<Response, ApiError> {
    let Path(name) = path?;
    let params = Params::parse(query, &["instanceId"])?;
    let requested_id = params.one("instanceId")?.map(instance_id).transpose()?;
    if let Some(id) = requested_id
        .as_ref()
        .filter(|id| matches!(id.as_str(), "." | ".."))
    {
        // A dot segment: clients remove it from a path, so no route could
        // ever reach the instance.
        return Err(ApiError::bad_request(
            "invalid_instance_id",
            format!(
                "instance id {:?} cannot be used in a URL path; choose another",
                id.as_str()
            ),
        ));
    }
    if let Some(known) = &state.known_orchestrations {
        if !known.contains(&name) {
            return Err(ApiError::not_found(
                "orchestration_not_found",
                format!("no orchestration named {name:?} is registered"),
            ));
        }
    }
    let mut options = StartOptions::new(name, &input)?;
    if let Some(id) = requested_id {
        options = options.instance_id(id);
    }
    let id = state.client.start_with(options).await?;

    let base = base_url(&state, &headers);
    let instance = format!("{base}/api/instances/{}", encode(id.as_str()));
    let status_uri = instance.clone();
    let body = json!({
        "id": id,
        "instanceId": id,
        "statusQueryGetUri": status_uri,
        "eventsUri": format!("{instance}/events"),
        "streamUri": format!("{instance}/events/stream"),
        "sendEventPostUri": format!("{instance}/raiseEvent/{{eventName}}"),
        "raiseEventPostUri": format!("{instance}/raiseEvent/{{eventName}}"),
        "terminatePostUri": format!("{instance}/terminate?reason={{text}}"),
        "suspendPostUri": format!("{instance}/suspend?reason={{text}}"),
        "resumePostUri": format!("{instance}/resume?reason={{text}}"),
        "purgeHistoryDeleteUri": instance,
    });
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    if let Ok(location) = HeaderValue::from_str(&status_uri) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `GET /api/instances/{id}`: the instance's status.
async fn status(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = path?;
    Params::parse(query, &[])?;
    let id = instance_id(&id)?;
    let meta = state
        .client
        .get_instance(&id)
        .await?
        .ok_or(Error::InstanceNotFound(id))?;
    Ok(Json(model::Instance::new(&meta)).into_response())
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// `GET /api/instances`: lists instances, oldest first, with filters and
/// paging.
async fn list(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = Params::parse(
        query,
        &[
            "runtimeStatus",
            "name",
            "createdFrom",
            "createdTo",
            "pageSize",
            "continuationToken",
        ],
    )?;
    let mut q = InstanceQuery::new();
    for value in params.all("runtimeStatus") {
        for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let status: RuntimeStatus = part.parse().map_err(|_| {
                let names: Vec<&str> = RuntimeStatus::ALL.iter().map(|s| s.as_str()).collect();
                ApiError::bad_request(
                    "invalid_parameter",
                    format!("unknown runtimeStatus {part:?}; accepted: {}", names.join(", ")),
                )
            })?;
            if !q.statuses.contains(&status) {
                q = q.status(status);
            }
        }
    }
    if let Some(name) = params.one("name")? {
        q = q.name(name);
    }
    let rfc3339 = "an RFC 3339 time such as 2026-01-31T12:00:00Z";
    q.created_from = params.parsed("createdFrom", rfc3339, parse_time)?;
    q.created_to = params.parsed("createdTo", rfc3339, parse_time)?;
    if let (Some(from), Some(to)) = (q.created_from, q.created_to) {
        if from > to {
            return Err(ApiError::bad_request(
                "invalid_parameter",
                "createdFrom is after createdTo",
            ));
        }
    }
    let page_size = format!("an integer from 1 to {MAX_LIST_PAGE}");
    let size = params.parsed("pageSize", &page_size, |t| {
        parse_u64(t)
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| (1..=MAX_LIST_PAGE).contains(n))
    })?;
    if let Some(size) = size {
        q = q.page_size(size);
    }
    if let Some(token) = params.one("continuationToken")? {
        let token = decode_token(token).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_continuation_token",
                format!(
                    "invalid continuation token {token:?}: pass the continuationToken of the previous page"
                ),
            )
        })?;
        q = q.continuation(token);
    }
    let page = state.client.list_instances(q).await.map_err(|e| match e {
        Error::InvalidArgument(message) => ApiError::bad_request("invalid_continuation_token", message),
        other => other.into(),
    })?;
    let body = model::InstancesPage {
        instances: page.instances.iter().map(model::Instance::new).collect(),
        continuation_token: page.continuation.as_deref().map(encode_token),
    };
    Ok(Json(body).into_response())
}

/// A continuation token as lower-case hex: opaque and safe in a URL
/// whatever the instance ids hold.
fn encode_token(token: &str) -> String {
    token.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The inverse of [`encode_token`].
fn decode_token(hex: &str) -> Option<String> {
    if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// `POST /api/instances/{id}/raiseEvent/{event}`: raises an external event
/// with the body as data; 202. With `once=true`, 409 if an event of the
/// name was already raised once to the instance's current execution.
async fn raise_event(
    State(state): State<ApiState>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    JsonBody(data): JsonBody<Payload>,
) -> Result<StatusCode, ApiError> {
    let Path((id, event)) = path?;
    let params = Params::parse(query, &["once"])?;
    let once = params.parsed("once", "true or false", |text| text.parse::<bool>().ok())?;
    let id = instance_id(&id)?;
    if once == Some(true) {
        state.client.raise_event_once(&id, event, &data).await?;
    } else {
        state.client.raise_event(&id, event, &data).await?;
    }
    Ok(StatusCode::ACCEPTED)
}

/// What `/terminate`, `/suspend` and `/resume` do.
#[derive(Clone, Copy)]
enum Control {
    Terminate,
    Suspend,
    Resume,
}

async fn control(
    state: ApiState,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    operation: Control,
) -> Result<StatusCode, ApiError> {
    let Path(id) = path?;
    let params = Params::parse(query, &["reason"])?;
    let id = instance_id(&id)?;
    // The reason travels in the query, as in Durable Functions; a body is
    // not read.
    let reason = params.one("reason")?;
    let client = &state.client;
    match operation {
        Control::Terminate => client.terminate(&id, reason).await?,
        Control::Suspend => client.suspend(&id, reason).await?,
        Control::Resume => client.resume(&id, reason).await?,
    }
    Ok(StatusCode::ACCEPTED)
}

/// `POST /api/instances/{id}/terminate[?reason=...]`: 202.
async fn terminate(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    control(state, path, query, Control::Terminate).await
}

/// `POST /api/instances/{id}/suspend[?reason=...]`: 202.
async fn suspend(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    control(state, path, query, Control::Suspend).await
}

/// `POST /api/instances/{id}/resume[?reason=...]`: 202.
async fn resume(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<StatusCode, ApiError> {
    control(state, path, query, Control::Resume).await
}

/// `DELETE /api/instances/{id}`: purges a terminal instance; 200.
async fn purge(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(id) = path?;
    Params::parse(query, &[])?;
    let id = instance_id(&id)?;
    state.client.purge(&id).await?;
    Ok(Json(json!({ "instancesDeleted": 1 })))
}

/// Checks a cursor against the instance's stream: a cursor past its last
/// event was never handed out for this instance.
pub(crate) fn check_cursor(after: u64, stream_len: u64) -> Result<(), ApiError> {
    if after > stream_len {
        return Err(ApiError::bad_request(
            "cursor_out_of_range",
            format!("cursor {after} is past the end of the stream, which has {stream_len} events"),
        ));
    }
    Ok(())
}

/// `GET /api/instances/{id}/events?after=N&limit=M`: a page of stream
/// events after cursor `N`.
async fn events(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = path?;
    let params = Params::parse(query, &["after", "limit"])?;
    let id = instance_id(&id)?;
    let after = params
        .parsed("after", "a sequence number (an integer of 0 or more)", parse_u64)?
        .unwrap_or(0);
    let expected = format!("an integer from 1 to {MAX_PAGE}");
    let limit = params
        .parsed("limit", &expected, |t| {
            parse_u64(t)
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| (1..=MAX_PAGE).contains(n))
        })?
        .unwrap_or(DEFAULT_EVENTS_LIMIT);
    let meta = state
        .client
        .get_instance(&id)
        .await?
        .ok_or_else(|| Error::InstanceNotFound(id.clone()))?;
    check_cursor(after, meta.stream_len)?;
    let page = state.client.get_events(&id, after, limit).await?;
    Ok(Json(model::EventsPage::new(&id, &page)).into_response())
}

/// `GET /api/openapi.json`: the OpenAPI 3 description of the API.
async fn openapi(
    State(state): State<ApiState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    Params::parse(query, &[])?;
    Ok(Json(state.openapi.as_ref().clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_keeps_unreserved_and_escapes_the_rest() {
        assert_eq!(encode("order-42_a.b~c"), "order-42_a.b~c");
        assert_eq!(encode("orders/2026 42"), "orders%2F2026%2042");
        assert_eq!(encode("ü?&#"), "%C3%BC%3F%26%23");
    }

    #[test]
    fn continuation_tokens_round_trip_through_hex() {
        let token = "1795322437210:orders/42 & ü";
        let hex = encode_token(token);
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{hex}");
        assert_eq!(decode_token(&hex).as_deref(), Some(token));
        assert_eq!(decode_token("abc"), None);
        assert_eq!(decode_token("zz"), None);
        assert_eq!(decode_token("ff"), None, "not UTF-8");
        assert_eq!(decode_token("+1"), None);
    }

    #[test]
    fn cursors_past_the_end_are_rejected() {
        assert!(check_cursor(0, 0).is_ok());
        assert!(check_cursor(3, 3).is_ok());
        assert_eq!(check_cursor(4, 3).unwrap_err().status(), StatusCode::BAD_REQUEST);
    }
}
