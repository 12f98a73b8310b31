//! Route-wide pins: upstream connections held outside the pool because a cursor lives on
//! them (getMore/killCursors must reach the same connection) or a transaction runs on them
//! (every command of the transaction goes to the same connection until commit/abort).
//!
//! Drivers do not tie a cursor or a transaction to one of their connections (any pooled
//! driver connection may send the getMore), so pins are keyed by cursor id / lsid for the
//! whole route, not per client session. A pinned connection returns to the pool when its last
//! key goes (cursor exhausted or killed, transaction committed or aborted, or the client that
//! last used the key disconnected, after dgf kills the cursor / aborts the transaction).

use super::backend::MongoManager;
use crate::pool::Pooled;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// A connection held by one or more pins; locked while a request runs on it.
pub type Shared = Arc<AsyncMutex<Pooled<MongoManager>>>;
/// Exclusive use of a pinned connection.
pub type Guard = OwnedMutexGuard<Pooled<MongoManager>>;

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
}

/// All pins of a route.
#[derive(Default)]
pub struct Pins {
    map: Mutex<HashMap<Key, Entry>>,
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
        self.map().insert(key, Entry { conn, owner, ns, txn_number });
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

    /// A cursor-pinned connection that nobody is using right now (never a transaction's), to
    /// run an unrelated command on when the pool is exhausted. Cursors do not stop a
    /// connection from running other commands.
    pub fn borrow_idle(&self) -> Option<(Shared, Guard)> {
        let m = self.map();
        let in_txn: Vec<&Shared> = m.iter().filter(|(k, _)| matches!(k, Key::Txn(_))).map(|(_, e)| &e.conn).collect();
        m.iter()
            .filter(|(k, e)| matches!(k, Key::Cursor(_)) && !in_txn.iter().any(|t| Arc::ptr_eq(t, &e.conn)))
            .find_map(|(_, e)| e.conn.clone().try_lock_owned().ok().map(|g| (e.conn.clone(), g)))
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
