//! Typed configuration model: the structs `dgf.toml` deserialises into.
//!
//! Every field documents its default and whether a reload applies it.
//!
//! Unknown keys are errors, but the structs do not use `deny_unknown_fields` (that stops at the
//! first one): [`crate::parse_str`] collects every unknown key with `serde_ignored` and reports
//! them all with their line and column. Always load config through [`crate::load`] /
//! [`crate::parse_str`], never with `toml::from_str` directly.

use serde::Deserialize;
use std::collections::BTreeMap;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
pub struct Config {
    /// Process-wide settings. Defaults: see [`ServerSettings`].
    #[serde(default)]
    pub server: ServerSettings,
    /// Admin HTTP endpoint (health, metrics, pools, reload).
    #[serde(default)]
    pub admin: AdminConfig,
    /// Logging. Not reloadable.
    #[serde(default)]
    pub log: LogConfig,
    /// Default TLS certificate for client-side TLS termination, used by every route
    /// that does not name its own. Reloadable.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// dgf users that clients log in as. Reloadable.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// Listeners and their upstreams. Reloadable (listen address changes rebind).
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Data labels (where sensitive data lives). Reloadable.
    #[serde(default)]
    pub labels: Vec<LabelConfig>,
    /// Policy rules, evaluated as documented in docs/policies.md. Reloadable.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// Audit log settings. Optional: no section, no audit file.
    #[serde(default)]
    pub audit: Option<AuditConfig>,
    /// Built-in guards (always-on deny rules for dangerous statements). Reloadable.
    #[serde(default)]
    pub guards: GuardsConfig,
    /// Masking settings (the key of the `hash` mask function). Reloadable.
    #[serde(default)]
    pub masking: MaskingConfig,
}

/// Built-in guards: deny rules that ship with dgf, each switchable. An `allow` rule that matches
/// a statement lifts a guard for it, as it lifts any deny rule.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct GuardsConfig {
    /// Deny `UPDATE` without `WHERE`. Default false.
    pub update_without_where: bool,
    /// Deny `DELETE` without `WHERE`. Default false.
    pub delete_without_where: bool,
    /// Deny several statements in one simple query. Default false.
    pub multi_statement: bool,
    /// Deny DDL (CREATE / ALTER / DROP / TRUNCATE / GRANT / REVOKE / COMMENT). Default false.
    pub ddl: bool,
    /// Deny `COPY ... TO/FROM PROGRAM` (runs a shell command on the database host). Default true.
    pub copy_program: bool,
    /// Deny `SET ROLE` / `SET SESSION AUTHORIZATION` / `RESET ROLE` (changes the server-side
    /// identity behind dgf's back). Default true.
    pub set_role: bool,
    /// Deny calls to the functions in `denied_functions`. Default true.
    pub functions: bool,
    /// Functions refused when `functions = true` (lower case; schema-qualified names match
    /// their last part too). Default: file, large-object, dblink and admin functions, and the
    /// ones that run SQL given as text (`query_to_xml`, `table_to_xml`, ..., `ts_stat`).
    pub denied_functions: Vec<String>,
    /// Functions defined in the database (Postgres: not from an extension) that roles with
    /// mask rules or deny rules on tables may call (lower case, `*` globs). Such functions run
    /// with the server's rights and dgf cannot see what they read, so every other one is
    /// refused for those roles. Default none.
    pub trusted_functions: Vec<String>,
    /// Roles the guards do not apply to. Default none.
    pub exempt_roles: Vec<String>,
}

/// Default `guards.denied_functions`.
pub const DEFAULT_DENIED_FUNCTIONS: &[&str] = &[
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_dir",
    "pg_stat_file",
    "pg_file_write",
    "lo_import",
    "lo_export",
    "lo_from_bytea",
    "dblink",
    "dblink_exec",
    "dblink_connect",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "set_config",
    "load_file",
    "sys_exec",
    "sys_eval",
    // These run SQL given as text, or read whole tables, schemas or databases named by a
    // string: dgf cannot see what they read, so deny rules and masks could not follow.
    "query_to_xml",
    "query_to_xmlschema",
    "query_to_xml_and_xmlschema",
    "cursor_to_xml",
    "cursor_to_xmlschema",
    "table_to_xml",
    "table_to_xmlschema",
    "table_to_xml_and_xmlschema",
    "schema_to_xml",
    "schema_to_xmlschema",
    "schema_to_xml_and_xmlschema",
    "database_to_xml",
    "database_to_xmlschema",
    "database_to_xml_and_xmlschema",
    "ts_stat",
];

