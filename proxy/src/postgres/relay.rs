//! A logged-in Postgres client session: relays messages between the client and whichever server
//! connection it holds, checks one out per transaction (or per session), and rewrites what
//! pooling requires (prepared statement names, parameter sync).
//!
//! Transitions:
//! - idle (no server) --client message--> checkout --> active
//! - active --ReadyForQuery 'I', nothing pending, transaction mode--> idle (server released)
//! - any --client EOF / Terminate--> closed (server released, rolled back or discarded)
//! - any --server EOF or fatal protocol error--> closed (server discarded)

use super::backend::ServerConn;
use super::cancel::CancelSlot;
use super::govern::{GovState, InFlight};
use super::prepared::{Pending, Statement};
use super::SessionError;
use crate::live::{PgPools, Route, User};
use crate::pool::{Pool, Pooled};
use crate::postgres::backend::PgManager;
use crate::shared::Shared;
use crate::stream::Stream;
use bytes::BytesMut;
use dgf_config::PoolMode;
use dgf_protocols::postgres::frame::split_frame;
use dgf_protocols::postgres::messages::{self, btag, tag, Bind, ErrorFields, Parse, Target};
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Cap on one client message.
pub const MAX_CLIENT_MESSAGE: usize = 64 * 1024 * 1024;
/// Stop reading a side while this much is queued for the other.
const HIGH_WATER: usize = 1024 * 1024;
/// Buffers kept across idle periods (no allocation per transaction); larger ones are freed.
const KEEP_BUF: usize = 1024;
const KEEP_BUF_MAX: usize = 4096;
/// Run-time parameters kept consistent for a client moved between server connections.
pub const TRACKED: [&str; 5] = ["application_name", "client_encoding", "DateStyle", "IntervalStyle", "TimeZone"];

enum Event {
    ClientData(usize),
    ClientEof,
    ServerData,
    ServerEof,
    Progress,
}

/// One client session after login.
pub struct Session {
    pub(super) shared: Arc<Shared>,
    pub(super) route: Arc<Route>,
    pub(super) pg: Arc<PgPools>,
    pub(super) pool: Pool<PgManager>,
    pub(super) user: Arc<User>,
    pub(super) database: String,
    pub(super) peer: SocketAddr,
    pub(super) client: Stream,
    pub(super) cin: BytesMut,
    pub(super) cout: BytesMut,
    pub(super) sout: BytesMut,
    pub(super) server: Option<Pooled<PgManager>>,
    pub(super) pending: VecDeque<Pending>,
    pub(super) statements: HashMap<String, Arc<Statement>>,
    /// Parameter values this client expects (name, value).
    pub(super) desired: Vec<(String, String)>,
    /// Signature of `desired` (see `Session::params_sig` and `ServerConn::synced_for`).
    pub(super) params_sig: u64,
    /// Transaction pooling (the route's mode, refreshed once per batch of client messages).
    pub(super) txn: bool,
    pub(super) skip_until_sync: bool,
    pub(super) cancel: Arc<CancelSlot>,
    pub(super) _key_guard: super::cancel::KeyGuard,
    pub(super) client_flush: bool,
    pub(super) server_flush: bool,
    /// The server is in copy-in mode and the client has not sent CopyDone/CopyFail yet. The
    /// server ignores Sync then (it answers only the Sync after the copy ends).
    pub(super) copy_in: bool,
    /// Extended-protocol messages went to the server since the last Sync: it is inside an
    /// (implicit) transaction, or skipping to Sync after an error, until then. Not released.
    pub(super) unsynced: bool,
    /// Policy state: decisions per statement/portal, statements in flight, result plan.
    pub(super) gov: GovState,
}

impl Session {
    pub(super) fn mode(&self) -> PoolMode {
        self.pg.opts.load().mode
    }

    /// Relay until the client leaves or something breaks.
    pub async fn run(mut self) -> Result<(), SessionError> {
        let mut shutdown = self.shared.shutdown.clone();
        let result = self.relay(&mut shutdown).await;
        self.finish(matches!(result, Ok(()) | Err(SessionError::ClientGone))).await;
        result
    }

