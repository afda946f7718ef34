//! The checks of a simulated run, against what the client was told.

use std::collections::{HashMap, HashSet};

use durable_core::{Client, InstanceId, RuntimeStatus, StreamEvent};

use super::workload::{ChildOutput, MainInput, MainOutput, StepEvent};
use super::{Slot, Watched};

/// Every guarantee the run broke, one line each.
pub async fn check(
    client: &Client,
    slots: &[Slot],
    watched: &[(usize, Option<u64>, usize, Watched)],
) -> Vec<String> {
    let mut violations = Vec::new();
    let mut children = HashSet::new();
    let mut streams = HashMap::new();
    for slot in slots {
        let stream = check_slot(client, slot, &mut children, &mut violations).await;
        streams.insert(slot.id.clone(), stream);
    }
    for (slot, nonce, incarnations_at_start, watched) in watched {
        check_watcher(
            client,
            &slots[*slot],
            *nonce,
            *incarnations_at_start,
            watched,
            &streams,
            &mut violations,
        )
        .await;
    }
    violations
}

/// Reads an instance's whole stream.
async fn read_stream(client: &Client, id: &InstanceId) -> Result<Vec<StreamEvent>, String> {
    let mut events = Vec::new();
    let mut cursor = 0;
    loop {
        let page = client
            .get_events(id, cursor, 1000)
            .await
            .map_err(|e| e.to_string())?;
        if page.events.is_empty() {
            return Ok(events);
        }
        cursor = page.next_cursor;
        events.extend(page.events);
    }
}

/// The nonce of an event of `sim.main`, if it has one.
fn nonce_of(event: &StreamEvent) -> Option<u64> {
    match event.name.as_str() {
        "step" | "late" => event.payload_as::<StepEvent>().ok().map(|s| s.nonce),
        "extra" => event.payload_as::<(u64, u32, u32, u32)>().ok().map(|e| e.0),
        _ => None,
    }
}

