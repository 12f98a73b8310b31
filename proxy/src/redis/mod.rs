//! The Redis route: accept clients, authenticate them against dgf users, and run a session
//! that multiplexes their commands over a few shared upstream connections (see
//! docs/ARCHITECTURE.md, "Redis").

mod budget;
pub mod commands;
mod exposure;
pub mod govern;
pub mod local;
pub mod memory;
pub mod pubsub;
mod replies;
pub mod session;
mod state;
pub mod upstream;

use crate::live::{Route, Snapshot, User};
use crate::pool::{CheckoutError, Pool, PoolSettings};
use crate::shared::Shared;
use crate::stream::Stream;
use dgf_config::AuthMethod;
use dgf_protocols::postgres::auth::verify_cleartext;
use pubsub::Hub;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpStream;
use upstream::{MuxConn, RedisManager, RedisTarget};

/// Per-route Redis state, kept across reloads while the upstream URL is unchanged.
pub struct RedisRoute {
    /// Upstream.
    pub target: Arc<RedisTarget>,
    /// Capacity (hard cap on upstream connections, shared and pinned alike) and connector.
    pub pool: Pool<RedisManager>,
    shared: Vec<tokio::sync::Mutex<Option<Arc<MuxConn>>>>,
    idle_pinned: Mutex<Vec<Arc<MuxConn>>>,
    /// The route's single upstream subscriber connection.
    pub hub: Hub,
    /// `redis_version` of the upstream, reported in HELLO.
    pub version: Mutex<String>,
    /// Memory budget (`memory_budget`): polled `used_memory` and the refusal switch.
    pub memory: memory::MemoryBudget,
    next_id: AtomicU64,
}

impl RedisRoute {
    /// New route state. Half the pool (at least one) carries multiplexed traffic; the rest is
    /// for pinned sections.
    pub fn new(target: RedisTarget, settings: PoolSettings) -> Self {
        let target = Arc::new(target);
        let n_shared = (settings.max / 2).max(1);
        Self {
            pool: Pool::new(RedisManager { target: target.clone() }, settings),
            hub: Hub::new(target.clone()),
            target,
            shared: (0..n_shared).map(|_| tokio::sync::Mutex::new(None)).collect(),
            idle_pinned: Mutex::new(Vec::new()),
            version: Mutex::new("7.0.0".into()),
            memory: Default::default(),
            next_id: AtomicU64::new(1),
        }
    }

    fn start(&self, pooled: crate::pool::Pooled<RedisManager>) -> Result<Arc<MuxConn>, String> {
        *self.version.lock().unwrap_or_else(|p| p.into_inner()) = pooled.version.clone();
        MuxConn::start(pooled).ok_or_else(|| "connection without a socket".to_owned())
    }

