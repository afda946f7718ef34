//! Routing: where a message goes along the edges of a graph.

use std::collections::{BTreeMap, VecDeque};

use durable_core::Payload;

use super::{Edge, Graph};
use crate::message::Envelope;
use crate::superstep::payload_of;
use crate::WorkflowError;

/// The messages fan-in barriers hold until each of their sources has sent
/// one: per fan-in edge (by index), per source, in arrival order.
pub(crate) type Barriers = BTreeMap<usize, Vec<VecDeque<Payload>>>;

impl Graph {
    /// Where `message`, sent by node `from` (to `target` alone, if
    /// given), goes along `from`'s outgoing edges, in edge order: the
    /// nodes that accept its type and whose edge's condition holds. A
    /// fan-in keeps it in `barriers` until each of its sources has sent
    /// one. A message of a type no node handles fails the run, and so does
    /// a target no edge from `from` leads to.
    pub(crate) fn route(
        &self,
        from: usize,
        target: Option<&str>,
        message: Envelope,
        barriers: &mut Barriers,
    ) -> Result<Vec<(usize, Envelope)>, WorkflowError> {
        let graph = self;
        if !graph.message_types.contains(message.type_name.as_str()) {
            return Err(WorkflowError::UnknownMessageType {
                executor_id: graph.nodes[from].id.clone(),
                message_type: message.type_name,
            });
        }
        let accepts = |node: usize| graph.nodes[node].accepts.iter().any(|t| *t == message.type_name);
        let wanted = |node: usize| target.is_none_or(|t| graph.nodes[node].id == t);
        let mut reached = false;
        let mut deliveries = Vec::new();
        for (edge_index, edge) in graph.edges.iter().enumerate() {
            match edge {
                Edge::Direct {
                    from: f,
                    to,
                    condition,
                } if *f == from => {
                    if !wanted(*to) || !accepts(*to) {
                        continue;
                    }
                    reached = true;
                    let passes = match condition {
                        Some((message_type, condition)) => {
                            *message_type == message.type_name && condition(&message.payload)
                        }
                        None => true,
                    };
                    if passes {
                        deliveries.push((*to, message.clone()));
                    }
                }
                Edge::Switch {
                    from: f,
                    message_type,
                    cases,
                    default,
                } if *f == from && *message_type == message.type_name => {
                    reached |= cases.iter().any(|(_, n)| wanted(*n)) || default.is_some_and(wanted);
                    let chosen = cases
                        .iter()
                        .find(|(condition, _)| condition(&message.payload))
                        .map(|(_, n)| *n)
                        .or(*default);
                    if let Some(to) = chosen.filter(|n| wanted(*n)) {
                        deliveries.push((to, message.clone()));
                    }
                }
                Edge::FanOut {
                    from: f,
                    targets,
                    selector,
                } if *f == from => {
                    reached |= targets.iter().any(|n| wanted(*n) && accepts(*n));
                    let chosen: Vec<usize> = match selector {
                        Some((message_type, selector)) if *message_type == message.type_name => {
                            let ids: Vec<String> =
                                targets.iter().map(|n| graph.nodes[*n].id.clone()).collect();
                            let picked = selector(&message.payload, &ids);
                            targets
                                .iter()
                                .copied()
                                .filter(|n| picked.iter().any(|id| *id == graph.nodes[*n].id))
                                .collect()
                        }
                        _ => targets.clone(),
                    };
                    for to in chosen {
                        if wanted(to) && accepts(to) {
                            deliveries.push((to, message.clone()));
                        }
                    }
                }
                Edge::FanIn {
                    sources,
                    to,
                    message_type,
                    batch_type,
                } if *message_type == message.type_name && wanted(*to) => {
                    let Some(slot) = sources.iter().position(|s| *s == from) else {
                        continue;
                    };
                    reached = true;
                    let slots = barriers
                        .entry(edge_index)
                        .or_insert_with(|| vec![VecDeque::new(); sources.len()]);
                    slots[slot].push_back(message.payload.clone());
                    if slots.iter().all(|s| !s.is_empty()) {
                        let batch: Vec<Payload> = slots.iter_mut().filter_map(VecDeque::pop_front).collect();
                        let batch = payload_of(&batch)?;
                        deliveries.push((
                            *to,
                            Envelope {
                                type_name: (*batch_type).to_owned(),
                                payload: batch,
                                source: message.source.clone(),
                            },
                        ));
                    }
                }
                _ => {}
            }
        }
        if let (Some(target), false) = (target, reached) {
            return Err(WorkflowError::InvalidTarget {
                executor_id: graph.nodes[from].id.clone(),
                target: target.to_owned(),
                message_type: message.type_name,
            });
        }
        Ok(deliveries)
    }
}
