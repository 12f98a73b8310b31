//! Governance on the MySQL path: decide per COM_QUERY / COM_STMT_PREPARE (rules, guards,
//! fail-closed checks; refusal is an ERR 1142 naming the rule and the connection stays
//! usable), mask result values, cap rows, and write one audit record per statement.
//!
//! Direct columns are identified from the column definitions the server sends (schema,
//! org_table, org_name); any other column (expressions, aliases of functions, UNION, ...)
//! takes the mask its SQL lineage calls for (`dgf_rules::policy::sql_output_masks`), and so
//! does an unmasked direct column unless it is one of a `*` of base tables
//! (`sql_output_star_tables`). Masked
//! values stay type-correct: strings get the mask's text, integers and decimals get what the
//! mask function gives for numbers, and anything that cannot be masked in its type is NULL.

use super::session::Session;
use dgf_protocols::mysql::packets::column_names;
use dgf_protocols::mysql::rows::{self, is_string_type, Replace};
use dgf_rules::mask::{Format, MaskFn, MaskedValue, PgType};
use dgf_rules::policy::{
    check_lexer_settings, check_sql, sql_output_masks, sql_output_star_tables, touches_lexer_settings, SqlVerdict,
    StarTable,
};

/// A base table a `*` reads: (schema if written, name).
type OwnedStarTable = (Option<String>, String);
use crate::governance::Outcome;
use dgf_rules::sql::{Analysis, Dialect, Fingerprint};
use dgf_rules::{FieldRef, Namespace, RoleView};
use std::sync::Arc;
use std::time::Instant;

/// The decision about one query string or prepared statement.
pub struct Gov {
    fp: Arc<Fingerprint>,
    analysis: Arc<Analysis>,
    /// Rules' verdict.
    pub sql: SqlVerdict,
    view: Arc<RoleView>,
    text: Option<String>,
}

impl Gov {
    /// The refusal, if any.
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

    /// The same statement, refused by `d`.
    pub(super) fn refused(&self, d: dgf_rules::Denial) -> Gov {
        let mut sql = self.sql.clone();
        if d.id != usize::MAX && !sql.verdict.hits.contains(&d.id) {
            sql.verdict.hits.push(d.id);
        }
        sql.verdict.deny = Some(d);
        let (fp, analysis, view, text) = (self.fp.clone(), self.analysis.clone(), self.view.clone(), self.text.clone());
        Gov { fp, analysis, sql, view, text }
    }

    /// Results need masking or a row cap.
    pub fn needs_plan(&self) -> bool {
        self.sql.needs_masking || self.sql.verdict.row_limit.is_some()
    }
}

/// Per-session governance state.
#[derive(Default)]
pub struct GovState {
    views: crate::governance::ViewCache,
    /// The statement being executed.
    pub active: Option<Arc<Gov>>,
    /// Binary rows (COM_STMT_EXECUTE)?
    pub binary: bool,
    started: Option<Instant>,
    rows: u64,
    /// Row packet bytes sent to the client (headers included).
    bytes: u64,
    masked: bool,
    /// Mask rules that applied to the result's columns (for the audit record).
    mask_rules: Vec<usize>,
    result_idx: usize,
    /// Column definitions of the result being received: (type, mask).
    cols: Vec<(u8, Option<MaskFn>)>,
    /// Lineage masks of the current result set's columns.
    lineage: Vec<Option<dgf_rules::MaskRule>>,
    /// Per column: the base tables of the `*` it is one of (see `sql_output_star_tables`).
    star_tables: Vec<Option<Vec<OwnedStarTable>>>,
    any_mask: bool,
    sent: u64,
    /// SQL-level prepared statements of this client (`PREPARE name FROM '...'`), by lower-cased
    /// name: the decision of the statement each holds, which its `EXECUTE` runs under.
    pub sql_prepared: std::collections::HashMap<String, Arc<Gov>>,
    /// The last decision that depended on the statement's shape only (not on its literal
    /// values): reused while the same shape comes again under the same view.
    last: Option<Arc<Gov>>,
}

/// Map a MySQL column type to the mask layer's value classes (text-protocol spelling of
/// numbers is the same as Postgres text format).
fn value_class(t: u8) -> PgType {
    use dgf_protocols::mysql::rows::ty;
    match t {
        ty::TINY | ty::SHORT | ty::YEAR => PgType::Int2,
        ty::LONG | ty::INT24 => PgType::Int4,
        ty::LONGLONG => PgType::Int8,
        ty::FLOAT => PgType::Float4,
        ty::DOUBLE => PgType::Float8,
        ty::DECIMAL | ty::NEWDECIMAL => PgType::Numeric,
        t if is_string_type(t) => PgType::Text,
        _ => PgType::Other,
    }
}

