//! The server connection a MongoDB session holds for one command: a pooled one, or one pinned
//! to a cursor or transaction.

use super::super::backend::{MongoConn, MongoManager};
use super::super::pins;
use crate::pool::Pooled;
use std::sync::Arc;
use tokio::sync::Mutex as AsyncMutex;

/// A server connection in use for one command.
pub(super) enum Lease {
    Pool(Pooled<MongoManager>),
    Pinned(pins::Shared, pins::Guard),
}

impl Lease {
    pub(super) fn conn(&mut self) -> &mut MongoConn {
        match self {
            Lease::Pool(p) => p,
            Lease::Pinned(_, g) => g,
        }
    }
    pub(super) fn generation(&self) -> u64 {
        match self {
            Lease::Pool(p) => p.generation(),
            Lease::Pinned(_, g) => g.generation(),
        }
    }
    pub(super) fn broken(&mut self, pins: &pins::Pins) {
        match self {
            Lease::Pool(p) => p.mark_broken(),
            Lease::Pinned(s, g) => {
                g.mark_broken();
                pins.remove_conn(s);
            }
        }
    }
    /// The shared handle, pinning a pool connection if needed.
    pub(super) fn into_shared(self) -> pins::Shared {
        match self {
            Lease::Pool(p) => Arc::new(AsyncMutex::new(p)),
            Lease::Pinned(s, _) => s,
        }
    }
}
