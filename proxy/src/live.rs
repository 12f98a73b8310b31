//! The live configuration: an immutable snapshot (users, routes, pools, policy) that sessions
//! load once per login or checkout and that reload replaces atomically.

use crate::metrics::{Metrics, RouteMetrics};
use crate::mongodb::backend::{MongoManager, MongoTarget};
use crate::mongodb::MongoRoute;
use crate::mysql::pools::MyPools;
use crate::pool::{Pool, PoolSettings};
use crate::postgres::backend::{PgManager, PgTarget};
use crate::postgres::catalog::Catalog;
use crate::postgres::prepared::Registry as StatementRegistry;
use crate::redis::upstream::RedisTarget;
use crate::redis::RedisRoute;
use crate::tls;
use arc_swap::ArcSwap;
use dashmap::DashMap;
use dgf_config::{AuthMethod, Config, PoolMode, Protocol, RouteConfig, SslMode};
use dgf_protocols::mongodb::scram_sha1::{self as sha1_scram, Sha1Verifier};
use dgf_protocols::postgres::auth::PasswordSecret;
use dgf_protocols::postgres::scram::ScramVerifier;
use dgf_rules::Policy;
use rustls_pki_types::ServerName;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_rustls::TlsAcceptor;

/// Errors turning a validated config into running objects (files, TLS keys).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// TLS material.
    #[error("{0}: {1}")]
    Tls(String, #[source] tls::TlsError),
    /// Anything else, with context.
    #[error("{0}")]
    Invalid(String),
    /// Policy compilation.
    #[error(transparent)]
    Policy(#[from] dgf_rules::RulesError),
}

/// A dgf user as sessions see it.
pub struct User {
    /// Name.
    pub name: String,
    /// Required method.
    pub auth: AuthMethod,
    /// Secret (None for trust).
    pub secret: Option<PasswordSecret>,
    /// SCRAM verifier, derived once at load time.
    pub scram: Option<ScramVerifier>,
    /// Roles.
    pub roles: Vec<String>,
    /// MongoDB SCRAM-SHA-1 verifier, derived from a plaintext password on first use (it
    /// needs the password itself: MongoDB hashes `user:mongo:password` first).
    pub scram_sha1: OnceLock<Option<Sha1Verifier>>,
}

impl User {
    /// The SCRAM-SHA-1 verifier MongoDB clients authenticate against; `None` when the
    /// password is stored only as a verifier (SCRAM-SHA-256 or md5) or absent.
    pub fn scram_sha1(&self) -> Option<&Sha1Verifier> {
        self.scram_sha1
            .get_or_init(|| match &self.secret {
                Some(PasswordSecret::Plain(p)) if !p.is_empty() => {
                    let salt: [u8; sha1_scram::SALT_LEN] = rand::random();
                    Some(Sha1Verifier::from_password(&self.name, p, &salt, sha1_scram::DEFAULT_ITERATIONS))
                }
                _ => None,
            })
            .as_ref()
    }
}

/// Pool options of a Postgres route that a reload may change in place.
#[derive(Debug, Clone)]
pub struct PgPoolOpts {
    /// Pooling mode.
    pub mode: PoolMode,
    /// Query run before a session-mode connection goes back.
    pub reset_query: String,
    /// Health check query.
    pub health_query: String,
    /// Limits for every pool of the route.
    pub settings: PoolSettings,
}

/// Postgres pools of one route, one per database, created on first use. Kept across reloads
/// while the upstream URL is unchanged, so caps hold through a reload.
pub struct PgPools {
    /// Upstream.
    pub target: Arc<PgTarget>,
    /// Options (reloadable).
    pub opts: ArcSwap<PgPoolOpts>,
    /// Pools by database.
    pub pools: DashMap<String, Pool<PgManager>>,
    /// Prepared statements seen on this route (dedup across clients).
    pub statements: StatementRegistry,
    /// Catalog caches for masking, per database.
    pub catalogs: DashMap<String, Arc<Catalog>>,
}

impl PgPools {
    /// The cached catalog of `database`, if loaded and fresh.
    pub fn catalog(&self, database: &str) -> Option<Arc<Catalog>> {
        self.catalogs.get(database).map(|c| c.clone()).filter(|c| !c.expired())
    }

    /// The cached catalog of `database`, even if older than [`MAX_AGE`](super::postgres::catalog::MAX_AGE).
    pub fn catalog_any(&self, database: &str) -> Option<Arc<Catalog>> {
        self.catalogs.get(database).map(|c| c.clone())
    }

    /// Cache a freshly loaded catalog.
    pub fn set_catalog(&self, database: &str, c: Catalog) {
        self.catalogs.insert(database.to_owned(), Arc::new(c));
    }

    /// Forget a catalog (after DDL, or when an unknown table shows up).
    pub fn invalidate_catalog(&self, database: &str) {
        self.catalogs.remove(database);
    }

    /// The pool for `database`, created on first use.
    pub fn pool(&self, database: &str) -> Pool<PgManager> {
        if let Some(p) = self.pools.get(database) {
            return p.clone();
        }
        self.pools
            .entry(database.to_owned())
            .or_insert_with(|| {
                let opts = self.opts.load();
                Pool::new(
                    PgManager {
                        target: self.target.clone(),
                        database: database.to_owned(),
                        health_query: opts.health_query.clone(),
                    },
                    opts.settings.clone(),
                )
            })
            .clone()
    }
}

/// A route as sessions see it.
pub struct Route {
    /// Name.
    pub name: String,
    /// Protocol.
    pub protocol: Protocol,
    /// Listen address.
    pub listen: SocketAddr,
    /// Raw settings.
    pub cfg: RouteConfig,
    /// TLS acceptor when a certificate is configured.
    pub tls: Option<TlsAcceptor>,
    /// Metrics handles.
    pub metrics: RouteMetrics,
    /// Connected clients (kept across reloads).
    pub clients: Arc<AtomicUsize>,
    /// Postgres pools (Postgres routes only).
    pub pg: Option<Arc<PgPools>>,
    /// Redis multiplexer, pinned connections and pub/sub hub (Redis routes only).
    pub redis: Option<Arc<RedisRoute>>,
    /// MySQL pools (MySQL routes only).
    pub my: Option<Arc<MyPools>>,
    /// MongoDB pool and pins (MongoDB routes only).
    pub mongo: Option<Arc<MongoRoute>>,
    /// Ops/s limiter (kept across reloads; off without a `shaping` table).
    pub shaper: Arc<crate::shaping::Shaper>,
}

/// Everything a session needs, immutable.
pub struct Snapshot {
    /// The configuration it was built from.
    pub config: Arc<Config>,
    /// Users by name.
    pub users: HashMap<String, Arc<User>>,
    /// Routes by name.
    pub routes: HashMap<String, Arc<Route>>,
    /// Compiled policy.
    pub policy: Arc<Policy>,
}

fn pool_settings(r: &RouteConfig) -> PoolSettings {
    let p = &r.pool;
    let opt = |ms: u64| (ms > 0).then(|| Duration::from_millis(ms));
    PoolSettings {
        max: p.size,
        min_idle: p.min_idle,
        wait_timeout: Duration::from_millis(p.wait_timeout_ms),
        idle_timeout: opt(p.idle_timeout_ms),
        max_lifetime: opt(p.max_lifetime_ms),
        connect_timeout: Duration::from_millis(p.connect_timeout_ms),
        check_after: Duration::from_millis(p.health_check_delay_ms),
    }
}

fn pg_opts(r: &RouteConfig) -> PgPoolOpts {
    PgPoolOpts {
        mode: r.pool.mode,
        reset_query: r.pool.reset_query.clone(),
        health_query: r.pool.health_check_query.clone(),
        settings: pool_settings(r),
    }
}

fn build_user(u: &dgf_config::UserConfig) -> Result<User, BuildError> {
    let secret = match (&u.password, u.auth) {
        (_, AuthMethod::Trust) => None,
        (Some(p), _) => {
            Some(PasswordSecret::parse(p).map_err(|e| BuildError::Invalid(format!("user {}: {e}", u.name)))?)
        }
        (None, _) => return Err(BuildError::Invalid(format!("user {} needs a password", u.name))),
    };
    let salt: [u8; 16] = rand::random();
    let scram = secret.as_ref().and_then(|s| s.scram_verifier(&salt));
    Ok(User { name: u.name.clone(), auth: u.auth, secret, scram, roles: u.roles.clone(), scram_sha1: OnceLock::new() })
}

fn build_pg(r: &RouteConfig) -> Result<PgPools, BuildError> {
    let up = r.upstream().map_err(|e| BuildError::Invalid(format!("route {}: {e}", r.name)))?;
    let sslmode = up.ssl_mode().map_err(|e| BuildError::Invalid(format!("route {}: {e}", r.name)))?;
    let verify = match sslmode {
        SslMode::Disable => None,
        SslMode::Prefer | SslMode::Require => Some(tls::Verify::None),
        SslMode::VerifyCa => Some(tls::Verify::Chain),
        SslMode::VerifyFull => Some(tls::Verify::Full),
    };
    let tls = match verify {
        None => None,
        Some(v) => Some(
            tls::connector(v, up.param("sslrootcert"), up.param("sslsni") != Some("0"))
                .map_err(|e| BuildError::Tls(format!("route {} upstream", r.name), e))?,
        ),
    };
    // The name to verify is always the host: `sslsni=0` only drops the SNI extension (handled
    // by the connector). Verifying against a stand-in name would accept another host's cert.
    let server_name = ServerName::try_from(up.host.clone())
        .map_err(|e| BuildError::Invalid(format!("route {}: host name: {e}", r.name)))?;
    let target = PgTarget {
        host: up.host.clone(),
        port: up.port,
        user: up.user.clone().unwrap_or_else(|| "postgres".into()),
        password: up.password.clone(),
        sslmode,
        tls,
        server_name,
    };
    Ok(PgPools {
        target: Arc::new(target),
        opts: ArcSwap::from_pointee(pg_opts(r)),
        pools: DashMap::new(),
        statements: StatementRegistry::default(),
        catalogs: DashMap::new(),
    })
}

fn build_mongo(r: &RouteConfig, server: &dgf_config::ServerSettings) -> Result<MongoRoute, BuildError> {
    let bad = |e: String| BuildError::Invalid(format!("route {}: {e}", r.name));
    let up = r.upstream().map_err(bad)?;
    let flag = |k: &str| matches!(up.param(k), Some("true"));
    let srv = up.scheme == "mongodb+srv";
    // mongodb+srv:// means TLS unless the URL turns it off (as in drivers).
    let tls_off = matches!(up.param("tls").or(up.param("ssl")), Some("false"));
    let tls = if flag("tls") || flag("ssl") || (srv && !tls_off) {
        let v = if flag("tlsInsecure") || flag("tlsAllowInvalidCertificates") {
            tls::Verify::None
        } else if flag("tlsAllowInvalidHostnames") {
            tls::Verify::Chain
        } else {
            tls::Verify::Full
        };
        Some(
            tls::connector(v, up.param("tlsCAFile"), true)
                .map_err(|e| BuildError::Tls(format!("route {} upstream", r.name), e))?,
        )
    } else {
        None
    };
    let server_name = ServerName::try_from(up.host.clone()).map_err(|e| bad(format!("host name: {e}")))?;
    let auth_source =
        up.param("authSource").map(str::to_owned).or(up.database.clone()).unwrap_or_else(|| "admin".into());
    let target = Arc::new(MongoTarget {
        host: up.host.clone(),
        port: up.port,
        user: up.user.clone(),
        password: up.password.clone(),
        auth_source,
        mechanism: up.param("authMechanism").map(str::to_owned),
        tls,
        server_name,
        seeds: std::iter::once((up.host.clone(), up.port)).chain(up.more_hosts.iter().cloned()).collect(),
        discover: srv
            || !up.more_hosts.is_empty()
            || up.param("replicaSet").is_some()
            || up.param("directConnection") == Some("false"),
        replica_set: up.param("replicaSet").map(str::to_owned),
        srv: if srv {
            let dns = server.dns_addrs().map_err(|e| BuildError::Invalid(format!("server.dns_servers: {e}")))?;
            Some(crate::mongodb::srv::Srv::new(&up.host, dns))
        } else {
            None
        },
        auth_source_from_url: up.param("authSource").is_some(),
        primary: Default::default(),
    });
    let manager = MongoManager { target: target.clone(), limits: Default::default() };
    Ok(MongoRoute {
        target,
        pool: Pool::new(manager, pool_settings(r)),
        pins: Default::default(),
        views: Default::default(),
        beating: Default::default(),
    })
}

fn build_redis(r: &RouteConfig) -> Result<RedisRoute, BuildError> {
    let bad = |e: String| BuildError::Invalid(format!("route {}: {e}", r.name));
    let up = r.upstream().map_err(bad)?;
    let tls = if up.scheme == "rediss" {
        let verify = match up.param("tls_verify").unwrap_or("full") {
            "none" => tls::Verify::None,
            "ca" => tls::Verify::Chain,
            _ => tls::Verify::Full,
        };
        Some(
            tls::connector(verify, up.param("tls_ca"), true)
                .map_err(|e| BuildError::Tls(format!("route {} upstream", r.name), e))?,
        )
    } else {
        None
    };
    let server_name = ServerName::try_from(up.host.clone()).map_err(|e| bad(format!("host name: {e}")))?;
    let db = up.database.as_deref().map_or(Ok(0), str::parse).map_err(|e| bad(format!("database: {e}")))?;
    let target = RedisTarget {
        host: up.host.clone(),
        port: up.port,
        user: up.user.clone(),
        password: up.password.clone(),
        db,
        tls,
        server_name,
        client_name: format!(
            "dgf-{}",
            r.name
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
                .collect::<String>()
        ),
    };
    Ok(RedisRoute::new(target, pool_settings(r)))
}

/// Build a snapshot, reusing pools and counters of `previous` where the upstream is unchanged.
pub fn build(config: Config, metrics: &Metrics, previous: Option<&Snapshot>) -> Result<Snapshot, BuildError> {
    let policy = Arc::new(Policy::from_config(&config)?);
    let mut users = HashMap::new();
    for u in &config.users {
        users.insert(u.name.clone(), Arc::new(build_user(u)?));
    }
    let mut routes = HashMap::new();
    for r in &config.routes {
        let listen: SocketAddr =
            r.listen.parse().map_err(|e| BuildError::Invalid(format!("route {}: listen: {e}", r.name)))?;
        let tls_files = r.tls.as_ref().or(config.tls.as_ref());
        let tls = match tls_files {
            Some(f) => {
                Some(tls::acceptor(&f.cert, &f.key).map_err(|e| BuildError::Tls(format!("route {} tls", r.name), e))?)
            }
            None => None,
        };
        let old = previous.and_then(|p| p.routes.get(&r.name));
        let reusable = old.filter(|o| o.cfg.upstream == r.upstream && o.protocol == r.protocol);
        let (mut pg, mut my, mut mongo, mut redis) = (None, None, None, None);
        match r.protocol {
            Protocol::Postgres => {
                let reuse = reusable.and_then(|o| o.pg.clone());
                pg = Some(match reuse {
                    Some(pools) => pools,
                    None => Arc::new(build_pg(r)?),
                });
            }
            Protocol::Mongodb => {
                mongo = Some(match reusable.and_then(|o| o.mongo.clone()) {
                    Some(m) => m,
                    None => Arc::new(build_mongo(r, &config.server)?),
                });
            }
            Protocol::Redis => {
                redis = Some(match reusable.and_then(|o| o.redis.clone()) {
                    Some(rr) => rr,
                    None => Arc::new(build_redis(r)?),
                });
            }
            Protocol::Mysql => {
                my = Some(match reusable.and_then(|o| o.my.clone()) {
                    Some(pools) => pools,
                    None => Arc::new(crate::mysql::pools::build(r, pool_settings(r))?),
                });
            }
        }
        routes.insert(
            r.name.clone(),
            Arc::new(Route {
                name: r.name.clone(),
                protocol: r.protocol,
                listen,
                cfg: r.clone(),
                tls,
                metrics: metrics.route(&r.name),
                clients: old.map(|o| o.clients.clone()).unwrap_or_default(),
                shaper: old
                    .map(|o| o.shaper.clone())
                    .unwrap_or_else(|| crate::shaping::Shaper::new(&r.name, &metrics.shaping)),
                pg,
                redis,
                my,
                mongo,
            }),
        );
    }
    Ok(Snapshot { config: Arc::new(config), users, routes, policy })
}

impl Snapshot {
    /// Push pool options and budgets of this snapshot into the pools and limiters it shares
    /// with the previous one. Called only once the whole snapshot has been built, so a failed
    /// reload changes nothing.
    pub fn activate(&self, metrics: &Metrics) {
        for r in self.routes.values() {
            r.shaper.configure(r.cfg.shaping.as_ref());
            if let Some(pg) = &r.pg {
                let opts = pg_opts(&r.cfg);
                for p in pg.pools.iter() {
                    p.value().update_settings(opts.settings.clone());
                }
                pg.opts.store(Arc::new(opts));
            }
            if let Some(rr) = &r.redis {
                rr.pool.update_settings(pool_settings(&r.cfg));
                crate::redis::memory::configure(rr, r, &metrics.shaping);
            }
            if let Some(my) = &r.my {
                let settings = pool_settings(&r.cfg);
                for p in my.pools.iter() {
                    p.value().update_settings(settings.clone());
                }
                my.settings.store(Arc::new(settings));
            }
            if let Some(m) = &r.mongo {
                m.pool.update_settings(pool_settings(&r.cfg));
            }
        }
    }
}