impl Session {
    /// Analyse and decide a COM_QUERY (`query`) or COM_STMT_PREPARE text. `None`: governance
    /// is off (no rules and no audit).
    ///
    /// A query that is a SQL-level `PREPARE name FROM '...'` is decided on the statement it
    /// carries (recorded with kind `prepare`), and remembered; an `EXECUTE name` of a
    /// statement remembered so gets that statement's decision and masking plan, re-checked
    /// against the policy in force. Other spellings (`FROM @var`, ...) are analysed as they
    /// are, which fails closed (see `sql_prepare`).
    pub(super) fn govern_sql(&mut self, text: &[u8], query: bool) -> Option<Arc<Gov>> {
        use super::sql_prepare::{recognise, SqlPrepared};
        match recognise(text).filter(|_| query) {
            Some(SqlPrepared::Prepare { name, statement }) => {
                let inner = self.decide_sql(statement.as_bytes())?;
                if inner.denied().is_some() {
                    self.gov.sql_prepared.remove(&name);
                } else {
                    self.gov.sql_prepared.insert(name, inner.clone());
                }
                let mut sql = inner.sql.clone();
                sql.kind = "prepare";
                sql.needs_masking = false;
                let (fp, analysis, view, text) =
                    (inner.fp.clone(), inner.analysis.clone(), inner.view.clone(), inner.text.clone());
                return Some(Arc::new(Gov { fp, analysis, sql, view, text }));
            }
            Some(SqlPrepared::Execute { name }) => {
                let snap = self.shared.live.load();
                let on = !snap.policy.rule_names().is_empty() || self.shared.governance.auditing();
                if let Some(gov) = self.gov.sql_prepared.get(&name).cloned().filter(|_| on) {
                    let gov = self.revalidate(gov);
                    let g = &self.shared.governance;
                    self.gov.views.count(g, &snap.policy, &self.route.name, &gov.sql.verdict, gov.sql.needs_masking);
                    return Some(gov);
                }
            }
            Some(SqlPrepared::Deallocate { name }) => drop(self.gov.sql_prepared.remove(&name)),
            None => {}
        }
        self.decide_sql(text)
    }

    fn decide_sql(&mut self, text: &[u8]) -> Option<Arc<Gov>> {
        let snap = self.shared.live.load();
        let g = &self.shared.governance;
        if snap.policy.rule_names().is_empty() && !g.auditing() {
            return None;
        }
        let view = self.gov.views.get(&snap.policy, &self.route.name, &self.user);
        let text = String::from_utf8_lossy(text);
        let (fp, analysis) = g.analyzer.classify(&text, Dialect::Mysql);
        // The same shape under the same view: the same decision (one is kept only if it did
        // not read the text, see below), counted again.
        let same =
            |l: &&Arc<Gov>| crate::governance::same_inputs((&l.fp, &l.analysis, &l.view), (&fp, &analysis, &view));
        if let Some(last) = self.gov.last.as_ref().filter(same).cloned() {
            self.gov.views.count(g, &snap.policy, &self.route.name, &last.sql.verdict, last.sql.needs_masking);
            return Some(last);
        }
        let mut sql = check_sql(&view, &analysis);
        // The lexer-settings check reads the text's values: such a decision is not kept.
        let text_read = touches_lexer_settings(&analysis, Dialect::Mysql);
        check_lexer_settings(&view, &analysis, &text, Dialect::Mysql, &mut sql);
        self.gov.views.count(g, &snap.policy, &self.route.name, &sql.verdict, sql.needs_masking);
        let text = g.include_literals().then(|| text.into_owned());
        let gov = Arc::new(Gov { fp, analysis, sql, view, text });
        self.gov.last = (!text_read && gov.text.is_none()).then(|| gov.clone());
        Some(gov)
    }

