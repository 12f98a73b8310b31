//! Governance on the Postgres path: decide per statement (rules, guards, fail-closed masking
//! checks), refuse with SQLSTATE 42501, mask result rows, cap rows, and write one audit record
//! per executed statement.
//!
//! Where the data of a result column comes from is decided per RowDescription: a column that
//! Postgres reports with a table OID and attnum is a direct column reference and is resolved
//! exactly with the catalog (cached per database, refreshed after DDL); any other column takes
//! the mask its SQL lineage calls for (see `dgf_rules::policy::sql_output_masks`).

use super::backend::BackendError;
use super::catalog::{Catalog, FIRST_NORMAL_OBJECT_ID};
use super::relay::Session;
use crate::governance::Outcome;
use bytes::BytesMut;
use dgf_protocols::postgres::messages;
use dgf_rules::mask::{Format, MaskFn};
use dgf_rules::policy::{
    check_lexer_settings, check_sql_cached, set_config_is_plain, sql_output_masks, touches_lexer_settings, SqlVerdict,
};
use dgf_rules::sql::{Analysis, Dialect, Fingerprint};
use dgf_rules::{FieldRef, Namespace, RoleView};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

/// The decision about one query string or prepared statement.
pub struct Gov {
    fp: Arc<Fingerprint>,
    analysis: Arc<Analysis>,
    /// Rules' verdict.
    pub sql: Arc<SqlVerdict>,
    view: Arc<RoleView>,
    text: Option<String>,
}

impl Gov {
    /// Refused?
    pub fn denied(&self) -> Option<&dgf_rules::Denial> {
        self.sql.verdict.deny.as_ref()
    }

    /// The role view it was decided under.
    pub(super) fn view(&self) -> &RoleView {
        &self.view
    }

    /// The analysis it was decided on.
    pub(super) fn analysis(&self) -> &Analysis {
        &self.analysis
    }

    /// The shared analysis and role view (for memos that compare them by address).
    pub(super) fn arcs(&self) -> (&Arc<Analysis>, &Arc<RoleView>) {
        (&self.analysis, &self.view)
    }

    /// The same statement, refused by `d`.
    pub(super) fn refused(&self, d: dgf_rules::Denial) -> Gov {
        let mut sql = (*self.sql).clone();
        if d.id != usize::MAX && !sql.verdict.hits.contains(&d.id) {
            sql.verdict.hits.push(d.id);
        }
        sql.verdict.deny = Some(d);
        let (fp, analysis, view, text) = (self.fp.clone(), self.analysis.clone(), self.view.clone(), self.text.clone());
        Gov { fp, analysis, sql: Arc::new(sql), view, text }
    }

    fn needs_plan(&self) -> bool {
        self.sql.needs_masking || self.sql.verdict.row_limit.is_some()
    }
}

/// A statement on its way through the server, for audit and masking.
pub struct InFlight {
    gov: Arc<Gov>,
    started: Instant,
    rows: u64,
    /// Result bytes sent to the client (DataRow, CopyData).
    bytes: u64,
    masked: bool,
    /// Mask rules that applied to the result's columns (for the audit record).
    mask_rules: Vec<usize>,
    error: Option<String>,
    execute: bool,
}

/// Masking and row cap for the result being streamed.
pub struct ResultPlan {
    cols: Vec<Option<(MaskFn, u32, Format)>>,
    limit: Option<u64>,
    sent: u64,
    any_mask: bool,
}

/// Per-session governance state.
#[derive(Default)]
pub struct GovState {
    views: crate::governance::ViewCache,
    /// Client statement name -> decision.
    pub stmts: HashMap<String, Arc<Gov>>,
    /// Portal name -> decision.
    pub portals: HashMap<String, Arc<Gov>>,
    /// Executing statements, in server order.
    pub inflight: VecDeque<InFlight>,
    /// Plan of the result being streamed.
    pub plan: Option<ResultPlan>,
    /// Result index within a multi-statement simple query.
    pub result_idx: usize,
    /// The statement shape that last passed the view checks.
    pub views_passed: super::views::Passed,
    /// The result being streamed had DataRows (else its command tag gives the rows it changed).
    rows_seen: bool,
    /// The last decision that depended on the statement's shape only (not on its literal
    /// values): reused while the same shape comes again under the same view.
    last: Option<Arc<Gov>>,
}

impl Session {
    /// Analyse and decide. `None`: governance is off (no rules, guards or audit).
    /// Whether statements need a decision or an audit record at all (no rules and no audit:
    /// the pure pooler skips even decoding the statement text).
    pub(super) fn governing(&self) -> bool {
        !self.shared.live.load().policy.rule_names().is_empty() || self.shared.governance.auditing()
    }

