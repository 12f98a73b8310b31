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

/// Commands in flight on a shared connection below which a client joins it rather than the
/// next one (see [`RedisRoute::fill_shared`]).
pub const FILL: usize = 256;

impl RedisRoute {
    /// New route state. Up to half the pool (at least one) carries multiplexed traffic; the rest is
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

    /// A shared connection for a client that has no reply outstanding (so it may change
    /// connections without reordering its replies): the first one, in pool order, with fewer
    /// than [`FILL`] commands in flight and no large reply arriving; a slot not open yet when
    /// the ones before it are that busy; the least busy one when all are open and busy.
    ///
    /// Why fill in order rather than spread clients over the connections: the commands that
    /// arrive in one turn of the event loop then go upstream in one write, and their replies
    /// come back in one read. Spread over two connections, the same turn costs two of each,
    /// and Redis, single-threaded, serves them one after the other anyway: filled in order,
    /// `redis-benchmark -c 50 -P 1` through dgf went 5-10% faster than with clients spread
    /// over two connections, and P16 did not change (docs/benchmarks.md, twentieth machine).
    /// A quiet route also holds a single upstream connection, which leaves more of a free
    /// tier's limit to the rest.
    ///
    /// Runs for every batch of a client that waits for nothing (every command at pipeline
    /// depth 1): no allocation, and one `try_lock` per slot looked at (usually one).
    pub async fn fill_shared(&self) -> Result<Arc<MuxConn>, String> {
        match fill_choice((0..self.shared.len()).map(|i| self.peek_shared(i))) {
            Fill::Join(c) => Ok(c),
            Fill::Open(i) => self.shared_at(i).await,
        }
    }

    /// Shared connection `i` and its load when it is open and not broken. The load is its
    /// commands in flight, or `usize::MAX` while a large reply arrives on it (the replies of
    /// clients joining it would wait for that reply's last byte). A slot locked right now is
    /// being opened by another session and counts as not open: a client sent there waits for
    /// that opening.
    fn peek_shared(&self, i: usize) -> Option<(usize, Arc<MuxConn>)> {
        let g = self.shared.get(i)?.try_lock().ok()?;
        let c = g.as_ref().filter(|c| !c.is_dead())?;
        let load = if c.streaming_large_reply() { usize::MAX } else { c.inflight() };
        Some((load, c.clone()))
    }

    /// Shared connection `i` (opened on first use or after it broke).
    async fn shared_at(&self, i: usize) -> Result<Arc<MuxConn>, String> {
        let Some(slot) = self.shared.get(i) else { return Err("no shared connection slot".to_owned()) };
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

/// Where [`RedisRoute::fill_shared`] sends a client.
#[derive(Debug, PartialEq, Eq)]
enum Fill<T> {
    /// Join this open connection.
    Join(T),
    /// Open (or wait for) connection `i`.
    Open(usize),
}

/// The rule of [`RedisRoute::fill_shared`], over the shared slots in order: `None` for a slot
/// not open, else its load and connection.
fn fill_choice<T>(slots: impl Iterator<Item = Option<(usize, T)>>) -> Fill<T> {
    let mut least: Option<(usize, T)> = None;
    for (i, slot) in slots.enumerate() {
        let Some((load, conn)) = slot else { return Fill::Open(i) };
        if load < FILL {
            return Fill::Join(conn);
        }
        if least.as_ref().is_none_or(|(l, _)| load < *l) {
            least = Some((load, conn));
        }
    }
    least.map_or(Fill::Open(0), |(_, conn)| Fill::Join(conn))
}

#[cfg(test)]
mod fill_tests {
    use super::{fill_choice, Fill, FILL};

    #[test]
    fn fills_connections_in_order_and_spreads_only_when_busy() {
        // Each open slot's connection is stood for by its index.
        let c = |v: &[Option<usize>]| fill_choice(v.iter().enumerate().map(|(i, l)| l.map(|l| (l, i))));
        // A quiet route stays on its first connection; nothing open yet: open the first.
        assert_eq!(c(&[Some(0), None]), Fill::Join(0));
        assert_eq!(c(&[Some(FILL - 1), Some(0)]), Fill::Join(0));
        assert_eq!(c(&[None, None]), Fill::Open(0));
        // Busy: the next one, opened when needed.
        assert_eq!(c(&[Some(FILL), None]), Fill::Open(1));
        assert_eq!(c(&[Some(FILL), Some(3)]), Fill::Join(1));
        // All busy: the least busy.
        assert_eq!(c(&[Some(FILL + 50), Some(FILL + 10), Some(FILL + 20)]), Fill::Join(1));
        // A connection streaming a large reply counts as `usize::MAX`: never the least busy
        // while another is open.
        assert_eq!(c(&[Some(usize::MAX), Some(FILL + 10)]), Fill::Join(1));
        assert_eq!(c(&[Some(usize::MAX), Some(usize::MAX)]), Fill::Join(0));
        // A broken or locked first slot is reopened (waited for) before the others are used.
        assert_eq!(c(&[None, Some(0)]), Fill::Open(0));
        assert_eq!(c(&[]), Fill::Open(0));
    }
}