    async fn checkout(&self) -> Result<Arc<MuxConn>, String> {
        match self.pool.get().await {
            Ok(p) => self.start(p),
            Err(CheckoutError::Timeout(d)) => Err(format!("no upstream connection available within {d:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The shared connection for client `id` (opened on first use or after it broke).
    pub async fn shared_conn(&self, id: u64) -> Result<Arc<MuxConn>, String> {
        let slot = &self.shared[(id as usize) % self.shared.len()];
        let mut g = slot.lock().await;
        if let Some(c) = g.as_ref().filter(|c| !c.is_dead()) {
            return Ok(c.clone());
        }
        *g = None;
        let c = self.checkout().await?;
        *g = Some(c.clone());
        Ok(c)
    }

    /// Whether a shared connection that is open now answers `PING` (None: none is open). The
    /// PING joins that connection's pipeline like any client's command: no new connection
    /// counts against the provider's limit.
    pub async fn ping_shared(&self) -> Option<bool> {
        let conn = self.shared.iter().find_map(|s| s.try_lock().ok()?.as_ref().filter(|c| !c.is_dead()).cloned())?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let batch = upstream::Batch {
            bytes: bytes::Bytes::from_static(b"*1\r\n$4\r\nPING\r\n"),
            count: 1,
            db: self.target.db,
            proto: 2,
            reply: tx,
            resets_db: false,
        };
        conn.send(batch).ok()?;
        let reply = tokio::time::timeout(std::time::Duration::from_secs(2), rx.recv()).await;
        Some(matches!(reply, Ok(Some(upstream::Msg::Replies(b, 1))) if b.starts_with(b"+PONG")))
    }

    /// A connection for one client's pinned section.
    pub async fn pinned_conn(&self) -> Result<Arc<MuxConn>, String> {
        loop {
            let c = self.idle_pinned.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match c {
                Some(c) if !c.is_dead() => return Ok(c),
                Some(_) => continue,
                None => return self.checkout().await,
            }
        }
    }

    /// Return a clean pinned connection.
    pub fn release_pinned(&self, c: Arc<MuxConn>) {
        if !c.is_dead() {
            self.idle_pinned.lock().unwrap_or_else(|p| p.into_inner()).push(c);
        }
    }

    /// Close everything (route removed or upstream changed).
    pub fn close(&self) {
        self.memory.stop();
        self.pool.close();
        self.idle_pinned.lock().unwrap_or_else(|p| p.into_inner()).clear();
        for s in &self.shared {
            if let Ok(mut g) = s.try_lock() {
                *g = None;
            }
        }
    }

    fn next_client_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Socket error.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The client broke the protocol (already told with `-ERR`).
    #[error("client protocol error: {0}")]
    Protocol(String),
    /// TLS handshake failed.
    #[error("TLS: {0}")]
    Tls(String),
}

/// Authentication outcome for a user name and password.
pub fn check_password(snap: &Snapshot, user: &str, password: &[u8]) -> Option<Arc<User>> {
    let u = snap.users.get(user)?;
    match u.auth {
        AuthMethod::Trust => Some(u.clone()),
        _ => u.secret.as_ref().filter(|s| verify_cleartext(password, s, user)).map(|_| u.clone()),
    }
}

/// The identity a client has before AUTH: anonymous when no users are configured (like a Redis
/// without `requirepass`), `default` when that user is configured with `auth = "trust"`.
pub fn initial_identity(snap: &Snapshot) -> (bool, Option<Arc<User>>) {
    if snap.users.is_empty() {
        return (true, None);
    }
    match snap.users.get("default") {
        Some(u) if u.auth == AuthMethod::Trust => (true, Some(u.clone())),
        _ => (false, None),
    }
}

impl crate::shared::SessionEnd for SessionError {}

/// Serve one accepted client connection to completion.
pub async fn serve(shared: Arc<Shared>, route: Arc<Route>, tcp: TcpStream, peer: SocketAddr) {
    let _ = tcp.set_nodelay(true);
    let Some(rr) = route.redis.clone() else { return };
    let id = rr.next_client_id();
    let span = tracing::info_span!("redis", route = %route.name, %peer, id);
    let (counted, counted_route) = (shared.clone(), route.clone());
    crate::shared::serve_client(&counted, &counted_route, span, |over_cap| async move {
        let mut stream = Stream::Plain(tcp);
        if let Some(acceptor) = &route.tls {
            // TLS routes speak TLS from the first byte (as Redis does with tls-port).
            let Stream::Plain(tcp) = stream else { unreachable!() };
            let tls = acceptor.accept(tcp).await.map_err(|e| SessionError::Tls(e.to_string()))?;
            stream = Stream::Tls(Box::new(tls.into()));
        }
        if over_cap {
            route.metrics.clients_rejected.inc();
            use tokio::io::AsyncWriteExt;
            stream.write_all(b"-ERR max number of clients reached\r\n").await?;
            return Ok(());
        }
        session::Session::new(shared.clone(), route.clone(), rr, peer, id, stream).run().await
    })
    .await;
}
