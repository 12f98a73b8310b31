//! Probing a pool's upstream through a connection that is idle anyway (for `/ready`), without
//! opening one and without counting as a use.

use super::{Manager, Pool};
use std::time::Instant;

impl<M: Manager> Pool<M> {
    /// Health-check one idle connection, if the pool has one right now (never waits, never
    /// opens one): `Some(true)` it answered and goes back to the pool still counted as idle
    /// since its last use (a probe must not keep connections from `idle_timeout`, nor a
    /// scale-to-zero database awake), `Some(false)` it failed and is closed, `None` no idle
    /// connection. For probes that must not add connections or logins on the upstream.
    pub async fn ping_idle(&self) -> Option<bool> {
        let settings = self.inner.settings();
        let (mut p, idle_for) = {
            let mut st = self.inner.state();
            if st.closed {
                return None;
            }
            self.pop_idle(&mut st, &settings)?
        };
        let since = Instant::now().checked_sub(idle_for).unwrap_or_else(Instant::now);
        if !(self.inner.manager.is_alive(&mut p) && self.inner.manager.check(&mut p).await) {
            p.mark_broken();
            return Some(false);
        }
        let (conn, created, slot, generation) = p.into_parts();
        self.inner.clone().put_back(conn, created, slot, Some(since), generation);
        Some(true)
    }
}
