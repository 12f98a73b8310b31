//! Holding a server connection for a MySQL client: checkout (with the client's schema,
//! character set and multi-statement setting), lazy release (a clean connection stays with
//! its client between statements until the pool wants it back), and the reset on return.

use super::backend::{BackendError, MyConn, PoolKey};
use super::session::Session;
use super::SessionError;
use crate::pool::CheckoutError;
use dgf_protocols::mysql::consts::{cap, errno, status};
use dgf_protocols::mysql::packets::ErrPacket;

/// How an idle wait with a kept server connection ended.
pub(super) enum Idle {
    /// The client has something to read (or its socket failed).
    Client(std::io::Result<()>),
    /// The connection was handed back or dropped: wait again.
    Again,
}

enum Woke {
    Wanted,
    Server(bool),
}

impl Session {
    /// The client is idle while its clean server connection is kept (lazy release): wait for
    /// the client's next command, but hand the connection back as soon as the pool wants it,
    /// and drop it if the server closes it or speaks unasked.
    pub(super) async fn idle_with_server(&mut self, shutdown: &mut tokio::sync::watch::Receiver<bool>) -> Idle {
        let Some(s) = self.server.as_ref() else { return Idle::Again };
        let woke = tokio::select! {
            biased;
            r = self.client.readable() => return Idle::Client(r),
            _ = s.until_wanted() => Woke::Wanted,
            r = s.stream.tcp().readable() => Woke::Server(r.is_ok()),
            _ = shutdown.changed() => Woke::Wanted,
            _ = self.kill.ended().cancelled() => Woke::Wanted,
        };
        match woke {
            Woke::Wanted => self.release().await,
            Woke::Server(ok) => {
                let s = self.server.as_mut().expect("held");
                if !ok || !s.rbuf.is_empty() || !s.stream.is_quiet_and_open() {
                    s.mark_broken();
                    self.server = None;
                    self.server_key = None;
                    let _ = self.kill.clear();
                }
            }
        }
        Idle::Again
    }

    /// Whether session state ties the client to its server connection.
    pub(super) fn tied(&self) -> bool {
        self.pin.is_some() || self.in_trans || self.sticky || self.long_data
    }

    pub(super) fn key(&self) -> PoolKey {
        PoolKey { found_rows: self.caps & cap::FOUND_ROWS != 0 }
    }

    /// Make sure a server connection is held. `Ok(false)`: an error was sent to the client.
    pub(super) async fn acquire(&mut self, seq: u8) -> Result<bool, SessionError> {
        if self.server.is_some() {
            return Ok(true);
        }
        let _ = self.kill.clear();
        let key = self.key();
        let pool = self.pools.pool(&key);
        let started = std::time::Instant::now();
        let got = self.kill.wait(pool.get()).await;
        self.route.metrics.wait.observe(started.elapsed().as_secs_f64());
        let mut s = match got {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                self.send_err_packet(seq, &checkout_error(&e));
                return Ok(false);
            }
            None => {
                // KILL QUERY (or KILL CONNECTION) while the statement waited for a server
                // connection: it never started; the server's own answer for a killed one.
                let (errno, sqlstate) = errno::QUERY_INTERRUPTED;
                let message = "Query execution was interrupted".to_owned();
                self.send_err_packet(seq, &ErrPacket { errno, sqlstate: sqlstate.into(), message });
                return Ok(false);
            }
        };
        if let Err(e) = self.sync(&mut s).await {
            s.mark_broken();
            self.send_err_packet(seq, &e);
            return Ok(false);
        }
        self.kill.set(self.pools.target.clone(), s.thread_id);
        self.server = Some(s);
        self.server_key = Some(key);
        Ok(true)
    }

    /// Bring a checked-out connection to the client's session settings: schema, character
    /// set, multi-statements. An error (e.g. unknown database) is the client's answer.
    async fn sync(&self, s: &mut MyConn) -> Result<(), ErrPacket> {
        let up = |e: BackendError| e.to_client_error();
        if !self.database.is_empty() && s.schema != self.database {
            s.init_db(&self.database).await.map_err(up)??;
        }
        if s.collation != self.collation {
            s.set_collation(self.collation).await.map_err(up)??;
        }
        if s.multi_statements != self.multi_statements {
            s.set_multi_statements(self.multi_statements).await.map_err(up)?;
        }
        for set in &self.replay {
            let sql = String::from_utf8_lossy(&set[1..]);
            s.dirty = true;
            s.query_drain(&sql).await.map_err(up)??;
        }
        Ok(())
    }

    /// At login: check a connection of the client's pool out once (proves the schema exists
    /// and the upstream answers). It stays with the client for its first statement unless
    /// the pool wants it back.
    pub(super) async fn check_upstream(&mut self) -> Option<ErrPacket> {
        let key = self.key();
        let pool = self.pools.pool(&key);
        let st = pool.stats();
        if st.opened_total > 0 && st.idle == 0 && st.open >= st.max {
            // Every server connection is in use (the upstream answered before): do not make
            // the login wait behind them. A client cancelling a long statement (`KILL QUERY`
            // on a new connection, the mysql CLI's Ctrl-C) must get in while it runs; a
            // schema that does not exist fails the first statement instead of the login.
            return None;
        }
        match pool.get().await {
            Ok(mut s) => {
                let r = self.sync(&mut s).await.err();
                if r.is_some() && s.schema != self.database {
                    // the schema does not exist or is not allowed: the connection is fine
                    return r;
                }
                if r.is_some() {
                    s.mark_broken();
                    return r;
                }
                self.kill.set(self.pools.target.clone(), s.thread_id);
                self.server = Some(s);
                self.server_key = Some(key);
                self.maybe_release().await;
                None
            }
            Err(e) => Some(checkout_error(&e)),
        }
    }

    /// Give the server connection back unless something ties the client to it.
    /// A clean connection stays with the client while nobody else wants it (lazy release:
    /// no pool round trip per statement); it goes back at once when a checkout waits, the
    /// pool shrinks or closes, or the connection reached its max lifetime.
    pub(super) async fn maybe_release(&mut self) {
        if self.tied() {
            return;
        }
        // `dirty` without a pin means the connection carries the client's replayed settings:
        // it may stay with that client (and is reset when it goes back).
        let keep =
            self.server.as_ref().is_some_and(|s| !s.is_broken() && s.status & status::IN_TRANS == 0 && !s.wanted());
        if !keep {
            self.release().await;
        }
    }

    /// Return the server connection to its pool, cleaning it first when it carries state.
    pub(super) async fn release(&mut self) {
        let killed = self.kill.clear();
        let Some(mut s) = self.server.take() else { return };
        self.server_key = None;
        if killed {
            // A kill was sent here and may still arrive: never hand it to another client.
            s.mark_broken();
        }
        if s.is_broken() {
            return;
        }
        if s.dirty || s.status & status::IN_TRANS != 0 {
            if let Err(e) = s.reset().await {
                tracing::debug!(error = %e, "server connection could not be reset; closing it");
                s.mark_broken();
            }
        }
    }
}

fn checkout_error(e: &CheckoutError<BackendError>) -> ErrPacket {
    match e {
        CheckoutError::Connect(be) => be.to_client_error(),
        CheckoutError::Timeout(_) => ErrPacket {
            errno: errno::TOO_MANY_CONNECTIONS.0,
            sqlstate: errno::TOO_MANY_CONNECTIONS.1.into(),
            message: format!("dgf: no server connection available: {e}"),
        },
        other => ErrPacket { errno: 2003, sqlstate: "HY000".into(), message: format!("dgf: {other}") },
    }
}
