//! Upstream Redis connections: connect (TCP, TLS, HELLO with the route's credentials, SELECT),
//! and the multiplexed connection actor that pipelines batches from many clients over one
//! socket and routes each reply back through a FIFO of pending reply slots.

use crate::pool::{Manager, Pooled};
use crate::stream::Stream;
use bytes::{Buf, Bytes, BytesMut};
use dgf_protocols::redis::{decode, reply_len, Limits, RespError, Value};
use rustls_pki_types::ServerName;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

/// A database number no connection is ever on: forces a SELECT before the next command.
pub const DB_UNKNOWN: u32 = u32::MAX;

/// Where and how to connect.
pub struct RedisTarget {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// ACL user (None: `default`).
    pub user: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// Database selected on connect (URL path).
    pub db: u32,
    /// TLS connector for `rediss://`.
    pub tls: Option<TlsConnector>,
    /// Name verified in the server certificate.
    pub server_name: ServerName<'static>,
    /// CLIENT SETNAME for upstream connections (`dgf-<route>`), so operators can tell them apart.
    pub client_name: String,
}

/// Why an upstream connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Socket error.
    #[error("upstream I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The server refused our handshake (auth, SELECT).
    #[error("upstream refused the handshake: {0}")]
    Refused(String),
    /// The server sent something that is not RESP.
    #[error("upstream protocol: {0}")]
    Protocol(#[from] RespError),
}

/// A logged-in upstream socket (taken out by the connection actor; `None` afterwards).
pub struct RedisConn {
    /// The socket.
    pub stream: Option<Stream>,
    /// `redis_version` reported by HELLO.
    pub version: String,
}

/// Pool manager for a Redis route.
pub struct RedisManager {
    /// Upstream.
    pub target: Arc<RedisTarget>,
}

impl Manager for RedisManager {
    type Conn = RedisConn;
    type Error = UpstreamError;
    async fn connect(&self) -> Result<RedisConn, UpstreamError> {
        connect(&self.target).await
    }
    fn is_alive(&self, conn: &mut RedisConn) -> bool {
        conn.stream.as_ref().is_some_and(Stream::is_quiet_and_open)
    }
    async fn check(&self, _conn: &mut RedisConn) -> bool {
        true
    }
}

async fn read_reply(stream: &mut Stream, buf: &mut BytesMut) -> Result<Bytes, UpstreamError> {
    loop {
        if let Some(n) = reply_len(buf, &Limits::SERVER)? {
            return Ok(buf.split_to(n).freeze());
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(UpstreamError::Refused("connection closed during handshake".into()));
        }
    }
}

/// Open a connection: TCP (+TLS), `HELLO 2 [AUTH user pass]`, `SELECT db`.
pub async fn connect(t: &RedisTarget) -> Result<RedisConn, UpstreamError> {
    let tcp = TcpStream::connect((t.host.as_str(), t.port)).await?;
    let _ = tcp.set_nodelay(true);
    let mut stream = match &t.tls {
        None => Stream::Plain(tcp),
        Some(c) => Stream::Tls(Box::new(c.connect(t.server_name.clone(), tcp).await?.into())),
    };
    let mut cmd: Vec<&[u8]> = vec![b"HELLO", b"2"];
    if let Some(p) = &t.password {
        cmd.extend_from_slice(&[b"AUTH", t.user.as_deref().unwrap_or("default").as_bytes(), p.as_bytes()]);
    }
    cmd.extend_from_slice(&[b"SETNAME", t.client_name.as_bytes()]);
    let mut out = Vec::new();
    dgf_protocols::redis::request::encode_command(&mut out, cmd.into_iter());
    if t.db != 0 {
        let db = t.db.to_string();
        dgf_protocols::redis::request::encode_command(&mut out, [&b"SELECT"[..], db.as_bytes()].into_iter());
    }
    stream.write_all(&out).await?;
    let mut buf = BytesMut::with_capacity(1024);
    let hello = read_reply(&mut stream, &mut buf).await?;
    let version = match decode(&hello, &Limits::SERVER)? {
        Some((Value::Array(Some(items)), _)) => items
            .chunks(2)
            .find(|kv| kv[0].as_bytes() == Some(b"version"))
            .and_then(|kv| kv.get(1).and_then(Value::as_bytes))
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_else(|| "7.0.0".into()),
        Some((Value::Error(e), _)) => return Err(UpstreamError::Refused(String::from_utf8_lossy(e).into_owned())),
        _ => return Err(UpstreamError::Refused("unexpected HELLO reply".into())),
    };
    if t.db != 0 {
        let r = read_reply(&mut stream, &mut buf).await?;
        if r.first() == Some(&b'-') {
            return Err(UpstreamError::Refused(String::from_utf8_lossy(&r).trim().to_owned()));
        }
    }
    Ok(RedisConn { stream: Some(stream), version })
}

