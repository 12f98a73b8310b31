//! A pool's housekeeping: called about once a second, closing idle connections that aged out
//! and opening the ones `min_idle` asks for; and the changes of a pool's life (new limits on
//! reload, retiring every connection, closing).

use super::{lifetime_ms, CheckoutError, Handoff, Manager, Pool, PoolSettings, Slot, State};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;

impl<M: Manager> Pool<M> {
    /// Change limits in place (reload). A larger cap lets waiters connect at once; a smaller one
    /// closes idle connections now and busy ones as they come back.
    pub fn update_settings(&self, new: PoolSettings) {
        *self.inner.settings.lock().unwrap_or_else(|p| p.into_inner()) = new.clone();
        self.inner.max_lifetime_ms.store(lifetime_ms(&new), Ordering::Relaxed);
        let mut st = self.inner.state();
        while st.open > new.max && st.idle.pop_front().is_some() {
            st.open -= 1;
            st.closed_total += 1;
        }
        while st.open < new.max {
            let Some(w) = st.waiters.pop_front() else { break };
            self.inner.queued.store(st.waiters.len(), Ordering::Release);
            match w.tx.send(Handoff::Permit(Slot::new(&self.inner))) {
                Ok(()) => {
                    st.open += 1;
                    st.opened_total += 1;
                }
                Err(Handoff::Permit(s)) => s.disarm(),
                Err(_) => unreachable!("sent a permit"),
            }
        }
        self.inner.note_shrink(&st, new.max);
        drop(st);
        self.inner.wake_holders();
    }

    /// Retire every connection open now: idle ones are closed at once, busy ones (and those
    /// still connecting) when they come back, so later checkouts open fresh ones. For an
    /// upstream whose connections all went stale together (a MongoDB primary stepped down).
    /// Returns how many idle connections were closed.
    pub fn retire_all(&self) -> usize {
        self.retire(None).unwrap_or(0)
    }

    /// [`retire_all`](Self::retire_all) on behalf of a connection of `generation`
    /// ([`Pooled::generation`]) that found the upstream stale, unless the pool has moved past
    /// that generation already: then its fresh connections stay, however many older ones
    /// report the same failover. Returns how many idle connections were closed, or `None` when
    /// nothing was retired.
    pub fn retire_generation(&self, generation: u64) -> Option<usize> {
        self.retire(Some(generation))
    }

    fn retire(&self, only: Option<u64>) -> Option<usize> {
        let max = self.inner.settings().max;
        let mut st = self.inner.state();
        let g = &self.inner.generation;
        match only {
            None => drop(g.fetch_add(1, Ordering::AcqRel)),
            Some(from) => g.compare_exchange(from, from + 1, Ordering::AcqRel, Ordering::Acquire).map(drop).ok()?,
        }
        let n = st.close_idle();
        self.inner.note_shrink(&st, max);
        drop(st);
        self.inner.wake_holders();
        Some(n)
    }

    /// Close the pool: idle connections now, busy ones when released; waiters get `Closed`.
    pub fn close(&self) {
        let mut st = self.inner.state();
        st.closed = true;
        st.close_idle();
        st.waiters.clear();
        self.inner.queued.store(0, Ordering::Release);
        self.inner.shrink.store(true, Ordering::Release);
        drop(st);
        self.inner.wake_holders();
    }

    /// Housekeeping, called about once a second: close idle connections past `idle_timeout`
    /// or `max_lifetime` (keeping `min_idle`), and return how many connections to open to
    /// reach `min_idle`.
    pub fn maintain(&self) -> usize {
        let s = self.inner.settings();
        let mut st = self.inner.state();
        if st.closed {
            return 0;
        }
        let mut kept = VecDeque::with_capacity(st.idle.len());
        let mut closed = 0;
        let total_idle = st.idle.len();
        while let Some(i) = st.idle.pop_front() {
            let old = s.max_lifetime.is_some_and(|l| i.created.elapsed() >= l);
            let stale = s.idle_timeout.is_some_and(|t| i.since.elapsed() >= t) && total_idle - closed > s.min_idle;
            if old || stale {
                closed += 1;
            } else {
                kept.push_back(i);
            }
        }
        st.idle = kept;
        st.open -= closed;
        st.closed_total += closed as u64;
        self.inner.note_shrink(&st, s.max);
        let want = s.min_idle.min(s.max).saturating_sub(st.idle.len());
        want.min(s.max - st.open.min(s.max))
    }

    /// Open one connection and park it idle (used to honour `min_idle`).
    pub async fn prefill_one(&self) -> Result<(), CheckoutError<M::Error>> {
        let settings = self.inner.settings();
        let slot = {
            let mut st = self.inner.state();
            if st.closed || st.open >= settings.max {
                return Ok(());
            }
            st.open += 1;
            st.opened_total += 1;
            Slot::new(&self.inner)
        };
        let p = self.connect_with(slot, &settings).await?;
        drop(p);
        Ok(())
    }
}

impl<M: Manager> State<M> {
    /// Close every idle connection; how many there were.
    fn close_idle(&mut self) -> usize {
        let n = self.idle.len();
        self.idle.clear();
        self.open -= n;
        self.closed_total += n as u64;
        n
    }
}
