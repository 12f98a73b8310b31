//! CancelRequest routing: each client gets a dgf-made backend key; a cancel for that key is
//! sent to whichever server connection is running the client's query at that moment.

use super::backend::{send_cancel, PgTarget};
use dashmap::DashMap;
use std::sync::{Arc, Mutex};

/// A server connection's upstream and backend key (pid, secret).
type CancelTarget = (Arc<PgTarget>, (i32, i32));

/// What a client's cancel key points at right now, and whether a cancel was sent there.
#[derive(Default)]
pub struct CancelSlot {
    /// The target, and whether a cancel was forwarded to it since it was set.
    current: Mutex<(Option<CancelTarget>, bool)>,
    /// Unique in this process (never reused, unlike an address): the session's id.
    id: u64,
    /// Set by a cancel that finds no server connection (the client may be waiting for one),
    /// cleared when a wait starts; the waiting checkout's waker.
    wait_cancelled: std::sync::atomic::AtomicBool,
    waiter: futures_util::task::AtomicWaker,
}

impl CancelSlot {
    /// The id of the session this slot belongs to (unique in the process).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The client got a server connection with this backend key.
    pub fn set(&self, target: Arc<PgTarget>, key: (i32, i32)) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = (Some((target, key)), false);
    }
    /// The client released its server connection. Returns whether a cancel was forwarded to
    /// it meanwhile: that cancel may still be on its way (or reach the server after the
    /// statement it was meant for ended), so the connection must not serve another client,
    /// whose statement it would cancel.
    #[must_use = "a connection a cancel was sent to must be closed"]
    pub fn clear(&self) -> bool {
        std::mem::take(&mut *self.current.lock().unwrap_or_else(|p| p.into_inner())).1
    }
    /// A wait for a server connection starts: a cancel from before it does not count.
    pub fn start_wait(&self) {
        self.wait_cancelled.store(false, std::sync::atomic::Ordering::Relaxed);
    }
    /// Whether a cancel arrived since [`start_wait`](Self::start_wait); otherwise `waker` is
    /// woken when one does.
    pub fn poll_cancelled(&self, waker: &std::task::Waker) -> bool {
        self.waiter.register(waker);
        self.wait_cancelled.load(std::sync::atomic::Ordering::Acquire)
    }
    /// The target for a cancel, marked as cancelled.
    fn fire(&self) -> Option<CancelTarget> {
        let mut g = self.current.lock().unwrap_or_else(|p| p.into_inner());
        g.1 |= g.0.is_some();
        g.0.clone()
    }
}

/// All live client keys.
#[derive(Default)]
pub struct CancelRegistry {
    keys: DashMap<i32, (i32, Arc<CancelSlot>)>,
}

/// Removes the key when the client goes away.
pub struct KeyGuard {
    registry: Arc<CancelRegistry>,
    pid: i32,
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        self.registry.keys.remove(&self.pid);
    }
}

impl CancelRegistry {
    /// A fresh, unique key for a new client.
    pub fn register(self: &Arc<Self>) -> (i32, i32, Arc<CancelSlot>, KeyGuard) {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let slot = Arc::new(CancelSlot { id, ..CancelSlot::default() });
        loop {
            let pid = rand::random::<i32>() & 0x7fff_ffff;
            if pid == 0 {
                continue;
            }
            let secret = rand::random::<i32>();
            if let dashmap::Entry::Vacant(v) = self.keys.entry(pid) {
                v.insert((secret, slot.clone()));
                return (pid, secret, slot, KeyGuard { registry: self.clone(), pid });
            }
        }
    }

    /// Forward a cancel if the key is valid and its client is running something. Returns
    /// whether a cancel was sent.
    pub async fn cancel(&self, pid: i32, secret: i32) -> bool {
        let target = match self.keys.get(&pid) {
            Some(e) if e.0 == secret => e.1.fire(),
            _ => None,
        };
        let Some((target, key)) = target else {
            // No server connection: wake the checkout the client may be waiting in.
            if let Some(e) = self.keys.get(&pid).filter(|e| e.0 == secret) {
                e.1.wait_cancelled.store(true, std::sync::atomic::Ordering::Release);
                e.1.waiter.wake();
            }
            return false;
        };
        match send_cancel(&target, key).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "forwarding cancel request failed");
                false
            }
        }
    }

    /// Number of registered keys (= connected Postgres clients).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no client is connected.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}
