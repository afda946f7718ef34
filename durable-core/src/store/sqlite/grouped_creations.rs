//! Instance creations written together.
//!
//! Each creation is a transaction of its own on the one writer connection,
//! so a client starting many instances at once would wait for as many
//! syncs of the database, one after another, behind the worker's commits
//! as well. Instead a creation joins a queue, and one task (started by the
//! first creation that finds none running) waits for the writer, takes
//! every creation waiting, writes them in one transaction and answers
//! each (group commit), until the queue is empty. The task is nobody's
//! caller: a client that stops waiting for its answer stops neither its
//! own creation nor the others written with it.

use std::sync::Mutex;

use tokio::sync::oneshot;

use crate::store::{CreateOutcome, NewInstance, StoreResult};

/// A creation waiting for the writer.
pub(super) struct Waiting {
    pub(super) instance: NewInstance,
    /// Its place in the order of arrival.
    arrival: u64,
    answer: oneshot::Sender<StoreResult<CreateOutcome>>,
}

impl Waiting {
    /// Answers the caller (who may have stopped waiting).
    pub(super) fn answer(self, outcome: StoreResult<CreateOutcome>) {
        let _ = self.answer.send(outcome);
    }
}

/// The creations waiting for the writer.
#[derive(Debug, Default)]
pub(super) struct GroupedCreations {
    queue: Mutex<Queue>,
}

#[derive(Debug, Default)]
struct Queue {
    waiting: Vec<Waiting>,
    /// Whether a task writes the queue.
    writing: bool,
    /// How many creations have arrived.
    arrivals: u64,
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting")
            .field("instance_id", &self.instance.instance_id)
            .finish_non_exhaustive()
    }
}

impl GroupedCreations {
    /// Queues `instance`; the receiver gets its outcome once written. True
    /// if no task writes the queue: the caller starts one, which takes the
    /// queue over with [`CreationWriter::new`].
    pub(super) fn push(
        &self,
        instance: NewInstance,
    ) -> (oneshot::Receiver<StoreResult<CreateOutcome>>, bool) {
        let (answer, answered) = oneshot::channel();
        let mut queue = self.lock();
        queue.arrivals += 1;
        let arrival = queue.arrivals;
        queue.waiting.push(Waiting {
            instance,
            arrival,
            answer,
        });
        let start = !queue.writing;
        queue.writing = true;
        (answered, start)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The task that writes the queue, while it runs.
pub(super) struct CreationWriter<'a> {
    creations: &'a GroupedCreations,
    /// Whether it found the queue empty and stopped.
    stopped: bool,
}

impl<'a> CreationWriter<'a> {
    pub(super) fn new(creations: &'a GroupedCreations) -> Self {
        Self {
            creations,
            stopped: false,
        }
    }

    /// How many creations have arrived so far: taken before the writer is
    /// asked for, it tells the creations that arrived before the attempt.
    pub(super) fn arrivals(&self) -> u64 {
        self.creations.lock().arrivals
    }

    /// Puts back, first in line, creations taken that arrived after
    /// `arrivals`: an attempt to get the writer that failed had begun
    /// before them, and says nothing of their chances.
    pub(super) fn put_back_after(&mut self, arrivals: u64, taken: &mut Vec<Waiting>) {
        let (later, earlier): (Vec<Waiting>, Vec<Waiting>) = std::mem::take(taken)
            .into_iter()
            .partition(|w| w.arrival > arrivals);
        *taken = earlier;
        if !later.is_empty() {
            let mut queue = self.creations.lock();
            let newer = std::mem::take(&mut queue.waiting);
            queue.waiting = later.into_iter().chain(newer).collect();
        }
    }

    /// Whether creations wait; if none does, the task stops (the next
    /// creation starts another) and this says so.
    pub(super) fn any_waiting(&mut self) -> bool {
        let mut queue = self.creations.lock();
        if queue.waiting.is_empty() {
            queue.writing = false;
            self.stopped = true;
            return false;
        }
        true
    }

    /// Every creation waiting, oldest first. None: the queue is empty,
    /// and the task stops (the next creation starts another).
    pub(super) fn take(&mut self) -> Vec<Waiting> {
        let mut queue = self.creations.lock();
        let waiting = std::mem::take(&mut queue.waiting);
        if waiting.is_empty() {
            queue.writing = false;
            self.stopped = true;
        }
        waiting
    }
}

impl Drop for CreationWriter<'_> {
    fn drop(&mut self) {
        if !self.stopped {
            // The task was stopped (its runtime shut down): the next
            // creation starts another, which takes what waits.
            self.creations.lock().writing = false;
        }
    }
}
