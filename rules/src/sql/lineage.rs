//! Output-column lineage for queries: scopes, relations, name resolution, `*` expansion, CTEs
//! (recursive ones by fixpoint), set operations and derived tables.
//!
//! Soundness rules (over-report, never under-report):
//! - An unqualified name is looked up level by level (innermost first). A base table may have
//!   any column, so it is always a candidate and the search goes on outwards; it stops only at a
//!   level where a derived relation *certainly* has that column. All candidates are unioned.
//! - A name that matches a relation of its level is also a whole-row reference (`AllColumnsOf`).
//! - Output names the analyser is not sure the server uses (anything but an alias or a plain
//!   column) are "uncertain": such a column is a candidate for every name looked up in it.
//! - Set operations whose arms do not line up one-to-one give every output column the union of
//!   the other arm; recursive CTEs are iterated until their sources stop growing.
//! - Anything else (unknown table factors, pipe syntax, exhausted work budget) is `Opaque`.
//!
//! Out of scope by design: inference through predicates (WHERE, JOIN ON, HAVING, ORDER BY,
//! EXISTS, LIMIT) — masking protects values, not the rows a query chooses.

use super::names::{self, extend, narrow, qual_matches, same};
use super::{ColumnSource, Dialect, OutputColumn, StatementKind, TableRef};
use sqlparser::ast::{Cte, Query, SetExpr, TableAlias, With};

/// Upper bound on query walks per statement (recursive CTE fixpoints multiply work).
const BUDGET: u32 = 20_000;
/// Fixpoint iterations for one recursive CTE.
const MAX_ITER: usize = 8;
/// Deepest expression/query nesting walked. sqlparser builds operator chains (`a + b + ...`,
/// `x::t::t...`) without counting them against its recursion limit, and every walk over the
/// tree (this one, sqlparser's visitor) recurses: deeper statements are refused so that the
/// analysis fits comfortably in a 2 MiB thread stack even in debug builds.
pub(crate) const MAX_DEPTH: u32 = 400;

/// How a column answers name lookups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Star {
    /// A single column.
    No,
    /// `*` of base tables: a name `c` looked up here is column `c` of those tables.
    Narrow,
    /// Unknown columns: any name looked up here derives from all the sources.
    Any,
}

/// A column of a relation or query result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Col {
    pub display: String,
    /// `display` is surely the name the server gives this column.
    pub certain: bool,
    pub sources: Vec<ColumnSource>,
    pub star: Star,
}

impl Col {
    pub(crate) fn named(display: String, certain: bool, sources: Vec<ColumnSource>) -> Self {
        Self { display, certain, sources, star: Star::No }
    }

    pub(crate) fn star(star: Star, sources: Vec<ColumnSource>) -> Self {
        Self { display: "*".into(), certain: false, sources, star }
    }

    pub(crate) fn output(self) -> OutputColumn {
        OutputColumn { name: self.display, sources: self.sources, wildcard: self.star != Star::No }
    }
}

/// A FROM item.
#[derive(Debug, Clone)]
pub(crate) struct Rel {
    pub alias: Option<String>,
    /// Base table (schema, name), for qualification and write marking.
    pub base: Option<(Option<String>, String)>,
    /// CTE name (qualifies like a table).
    pub cte: Option<String>,
    pub cols: Vec<Col>,
    /// `*` over this relation cannot be expanded positionally (USING / NATURAL inside).
    pub merged: bool,
    /// A subquery, CTE or aliased join: its whole row is a composite the masking layer cannot
    /// take apart.
    pub composite: bool,
}

impl Rel {
    pub(crate) fn base(schema: Option<String>, table: String, alias: Option<String>) -> Self {
        let src = ColumnSource::AllColumnsOf { schema: schema.clone(), table: table.clone() };
        Self {
            alias,
            base: Some((schema, table)),
            cte: None,
            cols: vec![Col::star(Star::Narrow, vec![src])],
            merged: false,
            composite: false,
        }
    }

    /// A relation computed by a function or other expression.
    pub(crate) fn derived(alias: Option<String>, cols: Vec<Col>) -> Self {
        Self { alias, base: None, cte: None, cols, merged: false, composite: false }
    }

    /// A relation computed by a query (subquery, CTE, aliased join).
    pub(crate) fn query(alias: Option<String>, cols: Vec<Col>) -> Self {
        Self { composite: true, ..Self::derived(alias, cols) }
    }

    pub(crate) fn matches_qual(&self, d: Dialect, q: &[String]) -> bool {
        if let Some(a) = &self.alias {
            return q.len() == 1 && same(d, &q[0], a);
        }
        if let Some((s, t)) = &self.base {
            return qual_matches(d, q, s, t);
        }
        self.cte.as_ref().is_some_and(|c| q.len() == 1 && same(d, &q[0], c))
    }