impl Default for GuardsConfig {
    fn default() -> Self {
        Self {
            update_without_where: false,
            delete_without_where: false,
            multi_statement: false,
            ddl: false,
            copy_program: true,
            set_role: true,
            functions: true,
            denied_functions: DEFAULT_DENIED_FUNCTIONS.iter().map(|s| (*s).to_owned()).collect(),
            trusted_functions: Vec::new(),
            exempt_roles: Vec::new(),
        }
    }
}

/// Masking settings.
#[derive(Clone, Deserialize, PartialEq, Default)]
#[serde(default)]
pub struct MaskingConfig {
    /// Secret key (at least 16 bytes) of the `hash` mask function: HMAC-SHA-256 pseudonyms are
    /// stable for one key. Required when a rule uses `with = "hash"`. Use `${ENV}`.
    pub hash_key: Option<String>,
}

impl std::fmt::Debug for MaskingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaskingConfig").field("hash_key", &self.hash_key.as_ref().map(|_| "***")).finish()
    }
}

/// Process-wide settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct ServerSettings {
    /// Cap on client connections across all routes. Default 10000. Reloadable.
    pub max_client_connections: usize,
    /// Time a client has to finish TLS + startup + auth. Default 15000 ms.
    pub client_login_timeout_ms: u64,
    /// On SIGTERM: how long to wait for clients to finish before closing them. Default 30000 ms.
    pub shutdown_timeout_ms: u64,
    /// Failed logins allowed per source address before further attempts are refused.
    /// Default 5. Reloadable.
    pub auth_failure_burst: u32,
    /// Seconds for one failed-login allowance to come back. Default 12 (5 per minute).
    pub auth_failure_refill_secs: u64,
    /// What to do with a statement the policy engine cannot parse: "deny" (default) or "allow".
    pub on_parse_error: OnParseError,
    /// Worker threads. Unset (default) = [`ServerSettings::worker_threads`] decides from the
    /// cores the process may use: one single-threaded event loop on a host of one or two, one
    /// per core above that. 0 = one per core; 1 = a single-threaded event loop (the most
    /// CPU-efficient per query, like PgBouncer); N = N. Not reloadable.
    pub workers: Option<usize>,
    /// Threads of the event loop that serves Redis routes, apart from `workers`. 1 (default) =
    /// one dedicated single-threaded loop, as Redis and twemproxy run: a command hops between
    /// the client's session and the shared upstream connections, and on one thread those hops
    /// cost no cross-thread wake-ups. N > 1 = a loop with N threads; 0 = share `workers`. Not
    /// reloadable.
    pub redis_threads: usize,
    /// Name servers for `mongodb+srv://` lookups (`"10.0.0.2"` or `"10.0.0.2:53"`); empty
    /// (default) = the system's (/etc/resolv.conf). Read when a route is built.
    pub dns_servers: Vec<String>,
}

/// Cores up to which an unset `server.workers` means one single-threaded event loop.
pub const SINGLE_LOOP_MAX_CORES: usize = 2;

impl ServerSettings {
    /// Worker threads to run, given the cores the process may use (`cores`, as
    /// `std::thread::available_parallelism` counts them: affinity and cgroup CPU quota
    /// included). 1 means a single-threaded event loop.
    ///
    /// Why one loop on small hosts: with two cores shared with the database, the load tool or
    /// the application, a second worker mostly parks and is woken again for the next task,
    /// and each of those wake-ups and context switches costs more than the work stealing
    /// saves (docs/benchmarks.md, twentieth machine: 25 against 31 us of proxy CPU per
    /// governed Postgres transaction at 10 clients, 28 against 35 at 500).
    pub fn worker_threads(&self, cores: usize) -> usize {
        match self.workers {
            Some(0) => cores.max(1),
            Some(n) => n,
            None if cores <= SINGLE_LOOP_MAX_CORES => 1,
            None => cores,
        }
    }

