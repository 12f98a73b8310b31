//! The MongoDB route: accept clients (optionally TLS), answer the handshake and
//! authentication, and relay each command over a server connection checked out for that
//! command alone (cursors and transactions pin theirs; see `pins`).

pub mod backend;
pub mod commands;
pub mod cursors;
pub mod gather;
pub mod govern;
pub mod hello;
pub mod lineage;
pub mod pins;
pub mod session;
pub mod srv;
pub mod views;

use crate::live::{Route, User};
use crate::pool::Pool;
use crate::shared::Shared;
use crate::stream::Stream;
use backend::{MongoManager, MongoTarget};
use bson::{doc, Document};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// Pool and pins of one MongoDB route (kept across reloads while the upstream is unchanged).
pub struct MongoRoute {
    /// Upstream.
    pub target: Arc<MongoTarget>,
    /// Server connections (`pool.size` is the cap).
    pub pool: Pool<MongoManager>,
    /// Connections held by cursors and transactions.
    pub pins: pins::Pins,
    /// Views per database, for governance.
    pub views: views::ViewCatalog,
    /// A [`heartbeat`] is running.
    pub beating: std::sync::atomic::AtomicBool,
}

/// Seconds (maintenance ticks) between two [`heartbeat`]s of a replica-set route: drivers'
/// default `heartbeatFrequencyMS`.
pub const HEARTBEAT_TICKS: u64 = 10;

/// For a replica-set route (seed list, `replicaSet`, `mongodb+srv://`): ask one idle pooled
/// connection `hello`. When it no longer leads to a writable primary (the primary stepped down,
/// as in Atlas maintenance) every pooled connection is retired: idle ones close now, busy and
/// pinned ones when they come back, and new ones find the new primary. Without it, each pooled
/// connection would fail one client command before being replaced. Costs nothing on the
/// provider when no connection is idle (busy ones find out from their own replies) and opens
/// none; one heartbeat at a time per route.
pub fn heartbeat(route: &str, m: &Arc<MongoRoute>) {
    if !m.target.discover || m.pool.stats().idle == 0 || m.beating.swap(true, Ordering::AcqRel) {
        return;
    }
    let (m, route) = (m.clone(), route.to_owned());
    tokio::spawn(async move {
        if m.pool.ping_idle().await == Some(false) {
            let closed = m.pool.retire_all();
            tracing::warn!(
                route = %route,
                closed,
                "a pooled connection no longer leads to a writable primary: every pooled connection is retired"
            );
        }
        m.beating.store(false, Ordering::Release);
    });
}