    pub(super) fn govern(&mut self, text: &str) -> Option<Arc<Gov>> {
        let snap = self.shared.live.load();
        let g = &self.shared.governance;
        if snap.policy.rule_names().is_empty() && !g.auditing() {
            return None;
        }
        let view = self.gov.views.get(&snap.policy, &self.route.name, &self.user);
        let (fp, analysis) = g.analyzer.classify(text, Dialect::Postgres);
        // The same shape under the same view: the same decision (one is kept only if it did
        // not read the text, see below), counted again.
        let same =
            |l: &&Arc<Gov>| crate::governance::same_inputs((&l.fp, &l.analysis, &l.view), (&fp, &analysis, &view));
        if let Some(last) = self.gov.last.as_ref().filter(same).cloned() {
            self.gov.views.count(g, &snap.policy, &self.route.name, &last.sql.verdict, last.sql.needs_masking);
            return Some(last);
        }
        let mut sql = check_sql_cached(&view, &analysis);
        // Whether the text was read (beyond its shape) in either case below: then the
        // decision may differ for the same shape with other literals, and is not kept.
        let functions_guard = sql.verdict.deny.as_ref().is_some_and(|d| &*d.rule == "guard:functions");
        let mut text_read = functions_guard;
        if functions_guard && set_config_is_plain(text) {
            // `set_config('jit', 'off', false)` (asyncpg's type introspection) does what a plain
            // SET does: decide the statement without that call, the rest of it as usual.
            let mut a = (*analysis).clone();
            for st in &mut a.statements {
                st.functions.retain(|f| f != "set_config" && f != "pg_catalog.set_config");
            }
            sql = Arc::new(dgf_rules::policy::check_sql(&view, &a));
        }
        if touches_lexer_settings(&analysis, Dialect::Postgres) {
            text_read = true;
            let mut own = (*sql).clone();
            if check_lexer_settings(&view, &analysis, text, Dialect::Postgres, &mut own) {
                sql = Arc::new(own);
            }
        }
        self.gov.views.count(g, &snap.policy, &self.route.name, &sql.verdict, sql.needs_masking);
        let text = g.include_literals().then(|| text.to_owned());
        let gov = Arc::new(Gov { fp, analysis, sql, view, text });
        // Kept only when nothing of it came from the text beyond its shape.
        self.gov.last = (!text_read && gov.text.is_none()).then(|| gov.clone());
        Some(gov)
    }

    /// Decide a client message before it is forwarded: a Query or Parse is analysed and
    /// checked; a Bind of a prepared statement is decided again if the policy changed since its
    /// Parse. `None`: refused, the client has its error. `Some(gov)`: go on (`gov` is the
    /// decision of a Query or Parse, to keep with the statement).
    pub(super) async fn decide_message(
        &mut self,
        t: u8,
        body: &[u8],
    ) -> Result<Option<Option<Arc<Gov>>>, super::SessionError> {
        use dgf_protocols::postgres::messages::{tag, Bind, Parse};
        if !matches!(t, tag::QUERY | tag::PARSE | tag::BIND) || !self.governing() {
            return Ok(Some(None));
        }
        let gov = if t == tag::BIND {
            let name = Bind::decode(body)?.statement;
            let Some(prepared) = self.gov.stmts.get(name).cloned() else { return Ok(Some(None)) };
            let gov = self.revalidate(prepared);
            self.gov.stmts.insert(name.to_owned(), gov.clone());
            gov
        } else {
            let text = if t == tag::QUERY { messages::query_text(body)? } else { Parse::decode(body)?.query()? };
            let Some(gov) = self.govern(text) else { return Ok(Some(None)) };
            gov
        };
        let gov = if gov.denied().is_none() { self.check_views(gov).await } else { gov };
        if gov.denied().is_some() {
            self.deny(t == tag::QUERY, gov);
            return Ok(None);
        }
        if gov.sql.needs_masking {
            self.ensure_catalog().await;
        }
        Ok(Some((t != tag::BIND).then_some(gov)))
    }

