//! `analyze`: normalise, parse each statement with sqlparser, classify it with the exhaustive
//! match, cross-check tables and functions with sqlparser's visitor, and assemble the result.

use super::fallback;
use super::fingerprint::{normalize, Normalized, Render, FLAG_DO, FLAG_OUTFILE};
use super::lineage::Ctx;
use super::names::{self, extend};
use super::statement::Facts;
use super::{Analysis, Dialect, SqlError, StatementInfo, StatementKind};
use sqlparser::ast::{Expr, ObjectName, Statement, TableFactor, Visit, Visitor};
use sqlparser::dialect::{MySqlDialect, PostgreSqlDialect};
use sqlparser::parser::Parser;
use std::ops::ControlFlow;

/// Statements longer than this (after normalisation) are not parsed: deeply nested or huge
/// inputs would cost unbounded time and stack in sqlparser.
pub(crate) const MAX_PARSE_BYTES: usize = 256 * 1024;
/// sqlparser recursion limit (nesting of subqueries and parenthesised expressions).
const RECURSION_LIMIT: usize = 48;
/// Longest operator chain accepted (sqlparser builds those without counting recursion).
const MAX_OPERATORS: usize = 8_000;

/// Analyse `sql` (one or more statements). Never panics; failures are reported in
/// [`Analysis::parse_error`] and the failed statements are classified from their keywords.
pub fn analyze(sql: &str, dialect: Dialect) -> Analysis {
    analyze_normalized(&normalize(sql, dialect, Render::Text), dialect)
}

/// Analyse already-normalised text (the cache calls this on a miss).
pub(crate) fn analyze_normalized(n: &Normalized, dialect: Dialect) -> Analysis {
    let mut out =
        Analysis { statements: Vec::new(), parse_error: n.error.clone().map(|e| SqlError::Lex(e).to_string()) };
    for st in &n.stmts {
        let text = &n.text[st.start..st.end];
        // Postgres `MOVE` has `FETCH`'s grammar (sqlparser knows only the latter): parsed as a
        // FETCH, then named for what it is. Its outputs stay opaque, like FETCH's.
        let moved = (dialect == Dialect::Postgres).then(|| as_fetch(text)).flatten();
        match parse(moved.as_deref().unwrap_or(text), dialect, st.chain) {
            Ok(stmts) => {
                for s in &stmts {
                    match statement_info(s, dialect, st.flags) {
                        Ok(mut info) => {
                            if moved.is_some() && info.kind == StatementKind::Other("fetch".into()) {
                                info.kind = StatementKind::Other("move".into());
                            }
                            out.statements.push(info)
                        }
                        Err(e) => {
                            out.parse_error.get_or_insert(e.to_string());
                            out.statements.push(fallback::classify(text, dialect, st.flags));
                        }
                    }
                }
            }
            Err(e) => {
                out.parse_error.get_or_insert(e.to_string());
                out.statements.push(fallback::classify(text, dialect, st.flags));
            }
        }
    }
    out
}

/// `MOVE ...` as `FETCH ...` with the same arguments; None for anything else. A bare cursor
/// name (`MOVE c`, which Postgres reads as `MOVE NEXT FROM c`) is spelled out, since
/// sqlparser wants a direction.
fn as_fetch(text: &str) -> Option<String> {
    let t = text.trim_start();
    let head = t.get(..4)?;
    let rest = &t[4..];
    if !head.eq_ignore_ascii_case("move") || !rest.chars().next().is_some_and(char::is_whitespace) {
        return None;
    }
    let args = rest.trim();
    let bare = !args.is_empty() && args.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '"');
    Some(if bare { format!("fetch next from {args}") } else { format!("fetch{rest}") })
}

