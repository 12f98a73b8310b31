//! Server side of the Postgres proxy: open, encrypt and log in an upstream connection, and the
//! pool manager that makes them.

use crate::pool::Manager;
use crate::stream::Stream;
use bytes::BytesMut;
use dgf_config::SslMode;
use dgf_protocols::postgres::messages::{self, btag, Authentication, ErrorFields};
use dgf_protocols::postgres::scram::ScramClient;
use dgf_protocols::postgres::{auth, startup, Frame, PgProtoError};
use rustls_pki_types::ServerName;
use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Cap on server messages (DataRows can be large; the server enforces its own 1 GiB limit).
pub const MAX_SERVER_MESSAGE: usize = 256 * 1024 * 1024;

/// Where and how to log in upstream. Shared by every pool of a route.
pub struct PgTarget {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Upstream user.
    pub user: String,
    /// Upstream password, if any. Never logged.
    pub password: Option<String>,
    /// TLS policy.
    pub sslmode: SslMode,
    /// Connector for TLS (None when sslmode = disable).
    pub tls: Option<TlsConnector>,
    /// Name to send as SNI and verify against.
    pub server_name: ServerName<'static>,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("sslmode", &self.sslmode)
            .finish_non_exhaustive()
    }
}

/// Why an upstream connection could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Network failure.
    #[error("upstream I/O: {0}")]
    Io(#[from] io::Error),
    /// The server refused us (bad database, auth failure upstream, too many connections...).
    #[error("upstream refused: {} ({})", .0.message, .0.code)]
    Refused(ErrorFields),
    /// The server broke the protocol or asked for something we cannot do.
    #[error("upstream protocol: {0}")]
    Protocol(String),
    /// TLS was required but refused or failed.
    #[error("upstream TLS: {0}")]
    Tls(String),
}

impl From<PgProtoError> for BackendError {
    fn from(e: PgProtoError) -> Self {
        BackendError::Protocol(e.to_string())
    }
}

impl BackendError {
    /// The error to show a client, keeping the server's SQLSTATE when it sent one.
    pub fn to_client_error(&self) -> ErrorFields {
        match self {
            BackendError::Refused(f) => ErrorFields::new("ERROR", &f.code, f.message.clone()),
            other => ErrorFields::new("ERROR", "08006", format!("dgf could not reach the upstream server: {other}")),
        }
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A logged-in upstream connection.
pub struct ServerConn {
    /// Socket.
    pub stream: Stream,
    /// Read buffer (bytes received and not yet processed).
    pub rbuf: BytesMut,
    /// Current values of run-time parameters as last set or reported.
    pub params: HashMap<String, String>,
    /// Backend key for CancelRequest.
    pub key: (i32, i32),
    /// dgf statement ids prepared on this connection.
    pub prepared: HashSet<u64>,
    /// Last ReadyForQuery status.
    pub status: u8,
    /// Connection id for logs.
    pub id: u64,
    /// Signature of the client parameters last synced onto this connection (0: none); a
    /// session whose own signature matches skips re-checking them (`Session::params_sig`).
    pub synced_for: u64,
    /// The reported parameters (`TRACKED`) as the connection started with them.
    pub defaults: Vec<(String, String)>,
    /// Settings the server does not report (search_path, statement_timeout, ...) may differ
    /// from the defaults: `RESET ALL` before another client gets the connection.
    pub dirty: bool,
    /// The session that made it dirty (`Session::session_id`; 0: none known).
    pub dirty_for: u64,
}

impl ServerConn {
    /// Connect, negotiate TLS, log in, and read parameters up to the first ReadyForQuery.
    pub async fn connect(target: &PgTarget, database: &str) -> Result<Self, BackendError> {
        let stream = open_stream(target).await?;
        let mut conn = ServerConn {
            stream,
            rbuf: BytesMut::with_capacity(8192),
            params: HashMap::new(),
            key: (0, 0),
            prepared: HashSet::new(),
            status: b'I',
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            synced_for: 0,
            defaults: Vec::new(),
            dirty: false,
            dirty_for: 0,
        };
        let startup = startup::encode_startup(&[("user", &target.user), ("database", database)]);
        conn.stream.write_all(&startup).await?;
        conn.login(target).await?;
        conn.defaults = super::relay::TRACKED
            .iter()
            .filter_map(|k| conn.params.get(*k).map(|v| ((*k).to_owned(), v.clone())))
            .collect();
        Ok(conn)
    }

    async fn login(&mut self, target: &PgTarget) -> Result<(), BackendError> {
        let mut scram: Option<ScramClient> = None;
        loop {
            let f = self.read_frame().await?;
            match f.tag() {
                btag::AUTH => {
                    let mut out = BytesMut::new();
                    match Authentication::decode(f.body())? {
                        Authentication::Ok => continue,
                        Authentication::Cleartext => {
                            messages::put_password(&mut out, self.password(target)?.as_bytes())
                        }
                        Authentication::Md5(salt) => {
                            let resp = auth::md5_response(self.password(target)?, &target.user, salt);
                            messages::put_password(&mut out, resp.as_bytes());
                        }
                        Authentication::Sasl(mechs) => {
                            if !mechs.iter().any(|m| m == "SCRAM-SHA-256") {
                                return Err(BackendError::Protocol(format!(
                                    "server offers SASL mechanisms {mechs:?}; dgf speaks SCRAM-SHA-256"
                                )));
                            }
                            let c = ScramClient::new(self.password(target)?);
                            messages::put_sasl_initial(&mut out, "SCRAM-SHA-256", &c.client_first());
                            scram = Some(c);
                        }
                        Authentication::SaslContinue(data) => {
                            let c = scram
                                .as_mut()
                                .ok_or_else(|| BackendError::Protocol("SASL continue without SASL".into()))?;
                            let fin = c
                                .handle_server_first(&data)
                                .map_err(|e| BackendError::Protocol(format!("SCRAM: {e}")))?;
                            messages::put_sasl_response(&mut out, &fin);
                        }
                        Authentication::SaslFinal(data) => {
                            let c = scram
                                .as_mut()
                                .ok_or_else(|| BackendError::Protocol("SASL final without SASL".into()))?;
                            c.handle_server_final(&data)
                                .map_err(|e| BackendError::Protocol(format!("SCRAM server signature: {e}")))?;
                            continue;
                        }
                        Authentication::Unsupported(code) => {
                            return Err(BackendError::Protocol(format!(
                                "unsupported upstream authentication method {code}"
                            )))
                        }
                    }
                    self.stream.write_all(&out).await?;
                }
                btag::PARAMETER_STATUS => {
                    let (k, v) = messages::parameter_status(f.body())?;
                    self.params.insert(k.to_owned(), v.to_owned());
                }
                btag::BACKEND_KEY_DATA => self.key = messages::backend_key_data(f.body())?,
                btag::READY_FOR_QUERY => {
                    self.status = messages::ready_status(f.body())?;
                    return Ok(());
                }
                btag::ERROR => return Err(BackendError::Refused(ErrorFields::decode(f.body())?)),
                btag::NOTICE | btag::NEGOTIATE_PROTOCOL => {}
                other => {
                    return Err(BackendError::Protocol(format!("unexpected message {:?} during login", other as char)))
                }
            }
        }
    }

    fn password<'a>(&self, target: &'a PgTarget) -> Result<&'a str, BackendError> {
        target.password.as_deref().ok_or_else(|| {
            BackendError::Protocol("upstream asks for a password and the route's upstream URL has none".into())
        })
    }

