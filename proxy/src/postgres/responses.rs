//! Server-to-client half of a Postgres session: frames each server message, keeps the
//! pending-request queue in step, applies masking / row caps, and forwards or swallows.

use super::backend::MAX_SERVER_MESSAGE;
use super::prepared::Pending;
use super::relay::{Session, TRACKED};
use super::SessionError;
use dgf_protocols::postgres::frame::frame_len;
use dgf_protocols::postgres::messages::{self, btag, ErrorFields};

impl Session {
    pub(super) fn on_server_data(&mut self) -> Result<(), SessionError> {
        let before = self.cout.len();
        let Some(server) = self.server.as_mut() else { return Ok(()) };
        // Messages are handled in place and consumed with one `advance` at the end: splitting
        // each off would turn the buffer into shared storage and cost an atomic per message.
        let mut rbuf = std::mem::take(&mut server.rbuf);
        let mut at = 0;
        let result = loop {
            let n = match frame_len(&rbuf[at..], MAX_SERVER_MESSAGE) {
                Ok(Some(n)) => n,
                Ok(None) => break Ok(()),
                Err(e) => {
                    if let Some(server) = self.server.as_mut() {
                        server.mark_broken();
                    }
                    break Err(SessionError::Upstream(e.to_string()));
                }
            };
            let handled = self.on_server_message(&rbuf[at..at + n]);
            at += n;
            if handled.is_err() || self.server.is_none() {
                break handled;
            }
        };
        // What is left (a partial message) goes back for the next read; if the connection was
        // let go, so is what it still had buffered.
        if let Some(server) = self.server.as_mut() {
            bytes::Buf::advance(&mut rbuf, at);
            server.rbuf = rbuf;
        }
        self.route.metrics.bytes_out.inc_by((self.cout.len().saturating_sub(before)) as u64);
        result
    }