    fn all_sources(&self) -> Vec<ColumnSource> {
        let mut v = Vec::new();
        for c in &self.cols {
            extend(&mut v, c.sources.iter().cloned());
        }
        v
    }

    /// Column `name` of this relation: (certainly here, possibly here, sources).
    fn lookup(&self, d: Dialect, name: &str) -> (bool, bool, Vec<ColumnSource>) {
        let (mut hit, mut maybe, mut v) = (false, false, Vec::new());
        for c in &self.cols {
            match c.star {
                Star::No if c.certain => {
                    if same(d, &c.display, name) {
                        hit = true;
                        extend(&mut v, c.sources.iter().cloned());
                    }
                }
                Star::No | Star::Any => {
                    maybe = true;
                    extend(&mut v, c.sources.iter().cloned());
                }
                Star::Narrow => {
                    maybe = true;
                    extend(&mut v, narrow(&c.sources, name));
                }
            }
        }
        (hit, hit || maybe, v)
    }
}

/// One query level's FROM items.
#[derive(Debug, Clone, Default)]
pub(crate) struct Level {
    pub rels: Vec<Rel>,
    /// Invisible to name lookups (the level that owns a non-LATERAL derived table).
    pub hidden: bool,
    /// A USING / NATURAL join at this level.
    pub merged: bool,
}

/// Per-statement analysis state.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub d: Dialect,
    pub tables: Vec<TableRef>,
    pub functions: Vec<String>,
    pub effects: Vec<StatementKind>,
    pub written: Vec<ColumnSource>,
    pub assigns_user_variable: bool,
    pub server_io: bool,
    /// Top-level SELECT had INTO (its rows go to a table, file or variables).
    pub select_into: bool,
    pub levels: Vec<Level>,
    pub ctes: Vec<(String, Vec<Col>)>,
    /// Every CTE name seen (to tell CTE references from tables in the visitor cross-check).
    pub cte_names: Vec<String>,
    budget: u32,
    depth: u32,
    /// The statement nests deeper than [`MAX_DEPTH`]: the analysis is incomplete.
    pub too_deep: bool,
}

impl Ctx {
    pub(crate) fn new(d: Dialect) -> Self {
        Self {
            d,
            tables: Vec::new(),
            functions: Vec::new(),
            effects: Vec::new(),
            written: Vec::new(),
            assigns_user_variable: false,
            server_io: false,
            select_into: false,
            levels: Vec::new(),
            ctes: Vec::new(),
            cte_names: Vec::new(),
            budget: BUDGET,
            depth: 0,
            too_deep: false,
        }
    }

    /// Enter one nesting level; false (and `too_deep` set) past [`MAX_DEPTH`].
    pub(crate) fn enter(&mut self) -> bool {
        if self.depth >= MAX_DEPTH {
            self.too_deep = true;
            return false;
        }
        self.depth += 1;
        true
    }

    pub(crate) fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    pub(crate) fn add_table(&mut self, schema: Option<String>, name: String, write: bool) {
        match self.tables.iter_mut().find(|t| t.schema == schema && t.name == name) {
            Some(t) => t.write |= write,
            None => self.tables.push(TableRef { schema, name, write }),
        }
    }

    pub(crate) fn add_effect(&mut self, k: StatementKind) {
        if !self.effects.contains(&k) {
            self.effects.push(k);
        }
    }

    pub(crate) fn find_cte(&self, name: &str) -> Option<Vec<Col>> {
        self.ctes.iter().rev().find(|(n, _)| same(self.d, n, name)).map(|(_, c)| c.clone())
    }

    /// Analyse a query; returns its result columns.
    pub(crate) fn query(&mut self, q: &Query) -> Vec<Col> {
        if self.budget == 0 || !self.enter() {
            self.too_deep = true;
            return vec![Col::star(Star::Any, vec![ColumnSource::Opaque])];
        }
        self.budget -= 1;
        let cols = self.query_inner(q);
        self.leave();
        cols
    }

    fn query_inner(&mut self, q: &Query) -> Vec<Col> {
        let mark = self.ctes.len();
        if let Some(w) = &q.with {
            self.with(w);
        }
        let mut cols = self.set_expr(&q.body);
        self.query_tail(q);
        if !q.pipe_operators.is_empty() {
            cols = vec![Col::star(Star::Any, vec![ColumnSource::Opaque])];
        }
        self.ctes.truncate(mark);
        cols
    }

