//! `GET /api/instances/{id}/events/stream`: the live stream as
//! Server-Sent Events.
//!
//! Each stream event is one SSE event: `id:` its sequence number, `event:`
//! its name, `data:` its payload as one line of JSON. The response starts
//! after the cursor (the `Last-Event-ID` header, which a reconnecting
//! `EventSource` sends, or else `?after=N`, or else 0), sends the stored
//! events, then new ones as their turns commit, with keep-alive comments in
//! between, and ends after the last event of a terminal instance.
//!
//! A request whose cursor is already at the end of a terminal instance's
//! stream gets `204 No Content`, which tells an `EventSource` to stop
//! reconnecting. If the store fails (or the instance is purged) while the
//! response is open, a last event named `error` carries the JSON error body
//! without an `id:`, and the response ends.

use std::convert::Infallible;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};

use super::extract::{header_text, parse_u64, Params};
use super::routes::{check_cursor, instance_id};
use super::{ApiError, ApiState};
use crate::{Error, StreamEvent};

/// The name of the last event sent when the stream fails mid-way.
const ERROR_EVENT: &str = "error";

/// The SSE form of a stream event.
fn to_sse(event: &StreamEvent) -> Event {
    // Event names may hold any character, but an SSE field cannot hold a
    // line break: those are sent as U+FFFD (the events page has the exact
    // name).
    let name: String = event
        .name
        .chars()
        .map(|c| if c == '\r' || c == '\n' { '\u{FFFD}' } else { c })
        .collect();
    // The runtime writes payloads as compact JSON, which has no raw line
    // breaks (they are escaped in strings); one made from text with line
    // breaks between its tokens is written again, compact.
    let text = event.payload.as_str();
    let data = if text.contains(['\r', '\n']) {
        event
            .payload
            .parse::<serde_json::Value>()
            .map_or_else(|_| "null".to_owned(), |value| value.to_string())
    } else {
        text.to_owned()
    };
    Event::default().id(event.seq.to_string()).event(name).data(data)
}

fn error_event(error: Error) -> Event {
    let body = ApiError::from(error).body();
    Event::default().event(ERROR_EVENT).data(body.to_string())
}

/// The SSE events of a watch: each stream event, and on failure one
/// `error` event that ends it.
fn sse_events(
    events: impl Stream<Item = crate::Result<StreamEvent>> + Send + 'static,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    async_stream::stream! {
        let mut events = std::pin::pin!(events);
        while let Some(item) = events.next().await {
            match item {
                Ok(event) => yield Ok(to_sse(&event)),
                Err(error) => {
                    yield Ok(error_event(error));
                    break;
                }
            }
        }
    }
}

pub(crate) async fn stream(
    State(state): State<ApiState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path(id) = path?;
    let params = Params::parse(query, &["after"])?;
    let id = instance_id(&id)?;
    let seq = "a sequence number (an integer of 0 or more)";
    let after = match header_text(&headers, "last-event-id")? {
        // The header is what a reconnecting EventSource sends: it is newer
        // than the `after` in the URL it reconnects to.
        Some(text) => parse_u64(text.trim()).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_cursor",
                format!("header Last-Event-ID must be {seq}, not {text:?}"),
            )
        })?,
        None => params.parsed("after", seq, parse_u64)?.unwrap_or(0),
    };
    let meta = state
        .client
        .get_instance(&id)
        .await?
        .ok_or_else(|| Error::InstanceNotFound(id.clone()))?;
    check_cursor(after, meta.stream_len)?;
    if meta.status.is_terminal() && after >= meta.stream_len {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }

    let events = sse_events(state.client.watch_events(&id, after));
    let keep_alive = KeepAlive::new().interval(state.keep_alive).text("keep-alive");
    let mut response = match state.shutdown.clone() {
        Some(mut shutdown) => {
            // End the response when the server shuts down, so a graceful
            // shutdown does not wait for the instance to finish.
            let stop = async move {
                if shutdown.wait_for(|stop| *stop).await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            Sse::new(events.take_until(stop))
                .keep_alive(keep_alive)
                .into_response()
        }
        None => Sse::new(events).keep_alive(keep_alive).into_response(),
    };
    // Tell reverse proxies such as nginx not to buffer the stream.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{InstanceId, Payload};

    fn sample(name: &str, payload: Payload) -> StreamEvent {
        StreamEvent {
            instance_id: InstanceId::new("i").unwrap(),
            seq: 7,
            name: name.to_owned(),
            payload,
            emitted_at: chrono::Utc::now(),
            execution_id: "e".to_owned(),
        }
    }

    #[tokio::test]
    async fn line_breaks_in_names_and_payloads_stay_on_one_line() {
        let compact = Payload::new(&serde_json::json!({"text": "x\ny"})).unwrap();
        let spread = Payload::from_text("{\r\n  \"text\": \"x\\ny\"\n}").unwrap();
        for payload in [compact, spread] {
            let event = to_sse(&sample("a\nb\rc", payload));
            let response = Sse::new(futures::stream::iter([Ok::<_, Infallible>(event)])).into_response();
            let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
            let text = std::str::from_utf8(&body).unwrap();
            assert_eq!(
                text,
                "id: 7\nevent: a\u{FFFD}b\u{FFFD}c\ndata: {\"text\":\"x\\ny\"}\n\n"
            );
        }
    }
}
