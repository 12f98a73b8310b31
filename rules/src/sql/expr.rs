//! Expression lineage: an exhaustive walk over sqlparser's `Expr` that returns the union of the
//! sources of everything a value is computed from, records every function called and analyses
//! every subquery (for its tables and functions, and for its outputs where they are values).

use super::from::has_whole_row;
use super::functions;
use super::lineage::Ctx;
use super::names::{self, extend};
use super::ColumnSource;
use sqlparser::ast::{
    AccessExpr, BinaryOperator, Expr, Function, FunctionArgumentClause, FunctionArguments, InTarget, JsonPathElem,
    Subscript, WindowFrameBound, WindowType,
};

impl Ctx {
    /// Sources of an expression's value.
    pub(crate) fn expr(&mut self, e: &Expr) -> Vec<ColumnSource> {
        let mut out = Vec::new();
        self.expr_into(e, &mut out);
        out
    }

    /// Analyse an expression for its tables and functions only.
    pub(crate) fn walk(&mut self, e: &Expr) {
        let _ = self.expr(e);
    }

    pub(crate) fn add_function(&mut self, name: &str) {
        if functions::is_server_io(name) {
            self.server_io = true;
        }
        if !self.functions.iter().any(|f| f == name) {
            self.functions.push(name.to_string());
        }
    }

    fn all(&mut self, es: &[Expr], out: &mut Vec<ColumnSource>) {
        for e in es {
            self.expr_into(e, out);
        }
    }

    fn opt(&mut self, e: &Option<Box<Expr>>, out: &mut Vec<ColumnSource>) {
        if let Some(e) = e {
            self.expr_into(e, out);
        }
    }

    /// Union of a subquery's output sources.
    fn subquery(&mut self, q: &sqlparser::ast::Query, out: &mut Vec<ColumnSource>) {
        for c in self.query(q) {
            extend(out, c.sources);
        }
    }

    fn expr_into(&mut self, e: &Expr, out: &mut Vec<ColumnSource>) {
        if !self.enter() {
            extend(out, [ColumnSource::Opaque]);
            return;
        }
        self.expr_inner(e, out);
        self.leave();
    }

