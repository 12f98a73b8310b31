//! Free-tier budgets on the Redis command path: the memory budget and the route's ops/s gate,
//! asked once per command that goes upstream (every command of a pipeline counts).

use super::session::Session;
use crate::shaping::Admit;

/// What the budgets say about one forwarded command.
pub(super) enum Budget {
    /// Forward it.
    Go,
    /// Leave it unread for now: its ops/s slot is in the future, or it must be refused but
    /// replies are still owed to the client (a refusal is answered in order).
    Stall,
    /// Answer with this error (`OOM ...` or `ERR dgf: ops/s budget ...`).
    Refuse(String),
}

impl Session {
    /// Check the memory budget, then take an ops/s slot.
    pub(super) fn budgets(&mut self, name: &[u8]) -> Budget {
        let busy = self.busy();
        if self.rr.memory.refuses(name) {
            return if busy { Budget::Stall } else { Budget::Refuse(self.rr.memory.refusal()) };
        }
        match self.gate.admit(&self.route.shaper, busy) {
            Admit::Go => Budget::Go,
            Admit::Stall => Budget::Stall,
            Admit::Refused(e) => Budget::Refuse(format!("ERR dgf: {e}")),
        }
    }
}