async fn check_slot(
    client: &Client,
    slot: &Slot,
    children: &mut HashSet<String>,
    violations: &mut Vec<String>,
) -> Option<Vec<StreamEvent>> {
    let id = &slot.id;
    let meta = match client.get_instance(id).await {
        Ok(meta) => meta,
        Err(e) => {
            violations.push(format!("client: reading {id} failed: {e}"));
            return None;
        }
    };
    let Some(meta) = meta else {
        if !slot.purged && !slot.incarnations.is_empty() {
            violations.push(format!("lost: {id} was started and not purged, and is gone"));
        }
        return None;
    };
    let Ok(input) = meta.input_as::<MainInput>() else {
        violations.push(format!(
            "stream: {id} has an input of another shape: {}",
            meta.input
        ));
        return None;
    };
    let Some(incarnation) = slot.incarnations.iter().find(|i| i.nonce == input.nonce) else {
        violations.push(format!(
            "lost: {id} holds an incarnation (nonce {}) nobody started",
            input.nonce
        ));
        return None;
    };
    if slot.incarnations.last().map(|i| i.nonce) != Some(input.nonce) {
        violations.push(format!(
            "lost: {id} holds an earlier incarnation (nonce {}) than the last one started",
            input.nonce
        ));
    }
    let allowed: HashSet<u64> = incarnation
        .acknowledged
        .iter()
        .chain(&incarnation.maybe)
        .copied()
        .collect();
    let status = meta.status;
    match status {
        RuntimeStatus::Completed | RuntimeStatus::Terminated => {}
        RuntimeStatus::Failed => violations.push(format!(
            "failed: {id} failed: {}",
            meta.failure
                .as_ref()
                .map_or_else(|| "no details".to_owned(), ToString::to_string)
        )),
        other => violations.push(format!(
            "stuck: {id} is {other:?} after the faults stopped ({}; stream of {} events)",
            meta.custom_status.as_ref().map_or("no status", |s| s.as_str()),
            meta.stream_len,
        )),
    }
    if status == RuntimeStatus::Terminated && !incarnation.terminated {
        violations.push(format!("stream: {id} was terminated, and nobody terminated it"));
    }
    let stream = match read_stream(client, id).await {
        Ok(stream) => stream,
        Err(e) => {
            violations.push(format!("client: reading the stream of {id} failed: {e}"));
            return None;
        }
    };
    // Numbered 1, 2, 3, ... and as long as the instance says.
    for (i, event) in stream.iter().enumerate() {
        if event.seq != i as u64 + 1 {
            violations.push(format!(
                "stream: {id} has event {} at position {}",
                event.seq,
                i + 1
            ));
            break;
        }
    }
    if meta.stream_len != stream.len() as u64 {
        violations.push(format!(
            "stream: {id} says its stream holds {} events and it holds {}",
            meta.stream_len,
            stream.len()
        ));
    }
    let steps = input.steps.len() as u32;
    let mut tokens = Vec::new();
    let mut executions: Vec<String> = Vec::new();
    let mut round: Option<u32> = None;
    let mut next_step = 0u32;
    let mut extras = 0u32;
    for event in &stream {
        if let Some(nonce) = nonce_of(event) {
            if nonce != input.nonce {
                violations.push(format!(
                    "splice: the stream of {id} (nonce {}) holds event {} of nonce {nonce}",
                    input.nonce, event.seq
                ));
                break;
            }
        }
        if executions.last() != Some(&event.execution_id) {
            if executions.contains(&event.execution_id) {
                violations.push(format!("stream: {id} has execution {} twice", event.execution_id));
                break;
            }
            if let Some(r) = round {
                if next_step != steps {
                    violations.push(format!(
                        "stream: execution {r} of {id} ended after {next_step} of its {steps} steps"
                    ));
                }
            }
            executions.push(event.execution_id.clone());
            round = None;
            next_step = 0;
        }
        match event.name.as_str() {
            "step" | "late" => {
                let Ok(step) = event.payload_as::<StepEvent>() else {
                    violations.push(format!("stream: event {} of {id} is not a step", event.seq));
                    continue;
                };
                let expected_round = executions.len() as u32 - 1;
                if step.round != expected_round || round.is_some_and(|r| r != step.round) {
                    violations.push(format!(
                        "stream: event {} of {id} is of round {} in execution {expected_round}",
                        event.seq, step.round
                    ));
                }
                round = Some(step.round);
                if event.name == "step" {
                    if step.step != next_step {
                        violations.push(format!(
                            "stream: event {} of {id} is step {} of round {} where step {next_step} was due",
                            event.seq, step.step, step.round
                        ));
                    }
                    if step.what == "emit" && extras != 3 {
                        violations.push(format!(
                            "stream: step {} of round {} of {id} emitted {extras} events, not 3",
                            step.step, step.round
                        ));
                    }
                    next_step = step.step + 1;
                } else if next_step != steps || step.round + 1 != input.rounds {
                    violations.push(format!("stream: {id} received a late event before its last step"));
                }
                extras = 0;
                if let Some(token) = step.token {
                    tokens.push(token);
                }
                if let Some(child) = &step.child {
                    check_child(client, id, child, &step, children, violations).await;
                }
            }
            "extra" => extras += 1,
            other => violations.push(format!("stream: {id} holds an event named {other:?}")),
        }
    }
    let complete = status == RuntimeStatus::Completed;
    if complete && (executions.len() as u32 != input.rounds || next_step != steps) {
        violations.push(format!(
            "stream: {id} completed after {} executions and {next_step} steps of the last, of {} and {steps}",
            executions.len(),
            input.rounds
        ));
    }
    let mut seen = HashSet::new();
    for token in &tokens {
        if !seen.insert(*token) {
            violations.push(format!(
                "duplicate: {id} received the event of token {token} twice"
            ));
        }
        if !allowed.contains(token) {
            violations.push(format!(
                "stream: {id} received token {token}, which nobody raised to it"
            ));
        }
    }
    if complete {
        match meta.output_as::<MainOutput>() {
            Ok(output) => {
                if output.received != tokens {
                    violations.push(format!(
                        "stream: {id} says it received {:?} and its stream says {tokens:?}",
                        output.received
                    ));
                }
                for token in &incarnation.acknowledged {
                    if !output.received.contains(token) {
                        violations.push(format!(
                            "lost: {id} never received the acknowledged token {token}"
                        ));
                    }
                }
            }
            Err(e) => violations.push(format!("stream: the output of {id} cannot be read: {e}")),
        }
    }
    Some(stream)
}

