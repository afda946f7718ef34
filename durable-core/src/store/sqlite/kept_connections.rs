//! Connections taken from a pool once and kept.
//!
//! sqlx's pool checks every connection it gets back with a round trip to
//! the connection's SQLite thread (a `ping`) before anyone may use it
//! again. Measured here, an insert through the pool took 0.14 ms and the
//! same insert on a connection at hand 0.03 ms: the check cost more than
//! the statement. The store therefore takes its connections from the pool
//! (which opens them with the store's options) and keeps them, handing
//! them out one user at a time.
//!
//! A user that is dropped in the middle of its work (its caller's future
//! was dropped, or its runtime shut down) can leave the connection in a
//! transaction: sqlx's SQLite thread stops running a multi-statement query
//! as soon as nobody reads its results, so a `BEGIN IMMEDIATE ... COMMIT`
//! query may stop before its `COMMIT` (a statement stopped between rows
//! is reset by sqlx, which ends its snapshot). Every user therefore says
//! when it is done with [`KeptConnection::finish`]; a connection given back
//! without that is rolled back before its next user gets it, so that
//! nobody else's statements run inside the transaction it left, and the
//! write lock it holds is let go.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use sqlx::pool::PoolConnection;
use sqlx::{Sqlite, SqliteConnection, SqlitePool};
use tokio::sync::{Semaphore, SemaphorePermit};

/// A connection no one uses.
#[derive(Debug)]
struct Idle {
    conn: PoolConnection<Sqlite>,
    /// Whether its last user finished its work: otherwise it may be inside
    /// a transaction, or in the middle of a read.
    clean: bool,
}

/// Up to `size` connections of `pool`, kept out of it.
#[derive(Debug)]
pub(super) struct KeptConnections {
    pool: SqlitePool,
    idle: Mutex<Vec<Idle>>,
    /// One permit per connection: a user holding one finds an idle
    /// connection or room in the pool for a new one.
    permits: Semaphore,
}

impl KeptConnections {
    /// Keeps up to `size` connections of `pool`, which must allow at least
    /// that many.
    pub(super) fn new(pool: SqlitePool, size: usize) -> Self {
        Self {
            pool,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size),
        }
    }

    /// A connection for one user, waiting while all are in use. The user
    /// calls [`KeptConnection::finish`] once done with it.
    pub(super) async fn get(&self) -> Result<KeptConnection<'_>, sqlx::Error> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let (conn, clean) = match idle {
            Some(Idle { conn, clean }) => (conn, clean),
            None => (self.pool.acquire().await?, true),
        };
        let mut conn = KeptConnection {
            held: self,
            conn: Some(conn),
            discard: Arc::default(),
            finished: false,
            cleaned: false,
            _permit: permit,
        };
        if !clean {
            // Dropped here too, it stays to be cleaned.
            conn.clean().await;
            conn.cleaned = true;
        }
        Ok(conn)
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
pub(super) struct KeptConnection<'a> {
    held: &'a KeptConnections,
    conn: Option<PoolConnection<Sqlite>>,
    /// Set to close the connection instead of keeping it.
    discard: Arc<AtomicBool>,
    /// Whether the user said it is done ([`KeptConnection::finish`]).
    finished: bool,
    /// Whether the connection was cleaned for this user: its last user
    /// stopped in the middle of its work.
    cleaned: bool,
    _permit: SemaphorePermit<'a>,
}

impl KeptConnection<'_> {
    /// Whether the connection's last user stopped in the middle of its
    /// work (its transaction, if any, was rolled back since): what it may
    /// have written was not announced.
    pub(super) fn was_cleaned(&self) -> bool {
        self.cleaned
    }

    /// Gives the connection back after work that ended as the user
    /// wanted: no transaction open, no read half done.
    pub(super) fn finish(mut self) {
        self.finished = true;
    }

    /// Ends the transaction a user that did not finish may have left
    /// open (if its `COMMIT` did not run). The connection's thread runs
    /// commands in order, so whatever the user's last query still did is
    /// done by then.
    async fn clean(&mut self) {
        // An error here says there was no transaction to end.
        let _ = sqlx::query("ROLLBACK").execute(&mut **self).await;
        tracing::debug!("rolled back what the last user of a SQLite connection left");
    }
    /// Closes the connection instead of keeping it: the next user gets a
    /// new one.
    pub(super) fn discard(&self) {
        self.discard.store(true, Ordering::Relaxed);
    }

    /// A switch that does what [`KeptConnection::discard`] does, usable while
    /// the connection is borrowed.
    pub(super) fn discard_switch(&self) -> Arc<AtomicBool> {
        self.discard.clone()
    }
}

impl Deref for KeptConnection<'_> {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        self.conn
            .as_ref()
            .expect("a held connection is present until dropped")
    }
}

impl DerefMut for KeptConnection<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.conn
            .as_mut()
            .expect("a held connection is present until dropped")
    }
}

impl Drop for KeptConnection<'_> {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        if self.discard.load(Ordering::Relaxed) || self.held.permits.is_closed() {
            conn.close_on_drop();
            return;
        }
        let clean = self.finished;
        self.held
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Idle { conn, clean });
    }
}
