//! The pools of one MySQL route: one for clients without CLIENT_FOUND_ROWS and, when such
//! clients come, one for those with it (the flag is fixed at login); created on first use, kept across reloads while the upstream URL is unchanged; plus the route's prepared
//! statement registry and the upstream version shown in greetings.

use super::backend::{MyManager, MyTarget, PoolKey};
use super::state::Registry;
use crate::live::BuildError;
use crate::pool::{Pool, PoolSettings};
use crate::tls;
use arc_swap::{ArcSwap, ArcSwapOption};
use dashmap::DashMap;
use dgf_config::{MySslMode, RouteConfig};
use dgf_protocols::mysql::auth::RsaKey;
use rustls_pki_types::ServerName;
use std::sync::Arc;

/// Pools and shared state of a MySQL route.
pub struct MyPools {
    /// Upstream.
    pub target: Arc<MyTarget>,
    /// Limits for every pool of the route (reloadable).
    pub settings: ArcSwap<PoolSettings>,
    /// Pools by key.
    pub pools: DashMap<PoolKey, Pool<MyManager>>,
    /// Prepared statements seen on this route.
    pub statements: Registry,
    /// Upstream version string, once a connection has been made.
    pub version: Arc<ArcSwapOption<String>>,
    /// RSA key for caching_sha2_password full authentication without TLS (None: refused).
    pub rsa: Option<Arc<dyn RsaKey>>,
    /// View definitions, for governance.
    pub views: super::views::ViewCache,
}

impl MyPools {
    /// The pool for `key`, created on first use.
    pub fn pool(&self, key: &PoolKey) -> Pool<MyManager> {
        if let Some(p) = self.pools.get(key) {
            return p.clone();
        }
        self.pools
            .entry(key.clone())
            .or_insert_with(|| {
                Pool::new(
                    MyManager { target: self.target.clone(), key: key.clone(), version: self.version.clone() },
                    (**self.settings.load()).clone(),
                )
            })
            .clone()
    }

    /// Version string for the greeting: the upstream's (learned by opening one connection
    /// the first time), or a neutral one when the upstream cannot be reached.
    pub async fn server_version(&self) -> String {
        if let Some(v) = self.version.load_full() {
            return v.to_string();
        }
        let key = PoolKey { found_rows: false };
        let _ = self.pool(&key).get().await;
        self.version.load_full().map(|v| v.to_string()).unwrap_or_else(|| "8.0.36-dgf".into())
    }
}

/// Build the pools of a MySQL route from its validated config.
pub fn build(r: &RouteConfig, settings: PoolSettings) -> Result<MyPools, BuildError> {
    let up = r.upstream().map_err(|e| BuildError::Invalid(format!("route {}: {e}", r.name)))?;
    let ssl_mode = up.my_ssl_mode().map_err(|e| BuildError::Invalid(format!("route {}: {e}", r.name)))?;
    let verify = match ssl_mode {
        MySslMode::Disabled => None,
        MySslMode::Preferred | MySslMode::Required => Some(tls::Verify::None),
        MySslMode::VerifyCa => Some(tls::Verify::Chain),
        MySslMode::VerifyIdentity => Some(tls::Verify::Full),
    };
    let connector = match verify {
        None => None,
        Some(v) => Some(
            tls::connector(v, up.my_ssl_ca(), true)
                .map_err(|e| BuildError::Tls(format!("route {} upstream", r.name), e))?,
        ),
    };
    let server_name = ServerName::try_from(up.host.clone())
        .map_err(|e| BuildError::Invalid(format!("route {}: host name: {e}", r.name)))?;
    let target = MyTarget {
        host: up.host.clone(),
        port: up.port,
        user: up.user.clone().unwrap_or_else(|| "root".into()),
        password: up.password.clone().unwrap_or_default(),
        ssl_mode,
        tls: connector,
        server_name,
    };
    let _ = up.database;
    let rsa = super::rsa::RsaSetting::from_option(r.options.get("rsa_private_key").map(String::as_str))
        .key()
        .map_err(|e| BuildError::Invalid(format!("route {}: rsa_private_key: {e}", r.name)))?;
    Ok(MyPools {
        target: Arc::new(target),
        settings: ArcSwap::from_pointee(settings),
        pools: DashMap::new(),
        statements: Registry::default(),
        version: Arc::new(ArcSwapOption::empty()),
        rsa,
        views: Default::default(),
    })
}
