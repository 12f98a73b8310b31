//! The running proxy: listeners per route, admin API, reload (SIGHUP / POST /reload) that
//! swaps the snapshot or keeps the old one, and graceful shutdown (SIGTERM).

use crate::live::{self, Snapshot};
use crate::metrics::Metrics;
use crate::mongodb;
use crate::postgres;
use crate::redis;
use crate::shared::{AuthLimiter, Shared};
use dgf_config::{Config, Protocol};
use serde::Serialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Upstream reachability for /ready.
#[derive(Debug, Serialize)]
pub struct Reachability {
    /// Route.
    pub route: String,
    /// Upstream host:port.
    pub upstream: String,
    /// Whether the upstream answered (see [`probe`]).
    pub reachable: bool,
    /// Why not, when the probe can tell (a replica set without a primary).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// Pool numbers for /pools.
#[derive(Debug, Serialize)]
pub struct PoolReport {
    /// Route.
    pub route: String,
    /// Database.
    pub database: String,
    /// Mode.
    pub mode: String,
    /// Numbers.
    #[serde(flatten)]
    pub stats: crate::pool::PoolStats,
}

struct Listener {
    addr: SocketAddr,
    protocol: Protocol,
    task: JoinHandle<()>,
}

/// The whole proxy.
pub struct App {
    /// State shared with sessions.
    pub shared: Arc<Shared>,
    config_path: Option<PathBuf>,
    listeners: Mutex<HashMap<String, Listener>>,
    shutdown_tx: watch::Sender<bool>,
    reload_lock: tokio::sync::Mutex<()>,
    /// The event loop of Redis routes (`server.redis_threads`), started with the first one.
    redis_loop: std::sync::OnceLock<Option<tokio::runtime::Handle>>,
}

impl App {
    /// Build from a validated config; binds nothing yet.
    pub fn new(config: Config, config_path: Option<PathBuf>) -> Result<Arc<Self>, live::BuildError> {
        let metrics = Arc::new(Metrics::new());
        let governance = crate::governance::Governance::start(&config, metrics.registry())
            .map_err(|e| live::BuildError::Invalid(e.to_string()))?;
        let snap = live::build(config, &metrics, None)?;
        snap.activate(&metrics);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            live: arc_swap::ArcSwap::from_pointee(snap),
            metrics,
            cancels: Default::default(),
            auth_limiter: AuthLimiter::default(),
            clients: Default::default(),
            governance,
            shutdown: shutdown_rx,
        });
        Ok(Arc::new(Self {
            shared,
            config_path,
            listeners: Mutex::new(HashMap::new()),
            shutdown_tx,
            reload_lock: tokio::sync::Mutex::new(()),
            redis_loop: std::sync::OnceLock::new(),
        }))
    }

    /// Bind every route's listener. Fails if any address cannot be bound.
    pub async fn bind_routes(self: &Arc<Self>) -> std::io::Result<()> {
        let snap = self.shared.live.load_full();
        self.sync_listeners(&snap).await
    }

    async fn sync_listeners(self: &Arc<Self>, snap: &Snapshot) -> std::io::Result<()> {
        // Bind new addresses first so a failure leaves the old listeners untouched.
        let mut fresh = Vec::new();
        {
            let current = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
            for r in snap.routes.values() {
                let same = current.get(&r.name).is_some_and(|l| l.addr == r.listen && l.protocol == r.protocol);
                if !same {
                    fresh.push(r.name.clone());
                }
            }
        }
        let mut bound = Vec::new();
        for name in fresh {
            let r = &snap.routes[&name];
            let existing_same_addr = {
                let current = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
                current.iter().find(|(_, l)| l.addr == r.listen).map(|(n, _)| n.clone())
            };
            if let Some(old_name) = existing_same_addr {
                // Address moves between routes: stop the old listener first.
                if let Some(l) = self.listeners.lock().unwrap_or_else(|p| p.into_inner()).remove(&old_name) {
                    l.task.abort();
                }
            }
            let listener = TcpListener::bind(r.listen)
                .await
                .map_err(|e| std::io::Error::new(e.kind(), format!("route {}: bind {}: {e}", r.name, r.listen)))?;
            bound.push((name, r.listen, r.protocol, listener));
        }
        let mut current = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        current.retain(|name, l| {
            let keep = snap.routes.contains_key(name);
            if !keep {
                l.task.abort();
            }
            keep
        });
        for (name, addr, protocol, listener) in bound {
            if let Some(old) = current.remove(&name) {
                old.task.abort();
            }
            let shared = self.shared.clone();
            let redis_loop = if protocol == Protocol::Redis { self.redis_loop() } else { None };
            let task = match redis_loop {
                Some(h) => {
                    // Re-registered with that loop, so its sessions and upstream tasks live there.
                    let std = listener.into_std()?;
                    let route = name.clone();
                    h.spawn(async move {
                        match TcpListener::from_std(std) {
                            Ok(l) => accept_loop(shared, route, l).await,
                            Err(e) => tracing::error!(route = %route, error = %e, "cannot move the listener"),
                        }
                    })
                }
                None => tokio::spawn(accept_loop(shared, name.clone(), listener)),
            };
            tracing::info!(route = %name, %addr, ?protocol, "listening");
            current.insert(name, Listener { addr, protocol, task });
        }
        Ok(())
    }

    /// The Redis event loop, started on first use; `None` when Redis routes share the workers
    /// (`redis_threads = 0`) or it could not start (logged; they share the workers then).
    fn redis_loop(&self) -> Option<tokio::runtime::Handle> {
        self.redis_loop
            .get_or_init(|| {
                let threads = self.shared.live.load().config.server.redis_threads;
                if threads == 0 {
                    return None;
                }
                match start_loop("dgf-redis", threads) {
                    Ok(h) => Some(h),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the Redis event loop; Redis routes share the workers");
                        None
                    }
                }
            })
            .clone()
    }

    /// Re-read the config file, validate, build, and swap. The old config keeps serving on error.
    pub async fn reload(self: &Arc<Self>) -> Result<(), String> {
        let _guard = self.reload_lock.lock().await;
        let result = self.try_reload().await;
        self.shared.metrics.reload(result.is_ok());
        match &result {
            Ok(()) => tracing::info!("configuration reloaded"),
            Err(e) => tracing::error!(error = %e, "reload rejected; previous configuration keeps serving"),
        }
        result
    }

    async fn try_reload(self: &Arc<Self>) -> Result<(), String> {
        let config = match &self.config_path {
            Some(p) => dgf_config::load(p).map_err(|e| e.to_string())?,
            None => dgf_config::default_config(),
        };
        let old = self.shared.live.load_full();
        if config.admin != old.config.admin {
            tracing::warn!("admin.listen changes need a restart; keeping the current admin listener");
        }
        self.shared.governance.check_reload(&config);
        let snap = live::build(config, &self.shared.metrics, Some(&old)).map_err(|e| e.to_string())?;
        self.sync_listeners(&snap).await.map_err(|e| e.to_string())?;
        snap.activate(&self.shared.metrics);
        // Pools of routes whose upstream changed or that were removed: close once drained.
        for (name, r) in &old.routes {
            let kept = snap
                .routes
                .get(name)
                .and_then(|n| n.pg.as_ref())
                .zip(r.pg.as_ref())
                .is_some_and(|(a, b)| Arc::ptr_eq(a, b));
            let redis_kept = snap
                .routes
                .get(name)
                .and_then(|n| n.redis.as_ref())
                .zip(r.redis.as_ref())
                .is_some_and(|(a, b)| Arc::ptr_eq(a, b));
            if !redis_kept {
                if let Some(rr) = &r.redis {
                    rr.close();
                }
            }
            if !kept {
                if let Some(pg) = &r.pg {
                    for p in pg.pools.iter() {
                        p.value().close();
                    }
                }
            }
            let my_kept = snap
                .routes
                .get(name)
                .and_then(|n| n.my.as_ref())
                .zip(r.my.as_ref())
                .is_some_and(|(a, b)| Arc::ptr_eq(a, b));
            if !my_kept {
                if let Some(my) = &r.my {
                    for p in my.pools.iter() {
                        p.value().close();
                    }
                }
            }
        }
        for (name, r) in &old.routes {
            let Some(m) = &r.mongo else { continue };
            let kept = snap.routes.get(name).and_then(|n| n.mongo.as_ref()).is_some_and(|n| Arc::ptr_eq(n, m));
            if !kept {
                m.pool.close();
            }
        }
        self.shared.live.store(Arc::new(snap));
        Ok(())
    }

    /// Reachability of each route's upstream (see [`probe`]), probed at once: one slow or
    /// black-holed upstream costs its timeout once, not once per route after it (a k8s
    /// readiness probe times out after 1 s by default). Sorted by route name.
    pub async fn check_upstreams(&self) -> Vec<Reachability> {
        let snap = self.shared.live.load_full();
        let routes =
            snap.routes.values().filter(|r| r.pg.is_some() || r.my.is_some() || r.mongo.is_some() || r.redis.is_some());
        let mut out = futures_util::future::join_all(routes.cloned().map(probe)).await;
        out.sort_by(|a, b| a.route.cmp(&b.route));
        out
    }

    /// Current numbers of every pool.
    pub fn pool_report(&self) -> Vec<PoolReport> {
        let snap = self.shared.live.load_full();
        let mut out = Vec::new();
        for r in snap.routes.values() {
            if let Some(rr) = &r.redis {
                out.push(PoolReport {
                    route: r.name.clone(),
                    database: rr.target.db.to_string(),
                    mode: "multiplexed".into(),
                    stats: rr.pool.stats(),
                });
            }
            if let Some(my) = &r.my {
                for p in my.pools.iter() {
                    let database = if p.key().found_rows { "* (found_rows)" } else { "*" };
                    out.push(PoolReport {
                        route: r.name.clone(),
                        database: database.to_owned(),
                        mode: "transaction".into(),
                        stats: p.value().stats(),
                    });
                }
            }
            if let Some(m) = &r.mongo {
                out.push(PoolReport {
                    route: r.name.clone(),
                    database: "*".into(),
                    mode: "request".into(),
                    stats: m.pool.stats(),
                });
            }
            let Some(pg) = &r.pg else { continue };
            let mode = format!("{:?}", pg.opts.load().mode).to_lowercase();
            for p in pg.pools.iter() {
                out.push(PoolReport {
                    route: r.name.clone(),
                    database: p.key().clone(),
                    mode: mode.clone(),
                    stats: p.value().stats(),
                });
            }
        }
        out.sort_by(|a, b| (&a.route, &a.database).cmp(&(&b.route, &b.database)));
        out
    }

    /// Copy pool numbers into the metrics registry (at scrape time).
    pub fn refresh_pool_metrics(&self) {
        for p in self.pool_report() {
            self.shared.metrics.set_pool(&p.route, &p.database, &p.stats);
        }
    }

    /// Background housekeeping: idle timeouts, min_idle, login throttle sweep.
    pub fn spawn_maintenance(self: &Arc<Self>) {
        let app = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut beat: u64 = 0;
            loop {
                tick.tick().await;
                beat = beat.wrapping_add(1);
                let snap = app.shared.live.load_full();
                let s = &snap.config.server;
                app.shared.auth_limiter.sweep(s.auth_failure_burst, s.auth_failure_refill_secs);
                for r in snap.routes.values() {
                    if let Some(my) = &r.my {
                        for p in my.pools.iter() {
                            let pool = p.value().clone();
                            for _ in 0..pool.maintain() {
                                let pool = pool.clone();
                                tokio::spawn(async move {
                                    if let Err(e) = pool.prefill_one().await {
                                        tracing::warn!(error = %e, "min_idle connection failed");
                                    }
                                });
                            }
                        }
                    }
                    if let Some(m) = &r.mongo {
                        if beat.is_multiple_of(crate::mongodb::HEARTBEAT_TICKS) {
                            crate::mongodb::heartbeat(&r.name, m);
                        }
                        for _ in 0..m.pool.maintain() {
                            let pool = m.pool.clone();
                            tokio::spawn(async move {
                                if let Err(e) = pool.prefill_one().await {
                                    tracing::warn!(error = %e, "min_idle connection failed");
                                }
                            });
                        }
                    }
                    let Some(pg) = &r.pg else { continue };
                    for p in pg.pools.iter() {
                        let pool = p.value().clone();
                        for _ in 0..pool.maintain() {
                            let pool = pool.clone();
                            tokio::spawn(async move {
                                if let Err(e) = pool.prefill_one().await {
                                    tracing::warn!(error = %e, "min_idle connection failed");
                                }
                            });
                        }
                    }
                }
            }
        });
    }

    /// Stop accepting, tell sessions to finish, and wait up to `shutdown_timeout_ms` for them.
    pub async fn shutdown(&self) {
        let timeout = Duration::from_millis(self.shared.live.load().config.server.shutdown_timeout_ms);
        for (_, l) in self.listeners.lock().unwrap_or_else(|p| p.into_inner()).drain() {
            l.task.abort();
        }
        let _ = self.shutdown_tx.send(true);
        let deadline = tokio::time::Instant::now() + timeout;
        while self.shared.clients.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = self.shared.clients.load(Ordering::Acquire);
        if left > 0 {
            tracing::warn!(clients = left, "shutdown timeout reached; closing remaining clients");
        } else {
            tracing::info!("all clients drained");
        }
    }
}