    /// The decision of a statement prepared earlier, under the policy in force now: a reload
    /// since its Parse re-checks its (policy-independent) analysis against the new rules.
    pub(super) fn revalidate(&mut self, gov: Arc<Gov>) -> Arc<Gov> {
        let view = self.gov.views.get(&self.shared.live.load().policy, &self.route.name, &self.user);
        if Arc::ptr_eq(&view, &gov.view) {
            return gov;
        }
        let sql = check_sql_cached(&view, &gov.analysis);
        let (fp, analysis, text) = (gov.fp.clone(), gov.analysis.clone(), gov.text.clone());
        Arc::new(Gov { fp, analysis, sql, view, text })
    }

    /// Refuse a statement. In a transaction a simple query is refused by the server itself (a
    /// DO block raising 42501), so the transaction fails exactly as after a failed statement.
    pub(super) fn deny(&mut self, simple: bool, gov: Arc<Gov>) {
        let Some(d) = gov.denied() else { return };
        let msg = d.message.clone();
        let in_txn = self.server.as_ref().is_some_and(|s| s.status != b'I');
        if in_txn && (simple || self.pending.is_empty()) {
            let body = format!(
                "DO $dgf$BEGIN RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE = '{}'; END$dgf$",
                msg.replace('\'', "''").replace("$dgf$", "")
            );
            messages::put_query(&mut self.sout, &body);
            use super::prepared::Pending;
            self.pending.push_back(if simple { Pending::Refusal } else { Pending::Query { internal: true } });
            if simple {
                self.gov.inflight.push_back(InFlight::new(gov, false));
                self.emit_synthetic();
                return;
            }
        }
        self.audit(&gov, Outcome::refused(), Some("42501".into()));
        let f = messages::ErrorFields::new("ERROR", "42501", msg);
        self.local_error(simple, &f);
    }

    /// Make sure the catalog of this database is loaded (for exact column resolution).
    pub(super) async fn ensure_catalog(&mut self) {
        if self.pg.catalog(&self.database).is_none() {
            self.load_catalog().await;
        }
    }

    /// Load the catalog of this database now, if the session's server connection is free for
    /// it (not in the middle of a pipeline, not in a failed transaction); on failure the cached
    /// one (if any) stays.
    pub(super) async fn load_catalog(&mut self) {
        if !self.pending.is_empty() || !self.sout.is_empty() {
            return;
        }
        if !self.ensure_server(true).await.unwrap_or(false) {
            return;
        }
        let Some(server) = self.server.as_mut() else { return };
        if server.status == b'E' {
            // A failed transaction refuses every query: lineage covers this statement.
            return;
        }
        match Catalog::load(server).await {
            Ok(c) => {
                self.route.metrics.catalog_loads.inc();
                self.pg.set_catalog(&self.database, c)
            }
            // The server answered with an error: the connection is still in step.
            Err(BackendError::Refused(e)) => {
                tracing::warn!(code = %e.code, message = %e.message, "catalog load refused; masking falls back to lineage")
            }
            Err(e) => {
                tracing::warn!(error = %e, "catalog load failed; masking falls back to lineage");
                server.mark_broken();
                self.server = None;
            }
        }
    }

    /// A RowDescription: build the plan for the rows that follow. A column of a user relation
    /// the catalog does not know (made since it was loaded, outside dgf) drops the catalog, so
    /// the next statement loads it again; system catalogs and views never do.
    pub(super) fn plan_result(&mut self, body: &[u8]) {
        self.gov.plan = None;
        let Some(f) = self.gov.inflight.front() else { return };
        if !f.gov.needs_plan() {
            return;
        }
        let gov = f.gov.clone();
        let idx = if f.execute { 0 } else { self.gov.result_idx };
        let Ok(fields) = messages::row_description(body) else { return };
        let Some(st) = gov.analysis.statements.get(idx).or(gov.analysis.statements.last()) else { return };
        let lineage = if gov.sql.needs_masking { sql_output_masks(&gov.view, st, fields.len()) } else { Vec::new() };
        let catalog = self.pg.catalog(&self.database);
        let mut stale = false;
        let mut fired = Vec::new();
        let mut cols = Vec::with_capacity(fields.len());
        for (i, fd) in fields.iter().enumerate() {
            let exact = match (fd.table_oid, &catalog) {
                (0, _) | (_, None) => None,
                (oid, Some(c)) => match c.column(oid, fd.attnum) {
                    Some((obj, col)) => {
                        Some(gov.view.mask_for(&FieldRef { ns: Namespace::Sql, object: obj, field: Some(col) }))
                    }
                    None => {
                        // The catalog leaves out the system schemas (their objects are made by
                        // initdb, below FirstNormalObjectId): only a user relation it does not
                        // know means it is out of date.
                        stale |= oid >= FIRST_NORMAL_OBJECT_ID;
                        None
                    }
                },
            };
            // A column without a table OID is computed (or comes from a UNION, VALUES...).
            let (m, computed) = match exact {
                Some(m) => (m, false),
                None => (lineage.get(i).cloned().flatten(), true),
            };
            if let Some(m) = m.as_ref().filter(|m| !fired.contains(&m.id)) {
                fired.push(m.id);
            }
            let m = m.filter(|m| {
                if m.shadow {
                    self.shared.governance.shadow_mask(&m.rule);
                }
                !m.shadow
            });
            let fmt = Format::from_code(fd.format).unwrap_or(Format::Text);
            cols.push(m.map(|m| (if computed { m.func.for_computed() } else { m.func }, fd.type_oid, fmt)));
        }
        if stale {
            self.pg.invalidate_catalog(&self.database);
        }
        let any_mask = cols.iter().any(Option::is_some);
        if let Some(f) = self.gov.inflight.front_mut() {
            f.masked |= any_mask;
            for id in fired {
                if !f.mask_rules.contains(&id) {
                    f.mask_rules.push(id);
                }
            }
        }
        self.gov.plan = Some(ResultPlan { cols, limit: gov.sql.verdict.row_limit, sent: 0, any_mask });
    }

