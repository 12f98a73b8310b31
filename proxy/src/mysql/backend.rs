//! Server side of the MySQL proxy: open, encrypt and log in an upstream connection, run the
//! few commands dgf issues itself (reset, schema switch, option sync, ping), and the pool
//! manager that makes connections.

use crate::pool::Manager;
use crate::stream::Stream;
use bytes::{Bytes, BytesMut};
use dgf_config::MySslMode;
use dgf_protocols::mysql::auth::{ClientAuth, ClientStep};
use dgf_protocols::mysql::consts::{cap, com, status};
use dgf_protocols::mysql::frame::{put_packet, split_packet};
use dgf_protocols::mysql::handshake::{collation_names, encode_ssl_request, HandshakeResponse, ServerGreeting};
use dgf_protocols::mysql::packets::{is_eof, ErrPacket, OkPacket};
use dgf_protocols::mysql::response::{Expect, Tracker};
use dgf_protocols::mysql::MyProtoError;
use rustls_pki_types::ServerName;
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Cap on one logical packet from a server (rows can be large; max_allowed_packet is 1 GiB).
pub const MAX_SERVER_PACKET: usize = 256 * 1024 * 1024;

/// A write buffer that grew past this (a huge command) is not kept.
const KEEP_WRITE_BUFFER: usize = 64 * 1024;

/// Server-side prepared statements kept per upstream connection.
pub const MAX_PREPARED_PER_CONN: usize = 256;

/// Capabilities dgf asks of every upstream connection. Classic EOF packets (no
/// DEPRECATE_EOF) so result sets always carry intermediate status; session tracking so state
/// changes are reported by the server itself.
pub const UPSTREAM_CAPS: u32 = cap::LONG_PASSWORD
    | cap::LONG_FLAG
    | cap::PROTOCOL_41
    | cap::TRANSACTIONS
    | cap::SECURE_CONNECTION
    | cap::MULTI_STATEMENTS
    | cap::MULTI_RESULTS
    | cap::PS_MULTI_RESULTS
    | cap::PLUGIN_AUTH
    | cap::PLUGIN_AUTH_LENENC_CLIENT_DATA
    | cap::CONNECT_ATTRS
    | cap::SESSION_TRACK;

/// Where and how to log in upstream. Shared by every pool of a route.
pub struct MyTarget {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Upstream user.
    pub user: String,
    /// Upstream password (empty for none). Never logged.
    pub password: String,
    /// TLS policy.
    pub ssl_mode: MySslMode,
    /// Connector (None when DISABLED).
    pub tls: Option<TlsConnector>,
    /// Name to send as SNI and verify against.
    pub server_name: ServerName<'static>,
}

impl std::fmt::Debug for MyTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MyTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("ssl_mode", &self.ssl_mode)
            .finish_non_exhaustive()
    }
}

/// What a pool's connections have in common: the login settings that cannot be changed
/// afterwards. Schema and character set are synchronised per checkout instead.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// CLIENT_FOUND_ROWS (changes affected-row counts; fixed at login).
    pub found_rows: bool,
}

/// Collation every upstream connection logs in with (utf8mb4_general_ci).
pub const LOGIN_COLLATION: u8 = 45;

/// Why an upstream connection could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Network failure.
    #[error("upstream I/O: {0}")]
    Io(#[from] io::Error),
    /// The server refused (bad database, auth failure upstream, too many connections...).
    #[error("upstream refused: {} ({})", .0.message, .0.errno)]
    Refused(ErrPacket),
    /// The server broke the protocol or asked for something dgf cannot do.
    #[error("upstream protocol: {0}")]
    Protocol(String),
    /// TLS was required but refused or failed.
    #[error("upstream TLS: {0}")]
    Tls(String),
}

impl From<MyProtoError> for BackendError {
    fn from(e: MyProtoError) -> Self {
        BackendError::Protocol(e.to_string())
    }
}

