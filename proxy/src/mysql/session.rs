//! One client's command loop: each command is classified (governance hook, state tracking),
//! answered locally or forwarded to a server connection checked out for it, and its response
//! streamed back packet by packet with the client's framing. The server connection goes back
//! to the pool as soon as no session state ties the client to it (see docs/ARCHITECTURE.md,
//! "MySQL: what pins a client").

use super::backend::{BackendError, MyConn, MyManager, PoolKey};
use super::govern::{Gov, GovState};
use super::hold::Idle;
use super::kill::{KillGuard, KillSlot};
use super::pools::MyPools;
use super::state::{scan, StmtEntry};
use super::SessionError;
use crate::live::{Route, User};
use crate::pool::Pooled;
use crate::shared::Shared;
use crate::stream::Stream;
use bytes::{Bytes, BytesMut};
use dgf_protocols::mysql::consts::{cap, com, errno, status};
use dgf_protocols::mysql::frame::{put_frame, split_frame, split_packet};
use dgf_protocols::mysql::packets::{put_eof, put_err, statement_id, ErrPacket, OkPacket};
use dgf_protocols::mysql::response::{Expect, Kind, Out, Tracker};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Cap on one command from a client (max_allowed_packet of the proxy).
pub const MAX_CLIENT_PACKET: usize = 64 * 1024 * 1024;
/// Client output buffered before it is written out mid-response.
const FLUSH_AT: usize = 64 * 1024;
/// Replayable `SET` statements remembered per client; past that a `SET` pins.
const MAX_REPLAY: usize = 32;
/// Read buffer reserved before reading from a client.
const READ_CHUNK: usize = 8 * 1024;

/// A statement as one client sees it.
pub(super) struct ClientStmt {
    pub(super) entry: Arc<StmtEntry>,
    /// Governance decision made at prepare time.
    pub(super) gov: Option<Arc<Gov>>,
    /// Parameter types from the client's last execute that carried them.
    pub(super) types: Option<Vec<u8>>,
}

/// A logged-in MySQL client.
pub struct Session {
    pub(super) shared: Arc<Shared>,
    pub(super) route: Arc<Route>,
    pub(super) pools: Arc<MyPools>,
    pub(super) user: Arc<User>,
    pub(super) peer: SocketAddr,
    pub(super) client: Stream,
    pub(super) cin: BytesMut,
    pub(super) cout: BytesMut,
    /// Negotiated capabilities.
    pub(super) caps: u32,
    pub(super) collation: u8,
    /// The greeting's salt (COM_CHANGE_USER scrambles with it).
    pub(super) salt: [u8; 20],
    /// The client's schema ("" for none).
    pub(super) database: String,
    pub(super) server: Option<Pooled<MyManager>>,
    pub(super) server_key: Option<PoolKey>,
    /// Why the client is tied to its server connection (None: it is not).
    pub(super) pin: Option<&'static str>,
    pub(super) in_trans: bool,
    /// Held until the next command (it may read FOUND_ROWS() / LAST_INSERT_ID()).
    pub(super) sticky: bool,
    /// COM_STMT_SEND_LONG_DATA sent; held until the execute.
    pub(super) long_data: bool,
    /// Replayable `SET` statements (COM_QUERY payloads) run on every connection the client
    /// gets; see replay.rs.
    pub(super) replay: Vec<Bytes>,
    /// The statement in flight is a replayable `SET` (its state change does not pin).
    replaying: bool,
    pub(super) stmts: HashMap<u32, ClientStmt>,
    pub(super) next_stmt: u32,
    pub(super) multi_statements: bool,
    /// Governance state (policy view, masking plan, audit timing).
    pub(super) gov: GovState,
    /// What `KILL` from another client sees of this session (see kill.rs).
    pub(super) kill: Arc<KillSlot>,
    _kill_registration: KillGuard,
}

pub(super) enum Flow {
    Continue,
    Quit,
}