/// A tokio runtime of `threads` threads (1: single-threaded) on threads of its own, kept alive
/// for the life of the process; its handle.
fn start_loop(name: &str, threads: usize) -> std::io::Result<tokio::runtime::Handle> {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread_name = name.to_owned();
    std::thread::Builder::new().name(name.to_owned()).spawn(move || {
        let rt = if threads == 1 {
            tokio::runtime::Builder::new_current_thread().enable_all().build()
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name(thread_name)
                .enable_all()
                .build()
        };
        match rt {
            Ok(rt) => {
                let _ = tx.send(Ok(rt.handle().clone()));
                rt.block_on(std::future::pending::<()>());
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        }
    })?;
    rx.recv().map_err(|_| std::io::Error::other("the event loop thread ended"))?
}

async fn accept_loop(shared: Arc<Shared>, route_name: String, listener: TcpListener) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(route = %route_name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(route) = shared.live.load().routes.get(&route_name).cloned() else { return };
        match route.protocol {
            Protocol::Postgres => {
                tokio::spawn(postgres::serve(shared.clone(), route, tcp, peer));
            }
            Protocol::Redis => {
                tokio::spawn(redis::serve(shared.clone(), route, tcp, peer));
            }
            Protocol::Mysql => {
                tokio::spawn(crate::mysql::serve(shared.clone(), route, tcp, peer));
            }
            Protocol::Mongodb => {
                tokio::spawn(mongodb::serve(shared.clone(), route, tcp, peer));
            }
        }
    }
}

