//! A pool's housekeeping, called about once a second: closing idle connections that aged out
//! and opening the ones `min_idle` asks for.

use super::{CheckoutError, Manager, Pool, Slot};
use std::collections::VecDeque;

impl<M: Manager> Pool<M> {
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
