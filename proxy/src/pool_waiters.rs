//! Checkouts waiting on a full pool: their deadlines, and the one reaper task per pool that
//! expires them (cheaper than a timer per checkout).

use super::{Handoff, Inner, Manager};
use std::sync::atomic::Ordering;
use tokio::sync::oneshot;

/// A checkout waiting for a connection. Deadlines are enforced by one reaper task per pool
/// (`reap`) rather than a timer per waiter: a timer per checkout cost more than the rest of a
/// pool hand-off.
pub(super) struct Waiter<M: Manager> {
    pub(super) deadline: tokio::time::Instant,
    pub(super) tx: oneshot::Sender<Handoff<M>>,
    /// Run by the checkout that hands this waiter a connection, before the hand-over: see
    /// [`Prelude`].
    pub(super) prelude: Option<Prelude<M>>,
}

/// What a waiting checkout asks the releasing one to do with the connection first, in its own
/// turn: typically write the waiter's next request, so the server starts on it at once instead
/// of after the waiter's task gets its turn in a busy event loop (PgBouncer sends a waiting
/// client's query in the same callback that frees the server). Returns how many bytes it
/// wrote (0: nothing done, the waiter does it all). A connection whose prelude wrote something
/// is handed over without the idle check (the server may be answering already), and is closed
/// if the waiter left, or is dropped before claiming it.
pub type Prelude<M> = Box<dyn FnOnce(&mut <M as Manager>::Conn) -> usize + Send>;

/// Expire waiters whose deadline passed and forget those whose checkout was dropped; sleep
/// until the next deadline; stop when nobody waits (the next waiter starts a new reaper).
pub(super) async fn reap<M: Manager>(pool: std::sync::Weak<Inner<M>>) {
    loop {
        let next = {
            let Some(inner) = pool.upgrade() else { return };
            let mut st = inner.state();
            let now = tokio::time::Instant::now();
            let mut next: Option<tokio::time::Instant> = None;
            let waiters = std::mem::take(&mut st.waiters);
            for w in waiters {
                if w.tx.is_closed() {
                    continue;
                }
                if w.deadline <= now {
                    let _ = w.tx.send(Handoff::Expired);
                    continue;
                }
                next = Some(next.map_or(w.deadline, |n| n.min(w.deadline)));
                st.waiters.push_back(w);
            }
            inner.queued.store(st.waiters.len(), Ordering::Release);
            match next {
                Some(at) => at,
                None => {
                    st.reaping = false;
                    return;
                }
            }
        };
        tokio::time::sleep_until(next).await;
    }
}