/// What a connection actor sends back to a client session.
#[derive(Debug)]
pub enum Msg {
    /// `n` complete replies, in order.
    Replies(Bytes, u32),
    /// An out-of-band push (pub/sub message); answers no request.
    Push(Bytes),
    /// A subscription confirmation owed to a SUBSCRIBE dgf answered itself.
    Confirm(Bytes),
}

/// A session's inbox.
pub type ReplyTx = mpsc::UnboundedSender<Msg>;

/// Commands from one client, to be written in order.
pub struct Batch {
    /// Raw RESP commands.
    pub bytes: Bytes,
    /// How many commands (= replies expected).
    pub count: u32,
    /// Database the client is on.
    pub db: u32,
    /// Protocol version the client speaks.
    pub proto: u8,
    /// Where the replies go.
    pub reply: ReplyTx,
    /// The batch changes the connection's database (SELECT / EXEC / RESET): state unknown after.
    pub resets_db: bool,
}

struct Slot {
    to: Option<ReplyTx>,
    count: u32,
}

struct ConnShared {
    slots: Mutex<VecDeque<Slot>>,
    /// Client commands sent and not yet answered (state-sync commands not counted).
    inflight: AtomicUsize,
    /// The reader is in the middle of a reply of at least [`LARGE_PARTIAL`] bytes.
    large_reply: AtomicBool,
    dead: AtomicBool,
    pooled: Mutex<Option<Pooled<RedisManager>>>,
}

impl ConnShared {
    /// Fail every pending reply and give the pool unit back (the socket is closed).
    fn die(&self) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        self.dead.store(true, Ordering::Release);
        for s in slots.drain(..) {
            if let Some(to) = s.to {
                let _ = to.send(Msg::Replies(lost(s.count), s.count));
            }
        }
        drop(slots);
        if let Some(mut p) = self.pooled.lock().unwrap_or_else(|p| p.into_inner()).take() {
            p.mark_broken();
        }
    }
}

/// `n` error replies for commands whose connection broke.
pub fn lost(n: u32) -> Bytes {
    const E: &[u8] = b"-ERR dgf: upstream connection lost\r\n";
    Bytes::from(E.repeat(n as usize))
}

/// Handle to a running connection actor; dropping the last handle closes the socket.
pub struct MuxConn {
    tx: mpsc::UnboundedSender<Batch>,
    shared: Arc<ConnShared>,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for MuxConn {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.shared.die();
    }
}

