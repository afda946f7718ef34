//! Human in the loop: requests on a typed port, listed in the live status,
//! answered by id in any order, delivered to the executor's handler.

mod common;

use std::time::Duration;

use agent_workflows::prelude::*;
use agent_workflows::{WorkflowClientError, WorkflowResult};
use common::{names, Harness, TIMEOUT};
use serde::{Deserialize, Serialize};

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

    /// Gets each answer.
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

async fn wait_for_requests(
    h: &Harness,
    id: &durable_core::InstanceId,
    n: usize,
) -> Vec<agent_workflows::PendingRequest> {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let pending = h.client.pending_requests(id).await.unwrap();
        if pending.len() == n {
            return pending;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "requests never became pending"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_requests_on_one_port_answered_in_reverse_order() {
    let h = Harness::new(Registry::new().workflow(review)).await;
    let drafts = vec![
        Draft {
            title: "first".into(),
        },
        Draft {
            title: "second".into(),
        },
    ];
    let id = h.client.start(review, &drafts).await.unwrap();

    let pending = wait_for_requests(&h, &id, 2).await;
    assert_eq!(pending[0].executor_id, "reviewer");
    assert_eq!(pending[0].request.as_str(), r#"{"title":"first"}"#);
    assert_eq!(pending[1].request.as_str(), r#"{"title":"second"}"#);
    assert_ne!(pending[0].request_id, pending[1].request_id);
    // The live status is exactly {superstep, pending_requests}.
    let status = h
        .client
        .client()
        .get_instance(&id)
        .await
        .unwrap()
        .unwrap()
        .custom_status
        .unwrap();
    let status: serde_json::Value = status.parse().unwrap();
    let mut keys: Vec<&String> = status.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["pending_requests", "superstep"]);

    // Answer the second first.
    h.client
        .respond(&id, &pending[1].request_id, &Verdict { approved: false })
        .await
        .unwrap();
    let left = wait_for_requests(&h, &id, 1).await;
    assert_eq!(left[0].request_id, pending[0].request_id);
    // Typed: the answer must be the port's response type.
    h.client
        .respond_on(
            &id,
            &APPROVAL,
            &pending[0].request_id,
            &Verdict { approved: true },
        )
        .await
        .unwrap();

    let result = h.client.wait_for_completion(&id, TIMEOUT).await.unwrap();
    assert!(result.is_completed(), "{result:?}");
    assert_eq!(
        result.outputs_as::<(String, bool)>().unwrap(),
        [("second".to_owned(), false), ("first".to_owned(), true)]
    );
    assert!(h.client.pending_requests(&id).await.unwrap().is_empty());
    let events = h.events(&id).await;
    let names = names(&events);
    assert_eq!(names.iter().filter(|n| **n == "request_info").count(), 2);
    assert_eq!(names.iter().filter(|n| **n == "request_answered").count(), 2);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answering_a_request_that_is_not_pending_is_a_typed_error() {
    let h = Harness::new(Registry::new().workflow(review)).await;
    let id = h
        .client
        .start(review, &vec![Draft { title: "only".into() }])
        .await
        .unwrap();
    let pending = wait_for_requests(&h, &id, 1).await;

    let error = h
        .client
        .respond(&id, "no-such-request", &Verdict { approved: true })
        .await
        .unwrap_err();
    assert!(
        matches!(&error, WorkflowClientError::RequestNotPending { request_id, .. } if request_id == "no-such-request"),
        "{error:?}"
    );

    h.client
        .respond(&id, &pending[0].request_id, &Verdict { approved: true })
        .await
        .unwrap();
    let result = h.client.wait_for_completion(&id, TIMEOUT).await.unwrap();
    assert!(result.is_completed());
    // Answered: no longer pending.
    let again = h
        .client
        .respond(&id, &pending[0].request_id, &Verdict { approved: true })
        .await;
    assert!(
        matches!(again, Err(WorkflowClientError::RequestNotPending { .. })),
        "{again:?}"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_of_the_wrong_shape_is_rejected_and_the_request_stays_pending() {
    let h = Harness::new(Registry::new().workflow(review)).await;
    let id = h
        .client
        .start(review, &vec![Draft { title: "only".into() }])
        .await
        .unwrap();
    let pending = wait_for_requests(&h, &id, 1).await;
    h.client
        .respond(&id, &pending[0].request_id, &"yes please")
        .await
        .unwrap();
    // Wait for the rejection to show in the stream.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !names(&h.events(&id).await).contains(&"response_rejected") {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The request is pending again, in its second round: it takes one
    // more answer.
    let again = h.client.pending_requests(&id).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].rejected_answers, 1);
    h.client
        .respond(&id, &pending[0].request_id, &Verdict { approved: true })
        .await
        .unwrap();
    assert!(matches!(
        h.client
            .respond(&id, &pending[0].request_id, &Verdict { approved: false })
            .await,
        Err(WorkflowClientError::RequestNotPending { .. })
    ));
    let result = h.client.wait_for_completion(&id, TIMEOUT).await.unwrap();
    assert_eq!(
        result.outputs_as::<(String, bool)>().unwrap(),
        [("only".to_owned(), true)]
    );
    h.shutdown().await;
}

// --- a request with a timeout -------------------------------------------

struct Impatient;

#[executor(id = "impatient")]
impl Impatient {
    #[handler]
    async fn ask(&self, draft: Draft, ctx: &mut WorkflowContext) -> Result<(), ExecutorError> {
        ctx.request_info_with_timeout(&APPROVAL, &draft, Duration::from_millis(200))?;
        Ok(())
    }

    #[handler]
    async fn answer(
        &self,
        answer: RequestResponse<Draft, Verdict>,
        ctx: &mut WorkflowContext,
    ) -> Result<(), ExecutorError> {
        match answer.response {
            Ok(verdict) => ctx.yield_output(&format!("answered {}", verdict.approved)),
            Err(timeout) => ctx.yield_output(&format!("timed out after {} ms", timeout.timeout_ms)),
        }
    }
}

#[workflow(name = "impatient")]
fn impatient() -> Workflow<Draft> {
    WorkflowBuilder::start(Impatient).build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_request_times_out_into_its_handler() {
    let h = Harness::new(Registry::new().workflow(impatient)).await;
    let (result, events): (WorkflowResult, _) = h.run(impatient, &Draft { title: "t".into() }).await;
    assert!(result.is_completed(), "{result:?}");
    assert_eq!(result.outputs_as::<String>().unwrap(), ["timed out after 200 ms"]);
    assert!(names(&events).contains(&"request_timed_out"));
    h.shutdown().await;
}

// --- asking without a handler for the answer ----------------------------

#[executor(id = "forgetful")]
async fn forgetful(draft: Draft, ctx: &mut WorkflowContext) -> Result<(), ExecutorError> {
    ctx.request_info(&APPROVAL, &draft)?;
    Ok(())
}

#[workflow(name = "forgetful")]
fn forgetful_workflow() -> Workflow<Draft> {
    WorkflowBuilder::start(forgetful).build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requesting_without_a_response_handler_fails_with_advice() {
    let h = Harness::new(Registry::new().workflow(forgetful_workflow)).await;
    let (result, _) = h.run(forgetful_workflow, &Draft { title: "t".into() }).await;
    assert_eq!(result.status, RuntimeStatus::Failed);
    let error = result.error.unwrap();
    assert!(error.contains("add a #[handler] method taking"), "{error}");
    h.shutdown().await;
}
