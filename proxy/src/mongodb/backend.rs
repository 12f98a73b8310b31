//! Server side of the MongoDB route: open, encrypt and authenticate (SCRAM-SHA-256, or
//! SCRAM-SHA-1 when the server offers only that for the route's user) an upstream connection, learn the server's limits from its `hello`, and the pool manager.

use crate::pool::Manager;
use crate::stream::Stream;
use bson::{doc, Document, RawDocument};
use bytes::{Bytes, BytesMut};
use dgf_protocols::mongodb::frame::{self, Header, OpCode, HEADER_LEN};
use dgf_protocols::mongodb::{compress, msg, sasl, MongoProtoError, OpMsg};
use rustls_pki_types::ServerName;
use std::io;
use std::sync::{Arc, OnceLock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Cap on a server message (a reply batch is at most 16 MiB plus overhead; be generous).
pub const MAX_SERVER_MESSAGE: usize = 64 * 1024 * 1024;

/// Where and how to log in upstream.
pub struct MongoTarget {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// User (None: no authentication).
    pub user: Option<String>,
    /// Password. Never logged.
    pub password: Option<String>,
    /// Database holding the user (`authSource`, else the URL path, else `admin`).
    pub auth_source: String,
    /// `authMechanism` (SCRAM-SHA-256 or SCRAM-SHA-1); `None`: SCRAM-SHA-256 unless the
    /// server's `saslSupportedMechs` for the user offers only SCRAM-SHA-1.
    pub mechanism: Option<String>,
    /// TLS connector (`tls=true`), verifying the chain and host name.
    pub tls: Option<TlsConnector>,
    /// Name to verify.
    pub server_name: ServerName<'static>,
    /// Every host of the URL's seed list, `host`/`port` first.
    pub seeds: Vec<(String, u16)>,
    /// Find the replica set's primary among the seeds (and the `primary` their `hello` names)
    /// instead of connecting to `host` as it is: a seed list, `replicaSet` or
    /// `directConnection=false` was given.
    pub discover: bool,
    /// `replicaSet`: a primary must report this set name (for `mongodb+srv://`, else the DNS
    /// TXT record's).
    pub replica_set: Option<String>,
    /// `mongodb+srv://`: the seeds come from DNS.
    pub srv: Option<super::srv::Srv>,
    /// `authSource` was in the URL (a DNS TXT record's does not override it then).
    pub auth_source_from_url: bool,
    /// The primary found last (tried first by the next connection).
    pub primary: std::sync::Mutex<Option<(String, u16)>>,
}

impl std::fmt::Debug for MongoTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Limits the upstream announced in its `hello` (dgf repeats them to clients).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// maxBsonObjectSize.
    pub max_bson: i32,
    /// maxMessageSizeBytes.
    pub max_message: i32,
    /// maxWriteBatchSize.
    pub max_write_batch: i32,
    /// minWireVersion.
    pub min_wire: i32,
    /// maxWireVersion.
    pub max_wire: i32,
    /// logicalSessionTimeoutMinutes (None: sessions unsupported).
    pub session_timeout: Option<i32>,
}

impl Limits {
    fn from_hello(d: &Document) -> Self {
        let int = |k: &str, def: i32| match d.get(k) {
            Some(bson::Bson::Int32(i)) => *i,
            Some(bson::Bson::Int64(i)) => i32::try_from(*i).unwrap_or(def),
            Some(bson::Bson::Double(f)) => *f as i32,
            _ => def,
        };
        Limits {
            max_bson: int("maxBsonObjectSize", 16 * 1024 * 1024),
            max_message: int("maxMessageSizeBytes", 48_000_000),
            max_write_batch: int("maxWriteBatchSize", 100_000),
            min_wire: int("minWireVersion", 0),
            max_wire: int("maxWireVersion", 6),
            session_timeout: d
                .contains_key("logicalSessionTimeoutMinutes")
                .then(|| int("logicalSessionTimeoutMinutes", 30)),
        }
    }
}

