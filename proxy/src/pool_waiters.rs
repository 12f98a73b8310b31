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
}

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
