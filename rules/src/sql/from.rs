//! FROM items: base tables, CTE references, derived tables, table functions and joins.

use super::functions;
use super::lineage::{apply_alias, collapse, Col, Ctx, Level, Rel, Star};
use super::names::{self, extend};
use super::ColumnSource;
use sqlparser::ast::{
    FunctionArg, FunctionArgExpr, JoinConstraint, JoinOperator, ObjectName, TableAlias, TableFactor, TableWithJoins,
};

impl Ctx {
    /// Add the relations of one FROM entry (and its joins) to the innermost level.
    pub(crate) fn table_with_joins(&mut self, twj: &TableWithJoins) {
        self.table_factor(&twj.relation, false);
        for j in &twj.joins {
            self.table_factor(&j.relation, false);
            let c = match &j.join_operator {
                JoinOperator::Join(c)
                | JoinOperator::Inner(c)
                | JoinOperator::Left(c)
                | JoinOperator::LeftOuter(c)
                | JoinOperator::Right(c)
                | JoinOperator::RightOuter(c)
                | JoinOperator::FullOuter(c)
                | JoinOperator::CrossJoin(c)
                | JoinOperator::Semi(c)
                | JoinOperator::LeftSemi(c)
                | JoinOperator::RightSemi(c)
                | JoinOperator::Anti(c)
                | JoinOperator::LeftAnti(c)
                | JoinOperator::RightAnti(c)
                | JoinOperator::StraightJoin(c) => Some(c),
                JoinOperator::AsOf { match_condition, constraint } => {
                    self.walk(match_condition);
                    Some(constraint)
                }
                JoinOperator::CrossApply
                | JoinOperator::OuterApply
                | JoinOperator::ArrayJoin
                | JoinOperator::LeftArrayJoin
                | JoinOperator::InnerArrayJoin => None,
            };
            match c {
                Some(JoinConstraint::On(e)) => self.walk(e),
                Some(JoinConstraint::Using(_) | JoinConstraint::UsingAlias(..) | JoinConstraint::Natural) => {
                    self.set_merged()
                }
                Some(JoinConstraint::None) | None => {}
            }
        }
    }

    /// Add one FROM item; `write` marks a base table as written (DML targets).
    pub(crate) fn table_factor(&mut self, tf: &TableFactor, write: bool) {
        let rel = match tf {
            TableFactor::Table { name, alias, args, version, sample: _, with_hints, .. } => {
                with_hints.iter().for_each(|e| self.walk(e));
                if let Some(v) = version {
                    self.walk_version(v);
                }
                match args {
                    Some(a) => {
                        let src = self.function_args(&a.args, false);
                        self.table_function(name, src, alias.as_ref())
                    }
                    None => {
                        let (schema, table) = names::schema_and_name(name);
                        self.named_relation(schema, table, alias.as_ref(), write)
                    }
                }
            }
            TableFactor::Derived { lateral, subquery, alias, .. } => {
                let hide = !*lateral;
                if hide {
                    self.set_hidden(true);
                }
                let cols = self.query(subquery);
                if hide {
                    self.set_hidden(false);
                }
                Rel::query(alias.as_ref().map(|a| names::ident(&a.name)), apply_alias(cols, alias.as_ref()))
            }
            TableFactor::TableFunction { expr, alias } => {
                let src = self.expr(expr);
                Rel::derived(alias_name(alias), apply_alias(vec![Col::star(Star::Any, src)], alias.as_ref()))
            }
            TableFactor::Function { name, args, alias, .. } => {
                let src = self.function_args(args, false);
                self.table_function(name, src, alias.as_ref())
            }
            TableFactor::UNNEST { alias, array_exprs, .. } => {
                let mut src = Vec::new();
                for e in array_exprs {
                    extend(&mut src, self.expr(e));
                }
                self.add_function("unnest");
                Rel::derived(alias_name(alias), apply_alias(vec![Col::star(Star::Any, src)], alias.as_ref()))
            }
            TableFactor::JsonTable { json_expr, alias, .. } | TableFactor::OpenJsonTable { json_expr, alias, .. } => {
                let src = self.expr(json_expr);
                Rel::derived(alias_name(alias), apply_alias(vec![Col::star(Star::Any, src)], alias.as_ref()))
            }
            TableFactor::XmlTable { row_expression, passing, alias, .. } => {
                let mut src = self.expr(row_expression);
                for a in &passing.arguments {
                    extend(&mut src, self.expr(&a.expr));
                }
                Rel::derived(alias_name(alias), apply_alias(vec![Col::star(Star::Any, src)], alias.as_ref()))
            }
            TableFactor::NestedJoin { table_with_joins, alias } => {
                if alias.is_none() {
                    // `(a JOIN b)`: a and b stay visible by their own names.
                    return self.table_with_joins(table_with_joins);
                }
                self.levels.push(Level::default());
                self.table_with_joins(table_with_joins);
                let inner = self.levels.pop().unwrap_or_default();
                let cols: Vec<Col> = inner.rels.iter().flat_map(|r| r.cols.clone()).collect();
                let mut r = Rel::query(alias_name(alias), apply_alias(cols, alias.as_ref()));
                r.merged = inner.merged || inner.rels.iter().any(|r| r.merged);
                r
            }
            TableFactor::Pivot { table, alias, .. }
            | TableFactor::Unpivot { table, alias, .. }
            | TableFactor::MatchRecognize { table, alias, .. } => {
                self.levels.push(Level::default());
                self.table_factor(table, false);
                self.levels.pop();
                opaque_rel(alias)
            }
            TableFactor::UnpivotExpr { expression, .. } => {
                self.walk(expression);
                opaque_rel(&None)
            }
            TableFactor::SemanticView { name, alias, .. } => {
                let (schema, table) = names::schema_and_name(name);
                self.add_table(schema, table, false);
                opaque_rel(alias)
            }
        };
        self.push_rel(rel);
    }

