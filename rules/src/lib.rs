//! dgf policy engine: the `QueryContext` every protocol fills in, and the decision it gets back.
//!
//! Pure and synchronous (no I/O, no tokio) so that the Postgres, MySQL, Redis and MongoDB
//! sessions and the HTTP gateway all call the same code on their hot path.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod mask;
pub mod redis;
pub mod sql;

use std::net::SocketAddr;

/// The protocol a statement arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// PostgreSQL.
    Postgres,
    /// MySQL / MariaDB.
    Mysql,
    /// Redis.
    Redis,
    /// MongoDB.
    Mongodb,
    /// The HTTP gateway.
    Http,
}

/// How a statement reached the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source<'a> {
    /// A simple (text) query.
    Simple,
    /// Preparing a named or unnamed statement.
    Prepare {
        /// Client-side statement name ("" = unnamed).
        name: &'a str,
    },
}

/// Everything the engine may use to decide about one statement/command/request.
#[derive(Debug, Clone, Copy)]
pub struct QueryContext<'a> {
    /// Protocol.
    pub protocol: Protocol,
    /// Route name.
    pub route: &'a str,
    /// dgf user.
    pub user: &'a str,
    /// Roles of the user.
    pub roles: &'a [String],
    /// Database / keyspace.
    pub database: &'a str,
    /// Client address.
    pub client_addr: Option<SocketAddr>,
    /// Statement text (SQL, command line, request path).
    pub text: &'a str,
    /// How it arrived.
    pub source: Source<'a>,
}

/// Why a statement was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// Rule that refused it.
    pub rule: String,
    /// Message for the client.
    pub message: String,
}

/// The engine's answer for one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Forward unchanged; responses need no masking.
    Allow,
    /// Refuse with a protocol-native error.
    Deny(Denial),
}

/// Errors building a policy from configuration.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The configuration uses a policy feature this build does not enforce yet. Refusing to
    /// start is safer than silently not enforcing a rule.
    #[error("{0} is configured, but this build of dgf does not enforce it yet; remove it or upgrade")]
    NotEnforced(&'static str),
}

/// A compiled policy: immutable, shared by every session through an `Arc`, swapped on reload.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    _private: (),
}

impl Policy {
    /// Compile the policy sections of a configuration.
    pub fn from_config(cfg: &dgf_config::Config) -> Result<Self, RulesError> {
        if !cfg.rules.is_empty() {
            return Err(RulesError::NotEnforced("[[rules]]"));
        }
        if !cfg.labels.is_empty() {
            return Err(RulesError::NotEnforced("[[labels]]"));
        }
        if cfg.audit.is_some() {
            return Err(RulesError::NotEnforced("[audit]"));
        }
        Ok(Self { _private: () })
    }

    /// Decide about one statement. Called before anything is forwarded upstream.
    #[inline]
    pub fn decide(&self, _ctx: &QueryContext<'_>) -> Decision {
        Decision::Allow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_policy_allows() {
        let p = Policy::from_config(&dgf_config::Config::default()).unwrap();
        let ctx = QueryContext {
            protocol: Protocol::Postgres,
            route: "pg",
            user: "app",
            roles: &[],
            database: "db",
            client_addr: None,
            text: "SELECT 1",
            source: Source::Simple,
        };
        assert_eq!(p.decide(&ctx), Decision::Allow);
    }

    #[test]
    fn unenforced_sections_refuse_to_start() {
        let mut cfg = dgf_config::Config::default();
        cfg.labels.push(dgf_config::LabelConfig { name: "email".into(), matches: vec!["public.t.email".into()] });
        assert!(matches!(Policy::from_config(&cfg), Err(RulesError::NotEnforced("[[labels]]"))));
    }
}
