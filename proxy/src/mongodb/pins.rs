//! Route-wide pins: upstream connections held outside the pool because a cursor lives on
//! them (getMore/killCursors must reach the same connection) or a transaction runs on them
//! (every command of the transaction goes to the same connection until commit/abort).
//!
//! Drivers do not tie a cursor or a transaction to one of their connections (any pooled
//! driver connection may send the getMore), so pins are keyed by cursor id / lsid for the
//! whole route, not per client session. A pinned connection returns to the pool when its last
//! key goes (cursor exhausted or killed, transaction committed or aborted, or the client that
//! last used the key disconnected, after dgf kills the cursor / aborts the transaction).
//!
//! A cursor pin also carries the cursor's governance ([`CursorGov`]): the dgf user that opened
//! it (nobody else may getMore or kill it), the mask plan of its getMore batches and what is
//! left of a row cap. Keeping these route-wide (not per client connection) means a getMore sent
//! over another driver connection, or after a reload, is still masked and capped.

use super::backend::MongoManager;
use super::govern::MaskPlan;
use crate::pool::{CheckoutError, Pool, Pooled};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{Mutex as AsyncMutex, Notify, OwnedMutexGuard};

/// A connection held by one or more pins; locked while a request runs on it.
pub type Shared = Arc<AsyncMutex<Pooled<MongoManager>>>;

/// Exclusive use of a pinned connection.
pub type Guard = OwnedMutexGuard<Pooled<MongoManager>>;

/// Governance of an open cursor.
#[derive(Clone, Default)]
pub struct CursorGov {
    /// The dgf user that opened the cursor.
    pub user: String,
    /// Mask plan of its batches.
    pub plan: Arc<MaskPlan>,
    /// Documents still allowed under a row cap (`None`: no cap).
    pub remaining: Option<u64>,
    /// The policy `plan` and `remaining` come from (`None`: governance was off).
    pub policy: Option<Arc<dgf_rules::Policy>>,
    /// The user's rules under that policy: a getMore after a reload keeps `plan` and
    /// `remaining` when the new policy's rules for the user are alike (`cursors::gate`).
    pub view: Option<Arc<dgf_rules::RoleView>>,
}

/// A connection for one command: from the pool, or a cursor-pinned one borrowed while idle.
pub enum Checkout {
    /// A pool connection.
    Pooled(Pooled<MongoManager>),
    /// A borrowed pinned connection.
    Borrowed(Shared, Guard),
}

/// What a pin is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// A server cursor id.
    Cursor(i64),
    /// A session (raw `lsid` bytes) inside a transaction.
    Txn(Vec<u8>),
}

/// One pin.
pub struct Entry {
    /// The connection.
    pub conn: Shared,
    /// Client session that last used the key (cleaned up when it disconnects).
    pub owner: u64,
    /// `db.collection` of a cursor; `txnNumber` of a transaction.
    pub ns: Option<String>,
    /// Transaction number.
    pub txn_number: i64,
    /// A cursor's governance.
    pub cursor: Option<CursorGov>,
}

/// All pins of a route.
#[derive(Default)]
pub struct Pins {
    map: Mutex<HashMap<Key, Entry>>,
    notify: Notify,
}

impl Pins {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection pinned for `key`, taking ownership of the key for `owner`.
    pub fn get(&self, key: &Key, owner: u64) -> Option<Shared> {
        let mut m = self.map();
        let e = m.get_mut(key)?;
        e.owner = owner;
        Some(e.conn.clone())
    }

    /// Pin `conn` under `key`.
    pub fn insert(&self, key: Key, conn: Shared, owner: u64, ns: Option<String>, txn_number: i64) {
        self.map().insert(key, Entry { conn, owner, ns, txn_number, cursor: None });
        self.notify.notify_waiters();
    }

    /// Pin `conn` under a new cursor with its governance.
    pub fn insert_cursor(&self, id: i64, conn: Shared, owner: u64, ns: Option<String>, gov: CursorGov) {
        self.map().insert(Key::Cursor(id), Entry { conn, owner, ns, txn_number: 0, cursor: Some(gov) });
        self.notify.notify_waiters();
    }