    /// A DataRow without a plan, passed on as it is (`len` bytes with its header): counted for
    /// the audit record's `rows` and `bytes`.
    pub(super) fn count_row(&mut self, len: usize) {
        self.gov.rows_seen = true;
        if let Some(f) = self.gov.inflight.front_mut() {
            f.rows += 1;
            f.bytes += len as u64;
        }
    }

    /// COPY data sent to the client (`COPY ... TO STDOUT`).
    pub(super) fn count_copy_data(&mut self, len: usize) {
        if let Some(f) = self.gov.inflight.front_mut() {
            f.bytes += len as u64;
        }
    }

    /// A DataRow under a plan: returns false to drop it (row cap); masks in place into `cout`.
    /// The audit record's `rows` counts the rows the client gets.
    pub(super) fn mask_row(&mut self, raw: &[u8]) -> bool {
        self.gov.rows_seen = true;
        let Some(plan) = self.gov.plan.as_mut() else { return true };
        if plan.limit.is_some_and(|l| plan.sent >= l) {
            return false;
        }
        plan.sent += 1;
        let sent = if !plan.any_mask {
            self.cout.extend_from_slice(raw);
            raw.len()
        } else {
            match rewrite_row(&raw[5..], &plan.cols) {
                Some(row) => {
                    self.cout.extend_from_slice(&row);
                    row.len()
                }
                // A malformed DataRow under a masking plan is never passed through.
                None => {
                    let f = messages::ErrorFields::new("ERROR", "XX000", "dgf: malformed DataRow from server");
                    f.encode(&mut self.cout);
                    0
                }
            }
        };
        if let Some(f) = self.gov.inflight.front_mut() {
            f.rows += 1;
            f.bytes += sent as u64;
        }
        false
    }

    /// CommandComplete / EmptyQuery / PortalSuspended. Returns a replacement tag when the row
    /// cap cut the result.
    pub(super) fn result_done(&mut self, body: &[u8], suspended: bool) -> Option<BytesMut> {
        let rows_seen = std::mem::take(&mut self.gov.rows_seen);
        if let Some(f) = self.gov.inflight.front_mut().filter(|_| !rows_seen) {
            // Only a governed statement (it gets a record) has its tag read.
            if let Some(n) = changed_rows(body) {
                f.rows = f.rows.saturating_add(n);
            }
        }
        let plan = self.gov.plan.take();
        let mut out = None;
        if let Some(p) = plan.filter(|p| p.limit.is_some_and(|l| p.sent >= l)) {
            if body.starts_with(b"SELECT ") {
                let mut b = BytesMut::new();
                let at = messages::begin(&mut b, messages::btag::COMMAND_COMPLETE);
                b.extend_from_slice(format!("SELECT {}\0", p.sent).as_bytes());
                messages::finish(&mut b, at);
                out = Some(b);
            }
        }
        match self.gov.inflight.front() {
            Some(f) if f.execute => {
                if let Some(f) = self.gov.inflight.pop_front() {
                    self.finish_inflight(f);
                }
            }
            Some(_) if !suspended => self.gov.result_idx += 1,
            _ => {}
        }
        out
    }