    /// `dns_servers` as addresses (port 53 when none is given); the first entry that does not
    /// parse is the error.
    pub fn dns_addrs(&self) -> Result<Vec<std::net::SocketAddr>, String> {
        self.dns_servers
            .iter()
            .map(|s| {
                s.parse::<std::net::SocketAddr>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| std::net::SocketAddr::new(ip, 53)))
                    .map_err(|_| format!("`{s}` is not an IP address or IP:port"))
            })
            .collect()
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            max_client_connections: 10_000,
            client_login_timeout_ms: 15_000,
            shutdown_timeout_ms: 30_000,
            auth_failure_burst: 5,
            auth_failure_refill_secs: 12,
            on_parse_error: OnParseError::Deny,
            workers: None,
            redis_threads: 1,
            dns_servers: Vec::new(),
        }
    }
}

/// Behaviour for statements that cannot be parsed.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnParseError {
    /// Refuse the statement with a protocol-native error.
    #[default]
    Deny,
    /// Let it through (audited as unparsed).
    Allow,
}

/// Admin HTTP endpoint.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct AdminConfig {
    /// Listen address. Default "127.0.0.1:9930". Not reloadable.
    pub listen: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self { listen: "127.0.0.1:9930".into() }
    }
}

/// Logging.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct LogConfig {
    /// "text" (default) or "json".
    pub format: LogFormat,
    /// tracing filter directive, e.g. "info" or "dgf=debug". Default "info";
    /// the `DGF_LOG` environment variable overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Text, level: "info".into() }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// PEM certificate chain and private key files.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct TlsFiles {
    /// Certificate chain (PEM).
    pub cert: String,
    /// Private key (PEM, PKCS#8 / PKCS#1 / SEC1).
    pub key: String,
}

/// A dgf user. `Debug` hides the password.
#[derive(Clone, Deserialize, PartialEq)]
pub struct UserConfig {
    /// Login name.
    pub name: String,
    /// Plaintext password, or a stored verifier: `SCRAM-SHA-256$<iter>:<salt>$<stored>:<server>`
    /// or `md5<hex of md5(password || user)>`. Usually `${ENV}`. Required unless auth = "trust".
    #[serde(default)]
    pub password: Option<String>,
    /// Authentication method clients must use: "scram-sha-256" (default), "md5", "trust".
    #[serde(default)]
    pub auth: AuthMethod,
    /// Roles that rules refer to.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Client authentication method.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
pub enum AuthMethod {
    /// SCRAM-SHA-256 (RFC 7677).
    #[default]
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// Postgres md5 challenge.
    #[serde(rename = "md5")]
    Md5,
    /// No password.
    #[serde(rename = "trust")]
    Trust,
}

/// Wire protocol of a route.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// PostgreSQL v3 protocol.
    Postgres,
    /// MySQL / MariaDB protocol.
    Mysql,
    /// RESP2/RESP3.
    Redis,
    /// MongoDB wire protocol.
    Mongodb,
}

/// A listener and the upstream it governs.
#[derive(Clone, Deserialize, PartialEq)]
pub struct RouteConfig {
    /// Unique route name (metrics label, audit field).
    pub name: String,
    /// Wire protocol.
    pub protocol: Protocol,
    /// Client-side listen address, e.g. "127.0.0.1:6432".
    pub listen: String,
    /// Upstream URL, e.g. "postgres://user:pass@host:5432/db?sslmode=require".
    /// `${ENV}` interpolation applies. Parse it with [`RouteConfig::upstream`] (validation
    /// already checked that it parses). `Debug` hides its password.
    pub upstream: String,
    /// Pool settings.
    #[serde(default)]
    pub pool: PoolConfig,
    /// Client-side TLS certificate for this route (overrides `[tls]`).
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// Refuse clients that do not use TLS. Default false.
    #[serde(default)]
    pub require_tls: bool,
    /// Cap on client connections to this route (in addition to the global cap). Default: none.
    #[serde(default)]
    pub max_client_connections: Option<usize>,
    /// Free-tier provider profile (supabase, neon, ...). Optional.
    #[serde(default)]
    pub provider: Option<String>,
    /// Extra protocol-specific settings passed through verbatim (reserved).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Ops/s shaping: requests above the rate wait in dgf instead of at the provider.
    /// Optional (default: no limit). Reloadable.
    #[serde(default)]
    pub shaping: Option<ShapingConfig>,
    /// Redis routes only: refuse writes that can grow memory while the upstream's
    /// `used_memory` is at or above a budget. Optional (default: no budget). Reloadable.
    #[serde(default)]
    pub memory_budget: Option<MemoryBudgetConfig>,
}

