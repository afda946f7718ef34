//! The client: start instances, read and control them, read their streams.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use serde::Serialize;

use crate::store::{CreateOutcome, EnqueueOutcome, NewInstance, NewMessage, PurgeOutcome, Store};
use crate::worker::Backoff;
use crate::{
    stream, Error, EventPage, HistoryEvent, InstanceId, InstanceMetadata, InstancePage, InstanceQuery,
    Payload, Result, RuntimeStatus, StreamEvent,
};

/// How to start an orchestration instance.
///
/// ```
/// use durable_core::StartOptions;
///
/// let options = StartOptions::new("hello", &vec!["Tokyo", "Seattle"])
///     .unwrap()
///     .instance_id("greeting-1".try_into().unwrap());
/// assert!(StartOptions::from_json("hello", "{not json").is_err());
/// ```
#[derive(Debug, Clone)]
pub struct StartOptions {
    name: String,
    input: Payload,
    instance_id: Option<InstanceId>,
    start_at: Option<DateTime<Utc>>,
}

impl StartOptions {
    /// Starts orchestration `name` with `input`.
    ///
    /// # Errors
    ///
    /// [`Error::Json`] if the input cannot be serialized.
    pub fn new(name: impl Into<String>, input: &impl Serialize) -> Result<Self> {
        Ok(Self {
            name: name.into(),
            input: Payload::new(input)?,
            instance_id: None,
            start_at: None,
        })
    }

    /// Starts orchestration `name` with an input given as JSON text.
    ///
    /// # Errors
    ///
    /// [`Error::Json`] if the text is not valid JSON.
    pub fn from_json(name: impl Into<String>, input: &str) -> Result<Self> {
        Ok(Self {
            name: name.into(),
            input: Payload::from_text(input)?,
            instance_id: None,
            start_at: None,
        })
    }

    /// Uses this instance id instead of a random one.
    pub fn instance_id(mut self, id: InstanceId) -> Self {
        self.instance_id = Some(id);
        self
    }

    /// Runs the first turn no earlier than `at`.
    pub fn start_at(mut self, at: DateTime<Utc>) -> Self {
        self.start_at = Some(at);
        self
    }
}

/// Starts, reads and controls orchestration instances. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    store: Arc<dyn Store>,
}

impl Client {
    /// A client of the instances in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// The store this client uses.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Starts orchestration `name` with `input` under a new random instance
    /// id.
    ///
    /// # Errors
    ///
    /// [`Error::Json`] if the input cannot be serialized, or a store error.
    pub async fn start(&self, name: impl Into<String>, input: &impl Serialize) -> Result<InstanceId> {
        self.start_with(StartOptions::new(name, input)?).await
    }

    /// Starts an instance.
    ///
    /// Starting an id that exists and is terminal replaces that instance:
    /// its history and stream are deleted.
    ///
    /// # Errors
    ///
    /// [`Error::InstanceAlreadyExists`] if an instance with this id exists
    /// and is not terminal, [`Error::InvalidArgument`] for an orchestration
    /// name no orchestration can have (see
    /// [`MAX_NAME_LEN`](crate::MAX_NAME_LEN)), or a store error.
    pub async fn start_with(&self, options: StartOptions) -> Result<InstanceId> {
        check_name("orchestration", &options.name)?;
        let now = Utc::now();
        let instance_id = options.instance_id.unwrap_or_else(InstanceId::generate);
        let instance = NewInstance {
            instance_id: instance_id.clone(),
            name: options.name,
            execution_id: uuid::Uuid::new_v4().simple().to_string(),
            input: options.input,
            parent: None,
            start_at: options.start_at.unwrap_or(now),
            created_at: now,
        };
        match self.store.create_instance(instance).await? {
            CreateOutcome::Created => Ok(instance_id),
            CreateOutcome::AlreadyExists(_) => Err(Error::InstanceAlreadyExists(instance_id)),
        }
    }

    /// Reads an instance's metadata; `None` if there is no such instance.
    ///
    /// # Errors
    ///
    /// A store error.
    pub async fn get_instance(&self, instance_id: &InstanceId) -> Result<Option<InstanceMetadata>> {
        Ok(self.store.get_instance(instance_id).await?)
    }

