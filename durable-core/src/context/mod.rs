//! The orchestration context: everything orchestration code may do.
//!
//! Orchestration code must be deterministic: given the same history it must
//! make the same calls in the same order. It reaches the outside world only
//! through the context (activities, timers, external events,
//! sub-orchestrations) and reads time and random ids from it
//! ([`OrchestrationContext::current_utc_datetime`],
//! [`OrchestrationContext::new_guid`]).
//!
//! The futures the context returns ([`DurableFuture`]) resolve only between
//! history events, one event at a time, in history order. Combinators that
//! poll their futures in a fixed order are therefore deterministic:
//! `futures::join!`, [`crate::future::join_all`], [`crate::future::select`]
//! and [`crate::future::select_all`]. Do not await anything else (such as
//! `tokio::time::sleep`) in orchestration code, and do not use
//! `futures::select!`, which picks at random.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::ids::name_problem;
use crate::{FailureDetails, InstanceId, OrchestrationError, Payload, RetryPolicy};

mod future;
mod limits;
mod state;

use future::Source;
pub use future::{ContinueAsNew, ContinueAsNewOptions, DurableFuture};
pub use limits::{Limits, StatusMeasure};
pub(crate) use state::{Action, PendingEmit, State};
use state::{TaskKind, Waiter};

/// The handle orchestration code uses to schedule work and read
/// deterministic time. Cheap to clone.
#[derive(Debug, Clone)]
pub struct OrchestrationContext {
    state: Arc<Mutex<State>>,
}