/// Per-route ops/s limit (a token bucket shared by every client of the route).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ShapingConfig {
    /// Sustained operations per second (Redis commands, MongoDB requests, SQL statements).
    /// Required, >= 1.
    pub ops_per_sec: u32,
    /// Operations that may run back to back before the rate applies. Default: `ops_per_sec`
    /// (one second's worth). >= 1.
    #[serde(default)]
    pub burst: Option<u32>,
    /// Longest a request may queue; a request whose slot is further away is refused with a
    /// protocol-native error. Default 5000 ms; 0 = never queue.
    #[serde(default = "default_max_wait_ms")]
    pub max_wait_ms: u64,
}

fn default_max_wait_ms() -> u64 {
    5_000
}

impl ShapingConfig {
    /// The burst, defaulted.
    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or(self.ops_per_sec).max(1)
    }
}

/// Redis memory budget: dgf polls `INFO memory` on the route's upstream.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct MemoryBudgetConfig {
    /// Budget for the upstream's `used_memory`, in bytes. Required, >= 1.
    pub max_bytes: u64,
    /// How often dgf polls `INFO memory`. Default 1000 ms; >= 100.
    #[serde(default = "default_check_interval_ms")]
    pub check_interval_ms: u64,
}

fn default_check_interval_ms() -> u64 {
    1_000
}

/// Pooling mode.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum PoolMode {
    /// A server connection per client for the client's whole session.
    Session,
    /// A server connection per transaction (default).
    #[default]
    Transaction,
}

/// Server-side pool settings (per route and database).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default)]
pub struct PoolConfig {
    /// "transaction" (default) or "session".
    pub mode: PoolMode,
    /// Hard cap on server connections per (route, database). Default 10. Reloadable.
    pub size: usize,
    /// Idle server connections kept open. Default 0. Reloadable.
    pub min_idle: usize,
    /// How long a client waits for a server connection before error 53300. Default 5000 ms.
    pub wait_timeout_ms: u64,
    /// Close server connections idle longer than this. Default 600000 ms (0 = never).
    pub idle_timeout_ms: u64,
    /// Close server connections older than this when they are released. Default 3600000 ms (0 = never).
    pub max_lifetime_ms: u64,
    /// Upstream connect + login timeout. Default 5000 ms.
    pub connect_timeout_ms: u64,
    /// Run `health_check_query` on a connection idle longer than this before handing it out.
    /// Default 30000 ms (0 = always check).
    pub health_check_delay_ms: u64,
    /// Query used for health checks. Default ";" (an empty query).
    pub health_check_query: String,
    /// Query run before a session-mode connection goes back to the pool. Default "DISCARD ALL".
    pub reset_query: String,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            mode: PoolMode::Transaction,
            size: 10,
            min_idle: 0,
            wait_timeout_ms: 5_000,
            idle_timeout_ms: 600_000,
            max_lifetime_ms: 3_600_000,
            connect_timeout_ms: 5_000,
            health_check_delay_ms: 30_000,
            health_check_query: ";".into(),
            reset_query: "DISCARD ALL".into(),
        }
    }
}

/// A data label: where sensitive data lives.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct LabelConfig {
    /// Label name used by rules.
    pub name: String,
    /// Glob patterns: `schema.table.column`, `db.table.column`, `mongodb:db.coll.path`,
    /// `redis:key-glob#field`, ...
    #[serde(rename = "match")]
    pub matches: Vec<String>,
}

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    /// Refuse the statement.
    Deny,
    /// Mask labelled data in results.
    Mask,
    /// Carve out an exception to deny rules.
    Allow,
    /// Cap rows returned.
    Limit,
}

/// Whether a rule is enforced or only logged.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RuleMode {
    /// Enforce (default).
    #[default]
    Enforce,
    /// Decide and audit only.
    Shadow,
}