    fn with(&mut self, w: &With) {
        for cte in &w.cte_tables {
            let name = names::ident(&cte.alias.name);
            self.cte_names.push(name.clone());
            let cols = if w.recursive { self.recursive_cte(&name, cte) } else { self.cte_body(cte) };
            self.ctes.push((name, cols));
        }
    }

    fn cte_body(&mut self, cte: &Cte) -> Vec<Col> {
        let cols = self.query(&cte.query);
        apply_alias(cols, Some(&cte.alias))
    }

    /// Iterate a (possibly) recursive CTE until the sources of its columns stop growing.
    fn recursive_cte(&mut self, name: &str, cte: &Cte) -> Vec<Col> {
        let seed = match cte.query.body.as_ref() {
            SetExpr::SetOperation { left, .. } => {
                let mark = self.ctes.len();
                if let Some(w) = &cte.query.with {
                    self.with(w);
                }
                let c = self.set_expr(left);
                self.ctes.truncate(mark);
                apply_alias(c, Some(&cte.alias))
            }
            _ => Vec::new(),
        };
        let mut cur = seed;
        for _ in 0..MAX_ITER {
            self.ctes.push((name.to_string(), cur.clone()));
            let next = self.cte_body(cte);
            self.ctes.pop();
            let merged = union_positional(cur.clone(), next);
            if merged == cur {
                return cur;
            }
            cur = merged;
        }
        cur.into_iter()
            .map(|mut c| {
                extend(&mut c.sources, [ColumnSource::Opaque]);
                c
            })
            .collect()
    }

    fn query_tail(&mut self, q: &Query) {
        if let Some(ob) = &q.order_by {
            if let sqlparser::ast::OrderByKind::Expressions(v) = &ob.kind {
                for o in v {
                    self.walk(&o.expr);
                }
            }
        }
        if let Some(l) = &q.limit_clause {
            match l {
                sqlparser::ast::LimitClause::LimitOffset { limit, offset, limit_by } => {
                    limit.iter().chain(offset.as_ref().map(|o| &o.value)).chain(limit_by).for_each(|e| self.walk(e))
                }
                sqlparser::ast::LimitClause::OffsetCommaLimit { offset, limit } => {
                    self.walk(offset);
                    self.walk(limit);
                }
            }
        }
        if let Some(e) = q.fetch.as_ref().and_then(|f| f.quantity.as_ref()) {
            self.walk(e);
        }
    }

    pub(crate) fn set_expr(&mut self, s: &SetExpr) -> Vec<Col> {
        match s {
            SetExpr::Select(sel) => self.select(sel),
            SetExpr::Query(q) => self.query(q),
            SetExpr::SetOperation { left, right, .. } => {
                let l = self.set_expr(left);
                let r = self.set_expr(right);
                union_positional(l, r)
            }
            SetExpr::Values(v) => self.values(v),
            SetExpr::Insert(st) | SetExpr::Update(st) | SetExpr::Delete(st) | SetExpr::Merge(st) => self.dml(st),
            SetExpr::Table(t) => match &t.table_name {
                Some(name) => {
                    let schema = t.schema_name.as_ref().map(names::ident);
                    let rel = self.named_relation(schema, names::ident(name), None, false);
                    rel.cols
                }
                None => vec![Col::star(Star::Any, vec![ColumnSource::Opaque])],
            },
        }
    }

    /// A named FROM item: a CTE if an unqualified name matches one, else a base table.
    pub(crate) fn named_relation(
        &mut self,
        schema: Option<String>,
        name: String,
        alias: Option<&TableAlias>,
        write: bool,
    ) -> Rel {
        let alias_name = alias.map(|a| names::ident(&a.name));
        if schema.is_none() {
            if let Some(cols) = self.find_cte(&name) {
                let mut r = Rel::query(alias_name, apply_alias(cols, alias));
                r.cte = Some(name);
                return r;
            }
        }
        self.add_table(schema.clone(), name.clone(), write);
        let mut r = Rel::base(schema, name, alias_name);
        if alias.is_some_and(|a| !a.columns.is_empty()) {
            r.cols = apply_alias(r.cols, alias);
        }
        r
    }

    pub(crate) fn push_rel(&mut self, r: Rel) {
        if self.levels.is_empty() {
            self.levels.push(Level::default());
        }
        if let Some(l) = self.levels.last_mut() {
            l.rels.push(r);
        }
    }
    pub(crate) fn set_merged(&mut self) {
        if let Some(l) = self.levels.last_mut() {
            l.merged = true;
        }
    }