    /// Waits until the instance has started (is no longer pending).
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] after `timeout`, [`Error::InstanceNotFound`].
    pub async fn wait_for_start(
        &self,
        instance_id: &InstanceId,
        timeout: Duration,
    ) -> Result<InstanceMetadata> {
        self.wait_until(instance_id, timeout, |m| m.status != RuntimeStatus::Pending)
            .await
    }

    /// Waits until the instance is terminal (completed, failed or
    /// terminated) and returns its metadata.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] after `timeout`, [`Error::InstanceNotFound`].
    pub async fn wait_for_completion(
        &self,
        instance_id: &InstanceId,
        timeout: Duration,
    ) -> Result<InstanceMetadata> {
        self.wait_until(instance_id, timeout, |m| m.status.is_terminal())
            .await
    }

    async fn wait_until(
        &self,
        instance_id: &InstanceId,
        timeout: Duration,
        done: impl Fn(&InstanceMetadata) -> bool,
    ) -> Result<InstanceMetadata> {
        let deadline = tokio::time::Instant::now() + timeout;
        let changes = self.store.changes().subscribe(instance_id);
        let mut backoff = Backoff::new(self.store.poll_interval());
        loop {
            let notified = changes.notify().notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let metadata = self
                .get_instance(instance_id)
                .await?
                .ok_or_else(|| Error::InstanceNotFound(instance_id.clone()))?;
            if done(&metadata) {
                return Ok(metadata);
            }
            let poll = backoff.next_delay().unwrap_or(timeout);
            tokio::select! {
                () = &mut notified => backoff.reset(),
                () = tokio::time::sleep(poll) => {}
                () = tokio::time::sleep_until(deadline) => return Err(Error::Timeout(instance_id.clone())),
            }
        }
    }

    async fn send(
        &self,
        instance_id: &InstanceId,
        event: HistoryEvent,
        operation: &'static str,
    ) -> Result<()> {
        let outcome = self
            .store
            .enqueue_message(message_now(instance_id, event))
            .await?;
        enqueued(instance_id, outcome, operation, "")
    }

    /// Raises an external event; the orchestration receives it through
    /// [`wait_for_external_event`](crate::OrchestrationContext::wait_for_external_event).
    ///
    /// # Errors
    ///
    /// [`Error::InstanceNotFound`]; [`Error::InvalidState`] if the instance
    /// is terminal; [`Error::Json`] if the data cannot be serialized;
    /// [`Error::InvalidArgument`] for a name no orchestration can wait for
    /// (see [`MAX_NAME_LEN`](crate::MAX_NAME_LEN)).
    pub async fn raise_event(
        &self,
        instance_id: &InstanceId,
        name: impl Into<String>,
        data: &impl Serialize,
    ) -> Result<()> {
        let name = name.into();
        check_name("event", &name)?;
        let event = HistoryEvent::EventRaised {
            name,
            data: Payload::new(data)?,
        };
        self.send(instance_id, event, "raise an event to").await
    }

    /// Raises an external event unless one of the same name was already
    /// raised with this method to the instance's current execution, whether
    /// or not the orchestration has taken it yet. Of several clients raising
    /// one name at the same moment, exactly one succeeds: an answer that
    /// must be given once (an approval, say) cannot be given twice.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use durable_core::store::{SqliteStore, Store};
    /// # use durable_core::{Client, Error};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await?);
    /// let client = Client::new(store);
    /// let id = client.start("review", &"report.pdf").await?;
    /// client.raise_event_once(&id, "approved", &true).await?;
    /// let again = client.raise_event_once(&id, "approved", &false).await;
    /// assert!(matches!(again, Err(Error::EventAlreadyRaised { .. })));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::EventAlreadyRaised`]; [`Error::InstanceNotFound`];
    /// [`Error::InvalidState`] if the instance is terminal; [`Error::Json`]
    /// if the data cannot be serialized; [`Error::InvalidArgument`] for an
    /// invalid name, as for [`Client::raise_event`].
    pub async fn raise_event_once(
        &self,
        instance_id: &InstanceId,
        name: impl Into<String>,
        data: &impl Serialize,
    ) -> Result<()> {
        let name = name.into();
        check_name("event", &name)?;
        let event = HistoryEvent::EventRaised {
            name: name.clone(),
            data: Payload::new(data)?,
        };
        let outcome = self
            .store
            .enqueue_event_once(message_now(instance_id, event))
            .await?;
        enqueued(instance_id, outcome, "raise an event to", &name)
    }

    /// Terminates a running instance.
    ///
    /// # Errors
    ///
    /// [`Error::InstanceNotFound`]; [`Error::InvalidState`] if the instance
    /// is already terminal.
    pub async fn terminate(&self, instance_id: &InstanceId, reason: Option<&str>) -> Result<()> {
        let event = HistoryEvent::ExecutionTerminated {
            reason: reason.map(str::to_owned),
        };
        self.send(instance_id, event, "terminate").await
    }

    /// Suspends an instance: its messages wait until it is resumed.
    ///
    /// # Errors
    ///
    /// [`Error::InstanceNotFound`]; [`Error::InvalidState`] if the instance
    /// is terminal.
    pub async fn suspend(&self, instance_id: &InstanceId, reason: Option<&str>) -> Result<()> {
        let event = HistoryEvent::ExecutionSuspended {
            reason: reason.map(str::to_owned),
        };
        self.send(instance_id, event, "suspend").await
    }

    /// Resumes a suspended instance.
    ///
    /// # Errors
    ///
    /// [`Error::InstanceNotFound`]; [`Error::InvalidState`] if the instance
    /// is terminal.
    pub async fn resume(&self, instance_id: &InstanceId, reason: Option<&str>) -> Result<()> {
        let event = HistoryEvent::ExecutionResumed {
            reason: reason.map(str::to_owned),
        };
        self.send(instance_id, event, "resume").await
    }

    /// Deletes a terminal instance with its history and stream.
    ///
    /// # Errors
    ///
    /// [`Error::InstanceNotFound`]; [`Error::InvalidState`] if the instance
    /// is not terminal.
    pub async fn purge(&self, instance_id: &InstanceId) -> Result<()> {
        match self.store.purge_instance(instance_id).await? {
            PurgeOutcome::Purged => Ok(()),
            PurgeOutcome::NotFound => Err(Error::InstanceNotFound(instance_id.clone())),
            PurgeOutcome::NotTerminal(status) => Err(Error::InvalidState {
                instance_id: instance_id.clone(),
                status,
                operation: "purge",
            }),
        }
    }

    /// Lists instances, oldest first, a page at a time.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a malformed continuation token, or a
    /// store error.
    pub async fn list_instances(&self, query: InstanceQuery) -> Result<InstancePage> {
        if let Some(token) = &query.continuation {
            if crate::instance::parse_continuation(token).is_none() {
                return Err(Error::InvalidArgument(format!(
                    "invalid continuation token {token:?}"
                )));
            }
        }
        Ok(self.store.list_instances(query).await?)
    }

    /// Reads up to `limit` stream events after sequence number `after` (0
    /// for the start). `limit` is clamped to 1..=10,000.
    ///
    /// # Errors
    ///
    /// [`Error::InstanceNotFound`], or a store error.
    pub async fn get_events(&self, instance_id: &InstanceId, after: u64, limit: u32) -> Result<EventPage> {
        stream::read_page(self.store.as_ref(), instance_id, after, limit).await
    }

    /// Follows the instance's stream after sequence number `after`: the
    /// events already stored first, then new events as their turns commit.
    /// The stream ends after the last event of a terminal instance.
    ///
    /// A slow consumer loses nothing (events are read from the store, not
    /// buffered), and any number of watchers may follow one instance. A
    /// watcher follows one instance: if it is purged, the stream ends with
    /// [`Error::InstanceNotFound`]; if the id comes to name another
    /// instance meanwhile (purged or ended, and started again), with
    /// [`Error::InstanceReplaced`], never going on with the new instance's
    /// events.
    ///
    /// # Cancel safety
    ///
    /// The stream only reads: drop it at any point.
    pub fn watch_events(
        &self,
        instance_id: &InstanceId,
        after: u64,
    ) -> BoxStream<'static, Result<StreamEvent>> {
        Box::pin(stream::watch(self.store.clone(), instance_id.clone(), after))
    }
}