/// A policy rule.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct RuleConfig {
    /// Rule name (appears in errors, audit and metrics).
    pub name: String,
    /// Roles the rule applies to; empty = everyone.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Action.
    pub action: RuleAction,
    /// Statement kinds / command classes / command names.
    #[serde(default)]
    pub statements: Vec<String>,
    /// Table / collection / key globs.
    #[serde(default)]
    pub tables: Vec<String>,
    /// Column / field globs.
    #[serde(default)]
    pub columns: Vec<String>,
    /// Labels.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Mask function for `mask`: redact | null | email | partial(...) | hash | fixed("x").
    #[serde(default)]
    pub with: Option<String>,
    /// Row cap for `limit`.
    #[serde(default)]
    pub max_rows: Option<u64>,
    /// Routes the rule applies to; empty = all.
    #[serde(default)]
    pub routes: Vec<String>,
    /// enforce (default) | shadow.
    #[serde(default)]
    pub mode: RuleMode,
}

/// Audit overflow policy.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum AuditOverflow {
    /// Lossless backpressure (default).
    #[default]
    Block,
    /// Drop and count.
    Drop,
}

/// Scheduling of the audit writer thread.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum AuditWriterPriority {
    /// Default: the writer runs under `SCHED_IDLE` (Linux), on cores nothing else wants, and a
    /// normal-priority rescuer thread takes over whenever it falls 100 ms behind, so it never
    /// starves. Where `SCHED_IDLE` is not available it runs as `normal`.
    #[default]
    Auto,
    /// Like every other thread: a fair share of the CPU under any load, and bursts of audit
    /// work that preempt the threads relaying traffic.
    Normal,
    /// `SCHED_IDLE` (Linux) without the rescuer: for hosts with CPU to spare. Under a sustained
    /// CPU hog the writer falls behind and `overflow` applies.
    Idle,
}

/// Audit log settings.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct AuditConfig {
    /// File sink path; "-" or absent with sink = "stdout" writes to stdout.
    #[serde(default)]
    pub path: Option<String>,
    /// "file" (default when path is set) or "stdout".
    #[serde(default)]
    pub sink: Option<String>,
    /// Overflow policy. Default block.
    #[serde(default)]
    pub overflow: AuditOverflow,
    /// Keep literal values in audit records. Default false.
    #[serde(default)]
    pub include_literals: bool,
    /// Rotate the file past this size. Default 100 MiB.
    #[serde(default)]
    pub max_file_bytes: Option<u64>,
    /// Rotated files kept beside the live one; older ones are deleted at each rotation.
    /// Default: all are kept.
    #[serde(default)]
    pub keep_rotated: Option<u32>,
    /// Bounded queue length. Default 65536.
    #[serde(default)]
    pub queue: Option<usize>,
    /// Secret that keys the hashed Redis key names of audit records (HMAC-SHA-256). Unset:
    /// plain SHA-256, which a dictionary of likely key names can reverse.
    #[serde(default)]
    pub fingerprint_key: Option<Secret>,
    /// Scheduling of the writer thread. Default auto.
    #[serde(default)]
    pub writer_priority: AuditWriterPriority,
}

/// A secret from the configuration: deserialises from a string, prints as `***` in debug
/// output (logs, `dgf check`), so a struct holding one can derive `Debug` safely.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself (use it, never log it).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Debug for UserConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserConfig")
            .field("name", &self.name)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("auth", &self.auth)
            .field("roles", &self.roles)
            .finish()
    }
}

impl std::fmt::Debug for RouteConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let upstream = self.upstream().map_or_else(|_| "<unparsed upstream>".to_owned(), |u| u.to_string());
        f.debug_struct("RouteConfig")
            .field("name", &self.name)
            .field("protocol", &self.protocol)
            .field("listen", &self.listen)
            .field("upstream", &upstream)
            .field("pool", &self.pool)
            .field("tls", &self.tls)
            .field("require_tls", &self.require_tls)
            .field("max_client_connections", &self.max_client_connections)
            .field("provider", &self.provider)
            .field("options", &self.options)
            .field("shaping", &self.shaping)
            .field("memory_budget", &self.memory_budget)
            .finish()
    }
}
