//! The append-only event stream of an instance.
//!
//! Orchestrations append with
//! [`OrchestrationContext::emit_event`](crate::OrchestrationContext::emit_event);
//! clients read pages after a cursor with
//! [`Client::get_events`](crate::Client::get_events) or follow the stream
//! live with [`Client::watch_events`](crate::Client::watch_events).
//!
//! The guarantees:
//!
//! 1. **Ordered, no gaps**: events of one instance have sequence numbers
//!    1, 2, 3, ... in emit order, across continue-as-new.
//! 2. **Exactly once**: an emit is stored in the transaction of the turn that
//!    made it; replay does not store it again, and the key
//!    (instance, execution, emit index) makes a duplicate impossible.
//! 3. **Lossless, resumable**: a reader gets everything after its cursor,
//!    however late it starts or slowly it reads. Events live until the
//!    instance is purged.
//! 4. **Live**: a watcher gets new events as their turns commit, and its
//!    stream ends after the last event of a terminal instance.
//! 5. **Bounded per event, unbounded in total** (64 KiB per event by
//!    default).
//! 6. **Independent** of custom status and output.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};

use crate::store::{Position, Store};
use crate::worker::Backoff;
use crate::{Error, InstanceId, Payload, Result};

/// One event of an instance's stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamEvent {
    /// The instance.
    pub instance_id: InstanceId,
    /// The sequence number: 1 for the first event, without gaps.
    pub seq: u64,
    /// The event name.
    pub name: String,
    /// The payload, as the orchestration emitted it.
    pub payload: Payload,
    /// The orchestration time of the emit (deterministic).
    pub emitted_at: DateTime<Utc>,
    /// The execution that emitted it.
    pub execution_id: String,
}

impl StreamEvent {
    /// Deserializes the payload into `T`.
    ///
    /// # Errors
    ///
    /// [`Error::Json`] if the payload does not fit `T`.
    pub fn payload_as<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        Ok(self.payload.parse()?)
    }
}

/// A page of stream events read after a cursor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventPage {
    /// The events, in order.
    pub events: Vec<StreamEvent>,
    /// The cursor for the next read: the last sequence number read (or the
    /// cursor given, if no event was read).
    pub next_cursor: u64,
    /// Whether the stream is finished: the instance is terminal and every
    /// event has been read.
    pub finished: bool,
}

/// The most events one read returns.
pub const MAX_PAGE: u32 = 10_000;

pub(crate) async fn read_page(
    store: &dyn Store,
    instance_id: &InstanceId,
    after: u64,
    limit: u32,
) -> Result<EventPage> {
    Ok(read(store, instance_id, after, limit).await?.0)
}

/// A page, with the instance's execution and incarnation when it was read.
async fn read(
    store: &dyn Store,
    instance_id: &InstanceId,
    after: u64,
    limit: u32,
) -> Result<(EventPage, String, String)> {
    let limit = limit.clamp(1, MAX_PAGE);
    let read = store
        .read_stream(instance_id, after, limit)
        .await?
        .ok_or_else(|| Error::InstanceNotFound(instance_id.clone()))?;
    let next_cursor = read.events.last().map_or(after, |e| e.seq);
    let page = EventPage {
        finished: read.status.is_terminal() && next_cursor >= read.stream_len,
        events: read.events,
        next_cursor,
    };
    Ok((page, read.execution_id, read.incarnation))
}

/// Follows an instance's stream after `after`: the backlog first, then new
/// events as their turns commit; ends after the last event of a terminal
/// instance, with [`Error::InstanceNotFound`] if the instance is purged,
/// and with [`Error::InstanceReplaced`] if the id comes to name another
/// instance (purged or ended, and started again): never with another
/// instance's events.
pub(crate) fn watch(
    store: Arc<dyn Store>,
    instance_id: InstanceId,
    after: u64,
) -> impl Stream<Item = Result<StreamEvent>> + Send + 'static {
    const PAGE: u32 = 1_000;
    async_stream::try_stream! {
        let feed = store.changes().subscribe(&instance_id);
        let mut backoff = Backoff::new(store.poll_interval());
        let mut cursor = after;
        // Where the watcher stands: events this process commits after it
        // are handed over in memory (see ChangeFeed::publish).
        let mut position = Position::Unknown;
        // The last pass took events from memory.
        let mut drained = false;
        // The instance the first read found: every read must find it.
        let mut followed: Option<String> = None;
        loop {
            let notified = feed.notify().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let recent = feed.after(&position, PAGE as usize);
            if let Some(last) = recent.events.last() {
                cursor = last.seq;
                position = Position::After(last.clone());
                for event in recent.events {
                    yield event;
                }
                backoff.reset();
                drained = true;
                continue;
            }
            if recent.finished {
                break;
            }
            if std::mem::take(&mut drained) && recent.up_to_date {
                // Memory took the watcher to the end of the last commit of
                // this process: wait for the next one before reading (a
                // commit of another process is read after the wait).
                if let Some(delay) = backoff.next_delay() {
                    tokio::select! {
                        () = &mut notified => backoff.reset(),
                        () = tokio::time::sleep(delay) => {}
                    }
                } else {
                    notified.await;
                }
                continue;
            }
            let generation = feed.generation();
            let (page, execution_id, incarnation) = read(store.as_ref(), &instance_id, cursor, PAGE).await?;
            if followed.get_or_insert_with(|| incarnation.clone()) != &incarnation {
                Err(Error::InstanceReplaced(instance_id.clone()))?;
            }
            cursor = page.next_cursor;
            match page.events.last() {
                Some(last) => position = Position::After(last.clone()),
                None => {
                    position = Position::CaughtUp {
                        cursor,
                        execution_id,
                        generation,
                    };
                }
            }
            let got = page.events.len();
            for event in page.events {
                yield event;
            }
            if page.finished {
                break;
            }
            if got > 0 {
                backoff.reset();
                continue;
            }
            match backoff.next_delay() {
                Some(delay) => {
                    tokio::select! {
                        () = &mut notified => backoff.reset(),
                        () = tokio::time::sleep(delay) => {}
                    }
                }
                None => notified.await,
            }
        }
    }
}