/// A reply from a connection of pool generation `generation` said its server is no longer a
/// writable primary (NotWritablePrimary and kin: a failover). For a replica-set route every
/// pooled connection of that generation leads to the same former primary: retire them all at
/// once, as the [`heartbeat`] would (which does not notice a primary still stepping down, whose
/// `hello` says primary while its commands fail), instead of letting each fail one command.
/// Later replies from connections of the same generation retire nothing more.
pub fn stale_primary(route: &str, m: &MongoRoute, generation: u64) {
    if !m.target.discover {
        return;
    }
    if let Some(closed) = m.pool.retire_generation(generation) {
        tracing::warn!(
            route = %route,
            closed,
            "a reply said the server is no longer a writable primary: every pooled connection is retired"
        );
    }
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Socket error.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The client broke the protocol beyond an error reply.
    #[error("client protocol violation: {0}")]
    Protocol(String),
    /// TLS handshake failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// Refused before the first command (caps, TLS required).
    #[error("refused: {0}")]
    Refused(&'static str),
}

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

impl crate::shared::SessionEnd for SessionError {}

/// Serve one accepted client connection to completion.
pub async fn serve(shared: Arc<Shared>, route: Arc<Route>, tcp: TcpStream, peer: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    let snap = shared.live.load_full();
    let id = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!("mongo", route = %route.name, %peer, conn = id, user = tracing::field::Empty);
    let (counted, counted_route) = (shared.clone(), route.clone());
    crate::shared::serve_client(&counted, &counted_route, span, |over_cap| async move {
        let Some(mongo) = route.mongo.clone() else { return Err(SessionError::Refused("not a MongoDB route")) };
        let result = async {
            if over_cap {
                route.metrics.clients_rejected.inc();
                return Err(SessionError::Refused("too many clients"));
            }
            let login_timeout = Duration::from_millis(snap.config.server.client_login_timeout_ms);
            let stream = match tokio::time::timeout(login_timeout, accept(tcp, &route)).await {
                Ok(r) => r?,
                Err(_) => return Err(SessionError::Refused("TLS handshake timed out")),
            };
            if route.cfg.require_tls && !stream.is_tls() {
                return Err(SessionError::Refused("route requires TLS"));
            }
            let anon = anonymous_user(&snap, &route);
            session::Session::new(shared.clone(), route.clone(), mongo.clone(), stream, peer, id, anon).run().await
        }
        .await;
        release_owned(&mongo, id).await;
        result
    })
    .await;
}

/// Who a client is before it authenticates: the first `auth = "trust"` user; with no users
/// configured at all, an anonymous user without roles on loopback listeners; otherwise nobody
/// (commands other than the handshake need authentication).
fn anonymous_user(snap: &crate::live::Snapshot, route: &Route) -> Option<Arc<User>> {
    if let Some(u) = snap.config.users.iter().find(|u| u.auth == dgf_config::AuthMethod::Trust) {
        return snap.users.get(&u.name).cloned();
    }
    (snap.users.is_empty() && route.listen.ip().is_loopback()).then(|| {
        Arc::new(User {
            name: String::new(),
            auth: dgf_config::AuthMethod::Trust,
            secret: None,
            scram: None,
            roles: Vec::new(),
            scram_sha1: Default::default(),
        })
    })
}

/// TLS in MongoDB starts with the first byte (no negotiation message): a TLS ClientHello
/// record (0x16 0x03 0x00..0x04) cannot be a sane MongoDB message length.
async fn accept(tcp: TcpStream, route: &Route) -> Result<Stream, SessionError> {
    let Some(acceptor) = &route.tls else { return Ok(Stream::Plain(tcp)) };
    let mut b = [0u8; 3];
    loop {
        let n = tcp.peek(&mut b).await?;
        if n == 0 {
            return Err(SessionError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        if n >= 3 || b[0] != 0x16 || (n >= 2 && b[1] != 0x03) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    if b[0] == 0x16 && b[1] == 0x03 && b[2] <= 0x04 {
        let s = acceptor.accept(tcp).await.map_err(|e| SessionError::Tls(e.to_string()))?;
        return Ok(Stream::Tls(Box::new(tokio_rustls::TlsStream::Server(s))));
    }
    Ok(Stream::Plain(tcp))
}

/// Kill the cursors and abort the transactions a departed client left pinned.
async fn release_owned(mongo: &MongoRoute, owner: u64) {
    for (key, entry) in mongo.pins.take_owned(owner) {
        release(mongo, key, entry).await;
    }
}

/// Kill the server cursor `id` and drop its pin (dgf refused its getMore).
pub(crate) async fn release_cursor(mongo: &MongoRoute, id: i64) {
    let key = pins::Key::Cursor(id);
    if let Some(entry) = mongo.pins.remove(&key) {
        release(mongo, key, entry).await;
    }
}

/// End what a pin holds on the server (a cursor, or a transaction), on its connection.
pub(crate) async fn release(mongo: &MongoRoute, key: pins::Key, entry: pins::Entry) {
    let cmd: Document = match &key {
        pins::Key::Cursor(id) => cursors::kill_command(entry.ns.as_deref(), *id),
        pins::Key::Txn(lsid) => {
            let Ok(lsid) = Document::from_reader(&lsid[..]) else { return };
            doc! { "abortTransaction": 1, "lsid": lsid, "txnNumber": entry.txn_number, "autocommit": false, "$db": "admin" }
        }
    };
    let conn = entry.conn.clone();
    drop(entry);
    let mut g = conn.clone().lock_owned().await;
    let done = tokio::time::timeout(Duration::from_secs(5), g.command(&cmd)).await;
    if !matches!(done, Ok(Ok(_))) {
        g.mark_broken();
        mongo.pins.remove_conn(&conn);
    }
    tracing::debug!(?key, "released pin");
}
