//! SELECT bodies: FROM scope, select list (with `*` expansion), VALUES and SELECT INTO.

use super::lineage::{collapse, Col, Ctx, Level, Rel, Star};
use super::names::{self, extend};
use super::{ColumnSource, StatementKind};
use sqlparser::ast::{Select, SelectItem, SelectItemQualifiedWildcardKind, Values};

impl Ctx {
    pub(crate) fn values(&mut self, v: &Values) -> Vec<Col> {
        let mut cols: Vec<Col> = Vec::new();
        for row in &v.rows {
            for (i, e) in row.iter().enumerate() {
                let s = self.expr(e);
                match cols.get_mut(i) {
                    Some(c) => extend(&mut c.sources, s),
                    None => cols.push(Col::named(format!("column{}", i + 1), false, s)),
                }
            }
        }
        cols
    }

    pub(crate) fn select(&mut self, s: &Select) -> Vec<Col> {
        self.levels.push(Level::default());
        for twj in &s.from {
            self.table_with_joins(twj);
        }
        for lv in &s.lateral_views {
            let src = self.expr(&lv.lateral_view);
            let cols = vec![Col::star(Star::Any, src)];
            self.push_rel(Rel::derived(Some(names::function_name(&lv.lateral_view_name)), cols));
        }
        let exprs = s.prewhere.iter().chain(&s.selection).chain(&s.having).chain(&s.qualify);
        for e in exprs.chain(&s.cluster_by).chain(&s.distribute_by) {
            self.walk(e);
        }
        if let sqlparser::ast::GroupByExpr::Expressions(v, _) = &s.group_by {
            v.iter().for_each(|e| self.walk(e));
        }
        if let Some(sqlparser::ast::Distinct::On(v)) = &s.distinct {
            v.iter().for_each(|e| self.walk(e));
        }
        let mut cols = self.projection(&s.projection);
        if let Some(into) = &s.into {
            self.select_into(into, &cols);
            cols.clear();
        }
        self.levels.pop();
        cols
    }

    fn select_into(&mut self, into: &sqlparser::ast::SelectInto, cols: &[Col]) {
        self.select_into = true;
        for c in cols {
            extend(&mut self.written, c.sources.iter().cloned());
        }
        for t in &into.targets {
            let parts = match t {
                sqlparser::ast::Expr::Identifier(i) => vec![names::ident(i)],
                sqlparser::ast::Expr::CompoundIdentifier(v) => v.iter().map(names::ident).collect(),
                _ => continue,
            };
            if parts.first().is_some_and(|p| p.starts_with('@')) {
                self.assigns_user_variable = true;
            } else if let Some(name) = parts.last() {
                let schema = if parts.len() > 1 { Some(parts[parts.len() - 2].clone()) } else { None };
                self.add_table(schema, name.clone(), true);
                self.add_effect(StatementKind::Ddl(super::DdlKind::Create));
                self.add_effect(StatementKind::Insert);
            }
        }
    }

    /// Result columns of a select list, resolved against the innermost level.
    pub(crate) fn projection(&mut self, items: &[SelectItem]) -> Vec<Col> {
        let mut cols = Vec::new();
        for item in items {
            match item {
                SelectItem::UnnamedExpr(e) => {
                    let sources = self.expr(e);
                    let (display, certain) = super::expr::expr_name(e);
                    cols.push(Col::named(display, certain, sources));
                }
                SelectItem::ExprWithAlias { expr, alias } => {
                    let sources = self.expr(expr);
                    cols.push(Col::named(names::ident(alias), true, sources));
                }
                SelectItem::ExprWithAliases { expr, aliases } => {
                    let sources = self.expr(expr);
                    for a in aliases {
                        cols.push(Col::named(names::ident(a), true, sources.clone()));
                    }
                }
                SelectItem::Wildcard(opts) => {
                    let level = self.levels.last().cloned().unwrap_or_default();
                    let mut v: Vec<Col> = level.rels.iter().flat_map(|r| r.cols.clone()).collect();
                    if level.merged || level.rels.iter().any(|r| r.merged) {
                        v = vec![collapse(v)];
                    }
                    if opts.opt_replace.is_some() {
                        v.push(Col::star(Star::Any, vec![ColumnSource::Opaque]));
                    }
                    cols.extend(v);
                }
                SelectItem::QualifiedWildcard(kind, _) => match kind {
                    SelectItemQualifiedWildcardKind::ObjectName(n) => {
                        let q = names::parts(n);
                        cols.extend(self.qualified_star(&q));
                    }
                    SelectItemQualifiedWildcardKind::Expr(e) => {
                        let s = self.expr(e);
                        cols.push(Col::star(Star::Any, s));
                    }
                },
            }
        }
        cols
    }

    /// Columns of `q.*`.
    pub(crate) fn qualified_star(&self, q: &[String]) -> Vec<Col> {
        for level in self.levels.iter().rev().filter(|l| !l.hidden) {
            let rels: Vec<&Rel> = level.rels.iter().filter(|r| r.matches_qual(self.d, q)).collect();
            if !rels.is_empty() {
                return rels
                    .into_iter()
                    .flat_map(|r| if r.merged { vec![collapse(r.cols.clone())] } else { r.cols.clone() })
                    .collect();
            }
        }
        vec![Col::star(Star::Any, vec![ColumnSource::Opaque])]
    }
}
