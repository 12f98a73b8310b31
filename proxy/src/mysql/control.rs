//! Session-control commands of the MySQL route: COM_INIT_DB (schema switch),
//! COM_RESET_CONNECTION (drop every piece of the client's state for real) and COM_CHANGE_USER
//! (re-authenticate against dgf users, then reset).

use super::login::{auth_exchange, AuthOutcome};
use super::session::{Flow, Session};
use super::SessionError;
use bytes::Bytes;
use dgf_protocols::mysql::consts::{com, errno};
use dgf_protocols::mysql::handshake::parse_change_user;
use dgf_protocols::mysql::packets::ErrPacket;
use dgf_protocols::mysql::response::Expect;

impl Session {
    pub(super) async fn init_db(&mut self, seq: u8, db: &[u8]) -> Result<(), SessionError> {
        let db = String::from_utf8_lossy(db).into_owned();
        if self.server.is_some() {
            let mut p = vec![com::INIT_DB];
            p.extend_from_slice(db.as_bytes());
            if let Some(t) = self.forward(seq, &p, Expect::Ok).await? {
                if t.error.is_none() {
                    self.database = db.clone();
                    if let Some(s) = self.server.as_mut() {
                        s.schema = db;
                    }
                }
            }
            self.maybe_release().await;
            return Ok(());
        }
        // Not tied to a connection: prove the schema exists on a connection of its pool.
        let old = std::mem::replace(&mut self.database, db);
        if self.acquire(seq).await? {
            self.send_ok(seq);
            self.release().await;
        } else {
            self.database = old;
        }
        Ok(())
    }

    /// COM_RESET_CONNECTION / successful COM_CHANGE_USER: forget every piece of session
    /// state, and clean the server connection the client held.
    pub(super) async fn reset_client_state(&mut self) {
        if let Some(s) = self.server.as_mut() {
            if s.pin_worthy() {
                s.dirty = true;
            }
        }
        if self.pin.is_some() || self.in_trans {
            if let Some(s) = self.server.as_mut() {
                s.dirty = true;
            }
        }
        self.pin = (self.route.cfg.pool.mode == dgf_config::PoolMode::Session).then_some("pool mode = session");
        self.in_trans = false;
        self.sticky = false;
        self.long_data = false;
        self.stmts.clear();
        self.gov.sql_prepared.clear();
        self.replay.clear();
        self.release().await;
    }

    pub(super) async fn change_user(&mut self, seq: u8, payload: Bytes) -> Result<Flow, SessionError> {
        let cu = parse_change_user(&payload, self.caps).map_err(|e| SessionError::Protocol(e.to_string()))?;
        let snap = self.shared.live.load_full();
        let user = snap.users.get(&cu.user).cloned();
        let tls = self.client.is_tls();
        let outcome = auth_exchange(
            &mut self.client,
            &mut self.cin,
            seq,
            self.salt,
            cu.plugin.as_deref(),
            &cu.auth_response,
            user.as_ref(),
            tls,
            self.pools.rsa.as_deref(),
            super::login::full_auth_always(&self.route),
        )
        .await?;
        let (next, failure) = match outcome {
            AuthOutcome::Ok(s) => (s, None),
            AuthOutcome::Failed(s, e) => (s, Some(e)),
        };
        match (failure, user) {
            (None, Some(user)) => {
                self.reset_client_state().await;
                self.kill.set_user(&user.name);
                self.user = user;
                self.database = cu.database.unwrap_or_default();
                if let Some(c) = cu.collation {
                    self.collation = c as u8;
                }
                tracing::debug!(user = %self.user.name, "COM_CHANGE_USER");
                self.send_ok(next);
                Ok(Flow::Continue)
            }
            (failure, _) => {
                let e = failure.flatten().unwrap_or(ErrPacket {
                    errno: errno::ACCESS_DENIED.0,
                    sqlstate: errno::ACCESS_DENIED.1.into(),
                    message: format!("Access denied for user '{}'@'{}'", cu.user, self.peer.ip()),
                });
                self.send_err_packet(next, &e);
                self.route.metrics.login_failures.inc();
                let _ = self.flush().await;
                Ok(Flow::Quit)
            }
        }
    }
}
