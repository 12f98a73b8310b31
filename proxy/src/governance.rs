//! Process-wide governance state: the SQL analysis cache, the audit writer and the policy
//! metrics (per-rule hits, decisions, audit records written/dropped).

use dgf_config::Config;
use dgf_rules::audit::{AuditEvent, AuditWriter, RawBatch};
use dgf_rules::policy::SqlVerdict;
use dgf_rules::sql::Analyzer;
use dgf_rules::{Policy, Verdict};
use hmac::Mac;
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use std::net::SocketAddr;
use std::time::Instant;

/// Capacity of the analysis cache (distinct statement shapes).
const ANALYSIS_CACHE: usize = 16_384;

/// Errors starting governance.
#[derive(Debug, thiserror::Error)]
pub enum GovernanceError {
    /// The audit sink could not be opened.
    #[error("audit: {0}")]
    Audit(#[from] dgf_rules::audit::AuditError),
}

/// Shared by every session.
pub struct Governance {
    /// Parsed statement shapes.
    pub analyzer: Analyzer,
    audit: Option<AuditWriter>,
    audit_cfg: Option<dgf_config::AuditConfig>,
    key_mac: Option<KeyMac>,
    rule_hits: IntCounterVec,
    decisions: IntCounterVec,
    audit_records: IntGaugeVec,
    audit_rescues: prometheus::IntGauge,
    audit_files_removed: prometheus::IntGauge,
}

/// HMAC-SHA-256 keyed with `[audit] fingerprint_key`: hashes key names in audit records.
pub type KeyMac = hmac::Hmac<sha2::Sha256>;

impl Governance {
    /// Start the audit writer (if configured) and register metrics.
    pub fn start(cfg: &Config, registry: &Registry) -> Result<Self, GovernanceError> {
        let instance = std::env::var("DGF_INSTANCE")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| format!("dgf-{}", std::process::id()));
        let audit = match &cfg.audit {
            Some(a) => {
                let w = AuditWriter::start(a, &instance)?;
                use dgf_config::AuditWriterPriority as P;
                let got = w.wait_writer_priority(std::time::Duration::from_secs(1));
                if matches!(a.writer_priority, P::Idle | P::Auto) && got == Some(P::Normal) {
                    tracing::warn!(
                        writer_priority = ?a.writer_priority,
                        "SCHED_IDLE is not available for the audit writer; it runs at normal priority"
                    );
                }
                Some(w)
            }
            None => None,
        };
        let rule_hits = IntCounterVec::new(
            Opts::new("dgf_rule_hits_total", "Policy rules that fired, by rule and mode (enforce or shadow)"),
            &["rule", "mode"],
        )
        .expect("valid metric");
        let decisions = IntCounterVec::new(
            Opts::new("dgf_policy_decisions_total", "Policy decisions by route and outcome"),
            &["route", "decision"],
        )
        .expect("valid metric");
        let audit_records =
            IntGaugeVec::new(Opts::new("dgf_audit_records", "Audit records by state (written, dropped)"), &["state"])
                .expect("valid metric");
        for m in [Box::new(rule_hits.clone()) as Box<dyn prometheus::core::Collector>, Box::new(decisions.clone())] {
            let _ = registry.register(m);
        }
        let _ = registry.register(Box::new(audit_records.clone()));
        let audit_rescues = prometheus::IntGauge::new(
            "dgf_audit_writer_rescues",
            "Times the normal-priority rescuer took the audit chain over from the idle writer (it lagged)",
        )
        .expect("valid metric");
        let _ = registry.register(Box::new(audit_rescues.clone()));
        let audit_files_removed = prometheus::IntGauge::new(
            "dgf_audit_files_removed",
            "Rotated audit files deleted because more than [audit] keep_rotated were kept",
        )
        .expect("valid metric");
        let _ = registry.register(Box::new(audit_files_removed.clone()));
        Ok(Self {
            analyzer: Analyzer::new(ANALYSIS_CACHE),
            audit,
            key_mac: match cfg.audit.as_ref().and_then(|a| a.fingerprint_key.as_ref().map(dgf_config::Secret::expose)) {
                Some(k) => Some(KeyMac::new_from_slice(k.as_bytes()).map_err(|_| {
                    GovernanceError::Audit(dgf_rules::audit::AuditError::Config(
                        "fingerprint_key cannot key HMAC-SHA-256".into(),
                    ))
                })?),
                None => None,
            },
            audit_cfg: cfg.audit.clone(),
            rule_hits,
            decisions,
            audit_records,
            audit_rescues,
            audit_files_removed,
        })
    }

