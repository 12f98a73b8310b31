//! Session state changes outside the command loop: the policy view (login, RESET, reload), the
//! MULTI/WATCH section a command opens or closes, aborting a refused transaction, and giving a
//! pinned connection back.

use super::govern::{self, GovCtx, Pending};
use super::initial_identity;
use super::session::{Active, Session};

impl Session {
    /// (Re)build the policy view for the current user (after login or RESET).
    pub(super) fn refresh_gov(&mut self) {
        let snap = self.shared.live.load();
        let g = &self.shared.governance;
        let roles = self.user.as_ref().map(|u| u.roles.clone()).unwrap_or_default();
        self.gov = GovCtx::new(&snap.policy, &self.route.name, &roles, g);
        self.policy_seen = Some(snap.policy.clone());
        let was =
            std::mem::replace(&mut self.per_reply, self.gov.as_ref().is_some_and(|g| g.resolver.is_some() || g.audit));
        match (was, self.per_reply) {
            // Replies already requested have no entry: give them empty ones, in order.
            (false, true) => {
                for _ in 0..self.outstanding + self.batch_n as usize {
                    self.pending.push_back(Pending { plan: None, audit: None, started: std::time::Instant::now() });
                }
            }
            (true, false) => self.pending.clear(),
            _ => {}
        }
        let user = self.user.as_ref().map_or("default", |u| u.name.as_str());
        self.audit_prefix = govern::audit_prefix(&self.route.name, &self.peer.to_string(), user, &roles);
    }

    /// Give a pinned connection back once its section is over and all its replies are in.
    pub(super) fn maybe_release(&mut self) {
        if !self.in_section() && !self.busy() {
            if let Some(c) = self.pinned.take() {
                self.rr.release_pinned(c);
            }
            self.active = Active::Shared;
        }
    }

    pub(super) fn cleanup(&mut self) {
        self.flush_audit();
        for (kind, name) in self.subs.drain() {
            self.rr.hub.unsubscribe(kind, &name, self.id);
        }
        if let Some(c) = self.pinned.take() {
            if !self.in_section() && self.outstanding == 0 {
                self.rr.release_pinned(c);
            }
            // Otherwise dropped: a transaction, WATCH or blocked command dies with its socket.
        }
    }

    pub(super) fn track_section(&mut self, name: &[u8]) {
        match name {
            b"MULTI" => self.in_multi = true,
            b"EXEC" | b"DISCARD" => {
                self.in_multi = false;
                self.watching = false;
            }
            b"WATCH" if !self.in_multi => self.watching = true,
            b"UNWATCH" if !self.in_multi => self.watching = false,
            _ => {}
        }
    }

    /// End a transaction that EXECABORT refused: nothing is in flight (EXEC waited behind the
    /// barrier), so the pinned connection, still inside MULTI upstream, is closed, which
    /// discards the queued commands.
    pub(super) fn abort_multi(&mut self) {
        self.pinned = None;
        self.active = Active::Shared;
        self.in_multi = false;
        self.watching = false;
        self.multi_plans.clear();
        self.multi_failed = false;
    }

    /// Reset to a fresh connection's state (RESET).
    pub(super) fn reset_state(&mut self) {
        for (kind, name) in self.subs.drain() {
            self.rr.hub.unsubscribe(kind, &name, self.id);
        }
        if let Some(c) = self.pinned.take() {
            drop(c); // may hold MULTI/WATCH state: close it rather than clean it
        }
        self.in_multi = false;
        self.multi_plans.clear();
        self.multi_failed = false;
        self.watching = false;
        self.active = Active::Shared;
        self.db = self.rr.target.db;
        self.proto = 2;
        self.name = None;
        let (authed, user) = initial_identity(&self.shared.live.load());
        self.authed = authed;
        self.user = user;
        self.refresh_gov();
    }
}