/// Why an upstream connection could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Network failure.
    #[error("upstream I/O: {0}")]
    Io(#[from] io::Error),
    /// The upstream sent something we cannot parse.
    #[error("upstream protocol: {0}")]
    Proto(#[from] MongoProtoError),
    /// TLS handshake failed.
    #[error("upstream TLS: {0}")]
    Tls(String),
    /// Authentication with the route's credentials failed.
    #[error("upstream authentication failed: {0}")]
    Auth(String),
    /// The upstream closed the connection.
    #[error("upstream closed the connection")]
    Closed,
    /// No host of the seed list is (or names) a writable primary.
    #[error("no primary found ({0})")]
    NoPrimary(String),
}

/// One upstream message, kept whole so it can be forwarded as is.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Header.
    pub header: Header,
    /// Whole message bytes (header included).
    pub bytes: Bytes,
}

impl Frame {
    /// Bytes after the header.
    pub fn body(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..]
    }
}

/// An authenticated upstream connection.
pub struct MongoConn {
    stream: Stream,
    buf: BytesMut,
    next_id: i32,
}

impl MongoConn {
    /// Send raw message bytes.
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Read one message (OP_COMPRESSED is unwrapped).
    pub async fn recv(&mut self) -> Result<Frame, BackendError> {
        loop {
            if let Some(len) = frame::needed(&self.buf, MAX_SERVER_MESSAGE)? {
                if self.buf.len() >= len {
                    let bytes = self.buf.split_to(len).freeze();
                    let header = Header::parse(&bytes)?;
                    if header.op_code == OpCode::Compressed.code() {
                        let (m, _) = compress::decompress(&header, &bytes[HEADER_LEN..], MAX_SERVER_MESSAGE)?;
                        return Ok(Frame { header: m.header, bytes: m.to_bytes().freeze() });
                    }
                    return Ok(Frame { header, bytes });
                }
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(BackendError::Closed);
            }
        }
    }

    /// Run a command of dgf's own and return the reply body.
    pub async fn command(&mut self, cmd: &Document) -> Result<Document, BackendError> {
        let body = cmd.to_vec().map_err(|_| MongoProtoError::Bson("encode"))?;
        self.next_id = self.next_id.wrapping_add(1);
        let mut out = BytesMut::new();
        msg::put_msg(&mut out, self.next_id, 0, 0, &body, &[]);
        self.send(&out).await?;
        let f = self.recv().await?;
        if f.header.op_code != OpCode::Msg.code() {
            return Err(MongoProtoError::UnsupportedOpCode(f.header.op_code).into());
        }
        let m = OpMsg::parse(&f.header, f.body(), None)?;
        let raw = RawDocument::from_bytes(m.body).map_err(|_| MongoProtoError::Bson("reply"))?;
        Document::try_from(raw).map_err(|_| MongoProtoError::Bson("reply").into())
    }

    /// Whether the socket is open and silent.
    pub fn is_quiet_and_open(&self) -> bool {
        self.buf.is_empty() && self.stream.is_quiet_and_open()
    }
}

fn ok(d: &Document) -> bool {
    match d.get("ok") {
        Some(bson::Bson::Double(f)) => *f == 1.0,
        Some(bson::Bson::Int32(i)) => *i == 1,
        Some(bson::Bson::Int64(i)) => *i == 1,
        _ => false,
    }
}

fn errmsg(d: &Document) -> String {
    d.get_str("errmsg").unwrap_or("no error message").to_owned()
}

fn payload(d: &Document) -> Result<Vec<u8>, BackendError> {
    match d.get("payload") {
        Some(bson::Bson::Binary(b)) => Ok(b.bytes.clone()),
        _ => Err(BackendError::Auth("reply without payload".into())),
    }
}

fn binary(b: Vec<u8>) -> bson::Binary {
    bson::Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: b }
}