    fn walk_version(&mut self, v: &sqlparser::ast::TableVersion) {
        use sqlparser::ast::TableVersion::*;
        match v {
            ForSystemTimeAsOf(e) | TimestampAsOf(e) | VersionAsOf(e) | Function(e) => self.walk(e),
            Changes { changes, at, end } => {
                self.walk(changes);
                self.walk(at);
                end.iter().for_each(|e| self.walk(e));
            }
        }
    }

    fn set_hidden(&mut self, hidden: bool) {
        if let Some(l) = self.levels.last_mut() {
            l.hidden = hidden;
        }
    }

    /// A set-returning function in FROM: known built-ins derive from their arguments.
    fn table_function(&mut self, name: &ObjectName, mut src: Vec<ColumnSource>, alias: Option<&TableAlias>) -> Rel {
        let fname = names::function_name(name);
        self.add_function(&fname);
        if !functions::is_pure(&fname) || has_whole_row(&src) {
            extend(&mut src, [ColumnSource::Opaque]);
        }
        let display =
            alias.map_or_else(|| fname.rsplit('.').next().unwrap_or("").to_string(), |a| names::ident(&a.name));
        let cols = vec![Col { display, certain: false, sources: src, star: Star::Any }];
        Rel::derived(alias.map(|a| names::ident(&a.name)), apply_alias(cols, alias))
    }

    /// Sources of a function's arguments (`t.*` counts as a whole row; a bare `*` is nothing
    /// for `count(*)` and untraceable anywhere else).
    pub(crate) fn function_args(&mut self, args: &[FunctionArg], star_is_nothing: bool) -> Vec<ColumnSource> {
        let mut src = Vec::new();
        for a in args {
            let arg = match a {
                FunctionArg::Named { arg, .. } | FunctionArg::Unnamed(arg) => arg,
                FunctionArg::ExprNamed { name, arg, .. } => {
                    self.walk(name);
                    arg
                }
            };
            match arg {
                FunctionArgExpr::Expr(e) => extend(&mut src, self.expr(e)),
                FunctionArgExpr::QualifiedWildcard(n) => {
                    let cols = self.qualified_star(&names::parts(n));
                    extend(&mut src, collapse(cols).sources);
                }
                FunctionArgExpr::Wildcard | FunctionArgExpr::WildcardWithOptions(_) => {
                    if !star_is_nothing {
                        extend(&mut src, [ColumnSource::Opaque]);
                    }
                }
            }
        }
        src
    }
}

/// Some source is a whole row (or some column) of a table whose columns are unknown.
pub(crate) fn has_whole_row(src: &[ColumnSource]) -> bool {
    src.iter().any(|s| matches!(s, ColumnSource::AllColumnsOf { .. }))
}

fn alias_name(alias: &Option<TableAlias>) -> Option<String> {
    alias.as_ref().map(|a| names::ident(&a.name))
}

fn opaque_rel(alias: &Option<TableAlias>) -> Rel {
    Rel::derived(alias_name(alias), vec![Col::star(Star::Any, vec![ColumnSource::Opaque])])
}