    async fn relay(&mut self, shutdown: &mut tokio::sync::watch::Receiver<bool>) -> Result<(), SessionError> {
        // One registration with the shutdown signal for the whole session, not one per idle wait.
        let mut stop_rx = shutdown.clone();
        let changed = std::pin::pin!(stop_rx.changed());
        let mut stop = crate::shared::Stop::new(changed, shutdown.clone());
        let mut stop_seen = false;
        loop {
            if self.server.is_none() && self.cout.is_empty() && !self.client_flush {
                if *shutdown.borrow() {
                    return Err(self.goodbye("57P01", "terminating connection due to administrator command").await);
                }
                if self.cin.is_empty() {
                    // Idle: keep only small buffers while waiting.
                    recycle(&mut self.cin);
                    recycle(&mut self.sout);
                    if self.cin.capacity() == 0 {
                        // A client that has sent nothing yet (or only large messages) waits
                        // without any read buffer.
                        tokio::select! {
                            r = self.client.readable() => r?,
                            _ = &mut stop, if !stop_seen => {
                                stop_seen = true;
                                continue;
                            }
                        }
                    }
                }
                if !stop_seen {
                    let event = tokio::select! {
                        biased;
                        e = self.poll_io() => e?,
                        _ = &mut stop => {
                            stop_seen = true;
                            continue;
                        }
                    };
                    if !self.on_event(event).await? {
                        return Ok(());
                    }
                    continue;
                }
            }
            let event = self.poll_io().await?;
            if !self.on_event(event).await? {
                return Ok(());
            }
        }
    }

    /// Act on what `poll_io` saw. Returns false when the client closed its socket.
    async fn on_event(&mut self, event: Event) -> Result<bool, SessionError> {
        {
            match event {
                Event::ClientData(n) => {
                    self.route.metrics.bytes_in.inc_by(n as u64);
                    self.on_client_data().await?
                }
                Event::ClientEof => return Ok(false),
                Event::ServerData => self.on_server_data()?,
                Event::ServerEof => {
                    return Err(self.goodbye("08006", "server closed the connection unexpectedly").await);
                }
                Event::Progress => {}
            }
            self.maybe_release().await;
        }
        Ok(true)
    }