    /// The decision of a statement prepared earlier, under the policy and user in force now (a
    /// reload or COM_CHANGE_USER since COM_STMT_PREPARE re-checks its analysis).
    pub(super) fn revalidate(&mut self, gov: Arc<Gov>) -> Arc<Gov> {
        let view = self.gov.views.get(&self.shared.live.load().policy, &self.route.name, &self.user);
        if Arc::ptr_eq(&view, &gov.view) {
            return gov;
        }
        let sql = check_sql(&view, &gov.analysis);
        let (fp, analysis, text) = (gov.fp.clone(), gov.analysis.clone(), gov.text.clone());
        Arc::new(Gov { fp, analysis, sql, view, text })
    }

    /// Start executing `gov` (masking plan and audit timing).
    pub(super) fn begin(&mut self, gov: Option<Arc<Gov>>, binary: bool) {
        self.gov.active = gov;
        self.gov.binary = binary;
        self.gov.started = Some(Instant::now());
        self.gov.rows = 0;
        self.gov.bytes = 0;
        self.gov.masked = false;
        self.gov.mask_rules.clear();
        self.gov.result_idx = 0;
        self.gov.cols.clear();
        self.gov.any_mask = false;
        self.gov.sent = 0;
    }

    /// A column count: a new result set starts.
    pub(super) fn on_column_count(&mut self, payload: &[u8]) {
        self.gov.cols.clear();
        self.gov.lineage.clear();
        self.gov.star_tables.clear();
        self.gov.any_mask = false;
        self.gov.sent = 0;
        let Some(gov) = self.gov.active.clone() else { return };
        if !gov.sql.needs_masking {
            return;
        }
        let n = dgf_protocols::mysql::packets::Reader::new(payload, "column count").lenenc().unwrap_or(0) as usize;
        if let Some(st) = gov.analysis.statements.get(self.gov.result_idx).or(gov.analysis.statements.last()) {
            self.gov.lineage = sql_output_masks(&gov.view, st, n.min(4096));
            let own =
                |t: Vec<StarTable<'_>>| t.into_iter().map(|(s, t)| (s.map(str::to_owned), t.to_owned())).collect();
            self.gov.star_tables = sql_output_star_tables(st, n.min(4096)).into_iter().map(|t| t.map(own)).collect();
        }
    }

    /// A column definition: resolve its mask.
    pub(super) fn on_column_def(&mut self, payload: &[u8]) {
        let Some(gov) = self.gov.active.clone() else { return };
        let Ok(c) = column_names(payload) else {
            self.gov.cols.push((0, Some(MaskFn::Null)));
            return;
        };
        let mut mask = None;
        if gov.sql.needs_masking {
            let direct = (!c.org_table.is_empty() && !c.org_name.is_empty()).then(|| {
                let object = format!("{}.{}", String::from_utf8_lossy(c.schema), String::from_utf8_lossy(c.org_table));
                let field = String::from_utf8_lossy(c.org_name).into_owned();
                gov.view.mask_for(&FieldRef { ns: Namespace::Sql, object: &object, field: Some(&field) })
            });
            let idx = self.gov.cols.len();
            let lineage = || self.gov.lineage.get(idx).cloned().flatten();
            // A direct column with no mask can still be a masked value copied by the query
            // (e.g. INSERT ... SELECT shapes): lineage decides when it is stricter.
            // Lineage speaks for computed columns (and copies): see `MaskFn::for_computed`.
            // One of the columns a `*` of base tables expands to, reported by the server as a
            // column of one of those tables: it is that very column, and the union of the whole
            // `*` (which holds the masked columns) does not apply to it.
            let starred = self.gov.star_tables.get(idx).and_then(Option::as_ref).is_some_and(|tables| {
                let same = |a: &str, b: &[u8]| a.as_bytes().eq_ignore_ascii_case(b);
                tables.iter().any(|(s, t)| same(t, c.org_table) && s.as_deref().is_none_or(|s| same(s, c.schema)))
            });
            let (m, computed) = match direct {
                Some(Some(m)) => (Some(m), false),
                Some(None) if starred => (None, false),
                Some(None) | None => (lineage(), true),
            };
            if let Some(m) = m.as_ref().filter(|m| !self.gov.mask_rules.contains(&m.id)) {
                self.gov.mask_rules.push(m.id);
            }
            mask = m
                .filter(|m| {
                    if m.shadow {
                        self.shared.governance.shadow_mask(&m.rule);
                    }
                    !m.shadow
                })
                .map(|m| if computed { m.func.for_computed() } else { m.func });
        }
        self.gov.any_mask |= mask.is_some();
        self.gov.cols.push((c.column_type, mask));
    }