/// Open and encrypt a connection to `host:port` and send `hello`; the connection and the reply.
/// `ip`: the address DNS gave for `host` (a `mongodb+srv://` target), else `host` is resolved
/// by the system.
async fn open(
    t: &MongoTarget,
    host: &str,
    port: u16,
    ip: Option<std::net::IpAddr>,
) -> Result<(MongoConn, Document), BackendError> {
    let tcp = match ip {
        Some(ip) => TcpStream::connect((ip, port)).await?,
        None => TcpStream::connect((host, port)).await?,
    };
    let _ = tcp.set_nodelay(true);
    let stream = match &t.tls {
        None => Stream::Plain(tcp),
        Some(c) => {
            let name = if host == t.host {
                t.server_name.clone()
            } else {
                ServerName::try_from(host.to_owned()).map_err(|e| BackendError::Tls(e.to_string()))?
            };
            let s = c.connect(name, tcp).await.map_err(|e| BackendError::Tls(e.to_string()))?;
            Stream::Tls(Box::new(tokio_rustls::TlsStream::Client(s)))
        }
    };
    let mut conn = MongoConn { stream, buf: BytesMut::with_capacity(16 * 1024), next_id: 0 };
    let mut hello = doc! {
        "hello": 1,
        "client": { "driver": { "name": "dgf", "version": env!("CARGO_PKG_VERSION") }, "os": { "type": std::env::consts::OS } },
        "$db": "admin",
    };
    if let Some(user) = &t.user {
        hello.insert("saslSupportedMechs", format!("{}.{user}", t.auth_source));
    }
    let hello = conn.command(&hello).await?;
    if !ok(&hello) {
        return Err(BackendError::Auth(format!("hello refused: {}", errmsg(&hello))));
    }
    Ok((conn, hello))
}

/// A `hello` from a server that takes writes for the set `t` names (a primary, a standalone
/// when no set is named, or a mongos).
fn is_writable_primary(set: Option<&str>, hello: &Document) -> bool {
    let primary = hello.get_bool("isWritablePrimary").or_else(|_| hello.get_bool("ismaster")).unwrap_or(false);
    primary && set.is_none_or(|set| hello.get_str("setName").ok() == Some(set))
}

/// `host:port` (or `[v6]:port`) as a `hello` names a member.
fn member(s: &str) -> Option<(String, u16)> {
    let (h, p) = s.rsplit_once(':')?;
    let h = h.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(h);
    if h.is_empty() {
        return None;
    }
    Some((h.to_owned(), p.parse().ok()?))
}

/// A seed: host, port, and the address DNS gave for it (`mongodb+srv://`).
type Seed = (String, u16, Option<std::net::IpAddr>);

/// The seeds to look for the primary among, the set name a primary must report, and the
/// `authSource` of a `mongodb+srv://` TXT record.
async fn seed_list(t: &MongoTarget) -> Result<(Vec<Seed>, Option<String>, Option<String>), BackendError> {
    Ok(match &t.srv {
        Some(srv) => {
            let s = srv.seeds().await.map_err(BackendError::NoPrimary)?;
            let set = t.replica_set.clone().or(s.replica_set);
            (s.hosts.into_iter().map(|(h, p, ip)| (h, p, Some(ip))).collect(), set, s.auth_source)
        }
        None => (t.seeds.iter().map(|(h, p)| (h.clone(), *p, None)).collect(), t.replica_set.clone(), None),
    })
}