    /// The keyed hash of key names in audit records (`[audit] fingerprint_key`), if set.
    pub fn key_mac(&self) -> Option<&KeyMac> {
        self.key_mac.as_ref()
    }

    /// Whether audit records keep statement text with literals.
    pub fn include_literals(&self) -> bool {
        self.audit_cfg.as_ref().is_some_and(|a| a.include_literals)
    }

    /// Count a shadow mask rule that would have masked a column.
    pub fn shadow_mask(&self, rule: &str) {
        self.rule_hits.with_label_values(&[rule, "shadow"]).inc();
    }

    /// Whether audit records are written.
    pub fn auditing(&self) -> bool {
        self.audit.is_some()
    }

    /// Reloads cannot move the audit sink (the chain would fork): warn when it differs.
    pub fn check_reload(&self, cfg: &Config) {
        if cfg.audit != self.audit_cfg {
            tracing::warn!("[audit] changes take effect at the next restart (the running chain is kept)");
        }
    }

    /// Queue one audit record. Returns false when the writer has failed (fail closed).
    pub fn record(&self, ev: AuditEvent) -> bool {
        match &self.audit {
            None => true,
            Some(w) => match w.record(ev) {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(error = %e, "audit record lost");
                    false
                }
            },
        }
    }

    /// An empty audit batch with room for `bytes` bytes, reusing a buffer the writer emptied
    /// when it can.
    pub fn audit_batch(&self, bytes: usize) -> RawBatch {
        match &self.audit {
            Some(w) => w.batch(bytes),
            None => RawBatch::with_capacity(bytes),
        }
    }

    /// Queue pre-rendered audit records (one queue send for the batch). Returns false when
    /// the writer has failed (fail closed).
    pub fn record_batch(&self, batch: RawBatch) -> bool {
        match &self.audit {
            None => true,
            Some(w) => match w.record_batch(batch) {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(error = %e, "audit records lost");
                    false
                }
            },
        }
    }

    /// The decision counters of `route`, to count without a label lookup per statement.
    pub fn decision_counters(&self, route: &str) -> DecisionCounters {
        DecisionCounters(DECISIONS.map(|d| self.decisions.with_label_values(&[route, d])))
    }

    /// Count the rules that fired and the decision.
    pub fn count(&self, policy: &Policy, route: &str, v: &Verdict, masked: bool) {
        self.count_rules(policy, v);
        let d = decision(v, masked);
        self.decisions.with_label_values(&[route, d]).inc();
    }

    /// Count the rules that fired (the decision is counted by the caller).
    pub fn count_rules(&self, policy: &Policy, v: &Verdict) {
        let names = policy.rule_names();
        for &id in &v.hits {
            if let Some(n) = names.get(id) {
                self.rule_hits.with_label_values(&[n, "enforce"]).inc();
            }
        }
        for &id in &v.shadow {
            if let Some(n) = names.get(id) {
                self.rule_hits.with_label_values(&[n, "shadow"]).inc();
            }
        }
        if v.deny.as_ref().is_some_and(|d| d.id == usize::MAX) {
            self.rule_hits.with_label_values(&["on_parse_error", "enforce"]).inc();
        }
    }

    /// Refresh the audit gauges (scrape time).
    pub fn refresh_metrics(&self) {
        if let Some(w) = &self.audit {
            self.audit_records.with_label_values(&["written"]).set(w.written() as i64);
            self.audit_records.with_label_values(&["dropped"]).set(w.dropped() as i64);
            self.audit_rescues.set(w.rescues() as i64);
            self.audit_files_removed.set(w.removed_files() as i64);
        }
    }
}

/// A SQL session's view of the policy for its user, rebuilt when a reload swaps the policy or
/// the session changes user (MySQL COM_CHANGE_USER): a view cached across either would decide
/// with rules the session no longer has.
#[derive(Default)]
pub struct ViewCache {
    policy: Option<std::sync::Arc<Policy>>,
    user: Option<std::sync::Arc<crate::live::User>>,
    view: Option<std::sync::Arc<dgf_rules::RoleView>>,
    /// The constant head of the session's audit records and the user it was rendered for.
    head: Vec<u8>,
    head_user: Option<std::sync::Arc<crate::live::User>>,
    /// The database, kind and fingerprint fields of the last record, and what they render.
    mid: Vec<u8>,
    mid_key: (String, &'static str, String),
    /// The route's decision counters, looked up once.
    decisions: Option<DecisionCounters>,
}

impl ViewCache {
    /// The view of `user` on `route` under `policy` (the policy in force now).
    pub fn get(
        &mut self,
        policy: &std::sync::Arc<Policy>,
        route: &str,
        user: &std::sync::Arc<crate::live::User>,
    ) -> std::sync::Arc<dgf_rules::RoleView> {
        use std::sync::Arc;
        match (&self.policy, &self.user, &self.view) {
            (Some(p), Some(u), Some(v)) if Arc::ptr_eq(p, policy) && Arc::ptr_eq(u, user) => v.clone(),
            _ => {
                let v = policy.view(route, &user.roles);
                (self.policy, self.user, self.view) = (Some(policy.clone()), Some(user.clone()), Some(v.clone()));
                v
            }
        }
    }