/// Fails with [`Error::InvalidArgument`] for a name the runtime refuses.
fn check_name(what: &str, name: &str) -> Result<()> {
    match crate::ids::name_problem(name) {
        Some(reason) => Err(Error::InvalidArgument(format!(
            "invalid {what} name {name:?}: {reason}"
        ))),
        None => Ok(()),
    }
}

/// A client's message to `instance_id`, visible at once.
fn message_now(instance_id: &InstanceId, event: HistoryEvent) -> NewMessage {
    NewMessage {
        instance_id: instance_id.clone(),
        execution_id: None,
        event,
        visible_at: Utc::now(),
    }
}

/// The result of a client's message from what the store did with it
/// (`name`: of the event raised once).
fn enqueued(
    instance_id: &InstanceId,
    outcome: EnqueueOutcome,
    operation: &'static str,
    name: &str,
) -> Result<()> {
    match outcome {
        EnqueueOutcome::Enqueued => Ok(()),
        EnqueueOutcome::NotFound => Err(Error::InstanceNotFound(instance_id.clone())),
        EnqueueOutcome::Terminal(status) => Err(Error::InvalidState {
            instance_id: instance_id.clone(),
            status,
            operation,
        }),
        EnqueueOutcome::AlreadyRaised => Err(Error::EventAlreadyRaised {
            instance_id: instance_id.clone(),
            name: name.to_owned(),
        }),
    }
}
