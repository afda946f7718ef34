//! Helpers shared by the workflow tests: a worker on SQLite in memory and
//! a client, and a way to run a workflow to its end and read its events.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use agent_workflows::prelude::*;
use agent_workflows::{WorkflowDefinition, WorkflowResult};

pub const TIMEOUT: Duration = Duration::from_secs(30);

pub struct Harness {
    pub worker: Option<Worker>,
    pub client: WorkflowClient,
}

impl Harness {
    pub async fn new(registry: Registry) -> Self {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await.expect("in-memory store"));
        let worker = Worker::start(store.clone(), registry).expect("worker starts");
        Self {
            worker: Some(worker),
            client: WorkflowClient::new(Client::new(store)),
        }
    }

    /// Runs `W` with `input` to its end; returns the result and every event.
    pub async fn run<W: WorkflowDefinition>(
        &self,
        workflow: W,
        input: &W::Input,
    ) -> (WorkflowResult, Vec<WorkflowEvent>) {
        let id = self.client.start(workflow, input).await.expect("start");
        let result = self
            .client
            .wait_for_completion(&id, TIMEOUT)
            .await
            .expect("run ends");
        let events = self.events(&id).await;
        (result, events)
    }

    pub async fn events(&self, id: &durable_core::InstanceId) -> Vec<WorkflowEvent> {
        self.client
            .events(id, 0, 10_000)
            .await
            .expect("events")
            .into_iter()
            .map(|e| e.event)
            .collect()
    }

    pub async fn shutdown(mut self) {
        if let Some(worker) = self.worker.take() {
            worker.shutdown().await.expect("shutdown");
        }
    }
}

/// The supersteps in which `executor` was invoked, one per message.
pub fn invocations(events: &[WorkflowEvent], executor: &str) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match e {
            WorkflowEvent::ExecutorInvoked {
                superstep,
                executor_id,
                ..
            } if executor_id == executor => Some(*superstep),
            _ => None,
        })
        .collect()
}

pub fn names(events: &[WorkflowEvent]) -> Vec<&'static str> {
    events.iter().map(WorkflowEvent::name).collect()
}