    /// The policy of the current view (rule names for audit records).
    pub fn policy(&self) -> Option<&Policy> {
        self.policy.as_deref()
    }

    /// Render the head of this session's audit records (`protocol` .. `roles`) unless it is
    /// already rendered for `user`; read it with [`head`](Self::head).
    pub fn render_head(
        &mut self,
        protocol: &str,
        route: &str,
        peer: SocketAddr,
        user: &std::sync::Arc<crate::live::User>,
    ) {
        use dgf_rules::audit::raw;
        if self.head_user.as_ref().is_some_and(|u| std::sync::Arc::ptr_eq(u, user)) {
            return;
        }
        self.head.clear();
        raw::field_str(&mut self.head, "protocol", protocol);
        raw::field_str(&mut self.head, "route", route);
        raw::field_str(&mut self.head, "client", &peer_text(peer));
        raw::field_str(&mut self.head, "user", &user.name);
        raw::field_strs_if_any(&mut self.head, "roles", user.roles.iter().map(String::as_str));
        self.head_user = Some(user.clone());
    }

    /// The head [`render_head`](Self::render_head) rendered.
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    /// Count the rules that fired and the decision of a statement.
    pub fn count(&mut self, governance: &Governance, policy: &Policy, route: &str, v: &Verdict, masked: bool) {
        governance.count_rules(policy, v);
        self.decisions.get_or_insert_with(|| governance.decision_counters(route)).inc(decision(v, masked));
    }

    /// Render the `database`, `kind` and `fingerprint` fields unless the last record had the
    /// same (a session repeats its statement shapes): most of a record's escaping, done once.
    fn render_mid(&mut self, database: &str, kind: &'static str, fingerprint: &str) {
        use dgf_rules::audit::raw;
        let k = &self.mid_key;
        if !self.mid.is_empty() && k.0 == database && k.1 == kind && k.2 == fingerprint {
            return;
        }
        self.mid.clear();
        raw::field_str(&mut self.mid, "database", database);
        raw::field_str(&mut self.mid, "kind", kind);
        raw::field_str(&mut self.mid, "fingerprint", fingerprint);
        self.mid_key.0.clear();
        self.mid_key.0.push_str(database);
        self.mid_key.1 = kind;
        self.mid_key.2.clear();
        self.mid_key.2.push_str(fingerprint);
    }

    /// Write the audit record of one statement of a SQL session (Postgres, MySQL): renders
    /// the session's head if needed and takes the rule names from the current view's policy.
    pub fn audit_statement(&mut self, governance: &Governance, who: SqlSession<'_>, st: SqlStatement<'_>) {
        self.render_head(who.protocol, &who.route.name, who.peer, who.user);
        self.render_mid(who.database, st.verdict.kind, st.fingerprint);
        let rec = SqlRecord {
            policy: self.policy.as_deref(),
            verdict: st.verdict,
            statement: st.statement,
            outcome: st.outcome,
            error: st.error,
        };
        governance.audit_sql(who.route, &self.head, &self.mid, rec);
    }
}

/// The session a SQL statement ran in: the constant fields of its audit record.
pub struct SqlSession<'a> {
    /// `postgres` or `mysql`.
    pub protocol: &'static str,
    /// The route (its metrics count lost records).
    pub route: &'a crate::live::Route,
    /// The client's address.
    pub peer: SocketAddr,
    /// The logged-in user.
    pub user: &'a std::sync::Arc<crate::live::User>,
    /// The current database.
    pub database: &'a str,
}

impl<'a> SqlSession<'a> {
    /// The session fields of a `protocol` session.
    pub fn new(
        protocol: &'static str,
        route: &'a crate::live::Route,
        peer: SocketAddr,
        user: &'a std::sync::Arc<crate::live::User>,
        database: &'a str,
    ) -> Self {
        SqlSession { protocol, route, peer, user, database }
    }
}

