//! The orchestrations and activities the simulation runs.
//!
//! `sim.main` runs a plan of steps, each one ending with a `step` stream
//! event that says which execution (`round`) and which step it was, so
//! that a stream can be checked without predicting which branch a race
//! took: per execution the steps are 0, 1, 2, ... without gap or repeat,
//! and executions follow one another. After its last step an execution
//! continues as new, until the last one, which waits for the `stop`
//! event (sent by the simulation once it has stopped the faults, with the
//! tokens of every event it was told it raised) and then for each of
//! those tokens, and completes with the tokens it received, in order.
//!
//! Every activity answers with a text made of its input, which the code
//! checks: a result that belongs to another call (a stale result after a
//! redo that took another branch) fails the instance with `WrongResult`.

use std::time::Duration;

use durable_core::future::{select, Either};
use durable_core::{ActivityContext, OrchestrationContext, OrchestrationError, Registry};
use serde::{Deserialize, Serialize};

/// The name of the events the simulation raises; each carries a token.
pub const EVENT: &str = "ev";

/// The name of the event that lets the last execution finish.
pub const STOP: &str = "stop";

/// What one step of `sim.main` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// Calls an activity.
    Activity,
    /// Races an activity against an event; an event that wins is followed
    /// by another activity, so that the two branches schedule different
    /// calls under the same task ids.
    RaceEvent,
    /// Races an activity against a short timer, with a follow-up activity
    /// after the timer as after an event.
    RaceTimer,
    /// Waits for an event, at most a few milliseconds (a timer).
    WaitEvent,
    /// Calls a sub-orchestration with the default instance id.
    Child,
    /// Emits a few stream events more.
    Emit,
    /// Tries names that the runtime must refuse where they are made (a NUL
    /// character), and checks that it does.
    BadNames,
}

/// The input of `sim.main`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MainInput {
    /// Tells this incarnation of the instance id from others.
    pub nonce: u64,
    /// The execution: 0 for the first, one more at each continue-as-new.
    pub round: u32,
    /// How many executions to run.
    pub rounds: u32,
    /// The steps of each execution.
    pub steps: Vec<Step>,
    /// The tokens received by earlier executions.
    pub received: Vec<u64>,
    /// A timer's length in milliseconds.
    pub timer_ms: u64,
}

/// The output of `sim.main`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MainOutput {
    /// The input's nonce.
    pub nonce: u64,
    /// The tokens of the events received, in order.
    pub received: Vec<u64>,
}

/// The payload of a `step` stream event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepEvent {
    /// The nonce of the incarnation.
    pub nonce: u64,
    /// The execution.
    pub round: u32,
    /// The step.
    pub step: u32,
    /// What happened (`activity`, `event`, `timer`, `child`, ...).
    pub what: String,
    /// The token of an event received in this step.
    pub token: Option<u64>,
    /// The instance id of a sub-orchestration called in this step.
    pub child: Option<String>,
}

/// The input of an activity.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Call {
    nonce: u64,
    round: u32,
    step: u32,
    tag: String,
}

impl Call {
    /// What the activity answers.
    fn expected(&self) -> String {
        format!("{}/{}/{}/{}", self.nonce, self.round, self.step, self.tag)
    }
}

/// The input and output of `sim.child`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ChildCall {
    nonce: u64,
    round: u32,
    step: u32,
}

/// The output of `sim.child`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildOutput {
    /// The child's own instance id.
    pub instance_id: String,
    /// The parent's nonce.
    pub nonce: u64,
    /// The parent's execution.
    pub round: u32,
    /// The parent's step.
    pub step: u32,
}

/// Why a simulated orchestration failed on purpose: what it saw breaks
/// a guarantee.
#[derive(Debug)]
pub enum SimFailure {
    /// An activity answered for another call.
    WrongResult(String),
    /// The runtime accepted a name it must refuse.
    AcceptedBadName(String),
    /// A sub-orchestration failed or answered for another call.
    Child(String),
    /// The context failed.
    Orchestration(OrchestrationError),
}

impl std::fmt::Display for SimFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::WrongResult(m) => write!(f, "WrongResult: {m}"),
            Self::AcceptedBadName(m) => write!(f, "AcceptedBadName: {m}"),
            Self::Child(m) => write!(f, "ChildFailed: {m}"),
            Self::Orchestration(e) => write!(f, "Orchestration: {e}"),
        }
    }
}

impl From<OrchestrationError> for SimFailure {
    fn from(e: OrchestrationError) -> Self {
        Self::Orchestration(e)
    }
}

/// Registers the simulation's orchestrations and activities.
pub fn register(registry: Registry) -> Registry {
    registry
        .orchestration("sim.main", main)
        .orchestration("sim.child", child)
        .activity("sim.echo", echo)
}

