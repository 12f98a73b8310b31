//! Prometheus metrics: one registry, handles resolved once per route so the hot path only
//! increments atomics.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// All metric families.
pub struct Metrics {
    registry: Registry,
    clients: IntGaugeVec,
    clients_total: IntCounterVec,
    clients_rejected: IntCounterVec,
    login_failures: IntCounterVec,
    queries: IntCounterVec,
    bytes: IntCounterVec,
    errors: IntCounterVec,
    wait: HistogramVec,
    server_conns: IntGaugeVec,
    pool_waiting: IntGaugeVec,
    pool_max: IntGaugeVec,
    server_opened: IntGaugeVec,
    reloads: IntCounterVec,
    catalog_loads: IntCounterVec,
    /// Ops/s shaping and memory-budget families (handles resolved per route when configured).
    pub shaping: crate::shaping::Families,
}

/// Handles for one route.
#[derive(Clone)]
pub struct RouteMetrics {
    /// Connected clients.
    pub clients: IntGauge,
    /// Clients accepted since start.
    pub clients_total: IntCounter,
    /// Clients refused (connection caps).
    pub clients_rejected: IntCounter,
    /// Failed logins.
    pub login_failures: IntCounter,
    /// Statements (simple queries and Execute messages).
    pub queries: IntCounter,
    /// Bytes from clients.
    pub bytes_in: IntCounter,
    /// Bytes to clients.
    pub bytes_out: IntCounter,
    /// Time waiting for a server connection.
    pub wait: Histogram,
    /// Catalogs loaded for masking and view checks (Postgres).
    pub catalog_loads: IntCounter,
    errors: IntCounterVec,
    route: String,
}

impl RouteMetrics {
    /// Count an error sent to a client, by SQLSTATE / errno / error kind.
    pub fn error(&self, code: &str) {
        self.errors.with_label_values(&[self.route.as_str(), code]).inc();
    }
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let v = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(v.clone())).expect("unique metric");
    v
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let v = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(v.clone())).expect("unique metric");
    v
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Register every family.
    pub fn new() -> Self {
        let r = Registry::new();
        let wait = HistogramVec::new(
            HistogramOpts::new("dgf_pool_wait_seconds", "Time clients waited for a server connection")
                .buckets(vec![0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0]),
            &["route"],
        )
        .expect("valid metric");
        r.register(Box::new(wait.clone())).expect("unique metric");
        Self {
            clients: gauge_vec(&r, "dgf_client_connections", "Connected clients", &["route"]),
            clients_total: counter_vec(&r, "dgf_client_connections_total", "Clients accepted", &["route"]),
            clients_rejected: counter_vec(
                &r,
                "dgf_client_rejected_total",
                "Clients refused by connection caps",
                &["route"],
            ),
            login_failures: counter_vec(&r, "dgf_login_failures_total", "Failed client logins", &["route"]),
            queries: counter_vec(&r, "dgf_queries_total", "Statements forwarded", &["route"]),
            bytes: counter_vec(&r, "dgf_client_bytes_total", "Bytes exchanged with clients", &["route", "direction"]),
            errors: counter_vec(&r, "dgf_errors_total", "Errors sent to clients by code", &["route", "code"]),
            wait,
            server_conns: gauge_vec(
                &r,
                "dgf_server_connections",
                "Server connections by state",
                &["route", "database", "state"],
            ),
            pool_waiting: gauge_vec(
                &r,
                "dgf_pool_waiting_clients",
                "Clients waiting for a server connection",
                &["route", "database"],
            ),
            pool_max: gauge_vec(&r, "dgf_pool_max_connections", "Server connection cap", &["route", "database"]),
            server_opened: gauge_vec(
                &r,
                "dgf_server_connections_opened",
                "Server connections opened since start",
                &["route", "database"],
            ),
            reloads: counter_vec(&r, "dgf_reloads_total", "Configuration reloads by result", &["result"]),
            catalog_loads: counter_vec(
                &r,
                "dgf_catalog_loads_total",
                "Server catalogs loaded for masking and view checks",
                &["route"],
            ),
            shaping: crate::shaping::Families::register(&r),
            registry: r,
        }
    }

    /// The registry (for families registered elsewhere).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Resolve the handles of one route.
    pub fn route(&self, route: &str) -> RouteMetrics {
        RouteMetrics {
            clients: self.clients.with_label_values(&[route]),
            clients_total: self.clients_total.with_label_values(&[route]),
            clients_rejected: self.clients_rejected.with_label_values(&[route]),
            login_failures: self.login_failures.with_label_values(&[route]),
            queries: self.queries.with_label_values(&[route]),
            bytes_in: self.bytes.with_label_values(&[route, "in"]),
            bytes_out: self.bytes.with_label_values(&[route, "out"]),
            wait: self.wait.with_label_values(&[route]),
            catalog_loads: self.catalog_loads.with_label_values(&[route]),
            errors: self.errors.clone(),
            route: route.to_owned(),
        }
    }

    /// Record a pool's numbers (called at scrape time).
    pub fn set_pool(&self, route: &str, database: &str, s: &crate::pool::PoolStats) {
        self.server_conns.with_label_values(&[route, database, "idle"]).set(s.idle as i64);
        self.server_conns.with_label_values(&[route, database, "active"]).set(s.active as i64);
        self.server_conns.with_label_values(&[route, database, "connecting"]).set(s.connecting as i64);
        self.pool_waiting.with_label_values(&[route, database]).set(s.waiting as i64);
        self.pool_max.with_label_values(&[route, database]).set(s.max as i64);
        self.server_opened.with_label_values(&[route, database]).set(s.opened_total as i64);
    }

    /// Count a reload attempt.
    pub fn reload(&self, ok: bool) {
        self.reloads.with_label_values(&[if ok { "ok" } else { "error" }]).inc();
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let enc = prometheus::TextEncoder::new();
        if enc.encode(&self.registry.gather(), &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