    /// ErrorResponse from the server.
    pub(super) fn result_error(&mut self, code: Option<&str>) {
        self.gov.plan = None;
        self.gov.rows_seen = false;
        let Some(f) = self.gov.inflight.front_mut() else { return };
        f.error = Some(code.unwrap_or("?").to_owned());
        if f.execute {
            if let Some(f) = self.gov.inflight.pop_front() {
                self.finish_inflight(f);
            }
        }
    }

    /// ReadyForQuery: the simple query (if any) is over; Executes the server skipped after an
    /// error never ran and get no record.
    pub(super) fn ready(&mut self) {
        self.gov.plan = None;
        self.gov.rows_seen = false;
        self.gov.result_idx = 0;
        while let Some(f) = self.gov.inflight.pop_front() {
            if !f.execute {
                self.finish_inflight(f);
                break;
            }
        }
    }

    fn finish_inflight(&mut self, f: InFlight) {
        if f.gov.sql.ddl && f.error.is_none() {
            self.pg.invalidate_catalog(&self.database);
        }
        let o =
            Outcome { started: f.started, rows: f.rows, bytes: f.bytes, masked: f.masked, mask_rules: &f.mask_rules };
        self.audit(&f.gov, o, f.error);
    }

    fn audit(&mut self, gov: &Gov, outcome: Outcome<'_>, error: Option<String>) {
        use crate::governance::{SqlSession, SqlStatement};
        let who = SqlSession::new("postgres", &self.route, self.peer, &self.user, &self.database);
        let st =
            SqlStatement { verdict: &gov.sql, fingerprint: &gov.fp.text, statement: gov.text.clone(), outcome, error };
        self.gov.views.audit_statement(&self.shared.governance, who, st);
    }
}

impl InFlight {
    /// A statement sent to the server.
    pub fn new(gov: Arc<Gov>, execute: bool) -> Self {
        Self {
            gov,
            started: Instant::now(),
            rows: 0,
            bytes: 0,
            masked: false,
            mask_rules: Vec::new(),
            error: None,
            execute,
        }
    }
}

/// The row count of a CommandComplete tag that reports rows changed or produced without
/// sending them (`INSERT 0 3`, `UPDATE 2`, `DELETE 1`, `MERGE 4`, `COPY 5`, `SELECT 7` of
/// `CREATE TABLE AS`); None for other tags (`MOVE 3` skips rows, DDL has no count).
fn changed_rows(tag: &[u8]) -> Option<u64> {
    let tag = tag.split(|&b| b == 0).next()?;
    let tag = std::str::from_utf8(tag).ok()?;
    let verb = tag.split(' ').next()?;
    if !matches!(verb, "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "COPY" | "SELECT") {
        return None;
    }
    tag.rsplit(' ').next()?.parse().ok()
}

/// Rebuild a DataRow body with the masked columns replaced.
fn rewrite_row(body: &[u8], cols: &[Option<(MaskFn, u32, Format)>]) -> Option<Vec<u8>> {
    let n = u16::from_be_bytes(body.get(..2)?.try_into().ok()?) as usize;
    let mut out = Vec::with_capacity(body.len() + 16);
    out.push(messages::btag::DATA_ROW);
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&body[..2]);
    let mut rest = &body[2..];
    for i in 0..n {
        let len = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
        rest = &rest[4..];
        let value = if len < 0 {
            None
        } else {
            let v = rest.get(..len as usize)?;
            rest = &rest[len as usize..];
            Some(v)
        };
        match cols.get(i).and_then(Option::as_ref) {
            Some((f, ty, fmt)) => f.apply_pg(value, *ty, *fmt).encode_field(&mut out),
            None => match value {
                None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(v) => {
                    out.extend_from_slice(&len.to_be_bytes());
                    out.extend_from_slice(v);
                }
            },
        }
    }
    let total = u32::try_from(out.len() - 1).ok()?;
    out[1..5].copy_from_slice(&total.to_be_bytes());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::changed_rows;

    #[test]
    fn rows_changed_by_a_command_come_from_its_tag() {
        for (tag, want) in [
            (&b"INSERT 0 3\0"[..], Some(3)),
            (b"UPDATE 2\0", Some(2)),
            (b"DELETE 0\0", Some(0)),
            (b"MERGE 4\0", Some(4)),
            (b"COPY 5\0", Some(5)),
            (b"SELECT 7\0", Some(7)),
            (b"MOVE 3\0", None),
            (b"CREATE TABLE\0", None),
            (b"INSERT 0 x\0", None),
            (b"", None),
            (b"\xff\0", None),
        ] {
            assert_eq!(changed_rows(tag), want, "{}", String::from_utf8_lossy(tag));
        }
    }
}
