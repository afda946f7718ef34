//! Sample orchestrations that the example programs run and serve.
//!
//! * `hello_cities` (also registered as `E1_HelloSequence`, its name in the
//!   Durable Functions documentation): greets each city through the
//!   `say_hello` activity, setting the custom status and emitting a
//!   `greeted` event after each one.
//! * `approval`: works through a few steps, streaming a `progress` event
//!   for each, then asks for approval (`approval_requested`) and waits for
//!   the external event `approval`, `{"approved": bool, "comment": "..."}`,
//!   and ends with `approved`, `rejected` or `approval_timed_out`.

use std::convert::Infallible;
use std::time::Duration;

use durable_core::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The Durable Functions `E1_HelloSequence` sample: greets each city in
/// turn; after each greeting sets the custom status to the city and emits
/// `greeted` with it.
///
/// # Errors
///
/// A failure of the `say_hello` activity.
pub async fn hello_sequence(
    ctx: OrchestrationContext,
    cities: Vec<String>,
) -> Result<Vec<String>, OrchestrationError> {
    let mut outputs = Vec::new();
    for city in cities {
        outputs.push(ctx.call_activity::<String>("say_hello", &city).await?);
        ctx.set_custom_status(&city)?;
        ctx.emit_event("greeted", &city)?;
    }
    Ok(outputs)
}

/// The `say_hello` activity: `"Hello {name}!"`, after a short pause so that
/// each step can be watched.
///
/// # Errors
///
/// None.
pub async fn say_hello(_ctx: ActivityContext, name: String) -> Result<String, Infallible> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(format!("Hello {name}!"))
}

/// The orchestrations and activities of the hello-cities sample.
pub fn hello_cities() -> Registry {
    Registry::new()
        .orchestration("hello_cities", hello_sequence)
        .orchestration("E1_HelloSequence", hello_sequence)
        .activity("E1_SayHello", say_hello)
        .activity("say_hello", say_hello)
}

/// The input of the `approval` orchestration; every field is optional.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ApprovalInput {
    /// The work to approve.
    pub title: String,
    /// How many steps of work come before the request (at most 100).
    pub steps: u32,
    /// How long to wait for the answer, in seconds.
    pub timeout_seconds: u64,
}

impl Default for ApprovalInput {
    fn default() -> Self {
        Self {
            title: "draft".to_owned(),
            steps: 3,
            timeout_seconds: 3600,
        }
    }
}

/// The answer the `approval` orchestration waits for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Approval {
    /// Whether the work is approved.
    pub approved: bool,
    /// A remark from the approver.
    #[serde(default)]
    pub comment: Option<String>,
}

/// Works through `steps` steps (one activity each, a `progress` event
/// after each), emits `approval_requested`, and waits for the external
/// event `approval`; emits and returns the decision.
///
/// # Errors
///
/// A failed activity, or an `approval` event that is not an [`Approval`].
pub async fn approval(
    ctx: OrchestrationContext,
    input: Option<ApprovalInput>,
) -> Result<Value, OrchestrationError> {
    let input = input.unwrap_or_default();
    let steps = input.steps.min(100);
    for step in 1..=steps {
        let result: String = ctx.call_activity("work_on", &(input.title.clone(), step)).await?;
        ctx.emit_event(
            "progress",
            &json!({ "step": step, "of": steps, "result": result }),
        )?;
    }
    ctx.emit_event(
        "approval_requested",
        &json!({ "title": input.title, "event": "approval", "expects": { "approved": "bool", "comment": "string (optional)" } }),
    )?;
    ctx.set_custom_status(&json!({ "waitingFor": "approval" }))?;
    let timeout = Duration::from_secs(input.timeout_seconds);
    let decision = match ctx
        .wait_for_external_event_with_timeout::<Approval>("approval", timeout)
        .await
    {
        Ok(answer) => {
            let name = if answer.approved { "approved" } else { "rejected" };
            let decision = json!({ "title": input.title, "decision": name, "comment": answer.comment });
            ctx.emit_event(name, &decision)?;
            decision
        }
        Err(OrchestrationError::Timeout(_)) => {
            let decision = json!({ "title": input.title, "decision": "timed_out" });
            ctx.emit_event("approval_timed_out", &decision)?;
            decision
        }
        Err(other) => return Err(other),
    };
    ctx.set_custom_status(&Value::Null)?;
    Ok(decision)
}

/// The `work_on` activity: one step of work on a title.
///
/// # Errors
///
/// None.
pub async fn work_on(_ctx: ActivityContext, (title, step): (String, u32)) -> Result<String, Infallible> {
    tokio::time::sleep(Duration::from_millis(400)).await;
    Ok(format!("step {step} of '{title}' done"))
}

/// The orchestration and activity of the approval sample.
pub fn approval_flow() -> Registry {
    Registry::new()
        .orchestration("approval", approval)
        .activity("work_on", work_on)
}