/// For `/ready` on a replica-set target: whether a writable primary answers `hello` (no login:
/// nothing is opened that the provider counts for long). Every seed is asked at once, each
/// within `wait`, then the primary a member names; `Err` says what was found instead.
pub async fn primary_answers(t: &MongoTarget, wait: std::time::Duration) -> Result<(), String> {
    let (seeds, set, _) = seed_list(t).await.map_err(|e| e.to_string())?;
    let ask = |host: String, port: u16, ip: Option<std::net::IpAddr>| async move {
        let r = tokio::time::timeout(wait, open(t, &host, port, ip)).await;
        (host, port, r)
    };
    let mut named = Vec::new();
    let mut why = Vec::new();
    for (host, port, r) in futures_util::future::join_all(seeds.iter().cloned().map(|(h, p, ip)| ask(h, p, ip))).await {
        match r {
            Ok(Ok((_, hello))) if is_writable_primary(set.as_deref(), &hello) => return Ok(()),
            Ok(Ok((_, hello))) => {
                if let Some(m) = hello.get_str("primary").ok().and_then(member) {
                    if !seeds.iter().any(|s| s.0 == m.0 && s.1 == m.1) && !named.contains(&m) {
                        named.push(m);
                    }
                }
                why.push(format!("{host}:{port} is not the primary"));
            }
            Ok(Err(e)) => why.push(format!("{host}:{port}: {e}")),
            Err(_) => why.push(format!("{host}:{port}: no answer within {} ms", wait.as_millis())),
        }
    }
    for (host, port, r) in futures_util::future::join_all(named.into_iter().map(|(h, p)| ask(h, p, None))).await {
        match r {
            Ok(Ok((_, hello))) if is_writable_primary(set.as_deref(), &hello) => return Ok(()),
            Ok(Ok(_)) => why.push(format!("{host}:{port} (named primary) is not the primary")),
            Ok(Err(e)) => why.push(format!("{host}:{port} (named primary): {e}")),
            Err(_) => why.push(format!("{host}:{port} (named primary): no answer within {} ms", wait.as_millis())),
        }
    }
    Err(format!("no primary found: {}", why.join("; ")))
}

/// The replica set's primary among the seeds: the last one found first, then each seed, and
/// right after a member that is not primary, the primary it names.
async fn find_primary(t: &MongoTarget) -> Result<(MongoConn, Document, Option<String>), BackendError> {
    let (seeds, set, auth_source) = seed_list(t).await?;
    let last = t.primary.lock().unwrap_or_else(|p| p.into_inner()).clone();
    // The primary found last, with the address it was reached at when DNS gave one.
    let last = last.map(|(h, p)| {
        let ip = seeds.iter().find(|s| s.0 == h && s.1 == p).and_then(|s| s.2);
        (h, p, ip)
    });
    let mut queue: std::collections::VecDeque<Seed> = last.into_iter().chain(seeds).collect();
    let mut tried: Vec<(String, u16)> = Vec::new();
    let mut why = Vec::new();
    while let Some((host, port, ip)) = queue.pop_front() {
        if tried.contains(&(host.clone(), port)) || tried.len() >= 16 {
            continue;
        }
        tried.push((host.clone(), port));
        match open(t, &host, port, ip).await {
            Ok((conn, hello)) if is_writable_primary(set.as_deref(), &hello) => {
                *t.primary.lock().unwrap_or_else(|p| p.into_inner()) = Some((host, port));
                return Ok((conn, hello, auth_source));
            }
            Ok((_, hello)) => {
                if let Some((h, p)) = hello.get_str("primary").ok().and_then(member) {
                    queue.push_front((h, p, None));
                }
                why.push(format!("{host}:{port} is not the primary"));
            }
            Err(e) => why.push(format!("{host}:{port}: {e}")),
        }
    }
    Err(BackendError::NoPrimary(why.join("; ")))
}