    /// Read one whole message.
    pub async fn read_frame(&mut self) -> Result<Frame, BackendError> {
        loop {
            if let Some(f) = dgf_protocols::postgres::frame::split_frame(&mut self.rbuf, MAX_SERVER_MESSAGE)? {
                return Ok(f);
            }
            self.rbuf.reserve(8192);
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Err(BackendError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// Run a query whose results nobody needs, up to ReadyForQuery. Fails on any error.
    pub async fn run_internal(&mut self, sql: &str) -> Result<(), BackendError> {
        let mut out = BytesMut::new();
        messages::put_query(&mut out, sql);
        self.stream.write_all(&out).await?;
        let mut failed = None;
        loop {
            let f = self.read_frame().await?;
            match f.tag() {
                btag::READY_FOR_QUERY => {
                    self.status = messages::ready_status(f.body())?;
                    return match failed {
                        Some(e) => Err(BackendError::Refused(e)),
                        None => Ok(()),
                    };
                }
                btag::ERROR => failed = Some(ErrorFields::decode(f.body())?),
                btag::PARAMETER_STATUS => {
                    let (k, v) = messages::parameter_status(f.body())?;
                    self.params.insert(k.to_owned(), v.to_owned());
                }
                _ => {}
            }
        }
    }
}

async fn open_stream(target: &PgTarget) -> Result<Stream, BackendError> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port)).await?;
    tcp.set_nodelay(true)?;
    let Some(tls) = target.tls.as_ref() else { return Ok(Stream::Plain(tcp)) };
    let mut tcp = tcp;
    tcp.write_all(&startup::encode_ssl_request()).await?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await?;
    match answer[0] {
        b'S' => {
            let s = tls.connect(target.server_name.clone(), tcp).await.map_err(|e| BackendError::Tls(e.to_string()))?;
            Ok(Stream::Tls(Box::new(s.into())))
        }
        b'N' if target.sslmode == SslMode::Prefer => {
            // The server said no; reconnect is not needed, the socket is still in startup state.
            Ok(Stream::Plain(tcp))
        }
        b'N' => Err(BackendError::Tls(format!("server refused TLS and sslmode is {:?}", target.sslmode))),
        _ => Err(BackendError::Protocol("unexpected answer to SSLRequest".into())),
    }
}

/// Send a CancelRequest for `key` to the upstream of `target`.
pub async fn send_cancel(target: &PgTarget, key: (i32, i32)) -> Result<(), BackendError> {
    let mut s = open_stream(target).await?;
    s.write_all(&startup::encode_cancel_request(key.0, key.1)).await?;
    s.flush().await?;
    // The server closes the connection when done; wait briefly so the request is not cut off.
    let mut b = [0u8; 1];
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut b)).await;
    Ok(())
}

/// Pool manager for one (route, database).
pub struct PgManager {
    /// Upstream.
    pub target: Arc<PgTarget>,
    /// Database to log in to.
    pub database: String,
    /// Query for health checks.
    pub health_query: String,
}

impl Manager for PgManager {
    /// Boxed: a connection moves through the pool, a hand-over channel and the session on
    /// every transaction; a pointer moves in one register, the struct in a few hundred bytes.
    type Conn = Box<ServerConn>;
    type Error = BackendError;

    async fn connect(&self) -> Result<Box<ServerConn>, BackendError> {
        ServerConn::connect(&self.target, &self.database).await.map(Box::new)
    }

    fn is_alive(&self, conn: &mut Box<ServerConn>) -> bool {
        conn.rbuf.is_empty() && conn.status == b'I' && conn.stream.is_quiet_and_open()
    }

    async fn check(&self, conn: &mut Box<ServerConn>) -> bool {
        let q = self.health_query.clone();
        matches!(tokio::time::timeout(std::time::Duration::from_secs(5), conn.run_internal(&q)).await, Ok(Ok(())))
    }
}