    /// A row: `Ok(None)` pass it, `Ok(Some(bytes))` send these instead, `Err(())` drop it
    /// (row cap).
    /// `rows` of the audit record counts the rows the client gets (a row cap's dropped rows
    /// are left out).
    pub(super) fn on_row(&mut self, payload: &[u8]) -> Result<Option<Vec<u8>>, ()> {
        let Some(gov) = self.gov.active.as_ref() else { return Ok(None) };
        if !gov.needs_plan() {
            self.gov.rows += 1;
            return Ok(None);
        }
        if gov.sql.verdict.row_limit.is_some_and(|l| self.gov.sent >= l) {
            return Err(());
        }
        self.gov.rows += 1;
        self.gov.sent += 1;
        if !self.gov.any_mask {
            return Ok(None);
        }
        self.gov.masked = true;
        let types: Vec<u8> = self.gov.cols.iter().map(|c| c.0).collect();
        let fields =
            if self.gov.binary { rows::binary_row(payload, &types) } else { rows::text_row(payload, types.len()) };
        // A row that cannot be read under a masking plan is never passed through.
        let Ok(fields) = fields else {
            let all_null: Vec<Replace> = types.iter().map(|_| Replace::Null).collect();
            let empty: Vec<_> = types.iter().map(|_| None).collect();
            return Ok(Some(if self.gov.binary {
                let mut p = vec![0u8];
                p.resize(1 + (types.len() + 9) / 8, 0);
                rows::rebuild_binary_row(&p, &empty, &all_null)
            } else {
                rows::rebuild_text_row(payload, &empty, &all_null)
            }));
        };
        let with: Vec<Replace> = self
            .gov
            .cols
            .iter()
            .zip(&fields)
            .map(|((t, m), f)| match (m, f) {
                (None, _) | (Some(_), None) => Replace::Keep,
                (Some(m), Some(r)) => {
                    let class = value_class(*t);
                    if self.gov.binary && class != PgType::Text {
                        return Replace::Null;
                    }
                    let value = if self.gov.binary { rows::binary_value(payload, r, *t) } else { &payload[r.clone()] };
                    match m.apply_pg_type(Some(value), class, Format::Text) {
                        MaskedValue::Null => Replace::Null,
                        MaskedValue::Bytes(b) => Replace::Bytes(b),
                    }
                }
            })
            .collect();
        Ok(Some(if self.gov.binary {
            rows::rebuild_binary_row(payload, &fields, &with)
        } else {
            rows::rebuild_text_row(payload, &fields, &with)
        }))
    }

    /// A row packet of `len` payload bytes went to the client.
    pub(super) fn count_row_bytes(&mut self, len: usize) {
        self.gov.bytes += len as u64 + 4;
    }

    /// Whether the current result set has masked columns.
    pub(super) fn gov_masks(&self) -> bool {
        self.gov.any_mask
    }

    /// A statement's OK packet: the rows it changed count as the record's `rows`.
    pub(super) fn on_ok(&mut self, affected_rows: u64) {
        self.gov.rows = self.gov.rows.saturating_add(affected_rows);
        self.on_result_end();
    }

    /// End of one result set (more may follow in a multi-statement query).
    pub(super) fn on_result_end(&mut self) {
        self.gov.result_idx += 1;
    }

    /// The statement is over: write its audit record.
    pub(super) fn finish_statement(&mut self, error: Option<String>) {
        let Some(gov) = self.gov.active.take() else { return };
        let started = self.gov.started.take().unwrap_or_else(Instant::now);
        let (rows, masked, fired) = (self.gov.rows, self.gov.masked, std::mem::take(&mut self.gov.mask_rules));
        let bytes = self.gov.bytes;
        self.audit(&gov, Outcome { started, rows, bytes, masked, mask_rules: &fired }, error);
    }

    /// Audit a refused statement.
    /// `code`: the errno the client was sent.
    pub(super) fn audit_denied(&mut self, gov: &Gov, code: u16) {
        self.audit(gov, Outcome::refused(), Some(code.to_string()));
    }

    fn audit(&mut self, gov: &Gov, outcome: Outcome<'_>, error: Option<String>) {
        use crate::governance::{SqlSession, SqlStatement};
        let who = SqlSession::new("mysql", &self.route, self.peer, &self.user, &self.database);
        let st =
            SqlStatement { verdict: &gov.sql, fingerprint: &gov.fp.text, statement: gov.text.clone(), outcome, error };
        self.gov.views.audit_statement(&self.shared.governance, who, st);
    }
}
