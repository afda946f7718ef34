//! Instance creations written together.
//!
//! Each creation is a transaction of its own on the one writer connection,
//! so a client starting many instances at once would wait for as many
//! syncs of the database, one after another, behind the worker's commits
//! as well. Instead a creation joins a queue; whoever gets the writer next
//! takes every creation waiting and writes them in one transaction, then
//! answers each (group commit).

use std::sync::Mutex;

use tokio::sync::oneshot;

use crate::store::{CreateOutcome, NewInstance, StoreResult};

/// A creation waiting for the writer.
pub(super) struct Waiting {
    pub(super) instance: NewInstance,
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
pub(super) struct Creations {
    queue: Mutex<Vec<Waiting>>,
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting")
            .field("instance_id", &self.instance.instance_id)
            .finish_non_exhaustive()
    }
}

impl Creations {
    /// Queues `instance`; the receiver gets its outcome once written.
    pub(super) fn push(&self, instance: NewInstance) -> oneshot::Receiver<StoreResult<CreateOutcome>> {
        let (answer, answered) = oneshot::channel();
        self.lock().push(Waiting { instance, answer });
        answered
    }

    /// Every creation waiting, oldest first.
    pub(super) fn take(&self) -> Vec<Waiting> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Waiting>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}