/// One statement as a SQL session saw it, for [`ViewCache::audit_statement`].
pub struct SqlStatement<'a> {
    /// The verdict.
    pub verdict: &'a SqlVerdict,
    /// Fingerprint (literals stripped).
    pub fingerprint: &'a str,
    /// Full text, kept only with `include_literals`.
    pub statement: Option<String>,
    /// What it did.
    pub outcome: Outcome<'a>,
    /// Error code, if it failed.
    pub error: Option<String>,
}

/// What one SQL statement did, for its audit record.
#[derive(Debug, Clone, Copy)]
pub struct Outcome<'a> {
    /// When it was sent.
    pub started: Instant,
    /// Rows returned (after any row cap) or changed.
    pub rows: u64,
    /// Bytes of result rows the client received (Postgres DataRow and COPY data messages,
    /// MySQL row packets), as sent: after masking and any row cap.
    pub bytes: u64,
    /// Some column was masked.
    pub masked: bool,
    /// Mask rules that applied to result columns (enforced or shadow), by rule id.
    pub mask_rules: &'a [usize],
}

impl Outcome<'_> {
    /// A statement refused before it reached the server.
    pub fn refused() -> Self {
        Outcome { started: Instant::now(), rows: 0, bytes: 0, masked: false, mask_rules: &[] }
    }
}

/// One executed (or refused) SQL statement, for its audit record.
pub struct SqlRecord<'a> {
    /// The policy the verdict came from (rule names).
    pub policy: Option<&'a Policy>,
    /// The verdict.
    pub verdict: &'a SqlVerdict,
    /// Full text, kept only with `include_literals`.
    pub statement: Option<String>,
    /// What it did.
    pub outcome: Outcome<'a>,
    /// Error code, if it failed.
    pub error: Option<String>,
}

impl Governance {
    /// Audit one statement of a SQL session; a lost record counts as a `dgf_audit` error of
    /// the route.
    pub fn audit_sql(&self, route: &crate::live::Route, head: &[u8], mid: &[u8], r: SqlRecord<'_>) {
        // Mask rules count as hits where they applied to a result (the decision counted only
        // the rules that decided it).
        if let Some(p) = r.policy.filter(|_| !r.outcome.mask_rules.is_empty()) {
            let v = &r.verdict.verdict;
            for &id in r.outcome.mask_rules.iter().filter(|i| !v.hits.contains(i) && !v.shadow.contains(i)) {
                if let Some(n) = p.rule_names().get(id) {
                    let mode = if p.is_shadow(id) { "shadow" } else { "enforce" };
                    self.rule_hits.with_label_values(&[n, mode]).inc();
                }
            }
        }
        if !self.record_sql(head, mid, r) {
            route.metrics.error("dgf_audit");
        }
    }

    /// Write the audit record of one SQL statement. Returns false when the record was lost.
    ///
    /// The record is rendered here straight into its JSON fields (no `AuditEvent` holding a
    /// dozen cloned strings for the writer to serialise and free) and handed to the writer as
    /// a one-record [`RawBatch`]; the line is byte for byte what the event would give.
    /// `head`: the session's constant fields ([`ViewCache::render_head`]); `mid`: the
    /// `database`, `kind` and `fingerprint` fields (`ViewCache::render_mid`).
    pub fn record_sql(&self, head: &[u8], mid: &[u8], r: SqlRecord<'_>) -> bool {
        use dgf_rules::audit::raw;
        if !self.auditing() {
            return true;
        }
        let names = r.policy.map_or(&[][..], |p| p.rule_names());
        let v = &r.verdict.verdict;
        let text = r.statement.as_ref().map_or(0, String::len);
        let mut batch = self.audit_batch(16 + 256 + head.len() + mid.len() + text);
        batch.push_with(dgf_rules::audit::now_millis(), |f| {
            f.extend_from_slice(head);
            f.extend_from_slice(mid);
            if let Some(statement) = &r.statement {
                raw::field_str(f, "statement", statement);
            }
            raw::field_strs(f, "objects", r.verdict.objects.iter().map(String::as_str));
            f.extend_from_slice(decision_field(v, r.outcome.masked));
            let masks = r.outcome.mask_rules.iter().filter(|i| !v.hits.contains(i) && !v.shadow.contains(i));
            let fired = v.hits.iter().chain(v.shadow.iter()).chain(masks);
            let fired = fired.filter_map(|&i| names.get(i).map(|n| &**n));
            let parse_error = v.deny.as_ref().is_some_and(|d| d.id == usize::MAX).then_some("on_parse_error");
            raw::field_strs_if_any(f, "rules", fired.chain(parse_error));
            raw::field_u64(f, "rows", Some(r.outcome.rows));
            raw::field_u64(f, "bytes", Some(r.outcome.bytes));
            raw::field_u64(f, "duration_us", Some(r.outcome.started.elapsed().as_micros() as u64));
            raw::field_opt_str(f, "error", r.error.as_deref());
        });
        self.record_batch(batch)
    }
}