    /// Sources of a (possibly qualified) column reference.
    pub(crate) fn resolve(&self, parts: &[String]) -> Vec<ColumnSource> {
        let Some(first) = parts.first() else { return vec![ColumnSource::Opaque] };
        if first.starts_with("@@") {
            return Vec::new(); // MySQL system variable
        }
        if first.starts_with('@') {
            return vec![ColumnSource::Opaque]; // MySQL user variable: may hold anything
        }
        let mut out = Vec::new();
        let mut found = false;
        // Longest qualifier first: schema.table.column before table.column.field.
        for k in (1..parts.len()).rev() {
            if let Some(s) = self.resolve_qualified(&parts[..k], &parts[k]) {
                extend(&mut out, s);
                found = true;
            }
        }
        if !found {
            match self.resolve_column(first) {
                Some(s) => extend(&mut out, s),
                None => out.push(ColumnSource::Opaque),
            }
        }
        out
    }

    fn resolve_qualified(&self, q: &[String], col: &str) -> Option<Vec<ColumnSource>> {
        for level in self.levels.iter().rev().filter(|l| !l.hidden) {
            let mut matched = false;
            let mut out = Vec::new();
            let mut possible = false;
            for r in level.rels.iter().filter(|r| r.matches_qual(self.d, q)) {
                matched = true;
                let (_, maybe, s) = r.lookup(self.d, col);
                possible |= maybe;
                extend(&mut out, s);
            }
            if matched {
                if !possible {
                    out.push(ColumnSource::Opaque);
                }
                return Some(out);
            }
        }
        None
    }

    fn resolve_column(&self, name: &str) -> Option<Vec<ColumnSource>> {
        let mut out = Vec::new();
        let mut found = false;
        let q = [name.to_string()];
        for level in self.levels.iter().rev().filter(|l| !l.hidden) {
            let mut certain = false;
            for r in &level.rels {
                let (hit, maybe, s) = r.lookup(self.d, name);
                certain |= hit;
                found |= maybe;
                extend(&mut out, s);
            }
            if certain {
                return Some(out);
            }
            for r in level.rels.iter().filter(|r| r.matches_qual(self.d, &q)) {
                found = true;
                extend(&mut out, r.all_sources());
                if r.composite {
                    // A whole row of a subquery or CTE is a composite value the masking layer
                    // cannot take apart (a base table's row is `AllColumnsOf`).
                    extend(&mut out, [ColumnSource::Opaque]);
                }
            }
        }
        found.then_some(out)
    }
}

/// Rename columns after a table alias column list `AS t(a, b)`.
pub(crate) fn apply_alias(cols: Vec<Col>, alias: Option<&TableAlias>) -> Vec<Col> {
    let Some(alias) = alias.filter(|a| !a.columns.is_empty()) else { return cols };
    let mut out = Vec::new();
    let mut it = cols.into_iter().peekable();
    for (i, a) in alias.columns.iter().enumerate() {
        let name = names::ident(&a.name);
        match it.peek() {
            Some(c) if c.star == Star::No => {
                let Some(c) = it.next() else { break };
                out.push(Col::named(name, true, c.sources));
            }
            Some(_) => {
                // A `*` of unknown width: every remaining name may be any remaining column.
                let rest: Vec<Col> = it.collect();
                let all = collapse(rest).sources;
                for b in &alias.columns[i..] {
                    out.push(Col::named(names::ident(&b.name), true, all.clone()));
                }
                out.push(Col::star(Star::Any, all));
                return out;
            }
            None => out.push(Col::named(name, true, Vec::new())),
        }
    }
    out.extend(it);
    out
}

/// One column standing for all of `cols` (positions unknown).
pub(crate) fn collapse(cols: Vec<Col>) -> Col {
    let narrow_ok = !cols.is_empty() && cols.iter().all(|c| c.star == Star::Narrow);
    let mut sources = Vec::new();
    for c in cols {
        extend(&mut sources, c.sources);
    }
    Col::star(if narrow_ok { Star::Narrow } else { Star::Any }, sources)
}

/// UNION / INTERSECT / EXCEPT and recursive CTE arms: left names, unioned sources.
pub(crate) fn union_positional(mut l: Vec<Col>, r: Vec<Col>) -> Vec<Col> {
    let aligned = l.len() == r.len() && l.iter().chain(&r).all(|c| c.star == Star::No);
    if aligned {
        for (a, b) in l.iter_mut().zip(r) {
            extend(&mut a.sources, b.sources);
        }
        return l;
    }
    let all = collapse(r).sources;
    if l.is_empty() {
        return vec![Col::star(Star::Any, all)];
    }
    for c in &mut l {
        extend(&mut c.sources, all.iter().cloned());
        if c.star != Star::No {
            c.star = Star::Any;
        }
    }
    l
}
