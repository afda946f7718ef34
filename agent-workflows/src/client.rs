//! The workflow client: run workflows, watch their events as typed values,
//! list and answer their requests.

use std::time::Duration;

use durable_core::{Client, InstanceId, Payload, RuntimeStatus, StartOptions};
use futures::stream::BoxStream;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::events::{LiveStatus, PendingRequest, SequencedEvent};
use crate::superstep::response_event_name;
use crate::{RequestPort, WorkflowClientError, WorkflowDefinition};

/// A `Result` whose error is [`WorkflowClientError`].
pub type ClientResult<T> = Result<T, WorkflowClientError>;

/// The end of a run.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct WorkflowResult {
    /// The instance.
    pub instance_id: InstanceId,
    /// `Completed`, `Failed` or `Terminated`.
    pub status: RuntimeStatus,
    /// The workflow outputs (empty unless completed): by superstep, and
    /// within a superstep in the order the executors joined the graph and
    /// each yielded them.
    pub outputs: Vec<Payload>,
    /// Why the run failed or was terminated.
    pub error: Option<String>,
}

impl WorkflowResult {
    /// Whether the run completed.
    pub fn is_completed(&self) -> bool {
        self.status == RuntimeStatus::Completed
    }

    /// The outputs, deserialized.
    ///
    /// # Errors
    ///
    /// [`WorkflowClientError::Json`] if an output does not fit `T`.
    pub fn outputs_as<T: DeserializeOwned>(&self) -> ClientResult<Vec<T>> {
        self.outputs
            .iter()
            .map(|output| output.parse().map_err(WorkflowClientError::from))
            .collect()
    }
}

/// Runs workflows and talks to their runs. Cheap to clone.
///
/// See the [crate documentation](crate) for an example.
#[derive(Debug, Clone)]
pub struct WorkflowClient {
    client: Client,
}

impl WorkflowClient {
    /// A workflow client on a durable-core client.
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// The durable-core client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Starts a run of workflow `W` under a new instance id.
    ///
    /// # Errors
    ///
    /// A store or serialization error.
    pub async fn start<W: WorkflowDefinition>(
        &self,
        _workflow: W,
        input: &W::Input,
    ) -> ClientResult<InstanceId> {
        Ok(self.client.start(W::NAME, input).await?)
    }

    /// Starts a run of workflow `W` under `instance_id`.
    ///
    /// # Errors
    ///
    /// [`durable_core::Error::InstanceAlreadyExists`] (inside
    /// [`WorkflowClientError::Core`]) if a run with this id is not
    /// finished, or a store error.
    pub async fn start_with_id<W: WorkflowDefinition>(
        &self,
        _workflow: W,
        instance_id: InstanceId,
        input: &W::Input,
    ) -> ClientResult<InstanceId> {
        let options = StartOptions::new(W::NAME, input)?.instance_id(instance_id);
        Ok(self.client.start_with(options).await?)
    }

    /// Reads up to `limit` events after sequence number `after`.
    ///
    /// # Errors
    ///
    /// [`WorkflowClientError::Core`] for an unknown instance or a store
    /// error, [`WorkflowClientError::InvalidEvent`] for a stream event that
    /// is not a workflow event.
    pub async fn events(
        &self,
        instance_id: &InstanceId,
        after: u64,
        limit: u32,
    ) -> ClientResult<Vec<SequencedEvent>> {
        let page = self.client.get_events(instance_id, after, limit).await?;
        page.events.iter().map(SequencedEvent::from_stream).collect()
    }