    /// Drive both sockets at once: write what is queued, read what arrives.
    async fn poll_io(&mut self) -> Result<Event, SessionError> {
        let Session { client, server, cin, cout, sout, client_flush, server_flush, pending, txn, .. } = self;
        poll_fn(|cx| {
            let mut progress = false;
            if !cout.is_empty() {
                match poll_write_bytes(Pin::new(&mut *client), cx, cout) {
                    Poll::Ready(Ok(_)) => {
                        progress = true;
                        *client_flush = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(SessionError::Io(e))),
                    Poll::Pending => {}
                }
            }
            if cout.is_empty() && *client_flush {
                match Pin::new(&mut *client).poll_flush(cx) {
                    Poll::Ready(Ok(())) => *client_flush = false,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(SessionError::Io(e))),
                    Poll::Pending => {}
                }
            }
            if progress
                && cout.is_empty()
                && pending.is_empty()
                && *txn
                && server.as_ref().is_some_and(|c| c.status == b'I' && c.rbuf.is_empty())
            {
                // The reply is out and the server is done with it: `maybe_release` gives the
                // connection back before reads are registered on it (one pass fewer).
                return Poll::Ready(Ok(Event::Progress));
            }
            if let Some(conn) = server.as_mut() {
                if !sout.is_empty() {
                    match poll_write_bytes(Pin::new(&mut conn.stream), cx, sout) {
                        Poll::Ready(Ok(_)) => {
                            // Another pass only when it can change something: more left to
                            // write, or no reply awaited (`maybe_release` may give the server
                            // back). Otherwise the reads below register for the reply and this
                            // pass ends the task's turn, one pass per statement fewer.
                            progress |= !sout.is_empty() || pending.is_empty();
                            *server_flush = true;
                        }
                        Poll::Ready(Err(_)) => return Poll::Ready(Ok(Event::ServerEof)),
                        Poll::Pending => {}
                    }
                }
                if sout.is_empty() && *server_flush {
                    match Pin::new(&mut conn.stream).poll_flush(cx) {
                        Poll::Ready(Ok(())) => *server_flush = false,
                        Poll::Ready(Err(_)) => return Poll::Ready(Ok(Event::ServerEof)),
                        Poll::Pending => {}
                    }
                }
                if cout.len() < HIGH_WATER {
                    if conn.rbuf.capacity() - conn.rbuf.len() < 4096 {
                        conn.rbuf.reserve(16 * 1024);
                    }
                    let ServerConn { stream, rbuf, .. } = &mut ***conn;
                    match tokio_util::io::poll_read_buf(Pin::new(stream), cx, rbuf) {
                        Poll::Ready(Ok(0)) => return Poll::Ready(Ok(Event::ServerEof)),
                        Poll::Ready(Ok(_)) => return Poll::Ready(Ok(Event::ServerData)),
                        Poll::Ready(Err(_)) => return Poll::Ready(Ok(Event::ServerEof)),
                        Poll::Pending => {}
                    }
                }
            }
            if sout.len() < HIGH_WATER && cout.len() < HIGH_WATER {
                if cin.capacity() - cin.len() < 1024 {
                    cin.reserve(if cin.is_empty() { KEEP_BUF } else { 8 * 1024 });
                }
                match tokio_util::io::poll_read_buf(Pin::new(&mut *client), cx, cin) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Ok(Event::ClientEof)),
                    Poll::Ready(Ok(n)) => return Poll::Ready(Ok(Event::ClientData(n))),
                    Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                        return Poll::Ready(Ok(Event::ClientEof))
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(SessionError::Io(e))),
                    Poll::Pending => {}
                }
            }
            if progress {
                Poll::Ready(Ok(Event::Progress))
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Send a FATAL error and flush what is queued; returns the error to end the session with.
    async fn goodbye(&mut self, code: &str, message: &str) -> SessionError {
        let f = ErrorFields::new("FATAL", code, message);
        f.encode(&mut self.cout);
        self.route.metrics.error(code);
        let _ = self.client.write_all(&self.cout).await;
        let _ = self.client.flush().await;
        self.cout.clear();
        SessionError::Refused(f)
    }

    async fn on_client_data(&mut self) -> Result<(), SessionError> {
        self.txn = self.mode() == PoolMode::Transaction;
        loop {
            let frame = match split_frame(&mut self.cin, MAX_CLIENT_MESSAGE) {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(e) => return Err(self.goodbye(e.sqlstate(), &format!("invalid message from client: {e}")).await),
            };
            match self.on_client_message(frame.tag(), &frame.raw).await {
                Ok(true) => {}
                Ok(false) => return Err(SessionError::ClientGone),
                // A well-framed message whose body does not decode (e.g. a Query without its
                // NUL): tell the client why (08P01, as Postgres does) instead of a bare close.
                Err(SessionError::Malformed(e)) => {
                    return Err(self.goodbye(e.sqlstate(), &format!("invalid message from client: {e}")).await)
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Handle one client message. Returns false on Terminate.
    async fn on_client_message(&mut self, t: u8, raw: &[u8]) -> Result<bool, SessionError> {
        let body = &raw[5..];
        if self.skip_until_sync {
            if t == tag::SYNC {
                self.skip_until_sync = false;
                if self.server.is_some() {
                    // The server saw part of this batch: let it close its implicit transaction.
                    self.unsynced = false;
                    self.pending.push_back(Pending::Sync);
                    self.sout.extend_from_slice(raw);
                } else {
                    self.push_local(&[btag::READY_FOR_QUERY, 0, 0, 0, 5, b'I']);
                }
            }
            return Ok(true);
        }
        if self.server.is_none() && self.answer_without_server(t, body)? {
            return Ok(true);
        }
        if t == tag::TERMINATE {
            return Ok(false);
        }
        let Some(query_gov) = self.decide_message(t, body).await? else { return Ok(true) };
        if matches!(t, tag::QUERY | tag::FUNCTION_CALL | tag::EXECUTE) {
            if let Err(e) = self.route.shaper.acquire().await {
                // 53400 configuration_limit_exceeded: the route's ops/s budget.
                self.local_error(t != tag::EXECUTE, &ErrorFields::new("ERROR", "53400", format!("dgf: {e}")));
                return Ok(true);
            }
        }
        let first = (t == tag::QUERY).then_some(raw);
        let Some(sent) = self.ensure_server_for(t == tag::QUERY || t == tag::FUNCTION_CALL, first).await? else {
            return Ok(true);
        };
        let txn = self.txn;
        let me = self.session_id();
        let Some(server) = self.server.as_mut() else { return Ok(true) };
        if matches!(t, tag::QUERY | tag::PARSE) {
            let sql = if t == tag::QUERY { body } else { body.splitn(2, |&b| b == 0).nth(1).unwrap_or(&[]) };
            if super::params::changes_settings(sql, query_gov.as_ref().map(|g| g.analysis())) {
                (server.dirty, server.dirty_for) = (true, me);
            }
        }
        match t {
            tag::SYNC => self.unsynced = false,
            tag::PARSE | tag::BIND | tag::DESCRIBE | tag::CLOSE | tag::EXECUTE | tag::FLUSH => self.unsynced = true,
            _ => {}
        }
        match t {
            tag::QUERY | tag::FUNCTION_CALL => {
                self.route.metrics.queries.inc();
                self.pending.push_back(Pending::Query { internal: false });
                // `sent`: written by the session that handed the connection over.
                self.sout.extend_from_slice(&raw[sent.min(raw.len())..]);
                if let Some(gov) = query_gov {
                    self.gov.inflight.push_back(InFlight::new(gov, false));
                }
            }
            tag::PARSE => {
                let p = Parse::decode(body)?;
                match query_gov {
                    Some(gov) => drop(self.gov.stmts.insert(p.name.to_owned(), gov)),
                    None => drop(self.gov.stmts.remove(p.name)),
                }
                if p.name.is_empty() || !txn {
                    self.pending.push_back(Pending::Parse { id: None, swallow: false });
                    self.sout.extend_from_slice(raw);
                } else {
                    let stmt = self.pg.statements.intern(p.rest);
                    self.statements.insert(p.name.to_owned(), stmt.clone());
                    if server.prepared.contains(&stmt.id) {
                        self.pending.push_back(Pending::SynthParseComplete);
                    } else {
                        server.prepared.insert(stmt.id);
                        messages::put_parse(&mut self.sout, &stmt.server_name, &stmt.rest);
                        self.pending.push_back(Pending::Parse { id: Some(stmt.id), swallow: false });
                    }
                }
            }
            tag::BIND => {
                let b = Bind::decode(body)?;
                match self.statements.get(b.statement).filter(|_| txn && !b.statement.is_empty()) {
                    Some(stmt) => {
                        ensure_prepared(server, stmt, &mut self.sout, &mut self.pending);
                        messages::put_bind(&mut self.sout, b.portal, &stmt.server_name, b.rest);
                    }
                    None => self.sout.extend_from_slice(raw),
                }
                self.pending.push_back(Pending::Bind);
                match self.gov.stmts.get(b.statement).cloned() {
                    Some(gov) => {
                        if gov.sql.needs_masking || gov.sql.verdict.row_limit.is_some() {
                            // The result formats are only known per portal: ask for them.
                            messages::put_target(&mut self.sout, tag::DESCRIBE, b'P', b.portal);
                            self.pending.push_back(Pending::Describe { statement: false, swallow: true });
                        }
                        self.gov.portals.insert(b.portal.to_owned(), gov);
                    }
                    None => drop(self.gov.portals.remove(b.portal)),
                }
            }
            tag::DESCRIBE | tag::CLOSE => {
                let target = Target::decode(body)?;
                let stmt = (txn && target.kind == b'S' && !target.name.is_empty())
                    .then(|| self.statements.get(target.name))
                    .flatten();
                match (t, stmt) {
                    (tag::DESCRIBE, Some(stmt)) => {
                        ensure_prepared(server, stmt, &mut self.sout, &mut self.pending);
                        messages::put_target(&mut self.sout, tag::DESCRIBE, b'S', &stmt.server_name);
                        self.pending.push_back(Pending::Describe { statement: true, swallow: false });
                    }
                    (tag::CLOSE, Some(_)) => {
                        // Shared server-side statement: only this client's name goes away.
                        self.statements.remove(target.name);
                        self.pending.push_back(Pending::SynthCloseComplete);
                    }
                    _ => {
                        self.sout.extend_from_slice(raw);
                        self.pending.push_back(if t == tag::DESCRIBE {
                            Pending::Describe { statement: target.kind == b'S', swallow: false }
                        } else {
                            Pending::Close
                        });
                    }
                }
            }
            tag::EXECUTE => {
                self.route.metrics.queries.inc();
                self.pending.push_back(Pending::Execute);
                self.sout.extend_from_slice(raw);
                let portal = messages::cstr_prefix(body);
                if let Some(gov) = self.gov.portals.get(portal).cloned() {
                    self.gov.inflight.push_back(InFlight::new(gov, true));
                }
            }
            tag::SYNC => {
                // A Sync sent during copy-in gets no ReadyForQuery: do not wait for one. (tokio-
                // postgres and libpq send Bind/Execute/Sync, the copy data, then CopyDone/Sync.)
                if !self.copy_in {
                    self.pending.push_back(Pending::Sync);
                }
                self.sout.extend_from_slice(raw);
            }
            tag::COPY_DONE | tag::COPY_FAIL => {
                if !std::mem::take(&mut self.copy_in) {
                    self.pending.push_back(Pending::CopyEnd);
                }
                self.sout.extend_from_slice(raw);
            }
            tag::FLUSH | tag::COPY_DATA => self.sout.extend_from_slice(raw),
            other => {
                return Err(self.goodbye("08P01", &format!("invalid frontend message type {:?}", other as char)).await);
            }
        }
        self.emit_synthetic();
        Ok(true)
    }

    /// Answer a refused statement locally: error, then ReadyForQuery (simple) or skip to Sync.
    /// Ordered after the replies to anything the client pipelined before it.
    pub(super) fn local_error(&mut self, simple: bool, f: &ErrorFields) {
        let mut b = BytesMut::new();
        f.encode(&mut b);
        self.push_local(&b);
        self.route.metrics.error(&f.code);
        if !simple {
            self.skip_until_sync = true;
        } else if self.pending.is_empty() {
            let status = self.server.as_ref().map_or(b'I', |s| s.status);
            messages::put_ready_for_query(&mut self.cout, status);
        } else {
            self.pending.push_back(Pending::SynthReady);
        }
    }

    /// Queue bytes for the client behind every reply still owed to it.
    fn push_local(&mut self, bytes: &[u8]) {
        if self.pending.is_empty() {
            self.cout.extend_from_slice(bytes);
        } else {
            self.pending.push_back(Pending::Synth(bytes::Bytes::copy_from_slice(bytes)));
        }
    }

    /// Messages that need no server when none is held (nothing is pending then). Returns
    /// whether the message was answered.
    fn answer_without_server(&mut self, t: u8, body: &[u8]) -> Result<bool, SessionError> {
        match t {
            tag::SYNC => messages::put_ready_for_query(&mut self.cout, b'I'),
            tag::FLUSH | tag::COPY_DATA | tag::COPY_DONE | tag::COPY_FAIL => {}
            tag::CLOSE => {
                let target = Target::decode(body)?;
                let shared_stmt = target.kind == b'S'
                    && !target.name.is_empty()
                    && self.mode() == PoolMode::Transaction
                    && self.statements.contains_key(target.name);
                if !shared_stmt {
                    return Ok(false);
                }
                self.statements.remove(target.name);
                messages::put_empty(&mut self.cout, btag::CLOSE_COMPLETE);
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    pub(super) fn emit_synthetic(&mut self) {
        while let Some(p) = self.pending.front() {
            match p {
                Pending::SynthParseComplete => messages::put_empty(&mut self.cout, btag::PARSE_COMPLETE),
                Pending::SynthCloseComplete => messages::put_empty(&mut self.cout, btag::CLOSE_COMPLETE),
                Pending::Synth(b) => self.cout.extend_from_slice(b),
                Pending::SynthReady => {
                    let status = self.server.as_ref().map_or(b'I', |s| s.status);
                    messages::put_ready_for_query(&mut self.cout, status);
                }
                Pending::CopyEnd => {} // the COPY never started: nothing to answer
                _ => return,
            }
            self.pending.pop_front();
        }
    }
}

/// Write from a contiguous buffer with one plain write (tokio-util's `poll_write_buf` builds a
/// 64-entry iovec array for every call, which costs more than the write's own bookkeeping).
fn poll_write_bytes<W: AsyncWrite>(
    w: Pin<&mut W>,
    cx: &mut std::task::Context<'_>,
    buf: &mut BytesMut,
) -> Poll<std::io::Result<usize>> {
    let r = w.poll_write(cx, buf);
    if let Poll::Ready(Ok(n)) = r {
        bytes::Buf::advance(buf, n);
    }
    r
}

/// Keep a small, empty buffer for the next transaction (no malloc/free per transaction), or
/// free a large one (idle clients must stay cheap).
fn recycle(buf: &mut BytesMut) {
    if !buf.is_empty() {
        return;
    }
    if buf.capacity() > KEEP_BUF_MAX {
        *buf = BytesMut::new();
    } else if buf.capacity() != 0 {
        // Reclaims the space in front of an empty buffer in place when nothing else shares it.
        buf.reserve(KEEP_BUF);
    }
}

fn ensure_prepared(server: &mut ServerConn, stmt: &Statement, sout: &mut BytesMut, pending: &mut VecDeque<Pending>) {
    if server.prepared.insert(stmt.id) {
        messages::put_parse(sout, &stmt.server_name, &stmt.rest);
        pending.push_back(Pending::Parse { id: Some(stmt.id), swallow: true });
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.cancel.clear() {
            if let Some(server) = self.server.as_mut() {
                server.mark_broken();
            }
        }
    }
}
