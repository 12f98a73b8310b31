//! dgf policy engine: the `QueryContext` every protocol fills in, and the decision it gets back.
//!
//! Pure and synchronous (no I/O, no tokio) so that the Postgres, MySQL, Redis and MongoDB
//! sessions and the HTTP gateway all call the same code on their hot path.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod mask;
pub mod mongodb;
pub mod policy;
pub mod redis;
pub mod sql;

pub use policy::{Action, Denial, FieldRef, MaskRule, Namespace, Policy, RoleView, Verdict};

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

/// Errors building a policy from configuration.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// A policy section is inconsistent (unknown label, bad mask function or key).
    #[error("policy: {0}")]
    Invalid(String),
}

impl Protocol {
    /// Lower-case name used in audit records and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Postgres => "postgres",
            Protocol::Mysql => "mysql",
            Protocol::Redis => "redis",
            Protocol::Mongodb => "mongodb",
            Protocol::Http => "http",
        }
    }
}