    fn expr_inner(&mut self, e: &Expr, out: &mut Vec<ColumnSource>) {
        match e {
            Expr::Identifier(i) => extend(out, self.resolve(&[names::ident(i)])),
            Expr::CompoundIdentifier(v) => {
                let parts: Vec<String> = v.iter().map(names::ident).collect();
                extend(out, self.resolve(&parts));
            }
            Expr::CompoundFieldAccess { root, access_chain } => {
                self.expr_into(root, out);
                for a in access_chain {
                    match a {
                        // `.field` names a field of the value, not a column.
                        AccessExpr::Dot(Expr::Identifier(_)) => {}
                        AccessExpr::Dot(e) => self.expr_into(e, out),
                        AccessExpr::Subscript(s) => self.subscript(s, out),
                    }
                }
            }
            Expr::JsonAccess { value, path } => {
                self.expr_into(value, out);
                for p in &path.path {
                    match p {
                        JsonPathElem::Dot { .. } => {}
                        JsonPathElem::Bracket { key } | JsonPathElem::ColonBracket { key } => self.expr_into(key, out),
                    }
                }
            }
            Expr::IsFalse(x)
            | Expr::IsNotFalse(x)
            | Expr::IsTrue(x)
            | Expr::IsNotTrue(x)
            | Expr::IsNull(x)
            | Expr::IsNotNull(x)
            | Expr::IsUnknown(x)
            | Expr::IsNotUnknown(x)
            | Expr::UnaryOp { expr: x, .. }
            | Expr::Cast { expr: x, .. }
            | Expr::Extract { expr: x, .. }
            | Expr::Ceil { expr: x, .. }
            | Expr::Floor { expr: x, .. }
            | Expr::Collate { expr: x, .. }
            | Expr::Nested(x)
            | Expr::Prefixed { value: x, .. }
            | Expr::IsJson { expr: x, .. }
            | Expr::IsNormalized { expr: x, .. }
            | Expr::Named { expr: x, .. }
            | Expr::OuterJoin(x)
            | Expr::Prior(x) => self.expr_into(x, out),
            Expr::IsDistinctFrom(a, b)
            | Expr::IsNotDistinctFrom(a, b)
            | Expr::AtTimeZone { timestamp: a, time_zone: b }
            | Expr::Position { expr: a, r#in: b }
            | Expr::AnyOp { left: a, right: b, .. }
            | Expr::AllOp { left: a, right: b, .. } => {
                self.expr_into(a, out);
                self.expr_into(b, out);
            }
            Expr::BinaryOp { left, op, right } => {
                if *op == BinaryOperator::Assignment {
                    // MySQL `@v := expr`: the value leaves through the variable.
                    self.assigns_user_variable = true;
                    let s = self.expr(right);
                    extend(&mut self.written, s.iter().cloned());
                    extend(out, s);
                    return;
                }
                if matches!(op, BinaryOperator::Custom(_) | BinaryOperator::PGCustomBinaryOperator(_)) {
                    // A user-defined operator runs a function we cannot see.
                    extend(out, [ColumnSource::Opaque]);
                }
                self.expr_into(left, out);
                self.expr_into(right, out);
            }
            Expr::In { expr, target, .. } => {
                self.expr_into(expr, out);
                match target {
                    InTarget::List(v) => self.all(v, out),
                    InTarget::Subquery(q) => self.subquery(q, out),
                    InTarget::Unnest(x) => self.expr_into(x, out),
                    InTarget::Table { name, args } => {
                        let (schema, table) = names::schema_and_name(name);
                        self.add_table(schema.clone(), table.clone(), false);
                        if let Some(a) = args {
                            extend(out, self.function_args(a, false));
                        }
                        extend(out, [ColumnSource::AllColumnsOf { schema, table }]);
                    }
                }
            }
            Expr::Between { expr, low, high, .. } => {
                for x in [expr, low, high] {
                    self.expr_into(x, out);
                }
            }
            Expr::Like { expr, pattern, escape_char, .. }
            | Expr::ILike { expr, pattern, escape_char, .. }
            | Expr::SimilarTo { expr, pattern, escape_char, .. } => {
                self.expr_into(expr, out);
                self.expr_into(pattern, out);
                self.opt(escape_char, out);
            }
            Expr::RLike { expr, pattern, .. } => {
                self.expr_into(expr, out);
                self.expr_into(pattern, out);
            }
            Expr::Convert { expr, styles, .. } => {
                self.add_function("convert");
                self.expr_into(expr, out);
                self.all(styles, out);
            }
            Expr::Substring { expr, substring_from, substring_for, .. } => {
                self.add_function("substring");
                self.expr_into(expr, out);
                self.opt(substring_from, out);
                self.opt(substring_for, out);
            }
            Expr::Trim { expr, trim_what, trim_characters, .. } => {
                self.add_function("trim");
                self.expr_into(expr, out);
                self.opt(trim_what, out);
                if let Some(v) = trim_characters {
                    self.all(v, out);
                }
            }
            Expr::Overlay { expr, overlay_what, overlay_from, overlay_for } => {
                self.add_function("overlay");
                for x in [expr, overlay_what, overlay_from] {
                    self.expr_into(x, out);
                }
                self.opt(overlay_for, out);
            }
            Expr::Value(_) | Expr::TypedString(_) => {}
            Expr::Function(f) => {
                let s = self.function(f);
                extend(out, s);
            }
            Expr::Case { operand, conditions, else_result, .. } => {
                self.opt(operand, out);
                for w in conditions {
                    self.expr_into(&w.condition, out);
                    self.expr_into(&w.result, out);
                }
                self.opt(else_result, out);
            }
            Expr::Exists { subquery, .. } => {
                // A truth value about rows, not a value from them (predicate inference is out of
                // scope); analysed for its tables and functions.
                let _ = self.query(subquery);
            }
            Expr::Subquery(q) => self.subquery(q, out),
            Expr::GroupingSets(v) | Expr::Cube(v) | Expr::Rollup(v) => {
                for x in v {
                    self.all(x, out);
                }
            }
            Expr::Tuple(v) => self.all(v, out),
            Expr::Struct { values, .. } => self.all(values, out),
            Expr::Dictionary(fields) => {
                for f in fields {
                    self.expr_into(&f.value, out);
                }
            }
            Expr::Map(m) => {
                for en in &m.entries {
                    self.expr_into(&en.key, out);
                    self.expr_into(&en.value, out);
                }
            }
            Expr::Array(a) => self.all(&a.elem, out),
            Expr::Interval(i) => self.expr_into(&i.value, out),
            Expr::MatchAgainst { columns, .. } => {
                for c in columns {
                    extend(out, self.resolve(&names::parts(c)));
                }
            }
            Expr::Wildcard(_) => {
                let cols = self.qualified_star_all();
                extend(out, cols);
            }
            Expr::QualifiedWildcard(n, _) => {
                let cols = self.qualified_star(&names::parts(n));
                for c in cols {
                    extend(out, c.sources);
                }
            }
            Expr::Lambda(l) => {
                // Parameters shadow columns in ways this walk does not model.
                self.walk(&l.body);
                extend(out, [ColumnSource::Opaque]);
            }
            Expr::MemberOf(m) => {
                self.expr_into(&m.value, out);
                self.expr_into(&m.array, out);
            }
        }
    }

    fn subscript(&mut self, s: &Subscript, out: &mut Vec<ColumnSource>) {
        match s {
            Subscript::Index { index } => self.expr_into(index, out),
            Subscript::Slice { lower_bound, upper_bound, stride } => {
                for e in [lower_bound, upper_bound, stride].into_iter().flatten() {
                    self.expr_into(e, out);
                }
            }
        }
    }

    /// Sources of every relation visible at the innermost level (a bare `*` in an expression).
    fn qualified_star_all(&self) -> Vec<ColumnSource> {
        let mut v = Vec::new();
        if let Some(l) = self.levels.iter().rev().find(|l| !l.hidden) {
            for r in &l.rels {
                for c in &r.cols {
                    extend(&mut v, c.sources.iter().cloned());
                }
            }
        }
        if v.is_empty() {
            v.push(ColumnSource::Opaque);
        }
        v
    }

    /// A function call: its name is recorded; its value derives from everything inside it, and
    /// is `Opaque` unless it is a known pure built-in not applied to a whole row.
    pub(crate) fn function(&mut self, f: &Function) -> Vec<ColumnSource> {
        let name = names::function_name(&f.name);
        self.add_function(&name);
        let count_like = functions::ignores_row_values(&name);
        let mut src = Vec::new();
        for args in [&f.parameters, &f.args] {
            match args {
                FunctionArguments::None => {}
                FunctionArguments::Subquery(q) => self.subquery(q, &mut src),
                FunctionArguments::List(l) => {
                    extend(&mut src, self.function_args(&l.args, count_like));
                    for c in &l.clauses {
                        match c {
                            FunctionArgumentClause::Where(e) | FunctionArgumentClause::Limit(e) => {
                                self.expr_into(e, &mut src)
                            }
                            FunctionArgumentClause::OrderBy(v) => {
                                for o in v {
                                    self.expr_into(&o.expr, &mut src);
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        if let Some(x) = &f.filter {
            self.expr_into(x, &mut src);
        }
        for o in &f.within_group {
            self.expr_into(&o.expr, &mut src);
        }
        if let Some(WindowType::WindowSpec(w)) = &f.over {
            self.all(&w.partition_by, &mut src);
            for o in &w.order_by {
                self.expr_into(&o.expr, &mut src);
            }
            if let Some(fr) = &w.window_frame {
                for b in std::iter::once(&fr.start_bound).chain(&fr.end_bound) {
                    if let WindowFrameBound::Preceding(Some(x)) | WindowFrameBound::Following(Some(x)) = b {
                        self.expr_into(x, &mut src);
                    }
                }
            }
        }
        if !functions::is_pure(&name) || (has_whole_row(&src) && !count_like) {
            extend(&mut src, [ColumnSource::Opaque]);
        }
        src
    }
}

/// Output name of a select-list expression and whether the server surely uses that name.
pub(crate) fn expr_name(e: &Expr) -> (String, bool) {
    match e {
        Expr::Identifier(i) => (names::ident(i), true),
        Expr::CompoundIdentifier(v) => match v.last() {
            Some(i) => (names::ident(i), true),
            None => ("?column?".into(), false),
        },
        Expr::Function(f) => {
            (names::function_name(&f.name).rsplit('.').next().unwrap_or("?column?").to_string(), false)
        }
        Expr::Cast { expr, .. } | Expr::Nested(expr) => (expr_name(expr).0, false),
        _ => ("?column?".into(), false),
    }
}