/// Answers with its input, after a pause that depends on it: none for
/// most calls, a few milliseconds for some, and for a few long enough to
/// outlast a failed commit and the redo of its turns.
async fn echo(_ctx: ActivityContext, call: Call) -> Result<String, std::convert::Infallible> {
    let mut hash = call.nonce ^ u64::from(call.step) ^ (u64::from(call.round) << 7);
    for byte in call.tag.bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    let pause = match hash % 20 {
        0..=11 => 0,
        12..=16 => 1 + hash % 4,
        _ => 15 + hash % 30,
    };
    if pause > 0 {
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    Ok(call.expected())
}

/// Calls `sim.echo` and checks its answer.
async fn call_echo(ctx: &OrchestrationContext, call: Call) -> Result<(), SimFailure> {
    let got: String = ctx.call_activity("sim.echo", &call).await?;
    check_echo(&call, got)
}

fn check_echo(call: &Call, got: String) -> Result<(), SimFailure> {
    if got == call.expected() {
        Ok(())
    } else {
        Err(SimFailure::WrongResult(format!(
            "the call {} got the result {got}",
            call.expected()
        )))
    }
}

async fn main(ctx: OrchestrationContext, mut input: MainInput) -> Result<MainOutput, SimFailure> {
    let call = |step: u32, tag: &str| Call {
        nonce: input.nonce,
        round: input.round,
        step,
        tag: tag.to_owned(),
    };
    let mut received = input.received.clone();
    for (i, step) in input.steps.iter().enumerate() {
        let i = i as u32;
        let mut event = StepEvent {
            nonce: input.nonce,
            round: input.round,
            step: i,
            what: String::new(),
            token: None,
            child: None,
        };
        ctx.set_custom_status(&format!("round {} step {i}: {step:?}", input.round))?;
        match step {
            Step::Activity => {
                call_echo(&ctx, call(i, "a")).await?;
                event.what = "activity".into();
            }
            Step::RaceEvent => {
                let first = call(i, "race");
                let activity = ctx.call_activity::<String>("sim.echo", &first);
                let wait = ctx.wait_for_external_event::<u64>(EVENT);
                match select(activity, wait).await {
                    Either::Left((got, _)) => {
                        check_echo(&first, got?)?;
                        event.what = "activity".into();
                    }
                    Either::Right((token, _)) => {
                        let token = token?;
                        received.push(token);
                        event.token = Some(token);
                        call_echo(&ctx, call(i, "after-event")).await?;
                        event.what = "event".into();
                    }
                }
            }
            Step::RaceTimer => {
                let first = call(i, "race");
                let activity = ctx.call_activity::<String>("sim.echo", &first);
                let timer = ctx.create_timer_in(Duration::from_millis(input.timer_ms));
                match select(activity, timer).await {
                    Either::Left((got, _)) => {
                        check_echo(&first, got?)?;
                        event.what = "activity".into();
                    }
                    Either::Right((fired, _)) => {
                        fired?;
                        call_echo(&ctx, call(i, "after-timer")).await?;
                        event.what = "timer".into();
                    }
                }
            }
            Step::WaitEvent => {
                let wait = ctx.wait_for_external_event::<u64>(EVENT);
                let timer = ctx.create_timer_in(Duration::from_millis(input.timer_ms));
                match select(wait, timer).await {
                    Either::Left((token, _)) => {
                        let token = token?;
                        received.push(token);
                        event.token = Some(token);
                        event.what = "event".into();
                    }
                    Either::Right((fired, _)) => {
                        fired?;
                        event.what = "timer".into();
                    }
                }
            }
            Step::Child => {
                let asked = ChildCall {
                    nonce: input.nonce,
                    round: input.round,
                    step: i,
                };
                let out: ChildOutput = ctx
                    .call_sub_orchestration("sim.child", &asked)
                    .await
                    .map_err(|e| SimFailure::Child(e.to_string()))?;
                if (out.nonce, out.round, out.step) != (asked.nonce, asked.round, asked.step) {
                    return Err(SimFailure::Child(format!(
                        "the child of round {} step {} answered for round {} step {}",
                        asked.round, asked.step, out.round, out.step
                    )));
                }
                event.child = Some(out.instance_id);
                event.what = "child".into();
            }
            Step::Emit => {
                for n in 0..3u32 {
                    ctx.emit_event("extra", &(input.nonce, input.round, i, n))?;
                }
                event.what = "emit".into();
            }
            Step::BadNames => {
                if ctx.emit_event("bad\0name", &input.nonce).is_ok() {
                    return Err(SimFailure::AcceptedBadName(
                        "emit_event took a NUL in its name".into(),
                    ));
                }
                if ctx
                    .call_activity::<String>("sim\0echo", &call(i, "bad"))
                    .await
                    .is_ok()
                {
                    return Err(SimFailure::AcceptedBadName(
                        "an activity with a NUL in its name answered".into(),
                    ));
                }
                event.what = "bad-names".into();
            }
        }
        ctx.emit_event("step", &event)?;
    }
    if input.round + 1 < input.rounds {
        input.round += 1;
        input.received = received;
        return Ok(ctx.continue_as_new(&input).await);
    }
    // The simulation says which tokens it raised and was told were taken.
    ctx.set_custom_status(&format!("round {}: waiting for stop", input.round))?;
    let wanted: Vec<u64> = ctx.wait_for_external_event(STOP).await?;
    while !wanted.iter().all(|t| received.contains(t)) {
        let missing: Vec<u64> = wanted.iter().copied().filter(|t| !received.contains(t)).collect();
        ctx.set_custom_status(&format!("round {}: waiting for tokens {missing:?}", input.round))?;
        let token: u64 = ctx.wait_for_external_event(EVENT).await?;
        received.push(token);
        ctx.emit_event(
            "late",
            &StepEvent {
                nonce: input.nonce,
                round: input.round,
                step: input.steps.len() as u32,
                what: "late-event".into(),
                token: Some(token),
                child: None,
            },
        )?;
    }
    Ok(MainOutput {
        nonce: input.nonce,
        received,
    })
}

async fn child(ctx: OrchestrationContext, call: ChildCall) -> Result<ChildOutput, SimFailure> {
    call_echo(
        &ctx,
        Call {
            nonce: call.nonce,
            round: call.round,
            step: call.step,
            tag: "child".into(),
        },
    )
    .await?;
    ctx.emit_event("child", &(call.nonce, call.round, call.step))?;
    Ok(ChildOutput {
        instance_id: ctx.instance_id().to_string(),
        nonce: call.nonce,
        round: call.round,
        step: call.step,
    })
}