async fn check_child(
    client: &Client,
    parent: &InstanceId,
    child: &str,
    step: &StepEvent,
    children: &mut HashSet<String>,
    violations: &mut Vec<String>,
) {
    if !children.insert(child.to_owned()) {
        violations.push(format!(
            "child: {parent} (round {}, step {}) got the result of {child}, which another call used",
            step.round, step.step
        ));
        return;
    }
    let Ok(child_id) = InstanceId::new(child) else {
        violations.push(format!("child: {parent} names a child of invalid id {child:?}"));
        return;
    };
    match client.get_instance(&child_id).await {
        Ok(Some(meta)) if meta.status == RuntimeStatus::Completed => match meta.output_as::<ChildOutput>() {
            Ok(out) if (out.nonce, out.round, out.step) == (step.nonce, step.round, step.step) => {}
            Ok(out) => violations.push(format!(
                "child: {child} of {parent} round {} step {} now holds the run of round {} step {}: replaced",
                step.round, step.step, out.round, out.step
            )),
            Err(e) => violations.push(format!("child: the output of {child} cannot be read: {e}")),
        },
        Ok(Some(meta)) => violations.push(format!("child: {child} of {parent} is {:?}", meta.status)),
        Ok(None) => violations.push(format!("child: {child} of {parent} is gone")),
        Err(e) => violations.push(format!("client: reading {child} failed: {e}")),
    }
}

async fn check_watcher(
    client: &Client,
    slot: &Slot,
    nonce: Option<u64>,
    incarnations_at_start: usize,
    watched: &Watched,
    streams: &HashMap<InstanceId, Option<Vec<StreamEvent>>>,
    violations: &mut Vec<String>,
) {
    let id = &slot.id;
    let nonces: HashSet<u64> = watched.events.iter().filter_map(nonce_of).collect();
    if nonces.len() > 1 {
        violations.push(format!(
            "splice: a watcher of {id} yielded the events of incarnations {nonces:?}"
        ));
        return;
    }
    let meta = client.get_instance(id).await.ok().flatten();
    let terminal = meta.as_ref().is_some_and(|m| m.status.is_terminal());
    let same = !slot.purged && slot.incarnations.len() == incarnations_at_start && nonce.is_some();
    if watched.timed_out {
        if terminal && same {
            violations.push(format!(
                "watch: a watcher of {id} did not end after the instance finished"
            ));
        }
        return;
    }
    if !(same && terminal) {
        return;
    }
    if let Some(e) = &watched.error {
        violations.push(format!("watch: a watcher of {id} failed: {e}"));
        return;
    }
    let Some(Some(stream)) = streams.get(id) else {
        return;
    };
    let got: Vec<(u64, &str, &str)> = watched
        .events
        .iter()
        .map(|e| (e.seq, e.name.as_str(), e.payload.as_str()))
        .collect();
    let want: Vec<(u64, &str, &str)> = stream
        .iter()
        .map(|e| (e.seq, e.name.as_str(), e.payload.as_str()))
        .collect();
    if got != want {
        violations.push(format!(
            "watch: a watcher of {id} saw {} events where the stream holds {} (first difference at {:?})",
            got.len(),
            want.len(),
            got.iter().zip(&want).position(|(a, b)| a != b)
        ));
    }
}