/// Whether an idle connection of one of `pools` answered its health check.
async fn ping_any<M: crate::pool::Manager>(pools: Vec<crate::pool::Pool<M>>) -> bool {
    for p in pools {
        if p.ping_idle().await == Some(true) {
            return true;
        }
    }
    false
}

/// Whether `r`'s upstream answers. A pooled connection that is idle right now answers the
/// pool's own health check (Redis: a PING down an open multiplexed connection): no new login,
/// no forked backend, nothing on the provider's connection count. Only when none is idle (or
/// it fails) is the upstream dialled: MySQL with a real login, a MongoDB replica set (seed
/// list, `replicaSet`, `mongodb+srv://`) by asking its members for a writable primary with
/// `hello`, the others with a TCP connection.
async fn probe(r: Arc<crate::live::Route>) -> Reachability {
    let addr = match (&r.pg, &r.my, &r.mongo, &r.redis) {
        (Some(pg), _, _, _) => format!("{}:{}", pg.target.host, pg.target.port),
        (None, Some(my), _, _) => format!("{}:{}", my.target.host, my.target.port),
        (None, None, Some(m), _) => format!("{}:{}", m.target.host, m.target.port),
        (None, None, None, Some(rr)) => format!("{}:{}", rr.target.host, rr.target.port),
        _ => String::new(),
    };
    let warm = match (&r.pg, &r.my, &r.mongo) {
        (Some(pg), _, _) => ping_any(pg.pools.iter().map(|p| p.value().clone()).collect()).await,
        (None, Some(my), _) => ping_any(my.pools.iter().map(|p| p.value().clone()).collect()).await,
        (None, None, Some(m)) => ping_any(vec![m.pool.clone()]).await,
        // Redis: a PING down a multiplexed connection that is open.
        _ => match &r.redis {
            Some(rr) => rr.ping_shared().await == Some(true),
            None => false,
        },
    };
    let mut why = None;
    let reachable = warm
        || match (&r.my, r.mongo.as_ref().filter(|m| m.target.discover)) {
            // MySQL counts a connection closed before its handshake as a connection error of
            // the client's host, and blocks the host after `max_connect_errors` (default 100)
            // of them in a row: a raw TCP probe every few seconds would lock dgf out of the
            // server. So a MySQL upstream is probed with a real login and COM_QUIT.
            (Some(my), _) => {
                let key = crate::mysql::backend::PoolKey { found_rows: false };
                let login = async {
                    let mut c = crate::mysql::backend::MyConn::connect(&my.target, &key).await?;
                    c.command(&[dgf_protocols::mysql::consts::com::QUIT]).await
                };
                matches!(tokio::time::timeout(Duration::from_secs(5), login).await, Ok(Ok(())))
            }
            // A replica set: ready when its primary answers, not when any member does.
            (None, Some(m)) => {
                match crate::mongodb::backend::primary_answers(&m.target, Duration::from_secs(2)).await {
                    Ok(()) => true,
                    Err(e) => {
                        why = Some(e);
                        false
                    }
                }
            }
            (None, None) => matches!(
                tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(&addr)).await,
                Ok(Ok(_))
            ),
        };
    Reachability { route: r.name.clone(), upstream: addr, reachable, why }
}
