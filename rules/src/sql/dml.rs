//! INSERT, UPDATE, DELETE and MERGE: written tables, written values, RETURNING lineage.

use super::lineage::{Col, Ctx, Level, Rel, Star};
use super::names::{self, extend};
use super::{ColumnSource, StatementKind};
use sqlparser::ast::{
    Assignment, AssignmentTarget, Delete, FromTable, Insert, Merge, MergeAction, MergeInsertKind, MergeUpdateKind,
    OnConflictAction, OnInsert, OutputClause, SelectItem, Statement, TableFactor, TableObject, Update,
    UpdateTableFromKind,
};

impl Ctx {
    /// A data-modifying statement nested in a query (`WITH d AS (DELETE ... RETURNING *)`).
    pub(crate) fn dml(&mut self, st: &Statement) -> Vec<Col> {
        let (kind, cols) = match st {
            Statement::Insert(i) => (StatementKind::Insert, self.insert(i)),
            Statement::Update(u) => (StatementKind::Update, self.update(u)),
            Statement::Delete(d) => (StatementKind::Delete, self.delete(d)),
            Statement::Merge(m) => (StatementKind::Merge, self.merge(m)),
            _ => (StatementKind::Unknown, vec![Col::star(Star::Any, vec![ColumnSource::Opaque])]),
        };
        self.add_effect(kind);
        cols
    }

    fn returning(&mut self, items: Option<&Vec<SelectItem>>, output: Option<&OutputClause>) -> Vec<Col> {
        let mut cols = items.map(|v| self.projection(v)).unwrap_or_default();
        match output {
            Some(OutputClause::Output { select_items, .. } | OutputClause::Returning { select_items, .. }) => {
                cols.extend(self.projection(select_items));
            }
            None => {}
        }
        cols
    }

    fn assignments(&mut self, a: &[Assignment]) {
        for x in a {
            let s = self.expr(&x.value);
            extend(&mut self.written, s);
        }
    }

    pub(crate) fn insert(&mut self, ins: &Insert) -> Vec<Col> {
        // The source query cannot see the target; compute it first.
        let src_cols = ins.source.as_ref().map(|q| self.query(q)).unwrap_or_default();
        let mut all_src = Vec::new();
        for c in &src_cols {
            extend(&mut all_src, c.sources.iter().cloned());
        }
        extend(&mut self.written, all_src.iter().cloned());
        self.levels.push(Level::default());
        match &ins.table {
            TableObject::TableName(n) => {
                let (schema, table) = names::schema_and_name(n);
                let alias = ins.table_alias.as_ref().map(|a| names::ident(&a.alias));
                self.add_table(schema.clone(), table.clone(), true);
                self.push_rel(Rel::base(schema, table, alias));
            }
            TableObject::TableFunction(f) => {
                let _ = self.function(f);
            }
            TableObject::TableQuery(q) => {
                let _ = self.query(q);
            }
        }
        // EXCLUDED (Postgres) / the MySQL 8 row alias hold the proposed row.
        let excluded = |name: String| Rel::derived(Some(name), vec![Col::star(Star::Any, all_src.clone())]);
        self.push_rel(excluded("excluded".into()));
        if let Some(a) = &ins.insert_alias {
            if let Some(name) = names::parts(&a.row_alias).pop() {
                self.push_rel(excluded(name));
            }
        }
        self.assignments(&ins.assignments);
        match &ins.on {
            Some(OnInsert::DuplicateKeyUpdate(a)) => {
                self.add_effect(StatementKind::Update);
                self.assignments(a);
            }
            Some(OnInsert::OnConflict(c)) => {
                if let OnConflictAction::DoUpdate(u) = &c.action {
                    self.add_effect(StatementKind::Update);
                    self.assignments(&u.assignments);
                    if let Some(w) = &u.selection {
                        self.walk(w);
                    }
                }
            }
            Some(_) | None => {}
        }
        if ins.replace_into {
            self.add_effect(StatementKind::Delete);
        }
        for c in ins.multi_table_into_clauses.iter().chain(ins.multi_table_else_clause.iter().flatten()) {
            let (schema, table) = names::schema_and_name(&c.table_name);
            self.add_table(schema, table, true);
        }
        let cols = self.returning(ins.returning.as_ref(), ins.output.as_ref());
        self.levels.pop();
        cols
    }

