//! Commits announced across processes with `LISTEN`/`NOTIFY`.
//!
//! Every process sends its announcements from one task: what commits while
//! a `pg_notify` is in flight is coalesced into the next one, so writers
//! never wait for the notification queue's lock, and a busy process sends
//! far fewer notifications than it commits transactions. Every process
//! listens on the same channel and wakes its own workers and watchers;
//! it ignores its own announcements (it woke them already).

use std::collections::BTreeSet;
use std::sync::Weak;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgListener, PgPool};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::store::ChangeFeed;
use crate::InstanceId;

/// Announcements carry at most this many bytes of instance ids; a larger
/// change wakes every watcher instead (`NOTIFY` payloads are limited to
/// 8,000 bytes).
const MAX_IDS_BYTES: usize = 6_000;

/// What a commit changed.
#[derive(Debug, Clone, Default)]
pub(super) struct Change {
    /// Instances whose stream or status changed.
    pub(super) instances: Vec<InstanceId>,
    /// Orchestration messages became visible.
    pub(super) orchestration_work: bool,
    /// Unclaimed activity work items were added or released.
    pub(super) activity_work: bool,
    /// A message was written that becomes visible later (a timer).
    pub(super) later: bool,
}

impl Change {
    /// New orchestration work, for `instance` if given.
    pub(super) fn work(instance: Option<InstanceId>) -> Self {
        Self {
            instances: instance.into_iter().collect(),
            orchestration_work: true,
            ..Self::default()
        }
    }

    /// A change of one instance's stream or status.
    pub(super) fn instance(instance: InstanceId) -> Self {
        Self {
            instances: vec![instance],
            ..Self::default()
        }
    }

    /// What a commit's `wake` says.
    pub(super) fn of(wake: &crate::store::sql::plan::Wake<'_>) -> Self {
        Self {
            instances: wake.instances.iter().map(|id| (*id).clone()).collect(),
            orchestration_work: wake.orchestrations,
            activity_work: wake.activities,
            later: wake.later,
        }
    }

    fn is_empty(&self) -> bool {
        self.instances.is_empty() && !self.orchestration_work && !self.activity_work && !self.later
    }
}

/// The announcement on the wire.
#[derive(Debug, Serialize, Deserialize)]
struct Announcement {
    /// The announcing process.
    o: String,
    /// Orchestration work.
    #[serde(default)]
    w: bool,
    /// Activity work.
    #[serde(default)]
    a: bool,
    /// A message that becomes visible later.
    #[serde(default)]
    t: bool,
    /// The instances that changed; `None` for "any instance".
    i: Option<BTreeSet<String>>,
}

/// Sends this process's announcements, coalesced.
#[derive(Debug)]
pub(super) struct Notifier {
    tx: mpsc::UnboundedSender<Change>,
    task: JoinHandle<()>,
}

impl Drop for Notifier {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Notifier {
    pub(super) fn start(pool: PgPool, channel: String, origin: String) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(send_loop(pool, channel, origin, rx));
        Self { tx, task }
    }

    /// Queues an announcement.
    pub(super) fn send(&self, change: Change) {
        if !change.is_empty() {
            let _ = self.tx.send(change);
        }
    }
}

async fn send_loop(pool: PgPool, channel: String, origin: String, mut rx: mpsc::UnboundedReceiver<Change>) {
    while let Some(first) = rx.recv().await {
        let mut payload = Announcement {
            o: origin.clone(),
            w: false,
            a: false,
            t: false,
            i: Some(BTreeSet::new()),
        };
        let mut bytes = 0;
        let mut add = |payload: &mut Announcement, change: Change| {
            payload.w |= change.orchestration_work;
            payload.a |= change.activity_work;
            payload.t |= change.later;
            if let Some(ids) = &mut payload.i {
                for id in change.instances {
                    bytes += id.as_str().len() + 3;
                    ids.insert(String::from(id));
                }
                if bytes > MAX_IDS_BYTES {
                    payload.i = None;
                }
            }
        };
        add(&mut payload, first);
        while let Ok(more) = rx.try_recv() {
            add(&mut payload, more);
        }
        let Ok(text) = serde_json::to_string(&payload) else {
            continue;
        };
        if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(&channel)
            .bind(text)
            .execute(&pool)
            .await
        {
            tracing::warn!(error = %e, "could not announce a commit to other processes");
        }
    }
}

fn wake_all(feed: &ChangeFeed) {
    feed.notify_orchestration_work();
    feed.notify_activity_work();
    feed.notify_wakeup();
    feed.notify_all_instances();
}

fn apply(feed: &ChangeFeed, text: &str, origin: &str) {
    let Ok(payload) = serde_json::from_str::<Announcement>(text) else {
        tracing::warn!(payload = text, "ignoring a malformed change announcement");
        return;
    };
    if payload.o == origin {
        return;
    }
    if payload.w {
        feed.notify_orchestration_work();
    }
    if payload.a {
        feed.notify_activity_work();
    }
    if payload.t {
        feed.notify_wakeup();
    }
    match payload.i {
        None => feed.notify_all_instances(),
        Some(ids) => {
            for id in ids {
                if let Ok(id) = InstanceId::new(id) {
                    feed.notify_instance(&id);
                }
            }
        }
    }
}

/// Listens for other processes' announcements and wakes this process's
/// workers and watchers, until the store is dropped.
pub(super) async fn run(pool: PgPool, channel: String, origin: String, feed: Weak<ChangeFeed>) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(error = %e, "could not connect to listen for changes; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(&channel).await {
            tracing::warn!(error = %e, "could not listen for changes; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        // Announcements may have been missed while not listening.
        let mut missed = true;
        loop {
            let Some(live) = feed.upgrade() else {
                return;
            };
            if missed {
                wake_all(&live);
                missed = false;
            }
            drop(live);
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    let Some(live) = feed.upgrade() else {
                        return;
                    };
                    apply(&live, notification.payload(), &origin);
                }
                // The connection was lost; the listener reconnects on the
                // next call.
                Ok(None) => missed = true,
                Err(e) => {
                    tracing::warn!(error = %e, "lost the change listener; reconnecting");
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
