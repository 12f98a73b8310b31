//! A client session's hold on a server connection: checkout (with the client's parameters
//! synced, and a cancel ending the wait), release at the end of each transaction in transaction
//! mode, and what happens to the connection when the session ends.

use super::relay::Session;
use super::SessionError;
use crate::pool::CheckoutError;
use dgf_config::PoolMode;
use dgf_protocols::postgres::messages::ErrorFields;
use std::future::Future;
use std::time::Instant;

impl Session {
    /// Make sure a server connection is held. Returns false when none could be had (the client
    /// got an error and the session goes on).
    pub(super) async fn ensure_server(&mut self, simple: bool) -> Result<bool, SessionError> {
        Ok(self.ensure_server_for(simple, None).await?.is_some())
    }

    /// [`ensure_server`](Self::ensure_server) for a session about to send `first` (a whole
    /// simple Query message): if the pool makes it wait, the session that releases a
    /// connection to it writes `first` at once, when the connection needs no parameter sync
    /// for this session (see [`crate::pool::Prelude`]). `Some(n)`: a connection is held and
    /// the first `n` bytes of `first` are sent; `None`: none could be had.
    pub(super) async fn ensure_server_for(
        &mut self,
        simple: bool,
        first: Option<&[u8]>,
    ) -> Result<Option<usize>, SessionError> {
        if self.server.is_some() {
            return Ok(Some(0));
        }
        let started = Instant::now();
        let (sig, me) = (self.params_sig, self.session_id());
        let prelude = first.map(|q| {
            move || -> crate::pool::Prelude<super::backend::PgManager> {
                let q = bytes::Bytes::copy_from_slice(q);
                Box::new(move |c| {
                    if !super::params::in_sync(c, sig, me) {
                        return 0;
                    }
                    // Never waits: what the socket does not take now, the waiter writes. Under TLS
                    // the record may stay buffered; the waiter flushes it (`server_flush`).
                    use tokio::io::AsyncWrite;
                    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                    match std::pin::Pin::new(&mut c.stream).poll_write(&mut cx, &q) {
                        std::task::Poll::Ready(Ok(n)) => {
                            let _ = std::pin::Pin::new(&mut c.stream).poll_flush(&mut cx);
                            n
                        }
                        _ => 0,
                    }
                })
            }
        });
        // The checkout, ended early by a cancel (looked at only once the pool made us wait).
        let got = {
            let get = self.pool.get_with(prelude);
            let mut get = std::pin::pin!(get);
            let slot = &self.cancel;
            slot.start_wait();
            std::future::poll_fn(|cx| match get.as_mut().poll(cx) {
                std::task::Poll::Pending if slot.poll_cancelled(cx.waker()) => {
                    std::task::Poll::Ready(Err(CheckoutError::Cancelled))
                }
                other => other,
            })
            .await
        };
        self.route.metrics.wait.observe(started.elapsed().as_secs_f64());
        match got {
            Ok((mut conn, sent)) => {
                // Whatever the hand-over wrote may still sit in a TLS buffer.
                self.server_flush |= sent > 0;
                self.sync_params(&mut conn);
                self.cancel.set(self.pg.target.clone(), conn.key);
                self.server = Some(conn);
                Ok(Some(sent))
            }
            Err(e) => {
                let f = match &e {
                    CheckoutError::Timeout(_) => {
                        ErrorFields::new("ERROR", "53300", format!("dgf: no server connection available: {e}"))
                    }
                    CheckoutError::Connect(be) => be.to_client_error(),
                    CheckoutError::ConnectTimeout => ErrorFields::new("ERROR", "08006", format!("dgf: {e}")),
                    CheckoutError::Closed => ErrorFields::new("ERROR", "57P01", "dgf: route is shutting down"),
                    // Cancelled while waiting (the statement never started).
                    CheckoutError::Cancelled => {
                        ErrorFields::new("ERROR", "57014", "canceling statement due to user request")
                    }
                };
                if !matches!(e, CheckoutError::Cancelled) {
                    tracing::warn!(error = %e, "server checkout failed");
                }
                self.local_error(simple, &f);
                Ok(None)
            }
        }
    }

    /// Give the server connection back when the transaction (or session) is over.
    pub(super) async fn maybe_release(&mut self) {
        let Some(server) = self.server.as_ref() else { return };
        let idle = server.status == b'I'
            && self.pending.is_empty()
            && self.sout.is_empty()
            && server.rbuf.is_empty()
            && !self.unsynced;
        if idle && self.txn && !self.server_flush && !self.copy_in {
            let cancelled = self.cancel.clear();
            if let Some(mut server) = self.server.take() {
                if cancelled {
                    server.mark_broken();
                }
            }
        }
    }

    /// Session over: return, reset, roll back or discard the server connection.
    pub(super) async fn finish(&mut self, clean: bool) {
        let cancelled = self.cancel.clear();
        let Some(mut server) = self.server.take() else { return };
        if cancelled {
            server.mark_broken();
            return;
        }
        let settled = clean
            && self.pending.is_empty()
            && self.sout.is_empty()
            && server.rbuf.is_empty()
            && !self.copy_in
            && !self.unsynced;
        if !settled {
            if !self.pending.is_empty() || self.copy_in {
                // The client left while the server still works for it: cancel that work, or
                // the backend keeps running (and holding locks) until it notices the closed
                // socket, which for a long statement may take its whole run.
                let (target, key) = (self.pg.target.clone(), server.key);
                tokio::spawn(async move {
                    let _ = super::backend::send_cancel(&target, key).await;
                });
            }
            server.mark_broken();
            return;
        }
        let reset = match (self.mode(), server.status) {
            (PoolMode::Session, _) => Some(self.pg.opts.load().reset_query.clone()),
            (PoolMode::Transaction, b'I') => None,
            (PoolMode::Transaction, _) => Some("ROLLBACK".to_owned()),
        };
        if let Some(sql) = reset {
            tokio::spawn(async move {
                let ok = tokio::time::timeout(std::time::Duration::from_secs(5), server.run_internal(&sql)).await;
                if !matches!(ok, Ok(Ok(()))) || server.status != b'I' {
                    server.mark_broken();
                }
                if sql.eq_ignore_ascii_case("DISCARD ALL") {
                    server.prepared.clear();
                }
            });
        }
    }
}