    /// Follows a run's events after sequence number `after`, live; the
    /// stream ends after the last event of a finished run.
    pub fn watch(
        &self,
        instance_id: &InstanceId,
        after: u64,
    ) -> BoxStream<'static, ClientResult<SequencedEvent>> {
        self.client
            .watch_events(instance_id, after)
            .map(|event| SequencedEvent::from_stream(&event?))
            .boxed()
    }

    /// The run's live status: its superstep and pending requests.
    ///
    /// # Errors
    ///
    /// [`WorkflowClientError::NotFound`], or a store error.
    pub async fn live_status(&self, instance_id: &InstanceId) -> ClientResult<LiveStatus> {
        let metadata = self
            .client
            .get_instance(instance_id)
            .await?
            .ok_or_else(|| WorkflowClientError::NotFound(instance_id.clone()))?;
        match metadata.custom_status {
            Some(status) => Ok(status.parse()?),
            None => Ok(LiveStatus::default()),
        }
    }

    /// The requests of a run waiting for an answer.
    ///
    /// # Errors
    ///
    /// As [`live_status`](Self::live_status).
    pub async fn pending_requests(&self, instance_id: &InstanceId) -> ClientResult<Vec<PendingRequest>> {
        Ok(self.live_status(instance_id).await?.pending_requests)
    }

    /// Answers a pending request. The answer reaches the requesting
    /// executor in the run's next superstep. A request takes one answer:
    /// of two answers, even two sent at the same moment, one is accepted
    /// and the other refused. An accepted answer that does not fit the
    /// request's response type is rejected by the run (a
    /// `response_rejected` event), and the request takes another.
    ///
    /// # Errors
    ///
    /// [`WorkflowClientError::RequestNotPending`] if no request with this
    /// id is pending (also if the run has ended) or it has been answered
    /// already,
    /// [`WorkflowClientError::NotFound`], or a store error.
    pub async fn respond<R: Serialize + ?Sized>(
        &self,
        instance_id: &InstanceId,
        request_id: &str,
        response: &R,
    ) -> ClientResult<()> {
        // Serialized once for every round it may be sent in.
        let response = Payload::new(response)?;
        let not_pending = || WorkflowClientError::RequestNotPending {
            instance_id: instance_id.clone(),
            request_id: request_id.to_owned(),
        };
        let mut tried = None;
        loop {
            let pending = self.pending_requests(instance_id).await?;
            let Some(request) = pending.iter().find(|r| r.request_id == request_id) else {
                return Err(not_pending());
            };
            let round = request.rejected_answers;
            if tried.is_some_and(|t| t >= round) {
                // An answer of this round is taken (waiting or accepted).
                return Err(not_pending());
            }
            // Once per round: of two answers, even sent at the same moment,
            // one counts and the other is refused. An answer the run rejects
            // opens the next round.
            match self
                .client
                .raise_event_once(instance_id, response_event_name(request_id, round), &response)
                .await
            {
                Err(durable_core::Error::EventAlreadyRaised { .. }) => tried = Some(round),
                // The run ended after the request was read: nothing is
                // pending any more.
                Err(durable_core::Error::InvalidState { status, .. }) if status.is_terminal() => {
                    return Err(not_pending())
                }
                result => return Ok(result?),
            }
        }
    }

    /// Answers a pending request made on `port`, with an answer of the
    /// port's response type.
    ///
    /// # Errors
    ///
    /// As [`respond`](Self::respond).
    pub async fn respond_on<Req, Resp: Serialize>(
        &self,
        instance_id: &InstanceId,
        _port: &RequestPort<Req, Resp>,
        request_id: &str,
        response: &Resp,
    ) -> ClientResult<()> {
        self.respond(instance_id, request_id, response).await
    }

    /// Waits until the run is finished.
    ///
    /// # Errors
    ///
    /// [`durable_core::Error::Timeout`] (inside
    /// [`WorkflowClientError::Core`]) after `timeout`,
    /// [`WorkflowClientError::Json`] if the stored outputs cannot be read,
    /// or a store error.
    pub async fn wait_for_completion(
        &self,
        instance_id: &InstanceId,
        timeout: Duration,
    ) -> ClientResult<WorkflowResult> {
        let metadata = self.client.wait_for_completion(instance_id, timeout).await?;
        // A completed run's output is the array of its outputs (a
        // sub-workflow's, an object that also holds its events, has none
        // here).
        let outputs = match (&metadata.status, &metadata.output) {
            (RuntimeStatus::Completed, Some(output)) if output.as_str().starts_with('[') => output.parse()?,
            _ => Vec::new(),
        };
        let error = match metadata.status {
            RuntimeStatus::Failed => metadata.failure.as_ref().map(|f| f.message.clone()),
            RuntimeStatus::Terminated => Some(
                metadata
                    .output
                    .as_ref()
                    .and_then(|reason| reason.parse::<String>().ok())
                    .unwrap_or_else(|| "terminated".to_owned()),
            ),
            _ => None,
        };
        Ok(WorkflowResult {
            instance_id: metadata.instance_id,
            status: metadata.status,
            outputs,
            error,
        })
    }
}