    /// The governance of an open cursor (`None`: not pinned here).
    pub fn cursor(&self, id: i64) -> Option<CursorGov> {
        self.map().get(&Key::Cursor(id)).and_then(|e| e.cursor.clone())
    }

    /// Record what is left of a cursor's row cap.
    pub fn set_remaining(&self, id: i64, remaining: Option<u64>) {
        if let Some(g) = self.map().get_mut(&Key::Cursor(id)).and_then(|e| e.cursor.as_mut()) {
            g.remaining = remaining;
        }
    }

    /// A connection for a command that needs no particular one: from the pool or, while the
    /// pool is exhausted and `may_borrow` (never for a transaction), a cursor-pinned connection
    /// between two commands of its cursors. Waits up to the pool's wait timeout for whichever
    /// comes first; a borrower queues on the pinned connection's lock like the cursor's own
    /// getMore commands do, so a change stream polling its connection cannot starve it.
    pub async fn checkout(
        &self,
        pool: &Pool<MongoManager>,
        may_borrow: bool,
    ) -> Result<Checkout, CheckoutError<super::backend::BackendError>> {
        if !may_borrow {
            return pool.get().await.map(Checkout::Pooled);
        }
        let wait = pool.settings().wait_timeout;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let pinned = self.notify.notified();
            tokio::pin!(pinned);
            pinned.as_mut().enable();
            let st = pool.stats();
            let candidates = if st.idle == 0 && st.open >= st.max { self.borrowable() } else { Vec::new() };
            for c in &candidates {
                if let Ok(g) = c.clone().try_lock_owned() {
                    return Ok(Checkout::Borrowed(c.clone(), g));
                }
            }
            match candidates.into_iter().next() {
                Some(c) => tokio::select! {
                    r = pool.get() => return r.map(Checkout::Pooled),
                    g = c.clone().lock_owned() => return Ok(Checkout::Borrowed(c, g)),
                    _ = tokio::time::sleep_until(deadline) => return Err(CheckoutError::Timeout(wait)),
                },
                // No cursor holds a connection yet: wait for the pool, or for a new pin.
                None => tokio::select! {
                    r = pool.get() => return r.map(Checkout::Pooled),
                    _ = &mut pinned => {}
                    _ = tokio::time::sleep_until(deadline) => return Err(CheckoutError::Timeout(wait)),
                },
            }
        }
    }

    /// Cursor-pinned connections that no transaction holds (each once).
    fn borrowable(&self) -> Vec<Shared> {
        let m = self.map();
        let in_txn: Vec<&Shared> = m.iter().filter(|(k, _)| matches!(k, Key::Txn(_))).map(|(_, e)| &e.conn).collect();
        let mut out: Vec<Shared> = Vec::new();
        for (k, e) in m.iter() {
            let free = !in_txn.iter().any(|t| Arc::ptr_eq(t, &e.conn)) && !out.iter().any(|o| Arc::ptr_eq(o, &e.conn));
            if matches!(k, Key::Cursor(_)) && free {
                out.push(e.conn.clone());
            }
        }
        out
    }

    /// Drop a pin (the connection returns to the pool once nothing else holds it).
    pub fn remove(&self, key: &Key) -> Option<Entry> {
        self.map().remove(key)
    }

    /// Drop every pin on `conn` (it broke).
    pub fn remove_conn(&self, conn: &Shared) {
        self.map().retain(|_, e| !Arc::ptr_eq(&e.conn, conn));
    }

    /// Remove and return every pin owned by `owner` (its client disconnected).
    pub fn take_owned(&self, owner: u64) -> Vec<(Key, Entry)> {
        let mut m = self.map();
        let keys: Vec<Key> = m.iter().filter(|(_, e)| e.owner == owner).map(|(k, _)| k.clone()).collect();
        keys.into_iter().filter_map(|k| m.remove(&k).map(|e| (k, e))).collect()
    }

    /// Number of pins (for tests and metrics).
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether no pin exists.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