impl OrchestrationContext {
    pub(crate) fn new(
        instance_id: InstanceId,
        execution_id: String,
        name: String,
        limits: Limits,
        persisted_emits: u64,
    ) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                instance_id,
                execution_id,
                name,
                now: DateTime::<Utc>::default(),
                replaying: false,
                limits,
                next_task_id: 0,
                expected: BTreeMap::new(),
                open_tasks: HashSet::new(),
                activity_calls: HashMap::new(),
                results: HashMap::new(),
                wakers: HashMap::new(),
                buffered_events: VecDeque::new(),
                waiters: BTreeMap::new(),
                next_waiter_id: 0,
                actions: Vec::new(),
                custom_status: None,
                custom_status_changed: false,
                next_emit_index: 0,
                persisted_emits,
                emits: Vec::new(),
                guid_counter: 0,
                continue_as_new: None,
                fatal: None,
            })),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The instance id.
    pub fn instance_id(&self) -> InstanceId {
        self.lock().instance_id.clone()
    }

    /// The id of the current execution (new after every continue-as-new).
    pub fn execution_id(&self) -> String {
        self.lock().execution_id.clone()
    }

    /// Whether the code is being replayed from history. Use it to skip side
    /// effects such as logging that should happen only once.
    pub fn is_replaying(&self) -> bool {
        self.lock().replaying
    }

    /// The current time of the orchestration: the time the current turn
    /// began, to the millisecond, the same on every replay.
    ///
    /// Millisecond precision is what stores keep, so the time the code reads
    /// is exactly the `emitted_at` of the stream events it emits, and a
    /// timer created from it fires no earlier than asked.
    pub fn current_utc_datetime(&self) -> DateTime<Utc> {
        self.lock().orchestration_time()
    }

    /// A UUID that is the same on every replay.
    pub fn new_guid(&self) -> uuid::Uuid {
        let mut state = self.lock();
        state.guid_counter += 1;
        let name = format!(
            "{}\u{1f}{}\u{1f}{}",
            state.instance_id, state.execution_id, state.guid_counter
        );
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes())
    }

    /// Schedules an activity and returns a future of its result.
    ///
    /// The future resolves to [`OrchestrationError::ActivityFailed`] if the
    /// activity returns an error, to
    /// [`OrchestrationError::Deserialization`] if its result does not fit
    /// `T`, and at once to [`OrchestrationError::InvalidName`] for a name
    /// no activity can have (nothing is scheduled then).
    pub fn call_activity<T: DeserializeOwned>(
        &self,
        name: impl Into<String>,
        input: &impl Serialize,
    ) -> DurableFuture<T> {
        let name = name.into();
        let input = check_name("activity", &name)
            .and_then(|()| to_payload(input, || format!("input of activity '{name}'")));
        match input {
            Ok(input) => self.call_activity_value(name, input),
            Err(e) => DurableFuture::ready(self.clone(), Err(e)),
        }
    }

    fn call_activity_value<T: DeserializeOwned>(&self, name: String, input: Payload) -> DurableFuture<T> {
        let fingerprint = crate::store::call_fingerprint(&name, &input);
        let id = self.lock().schedule(Action::Activity {
            id: 0,
            name: name.clone(),
            input,
            fingerprint,
        });
        DurableFuture::task(self.clone(), id, TaskKind::Activity(name))
    }

    /// Calls an activity, retrying failures as `policy` says. Each retry
    /// waits on a durable timer, so retries survive restarts.
    pub fn call_activity_with_retry<T: DeserializeOwned + Send + 'static>(
        &self,
        name: impl Into<String>,
        input: &impl Serialize,
        policy: RetryPolicy,
    ) -> impl Future<Output = Result<T, OrchestrationError>> + Send + 'static {
        let ctx = self.clone();
        let name = name.into();
        let input = check_name("activity", &name)
            .and_then(|()| to_payload(input, || format!("input of activity '{name}'")));
        async move {
            let input = input?;
            let started = ctx.current_utc_datetime();
            let mut attempt = 1;
            loop {
                let error = match ctx.call_activity_value::<T>(name.clone(), input.clone()).await {
                    Ok(value) => return Ok(value),
                    Err(e @ OrchestrationError::ActivityFailed { .. }) => e,
                    Err(e) => return Err(e),
                };
                let Some(delay) = policy.delay_before_retry(attempt) else {
                    return Err(error);
                };
                if let Some(total) = policy.total_timeout {
                    let elapsed = (ctx.current_utc_datetime() - started)
                        .to_std()
                        .unwrap_or_default();
                    if elapsed + delay > total {
                        return Err(error);
                    }
                }
                ctx.create_timer_in(delay).await?;
                attempt += 1;
            }
        }
    }

    /// A durable timer that fires at `fire_at`.
    pub fn create_timer(&self, fire_at: DateTime<Utc>) -> DurableFuture<()> {
        let id = self.lock().schedule(Action::Timer { id: 0, fire_at });
        DurableFuture::task(self.clone(), id, TaskKind::Timer)
    }

    /// A durable timer that fires `delay` after the current orchestration
    /// time.
    pub fn create_timer_in(&self, delay: Duration) -> DurableFuture<()> {
        let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
        let fire_at = self
            .current_utc_datetime()
            .checked_add_signed(delay)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        self.create_timer(fire_at)
    }

    /// Waits for an external event raised by a client with
    /// [`Client::raise_event`](crate::Client::raise_event). Events of one
    /// name are delivered in the order they arrived, one per wait; events
    /// that arrive before anyone waits are buffered.
    ///
    /// The future resolves at once to [`OrchestrationError::InvalidName`]
    /// for a name no client can raise.
    pub fn wait_for_external_event<T: DeserializeOwned>(&self, name: impl Into<String>) -> DurableFuture<T> {
        let name = name.into();
        if let Err(e) = check_name("external event", &name) {
            return DurableFuture::ready(self.clone(), Err(e));
        }
        let mut state = self.lock();
        let buffered = state.buffered_events.iter().position(|(n, _)| *n == name);
        if let Some((_, data)) = buffered.and_then(|i| state.buffered_events.remove(i)) {
            drop(state);
            let what = format!("external event '{name}'");
            return DurableFuture::ready(self.clone(), Ok(data)).with_what(what);
        }
        let waiter = state.next_waiter_id;
        state.next_waiter_id += 1;
        state.waiters.insert(
            waiter,
            Waiter {
                name: name.clone(),
                delivered: None,
                waker: None,
            },
        );
        drop(state);
        DurableFuture {
            ctx: self.clone(),
            source: Source::External { waiter, name },
            _marker: PhantomData,
        }
    }

    /// Waits for an external event, or fails with
    /// [`OrchestrationError::Timeout`] once `timeout` has passed (a durable
    /// timer races the event).
    pub fn wait_for_external_event_with_timeout<T: DeserializeOwned + Send + 'static>(
        &self,
        name: impl Into<String>,
        timeout: Duration,
    ) -> impl Future<Output = Result<T, OrchestrationError>> + Send + 'static {
        let name = name.into();
        let event = self.wait_for_external_event::<T>(name.clone());
        let timer = self.create_timer_in(timeout);
        async move {
            match crate::future::select(event, timer).await {
                futures::future::Either::Left((result, _timer)) => result,
                futures::future::Either::Right((fired, _event)) => {
                    fired?;
                    Err(OrchestrationError::Timeout(format!("external event '{name}'")))
                }
            }
        }
    }

    /// Starts a sub-orchestration and returns a future of its output.
    ///
    /// The sub-orchestration's instance id is made of this instance's id,
    /// its execution id and the call's task id
    /// (`{instance}:{execution}:{task}`): the same on every replay, and
    /// another for every call, also across continue-as-new, so that a
    /// call never replaces the child of an earlier execution. The future
    /// resolves to [`OrchestrationError::InvalidInstanceId`] if that id
    /// is too long (a parent id of more than about 200 bytes): give the
    /// id yourself with
    /// [`call_sub_orchestration_with_id`](Self::call_sub_orchestration_with_id).
    pub fn call_sub_orchestration<T: DeserializeOwned>(
        &self,
        name: impl Into<String>,
        input: &impl Serialize,
    ) -> DurableFuture<T> {
        let id = {
            let state = self.lock();
            format!(
                "{}:{}:{}",
                state.instance_id, state.execution_id, state.next_task_id
            )
        };
        match InstanceId::new(id) {
            Ok(id) => self.call_sub_orchestration_with_id(name, id, input),
            Err(e) => DurableFuture::ready(self.clone(), Err(e.into())),
        }
    }

    /// Starts a sub-orchestration with the given instance id.
    pub fn call_sub_orchestration_with_id<T: DeserializeOwned>(
        &self,
        name: impl Into<String>,
        instance_id: InstanceId,
        input: &impl Serialize,
    ) -> DurableFuture<T> {
        let name = name.into();
        let input = check_name("sub-orchestration", &name)
            .and_then(|()| to_payload(input, || format!("input of sub-orchestration '{name}'")));
        let input = match input {
            Ok(v) => v,
            Err(e) => return DurableFuture::ready(self.clone(), Err(e)),
        };
        let id = self.lock().schedule(Action::SubOrchestration {
            id: 0,
            name: name.clone(),
            instance_id: instance_id.clone(),
            input,
        });
        DurableFuture::task(self.clone(), id, TaskKind::SubOrchestration(name, instance_id))
    }

    /// Ends this execution and starts a new one of the same instance with
    /// `input` and a fresh history. The stream continues across executions.
    ///
    /// Events raised to the instance that this execution has not taken
    /// (raised before anyone waited for them, or while it was ending) are
    /// kept for the next execution, in the order they arrived, as Durable
    /// Task does by default; use
    /// [`continue_as_new_with`](Self::continue_as_new_with) to drop them.
    ///
    /// Return the awaited result from the orchestration:
    /// `return ctx.continue_as_new(&next).await;`
    pub fn continue_as_new<T>(&self, input: &impl Serialize) -> ContinueAsNew<T> {
        self.continue_as_new_with(input, ContinueAsNewOptions::new())
    }

    /// Continues as new like [`continue_as_new`](Self::continue_as_new),
    /// with options.
    ///
    /// ```
    /// use durable_core::{ContinueAsNewOptions, OrchestrationContext, OrchestrationError};
    ///
    /// async fn poll(ctx: OrchestrationContext, round: u32) -> Result<u32, OrchestrationError> {
    ///     // Events raised meanwhile are stale for the next round.
    ///     let fresh = ContinueAsNewOptions::new().preserve_unprocessed_events(false);
    ///     ctx.continue_as_new_with(&(round + 1), fresh).await
    /// }
    /// ```
    pub fn continue_as_new_with<T>(
        &self,
        input: &impl Serialize,
        options: ContinueAsNewOptions,
    ) -> ContinueAsNew<T> {
        let mut state = self.lock();
        match Payload::new(input) {
            Ok(v) => state.continue_as_new = Some((v, options)),
            Err(e) => {
                if state.fatal.is_none() {
                    state.fatal = Some(FailureDetails::new(
                        "Serialization",
                        format!("could not serialize the continue-as-new input: {e}"),
                    ));
                }
            }
        }
        ContinueAsNew(PhantomData)
    }

    /// Takes the events raised that no wait took, in arrival order.
    pub(crate) fn take_unprocessed_events(&self) -> Vec<(String, Payload)> {
        self.lock().buffered_events.drain(..).collect()
    }

    /// Replaces the custom status, a small JSON snapshot clients can read
    /// while the instance runs.
    ///
    /// # Errors
    ///
    /// [`OrchestrationError::CustomStatusTooLarge`] if the serialized status
    /// exceeds the cap (16 KiB of UTF-16 by default); the previous status
    /// stays and the instance keeps running.
    pub fn set_custom_status(&self, status: &impl Serialize) -> Result<(), OrchestrationError> {
        let text = serde_json::to_string(status).map_err(|e| OrchestrationError::Serialization {
            what: "custom status".into(),
            message: e.to_string(),
        })?;
        let mut state = self.lock();
        let limits = state.limits;
        let size = limits.custom_status_measure.measure(&text);
        if size > limits.custom_status_max_bytes {
            return Err(OrchestrationError::CustomStatusTooLarge {
                size,
                limit: limits.custom_status_max_bytes,
                measure: limits.custom_status_measure.name(),
            });
        }
        if state.custom_status.as_deref() != Some(text.as_str()) {
            state.custom_status = Some(text);
            state.custom_status_changed = true;
        }
        Ok(())
    }

    /// Appends an event to the instance's stream.
    ///
    /// The event is stored in the same transaction as this turn, exactly
    /// once: replay does not append it again. Events get sequence numbers
    /// 1, 2, 3, ... per instance, in emit order, across continue-as-new.
    ///
    /// # Errors
    ///
    /// [`OrchestrationError::EventTooLarge`] if the serialized payload
    /// exceeds the per-event cap (64 KiB by default),
    /// [`OrchestrationError::InvalidName`] for an empty name, one longer
    /// than [`MAX_NAME_LEN`](crate::MAX_NAME_LEN) bytes or one with a
    /// control character. Nothing is appended then.
    pub fn emit_event(&self, name: &str, payload: &impl Serialize) -> Result<(), OrchestrationError> {
        check_name("stream event", name)?;
        let payload = Payload::new(payload).map_err(|e| OrchestrationError::Serialization {
            what: format!("payload of stream event '{name}'"),
            message: e.to_string(),
        })?;
        let mut state = self.lock();
        let limit = state.limits.stream_event_max_bytes;
        if payload.as_str().len() > limit {
            return Err(OrchestrationError::EventTooLarge {
                name: name.into(),
                size: payload.as_str().len(),
                limit,
            });
        }
        let emit_index = state.next_emit_index;
        state.next_emit_index += 1;
        if emit_index >= state.persisted_emits {
            let emitted_at = state.orchestration_time();
            state.emits.push(PendingEmit {
                emit_index,
                name: name.to_owned(),
                payload,
                emitted_at,
            });
        }
        Ok(())
    }
}

/// Fails with [`OrchestrationError::InvalidName`] for a name the runtime
/// refuses (see [`MAX_NAME_LEN`](crate::MAX_NAME_LEN)).
fn check_name(what: &'static str, name: &str) -> Result<(), OrchestrationError> {
    match name_problem(name) {
        Some(reason) => Err(OrchestrationError::InvalidName {
            what,
            name: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

fn to_payload(value: &impl Serialize, what: impl FnOnce() -> String) -> Result<Payload, OrchestrationError> {
    Payload::new(value).map_err(|e| OrchestrationError::Serialization {
        what: what(),
        message: e.to_string(),
    })
}