impl Session {
    /// A session for a client that has just logged in.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        shared: Arc<Shared>,
        route: Arc<Route>,
        pools: Arc<MyPools>,
        user: Arc<User>,
        peer: SocketAddr,
        client: Stream,
        caps: u32,
        collation: u8,
        salt: [u8; 20],
        database: String,
        conn_id: u32,
    ) -> Self {
        let session_mode = route.cfg.pool.mode == dgf_config::PoolMode::Session;
        let (kill, _kill_registration) = super::kill::register(conn_id, &route.name, &user.name);
        Self {
            shared,
            route,
            pools,
            user,
            peer,
            client,
            cin: BytesMut::new(),
            cout: BytesMut::new(),
            caps,
            collation,
            salt,
            database,
            server: None,
            server_key: None,
            pin: session_mode.then_some("pool mode = session"),
            in_trans: false,
            sticky: false,
            long_data: false,
            replay: Vec::new(),
            replaying: false,
            stmts: HashMap::new(),
            next_stmt: 0,
            multi_statements: caps & cap::MULTI_STATEMENTS != 0,
            gov: GovState::default(),
            kill,
            _kill_registration,
        }
    }

    /// Serve commands until the client quits or the connection fails.
    pub async fn run(mut self) -> Result<(), SessionError> {
        let result = self.command_loop().await;
        self.finish().await;
        result
    }

    async fn command_loop(&mut self) -> Result<(), SessionError> {
        let mut shutdown = self.shared.shutdown.clone();
        loop {
            let Some((last, payload)) = self.read_command(&mut shutdown).await? else { return Ok(()) };
            self.kill.running(true);
            let flow = self.dispatch(last.wrapping_add(1), payload).await;
            self.kill.running(false);
            if let Flow::Quit = flow? {
                return Ok(());
            }
            if self.kill.fired() && !self.tied() {
                // A KILL QUERY was sent to this connection: it is not kept for the client's
                // next statement, which a late kill could still interrupt.
                self.release().await;
            }
            self.flush().await?;
        }
    }

    /// Next command from the client; None on EOF or shutdown while idle.
    async fn read_command(
        &mut self,
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<Option<(u8, Bytes)>, SessionError> {
        loop {
            if self.kill.ended().is_cancelled() {
                return Ok(None);
            }
            match split_packet(&mut self.cin, MAX_CLIENT_PACKET) {
                Ok(Some((_, last, p))) if !p.is_empty() => return Ok(Some((last, p))),
                Ok(Some(_)) => return Err(SessionError::Protocol("empty command packet".into())),
                Ok(None) => {}
                Err(e) => {
                    let (n, st) = errno::NET_PACKET_TOO_LARGE;
                    let mut b = BytesMut::new();
                    put_err(&mut b, n, st, &format!("dgf: {e}"));
                    put_frame(&mut self.cout, 1, &b);
                    let _ = self.flush().await;
                    return Err(SessionError::Protocol(e.to_string()));
                }
            }
            let lazy = self.server.is_some() && !self.tied();
            let idle = self.cin.is_empty() && (self.server.is_none() || lazy);
            if idle && *shutdown.borrow() {
                return Ok(None);
            }
            if idle && lazy {
                match self.idle_with_server(shutdown).await {
                    Idle::Client(r) => r?,
                    Idle::Again => continue,
                }
            } else if idle {
                self.cin = BytesMut::new();
                tokio::select! {
                    r = self.client.readable() => r?,
                    _ = shutdown.changed() => continue,
                    _ = self.kill.ended().cancelled() => continue,
                }
            }
            if self.cin.capacity() - self.cin.len() < 1024 {
                self.cin.reserve(READ_CHUNK);
            }
            let n = self.client.read_buf(&mut self.cin).await?;
            if n == 0 {
                return Ok(None);
            }
            self.route.metrics.bytes_in.inc_by(n as u64);
        }
    }

    pub(super) async fn flush(&mut self) -> Result<(), SessionError> {
        if !self.cout.is_empty() {
            self.client.write_all(&self.cout).await?;
            self.route.metrics.bytes_out.inc_by(self.cout.len() as u64);
            self.cout.clear();
        }
        Ok(())
    }

    pub(super) fn status_flags(&self) -> u16 {
        status::AUTOCOMMIT | if self.in_trans { status::IN_TRANS } else { 0 }
    }

    pub(super) fn send_ok(&mut self, seq: u8) {
        let ok = OkPacket { status: self.status_flags(), ..Default::default() };
        let mut b = BytesMut::new();
        ok.encode(&mut b, 0, self.caps);
        put_frame(&mut self.cout, seq, &b);
    }

    pub(super) fn send_err(&mut self, seq: u8, (n, state): (u16, &str), message: &str) {
        let mut b = BytesMut::new();
        put_err(&mut b, n, state, message);
        put_frame(&mut self.cout, seq, &b);
        self.route.metrics.error(&n.to_string());
    }

    /// Send an ERR packet dgf made (a checkout or upstream failure), counted like
    /// [`send_err`](Self::send_err).
    pub(super) fn send_err_packet(&mut self, seq: u8, e: &ErrPacket) {
        self.route.metrics.error(&e.errno.to_string());
        let mut b = BytesMut::new();
        e.encode(&mut b);
        put_frame(&mut self.cout, seq, &b);
    }

    /// Refuse a statement with a MySQL-native access error naming the rule.
    pub(super) fn deny(&mut self, seq: u8, gov: &Gov) {
        let Some(d) = gov.denied() else { return };
        let message = d.message.clone();
        let code = if message.contains("column") || message.contains("masked data") {
            errno::COLUMNACCESS_DENIED
        } else {
            errno::TABLEACCESS_DENIED
        };
        self.send_err(seq, code, &message);
        self.audit_denied(gov, code.0);
    }

    async fn dispatch(&mut self, seq: u8, payload: Bytes) -> Result<Flow, SessionError> {
        let cmd = payload[0];
        if cmd == com::PROCESS_KILL {
            // The binary form of `KILL CONNECTION <id>` (mysql_kill() of old client libraries,
            // PyMySQL's Connection.kill): governed, audited and served as that statement.
            let Some(id) = payload.get(1..5).and_then(|b| <[u8; 4]>::try_from(b).ok()) else {
                self.send_err(seq, errno::MALFORMED_PACKET, "Malformed communication packet.");
                return Ok(Flow::Continue);
            };
            let sql = format!("KILL CONNECTION {}", u32::from_le_bytes(id));
            return self.kill_statement(seq, com::QUERY, sql.as_bytes()).await;
        }
        let sql: &[u8] = if matches!(cmd, com::QUERY | com::STMT_PREPARE) { &payload[1..] } else { &[] };
        if !sql.is_empty() && super::kill::mentions_kill(sql) {
            // Mapped onto the server connection the target client holds, or refused.
            return self.kill_statement(seq, cmd, sql).await;
        }
        let gov = if sql.is_empty() { None } else { self.govern_sql(sql, cmd == com::QUERY) };
        let gov = match gov {
            Some(g) if g.denied().is_none() => match self.check_views(seq, g).await {
                Ok(g) => Some(g),
                Err(()) => return Ok(Flow::Continue),
            },
            other => other,
        };
        let ddl = gov.as_ref().is_some_and(|g| g.sql.ddl);
        if let Some(g) = gov.as_ref().filter(|g| g.denied().is_some()) {
            let g = g.clone();
            self.deny(seq, &g);
            return Ok(Flow::Continue);
        }
        if matches!(cmd, com::QUERY | com::STMT_EXECUTE) {
            if let Err(e) = self.route.shaper.acquire().await {
                self.send_err(seq, errno::USER_LIMIT_REACHED, &format!("dgf: {e}"));
                return Ok(Flow::Continue);
            }
        }
        if self.sticky && !(cmd == com::QUERY && scan(sql).uses_previous) {
            self.sticky = false;
            self.maybe_release().await;
        }
        match cmd {
            com::QUIT => return Ok(Flow::Quit),
            com::QUERY => {
                self.route.metrics.queries.inc();
                self.begin(gov, false);
                self.query(seq, payload).await?;
                if ddl {
                    self.pools.views.invalidate();
                }
            }
            com::PING => {
                if self.server.is_some() {
                    self.forward(seq, &payload, Expect::Ok).await?;
                } else {
                    self.send_ok(seq);
                }
            }
            com::INIT_DB => self.init_db(seq, &payload[1..]).await?,
            com::FIELD_LIST => {
                self.forward(seq, &payload, Expect::FieldList).await?;
                self.maybe_release().await;
            }
            com::STATISTICS => {
                self.forward(seq, &payload, Expect::Raw).await?;
                self.maybe_release().await;
            }
            com::STMT_PREPARE => self.prepare(seq, payload, gov).await?,
            com::STMT_EXECUTE => {
                self.route.metrics.queries.inc();
                self.execute(seq, payload).await?
            }
            com::STMT_SEND_LONG_DATA => self.long_data(payload).await?,
            com::STMT_CLOSE => {
                if let Ok(id) = statement_id(&payload) {
                    self.stmts.remove(&id);
                }
            }
            com::STMT_RESET | com::STMT_FETCH => self.stmt_on_server(seq, payload).await?,
            com::SET_OPTION => {
                let on = payload.get(1..3) == Some(&[0, 0]);
                self.multi_statements = on;
                if let Some(s) = self.server.as_mut() {
                    if s.multi_statements != on && s.set_multi_statements(on).await.is_err() {
                        s.mark_broken();
                    }
                }
                let mut b = BytesMut::new();
                if self.caps & cap::DEPRECATE_EOF != 0 {
                    OkPacket { status: self.status_flags(), ..Default::default() }.encode(&mut b, 0xfe, self.caps);
                } else {
                    put_eof(&mut b, 0, self.status_flags());
                }
                put_frame(&mut self.cout, seq, &b);
            }
            com::RESET_CONNECTION => {
                self.reset_client_state().await;
                self.send_ok(seq);
            }
            com::CHANGE_USER => return self.change_user(seq, payload).await,
            other => {
                self.send_err(seq, errno::UNKNOWN_COM, &format!("dgf: command 0x{other:02x} is not supported"));
            }
        }
        Ok(Flow::Continue)
    }

    /// Send `payload` to the held server and stream the response to the client.
    /// `None`: nothing was sent (an error already went to the client).
    pub(super) async fn forward(
        &mut self,
        seq: u8,
        payload: &[u8],
        expect: Expect,
    ) -> Result<Option<Tracker>, SessionError> {
        if !self.acquire(seq).await? {
            return Ok(None);
        }
        let t = self.exchange(seq, payload, expect, |_| None, None).await?;
        self.after_response(&t);
        Ok(Some(t))
    }

    /// The I/O of one command on the held server. `first` may rewrite the first response
    /// packet; `keep` collects the server's packets.
    pub(super) async fn exchange(
        &mut self,
        seq: u8,
        payload: &[u8],
        expect: Expect,
        first: impl Fn(&[u8]) -> Option<Vec<u8>>,
        mut keep: Option<&mut Vec<Bytes>>,
    ) -> Result<Tracker, SessionError> {
        let Some(server) = self.server.as_mut() else {
            return Err(SessionError::Protocol("no server connection held".into()));
        };
        let conn: &mut MyConn = server;
        let mut t = Tracker::new(expect, conn.caps, self.caps);
        if let Err(e) = conn.command(payload).await {
            return Err(self.upstream_failed(seq, e, false).await);
        }
        let mut cseq = seq;
        let mut sent_any = false;
        let mut is_first = true;
        while !t.done() {
            let server: &mut MyConn = self.server.as_mut().expect("held");
            let frame = loop {
                if let Some(f) = split_frame(&mut server.rbuf) {
                    break f;
                }
                match server.stream.read_buf(&mut server.rbuf).await {
                    Ok(0) => {
                        return Err(self
                            .upstream_failed(seq, BackendError::Io(std::io::ErrorKind::UnexpectedEof.into()), sent_any)
                            .await)
                    }
                    Ok(_) => {}
                    Err(e) => return Err(self.upstream_failed(seq, BackendError::Io(e), sent_any).await),
                }
            };
            if let Some(k) = keep.as_deref_mut() {
                k.push(frame.payload.clone());
            }
            let out = match t.feed(&frame.payload) {
                Ok(o) => o,
                Err(e) => return Err(self.upstream_failed(seq, BackendError::Protocol(e.to_string()), sent_any).await),
            };
            let mut rewritten = if is_first { first(&frame.payload) } else { None };
            is_first = false;
            if self.gov.active.is_some() {
                match t.last {
                    Kind::ColumnCount => self.on_column_count(&frame.payload),
                    Kind::ColumnDef => self.on_column_def(&frame.payload),
                    Kind::Row if frame.continues() && self.gov_masks() => {
                        let e = BackendError::Protocol("a row of 16 MiB or more cannot be masked".into());
                        return Err(self.upstream_failed(seq, e, sent_any).await);
                    }
                    Kind::Row => match self.on_row(&frame.payload) {
                        Ok(Some(p)) => {
                            self.count_row_bytes(p.len());
                            rewritten = Some(p);
                        }
                        Ok(None) => self.count_row_bytes(frame.payload.len()),
                        Err(()) => continue,
                    },
                    Kind::ResultEnd => self.on_result_end(),
                    Kind::Ok => self.on_ok(t.last_ok.as_ref().map_or(0, |o| o.affected_rows)),
                    _ => {}
                }
            }
            match (out, rewritten) {
                (_, Some(p)) | (Out::Rewrite(p), None) => put_frame(&mut self.cout, cseq, &p),
                (Out::Pass, None) => put_frame(&mut self.cout, cseq, &frame.payload),
                (Out::Drop, None) => continue,
            }
            cseq = cseq.wrapping_add(1);
            if self.cout.len() >= FLUSH_AT {
                sent_any = true;
                self.flush().await?;
            }
        }
        Ok(t)
    }

    /// The server connection failed mid-command: drop it; tell the client if nothing of the
    /// response was sent yet. The session cannot continue when state was tied to it.
    async fn upstream_failed(&mut self, seq: u8, e: BackendError, sent_any: bool) -> SessionError {
        if let Some(mut s) = self.server.take() {
            s.mark_broken();
        }
        let _ = self.kill.clear();
        if !sent_any {
            self.cout.clear();
            let msg = format!("dgf: lost connection to the upstream server: {e}");
            self.send_err(seq, (2013, "HY000"), &msg);
            let _ = self.flush().await;
        }
        SessionError::Upstream(e.to_string())
    }

    /// Bookkeeping after a response: transaction status, schema, server-reported state.
    pub(super) fn after_response(&mut self, t: &Tracker) {
        if let Some(st) = t.status {
            self.in_trans = st & status::IN_TRANS != 0;
            if let Some(s) = self.server.as_mut() {
                s.status = st;
            }
        }
        if let Some(schema) = &t.schema {
            self.database = schema.clone();
            if let Some(s) = self.server.as_mut() {
                s.schema = schema.clone();
            }
        }
        let schema_only = t.last_ok.as_ref().is_some_and(|ok| only_schema_changed(&ok.session_state));
        if t.state_changed && !schema_only && !self.replaying {
            self.pin_to("session state reported by the server");
        }
    }

    pub(super) fn pin_to(&mut self, why: &'static str) {
        if self.pin.is_none() {
            tracing::debug!(reason = why, "client pinned to its server connection");
        }
        self.pin.get_or_insert(why);
        if let Some(s) = self.server.as_mut() {
            s.dirty = true;
        }
    }

    async fn query(&mut self, seq: u8, payload: Bytes) -> Result<(), SessionError> {
        let traits = scan(&payload[1..]);
        let replayable =
            traits.pin == Some("SET") && self.replay.len() < MAX_REPLAY && super::replay::replayable_set(&payload[1..]);
        self.replaying = replayable;
        let forwarded = self.forward(seq, &payload, Expect::ResultSet).await;
        self.replaying = false;
        let Some(t) = forwarded? else {
            self.finish_statement(Some("dgf".into()));
            return Ok(());
        };
        self.finish_statement(t.error.as_ref().map(|e| e.errno.to_string()));
        if replayable {
            if t.error.is_none() {
                // the connection now carries the client's settings: reset before reuse
                if let Some(s) = self.server.as_mut() {
                    s.dirty = true;
                }
                if !self.replay.contains(&payload) {
                    self.replay.push(payload.clone());
                }
            }
        } else if let Some(why) = traits.pin {
            self.pin_to(why);
        }
        if t.schema.is_none() && t.error.is_none() {
            if let Some(db) = traits.use_schema {
                self.database = db.clone();
                if let Some(s) = self.server.as_mut() {
                    s.schema = db;
                }
            }
        }
        let ok = t.last_ok.as_ref();
        self.sticky = traits.leaves_previous || ok.is_some_and(|o| o.last_insert_id != 0 || o.affected_rows != 0);
        self.maybe_release().await;
        Ok(())
    }

    /// The client is gone: clean or drop the server connection it held.
    async fn finish(&mut self) {
        // A statement still in flight (the upstream connection was lost, or the client left
        // mid-statement) gets its audit record too: 2013, lost connection.
        self.finish_statement(Some("2013".into()));
        if self.pin.is_some() || self.in_trans || self.long_data {
            if let Some(s) = self.server.as_mut() {
                s.dirty = true;
            }
        }
        self.release().await;
    }
}

/// Whether a session-state block only reports a schema change (tracker type 1).
fn only_schema_changed(state: &[u8]) -> bool {
    let mut r = dgf_protocols::mysql::packets::Reader::new(state, "session state");
    let mut any = false;
    while !r.is_empty() {
        let Ok(kind) = r.u8() else { return false };
        if kind != 1 || r.lenenc_bytes().is_err() {
            return false;
        }
        any = true;
    }
    any
}

impl MyConn {
    /// Whether this connection is known to carry state of the current client.
    pub(super) fn pin_worthy(&self) -> bool {
        self.status & status::IN_TRANS != 0
    }
}