    pub(crate) fn update(&mut self, u: &Update) -> Vec<Col> {
        self.levels.push(Level::default());
        self.table_with_joins(&u.table);
        let targets = self.levels.last().map_or(0, |l| l.rels.len());
        if let Some(UpdateTableFromKind::BeforeSet(v) | UpdateTableFromKind::AfterSet(v)) = &u.from {
            for t in v {
                self.table_with_joins(t);
            }
        }
        // Which of the UPDATE's own relations are written: those a SET target names, or all of
        // them when a target is unqualified (MySQL multi-table UPDATE).
        let mut quals: Vec<Vec<String>> = Vec::new();
        let mut unqualified = u.table.joins.is_empty();
        for a in &u.assignments {
            let ns: Vec<&sqlparser::ast::ObjectName> = match &a.target {
                AssignmentTarget::ColumnName(n) => vec![n],
                AssignmentTarget::Tuple(v) => v.iter().collect(),
            };
            for n in ns {
                let p = names::parts(n);
                if p.len() > 1 {
                    quals.push(p[..p.len() - 1].to_vec());
                } else {
                    unqualified = true;
                }
            }
        }
        let rels: Vec<Rel> = self.levels.last().map(|l| l.rels[..targets].to_vec()).unwrap_or_default();
        for r in &rels {
            let named = quals.iter().any(|q| r.matches_qual(self.d, q));
            if let (Some((s, t)), true) = (&r.base, unqualified || named) {
                self.add_table(s.clone(), t.clone(), true);
            }
        }
        self.assignments(&u.assignments);
        if let Some(w) = &u.selection {
            self.walk(w);
        }
        u.order_by.iter().for_each(|o| self.walk(&o.expr));
        if let Some(l) = &u.limit {
            self.walk(l);
        }
        let cols = self.returning(u.returning.as_ref(), u.output.as_ref());
        self.levels.pop();
        cols
    }

    pub(crate) fn delete(&mut self, d: &Delete) -> Vec<Col> {
        self.levels.push(Level::default());
        let from = match &d.from {
            FromTable::WithFromKeyword(v) | FromTable::WithoutKeyword(v) => v,
        };
        for t in from {
            self.table_with_joins(t);
        }
        let in_from = self.levels.last().map_or(0, |l| l.rels.len());
        for t in d.using.iter().flatten() {
            self.table_with_joins(t);
        }
        let rels: Vec<Rel> = self.levels.last().map(|l| l.rels.clone()).unwrap_or_default();
        if d.tables.is_empty() {
            for r in &rels[..in_from] {
                if let Some((s, t)) = &r.base {
                    self.add_table(s.clone(), t.clone(), true);
                }
            }
        } else {
            // MySQL multi-table DELETE: targets may be aliases of FROM items.
            for n in &d.tables {
                let q = names::parts(n);
                let mut hit = false;
                let d = self.d;
                for r in rels.iter().filter(|r| r.matches_qual(d, &q)) {
                    hit = true;
                    if let Some((s, t)) = &r.base {
                        self.add_table(s.clone(), t.clone(), true);
                    }
                }
                if !hit {
                    let (s, t) = names::schema_and_name(n);
                    self.add_table(s, t, true);
                }
            }
        }
        if let Some(w) = &d.selection {
            self.walk(w);
        }
        d.order_by.iter().for_each(|o| self.walk(&o.expr));
        if let Some(l) = &d.limit {
            self.walk(l);
        }
        let cols = self.returning(d.returning.as_ref(), d.output.as_ref());
        self.levels.pop();
        cols
    }

    pub(crate) fn merge(&mut self, m: &Merge) -> Vec<Col> {
        self.levels.push(Level::default());
        self.table_factor(&m.table, true);
        if let TableFactor::Table { name, .. } = &m.table {
            let (s, t) = names::schema_and_name(name);
            self.add_table(s, t, true);
        }
        self.table_factor(&m.source, false);
        self.walk(&m.on);
        for c in &m.clauses {
            if let Some(p) = &c.predicate {
                self.walk(p);
            }
            match &c.action {
                MergeAction::Insert(i) => {
                    self.add_effect(StatementKind::Insert);
                    match &i.kind {
                        MergeInsertKind::Values(v) => {
                            for col in self.values(v) {
                                extend(&mut self.written, col.sources);
                            }
                        }
                        MergeInsertKind::Row | MergeInsertKind::Wildcard => {
                            let src = self.levels.last().and_then(|l| l.rels.last()).map(|r| r.cols.clone());
                            for col in src.unwrap_or_default() {
                                extend(&mut self.written, col.sources);
                            }
                        }
                    }
                    if let Some(p) = &i.insert_predicate {
                        self.walk(p);
                    }
                }
                MergeAction::Update(u) => {
                    self.add_effect(StatementKind::Update);
                    match &u.kind {
                        MergeUpdateKind::Set(a) => self.assignments(a),
                        MergeUpdateKind::Wildcard => {
                            let src = self.levels.last().and_then(|l| l.rels.last()).map(|r| r.cols.clone());
                            for col in src.unwrap_or_default() {
                                extend(&mut self.written, col.sources);
                            }
                        }
                    }
                    for p in u.update_predicate.iter().chain(&u.delete_predicate) {
                        self.walk(p);
                    }
                }
                MergeAction::Delete { .. } => self.add_effect(StatementKind::Delete),
                MergeAction::DoNothing { .. } => {}
            }
        }
        let cols = self.returning(None, m.output.as_ref());
        self.levels.pop();
        cols
    }
}