    fn on_server_message(&mut self, raw: &[u8]) -> Result<(), SessionError> {
        let t = raw[0];
        let body = &raw[5..];
        let internal = matches!(self.pending.front(), Some(Pending::Query { internal: true }));
        let txn = self.txn;
        let server =
            self.server.as_mut().ok_or_else(|| SessionError::Protocol("server message without server".into()))?;
        let mut forward = !internal;
        match t {
            btag::PARSE_COMPLETE => {
                if let Some(Pending::Parse { swallow, .. }) = self.pending.pop_front() {
                    forward = !swallow;
                }
            }
            btag::COPY_IN => {
                // The COPY at the front started: until the client's CopyDone/CopyFail the server
                // ignores Sync. Forget the Syncs sent since (up to a CopyEnd marker, if the
                // client already ended the copy), or stop counting new ones (`copy_in`).
                self.copy_in = true;
                let mut i = 1;
                while i < self.pending.len() {
                    match self.pending[i] {
                        Pending::Sync => drop(self.pending.remove(i)),
                        Pending::CopyEnd => {
                            self.pending.remove(i);
                            self.copy_in = false;
                            break;
                        }
                        _ => i += 1,
                    }
                }
            }
            btag::NOTIFICATION if txn => {
                // A transaction-mode connection is shared: a notification belongs to whoever
                // ran LISTEN on it, not to the client using it now. Never forwarded; the
                // connection, which holds that LISTEN, is closed when released.
                forward = false;
                server.mark_broken();
            }
            btag::BIND_COMPLETE | btag::CLOSE_COMPLETE => {
                self.pending.pop_front();
            }
            btag::NO_DATA => {
                if let Some(Pending::Describe { swallow, .. }) = self.pending.pop_front() {
                    forward = !swallow;
                }
            }
            btag::ROW_DESCRIPTION if internal => {}
            btag::ROW_DESCRIPTION => match self.pending.front() {
                Some(Pending::Describe { statement: true, .. }) => drop(self.pending.pop_front()),
                Some(&Pending::Describe { statement: false, swallow }) => {
                    self.pending.pop_front();
                    forward = !swallow;
                    self.plan_result(body);
                }
                _ => self.plan_result(body),
            },
            btag::DATA_ROW if !internal && self.gov.plan.is_some() => forward = self.mask_row(raw),
            btag::DATA_ROW if !internal => self.count_row(raw.len()),
            btag::COPY_DATA if !internal => self.count_copy_data(raw.len()),
            btag::COMMAND_COMPLETE | btag::EMPTY_QUERY | btag::PORTAL_SUSPENDED => {
                if self.pending.front() == Some(&Pending::Execute) {
                    self.pending.pop_front();
                }
                if !internal {
                    if let Some(tag) = self.result_done(body, t == btag::PORTAL_SUSPENDED) {
                        self.cout.extend_from_slice(&tag);
                        forward = false;
                    }
                }
                let Some(server) = self.server.as_mut() else { return Ok(()) };
                if t == btag::COMMAND_COMPLETE
                    && (body.starts_with(b"DISCARD ALL\0") || body.starts_with(b"DEALLOCATE ALL\0"))
                {
                    server.prepared.clear();
                }
                if t == btag::COMMAND_COMPLETE && txn && body.starts_with(b"LISTEN\0") {
                    // The LISTEN must not outlive this client's use of the connection.
                    server.mark_broken();
                    if !internal {
                        let msg = "dgf: LISTEN has no effect in transaction pooling mode (notifications are not \
                                   delivered); use a route with pool mode \"session\"";
                        ErrorFields::new("WARNING", "01000", msg).encode_as(btag::NOTICE, &mut self.cout);
                    }
                }
            }
            btag::ERROR => {
                if txn && stale_plan(body) {
                    // A shared statement's plan changed result type (DDL). Which one is not
                    // named: give every statement prepared here a new server-side name, so the
                    // client's re-prepare (asyncpg retries once) takes a fresh plan instead of
                    // meeting this stale one again.
                    self.pg.statements.forget(&server.prepared);
                }
                let mut seen_query = false;
                if self.pending.front() == Some(&Pending::Refusal) {
                    // dgf's own refusal: the client sees its code and message only, not the
                    // PL/pgSQL context of the DO block that carried it.
                    if let Ok(f) = ErrorFields::decode(body) {
                        ErrorFields::new(&f.severity, &f.code, f.message).encode(&mut self.cout);
                        forward = false;
                    }
                }
                while let Some(p) = self.pending.front() {
                    if p.ends_at_ready() {
                        seen_query = true;
                        break;
                    }
                    if let Pending::Parse { id: Some(id), .. } = p {
                        server.prepared.remove(id);
                    }
                    self.pending.pop_front();
                }
                if !seen_query && txn && !self.copy_in && !self.unsynced {
                    // An error outside any request: the server is going away (FATAL). Inside an
                    // extended-protocol batch it is the batch's error: the server now skips to
                    // the client's Sync, and the connection stays with the client until then.
                    server.mark_broken();
                }
                if internal {
                    if let Ok(f) = ErrorFields::decode(body) {
                        tracing::debug!(code = %f.code, message = %f.message, "internal statement failed");
                    }
                } else {
                    let code = error_code(body);
                    if let Some(code) = code {
                        self.route.metrics.error(code);
                    }
                    self.result_error(code);
                }
            }
            btag::READY_FOR_QUERY => {
                server.status = messages::ready_status(body)?;
                if !internal {
                    self.ready();
                }
                let Some(server) = self.server.as_mut() else { return Ok(()) };
                loop {
                    match self.pending.pop_front() {
                        Some(p) if p.ends_at_ready() => break,
                        Some(_) => continue,
                        None => {
                            server.mark_broken();
                            return Err(SessionError::Upstream("unexpected ReadyForQuery".into()));
                        }
                    }
                }
            }
            btag::PARAMETER_STATUS if !internal => {
                let (k, v) = messages::parameter_status(body)?;
                server.params.insert(k.to_owned(), v.to_owned());
                let changed = match self.desired.iter_mut().find(|(dk, _)| dk == k) {
                    Some(e) if e.1 != v => {
                        e.1 = v.to_owned();
                        true
                    }
                    Some(_) => false,
                    None if TRACKED.contains(&k) => {
                        self.desired.push((k.to_owned(), v.to_owned()));
                        true
                    }
                    None => false,
                };
                if changed {
                    // This connection now holds exactly the new expectations.
                    self.params_sig = Session::params_sig(&self.desired);
                    server.synced_for = self.params_sig;
                }
            }
            _ => {}
        }
        if forward {
            // Response hook: masking plugs in here (per row, per plan); unmasked rows pass as bytes.
            self.cout.extend_from_slice(raw);
        }
        self.emit_synthetic();
        Ok(())
    }
}

/// `0A000 cached plan must not change result type`.
fn stale_plan(body: &[u8]) -> bool {
    error_code(body) == Some("0A000")
        && ErrorFields::decode(body).is_ok_and(|f| f.message.contains("cached plan must not change result type"))
}

fn error_code(body: &[u8]) -> Option<&str> {
    let mut b = body;
    while let Some((&t, rest)) = b.split_first() {
        let end = rest.iter().position(|&c| c == 0)?;
        if t == b'C' {
            return std::str::from_utf8(&rest[..end]).ok();
        }
        b = &rest[end + 1..];
    }
    None
}