impl BackendError {
    /// The ERR packet to show a client, keeping the server's errno when it sent one.
    pub fn to_client_error(&self) -> ErrPacket {
        match self {
            BackendError::Refused(e) => e.clone(),
            other => ErrPacket {
                errno: 2003,
                sqlstate: "HY000".into(),
                message: format!("dgf could not reach the upstream server: {other}"),
            },
        }
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A logged-in upstream connection.
pub struct MyConn {
    /// Socket.
    pub stream: Stream,
    /// Read buffer.
    pub rbuf: BytesMut,
    /// Write buffer, reused for every command dgf sends.
    pub wbuf: BytesMut,
    /// Negotiated capabilities.
    pub caps: u32,
    /// Server version string.
    pub version: String,
    /// Server thread id.
    pub thread_id: u32,
    /// Current schema as far as dgf knows ("" for none).
    pub schema: String,
    /// Collation of the connection's character set variables (0: unknown, e.g. after a reset).
    pub collation: u8,
    /// Whether multi-statements are on (COM_SET_OPTION).
    pub multi_statements: bool,
    /// dgf statement id -> server statement id.
    pub prepared: HashMap<u64, u32>,
    /// Session state was created here (needs COM_RESET_CONNECTION before reuse).
    pub dirty: bool,
    /// Last server status flags.
    pub status: u16,
    /// Connection id for logs.
    pub id: u64,
}

impl MyConn {
    /// Connect, negotiate TLS, log in and prepare the session.
    pub async fn connect(target: &MyTarget, key: &PoolKey) -> Result<Self, BackendError> {
        let tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
        let _ = tcp.set_nodelay(true);
        let mut stream = Stream::Plain(tcp);
        let mut rbuf = BytesMut::with_capacity(8192);
        let (seq, greeting) = read_packet_from(&mut stream, &mut rbuf).await?;
        if greeting.first() == Some(&0xff) {
            return Err(BackendError::Refused(ErrPacket::parse(&greeting)?));
        }
        let g = ServerGreeting::parse(&greeting)?;
        let mut caps = UPSTREAM_CAPS & g.capabilities;
        if key.found_rows {
            caps |= cap::FOUND_ROWS;
        }
        let mut seq = seq.wrapping_add(1);
        let want_tls = target.ssl_mode != MySslMode::Disabled;
        let server_tls = g.capabilities & cap::SSL != 0;
        if want_tls && !server_tls && target.ssl_mode != MySslMode::Preferred {
            return Err(BackendError::Tls("the server does not support TLS but ssl-mode requires it".into()));
        }
        if let (true, true, Some(connector)) = (want_tls, server_tls, &target.tls) {
            caps |= cap::SSL;
            let mut b = BytesMut::new();
            encode_ssl_request(&mut b, caps, LOGIN_COLLATION);
            let mut out = BytesMut::new();
            seq = put_packet(&mut out, seq, &b);
            stream.write_all(&out).await?;
            stream = match stream {
                Stream::Plain(tcp) => {
                    let tls = connector
                        .connect(target.server_name.clone(), tcp)
                        .await
                        .map_err(|e| BackendError::Tls(e.to_string()))?;
                    Stream::Tls(Box::new(tls.into()))
                }
                tls => tls,
            };
        }
        let mut conn = MyConn {
            stream,
            rbuf,
            wbuf: BytesMut::new(),
            caps: 0,
            version: g.server_version.clone(),
            thread_id: g.connection_id,
            schema: String::new(),
            collation: LOGIN_COLLATION,
            multi_statements: true,
            prepared: HashMap::new(),
            dirty: false,
            status: status::AUTOCOMMIT,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        };
        let mut auth = ClientAuth::new(target.password.as_bytes(), conn.stream.is_tls(), &g.plugin, &g.salt);
        let resp = HandshakeResponse {
            capabilities: caps,
            max_packet: 1 << 30,
            collation: LOGIN_COLLATION,
            user: target.user.clone(),
            auth_response: auth.initial(),
            database: None,
            plugin: Some(auth.plugin().to_owned()),
            attrs: vec![("program_name".into(), "dgf".into())],
        };
        let mut b = BytesMut::new();
        resp.encode(&mut b);
        conn.send(seq, &b).await?;
        loop {
            let (s, p) = conn.read_packet().await?;
            match auth.next(&p) {
                ClientStep::Done => break,
                ClientStep::Wait => {}
                ClientStep::Send(data) => conn.send(s.wrapping_add(1), &data).await?,
                ClientStep::Refused(e) => return Err(BackendError::Refused(e)),
                ClientStep::Unsupported(m) => return Err(BackendError::Protocol(m)),
            }
        }
        conn.caps = caps;
        conn.init_session().await?;
        Ok(conn)
    }

    /// Session settings every pooled connection starts with (again after a reset).
    async fn init_session(&mut self) -> Result<(), BackendError> {
        if self.caps & cap::SESSION_TRACK != 0 {
            // Best effort: servers without the variable still work (text heuristics pin).
            let _ = self.query_drain("SET SESSION session_track_state_change = ON").await?;
        }
        Ok(())
    }

    async fn send(&mut self, seq: u8, payload: &[u8]) -> Result<(), BackendError> {
        self.wbuf.clear();
        put_packet(&mut self.wbuf, seq, payload);
        let r = self.stream.write_all(&self.wbuf).await;
        if self.wbuf.capacity() > KEEP_WRITE_BUFFER {
            self.wbuf = BytesMut::new();
        }
        r?;
        Ok(())
    }

    /// Read one whole logical packet.
    pub async fn read_packet(&mut self) -> Result<(u8, Bytes), BackendError> {
        read_packet_from(&mut self.stream, &mut self.rbuf).await
    }

    /// Send a command (sequence id 0).
    pub async fn command(&mut self, payload: &[u8]) -> Result<(), BackendError> {
        self.send(0, payload).await
    }

    /// Run a command answered by one OK / ERR / EOF packet.
    pub async fn simple(&mut self, payload: &[u8]) -> Result<Result<OkPacket, ErrPacket>, BackendError> {
        self.command(payload).await?;
        let (_, p) = self.read_packet().await?;
        if p.first() == Some(&0xff) {
            return Ok(Err(ErrPacket::parse(&p)?));
        }
        if is_eof(&p) {
            return Ok(Ok(OkPacket::default()));
        }
        let ok = OkPacket::parse(&p, self.caps)?;
        self.status = ok.status;
        Ok(Ok(ok))
    }

    /// Run a text query and throw its results away; Err(ErrPacket) if it failed.
    pub async fn query_drain(&mut self, sql: &str) -> Result<Result<(), ErrPacket>, BackendError> {
        let mut p = Vec::with_capacity(sql.len() + 1);
        p.push(com::QUERY);
        p.extend_from_slice(sql.as_bytes());
        self.command(&p).await?;
        let mut t = Tracker::new(Expect::ResultSet, self.caps, self.caps);
        let mut first_err = None;
        while !t.done() {
            let (_, p) = self.read_packet().await?;
            t.feed(&p)?;
            if let Some(e) = t.error.take() {
                first_err.get_or_insert(e);
            }
        }
        if let Some(s) = t.status {
            self.status = s;
        }
        Ok(first_err.map_or(Ok(()), Err))
    }

    /// Run a text query and return its rows (NULL as `None`); Err(ErrPacket) if it failed.
    /// More than `max` rows, or a row of 16 MiB or more, is an error.
    pub async fn query_rows(
        &mut self,
        sql: &str,
        max: usize,
    ) -> Result<Result<Vec<Vec<Option<String>>>, ErrPacket>, BackendError> {
        use dgf_protocols::mysql::response::Kind;
        let mut p = Vec::with_capacity(sql.len() + 1);
        p.push(com::QUERY);
        p.extend_from_slice(sql.as_bytes());
        self.command(&p).await?;
        let mut t = Tracker::new(Expect::ResultSet, self.caps, self.caps);
        let (mut rows, mut first_err, mut failed) = (Vec::new(), None, None);
        while !t.done() {
            let (_, p) = self.read_packet().await?;
            t.feed(&p)?;
            if let Some(e) = t.error.take() {
                first_err.get_or_insert(e);
            }
            match t.last {
                Kind::Row if rows.len() < max => rows.push(text_row(&p)?),
                Kind::Row => failed = Some(format!("more than {max} rows")),
                Kind::Continuation => failed = Some("a row of 16 MiB or more".to_owned()),
                _ => {}
            }
        }
        if let Some(s) = t.status {
            self.status = s;
        }
        if let Some(why) = failed {
            return Err(BackendError::Protocol(why));
        }
        Ok(first_err.map_or(Ok(rows), Err))
    }

    /// Switch the default schema (COM_INIT_DB).
    pub async fn init_db(&mut self, db: &str) -> Result<Result<(), ErrPacket>, BackendError> {
        let mut p = vec![com::INIT_DB];
        p.extend_from_slice(db.as_bytes());
        let r = self.simple(&p).await?;
        if r.is_ok() {
            self.schema = db.to_owned();
        }
        Ok(r.map(|_| ()))
    }

    /// Turn multi-statements on or off (COM_SET_OPTION).
    pub async fn set_multi_statements(&mut self, on: bool) -> Result<(), BackendError> {
        let p = [com::SET_OPTION, if on { 0 } else { 1 }, 0];
        match self.simple(&p).await? {
            Ok(_) => {
                self.multi_statements = on;
                Ok(())
            }
            Err(e) => Err(BackendError::Refused(e)),
        }
    }

    /// Record that dgf statement `id` is prepared here as `server_id`. Past
    /// [`MAX_PREPARED_PER_CONN`] another statement is closed on the server (it is prepared
    /// again when next needed), so distinct statement texts cannot exhaust the server's
    /// max_prepared_stmt_count.
    pub async fn remember_statement(&mut self, id: u64, server_id: u32) -> Result<(), BackendError> {
        self.prepared.insert(id, server_id);
        if self.prepared.len() > MAX_PREPARED_PER_CONN {
            if let Some((&old, &sid)) = self.prepared.iter().find(|(k, _)| **k != id) {
                self.prepared.remove(&old);
                let mut p = vec![com::STMT_CLOSE];
                p.extend_from_slice(&sid.to_le_bytes());
                self.command(&p).await?;
            }
        }
        Ok(())
    }

    /// Switch character set and collation (`SET NAMES`).
    pub async fn set_collation(&mut self, id: u8) -> Result<Result<(), ErrPacket>, BackendError> {
        let Some((cs, coll)) = collation_names(id as u16) else {
            return Ok(Ok(()));
        };
        let r = self.query_drain(&format!("SET NAMES {cs} COLLATE {coll}")).await?;
        if r.is_ok() {
            self.collation = id;
        }
        Ok(r)
    }

    /// COM_RESET_CONNECTION: drop transactions, variables, temporary tables, locks and
    /// prepared statements; then restore dgf's session settings. The schema is kept; the
    /// character set variables fall back to the server defaults (synchronised on checkout).
    pub async fn reset(&mut self) -> Result<(), BackendError> {
        if let Err(e) = self.simple(&[com::RESET_CONNECTION]).await? {
            return Err(BackendError::Refused(e));
        }
        self.prepared.clear();
        self.collation = 0;
        // COM_RESET_CONNECTION leaves the COM_SET_OPTION state as it was (MariaDB): a connection
        // a client without CLIENT_MULTI_STATEMENTS used is turned back to dgf's default here,
        // or the next client that wants them would be refused every multi-statement query.
        if !self.multi_statements {
            self.set_multi_statements(true).await?;
        }
        self.init_session().await?;
        self.dirty = false;
        Ok(())
    }
}

async fn read_packet_from(stream: &mut Stream, rbuf: &mut BytesMut) -> Result<(u8, Bytes), BackendError> {
    loop {
        if let Some((first, _last, p)) = split_packet(rbuf, MAX_SERVER_PACKET)? {
            return Ok((first, p));
        }
        if stream.read_buf(rbuf).await? == 0 {
            return Err(BackendError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

/// Pool manager: makes connections for one (route, key).
pub struct MyManager {
    /// Upstream.
    pub target: Arc<MyTarget>,
    /// What the pool's connections share.
    pub key: PoolKey,
    /// Last server version seen (shown to clients in the greeting).
    pub version: Arc<arc_swap::ArcSwapOption<String>>,
}

impl Manager for MyManager {
    /// Boxed: a connection moves through the pool and the session on every transaction.
    type Conn = Box<MyConn>;
    type Error = BackendError;

    async fn connect(&self) -> Result<Box<MyConn>, BackendError> {
        let c = MyConn::connect(&self.target, &self.key).await?;
        self.version.store(Some(Arc::new(c.version.clone())));
        Ok(Box::new(c))
    }

    fn is_alive(&self, conn: &mut Box<MyConn>) -> bool {
        conn.rbuf.is_empty() && conn.stream.is_quiet_and_open()
    }

    async fn check(&self, conn: &mut Box<MyConn>) -> bool {
        matches!(conn.simple(&[com::PING]).await, Ok(Ok(_)))
    }
}

/// The values of a text-protocol row (0xFB: NULL).
fn text_row(p: &[u8]) -> Result<Vec<Option<String>>, BackendError> {
    let mut r = dgf_protocols::mysql::packets::Reader::new(p, "row");
    let mut out = Vec::new();
    while !r.is_empty() {
        if r.rest().first() == Some(&0xfb) {
            r.u8()?;
            out.push(None);
        } else {
            out.push(Some(String::from_utf8_lossy(r.lenenc_bytes()?).into_owned()));
        }
    }
    Ok(out)
}