/// Open, encrypt, greet and authenticate one upstream connection (to the primary, when the
/// target asks for discovery).
pub async fn connect(t: &MongoTarget) -> Result<(MongoConn, Limits), BackendError> {
    let (mut conn, hello, txt_auth_source) = if t.discover {
        find_primary(t).await?
    } else {
        let (c, h) = open(t, &t.host, t.port, None).await?;
        (c, h, None)
    };
    let limits = Limits::from_hello(&hello);
    if let (Some(user), Some(password)) = (&t.user, &t.password) {
        let db = match txt_auth_source.as_deref() {
            Some(txt) if !t.auth_source_from_url => txt,
            _ => t.auth_source.as_str(),
        };
        let offered: Option<Vec<&str>> =
            hello.get_array("saslSupportedMechs").ok().map(|a| a.iter().filter_map(bson::Bson::as_str).collect());
        let forced = t.mechanism.as_deref().map(|m| vec![m]);
        let mut scram = sasl::Client::choose(forced.as_deref().or(offered.as_deref()), user, password);
        let r = conn
            .command(&doc! {
                "saslStart": 1, "mechanism": scram.mechanism(), "payload": binary(scram.client_first()),
                "options": { "skipEmptyExchange": true }, "$db": db,
            })
            .await?;
        if !ok(&r) {
            return Err(BackendError::Auth(errmsg(&r)));
        }
        let conv = r.get("conversationId").cloned().unwrap_or(bson::Bson::Int32(1));
        let fin = scram.handle_server_first(&payload(&r)?).map_err(|e| BackendError::Auth(e.to_string()))?;
        let mut r = conn
            .command(&doc! { "saslContinue": 1, "conversationId": conv.clone(), "payload": binary(fin), "$db": db })
            .await?;
        if !ok(&r) {
            return Err(BackendError::Auth(errmsg(&r)));
        }
        scram.handle_server_final(&payload(&r)?).map_err(|e| BackendError::Auth(e.to_string()))?;
        while !r.get_bool("done").unwrap_or(false) {
            r = conn
                .command(
                    &doc! { "saslContinue": 1, "conversationId": conv.clone(), "payload": binary(vec![]), "$db": db },
                )
                .await?;
            if !ok(&r) {
                return Err(BackendError::Auth(errmsg(&r)));
            }
        }
    }
    Ok((conn, limits))
}

/// Makes upstream connections for a route's pool; remembers the upstream's limits from the
/// first `hello` (the pool's lifetime: a changed upstream URL builds a new pool).
pub struct MongoManager {
    /// Upstream.
    pub target: Arc<MongoTarget>,
    /// Limits from the first successful hello.
    pub limits: OnceLock<Limits>,
}

/// How long a pooled connection's health check may take.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Manager for MongoManager {
    /// Boxed: a connection moves through the pool and the session on every command.
    type Conn = Box<MongoConn>;
    type Error = BackendError;

    async fn connect(&self) -> Result<Box<MongoConn>, BackendError> {
        let (c, l) = connect(&self.target).await?;
        let _ = self.limits.set(l);
        Ok(Box::new(c))
    }

    fn is_alive(&self, conn: &mut Box<MongoConn>) -> bool {
        conn.is_quiet_and_open()
    }

    /// A replica-set target's connection must still lead to the primary: after a failover
    /// the old primary answers `ping` as a secondary, so it is asked `hello` instead.
    /// Bounded by [`CHECK_TIMEOUT`]: a connection that does not answer in time is closed.
    async fn check(&self, conn: &mut Box<MongoConn>) -> bool {
        let within = |f| async move { tokio::time::timeout(CHECK_TIMEOUT, f).await.ok() };
        if self.target.discover {
            let hello = within(conn.command(&doc! { "hello": 1, "$db": "admin" })).await;
            return matches!(hello, Some(Ok(h)) if ok(&h) && is_writable_primary(self.target.replica_set.as_deref(), &h));
        }
        matches!(within(conn.command(&doc! { "ping": 1, "$db": "admin" })).await, Some(Ok(d)) if ok(&d))
    }
}

#[cfg(test)]
mod tests {
    use super::{is_writable_primary, member};
    use bson::doc;

    #[test]
    fn members_and_primaries() {
        assert_eq!(member("ac-1.xyz.mongodb.net:27017"), Some(("ac-1.xyz.mongodb.net".into(), 27017)));
        assert_eq!(member("[::1]:27018"), Some(("::1".into(), 27018)));
        for bad in ["host", "host:", "host:99999", ":", ":27017", "[]:27017"] {
            assert_eq!(member(bad), None, "{bad}");
        }
        let primary = doc! { "isWritablePrimary": true, "setName": "rs0" };
        assert!(is_writable_primary(Some("rs0"), &primary));
        assert!(is_writable_primary(None, &primary));
        assert!(!is_writable_primary(Some("other"), &primary), "another set's primary");
        assert!(!is_writable_primary(Some("rs0"), &doc! { "isWritablePrimary": true }), "a standalone is no set");
        assert!(is_writable_primary(None, &doc! { "ismaster": true }), "legacy field");
        assert!(!is_writable_primary(None, &doc! { "isWritablePrimary": false, "secondary": true }));
    }
}
