//! Connections taken from a pool once and kept.
//!
//! sqlx's pool checks every connection it gets back with a round trip to
//! the connection's SQLite thread (a `ping`) before anyone may use it
//! again. Measured here, an insert through the pool took 0.14 ms and the
//! same insert on a connection at hand 0.03 ms: the check cost more than
//! the statement. The store therefore takes its connections from the pool
//! (which opens them with the store's options) and keeps them, handing
//! them out one user at a time.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sqlx::pool::PoolConnection;
use sqlx::{Sqlite, SqliteConnection, SqlitePool};
use tokio::sync::{Semaphore, SemaphorePermit};

/// Up to `size` connections of `pool`, kept out of it.
#[derive(Debug)]
pub(super) struct Held {
    pool: SqlitePool,
    idle: Mutex<Vec<PoolConnection<Sqlite>>>,
    /// One permit per connection: a user holding one finds an idle
    /// connection or room in the pool for a new one.
    permits: Semaphore,
}

impl Held {
    /// Keeps up to `size` connections of `pool`, which must allow at least
    /// that many.
    pub(super) fn new(pool: SqlitePool, size: usize) -> Self {
        Self {
            pool,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size),
        }
    }

    /// A connection for one user, waiting while all are in use.
    pub(super) async fn get(&self) -> Result<HeldConn<'_>, sqlx::Error> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.pool.acquire().await?,
        };
        Ok(HeldConn {
            held: self,
            conn: Some(conn),
            discard: Arc::default(),
            _permit: permit,
        })
    }

    /// Closes the connections.
    pub(super) async fn close(&self) {
        self.permits.close();
        let idle = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|e| e.into_inner()));
        drop(idle);
        self.pool.close().await;
    }
}

/// A connection in use; it goes back to the idle ones when dropped.
#[derive(Debug)]
pub(super) struct HeldConn<'a> {
    held: &'a Held,
    conn: Option<PoolConnection<Sqlite>>,
    /// Set to close the connection instead of keeping it.
    discard: Arc<AtomicBool>,
    _permit: SemaphorePermit<'a>,
}

impl HeldConn<'_> {
    /// Closes the connection instead of keeping it: the next user gets a
    /// new one.
    pub(super) fn discard(&self) {
        self.discard.store(true, Ordering::Relaxed);
    }

    /// A switch that does what [`HeldConn::discard`] does, usable while
    /// the connection is borrowed.
    pub(super) fn discard_switch(&self) -> Arc<AtomicBool> {
        self.discard.clone()
    }
}

impl Deref for HeldConn<'_> {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        self.conn
            .as_ref()
            .expect("a held connection is present until dropped")
    }
}

impl DerefMut for HeldConn<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.conn
            .as_mut()
            .expect("a held connection is present until dropped")
    }
}

impl Drop for HeldConn<'_> {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        if self.discard.load(Ordering::Relaxed) || self.held.permits.is_closed() {
            conn.close_on_drop();
            return;
        }
        self.held
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn);
    }
}