/// `ip:port` as `SocketAddr`'s `Display` writes it; IPv4 without the formatting machinery
/// (this runs once per audited statement).
fn peer_text(peer: SocketAddr) -> String {
    let SocketAddr::V4(v4) = peer else { return peer.to_string() };
    let mut out = String::with_capacity(21);
    let num = |n: u32, out: &mut String| {
        let mut digits = [0u8; 5];
        let mut i = digits.len();
        let mut v = n;
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        out.extend(digits[i..].iter().map(|&d| char::from(d)));
    };
    for (i, octet) in v4.ip().octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        num(u32::from(octet), &mut out);
    }
    out.push(':');
    num(u32::from(v4.port()), &mut out);
    out
}

/// Whether a decision taken for (fingerprint, analysis, role view) `then` holds for a
/// statement that gave `now`: the same three, compared by address (whoever keeps the decision
/// keeps them alive, so an address cannot be reused meanwhile).
pub fn same_inputs<F, A, V>(
    then: (&std::sync::Arc<F>, &std::sync::Arc<A>, &std::sync::Arc<V>),
    now: (&std::sync::Arc<F>, &std::sync::Arc<A>, &std::sync::Arc<V>),
) -> bool {
    use std::sync::Arc;
    Arc::ptr_eq(then.0, now.0) && Arc::ptr_eq(then.1, now.1) && Arc::ptr_eq(then.2, now.2)
}

/// Every value [`decision`] returns, in [`DecisionCounters`] order.
const DECISIONS: [&str; 4] = ["deny", "mask", "shadow", "allow"];

/// `dgf_policy_decisions_total` of one route, one counter per decision.
pub struct DecisionCounters([prometheus::IntCounter; 4]);

impl DecisionCounters {
    /// Count one decision (a value of [`decision`]).
    pub fn inc(&self, d: &str) {
        if let Some(i) = DECISIONS.iter().position(|x| *x == d) {
            self.0[i].inc();
        }
    }
}

/// The audit / metrics word for a verdict.
pub fn decision(v: &Verdict, masked: bool) -> &'static str {
    match (&v.deny, masked, v.shadow.is_empty()) {
        (Some(_), _, _) => "deny",
        (None, true, _) => "mask",
        (None, false, false) => "shadow",
        (None, false, true) => "allow",
    }
}

/// `,"decision":"..."` of an audit record, as `raw::field_str` renders [`decision`]'s value.
pub fn decision_field(v: &Verdict, masked: bool) -> &'static [u8] {
    match decision(v, masked) {
        "deny" => b",\"decision\":\"deny\"",
        "mask" => b",\"decision\":\"mask\"",
        "shadow" => b",\"decision\":\"shadow\"",
        _ => b",\"decision\":\"allow\"",
    }
}

impl Drop for Governance {
    fn drop(&mut self) {
        if let Some(w) = self.audit.take() {
            let stats = w.shutdown();
            tracing::info!(written = stats.written, dropped = stats.dropped, "audit writer stopped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{decision, decision_field, peer_text};
    use dgf_rules::policy::Verdict;

    #[test]
    fn decision_field_is_the_rendered_decision() {
        let shadowed = Verdict { shadow: vec![0], ..Default::default() };
        let deny = dgf_rules::policy::Denial { id: 0, rule: "r".into(), message: String::new() };
        let denied = Verdict { deny: Some(deny), ..Default::default() };
        for (v, masked) in [(Verdict::default(), false), (Verdict::default(), true), (shadowed, false), (denied, true)]
        {
            let mut want = Vec::new();
            dgf_rules::audit::raw::field_str(&mut want, "decision", decision(&v, masked));
            assert_eq!(decision_field(&v, masked), &want[..], "{}", decision(&v, masked));
        }
    }

    #[test]
    fn peer_text_matches_display() {
        for a in ["127.0.0.1:3307", "0.0.0.0:0", "255.255.255.255:65535", "10.20.3.4:80", "[::1]:5432"] {
            let addr: std::net::SocketAddr = a.parse().unwrap();
            assert_eq!(peer_text(addr), addr.to_string());
        }
    }
}