impl MuxConn {
    /// Take the socket out of a checked-out pool connection and start the actor.
    pub fn start(mut pooled: Pooled<RedisManager>) -> Option<Arc<MuxConn>> {
        let stream = pooled.stream.take()?;
        let (rd, wr) = tokio::io::split(stream);
        let shared = Arc::new(ConnShared {
            slots: Mutex::new(VecDeque::new()),
            inflight: AtomicUsize::new(0),
            large_reply: AtomicBool::new(false),
            dead: AtomicBool::new(false),
            pooled: Mutex::new(Some(pooled)),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let w = tokio::spawn(writer(rx, wr, shared.clone()));
        let r = tokio::spawn(reader(rd, shared.clone()));
        Some(Arc::new(MuxConn { tx, shared, tasks: [w, r] }))
    }

    /// Whether the connection broke.
    pub fn is_dead(&self) -> bool {
        self.shared.dead.load(Ordering::Acquire)
    }

    /// Queue a batch; replies arrive on `batch.reply`. Fails (handing the batch back) when
    /// the actor is gone.
    pub fn send(&self, batch: Batch) -> Result<(), Batch> {
        // Counted first: the reply may be routed (and uncounted) before `send` returns.
        let n = batch.count as usize;
        self.shared.inflight.fetch_add(n, Ordering::Relaxed);
        self.tx.send(batch).map_err(|e| {
            self.shared.inflight.fetch_sub(n, Ordering::Relaxed);
            e.0
        })
    }

    /// Client commands sent on this connection and not answered yet.
    pub fn inflight(&self) -> usize {
        self.shared.inflight.load(Ordering::Relaxed)
    }

    /// Whether a reply of at least [`LARGE_PARTIAL`] bytes is arriving on this connection
    /// right now: every reply queued behind it waits for its last byte.
    pub fn streaming_large_reply(&self) -> bool {
        self.shared.large_reply.load(Ordering::Relaxed)
    }
}

fn sync_cmd(out: &mut Vec<u8>, name: &[u8], arg: u32) {
    let a = arg.to_string();
    dgf_protocols::redis::request::encode_command(out, [name, a.as_bytes()].into_iter());
}

async fn writer(mut rx: mpsc::UnboundedReceiver<Batch>, mut wr: tokio::io::WriteHalf<Stream>, shared: Arc<ConnShared>) {
    let (mut db, mut proto) = (DB_UNKNOWN, 2u8);
    let mut out: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut pending: Vec<Slot> = Vec::new();
    while let Some(first) = rx.recv().await {
        // Let the other ready sessions run first: their batches join this write (one
        // upstream send for many clients' commands instead of one each).
        tokio::task::yield_now().await;
        let mut next = Some(first);
        while let Some(b) = next.take() {
            if b.proto != proto {
                sync_cmd(&mut out, b"HELLO", b.proto as u32);
                pending.push(Slot { to: None, count: 1 });
                proto = b.proto;
            }
            if b.db != db && b.db != DB_UNKNOWN {
                sync_cmd(&mut out, b"SELECT", b.db);
                pending.push(Slot { to: None, count: 1 });
                db = b.db;
            }
            out.extend_from_slice(&b.bytes);
            match pending.last_mut() {
                Some(Slot { to: Some(t), count }) if t.same_channel(&b.reply) => *count += b.count,
                _ => pending.push(Slot { to: Some(b.reply), count: b.count }),
            }
            if b.resets_db {
                db = DB_UNKNOWN;
            }
            if out.len() < 256 * 1024 {
                next = rx.try_recv().ok();
            }
        }
        {
            let mut slots = shared.slots.lock().unwrap_or_else(|p| p.into_inner());
            if shared.dead.load(Ordering::Acquire) {
                drop(slots);
                for s in pending.drain(..) {
                    if let Some(to) = s.to {
                        let _ = to.send(Msg::Replies(lost(s.count), s.count));
                    }
                }
                break;
            }
            slots.extend(pending.drain(..));
        }
        if wr.write_all(&out).await.is_err() {
            break;
        }
        out.clear();
    }
    let _ = wr.shutdown().await;
    shared.die();
}

async fn reader(mut rd: tokio::io::ReadHalf<Stream>, shared: Arc<ConnShared>) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    'outer: loop {
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let mut slots = shared.slots.lock().unwrap_or_else(|p| p.into_inner());
        // Consecutive replies for the same client are sent as one message.
        let mut group = 0usize;
        let mut group_n = 0u32;
        loop {
            let n = match reply_len(&buf[group..], &Limits::SERVER) {
                Ok(Some(n)) => n,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "malformed reply from upstream; closing the connection");
                    break 'outer;
                }
            };
            if buf[group] == b'>' {
                // Out-of-band push on a data connection (nothing subscribes here): drop it.
                flush_group(&shared, &mut slots, &mut buf, &mut group, &mut group_n);
                buf.advance(n);
                continue;
            }
            let Some(front) = slots.front_mut() else {
                tracing::warn!("reply without a pending request; closing the connection");
                break 'outer;
            };
            if front.to.is_none() {
                flush_group(&shared, &mut slots, &mut buf, &mut group, &mut group_n);
                if buf.first() == Some(&b'-') {
                    tracing::warn!(reply = %String::from_utf8_lossy(&buf[..n]).trim(), "state sync command failed");
                }
                buf.advance(n);
                slots.pop_front();
                continue;
            }
            group += n;
            group_n += 1;
            front.count -= 1;
            if front.count == 0 {
                flush_group(&shared, &mut slots, &mut buf, &mut group, &mut group_n);
                slots.pop_front();
            }
        }
        flush_group(&shared, &mut slots, &mut buf, &mut group, &mut group_n);
        // What is left is the start of a reply still arriving.
        shared.large_reply.store(is_large_partial(buf.len()), Ordering::Relaxed);
    }
    shared.die();
}

/// Bytes of one reply received and still incomplete from which the connection counts as busy
/// streaming a large reply: clients free to choose go elsewhere meanwhile
/// ([`MuxConn::streaming_large_reply`]).
pub const LARGE_PARTIAL: usize = 256 * 1024;

/// Whether `partial` bytes of a reply still arriving make the connection busy.
fn is_large_partial(partial: usize) -> bool {
    partial >= LARGE_PARTIAL
}

fn flush_group(shared: &ConnShared, slots: &mut VecDeque<Slot>, buf: &mut BytesMut, group: &mut usize, n: &mut u32) {
    if *n == 0 {
        return;
    }
    let bytes = buf.split_to(*group).freeze();
    if let Some(Slot { to: Some(to), .. }) = slots.front() {
        let _ = to.send(Msg::Replies(bytes, *n));
    }
    shared.inflight.fetch_sub(*n as usize, Ordering::Relaxed);
    *group = 0;
    *n = 0;
}