fn parse(text: &str, dialect: Dialect, ops: usize) -> Result<Vec<Statement>, SqlError> {
    if text.len() > MAX_PARSE_BYTES {
        return Err(SqlError::Parse(format!("statement longer than {MAX_PARSE_BYTES} bytes")));
    }
    // sqlparser builds `a + b + c ...` iteratively but every consumer (Drop, Visit, this
    // analyser) recurses over it: bound the chain length up front.
    if ops > MAX_OPERATORS {
        return Err(SqlError::Parse(format!("more than {MAX_OPERATORS} operators in one statement")));
    }
    let res = match dialect {
        Dialect::Postgres => Parser::new(&PostgreSqlDialect {})
            .with_recursion_limit(RECURSION_LIMIT)
            .try_with_sql(text)
            .and_then(|mut p| p.parse_statements()),
        Dialect::Mysql => Parser::new(&MySqlDialect {})
            .with_recursion_limit(RECURSION_LIMIT)
            .try_with_sql(text)
            .and_then(|mut p| p.parse_statements()),
    };
    res.map_err(|e| SqlError::Parse(e.to_string()))
}

fn statement_info(st: &Statement, dialect: Dialect, flags: u8) -> Result<StatementInfo, SqlError> {
    let mut cx = Ctx::new(dialect);
    let mut facts = Facts::default();
    let mut kind = cx.statement(st, &mut facts);
    if cx.too_deep {
        // Incomplete walk (and sqlparser's visitor would recurse just as deep): refuse.
        return Err(SqlError::Parse("statement nests too deeply to analyse".into()));
    }
    cross_check(st, &mut cx);
    let mut outputs = std::mem::take(&mut facts.outputs);
    if flags & FLAG_DO != 0 {
        kind = StatementKind::Other("do".into());
        outputs.clear();
    }
    if flags & FLAG_OUTFILE != 0 || cx.select_into {
        cx.server_io |= flags & FLAG_OUTFILE != 0;
        for c in outputs.drain(..) {
            extend(&mut cx.written, c.sources);
        }
    }
    if cx.server_io && matches!(kind, StatementKind::Select) && flags & FLAG_OUTFILE != 0 {
        cx.add_effect(StatementKind::Other("outfile".into()));
    }
    let mut functions = cx.functions;
    functions.sort();
    functions.dedup();
    Ok(StatementInfo {
        kind,
        effects: cx.effects,
        tables: cx.tables,
        functions,
        has_where: facts.has_where,
        outputs: outputs.into_iter().map(|c| c.output()).collect(),
        written_sources: cx.written,
        assigns_user_variable: cx.assigns_user_variable,
        server_io: cx.server_io,
        set_variables: facts.set_variables,
    })
}

/// Defence in depth: every relation and function sqlparser's own visitor can see must also be
/// in the result, whatever the exhaustive walk did. Only adds (as reads), never removes.
struct Cross<'a> {
    cx: &'a mut Ctx,
    /// The next relation is the name of a table function, not a table.
    skip_relation: bool,
    root_seen: bool,
}

impl Visitor for Cross<'_> {
    type Break = ();

    fn pre_visit_table_factor(&mut self, tf: &TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table { args: Some(_), name, .. } = tf {
            self.skip_relation = true;
            self.cx.add_function(&names::function_name(name));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, n: &ObjectName) -> ControlFlow<()> {
        if std::mem::take(&mut self.skip_relation) {
            return ControlFlow::Continue(());
        }
        let (schema, table) = names::schema_and_name(n);
        let is_cte = schema.is_none() && self.cx.cte_names.iter().any(|c| names::same(self.cx.d, c, &table));
        if !is_cte {
            self.cx.add_table(schema, table, false);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = e {
            self.cx.add_function(&names::function_name(&f.name));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_statement(&mut self, s: &Statement) -> ControlFlow<()> {
        if !std::mem::replace(&mut self.root_seen, true) {
            return ControlFlow::Continue(());
        }
        let k = match s {
            Statement::Insert(_) => StatementKind::Insert,
            Statement::Update(_) => StatementKind::Update,
            Statement::Delete(_) => StatementKind::Delete,
            Statement::Merge(_) => StatementKind::Merge,
            _ => return ControlFlow::Continue(()),
        };
        // Nested DML (data-modifying CTEs, EXPLAIN / PREPARE targets, trigger bodies) counts as
        // an effect even where it is not executed right now: over-reporting only denies more.
        self.cx.add_effect(k);
        ControlFlow::Continue(())
    }
}

fn cross_check(st: &Statement, cx: &mut Ctx) {
    let mut v = Cross { cx, skip_relation: false, root_seen: false };
    let _ = st.visit(&mut v);
}
